"""The run directory: `run.json` (the manifest) and `trajectories.jsonl` (the append-only log).

The log holds, in order of occurrence, `step` events (each tagged with its trial and attempt),
`attempt_error` records (an attempt lost to infrastructure, to be retried) and one `trial`
summary per finished trial. A trial without a summary is unfinished: resume runs it again under
a new attempt id, and the orphaned steps of the old attempt are ignored by every reader.
A torn last line (the process was killed mid-write) is tolerated: readers skip it and report it;
the writer cuts it off before appending (the physical layer: bench/runs/logfile.py).

Two rules every reader shares live here, so that report, diff, divergence, leaderboard and
replay can never disagree: which trials count (`RunLog.counted`: valid outcomes on the
unperturbed input; infrastructure errors count in no figure), and how a run's suite is
reopened (`suite_of_run`). The records' shapes are `Manifest`, `StepEvent` and `TrialSummary`:
types for the checker only — nothing validates them on the reading path, which must stay fast.
"""

from __future__ import annotations

import gc
import os
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, TypedDict

from bench.canonical import dump_document, load_document, load_line
from bench.errors import BenchError
from bench.runs.logfile import LOG as LOG  # re-exported: its import path before logfile.py
from bench.runs.logfile import LogFile, log_path, log_records
from bench.runs.shape import manifest_problem
from bench.world.overlay import apply_run_overlay
from bench.world.suite import Suite, load_suite
from bench.world.variants import BASE

MANIFEST = "run.json"
VALID_OUTCOMES = ("success", "failure")  # `error` (infrastructure) trials are reported, never scored


class Manifest(TypedDict, total=False):
    """`run.json` (bench/schemas/run.schema.json)."""

    run_id: str
    harness_version: str
    created_at: str
    suite: dict[str, Any]  # name, hash, path
    agent: dict[str, Any]  # name, adapter, target, options, source, hash, simulated
    k: int
    base_seed: int
    tasks: list[str]
    perturbations: list[dict[str, Any]]
    max_steps: int
    timeout_s: float
    tool_schema_hashes: dict[str, str]
    overlay: dict[str, Any] | None
    host: dict[str, str]
    source: dict[str, Any]  # absent (native) or {"kind": "import", ...}: bench/imports
    design: dict[str, Any]  # absent (fixed k) or a sequential design and its progress: bench/runs/design.py


class StepEvent(TypedDict, total=False):
    """A `step` record of the log: a tool call, an ask_user turn or a model turn."""

    type: str
    trial: str
    attempt: str
    step: int
    kind: str  # tool, user or model
    tool: str
    args: Any
    observation: Any
    error: str | None
    read_only: bool
    state_hash: str
    t_start: float
    t_end: float
    model: str | None
    messages: Any
    output: Any
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float | None
    cost: float | None


class TrialSummary(TypedDict, total=False):
    """A `trial` record: one finished trial (bench/schemas/trajectory-record.schema.json)."""

    type: str
    trial: str  # TASK/VARIANT/INDEX
    attempt: str
    task: str
    variant: str
    variant_family: str
    variant_params: dict[str, Any]
    instruction: str
    index: int
    seed: int
    started_at: float
    attempts: int
    outcome: str  # success, failure or error
    reason: str | None
    checks: dict[str, dict[str, Any]]
    milestones: dict[str, int | None]
    final_state_hash: str
    answer: str | None
    steps: int
    events: int
    input_tokens: int
    output_tokens: int
    cost: float
    duration_s: float
    agent_info: dict[str, Any]


def variant_family(summary: Mapping[str, Any]) -> str:
    """The trial's input-variant family (`base`: the task's own, unperturbed input)."""
    return summary.get("variant_family", BASE)


def is_valid(summary: Mapping[str, Any]) -> bool:
    """Does the trial count in the figures? Only success and failure do."""
    return summary.get("outcome") in VALID_OUTCOMES


class StepIndex(Mapping[str, list[StepEvent]]):
    """attempt id -> its step records, read from the log when asked for, never held: what the
    reading pass keeps of a step is where its line lies (byte spans, one per run of adjacent
    lines of the same attempt: one span per attempt in a log written by `LogWriter`, which
    writes an attempt's lines together). So verify, diff and export stream the steps trial by
    trial, and their memory does not grow with the log."""

    def __init__(self, log: LogFile, spans: dict[str, int | list[int]]):
        self._log = log
        self._spans = spans  # attempt -> `add_span`'s packed span, or [start0, end0, start1, end1, ...] in log order

    def __getitem__(self, attempt: str) -> list[StepEvent]:
        spans, read, loads = self._spans[attempt], self._log.read, load_line  # an escaped line too
        if isinstance(spans, int):
            spans = _unpacked(spans)
        out: list[Any] = []
        for i in range(0, len(spans), 2):
            out.extend(loads(line) for line in read(spans[i], spans[i + 1]).splitlines())
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def __contains__(self, attempt: object) -> bool:
        return attempt in self._spans


_LOW32 = 0xFFFFFFFF


def add_span(spans: dict[str, int | list[int]], key: str, start: int, end: int) -> None:
    """Record that a line of `key` lies at [start, end): one int `start << 32 | length` while the
    key's lines are adjacent and shorter than 4 GB together (an attempt written in one write: ~40
    bytes instead of a list's ~140), else a list of (start, end) pairs."""
    where = spans.get(key)
    if where is None:
        spans[key] = start << 32 | (end - start) if end - start <= _LOW32 else [start, end]
        return
    if isinstance(where, int):
        first = where >> 32
        if first + (where & _LOW32) == start and end - first <= _LOW32:  # adjacent to the previous line
            spans[key] = first << 32 | (end - first)
            return
        where = spans[key] = _unpacked(where)
    if where[-1] == start:
        where[-1] = end
    else:
        where += (start, end)


def _unpacked(span: int) -> list[int]:
    start = span >> 32
    return [start, start + (span & _LOW32)]


class TrialCore(NamedTuple):
    """What the reading pass keeps of a trial summary besides where its line lies: enough to
    group and filter trials without reading their summaries again (`SummaryIndex.cores`)."""

    task: str  # the summary's task (its repr if it is not a string)
    family: str  # variant_family
    valid: bool  # `is_valid`: the trial counts in the figures


class SummaryIndex(Mapping[str, TrialSummary]):
    """trial id -> its summary (the first one logged), read from the log when asked for: a
    parsed summary is ~3.5 KB of Python objects, a million of them would not fit. What is kept
    per trial is its row number and, in columns in that order, where its line lies and its
    `TrialCore` (a task and a family number, a valid flag): ~100 bytes with the trial's id. Each
    lookup parses the line again and returns a fresh dict. Built record by record (`add`, the
    reading pass) or from the run index's columns at once (`from_columns`)."""

    def __init__(self, log: LogFile) -> None:
        self._log = log
        self._rows: dict[str, int] = {}  # trial -> its row, in log order
        self._hi = array("Q")  # per row: its summary's position >> 32, & 0xFFFFFFFF, its length
        self._lo = array("I")
        self._len = array("I")
        self._task = array("i")  # per row: index into _names
        self._family = array("i")
        self._valid = bytearray()
        self._names: list[str] = []
        self._name_ids: dict[str, int] = {}

    def add(self, rec: Mapping[str, Any], start: int, end: int) -> None:
        """Index a trial's first summary (`read_run`)."""
        if end - start > _LOW32:
            raise BenchError(f"a trial record of {end - start} bytes: larger than a trajbench log holds", field="trial")
        task = rec["task"] if isinstance(rec["task"], str) else repr(rec["task"])
        family = variant_family(rec)
        family = family if isinstance(family, str) else repr(family)
        self._rows[rec["trial"]] = len(self._rows)
        self._hi.append(start >> 32)
        self._lo.append(start & _LOW32)
        self._len.append(end - start)
        self._task.append(self._name_id(task))
        self._family.append(self._name_id(family))
        self._valid.append(is_valid(rec))

    @classmethod
    def from_columns(cls, log: LogFile, trials: list[str], is_trial: Any, hi: Any, lo: Any, length: Any, task: Any,
                     family: Any, valid: Any, names: list[str]) -> tuple[SummaryIndex, list[str], list[int]]:
        """The index of the summaries among `trials` (per entry of bench.runs.runindex's columns:
        numpy arrays, `is_trial` the entries that are summaries, task and family numbers into
        `names`): the first summary of each trial counts, as in `add`. Returns it, the trials
        summarised again (in log order) and the entries it kept."""
        import numpy as np

        out = cls(log)
        rows = np.flatnonzero(is_trial)
        ids = [trials[i] for i in rows.tolist()]
        first = dict(zip(ids, range(len(ids))))  # the last row of each trial: see below
        duplicates: list[str] = []
        if len(first) < len(ids):  # a trial summarised twice (rare): keep its first row
            first, seen = {}, set()
            for j, t in enumerate(ids):
                if t in seen:
                    duplicates.append(t)
                else:
                    seen.add(t)
                    first[t] = j
            rows = rows[np.fromiter(first.values(), dtype=np.int64, count=len(first))]
            first = {t: j for j, t in enumerate(first)}
        out._rows = first
        out._hi.frombytes(hi[rows].astype("<u8").tobytes())
        out._lo.frombytes(lo[rows].astype("<u4").tobytes())
        out._len.frombytes(length[rows].astype("<u4").tobytes())
        out._task.frombytes(task[rows].astype(np.int32).tobytes())
        out._family.frombytes(family[rows].astype(np.int32).tobytes())
        out._valid = bytearray(valid[rows].astype(np.uint8).tobytes())
        out._names = list(names)
        out._name_ids = {name: i for i, name in enumerate(names)}
        return out, duplicates, rows.tolist()

    def _name_id(self, name: str) -> int:
        i = self._name_ids.get(name)
        if i is None:
            i = self._name_ids[name] = len(self._names)
            self._names.append(name)
        return i

    def cores(self) -> Iterator[tuple[str, TrialCore]]:
        """(trial, its core), in log order."""
        names = self._names
        for trial, task, family, valid in zip(self._rows, self._task, self._family, self._valid):
            yield trial, TrialCore(names[task], names[family], bool(valid))

    def span(self, trial: str) -> tuple[int, int]:
        """Where the trial's summary line lies: its positions in the log (`LogFile.read`)."""
        row = self._rows[trial]
        start = self._hi[row] << 32 | self._lo[row]
        return start, start + self._len[row]

    def __getitem__(self, trial: str) -> TrialSummary:
        return load_line(self._log.read(*self.span(trial)))

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, trial: object) -> bool:
        return trial in self._rows


@dataclass
class RunLog:
    """Everything a run directory holds, grouped for the scorers. Summaries and steps are read
    on demand (`SummaryIndex`, `StepIndex`): memory grows with the number of trials by a few
    hundred bytes each, not with the log. To walk many trials, ask for one task at a time
    (`by_task`)."""

    path: Path
    manifest: Manifest
    summaries: SummaryIndex
    steps: Mapping[str, list[StepEvent]]
    attempt_errors: list[dict[str, Any]] = field(default_factory=list)
    duplicate_summaries: list[str] = field(default_factory=list)
    orphan_attempts: int = 0
    torn_bytes: int = 0

    def trial_steps(self, trial_id: str) -> list[StepEvent]:
        """The steps of the attempt that produced the trial's summary, in step order."""
        return self.steps_of(self.summaries[trial_id])

    def steps_of(self, summary: Mapping[str, Any]) -> list[StepEvent]:
        """`trial_steps` of a summary already read."""
        attempt = summary["attempt"]
        return self.steps[attempt] if attempt in self.steps else []

    def _chosen(self, base_only: bool, valid_only: bool) -> Iterator[tuple[str, TrialCore]]:
        for trial, core in self.summaries.cores():
            if (not base_only or core.family == BASE) and (not valid_only or core.valid):
                yield trial, core

    def n_base_trials(self) -> int:
        return sum(1 for _ in self._chosen(True, False))

    def base_trials(self) -> list[TrialSummary]:
        """The trials on the tasks' own, unperturbed input (infrastructure errors included):
        the population of every headline figure. Input variants are reported on their own."""
        return [self.summaries[t] for t, _ in self._chosen(True, False)]

    def counted(self, *, pool_variants: bool = False) -> list[TrialSummary]:
        """The trials the figures count: valid outcomes on the unperturbed input (with
        `pool_variants`, on every input variant too), in log order."""
        return [self.summaries[t] for t, _ in self._chosen(not pool_variants, True)]

    def in_order(self, key: Callable[[TrialSummary], Any]) -> Iterator[TrialSummary]:
        """Every summary, sorted by `key` (stable), read one at a time: only the sort keys are
        held, not the summaries."""
        summaries = self.summaries
        for trial in sorted(summaries, key=lambda t: key(summaries[t])):
            yield summaries[trial]

    def by_task(self, *, base_only: bool = True, valid_only: bool = False) -> Iterator[tuple[str, list[TrialSummary]]]:
        """(task, its trials in log order), one task at a time: the manifest's tasks first, in
        its order, then any other task in order of first appearance; tasks without a chosen
        trial are left out. Only one task's summaries are in memory at once."""
        summaries = self.summaries
        for task, trials in self._groups(base_only, valid_only).items():
            rows = [summaries[t] for t in trials]
            for t, row in zip(trials, rows):
                row["trial"] = t  # the index's copy of the id (an equal string): what rows keep shares it
            yield task, rows

    def task_ids(self, *, base_only: bool = True, valid_only: bool = False) -> list[str]:
        """The tasks `by_task` walks, in its order, without reading a summary."""
        return list(self._groups(base_only, valid_only))

    def _groups(self, base_only: bool, valid_only: bool) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {t: [] for t in self.manifest.get("tasks", []) if isinstance(t, str)}
        for trial, core in self._chosen(base_only, valid_only):
            groups.setdefault(core.task, []).append(trial)
        return {task: trials for task, trials in groups.items() if trials}


@dataclass(frozen=True)
class SuiteNotFound:
    """Why a run's suite could not be reopened: the candidates that failed to load (with why),
    and the suites that loaded but no longer have the run's content hash."""

    failures: tuple[tuple[str, str], ...] = ()
    changed: tuple[Suite, ...] = ()
    run_hash: str | None = None

    def __str__(self) -> str:
        if self.changed:
            suite = self.changed[0]
            return (f"the suite at {suite.path} has changed since the run "
                    f"(hash {suite.content_hash[:12]}, run {str(self.run_hash)[:12]})")
        if self.failures:
            candidate, why = self.failures[0]
            return f"the suite {candidate!r} cannot be loaded ({why})"
        return "the run's manifest names no suite"


def suite_of_run(manifest: Manifest, suite: Suite | str | Path | None = None) -> tuple[Suite | None, SuiteNotFound | None]:
    """The suite a run was made on, with the run's tool overlay re-applied (the tools as its
    agent saw them), or None and why not. Candidates: `suite` if given (a Suite, a folder or a
    built-in name), else the manifest's suite folder if it still exists, then the built-in suite
    of the recorded name. A candidate counts only if its content hash is the run's (when the
    manifest records one): a replay or a reference on a changed suite would prove nothing."""
    info = manifest.get("suite") or {}
    want = info.get("hash")
    if suite is not None:
        candidates: list[Suite | str] = [suite if isinstance(suite, Suite) else str(suite)]
    else:
        candidates = [info["path"]] if info.get("path") and Path(info["path"]).is_dir() else []
        candidates += [info["name"]] if info.get("name") else []
    failures: list[tuple[str, str]] = []
    changed: list[Suite] = []
    for candidate in candidates:
        try:
            found = candidate if isinstance(candidate, Suite) else load_suite(candidate)
        except Exception as exc:  # noqa: BLE001 - a user's suite folder may fail in any way: report it
            failures.append((str(candidate), str(exc)))
            continue
        if want and found.content_hash != want:
            changed.append(found)
            continue
        return apply_run_overlay(found, manifest), None
    return None, SuiteNotFound(tuple(failures), tuple(changed), want)


def enclosing_run(path: str | Path) -> Path | None:
    """The run directory that `path` is, or lies inside, if any (a folder holding `run.json`)."""
    here = Path(path).resolve()
    for folder in (here, *here.parents):
        if (folder / MANIFEST).is_file():
            return folder
    return None


def refuse_run_dir_output(out: str | Path, flag: str) -> None:
    """Outputs (a leaderboard, an export, an imported run) are never written into a run
    directory: it holds only what `run` wrote, which `verify` replays and `repair` rewrites."""
    run = enclosing_run(out)
    if run is not None:
        where = "is a run directory" if run == Path(out).resolve() else f"is inside the run directory {run}"
        raise BenchError(f"{flag} {where}; outputs are never written into a run directory (choose a folder "
                         "outside it)", file=str(out), field=flag)


def run_dir_name(agent_name: str) -> str:
    """An agent's name as a folder name (its run directory under runs/SUITE/)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in agent_name).strip("-") or "agent"


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    """Atomic: a kill during the write leaves the old manifest or the new one, never half."""
    tmp = run_dir / (MANIFEST + ".tmp")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(dump_document(manifest))
        os.replace(tmp, run_dir / MANIFEST)
    except OSError as exc:
        raise BenchError(f"cannot write the run directory: {exc.strerror}", file=str(run_dir)) from None


def read_manifest(run_dir: Path) -> Manifest:
    path = run_dir / MANIFEST
    if not run_dir.is_dir():
        what = "a file, not a folder" if run_dir.exists() else "it does not exist"
        raise BenchError(f"not a run directory ({what})", file=str(run_dir))
    try:
        data = load_document(path.read_bytes())
    except FileNotFoundError:
        raise BenchError("not a run directory: run.json is missing", file=str(path)) from None
    except OSError as exc:
        raise BenchError(f"cannot be read: {exc.strerror}", file=str(path)) from None
    except ValueError as exc:  # orjson's or json's decode error, a byte that is not UTF-8
        raise BenchError(f"not valid JSON: {exc}", file=str(path)) from None
    for key in ("run_id", "suite", "agent", "k"):
        if not isinstance(data, dict) or key not in data:
            raise BenchError(f"missing field {key!r}: not a trajbench manifest", file=str(path), field=key)
    problem = manifest_problem(data)  # bench/runs/shape.py: the types every reader relies on
    if problem:
        raise BenchError(problem[1], file=str(path), field=problem[0])
    return data


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector. Reading and scoring a large run allocate millions
    of small, long-lived, acyclic objects, which it would rescan again and again to no end
    (a second and more on 100k trials). Nests: the collector's previous state is restored."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_run(run_dir: str | Path, *, on_step: Callable[[Any], None] | None = None) -> RunLog:
    """Read a run directory, line by line (the log can be large). With `on_step`, each step
    record is handed to it as it is read, in log order, and not kept (`steps` stays empty):
    scoring keys the steps in the same pass (`bench.analysis.divergence.keys.read_keyed`) instead of
    holding a million step records and walking them again. Without it, `steps` is a `StepIndex`:
    where each attempt's step lines lie, read again when asked for."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    log = LogFile(log_path(run_dir))
    cores = SummaryIndex(log)  # what is kept of each summary; records are plain dicts (TrialSummary / StepEvent)
    used: set[str] = set()  # the attempts behind the summaries
    spans: dict[str, int | list[int]] = {}  # attempt -> byte spans of its step lines (`add_span`)
    streamed: set[str] = set()  # attempts whose steps went to on_step
    errors: list[dict[str, Any]] = []
    duplicates: list[str] = []
    torn = 0
    with gc_paused():
        for rec, start, end in log_records(log_path(run_dir)):
            if rec is None:  # the torn tail
                torn = end - start
                continue
            kind = rec["type"]
            if kind == "step":
                if on_step is None:
                    add_span(spans, rec["attempt"], start, end)
                else:
                    streamed.add(rec["attempt"])
                    on_step(rec)
            elif kind == "trial":
                if rec["trial"] in cores:
                    duplicates.append(rec["trial"])
                else:
                    cores.add(rec, start, end)
                    used.add(rec["attempt"])
            elif kind == "attempt_error":
                errors.append(rec)
    orphans = sum(1 for attempt in (streamed or spans) if attempt not in used)
    return RunLog(run_dir, manifest, cores, StepIndex(log, spans), errors, duplicates, orphans, torn)


def iter_trials(run_dir: str | Path) -> Iterator[tuple[TrialSummary, list[StepEvent]]]:
    """Each trial's summary with the steps of its summarised attempt, in log order, reading the
    log once and holding only the attempts still in flight: exporters stream a run of any size
    this way instead of `read_run`'s whole-log grouping. The writer puts an attempt's steps just
    before the record that ends it, so an attempt's steps are complete when its summary arrives;
    the first summary of a trial wins and failed attempts' steps are dropped, as in `read_run`."""
    run_dir = Path(run_dir)
    read_manifest(run_dir)
    pending: dict[str, list[Any]] = {}
    seen: set[str] = set()
    for rec, _, _ in log_records(log_path(run_dir)):
        if rec is None:  # the torn tail
            continue
        kind = rec["type"]
        if kind == "step":
            pending.setdefault(rec["attempt"], []).append(rec)
        elif kind == "trial":
            steps = pending.pop(rec["attempt"], [])
            if rec["trial"] not in seen:
                seen.add(rec["trial"])
                yield rec, sorted(steps, key=lambda ev: ev["step"])  # type: ignore[misc]
        elif kind == "attempt_error":
            pending.pop(rec["attempt"], None)


