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
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bench.adapters.spec import AgentSpec
from bench.errors import BenchError
from bench.runs.executor import Lose, Play, Sink

SUITE_MODULE_PREFIX = "bench_suite_"  # bench.world.suite names the modules it generates so
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # a local cluster shares the machine: keep the store small
LIMITER_CALLS = 10_000  # requests that may wait on one endpoint limiter at once
WORKER_DEATHS = 3  # a trial whose worker dies this many times is an infrastructure error


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


class EndpointLimiter:
    """A Ray actor per endpoint, owned by the driver for the run: the `max_concurrency` of the
    openai adapter and a 429's Retry-After hold across workers, so a cluster does not multiply
    the request rate by the number of workers. Slots are held per worker, so the slots of a
    worker that died holding them are given back (`forget`)."""

    def __init__(self, slots: int):
        self.free = slots
        self.held: dict[str, int] = {}
        self.changed = asyncio.Condition()
        self.resume_at = 0.0

    async def acquire(self, holder: str) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.free > 0)
            self.free -= 1
            self.held[holder] = self.held.get(holder, 0) + 1
        while (wait := self.resume_at - time.time()) > 0:
            await asyncio.sleep(wait)

    async def release(self, holder: str) -> None:
        async with self.changed:
            if self.held.get(holder, 0) > 0:
                self.held[holder] -= 1
                self.free += 1
                self.changed.notify()

    async def forget(self, holder: str) -> None:
        async with self.changed:
            count = self.held.pop(holder, 0)
            self.free += count
            self.changed.notify(count)

    async def pause(self, seconds: float) -> None:
        self.resume_at = max(self.resume_at, time.time() + seconds)


class _RemoteLimit:
    """A worker's side of an EndpointLimiter (bench.adapters.openai_compat.SharedLimit)."""

    def __init__(self, limiter: Any, holder: str):
        self.limiter, self.holder = limiter, holder

    async def acquire(self) -> None:
        await self.limiter.acquire.remote(self.holder)

    async def release(self) -> None:
        await self.limiter.release.remote(self.holder)

    def pause(self, seconds: float) -> None:
        self.limiter.pause.remote(seconds)


class TrialWorker:
    """A Ray actor body: one agent, built once, playing one trial at a time."""

    def __init__(self, spec: AgentSpec):
        # a bad spec must reach the driver as the BenchError it is, not as a dead actor
        self.holder = uuid.uuid4().hex
        self.loop = asyncio.new_event_loop()
        self.agent: Any = None
        self.error: BenchError | None = None
        try:
            self.agent = spec.build()
        except BenchError as exc:
            self.error = exc

    def ready(self) -> tuple[BenchError | None, tuple[str, int] | None, str]:
        """(the build error, the endpoint limit the agent wants shared, this worker's id)."""
        limit = self.agent.endpoint_limit() if hasattr(self.agent, "endpoint_limit") else None
        return self.error, limit, self.holder

    def use_limit(self, limiter: Any) -> None:
        self.agent.share_limit(_RemoteLimit(limiter, self.holder))

    def use_play(self, play: Play) -> None:
        """The trial coroutine (it holds the suite and run config): sent once per actor, not per trial."""
        self._play = play

    def play(self, key: Any) -> tuple[str, list[dict[str, Any]]]:
        sink = _Records()
        # one event loop for the actor's life: an agent's HTTP client (kept per loop) and its
        # connections then serve every trial the actor plays, as in the local executor
        outcome = self.loop.run_until_complete(self._play(self.agent, key, sink))
        return outcome, sink.records


class RayExecutor:
    """`workers` actors on the cluster at `address` (None: start a local one for this run)."""

    def __init__(self, workers: int, address: str | None = None, runtime_env: dict[str, Any] | None = None):
        self.workers, self.address, self.runtime_env = workers, address, runtime_env
        self.actors: list[Any] = []
        self.spec: AgentSpec | None = None
        self.holders: dict[Any, str] = {}      # actor -> its worker id (slots it holds in a limiter)
        self.limiters: dict[str, Any] = {}     # endpoint -> EndpointLimiter actor
        self.started = False

    def start(self, spec: AgentSpec, trials: int) -> None:
        ray = _ray()
        self.spec = spec
        self.started = self._connect(ray)
        try:
            self._check_fits(ray)
            self.actors = [self._actor(ray) for _ in range(min(self.workers, max(trials, 1)))]
            for actor in self.actors:
                self._ready(ray, actor)
        except BaseException:
            self.close()
            raise

    def run(self, pending: Sequence[Any], play: Play, lose: Lose, sink: Sink, on_done: Callable[[str], None]) -> None:
        self._drive(_ray(), list(pending), play, lose, sink, on_done)

    def close(self) -> None:
        self.actors, self.holders, self.limiters = [], {}, {}
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
            ray.init(num_cpus=self.workers * self._resources()["num_cpus"], object_store_memory=OBJECT_STORE_BYTES,
                     include_dashboard=False, runtime_env=self.runtime_env, log_to_driver=False)
        return True

    def _resources(self) -> dict[str, Any]:
        """What one actor asks of Ray: the agent spec's [resources], 1 CPU by default."""
        return {"num_cpus": 1, **(self.spec.resources if self.spec else {})}

    def _check_fits(self, ray: Any) -> None:
        """An actor the cluster can never place would wait forever: say so instead."""
        have = ray.cluster_resources()
        for name, key in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
            wanted = self._resources().get(name, 0)
            if wanted > have.get(key, 0):
                raise BenchError(f"the agent asks for {name} = {wanted} per worker; the Ray cluster has "
                                 f"{have.get(key, 0)} {key} in all", file=self.spec.source if self.spec else None,
                                 field=f"resources.{name}")

    def _actor(self, ray: Any) -> Any:
        # no Ray-side restarts: the driver counts each trial's worker deaths itself (a budget per
        # trial, not per actor lifetime) and replaces a dead actor with a fresh one
        return ray.remote(max_restarts=0, max_task_retries=0, **self._resources())(TrialWorker).remote(self.spec)

    def _drive(self, ray: Any, queue: list[Any], play: Play, lose: Lose, sink: Sink,
               on_done: Callable[[str], None]) -> None:
        """Keep every actor busy with one trial; write each trial's records as it finishes. A trial
        whose worker dies is re-run on a fresh actor, up to WORKER_DEATHS deaths; then it is
        recorded as an infrastructure error and the run goes on."""
        queue.reverse()
        deaths: dict[str, int] = {}
        running: dict[Any, tuple[Any, Any]] = {}

        shared = ray.put(play)
        ray.get([actor.use_play.remote(shared) for actor in self.actors])

        def submit(actor: Any, key: Any) -> None:
            running[actor.play.remote(key)] = (actor, key)

        for actor in self.actors:
            if queue:
                submit(actor, queue.pop())
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, key = running.pop(ref)
            try:
                outcome, records = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                actor = self._replace(ray, actor)
                ray.get(actor.use_play.remote(shared))
                deaths[key.trial_id] = deaths.get(key.trial_id, 0) + 1
                if deaths[key.trial_id] < WORKER_DEATHS:
                    submit(actor, key)
                    continue
                reason = f"the Ray worker playing it died {WORKER_DEATHS} times ({type(exc).__name__})"
                outcome, records = lose(key, reason, sink), []
            for record in records:
                sink.append(record)
            on_done(outcome)
            if queue:
                submit(actor, queue.pop())

    def _ready(self, ray: Any, actor: Any) -> None:
        """Wait for an actor's agent; share its endpoint limit through the run's limiter actor."""
        error, limit, holder = ray.get(actor.ready.remote())
        if error is not None:
            raise error
        self.holders[actor] = holder
        if limit is not None:
            endpoint, slots = limit
            if endpoint not in self.limiters:
                self.limiters[endpoint] = ray.remote(EndpointLimiter).options(
                    num_cpus=0, max_concurrency=LIMITER_CALLS).remote(slots)
            ray.get(actor.use_limit.remote(self.limiters[endpoint]))

    def _replace(self, ray: Any, dead: Any) -> Any:
        """A fresh actor for a dead one; the slots the dead one held go back to the limiters."""
        holder = self.holders.pop(dead, None)
        for limiter in self.limiters.values():
            limiter.forget.remote(holder)
        fresh = self._actor(ray)
        self._ready(ray, fresh)
        self.actors[self.actors.index(dead)] = fresh
        return fresh
