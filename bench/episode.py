"""The episode: everything an agent is handed for one trial, and the only door to the world.

An agent receives an `Episode` and may use:

- `instruction`, `policy`, `tool_specs` (JSON-Schema function specs, `ask_user` included),
  `seed` (derive all sampling from it), `max_steps` (tool-call budget);
- `call(tool, args)` -> `Observation`: run a tool (or `ask_user`); every call is logged as a step;
- `log_model_turn(...)`: record a model turn (messages, output, tokens, latency, cost);
- `finish(answer)` or simply returning the answer string from the agent.

Exceeding the budget or the time limit raises `EpisodeOver`, a BaseException so that an agent's
own `except Exception` does not swallow it. `Agent` is the protocol an agent object follows;
`StepRules` is what one call does to the trial, shared with the replay of a logged trial.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from bench.canonical import dump_line, json_copy
from bench.world.goal import LoggedAction, MilestoneTracker, evaluate
from bench.world.suite import Suite
from bench.world.task import Task
from bench.world.tools import ToolOutcome, World
from bench.world.user import ScriptedUser

EventSink = Callable[[dict[str, Any]], None]
ASK_USER = "ask_user"


class Agent(Protocol):
    """An agent adapter: `run(episode)` (sync) or `arun(episode)` (async) returning the final
    answer, or None when the answer was given with `episode.finish`."""

    name: str

    def run(self, episode: Episode) -> str | None: ...


class EpisodeOver(BaseException):
    """The episode ended under the agent (budget, time limit, or abandoned by the runner)."""


class StepBudgetExhausted(EpisodeOver):
    pass


class EpisodeTimeout(EpisodeOver):
    pass


@dataclass(frozen=True)
class Observation:
    """What a tool call returned: a JSON value, or an error message for the agent."""

    value: Any
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def text(self) -> str:
        """The observation as text for a language model."""
        if self.error is not None:
            return f"Error: {self.error}"
        if isinstance(self.value, str):
            return self.value
        return dump_line(self.value).strip().decode()


class StepRules:
    """What one step does to a trial — the rule shared by a live `Episode` and by the replay of a
    logged trial (`bench.analysis.replay`), so that the two can never disagree:

    - `ask_user` is answered by the scripted user from the task's hidden facts (a call without a
      string `question` is an error observation); it reads the state and changes nothing;
    - any other tool runs in the world (`World.execute`: unknown tools and invalid arguments are
      error observations, never exceptions);
    - every call, erroring or not, is recorded as a `LoggedAction` for the goal checks, and
      advances the milestones (state milestones are rechecked only after a step that may write).
    """

    def __init__(self, world: World, task: Task):
        self.world = world
        self.user = ScriptedUser(task.user_facts)
        self.milestones = MilestoneTracker(task.milestones, world.state)
        self.actions: list[LoggedAction] = []

    def ask_user(self, args: Any) -> ToolOutcome:
        question = args.get("question") if isinstance(args, dict) else None
        if not isinstance(question, str):
            return ToolOutcome(None, "invalid arguments to ask_user: question: a string is required", True,
                               self.world.state_hash)
        return ToolOutcome(self.user.answer(question), None, True, self.world.state_hash)

    def call_tool(self, tool: str, args: Any) -> ToolOutcome:
        return self.world.execute(tool, args)

    def record(self, step: int, tool: str, args: Any, outcome: ToolOutcome) -> LoggedAction:
        action = LoggedAction(step, tool, args if isinstance(args, dict) else {}, outcome.error)
        self.actions.append(action)
        self.milestones.observe(step, action, self.world.state, not outcome.read_only)
        return action


class Episode:
    def __init__(
        self,
        suite: Suite,
        task: Task,
        *,
        trial_id: str,
        attempt: str,
        seed: int,
        max_steps: int,
        timeout_s: float | None,
        sink: EventSink,
        variant: str = "base",
    ):
        self._suite = suite
        self._task = task
        self.trial_id = trial_id
        self.attempt = attempt
        self.task_id = task.id
        self.instruction = task.instruction
        self.variant = variant  # the input-variant family ("base" = the unperturbed input)
        self.policy = suite.policy
        self.tool_specs = suite.tool_specs()
        self.seed = seed
        self.max_steps = max_steps
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._sink = sink
        self._world = suite.new_world(task)
        self._rules = StepRules(self._world, task)
        self.actions: list[LoggedAction] = self._rules.actions
        self.answer: str | None = None
        self.event_count = 0
        self.tool_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.budget_exhausted = False
        self.timed_out = False
        self.closed = False
        self.annotations: dict[str, Any] = {}  # adapter facts for the summary (model, sim truth)
        self.restored_calls: list[tuple[str, Any, Observation]] = []  # the calls of a restored prefix (adopt_prefix)
        self._lock = threading.Lock()

    # -- the agent's side -------------------------------------------------------------
    def call(self, tool: str, args: dict[str, Any] | None = None) -> Observation:
        with self._lock:  # close() waits for an in-flight call: the end state is never torn
            return self._call(tool, args)

    def _call(self, tool: str, args: dict[str, Any] | None) -> Observation:
        self._check_open()
        if self.tool_calls >= self.max_steps:
            self.budget_exhausted = True
            raise StepBudgetExhausted(f"step budget of {self.max_steps} tool calls exhausted")
        args = {} if args is None else args
        self.tool_calls += 1
        started = time.time()
        kind = "user" if tool == ASK_USER else "tool"
        outcome = self._rules.ask_user(args) if kind == "user" else self._rules.call_tool(tool, args)
        self._rules.record(self.event_count, tool, args, outcome)
        self._emit({
            "kind": kind, "tool": tool, "args": _loggable_args(args), "observation": outcome.observation,
            "error": outcome.error, "read_only": outcome.read_only, "state_hash": outcome.state_hash,
            "t_start": started, "t_end": time.time(),
        })
        return Observation(outcome.observation, outcome.error)

    def ask_user(self, question: str) -> Observation:
        return self.call(ASK_USER, {"question": question})

    def log_model_turn(
        self,
        *,
        messages: Any = None,
        output: Any = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        latency_s: float | None = None,
        cost: float | None = None,
        model: str | None = None,
    ) -> None:
        self._check_open()
        self.input_tokens += input_tokens or 0
        self.output_tokens += output_tokens or 0
        self.cost += cost or 0.0
        now = time.time()
        self._emit({
            "kind": "model", "model": model, "messages": messages, "output": output,
            "input_tokens": input_tokens, "output_tokens": output_tokens, "latency_s": latency_s,
            "cost": cost, "t_start": now - (latency_s or 0.0), "t_end": now,
        })

    @property
    def remaining_s(self) -> float | None:
        """Seconds left before the trial's time limit (None: no limit), for agents in a child process."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def finish(self, answer: str) -> None:
        self.answer = str(answer)

    # -- the harness's side -----------------------------------------------------------
    def privileged_task(self) -> tuple[Suite, Task]:
        """The task with its goal. For the reference and simulated agents only: a real agent
        that reads this is cheating."""
        return self._suite, self._task

    def adopt_prefix(self, rules: StepRules, events: list[dict[str, Any]]) -> None:
        """Start from a restored prefix (`bench.analysis.prefix`): the world and step rules that
        replaying the logged `events` built replace this episode's fresh ones, and the events are
        logged again under this trial, so a continuation's log is a whole trajectory that
        `verify` and the divergence analysis read like any other."""
        self._world, self._rules = rules.world, rules
        self.actions = rules.actions
        self.restored_calls = [(str(ev.get("tool")), ev.get("args"), Observation(ev.get("observation"), ev.get("error")))
                               for ev in events if ev.get("kind") != "model"]
        for ev in events:
            fields = {k: v for k, v in ev.items() if k not in ("type", "trial", "attempt", "step")}
            fields["restored"] = True  # replayed from the original's log, not taken by this agent
            if ev.get("kind") == "model":
                self.input_tokens += ev.get("input_tokens") or 0
                self.output_tokens += ev.get("output_tokens") or 0
                self.cost += ev.get("cost") or 0.0
            else:
                self.tool_calls += 1
            self._emit(fields)

    def close(self, wait_s: float | None = None) -> None:
        """Stop the episode: later calls raise and nothing more is logged. Waits for an
        in-flight call (the end state is never torn), for at most `wait_s` seconds when given:
        a tool stuck in an abandoned trial must not hang the run."""
        acquired = self._lock.acquire(timeout=-1 if wait_s is None else wait_s)
        self.closed = True
        if acquired:
            self._lock.release()

    def outcome_checks(self) -> dict[str, dict[str, Any]]:
        expected, _ = self._suite.expected_state(self._task)
        checks = evaluate(self._task, self._world.state, expected, self.actions, self.answer or "")
        if self.budget_exhausted:
            checks["within_budget"] = {"passed": False, "detail": f"more than {self.max_steps} tool calls"}
        if self.timed_out:
            checks["within_time"] = {"passed": False, "detail": "the trial timed out"}
        return checks

    @property
    def milestones_reached(self) -> dict[str, int | None]:
        return dict(self._rules.milestones.reached)

    @property
    def final_state_hash(self) -> str:
        return self._world.state_hash

    @property
    def final_state(self) -> dict[str, Any]:
        return self._world.state

    def _check_open(self) -> None:
        if self.closed:
            raise EpisodeOver("the episode is closed")
        if self._deadline is not None and time.monotonic() > self._deadline:
            self.timed_out = True
            raise EpisodeTimeout("the trial's time limit passed")

    def _emit(self, fields: dict[str, Any]) -> None:
        if self.closed:  # an abandoned call that finished after the trial was recorded
            return
        event = {"type": "step", "trial": self.trial_id, "attempt": self.attempt, "step": self.event_count}
        event.update(fields)
        self.event_count += 1
        self._sink(event)


def _loggable_args(args: Any) -> Any:
    """Arguments exactly as the tool received them (so `verify` can replay them); the canonical
    key used to compare steps is derived from these later. Non-JSON arguments become their repr."""
    try:
        return json_copy(args)
    except TypeError:
        return repr(args)
