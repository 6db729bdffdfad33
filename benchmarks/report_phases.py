"""`build_report`'s phases, each beside the bare parse of the same log, in one process.

    python benchmarks/report_phases.py RUN_DIR [--code DIR] [--rounds 1]

Times, in one process: the bare parse (orjson over every line, nothing kept), then the report's
three phases as `build_report` runs them — reading and keying the log (`read_keyed`), the task
rows and suite metrics (`bench.analysis.report.task_rows` and `suite_summary`, B = 2000), the
divergence section (`divergence_section`) — and `build_report` whole, then the parse again (the
lower parse counts; the page cache is warm for both). Prints CPU and wall seconds of each and
their ratio to the parse's CPU (the robust figure on a shared machine; issue 16's target: the
whole report ≤ 2× the parse). The exact tests' caches are cleared before each phase (each
starts cold, as in a fresh process). `--code DIR` imports another checkout first (e.g. /work/main: the
code before a change, measured with the same script); code without `task_rows` gets the rows
phase as `build_report` computed it there.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


def _parse(log: Path) -> None:
    import io

    import orjson
    import zstandard

    raw = open(log, "rb")
    lines = raw if log.suffix != ".zst" else io.BufferedReader(
        zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    with lines:
        for line in lines:
            orjson.loads(line)


def _cold() -> None:
    """Clear the exact tests' caches, so that each phase and round starts as a process does."""
    from bench.analysis import exact

    for name in ("_exact_cached", "_boschloo_cached", "_boschloo_space", "_bernstein_basis"):
        cached = getattr(exact, name, None)
        if cached is not None and hasattr(cached, "cache_clear"):
            cached.cache_clear()


def _timed(phase: Callable[[], Any]) -> tuple[float, float, Any]:
    _cold()
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    out = phase()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _rows_phase(run: Any) -> Any:
    """The task rows and the suite figures of `build_report`, on either version of the code."""
    from bench.analysis import metrics, report

    if hasattr(report, "task_rows"):
        rows, _ = report.task_rows(run)
    else:  # the code before `task_rows` (main at e860c38)
        k = int(run.log.manifest["k"])
        rows = []
        for task_id, trials in run.log.by_task(base_only=True):
            rows.append(report._task_row(task_id, trials, run, k))
            report._task_cvs(trials)
    return metrics.suite_summary([(r["n"], r["successes"]) for r in rows], B=2000, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--code", default=str(ROOT), help="the checkout to import bench from (default: this one)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the phases (medians printed per round)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.code).resolve()))
    from bench.analysis.divergence.keys import read_keyed
    from bench.analysis.divergence.section import divergence_section
    from bench.analysis.report import build_report
    from bench.runs.rundir import gc_paused

    run_dir = Path(args.run_dir)
    log = run_dir / "trajectories.jsonl.zst"
    log = log if log.exists() else run_dir / "trajectories.jsonl"
    print(f"{run_dir} ({log.stat().st_size / 1e6:.0f} MB log); code {Path(args.code).resolve()}; "
          f"load {open('/proc/loadavg').read().split()[0]}")
    print("| round | phase | CPU s | wall s | CPU / parse |")
    print("|---|---|---|---|---|")
    for r in range(args.rounds):
        p1 = _timed(lambda: _parse(log))
        with gc_paused():
            read = _timed(lambda: read_keyed(run_dir))
            rows = _timed(lambda keyed=read[2]: _rows_phase(keyed))
            div = _timed(lambda keyed=read[2]: divergence_section(keyed))
            read = read[:2] + (None,)
        whole = _timed(lambda: build_report(run_dir))
        p2 = _timed(lambda: _parse(log))
        parse_cpu, parse_wall = min(p1[1], p2[1]), min(p1[0], p2[0])
        for name, (wall, cpu, _) in (("read + key", read), ("task rows + suite metrics", rows), ("divergence", div),
                                      ("build_report (whole)", whole)):
            print(f"| {r + 1} | {name} | {cpu:.2f} | {wall:.2f} | {cpu / parse_cpu:.2f}× |")
        analysis = rows[1] + div[1]
        print(f"| {r + 1} | rows + divergence | {analysis:.2f} | {rows[0] + div[0]:.2f} | {analysis / parse_cpu:.2f}× |")
        print(f"| {r + 1} | bare parse | {parse_cpu:.2f} | {parse_wall:.2f} | 1.00× |", flush=True)


if __name__ == "__main__":
    main()
