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
resume plays again.

A torn last line or frame (a write cut short by a kill) is left as it is: every reader skips
it, and `run` cuts it off when it resumes. Repair is idempotent: a second repair finds nothing.
A trial whose summary was quarantined has no summary any more, so resuming the run (the same
`trajbench run` command) plays it again and seals the run anew: repair itself never re-seals, so
`verify` reports a repaired log until then. Do not repair a run that is being written.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs

from bench.canonical import dump_line
from bench.errors import BenchError
from bench.runs.logfile import MAGIC, frame_length, is_packed, log_path, packed_writer, parse_record, unpack_frame
from bench.runs.rundir import read_manifest
from bench.world.task import load_schema

QUARANTINE = "trajectories.quarantine.jsonl"


@dataclass
class RepairResult:
    log: Path
    quarantine: Path
    kept: int = 0  # records kept
    moved: list[tuple[int, str]] = field(default_factory=list)  # (line number, why) of each quarantined line
    torn_bytes: int = 0  # a torn last line, left in place

    def as_dict(self) -> dict[str, Any]:
        return {"log": str(self.log), "quarantine": str(self.quarantine), "kept": self.kept,
                "moved": [{"line": n, "reason": why} for n, why in self.moved], "torn_bytes": self.torn_bytes}


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
    if is_packed(log):
        rewritten = _repair_packed(data, result, moved)
    else:
        kept, tail = _repair_lines(data, 1, result, moved)
        rewritten = b"".join(line + b"\n" for line in kept) + tail
    if moved:
        _write(result.quarantine, b"".join(moved), append=True)
        _write(log, rewritten, append=False)
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


def _repair_packed(data: bytes, result: RepairResult, moved: list[bytes]) -> bytes:
    """A compressed log repaired frame by frame: bad lines out of good frames, bad frames (and
    bytes that are no frame, up to the next frame's magic number) out whole; a torn last frame
    kept as it is."""
    out: list[bytes] = []
    encode = packed_writer()
    pos, line_no = 0, 1
    while pos < len(data):
        problem = ""
        try:
            length = frame_length(data, pos)
        except ValueError as exc:
            length, problem = None, str(exc)
        if length is None and not problem:  # the torn last frame
            result.torn_bytes = len(data) - pos
            out.append(data[pos:])
            break
        if length is None:  # no frame here: skip to the next frame's magic number
            end = data.find(MAGIC, pos + 1)
            end = len(data) if end < 0 else end
        else:
            end = length
            try:
                content = unpack_frame(data[pos:end])
            except ValueError as exc:
                problem = str(exc)
        if problem:
            reason = f"the bytes at {pos}-{end} are no readable zstd frame: {problem}"
            result.moved.append((line_no, reason))
            moved.append(dump_line({"line": line_no, "byte": pos, "reason": reason,
                                    "raw_base64": base64.b64encode(data[pos:end]).decode()}))
        elif content:
            kept, _ = _repair_lines(content, line_no, result, moved)
            line_no += content.count(b"\n")
            if kept:
                out.append(encode([line + b"\n" for line in kept], b""))
        pos = end
    return b"".join(out)


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
