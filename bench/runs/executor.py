"""Where trials run: the executor seam between the runner (grid, resume, log) and the place the
agent plays. The runner hands an executor the pending trials and a `play` coroutine; the executor
decides where `play` runs, and hands every record back to the runner's single log writer.

`LocalExecutor` is the in-process default (`concurrency` asyncio workers sharing the pending trials);
`bench.runs.ray_executor.RayExecutor` runs trials on Ray actors (docs/ray.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from bench.adapters.spec import AgentSpec


class Sink(Protocol):
    def append(self, record: dict[str, Any]) -> None: ...


# play(agent, key, sink) -> outcome: one trial with its retries, every record sent to sink.
Play = Callable[[Any, Any, Sink], Coroutine[Any, Any, str]]
# lose(key, reason, sink) -> outcome: record a trial the executor could not play (its worker kept
# dying) as an infrastructure error, never as the agent's failure.
Lose = Callable[[Any, str, Sink], str]


class Executor(Protocol):
    def start(self, spec: AgentSpec, trials: int) -> None:
        """Build the agent(s) for up to `trials` trials. The runner calls this before it touches the
        run directory, so a bad agent spec fails with nothing written."""

    def run(self, pending: Sequence[Any], play: Play, lose: Lose, sink: Sink, on_done: Callable[[str], None]) -> None:
        """Play every pending trial; records go to `sink` (in the driver), `on_done` gets each outcome."""

    def close(self) -> None:
        """Release what `start` took (actors, a cluster this executor started)."""


class LocalExecutor:
    """One agent in this process, `concurrency` trials at once (sync agents run on a thread pool)."""

    def __init__(self, concurrency: int):
        self.concurrency = concurrency
        self.agent: Any = None

    def start(self, spec: AgentSpec, trials: int) -> None:
        self.agent = spec.build()

    def run(self, pending: Sequence[Any], play: Play, lose: Lose, sink: Sink, on_done: Callable[[str], None]) -> None:
        asyncio.run(self._run_all(self.agent, pending, play, sink, on_done))

    def close(self) -> None:
        self.agent = None

    async def _run_all(self, agent: Any, pending: Sequence[Any], play: Play, sink: Sink,
                       on_done: Callable[[str], None]) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=self.concurrency))
        keys = iter(pending)

        async def worker() -> None:
            # `concurrency` workers share one iterator of the pending trials: memory does not
            # grow with the run (a task per pending trial, created up front, costs ~2 KB each)
            for key in keys:
                on_done(await play(agent, key, sink))

        await asyncio.gather(*(worker() for _ in range(max(1, min(self.concurrency, len(pending))))))
