"""False alarms, power and the MDE statement of `trajbench diff`, by simulation.

Ground truth: the simulated agent `sim:noisy?p=0.2..0.95`, whose per-task success probability
p_t is known (spread deterministically over [0.2, 0.95] by task id) on the built-in suites'
tasks (retail 36, calendar 38, incident 39; all 113). Each simulated diff draws the base run's
counts c_A ~ Bin(k, p_t) and the candidate's c_B ~ Bin(k, q_t), and applies the gate exactly as
`trajbench diff` does (bench.analysis.regression.suite_test: the stratified permutation test, min-p over
Δpass@1, Δpass^k and the worst task). Simulating counts instead of logs is exact here: the
gate only sees each task's counts, and the sim agent's trials are independent Bernoulli(p_t).
(tests/test_compare.py also runs real runs through the runner.)

Tables printed (Markdown):
1. False alarms (q_t = p_t): the gate's rejection rate over R null diffs, and the share of null
   diffs where the per-task list (Boschloo + Benjamini–Hochberg) names any task (the FWER of
   the list under the global null, which BH controls at alpha).
2. Power: the drop Δ ∈ {0.05, 0.1, 0.2, 0.4} planted on every task (q_t = max(p_t − Δ, 0)),
   and on a quarter of the tasks.
3. The MDE check: the MDE that `diff` states (median over null diffs, each computed from its
   own data) and the simulated power when every task really drops by that much: ≈ 80%.
4. Per-task FDR with Δ = 0.4 planted on a quarter of the tasks, k = 16.

    python benchmarks/diff_power.py            # R = 500 (a few minutes)
    python benchmarks/diff_power.py --reps 100 --suites retail   # quick look
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.adapters.sim import SimAgent  # noqa: E402
from bench.analysis.regression import PairedCounts, compare_counts, suite_test, task_tests  # noqa: E402
from bench.world.suite import load_suite  # noqa: E402

DELTAS = (0.05, 0.1, 0.2, 0.4)
KS = (4, 8, 16)


def truth(suites: list[str]) -> dict[str, np.ndarray]:
    agent = SimAgent(p="0.2..0.95")
    out = {}
    for name in suites:
        out[name] = np.array([agent.nominal_p(t) for t in load_suite(name).tasks])
    if len(suites) > 1:
        out["all"] = np.concatenate([out[s] for s in suites])
    return out


def counts(k: int, p: np.ndarray, q: np.ndarray, rng: np.random.Generator) -> PairedCounts:
    T = p.size
    return PairedCounts.of(range(T), [k] * T, rng.binomial(k, p), [k] * T, rng.binomial(k, q))


def rate(k: int, p: np.ndarray, q: np.ndarray, reps: int, alpha: float, perms: int, seed: int,
         per_task: bool = False) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    gate = listed = 0
    for r in range(reps):
        pc = counts(k, p, q, rng)
        gate += suite_test(pc, k, alpha=alpha, permutations=perms, seed=r)["significant_regression"]
        if per_task:
            qv = task_tests(pc, alpha)["q"]
            listed += bool(np.any(np.nan_to_num(qv, nan=1.0) <= alpha))
    return gate / reps, listed / reps


def stated_mde(k: int, p: np.ndarray, alpha: float, perms: int, seed: int, n: int = 25) -> float:
    rng = np.random.default_rng(seed)
    drops = [compare_counts(counts(k, p, p, rng), k=k, alpha=alpha, permutations=perms, bootstrap=0, seed=i)["mde"]["drop"]
             for i in range(n)]
    return float(np.median(drops))


def fdr(k: int, p: np.ndarray, delta: float, reps: int, alpha: float, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    planted = np.zeros(p.size, dtype=bool)
    planted[::4] = True
    q = np.where(planted, np.clip(p - delta, 0, 1), p)
    fdps, found = [], 0
    for _ in range(reps):
        pc = counts(k, p, q, rng)
        sig = np.nan_to_num(task_tests(pc, alpha)["q"], nan=1.0) <= alpha
        fdps.append((sig & ~planted).sum() / max(sig.sum(), 1))
        found += (sig & planted).sum()
    return float(np.mean(fdps)), found / (reps * planted.sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=500, help="simulated diffs per cell (default 500)")
    ap.add_argument("--permutations", type=int, default=999, help="permutations per diff (default 999)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--suites", default="retail,calendar,incident")
    args = ap.parse_args(argv)
    t0 = time.time()
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    ps = truth(suites)
    A, R, B = args.alpha, args.reps, args.permutations
    print(f"# trajbench diff: false alarms, power and MDE (α = {A}, {R} simulated diffs per cell, {B} permutations each)\n")
    print("Agent: sim:noisy?p=0.2..0.95 (per-task p known); drop planted as q_t = max(p_t − Δ, 0).\n")

    print("## 1. False alarms with no change (target: ≤ α + 0.02 = %.2f)\n" % (A + 0.02))
    print("| suite | tasks | k | gate rejects | per-task list names any task |")
    print("|---|---|---|---|---|")
    for name, p in ps.items():
        for k in KS:
            g, listed = rate(k, p, p, R, A, B, seed=zlib.crc32(f"{name}/{k}".encode()), per_task=True)
            print(f"| {name} | {p.size} | {k} | {g:.3f} | {listed:.3f} |", flush=True)

    print("\n## 2. Power: share of diffs that exit 1\n")
    print("Δ on every task:\n")
    print("| suite | tasks | k | " + " | ".join(f"Δ = {d}" for d in DELTAS) + " |")
    print("|---|---|---|" + "---|" * len(DELTAS))
    for name, p in ps.items():
        for k in KS:
            cells = [rate(k, p, np.clip(p - d, 0, 1), R, A, B, seed=7 + k)[0] for d in DELTAS]
            print(f"| {name} | {p.size} | {k} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)
    print("\nΔ on a quarter of the tasks (every 4th):\n")
    print("| suite | tasks | k | " + " | ".join(f"Δ = {d}" for d in DELTAS) + " |")
    print("|---|---|---|" + "---|" * len(DELTAS))
    for name, p in ps.items():
        share = np.zeros(p.size, dtype=bool)
        share[::4] = True
        for k in KS:
            cells = [rate(k, p, np.where(share, np.clip(p - d, 0, 1), p), R, A, B, seed=11 + k)[0] for d in DELTAS]
            print(f"| {name} | {p.size} | {k} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)

    print("\n## 3. The MDE statement against simulated power (target ≈ 0.80)\n")
    print("| suite | tasks | k | stated MDE (uniform drop) | simulated power at that drop |")
    print("|---|---|---|---|---|")
    for name, p in ps.items():
        for k in KS:
            mde = stated_mde(k, p, A, B, seed=3 + k)
            power = rate(k, p, np.clip(p - mde, 0, 1), R, A, B, seed=13 + k)[0]
            print(f"| {name} | {p.size} | {k} | {mde * 100:.1f} pp | {power:.2f} |", flush=True)

    print("\n## 4. Per-task false-discovery rate (Δ = 0.4 on a quarter of the tasks, k = 16; target ≤ α)\n")
    print("| suite | tasks | mean FDP | share of planted tasks found |")
    print("|---|---|---|---|")
    for name, p in ps.items():
        f, found = fdr(16, p, 0.4, R, A, seed=17)
        print(f"| {name} | {p.size} | {f:.3f} | {found:.2f} |", flush=True)
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
