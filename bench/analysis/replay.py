"""`trajbench verify RUN_DIR`: replay a run's log on a fresh world and recompute every claim.

For every trial summary of the run, the tool calls of the attempt that produced it are replayed,
in order, on a fresh world of the run's suite (the suite must have the run's content hash):
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

A log that is rewritten consistently end to end (a different trajectory with matching
observations, hashes, checks and outcome) replays clean: verify proves that the claimed scores
follow from the logged actions under the suite, not that those actions were the agent's.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import __version__
from bench.canonical import derive_seed
from bench.errors import BenchError, InfraError
from bench.world.goal import LoggedAction, MilestoneTracker, evaluate
from bench.run.rundir import RunLog, read_run
from bench.world.user import ScriptedUser

__all__ = ["Mismatch", "VerifyResult", "load_run_suite", "verify_run", "render_text", "run_verify"]

# Checks written by the harness from what happened to the agent (see the module docstring).
RUN_SIDE_CHECKS = ("within_budget", "within_time", "agent_completed")


@dataclass(frozen=True)
class Mismatch:
    """One difference between the log and the replay. `trial`/`step` are None for run-level
    problems; `field` names what differs (observation, state_hash, outcome, completeness...)."""

    trial: str | None
    step: int | None
    field: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "step": self.step, "field": self.field, "detail": self.detail}

    def __str__(self) -> str:
        where = []
        if self.trial is not None:
            where.append(f"trial {self.trial}")
        if self.step is not None:
            where.append(f"step {self.step}")
        prefix = ", ".join(where) or "run"
        return f"{prefix}: {self.field}: {self.detail}"


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
            "seconds": round(self.seconds, 3), "harness_version": __version__,
        }

    def reasons(self, limit: int = 5) -> list[str]:
        """The first few mismatches as one line each (for a leaderboard's rejection message)."""
        lines = [_clip(str(m), 200) for m in self.mismatches[:limit]]
        if len(self.mismatches) > limit:
            lines.append(f"... and {len(self.mismatches) - limit} more (run `trajbench verify {self.run_dir}`)")
        return lines


# ------------------------------------------------------------------------------ helpers
def _clip(text: str, width: int = 120) -> str:
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _show(value: Any, width: int = 100) -> str:
    """A logged value, short, for a mismatch message."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        text = repr(value)
    return _clip(text, width)


def _differs(what: str, logged: Any, replayed: Any) -> str:
    return f"the log has {_show(logged)}, the replay gives {_show(replayed)}"


def _number(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _same_number(a: Any, b: Any) -> bool:
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


# ------------------------------------------------------------------------------ the suite
def load_run_suite(manifest: dict[str, Any], run_dir: Path, suite: Any = None) -> tuple[Any, list[Mismatch]]:
    """The suite a run was made on: `suite` if given (a Suite, a folder or a built-in name), else
    the manifest's suite path, else the built-in suite of the same name. Returns the suite and,
    when its content hash differs from the run's, the mismatch that says so (the suite is then
    unusable for a replay). Raises BenchError when no candidate can be loaded at all."""
    from bench.world.suite import Suite, load_suite

    info = manifest.get("suite") or {}
    want = info.get("hash")
    manifest_file = str(run_dir / "run.json")
    if not want:
        raise BenchError("the manifest records no suite hash: the run cannot be verified", file=manifest_file, field="suite.hash")
    if isinstance(suite, Suite):
        candidates: list[Any] = [suite]
    elif suite is not None:
        candidates = [str(suite)]
    else:
        candidates = []
        if info.get("path") and Path(info["path"]).is_dir():
            candidates.append(info["path"])
        if info.get("name"):
            candidates.append(info["name"])
    loaded, failures = [], []
    for cand in candidates:
        try:
            s = cand if isinstance(cand, Suite) else load_suite(cand)
        except BenchError as exc:
            failures.append(f"{cand}: {exc}")
            continue
        if s.content_hash == want:
            from bench.world.overlay import apply_run_overlay

            return apply_run_overlay(s, manifest), []  # the tools as the run's agent saw them
        loaded.append(s)
    if not loaded:
        tried = "; ".join(failures) or "the manifest names no suite path or name"
        raise BenchError(f"cannot verify: the run's suite {info.get('name')!r} cannot be loaded ({tried}); "
                         "pass the suite folder the run used with --suite", file=manifest_file, field="suite.path")
    problems = []
    for s in loaded:
        changed = _changed_tools(manifest.get("tool_schema_hashes") or {}, s.tool_schema_hashes())
        problems.append(Mismatch(None, None, "suite", (
            f"the run was made on suite {info.get('name')!r} with content hash {want}; the suite at {s.path} has hash "
            f"{s.content_hash} (its tasks, initial state, domain code or tool schemas changed){changed}. A replay on another "
            "suite proves nothing: pass the suite version the run used with --suite")))
    return None, problems


def _changed_tools(logged: dict[str, str], now: dict[str, str]) -> str:
    names = sorted(n for n in set(logged) | set(now) if logged.get(n) != now.get(n))
    return f"; tool schemas that differ: {', '.join(names)}" if names and logged else ""


# ------------------------------------------------------------------------------ one trial
@dataclass
class _Replayed:
    outcome: str | None  # recomputed outcome (None: not recomputable)
    steps: int  # tool/user steps replayed


def _trial_order(manifest: dict[str, Any]):
    order = {t: i for i, t in enumerate(manifest.get("tasks") or [])}

    def key(summary: dict[str, Any]) -> tuple:
        return (order.get(summary.get("task"), len(order)), str(summary.get("variant")),
                summary.get("index") if isinstance(summary.get("index"), int) else -1, str(summary["trial"]))
    return key


def _check_identity(summary: dict[str, Any], manifest: dict[str, Any], out: list[Mismatch]) -> None:
    trial = summary["trial"]
    task, variant, index = summary.get("task"), summary.get("variant"), summary.get("index")
    if trial != f"{task}/{variant}/{index}":
        out.append(Mismatch(trial, None, "identity", f"the trial id does not match its task {task!r}, variant {variant!r} and index {index!r}"))
    if not str(summary.get("attempt", "")).startswith(f"{trial}@"):
        out.append(Mismatch(trial, None, "identity", f"attempt {_show(summary.get('attempt'))} does not belong to this trial"))
    if "base_seed" in manifest and "seed" in summary:
        want = derive_seed(manifest["base_seed"], task, variant, index)
        if summary["seed"] != want:
            out.append(Mismatch(trial, None, "seed", f"the log has {summary['seed']}, the run's base seed gives {want}"))


def _replay_trial(suite: Any, task: Any, summary: dict[str, Any], events: list[dict[str, Any]],
                  manifest: dict[str, Any], attempt_errors: Counter, error_attempts: set[str],
                  out: list[Mismatch], notes: list[str], detail_is_soft: bool) -> _Replayed:
    trial = summary["trial"]
    outcome = summary.get("outcome")
    world = suite.new_world(task)
    user = ScriptedUser(task.user_facts)
    tracker = MilestoneTracker(task.milestones, world.state)
    actions: list[LoggedAction] = []
    calls = 0
    tokens_in = tokens_out = 0
    cost = 0.0
    expected_index = 0
    claimed_events = summary.get("events")
    late = [e for e in events if isinstance(claimed_events, int) and isinstance(e.get("step"), int)
            and e["step"] >= claimed_events and e.get("kind") == "model"]
    if late and outcome != "error" and len(events) - len(late) == claimed_events:
        # A model turn racing the trial's time limit can be logged after the summary counted the
        # events: it changes nothing that is scored.
        notes.append(f"{len(late)} model turn(s) logged after the trial ended (a race with the time limit); ignored")
        late_ids = {id(e) for e in late}
        events = [e for e in events if id(e) not in late_ids]
    for ev in events:
        idx = ev.get("step")
        if ev.get("trial") != trial:
            out.append(Mismatch(trial, idx, "trial", f"a step of this attempt is labelled trial {_show(ev.get('trial'))}"))
        if not isinstance(idx, int):
            out.append(Mismatch(trial, None, "steps", f"a step has no valid index ({_show(idx)})"))
        elif idx > expected_index:
            missing = f"step {expected_index}" if idx == expected_index + 1 else f"steps {expected_index}..{idx - 1}"
            out.append(Mismatch(trial, idx, "steps", f"{missing} missing: the step indices jump from {expected_index - 1} to {idx}"))
            expected_index = idx + 1
        elif idx < expected_index:
            out.append(Mismatch(trial, idx, "steps", f"step {idx} is logged again or out of order (after step {expected_index - 1})"))
        else:
            expected_index = idx + 1
        kind = ev.get("kind")
        if kind == "model":
            tokens_in += _number(ev.get("input_tokens"))
            tokens_out += _number(ev.get("output_tokens"))
            cost += _number(ev.get("cost"))
            continue
        if kind not in ("tool", "user"):
            out.append(Mismatch(trial, idx, "kind", f"unknown step kind {_show(kind)}"))
            continue
        calls += 1
        args = ev.get("args")
        tool = ev.get("tool")
        if not isinstance(tool, str):
            out.append(Mismatch(trial, idx, "tool", f"not a tool name: {_show(tool)}"))
            continue
        if kind == "user":
            if tool != "ask_user":
                out.append(Mismatch(trial, idx, "tool", f"a user step must be ask_user, the log has {_show(tool)}"))
            question = args.get("question") if isinstance(args, dict) else None
            if not isinstance(question, str):
                observation, error = None, "invalid arguments to ask_user: question: a string is required"
            else:
                observation, error = user.answer(question), None
            read_only, state_hash = True, world.state_hash
        else:
            before = world.state_hash
            try:
                result = world.execute(tool, args)
            except InfraError as exc:
                out.append(Mismatch(trial, idx, "replay", f"the tool crashed on replay ({exc}); an honest log cannot hold this step"))
                continue
            observation, error, read_only, state_hash = result.observation, result.error, result.read_only, result.state_hash
            if (isinstance(args, str) and ev.get("error") is not None and error is not None and error != ev.get("error")
                    and ev.get("state_hash") == before == state_hash):
                notes.append("non-JSON arguments (logged as their repr) cannot be replayed: accepted, since the logged "
                             "call errored without changing the state and so does the replay")
                error = ev.get("error")
        action = LoggedAction(idx if isinstance(idx, int) else -1, str(tool), args if isinstance(args, dict) else {}, error)
        actions.append(action)
        tracker.observe(action.step, action, world.state, kind == "tool" and not read_only)
        for name, replayed in (("observation", observation), ("error", error), ("read_only", read_only), ("state_hash", state_hash)):
            if name not in ev:
                out.append(Mismatch(trial, idx, name, "missing from the logged step"))
            elif ev[name] != replayed:
                out.append(Mismatch(trial, idx, name, _differs(name, ev[name], replayed)))

    if not isinstance(summary.get("attempts"), int) or isinstance(summary.get("attempts"), bool) or summary["attempts"] < 1:
        out.append(Mismatch(trial, None, "attempts", f"not a number of attempts: {_show(summary.get('attempts'))}"))
    if outcome == "error":
        attempt = summary.get("attempt")
        if attempt not in error_attempts:
            out.append(Mismatch(trial, None, "outcome", "an `error` (infrastructure) outcome without an attempt_error record for its attempt"))
        attempts = summary.get("attempts")
        if isinstance(attempts, int) and attempt_errors[trial] < attempts:
            out.append(Mismatch(trial, None, "attempts", f"{attempts} failed attempts claimed, {attempt_errors[trial]} attempt_error record(s) logged"))
        if summary.get("checks"):
            out.append(Mismatch(trial, None, "checks", "an `error` trial must have no goal checks (it was never scored)"))
        return _Replayed(None, calls)

    if summary.get("attempt") in error_attempts:
        out.append(Mismatch(trial, None, "attempts", "the summarised attempt also has an attempt_error record"))
    attempts = summary.get("attempts")
    if isinstance(attempts, int) and attempt_errors[trial] < attempts - 1:
        out.append(Mismatch(trial, None, "attempts", f"{attempts} attempts claimed, but only {attempt_errors[trial]} earlier attempt(s) failed"))

    # counts
    if summary.get("steps") != calls:
        out.append(Mismatch(trial, None, "steps", f"the summary claims {_show(summary.get('steps'))} tool calls, the log holds {calls}"))
    if "events" in summary and summary["events"] != len(events):
        out.append(Mismatch(trial, None, "events", f"the summary claims {_show(summary['events'])} logged steps, the log holds {len(events)}"))
    for name, total in (("input_tokens", tokens_in), ("output_tokens", tokens_out), ("cost", cost)):
        if name in summary and not _same_number(summary[name], total):
            out.append(Mismatch(trial, None, name, f"the summary claims {_show(summary[name])}, the model turns add up to {_show(total)}"))

    # goal checks
    expected, _ = suite.expected_state(task)
    answer = summary.get("answer")
    checks = evaluate(task, world.state, expected, actions, answer if isinstance(answer, str) else "")
    logged_checks = summary.get("checks") if isinstance(summary.get("checks"), dict) else {}
    run_side = _run_side_claims(trial, summary, logged_checks, calls, manifest, out)
    checks.update(run_side)
    for name in checks:
        got = logged_checks.get(name)
        want = checks[name]
        if not isinstance(got, dict):
            out.append(Mismatch(trial, None, f"checks.{name}", f"missing from the log; the replay gives passed={want['passed']}"))
        elif got.get("passed") != want["passed"]:
            out.append(Mismatch(trial, None, f"checks.{name}", f"the log says passed={_show(got.get('passed'))}, the replay gives passed={want['passed']} ({_clip(str(want['detail']), 80) or 'no detail'})"))
        elif got.get("detail") != want["detail"]:
            text = f"detail differs: {_differs('detail', got.get('detail'), want['detail'])}"
            if detail_is_soft:
                notes.append(f"checks.{name}: the wording of a check's detail differs (the run was made by another harness version)")
            else:
                out.append(Mismatch(trial, None, f"checks.{name}", text))
    for name in logged_checks:
        if name not in checks:
            out.append(Mismatch(trial, None, f"checks.{name}", "in the log, but the task has no such check"))
    passed = all(c["passed"] for c in checks.values())
    replayed_outcome = "success" if passed else "failure"
    if outcome != replayed_outcome:
        out.append(Mismatch(trial, None, "outcome", f"the log claims {_show(outcome)}, the replay gives {_show(replayed_outcome)}"))
    failed = [name for name, c in checks.items() if not c["passed"]]
    reason = None if passed else "failed: " + ", ".join(failed)
    if "reason" in summary and summary["reason"] != reason and outcome == replayed_outcome:
        out.append(Mismatch(trial, None, "reason", _differs("reason", summary["reason"], reason)))
    if summary.get("final_state_hash") != world.state_hash:
        out.append(Mismatch(trial, None, "final_state_hash", _differs("final_state_hash", summary.get("final_state_hash"), world.state_hash)))
    if "milestones" in summary and summary["milestones"] != tracker.reached:
        out.append(Mismatch(trial, None, "milestones", _differs("milestones", summary["milestones"], tracker.reached)))
    return _Replayed(replayed_outcome, calls)


def _run_side_claims(trial: str, summary: dict[str, Any], logged: dict[str, Any], calls: int,
                     manifest: dict[str, Any], out: list[Mismatch]) -> dict[str, dict[str, Any]]:
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


# ------------------------------------------------------------------------------ the run
def verify_run(run_dir: str | Path, *, suite: Any = None, log: RunLog | None = None) -> VerifyResult:
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
    loaded, problems = load_run_suite(manifest, run_dir, suite)
    if loaded is None:
        result.mismatches.extend(problems)
        result.seconds = time.perf_counter() - started
        return result
    result.suite_path = str(loaded.path)
    out, notes = result.mismatches, result.notes
    if manifest.get("tool_schema_hashes") and manifest["tool_schema_hashes"] != loaded.tool_schema_hashes():
        out.append(Mismatch(None, None, "tool_schema_hashes", "the manifest's tool-schema hashes are not the suite's" +
                            _changed_tools(manifest["tool_schema_hashes"], loaded.tool_schema_hashes())))
    soft = manifest.get("harness_version") != __version__
    if soft:
        notes.append(f"the run was made by harness {manifest.get('harness_version')}, verified by {__version__}")
    if log.torn_bytes:
        notes.append(f"the log ends in a torn line ({log.torn_bytes} bytes), ignored")
    if log.orphan_attempts:
        notes.append(f"{log.orphan_attempts} attempt(s) without a summary (killed or retried), ignored")

    tasks_by_id = {t.id: t for t in loaded.tasks}
    for task_id in manifest.get("tasks") or []:
        if task_id not in tasks_by_id:
            out.append(Mismatch(None, None, "tasks", f"the run's task {task_id!r} is not in the suite"))
    variants = _run_variants(manifest, tasks_by_id, out)

    attempt_errors: Counter = Counter(rec["trial"] for rec in log.attempt_errors)
    error_attempts = {rec["attempt"] for rec in log.attempt_errors}
    replayed: dict[str, str | None] = {}
    for summary in sorted(log.summaries.values(), key=_trial_order(manifest)):
        trial = summary["trial"]
        result.trials += 1
        _check_identity(summary, manifest, out)
        if not isinstance(summary.get("task"), str) or summary["task"] not in tasks_by_id:
            out.append(Mismatch(trial, None, "task", f"task {_show(summary.get('task'))} is not in the suite: the trial cannot be replayed"))
            continue
        variant = variants.get(summary["task"], {}).get(summary.get("variant")) if isinstance(summary.get("variant"), str) else None
        if variant is None:
            out.append(Mismatch(trial, None, "variant", f"the run's perturbations give the task no input variant "
                                f"{_show(summary.get('variant'))}: the trial cannot be replayed"))
            continue
        _check_variant(summary, variant, out)
        task = variant.task  # the task as the variant presented it (instruction, hidden user facts)
        if summary.get("outcome") not in ("success", "failure", "error"):
            out.append(Mismatch(trial, None, "outcome", f"unknown outcome {_show(summary.get('outcome'))}"))
            continue
        result.error_trials += summary["outcome"] == "error"
        events = sorted(log.trial_steps(trial), key=lambda e: e["step"] if isinstance(e.get("step"), int) else -1)
        try:
            rep = _replay_trial(loaded, task, summary, events, manifest, attempt_errors, error_attempts, out, notes, soft)
        except Exception as exc:  # noqa: BLE001 - a hostile log must give a mismatch, never a traceback
            out.append(Mismatch(trial, None, "replay", f"the logged trial cannot be replayed: {type(exc).__name__}: {_clip(str(exc))}"))
            continue
        result.steps_replayed += rep.steps
        replayed[trial] = rep.outcome

    _check_completeness(log, manifest, variants, out)
    _check_metrics(run_dir, log, replayed, out)
    result.notes = [note if times == 1 else f"{note} (×{times})" for note, times in Counter(notes).items()]
    result.seconds = time.perf_counter() - started
    return result


def _run_variants(manifest: dict[str, Any], tasks_by_id: dict[str, Any], out: list[Mismatch]) -> dict[str, dict[str, Any]]:
    """task id -> variant id -> Variant: the input variants the run's manifest calls for (the
    unperturbed `base` alone for a run without perturbations), regenerated from its seed."""
    from bench.world.variants import FAMILIES, VariantSpec, variants_of

    perturbations = manifest.get("perturbations") or []
    try:
        families = {p["family"]: dict(p.get("params") or {}) for p in perturbations}
        counts = {int(p.get("count", 1)) for p in perturbations}
        if not set(families) <= set(FAMILIES) or len(counts) > 1:
            raise ValueError("unknown family or mixed counts")
        spec = VariantSpec(families, counts.pop() if counts else 1)
    except (TypeError, KeyError, ValueError, AttributeError):
        out.append(Mismatch(None, None, "perturbations", f"the manifest's perturbations cannot be read: {_show(perturbations)}"))
        spec = VariantSpec({}, 1)
    base_seed = manifest.get("base_seed", 0)
    return {task_id: {v.id: v for v in variants_of(task, spec, base_seed)} for task_id, task in tasks_by_id.items()
            if task_id in (manifest.get("tasks") or [])}


def _check_variant(summary: dict[str, Any], variant: Any, out: list[Mismatch]) -> None:
    """The summary's record of its input variant must be the regenerated variant."""
    from bench.world.variants import BASE

    trial = summary["trial"]
    family = summary.get("variant_family", BASE)
    if family != variant.family:
        out.append(Mismatch(trial, None, "variant_family", _differs("variant_family", family, variant.family)))
    if variant.family != BASE:
        if summary.get("variant_params") != variant.params:
            out.append(Mismatch(trial, None, "variant_params", _differs("variant_params", summary.get("variant_params"), variant.params)))
        if summary.get("instruction") != variant.task.instruction:
            out.append(Mismatch(trial, None, "instruction", _differs("instruction", summary.get("instruction"), variant.task.instruction)))


def _check_completeness(log: RunLog, manifest: dict[str, Any], variants: dict[str, dict[str, Any]], out: list[Mismatch]) -> None:
    k = manifest.get("k")
    tasks = manifest.get("tasks") or []
    if not isinstance(k, int):
        out.append(Mismatch(None, None, "k", f"the manifest's k is not a whole number ({_show(k)})"))
        return
    expected = [f"{t}/{v}/{i}" for t in tasks for v in variants.get(t, {"base": None}) for i in range(k)]
    present = set(log.summaries)
    for trial in expected:
        if trial not in present:
            out.append(Mismatch(trial, None, "completeness", "no summary: the trial is missing (an unfinished run resumes with the same command)"))
    wanted = set(expected)
    for trial in sorted(present - wanted):
        out.append(Mismatch(trial, None, "completeness", "a trial that the run's tasks, variants and k do not call for"))
    for trial, times in sorted(Counter(log.duplicate_summaries).items()):
        out.append(Mismatch(trial, None, "duplicate", f"the trial has {times + 1} summary records; exactly one is allowed"))


def _check_metrics(run_dir: Path, log: RunLog, replayed: dict[str, str | None], out: list[Mismatch]) -> None:
    """The figures `trajbench report` computes from the logged outcomes against the same figures
    from the replayed outcomes (suite means; intervals follow from the same per-task counts)."""
    from bench.analysis import metrics
    from bench.analysis.report import build_report

    try:
        report = build_report(run_dir, bootstrap=1)
    except Exception as exc:  # noqa: BLE001 - a hostile log must give a mismatch, never a traceback
        out.append(Mismatch(None, None, "metrics", f"`trajbench report` cannot compute the run's figures from this log "
                            f"({type(exc).__name__}: {_clip(str(exc))})"))
        return
    from bench.world.variants import BASE

    logged_rows = {r["task"]: (r["n"], r["successes"]) for r in report["tasks"]}
    logged: dict[tuple[str, Any], list[int]] = defaultdict(lambda: [0, 0])
    replay: dict[tuple[str, Any], list[int]] = defaultdict(lambda: [0, 0])
    for trial, summary in log.summaries.items():
        family = str(summary.get("variant_family", BASE))
        for table, outcome in ((logged, summary.get("outcome")), (replay, replayed.get(trial))):
            if outcome in ("success", "failure"):
                task = summary.get("task")
                cell = table[(family, task if isinstance(task, str) else repr(task))]
                cell[0] += 1
                cell[1] += outcome == "success"
    for key in sorted(set(logged) | set(replay), key=str):
        family, task = key
        was, now = logged.get(key, [0, 0]), replay.get(key, [0, 0])
        if family == BASE:
            was = list(logged_rows.get(task, (0, 0)))  # what `trajbench report` scores
        if was != now:
            where = f"task {task}" if family == BASE else f"task {task}, input variant family {family}"
            out.append(Mismatch(None, None, "metrics", f"{where}: the log scores {was[1]}/{was[0]} successes, the replay {now[1]}/{now[0]}"))
    counts = {task: cell for (family, task), cell in replay.items() if family == BASE}
    pairs = [(n, c) for n, c in counts.values()]
    replay_suite = metrics.suite_summary(pairs, B=1)
    claimed = report["suite"]
    figures = [("pass@1", claimed["pass@1"]["mean"], replay_suite["pass@1"]["mean"]),
               ("flip", claimed["flip"]["mean"], replay_suite["flip"]["mean"])]
    for name in ("pass^k", "pass@k"):
        mine = {e["k"]: e["mean"] for e in replay_suite[name]}
        for entry in claimed[name][1:]:  # k = 1 is pass@1
            figures.append((name.replace("k", str(entry["k"])), entry["mean"], mine.get(entry["k"])))
    for name, was, now in figures:
        if not _same_number(was, now):
            out.append(Mismatch(None, None, "metrics", f"{name}: the log claims {_fmt(was)}, the replay gives {_fmt(now)}"))


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ------------------------------------------------------------------------------ output
def render_text(result: VerifyResult, max_per_trial: int = 5, max_lines: int = 200) -> str:
    lines = [f"trajbench verify — {_clip(result.run_dir, 200)}",
             f"agent {_clip(result.agent, 200)}; suite {_clip(result.suite_name)} (hash {result.suite_hash[:12]})"
             + (f" replayed from {result.suite_path}" if result.suite_path else "")]
    by_trial: dict[str | None, list[Mismatch]] = defaultdict(list)
    for m in result.mismatches:
        by_trial[m.trial].append(m)
    shown = 0
    for trial, items in by_trial.items():
        for m in items[:max_per_trial] if trial is not None else items:
            if shown >= max_lines:
                break
            lines.append("  " + _clip(str(m), 240))
            shown += 1
        if trial is not None and len(items) > max_per_trial and shown < max_lines:
            lines.append(f"  trial {trial}: ... {len(items) - max_per_trial} more mismatch(es) in this trial")
    if shown >= max_lines and len(result.mismatches) > shown:
        lines.append(f"  ... {len(result.mismatches) - shown} more (use --json for all)")
    for note in result.notes[:20]:
        lines.append(f"  note: {_clip(note, 240)}")
    if len(result.notes) > 20:
        lines.append(f"  ... {len(result.notes) - 20} more notes (use --json)")
    what = f"{result.trials} trials ({result.error_trials} infrastructure errors), {result.steps_replayed} tool calls replayed in {result.seconds:.2f} s"
    if result.ok:
        lines.append(f"verified: {what}; every observation, state hash, check, outcome and figure matches the log")
    else:
        lines.append(f"FAILED: {len(result.mismatches)} mismatch(es) in {result.trials_with_mismatches} trial(s); {what}")
    return "\n".join(lines)


def run_verify(run_dir: str | Path, *, suite: str | None = None, as_json: bool = False) -> int:
    """The `trajbench verify` command: prints the result; exit 0 when clean, 1 on any mismatch."""
    result = verify_run(run_dir, suite=suite)
    if as_json:
        sys.stdout.write(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_text(result))
    return 0 if result.ok else 1
