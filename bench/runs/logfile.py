"""The physical log: the run's records as JSON lines, in one of two encodings.

`trajectories.jsonl.zst` (what `run` and `import` write by default) is a sequence of independent
zstd frames, written an attempt at a time: a frame of its step lines, then a frame of the record
that ends it (its summary or its `attempt_error`), in one write. The frames concatenated decompress to exactly the JSON lines the plain
encoding holds, so `zstdcat trajectories.jsonl.zst | jq ...` is the plain log. Each frame carries
its content size and a checksum, so a flipped byte is found, not read. `trajectories.jsonl` (the
plain encoding: every log written before 0.2, or `run --log-format jsonl`) is the same lines
uncompressed. A run directory holds one of the two; a run resumed keeps the encoding it has.

Positions: a record is found again by a position `LogFile.read` understands — in a plain log the
byte offset; in a compressed log `frame_start << 32 | offset in the frame's content`, so one
trial's records are read by decompressing the one frame that holds them (a few KB).

Crash safety is the plain log's: one write per attempt, so `kill -9` loses only unfinished
attempts (which resume plays again) and at most the frame (or line) being written: a torn last
frame or line. Readers skip it and report it; the writer cuts it off before appending. What the
records mean (trials, attempts, which summary counts) is the logical reader's business:
bench/runs/rundir.py.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Iterator, NamedTuple

import orjson
import zstandard

from bench.canonical import load_line
from bench.errors import BenchError

LOG = "trajectories.jsonl"  # the plain encoding
PACKED_LOG = LOG + ".zst"  # the compressed encoding
FORMATS = ("zstd", "jsonl")  # `run --log-format`: what a new log is written in

MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame
_SKIPPABLE = 0x184D2A50  # skippable frames: 0x184D2A50-5F (other tools may add them; readers skip them)
_OFFSET_BITS = 32  # a compressed log's position: frame_start << 32 | offset in the frame's content
_IN_FRAME = (1 << _OFFSET_BITS) - 1


def log_path(run_dir: Path) -> Path:
    """The run's log: the compressed one, else the plain one (which may not exist yet). Both at
    once is refused: which one holds the run would be a guess."""
    packed, plain = run_dir / PACKED_LOG, run_dir / LOG
    if packed.exists():
        if plain.exists():
            raise BenchError(f"the run directory holds both {LOG} and {PACKED_LOG}; keep one (a decompressed copy of "
                             f"{PACKED_LOG} is its plain encoding: remove whichever you made)", file=str(run_dir))
        return packed
    return plain


def is_packed(path: Path) -> bool:
    return path.name.endswith(".zst")


class LogFile:
    """Reads records again by position (one descriptor, positional reads: no shared file
    position, so threads may share it). The log is append-only and a reader never uses the
    torn tail that a writer may cut off, so positions found by the reading pass stay valid while
    a run goes on. In a compressed log the last frame read is kept: a trial's summary and its
    steps share one. A log recompressed by hand as one frame (`zstd -c`) is read, but that
    frame is then decompressed whole, and kept (memory grows with the log): trajbench's own
    frames are a few KB. A frame of more than 4 GiB of content is refused with one line (a
    position's offset in its frame has 32 bits)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._packed = is_packed(path)
        self._frame: tuple[int, bytes] = (-1, b"")  # (frame start, content): replaced whole, so threads may share it

    def _pread(self, size: int, offset: int) -> bytes:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as exc:
                raise BenchError(f"cannot be read: {exc.strerror}", file=str(self.path)) from None
            weakref.finalize(self, os.close, self._fd)
        return os.pread(self._fd, size, offset)

    def read(self, start: int, end: int) -> bytes:
        """The bytes of the lines from position `start` to `end` (one frame's, in a compressed log)."""
        if not self._packed:
            return self._pread(end - start, start)
        frame = start >> _OFFSET_BITS
        cached, content = self._frame
        if cached != frame:
            content = self._decompress_at(frame)
            self._frame = (frame, content)
        return content[start & _IN_FRAME:end - (frame << _OFFSET_BITS)]

    def _decompress_at(self, offset: int) -> bytes:
        # a summary's frame is a few hundred bytes, an attempt's steps a few KB: read 2 KiB first
        segment = next(walk_frames(self._reader(offset), offset, chunk=1 << 11, resync=False), None)
        if segment is None or segment.problem is not None or segment.torn:
            why = "no zstd frame starts here (was the log changed while it was read?)" if segment is None or \
                segment.torn else segment.problem
            raise BenchError(f"byte {offset}: {why}; {_REPAIR_HINT.format(self.path.parent)}",
                             file=str(self.path), field=f"byte {offset}")
        return _decompress(segment.data, self.path, offset)

    def _reader(self, offset: int) -> Callable[[int], bytes]:
        at = [offset]

        def read(size: int) -> bytes:
            data = self._pread(size, at[0])
            at[0] += len(data)
            return data

        return read


def frame_length(buf: bytes | memoryview, pos: int) -> int | None:
    """The length of the zstd (or skippable) frame starting at `pos`, found from its header and
    block headers without decompressing; None if `buf` ends first. Raises ValueError when the
    bytes at `pos` are no frame."""
    n = len(buf)
    if n < pos + 8:  # every frame is longer
        return None
    magic = int.from_bytes(buf[pos:pos + 4], "little")
    if magic & 0xFFFFFFF0 == _SKIPPABLE:
        end = pos + 8 + int.from_bytes(buf[pos + 4:pos + 8], "little")
        return end if end <= n else None
    if bytes(buf[pos:pos + 4]) != MAGIC:
        _not_a_frame(buf, pos)
    descriptor = buf[pos + 4]
    single_segment = descriptor >> 5 & 1
    p = pos + 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3] + (single_segment, 2, 4, 8)[descriptor >> 6]
    while True:
        if n < p + 3:
            return None
        header = buf[p] | buf[p + 1] << 8 | buf[p + 2] << 16
        kind = header >> 1 & 3
        if kind == 3:
            raise ValueError("a reserved zstd block type")
        p += 3 + (1 if kind == 1 else header >> 3)
        if header & 1:  # the last block
            break
    p += 4 * (descriptor >> 2 & 1)  # the content checksum
    return p if p <= n else None


def _not_a_frame(buf: bytes | memoryview, pos: int) -> None:
    raise ValueError(f"not a zstd frame (starts with {bytes(buf[pos:pos + 4])!r})")


_DECOMPRESSOR = threading.local()


def unpack_frame(frame: bytes | memoryview, whole_lines: bool = True) -> bytes:
    """One frame's content (a skippable frame's: nothing). Raises ValueError for a corrupt frame
    (a bad checksum, bad data), one of more than 4 GiB of content (a position's offset in its
    frame has 32 bits) or, with `whole_lines`, one whose content does not end with a whole line
    (the readers' rule; `trajbench repair` reads such frames as one stream and re-frames them)."""
    if int.from_bytes(frame[:4], "little") & 0xFFFFFFF0 == _SKIPPABLE:
        return b""
    dctx = getattr(_DECOMPRESSOR, "dctx", None)
    if dctx is None:
        dctx = _DECOMPRESSOR.dctx = zstandard.ZstdDecompressor()
    try:
        declared = zstandard.frame_content_size(bytes(frame[:18]))
    except zstandard.ZstdError as exc:
        raise ValueError(f"a corrupted zstd frame ({exc})") from None
    if declared > _IN_FRAME:
        raise FrameTooBig(_TOO_BIG.format(declared))
    try:
        try:
            content: bytes = dctx.decompress(frame)
        except zstandard.ZstdError as exc:
            if "content size" not in str(exc):
                raise
            content = dctx.decompressobj().decompress(frame)  # a frame written without its size (another tool)
    except zstandard.ZstdError as exc:
        raise ValueError(f"a corrupted zstd frame ({exc})") from None
    if len(content) > _IN_FRAME:
        raise FrameTooBig(_TOO_BIG.format(len(content)))
    if whole_lines and content[-1:] not in (b"\n", b""):
        raise ValueError("a zstd frame whose content does not end with a whole line (another tool's framing)")
    return content


class FrameTooBig(ValueError):
    """A sound frame of more than 4 GiB of content: not a corruption, a layout trajbench does not read."""


_TOO_BIG = ("a zstd frame of {} bytes of content, more than trajbench reads in one frame (4 GiB); decompress it "
            "(`zstdcat trajectories.jsonl.zst > trajectories.jsonl`, then remove the .zst: a plain log is as valid "
            "and keeps the seal)")


def _decompress(frame: bytes | memoryview, path: Path, offset: int) -> bytes:
    """`unpack_frame`, a bad frame being a BenchError that names it."""
    try:
        return unpack_frame(frame)
    except FrameTooBig as exc:
        raise BenchError(f"byte {offset}: {exc}", file=str(path), field=f"byte {offset}") from None
    except ValueError as exc:
        raise BenchError(f"byte {offset}: {exc}; {_REPAIR_HINT.format(path.parent)}",
                         file=str(path), field=f"byte {offset}") from None


_REPAIR_HINT = ("the log is corrupted: `trajbench repair {}` moves bad records aside into a quarantine file, keeps "
                "every valid record and rewrites the log in trajbench's frames")


class Segment(NamedTuple):
    """A piece of a compressed log: a whole frame, the torn last frame (a write cut short: no
    whole frame follows it), or bytes that are no readable frame (`problem`), which end where a
    chain of whole frames starts again."""
    start: int
    end: int
    data: bytes
    problem: str | None = None
    torn: bool = False


def walk_frames(read: Callable[[int], bytes], start: int = 0, chunk: int = 1 << 20,
                resync: bool = True) -> Iterator[Segment]:
    """The one frame walker of a compressed log (readers, `LogFile`, `trajbench repair`): its
    segments from byte `start`, `read(n)` giving the next bytes of the file (b"" at its end).
    Frames are delimited from their headers without decompressing. A frame whose header claims
    more bytes than the file holds is the torn last write only when no whole frames follow it;
    otherwise it, like bytes that are no frame, is a bad segment up to the next chain. Without
    `resync` (a reader, which stops at the first bad segment) bytes that are no frame end the walk
    at once, as an empty bad segment, instead of reading the rest of the file to find that chain."""
    buf, base, pos, eof = b"", start, 0, False  # buf holds the file from byte `base`; `pos` indexes buf
    while True:
        try:
            length, problem = frame_length(buf, pos), None
        except ValueError as exc:
            length, problem = None, str(exc)
        if length is not None:
            yield Segment(base + pos, base + length, buf[pos:length])
            pos = length
            continue
        if problem is None and not eof:
            more = read(max(chunk, len(buf) - pos))  # a frame longer than what is read: read twice as much
            if more:
                base, buf, pos = base + pos, buf[pos:] + more, 0
                continue
            eof = True
        if pos >= len(buf):
            return
        if problem is not None and not resync:
            yield Segment(base + pos, base + pos, b"", problem)
            return
        while not eof:  # a bad segment (rare): where do whole frames start again?
            more = read(max(chunk, len(buf)))
            eof = not more
            buf += more
        resume = _next_chain(buf, pos + 1)
        if problem is None and resume is None:
            yield Segment(base + pos, base + len(buf), buf[pos:], torn=True)
            return
        end = len(buf) if resume is None else resume
        yield Segment(base + pos, base + end, buf[pos:end],
                      problem or "a zstd frame header claims more bytes than the file holds, yet whole frames follow")
        pos = end


def _next_chain(buf: bytes, start: int) -> int | None:
    """The first magic number from `start` at which whole frames run to the end of `buf` or at
    least one whole frame runs up to another bad segment: where the log is readable again."""
    at = buf.find(MAGIC, start)
    while at >= 0:
        pos, whole = at, 0
        try:
            while pos < len(buf):
                length = frame_length(buf, pos)
                if length is None:
                    break
                pos, whole = length, whole + 1
        except ValueError:
            pass
        if pos == len(buf) or whole:
            return at
        at = buf.find(MAGIC, at + 1)
    return None


def frames(fh: BinaryIO, path: Path, start: int = 0) -> Iterator[Segment]:
    """The segments of a compressed log from byte `start` (where `fh` is), read in large chunks,
    for the readers: a bad segment raises (and points to repair); a torn last frame comes last."""
    for segment in walk_frames(fh.read, start, resync=False):
        if segment.problem is not None:
            raise BenchError(f"byte {segment.start}: {segment.problem}; {_REPAIR_HINT.format(path.parent)}",
                             file=str(path), field=f"byte {segment.start}")
        yield segment


def contents(path: Path, start: int = 0) -> Iterator[tuple[int, bytes | None, int]]:
    """The log (either encoding) as runs of whole lines: (position of the first byte, the lines,
    end position) — a plain log in ~1 MiB pieces, a compressed one a frame at a time — from byte
    `start` on disk (0, or the end of a whole write: `bench.runs.runindex` reads only what its index
    does not cover). A torn last line or frame comes last as (start, None, end), `end - start`
    its bytes on disk."""
    for base, content, end, _ in _chunks(path, start):
        yield base, content, end


def _chunks(path: Path, start: int = 0) -> Iterator[tuple[int, bytes | None, int, int]]:
    """`contents`, each run of lines with the byte on disk where it ends."""
    if not path.exists():
        return
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise BenchError(f"cannot be read: {exc.strerror}", file=str(path)) from None
    with fh:
        fh.seek(start)
        if is_packed(path):
            for first, end, frame, _, torn in frames(fh, path, start):
                if torn:
                    yield first, None, end, end
                    return
                content = _decompress(frame, path, first)
                base = first << _OFFSET_BITS
                yield base, content, base + len(content), end
            return
        offset, rest = start, b""
        while chunk := fh.read(1 << 20):
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n") + 1
            if cut:
                yield offset, data[:cut], offset + cut, offset + cut
                offset += cut
            rest = data[cut:]
        if rest:
            yield offset, None, offset + len(rest), offset + len(rest)


def log_records(path: Path, start: int = 0,
                on_chunk: Callable[[int], None] | None = None) -> Iterator[tuple[dict[str, Any] | None, int, int]]:
    """The log's records, checked, each with the positions of its line (its newline included),
    from byte `start` on disk (`contents`); a torn last line or frame is yielded as (None, start,
    end), `end - start` its bytes on disk. `on_chunk(byte)` is told, once the records of each run
    of lines have been yielded, the byte on disk where that run ends (the index builder's
    safe points)."""
    loads, required_of = orjson.loads, _REQUIRED.get  # local names: this loop runs once per line
    for base, content, last, disk_end in _chunks(path, start):
        if content is None:  # the last write was cut short
            yield None, base, last
            return
        end = base
        for line in content.split(b"\n")[:-1]:  # the content ends with a newline
            start, end = end, end + len(line) + 1
            if line.startswith(b"{"):  # the fast path of a well-formed orjson line; the rest: parse_record
                try:
                    rec: Any = loads(line)
                    required = required_of(rec["type"])
                    if required is not None and rec.keys() >= required:
                        yield rec, start, end
                        continue
                except (ValueError, TypeError, KeyError):
                    pass
            elif not line or line.isspace():
                continue
            rec, problem = parse_record(line)
            if problem is not None:
                number = _line_number(path, start)
                raise BenchError(f"line {number}: {problem}; {_REPAIR_HINT.format(path.parent)}",
                                 file=str(path), field=f"line {number}")
            yield rec, start, end
        if on_chunk is not None:
            on_chunk(disk_end)


def _line_number(path: Path, position: int) -> int:
    """The number of the line starting at `position` (counted only to name a bad line): in the
    plain log, or in the decompressed stream (what `zstdcat` shows)."""
    newlines = 0
    for base, content, end in contents(path):
        if content is None or position < end:
            return newlines + (content[:position - base].count(b"\n") if content else 0) + 1
        newlines += content.count(b"\n")
    return newlines + 1


def content_digest(path: Path) -> tuple[str, int]:
    """sha256 and length of the log's content: the plain log's bytes, or a compressed log's
    decompressed stream (the same JSON lines), with a torn tail's bytes as they are on disk. So a
    seal holds whichever encoding the log is in, and a log recompressed or decompressed keeps it."""
    h = hashlib.sha256()
    size = 0
    if not path.exists():
        return h.hexdigest(), 0
    with open(path, "rb") as fh:
        if not is_packed(path):
            while chunk := fh.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
            return h.hexdigest(), size
        for start, _, frame, _, torn in frames(fh, path):
            content = frame if torn else _decompress(frame, path, start)
            h.update(content)
            size += len(content)
    return h.hexdigest(), size


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
