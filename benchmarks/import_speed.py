"""Speed and memory of `trajbench import tau-bench` on a large file, against a bare parse.

Generates a τ-bench historical-trajectory file of N trials (default 100,000: 2,000 tasks × 50
trials, each with a user turn, a tool call and its result, and a closing text turn), then in
separate child processes (so that each peak RSS is its own) times:
- baseline: `orjson.loads` of the whole file (the fastest way to read it, holding all of it);
- import: bench.imports.import_run into a fresh run directory (streaming, writing the run).
Prints trials/s and peak RSS of each, and the ratios import / baseline.

    python benchmarks/import_speed.py              # 100k trials (~1 minute)
    python benchmarks/import_speed.py --trials 10000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import resource, sys, time
from pathlib import Path
start = time.perf_counter()
if sys.argv[1] == "baseline":
    import orjson
    n = len(orjson.loads(Path(sys.argv[2]).read_bytes()))
else:
    from bench.imports import import_run
    n = import_run("tau-bench", [Path(sys.argv[2])], Path(sys.argv[3])).count
print(n, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_source(path: Path, trials: int, tasks: int) -> None:
    """One record per (task, trial), trial-major like τ-bench's own files; reward alternates."""
    with path.open("w") as fh:
        fh.write("[")
        for i in range(trials):
            task, trial = i % tasks, i // tasks
            action = {"name": "cancel_reservation", "kwargs": {"reservation_id": f"R{task:05d}"}}
            record = {
                "task_id": task, "trial": trial, "reward": float((task + trial) % 3 != 0),
                "info": {"task": {"user_id": f"u{task}", "instruction": f"You are user {task}. " * 8,
                                  "actions": [action], "outputs": []},
                         "source": "user", "user_cost": 0.001,
                         "reward_info": {"reward": 1.0, "info": {"r_actions": 1.0, "gt_data_hash": "a" * 64},
                                         "actions": [action]}},
                "traj": [{"role": "system", "content": "# Policy\n" + "rule. " * 100},
                         {"role": "user", "content": "Hi, please cancel my trip."},
                         {"role": "assistant", "content": None, "tool_calls": [{"id": f"c{i}", "type": "function",
                          "function": {"name": "cancel_reservation", "arguments": json.dumps(action["kwargs"])}}]},
                         {"role": "tool", "tool_call_id": f"c{i}", "name": "cancel_reservation",
                          "content": '{"status": "cancelled"}'},
                         {"role": "assistant", "content": "Done."},
                         {"role": "user", "content": "Thanks ###STOP###"}],
            }
            fh.write(("," if i else "") + json.dumps(record))
        fh.write("]")


def measure(mode: str, *args: Path) -> tuple[int, float, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, *map(str, args)], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source.json"
        write_source(source, args.trials, args.tasks)
        size = source.stat().st_size / 2**20
        n_base, t_base, rss_base = measure("baseline", source)
        n_imp, t_imp, rss_imp = measure("import", source, Path(tmp) / "run")
    assert n_base == n_imp == args.trials
    print(f"source: {args.trials} trials, {size:.0f} MiB")
    print("| | trials/s | peak RSS (MiB) |\n|---|---|---|")
    print(f"| baseline (orjson.loads whole file) | {n_base / t_base:,.0f} | {rss_base:,.0f} |")
    print(f"| trajbench import tau-bench | {n_imp / t_imp:,.0f} | {rss_imp:,.0f} |")
    print(f"| import / baseline | {t_base / t_imp:.3f}× speed | {rss_imp / rss_base:.3f}× memory |")


if __name__ == "__main__":
    main()
