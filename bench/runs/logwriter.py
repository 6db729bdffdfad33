"""The log's one writer (`LogWriter`), and the zstd frames it writes.

Apart from bench/runs/logfile.py (the reading side) because the writer feeds the run's derived
index (bench/runs/runindex.py), which itself reads the log through logfile.py: kept in one
module, the two would import each other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard

from bench.canonical import dump_line
from bench.errors import BenchError
from bench.runs.logfile import FORMATS, PACKED_LOG, frames, is_packed, log_path
from bench.runs.runindex import IndexWriter

_FRAME_CONTENT = 1 << 20  # the writer starts a new frame past this much content (a long attempt)
# zstd's fast level -1: ~4.4x on trajbench logs against ~5.6x at levels 1-3, but it decodes ~25%
# faster (no entropy-coded literals), which keeps `report` on a compressed log as fast as on a
# plain one, and compresses at ~1 µs per step
_LEVEL = -1


class LogWriter:
    """Appends records as whole lines under a lock (trials run in threads). An attempt's step
    lines wait in memory and reach the OS in one unbuffered write together with the record that
    ends the attempt (its summary or its attempt_error): one syscall per attempt instead of one
    per record — in a compressed log, one zstd frame (a long attempt: several frames, one
    write). A killed process loses only unfinished attempts, which resume re-runs anyway, and
    at most the write under way. `fsync_summaries` also survives power loss, at a cost per
    trial. A run directory that has a log keeps its encoding; a new log is written in
    `log_format` ("zstd" or "jsonl"). With `index` (the default) each write is also handed to
    the run's derived index (`bench.runs.runindex.IndexWriter`: what `report` reads instead of
    parsing every line); the log stays the only source of truth."""

    def __init__(self, run_dir: Path, fsync_summaries: bool = False, log_format: str = "zstd", index: bool = True):
        if log_format not in FORMATS:
            raise BenchError(f"unknown log format {log_format!r}: expected one of {', '.join(FORMATS)}", field="--log-format")
        path = log_path(run_dir)
        self.path = path if path.exists() or log_format == "jsonl" else run_dir / PACKED_LOG
        self.torn_bytes = _cut_torn_tail(self.path)
        self._fh = open(self.path, "ab", buffering=0)
        self._size = self._fh.seek(0, os.SEEK_END)  # where the next write starts (the writer is the only one)
        self._lock = threading.Lock()
        self._fsync = fsync_summaries
        self._encode: Callable[[list[bytes], bytes], tuple[bytes, bytes]] = \
            _packed_parts() if is_packed(self.path) else _plain
        self._pending: dict[Any, list[bytes]] = {}
        self._views: dict[Any, list[Any]] = {}  # per pending line, what the index needs of its record
        self._ended: set[Any] = set()  # attempts whose trial summary is written: sealed
        self.dropped = 0  # records refused: of a sealed attempt, or after close
        self._index: IndexWriter | None = IndexWriter.open(run_dir, self.path) if index else None

    def append(self, record: dict[str, Any]) -> None:
        """Never fails on the record's values (`bench.canonical.dump_line`: every string is kept).
        A record of an attempt whose summary is written (an abandoned agent thread still running) or
        arriving after close is dropped: nothing can follow a trial's summary into the log."""
        line = dump_line(record)
        view = self._index.view(record) if self._index is not None else None  # what the index needs of it
        attempt = record.get("attempt")
        kind = record.get("type")
        with self._lock:
            if attempt in self._ended or self._fh.closed:
                self.dropped += 1
                return
            if kind == "step":
                pending = self._pending.get(attempt)
                if pending is None:
                    self._pending[attempt] = [line]
                    self._views[attempt] = [view]
                else:
                    pending.append(line)
                    self._views[attempt].append(view)
                return
            self._write(self._pending.pop(attempt, []), line, self._views.pop(attempt, []), view)
            if kind == "trial":
                self._ended.add(attempt)
                if self._fsync:
                    os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Steps of attempts that never ended (an exception escaped the runner) are kept, as before."""
        with self._lock:
            try:
                for attempt, lines in self._pending.items():
                    self._write(lines, b"", self._views.get(attempt, []), None)
            finally:
                self._pending.clear()
                self._fh.close()
                if self._index is not None:
                    self._index.close()

    def _write(self, steps: list[bytes], end: bytes, views: list[Any], end_view: Any) -> None:
        """One attempt's lines in one write (`_write_all`), then handed to the index with what it
        needs of their records (`IndexWriter.view`)."""
        head, tail = self._encode(steps, end)
        start = self._size
        data = head + tail
        self._write_all(data)
        if self._index is not None:
            self._index.wrote(views, end_view, len(end), start, start + len(head), data, self._fh.fileno())

    def _write_all(self, data: bytes) -> None:
        """All of `data`, or nothing: an unbuffered write may write part (a full disk, a signal),
        and a part left in the log followed by later frames would be a corruption in the middle
        of it, not a torn tail. On an error the log is cut back to where it was, and the run stops
        with a clear error (resume plays the attempt again)."""
        fd, size = self._fh.fileno(), self._size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
            self._size += len(data)
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise BenchError(f"cannot be written ({exc.strerror}): the log is cut back to its last whole write, "
                             "so resuming the same `trajbench run` command after fixing that plays the attempt again",
                             file=str(self.path)) from None


def _plain(steps: list[bytes], end: bytes) -> tuple[bytes, bytes]:
    return b"".join(steps), end


def packed_writer() -> Callable[[list[bytes], bytes], bytes]:
    """(an attempt's step lines, the line that ends it or b"") -> zstd frames, each with its
    content size and checksum: the steps in one frame (a long attempt: one per ~1 MiB of lines),
    the end record in a frame of its own, so that reading a trial's summary again decompresses
    only the summary. Called under the writer's lock (a compressor is not thread-safe)."""
    encode = _packed_parts()
    return lambda steps, end: b"".join(encode(steps, end))


def _packed_parts() -> Callable[[list[bytes], bytes], tuple[bytes, bytes]]:
    """`packed_writer`'s frames as (the steps' frames, the end record's frame)."""
    compress = zstandard.ZstdCompressor(level=_LEVEL, write_checksum=True, write_content_size=True).compress

    def encode(steps: list[bytes], end: bytes) -> tuple[bytes, bytes]:
        out: list[bytes] = []
        group: list[bytes] = []
        size = 0
        for line in steps:
            if group and size + len(line) > _FRAME_CONTENT:
                out.append(compress(b"".join(group)))
                group, size = [], 0
            group.append(line)
            size += len(line)
        if group:
            out.append(compress(b"".join(group)))
        return b"".join(out), compress(end) if end else b""

    return encode


def _cut_torn_tail(path: Path) -> int:
    """Truncate a torn last line (or frame) so that the next record starts on a line (a frame)
    of its own; returns the bytes cut."""
    if not path.exists():
        return 0
    if is_packed(path):
        with open(path, "rb") as fh:
            torn = [(seg.start, seg.end) for seg in frames(fh, path) if seg.torn]
        if not torn:
            return 0
        with open(path, "rb+") as fh:
            fh.truncate(torn[0][0])
        return torn[0][1] - torn[0][0]
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
