"""Model turns reported by an agent in its own process (TRAJBENCH_TURNS, bench/adapters/turn_report.py):
real child processes over MCP, and the real MCP agent (agents/mcp_chat_agent.py) against the
project's scripted chat-completions server on loopback (tests/servers/fake_chat.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.adapters.command import CommandAgent
from bench.adapters.spec import load_agent_file, parse_agent_spec
from bench.adapters.turn_report import TurnLineError, TurnReport, parse_turn
from bench.episode import Episode
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from bench.runs.trial import play
from bench.world.suite import load_suite
from tests.conftest import ROOT
from tests.servers.fake_chat import FakeChatServer, shop_agent

pytest.importorskip("mcp")

CALENDAR = load_suite("calendar")
TASK = next(t for t in CALENDAR.tasks if t.id == "calendar-001-cancel-own-event")
CHILD = Path(__file__).parent / "agents" / "mcp_child_agent.py"
MCP_AGENT = ROOT / "agents" / "mcp_chat_agent.py"


def _episode(events: list[dict[str, Any]], max_steps: int = 10) -> Episode:
    return Episode(CALENDAR, TASK, trial_id="t0", attempt="a0", seed=7, max_steps=max_steps, timeout_s=None,
                   sink=events.append)


def _child_trial(mode: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    summary = play(CommandAgent("child", [sys.executable, str(CHILD), mode], 60.0), _episode(events))
    return summary, events


def test_reported_turns_are_logged_in_place_and_counted(tmp_path: Path) -> None:
    """Three turns reported by a child process land before the calls each made, with their tokens,
    priced by the spec; the run verifies and the leaderboard has its token columns."""
    from bench.publish.leaderboard import build_leaderboard

    out = tmp_path / "run"
    spec = parse_agent_spec(f"cmd:{sys.executable} {CHILD} turns?input_cost_per_mtok=1000&output_cost_per_mtok=2000")
    run_benchmark(CALENDAR, spec, [TASK.id], RunConfig(k=2, out=out, progress=False, concurrency=2))
    log = read_run(out)
    for trial_id, summary in log.summaries.items():
        assert summary["outcome"] == "success", summary["reason"]
        events = log.trial_steps(trial_id)
        assert [e.get("tool") or e["kind"] for e in events] == ["model", "get_event", "model", "cancel_event", "model"]
        models = [e for e in events if e["kind"] == "model"]
        assert [(m["input_tokens"], m["output_tokens"], m["latency_s"], m["model"]) for m in models] == \
            [(100, 10, 0.25, "child-model"), (120, 12, 0.25, "child-model"), (140, 5, 0.25, "child-model")]
        assert models[1]["messages"] == [{"role": "user", "content": "turn after 1 call(s)"}]
        assert (summary["input_tokens"], summary["output_tokens"]) == (360, 27)
        assert summary["cost"] == pytest.approx((360 * 1000 + 27 * 2000) / 1e6)
        assert summary["steps"] == 2 and summary["events"] == 5
    entry, = build_leaderboard([out])["entries"]
    assert entry["verification"] == "replay-verified"
    assert (entry["mean_input_tokens"], entry["mean_output_tokens"]) == (360, 27)


@pytest.mark.parametrize("line,message", [
    ("{not json", "TRAJBENCH_TURNS line 2: not JSON"),
    ('{"tool_calls_before": 1, "input_tokens": "12"}',
     'TRAJBENCH_TURNS line 2: input_tokens: expected a whole number >= 0 or null, got "12"'),
])
def test_a_bad_line_fails_the_trial_naming_line_and_field(line: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The call after the bad line is refused (not logged), the child is stopped, and the trial
    fails as the agent's doing, with the line and field named."""
    monkeypatch.setenv("CHILD_TURN_LINE", line)
    summary, events = _child_trial("badturn")
    assert summary["outcome"] == "failure"
    assert message in summary["checks"]["agent_completed"]["detail"]
    assert [e.get("tool") or e["kind"] for e in events] == ["model", "get_event"]
    assert summary["agent_info"]["exit_status"] == "killed: invalid turn report"


def test_a_turn_reported_after_its_calls_is_refused_not_misplaced() -> None:
    summary, events = _child_trial("lateturn")
    detail = summary["checks"]["agent_completed"]["detail"]
    assert "TRAJBENCH_TURNS line 2: tool_calls_before: 1, but 2 tool call(s) had been made" in detail
    assert [e.get("tool") or e["kind"] for e in events] == ["model", "get_event", "cancel_event"]
    assert summary["answer"] is None  # final_answer came after the bad line: refused


@pytest.mark.parametrize("line,message", [
    (b"[1]", "expected a JSON object, got [1]"),
    (b'{"input_tokens": 3}', "tool_calls_before: missing"),
    (b'{"tool_calls_before": -1}', "tool_calls_before: expected a whole number >= 0, got -1"),
    (b'{"tool_calls_before": true}', "tool_calls_before: expected a whole number >= 0, got true"),
    (b'{"tool_calls_before": 0, "output_tokens": 1.5}', "output_tokens: expected a whole number >= 0 or null, got 1.5"),
    (b'{"tool_calls_before": 0, "latency_s": -2}', "latency_s: expected a number of seconds >= 0 or null, got -2"),
    (b'{"tool_calls_before": 0, "latency_s": "1s"}', 'latency_s: expected a number of seconds >= 0 or null, got "1s"'),
    (b'{"tool_calls_before": 0, "model": 5}', "model: expected a text or null, got 5"),
    (b'{"tool_calls_before": 0, "input_token": 5}', "input_token: unknown field; the fields are tool_calls_before"),
])
def test_parse_turn_names_the_field(line: bytes, message: str) -> None:
    with pytest.raises(TurnLineError) as caught:
        parse_turn(line)
    assert message in str(caught.value)


def test_parse_turn_takes_the_optional_fields_as_null() -> None:
    turn = parse_turn(b'{"tool_calls_before": 3, "input_tokens": null, "latency_s": 2}')
    assert (turn.tool_calls_before, turn.input_tokens, turn.output_tokens, turn.latency_s, turn.model) == (3, None, None, 2.0, None)


def test_the_report_is_read_line_by_line_as_the_trial_goes(tmp_path: Path) -> None:
    """A missing file is no turns; a line is logged once its newline is written (a torn last line
    only once the child has exited by itself); blank lines are skipped; the spec's model is the
    default; lines read after the budget ran out are not logged."""
    events: list[dict[str, Any]] = []
    episode = _episode(events, max_steps=1)
    path = tmp_path / "turns.jsonl"
    report = TurnReport(episode, path, model="spec-model", cost=lambda i, o: 0.5)
    assert report.read() is None and events == []
    path.write_text('\n{"tool_calls_before": 0, "input_tokens": 4}\n{"tool_calls_before": 1')
    assert report.read() is None
    assert [(e["kind"], e["input_tokens"], e["model"], e["cost"]) for e in events] == [("model", 4, "spec-model", 0.5)]
    episode.call("get_event", {"event_id": "EV0006"})
    with path.open("a") as handle:
        handle.write(', "output_tokens": 2}')
    assert report.read() is None and len(events) == 2  # still no newline
    assert report.read(final=True) is None and events[-1]["output_tokens"] == 2
    with pytest.raises(BaseException, match="budget"):
        episode.call("get_event", {"event_id": "EV0006"})
    with path.open("a") as handle:
        handle.write('\n{"tool_calls_before": 2}\n')
    assert report.read() is None and len(events) == 3 and report.ignored == 1


def test_a_misplaced_line_stops_the_report(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    episode = _episode(events)
    path = tmp_path / "turns.jsonl"
    stopped: list[bool] = []
    report = TurnReport(episode, path, model=None, cost=lambda i, o: 0.0)
    report.on_error = lambda: stopped.append(True)
    path.write_text('{"tool_calls_before": 1}\n{"tool_calls_before": 0}\n')
    error = report.read()
    assert error is not None and error.startswith("TRAJBENCH_TURNS line 1: tool_calls_before: 1, but 0 tool call(s)")
    assert stopped == [True] and events == []
    assert report.read() == error  # nothing more is read


def test_a_report_that_is_not_a_file_is_the_agents_error(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    (tmp_path / "turns.jsonl").mkdir()
    report = TurnReport(_episode(events), tmp_path / "turns.jsonl", model=None, cost=lambda i, o: 0.0)
    error = report.read()
    assert error is not None and "the file cannot be read (IsADirectoryError" in error and events == []


def _mcp_agent_spec(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "mcp.toml"
    path.write_text(f'name = "mcp"\nadapter = "command"\n[options]\ncommand = {json.dumps([sys.executable, str(MCP_AGENT)])}\n'
                    f'base_url = "{base_url}"\nmodel = "fake-model"\ninput_cost_per_mtok = 1.0\n')
    return path


def test_the_mcp_agent_reports_its_turns_from_the_usage(mini_suite: Any, tmp_path: Path) -> None:
    """agents/mcp_chat_agent.py on the scripted server: each of its four model turns is logged
    before the call it made, with the server's `usage` tokens, the messages new that turn and the
    reply; its seeds follow the in-process loops' per-turn rule; the run replays under `verify`."""
    from bench.adapters.prompting import turn_seed
    from bench.analysis.replay import verify_run
    from tests.test_adapter_openai import spec_file as openai_spec

    with FakeChatServer(shop_agent) as server:
        out = tmp_path / "r"
        run_benchmark(mini_suite, load_agent_file(_mcp_agent_spec(tmp_path, server.base_url)), ["cancel-pending"],
                      RunConfig(k=1, out=out, progress=False, seed=0))
        requests = list(server.requests)
        run_benchmark(mini_suite, load_agent_file(openai_spec(tmp_path, server.base_url)), ["cancel-pending"],
                      RunConfig(k=1, out=tmp_path / "in-process", progress=False, seed=0))
    in_process = read_run(tmp_path / "in-process")
    in_process_model = next(e for e in in_process.trial_steps(next(iter(in_process.summaries))) if e["kind"] == "model")
    log = read_run(out)
    (trial_id, summary), = log.summaries.items()
    events = log.trial_steps(trial_id)
    assert [e.get("tool") or e["kind"] for e in events] == \
        ["model", "find_customer", "model", "list_orders", "model", "cancel_order", "model"]
    models = [e for e in events if e["kind"] == "model"]
    assert all(m.keys() == in_process_model.keys() for m in models)  # the in-process adapters' record, field for field
    sizes = [sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4 + 1 for body in requests]
    assert [m["input_tokens"] for m in models] == sizes and [m["output_tokens"] for m in models] == [9] * 4
    assert all(m["model"] == "fake-model" and m["latency_s"] > 0 for m in models)
    assert [m["role"] for m in models[0]["messages"]] == ["system", "user"]
    assert [m["role"] for m in models[1]["messages"]] == ["tool"]
    assert models[0]["output"]["tool_calls"][0]["function"]["name"] == "find_customer"
    assert summary["input_tokens"] == sum(sizes) and summary["cost"] == pytest.approx(sum(sizes) / 1e6)
    assert summary["agent_info"]["exit_status"] == 0
    assert [r["seed"] for r in requests] == [turn_seed(summary["seed"], turn) for turn in range(4)]
    assert verify_run(out).ok
