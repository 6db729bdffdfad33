"""How much of a run's wall time the local model is busy, and how many tool calls per second a
run makes, for the in-process `local` adapter and the `openai` adapter against a llama.cpp server
on loopback, at a few concurrency levels.

    python benchmarks/local_llm.py                               # mini suite, k=2, both modes, concurrency 1 2 4
    python benchmarks/local_llm.py --suite retail --tasks retail-001-cancel-stated,retail-002-tracking-stated -k 2
    python benchmarks/local_llm.py --modes inprocess --concurrency 1 2 --instances 1 2

Figures per configuration (from the run log alone, see `figures()`):
- model busy   share of the run's wall time during which at least one model turn was running
               (union of the logged model-turn intervals / wall). The harness must never make the
               model wait: the target is ≥ 90 %. Between two turns of a trial, the harness parses
               the reply, runs the tool, logs, and builds the next prompt and grammar;
- model util   sum of model-turn latencies / (wall × model slots): for in-process runs with several
               instances, how full the slots are;
- tools/s      tool calls (steps) per second of wall time; turns/s, tokens/s likewise;
- cpu          CPU seconds of the benchmark process (and of the server process, in server mode).
Wall time excludes loading the model / starting the server (printed separately) and a warm-up
trial (untimed) that evaluates the suite's system prompt into every model instance's KV cache: the
figures are for a warm model, as in a run of many trials.
The machine's load is printed too: other processes on the same cores skew everything.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LANGSMITH_TRACING_V2", "false")

from bench.adapters.spec import AgentSpec  # noqa: E402
from bench.runs.rundir import read_run  # noqa: E402
from bench.runs.runner import RunConfig, run_benchmark  # noqa: E402
from bench.world.suite import load_suite  # noqa: E402

SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 192}


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def figures(run_dir: Path, wall: float, slots: int) -> dict[str, float]:
    log = read_run(run_dir)
    steps = [s for trial in log.summaries for s in log.trial_steps(trial)]
    models = [(s["t_start"], s["t_end"]) for s in steps if s["kind"] == "model"]
    tokens = sum((s.get("input_tokens") or 0) + (s.get("output_tokens") or 0) for s in steps if s["kind"] == "model")
    tools = sum(s["kind"] in ("tool", "user") for s in steps)
    outcomes = [s["outcome"] for s in log.summaries.values()]
    return {
        "trials": len(outcomes), "success": outcomes.count("success"), "errors": outcomes.count("error"),
        "wall_s": wall, "model_busy": union_length(models) / wall if wall else 0.0,
        "model_util": sum(b - a for a, b in models) / (wall * slots) if wall else 0.0,
        "tool_calls": tools, "tools_per_s": tools / wall, "turns_per_s": len(models) / wall,
        "tokens_per_s": tokens / wall, "turn_s": (sum(b - a for a, b in models) / len(models)) if models else 0.0,
    }


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=str(ROOT / "tests" / "fixtures" / "mini"))
    parser.add_argument("--tasks", default="", help="comma-separated task ids (default: all)")
    parser.add_argument("-k", type=int, default=2)
    parser.add_argument("--modes", default="inprocess,server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--instances", type=int, nargs="*", default=None,
                        help="in-process model instances per concurrency level (default: 1, and = concurrency when > 1)")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads per model instance (default: cores / instances)")
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    suite = load_suite(args.suite)
    task_ids = [t for t in args.tasks.split(",") if t] or None
    n_tasks = len(suite.select(task_ids))
    print(f"suite {suite.name}, {n_tasks} tasks × k={args.k}; cores {os.cpu_count()}; load {os.getloadavg()[0]:.1f}")
    rows = []
    for mode in args.modes.split(","):
        for conc in args.concurrency:
            instance_counts = args.instances or sorted({1, conc})
            for instances in (instance_counts if mode == "inprocess" else [1]):
                if mode == "inprocess":
                    spec = AgentSpec(f"local-c{conc}-i{instances}", "local", {**SAMPLING, "instances": instances, "n_threads": args.threads})
                else:
                    spec = AgentSpec(f"server-c{conc}", "openai", {**SAMPLING, "launch": "llama_cpp", "mode": "structured",
                                                                  "response_format": "json_object", "max_concurrency": conc,
                                                                  "launch_options": {"n_threads": args.threads} if args.threads else {},
                                                                  "timeout_s": 600.0, "extra_body": {"top_k": 40, "repeat_penalty": 1.0}})
                started = time.perf_counter()
                agent = spec.build()  # loads the model / starts the server (cached for the run below)
                load_s = time.perf_counter() - started
                with tempfile.TemporaryDirectory() as tmp:  # warm-up: the system prompt into each instance's cache
                    first = suite.select(task_ids)[0].id
                    config = RunConfig(k=max(instances, conc), out=Path(tmp) / "warm", seed=args.seed + 1, concurrency=max(instances, conc),
                                       max_steps=1, timeout_s=1800.0, progress=False, retry_backoff_s=0.0)
                    run_benchmark(suite, spec, [first], config)
                server_pid = getattr(getattr(agent, "server", None), "process", None)
                server_cpu0 = proc_cpu(server_pid.pid) if server_pid else 0.0
                cpu0 = resource.getrusage(resource.RUSAGE_SELF)
                load0 = os.getloadavg()[0]
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "run"
                    config = RunConfig(k=args.k, out=out, seed=args.seed, concurrency=conc, max_steps=args.max_steps,
                                       timeout_s=1800.0, progress=False, retry_backoff_s=0.0)
                    started = time.perf_counter()
                    run_benchmark(suite, spec, task_ids, config)
                    wall = time.perf_counter() - started
                    row = figures(out, wall, instances)
                cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                row.update(mode=mode, concurrency=conc, instances=instances, load_s=load_s, load_avg=(load0 + os.getloadavg()[0]) / 2,
                           cpu_s=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
                           server_cpu_s=(proc_cpu(server_pid.pid) - server_cpu0) if server_pid else 0.0)
                rows.append(row)
                print(_fmt(row), flush=True)
    print("\n" + _header())
    for row in rows:
        print(_fmt(row))
    return 0


def _header() -> str:
    return (f"{'mode':<10}{'conc':>5}{'inst':>5}{'trials':>7}{'ok':>4}{'err':>4}{'wall s':>8}{'busy':>7}{'util':>7}"
            f"{'tools/s':>9}{'turns/s':>9}{'tok/s':>7}{'turn s':>8}{'cpu s':>7}{'srv cpu':>8}{'load s':>7}{'loadavg':>8}")


def _fmt(row: dict) -> str:
    return (f"{row['mode']:<10}{row['concurrency']:>5}{row['instances']:>5}{row['trials']:>7}{row['success']:>4}{row['errors']:>4}"
            f"{row['wall_s']:>8.1f}{row['model_busy']:>7.1%}{row['model_util']:>7.1%}{row['tools_per_s']:>9.3f}"
            f"{row['turns_per_s']:>9.3f}{row['tokens_per_s']:>7.0f}{row['turn_s']:>8.2f}{row['cpu_s']:>7.1f}"
            f"{row['server_cpu_s']:>8.1f}{row['load_s']:>7.1f}{row['load_avg']:>8.1f}")


if __name__ == "__main__":
    sys.exit(main())
