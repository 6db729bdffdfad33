"""A SIMULATED agent with a habit, for the tool-overlay example in docs/regression.md.

It plays like `sim:noisy?p=...` (it follows the task's reference actions, failing each task
with a known probability), with one extra trait that real language-model agents share: it
learned the tools under their old argument names. Whenever it is about to send an argument
that it knows under an older name (`habit="order_number=order_id"`: the argument now called
`order_number` it remembers as `order_id`), it slips back to the old name with probability
`slip`. The harness then answers with an "invalid arguments" error; with probability `recover`
it reads the error and sends the call again correctly, otherwise it carries on without it.
A slip on a write tool therefore fails the task; a slip on a read is harmless here.

Without the overlay the agent never meets the new names, so it behaves exactly like the plain
sim agent: it is a clean way to see what `trajbench diff` reports when a tool change hurts.
It is a toy, not a real agent.

    trajbench run retail --agent examples/overlays/habit-agent.toml ...
"""

from __future__ import annotations

import random
from typing import Any

from bench.adapters.sim import SimAgent
from bench.canonical import derive_seed


def _parse_habit(habit: Any) -> dict[str, str]:
    if isinstance(habit, dict):
        return {str(k): str(v) for k, v in habit.items()}
    pairs = [p.split("=", 1) for p in str(habit).split(",") if p.strip()]
    return {new.strip(): old.strip() for new, old in pairs}


class _Habitual:
    """The episode as the habitual agent uses it: every call may slip to an old argument name."""

    def __init__(self, episode: Any, habits: dict[str, str], slip: float, recover: float):
        self._episode = episode
        self._habits = habits
        self._slip = slip
        self._recover = recover
        self._rng = random.Random(derive_seed("habit", episode.seed))
        self.slips = self.recovered = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._episode, name)

    def call(self, tool: str, args: dict[str, Any] | None = None) -> Any:
        args = dict(args or {})
        if any(name in self._habits for name in args) and self._rng.random() < self._slip:
            self.slips += 1
            stale = {self._habits.get(name, name): value for name, value in args.items()}
            observation = self._episode.call(tool, stale)
            if observation.ok or self._rng.random() >= self._recover:
                return observation
            self.recovered += 1
        return self._episode.call(tool, args)


class HabitAgent:
    def __init__(self, p: Any = 0.9, slip: Any = 0.5, recover: Any = 0.0, habit: Any = "order_number=order_id",
                 noise: Any = 0.0):
        self.sim = SimAgent(name="habit", p=p, noise=float(noise))
        self.habits = _parse_habit(habit)
        self.slip = float(slip)
        self.recover = float(recover)

    def run(self, episode: Any) -> str:
        habitual = _Habitual(episode, self.habits, self.slip, self.recover)
        answer = self.sim.run(habitual)
        # the sim part's success probability is not this agent's: do not report it as the truth
        sim_info = episode.annotations.pop("sim", {})
        episode.annotations["habit"] = {"slips": habitual.slips, "recovered": habitual.recovered,
                                        "sim_p": sim_info.get("true_p")}
        return answer
