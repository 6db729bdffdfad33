"""Trials on Ray actors: each actor builds the agent once (a local model loads once per actor, not
per trial) and plays trials sent to it; the records of a trial come back to the driver, which stays
the single writer of trajectories.jsonl, so the log format, resume and every downstream command are
those of a local run. A trial's seed comes from (base seed, task, variant, index) alone, so where it
runs does not change it. See docs/ray.md.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bench.adapters.spec import AgentSpec
from bench.errors import BenchError
from bench.runs.executor import Play, Sink

SUITE_MODULE_PREFIX = "bench_suite_"  # bench.world.suite names the modules it generates so
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # a local cluster shares the machine: keep the store small


def _ray() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ModuleNotFoundError:
        raise BenchError("--executor ray needs Ray: pip install 'trajbench[ray]'", field="--executor") from None
    _ship_suite_modules()
    return ray


def _ship_suite_modules() -> None:
    """A suite's tools load as a generated module (bench.world.suite) that workers cannot import:
    pickle it by value so the actors get the very code the driver loaded."""
    from ray import cloudpickle

    for name, module in list(sys.modules.items()):
        if name.startswith(SUITE_MODULE_PREFIX):
            cloudpickle.register_pickle_by_value(module)


class _Records:
    """The actor-side sink: records are kept and returned with the outcome, never written here."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class TrialWorker:
    """A Ray actor body: one agent, built once, playing one trial at a time."""

    def __init__(self, spec: AgentSpec):
        # a bad spec must reach the driver as the BenchError it is, not as a dead actor
        self.agent: Any = None
        self.error: BenchError | None = None
        try:
            self.agent = spec.build()
        except BenchError as exc:
            self.error = exc

    def ready(self) -> BenchError | None:
        return self.error

    def play(self, play: Play, key: Any) -> tuple[str, list[dict[str, Any]]]:
        sink = _Records()
        outcome = asyncio.run(play(self.agent, key, sink))
        return outcome, sink.records


class RayExecutor:
    """`workers` actors on the cluster at `address` (None: start a local one for this run)."""

    def __init__(self, workers: int, address: str | None = None, runtime_env: dict[str, Any] | None = None):
        self.workers, self.address, self.runtime_env = workers, address, runtime_env
        self.actors: list[Any] = []
        self.started = False

    def start(self, spec: AgentSpec, trials: int) -> None:
        ray = _ray()
        self.started = self._connect(ray)
        try:
            self.actors = [self._actor(ray, spec) for _ in range(min(self.workers, max(trials, 1)))]
            for error in ray.get([actor.ready.remote() for actor in self.actors]):
                if error is not None:
                    raise error
        except BaseException:
            self.close()
            raise

    def run(self, pending: Sequence[Any], play: Play, sink: Sink, on_done: Callable[[str], None]) -> None:
        self._drive(_ray(), self.actors, list(pending), play, sink, on_done)

    def close(self) -> None:
        self.actors = []
        if self.started:
            _ray().shutdown()
            self.started = False

    def _connect(self, ray: Any) -> bool:
        """Join the cluster; True when this call started it (and so must stop it)."""
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, runtime_env=self.runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=self.workers, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
                     runtime_env=self.runtime_env, log_to_driver=False)
        return True

    @staticmethod
    def _actor(ray: Any, spec: AgentSpec) -> Any:
        # a restarted actor re-runs the trial it died in; its records come back only on success
        remote = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(TrialWorker)
        return remote.remote(spec)

    @staticmethod
    def _drive(ray: Any, actors: list[Any], queue: list[Any], play: Play, sink: Sink,
               on_done: Callable[[str], None]) -> None:
        """Keep every actor busy with one trial; write each trial's records as it finishes."""
        queue.reverse()
        running: dict[Any, Any] = {}
        for actor in actors:
            if queue:
                running[actor.play.remote(play, queue.pop())] = actor
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(ref)
            outcome, records = ray.get(ref)
            for record in records:
                sink.append(record)
            on_done(outcome)
            if queue:
                running[actor.play.remote(play, queue.pop())] = actor
