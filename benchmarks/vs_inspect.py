"""trajbench against Inspect AI on the same shopping-cart workload, in one process run.

The workload (benchmarks/cart_workload.py; the probe of the Inspect baseline in
/work/shared/reference/inspect-baseline.md): N samples x k epochs, each a scripted, zero-cost
agent making 10 seeded cart calls (add_item / remove_item / view_cart) and submitting, one call
dropped in 15% of the (sample, epoch) pairs. Inspect runs it with `mockllm/model` and a
`custom_outputs` script, react(), store() and a cart scorer; trajbench with a generated cart
suite and a `python` agent (`cart_workload.py:CartAgent`) that logs the same model turns and
makes the same calls. Both run one trajectory at a time (`--parallel` changes both).

Each round runs, alternating A B A B:
- in-process: each harness's own run call (`run_benchmark`, `inspect_ai.eval`), CPU by
  `time.process_time()` around it, per step (a step = one model turn and its call; the submit
  turn counts, so both harnesses have the same steps);
- whole process: `trajbench run ...` and a `python -c` Inspect driver as child processes, CPU
  from `getrusage(RUSAGE_CHILDREN)` deltas (start-up and imports included);
- the logs: bytes per trajectory of trajbench's log (`trajectories.jsonl.zst`, the default; and
  the same records as plain JSON lines, `--log-format jsonl`) and of Inspect's `.eval` file;
- read-back: `read_run` and `build_report` (which reads the log itself) against
  `inspect_ai.log.read_eval_log`; and `build_report` on the compressed log against the same
  run with its log decompressed to plain JSON lines (what the compression costs the reader).
Then the medians, the ratios (Inspect / trajbench), and pass@1 of both, checked equal to each
other and to the scripted truth, trial by trial.

    python benchmarks/vs_inspect.py [--samples 50] [--epochs 8] [--rounds 2] [--parallel 1]

Needs `pip install inspect-ai` (an optional dependency of this benchmark only).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cart_workload as workload  # noqa: E402  (the sibling module, found through HERE)

AGENT = f"{HERE / 'cart_workload.py'}:CartAgent"


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_child(argv: list[str]) -> float:
    """CPU seconds (user + sys) of one child process run to completion."""
    before = child_cpu()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return child_cpu() - before


def trajbench_inprocess(suite: Any, k: int, out: Path, parallel: int) -> tuple[float, Path]:
    from bench.adapters.spec import parse_agent_spec
    from bench.runs.runner import RunConfig, run_benchmark

    spec = parse_agent_spec(AGENT)
    config = RunConfig(k=k, out=out, concurrency=parallel, progress=False)
    started = time.process_time()
    run_benchmark(suite, spec, None, config)
    return time.process_time() - started, out


def inspect_inprocess(samples: int, epochs: int, log_dir: Path, parallel: int) -> tuple[float, Path]:
    started = time.process_time()
    path = workload.inspect_run(samples, epochs, str(log_dir), parallel)
    return time.process_time() - started, path


def trajbench_process(suite_dir: Path, k: int, out: Path, parallel: int) -> float:
    exe = shutil.which("trajbench") or "trajbench"
    return timed_child([exe, "run", str(suite_dir), "--agent", AGENT, "-k", str(k), "--out", str(out),
                        "--concurrency", str(parallel), "--quiet"])


def inspect_process(samples: int, epochs: int, log_dir: Path, parallel: int) -> float:
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import cart_workload as w; "
            f"w.inspect_run({samples}, {epochs}, {str(log_dir)!r}, {parallel})")
    return timed_child([sys.executable, "-c", code])


def log_of(run_dir: Path) -> Path:
    """The run's log: compressed (the default since 0.2) or plain (a trajbench before it)."""
    packed = run_dir / "trajectories.jsonl.zst"
    return packed if packed.exists() else run_dir / "trajectories.jsonl"


def plain_copy(run_dir: Path, dest: Path) -> Path:
    """The run with its log as plain JSON lines (a compressed log decompressed): the same records."""
    import zstandard

    dest.mkdir()
    shutil.copy2(run_dir / "run.json", dest / "run.json")
    with open(log_of(run_dir), "rb") as src:
        plain = src.read() if src.name.endswith(".jsonl") else \
            zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True).read()
    (dest / "trajectories.jsonl").write_bytes(plain)
    return dest


def report_seconds(run_dir: Path) -> float:
    from bench.analysis.report import build_report

    started = time.process_time()
    build_report(run_dir)
    return time.process_time() - started


def trajbench_read(run_dir: Path) -> tuple[float, float, dict[Any, bool]]:
    """Seconds of read_run and of build_report, and each trial's success keyed (sample, epoch)."""
    from bench.analysis.report import build_report
    from bench.runs.rundir import read_run

    started = time.perf_counter()
    log = read_run(run_dir)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    build_report(run_dir)
    report_s = time.perf_counter() - started
    outcomes = {}
    for trial_id in log.summaries:
        task, _, index = trial_id.split("/")
        outcomes[(task, int(index) + 1)] = log.summaries[trial_id]["outcome"] == "success"
    return read_s, report_s, outcomes


def inspect_read(path: Path) -> tuple[float, dict[Any, bool]]:
    """Seconds of read_eval_log, and each sample-epoch's score."""
    from inspect_ai.log import read_eval_log

    started = time.perf_counter()
    log = read_eval_log(str(path))
    seconds = time.perf_counter() - started
    outcomes = {(str(s.id), s.epoch): (s.scores or {})["cart_state"].value == "C" for s in log.samples or []}
    return seconds, outcomes


def count_steps(samples: int, epochs: int) -> int:
    """Steps of the workload: per trajectory, one per planned call plus the submit turn."""
    return sum(len(workload.planned_ops(workload.instruction(workload.make_ops(i)), workload.sample_id(i), e)) + 1
               for i in range(samples) for e in range(1, epochs + 1))


def pass_at_1(outcomes: dict[Any, bool]) -> float:
    return sum(outcomes.values()) / len(outcomes)


def row(name: str, tb: list[float], ins: list[float], scale: float, unit: str, digits: int = 3) -> str:
    """One table line: the medians over rounds, their ratio, and every round's pair."""
    t, i = statistics.median(tb) * scale, statistics.median(ins) * scale
    rounds = ", ".join(f"{a * scale:,.{digits}f} / {b * scale:,.{digits}f}" for a, b in zip(tb, ins))
    return f"| {name} | {t:,.{digits}f} {unit} | {i:,.{digits}f} {unit} | {i / t:,.1f}x | {rounds} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=1, help="trajbench --concurrency and Inspect max_samples (default 1)")
    args = parser.parse_args()
    try:
        import inspect_ai  # noqa: F401
    except ImportError:
        print("benchmarks/vs_inspect.py needs Inspect AI: pip install inspect-ai")
        raise SystemExit(2) from None
    from bench.world.suite import load_suite

    work = Path(tempfile.mkdtemp(prefix="vs-inspect-"))
    os.environ["XDG_DATA_HOME"] = str(work / "xdg")  # Inspect's traces and sample buffer stay in the temp folder
    suite_dir = workload.write_suite(work / "suite", args.samples)
    suite = load_suite(str(suite_dir))
    trajectories = args.samples * args.epochs
    steps = count_steps(args.samples, args.epochs)
    truth = workload.expected_passes(args.samples, args.epochs)
    fig: dict[str, list[float]] = {key: [] for key in
                                   ("tb_cpu", "in_cpu", "tb_proc", "in_proc", "tb_bytes", "in_bytes", "tb_read", "tb_report",
                                    "in_read", "plain_bytes", "report_zst", "report_plain")}
    checks = []
    print(f"{args.samples} samples x {args.epochs} epochs = {trajectories} trajectories, {steps} steps; "
          f"{args.rounds} rounds, parallel {args.parallel}; in {work}", flush=True)
    for r in range(args.rounds):
        cpu, run_dir = trajbench_inprocess(suite, args.epochs, work / f"tb-{r}", args.parallel)
        fig["tb_cpu"].append(cpu / steps)
        cpu, eval_log = inspect_inprocess(args.samples, args.epochs, work / f"in-{r}", args.parallel)
        fig["in_cpu"].append(cpu / steps)
        fig["tb_proc"].append(trajbench_process(suite_dir, args.epochs, work / f"tbp-{r}", args.parallel) / steps)
        fig["in_proc"].append(inspect_process(args.samples, args.epochs, work / f"inp-{r}", args.parallel) / steps)
        fig["tb_bytes"].append(log_of(run_dir).stat().st_size / trajectories)
        plain = plain_copy(run_dir, work / f"tb-{r}-plain")
        fig["plain_bytes"].append((plain / "trajectories.jsonl").stat().st_size / trajectories)
        for i in range(4):  # interleaved, the order alternating: the report on the compressed log and on the plain one
            first, second = ("report_zst", "report_plain") if i % 2 == 0 else ("report_plain", "report_zst")
            fig[first].append(report_seconds(run_dir if first == "report_zst" else plain))
            fig[second].append(report_seconds(run_dir if second == "report_zst" else plain))
        fig["in_bytes"].append(eval_log.stat().st_size / trajectories)
        read_s, report_s, tb_out = trajbench_read(run_dir)
        fig["tb_read"].append(read_s)
        fig["tb_report"].append(report_s)
        in_read, in_out = inspect_read(eval_log)
        fig["in_read"].append(in_read)
        checks.append((tb_out, in_out))
        print(f"round {r + 1}: trajbench {fig['tb_cpu'][-1] * 1e3:.3f} ms/step in-process, "
              f"{fig['tb_proc'][-1] * 1e3:.3f} whole process; Inspect {fig['in_cpu'][-1] * 1e3:.3f}, "
              f"{fig['in_proc'][-1] * 1e3:.3f}", flush=True)
    print()
    print("| figure | trajbench | Inspect AI | Inspect / trajbench | per round (trajbench/Inspect) |")
    print("|---|---|---|---|---|")
    print(row("harness CPU per step, in-process", fig["tb_cpu"], fig["in_cpu"], 1e3, "ms"))
    print(row("whole-process CPU per step", fig["tb_proc"], fig["in_proc"], 1e3, "ms"))
    print(row("log bytes per trajectory", fig["tb_bytes"], fig["in_bytes"], 1, "B", 0))
    print(row("read-back: read_run / read_eval_log", fig["tb_read"], fig["in_read"], 1, "s"))
    print(row("read-back: build_report / read_eval_log", fig["tb_report"], fig["in_read"], 1, "s"))
    print()
    print("| trajbench's log | compressed (default) | plain JSON lines | plain / compressed | per round |")
    print("|---|---|---|---|---|")
    print(row("log bytes per trajectory", fig["tb_bytes"], fig["plain_bytes"], 1, "B", 0).replace("| per round", ""))
    print(row("build_report CPU", fig["report_zst"], fig["report_plain"], 1, "s"))
    half = statistics.median(fig["in_bytes"]) / 2
    print(f"\ncompressed log: {statistics.median(fig['tb_bytes']):,.0f} B per trajectory against half of Inspect's "
          f"{half:,.0f} B (target: at most that)")
    tb_out, in_out = checks[0]
    same = all(t == truth and i == truth for t, i in checks)
    print(f"\npass@1: trajbench {pass_at_1(tb_out):.4f}, Inspect {pass_at_1(in_out):.4f}, scripted truth "
          f"{pass_at_1(truth):.4f}; every (sample, epoch) outcome equal in both harnesses and every round: {same}")
    shutil.rmtree(work, ignore_errors=True)
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
