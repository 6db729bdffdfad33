"""Prompt evaluation in the local model's turns, and what reusing prompt prefixes saves: the same
trials (same seeds) run in one process with reuse off, with today's implicit reuse only, and with
the saved states of the shared prefixes (the default), at a few concurrency levels.

    python benchmarks/local_prefix.py                                   # retail, 2 easy tasks, k=4, 1x1 2x1 2x2
    python benchmarks/local_prefix.py --tasks retail-001-cancel-stated,retail-002-tracking-stated -k 4 --off-k 1
    python benchmarks/local_prefix.py --modes cache,states --configs 2x1     # concurrency 2 over one instance

Modes (agent options of the `local` adapter, docs/agents.md):
- off      `prefix_cache = false`: every prompt evaluated from its first token (no reuse at all);
- cache    `prefix_cache_mb = 0`: each instance's own KV cache is reused from the longest whole-message
           prefix it shares with the prompt (the adapter before saved states: a trial finds the system
           prompt, and its own conversation when it kept its instance);
- states   the default: the KV states of the system prompt and of each task's system prompt +
           instruction are saved once per engine and restored into any instance that lacks them.
Every configuration starts from a freshly loaded engine (as a `trajbench run` process does), so
the first evaluation of the system prompt is part of its cost.

Per configuration: trials/s, and per trial the prompt tokens (all of each turn's prompt), those
kept from the instance's cache, restored from a saved state and evaluated, llama.cpp's own
prompt-evaluation and decoding seconds, and the share of turn time spent evaluating prompts.
Then the ratios against `off` (and `cache`) at the same concurrency, and whether every mode
logged the same trajectories (tool calls and model outputs, trial by trial): reuse changes speed,
never what the model does. `--off-k` runs the slow `off` baseline on fewer trials per task (its
per-trial figures are still comparable; the trajectories are compared on the trials both ran).
The machine's load average is printed: other processes on the same cores skew wall times.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.adapters.local import TURN_STATS, LocalEngine  # noqa: E402
from bench.adapters.spec import AgentSpec  # noqa: E402
from bench.runs.rundir import read_run  # noqa: E402
from bench.runs.runner import RunConfig, run_benchmark  # noqa: E402
from bench.world.suite import load_suite  # noqa: E402

SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 192}
MODES = {"off": {"prefix_cache": False}, "cache": {"prefix_cache_mb": 0}, "states": {}}


def trajectories(run_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """What each trial did: its model outputs and tool calls, in order."""
    log = read_run(run_dir)
    return {t: [(s["kind"], json.dumps(s.get("output") if s["kind"] == "model" else [s.get("tool"), s.get("args")],
                                      sort_keys=True))
                for s in log.trial_steps(t) if s["kind"] in ("model", "tool", "user")]
            for t in log.summaries}


def run_one(suite: Any, task_ids: list[str], mode: str, conc: int, instances: int, k: int, args: argparse.Namespace) -> dict[str, Any]:
    LocalEngine._engines.clear()  # a fresh engine: nothing cached from the previous configuration
    gc.collect()
    spec = AgentSpec(f"prefix-{mode}-c{conc}-i{instances}", "local", {**SAMPLING, **MODES[mode], "instances": instances})
    agent = spec.build()  # loads the model (not timed)
    cpu0, load0 = resource.getrusage(resource.RUSAGE_SELF), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        config = RunConfig(k=k, out=out, seed=args.seed, concurrency=conc, max_steps=args.max_steps,
                           timeout_s=3600.0, progress=False, retry_backoff_s=0.0)
        started = time.perf_counter()
        run_benchmark(suite, spec, task_ids, config)
        wall = time.perf_counter() - started
        log = read_run(out)
        per_trial = [s["agent_info"].get("prompt_eval", {}) for s in log.summaries.values()]
        outcomes = [s["outcome"] for s in log.summaries.values()]
        trajs = trajectories(out)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    n = len(per_trial)
    row: dict[str, Any] = {name: sum(p.get(name, 0) for p in per_trial) / n for name in TURN_STATS}
    states = agent.engine.states
    row.update(mode=mode, concurrency=conc, instances=instances, trials=n, success=outcomes.count("success"),
               errors=outcomes.count("error"), wall_s=wall, trials_per_s=n / wall,
               cpu_s=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
               load=(load0 + os.getloadavg()[0]) / 2, states_mb=(states.bytes / 2**20) if states else 0.0,
               states_n=len(states) if states else 0, trajectories=trajs)
    return row


def _header() -> str:
    return (f"{'mode':<7}{'conc':>5}{'inst':>5}{'trials':>7}{'ok':>4}{'err':>4}{'wall s':>8}{'trials/s':>9}"
            f"{'prompt tok':>11}{'cached':>8}{'restored':>9}{'evaluated':>10}{'eval s':>8}{'decode s':>9}{'eval %':>7}"
            f"{'states MB':>10}{'cpu s':>7}{'load':>6}")


def _fmt(r: dict[str, Any]) -> str:
    share = r["prompt_eval_s"] / r["turn_s"] if r["turn_s"] else 0.0
    return (f"{r['mode']:<7}{r['concurrency']:>5}{r['instances']:>5}{r['trials']:>7}{r['success']:>4}{r['errors']:>4}"
            f"{r['wall_s']:>8.1f}{r['trials_per_s']:>9.4f}{r['prompt_tokens']:>11.0f}{r['cached_tokens']:>8.0f}"
            f"{r['restored_tokens']:>9.0f}{r['evaluated_tokens']:>10.0f}{r['prompt_eval_s']:>8.1f}{r['decode_s']:>9.1f}"
            f"{share:>7.0%}{r['states_mb']:>10.0f}{r['cpu_s']:>7.0f}{r['load']:>6.1f}")


def same_trajectories(a: dict[str, list], b: dict[str, list]) -> tuple[int, int]:
    """(trials both ran, of which identical)."""
    common = sorted(set(a) & set(b))
    return len(common), sum(a[t] == b[t] for t in common)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="retail")
    parser.add_argument("--tasks", default="retail-001-cancel-stated,retail-002-tracking-stated")
    parser.add_argument("-k", type=int, default=4)
    parser.add_argument("--off-k", type=int, default=0, help="trials per task for the `off` mode (default: k)")
    parser.add_argument("--modes", default="off,cache,states")
    parser.add_argument("--configs", nargs="+", default=["1x1", "2x1", "2x2"],
                        help="CONCURRENCYxINSTANCES (trials at once × llama.cpp contexts)")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    suite = load_suite(args.suite)
    task_ids = [t for t in args.tasks.split(",") if t]
    print(f"suite {suite.name}, tasks {task_ids}, k={args.k} (off: k={args.off_k or args.k}); cores {os.cpu_count()}; "
          f"nice {os.nice(0)}; load {os.getloadavg()[0]:.1f}", flush=True)
    print(_header(), flush=True)
    rows = []
    for conc, instances in (tuple(int(n) for n in c.split("x")) for c in args.configs):
        for mode in args.modes.split(","):
            k = (args.off_k or args.k) if mode == "off" else args.k
            row = run_one(suite, task_ids, mode, conc, instances, k, args)
            rows.append(row)
            print(_fmt(row), flush=True)
    print("\nratios at the same concurrency and instances (trials/s: higher is faster; evaluated tokens per trial: "
          "baseline / mode); trajectories identical to the baseline's on the trials both ran")
    for row in rows:
        for base_mode in ("off", "cache"):
            base = next((b for b in rows if b["mode"] == base_mode and b["concurrency"] == row["concurrency"]
                         and b["instances"] == row["instances"]), None)
            if base is None or base is row or list(MODES).index(base_mode) >= list(MODES).index(row["mode"]):
                continue
            both, same = same_trajectories(base["trajectories"], row["trajectories"])
            tokens = base["evaluated_tokens"] / row["evaluated_tokens"] if row["evaluated_tokens"] else float("inf")
            print(f"  c={row['concurrency']} i={row['instances']} {row['mode']:>6} vs {base_mode:<5}: "
                  f"trials/s ×{row['trials_per_s'] / base['trials_per_s']:.2f}, evaluated tokens/trial ÷{tokens:.1f}, "
                  f"trajectories {same}/{both} identical")
    everything = [r["trajectories"] for r in rows]
    pairs = [same_trajectories(a, b) for a in everything for b in everything if a is not b]
    print(f"all configurations: {sum(s for _, s in pairs)}/{sum(n for n, _ in pairs)} pairwise trial comparisons identical")
    return 0 if all(n == s for n, s in pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
