"""`trajbench validate`: a suite's tasks are well-formed and their goals are meaningful.

For every task: the schema holds; every reference action runs without error; the reference
agent passes; the do-nothing agent fails unless the task says `noop_passes` (and passes if it
says so).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.adapters.builtin import NoopAgent, ReferenceAgent
from bench.episode import Episode
from bench.goal import _MISSING, resolve
from bench.suite import Suite
from bench.trial import play


@dataclass
class Problem:
    file: str
    task_id: str | None
    message: str

    def __str__(self) -> str:
        task = f", task {self.task_id}" if self.task_id else ""
        return f"{self.file}{task}: {self.message}"


def _discard(event: dict) -> None:
    pass


def run_offline(suite: Suite, task, agent, max_steps: int = 200) -> dict:
    episode = Episode(suite, task, trial_id=f"{task.id}/{agent.name}", attempt="validate", seed=0,
                      max_steps=max_steps, timeout_s=None, sink=_discard)
    return play(agent, episode)


def validate_suite(suite: Suite) -> list[Problem]:
    problems = [Problem(p.file, p.task_id, p.message) for p in suite.problems]
    for task in suite.tasks:
        _, ref_errors = suite.expected_state(task)
        for err in ref_errors:
            problems.append(Problem(task.source, task.id, f"field {err}"))
        if ref_errors:
            continue
        for path in _unknown_paths(suite, task):
            problems.append(Problem(task.source, task.id, f"field state_check: path {path!r} is not in the expected state"))
        ref = run_offline(suite, task, ReferenceAgent())
        if ref["outcome"] != "success":
            problems.append(Problem(task.source, task.id, f"the reference agent fails its own goal ({ref['reason']})"))
        noop = run_offline(suite, task, NoopAgent())
        if noop["outcome"] == "success" and not task.noop_passes:
            problems.append(Problem(task.source, task.id, "a do-nothing agent passes this task; fix the goal or set noop_passes: true"))
        if noop["outcome"] != "success" and task.noop_passes:
            problems.append(Problem(task.source, task.id, f"field noop_passes: is true but a do-nothing agent fails ({noop['reason']})"))
    return problems


def _unknown_paths(suite: Suite, task) -> list[str]:
    if not isinstance(task.state_check, dict):
        return []
    expected, _ = suite.expected_state(task)
    return [p for p in task.state_check.get("include", ()) if resolve(expected, p) is _MISSING]
