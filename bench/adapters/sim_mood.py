"""`sim:mood?mood=q`: a simulated agent whose fork is a *symptom*, to validate causal replay.

Each trial draws a hidden "mood": bad with probability q. A bad-mood trial first makes an extra
lookup (the first read-only reference call with another argument: harmless) and later makes the
fatal write (the first verified-fatal substitution of the last write of the reference, as the
planted sim agents' wrong argument or wrong tool); a good-mood trial follows the reference. The extra lookup thus
goes perfectly with failure, and the statistical divergence analysis reports it, but it causes
nothing: the write does.

The mood is not in the conversation, so resuming from a prefix draws a fresh one
(`resume`): after the lookup a continuation fails with probability q whichever lookup was made;
after the fatal write it always fails. A task without a read-only reference call or a
fatal write substitution is followed exactly (p = 1).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from bench.adapters.sim import _corruptions, _succeeds, _wrong_args
from bench.canonical import derive_seed, step_key
from bench.episode import Episode
from bench.errors import BenchError
from bench.world.suite import Suite
from bench.world.task import Action, Task


@dataclass(frozen=True)
class MoodPlan:
    """A task's two moods: the extra lookup (inserted before reference step `lookup_at`) and
    the fatal write (replacing reference step `write_at`)."""

    lookup_at: int
    lookup: Action
    write_at: int
    write: Action


class MoodSimAgent:
    thread_stateless = True  # it keeps nothing per thread: its trials may reuse threads (bench/runs/trial.py)

    def __init__(self, name: str = "sim:mood", mood: Any = 0.5):
        try:
            self.q = float(mood)
        except (TypeError, ValueError):
            raise BenchError(f"mood must be a number in [0, 1], got {mood!r}", field="options.mood") from None
        if not 0 <= self.q <= 1:
            raise BenchError(f"mood must be in [0, 1], got {mood!r}", field="options.mood")
        self.name = name
        self._plans: dict[str, MoodPlan | None] = {}

    def mood_plan(self, suite: Suite, task: Task) -> MoodPlan | None:
        if task.id not in self._plans:
            self._plans[task.id] = _mood_plan(suite, task)
        return self._plans[task.id]

    def run(self, episode: Episode) -> str:
        return self.resume(episode, [])

    def resume(self, episode: Episode, prefix: Sequence[str]) -> str:
        """Continue after `prefix` with a fresh mood (see the module docstring)."""
        suite, task = episode.privileged_task()
        plan = self.mood_plan(suite, task)
        bad = random.Random(episode.seed).random() < self.q
        episode.annotations["sim"] = {"mood": "bad" if bad else "good", "true_p": 1.0 if plan is None else 1 - self.q}
        ref = list(task.reference_actions)
        done = _reference_done(ref, plan, prefix)
        looked = plan is not None and step_key(plan.lookup.tool, plan.lookup.args) in prefix
        for i in range(done, len(ref)):
            if plan is not None and bad and i == plan.lookup_at and not looked:
                episode.call(plan.lookup.tool, plan.lookup.args)
            write = plan is not None and bad and i == plan.write_at
            action = plan.write if write and plan is not None else ref[i]
            episode.call(action.tool, action.args)
        return task.answer_for_reference


def _reference_done(ref: list[Action], plan: MoodPlan | None, prefix: Sequence[str]) -> int:
    """How many reference steps the prefix has taken (the fatal write counts as the write)."""
    done = 0
    fatal = None if plan is None else step_key(plan.write.tool, plan.write.args)
    for key in prefix:
        if done < len(ref) and (key == step_key(ref[done].tool, ref[done].args)
                                or (plan is not None and done == plan.write_at and key == fatal)):
            done += 1
    return done


def _mood_plan(suite: Suite, task: Task) -> MoodPlan | None:
    ref = list(task.reference_actions)
    kinds = [getattr(suite.tools.get(a.tool), "read_only", None) for a in ref]  # None: ask_user
    reads = [i for i, ro in enumerate(kinds) if ro is True]
    writes = [i for i, ro in enumerate(kinds) if ro is False]
    if not reads or not writes or writes[-1] < reads[0]:
        return None
    fatal = [p for p in _corruptions(suite, task, ("wrong_arg", "wrong_tool"))
             if p.step == writes[-1] and not _succeeds(suite, task, p)]
    if not fatal:
        return None
    rng = random.Random(derive_seed("sim-mood", task.id))
    lookups = _wrong_args(suite, task, ref[reads[0]], rng)
    if not lookups:
        return None
    return MoodPlan(reads[0], Action(ref[reads[0]].tool, lookups[0]), writes[-1], fatal[0].actions[writes[-1]])

