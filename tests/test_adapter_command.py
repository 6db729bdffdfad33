"""The command adapter with real child-process agents that speak MCP through the SDK's client."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bench.adapters.command import CommandAgent
from bench.adapters.spec import parse_agent_spec
from bench.episode import Episode
from bench.errors import BenchError
from bench.runs.trial import AttemptError, play
from bench.world.suite import load_suite

SUITE = load_suite("calendar")
TASK = next(t for t in SUITE.tasks if t.id == "calendar-001-cancel-own-event")
CHILD = Path(__file__).parent / "agents" / "mcp_child_agent.py"


def _trial(mode: str, timeout_s: float = 60.0, trial: str = "t0",
           trial_timeout_s: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    episode = Episode(SUITE, TASK, trial_id=trial, attempt="a0", seed=7, max_steps=10, timeout_s=trial_timeout_s,
                      sink=events.append)
    agent = CommandAgent("child", [sys.executable, str(CHILD), mode], timeout_s)
    return play(agent, episode), events


def test_a_child_that_does_the_task_succeeds_with_its_mcp_answer() -> None:
    summary, events = _trial("cancel")
    assert summary["outcome"] == "success", summary["reason"]
    assert summary["answer"] == "cancelled (seed 7)"
    assert summary["agent_info"]["exit_status"] == 0
    assert [e["tool"] for e in events] == ["get_event", "cancel_event"]


def test_the_answer_falls_back_to_stdout() -> None:
    summary, _ = _trial("stdout")
    assert summary["answer"] == "looked it up"


@pytest.mark.parametrize("limit", ["trial", "own"])
def test_a_hanging_child_is_killed_at_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str) -> None:
    """At the trial's --timeout the trial fails on time; at the spec's own (shorter) timeout_s it is
    the agent's failure (the run's time limit was not reached, and verify holds the run to it)."""
    pid_file = tmp_path / "pid"
    monkeypatch.setenv("CHILD_PID_FILE", str(pid_file))
    started = time.monotonic()
    if limit == "trial":
        summary, events = _trial("hang", timeout_s=60.0, trial_timeout_s=8.0)
    else:
        summary, events = _trial("hang", timeout_s=8.0)
    assert time.monotonic() - started < 30
    assert summary["outcome"] == "failure"
    if limit == "trial":
        assert not summary["checks"]["within_time"]["passed"]
    else:
        assert summary["checks"].get("within_time", {"passed": True})["passed"]
        assert "own timeout_s = 8.0 s" in summary["checks"]["agent_completed"]["detail"]
    assert summary["agent_info"]["exit_status"] == "killed at timeout"
    assert len(events) == 1, "the child should have made its one call before hanging (machine overloaded?)"
    with pytest.raises(ProcessLookupError):  # the process is gone, not merely abandoned
        os.kill(int(pid_file.read_text()), 0)


def test_a_crashing_child_is_the_agents_failure_with_its_exit_status() -> None:
    summary, _ = _trial("crash")
    assert summary["outcome"] == "failure"
    assert summary["agent_info"]["exit_status"] == 3
    assert "status 3" in summary["checks"]["agent_completed"]["detail"]


def test_unknown_tools_are_error_observations_the_child_sees() -> None:
    summary, events = _trial("unknown")
    assert summary["answer"] == "is_error=True"
    assert events[0]["tool"] == "teleport" and events[0]["error"]


def test_k_trials_at_concurrency_never_share_a_world() -> None:
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: _trial("cancel", trial=f"t{i}"), range(3)))
    assert [s["outcome"] for s, _ in results] == ["success"] * 3
    assert [[e["tool"] for e in ev] for _, ev in results] == [["get_event", "cancel_event"]] * 3
    assert len({s["final_state_hash"] for s, _ in results}) == 1


def test_cmd_specs_build_and_bad_ones_get_one_clear_error() -> None:
    agent = parse_agent_spec("cmd:python agent.py --fast?timeout_s=5").build()
    assert agent.argv == ["python", "agent.py", "--fast"] and agent.timeout_s == 5.0
    with pytest.raises(BenchError, match="needs a command line"):
        parse_agent_spec("cmd:").build()
    with pytest.raises(BenchError, match="expected a number"):
        parse_agent_spec("cmd:x?timeout_s=soon").build()
    with pytest.raises(BenchError, match="unknown command option"):
        parse_agent_spec("cmd:x?timout_s=5").build()
    agent = parse_agent_spec("cmd:{python} agent.py?base_url=http://127.0.0.1:9/v1&model=m").build()
    assert agent.argv[0] == sys.executable
    assert agent.model_env == {"TRAJBENCH_MODEL_BASE_URL": "http://127.0.0.1:9/v1", "TRAJBENCH_MODEL": "m"}


def test_a_server_that_cannot_start_is_an_infrastructure_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.adapters.mcp_server as mcp_server

    def no_server(episode: Episode, **kw: Any) -> Any:
        raise mcp_server.ServerStartError("the MCP server for the trial did not start on loopback")

    monkeypatch.setattr(mcp_server, "serve_http", no_server)
    with pytest.raises(AttemptError, match="did not start"):
        _trial("cancel")


def test_a_roster_spec_with_the_command_adapter(tmp_path: Path) -> None:
    spec = tmp_path / "child.toml"
    spec.write_text(f'name = "child"\nadapter = "command"\n[options]\ncommand = ["{sys.executable}", "{CHILD}", "stdout"]\n')
    agent = parse_agent_spec(str(spec)).build()
    assert agent.argv[-1] == "stdout" and agent.timeout_s == 300.0
    spec.write_text('name = "child"\nadapter = "command"\n[options]\ncommand = [1, 2]\n')
    with pytest.raises(BenchError, match="needs a command line"):
        parse_agent_spec(str(spec)).build()


def test_a_run_whose_child_hit_its_own_timeout_verifies(tmp_path: Path) -> None:
    """The spec's own timeout_s (shorter than --timeout) ends the trial as the agent's failure,
    which `verify` accepts: it holds a timeout claim only against the run's --timeout."""
    from tests.conftest import run_cli

    out = tmp_path / "r"
    done = run_cli("run", "calendar", "--agent", f"cmd:{sys.executable} {CHILD} hang?timeout_s=3", "-k", "1",
                   "--tasks", TASK.id, "--timeout", "600", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    verified = run_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout + verified.stderr
