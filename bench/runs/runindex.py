"""The run index: a derived, binary, columnar copy of what `report` needs of the log.

`trajectories.index` beside the log holds, per write of the log (an attempt's steps and the
record that ends it), the end record's kind and position, a summary's task, variant family,
outcome and trial id, and per step the inputs of its divergence key: its kind, step number,
read-only and error flags, the interned key of its call (`action_label`: tool + canonical
arguments; a model turn's `model_label`) and its state hash. `report` then reads these columns
with numpy instead of decompressing and parsing every line (bench.analysis.divergence.keys).

The log stays the only source of truth; the index is derived from it and never trusted
unchecked. Layout (bench/runs/indexcodec.py: the encoding, decoding and the builder): a header (magic, `VERSION`, the log's encoding), then blocks, each
`[main length, main crc32, states length, states crc32]`, a main section (`META`: the log bytes
it covers up to, the start and a digest of the last write it covers, a digest of its two ends
(`_edges`), the log's mtime then; then the columns) and a section of state hashes (read only for `key="state"`). A block is written
after whole writes of the log only (`IndexWriter`: every `FLUSH_ENTRIES` writes and at close), so
`kill -9` leaves at most a torn last block, which is cut. Before use (`load`) the index must
cover a prefix of the log: the log is at least as long as the last block says, the bytes of
the last write it covers have its digest, and every block's two ends theirs; if the log is longer (a killed run's last writes, a
resume by an older trajbench) the rest is read from the log and indexed in memory; if the log is
as long but its mtime changed (edited in place), or shorter, or the index is torn at its start,
of another version or encoding, or not an index at all, it is rebuilt in memory from the log (only
`run` and `repair` write the file: the read-only commands never write into a run directory). A log that
holds what the columns cannot represent (a step number beyond int32, an id that is not a
string) is marked unindexable: `report` then reads the log itself. Not detected: a same-length
edit more than `EDGE` bytes from both ends of its block, when the log grew after it or its mtime
was kept (`touch -r`); an edit that keeps the size, the block ends and the mtime. `verify` never
reads the index.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from bench.canonical import dump_line, load_line
from bench.errors import BenchError
from bench.runs.indexcodec import (
    ERROR,
    HEAD,
    MAGIC,
    TRIAL,
    UNINDEXABLE,
    VERSION,
    Columns,
    IndexBuilder,
    IndexStale,
    Meta,
    concat_columns,
    decode_blocks,
    tail_digest,
    unsound,
)
from bench.runs.logfile import LogFile, is_packed, log_path, log_records
from bench.runs.rundir import RunLog, StepIndex, SummaryIndex, read_manifest

INDEX = "trajectories.index"
FLUSH_ENTRIES = 1024  # writes per block: what a killed run's next report reads again from the log
EDGE = 1 << 14  # the log bytes at each end of a block whose digest every `load` checks (`_edges`)
# the fields of a record the index reads (`IndexWriter.view`; a model turn's output too)
_STEP_VIEW = ("type", "attempt", "step", "kind", "tool", "args", "read_only", "error", "state_hash")
_TRIAL_VIEW = ("type", "trial", "attempt", "task", "variant_family", "outcome")
_OTHER_VIEW = ("type", "attempt")


def _header(log: Path) -> bytes:
    return HEAD.pack(MAGIC, VERSION, int(is_packed(log)))


def _edges(fh: Any, start: int, end: int) -> bytes:
    """The digest of the log bytes a block covers at its two ends (`EDGE` bytes each, or all of
    a smaller block): what `load` checks of every block, so that an edit in place of an earlier
    block's first or last write is found even when the log also grew, for a read of ~32 KB per
    1,024 attempts rather than of the log."""
    h = hashlib.blake2b(digest_size=16)
    if end - start <= 2 * EDGE:
        fh.seek(start)
        h.update(fh.read(end - start))
    else:
        fh.seek(start)
        h.update(fh.read(EDGE))
        fh.seek(end - EDGE)
        h.update(fh.read(EDGE))
    return h.digest()

def _check(log: Path, blocks: list[tuple[Meta, dict[str, Any]]]) -> str:
    """How the log stands to the index: "exact" (the index covers all of it), "prefix" (the log
    grew past it), else IndexStale. Every block's edges are checked (`_edges`), the last block's
    last write whole, and, when the log has not grown, its mtime."""
    meta = blocks[-1][0]
    try:
        st = os.stat(log)
    except FileNotFoundError:
        st = None
    size = st.st_size if st is not None else 0
    if size < meta.log_end:
        raise IndexStale("the log is shorter than the index says")
    if meta.log_end:
        with open(log, "rb") as fh:
            fh.seek(meta.last_start)
            tail = fh.read(meta.log_end - meta.last_start)
            if tail_digest(tail) != meta.tail or any(_edges(fh, m.log_start, m.log_end) != m.edges for m, _ in blocks):
                raise IndexStale("the log's bytes differ from those the index was made of")
    if size == meta.log_end:
        if st is not None and st.st_mtime_ns != meta.mtime_ns and meta.log_end:
            raise IndexStale("the log was changed in place")
        return "exact"
    return "prefix"


def _read_index(run_dir: Path, log: Path) -> tuple[list[tuple[Meta, dict[str, Any]]], int, bytes]:
    """The index's sound blocks, where they end in its file, and the file's bytes. Raises
    IndexStale when there is no usable index."""
    path = run_dir / INDEX
    try:
        with open(path, "rb") as fh:  # mapped: the state hashes' pages are read only if used (key="state")
            data: Any = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(fh.fileno()).st_size else b""
    except FileNotFoundError:
        raise IndexStale("no index") from None
    except (OSError, ValueError) as exc:
        raise IndexStale(f"cannot be read ({exc})") from None
    if data[:HEAD.size] != _header(log):
        raise IndexStale("another version, another log encoding, or not a trajbench index")
    blocks, end = decode_blocks(data, HEAD.size)
    if not blocks:
        raise IndexStale("no whole block")
    return blocks, end, data


@dataclass
class Loaded:
    """What `load` gives: the columns, how much of the log they cover, the torn tail's bytes."""

    columns: Columns
    indexable: bool
    torn_bytes: int
    rebuilt: bool  # the index was made from the whole log (missing or stale), in memory


def load(run_dir: Path, *, rebuild: bool = False) -> Loaded:
    """The run's index, verified against the log, extended in memory by what the log holds past
    it (a killed run's last writes), or rebuilt in memory from the whole log when missing or
    stale. Never writes: the read-only commands (`report`, `diff`, `view`, ...) leave the run
    directory as they found it; the index file is written only by `run` (`IndexWriter`, which
    brings it up to the log on resume) and `repair` (`write_index`)."""
    log = log_path(run_dir)
    try:
        if rebuild:  # as if there were none (benchmarks/memory.py: the first report of an old run)
            raise IndexStale("rebuild asked for")
        blocks, _, _ = _read_index(run_dir, log)
        state = _check(log, blocks)
    except IndexStale:
        blocks, state = [], "stale"
    torn = 0
    rebuilt = state == "stale"
    if rebuilt:
        out: list[bytes] = []
        _, torn = _index_log(log, IndexBuilder(), 0, out.append)
        blocks, _ = decode_blocks(_header(log) + b"".join(out), HEAD.size)
    elif state == "prefix":
        builder = IndexBuilder()
        cols = concat_columns([b for _, b in blocks])
        builder.seed(cols.labels, cols.names)
        out = []
        last = blocks[-1][0]
        _, torn = _index_log(log, builder, last.log_end, out.append, last.log_end)
        extra, _ = decode_blocks(b"".join(out), 0, last.log_end) if out else ([], 0)
        blocks = blocks + extra
    indexable = all(not m.flags & UNINDEXABLE for m, _ in blocks)
    columns = concat_columns([b for _, b in blocks])
    problem = unsound(columns, blocks[-1][0].log_end if blocks else 0, is_packed(log)) if indexable else None
    if problem is not None:  # sound blocks whose columns contradict each other (not written by trajbench)
        if rebuilt:
            raise BenchError(f"the run index rebuilt from the log is inconsistent ({problem}): please report this",
                             file=str(run_dir / INDEX))
        return load(run_dir, rebuild=True)
    return Loaded(columns, indexable, torn, rebuilt)

def _index_log(log: Path, builder: IndexBuilder, start: int, emit: Any, log_start: int = 0) -> tuple[int, int]:
    """Index the log from byte `start`, emitting a block at safe points every FLUSH_ENTRIES
    entries (so the builder's memory stays small) and one at the end; returns (bytes covered,
    torn tail bytes)."""
    state = {"start": log_start, "covered": start, "last": start, "torn": 0}

    def flush(at: int, final: bool) -> None:
        if not final and (len(builder.e_end) < FLUSH_ENTRIES or not builder.idle):
            return
        if final:
            builder.finish()
        if at == state["start"] and not builder.e_end and not builder.new_labels:
            return
        last = state["last"]
        with open(log, "rb") as fh:
            fh.seek(last)
            tail = fh.read(at - last)
            edges = _edges(fh, state["start"], at)
        mtime = os.stat(log).st_mtime_ns if log.exists() else 0
        emit(builder.block(Meta(state["start"], at, last, mtime, tail_digest(tail), edges)))
        state["start"] = at

    def on_chunk(disk_end: int) -> None:
        state["last"], state["covered"] = state["covered"], disk_end
        flush(disk_end, False)

    for rec, first, end in log_records(log, start, on_chunk):
        if rec is None:
            state["torn"] = end - first
            break
        builder.add(rec, first, end)
    flush(state["covered"], True)
    return state["covered"], state["torn"]


def _rebuild_file(run_dir: Path, log: Path) -> int | None:
    """Index the whole log into a new index file, block by block (memory stays one block's),
    replacing the old one atomically; the torn tail's bytes, or None if the folder cannot be
    written."""
    tmp = run_dir / (INDEX + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(_header(log))
            _, torn = _index_log(log, IndexBuilder(), 0, fh.write)
        os.replace(tmp, run_dir / INDEX)
        return torn
    except OSError:
        _drop(tmp)
        return None


class IndexWriter:
    """`LogWriter`'s hook: each write of the log, its records indexed; a block appended every
    FLUSH_ENTRIES writes and at close. Opening it brings the index up to the log first
    (`load`'s checks: extended from the log, or rebuilt). A failure to write the index never
    stops the run: the index is dropped (readers rebuild it from the log)."""

    def __init__(self, path: Path, log: Path, builder: IndexBuilder, covered: int):
        self._path, self._log = path, log
        self._builder = builder
        self._start = covered  # the log bytes the file's blocks cover
        self._last: tuple[int, bytes] = (covered, b"")  # the last write: where it starts, its bytes
        self._packed = is_packed(log)
        self._fh: Any = None

    @classmethod
    def open(cls, run_dir: Path, log: Path) -> IndexWriter | None:
        path = run_dir / INDEX
        builder = IndexBuilder()
        try:
            try:
                blocks, end, _ = _read_index(run_dir, log)
                state = _check(log, blocks)
            except IndexStale:
                blocks, end, state = [], 0, "stale"
            if state == "stale":
                if _rebuild_file(run_dir, log) is None:
                    raise OSError("cannot write the index")
                blocks, end = [], HEAD.size
                if path.stat().st_size > HEAD.size:
                    blocks, end, _ = _read_index(run_dir, log)
            builder.seed([x for _, b in blocks for x in b["labels"]], [x for _, b in blocks for x in b["names"]])
            last = blocks[-1][0] if blocks else Meta(0, 0, 0, 0, b"")
            fh = open(path, "r+b" if path.exists() else "w+b")
            fh.truncate(end if blocks else 0)
            fh.seek(0, os.SEEK_END)
            if not blocks:
                fh.write(_header(log))
            writer = cls(path, log, builder, last.log_end)
            writer._fh = fh
            if state == "prefix":  # the log's writes past the index: indexed now
                out: list[bytes] = []
                covered, _ = _index_log(log, builder, last.log_end, out.append, last.log_end)
                fh.write(b"".join(out))
                writer._start, writer._last = covered, (covered, b"")
            return writer
        except (OSError, BenchError):
            _drop(path)
            return None

    def view(self, record: Mapping[str, Any]) -> Any:
        """What the index needs of a record the writer logs, as a reader will see it: its fields
        that the index holds (not a step's observation, a model turn's messages, a summary's
        checks), written and read back as the log's line is (`dump_line`, `load_line`: the same
        values, for a fraction of parsing the whole line back). Taken when the record is logged
        (a caller may change the dict afterwards)."""
        kind = record.get("type")
        keys = _STEP_VIEW if kind == "step" else _TRIAL_VIEW if kind == "trial" else _OTHER_VIEW
        view = {key: record[key] for key in keys if key in record}
        if kind == "step" and record.get("kind") == "model" and "output" in record:
            view["output"] = record["output"]
        try:
            return load_line(dump_line(view))
        except Exception:  # noqa: BLE001 - the index must never stop a run: `wrote` drops it
            return None

    def wrote(self, views: list[Any], end_view: Any, end_len: int, start: int, end_at: int, data: bytes,
              fd: int) -> None:
        """The log just received `data` at byte `start`: an attempt's steps (`views`: `view` of
        each), then its end record (`end_view`; None: none, `end_len` bytes long) at position
        `end_at` (a frame's start in a compressed log)."""
        if self._fh is None:
            return
        b = self._builder
        try:
            for rec in views:
                b.add(rec, 0, 0)
            if end_len:
                position = end_at << 32 if self._packed else end_at
                b.add(end_view, position, position + end_len)
            else:
                b.finish()
        except Exception:  # noqa: BLE001 - the index must never stop a run: dropped, readers rebuild it
            self._fh.close()
            self._fh = None
            _drop(self._path)
            return
        self._last = (start, data)
        if len(b.e_end) >= FLUSH_ENTRIES:
            self._flush(fd)

    def _flush(self, fd: int | None = None) -> None:
        if self._fh is None or (not self._builder.e_end and not self._builder.new_labels):
            return
        start, data = self._last
        try:
            st = os.fstat(fd) if fd is not None else os.stat(self._log)
            end = start + len(data)
            with open(self._log, "rb") as log:  # once per FLUSH_ENTRIES writes
                edges = _edges(log, self._start, end)
            self._fh.write(self._builder.block(Meta(self._start, end, start, st.st_mtime_ns, tail_digest(data),
                                                    edges)))
            self._start = end
        except OSError:
            self._fh.close()
            self._fh = None
            _drop(self._path)

    def close(self) -> None:
        if self._fh is None:
            return
        self._flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _drop(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def write_index(run_dir: Path) -> bool:
    """Write the run's index afresh from its log (`trajbench repair` rewrote the log); False
    when the folder cannot be written (then no index is left: readers rebuild it in memory)."""
    log = log_path(run_dir)
    if _rebuild_file(run_dir, log) is None:
        _drop(run_dir / INDEX)
        return False
    return True


def read_indexed(run_dir: str | Path, *, rebuild: bool = False) -> tuple[RunLog, Columns] | None:
    """`read_run(run_dir, on_step=...)`'s RunLog (summaries indexed; steps not kept) built from
    the index, with the index's step columns for keying (bench.analysis.divergence.keys); None
    when the log holds what the index cannot represent (then read the log itself)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    loaded = load(run_dir, rebuild=rebuild)
    if not loaded.indexable:
        return None
    c = loaded.columns
    log = LogFile(log_path(run_dir))
    summaries, duplicates, firsts = SummaryIndex.from_columns(log, c.trials, c.end == TRIAL, c.hi, c.lo, c.length,
                                                              c.task, c.family, c.valid, c.names)
    used = {c.attempts[i] for i in firsts}
    errors = [load_line(log.read(p, p + int(n))) for p, n in
              ((int(h) << 32 | int(lo), n) for h, lo, n in zip(c.hi[c.end == ERROR], c.lo[c.end == ERROR],
                                                               c.length[c.end == ERROR]))]
    with_steps = {a for a, n in zip(c.attempts, c.nsteps.tolist()) if n}
    orphans = len(with_steps) - len(with_steps & used)
    return RunLog(run_dir, manifest, summaries, StepIndex(log, {}), errors, duplicates, orphans, loaded.torn_bytes), c
