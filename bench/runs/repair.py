"""`trajbench repair RUN_DIR`: move the log's corrupted lines aside, keep every valid record.

A line is corrupted when it is not JSON, not a trajbench record, or fails the record schema
(bench/schemas/trajectory-record.schema.json) — a disk error, a hand edit, a tool that wrote into
the log. Such lines go to `trajectories.quarantine.jsonl` beside the log, one JSON object per line:
`{"line": N, "reason": ..., "raw": ...}`, where `raw` is the line's text with any byte that is
not UTF-8 kept by Python's `surrogateescape` (`raw.encode("utf-8", "surrogateescape")` gives the
original bytes back). The log is then rewritten atomically with every other line, in order.

A compressed log (`trajectories.jsonl.zst`) is repaired the same way, line by line inside its
frames (line numbers count the decompressed lines, as `zstdcat` shows them), and rewritten with
one frame per frame it had. A frame that cannot be decompressed (a bad checksum, bad data) or
bytes that are no frame at all go to the quarantine whole: `{"line": N, "byte": B, "reason": ...,
"raw_base64": ...}` (N: the number the frame's first line would have had; B: where it was in the
file; the original bytes base64-encoded). The run is then missing those trials' records, which
resume plays again. A frame header claiming more bytes than the file holds, with whole frames
after it, goes to the quarantine up to where they start. Frames of another tool (pzstd) that end
inside lines are decoded as one stream, a line carried from frame to frame, and the log is
rewritten in trajbench's frames even when nothing is quarantined (the readers refuse such frames:
a record must lie in one frame to be found again by its position). Readers and repair share one
frame walker (`bench.runs.logfile.walk_frames`).

A torn last line or frame (a write cut short by a kill) is left as it is: every reader skips
it, and `run` cuts it off when it resumes. Repair is idempotent: a second repair finds nothing.
A trial whose summary was quarantined has no summary any more, so resuming the run (the same
`trajbench run` command) plays it again and seals the run anew: repair itself never re-seals, so
`verify` reports a repaired log until then. Do not repair a run that is being written.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs

from bench.canonical import dump_line
from bench.errors import BenchError
from bench.runs.logfile import FrameTooBig, is_packed, log_path, parse_record, unpack_frame, walk_frames
from bench.runs.logwriter import packed_writer
from bench.runs.rundir import read_manifest
from bench.runs.runindex import write_index
from bench.world.task import load_schema

QUARANTINE = "trajectories.quarantine.jsonl"


@dataclass
class RepairResult:
    log: Path
    quarantine: Path
    kept: int = 0  # records kept
    moved: list[tuple[int, str]] = field(default_factory=list)  # (line number, why) of each quarantined line
    torn_bytes: int = 0  # a torn last line, left in place
    reframed: bool = False  # a compressed log in another tool's frames, rewritten in trajbench's (nothing moved)

    def as_dict(self) -> dict[str, Any]:
        return {"log": str(self.log), "quarantine": str(self.quarantine), "kept": self.kept,
                "moved": [{"line": n, "reason": why} for n, why in self.moved], "torn_bytes": self.torn_bytes, "reframed": self.reframed}


@cache
def _validators() -> tuple[Any, Any]:
    schema = load_schema("trajectory-record.schema.json")
    return jsonschema_rs.validator_for(schema), jsonschema.Draft202012Validator(schema)


def record_problem(line: bytes) -> str | None:
    """Why a complete log line is not a valid record, or None."""
    record, problem = parse_record(line)
    if problem is not None:
        return problem
    fast, reference = _validators()
    try:
        if fast.is_valid(record):
            return None
    except (ValueError, TypeError, OverflowError):  # a value the Rust validator cannot take (a lone surrogate)
        pass
    error = jsonschema.exceptions.best_match(reference.iter_errors(record))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(record)"
    return f"fails the record schema at {where}: {error.message[:200]}"


def repair_run(run_dir: str | Path) -> RepairResult:
    run_dir = Path(run_dir)
    read_manifest(run_dir)  # a run directory, with a readable manifest (a broken run.json is not repaired here)
    log = log_path(run_dir)
    result = RepairResult(log, run_dir / QUARANTINE)
    if not log.exists():
        return result
    try:
        data = log.read_bytes()
    except OSError as exc:
        raise BenchError(f"cannot be read: {exc.strerror}", file=str(log)) from None
    moved: list[bytes] = []
    rewritten: bytes | None
    if is_packed(log):
        rewritten = _repair_packed(data, result, moved)
        result.reframed = rewritten is not None and not moved
    else:
        kept, tail = _repair_lines(data, 1, result, moved)
        rewritten = b"".join(line + b"\n" for line in kept) + tail if moved else None
    if moved:
        _write(result.quarantine, b"".join(moved), append=True)
    if rewritten is not None:
        _write(log, rewritten, append=False)
        write_index(run_dir)  # the old one was derived from the old log (its checks would find it stale)
    return result


def _repair_lines(data: bytes, first: int, result: RepairResult, moved: list[bytes]) -> tuple[list[bytes], bytes]:
    """The lines of `data` to keep (without newlines) and its torn tail; the others go to `moved`
    (numbered from `first`)."""
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the data ends with a newline, else the torn last line
    result.torn_bytes = len(tail)
    kept: list[bytes] = []
    for number, line in enumerate(lines, start=first):
        if not line.strip():
            kept.append(line)
            continue
        problem = record_problem(line + b"\n")
        if problem is None:
            kept.append(line)
            result.kept += 1
        else:
            result.moved.append((number, problem))
            moved.append(dump_line({"line": number, "reason": problem, "raw": line.decode("utf-8", "surrogateescape")}))
    return kept, tail


def _repair_packed(data: bytes, result: RepairResult, moved: list[bytes]) -> bytes | None:
    """A compressed log repaired segment by segment (`walk_frames`, the readers' walker): its
    frames decoded as one stream, a line that one frame ends and the next goes on with (another
    tool's framing, pzstd's) carried over; bad lines out, bad segments (a damaged frame, bytes
    that are no frame, a header claiming too many bytes) out whole, up to where whole frames
    start again; a torn last frame kept as it is. The kept lines are written again in trajbench's
    frames. None when nothing needs rewriting."""
    out: list[bytes] = []
    encode = packed_writer()
    line_no, carry, reframe = 1, b"", False
    kept_lines: list[bytes] = []

    def quarantine(start: int, raw: bytes, reason: str) -> None:
        result.moved.append((line_no, reason))
        moved.append(dump_line({"line": line_no, "byte": start, "reason": reason,
                                "raw_base64": base64.b64encode(raw).decode()}))

    for segment in walk_frames(io.BytesIO(data).read):
        if segment.torn:
            result.torn_bytes = len(segment.data)
            break
        problem = segment.problem
        content = b""
        if problem is None:
            try:
                content = unpack_frame(segment.data, whole_lines=False)
            except FrameTooBig as exc:  # sound, only too big to be read by position: nothing to quarantine
                raise BenchError(f"byte {segment.start}: {exc}", file=str(result.log)) from None
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            if carry:  # the line a foreign frame began, whose end was in the bad segment
                quarantine(segment.start, carry, "a line cut short by the unreadable bytes after it")
                carry = b""
                line_no += 1
            quarantine(segment.start, segment.data,
                       f"the bytes at {segment.start}-{segment.end} are no readable zstd frame: {problem}")
            continue
        if carry or content[-1:] not in (b"\n", b""):
            reframe = True
        stream = carry + content
        cut = stream.rfind(b"\n") + 1
        carry = stream[cut:]
        kept, _ = _repair_lines(stream[:cut], line_no, result, moved)
        line_no += stream.count(b"\n", 0, cut)
        kept_lines.extend(line + b"\n" for line in kept)
        if not carry and kept_lines:
            out.append(encode(kept_lines, b""))
            kept_lines = []
    if carry:  # the last whole frame ends inside a line
        quarantine(len(data) - result.torn_bytes, carry, "a line the log's last whole frame ends inside")
        reframe = True
    if kept_lines:
        out.append(encode(kept_lines, b""))
    if result.torn_bytes:
        out.append(data[len(data) - result.torn_bytes:])
    return b"".join(out) if reframe or moved else None


def _write(path: Path, data: bytes, *, append: bool) -> None:
    """Append (the quarantine) or replace atomically (the log), durably: the quarantine is on disk
    before the log loses the lines."""
    try:
        if append:
            with open(path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return
        tmp = path.with_name(path.name + ".repair.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise BenchError(f"cannot be written: {exc.strerror}", file=str(path)) from None
