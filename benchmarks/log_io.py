"""Cost of the log's write-every-value rule (bench.canonical.dump_line) and of the checked
reader (bench.runs.rundir.read_run), against a bare orjson loop in the same process.

Writes N step records (default 200,000; one attempt per 10 steps, a summary per attempt) with
`LogWriter` and with a bare `orjson.dumps` + write loop, then reads them back with `read_run`
and with a bare `orjson.loads` per line. Also times the rare path: the same records each with a
lone surrogate in the observation (written by Python's json, read back exactly). Prints seconds
and the ratios to the baseline, best of 3.

    python benchmarks/log_io.py              # 200k records (~30 s)
    python benchmarks/log_io.py --records 50000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from bench.runs.logfile import LOG
from bench.runs.logwriter import LogWriter
from bench.runs.rundir import read_run, write_manifest


def records(n: int, odd: bool) -> list[dict]:
    out = []
    for i in range(n):
        attempt = f"t{i // 10}/base/0@a{i // 10}"
        out.append({"type": "step", "trial": f"t{i // 10}/base/0", "attempt": attempt, "step": i % 10, "kind": "tool",
                    "tool": "list_orders", "args": {"customer_id": "C1"},
                    "observation": {"O1": {"status": "pending\udc80" if odd else "pending", "total": 30.0}},
                    "error": None, "read_only": True, "state_hash": "1b01e2ba4f38c56b0b4ac266", "t_start": 1.0,
                    "t_end": 2.0})
        if i % 10 == 9:
            out.append({"type": "trial", "trial": f"t{i // 10}/base/0", "attempt": attempt, "task": f"t{i // 10}",
                        "outcome": "success", "checks": {}, "steps": 10})
    return out


def best(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(run: Path, n: int, odd: bool) -> None:
    """Time the writer and the reader on N records (with a lone surrogate each when `odd`)."""
    log = run / LOG
    recs = records(n, odd)

    def bare_write() -> None:
        with open(log, "wb", buffering=0) as fh:
            for r in recs:
                fh.write(orjson.dumps(r) + b"\n" if not odd else repr(r).encode() + b"\n")

    def writer() -> None:
        log.unlink(missing_ok=True)
        w = LogWriter(run, log_format="jsonl")  # plain lines, as the bare loop writes them
        for r in recs:
            w.append(r)
        w.close()

    def bare_read() -> None:
        with open(log, "rb") as fh:
            for line in fh:
                orjson.loads(line) if not odd else line.decode("utf-8")

    def reader() -> None:
        assert len(read_run(run).summaries) == n // 10

    base_w, ours_w = best(bare_write), best(writer)
    base_r, ours_r = best(bare_read), best(reader)
    label = "lone surrogate in every record" if odd else "plain records"
    print(f"{label}, {len(recs):,} lines: write {ours_w:.2f} s vs bare {base_w:.2f} s (x{ours_w / base_w:.2f}); "
          f"read {ours_r:.2f} s vs bare {base_r:.2f} s (x{ours_r / base_r:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    n = parser.parse_args().records
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        write_manifest(run, {"run_id": "bench", "suite": {}, "agent": {}, "k": 1})
        measure(run, n, odd=False)
        measure(run, n, odd=True)
    print("(the bare loop of the surrogate case cannot write JSON at all: it writes repr and reads raw lines;"
          " read_run also groups records into trials, as the old reader did)")


if __name__ == "__main__":
    main()
