"""The episode over MCP, driven by the official SDK's own client over real streamable HTTP on loopback."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from bench.adapters.mcp_server import FINAL_ANSWER, serve_http
from bench.episode import Episode
from bench.world.suite import load_suite

SUITE = load_suite("calendar")
TASK = next(t for t in SUITE.tasks if t.id == "calendar-001-cancel-own-event")


def _episode(events: list[dict[str, Any]], trial: str = "t0", max_steps: int = 10) -> Episode:
    return Episode(SUITE, TASK, trial_id=trial, attempt="a0", seed=0, max_steps=max_steps,
                   timeout_s=None, sink=events.append)


def _drive(url: str | StdioServerParameters, calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[Any]]:
    """Connect with the SDK client, list the tools and make the calls; returns (tool names, results)."""
    async def main() -> tuple[list[str], list[Any]]:
        async with Client(url) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            return names, [await client.call_tool(name, args) for name, args in calls]
    return anyio.run(main)


def test_reference_actions_over_mcp_are_logged_and_reach_the_goal() -> None:
    events: list[dict[str, Any]] = []
    episode = _episode(events)
    calls = [(a.tool, a.args) for a in TASK.reference_actions] + [(FINAL_ANSWER, {"answer": "cancelled"})]
    with serve_http(episode) as url:
        names, results = _drive(url, calls)
    assert names == [s["name"] for s in SUITE.tool_specs()] + [FINAL_ANSWER]
    assert not any(r.is_error for r in results)
    assert [e["tool"] for e in events] == [a.tool for a in TASK.reference_actions]
    assert all(e["state_hash"] for e in events)
    assert episode.answer == "cancelled"
    assert episode.outcome_checks()["state"]["passed"]


def test_tool_errors_are_mcp_tool_errors_and_the_server_lives_on() -> None:
    events: list[dict[str, Any]] = []
    episode = _episode(events, max_steps=2)
    calls = [("no_such_tool", {}), ("get_event", {"event_id": 7}), ("get_event", {"event_id": "EV0006"}),
             (FINAL_ANSWER, {})]
    with serve_http(episode) as url:
        _, results = _drive(url, calls)
    assert [r.is_error for r in results] == [True, True, True, True]
    assert "episode is over" in results[2].content[0].text  # budget of 2 spent: an error, not a crash
    assert [e["error"] is not None for e in events] == [True, True]
    assert episode.budget_exhausted


def test_concurrent_trials_never_share_a_world() -> None:
    logs: list[list[dict[str, Any]]] = [[] for _ in range(3)]
    episodes = [_episode(log, trial=f"t{i}") for i, log in enumerate(logs)]
    cancel = [(a.tool, a.args) for a in TASK.reference_actions]

    def one(i: int) -> None:
        with serve_http(episodes[i]) as url:
            _drive(url, cancel if i == 0 else [("get_event", {"event_id": "EV0006"})])

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(one, range(3)))
    assert episodes[0].final_state_hash != episodes[1].final_state_hash
    assert episodes[1].final_state_hash == episodes[2].final_state_hash
    assert logs[1][0]["observation"] == logs[2][0]["observation"]


def test_the_stdio_proxy_forwards_to_the_trials_episode() -> None:
    events: list[dict[str, Any]] = []
    episode = _episode(events)
    root = str(Path(__file__).resolve().parent.parent)
    with serve_http(episode) as url:
        proxy = StdioServerParameters(command=sys.executable, args=["-m", "bench.adapters.mcp_stdio", url],
                                      env={"PYTHONPATH": root})
        names, results = _drive(proxy, [("get_event", {"event_id": "EV0006"}), ("teleport", {})])
    assert FINAL_ANSWER in names and "ask_user" in names
    assert [r.is_error for r in results] == [False, True]
    assert [e["tool"] for e in events] == ["get_event", "teleport"]
