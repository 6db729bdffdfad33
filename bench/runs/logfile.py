"""The physical log: `trajectories.jsonl`, an append-only file of JSON lines, one record each.

`LogWriter` appends whole lines (an attempt's lines in one write); `log_records` reads them back
in order with the byte span of each line; `LogFile` reads a span again on demand. A torn last
line (the process was killed mid-write) is tolerated: readers skip it and report it; the writer
cuts it off before appending. What the records mean (trials, attempts, which summary counts) is
the logical reader's business: bench/runs/rundir.py.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any, Iterator

import orjson

from bench.canonical import dump_line, load_line
from bench.errors import BenchError

LOG = "trajectories.jsonl"


class LogFile:
    """Reads byte spans of the log on demand (one descriptor, positional reads: no shared file
    position, so threads may share it). The log is append-only and a reader never uses the
    torn tail that a writer may cut off, so spans found by the reading pass stay valid while a
    run goes on."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def read(self, start: int, end: int) -> bytes:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as exc:
                raise BenchError(f"cannot be read: {exc.strerror}", file=str(self.path)) from None
            weakref.finalize(self, os.close, self._fd)
        return os.pread(self._fd, end - start, start)

def log_records(path: Path) -> Iterator[tuple[dict[str, Any] | None, int, int]]:
    """The log's records, checked, each with the byte span of its line; a torn last line (no
    newline) is yielded as (None, its span)."""
    if not path.exists():
        return
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise BenchError(f"cannot be read: {exc.strerror}", file=str(path)) from None
    loads, required_of = orjson.loads, _REQUIRED.get  # local names: this loop runs once per line
    end = 0
    with fh:
        for line in fh:
            start = end
            end += len(line)
            if line[-1:] != b"\n":  # the last write was cut short
                yield None, start, end
                return
            if line.isspace():
                continue
            try:  # the fast path of a well-formed orjson line; anything else is judged by parse_record
                rec: Any = loads(line) if line[0] != 32 else None
                required = required_of(rec["type"])
                if required is not None and rec.keys() >= required:
                    yield rec, start, end
                    continue
            except (ValueError, TypeError, KeyError):
                pass
            rec, problem = parse_record(line)
            if problem is not None:
                number = _line_number(path, start)
                raise BenchError(f"line {number}: {problem}; the log is corrupted: `trajbench repair {path.parent}` "
                                 "moves bad lines aside into a quarantine file and keeps every valid record",
                                 file=str(path), field=f"line {number}")
            yield rec, start, end


def _line_number(path: Path, offset: int) -> int:
    """The number of the line starting at `offset` (counted only to name a bad line)."""
    newlines = 0
    with open(path, "rb") as fh:
        while offset > 0:
            chunk = fh.read(min(offset, 1 << 20))
            newlines += chunk.count(b"\n")
            offset -= len(chunk)
    return newlines + 1


def parse_record(line: bytes) -> tuple[Any, str | None]:
    """One log line as a record, or why it is not one (not JSON, no known `type`, a required
    field missing). The cheap check of the reading path; `trajbench repair` adds the schema."""
    try:
        rec = load_line(line)
    except ValueError as exc:  # orjson's and json's decode errors, a bad UTF-8 byte
        return None, f"not valid JSON ({exc})"
    try:
        required = _REQUIRED.get(rec["type"])  # a TypeError: not an object, or an unhashable type
    except (KeyError, TypeError):
        return None, "not a trajbench record (no 'type')"
    if required is None:
        return rec, None
    if not rec.keys() >= required:
        return None, f"a {rec['type']} record lacks {sorted(required - rec.keys())[0]!r}"
    return rec, None


_REQUIRED = {
    "step": frozenset(("trial", "attempt", "step", "kind")),
    "trial": frozenset(("trial", "attempt", "task", "outcome")),
    "attempt_error": frozenset(("trial", "attempt")),
}


class LogWriter:
    """Appends records as whole lines under a lock (trials run in threads). An attempt's step
    lines wait in memory and reach the OS in one unbuffered write together with the record that
    ends the attempt (its summary or its attempt_error): one syscall per attempt instead of one
    per record. A killed process loses only unfinished attempts, which resume re-runs anyway,
    and at most the line being written. `fsync_summaries` also survives power loss, at a cost
    per trial."""

    def __init__(self, run_dir: Path, fsync_summaries: bool = False):
        self.path = run_dir / LOG
        self.torn_bytes = _cut_torn_tail(self.path)
        self._fh = open(self.path, "ab", buffering=0)
        self._lock = threading.Lock()
        self._fsync = fsync_summaries
        self._pending: dict[Any, list[bytes]] = {}
        self._ended: set[Any] = set()  # attempts whose trial summary is written: sealed
        self.dropped = 0  # records refused: of a sealed attempt, or after close

    def append(self, record: dict[str, Any]) -> None:
        """Never fails on the record's values (`bench.canonical.dump_line`: every string is kept).
        A record of an attempt whose summary is written (an abandoned agent thread still running) or
        arriving after close is dropped: nothing can follow a trial's summary into the log."""
        line = dump_line(record)
        attempt = record.get("attempt")
        with self._lock:
            if attempt in self._ended or self._fh.closed:
                self.dropped += 1
                return
            if record.get("type") == "step":
                self._pending.setdefault(attempt, []).append(line)
                return
            lines = self._pending.pop(attempt, [])
            lines.append(line)
            self._fh.write(b"".join(lines))
            if record.get("type") == "trial":
                self._ended.add(attempt)
                if self._fsync:
                    os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Steps of attempts that never ended (an exception escaped the runner) are kept, as before."""
        with self._lock:
            for lines in self._pending.values():
                self._fh.write(b"".join(lines))
            self._pending.clear()
            self._fh.close()


def _cut_torn_tail(path: Path) -> int:
    """Truncate a torn last line so that the next record starts on a line of its own."""
    if not path.exists():
        return 0
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            if pos == size and chunk.endswith(b"\n"):
                return 0
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                fh.truncate(keep)
                return size - keep
            pos = start
        fh.truncate(0)
        return size
