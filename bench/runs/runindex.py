"""The run index: a derived, binary, columnar copy of what `report` needs of the log.

`trajectories.index` beside the log holds, per write of the log (an attempt's steps and the
record that ends it), the end record's kind and position, a summary's task, variant family,
outcome and trial id, and per step the inputs of its divergence key: its kind, step number,
read-only and error flags, the interned key of its call (`action_label`: tool + canonical
arguments; a model turn's `model_label`) and its state hash. `report` then reads these columns
with numpy instead of decompressing and parsing every line (bench.analysis.divergence.keys).

The log stays the only source of truth; the index is derived from it and never trusted
unchecked. Layout: a header (magic, `VERSION`, the log's encoding), then blocks, each
`[main length, main crc32, states length, states crc32]`, a main section (`_META`: the log bytes
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
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import orjson

from bench.canonical import canonical_json, digest, dump_line, load_line, step_key
from bench.errors import BenchError
from bench.runs.logfile import LogFile, is_packed, log_path, log_records
from bench.runs.rundir import RunLog, StepIndex, SummaryIndex, is_valid, read_manifest, variant_family

if TYPE_CHECKING:
    import numpy as np

INDEX = "trajectories.index"
VERSION = 2  # 2: each block holds the digest of its edges (`_edges`)
FLUSH_ENTRIES = 1024  # writes per block: what a killed run's next report reads again from the log
_MAGIC = b"TBINDEX\x00"
_HEAD = struct.Struct("<8sII")  # magic, version, encoding (0 plain, 1 zstd)
_BLOCK = struct.Struct("<IIII")  # main length, main crc32, states length, states crc32
# log_start, log_end, last write start, log mtime_ns, digest of the last write, digest of the block's edges,
# entries, steps, new labels, new names, flags
_META = struct.Struct("<QQQQ16s16sIIIII")
EDGE = 1 << 14  # the log bytes at each end of a block whose digest every `load` checks (`_edges`)
UNINDEXABLE = 1  # _META flags
_ITEMSIZE = {"u1": 1, "<u4": 4, "<i4": 4, "<u8": 8}

# an entry's end record
NONE, TRIAL, ERROR, OTHER = 0, 1, 2, 3
# a step's flags: its kind in the low two bits
K_OTHER, K_TOOL, K_USER, K_MODEL = 0, 1, 2, 3
RO, ERR, HAS_STATE = 4, 8, 16
OUTCOME = {"success": 0, "failure": 1, "error": 2}  # 3: anything else
# the fields of a record the index reads (`IndexWriter.view`; a model turn's output too)
_STEP_VIEW = ("type", "attempt", "step", "kind", "tool", "args", "read_only", "error", "state_hash")
_TRIAL_VIEW = ("type", "trial", "attempt", "task", "variant_family", "outcome")
_OTHER_VIEW = ("type", "attempt")

# Verbs that name a lookup, for logs that do not say whether a call was read-only (imports: τ-bench
# and most other formats record no such flag). A native run's logged flag always wins.
LOOKUP_VERBS = ("get", "list", "search", "find", "lookup", "look", "read", "fetch", "query", "check", "view",
                "show", "describe", "calculate", "compute", "think", "count", "inspect", "retrieve")
_DUMPS_OPT = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def looks_read_only(tool: str) -> bool:
    """Whether a tool whose log has no read-only flag is taken for a lookup: its name's first
    word (snake_case, camelCase or dotted) is one of LOOKUP_VERBS."""
    head = tool.rsplit(".", 1)[-1].replace("-", "_")
    word = head.split("_", 1)[0]
    for i, ch in enumerate(word[1:], 1):  # camelCase: getReservation -> get
        if ch.isupper():
            word = word[:i]
            break
    return word.lower() in LOOKUP_VERBS


def read_only_of(ev: Mapping[str, Any]) -> bool:
    """A tool step's read-only flag: the logged one, else `looks_read_only` of its tool."""
    flag = ev.get("read_only")
    return bool(flag) if flag is not None else looks_read_only(str(ev.get("tool")))


def raw_args(args: Any) -> bytes:
    """The cache key of a call's arguments (cheaper than their canonical form)."""
    try:
        return orjson.dumps(args, option=_DUMPS_OPT)
    except TypeError:
        return repr(args).encode()


def action_label(tool: str, args: Any) -> str:
    """A call's divergence key: `tool(canonical arguments)`."""
    try:
        return step_key(tool, args)
    except TypeError:
        return step_key(tool, repr(args))


def model_label(output: Any) -> str:
    """A model turn's divergence key: a digest of its output."""
    try:
        value = orjson.loads(orjson.dumps(output))
    except TypeError:
        value = repr(output)
    return "model:" + digest(canonical_json(value))[:16]


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _join(items: list[str]) -> bytes | None:
    """The strings NUL-separated, or None when one holds a NUL itself (unindexable)."""
    blob = "\0".join(items)
    if items and blob.count("\0") != len(items) - 1:
        return None
    return _utf8(blob)


def _split(blob: bytes | memoryview, n: int) -> list[str]:
    return bytes(blob).decode("utf-8", "surrogatepass").split("\0") if n else []


@dataclass
class Meta:
    log_start: int
    log_end: int
    last_start: int
    mtime_ns: int
    tail: bytes
    edges: bytes = bytes(16)
    entries: int = 0
    steps: int = 0
    labels: int = 0
    names: int = 0
    flags: int = 0


class IndexBuilder:
    """Log records (in log order, with their positions) -> index blocks. Interns call keys and
    task/family names in order of first appearance (ids continue across blocks). Runs once per
    step of a run (`IndexWriter`) or of a log being indexed: kept short."""

    def __init__(self) -> None:
        self._raw_ids: dict[bytes, int] = {}  # digest of (raw arguments, tool) -> label id
        self._label_ids: dict[bytes, int] = {}  # digest of a label -> its id
        self._name_ids: dict[str, int] = {}
        self._tools: dict[str, bytes] = {}  # tool -> its name's bytes (for the digest)
        self._pending: dict[str, tuple[bytearray, array, array, list[str]]] = {}  # attempt -> its step rows
        self._current: tuple[str | None, Any] = (None, None)  # the attempt last added to, its rows
        self.indexable = True
        self._new_block()

    def seed(self, labels: list[str], names: list[str]) -> None:
        """Continue an index whose tables are these."""
        for label in labels:
            self._label_ids[hashlib.blake2b(_utf8(label), digest_size=16).digest()] = len(self._label_ids)
        for name in names:
            self._name_ids[name] = len(self._name_ids)

    def _new_block(self) -> None:
        self.e_attempt: list[str] = []
        self.e_nsteps = array("I")
        self.e_end = bytearray()
        self.e_outcome = bytearray()
        self.e_valid = bytearray()
        self.e_hi = array("Q")
        self.e_lo = array("I")
        self.e_len = array("I")
        self.e_task = array("i")
        self.e_family = array("i")
        self.e_trial: list[str] = []
        self.s_flags = bytearray()
        self.s_step = array("i")
        self.s_label = array("i")
        self.s_states: list[str] = []
        self.new_labels: list[str] = []
        self.new_names: list[str] = []

    @property
    def idle(self) -> bool:
        """No attempt's steps wait for their end record: a point the index may end at."""
        return not self._pending

    def add(self, rec: Mapping[str, Any], start: int, end: int) -> None:
        kind = rec["type"]
        attempt = rec.get("attempt")
        if kind == "step" and type(attempt) is str:
            self._step(attempt, rec)
            return
        code = TRIAL if kind == "trial" else ERROR if kind == "attempt_error" else OTHER
        if type(attempt) is not str:  # a record of another kind without an attempt: readers ignore it
            self.indexable = self.indexable and code == OTHER
        elif code != OTHER or attempt in self._pending:  # another kind: only where it ends an attempt's write
            self._entry(attempt, code, rec if code == TRIAL else None, start, end)

    def finish(self) -> None:
        """Attempts whose steps no record ended (an interrupted log): entries of their own."""
        for attempt in list(self._pending):
            self._entry(attempt, NONE, None, 0, 0)

    def _entry(self, attempt: str, code: int, rec: Mapping[str, Any] | None, start: int, end: int) -> None:
        rows = self._pending.pop(attempt, None)
        self._current = (None, None)
        if rows is not None:
            flags, steps, labels, states = rows
            self.s_flags += flags
            self.s_step += steps
            self.s_label += labels
            self.s_states += states
        self.e_attempt.append(attempt)
        self.e_nsteps.append(0 if rows is None else len(rows[0]))
        self.e_end.append(code)
        self.e_hi.append(start >> 32)
        self.e_lo.append(start & 0xFFFFFFFF)
        self.e_len.append(end - start if end - start <= 0xFFFFFFFF else 0)
        if rec is None:
            self.e_outcome.append(3)
            self.e_valid.append(0)
            self.e_task.append(-1)
            self.e_family.append(-1)
            self.e_trial.append("")
            return
        task = rec["task"] if isinstance(rec["task"], str) else repr(rec["task"])
        family = variant_family(rec)
        family = family if isinstance(family, str) else repr(family)
        trial = rec["trial"]
        if type(trial) is not str or end - start > 0xFFFFFFFF:
            self.indexable = False
            trial = ""
        outcome = rec["outcome"]
        self.e_outcome.append(OUTCOME.get(outcome, 3) if isinstance(outcome, str) else 3)
        self.e_valid.append(is_valid(rec))
        self.e_task.append(self._name(task))
        self.e_family.append(self._name(family))
        self.e_trial.append(trial)

    def _name(self, name: str) -> int:
        i = self._name_ids.get(name)
        if i is None:
            i = self._name_ids[name] = len(self._name_ids)
            self.new_names.append(name)
        return i

    def _step(self, attempt: str, rec: Mapping[str, Any]) -> None:
        current, rows = self._current
        if current != attempt:
            rows = self._pending.get(attempt)
            if rows is None:
                rows = self._pending[attempt] = (bytearray(), array("i"), array("i"), [])
            self._current = (attempt, rows)
        get = rec.get
        step, kind = rec["step"], rec["kind"]
        if type(step) is not int or not -0x80000000 <= step <= 0x7FFFFFFF:
            self.indexable = False
            step = 0
        if kind == "tool":
            tool = get("tool")
            tool = tool if type(tool) is str else str(tool)
            label = self._action(tool, get("args"))
            flag = get("read_only")
            read_only = bool(flag) if flag is not None else looks_read_only(tool)
            flags = K_TOOL | (RO if read_only else 0) | (ERR if get("error") is not None else 0)
            state = get("state_hash")
            if state is not None:
                if type(state) is not str:
                    self.indexable = False
                    state = ""
                flags |= HAS_STATE
                rows[3].append(state)
        elif kind == "user":
            label, flags = self._action(str(get("tool") or "ask_user"), get("args")), K_USER
        elif kind == "model":
            label, flags = self._label(model_label(get("output"))), K_MODEL
        else:
            label, flags = -1, K_OTHER
        rows[0].append(flags)
        rows[1].append(step)
        rows[2].append(label)

    def _action(self, tool: str, args: Any) -> int:
        name = self._tools.get(tool)
        if name is None:
            name = self._tools[tool] = b"\0" + _utf8(tool)
        key = hashlib.blake2b(raw_args(args) + name, digest_size=16).digest()
        i = self._raw_ids.get(key)
        if i is None:
            i = self._raw_ids[key] = self._label(action_label(tool, args))
        return i

    def _label(self, label: str) -> int:
        key = hashlib.blake2b(_utf8(label), digest_size=16).digest()
        i = self._label_ids.get(key)
        if i is None:
            i = self._label_ids[key] = len(self._label_ids)
            self.new_labels.append(label)
        return i

    def block(self, meta: Meta) -> bytes:
        """The block of what was added since the last one (then forgotten), covering the log up to
        `meta.log_end`. Once the log is found unindexable, blocks hold only their `_META`."""
        blobs = [_join(self.e_attempt), _join(self.e_trial), _join(self.new_labels), _join(self.new_names)]
        states = _join(self.s_states)
        if states is None or any(blob is None for blob in blobs):  # a NUL in an id, a name or a key
            self.indexable = False
        parts: list[bytes] = []
        if self.indexable:
            meta.entries, meta.steps = len(self.e_end), len(self.s_flags)
            meta.labels, meta.names = len(self.new_labels), len(self.new_names)
            parts = [self.e_nsteps.tobytes(), bytes(self.e_end), bytes(self.e_outcome), bytes(self.e_valid),
                     self.e_hi.tobytes(), self.e_lo.tobytes(), self.e_len.tobytes(), self.e_task.tobytes(),
                     self.e_family.tobytes(), bytes(self.s_flags), self.s_step.tobytes(), self.s_label.tobytes()]
            for blob in blobs:
                assert blob is not None
                parts += [struct.pack("<Q", len(blob)), blob]
        else:
            meta.entries = meta.steps = meta.labels = meta.names = 0
            parts = [struct.pack("<Q", 0)] * 4
            states = b""
        meta.flags = 0 if self.indexable else UNINDEXABLE
        main = _META.pack(meta.log_start, meta.log_end, meta.last_start, meta.mtime_ns, meta.tail, meta.edges,
                          meta.entries,
                          meta.steps, meta.labels, meta.names, meta.flags) + b"".join(parts)
        assert states is not None
        self._new_block()
        return _BLOCK.pack(len(main), zlib.crc32(main), len(states), zlib.crc32(states)) + main + states


def _header(log: Path) -> bytes:
    return _HEAD.pack(_MAGIC, VERSION, int(is_packed(log)))


def _tail_digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


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


@dataclass
class Columns:
    """The index's columns, all blocks concatenated (numpy arrays), and its tables."""

    attempts: list[str]
    nsteps: np.ndarray
    end: np.ndarray
    outcome: np.ndarray
    valid: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    length: np.ndarray
    task: np.ndarray
    family: np.ndarray
    trials: list[str]
    flags: np.ndarray
    step: np.ndarray
    label: np.ndarray
    labels: list[str]
    names: list[str]
    _states: list[tuple[Any, int, Any]] = field(default_factory=list)  # (blob, crc, step flags) per block

    def states(self) -> list[str]:
        """The state hashes of the steps flagged HAS_STATE, in step order (checked: a bad section
        raises IndexStale)."""
        import numpy as np

        out: list[str] = []
        for blob, crc, flags in self._states:
            n = int(np.count_nonzero(np.frombuffer(flags, dtype="u1") & HAS_STATE))
            if zlib.crc32(blob) != crc or len(got := _split(blob, n)) != n:
                raise IndexStale("a damaged section of state hashes")
            out += got
        return out


class IndexStale(Exception):
    """The index does not describe the log (or cannot be read): rebuild it."""


def _decode(data: bytes | memoryview, pos: int, prev_end: int = 0) -> tuple[list[tuple[Meta, dict[str, Any]]], int]:
    """The whole, sound blocks from `pos` (as (meta, columns)), the first covering the log from
    byte `prev_end`, and where they end; stops at the first torn or damaged block. The numeric
    columns stay bytes (`_columns` reads them with numpy: `run` reopens an index without it)."""
    out: list[tuple[Meta, dict[str, Any]]] = []
    view = memoryview(data)
    while pos + _BLOCK.size <= len(view):
        main_len, main_crc, states_len, states_crc = _BLOCK.unpack_from(view, pos)
        body = pos + _BLOCK.size
        if body + main_len + states_len > len(view) or main_len < _META.size:
            break
        main = view[body:body + main_len]
        if zlib.crc32(main) != main_crc:
            break
        meta = Meta(*_META.unpack_from(main, 0))
        if meta.log_start != prev_end or meta.log_end < meta.log_start:
            break
        cols: dict[str, Any] = {}
        at = _META.size
        ne, ns = meta.entries, meta.steps
        for name, dtype, n in (("nsteps", "<u4", ne), ("end", "u1", ne), ("outcome", "u1", ne), ("valid", "u1", ne),
                               ("hi", "<u8", ne), ("lo", "<u4", ne), ("length", "<u4", ne), ("task", "<i4", ne),
                               ("family", "<i4", ne), ("flags", "u1", ns), ("step", "<i4", ns), ("label", "<i4", ns)):
            size = _ITEMSIZE[dtype] * n
            cols[name] = main[at:at + size]
            at += size
        for name, n in (("attempts", ne), ("trials", ne), ("labels", meta.labels), ("names", meta.names)):
            (size,) = struct.unpack_from("<Q", main, at)
            cols[name] = _split(main[at + 8:at + 8 + size], n)
            at += 8 + size
        if at != main_len or any(len(cols[k]) != n for k, n in (("attempts", ne), ("trials", ne),
                                                                  ("labels", meta.labels), ("names", meta.names))):
            break
        cols["states"] = (view[body + main_len:body + main_len + states_len], states_crc, cols["flags"])
        out.append((meta, cols))
        prev_end = meta.log_end
        pos = body + main_len + states_len
    return out, pos


def _columns(blocks: list[dict[str, Any]]) -> Columns:
    import numpy as np  # here: `run` writes the index without numpy

    def cat(name: str, dtype: str) -> np.ndarray:
        parts = [np.frombuffer(b[name], dtype=dtype) for b in blocks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    def lists(name: str) -> list[str]:
        out: list[str] = []
        for b in blocks:
            out += b[name]
        return out

    return Columns(lists("attempts"), cat("nsteps", "<u4"), cat("end", "u1"), cat("outcome", "u1"), cat("valid", "u1"),
                   cat("hi", "<u8"), cat("lo", "<u4"), cat("length", "<u4"), cat("task", "<i4"), cat("family", "<i4"),
                   lists("trials"), cat("flags", "u1"), cat("step", "<i4"), cat("label", "<i4"), lists("labels"),
                   lists("names"), [b["states"] for b in blocks])


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
            if _tail_digest(tail) != meta.tail or any(_edges(fh, m.log_start, m.log_end) != m.edges for m, _ in blocks):
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
    if data[:_HEAD.size] != _header(log):
        raise IndexStale("another version, another log encoding, or not a trajbench index")
    blocks, end = _decode(data, _HEAD.size)
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
        blocks, _ = _decode(_header(log) + b"".join(out), _HEAD.size)
    elif state == "prefix":
        builder = IndexBuilder()
        cols = _columns([b for _, b in blocks])
        builder.seed(cols.labels, cols.names)
        out = []
        last = blocks[-1][0]
        _, torn = _index_log(log, builder, last.log_end, out.append, last.log_end)
        extra, _ = _decode(b"".join(out), 0, last.log_end) if out else ([], 0)
        blocks = blocks + extra
    indexable = all(not m.flags & UNINDEXABLE for m, _ in blocks)
    columns = _columns([b for _, b in blocks])
    problem = _unsound(columns, blocks[-1][0].log_end if blocks else 0, is_packed(log)) if indexable else None
    if problem is not None:  # sound blocks whose columns contradict each other (not written by trajbench)
        if rebuilt:
            raise BenchError(f"the run index rebuilt from the log is inconsistent ({problem}): please report this",
                             file=str(run_dir / INDEX))
        return load(run_dir, rebuild=True)
    return Loaded(columns, indexable, torn, rebuilt)


def _unsound(c: Columns, log_end: int, packed: bool) -> str | None:
    """Why the columns cannot be a trajbench index of a log of `log_end` bytes (None: they can):
    every id in range, the steps' count, positions inside the log. Cheap array checks, so a
    damaged or crafted index is rebuilt rather than read into an error deep in the analysis."""
    import numpy as np  # here: `run` writes the index without numpy

    trial = c.end == TRIAL
    kind = c.flags & 3
    checks = (
        (int(c.nsteps.sum()) == len(c.flags), "step counts"),
        (bool(((c.label >= 0) == (kind != K_OTHER)).all()) and (len(c.label) == 0 or int(c.label.max()) < len(c.labels)),
         "call keys"),
        (bool((c.end <= OTHER).all() and (c.outcome <= 3).all() and (c.valid <= 1).all()), "codes"),
        (not trial.any() or (int(c.task[trial].min()) >= 0 and int(c.family[trial].min()) >= 0
                             and max(int(c.task[trial].max()), int(c.family[trial].max())) < len(c.names)), "names"),
    )
    for ok, what in checks:
        if not ok:
            return what
    ends = (c.end == TRIAL) | (c.end == ERROR)
    if ends.any():
        hi, lo, length = c.hi[ends], c.lo[ends].astype(np.uint64), c.length[ends].astype(np.uint64)
        inside = hi < log_end if packed else (hi << np.uint64(32)) + lo + length <= log_end
        if not bool(np.all(inside)):
            return "positions"
    return None


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
        emit(builder.block(Meta(state["start"], at, last, mtime, _tail_digest(tail), edges)))
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
                blocks, end = [], _HEAD.size
                if path.stat().st_size > _HEAD.size:
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
            self._fh.write(self._builder.block(Meta(self._start, end, start, st.st_mtime_ns, _tail_digest(data),
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
