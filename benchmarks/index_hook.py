"""What the run index (bench/runs/runindex.py) costs `trajbench run`: the same run with the
index hook and without it (`LogWriter(index=False)`), in one process, interleaved A B A B.

    python benchmarks/index_hook.py [--suite retail] [--agent 'sim:noisy?p=0.2..0.95'] [-k 200] [--rounds 2]

Prints per round the CPU seconds of each run (`time.process_time()`: every thread, user and
system), the step records it logged, the CPU per step, and the cost of the hook per step two
ways: the difference of the two runs ((with − without) / steps: noisy on a loaded machine) and
the CPU time spent inside the hook itself (`IndexWriter.view` of each record, `wrote` after each
write and its blocks, timed with `time.thread_time()` around each call), with the ratio of the two runs' CPU; then the medians,
and the index's size beside the log's.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.adapters.spec import parse_agent_spec  # noqa: E402
from bench.runs import runner  # noqa: E402
from bench.runs.logfile import log_path, log_records  # noqa: E402
from bench.runs.logwriter import LogWriter  # noqa: E402
from bench.runs.runindex import INDEX, IndexWriter  # noqa: E402

_INSIDE = [0.0]  # CPU seconds spent in the hook


def _timed_hook() -> None:
    """Wrap the hook's methods (`view` of each record, `wrote` after each write, `close`) to add
    their thread CPU time to _INSIDE."""
    for name in ("view", "wrote", "close"):
        original = getattr(IndexWriter, name)

        def timed(self, *args, _original=original, **kwargs):
            start = time.thread_time()
            try:
                return _original(self, *args, **kwargs)
            finally:
                _INSIDE[0] += time.thread_time() - start

        setattr(IndexWriter, name, timed)
from bench.world.suite import load_suite  # noqa: E402


def one_run(suite, spec, k: int, out: Path, hook: bool) -> tuple[float, int, float]:
    """(CPU seconds, step records, CPU seconds inside the hook) of one run into `out`."""
    _INSIDE[0] = 0.0
    runner.LogWriter = LogWriter if hook else functools.partial(LogWriter, index=False)  # type: ignore[misc]
    try:
        start = time.process_time()
        runner.run_benchmark(suite, spec, None, runner.RunConfig(k=k, out=out, concurrency=1, progress=False))
        cpu = time.process_time() - start
    finally:
        runner.LogWriter = LogWriter  # type: ignore[misc]
    steps = sum(1 for rec, _, _ in log_records(log_path(out)) if rec is not None and rec["type"] == "step")
    return cpu, steps, _INSIDE[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="retail")
    parser.add_argument("--agent", default="sim:noisy?p=0.2..0.95")
    parser.add_argument("-k", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    suite, spec = load_suite(args.suite), parse_agent_spec(args.agent)
    _timed_hook()
    rows = []
    with tempfile.TemporaryDirectory(prefix="trajbench-hook-") as tmp:
        one_run(suite, spec, 1, Path(tmp) / "warm", True)  # imports, schemas, the suite's domain
        print("| round | without hook CPU s | with hook CPU s | steps | µs / step without | µs / step with | "
              "hook µs / step (difference) | inside the hook µs / step | with / without |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {}
            for hook in order:
                out = Path(tmp) / f"r{r}-{hook}"
                got[hook] = one_run(suite, spec, args.k, out, hook)
            (off, steps, _), (on, _, inside) = got[False], got[True]
            rows.append((off, on, steps, inside))
            print(f"| {r + 1} | {off:.2f} | {on:.2f} | {steps} | {off / steps * 1e6:.1f} | {on / steps * 1e6:.1f} | "
                  f"{(on - off) / steps * 1e6:.1f} | {inside / steps * 1e6:.1f} | {on / off:.3f}× |", flush=True)
        off, on = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        inside, steps = statistics.median(r[3] for r in rows), rows[0][2]
        print(f"median: without {off:.2f} s, with {on:.2f} s CPU ({on / off:.3f}×; difference "
              f"{(on - off) / steps * 1e6:.1f} µs per step); inside the hook {inside:.2f} s = "
              f"{inside / steps * 1e6:.1f} µs per step, {inside / off:.1%} of the run without it")
        out = Path(tmp) / "r0-True"
        print(f"index {(out / INDEX).stat().st_size:,} B beside a log of {log_path(out).stat().st_size:,} B "
              f"({(out / INDEX).stat().st_size / log_path(out).stat().st_size:.2f}×)")


if __name__ == "__main__":
    main()
