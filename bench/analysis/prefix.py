"""Restore a logged prefix of a trial, and resume an agent from it (docs/divergence.md, "Causal replay").

A *prefix* is a logged trial's first `n` events (tool calls, `ask_user` turns, model turns). It
is restored by replaying its tool calls on a fresh world with `verify`'s own engine
(`bench.analysis.replay`, through `bench.episode.StepRules`): every observation, error and
state hash must equal the logged one, or restoring fails with one error naming the trial, the
step and what differs (a world that drifted from the log would make every continuation
meaningless). The restored world is handed to a fresh `Episode`, which logs the prefix's events
again under its own trial id, so a continuation is a whole trajectory.

Resuming is an optional agent protocol: an agent object with a method

    resume(episode, prefix: list[str]) -> str | None

continues the trial from the restored episode (`prefix` holds the step keys already taken,
`bench.canonical.step_key`, tool and `ask_user` steps in order), drawing its own randomness from
`episode.seed`. An agent without it cannot be replayed: `resumable` raises a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.analysis.replay import _TrialReplay
from bench.canonical import step_key
from bench.episode import Episode, EventSink
from bench.errors import BenchError
from bench.runs.rundir import RunLog, StepEvent
from bench.world.suite import Suite
from bench.world.task import Task

RESUME_PROTOCOL = "resume(episode, prefix) -> answer"


@dataclass(frozen=True)
class Prefix:
    """The first events of a logged trial: the node of its task's prefix tree they lead to."""

    trial: str
    task: Task
    events: tuple[StepEvent, ...]

    @property
    def keys(self) -> list[str]:
        """The step keys of the prefix's tool and `ask_user` steps, in order."""
        return [step_key(str(e.get("tool")), e.get("args")) for e in self.events if e.get("kind") in ("tool", "user")]

    def extended(self, event: StepEvent) -> Prefix:
        return Prefix(self.trial, self.task, self.events + (event,))


def prefix_of(log: RunLog, suite: Suite, trial: str, step: int) -> Prefix:
    """The prefix of `trial` before its logged event `step` (0 = the empty prefix). Only trials
    on the base input are supported (a variant's task differs from the suite's)."""
    summary = log.summaries.get(trial)
    where = str(log.path)
    if summary is None:
        raise BenchError(f"no trial {trial!r} in the run (trial ids look like TASK/base/INDEX)", file=where, field="trial")
    if summary.get("variant") != "base":
        raise BenchError(f"trial {trial!r} ran on an input variant; replay from a prefix supports base inputs only", field="trial")
    task = next((t for t in suite.tasks if t.id == summary.get("task")), None)
    if task is None:
        raise BenchError(f"the trial's task {summary.get('task')!r} is not in the suite", field="task")
    events = sorted(log.trial_steps(trial), key=lambda e: e.get("step", -1))
    if not 0 <= step <= len(events):
        raise BenchError(f"trial {trial!r} has {len(events)} logged steps; a prefix ends at 0..{len(events)}, not {step}", field="step")
    return Prefix(trial, task, tuple(events[:step]))


def restore(suite: Suite, prefix: Prefix, *, trial_id: str, attempt: str, seed: int, max_steps: int,
            timeout_s: float | None, sink: EventSink) -> Episode:
    """A fresh episode of the prefix's task, standing where the prefix left it (see the module
    docstring). Raises BenchError when a logged step does not replay to its logged result."""
    mismatches: list[Any] = []
    replay = _TrialReplay(suite, prefix.task, prefix.trial, mismatches, [])
    for ev in prefix.events:
        replay.step(ev)
        if mismatches:
            raise BenchError(f"the prefix of trial {prefix.trial} does not restore: {mismatches[0]} "
                             "(the suite or the log changed since the run; `trajbench verify` shows every difference)",
                             field=f"step {ev.get('step')}")
    episode = Episode(suite, prefix.task, trial_id=trial_id, attempt=attempt, seed=seed, max_steps=max_steps,
                      timeout_s=timeout_s, sink=sink)
    episode.adopt_prefix(replay.rules, [dict(e) for e in prefix.events])
    return episode


def resumable(agent: Any) -> Any:
    """The agent, checked to follow the resume protocol (else one clear error naming it)."""
    if not callable(getattr(agent, "resume", None)):
        raise BenchError(f"agent {getattr(agent, 'name', agent)!r} cannot continue from a prefix: a replayed agent must have "
                         f"a method {RESUME_PROTOCOL} (docs/divergence.md, 'Causal replay'); built-in: sim, local, openai, "
                         "langgraph, agents-sdk, pydantic-ai, command (cmd:, whose child reads TRAJBENCH_PREFIX)", field="agent")
    if getattr(agent, "resume_supported", True) is False:
        raise BenchError(f"agent {getattr(agent, 'name', agent)!r} declares that it cannot continue from a prefix "
                         "(resume = \"none\"): a command agent resumes by reading the restored calls from the JSON file "
                         "TRAJBENCH_PREFIX names and continuing after them (docs/divergence.md, 'Causal replay'); "
                         "set resume = \"prefix\" once the child does", field="agent")
    return agent


class Resumed:
    """An agent object whose `run` resumes `agent` from `prefix` (so the trial machinery,
    `bench.runs.trial.play`, runs and scores a continuation like any trial)."""

    def __init__(self, agent: Any, prefix: list[str]):
        self.agent, self.prefix = resumable(agent), prefix
        self.name = getattr(agent, "name", "agent")

    def run(self, episode: Episode) -> str | None:
        result: str | None = self.agent.resume(episode, list(self.prefix))
        return result
