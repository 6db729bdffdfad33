"""Speed and memory of `trajbench import tau-bench` and `import tau2` on a large file, against
a bare parse.

For each format, generates a source file of N trials (default 100,000: 2,000 tasks × 50 trials,
each with a user turn, a tool call and its result, and a closing text turn; for tau2 also the
tasks with their gold actions and a full reward_info), then in separate child processes (so that
each peak RSS is its own) times:
- baseline: `orjson.loads` of the whole file (the fastest way to read it, holding all of it);
- import: bench.imports.import_run into a fresh run directory (streaming, writing the run).
Prints trials/s and peak RSS of each, and the ratios import / baseline.

    python benchmarks/import_speed.py                     # both formats, 100k trials (~3 minutes)
    python benchmarks/import_speed.py --format tau2 --trials 10000
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
    data = orjson.loads(Path(sys.argv[3]).read_bytes())
    n = len(data["simulations"] if isinstance(data, dict) else data)
else:
    from bench.imports import import_run
    n = import_run(sys.argv[2], [Path(sys.argv[3])], Path(sys.argv[4])).count
print(n, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_taubench(path: Path, trials: int, tasks: int) -> None:
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


def write_tau2(path: Path, trials: int, tasks: int) -> None:
    """A τ² results file (json layout, keys in τ²'s order): info, the tasks with gold actions,
    then one simulation per (task, trial), trial-major; reward alternates."""
    def action(task: int) -> dict[str, object]:
        return {"action_id": f"{task}_0", "requestor": "assistant", "name": "cancel_reservation",
                "arguments": {"reservation_id": f"R{task:05d}"}, "info": None, "compare_args": None}

    def message(role: str, turn: int, **fields: object) -> dict[str, object]:
        return {"role": role, "content": None, "tool_calls": None, "turn_idx": turn,
                "timestamp": "2026-01-05T10:00:00", "cost": 0.001, "usage": {"prompt_tokens": 900,
                                                                             "completion_tokens": 25},
                "raw_data": None, **fields}

    with path.open("w") as fh:
        fh.write('{"timestamp": "2026-01-05T10:00:00", "info": {"git_commit": "abc1234", "num_trials": %d, '
                 '"agent_info": {"implementation": "llm_agent", "llm": "some-model"}}, "tasks": [' % (trials // tasks))
        fh.write(",".join(json.dumps({"id": str(t), "user_scenario": {"instructions": f"You are user {t}. " * 8},
                                      "evaluation_criteria": {"actions": [action(t)], "reward_basis": ["DB"]}})
                          for t in range(tasks)))
        fh.write('], "simulations": [')
        for i in range(trials):
            task, trial = i % tasks, i // tasks
            reward = float((task + trial) % 3 != 0)
            call = {"id": f"c{i}", "name": "cancel_reservation", "arguments": {"reservation_id": f"R{task:05d}"},
                    "requestor": "assistant"}
            sim = {"id": f"sim-{i}", "task_id": str(task), "trial": trial, "seed": 1000 + trial,
                   "start_time": "2026-01-05T10:00:00", "end_time": "2026-01-05T10:00:40", "duration": 40.0,
                   "termination_reason": "user_stop", "agent_cost": 0.004, "user_cost": 0.001, "mode": "half_duplex",
                   "reward_info": {"reward": reward, "reward_basis": ["DB"], "reward_breakdown": {"DB": reward},
                                   "db_check": {"db_match": reward == 1.0, "db_reward": reward},
                                   "action_checks": [{"action": action(task), "action_match": True,
                                                      "action_reward": 1.0, "tool_type": "write"}]},
                   "messages": [message("assistant", 0, content="Hi! How can I help you today?"),
                                message("user", 1, content="Hi, please cancel my trip."),
                                message("assistant", 2, tool_calls=[call]),
                                {"role": "tool", "id": f"c{i}", "content": '{"status": "cancelled"}',
                                 "requestor": "assistant", "error": False, "turn_idx": 3},
                                message("assistant", 4, content="Done."),
                                message("user", 5, content="Thanks ###STOP###")]}
            fh.write(("," if i else "") + json.dumps(sim))
        fh.write("]}")


WRITERS = {"tau-bench": write_taubench, "tau2": write_tau2}


def measure(mode: str, *args: str | Path) -> tuple[int, float, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, *map(str, args)], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--format", choices=[*WRITERS, "all"], default="all")
    args = parser.parse_args()
    print("| format | source | reader | trials/s | peak RSS (MiB) |\n|---|---|---|---|---|")
    for fmt in WRITERS if args.format == "all" else [args.format]:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "source.json"
            WRITERS[fmt](source, args.trials, args.tasks)
            size = f"{args.trials:,} trials, {source.stat().st_size / 2**20:.0f} MiB"
            n_base, t_base, rss_base = measure("baseline", fmt, source)
            n_imp, t_imp, rss_imp = measure("import", fmt, source, Path(tmp) / "run")
        assert n_base == n_imp == args.trials
        print(f"| {fmt} | {size} | baseline (orjson.loads whole file) | {n_base / t_base:,.0f} | {rss_base:,.0f} |")
        print(f"| {fmt} | {size} | trajbench import {fmt} | {n_imp / t_imp:,.0f} | {rss_imp:,.0f} |")
        print(f"| {fmt} | | import / baseline | {t_base / t_imp:.3f}× speed | {rss_imp / rss_base:.3f}× memory |")


if __name__ == "__main__":
    main()
