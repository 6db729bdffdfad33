"""The divergence keys of many attempts, packed and computed with numpy.

`PackedAttempts` holds every attempt's key sequences end to end in one int32 array (what a run
of a million trials keeps in memory) and gathers them back as flat `KeyArrays`; `key_chunk`
applies `Keyer.feed`'s rules to the run index's step columns for some whole attempts at once,
producing the same packed layout (`pack_attempts`). Apart from bench/analysis/divergence/keys.py
(the keying rules, the corpus): this is the array side of it.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import chain
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from bench.analysis.divergence.options import DivergenceOptions
from bench.runs.indexcodec import ERR, K_MODEL, K_TOOL, K_USER, RO


class AttemptKeys:
    """The keys of one attempt, built event by event."""

    __slots__ = ("keys", "where", "calls", "actions", "last_state", "events")

    def __init__(self) -> None:
        self.keys: list[int] = []  # key ids
        self.where: list[int] = []  # position of each key's event among the attempt's events
        self.calls: list[int] = []  # step index of every tool/user call (for milestones)
        self.actions: list[int] = []  # action key id of every tool call, none dropped (the report's sequence)
        self.last_state: Any = None
        self.events = 0


@dataclass
class KeyArrays:
    """The keys of several attempts laid end to end (`PackedAttempts.gather`): per attempt the
    lengths of its sequences, and each sequence flat, attempt after attempt."""

    n_keys: np.ndarray
    n_calls: np.ndarray
    n_actions: np.ndarray
    keys: np.ndarray
    where: np.ndarray
    calls: np.ndarray
    actions: np.ndarray

    @classmethod
    def of(cls, attempts: Sequence[AttemptKeys]) -> KeyArrays:
        """The same arrays from unpacked attempts."""
        def flat(name: str) -> np.ndarray:
            return np.fromiter(chain.from_iterable(getattr(tk, name) for tk in attempts), dtype=np.int64)

        def lens(name: str) -> np.ndarray:
            return np.fromiter((len(getattr(tk, name)) for tk in attempts), dtype=np.int64, count=len(attempts))
        return cls(lens("keys"), lens("calls"), lens("actions"), flat("keys"), flat("where"), flat("calls"), flat("actions"))


def _segments(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, last: int,
              plain: np.ndarray | None = None) -> np.ndarray:
    """data[starts[i]:starts[i] + lengths[i]] for every i, end to end (int64); where `plain[i]`,
    0, 1, 2, ... instead (what `PackedAttempts` leaves out)."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    seg_start = np.cumsum(lengths) - lengths
    inner = np.arange(total, dtype=np.int64) - np.repeat(seg_start, lengths)
    idx = np.minimum(np.repeat(starts, lengths) + inner, last)
    out = data[idx].astype(np.int64)
    if plain is not None and plain.any():
        mask = np.repeat(plain, lengths)
        out[mask] = inner[mask]
    return out


class PackedAttempts(Mapping[str, AttemptKeys]):
    """attempt id -> its `AttemptKeys`, held packed: the four sequences of every attempt laid
    end to end in one int32 array (`[len keys, len calls, len actions, keys, where, calls,
    actions]` after a header of their lengths, the event count and which of `where` and `calls`
    are merely 0, 1, 2, ... (then left out: the common case), ~150 bytes an attempt instead of ~2 KB of Python lists, so keying a million
    trials stays a few hundred MB. Each lookup unpacks a fresh `AttemptKeys` (lists again).
    The attempt being keyed stays unpacked (`open`) until another attempt's step arrives; a log
    whose attempts interleave (written before one write per attempt) reopens a packed attempt,
    which costs only the dead copy left in the array. An attempt with a value beyond int32 (a
    step number an import wrote) is kept as it is."""

    def __init__(self) -> None:
        self._data = array("i")
        self._at: dict[str, int] = {}  # attempt -> offset of its header in _data
        self._loose: dict[str, AttemptKeys] = {}  # not packable, or being keyed
        self._state: dict[str, Any] = {}  # key="state": the last state hash of a packed attempt
        self._open: str | None = None

    def open(self, attempt: str) -> AttemptKeys:
        """The attempt's keys to extend (packing the one keyed before it)."""
        if self._open is not None and self._open != attempt:
            self._pack(self._open)
        self._open = attempt
        tk = self._loose.get(attempt)
        if tk is None:
            at = self._at.pop(attempt, None)
            tk = self._loose[attempt] = AttemptKeys() if at is None else self._unpack(at, self._state.pop(attempt, None))
        return tk

    def close(self) -> None:
        """Pack the attempt still open (the end of the log)."""
        if self._open is not None:
            self._pack(self._open)
            self._open = None

    def _pack(self, attempt: str) -> None:
        tk = self._loose[attempt]
        data, at = self._data, len(self._data)
        where_plain = tk.where == list(range(len(tk.where)))
        calls_plain = tk.calls == list(range(len(tk.calls)))
        try:
            data.extend((len(tk.keys), len(tk.calls), len(tk.actions), tk.events, where_plain | calls_plain << 1))
            data.extend(tk.keys)
            if not where_plain:
                data.extend(tk.where)
            if not calls_plain:
                data.extend(tk.calls)
            data.extend(tk.actions)
        except (OverflowError, TypeError):  # a value beyond int32: keep its lists
            del data[at:]
            return
        del self._loose[attempt]
        self._at[attempt] = at
        if tk.last_state is not None:
            self._state[attempt] = tk.last_state

    def _unpack(self, at: int, last_state: Any = None) -> AttemptKeys:
        data = self._data
        nk, nc, na, events, plain = data[at:at + 5]
        tk = AttemptKeys()
        tk.events, tk.last_state = events, last_state
        i = at + 5
        tk.keys = data[i:i + nk].tolist()
        i += nk
        if plain & 1:
            tk.where = list(range(nk))
        else:
            tk.where = data[i:i + nk].tolist()
            i += nk
        if plain & 2:
            tk.calls = list(range(nc))
        else:
            tk.calls = data[i:i + nc].tolist()
            i += nc
        tk.actions = data[i:i + na].tolist()
        return tk

    def handle_of(self, attempt: str) -> int | str | None:
        """What `gather` takes for an attempt: its offset in the packed array (an int: 8 bytes a
        trial instead of its id), the id itself while it is held unpacked, None if it has no
        steps."""
        at = self._at.get(attempt)
        if at is not None:
            return at
        return attempt if attempt in self._loose else None

    def actions_of(self, handle: int | str | None) -> Sequence[int]:
        """An attempt's action ids (`handle_of`), sliced from the packed array without
        unpacking its other sequences."""
        if handle is None:
            return ()
        if isinstance(handle, str):
            return self._loose[handle].actions
        data = self._data
        nk, nc, na, _, plain = data[handle:handle + 5]
        i = handle + 5 + nk * (1 + (not plain & 1)) + (0 if plain & 2 else nc)
        return data[i:i + na]

    def gather(self, handles: Sequence[int | str | None]) -> KeyArrays:
        """The sequences of many attempts (`handle_of`) as flat int64 arrays, attempt after
        attempt, cut from the packed array with numpy (no list per attempt). An attempt held
        unpacked (a value beyond int32) is read through its lists."""
        if any(isinstance(h, str) for h in handles):
            return KeyArrays.of([self._loose[h] if isinstance(h, str) else
                                 (AttemptKeys() if h is None else self._unpack(h)) for h in handles])
        at = np.array([-1 if h is None else h for h in handles], dtype=np.int64)
        present = at >= 0
        data = np.frombuffer(self._data, dtype=np.int32) if len(self._data) else np.zeros(5, dtype=np.int32)
        head = np.zeros((at.size, 5), dtype=np.int64)
        if present.any():
            head[present] = data[at[present, None] + np.arange(5)]
        nk, nc, na, plain = head[:, 0], head[:, 1], head[:, 2], head[:, 4]
        where_plain, calls_plain = (plain & 1).astype(bool), (plain & 2).astype(bool)
        keys_at = at + 5
        where_at = keys_at + nk
        calls_at = where_at + np.where(where_plain, 0, nk)
        actions_at = calls_at + np.where(calls_plain, 0, nc)
        last = data.size - 1
        return KeyArrays(nk, nc, na, _segments(data, keys_at, nk, last),
                         _segments(data, where_at, nk, last, where_plain),
                         _segments(data, calls_at, nc, last, calls_plain), _segments(data, actions_at, na, last))

    def __getitem__(self, attempt: str) -> AttemptKeys:
        tk = self._loose.get(attempt)
        if tk is not None:
            return tk
        return self._unpack(self._at[attempt], self._state.get(attempt))

    def __iter__(self) -> Iterator[str]:
        yield from self._at
        yield from self._loose

    def __len__(self) -> int:
        return len(self._at) + len(self._loose)

    def __contains__(self, attempt: object) -> bool:
        return attempt in self._at or attempt in self._loose


def positions_within(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., lengths[i] - 1 for every i, end to end."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def key_chunk(flags: Any, step: Any, value: Any, state_of: Any, counts: Any,
               options: DivergenceOptions) -> tuple[Any, Any, set[int]]:
    """`keyer_of_columns` for some whole attempts: their packed int32 data, each one's offset in
    it, and the action ids of their read-only calls. `value`: each step's key id (-1: no call)."""
    import numpy as np

    n_att = len(counts)
    att = np.repeat(np.arange(n_att, dtype=np.int32), counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64) if n_att else np.zeros(0, dtype=np.int64)
    kind = flags & 3
    tool, user = kind == K_TOOL, kind == K_USER
    ro_tool = tool & ((flags & RO) != 0)
    read_only = set(np.unique(value[ro_tool]).tolist())
    skipped = ro_tool if options.ignore_read_only else np.zeros(len(flags), dtype=bool)
    if state_of is not None:
        live = tool & ~skipped  # the tool steps that update the last state
        ts, ta = state_of[live], att[live]
        prev = np.full(len(ts), -1, dtype=np.int32)
        if len(ts) > 1:
            prev[1:] = np.where(ta[1:] == ta[:-1], ts[:-1], -1)
        changed = ~ro_tool[live] & ((flags[live] & ERR) == 0) & (ts != prev) & (ts >= 0)
        key_value = np.full(len(flags), -1, dtype=np.int32)
        key_value[np.flatnonzero(live)[changed]] = ts[changed]
        if options.include_user:
            key_value[user] = value[user]
        kept = key_value >= 0
        keys = key_value[kept]
    else:
        kept = tool & ~skipped
        if options.include_user:
            kept |= user
        if options.include_model:
            kept |= kind == K_MODEL
        cv, ca = value[kept], att[kept]
        if options.collapse_repeats and len(cv) > 1:
            drop = np.zeros(len(cv), dtype=bool)
            drop[1:] = (ca[1:] == ca[:-1]) & (cv[1:] == cv[:-1]) & ro_tool[kept][1:]
            kept[np.flatnonzero(kept)[drop]] = False
            cv = cv[~drop]
        keys = cv
    key_att = att[kept]
    where = np.flatnonzero(kept) - starts[key_att]
    calls = tool | user
    data, off = pack_attempts(n_att, counts, keys, where, key_att, step[calls], att[calls], value[tool], att[tool])
    return data, off, read_only


def pack_attempts(n_att: int, events: Any, keys: Any, where: Any, key_att: Any, calls: Any, call_att: Any,
            actions: Any, action_att: Any) -> tuple[Any, Any]:
    """`PackedAttempts._pack`'s layout from per-element arrays (each sorted by attempt), every
    attempt at once: the int32 data and each attempt's offset in it."""
    import numpy as np


    def count(of: Any) -> Any:
        return np.bincount(of, minlength=n_att).astype(np.int64)

    def rank(of: Any, sizes: Any) -> Any:
        first = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int32)
        return np.arange(len(of), dtype=np.int32) - first[of]

    nk, nc, na = count(key_att), count(call_att), count(action_att)
    key_rank, call_rank, action_rank = rank(key_att, nk), rank(call_att, nc), rank(action_att, na)
    where_plain = np.ones(n_att, dtype=bool)
    where_plain[key_att[where != key_rank]] = False
    calls_plain = np.ones(n_att, dtype=bool)
    calls_plain[call_att[calls != call_rank]] = False
    where_len = np.where(where_plain, 0, nk)
    calls_len = np.where(calls_plain, 0, nc)
    sizes = 5 + nk + where_len + calls_len + na
    off = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    data = np.empty(int(sizes.sum()), dtype=np.int32)
    for i, column in enumerate((nk, nc, na, np.asarray(events, dtype=np.int64),
                                where_plain.astype(np.int64) | calls_plain.astype(np.int64) << 1)):
        data[off + i] = column
    body = off + 5
    data[body[key_att] + key_rank] = keys
    m = ~where_plain[key_att]
    data[(body + nk)[key_att[m]] + key_rank[m]] = where[m]
    m = ~calls_plain[call_att]
    data[(body + nk + where_len)[call_att[m]] + call_rank[m]] = calls[m]
    data[(body + nk + where_len + calls_len)[action_att] + action_rank] = actions
    return data, off
