"""The `openai` adapter through the real runner, against a scripted chat-completions server on
loopback (tests/servers/fake_chat.py): native tool calls, seeds, tokens and cost, and the fault
classification (infrastructure `error` vs the agent's `failure`) with its retries."""

import json
from pathlib import Path

import pytest

from bench.adapters.spec import load_agent_file, parse_agent_spec
from bench.canonical import derive_seed
from bench.errors import BenchError
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from tests.servers.fake_chat import (
    FakeChatServer,
    Reply,
    always,
    answer,
    sequence,
    shop_agent,
    tool_call,
)

FAST = {"backoff_s": 0.001, "backoff_max_s": 0.01}


def spec_file(tmp_path: Path, base_url: str, name: str = "fake", **options) -> Path:
    opts = {"base_url": base_url, "model": "fake-model", **FAST, **options}
    lines = [f'name = "{name}"', 'adapter = "openai"', "[options]"]
    for key, value in opts.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(suite, spec_path, out, k=2, tasks=("cancel-pending",), **kw):
    config = RunConfig(k=k, out=Path(out), progress=False, retry_backoff_s=0.0, **kw)
    run_benchmark(suite, load_agent_file(spec_path), list(tasks), config)
    return read_run(out)


def test_native_tool_calls_are_the_logged_steps(mini_suite, tmp_path):
    with FakeChatServer(shop_agent) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, input_cost_per_mtok=2.0, output_cost_per_mtok=8.0),
                  tmp_path / "r", k=4)
    assert len(log.summaries) == 4
    for trial_id, summary in log.summaries.items():
        steps = log.trial_steps(trial_id)
        tools = [(s["tool"], s["args"]) for s in steps if s["kind"] == "tool"]
        # the scripted model decides at its third turn, from that turn's seed: derived from the
        # trial seed and the turn index (blake2b, see bench.canonical.derive_seed)
        wrong = derive_seed(summary["seed"], "turn", 2) % 2_147_483_647 % 2 == 1
        assert tools == [("find_customer", {"email": "ada@example.com"}), ("list_orders", {"customer_id": "C1"}),
                         ("cancel_order", {"order_id": "O3" if wrong else "O1"})]
        assert summary["outcome"] == ("failure" if wrong else "success")
        models = [s for s in steps if s["kind"] == "model"]
        assert len(models) == 4 and all(m["input_tokens"] > 0 and m["output_tokens"] == 9 for m in models)
        assert summary["input_tokens"] == sum(m["input_tokens"] for m in models)
        assert summary["cost"] == pytest.approx((summary["input_tokens"] * 2.0 + summary["output_tokens"] * 8.0) / 1e6)
        # the observation the model was sent is the one logged for the step
        last_seed = derive_seed(summary["seed"], "turn", 3) % 2_147_483_647
        sent = [m for m in server.requests if m.get("seed") == last_seed][-1]["messages"]
        assert [m["content"] for m in sent if m["role"] == "tool"][0] == '{"customer_id":"C1","name":"Ada Lovelace"}'
        assert steps[1]["observation"] == {"customer_id": "C1", "name": "Ada Lovelace"}
    assert {r["model"] for r in server.requests} == {"fake-model"} and all("tools" in r for r in server.requests)


def test_requests_in_flight_never_exceed_max_concurrency(mini_suite, tmp_path):
    """8 trials at once through one agent with max_concurrency = 2: the server never sees more than
    2 requests at a time — and does see 2 (the trials do overlap)."""
    def slow_shop(body, n):
        reply = shop_agent(body, n)
        reply.delay_s = 0.05
        return reply

    with FakeChatServer(slow_shop) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, max_concurrency=2), tmp_path / "r", k=8, concurrency=8)
    assert len(log.summaries) == 8 and all(s["outcome"] != "error" for s in log.summaries.values())
    assert server.max_in_flight == 2


def test_same_seed_same_trajectory(mini_suite, tmp_path):
    with FakeChatServer(shop_agent) as server:
        spec = spec_file(tmp_path, server.base_url)
        a = run(mini_suite, spec, tmp_path / "a", k=3)
        b = run(mini_suite, spec, tmp_path / "b", k=3)

    def trajectories(log):
        return {t: [(s["tool"], s["args"]) for s in log.trial_steps(t) if s["kind"] == "tool"] for t in log.summaries}

    assert trajectories(a) == trajectories(b)
    assert {s["seed"] for s in a.summaries.values()} == {s["seed"] for s in b.summaries.values()}


def test_transient_429_and_500_are_retried_inside_the_trial(mini_suite, tmp_path):
    storm = [Reply(429, {"error": "rate limited"}, {"Retry-After": "0"}), Reply(500, {"error": "boom"}), Reply(503, "")]
    with FakeChatServer(sequence(*storm, then=shop_agent)) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, retries=3), tmp_path / "r", k=1)
    (summary,) = log.summaries.values()
    assert summary["attempts"] == 1 and not log.attempt_errors  # absorbed by the adapter's own retries
    assert summary["steps"] == 3
    assert len(server.requests) == 3 + 4


def test_429_storm_becomes_an_infrastructure_error_not_a_failure(mini_suite, tmp_path):
    with FakeChatServer(always(Reply(429, {"error": "rate limited"}))) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, retries=2), tmp_path / "r", k=2, retries=1)
    assert {s["outcome"] for s in log.summaries.values()} == {"error"}
    assert all(s["attempts"] == 2 for s in log.summaries.values())
    assert all("HTTP 429" in s["reason"] and "after 3 attempts" in s["reason"] for s in log.summaries.values())
    assert len(server.requests) == 2 * 2 * 3  # trials × runner attempts × adapter attempts


def test_hang_is_a_timeout_then_an_error(mini_suite, tmp_path):
    with FakeChatServer(always(Reply(200, {}, delay_s=5.0))) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, timeout_s=0.2, retries=1), tmp_path / "r", k=1, retries=0)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "error" and "no response within 0.2 s" in summary["reason"]
    assert len(server.requests) == 2


def test_unreadable_body_and_auth_errors_are_infrastructure(mini_suite, tmp_path):
    with FakeChatServer(always(Reply(200, "<html>gateway</html>"))) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, retries=1), tmp_path / "a", k=1, retries=0)
    assert [s["outcome"] for s in log.summaries.values()] == ["error"]
    assert "unreadable 200 response" in next(iter(log.summaries.values()))["reason"]
    with FakeChatServer(always(Reply(401, {"error": "bad key"}))) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, retries=5), tmp_path / "b", k=1, retries=1)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "error" and "HTTP 401" in summary["reason"]
    assert len(server.requests) == 2  # a 401 is not retried by the adapter; the runner tries the trial twice


def test_connection_refused_is_an_error(mini_suite, tmp_path):
    from bench.adapters.llama_server import free_port

    spec = spec_file(tmp_path, f"http://127.0.0.1:{free_port()}/v1", retries=1)
    log = run(mini_suite, spec, tmp_path / "r", k=1, retries=0)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "error" and "connection failed" in summary["reason"]


def test_malformed_tool_calls_are_the_agents_doing(mini_suite, tmp_path):
    script = sequence(
        tool_call("find_customer", "{not json"),                   # bad JSON: told, not executed
        tool_call("find_customer", '["ada@example.com"]'),           # not an object: told, not executed
        then=lambda body, n: shop_agent({**body, "messages": [m for m in body["messages"]
                                                             if not str(m.get("content") or "").startswith("Error: the arguments")]}, n))
    with FakeChatServer(script) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, seed=False), tmp_path / "r", k=1)
    (trial_id, summary), = log.summaries.items()
    assert summary["outcome"] == "success" and summary["steps"] == 3
    assert summary["agent_info"]["malformed_tool_calls"] == 2
    steps = log.trial_steps(trial_id)
    assert [s["kind"] for s in steps][:3] == ["model", "model", "model"]  # no step for the malformed calls
    told = [m for m in server.requests[2]["messages"] if m["role"] == "tool"]
    assert "not valid JSON" in told[0]["content"] and "must be a JSON object" in told[1]["content"]


def test_endless_malformed_calls_fail_the_trial(mini_suite, tmp_path):
    with FakeChatServer(always(tool_call("cancel_order", "{{{"))) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, max_invalid=2), tmp_path / "r", k=1)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "failure" and "malformed tool calls" in summary["checks"]["agent_completed"]["detail"]
    assert len(server.requests) == 3


def test_unknown_tool_is_a_step_with_an_error_observation(mini_suite, tmp_path):
    with FakeChatServer(sequence(tool_call("delete_everything", {}), then=lambda b, n: answer("done"))) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url), tmp_path / "r", k=1)
    (trial_id, summary), = log.summaries.items()
    (step,) = [s for s in log.trial_steps(trial_id) if s["kind"] == "tool"]
    assert step["tool"] == "delete_everything" and "unknown tool" in step["error"]
    assert summary["outcome"] == "failure"


def test_context_overflow_in_tools_mode_is_a_failure(mini_suite, tmp_path):
    too_long = Reply(400, {"error": {"message": "This model's maximum context length is 4096 tokens", "code": "context_length_exceeded"}})
    with FakeChatServer(sequence(tool_call("find_customer", {"email": "ada@example.com"}), then=lambda b, n: too_long)) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url), tmp_path / "r", k=1)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "failure" and "context window" in summary["checks"]["agent_completed"]["detail"]


def test_structured_mode_against_the_fake_server(mini_suite, tmp_path):
    """Structured mode sends the schema of the possible calls; the reply is the JSON action."""
    import json

    import jsonschema

    plan = [{"tool": "find_customer", "arguments": {"email": "ada@example.com"}},
            {"tool": "list_orders", "arguments": {"customer_id": "C1"}},
            {"tool": "cancel_order", "arguments": {"order_id": "O1"}},
            {"tool": "final_answer", "arguments": {"answer": "Cancelled O1."}}]

    def structured(body, n):
        schema = body["response_format"]["json_schema"]["schema"]
        action = plan[sum(m["role"] == "assistant" for m in body["messages"])]
        jsonschema.validate(action, schema)  # what we reply is allowed by what we were sent
        return answer(json.dumps(action))

    with FakeChatServer(structured) as server:
        log = run(mini_suite, spec_file(tmp_path, server.base_url, mode="structured"), tmp_path / "r", k=1)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "success", summary["reason"]
    first = server.requests[0]["response_format"]["json_schema"]["schema"]
    # before any tool result, strings can only be those of the instruction
    cancel = next(b for b in first["anyOf"] if b["properties"]["tool"]["const"] == "cancel_order")
    assert "O1" not in cancel["properties"]["arguments"]["properties"]["order_id"]["enum"]
    find = next(b for b in first["anyOf"] if b["properties"]["tool"]["const"] == "find_customer")
    assert "ada@example.com" in find["properties"]["arguments"]["properties"]["email"]["enum"]
    last = server.requests[-1]["response_format"]["json_schema"]["schema"]
    cancel = next(b for b in last["anyOf"] if b["properties"]["tool"]["const"] == "cancel_order")
    assert {"O1", "O2"} <= set(cancel["properties"]["arguments"]["properties"]["order_id"]["enum"])  # from list_orders
    second = server.requests[1]["response_format"]["json_schema"]["schema"]
    orders = next(b for b in second["anyOf"] if b["properties"]["tool"]["const"] == "list_orders")
    assert "C1" in orders["properties"]["arguments"]["properties"]["customer_id"]["enum"]  # from find_customer's result


def test_spec_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nadapter = "openai"\n[options]\nmodel = "m"\nmode = "telepathy"\n')
    with pytest.raises(BenchError, match="mode"):
        load_agent_file(bad)
    missing = tmp_path / "missing.toml"
    missing.write_text('name = "x"\nadapter = "openai"\n[options]\nmodel = "m"\n')
    with pytest.raises(BenchError, match="base_url"):
        load_agent_file(missing).build()
    keyless = tmp_path / "keyless.toml"
    keyless.write_text('name = "x"\nadapter = "openai"\n[options]\nmodel = "m"\nbase_url = "http://127.0.0.1:1/v1"\n'
                       'api_key_env = "TRAJBENCH_TEST_NO_SUCH_VAR"\n')
    with pytest.raises(BenchError, match="TRAJBENCH_TEST_NO_SUCH_VAR"):
        load_agent_file(keyless).build()


def test_roster_template_has_no_key():
    spec = parse_agent_spec("openai-compatible")
    assert spec.adapter == "openai" and "api_key" not in spec.options and spec.options["api_key_env"]


@pytest.mark.parametrize("mode", ["tools", "structured"])
def test_the_openai_loop_resumes_from_a_restored_prefix(mini_suite, tmp_path, mode):
    """Causal replay through the openai adapter: the continuation's first request holds the
    restored calls and their logged results in the mode's message form, and the scripted model
    carries on from there (cancel_order next: O1 on even seeds, O3 on odd ones)."""
    from bench.analysis.causal import Sampler, replay_node
    from bench.analysis.prefix import prefix_of

    def structured(body, n):
        results = [m for m in body["messages"] if m["role"] == "user" and m["content"].startswith("Result of")]
        wrong = body.get("seed", 0) % 2 == 1
        if len(results) == 2:
            order = "O3" if wrong else "O1"
            return answer(json.dumps({"tool": "cancel_order", "arguments": {"order_id": order}}))
        return answer(json.dumps({"tool": "final_answer", "arguments": {"answer": "Cancelled O3." if wrong else "Cancelled O1."}}))

    run_benchmark(mini_suite, parse_agent_spec("sim:oracle"), ["cancel-pending"],
                  RunConfig(k=1, out=tmp_path / "run", progress=False))
    log = read_run(tmp_path / "run")
    trial = next(iter(log.summaries))
    with FakeChatServer(shop_agent if mode == "tools" else structured) as server:
        agent = load_agent_file(spec_file(tmp_path, server.base_url, mode=mode)).build()
        result = replay_node(log, Sampler(mini_suite, agent, 20), prefix_of(log, mini_suite, trial, 2), 4)
    first = server.requests[0]["messages"]
    logged = [e["observation"] for e in log.trial_steps(trial)[:2]]
    if mode == "tools":
        tool_messages = [m for m in first if m["role"] == "tool"]
        assert [json.loads(m["content"]) for m in tool_messages] == logged
        assert [m["tool_calls"][0]["function"]["name"] for m in first if m["role"] == "assistant"] == \
            ["find_customer", "list_orders"]
    else:
        assert sum(m["content"].startswith("Result of") for m in first if m["role"] == "user") == 2
    assert result["node"]["n"] == 4 and 0 < result["node"]["successes"] < 4  # seeds decide O1 or O3
