"""Step 1 of the divergence analysis: every logged step gets a canonical key.

A key is `tool(canonical JSON of its arguments)` (`bench.canonical.step_key`), or the state hash
after the step with `key="state"`; the options decide which steps become keys (read-only steps,
ask_user turns, model turns, repeated reads). Keys are interned as ids of one vocabulary, so a
repeated call costs one orjson.dumps and a dict lookup, and the report's trajectory distances
compare ids. `read_keyed` keys a run directory's steps as they are read (one pass, no step
record kept); `corpus_of_run` groups the keyed trials by task, with each task's reference
actions keyed the same way (the `Corpus` the tree analysis runs on).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import orjson

from bench.analysis.divergence.options import END, DivergenceOptions, TaskTrials
from bench.analysis.divergence.packed import AttemptKeys, KeyArrays, PackedAttempts, key_chunk, positions_within
from bench.runs.indexcodec import (  # noqa: F401 - looks_read_only, read_only_of, LOOKUP_VERBS: their import path before runindex
    ERR,
    HAS_STATE,
    K_MODEL,
    K_TOOL,
    K_USER,
    LOOKUP_VERBS,
    RO,
    Columns,
    IndexStale,
    action_label,
    looks_read_only,
    model_label,
    raw_args,
    read_only_of,
)
from bench.runs.rundir import RunLog, TrialSummary, read_run
from bench.runs.runindex import read_indexed
from bench.world.suite import Suite
from bench.world.task import Task


def writes_anywhere(lookup_flags: Sequence[Sequence[bool]]) -> bool:
    """Whether a task is decided by writes: some trial of it (or its reference) makes a call that
    is not a lookup. In such a task the decision rule (fork="decision") leaves every lookup out
    of the keys — the writes and where a trial stops are its decisions, the lookups before them
    context. In a task no trial writes in (a question to answer), the lookups are what the
    answer is made from: they stay keys."""
    return any(not flag for flags in lookup_flags for flag in flags)


def decision_positions(is_lookup: Sequence[bool], writes: bool) -> list[int]:
    """The positions of a trial's keys that are decisions (`writes_anywhere`)."""
    return [i for i, lookup in enumerate(is_lookup) if not (writes and lookup)]


def tool_of(key: str) -> str | None:
    if key == END or key.startswith("state:") or key.startswith("model:"):
        return None
    tool, paren, _ = key.partition("(")
    return tool if paren else key



_DUMPS_OPT = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS  # `raw_args`'s


class Keyer:
    """Keys logged step events into ids of a shared vocabulary. The key of each (tool, raw
    arguments) is cached, so that a repeated call costs one orjson.dumps and a dict lookup."""

    def __init__(self, options: DivergenceOptions, vocab: dict[str, int]):
        self.vocab = vocab
        self.labels = list(vocab)  # key id -> label
        self.attempts: Mapping[str, AttemptKeys] = {}  # filled by `feed_record` (then a PackedAttempts), or given
        self._packed = PackedAttempts()
        self._current: tuple[Any, AttemptKeys | None] = (None, None)  # the attempt feed_record is keying
        self._cache: dict[tuple[str, bytes], int] = {}
        self.state_mode = options.key == "state"
        self.ignore_read_only = options.ignore_read_only
        self.decisions = options.fork == "decision" and options.key == "action"
        self.read_only_ids: set[int] = set()  # action ids of the read-only calls seen (the decision rule's lookups)
        self.include_user = options.include_user
        self.include_model = options.include_model
        self.collapse = options.collapse_repeats

    def intern(self, key: str) -> int:
        i = self.vocab.get(key)
        if i is None:
            i = self.vocab[key] = len(self.vocab)
            self.labels.append(key)
        return i

    def action_id(self, tool: str, args: Any) -> int:
        raw = raw_args(args)
        i = self._cache.get((tool, raw))
        if i is None:
            # kept as a compact copy: the bytes orjson returns hold on to its ~4 KB write buffer
            i = self._cache[(tool, bytes(memoryview(raw)))] = self.intern(action_label(tool, args))
        return i

    def feed_record(self, ev: Mapping[str, Any]) -> None:
        """Add a step record of the log (records of each attempt must come in step order);
        `finish` once the last is fed."""
        attempt, tk = self._current
        if tk is None or attempt != ev["attempt"]:
            attempt = ev["attempt"]
            tk = self._packed.open(attempt)
            self._current = (attempt, tk)
            self.attempts = self._packed
        self.feed(tk, ev)

    def feed_attempt(self, attempt: str, events: Sequence[Mapping[str, Any]]) -> None:
        """Add an attempt's step records (in step order) at once."""
        tk = self._packed.open(attempt)
        self._current = (attempt, tk)
        self.attempts = self._packed
        for ev in events:
            self.feed(tk, ev)

    def finish(self) -> None:
        """Pack the attempt `feed_record` keyed last."""
        self._packed.close()
        self._current = (None, None)

    def feed(self, tk: AttemptKeys, ev: Mapping[str, Any]) -> None:
        """Add one logged event of the attempt (events must come in step order). Runs once per
        step of the log: the tool call, the common case, is keyed inline."""
        pos = tk.events
        tk.events = pos + 1
        get = ev.get
        kind = get("kind")
        if kind == "tool":
            tk.calls.append(get("step", pos))
            key = self._tool_key(tk, ev)
        elif kind == "user":
            tk.calls.append(get("step", pos))
            # a user step is ask_user in a native run; an import may hold a user-side tool call
            # (τ² telecom: the simulated user toggles a setting), keyed by its own tool name
            tool = str(get("tool") or "ask_user")
            key = self.action_id(tool, get("args")) if self.include_user else None
        elif kind == "model" and self.include_model and not self.state_mode:
            key = self.intern(model_label(get("output")))
        else:
            return
        if key is not None:
            tk.keys.append(key)
            tk.where.append(pos)

    def _tool_key(self, tk: AttemptKeys, ev: Mapping[str, Any]) -> int | None:
        """The key of a tool call, or None when the options make it no node."""
        get = ev.get
        tool, args = str(get("tool")), get("args")
        try:  # `action_id`, its cache hit inline
            action = self._cache.get((tool, orjson.dumps(args, option=_DUMPS_OPT)))  # raw_args's fast path
        except TypeError:
            action = None
        if action is None:
            action = self.action_id(tool, args)
        tk.actions.append(action)
        read_only = read_only_of(ev)
        if read_only:
            self.read_only_ids.add(action)
            if self.ignore_read_only:
                return None
        if self.state_mode:
            state = get("state_hash")
            changed = not read_only and get("error") is None and state != tk.last_state
            tk.last_state = state
            return self.intern("state:" + str(state)) if changed and state is not None else None
        if read_only and self.collapse and tk.keys and tk.keys[-1] == action:
            return None  # a no-op: the same read again on the same state
        return action

    def lookups(self, tk: AttemptKeys) -> list[bool]:
        """Which of an attempt's keys are lookups (read-only calls)."""
        return [k in self.read_only_ids for k in tk.keys]

    def keys(self, events: Sequence[Mapping[str, Any]]) -> AttemptKeys:
        tk = AttemptKeys()
        for ev in events:
            self.feed(tk, ev)
        return tk


def step_keys(events: Sequence[Mapping[str, Any]], options: DivergenceOptions | None = None) -> list[str]:
    """The canonical keys of one trial's logged step events (see the module docstring)."""
    vocab: dict[str, int] = {}
    keyer = Keyer(options or DivergenceOptions(), vocab)
    tk = keyer.keys(events)
    keys = decisions_of(tk, keyer, writes_anywhere([keyer.lookups(tk)]))[0] if keyer.decisions else tk.keys
    labels = list(vocab)
    return [labels[i] for i in keys]



class Numbering:
    """Keyer ids -> corpus ids, numbered in order of first appearance in the corpus (task by
    task, reference first), with the label of each corpus id. Ties between equal nodes fall to
    the lower id, so this keeps the analysis independent of the order in which the log lists its
    steps (concurrent trials interleave) and of keys the corpus leaves out. Shared by the chunks
    of one run (`corpora_of_run`), so that an id means the same key in all of them."""

    def __init__(self, keyer_labels: list[str]):
        self.ids: dict[int, int] = {0: 0}  # END is 0 in both
        self.labels: list[str] = [END]  # corpus id -> label
        self._keyer_labels = keyer_labels
        self._map = np.full(max(1, len(keyer_labels)), -1, dtype=np.int64)  # keyer id -> corpus id, -1: none yet
        self._map[0] = 0

    def renumber(self, keys: list[int]) -> list[int]:
        return self.renumber_array(np.asarray(keys, dtype=np.int64)).tolist()

    def renumber_array(self, keys: np.ndarray) -> np.ndarray:
        """`renumber` of a whole sequence at once: the keys not seen before get the next ids in
        order of their first position."""
        if not keys.size:
            return keys.copy()
        top = int(keys.max())
        if top >= self._map.size:
            grown = np.full(max(top + 1, 2 * self._map.size), -1, dtype=np.int64)
            grown[:self._map.size] = self._map
            self._map = grown
        out = self._map[keys]
        new = out < 0
        if new.any():
            uniq, first = np.unique(keys[new], return_index=True)
            fresh = uniq[np.argsort(first, kind="stable")]
            self._map[fresh] = np.arange(len(self.labels), len(self.labels) + fresh.size)
            for k in fresh.tolist():
                self.ids[k] = len(self.labels)
                self.labels.append(self._keyer_labels[k])
            out = self._map[keys]
        return out


class Corpus:
    def __init__(self, numbering: Numbering | None = None) -> None:
        self.vocab: dict[str, int] = {END: 0}  # `intern`ed labels (`corpus_of_tasks`)
        self.labels: list[str] = [END]  # corpus id -> label
        self.task_ids: list[str] = []
        self.references: list[list[int] | None] = []
        self.milestones: list[list[str]] = []
        self.trial_ids: list[str] = []
        self.trial_task: list[int] = []
        self.success: list[bool] = []
        self.keys: list[list[int]] = []
        self.steps: list[list[int]] = []
        self.trial_milestones: list[dict[str, int | None] | None] = []
        self.tool_calls: list[int] | np.ndarray = []
        # a corpus of a run holds its keys flat (`corpora_of_run`): `keys` and `steps` stay empty,
        # `flat` holds them end to end (corpus ids), `raw_flat` the raw sequences, and
        # `milestone_at` each task's milestone table instead of `trial_milestones`
        self.flat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (lengths, keys, steps)
        self.raw_flat: tuple[np.ndarray, np.ndarray] | None = None  # (offsets, raw keys)
        # per task: names, its first trial's number, (trials × names) tool-call index reaching each, -1 none
        self.milestone_at: list[tuple[list[str], int, np.ndarray]] = []
        # the decision rule's context (fork="decision"): every trial's tool calls, lookups included,
        # and which of their ids are lookups; empty otherwise
        self.raw: list[list[int]] = []
        self.read_only: set[int] = set()
        self.writes: list[bool] = []  # per task: `writes_anywhere`
        self.numbering = numbering
        if numbering is not None:
            self.labels = numbering.labels

    def n_keys(self) -> int:
        """How many keys the corpus holds (its size in memory: ~30 bytes a key)."""
        return int(self.flat[0].sum()) if self.flat is not None else sum(map(len, self.keys))

    def has_raw(self) -> bool:
        """Whether the decision rule's raw sequences are held (fork="decision")."""
        return bool(self.raw) or self.raw_flat is not None

    def raw_of(self, trial: int) -> list[int]:
        """A trial's raw sequence: its tool calls, lookups included (fork="decision")."""
        if self.raw_flat is None:
            return self.raw[trial]
        offsets, raw = self.raw_flat
        return raw[offsets[trial]:offsets[trial + 1]].tolist()

    def milestone_table(self, t: int, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Task t's milestone names (the suite's, else those its trials reached, sorted) and, for
        its trials `rows` (corpus trial numbers), the tool-call index reaching each, -1 none."""
        names = list(self.milestones[t])
        if self.milestone_at:
            have, first, at = self.milestone_at[t]
            local = rows - first
            names = names or sorted(have)
            col = {name: i for i, name in enumerate(have)}
            out = np.full((len(rows), len(names)), -1, dtype=np.int64)
            for j, name in enumerate(names):
                if name in col:
                    out[:, j] = at[local, col[name]]
            return names, out
        reached = [self.trial_milestones[tr] for tr in rows.tolist()]
        names = names or sorted({m for r in reached if r for m in r})
        out = np.array([[-1 if (r or {}).get(name) is None else int((r or {})[name]) for name in names] for r in reached],
                       dtype=np.int64).reshape(len(reached), len(names))
        return names, out

    def renumber(self, keys: list[int]) -> list[int]:
        """Keyer ids as corpus ids (`Numbering`)."""
        assert self.numbering is not None, "a corpus of a run numbers keyer ids"
        return self.numbering.renumber(keys)

    def intern(self, keys: Sequence[str]) -> list[int]:
        vocab = self.vocab
        out = []
        for k in keys:
            i = vocab.get(k)
            if i is None:
                i = vocab[k] = len(vocab)
                self.labels.append(k)
            out.append(i)
        return out


def corpus_of_tasks(tasks: Sequence[TaskTrials], decisions: bool = False) -> Corpus:
    """A corpus of already-keyed trials (`bench.analysis.divergence.section.analyse`). With
    `decisions` (fork="decision"), keys a trial flags read-only are lookups, left out of its
    keys in a task with writes (`writes_anywhere`) and kept in its raw sequence for the context;
    the task's reference is taken as given."""
    corpus = Corpus()
    tool_calls: list[int] = []
    for task in tasks:
        t = len(corpus.task_ids)
        corpus.task_ids.append(task.task)
        corpus.references.append(None if task.reference is None else corpus.intern(task.reference))
        corpus.milestones.append(list(task.milestones))
        flags = [trial.read_only or [False] * len(trial.keys) for trial in task.trials]
        writes = writes_anywhere(flags)
        corpus.writes.append(writes)
        for trial, lookup in zip(task.trials, flags):
            corpus.trial_ids.append(trial.trial)
            corpus.trial_task.append(t)
            corpus.success.append(bool(trial.success))
            raw = corpus.intern(trial.keys)
            steps = list(trial.steps) if trial.steps is not None else list(range(len(trial.keys)))
            if decisions:
                corpus.read_only.update(k for k, ro in zip(raw, lookup) if ro)
                corpus.raw.append(raw)
                kept = decision_positions(lookup, writes)
                raw, steps = [raw[i] for i in kept], [steps[i] for i in kept]
            corpus.keys.append(raw)
            corpus.steps.append(steps)
            corpus.trial_milestones.append(trial.milestones)
            tool_calls.append(trial.tool_calls if trial.tool_calls is not None else len(trial.keys))
    corpus.tool_calls = tool_calls
    return corpus


def decisions_of(tk: AttemptKeys, keyer: Keyer, writes: bool) -> tuple[list[int], list[int]]:
    """An attempt's decision keys and their event positions (`decision_positions`)."""
    kept = decision_positions(keyer.lookups(tk), writes)
    return [tk.keys[i] for i in kept], [tk.where[i] for i in kept]


def reference_keys(suite: Suite, task: Task, keyer: Keyer) -> AttemptKeys:
    """The task's reference actions keyed like the trials (replayed, for read-only flags and
    state hashes)."""
    tk = AttemptKeys()
    world = suite.new_world(task)
    for i, action in enumerate(task.reference_actions):
        if action.tool == "ask_user":
            keyer.feed(tk, {"kind": "user", "step": i, "tool": "ask_user", "args": action.args, "read_only": True,
                            "state_hash": world.state_hash})
            continue
        outcome = world.execute(action.tool, action.args)
        keyer.feed(tk, {"kind": "tool", "step": i, "tool": action.tool, "args": action.args,
                        "read_only": outcome.read_only, "state_hash": outcome.state_hash})
    return tk


def corpus_of_run(run: KeyedRun, suite: Suite | None, pool_variants: bool = False) -> Corpus:
    """Group the valid trials by task (manifest order), with each trial's keys and the task's
    reference from the suite. Like the report's headline figures, only trials on the
    unperturbed inputs count unless `pool_variants`."""
    return next(corpora_of_run(run, suite, pool_variants))


def corpora_of_run(run: KeyedRun, suite: Suite | None, pool_variants: bool = False,
                   chunk_trials: int | None = None) -> Iterator[Corpus]:
    """`corpus_of_run` in chunks of whole tasks of about `chunk_trials` trials (a task is never
    split; None: one chunk), numbered alike (`Numbering`), built one at a time: the analysis of a
    million trials holds one chunk's keys and arrays, not the suite's. Every task's reference is
    keyed first, so which calls are lookups (`Keyer.read_only_ids`) is settled before any
    trial is: a chunk reads the same wherever the run's chunks begin, and when built again.
    The trials come from the run's `TrialTable` (its summaries read once), their keys from the
    packed attempts with numpy (`PackedAttempts.gather`)."""
    numbering = Numbering(run.keyer.labels)
    references = _references(run, suite, pool_variants)
    chunk: list[TaskRows] = []
    size = 0
    for rows in run.trial_table(pool_variants).tasks:
        if chunk_trials is not None and chunk and size + len(rows.trials) > chunk_trials:
            yield _chunk_corpus(run, chunk, references, numbering)
            chunk, size = [], 0
        chunk.append(rows)
        size += len(rows.trials)
    yield _chunk_corpus(run, chunk, references, numbering)


def _chunk_corpus(run: KeyedRun, tasks: list[TaskRows], references: dict[str, tuple[AttemptKeys, list[str]]],
                  numbering: Numbering) -> Corpus:
    """One chunk's corpus (`corpora_of_run`), its sequences as flat arrays."""
    keyer = run.keyer
    raw_too = run.options.fork == "decision"
    c = Corpus(numbering)
    handles = [h for rows in tasks for h in rows.handles]
    attempts = keyer.attempts
    ka = attempts.gather(handles) if isinstance(attempts, PackedAttempts) else KeyArrays.of(
        [AttemptKeys() if h is None else attempts[str(h)] for h in handles])  # keys given as a plain mapping
    n_trials = np.array([len(rows.trials) for rows in tasks], dtype=np.int64)
    trial_task = np.repeat(np.arange(len(tasks)), n_trials)
    key_task = np.repeat(trial_task, ka.n_keys)
    ro = np.zeros(max(len(keyer.labels), 1), dtype=bool)
    ro[list(keyer.read_only_ids)] = True
    lookup = ro[ka.keys]
    writes = np.bincount(key_task[~lookup], minlength=len(tasks)) > 0  # `writes_anywhere` of its trials ...
    refs: list[list[int] | None] = []
    for t, rows in enumerate(tasks):
        ref_keys, names = references.get(rows.task, (None, []))
        if ref_keys is not None and not writes[t]:
            writes[t] = writes_anywhere([keyer.lookups(ref_keys)])  # ... or of its reference
        c.task_ids.append(rows.task)
        c.milestones.append(names)
        refs.append(None if ref_keys is None else
                    (decisions_of(ref_keys, keyer, bool(writes[t]))[0] if keyer.decisions else ref_keys.keys))
    c.writes = writes.tolist()
    keep = ~(writes[key_task] & lookup) if keyer.decisions else np.ones(ka.keys.size, dtype=bool)
    keys, steps = ka.keys[keep], ka.where[keep]
    key_trial = np.repeat(np.arange(trial_task.size), ka.n_keys)[keep]
    n_keys = np.bincount(key_trial, minlength=trial_task.size)
    # renumber in order of first appearance: per task its reference, then per trial its keys
    # (and its raw tool calls, fork="decision"), as the corpus lists them
    ref_len = np.array([0 if r is None else len(r) for r in refs], dtype=np.int64)
    per_trial = n_keys + (ka.n_actions if raw_too else 0)
    task_len = ref_len + np.bincount(trial_task, weights=per_trial, minlength=len(tasks)).astype(np.int64)
    task_at = np.cumsum(task_len) - task_len  # where each task's reference begins
    trial_at = (np.cumsum(per_trial) - per_trial) + np.cumsum(ref_len)[trial_task]
    seq = np.zeros(int(task_len.sum()), dtype=np.int64)
    ref_flat = np.fromiter(chain.from_iterable(r or [] for r in refs), dtype=np.int64, count=int(ref_len.sum()))
    seq[np.repeat(task_at, ref_len) + positions_within(ref_len)] = ref_flat
    key_pos = np.repeat(trial_at, n_keys) + positions_within(n_keys)
    seq[key_pos] = keys
    if raw_too:
        seq[np.repeat(trial_at + n_keys, ka.n_actions) + positions_within(ka.n_actions)] = ka.actions
    ids = numbering.renumber_array(seq)
    for t, r in enumerate(refs):
        c.references.append(None if r is None else ids[task_at[t]:task_at[t] + ref_len[t]].tolist())
    c.flat = (n_keys, ids[key_pos], steps)
    if raw_too:
        raw_pos = np.repeat(trial_at + n_keys, ka.n_actions) + positions_within(ka.n_actions)
        c.raw_flat = (np.concatenate([[0], np.cumsum(ka.n_actions)]), ids[raw_pos])
    c.tool_calls = ka.n_calls
    c.trial_task = trial_task.tolist()
    for rows in tasks:
        c.trial_ids.extend(rows.trials)
        c.success.extend(rows.success.tolist())
    _milestone_tables(c, tasks, ka)
    return _closed(c, run)


_INT32 = 1 << 31


def _milestone_tables(c: Corpus, tasks: list[TaskRows], ka: KeyArrays) -> None:
    """Each task's milestones as the tool-call index of the event reaching them (`bisect_left`
    of the summary's step among the attempt's call steps), -1 where none."""
    if not tasks:
        return
    call_trial = np.repeat(np.arange(ka.n_calls.size), ka.n_calls)
    shifted = (ka.calls + _INT32) + call_trial * (_INT32 << 2)  # each trial's call steps in a band of their own
    call_at = np.cumsum(ka.n_calls) - ka.n_calls
    ordered = bool(np.all(np.diff(shifted) >= 0)) if shifted.size > 1 else True
    first = 0
    for rows in tasks:
        at = rows.milestones
        trial = first + np.arange(at.shape[0])[:, None]
        reached = at != NOT_REACHED
        if ordered:
            target = np.clip(at, -_INT32, _INT32) + _INT32 + trial * (_INT32 << 2)
            index = np.searchsorted(shifted, target, side="left") - call_at[trial]
        else:  # call steps out of order (an import): bisect each trial's own list, as before
            index = np.array([[bisect_left(ka.calls[call_at[tr]:call_at[tr] + ka.n_calls[tr]].tolist(), int(x))
                               for x in row] for tr, row in zip(trial[:, 0].tolist(), at.tolist())],
                             dtype=np.int64).reshape(at.shape)
        c.milestone_at.append((rows.milestone_names, first, np.where(reached, index, -1)))
        first += len(rows.trials)


def _references(run: KeyedRun, suite: Suite | None, pool_variants: bool) -> dict[str, tuple[AttemptKeys, list[str]]]:
    """task -> its reference actions keyed (`reference_keys`) and its milestone names, for the
    run's tasks that the suite still holds."""
    out: dict[str, tuple[AttemptKeys, list[str]]] = {}
    if suite is None:
        return out
    for task_id in run.log.task_ids(base_only=not pool_variants, valid_only=True):
        try:
            task = suite.task(task_id)
        except Exception:  # noqa: BLE001 - the task left the suite: no reference for it
            continue
        out[task_id] = (reference_keys(suite, task, run.keyer), [m["name"] for m in task.milestones])
    return out


def _closed(c: Corpus, run: KeyedRun) -> Corpus:
    ids = c.numbering.ids if c.numbering is not None else {}
    c.read_only = {ids[k] for k in run.keyer.read_only_ids if k in ids}
    return c


NOT_REACHED = np.iinfo(np.int64).min  # a milestone's step in `TaskRows.milestones` when the trial did not reach it


@dataclass
class TaskRows:
    """What the divergence analysis reads of one task's valid trials' summaries, in the order it
    lists them (variant, index, trial id): their ids, their attempts' `PackedAttempts` handles,
    outcomes, and the step at which each reached each milestone its trials name."""

    task: str
    trials: list[str]
    handles: list[int | str | None]
    success: np.ndarray
    milestone_names: list[str]
    milestones: np.ndarray  # (trials × names) step, NOT_REACHED where none

    @classmethod
    def of(cls, task: str, summaries: list[TrialSummary], attempts: Mapping[str, AttemptKeys]) -> TaskRows:
        rows = sorted(summaries, key=lambda s: (str(s.get("variant", "")), s.get("index", 0), s["trial"]))
        handle = attempts.handle_of if isinstance(attempts, PackedAttempts) else (lambda a: a if a in attempts else None)
        names: dict[str, int] = {}
        reached = []
        for r in rows:
            got = r.get("milestones") or {}
            for name in got:
                names.setdefault(name, len(names))
            reached.append(got)
        at = np.full((len(rows), len(names)), NOT_REACHED, dtype=np.int64)
        for i, got in enumerate(reached):
            for name, step in got.items():
                if step is not None:
                    at[i, names[name]] = int(step)
        return cls(task, [r["trial"] for r in rows], [handle(r["attempt"]) for r in rows],
                   np.array([r["outcome"] == "success" for r in rows], dtype=bool), list(names), at)


@dataclass
class TrialTable:
    """The trials the divergence analysis counts, task by task (`TaskRows`): read from the
    summaries once, then walked by both passes of `divergence_section` without reading a
    summary again. ~20 bytes a trial besides its id (shared with the run's index)."""

    tasks: list[TaskRows] = field(default_factory=list)


@dataclass
class KeyedRun:
    """A run with the steps of each attempt keyed (`read_keyed`, `key_parsed`): all that the
    report and the divergence analysis need of the steps."""

    log: RunLog  # from `read_keyed`, without step records: they were keyed as read, then dropped
    options: DivergenceOptions
    keyer: Keyer
    tables: dict[bool, TrialTable] = field(default_factory=dict)  # pool_variants -> `trial_table`, once built

    def trial_table(self, pool_variants: bool = False) -> TrialTable:
        """The valid trials on the base inputs (every input too with `pool_variants`), task by
        task; read once (or handed over by the report, which reads the same summaries)."""
        table = self.tables.get(pool_variants)
        if table is None:
            table = self.tables[pool_variants] = TrialTable([
                TaskRows.of(task, rows, self.keyer.attempts)
                for task, rows in self.log.by_task(base_only=not pool_variants, valid_only=True)])
        return table

    def keys(self, summary: TrialSummary) -> AttemptKeys:
        """The keys of the attempt behind a trial summary (none if it logged no steps)."""
        return self.keyer.attempts.get(summary["attempt"]) or AttemptKeys()

    def actions(self, summary: TrialSummary) -> Sequence[int]:
        """The trial's tool calls as key ids (equal calls, equal ids), in log order."""
        attempts = self.keyer.attempts
        if isinstance(attempts, PackedAttempts):
            return attempts.actions_of(attempts.handle_of(summary["attempt"]))
        return self.keys(summary).actions


def read_keyed(run_dir: str | Path, options: DivergenceOptions | None = None, *, index: bool = True) -> KeyedRun:
    """Read a run directory, keying each step (`bench.runs.rundir.read_run`'s reading rules: a
    torn last line is skipped, the first summary of a trial counts, steps of attempts without a
    summary are ignored). With `index` (the default) from the run's verified index
    (`bench.runs.runindex`: columns, keyed with numpy, no line parsed), rebuilt from the log if
    it is missing or stale; without it (`verify`, which trusts no derived file), or when the log
    holds what the index cannot represent, from the log in one pass, keying each step as it is
    read and keeping none. Both give the same keys."""
    o = options or DivergenceOptions()
    if index:
        found = read_indexed(run_dir)
        if found is not None:
            log, columns = found
            try:
                return KeyedRun(log, o, keyer_of_columns(columns, o))
            except IndexStale:  # its section of state hashes is damaged (read only now): rebuilt
                found = read_indexed(run_dir, rebuild=True)
                if found is not None:
                    return KeyedRun(found[0], o, keyer_of_columns(found[1], o))
    keyer = Keyer(o, {END: 0})
    log = read_run(run_dir, on_step=keyer.feed_record)
    keyer.finish()
    return KeyedRun(log, o, keyer)


def keyer_of_columns(c: Columns, options: DivergenceOptions) -> Keyer:
    """The `Keyer` that `Keyer.feed_record` over the log's steps gives, from the run index's
    columns: the same keys, event positions, calls, actions and read-only ids per attempt (the
    rules of `Keyer.feed`, as array operations), packed alike. Key ids differ from the reading
    pass's when the options leave some calls out (every call's key is in the vocabulary here),
    which no output depends on: the analysis renumbers keys by first appearance (`Numbering`).
    Lean in temporaries (int32, boolean masks): fresh memory is what this costs most."""
    import numpy as np

    vocab: dict[str, int] = {END: 0}
    for text in c.labels:
        vocab.setdefault(text, len(vocab))
    keyer = Keyer(options, vocab)
    kid = np.fromiter((vocab[text] for text in c.labels), dtype=np.int32, count=len(c.labels))
    kid = np.concatenate((np.array([-1], dtype=np.int32), kid))  # label -1 (no call) -> -1
    # the steps, grouped by attempt (in order of first appearance), each attempt's in log order
    has = c.nsteps > 0
    ids = [a for a, h in zip(c.attempts, has.tolist()) if h]
    counts = c.nsteps[has].astype(np.int64)
    flags, step, label = c.flags, c.step, c.label
    state_of = _state_keys(c, keyer) if options.key == "state" else None
    if len(set(ids)) < len(ids):  # an attempt written in pieces (an old log's interleaved attempts)
        number: dict[str, int] = {}
        entry_att = np.fromiter((number.setdefault(a, len(number)) for a in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(np.repeat(entry_att, counts), kind="stable")
        flags, step, label = flags[order], step[order], label[order]
        state_of = state_of[order] if state_of is not None else None
        ids = list(number)
        counts = np.bincount(entry_att, weights=counts, minlength=len(ids)).astype(np.int64)
    # in chunks of whole attempts: each chunk's temporaries reuse the memory the last one freed
    # (fresh memory, page-faulted in, is what array work on ten million steps costs most)
    starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    packed = PackedAttempts()
    offsets: list[Any] = []
    read_only: set[int] = set()
    for a0 in range(0, len(ids), KEY_CHUNK):
        a1 = min(a0 + KEY_CHUNK, len(ids))
        s0, s1 = int(starts[a0]), int(starts[a1])
        part = key_chunk(flags[s0:s1], step[s0:s1], kid[label[s0:s1] + 1],
                          None if state_of is None else state_of[s0:s1], counts[a0:a1], options)
        offsets.append(part[1] + len(packed._data))
        packed._data.frombytes(part[0].view(np.uint8).data)
        read_only |= part[2]
    keyer.read_only_ids = read_only
    packed._at = dict(zip(ids, np.concatenate(offsets).tolist() if offsets else []))
    keyer.attempts = keyer._packed = packed
    return keyer


KEY_CHUNK = 1 << 16  # attempts keyed at once by `keyer_of_columns`


def _state_keys(c: Columns, keyer: Keyer) -> Any:
    """key="state": per step the key id of "state:" + its state hash (-1: no state)."""
    import numpy as np

    states = c.states()
    sid = np.full(len(c.flags), -1, dtype=np.int32)
    if states:
        uniq, inverse = np.unique(np.array(states, dtype=object).astype(str), return_inverse=True)
        skid = np.fromiter((keyer.intern("state:" + str(u)) for u in uniq.tolist()), dtype=np.int32, count=len(uniq))
        sid[(c.flags & HAS_STATE) != 0] = skid[inverse.reshape(-1)]
    return sid


def key_parsed(log: RunLog, options: DivergenceOptions | None = None) -> KeyedRun:
    """Key the steps of a run already read with `read_run`."""
    o = options or DivergenceOptions()
    keyer = Keyer(o, {END: 0})
    for attempt, events in log.steps.items():  # one attempt's records at a time, keyed into the packed store
        keyer.feed_attempt(attempt, events)
    keyer.finish()
    return KeyedRun(log, o, keyer)

