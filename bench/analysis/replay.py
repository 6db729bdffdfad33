"""`trajbench verify RUN_DIR`: replay a run's log on a fresh world and recompute every claim.

For every trial summary of the run, the tool calls of the attempt that produced it are replayed,
in order, on a fresh world of the run's suite (the suite must have the run's content hash),
through the episode's own step rule (`bench.episode.StepRules`) and the trial's outcome rule
(`bench.runs.trial.outcome_of`), so that a rule changed there is the rule the replay checks:
every observation, error, read/write flag and state hash must equal the logged one, and
`ask_user` turns must get the scripted user's logged reply. The trial's goal checks are then
recomputed with `bench.world.goal.evaluate` on the replayed end state, the replayed actions and the
logged final answer; with the run-side claims (below) they give the outcome, which must equal
the logged outcome. A trial on an input variant is replayed on the variant's task (perturbed
instruction, hidden user facts), regenerated from the manifest's perturbations and base seed. The final-state hash, milestones, step and event counts, token and cost
totals, seed and trial identity are checked as well; then completeness (every task × variant ×
k trial present exactly once) and the run's metrics (the figures `trajbench report` computes
from the logged outcomes must equal those from the replayed outcomes).

What a replay cannot re-derive, and how it is treated:

* **Run-side claims.** `within_budget`, `within_time` and `agent_completed` are written by the
  harness from what happened to the agent, not from the world. They are checked for
  consistency only: `within_budget` failed ⇒ exactly `max_steps` tool calls were logged;
  `within_time` failed ⇒ the trial lasted about `timeout_s`; `agent_completed` failed ⇒ its
  detail names the exception. A claim that was *removed* from a log is undetectable when the
  goal checks pass without it.
* **The final answer** is the agent's free text: it is taken from the summary as logged. Editing
  it changes the recomputed `output[...]` checks, so a lone edit is caught; an answer edited
  together with its checks and outcome is not (nothing in the world records the answer).
* **`error` trials** (infrastructure failures) have no outcome to recompute and count in no
  metric. Their claim is that every attempt failed outside the agent: verify requires an
  `attempt_error` record for the summary's attempt and at least `attempts` such records for the
  trial, and replays whatever steps that attempt logged. Because relabelling a failure as
  `error` would drop it from the scores, the count of error trials is reported (and shown on
  leaderboards).
* Arguments that were not JSON are logged as their `repr` and cannot be replayed; such a step
  is accepted (with a note) when the log says it errored without changing the state and the
  replay errors too.

* **Replays** (`trajbench replay`, `bench.analysis.replays`): a continuation is replayed whole,
  from a fresh world, restored prefix included, like any trial; its arms stand for the input
  variants (every arm of `replay_of.arms` must hold m continuations). What only a replay has is
  checked against its original: the original must be unchanged (run id, seal digest and log
  bytes as recorded), each restored step must be the original trial's step as logged there
  (tool, arguments, observation, error, state hash, model turn) and be marked restored, and an
  alternative's continuation must take its forced step next.

A log that is rewritten consistently end to end (a different trajectory with matching
observations, hashes, checks and outcome) replays clean: verify proves that the claimed scores
follow from the logged actions under the suite, not that those actions were the agent's.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from bench.__version__ import __version__
from bench.adapters.spec import is_simulated, spec_hash
from bench.analysis.replays import check_link, replay_info, replay_variants
from bench.analysis.stopping import recompute
from bench.analysis.verify_claims import (
    Mismatch,
    as_number,
    check_completeness,
    check_metrics,
    differs,
    same_number,
    shorten,
    show_value,
)
from bench.canonical import derive_seed
from bench.episode import StepRules
from bench.errors import BenchError, InfraError
from bench.imports.core import import_source
from bench.runs.design import outcomes_of
from bench.runs.rundir import (
    Manifest,
    RunLog,
    StepEvent,
    TrialSummary,
    read_run,
    suite_of_run,
    variant_family,
)
from bench.runs.seal import check_seal, run_digest
from bench.runs.trial import outcome_of
from bench.world.goal import evaluate
from bench.world.suite import Suite
from bench.world.task import Task
from bench.world.tools import ToolOutcome
from bench.world.variants import BASE, FAMILIES, Variant, VariantSpec, variants_of

# Checks written by the harness from what happened to the agent (see the module docstring).
RUN_SIDE_CHECKS = ("within_budget", "within_time", "agent_completed")


@dataclass
class VerifyResult:
    run_dir: str
    run_id: str
    agent: str
    suite_name: str
    suite_hash: str
    suite_path: str | None = None
    trials: int = 0
    error_trials: int = 0
    steps_replayed: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    digest: str | None = None  # the sealed run digest (bench.runs.seal): the value a publisher signs

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def trials_with_mismatches(self) -> int:
        return len({m.trial for m in self.mismatches if m.trial is not None})

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "run_dir": self.run_dir, "run_id": self.run_id, "agent": self.agent,
            "suite": {"name": self.suite_name, "hash": self.suite_hash, "path": self.suite_path},
            "trials": self.trials, "error_trials": self.error_trials, "steps_replayed": self.steps_replayed,
            "mismatches": [m.as_dict() for m in self.mismatches], "notes": list(self.notes),
            "seconds": round(self.seconds, 3), "harness_version": __version__, "digest": self.digest,
        }


# ------------------------------------------------------------------------------ the suite
def load_run_suite(manifest: Manifest, run_dir: Path, suite: Suite | str | Path | None = None) -> tuple[Suite | None, list[Mismatch]]:
    """The suite a run was made on (`bench.runs.rundir.suite_of_run`: `suite` if given, else the
    manifest's suite folder, else the built-in suite of the same name). Returns the suite and,
    when only suites of another content hash were found, the mismatches that say so (a replay
    on another suite proves nothing). Raises BenchError when the manifest records no suite hash
    or no candidate can be loaded at all."""
    info = manifest.get("suite") or {}
    want = info.get("hash")
    manifest_file = str(run_dir / "run.json")
    if not want:
        raise BenchError("the manifest records no suite hash: the run cannot be verified", file=manifest_file, field="suite.hash")
    found, missing = suite_of_run(manifest, suite)
    if missing is None:
        return found, []
    if not missing.changed:
        tried = "; ".join(f"{candidate}: {why}" for candidate, why in missing.failures) or "the manifest names no suite path or name"
        raise BenchError(f"cannot verify: the run's suite {info.get('name')!r} cannot be loaded ({tried}); "
                         "pass the suite folder the run used with --suite", file=manifest_file, field="suite.path")
    problems = []
    for s in missing.changed:
        changed = _changed_tools(manifest.get("tool_schema_hashes") or {}, s.tool_schema_hashes())
        problems.append(Mismatch(None, None, "suite", (
            f"the run was made on suite {info.get('name')!r} with content hash {want}; the suite at {s.path} has hash "
            f"{s.content_hash} (its tasks, initial state, domain code or tool schemas changed){changed}. A replay on another "
            "suite proves nothing: pass the suite version the run used with --suite")))
    return None, problems


def _changed_tools(logged: dict[str, str], now: dict[str, str]) -> str:
    names = sorted(n for n in set(logged) | set(now) if logged.get(n) != now.get(n))
    return f"; tool schemas that differ: {', '.join(names)}" if names and logged else ""


@dataclass
class _Replayed:
    outcome: str | None  # recomputed outcome (None: not recomputable)
    steps: int  # tool/user steps replayed


def _trial_order(manifest: Manifest) -> Callable[[TrialSummary], tuple[int, str, int, str]]:
    order = {t: i for i, t in enumerate(manifest.get("tasks") or [])}

    def key(summary: TrialSummary) -> tuple[int, str, int, str]:
        index = summary.get("index")
        return (order.get(str(summary.get("task")), len(order)), str(summary.get("variant")),
                index if isinstance(index, int) else -1, str(summary["trial"]))
    return key


def _check_identity(summary: TrialSummary, manifest: Manifest, out: list[Mismatch]) -> None:
    trial = summary["trial"]
    task, variant, index = summary.get("task"), summary.get("variant"), summary.get("index")
    if trial != f"{task}/{variant}/{index}":
        out.append(Mismatch(trial, None, "identity", f"the trial id does not match its task {task!r}, variant {variant!r} and index {index!r}"))
    if not str(summary.get("attempt", "")).startswith(f"{trial}@"):
        out.append(Mismatch(trial, None, "identity", f"attempt {show_value(summary.get('attempt'))} does not belong to this trial"))
    if "base_seed" in manifest and "seed" in summary:
        want = derive_seed(manifest["base_seed"], task, variant, index)
        if summary["seed"] != want:
            out.append(Mismatch(trial, None, "seed", f"the log has {summary['seed']}, the run's base seed gives {want}"))


# ------------------------------------------------------------------------------ one trial
class _TrialReplay:
    """One logged attempt replayed event by event on a fresh world, through the episode's step
    rule; every logged field that differs from the replay becomes a mismatch."""

    def __init__(self, suite: Suite, task: Task, trial: str, out: list[Mismatch], notes: list[str]):
        self.rules = StepRules(suite.new_world(task), task)
        self.trial, self.out, self.notes = trial, out, notes
        self.calls = 0
        self.tokens_in = self.tokens_out = 0.0
        self.cost = 0.0
        self.expected_index = 0

    def _mismatch(self, step: int | None, what: str, detail: str) -> None:
        self.out.append(Mismatch(self.trial, step, what, detail))

    def step(self, ev: StepEvent) -> None:
        idx = ev.get("step")
        self._check_index(ev, idx)
        kind = ev.get("kind")
        if kind == "model":
            self.tokens_in += as_number(ev.get("input_tokens"))
            self.tokens_out += as_number(ev.get("output_tokens"))
            self.cost += as_number(ev.get("cost"))
            return
        if kind not in ("tool", "user"):
            self._mismatch(idx, "kind", f"unknown step kind {show_value(kind)}")
            return
        self.calls += 1
        args, tool = ev.get("args"), ev.get("tool")
        if not isinstance(tool, str):
            self._mismatch(idx, "tool", f"not a tool name: {show_value(tool)}")
            return
        outcome = self._execute(ev, idx, kind, tool, args)
        if outcome is None:
            return
        self.rules.record(idx if isinstance(idx, int) else -1, tool, args, outcome)
        for name, replayed in (("observation", outcome.observation), ("error", outcome.error),
                               ("read_only", outcome.read_only), ("state_hash", outcome.state_hash)):
            if name not in ev:
                self._mismatch(idx, name, "missing from the logged step")
            elif ev[name] != replayed:  # type: ignore[literal-required]
                self._mismatch(idx, name, differs(name, ev[name], replayed))  # type: ignore[literal-required]

    def _check_index(self, ev: StepEvent, idx: Any) -> None:
        if ev.get("trial") != self.trial:
            self._mismatch(idx, "trial", f"a step of this attempt is labelled trial {show_value(ev.get('trial'))}")
        expected = self.expected_index
        if not isinstance(idx, int):
            self._mismatch(None, "steps", f"a step has no valid index ({show_value(idx)})")
        elif idx > expected:
            missing = f"step {expected}" if idx == expected + 1 else f"steps {expected}..{idx - 1}"
            self._mismatch(idx, "steps", f"{missing} missing: the step indices jump from {expected - 1} to {idx}")
            self.expected_index = idx + 1
        elif idx < expected:
            self._mismatch(idx, "steps", f"step {idx} is logged again or out of order (after step {expected - 1})")
        else:
            self.expected_index = idx + 1

    def _execute(self, ev: StepEvent, idx: Any, kind: str, tool: str, args: Any) -> ToolOutcome | None:
        if kind == "user":
            if tool != "ask_user":
                self._mismatch(idx, "tool", f"a user step must be ask_user, the log has {show_value(tool)}")
            return self.rules.ask_user(args)
        before = self.rules.world.state_hash
        try:
            outcome = self.rules.call_tool(tool, args)
        except InfraError as exc:
            self._mismatch(idx, "replay", f"the tool crashed on replay ({exc}); an honest log cannot hold this step")
            return None
        if (isinstance(args, str) and ev.get("error") is not None and outcome.error is not None
                and outcome.error != ev.get("error") and ev.get("state_hash") == before == outcome.state_hash):
            self.notes.append("non-JSON arguments (logged as their repr) cannot be replayed: accepted, since the logged "
                              "call errored without changing the state and so does the replay")
            outcome = dataclasses.replace(outcome, error=ev.get("error"))
        return outcome


def _without_late_model_turns(summary: TrialSummary, events: list[StepEvent], notes: list[str]) -> list[StepEvent]:
    """A model turn racing the trial's time limit can be logged after the summary counted the
    events: it changes nothing that is scored, and is dropped with a note."""
    claimed = summary.get("events")
    late = [e for e in events if isinstance(claimed, int) and isinstance(e.get("step"), int)
            and e["step"] >= claimed and e.get("kind") == "model"]
    if not late or summary.get("outcome") == "error" or len(events) - len(late) != claimed:
        return events
    notes.append(f"{len(late)} model turn(s) logged after the trial ended (a race with the time limit); ignored")
    late_ids = {id(e) for e in late}
    return [e for e in events if id(e) not in late_ids]


def _check_attempts(summary: TrialSummary, attempt_errors: Counter[str], error_attempts: set[str],
                    out: list[Mismatch]) -> None:
    """The attempt records: an `error` trial's every attempt failed outside the agent; a scored
    trial's earlier attempts did, its own did not."""
    trial, attempts, attempt = summary["trial"], summary.get("attempts"), summary.get("attempt")
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        out.append(Mismatch(trial, None, "attempts", f"not a number of attempts: {show_value(attempts)}"))
    if summary.get("outcome") == "error":
        if attempt not in error_attempts:
            out.append(Mismatch(trial, None, "outcome", "an `error` (infrastructure) outcome without an attempt_error record for its attempt"))
        if isinstance(attempts, int) and attempt_errors[trial] < attempts:
            out.append(Mismatch(trial, None, "attempts", f"{attempts} failed attempts claimed, {attempt_errors[trial]} attempt_error record(s) logged"))
        if summary.get("checks"):
            out.append(Mismatch(trial, None, "checks", "an `error` trial must have no goal checks (it was never scored)"))
        return
    if attempt in error_attempts:
        out.append(Mismatch(trial, None, "attempts", "the summarised attempt also has an attempt_error record"))
    if isinstance(attempts, int) and attempt_errors[trial] < attempts - 1:
        out.append(Mismatch(trial, None, "attempts", f"{attempts} attempts claimed, but only {attempt_errors[trial]} earlier attempt(s) failed"))


def _check_counts(summary: TrialSummary, r: _TrialReplay, events: list[StepEvent]) -> None:
    if summary.get("steps") != r.calls:
        r._mismatch(None, "steps", f"the summary claims {show_value(summary.get('steps'))} tool calls, the log holds {r.calls}")
    if "events" in summary and summary["events"] != len(events):
        r._mismatch(None, "events", f"the summary claims {show_value(summary['events'])} logged steps, the log holds {len(events)}")
    for name, total in (("input_tokens", r.tokens_in), ("output_tokens", r.tokens_out), ("cost", r.cost)):
        if name in summary and not same_number(summary[name], total):  # type: ignore[literal-required]
            r._mismatch(None, name, f"the summary claims {show_value(summary[name])}, the model turns add up to {show_value(total)}")  # type: ignore[literal-required]


def _check_checks(r: _TrialReplay, logged: dict[str, Any], checks: dict[str, dict[str, Any]], detail_is_soft: bool) -> None:
    """Every recomputed check against the logged one (a check's detail wording may differ
    between harness versions: a note then, not a mismatch)."""
    for name, want in checks.items():
        got = logged.get(name)
        if not isinstance(got, dict):
            r._mismatch(None, f"checks.{name}", f"missing from the log; the replay gives passed={want['passed']}")
        elif got.get("passed") != want["passed"]:
            r._mismatch(None, f"checks.{name}", f"the log says passed={show_value(got.get('passed'))}, the replay gives "
                        f"passed={want['passed']} ({shorten(str(want['detail']), 80) or 'no detail'})")
        elif got.get("detail") != want["detail"]:
            if detail_is_soft:
                r.notes.append(f"checks.{name}: the wording of a check's detail differs (the run was made by another harness version)")
            else:
                r._mismatch(None, f"checks.{name}", f"detail differs: {differs('detail', got.get('detail'), want['detail'])}")
    for name in logged:
        if name not in checks:
            r._mismatch(None, f"checks.{name}", "in the log, but the task has no such check")


def _check_end(summary: TrialSummary, r: _TrialReplay, outcome: str, reason: str | None) -> None:
    """The outcome, its reason, the final state hash and the milestones."""
    logged = summary.get("outcome")
    world, reached = r.rules.world, r.rules.milestones.reached
    if logged != outcome:
        r._mismatch(None, "outcome", f"the log claims {show_value(logged)}, the replay gives {show_value(outcome)}")
    if "reason" in summary and summary["reason"] != reason and logged == outcome:
        r._mismatch(None, "reason", differs("reason", summary["reason"], reason))
    if summary.get("final_state_hash") != world.state_hash:
        r._mismatch(None, "final_state_hash", differs("final_state_hash", summary.get("final_state_hash"), world.state_hash))
    if "milestones" in summary and summary["milestones"] != reached:
        r._mismatch(None, "milestones", differs("milestones", summary["milestones"], reached))


def _replay_trial(suite: Suite, task: Task, summary: TrialSummary, events: list[StepEvent], manifest: Manifest,
                  attempt_errors: Counter[str], error_attempts: set[str], out: list[Mismatch], notes: list[str],
                  detail_is_soft: bool) -> _Replayed:
    r = _TrialReplay(suite, task, summary["trial"], out, notes)
    events = _without_late_model_turns(summary, events, notes)
    for ev in events:
        r.step(ev)
    _check_attempts(summary, attempt_errors, error_attempts, out)
    if summary.get("outcome") == "error":
        return _Replayed(None, r.calls)
    _check_counts(summary, r, events)
    expected, _ = suite.expected_state(task)
    answer = summary.get("answer")
    checks = evaluate(task, r.rules.world.state, expected, r.rules.actions, answer if isinstance(answer, str) else "")
    claimed = summary.get("checks")
    logged_checks: dict[str, Any] = claimed if isinstance(claimed, dict) else {}
    checks.update(_run_side_claims(summary["trial"], summary, logged_checks, r.calls, manifest, out))
    _check_checks(r, logged_checks, checks, detail_is_soft)
    outcome, reason = outcome_of(checks)
    _check_end(summary, r, outcome, reason)
    return _Replayed(outcome, r.calls)


def _run_side_claims(trial: str, summary: TrialSummary, logged: Mapping[str, Any], calls: int,
                     manifest: Manifest, out: list[Mismatch]) -> dict[str, dict[str, Any]]:
    """The harness's own checks, accepted as logged when consistent with the rest of the log."""
    claims: dict[str, dict[str, Any]] = {}
    max_steps = manifest.get("max_steps")
    if isinstance(max_steps, int) and calls > max_steps:
        out.append(Mismatch(trial, None, "steps", f"{calls} tool calls logged, more than the run's budget of {max_steps}"))
    for name in RUN_SIDE_CHECKS:
        if name not in logged:
            continue
        claim = logged[name]
        if not isinstance(claim, dict) or claim.get("passed") is not False:
            out.append(Mismatch(trial, None, f"checks.{name}", "the harness only ever records this check as failed"))
            continue
        claims[name] = {"passed": False, "detail": claim.get("detail")}
        if name == "within_budget" and isinstance(max_steps, int) and calls != max_steps:
            out.append(Mismatch(trial, None, "checks.within_budget",
                                f"the step budget ({max_steps}) is claimed exhausted, but {calls} tool calls were logged"))
        if name == "within_time":
            timeout, duration = manifest.get("timeout_s"), summary.get("duration_s")
            if isinstance(timeout, (int, float)) and isinstance(duration, (int, float)) and duration < timeout * 0.95 - 0.5:
                out.append(Mismatch(trial, None, "checks.within_time",
                                    f"a timeout is claimed, but the trial lasted {duration:.3f} s of the {timeout} s limit"))
        if name == "agent_completed" and not str(claim.get("detail", "")).startswith("agent raised "):
            out.append(Mismatch(trial, None, "checks.agent_completed", "an agent crash is claimed without the exception that ended it"))
    return claims


# ------------------------------------------------------------------------------ the manifest
def check_manifest(run_dir: Path, manifest: Manifest) -> list[Mismatch]:
    """The manifest fields a leaderboard shows: what follows from others must (`simulated` from
    the adapter, `hash` from adapter, target and options), and every field must be as sealed at
    the run's end (bench.runs.seal: the agent's name, options, k, seeds... and the log's bytes)."""
    out: list[Mismatch] = []
    agent = manifest.get("agent")
    if not isinstance(agent, dict):
        return [Mismatch(None, None, "agent", f"not an object: {show_value(agent)}")]
    derived = is_simulated(agent.get("adapter"))
    if agent.get("simulated") is not derived:
        out.append(Mismatch(None, None, "agent.simulated", f"the manifest says {show_value(agent.get('simulated'))}, but its adapter "
                            f"{show_value(agent.get('adapter'))} is {'' if derived else 'not '}simulated"))
    try:
        want = None if import_source(manifest) else spec_hash(agent.get("adapter"), agent.get("target"), agent.get("options"))
    except TypeError:
        want = None
    if agent.get("hash") != want:
        out.append(Mismatch(None, None, "agent.hash", f"the manifest has {show_value(agent.get('hash'))}; its adapter, target and "
                            f"options give {show_value(want)}"))
    out += [Mismatch(None, None, name, detail) for name, detail in check_seal(run_dir, manifest)]
    return out


# ------------------------------------------------------------------------------ the run
def verify_run(run_dir: str | Path, *, suite: Suite | str | Path | None = None, log: RunLog | None = None) -> VerifyResult:
    """Replay the run and return every mismatch (see the module docstring). `suite` overrides
    where the suite is found (its hash must still be the run's). Raises BenchError for a
    directory that is not a run, or a run whose suite cannot be loaded at all."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    log = log if log is not None else read_run(run_dir)
    manifest = log.manifest
    info = manifest.get("suite") or {}
    result = VerifyResult(str(run_dir), str(manifest.get("run_id")), str((manifest.get("agent") or {}).get("name")),
                          str(info.get("name")), str(info.get("hash")))
    result.digest = run_digest(manifest)
    result.mismatches.extend(check_manifest(run_dir, manifest))
    loaded, problems = load_run_suite(manifest, run_dir, suite)
    if loaded is not None and loaded.name != info.get("name"):
        result.mismatches.append(Mismatch(None, None, "suite.name", differs("suite.name", info.get("name"), loaded.name)))
    if loaded is None:
        result.mismatches.extend(problems)
    else:
        result.suite_path = str(loaded.path)
        soft = _check_run(log, loaded, result)
        tasks_by_id = {t.id: t for t in loaded.tasks}
        if replay_info(manifest, run_dir) is None:
            variants = _run_variants(manifest, tasks_by_id, result.mismatches)
        else:  # a replay (bench.analysis.replays): its arms are its inputs; its restored steps are the original's
            variants = replay_variants(manifest, tasks_by_id)
            result.mismatches += [Mismatch(*problem) for problem in check_link(run_dir, log)]
        replayed = _replay_trials(log, loaded, variants, result, soft)
        check_completeness(log, manifest, variants, result.mismatches, _design_n(log, replayed, result))
        check_metrics(run_dir, log, replayed, result.mismatches)
        result.notes = [note if times == 1 else f"{note} (×{times})" for note, times in Counter(result.notes).items()]
    result.seconds = time.perf_counter() - started
    return result


def _check_run(log: RunLog, suite: Suite, result: VerifyResult) -> bool:
    """Run-level checks and notes; returns whether a check's detail wording may differ (the run
    was made by another harness version)."""
    manifest, out, notes = log.manifest, result.mismatches, result.notes
    if manifest.get("tool_schema_hashes") and manifest["tool_schema_hashes"] != suite.tool_schema_hashes():
        out.append(Mismatch(None, None, "tool_schema_hashes", "the manifest's tool-schema hashes are not the suite's" +
                            _changed_tools(manifest["tool_schema_hashes"], suite.tool_schema_hashes())))
    soft = manifest.get("harness_version") != __version__
    if soft:
        notes.append(f"the run was made by harness {manifest.get('harness_version')}, verified by {__version__}")
    if log.torn_bytes:
        notes.append(f"the log ends in a torn line ({log.torn_bytes} bytes), ignored")
    if log.orphan_attempts:
        notes.append(f"{log.orphan_attempts} attempt(s) without a summary (killed or retried), ignored")
    tasks_by_id = {t.id: t for t in suite.tasks}
    for task_id in manifest.get("tasks") or []:
        if task_id not in tasks_by_id:
            out.append(Mismatch(None, None, "tasks", f"the run's task {task_id!r} is not in the suite"))
    return soft


def _replay_trials(log: RunLog, suite: Suite, variants: dict[str, dict[str, Variant]], result: VerifyResult,
                   soft: bool) -> dict[str, str | None]:
    """Replay every trial summary, in task order; returns each trial's recomputed outcome."""
    manifest, out, notes = log.manifest, result.mismatches, result.notes
    tasks_by_id = {t.id: t for t in suite.tasks}
    attempt_errors: Counter[str] = Counter(rec["trial"] for rec in log.attempt_errors)
    error_attempts = {rec["attempt"] for rec in log.attempt_errors}
    replayed: dict[str, str | None] = {}
    for summary in log.in_order(_trial_order(manifest)):  # one trial in memory at a time
        trial = summary["trial"]
        result.trials += 1
        variant = _trial_variant(summary, manifest, tasks_by_id, variants, out)
        if variant is None:
            continue
        result.error_trials += summary["outcome"] == "error"
        events = sorted(log.steps_of(summary), key=lambda e: e["step"] if isinstance(e.get("step"), int) else -1)
        try:
            rep = _replay_trial(suite, variant.task, summary, events, manifest, attempt_errors, error_attempts, out, notes, soft)
        except Exception as exc:  # noqa: BLE001 - a hostile log must give a mismatch, never a traceback
            out.append(Mismatch(trial, None, "replay", f"the logged trial cannot be replayed: {type(exc).__name__}: {shorten(str(exc))}"))
            continue
        result.steps_replayed += rep.steps
        replayed[trial] = rep.outcome
    return replayed


def _trial_variant(summary: TrialSummary, manifest: Manifest, tasks_by_id: dict[str, Task],
                   variants: dict[str, dict[str, Variant]], out: list[Mismatch]) -> Variant | None:
    """The input variant a trial ran on (its task as the variant presented it: instruction,
    hidden user facts), or None when the trial cannot be replayed (the mismatch says why)."""
    trial = summary["trial"]
    _check_identity(summary, manifest, out)
    if not isinstance(summary.get("task"), str) or summary["task"] not in tasks_by_id:
        out.append(Mismatch(trial, None, "task", f"task {show_value(summary.get('task'))} is not in the suite: the trial cannot be replayed"))
        return None
    variant = variants.get(summary["task"], {}).get(summary["variant"]) if isinstance(summary.get("variant"), str) else None
    if variant is None:
        out.append(Mismatch(trial, None, "variant", f"the run's perturbations give the task no input variant "
                            f"{show_value(summary.get('variant'))}: the trial cannot be replayed"))
        return None
    _check_variant(summary, variant, out)
    if summary.get("outcome") not in ("success", "failure", "error"):
        out.append(Mismatch(trial, None, "outcome", f"unknown outcome {show_value(summary.get('outcome'))}"))
        return None
    return variant


def _run_variants(manifest: Manifest, tasks_by_id: dict[str, Task], out: list[Mismatch]) -> dict[str, dict[str, Variant]]:
    """task id -> variant id -> Variant: the input variants the run's manifest calls for (the
    unperturbed `base` alone for a run without perturbations), regenerated from its seed."""
    perturbations = manifest.get("perturbations") or []
    try:
        families = {p["family"]: dict(p.get("params") or {}) for p in perturbations}
        counts = {int(p.get("count", 1)) for p in perturbations}
        if not set(families) <= set(FAMILIES) or len(counts) > 1:
            raise ValueError("unknown family or mixed counts")
        spec = VariantSpec(families, counts.pop() if counts else 1)
    except (TypeError, KeyError, ValueError, AttributeError):
        out.append(Mismatch(None, None, "perturbations", f"the manifest's perturbations cannot be read: {show_value(perturbations)}"))
        spec = VariantSpec({}, 1)
    base_seed = manifest.get("base_seed", 0)
    return {task_id: {v.id: v for v in variants_of(task, spec, base_seed)} for task_id, task in tasks_by_id.items()
            if task_id in (manifest.get("tasks") or [])}


def _check_variant(summary: TrialSummary, variant: Variant, out: list[Mismatch]) -> None:
    """The summary's record of its input variant must be the regenerated variant."""
    trial = summary["trial"]
    family = variant_family(summary)
    if family != variant.family:
        out.append(Mismatch(trial, None, "variant_family", differs("variant_family", family, variant.family)))
    if variant.family != BASE:
        if summary.get("variant_params") != variant.params:
            out.append(Mismatch(trial, None, "variant_params", differs("variant_params", summary.get("variant_params"), variant.params)))
        if summary.get("instruction") != variant.task.instruction:
            out.append(Mismatch(trial, None, "instruction", differs("instruction", summary.get("instruction"), variant.task.instruction)))


def _design_n(log: RunLog, replayed: dict[str, str | None], result: VerifyResult) -> dict[str, int] | None:
    """A sequential run's trials per task, as its stopping rule decides them from the REPLAYED
    outcomes (the recorded per-task n must be the same); None for a fixed-k run."""
    if log.manifest.get("design") is None:
        return None
    rows = [{**s, "outcome": replayed.get(trial) or s.get("outcome")} for trial, s in log.summaries.items()]
    recorded = dict(log.manifest["design"].get("per_task_n") or {})
    try:
        progress = recompute(log, outcomes_of(rows))
    except BenchError as exc:
        result.notes.append(f"the sequential design could not be recomputed ({exc}); its recorded trials per task are used")
        return recorded
    assert progress is not None
    if progress["per_task_n"] != recorded or progress["finished"] != bool(log.manifest["design"].get("finished")):
        changed = sorted(t for t in set(recorded) | set(progress["per_task_n"])
                         if recorded.get(t) != progress["per_task_n"].get(t))
        result.mismatches.append(Mismatch(None, None, "design", "the stopping rule on the replayed outcomes gives other "
                                          f"trials per task than the manifest records ({len(changed)} task(s), e.g. "
                                          f"{changed[:3]}; finished: {progress['finished']})"))
    return dict(progress["per_task_n"])
