"""The agent-framework adapters (`agents-sdk`: OpenAI Agents SDK; `pydantic-ai`) running their
real loops through the real runner against the project's scripted chat-completions server on
loopback (tests/servers/fake_chat.py), in both tool modes: the episode's tools as the
framework's function tools, and the episode served over MCP reached with the framework's own
MCP client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.adapters.spec import load_agent_file, parse_agent_spec
from bench.analysis.replay import verify_run
from bench.errors import BenchError
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from tests.servers.fake_chat import FakeChatServer, Reply, answer, sequence, shop_agent, tool_call

pytest.importorskip("agents")
pytest.importorskip("pydantic_ai")

ADAPTERS = ["agents-sdk", "pydantic-ai"]
MODES = [(a, t) for a in ADAPTERS for t in ("functions", "mcp")]


def spec_file(tmp_path: Path, adapter: str, base_url: str, name: str = "fw", **options: Any) -> Path:
    opts = {"base_url": base_url, "model": "fake-model", "retries": 0, **options}
    lines = [f'name = "{name}"', f'adapter = "{adapter}"', "[options]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in opts.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def run(suite: Any, spec_path: Path, out: Path, k: int = 1, **kw: Any) -> Any:
    config = RunConfig(k=k, out=out, progress=False, retry_backoff_s=0.0, **kw)
    run_benchmark(suite, load_agent_file(spec_path), ["cancel-pending"], config)
    return read_run(out)


def tool_steps(log: Any, trial_id: str) -> list[tuple[str, Any]]:
    return [(s["tool"], s["args"]) for s in log.trial_steps(trial_id) if s["kind"] == "tool"]


def mcp_text(content: Any) -> str:
    """A tool result as the scripted model reads it: over MCP the frameworks may send a list of
    content parts, or the MCP text content as JSON."""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    try:
        data = json.loads(content)
    except (TypeError, json.JSONDecodeError):
        return str(content)
    if isinstance(data, dict) and data.get("type") == "text":
        return str(data["text"])
    return str(content)


def shop(body: dict[str, Any], n: int) -> Reply:
    """shop_agent, reading tool results that may come wrapped (MCP mode)."""
    messages = [{**m, "content": mcp_text(m.get("content"))} if m["role"] == "tool" else m for m in body["messages"]]
    return shop_agent({**body, "messages": messages}, n)


@pytest.mark.parametrize("adapter,tools", MODES)
def test_k_concurrent_trials_each_follow_their_own_seed(adapter, tools, mini_suite, tmp_path):
    """4 trials at once through one agent: each trial's steps, world and answer follow its own
    seed (an odd seed at the third turn makes the scripted model cancel the wrong order), so no
    trial sees another's state; each turn's seed is trajbench's per-turn rule; model turns carry
    the server's token counts; the run replays under `verify`."""
    from bench.adapters.prompting import turn_seed

    with FakeChatServer(shop) as server:
        log = run(mini_suite, spec_file(tmp_path, adapter, server.base_url, tools=tools, input_cost_per_mtok=1.0),
                  tmp_path / "r", k=4, concurrency=4)
    assert len(log.summaries) == 4 and server.max_in_flight >= 1
    outcomes = set()
    for trial_id, summary in log.summaries.items():
        wrong = turn_seed(summary["seed"], 2) % 2 == 1
        assert tool_steps(log, trial_id) == [("find_customer", {"email": "ada@example.com"}), ("list_orders", {"customer_id": "C1"}),
                                             ("cancel_order", {"order_id": "O3" if wrong else "O1"})]
        assert summary["outcome"] == ("failure" if wrong else "success"), summary["checks"]
        assert summary["answer"] == ("Cancelled O3." if wrong else "Cancelled O1.")
        models = [s for s in log.trial_steps(trial_id) if s["kind"] == "model"]
        assert len(models) == 4 and all(m["input_tokens"] > 0 and m["output_tokens"] == 9 and m["latency_s"] > 0 for m in models)
        assert summary["input_tokens"] == sum(m["input_tokens"] for m in models)
        assert summary["cost"] == pytest.approx(summary["input_tokens"] / 1e6)
        outcomes.add(summary["outcome"])
    seeds = sorted(r.get("seed") for r in server.requests)
    assert seeds == sorted(turn_seed(s["seed"], turn) for s in log.summaries.values() for turn in range(4))
    offered = {t["function"]["name"] for t in server.requests[0]["tools"]}
    assert ("final_answer" in offered) == (tools == "mcp") and {"find_customer", "cancel_order"} <= offered
    assert verify_run(tmp_path / "r").ok


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_same_seed_sends_the_same_requests(adapter, mini_suite, tmp_path):
    """Seeds follow the one per-turn rule of every in-process loop (`frameworks.TurnSeeds`): each
    turn its own seed, the same run seed the same requests, byte for byte in what matters; a
    request the client retries keeps its turn's seed; `seed = false` sends none."""
    from bench.adapters.prompting import turn_seed
    from tests.servers.fake_chat import Reply

    def flaky(body: dict[str, Any], n: int) -> Reply:  # the first request fails once: the client retries it
        return Reply(500, {"error": "busy"}) if n == 0 else shop(body, n)

    sent = {}
    for name, seed, options, behaviour in (("a", 5, {}, shop), ("b", 5, {}, shop), ("c", 6, {}, shop),
                                           ("retry", 5, {"retries": 1}, flaky), ("off", 5, {"seed": False}, shop)):
        with FakeChatServer(behaviour) as server:
            log = run(mini_suite, spec_file(tmp_path, adapter, server.base_url, name=name, **options), tmp_path / name, seed=seed)
        sent[name] = server.requests
        trial_seed = next(iter(log.summaries.values()))["seed"]
        expected = [turn_seed(trial_seed, turn) for turn in range(4)]
        if name == "off":
            assert [r.get("seed") for r in server.requests] == [None] * 4
        elif name == "retry":
            assert [r["seed"] for r in server.requests] == [expected[0], *expected]
        else:
            assert [r["seed"] for r in server.requests] == expected and len(set(expected)) == 4
    assert sent["a"] == sent["b"] and sent["a"] != sent["c"]


def looping(body: dict[str, Any], n: int) -> Reply:
    return tool_call("find_customer", {"email": "ada@example.com"}, f"call_{n}")


@pytest.mark.parametrize("adapter,tools", MODES)
def test_a_budget_overrun_fails_within_budget(adapter, tools, mini_suite, tmp_path):
    """A model that never stops calling tools: the episode's budget ends the trial (in MCP mode
    too, where the over-budget call is an MCP tool error), with exactly max_steps steps."""
    with FakeChatServer(looping) as server:
        log = run(mini_suite, spec_file(tmp_path, adapter, server.base_url, tools=tools), tmp_path / "r", max_steps=3)
    (trial_id, summary), = log.summaries.items()
    assert summary["outcome"] == "failure" and not summary["checks"]["within_budget"]["passed"]
    assert len(tool_steps(log, trial_id)) == 3 and len(server.requests) <= 5


def malformed(body: dict[str, Any], n: int) -> Reply:
    return tool_call("find_customer", "{not json", f"call_{n}")


def test_agents_sdk_max_turns_fails_the_trial(mini_suite, tmp_path):
    """Turns that make no step (malformed arguments, told to the model) run into max_turns."""
    with FakeChatServer(malformed) as server:
        log = run(mini_suite, spec_file(tmp_path, "agents-sdk", server.base_url, max_turns=3), tmp_path / "r")
    (trial_id, summary), = log.summaries.items()
    assert summary["outcome"] == "failure" and "max_turns = 3" in summary["checks"]["agent_completed"]["detail"]
    assert tool_steps(log, trial_id) == [] and len(server.requests) == 3
    assert summary["agent_info"]["malformed_tool_calls"] == 3


def test_pydantic_ai_request_limit_fails_the_trial(mini_suite, tmp_path):
    """Turns that make no step (arguments PydanticAI cannot parse go back to the model as a retry)
    run into the request limit, given enough tool retries."""
    with FakeChatServer(malformed) as server:
        log = run(mini_suite, spec_file(tmp_path, "pydantic-ai", server.base_url, request_limit=3, tool_retries=5), tmp_path / "r")
    (trial_id, summary), = log.summaries.items()
    assert summary["outcome"] == "failure" and "request_limit = 3" in summary["checks"]["agent_completed"]["detail"]
    assert tool_steps(log, trial_id) == [] and len(server.requests) == 3


def test_pydantic_ai_unknown_tool_is_retried_then_fails(mini_suite, tmp_path):
    """A call to a tool the agent does not have goes back to the model as a retry prompt (no step);
    past tool_retries the run ends with UnexpectedModelBehavior, the agent's failure."""
    script = sequence(tool_call("delete_everything", {}), then=lambda b, n: answer("done"))
    with FakeChatServer(script) as server:
        log = run(mini_suite, spec_file(tmp_path, "pydantic-ai", server.base_url), tmp_path / "a")
    (trial_id, summary), = log.summaries.items()
    assert summary["answer"] == "done" and tool_steps(log, trial_id) == []
    assert "delete_everything" in json.dumps(server.requests[1]["messages"][-1])
    with FakeChatServer(lambda b, n: tool_call("delete_everything", {}, f"c{n}")) as server:
        log = run(mini_suite, spec_file(tmp_path, "pydantic-ai", server.base_url, tool_retries=1), tmp_path / "b")
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "failure" and "UnexpectedModelBehavior" in summary["checks"]["agent_completed"]["detail"]


def test_agents_sdk_unknown_tool_follows_tool_not_found(mini_suite, tmp_path):
    """A call to a tool the agent does not have: by the SDK's default the run ends
    (ModelBehaviorError, the agent's failure, no step); `return_error_to_model` lets it go on."""
    script = sequence(tool_call("delete_everything", {}), then=lambda b, n: answer("done"))
    with FakeChatServer(script) as server:
        log = run(mini_suite, spec_file(tmp_path, "agents-sdk", server.base_url), tmp_path / "a")
    (trial_id, summary), = log.summaries.items()
    assert summary["outcome"] == "failure" and "ModelBehaviorError" in summary["checks"]["agent_completed"]["detail"]
    assert tool_steps(log, trial_id) == []
    with FakeChatServer(script) as server:
        log = run(mini_suite, spec_file(tmp_path, "agents-sdk", server.base_url, tool_not_found="return_error_to_model"),
                  tmp_path / "b")
    (summary,) = log.summaries.values()
    assert summary["answer"] == "done" and "agent_completed" not in summary["checks"]
    assert "not found" in str(server.requests[1]["messages"][-1]["content"])


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_wrong_tool_is_a_logged_step_and_a_failure(adapter, mini_suite, tmp_path):
    """A real tool called wrongly (an order that does not exist): a step with the domain's error."""
    script = sequence(tool_call("cancel_order", {"order_id": "O99"}), then=lambda b, n: answer("I could not."))
    with FakeChatServer(script) as server:
        log = run(mini_suite, spec_file(tmp_path, adapter, server.base_url), tmp_path / "r")
    (trial_id, summary), = log.summaries.items()
    (step,) = [s for s in log.trial_steps(trial_id) if s["kind"] == "tool"]
    assert step["tool"] == "cancel_order" and step["error"]
    assert summary["outcome"] == "failure" and summary["answer"] == "I could not."
    assert "Error" in str(server.requests[1]["messages"][-1]["content"])


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_endpoint_down_is_an_infrastructure_error(adapter, mini_suite, tmp_path):
    log = run(mini_suite, spec_file(tmp_path, adapter, "http://127.0.0.1:9/v1", timeout_s=2.0), tmp_path / "r", retries=0)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "error"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_options_name_the_field(adapter, tmp_path):
    with pytest.raises(BenchError, match="tools"):
        load_agent_file(spec_file(tmp_path, adapter, "http://127.0.0.1:9/v1", tools="telepathy"))
    with pytest.raises(BenchError, match="base_url"):
        load_agent_file(spec_file(tmp_path, adapter, "", name="nourl")).build()
    with pytest.raises(BenchError, match="TRAJBENCH_TEST_NO_SUCH_VAR") as info:
        load_agent_file(spec_file(tmp_path, adapter, "http://127.0.0.1:9/v1", name="nokey",
                                  api_key_env="TRAJBENCH_TEST_NO_SUCH_VAR")).build()
    assert info.value.field == "options.api_key_env"
    with pytest.raises(BenchError, match="launch_options"):
        load_agent_file(spec_file(tmp_path, adapter, "", name="launch", launch="llama_cpp",
                                  launch_options={"n_gpu": 1})).build()


@pytest.mark.parametrize("adapter,module,extra", [("agents-sdk", "agents", "agents-sdk"), ("pydantic-ai", "pydantic_ai", "pydantic-ai")])
def test_missing_framework_names_the_extra(adapter, module, extra, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # as if not installed
    with pytest.raises(BenchError, match=rf"pip install 'trajbench\[{extra}\]'") as info:
        load_agent_file(spec_file(tmp_path, adapter, "http://127.0.0.1:9/v1")).build()
    assert "\n" not in str(info.value)


def test_assistant_null_content_becomes_empty_for_llama_cpp():
    """llama-cpp-python's server rejects `content: null` beside tool calls; it becomes "", nothing else changes."""
    from bench.adapters.frameworks import request_body

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
                                       {"role": "assistant", "content": None}]}
    out = json.loads(request_body(json.dumps(body).encode(), {}))
    assert out["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}
    assert out["messages"][0] == body["messages"][0] and out["messages"][2] == body["messages"][2]
    assert request_body(b"not json", {}) == b"not json"
    unchanged = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    assert request_body(unchanged, {}) is unchanged and request_body(b"[1]", {"string_max_length": 3}) == b"[1]"


def test_request_body_parses_once_for_both_rewrites(monkeypatch):
    """The transport's rewrites (null content, tool schemas) share one parse and one dump."""
    import bench.adapters.frameworks as frameworks

    calls = {"loads": 0, "dumps": 0}
    real_loads, real_dumps = frameworks.orjson.loads, frameworks.orjson.dumps

    class Counting:
        JSONDecodeError = frameworks.orjson.JSONDecodeError

        @staticmethod
        def loads(data):
            calls["loads"] += 1
            return real_loads(data)

        @staticmethod
        def dumps(data):
            calls["dumps"] += 1
            return real_dumps(data)

    monkeypatch.setattr(frameworks, "orjson", Counting)
    body = {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}],
            "tools": [{"type": "function", "function": {"name": "t", "parameters": {"type": "object", "properties": {
                "a": {"type": "string", "pattern": "^\\d$"}}}}}]}
    out = json.loads(frameworks.request_body(json.dumps(body).encode(), {"string_max_length": 5, "llama_cpp_patterns": True}))
    assert calls == {"loads": 1, "dumps": 1}
    assert out["messages"][0]["content"] == ""
    assert out["tools"][0]["function"]["parameters"]["properties"]["a"] == {"type": "string", "pattern": "^[0-9]$", "maxLength": 5}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_string_max_length_bounds_the_tools_string_parameters(adapter, mini_suite, tmp_path):
    """`string_max_length` (llama-cpp-python generates tool arguments under a grammar from the
    schema with no max_tokens): every tool the framework sends has maxLength on its string
    parameters; without the option the schemas go out as the suite wrote them."""
    def strings(schema: Any) -> list[dict[str, Any]]:
        found = [schema] if isinstance(schema, dict) and schema.get("type") == "string" else []
        for value in (schema.values() if isinstance(schema, dict) else schema if isinstance(schema, list) else []):
            found += strings(value)
        return found

    for bound in (32, None):
        with FakeChatServer(shop) as server:
            options = {"string_max_length": bound} if bound else {}
            run(mini_suite, spec_file(tmp_path, adapter, server.base_url, name=f"b{bound}", **options), tmp_path / f"r{bound}")
        params = [t["function"]["parameters"] for t in server.requests[0]["tools"]]
        assert any(strings(p) for p in params)
        assert all((s.get("maxLength") == 32) == (bound is not None) for p in params for s in strings(p) if "enum" not in s)


def test_bound_strings_reaches_every_nested_string():
    from bench.adapters.frameworks import request_body
    from bench.adapters.tool_schema import bound_strings

    schema = {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "string", "enum": ["x"]}, "c": {"type": "array", "items": {"type": "string"}},
        "d": {"type": ["string", "null"]}, "e": {"type": "integer"}, "f": {"type": "string", "maxLength": 5},
        "g": {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "enum": {"type": "string"}}}
    out = bound_strings(schema, 9)["properties"]
    assert out["a"]["maxLength"] == out["c"]["items"]["maxLength"] == out["d"]["maxLength"] == out["enum"]["maxLength"] == 9
    assert out["g"]["anyOf"][0]["maxLength"] == 9 and "maxLength" not in out["g"]["anyOf"][1]
    assert "maxLength" not in out["b"] and "maxLength" not in out["e"] and out["f"]["maxLength"] == 5
    assert schema["properties"]["a"] == {"type": "string"}  # the input is not changed
    assert request_body(b"not json", {"string_max_length": 9}) == b"not json"
    assert json.loads(request_body(json.dumps({"messages": []}).encode(), {"string_max_length": 9})) == {"messages": []}


@pytest.mark.parametrize("adapter,tools", MODES)
def test_llama_cpp_patterns_rewrites_the_patterns_sent(adapter, tools, mini_copy, tmp_path):
    """`llama_cpp_patterns` (llama-cpp-python's server dies on a grammar from `\\d`): the tool
    schema the framework sends, as a function tool or over MCP, has the pattern in the subset
    its translation takes, same constraint; without the option it goes out as written."""
    from bench.world.suite import load_suite

    domain = mini_copy / "domain.py"
    domain.write_text(domain.read_text().replace(
        'params={"order_id": {"type": "string"}})', 'params={"order_id": {"type": "string", "pattern": "^O\\\\d+$"}})', 1))
    suite = load_suite(mini_copy)
    sent = {}
    for option in ((True, False) if tools == "functions" else (True,)):
        with FakeChatServer(shop) as server:
            log = run(suite, spec_file(tmp_path, adapter, server.base_url, name=f"p{option}", tools=tools,
                                       llama_cpp_patterns=option), tmp_path / f"r{option}")
        params = {t["function"]["name"]: t["function"]["parameters"] for t in server.requests[0]["tools"]}
        sent[option] = params["cancel_order"]["properties"]["order_id"]["pattern"]
        assert "cancel_order" in [tool for tool, _ in tool_steps(log, next(iter(log.summaries)))]
    assert sent[True] == "^O[0-9]+$"
    assert sent.get(False, "^O\\d+$") == "^O\\d+$"


# (pattern, what llama_cpp_patterns sends: None = dropped, strings it must match, must not match)
PATTERNS = [
    (r"^EV\d{4}$", r"^EV[0-9]{4}$", ["EV0042"], ["EV042", "EVabcd"]),
    (r"^[\w.-]+@[\w-]+\.\w+$", r"^[a-zA-Z0-9_.-]+@[a-zA-Z0-9_-]+[.][a-zA-Z0-9_]+$", ["a.b@c-d.io"], ["a@b_c", "a@b.c!"]),
    (r"^(?:ab|cd)\/\d$", r"^(ab|cd)[/][0-9]$", ["cd/7"], ["ab7", "ef/1"]),
    (r"^[^\d\s]+\S$", r"^[^0-9 \t\n\r]+[^ \t\n\r]$", ["ab", "a1"], ["1a", "a b"]),
    (r"^\D\W\(x\)\x41$", r"^[^0-9][^a-zA-Z0-9_]\(x\)\x41$", ["a-(x)A"], ["1-(x)A", "ab(x)A"]),
    (r"^a\$\[\]$", r"^a[$]\[\]$", ["a$[]"], ["a"]),
    (r"^[A-Z]{2}$", r"^[A-Z]{2}$", ["AB"], ["A"]),
    (r"EV\d+", None, [], []), (r"^\bx$", None, [], []), (r"^(a)\1$", None, [], []), (r"^(?=a)a$", None, [], []),
    (r"^[\w\-]$", None, [], []), (r"^a^b$", None, [], []), (r"^[]a]$", None, [], []), (r"^[ab$", None, [], []),
    (r"^\p{L}$", None, [], []), (r"^\xZZ$", None, [], []),
]


@pytest.mark.parametrize("pattern,safe,matches,rejects", PATTERNS)
def test_grammar_safe_pattern_keeps_the_constraint(pattern, safe, matches, rejects):
    """Each rewrite matches what the pattern matches (Python's re as the judge), and the grammar
    llama-cpp-python's own translation makes of it uses only the escapes its grammar parser
    knows (\\x \\u \\U \\t \\n \\r \\\\ \\" \\[ \\]; any other is the "unknown escape" that kills the server)."""
    import re

    from bench.adapters.tool_schema import grammar_safe_pattern

    assert grammar_safe_pattern(pattern) == safe
    if safe is None:
        return
    for text in matches + rejects:
        assert bool(re.fullmatch(safe[1:-1], text)) == bool(re.fullmatch(pattern[1:-1], text)) == (text in matches)
    gbnf = pytest.importorskip("llama_cpp.llama_grammar")
    grammar = gbnf.json_schema_to_gbnf(json.dumps({"type": "string", "pattern": safe}))
    assert not re.findall(r'\\[^xuUtnr"\[\]]', grammar.replace("\\\\", ""))
    try:  # and the pattern as written would not have done (or is left as it is)
        original = gbnf.json_schema_to_gbnf(json.dumps({"type": "string", "pattern": pattern}))
        takes = not re.findall(r'\\[^xuUtnr"\[\]]', original.replace("\\\\", ""))
    except (AssertionError, ValueError):
        takes = False
    assert not takes or safe == pattern


def test_grammar_safe_patterns_reaches_nested_patterns():
    from bench.adapters.frameworks import request_body
    from bench.adapters.tool_schema import grammar_safe_patterns

    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": r"^\d$"},
                                               "b": {"type": "array", "items": {"type": "string", "pattern": r"\d"}},
                                               "c": {"anyOf": [{"type": "string", "pattern": r"^\w$"}, {"type": "null"}]}}}
    out = grammar_safe_patterns(schema)["properties"]
    assert out["a"]["pattern"] == "^[0-9]$" and "pattern" not in out["b"]["items"]
    assert out["c"]["anyOf"][0]["pattern"] == "^[a-zA-Z0-9_]$" and schema["properties"]["a"]["pattern"] == r"^\d$"
    body = json.dumps({"tools": [{"type": "function", "function": {"name": "t", "parameters": schema}}]}).encode()
    sent = json.loads(request_body(body, {"llama_cpp_patterns": True, "string_max_length": 4}))
    assert sent["tools"][0]["function"]["parameters"]["properties"]["a"] == {"type": "string", "pattern": "^[0-9]$", "maxLength": 4}
    assert request_body(body, {}) is body and request_body(b"not json", {"llama_cpp_patterns": True}) == b"not json"


def test_the_mcp_agent_sends_the_rewritten_schemas(mini_copy, tmp_path):
    """agents/mcp_chat_agent.py in its own process, on the scripted server, with the roster's
    flags: the tools it sends have their strings bounded and their patterns rewritten (the
    framework options' code, `bench.adapters.tool_schema`); without the flags, as written."""
    import sys

    from bench.world.suite import load_suite

    domain = mini_copy / "domain.py"
    domain.write_text(domain.read_text().replace(
        'params={"order_id": {"type": "string"}})', 'params={"order_id": {"type": "string", "pattern": "^O\\\\d+$"}})', 1))
    suite = load_suite(mini_copy)
    agent = Path(__file__).resolve().parent.parent / "agents" / "mcp_chat_agent.py"
    sent = {}
    for flags in (["--string-max-length", "32", "--llama-cpp-patterns"], []):
        path = tmp_path / f"mcp{len(flags)}.toml"
        with FakeChatServer(shop) as server:
            path.write_text(f'name = "mcp"\nadapter = "command"\n[options]\ncommand = {json.dumps([sys.executable, str(agent), *flags])}\n'
                            f'base_url = "{server.base_url}"\nmodel = "fake-model"\n')
            log = run(suite, path, tmp_path / f"r{len(flags)}")
        assert next(iter(log.summaries.values()))["agent_info"]["exit_status"] == 0
        params = {t["function"]["name"]: t["function"]["parameters"] for t in server.requests[0]["tools"]}
        sent[bool(flags)] = params["cancel_order"]["properties"]["order_id"]
    assert sent[True] == {"type": "string", "pattern": "^O[0-9]+$", "maxLength": 32}
    assert sent[False] == {"type": "string", "pattern": "^O\\d+$"}


@pytest.mark.parametrize("adapter,tools", MODES)
def test_the_frameworks_resume_from_a_restored_prefix(adapter, tools, mini_suite, tmp_path):
    """Causal replay through each framework's own loop: the continuation's first request holds
    the restored calls and their logged results as the framework's message history (the Agents
    SDK's input items, PydanticAI's `message_history`), the restored calls are not made again,
    and the scripted model goes on from there (cancel_order next, O1 or O3 by the turn's seed)."""
    from bench.adapters.prompting import turn_seed
    from bench.analysis.causal import Sampler
    from bench.analysis.prefix import prefix_of

    run_benchmark(mini_suite, parse_agent_spec("sim:oracle"), ["cancel-pending"],
                  RunConfig(k=1, out=tmp_path / "run", progress=False))
    log = read_run(tmp_path / "run")
    trial = next(iter(log.summaries))
    events: list[dict[str, Any]] = []
    with FakeChatServer(shop) as server:
        agent = load_agent_file(spec_file(tmp_path, adapter, server.base_url, tools=tools)).build()
        node = Sampler(mini_suite, agent, 20, sink=events.append).arm(prefix_of(log, mini_suite, trial, 2), None, None, 4,
                                                                       role="node").as_dict()
    first = server.requests[0]["messages"]
    logged = [e["observation"] for e in log.trial_steps(trial)[:2]]
    assert [json.loads(mcp_text(m["content"])) for m in first if m["role"] == "tool"] == logged
    assert [c["function"]["name"] for m in first if m["role"] == "assistant" for c in m["tool_calls"]] == \
        ["find_customer", "list_orders"]
    assert len(server.requests) == 4 * 2  # per continuation: the cancel turn, then the answer
    fresh = [e for e in events if e.get("type") == "step" and not e.get("restored")]
    assert [e["tool"] for e in fresh if e["kind"] == "tool"] == ["cancel_order"] * 4
    assert len([e for e in fresh if e["kind"] == "model"]) == 8
    trial_seeds = [e["seed"] for e in events if e.get("type") == "trial"]
    firsts = [r["seed"] for r in server.requests if sum(m["role"] == "tool" for m in r["messages"]) == 2]
    assert sorted(firsts) == sorted(turn_seed(seed, 2) for seed in trial_seeds)  # numbered after the restored calls
    assert node["n"] == 4 and 0 < node["successes"] < 4  # the turn's seed decides O1 or O3
