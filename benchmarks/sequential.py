"""Sequential designs by simulation: savings, coverage, pass^k bias, the sequential gate's false
alarms and power beside the fixed-k gate, and the planner's power.

Ground truth: per-task success rates p_t of a realistic spread (most tasks near 0 or 1, a few
flaky). Simulating Bernoulli outcomes instead of logs is exact here: every rule only sees each
task's outcomes by trial index, and a sim agent's trials are independent Bernoulli(p_t). The
REAL code decides: `bench.runs.design.walk` with the rules of `bench.analysis.stopping`, the
gate `bench.analysis.sequential.paired_gate`, the fixed-k gate `bench.analysis.regression.
compare_counts`, the planner `bench.analysis.planning`.

Printed (Markdown), one table per section:

1. savings — `--until task:W` (per-task interval narrower than W) with -k 4 --k-max 32 on the
   built-in suites' task counts (retail 36, calendar 38, incident 39; spread near01:0.7):
   mean trials per task against fixed k = k_max, per-task coverage at the stopping time, suite
   pass@1 coverage; and `--until pass1:W`.
2. pass^k bias — the headline estimator (all n_t trials) against the first-k_min estimator the
   report shows as unbiased, under the task:W rule (mean over simulated runs ± s.e.).
3. gate false alarms — the paired sequential gate checked after EVERY round (rounds of 2 trials
   up to 24) when the candidate equals the baseline; target ≤ α + 0.01.
4. gate power — planted drops Δ = 0.1 and 0.2 of every task's rate: the sequential design
   (`--until gate`, doubling rounds 2…16 against a 16-trial baseline) beside the fixed-k gate
   whose candidate gets the same expected number of trials (rounded to whole trials per task).
5. planner — the real diff gate's simulated power at the design `trajbench plan` proposes for
   an effect of 0.1 (stated power 0.8).

    python benchmarks/sequential.py                  # every section, ~8 minutes on 2 cores
    python benchmarks/sequential.py --reps 40        # quick look
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from bench.analysis import planning
from bench.analysis.metrics import pass_hat_k
from bench.analysis.regression import PairedCounts, compare_counts, detectable_drop, suite_test
from bench.analysis.sequential import paired_gate, rate_cs, suite_pass1_cs
from bench.analysis.stopping import build_rule
from bench.runs.design import Design, walk

SUITES = {"retail": 36, "calendar": 38, "incident": 39}


def words(outcomes: np.ndarray) -> dict[str, list[str]]:
    """A tasks × trials boolean matrix as the outcome rows the rules read."""
    return {str(t): ["success" if x else "failure" for x in row] for t, row in enumerate(outcomes)}


def draw(rates: np.ndarray, trials: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random((rates.size, trials)) < rates[:, None]


def run_design(design: Design, rule: Callable, outcomes: np.ndarray) -> dict[str, int]:
    """Per-task trials the design gives when the agent's outcomes are `outcomes` (all k_max drawn up front)."""
    rows = words(outcomes)
    return walk(design, rule, list(rows), rows).per_task_n


def savings(reps: int, rng: np.random.Generator) -> None:
    print("\n### 1. Savings at equal precision (spread near01:0.7; -k 4 --k-max 32)\n")
    print("| suite | tasks | until | mean trials/task | fixed k | ratio | per-task coverage | suite pass@1 coverage |")
    print("|---|---|---|---|---|---|---|---|")
    for until in ("task:0.5", "task:0.3", "pass1:0.25"):
        for name, T in SUITES.items():
            truth = planning.parse_spread("near01:0.7")(T)
            design = Design(4, 32, until)
            rule = build_rule(design)
            used, covered_tasks, covered_suite = [], 0, 0
            for _ in range(reps):
                outcomes = draw(truth, 32, rng)
                n = run_design(design, rule, outcomes)
                counts = [(int(outcomes[t, :n[str(t)]].sum()), n[str(t)]) for t in range(T)]
                used.append(np.mean(list(n.values())))
                ends = [rate_cs(s, m, design.alpha) for s, m in counts]
                covered_tasks += sum(lo <= p <= hi for (lo, hi), p in zip(ends, truth))
                lo, hi = suite_pass1_cs(counts, design.alpha)
                covered_suite += int(lo <= truth.mean() <= hi)
            mean_used = float(np.mean(used))
            print(f"| {name} | {T} | {until} | {mean_used:.1f} | 32 | {mean_used / 32:.2f} | "
                  f"{covered_tasks / (reps * T):.1%} | {covered_suite / reps:.1%} |")


def bias(reps: int, rng: np.random.Generator) -> None:
    print("\n### 2. pass^2 under the task:0.5 stopping rule (-k 4 --k-max 32; 40 tasks at each rate)\n")
    print("| true p | true p² | all-trials estimate (± s.e.) | first -k trials (± s.e.) |")
    print("|---|---|---|---|")
    design = Design(4, 32, "task:0.5")
    rule = build_rule(design)
    for p in (0.3, 0.5, 0.8, 0.95):
        truth = np.full(40, p)
        every, first = [], []
        for _ in range(reps):
            outcomes = draw(truth, 32, rng)
            n = run_design(design, rule, outcomes)
            every += [pass_hat_k(n[str(t)], int(outcomes[t, :n[str(t)]].sum()), 2) for t in range(40)]
            first += [pass_hat_k(4, int(outcomes[t, :4].sum()), 2) for t in range(40)]
        se = lambda v: np.std(v) / np.sqrt(len(v))  # noqa: E731
        print(f"| {p} | {p * p:.3f} | {np.mean(every):.3f} (± {se(every):.3f}) | {np.mean(first):.3f} (± {se(first):.3f}) |")


def false_alarms(reps: int, rng: np.random.Generator) -> None:
    print("\n### 3. False alarms, H0 true, checked after every round (rounds of 2 up to 24; α = 0.05)\n")
    print("| tasks | rates | sequential gate: streams | its false-alarm rate (± s.e.) | fixed-k gate peeked every round: streams "
          "| its false-alarm rate (± s.e.) | target |")
    print("|---|---|---|---|---|---|---|")
    peeked = max(reps // 5, 20)
    for label in ("near01:0.7", "beta:2,2"):
        truth = planning.parse_spread(label)(36)
        seq_rate = _alarm_rate(reps, lambda b, c: any(
            paired_gate({t: r[:n] for t, r in words(b).items()}, {t: r[:n] for t, r in words(c).items()}).outcome
            == "regressed" for n in range(2, 25, 2)), truth, rng)
        fixed_rate = _alarm_rate(peeked, lambda b, c: any(suite_test(
            PairedCounts.of([str(t) for t in range(36)], [n] * 36, b[:, :n].sum(axis=1), [n] * 36, c[:, :n].sum(axis=1)),
            2, permutations=500)["significant_regression"] for n in range(2, 25, 2)), truth, rng)
        print(f"| 36 | {label} | {reps} | {seq_rate:.3f} (± {np.sqrt(seq_rate * (1 - seq_rate) / reps):.3f}) | {peeked} | "
              f"{fixed_rate:.3f} (± {np.sqrt(fixed_rate * (1 - fixed_rate) / peeked):.3f}) | ≤ 0.060 |")


def _alarm_rate(streams: int, alarmed: Callable[[np.ndarray, np.ndarray], bool], truth: np.ndarray,
                rng: np.random.Generator) -> float:
    """Share of simulated (baseline, candidate) pairs of equal rates in which `alarmed` fires at some look."""
    return sum(alarmed(draw(truth, 24, rng), draw(truth, 24, rng)) for _ in range(streams)) / streams


def power(reps: int, rng: np.random.Generator) -> None:
    print("\n### 4. Power against planted drops (36 tasks, near01:0.7 rates; baseline 16 trials per task)\n")
    print("| Δ | sequential gate power | its mean trials/task | fixed-k gate power at that k | fixed k |")
    print("|---|---|---|---|---|")
    truth = planning.parse_spread("near01:0.7")(36)
    for delta in (0.1, 0.2):
        cand_rates = np.clip(truth - delta, 0, 1)
        hits, used, base_draws = 0, [], []
        for _ in range(reps):
            base = draw(truth, 16, rng)
            base_draws.append(base)
            design = Design(2, 16, "gate", baseline={"dir": "-", "run_id": "-"})
            rule = build_rule(design, words(base))
            cand = draw(cand_rates, 16, rng)
            n = run_design(design, rule, cand)
            rows = {str(t): ["success" if x else "failure" for x in cand[t, :n[str(t)]]] for t in range(36)}
            hits += paired_gate(words(base), rows).outcome == "regressed"
            used.append(np.mean(list(n.values())))
        k_fix = max(1, int(round(float(np.mean(used)))))
        fixed_hits = 0
        for base in base_draws:
            cand = draw(cand_rates, k_fix, rng)
            pc = PairedCounts.of([str(t) for t in range(36)], [16] * 36, base.sum(axis=1), [k_fix] * 36, cand.sum(axis=1))
            test = compare_counts(pc, k=min(2, k_fix), permutations=500, bootstrap=0, with_mde=False)["test"]
            fixed_hits += bool(test["significant_regression"])
        print(f"| {delta} | {hits / reps:.2f} | {np.mean(used):.1f} | {fixed_hits / reps:.2f} | {k_fix} |")


def planner(reps: int, rng: np.random.Generator) -> None:
    print("\n### 5. The planner's design, simulated through the real diff gate (effect 0.1, stated power 0.8)\n")
    print("| spread | tasks | planned trials/task | planted rate drop δ | suite pass@1 drop | simulated power (± s.e.) |")
    print("|---|---|---|---|---|---|")
    for spec, T in (("near01:0.7", 100), ("beta:2,2", 50)):
        rate_of = planning.parse_spread(spec)
        row = planning.plan(rate_of, effect=0.1, k=None, tasks=[T])["rows"][0]
        n = row["trials_needed"]
        truth = rate_of(T)
        found = detectable_drop(truth, np.full(T, float(n)), np.full(T, float(n)), None, 0.05 / 3, 0.8)
        assert found is not None
        delta, effect = found
        cand_rates = np.clip(truth - delta, 0, 1)
        hits = 0
        for _ in range(reps):
            a, b = draw(truth, n, rng).sum(axis=1), draw(cand_rates, n, rng).sum(axis=1)
            pc = PairedCounts.of([str(t) for t in range(T)], [n] * T, a, [n] * T, b)
            hits += bool(compare_counts(pc, k=min(2, n), permutations=500, bootstrap=0, with_mde=False)["test"]["significant_regression"])
        rate = hits / reps
        print(f"| {spec} | {T} | {n} | {delta:.3f} | {effect:.3f} | {rate:.2f} (± {np.sqrt(rate * (1 - rate) / reps):.2f}) |")


SECTIONS = {"savings": savings, "bias": bias, "false-alarms": false_alarms, "power": power, "planner": planner}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="simulated runs per cell (false alarms: 10×)")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only these sections")
    args = parser.parse_args()
    rng = np.random.default_rng(18)
    for name in args.only or list(SECTIONS):
        started = time.perf_counter()
        SECTIONS[name](args.reps * (10 if name == "false-alarms" else 1), rng)
        print(f"\n({name}: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
