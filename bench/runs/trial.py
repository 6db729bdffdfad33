"""One trial: run an agent on an episode, then score the end state.

Outcomes: `success` (every goal check passed), `failure` (the agent's doing: a check failed, the
budget or time ran out, or the agent raised), and `error` (infrastructure: `InfraError`; never
counted as a failure, retried by the runner).

Agent code is contained whatever it raises: `SystemExit` (an agent calling `sys.exit(0)`),
`KeyboardInterrupt` or `GeneratorExit` raised by the agent end its trial as a failure like any
other crash, and the run goes on. A real Ctrl-C never arrives as one of these: signals reach the
main thread only, where `asyncio.run` turns SIGINT into the cancellation of the run (which stops
it, resumably), while a synchronous agent runs on a thread of its own.

A synchronous agent runs on a daemon thread of its own for the trial, so the time limit holds
even when it never returns (a `time.sleep(20)` under `--timeout 2`): at the deadline the trial is
abandoned and recorded, its episode is closed (every later call raises `EpisodeOver`) and the log
writer drops whatever its attempt still emits (`LogWriter` seals an attempt once it ended). The
threads are reused (`_AgentThreads`): a thread whose trial ended takes the next one, so a trial
costs two thread hand-offs instead of a thread's creation; a thread still held by an abandoned
agent is simply not reused until that agent returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import queue
import threading
import time
import traceback
from typing import Any, Callable

from bench.episode import Episode, EpisodeOver
from bench.errors import InfraError


class AttemptError(Exception):
    """This attempt hit an infrastructure error; the runner may retry the trial."""


def outcome_of(checks: dict[str, dict[str, Any]]) -> tuple[str, str | None]:
    """The outcome rule, shared by the trial and its replay (`bench.analysis.replay`): success
    when every check passed, else failure with the reason naming the failed checks in order."""
    failed = [name for name, check in checks.items() if not check["passed"]]
    return ("failure", "failed: " + ", ".join(failed)) if failed else ("success", None)


def _finish(episode: Episode, result: Any, started: float, crash: str | None) -> dict[str, Any]:
    episode.close(wait_s=_CLOSE_WAIT_S)
    if result is not None and not isinstance(result, str):
        try:
            result = str(result)
        except Exception as exc:  # noqa: BLE001 - the agent's answer object is agent code too
            result, crash = None, crash or _crash_text(exc)
    if result is not None:
        episode.finish(result)
    checks = episode.outcome_checks()
    if crash is not None:
        checks["agent_completed"] = {"passed": False, "detail": crash}
    outcome, reason = outcome_of(checks)
    return {
        "outcome": outcome,
        "reason": reason,
        "checks": checks,
        "milestones": episode.milestones_reached,
        "final_state_hash": episode.final_state_hash,
        "answer": episode.answer,
        "steps": episode.tool_calls,
        "events": episode.event_count,
        "input_tokens": episode.input_tokens,
        "output_tokens": episode.output_tokens,
        "cost": episode.cost,
        "duration_s": round(time.monotonic() - started, 6),
        "agent_info": episode.annotations,
    }


def _crash_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
    return f"agent raised {type(exc).__name__}: {exc}{where}"


_CLOSE_WAIT_S = 2.0  # how long scoring waits for an abandoned agent's in-flight tool call


def _settle(episode: Episode, result: Any, raised: BaseException | None, started: float) -> dict[str, Any]:
    """Score the trial from what the agent returned or raised (anything, BaseException
    included: see the module docstring). Raises AttemptError on InfraError."""
    crash = None
    if isinstance(raised, InfraError):
        episode.close()
        raise AttemptError(str(raised)) from raised
    if raised is not None and not isinstance(raised, EpisodeOver):
        crash = _crash_text(raised)  # the agent's own bug (or its sys.exit) is the agent's failure
    return _finish(episode, result, started, crash)


def play(agent: Any, episode: Episode) -> dict[str, Any]:
    """Run a synchronous agent to the end, in the calling thread, and score it. A
    KeyboardInterrupt on the main thread may be a real Ctrl-C: it propagates."""
    started = time.monotonic()
    result: Any = None
    raised: BaseException | None = None
    try:
        result = agent.run(episode)
    except KeyboardInterrupt as exc:
        if threading.current_thread() is threading.main_thread():
            raise
        raised = exc
    except BaseException as exc:  # noqa: BLE001 - agent code is contained, whatever it raises
        raised = exc
    return _settle(episode, result, raised, started)


async def _contained(work: Any) -> tuple[Any, BaseException | None]:
    """Await the agent's coroutine; what it raises becomes a value (cancellation excepted: that
    is the runner stopping, and must stop)."""
    try:
        return await work, None
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - agent code is contained, whatever it raises
        return None, exc


class _AgentThreads:
    """Idle daemon threads waiting for the next synchronous agent to play. `run` hands the work
    to an idle thread, or starts one when none is idle (the first trials, or every thread held by
    an agent that overran its time limit and was abandoned): as many threads as trials really run
    at once, no more. Each trial runs in a fresh `contextvars` context (nothing an agent sets there
    reaches the next trial); daemon threads never hold up the process at exit."""

    def __init__(self) -> None:
        self._idle: list[queue.SimpleQueue[Callable[[], None]]] = []
        self._lock = threading.Lock()

    def run(self, work: Callable[[], None]) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="trajbench agent", daemon=True).start()
        inbox.put(work)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            contextvars.Context().run(inbox.get())  # a fresh context per trial, as a new thread had; `work`
            # contains whatever the agent raises
            with self._lock:
                self._idle.append(inbox)


_THREADS = _AgentThreads()


def _on_thread(agent: Any, episode: Episode, timeout_s: float | None) -> asyncio.Future[tuple[Any, BaseException | None]]:
    """`agent.run(episode)` on a daemon thread (`_AgentThreads`); the future gets its outcome, or
    TimeoutError at the deadline (the agent is then abandoned: that neither blocks the run nor, at
    exit, the process). Awaited directly, not through `wait_for`: no task per trial, and a
    cancellation (Ctrl-C) is never lost to an outcome arriving in the same loop iteration (the
    race `wait_for` has on Python 3.11)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[Any, BaseException | None]] = loop.create_future()

    def deliver(outcome: tuple[Any, BaseException | None]) -> None:
        if not future.done():
            future.set_result(outcome)

    def work() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (agent.run(episode), None)
        except BaseException as exc:  # noqa: BLE001 - agent code is contained, whatever it raises
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(deliver, outcome)
        except RuntimeError:  # the run is over (loop closed): the trial was already recorded
            pass

    if timeout_s is not None:
        deadline = loop.call_later(timeout_s, _expire, future)
        future.add_done_callback(lambda _: deadline.cancel())
    _THREADS.run(work)
    return future


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())  # (not the builtin before Python 3.11)


async def play_async(agent: Any, episode: Episode, timeout_s: float | None) -> dict[str, Any]:
    """Run any agent (async `arun`, else `run` on its own thread) under a time limit."""
    started = time.monotonic()
    try:
        if hasattr(agent, "arun") and inspect.iscoroutinefunction(agent.arun):
            result, raised = await asyncio.wait_for(_contained(agent.arun(episode)), timeout_s)
        else:
            result, raised = await _on_thread(agent, episode, timeout_s)
    except asyncio.TimeoutError:
        episode.timed_out = True
        result, raised = None, None
    return _settle(episode, result, raised, started)
