"""Causal replay: which step decided a run? (docs/divergence.md, "Causal replay").

The divergence analysis finds where a task's trials part and which branch goes with failure;
that is correlation. Here a branch node (a logged prefix, `bench.analysis.prefix`) is restored
and the agent is resumed from it with fresh seeds: m continuations from the node itself, then,
for each alternative next step (those the run's trials took there, and those the node's own
continuations took), m continuations with that step forced. Per alternative:

* the continuation success rate with its exact 95% Clopper–Pearson interval;
* the causal effect of choosing it: its rate minus the best alternative's, with Newcombe's
  hybrid-score 95% interval (method 10, from Wilson intervals);
* a verdict: **confirmed** when Boschloo's exact test (two-sided) of the alternative against
  the best one rejects at 5% after Holm's step-down across the node's alternatives;
  **not confirmed** otherwise. A node is confirmed when any alternative is.

The point of no return of a failed trial is the earliest step i such that, from every prefix
of length ≥ i along its path, the upper 95% Clopper–Pearson bound of the continuation success
rate lies below `threshold` (default 0.1). The statistics live in `bench.analysis.verdicts`.

`replay_task` logs every continuation into a replay directory (`bench.analysis.replays`: a run
directory with `replay_of`), as it runs; the same command (or `trajbench replay REPLAY_DIR`)
resumes a killed replay, reading the continuations already logged back instead of running them
again, and the verdict it prints is read back from that directory, as `report` reads it.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from bench.analysis.prefix import Prefix, Resumed, prefix_of, restore, resumable
from bench.analysis.replays import (
    ReplayStore,
    arm_variant,
    check_original,
    default_dir,
    fingerprint,
    open_store,
    read_verdict,
    replay_info,
    replay_manifest,
)
from bench.analysis.verdicts import (
    ALPHA,
    TEST,
    Arm,
    clopper_pearson,
    holm,
    newcombe_difference,
    no_return_point,
    verdicts,
)
from bench.canonical import derive_seed, step_key
from bench.errors import BenchError
from bench.imports.core import refuse_replay
from bench.runs.rundir import RunLog, StepEvent, read_manifest, read_run, suite_of_run
from bench.runs.trial import AttemptError, play, play_async
from bench.world.suite import Suite

__all__ = ["ALPHA", "TEST", "Arm", "Sampler", "clopper_pearson", "holm", "newcombe_difference", "replay_node",
           "replay_task", "verdicts"]


# ------------------------------------------------------------------------------ sampling
Sink = Callable[[dict[str, Any]], None]


@dataclass
class Sampler:
    """Runs continuations of one agent from restored prefixes. `sink` receives every event and
    trial record (None: discarded); with a `store` (a replay directory,
    `bench.analysis.replays.ReplayStore`) they are logged there, and a continuation already
    logged is read back instead of run again (resume). `budget` caps the continuations."""

    suite: Suite
    agent: Any
    max_steps: int
    seed: int = 0
    budget: int | None = None
    sink: Sink | None = None
    store: ReplayStore | None = None
    done: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # trial id -> outcome, next step
    ran: set[str] = field(default_factory=set)  # the continuations this replay holds (logged or read back)
    fresh: int = 0  # continuations this process ran
    timeout_s: float | None = None  # each continuation's time limit (the original run's), None: none

    def __post_init__(self) -> None:
        resumable(self.agent)
        if self.store is not None:
            self.done, self.sink = self.store.done, self.store.append

    @property
    def used(self) -> int:
        return len(self.ran)

    def cost(self, prefix: Prefix, action: str | None, m: int) -> int:
        """How many continuations an arm adds (those already held cost nothing)."""
        variant = arm_variant(prefix.trial, len(prefix.events), action)
        return sum(f"{prefix.task.id}/{variant}/{j}" not in self.ran for j in range(m))

    def fits(self, prefix: Prefix, action: str | None, m: int) -> bool:
        return self.budget is None or self.used + self.cost(prefix, action, m) <= self.budget

    def arm(self, prefix: Prefix, action: str | None, forced: StepEvent | None, m: int, role: str = "alternative") -> Arm:
        if not self.fits(prefix, action, m):
            raise BudgetSpent(f"the replay budget of {self.budget} continuations is spent ({self.used} held; "
                              f"an arm needs m = {m}): raise --budget to resume into the remaining arms")
        variant = arm_variant(prefix.trial, len(prefix.events), action)
        if self.store is not None:
            self.store.note_arm({"variant": variant, "trial": prefix.trial, "step": len(prefix.events), "forced": action,
                                 "role": role})
        arm = Arm(action)
        for j in range(m):
            outcome, next_key = self.continuation(prefix, forced, j)
            arm.n += 1
            arm.successes += outcome == "success"
            arm.next_actions.append(next_key)
        return arm

    def continuation(self, prefix: Prefix, forced: StepEvent | None, j: int) -> tuple[str, str | None]:
        """One continuation (trial TASK/VARIANT/J, bench.analysis.replays); returns its outcome
        and the first step it took after the prefix (and the forced step)."""
        action = None if forced is None else _key(forced)
        variant = arm_variant(prefix.trial, len(prefix.events), action)
        trial_id = f"{prefix.task.id}/{variant}/{j}"
        self.ran.add(trial_id)
        if trial_id in self.done:
            return self.done[trial_id]
        seed = derive_seed(self.seed, prefix.task.id, variant, j)
        attempt = f"{trial_id}@{uuid.uuid4().hex[:10]}"
        events: list[dict[str, Any]] = []

        def sink(ev: dict[str, Any]) -> None:
            events.append(ev)
            if self.sink is not None:
                self.sink(ev)

        episode = restore(self.suite, prefix, trial_id=trial_id, attempt=attempt, seed=seed,
                          max_steps=self.max_steps, timeout_s=None, sink=sink)
        keys = prefix.keys
        if forced is not None:  # the forced step is the last restored call the agent is told of
            tool, args = str(forced.get("tool")), forced.get("args") if isinstance(forced.get("args"), dict) else {}
            episode.restored_calls.append((tool, args, episode.call(tool, args)))
            keys = keys + [_key(forced)]
        started_at = time.time()
        try:
            if self.timeout_s is None:
                result = play(Resumed(self.agent, keys), episode)
            else:  # as `trajbench run` plays a trial: an agent that hangs is stopped at the limit
                result = asyncio.run(play_async(Resumed(self.agent, keys), episode, self.timeout_s))
        except AttemptError as exc:
            if self.sink is not None:
                self.sink({"type": "attempt_error", "trial": trial_id, "attempt": attempt, "message": str(exc)})
            raise BenchError(f"continuation {trial_id} hit an infrastructure error ({exc}); re-run the same "
                             "command to resume the replay") from None
        if self.sink is not None:
            self.sink({"type": "trial", "trial": trial_id, "attempt": attempt, "task": prefix.task.id, "variant": variant,
                       "variant_family": "base", "index": j, "seed": seed, "started_at": started_at, "attempts": 1,
                       "replay": {"trial": prefix.trial, "step": len(prefix.events), "forced": action}, **result})
        self.fresh += 1
        start = len(prefix.events) + (forced is not None)
        after = [e for e in events[start:] if e.get("kind") in ("tool", "user")]
        self.done[trial_id] = (result["outcome"], _key(after[0]) if after else None)
        return self.done[trial_id]


class BudgetSpent(BenchError):
    pass


def _key(ev: StepEvent | dict[str, Any]) -> str:
    return step_key(str(ev.get("tool")), ev.get("args"))


# ------------------------------------------------------------------------------ nodes
def alternatives_at(log: RunLog, prefix: Prefix) -> dict[str, StepEvent]:
    """The next steps the run's trials of the prefix's task took after the same steps (step key
    -> one logged event of it)."""
    want = prefix.keys
    found: dict[str, StepEvent] = {}
    for trial, summary in sorted(log.summaries.items()):
        if summary.get("task") != prefix.task.id or summary.get("variant") != "base" or summary.get("outcome") == "error":
            continue
        steps = [e for e in log.trial_steps(trial) if e.get("kind") in ("tool", "user")]
        if len(steps) > len(want) and [_key(e) for e in steps[:len(want)]] == want:
            found.setdefault(_key(steps[len(want)]), steps[len(want)])
    return found


def replay_node(log: RunLog, sampler: Sampler, prefix: Prefix, m: int) -> dict[str, Any]:
    """m continuations from the node and m after each alternative next step, with verdicts."""
    node = sampler.arm(prefix, None, None, m, role="node")
    logged = alternatives_at(log, prefix)
    seen = {k: _event_of(k) for k in node.next_actions if k is not None and k not in logged}
    # the run's own alternatives first, then those only the node's continuations took; a
    # --budget too small for all of them leaves the last ones unreplayed (and says which)
    candidates = [*sorted(logged.items()), *sorted(seen.items())]
    if sampler.store is not None:
        sampler.store.note("alternatives", [key for key, _ in candidates])
    arms, unreplayed = [], []
    for key, ev in candidates:
        if not sampler.fits(prefix, key, m):
            unreplayed.append(key)
            continue
        arms.append(sampler.arm(prefix, key, ev, m))
    rows = verdicts(arms)
    return {"trial": prefix.trial, "step": len(prefix.events), "prefix": prefix.keys, "m": m, "node": node.as_dict(),
            "alternatives": rows, "unreplayed": unreplayed, "test": TEST,
            "verdict": "confirmed" if any(r["verdict"] == "confirmed" for r in rows) else "not confirmed"}


def _event_of(key: str) -> StepEvent:
    """A step event for a step key taken by a continuation (tool and arguments parsed back)."""
    tool, _, rest = key.partition("(")
    return {"kind": "user" if tool == "ask_user" else "tool", "tool": tool, "args": orjson.loads(rest[:-1])}


def point_of_no_return(log: RunLog, sampler: Sampler, prefix_at: Callable[[int], Prefix], length: int, m: int,
                       threshold: float = 0.1) -> dict[str, Any]:
    """Scan a failed trial's path backwards from its end: the earliest step from which every
    later prefix's continuation success has an upper 95% bound below `threshold`."""
    rows: list[dict[str, Any]] = []
    for step in range(length, -1, -1):
        arm = sampler.arm(prefix_at(step), None, None, m, role="no_return")
        rows.append({**arm.as_dict(), "step": step})
        if rows[-1]["interval"][1] >= threshold:
            break
    return {"point_of_no_return": no_return_point(rows, threshold), "threshold": threshold, "m": m, "steps": rows[::-1]}


def no_return_trials(log: RunLog, task: str, which: str) -> list[str]:
    """The trials `--no-return` names: every failed base trial of the task, or one trial of it."""
    if which == "failed":
        return [t for t, s in log.summaries.items()
                if s.get("task") == task and s.get("variant") == "base" and s.get("outcome") == "failure"]
    if which in log.summaries and log.summaries[which].get("task") == task:
        return [which]
    raise BenchError(f"--no-return takes `failed` or a trial of task {task!r} (e.g. {task}/base/0), got {which!r}",
                     field="--no-return")


def check_no_return_m(m: int, threshold: float) -> None:
    """A point of no return needs an m whose 0/m upper bound can fall below the threshold."""
    floor = clopper_pearson(0, m)[1]
    if floor >= threshold:
        least = next(n for n in range(m, 10_000) if clopper_pearson(0, n)[1] < threshold)
        raise BenchError(f"with m = {m} the upper 95% bound cannot go below {floor:.3f}, so no step can fall under "
                         f"--threshold {threshold}: use -m {least} or more (or a higher --threshold)", field="-m")


def no_return_of(log: RunLog, suite: Suite, sampler: Sampler, task: str, which: str, m: int,
                 threshold: float = 0.1) -> list[dict[str, Any]]:
    """The point of no return of each failed base trial of `task` (`which = "failed"`), or of the
    one trial `which` names."""
    trials = no_return_trials(log, task, which)
    check_no_return_m(m, threshold)
    lengths = {trial: len(log.trial_steps(trial)) for trial in trials}
    if sampler.store is not None:
        sampler.store.note("no_return", {"which": which, "trials": [{"trial": t, "length": n} for t, n in lengths.items()]})
    rows = []
    for trial, length in lengths.items():
        row = point_of_no_return(log, sampler, functools.partial(prefix_of, log, suite, trial), length, m, threshold)
        rows.append({"trial": trial, **row})
    return rows


# ------------------------------------------------------------------------------ a run's task
def node_of(log: RunLog, suite: Suite, task: str, at: str) -> Prefix:
    """The prefix to replay from: `divergence` (the task's statistical divergence point, found
    in an example trial of its first alternative) or `TRIAL:STEP` (a trial's first STEP events)."""
    if at != "divergence":
        trial, _, step = at.rpartition(":")
        if not trial or not step.isdigit():
            raise BenchError(f"--at takes `divergence` or TRIAL:STEP (e.g. {task}/base/0:3), got {at!r}", field="--at")
        return prefix_of(log, suite, trial, int(step))
    from bench.analysis.divergence.section import divergence_section

    row = next((r for r in divergence_section(log)["tasks"] if r["task"] == task), None)
    if row is None:
        raise BenchError(f"task {task!r} has no trials in the run", field="--task")
    d = row["divergence"]
    alt = next((a for a in (d or {}).get("alternatives", []) if a["action"] is not None and a["examples"]), None)
    if d is None or alt is None:
        raise BenchError(f"task {task!r} has no divergence point to replay (its trials do not part, or only by stopping); "
                         "pass --at TRIAL:STEP", field="--at")
    trial = alt["examples"][0]
    keys, j = d.get("prefix", []), 0
    for i, ev in enumerate(log.trial_steps(trial)):
        key = _key(ev) if ev.get("kind") in ("tool", "user") else None
        if j == len(keys) and key == alt["action"]:
            return prefix_of(log, suite, trial, i)
        j += j < len(keys) and key == keys[j]
    raise BenchError(f"the divergence point of task {task!r} cannot be found in trial {trial}", field="--at")


@dataclass(frozen=True)
class ReplayRequest:
    """What `trajbench replay` was asked for (a replay directory given as RUN_DIR: its own)."""

    task: str | None = None
    at: str = "divergence"
    m: int = 16
    agent: str | None = None  # an agent spec; default the run's own
    budget: int | None = None
    seed: int = 0
    no_return: str | None = None
    threshold: float = 0.1
    out: str | Path | None = None  # default RUN_DIR/replays/NAME (bench.analysis.replays.default_dir)


@dataclass
class ReplayOutcome:
    result: dict[str, Any]  # the verdict, read back from the replay directory
    replay_dir: Path
    resumed: int  # continuations already logged when this process began
    fresh: int  # continuations this process ran
    torn_bytes: int = 0  # a torn last line (a killed write) cut from the log before resuming


def _resumed_request(replay_dir: Path, asked: ReplayRequest) -> tuple[Path, ReplayRequest]:
    """RUN_DIR is itself a replay: continue it as recorded (the original, unchanged; its own
    task, node, m, agent and seed; `--budget` as asked now)."""
    manifest = read_manifest(replay_dir)
    info = replay_info(manifest, replay_dir) or {}
    original = check_original(replay_dir, info)
    if asked.out is not None and Path(asked.out).resolve() != replay_dir.resolve():
        raise BenchError(f"{replay_dir} is a replay directory: it resumes in place (leave out --out)", field="--out")
    if asked.task is not None and asked.task != info["task"]:
        raise BenchError(f"{replay_dir} is a replay of task {info['task']!r}, not {asked.task!r}: to resume it, leave out "
                         "--task; to replay another task, give the original run", field="--task")
    node = info["node"]
    which = info.get("no_return_which")
    return original, ReplayRequest(info["task"], str(info.get("at") or f"{node['trial']}:{node['step']}"), int(info["m"]),
                                   str(manifest["agent"]["name"]), asked.budget, int(manifest.get("base_seed") or 0),
                                   which, float(info["threshold"]), replay_dir)


def replay_task(run_dir: str | Path, asked: ReplayRequest) -> ReplayOutcome:
    """`trajbench replay`: sample the causal verdicts at one node of a task (see the module
    docstring), and with `no_return` the point of no return of the task's failed trials (or
    of one trial), logging every continuation into the replay directory; a replay directory
    that holds some of them already is resumed. The verdict is read back from the directory."""
    from bench.adapters.spec import parse_agent_spec

    run_dir = Path(run_dir)
    original, req = run_dir, asked
    if replay_info(read_manifest(run_dir), run_dir) is not None:
        original, req = _resumed_request(run_dir, asked)
    if req.task is None:
        raise BenchError("--task is required (except when RUN_DIR is a replay directory, which names its own)", field="--task")
    if not 0 < req.threshold < 1:
        raise BenchError(f"--threshold must be between 0 and 1, got {req.threshold}", field="--threshold")
    if req.no_return is not None:
        check_no_return_m(req.m, req.threshold)  # before anything runs
    refuse_replay(original)  # an imported run has no world to restore
    log = read_run(original)
    suite, missing = suite_of_run(log.manifest)
    if suite is None:
        raise BenchError(f"the run's suite cannot be loaded: {missing}", file=str(original / "run.json"), field="suite")
    run_agent = str((log.manifest.get("agent") or {}).get("name"))
    spec = parse_agent_spec(req.agent or run_agent)
    prefix = node_of(log, suite, req.task, req.at)
    if req.no_return is not None:
        no_return_trials(log, req.task, req.no_return)  # a bad --no-return is refused before anything runs
    info = {**fingerprint(original), "task": req.task, "at": req.at, "m": req.m, "threshold": req.threshold,
            "node": {"trial": prefix.trial, "step": len(prefix.events), "prefix": prefix.keys},
            "no_return_which": req.no_return, "seed": req.seed, "agent_hash": spec.hash, "test": TEST}
    out = Path(req.out) if req.out is not None else default_dir(original, req.task, prefix.trial, len(prefix.events),
                                                                 req.m, spec.name, run_agent)
    if req.budget is not None and req.budget < req.m:
        raise BudgetSpent(f"the replay budget of {req.budget} continuations cannot hold the node's own m = {req.m}: "
                          f"use --budget {req.m} or more, or a smaller -m", field="--budget")
    agent = resumable(spec.build())  # refused before anything is written
    store = open_store(out, original, replay_manifest(log.manifest, spec.as_dict(), info, req.m, req.seed))
    resumed = len(store.done)
    sampler = Sampler(suite, agent, int(log.manifest.get("max_steps") or 50), seed=req.seed, budget=req.budget,
                      store=store, timeout_s=log.manifest.get("timeout_s"))
    sealed = False
    try:
        replay_node(log, sampler, prefix, req.m)
        if req.no_return is not None:
            no_return_of(log, suite, sampler, req.task, req.no_return, req.m, req.threshold)
        sealed = True
    except BudgetSpent:
        sealed = True  # every arm begun is whole: the directory is a finished partial replay
        raise
    finally:
        store.close(seal=sealed)
    return ReplayOutcome(read_verdict(out), out, resumed, sampler.fresh, store.writer.torn_bytes)
