"""The run directory: `run.json` (the manifest) and `trajectories.jsonl` (the append-only log).

The log holds, in order of occurrence, `step` events (each tagged with its trial and attempt),
`attempt_error` records (an attempt lost to infrastructure, to be retried) and one `trial`
summary per finished trial. A trial without a summary is unfinished: resume runs it again under
a new attempt id, and the orphaned steps of the old attempt are ignored by every reader.
A torn last line (the process was killed mid-write) is tolerated: readers skip it and report it;
the writer cuts it off before appending.

Two rules every reader shares live here, so that report, diff, divergence, leaderboard and
replay can never disagree: which trials count (`RunLog.counted`: valid outcomes on the
unperturbed input; infrastructure errors count in no figure), and how a run's suite is
reopened (`suite_of_run`). The records' shapes are `Manifest`, `StepEvent` and `TrialSummary`:
types for the checker only — nothing validates them on the reading path, which must stay fast.
"""

from __future__ import annotations

import gc
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypedDict

import orjson

from bench.canonical import dump_document, dump_line, load_document, load_line
from bench.errors import BenchError
from bench.world.overlay import apply_run_overlay
from bench.world.suite import Suite, load_suite
from bench.world.variants import BASE

MANIFEST = "run.json"
LOG = "trajectories.jsonl"
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


@dataclass
class RunLog:
    """Everything a run directory holds, grouped for the scorers."""

    path: Path
    manifest: Manifest
    summaries: dict[str, TrialSummary]
    steps: dict[str, list[StepEvent]]
    attempt_errors: list[dict[str, Any]] = field(default_factory=list)
    duplicate_summaries: list[str] = field(default_factory=list)
    orphan_attempts: int = 0
    torn_bytes: int = 0

    def trial_steps(self, trial_id: str) -> list[StepEvent]:
        """The steps of the attempt that produced the trial's summary, in step order."""
        summary = self.summaries[trial_id]
        return self.steps.get(summary["attempt"], [])

    def base_trials(self) -> list[TrialSummary]:
        """The trials on the tasks' own, unperturbed input (infrastructure errors included):
        the population of every headline figure. Input variants are reported on their own."""
        return [s for s in self.summaries.values() if variant_family(s) == BASE]

    def counted(self, *, pool_variants: bool = False) -> list[TrialSummary]:
        """The trials the figures count: valid outcomes on the unperturbed input (with
        `pool_variants`, on every input variant too), in log order."""
        return [s for s in self.summaries.values() if is_valid(s) and (pool_variants or variant_family(s) == BASE)]


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
    holding a million step records and walking them again."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    summaries: dict[str, Any] = {}  # records are plain dicts; their shape is TrialSummary / StepEvent
    steps: dict[str, list[Any]] = {}
    streamed: set[str] = set()  # attempts whose steps went to on_step
    errors: list[dict[str, Any]] = []
    duplicates: list[str] = []
    torn = 0
    with gc_paused():
        for rec in _records(run_dir / LOG):
            if isinstance(rec, int):  # the torn tail's length
                torn = rec
                continue
            kind = rec["type"]
            if kind == "step":
                if on_step is None:
                    steps.setdefault(rec["attempt"], []).append(rec)
                else:
                    streamed.add(rec["attempt"])
                    on_step(rec)
            elif kind == "trial":
                if rec["trial"] in summaries:
                    duplicates.append(rec["trial"])
                else:
                    summaries[rec["trial"]] = rec
            elif kind == "attempt_error":
                errors.append(rec)
    used = {s["attempt"] for s in summaries.values()}
    orphans = sum(1 for attempt in (streamed or steps) if attempt not in used)
    return RunLog(run_dir, manifest, summaries, steps, errors, duplicates, orphans, torn)


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
    for rec in _records(run_dir / LOG):
        if isinstance(rec, int):
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


def _records(path: Path) -> Iterator[dict[str, Any] | int]:
    """The log's records, checked; a torn last line (no newline) is yielded as its length."""
    if not path.exists():
        return
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise BenchError(f"cannot be read: {exc.strerror}", file=str(path)) from None
    loads, required_of = orjson.loads, _REQUIRED.get  # local names: this loop runs once per line
    with fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):  # the last write was cut short
                yield len(line)
                return
            if line.isspace():
                continue
            try:  # the fast path of a well-formed orjson line; anything else is judged by parse_record
                rec: Any = loads(line) if line[0] != 32 else None
                required = required_of(rec["type"])
                if required is not None and rec.keys() >= required:
                    yield rec
                    continue
            except (ValueError, TypeError, KeyError):
                pass
            rec, problem = parse_record(line)
            if problem is not None:
                raise BenchError(f"line {number}: {problem}; the log is corrupted: `trajbench repair {path.parent}` "
                                 "moves bad lines aside into a quarantine file and keeps every valid record",
                                 file=str(path), field=f"line {number}")
            yield rec


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


class LogWriter:
    """Appends records as whole lines under a lock (trials run in threads). An attempt's step
    lines wait in memory and reach the OS in one unbuffered write together with the record that
    ends the attempt (its summary or its attempt_error): one syscall per attempt instead of one
    per record. A killed process loses only unfinished attempts, which resume re-runs anyway,
    and at most the line being written. `fsync_summaries` also survives power loss, at a cost
    per trial."""

    def __init__(self, run_dir: Path, fsync_summaries: bool = False):
        self.path = run_dir / LOG
        self.torn_bytes = _cut_torn_tail(self.path)
        self._fh = open(self.path, "ab", buffering=0)
        self._lock = threading.Lock()
        self._fsync = fsync_summaries
        self._pending: dict[Any, list[bytes]] = {}
        self._ended: set[Any] = set()  # attempts whose trial summary is written: sealed
        self.dropped = 0  # records refused: of a sealed attempt, or after close

    def append(self, record: dict[str, Any]) -> None:
        """Never fails on the record's values (`bench.canonical.dump_line`: every string is kept).
        A record of an attempt whose summary is written (an abandoned agent thread still running) or
        arriving after close is dropped: nothing can follow a trial's summary into the log."""
        line = dump_line(record)
        attempt = record.get("attempt")
        with self._lock:
            if attempt in self._ended or self._fh.closed:
                self.dropped += 1
                return
            if record.get("type") == "step":
                self._pending.setdefault(attempt, []).append(line)
                return
            lines = self._pending.pop(attempt, [])
            lines.append(line)
            self._fh.write(b"".join(lines))
            if record.get("type") == "trial":
                self._ended.add(attempt)
                if self._fsync:
                    os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Steps of attempts that never ended (an exception escaped the runner) are kept, as before."""
        with self._lock:
            for lines in self._pending.values():
                self._fh.write(b"".join(lines))
            self._pending.clear()
            self._fh.close()


def _cut_torn_tail(path: Path) -> int:
    """Truncate a torn last line so that the next record starts on a line of its own."""
    if not path.exists():
        return 0
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
