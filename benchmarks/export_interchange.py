"""Speed and memory of `trajbench export --format atif|otel` and `trajbench import atif` on a large
run, against `read_run` of the same run (what the dataset exports do: the whole log in memory).

Writes a synthetic run directory of N trials (default 20,000: 500 tasks × 40 trials, each a model
turn, three tool calls, an ask_user turn and a closing model turn), then in separate child
processes (so each peak RSS is its own) times:
- baseline: bench.runs.rundir.read_run of the run (every trial and step held);
- otel: the OTLP JSON export (streamed: one trial in memory);
- atif: the ATIF export (one file per trial, each schema-checked);
- import: `import atif` of those files back into a run directory.
Prints trials/s and peak RSS of each, and the ratios to the baseline.

    python benchmarks/export_interchange.py                 # 20k trials (~2 minutes on 2 cores)
    python benchmarks/export_interchange.py --trials 2000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

_CHILD = """
import resource, sys, time
from pathlib import Path
from bench.imports import import_run
from bench.publish.export import export_run
from bench.runs.rundir import read_run
mode, run, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
start = time.perf_counter()  # after the imports: the figures are the work, not the start-up
if mode == "baseline":
    n = len(read_run(run).summaries)
elif mode == "import":
    n = import_run("atif", sorted(run.iterdir()), out).count
else:
    n = export_run(run, mode, out)["trials"]
print(n, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_run(run: Path, trials: int, tasks: int) -> None:
    """A run directory as the runner writes it: run.json and one attempt's steps then its summary."""
    run.mkdir()
    manifest = {"run_id": "bench-run", "harness_version": "0", "created_at": "2026-01-01T00:00:00+00:00",
                "suite": {"name": "synthetic", "hash": "0" * 32, "path": None},
                "agent": {"name": "synthetic", "adapter": "python", "hash": "1" * 32, "simulated": False},
                "k": trials // tasks, "base_seed": 0, "tasks": [f"t{i}" for i in range(tasks)]}
    (run / "run.json").write_bytes(orjson.dumps(manifest))
    with (run / "trajectories.jsonl").open("wb") as fh:
        for i in range(trials):
            task, index = f"t{i % tasks}", i // tasks
            trial = f"{task}/base/{index}"
            attempt = f"{trial}@{i:010x}"
            t = 1_767_600_000.0 + i
            steps = [{"kind": "model", "model": "m", "messages": [{"role": "user", "content": "Cancel my order. " * 20}],
                      "output": {"role": "assistant", "content": "Looking.", "tool_calls": [{"name": "find"}]},
                      "input_tokens": 900, "output_tokens": 20, "latency_s": 0.5, "cost": 0.001}]
            steps += [{"kind": "tool", "tool": "get_order", "args": {"order_id": f"O{j}"},
                       "observation": {"order_id": f"O{j}", "items": [{"id": k, "price": 9.5} for k in range(5)]},
                       "error": None, "read_only": True, "state_hash": "a" * 24} for j in range(3)]
            steps += [{"kind": "user", "tool": "ask_user", "args": {"question": "Which one?"}, "observation": "O1",
                       "error": None, "read_only": True, "state_hash": "a" * 24},
                      {"kind": "model", "model": "m", "messages": None, "output": "Done.", "input_tokens": 950,
                       "output_tokens": 4, "latency_s": 0.2, "cost": 0.001}]
            for number, step in enumerate(steps):
                fh.write(orjson.dumps({"type": "step", "trial": trial, "attempt": attempt, "step": number, **step,
                                       "t_start": t + number, "t_end": t + number + 0.1}) + b"\n")
            fh.write(orjson.dumps({"type": "trial", "trial": trial, "attempt": attempt, "task": task, "variant": "base",
                                   "variant_family": "base", "index": index, "seed": i, "started_at": t, "attempts": 1,
                                   "outcome": "success" if (i % 3) else "failure", "reason": None,
                                   "checks": {"state": {"passed": bool(i % 3), "detail": ""}}, "milestones": {},
                                   "final_state_hash": "b" * 24, "answer": "Done.", "steps": 4, "events": 6,
                                   "input_tokens": 1850, "output_tokens": 24, "cost": 0.002, "duration_s": 6.0,
                                   "agent_info": {}}) + b"\n")


def measure(mode: str, run: Path, out: Path) -> tuple[int, float, float]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(run), str(out)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    n, seconds, rss = proc.stdout.split()
    return int(n), float(seconds), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        write_run(run, args.trials, args.tasks)
        size = (run / "trajectories.jsonl").stat().st_size / 2**20
        rows = {"baseline (read_run, whole log)": measure("baseline", run, Path(tmp) / "unused"),
                "export --format otel": measure("otel", run, Path(tmp) / "otel"),
                "export --format atif": measure("atif", run, Path(tmp) / "atif"),
                "import atif (the ATIF files back)": measure("import", Path(tmp) / "atif", Path(tmp) / "back")}
    _, t_base, rss_base = rows["baseline (read_run, whole log)"]
    print(f"run: {args.trials} trials, 6 steps each, log {size:.0f} MiB")
    print("| | trials/s | peak RSS (MiB) | time / baseline | memory / baseline |\n|---|---|---|---|---|")
    for name, (n, seconds, rss) in rows.items():
        assert n == args.trials, (name, n)
        print(f"| {name} | {n / seconds:,.0f} | {rss:,.0f} | {seconds / t_base:.2f}× | {rss / rss_base:.2f}× |")


if __name__ == "__main__":
    main()
