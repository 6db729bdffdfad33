"""Peak memory and wall time of every reading command, beside the bare parse of the same log.

    python benchmarks/memory.py make-sim OUT --trials 100000        # a real `sim` run on retail
    python benchmarks/memory.py make-synthetic OUT --trials 1000000  # benchmarks/divergence.py's generator
    python benchmarks/memory.py measure RUN_DIR [--code DIR] [--commands report verify diff export parse]
    python benchmarks/memory.py inprocess RUN_DIR [--code DIR]

`measure` runs each command as its own process (`python -m bench ...`, its output discarded)
and reads the child's own peak resident memory and CPU from `wait4`, so each figure is that
command's alone: `report --json`, `verify`, `diff RUN RUN` (the run against itself),
`export --format jsonl` and (`export-hf`, not by default) `export --format hf`; `parse` is the baseline, a process that merely `orjson.loads` every
line of the log and keeps nothing. `--code DIR` puts another checkout first on the import path
(e.g. /work/main, to measure the code before a change beside the code after it).

`inprocess` times, in one process, the bare parse, the reading phase (with the run index,
rebuilding it, without it), `build_report` (metrics and divergence, B = 2000) and the parse
again on the same log, and prints the ratios of CPU seconds (robust on a busy machine; the
target: ≤ 2×) and of wall seconds to the parse. It writes the index beside the log when
it is missing (timed: the first report of an old run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

_PARSE = ("import sys, orjson\n"
          "if sys.argv[1].endswith('.zst'):\n"  # a compressed log: decompressed as a stream, then parsed
          "    import io, zstandard\n"
          "    raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], 'rb'), read_across_frames=True)\n"
          "    lines = io.BufferedReader(raw)\n"
          "else:\n"
          "    lines = open(sys.argv[1], 'rb')\n"
          "for line in lines:\n"
          "    orjson.loads(line)\n")


def _log(run: Path) -> Path:
    """The run's log: compressed (`trajbench run`'s default) or plain (the synthetic runs)."""
    packed = run / "trajectories.jsonl.zst"
    return packed if packed.exists() else run / "trajectories.jsonl"


def _lines(log: Path):
    """The log's lines, a compressed log decompressed as a stream."""
    import io

    import zstandard

    raw = open(log, "rb")
    if log.suffix != ".zst":
        return raw
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))


def _commands(run: Path, scratch: Path) -> dict[str, list[str]]:
    bench = [sys.executable, "-m", "bench"]
    return {
        "parse": [sys.executable, "-c", _PARSE, str(_log(run))],
        "report": bench + ["report", str(run), "--json"],
        "verify": bench + ["verify", str(run), "--json"],
        "diff": bench + ["diff", str(run), str(run), "--json"],
        "export": bench + ["export", str(run), "--format", "jsonl", "--out", str(scratch / "export")],
        "export-hf": bench + ["export", str(run), "--format", "hf", "--out", str(scratch / "export")],
    }


def _child(argv: list[str], code: Path) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MB, exit code) of one child process. It runs in an empty
    folder: `python -m` puts the working directory first on the import path, before PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trajbench-cwd-") as cwd, open(Path(cwd) / "stderr", "w+b") as err:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        exit_code = os.waitstatus_to_exitcode(status)
        if exit_code not in (0, 1):  # 1: verify/diff found something; still a full pass over the log
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines()
            print(f"    (exit {exit_code}: {lines[-1] if lines else ''})")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, exit_code


def _size(run: Path) -> str:
    manifest = orjson.loads((run / "run.json").read_bytes())
    with _lines(_log(run)) as lines:
        trials = sum(1 for line in lines if line.startswith(b'{"type":"trial"'))
    return (f"{run}: {trials} trials ({len(manifest.get('tasks', []))} tasks, k = {manifest['k']}), "
            f"log {_log(run).stat().st_size / 1e6:.0f} MB ({_log(run).name})")


def measure(args: argparse.Namespace) -> None:
    run, code = Path(args.run_dir), Path(args.code).resolve()
    print(_size(run) + f"; code {code}; load {open('/proc/loadavg').read().split()[0]}")
    print("| command | wall s | CPU s | peak RSS MB | wall / parse |")
    print("|---|---|---|---|---|")
    base_wall = None
    for name in args.commands:
        with tempfile.TemporaryDirectory(prefix="trajbench-mem-") as scratch:
            wall, cpu, rss, _ = _child(_commands(run, Path(scratch))[name], code)
        base_wall = wall if name == "parse" else base_wall
        ratio = f"{wall / base_wall:.1f}×" if base_wall and name != "parse" else ""
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {rss:.0f} | {ratio} |", flush=True)


def inprocess(args: argparse.Namespace) -> None:
    """Parse, the reading phase three ways, the whole report, parse again: CPU and wall seconds,
    ratios to the lower parse. The reading phase is what `build_report` does before its analysis
    (`read_keyed`): through the index beside the log (written first if missing: its cost is the
    rebuild's), rebuilding the index from the log without writing it (the first report of a run
    made before the index), and the reading pass without the index (the code before it)."""
    run = Path(args.run_dir)
    sys.path.insert(0, str(Path(args.code).resolve()))
    from bench.analysis.report import build_report

    log = _log(run)

    def parse() -> None:
        with _lines(log) as fh:
            for line in fh:
                orjson.loads(line)

    def timed(phase: object) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        phase()  # type: ignore[operator]
        return time.perf_counter() - wall, time.process_time() - cpu

    phases: list[tuple[str, tuple[float, float]]] = [("bare parse", timed(parse))]
    try:
        from bench.analysis.divergence.keys import keyer_of_columns, read_keyed
        from bench.analysis.divergence.options import DivergenceOptions
        from bench.runs.runindex import INDEX, read_indexed, write_index
    except ImportError:  # a checkout before the index (--code): the whole report only
        pass
    else:
        o = DivergenceOptions()

        def via_index(rebuild: bool) -> None:
            found = read_indexed(run, rebuild=rebuild)
            assert found is not None, "the log holds what the index cannot represent"
            keyer_of_columns(found[1], o)

        if not (run / INDEX).exists():
            phases.append(("write the missing index (as `run`/`repair` do)", timed(lambda: write_index(run))))
        phases.append(("read with the index", timed(lambda: via_index(False))))
        if not args.index_only:
            phases.append(("read, rebuilding the index (not saved)", timed(lambda: via_index(True))))
            phases.append(("read without the index (reading pass)", timed(lambda: read_keyed(run, o, index=False))))
    if not args.index_only:
        phases.append(("build_report", timed(lambda: build_report(run))))
    phases.append(("bare parse again", timed(parse)))
    pw = min(w for name, (w, _) in phases if "parse" in name)
    pc = min(c for name, (_, c) in phases if "parse" in name)
    print(f"{_size(run)}; load {open('/proc/loadavg').read().split()[0]}")
    print("| phase (one process) | CPU s | wall s | CPU / parse | wall / parse |")
    print("|---|---|---|---|---|")
    for name, (wall, cpu) in phases:
        print(f"| {name} | {cpu:.2f} | {wall:.2f} | {cpu / pc:.2f}× | {wall / pw:.2f}× |")


def make_sim(args: argparse.Namespace) -> None:
    """A real run of the `sim` agent on the retail suite (36 tasks): verify can replay it."""
    k = max(1, round(args.trials / 36))
    argv = [sys.executable, "-m", "bench", "run", "retail", "--agent", "sim:noisy?p=0.2..0.95", "-k", str(k), "--out", str(Path(args.out).resolve())]
    wall, cpu, rss, code = _child(argv, Path(args.code).resolve())
    print(f"run of {36 * k} trials: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.0f} MB (exit {code})")


def make_synthetic(args: argparse.Namespace) -> None:
    """A synthetic run (no suite: verify cannot replay it), 10 tool steps per trial, k = 100."""
    from benchmarks.divergence import write_synthetic_run

    write_synthetic_run(Path(args.out), max(1, args.trials // 100), 100, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("measure", measure), ("inprocess", inprocess)):
        p = sub.add_parser(name)
        p.add_argument("run_dir")
        p.add_argument("--code", default=str(ROOT), help="the checkout to import bench from (default: this one)")
        if name == "inprocess":
            p.add_argument("--index-only", action="store_true",
                           help="only the parse and the reading phase with the index (a large run: minutes less)")
        if name == "measure":
            p.add_argument("--commands", nargs="+", default=["parse", "report", "verify", "diff", "export"],
                           choices=["parse", "report", "verify", "diff", "export", "export-hf"])
        p.set_defaults(func=func)
    for name, func in (("make-sim", make_sim), ("make-synthetic", make_synthetic)):
        p = sub.add_parser(name)
        p.add_argument("out")
        p.add_argument("--trials", type=int, default=100_000)
        p.add_argument("--code", default=str(ROOT))
        p.set_defaults(func=func)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
