"""The run index's binary format (bench/runs/runindex.py loads, verifies and writes it).

A file is a header (`HEAD`: magic, `VERSION`, the log's encoding), then blocks, each `BLOCK`
(`[main length, main crc32, states length, states crc32]`), a main section (`META`, then the
columns) and a section of state hashes. `IndexBuilder` turns log records into blocks;
`decode_blocks` reads the sound ones back and `concat_columns` joins them into numpy `Columns`;
`unsound` finds columns that contradict each other. Also the divergence keys of a call
(`action_label`, `model_label`) and the read-only rule of a call (`looks_read_only`): what the
index interns is exactly what the reading pass keys (bench.analysis.divergence.keys).
Apart from the loading side so that each stays one concept (and under ~700 lines).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import orjson

from bench.canonical import canonical_json, digest, step_key
from bench.runs.rundir import is_valid, variant_family

if TYPE_CHECKING:
    import numpy as np

VERSION = 2  # 2: each block holds the digest of its edges (`_edges`)
MAGIC = b"TBINDEX\x00"
HEAD = struct.Struct("<8sII")  # magic, version, encoding (0 plain, 1 zstd)
BLOCK = struct.Struct("<IIII")  # main length, main crc32, states length, states crc32
# log_start, log_end, last write start, log mtime_ns, digest of the last write, digest of the block's edges,
# entries, steps, new labels, new names, flags
META = struct.Struct("<QQQQ16s16sIIIII")
UNINDEXABLE = 1  # META flags
_ITEMSIZE = {"u1": 1, "<u4": 4, "<i4": 4, "<u8": 8}

# an entry's end record
NONE, TRIAL, ERROR, OTHER = 0, 1, 2, 3
# a step's flags: its kind in the low two bits
K_OTHER, K_TOOL, K_USER, K_MODEL = 0, 1, 2, 3
RO, ERR, HAS_STATE = 4, 8, 16
OUTCOME = {"success": 0, "failure": 1, "error": 2}  # 3: anything else

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
        `meta.log_end`. Once the log is found unindexable, blocks hold only their `META`."""
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
        main = META.pack(meta.log_start, meta.log_end, meta.last_start, meta.mtime_ns, meta.tail, meta.edges,
                          meta.entries,
                          meta.steps, meta.labels, meta.names, meta.flags) + b"".join(parts)
        assert states is not None
        self._new_block()
        return BLOCK.pack(len(main), zlib.crc32(main), len(states), zlib.crc32(states)) + main + states


def tail_digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


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


def decode_blocks(data: bytes | memoryview, pos: int, prev_end: int = 0) -> tuple[list[tuple[Meta, dict[str, Any]]], int]:
    """The whole, sound blocks from `pos` (as (meta, columns)), the first covering the log from
    byte `prev_end`, and where they end; stops at the first torn or damaged block. The numeric
    columns stay bytes (`concat_columns` reads them with numpy: `run` reopens an index without it)."""
    out: list[tuple[Meta, dict[str, Any]]] = []
    view = memoryview(data)
    while pos + BLOCK.size <= len(view):
        main_len, main_crc, states_len, states_crc = BLOCK.unpack_from(view, pos)
        body = pos + BLOCK.size
        if body + main_len + states_len > len(view) or main_len < META.size:
            break
        main = view[body:body + main_len]
        if zlib.crc32(main) != main_crc:
            break
        meta = Meta(*META.unpack_from(main, 0))
        if meta.log_start != prev_end or meta.log_end < meta.log_start:
            break
        cols: dict[str, Any] = {}
        at = META.size
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


def concat_columns(blocks: list[dict[str, Any]]) -> Columns:
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


def unsound(c: Columns, log_end: int, packed: bool) -> str | None:
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
