"""One trial: run an agent on an episode, then score the end state.

Outcomes: `success` (every goal check passed), `failure` (the agent's doing: a check failed, the
budget or time ran out, or the agent raised), and `error` (infrastructure: `InfraError`; never
counted as a failure, retried by the runner).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from typing import Any

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
    episode.close()
    if result is not None and not isinstance(result, str):
        result = str(result)
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


def play(agent: Any, episode: Episode) -> dict[str, Any]:
    """Run a synchronous agent to the end and score it. Raises AttemptError on InfraError."""
    started = time.monotonic()
    result, crash = None, None
    try:
        result = agent.run(episode)
    except InfraError as exc:
        episode.close()
        raise AttemptError(str(exc)) from exc
    except EpisodeOver:
        pass
    except Exception as exc:  # the agent's own bug is the agent's failure
        crash = _crash_text(exc)
    return _finish(episode, result, started, crash)


async def play_async(agent: Any, episode: Episode, timeout_s: float | None) -> dict[str, Any]:
    """Run any agent (async `arun`, else `run` in a worker thread) under a time limit."""
    started = time.monotonic()
    result, crash = None, None
    if hasattr(agent, "arun") and inspect.iscoroutinefunction(agent.arun):
        work = agent.arun(episode)
    else:
        work = asyncio.to_thread(agent.run, episode)
    try:
        result = await asyncio.wait_for(work, timeout_s)
    except asyncio.TimeoutError:
        episode.timed_out = True
    except InfraError as exc:
        episode.close()
        raise AttemptError(str(exc)) from exc
    except EpisodeOver:
        pass
    except Exception as exc:
        crash = _crash_text(exc)
    return _finish(episode, result, started, crash)
