"""The `langgraph` adapter through the real runner on the mini suite, with scripted models (fast,
no llama.cpp): the built-in ReAct graph over the local chat model (with a scripted engine in place
of llama.cpp), user graph factories, recursion limits, tool errors, budgets and infrastructure
errors. The real local model runs in tests/test_adapter_local.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from bench.adapters.langgraph_adapter import LangGraphAgent, make_local_chat_model
from bench.adapters.local import LocalAgent
from bench.adapters.options import Scaffold
from bench.adapters.prompting import Completion
from bench.adapters.spec import load_agent_file, parse_agent_spec
from bench.canonical import derive_seed
from bench.errors import BenchError
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark

HERE = "tests.test_adapter_langgraph"


# -- a scripted engine in place of llama.cpp ----------------------------------------------------

def turn_seed(trial_seed: int, turn: int) -> int:
    return derive_seed(trial_seed, "turn", turn) % 2_147_483_647


class ScriptedEngine:
    """Plays the mini suite's cancel task as JSON actions, like the local model does under its
    grammar: find the customer, list the orders, cancel O1 — or O2 when that turn's seed is odd —
    then repeat its last call (the loop guard must then force the final answer). Every request is
    kept, so two adapters can be compared prompt by prompt."""

    name = "scripted-engine"

    def __init__(self) -> None:
        self.requests: list[tuple[list[dict], dict, int]] = []

    def complete(self, messages, schema, *, seed, **sampling):
        import jsonschema

        self.requests.append((messages, schema, seed))
        calls = [json.loads(m["content"]) for m in messages if m["role"] == "assistant" and m["content"].endswith("}")]
        results = [m["content"] for m in messages if m["role"] == "user" and m["content"].startswith("Result of")]
        branches = {b["properties"]["tool"]["const"] for b in schema.get("anyOf", [schema])}
        if branches == {"final_answer"}:
            order = calls[-1]["arguments"]["order_id"]
            action = {"tool": "final_answer", "arguments": {"answer": f"Cancelled {order}."}}
        elif len(calls) == 0:
            action = {"tool": "find_customer", "arguments": {"email": "ada@example.com"}}
        elif len(calls) == 1:
            customer = json.loads(results[0].split(": ", 1)[1])["customer_id"]
            action = {"tool": "list_orders", "arguments": {"customer_id": customer}}
        elif len(calls) == 2:
            action = {"tool": "cancel_order", "arguments": {"order_id": "O2" if seed % 2 else "O1"}}
        else:
            action = calls[-1]
        jsonschema.validate(action, schema)  # the script only says what the grammar allows
        return Completion(json.dumps(action), len(json.dumps(messages)) // 4, 12, 0.001, 0.0)


class GarbledEngine(ScriptedEngine):
    """Replies with a cut-off JSON object (as when max_tokens runs out) on its first `garbage`
    requests, then plays the script."""

    def __init__(self, garbage: int = 1) -> None:
        super().__init__()
        self.garbage = garbage

    def complete(self, messages, schema, *, seed, **sampling):
        if self.garbage > 0:
            self.garbage -= 1
            self.requests.append((messages, schema, seed))
            return Completion('{"tool": "find_cust', 10, 4, 0.001, 0.0)
        return super().complete(messages, schema, seed=seed, **sampling)


class Scripted:
    """A python-adapter class that runs an adapter over a shared ScriptedEngine."""

    engines: dict[str, ScriptedEngine] = {}

    def __init__(self, via: str = "langgraph", key: str = "default", garbage: int = 0):
        engine = self.engines.setdefault(key, GarbledEngine(int(garbage)) if int(garbage) else ScriptedEngine())
        if via == "local":
            self.agent = LocalAgent("scripted-local", {}, engine=engine)
        else:
            model = make_local_chat_model(engine, Scaffold(), {"temperature": 0.0})
            self.agent = LangGraphAgent("scripted-langgraph", {}, model=model)

    def run(self, episode):
        return self.agent.run(episode)


def run(suite, spec, out, k=2, tasks=("cancel-pending",), **kw):
    config = RunConfig(k=k, out=Path(out), progress=False, retry_backoff_s=0.0, **kw)
    spec = parse_agent_spec(spec) if isinstance(spec, str) else spec
    run_benchmark(suite, spec, list(tasks), config)
    return read_run(out)


def tool_steps(log, trial_id):
    return [(s["tool"], s["args"]) for s in log.trial_steps(trial_id) if s["kind"] in ("tool", "user")]


def engines() -> dict:
    """The engines of the module as the runner imported it (`tests.test_adapter_langgraph`, which
    pytest may have imported under another name)."""
    import importlib

    return importlib.import_module(HERE).Scripted.engines


@pytest.fixture(autouse=True)
def _fresh_engines():
    engines().clear()
    yield


def test_builtin_graph_logs_what_the_model_did(mini_suite, tmp_path):
    log = run(mini_suite, f"{HERE}:Scripted?via=langgraph", tmp_path / "r", k=4)
    engine = engines()["default"]
    assert len(log.summaries) == 4
    for trial_id, summary in log.summaries.items():
        wrong = turn_seed(summary["seed"], 2) % 2 == 1
        assert tool_steps(log, trial_id) == [("find_customer", {"email": "ada@example.com"}), ("list_orders", {"customer_id": "C1"}),
                                             ("cancel_order", {"order_id": "O2" if wrong else "O1"})]
        # the repeated cancel was not run: the loop guard forced the final answer
        assert summary["answer"] == ("Cancelled O2." if wrong else "Cancelled O1.") and summary["steps"] == 3
        assert summary["outcome"] == ("failure" if wrong else "success"), summary["reason"]
        models = [s for s in log.trial_steps(trial_id) if s["kind"] == "model"]
        assert len(models) == 4 and all(m["input_tokens"] > 0 and m["output_tokens"] > 0 for m in models)
        assert models[-1]["output_tokens"] == 24  # the repeat and the forced answer: two decodes in one turn
        assert models[0]["model"] == "scripted-engine"
        assert summary["agent_info"]["langgraph"]["recursion_limit"] == 2 * 50 + 2
    # the seeds the engine saw are the per-turn seeds of the trials
    seeds = {s["seed"] for s in log.summaries.values()}
    assert {seed for _, _, seed in engine.requests} == {turn_seed(s, t) for s in seeds for t in range(5)}


def test_builtin_graph_over_local_model_equals_the_local_adapter(mini_suite, tmp_path):
    """The langgraph path rebuilds, from LangChain messages, exactly the prompt, schema and seed
    the local adapter sends: same engine requests, same trajectories."""
    a = run(mini_suite, f"{HERE}:Scripted?via=local&key=a", tmp_path / "a", k=3)
    b = run(mini_suite, f"{HERE}:Scripted?via=langgraph&key=b", tmp_path / "b", k=3)
    ra, rb = engines()["a"].requests, engines()["b"].requests
    assert len(ra) == len(rb) == 3 * 5

    def key(request):
        messages, schema, seed = request
        return json.dumps([messages, schema, seed], sort_keys=True)

    assert sorted(map(key, ra)) == sorted(map(key, rb))
    assert {t: tool_steps(a, t) for t in a.summaries} == {t: tool_steps(b, t) for t in b.summaries}


def test_invalid_replies_are_corrected_or_fail_like_the_local_adapter(mini_suite, tmp_path):
    log = run(mini_suite, f"{HERE}:Scripted?via=langgraph&key=g1&garbage=1", tmp_path / "a", k=1)
    (trial_id, summary), = log.summaries.items()
    first = next(s for s in log.trial_steps(trial_id) if s["kind"] == "model")
    assert first["output_tokens"] == 4 + 12 and first["output"]["tool_calls"][0]["name"] == "find_customer"
    # the second decode was told what was wrong, as the local adapter tells it
    retry_prompt = engines()["g1"].requests[1][0]
    assert retry_prompt[-1]["role"] == "user" and "not valid" in retry_prompt[-1]["content"]
    log = run(mini_suite, f"{HERE}:Scripted?via=langgraph&key=g2&garbage=99", tmp_path / "b", k=1)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "failure" and "4 invalid replies in a row" in summary["checks"]["agent_completed"]["detail"]
    log = run(mini_suite, f"{HERE}:Scripted?via=local&key=g3&garbage=99", tmp_path / "c", k=1)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "failure" and "4 invalid replies in a row" in summary["checks"]["agent_completed"]["detail"]


# -- user graphs -------------------------------------------------------------------------------

class PlanModel(BaseChatModel):
    """A stateless scripted chat model: turn i (AI messages so far) plays plan[i]; past the end
    it repeats the last entry. An entry is (tool, args) or a final text."""

    plan: list

    @property
    def _llm_type(self) -> str:
        return "plan"

    def bind_tools(self, tools, **kwargs):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        turn = sum(m.type == "ai" for m in messages)
        step = self.plan[min(turn, len(self.plan) - 1)]
        usage = {"input_tokens": 10 + len(messages), "output_tokens": 5, "total_tokens": 15 + len(messages)}
        if isinstance(step, str):
            message = AIMessage(content=step, usage_metadata=usage)
        else:
            message = AIMessage(content="", tool_calls=[{"name": step[0], "args": step[1], "id": f"c{turn}", "type": "tool_call"}],
                                usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


GOOD = [("find_customer", {"email": "ada@example.com"}), ("cancel_order", {"order_id": "O1"}), "Cancelled O1."]
PLANS = {
    "good": GOOD,
    "errors": [("cancel_order", {"order_id": "O9"}), ("cancel_order", {"order_id": 1}), ("cancel_order", {"order_id": "O1"}), "ok O1"],
    "loop": [("list_orders", {"customer_id": "C1"})],
}


def react_factory(tools, model=None, policy=None, plan="good"):
    """A user factory: receives LangChain tools, returns a compiled graph (the deprecated
    prebuilt is avoided on purpose; this is an ordinary hand-built graph)."""
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    assert all(hasattr(t, "invoke") and t.name for t in tools) and policy
    llm = (model or PlanModel(plan=PLANS[plan])).bind_tools(tools)
    graph = StateGraph(MessagesState)
    graph.add_node("llm", lambda state: {"messages": [llm.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    graph.add_edge(START, "llm")
    graph.add_conditional_edges("llm", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "llm")
    return graph.compile()


def talker_factory(tools):
    """A graph that loops between two nodes without ever calling a tool."""
    from langgraph.graph import START, MessagesState, StateGraph

    graph = StateGraph(MessagesState)
    graph.add_node("a", lambda state: {"messages": []})
    graph.add_node("b", lambda state: {"messages": []})
    graph.add_edge(START, "a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "a")
    return graph.compile()


def write_spec(tmp_path, name, body):
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nadapter = "langgraph"\n' + body)
    return load_agent_file(path)


def test_user_graph_factory_gets_tools_and_is_recorded(mini_suite, tmp_path):
    spec = write_spec(tmp_path, "user", f'[options]\ngraph = "{HERE}:react_factory"\n')
    log = run(mini_suite, spec, tmp_path / "r", k=2)
    for trial_id, summary in log.summaries.items():
        assert summary["outcome"] == "success", summary["reason"]
        assert tool_steps(log, trial_id) == [GOOD[0], GOOD[1]]
        models = [s for s in log.trial_steps(trial_id) if s["kind"] == "model"]
        assert [m["output"].get("tool_calls", [{}])[0].get("name") for m in models] == ["find_customer", "cancel_order", None]
        assert models[-1]["output"]["content"] == "Cancelled O1." and models[0]["input_tokens"] == 12
        # each model turn logs only the messages new since the previous turn
        assert [m["role"] for m in models[0]["messages"]] == ["system", "human"]
        assert [m["role"] for m in models[1]["messages"]] == ["tool"]
        assert summary["agent_info"]["langgraph"]["recursion_limit"] == 4 * 50 + 4


def test_tool_errors_become_error_observations(mini_suite, tmp_path):
    spec = write_spec(tmp_path, "errs", f'[options]\ngraph = "{HERE}:react_factory"\n[options.graph_options]\nplan = "errors"\n')
    log = run(mini_suite, spec, tmp_path / "r", k=1)
    (trial_id, summary), = log.summaries.items()
    steps = [s for s in log.trial_steps(trial_id) if s["kind"] == "tool"]
    assert [s["error"] is not None for s in steps] == [True, True, False]
    assert "no order O9" in steps[0]["error"] and "invalid arguments" in steps[1]["error"]  # validated by the domain, not LangChain
    tool_msgs = [m for s in log.trial_steps(trial_id) if s["kind"] == "model" for m in s["messages"] if m["role"] == "tool"]
    assert tool_msgs[0]["content"] == "Error: no order O9"
    assert summary["outcome"] == "success", summary["reason"]


def test_recursion_limit_is_a_failure_with_a_reason(mini_suite, tmp_path):
    spec = write_spec(tmp_path, "talker", f'[options]\ngraph = "{HERE}:talker_factory"\nrecursion_limit = 6\n')
    log = run(mini_suite, spec, tmp_path / "r", k=1)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "failure" and summary["attempts"] == 1
    assert "recursion limit of 6" in summary["checks"]["agent_completed"]["detail"]
    assert summary["agent_info"]["stop_reason"].startswith("the graph reached its recursion limit of 6")


def test_step_budget_stops_a_looping_graph(mini_suite, tmp_path):
    spec = write_spec(tmp_path, "loop", f'[options]\ngraph = "{HERE}:react_factory"\n[options.graph_options]\nplan = "loop"\n')
    log = run(mini_suite, spec, tmp_path / "r", k=1, max_steps=5)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "failure" and summary["steps"] == 5
    assert summary["checks"]["within_budget"]["passed"] is False


class RateLimitError(Exception):
    """Named like the OpenAI SDK's: the adapter classifies it by name as infrastructure."""


class Throttled(PlanModel):
    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        raise RateLimitError("429 Too Many Requests")


def throttled_factory(tools, policy=None):
    return react_factory(tools, model=Throttled(plan=GOOD), policy=policy)


def test_provider_rate_limit_is_an_infrastructure_error(mini_suite, tmp_path):
    spec = write_spec(tmp_path, "throttled", f'[options]\ngraph = "{HERE}:throttled_factory"\n')
    log = run(mini_suite, spec, tmp_path / "r", k=1, retries=1)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "error" and summary["attempts"] == 2 and "RateLimitError" in summary["reason"]


def test_async_mode_and_bad_specs(mini_suite, tmp_path):
    spec = write_spec(tmp_path, "async", f'[options]\ngraph = "{HERE}:react_factory"\nasync = true\n')
    log = run(mini_suite, spec, tmp_path / "r", k=2)
    assert {s["outcome"] for s in log.summaries.values()} == {"success"}
    with pytest.raises(BenchError, match="recursion_limit"):
        write_spec(tmp_path, "bad1", '[options]\nrecursion_limit = "many"\n')
    with pytest.raises(BenchError, match="no attribute"):
        write_spec(tmp_path, "bad2", f'[options]\ngraph = "{HERE}:no_such_factory"\n').build()
    log = run(mini_suite, write_spec(tmp_path, "bad3", f'[options]\ngraph = "{HERE}:not_a_graph"\n'), tmp_path / "x", k=1)
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "failure" and "not a compiled graph" in summary["checks"]["agent_completed"]["detail"]


def not_a_graph(tools):
    return {"nodes": 3}


def test_tracing_is_forced_off():
    import os

    assert os.environ.get("LANGSMITH_TRACING_V2") == "false"


def test_builtin_graph_resumes_from_a_restored_prefix(mini_suite, tmp_path):
    """Causal replay through the built-in graph: it is invoked on the messages up to the node
    (restored calls as AI tool calls and ToolMessages), so the scripted engine's first prompt holds
    both restored results and every continuation goes on to cancel an order."""
    from bench.analysis.causal import Sampler, replay_node
    from bench.analysis.prefix import prefix_of

    run_benchmark(mini_suite, parse_agent_spec("sim:oracle"), ["cancel-pending"],
                  RunConfig(k=1, out=tmp_path / "run", progress=False))
    log = read_run(tmp_path / "run")
    trial = next(iter(log.summaries))
    engine = ScriptedEngine()
    agent = LangGraphAgent("scripted-langgraph", {}, model=make_local_chat_model(engine, Scaffold(), {"temperature": 0.0}))
    result = replay_node(log, Sampler(mini_suite, agent, 20), prefix_of(log, mini_suite, trial, 2), 4)
    first = engine.requests[0][0]
    assert [m["content"].split(":")[0] for m in first if m["role"] == "user"][1:] == \
        ["Result of find_customer", "Result of list_orders"]
    assert result["node"]["n"] == 4
    assert {a["action"].split("(")[0] for a in result["alternatives"]} == {"cancel_order"}
