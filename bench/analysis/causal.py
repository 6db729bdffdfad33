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
rate lies below `threshold` (default 0.1).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import orjson
from scipy import stats

from bench.analysis.exact import boschloo_test
from bench.analysis.metrics import wilson_interval
from bench.analysis.prefix import Prefix, Resumed, prefix_of, restore, resumable
from bench.canonical import derive_seed, step_key
from bench.errors import BenchError
from bench.runs.rundir import RunLog, StepEvent
from bench.runs.trial import play
from bench.world.suite import Suite

ALPHA = 0.05
TEST = "Boschloo exact test (two-sided) of each alternative against the best, Holm step-down at 5%"


def clopper_pearson(c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (conservative) binomial interval; (0, 1) when n = 0."""
    if n == 0:
        return (0.0, 1.0)
    a = (1 - confidence) / 2
    lo = 0.0 if c == 0 else float(stats.beta.ppf(a, c, n - c + 1))
    hi = 1.0 if c == n else float(stats.beta.ppf(1 - a, c + 1, n - c))
    return (lo, hi)


def newcombe_difference(c1: int, n1: int, c2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 − p2 (method 10), from the two Wilson intervals."""
    p1, p2 = c1 / n1, c2 / n2
    l1, u1 = wilson_interval(c1, n1, confidence)
    l2, u2 = wilson_interval(c2, n2, confidence)
    d = p1 - p2
    return (max(-1.0, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
            min(1.0, d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[int(i)] = running
    return adjusted


@dataclass
class Arm:
    """Continuations from the node with one next step forced (`action`; None: the node itself)."""

    action: str | None
    n: int = 0
    successes: int = 0
    next_actions: list[str | None] = field(default_factory=list)  # (the node's own arm) what each took next

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else math.nan

    def as_dict(self) -> dict[str, Any]:
        lo, hi = clopper_pearson(self.successes, self.n)
        return {"action": self.action, "n": self.n, "successes": self.successes, "rate": _r(self.rate),
                "interval": [_r(lo), _r(hi)]}


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def verdicts(arms: list[Arm]) -> list[dict[str, Any]]:
    """Each alternative's rate, effect against the best alternative and verdict (module docstring)."""
    if not arms:
        return []
    best = max(range(len(arms)), key=lambda i: (arms[i].rate, arms[i].n))
    b = arms[best]
    others = [i for i in range(len(arms)) if i != best]
    raw = [boschloo_test([arms[i].n, b.n], [arms[i].successes, b.successes])[0] for i in others]
    adjusted = dict(zip(others, holm(raw)))
    pvalue = dict(zip(others, raw))
    rows = []
    for i, arm in enumerate(arms):
        row = arm.as_dict()
        if i == best:
            row.update({"best": True, "effect": 0.0, "effect_interval": [0.0, 0.0], "p": None, "p_holm": None,
                        "verdict": "best"})
        else:
            lo, hi = newcombe_difference(arm.successes, arm.n, b.successes, b.n)
            confirmed = adjusted[i] <= ALPHA
            row.update({"best": False, "effect": _r(arm.rate - b.rate), "effect_interval": [_r(lo), _r(hi)],
                        "p": _r(pvalue[i]), "p_holm": _r(adjusted[i]),
                        "verdict": "confirmed" if confirmed else "not confirmed"})
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ sampling
Sink = Callable[[dict[str, Any]], None]


@dataclass
class Sampler:
    """Runs continuations of one agent from restored prefixes; `sink` receives every event
    and trial record (None: discarded), `budget` caps the continuations run."""

    suite: Suite
    agent: Any
    max_steps: int
    seed: int = 0
    budget: int | None = None
    sink: Sink | None = None
    used: int = 0

    def __post_init__(self) -> None:
        resumable(self.agent)

    def arm(self, prefix: Prefix, action: str | None, forced: StepEvent | None, m: int) -> Arm:
        arm = Arm(action)
        for j in range(m):
            outcome, next_key = self.continuation(prefix, forced, j)
            arm.n += 1
            arm.successes += outcome == "success"
            arm.next_actions.append(next_key)
        return arm

    def continuation(self, prefix: Prefix, forced: StepEvent | None, j: int) -> tuple[str, str | None]:
        """One continuation; returns its outcome and the first step it took after the prefix."""
        if self.budget is not None and self.used >= self.budget:
            raise BudgetSpent(f"the replay budget of {self.budget} continuations is spent")
        self.used += 1
        label = "node" if forced is None else _key(forced)
        trial_id = f"{prefix.task.id}/replay/{derive_seed(prefix.trial, len(prefix.events), label) % 10**8}-{j}"
        seed = derive_seed(self.seed, "replay", prefix.trial, len(prefix.events), label, j)
        events: list[dict[str, Any]] = []

        def sink(ev: dict[str, Any]) -> None:
            events.append(ev)
            if self.sink is not None:
                self.sink(ev)

        episode = restore(self.suite, prefix, trial_id=trial_id, attempt=f"{trial_id}@{j}", seed=seed,
                          max_steps=self.max_steps, timeout_s=None, sink=sink)
        keys = prefix.keys
        if forced is not None:
            episode.call(str(forced.get("tool")), forced.get("args") if isinstance(forced.get("args"), dict) else {})
            keys = keys + [_key(forced)]
        result = play(Resumed(self.agent, keys), episode)
        if self.sink is not None:
            self.sink({"type": "trial", "trial": trial_id, "attempt": f"{trial_id}@{j}", "task": prefix.task.id,
                       "seed": seed, "replay_of": {"trial": prefix.trial, "step": len(prefix.events),
                                                   "forced": None if forced is None else _key(forced)}, **result})
        after = [e for e in events[len(prefix.events):] if e.get("kind") in ("tool", "user")]
        return result["outcome"], (_key(after[0]) if after else None)


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
    node = sampler.arm(prefix, None, None, m)
    logged = alternatives_at(log, prefix)
    seen = {k: _event_of(k) for k in node.next_actions if k is not None and k not in logged}
    # the run's own alternatives first, then those only the node's continuations took; a
    # --budget too small for all of them leaves the last ones unreplayed (and says which)
    arms, unreplayed = [], []
    for key, ev in [*sorted(logged.items()), *sorted(seen.items())]:
        if sampler.budget is not None and sampler.used + m > sampler.budget:
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
    point = None
    for step in range(length, -1, -1):
        arm = sampler.arm(prefix_at(step), None, None, m)
        row = arm.as_dict()
        row["step"] = step
        rows.append(row)
        if row["interval"][1] >= threshold:
            break
        point = step
    return {"point_of_no_return": point, "threshold": threshold, "m": m, "steps": rows[::-1]}


def no_return_of(log: RunLog, suite: Suite, sampler: Sampler, task: str, which: str, m: int,
                 threshold: float = 0.1) -> list[dict[str, Any]]:
    """The point of no return of each failed base trial of `task` (`which = "failed"`), or of the
    one trial `which` names."""
    if which == "failed":
        trials = [t for t, s in log.summaries.items()
                  if s.get("task") == task and s.get("variant") == "base" and s.get("outcome") == "failure"]
    elif log.summaries.get(which, {}).get("task") == task:
        trials = [which]
    else:
        raise BenchError(f"--no-return takes `failed` or a trial of task {task!r} (e.g. {task}/base/0), got {which!r}",
                         field="--no-return")
    floor = clopper_pearson(0, m)[1]
    if floor >= threshold:
        least = next(n for n in range(m, 10_000) if clopper_pearson(0, n)[1] < threshold)
        raise BenchError(f"with m = {m} the upper 95% bound cannot go below {floor:.3f}, so no step can fall under "
                         f"--threshold {threshold}: use -m {least} or more (or a higher --threshold)", field="-m")
    rows = []
    for trial in trials:
        length = len(log.trial_steps(trial))
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


def replay_task(run_dir: str | Path, task: str, *, at: str = "divergence", m: int = 16, agent: Any = None,
                budget: int | None = None, seed: int = 0, no_return: str | None = None,
                threshold: float = 0.1) -> dict[str, Any]:
    """`trajbench replay`: the causal verdicts at one node of a task (see the module docstring),
    and with `no_return` the point of no return of the task's failed trials (or of one trial).
    `agent` defaults to the run's own agent (rebuilt from its spec)."""
    from bench.adapters.spec import parse_agent_spec
    from bench.runs.rundir import read_run, suite_of_run

    log = read_run(run_dir)
    suite, missing = suite_of_run(log.manifest)
    if suite is None:
        raise BenchError(f"the run's suite cannot be loaded: {missing}", file=str(Path(run_dir) / "run.json"), field="suite")
    if agent is None:
        agent = parse_agent_spec(str((log.manifest.get("agent") or {}).get("name"))).build()
    if m < 1:
        raise BenchError(f"-m must be at least 1, got {m}", field="-m")
    sampler = Sampler(suite, agent, int(log.manifest.get("max_steps") or 50), seed=seed, budget=budget)
    if not 0 < threshold < 1:
        raise BenchError(f"--threshold must be between 0 and 1, got {threshold}", field="--threshold")
    result = replay_node(log, sampler, node_of(log, suite, task, at), m)
    if no_return is not None:
        result["no_return"] = no_return_of(log, suite, sampler, task, no_return, m, threshold)
    result.update({"run_dir": str(run_dir), "task": task, "at": at, "continuations": sampler.used})
    return result
