"""The reference agent (replays the gold actions) and the do-nothing agent. `validate` runs
both on every task through the real episode machinery."""

from __future__ import annotations

from bench.episode import Episode


class ReferenceAgent:
    name = "reference"

    def run(self, episode: Episode) -> str:
        _, task = episode.privileged_task()
        for action in task.reference_actions:
            episode.call(action.tool, action.args)
        return task.answer_for_reference


class NoopAgent:
    name = "noop"

    def run(self, episode: Episode) -> str:
        return ""
