"""What the run index (bench/runs/runindex.py) costs `trajbench run`: the same run with the
index hook and without it (`LogWriter(index=False)`), in one process, interleaved A B A B.

    python benchmarks/index_hook.py [--suite retail] [--agent 'sim:noisy?p=0.2..0.95'] [-k 200] [--rounds 2]

Prints per round the CPU seconds of each run (`time.process_time()`: every thread, user and
system), the step records it logged, the CPU per step, and the cost of the hook per step
((with − without) / steps) and the ratio of the two runs' CPU; then the medians, and the
index's size beside the log's.
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
from bench.runs.logfile import LogWriter, log_path, log_records  # noqa: E402
from bench.runs.runindex import INDEX  # noqa: E402
from bench.world.suite import load_suite  # noqa: E402


def one_run(suite, spec, k: int, out: Path, hook: bool) -> tuple[float, int]:
    """(CPU seconds, step records) of one run into `out`."""
    runner.LogWriter = LogWriter if hook else functools.partial(LogWriter, index=False)  # type: ignore[misc]
    try:
        start = time.process_time()
        runner.run_benchmark(suite, spec, None, runner.RunConfig(k=k, out=out, concurrency=1, progress=False))
        cpu = time.process_time() - start
    finally:
        runner.LogWriter = LogWriter  # type: ignore[misc]
    steps = sum(1 for rec, _, _ in log_records(log_path(out)) if rec is not None and rec["type"] == "step")
    return cpu, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="retail")
    parser.add_argument("--agent", default="sim:noisy?p=0.2..0.95")
    parser.add_argument("-k", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    suite, spec = load_suite(args.suite), parse_agent_spec(args.agent)
    rows = []
    with tempfile.TemporaryDirectory(prefix="trajbench-hook-") as tmp:
        one_run(suite, spec, 1, Path(tmp) / "warm", True)  # imports, schemas, the suite's domain
        print("| round | without hook CPU s | with hook CPU s | steps | µs / step without | µs / step with | "
              "hook µs / step | with / without |")
        print("|---|---|---|---|---|---|---|---|")
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {}
            for hook in order:
                out = Path(tmp) / f"r{r}-{hook}"
                got[hook] = one_run(suite, spec, args.k, out, hook)
            (off, steps), (on, _) = got[False], got[True]
            rows.append((off, on, steps))
            print(f"| {r + 1} | {off:.2f} | {on:.2f} | {steps} | {off / steps * 1e6:.1f} | {on / steps * 1e6:.1f} | "
                  f"{(on - off) / steps * 1e6:.1f} | {on / off:.3f}× |", flush=True)
        off, on = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        steps = rows[0][2]
        print(f"median: without {off:.2f} s, with {on:.2f} s CPU; hook {(on - off) / steps * 1e6:.1f} µs per step "
              f"({on / off:.3f}×)")
        out = Path(tmp) / "r0-True"
        print(f"index {(out / INDEX).stat().st_size:,} B beside a log of {log_path(out).stat().st_size:,} B "
              f"({(out / INDEX).stat().st_size / log_path(out).stat().st_size:.2f}×)")


if __name__ == "__main__":
    main()
