"""The `langgraph` adapter: LangGraph graphs as trajbench agents.

Two ways to name the agent (TOML spec, `adapter = "langgraph"`):

- `graph = "module:factory"` (or `path/to/file.py:factory`): the factory receives the episode's
  tools as LangChain tools (`factory(tools, **extras)`) and returns a compiled graph over a
  `messages` state. Extras, passed when the factory's signature takes them: `model` (the chat
  model named by `model`, if any), `policy`, `instruction`, `seed`, and `graph_options` entries.
- no `graph`: the built-in ReAct-style graph (model node -> ToolNode -> model …, a hand-built
  `StateGraph`, not the deprecated `create_react_agent`) over the chat model named by `model`:
  `"local"` (the in-process llama.cpp model with the `local` adapter's scaffolds; its options go
  in `model_options`) or `"module:attr"` (a LangChain chat model class or factory, called with
  `model_options`, e.g. `langchain_openai:ChatOpenAI`).

How it is run: the graph gets `{"messages": [System(policy), Human(instruction)]}` and the config
`{"recursion_limit": …, "callbacks": [recorder], "configurable": {"trajbench_seed": seed}}`.

- Tools: each is a LangChain `StructuredTool` whose function is `episode.call` — every call the
  graph makes is a logged step and touches the world; arguments reach the domain unvalidated by
  LangChain, so invalid ones become the domain's error observation (a step, as the model did
  it). An error observation is a `ToolMessage(status="error")`; `handle_tool_errors` (default
  true) makes the built-in graph's ToolNode turn any other tool exception into one too.
- Model turns are captured by a callback handler (`run_inline`, works on any graph): messages new
  since the previous turn, the output (content and tool calls), tokens from `usage_metadata`,
  latency, and cost from `input_cost_per_mtok` / `output_cost_per_mtok`.
- `recursion_limit`: a run with n tool calls needs 2n+2 supersteps in the built-in graph, so the
  default is 2·max_steps+2 (4·max_steps+4 for user graphs, whose nodes may be more); hitting it
  (`GraphRecursionError`) fails the trial with that reason, keeping the steps already logged.
- Seeds: the built-in graph passes each model turn `seed=` derived from the trial seed and the turn
  index (`seed_param`, "" to disable); user graphs can read `configurable["trajbench_seed"]`.
- Exceptions whose class is an infrastructure error (rate limit, connection, timeout, 5xx of the
  common SDKs, and `infra_errors` names) become `InfraError` (the trial is retried, then `error`).
- LangSmith tracing is forced off (`LANGSMITH_TRACING_V2=false`): no network during a benchmark.
"""

from __future__ import annotations

import inspect
import os
import time
from typing import Any

from bench.adapters.options import OptionSpec, parse_options
from bench.adapters.prompting import (
    AgentGaveUp,
    Conversation,
    Stop,
    parse_action,
    tool_specs_from_openai,
    turn_seed,
)
from bench.errors import BenchError, InfraError

INSTALL_HINT = "install with pip install 'trajbench[langgraph]' (langgraph and langchain-core)"

OPTIONS: dict[str, OptionSpec] = {
    "graph": OptionSpec("str", None),
    "graph_options": OptionSpec("dict", {}),
    "model": OptionSpec("str", None),
    "model_options": OptionSpec("dict", {}),
    "recursion_limit": OptionSpec("int", None, minimum=2),
    "handle_tool_errors": OptionSpec("bool", True),
    "system_message": OptionSpec("bool", True),
    "seed_param": OptionSpec("str", "seed"),
    "async": OptionSpec("bool", False),
    "infra_errors": OptionSpec("any", []),
    "input_cost_per_mtok": OptionSpec("float", 0.0, minimum=0.0),
    "output_cost_per_mtok": OptionSpec("float", 0.0, minimum=0.0),
}

INFRA_ERROR_NAMES = {
    "InfraError", "RateLimitError", "APIConnectionError", "APITimeoutError", "InternalServerError",
    "ServiceUnavailableError", "ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
    "TimeoutException", "RemoteProtocolError", "OverloadedError",
}


def require_langgraph(source: str | None = None) -> None:
    os.environ.setdefault("LANGSMITH_TRACING_V2", "false")
    try:
        import langchain_core  # noqa: F401
        import langgraph  # noqa: F401
    except ImportError as exc:
        raise BenchError(f"the langgraph adapter needs langgraph and langchain-core ({exc}); {INSTALL_HINT}", file=source,
                         field="adapter") from None


def make_tools(episode: Any) -> list[Any]:
    """The episode's tools as LangChain tools that call `episode.call` (the only door to the world)."""
    from langchain_core.tools import StructuredTool, ToolException

    def make(spec: dict[str, Any]) -> Any:
        name = spec["name"]

        def call(**kwargs: Any) -> str:
            observation = episode.call(name, kwargs)
            if not observation.ok:
                raise ToolException(observation.text())
            return observation.text()

        return StructuredTool.from_function(
            func=call, name=name, description=spec.get("description") or name,
            args_schema=spec.get("parameters") or {"type": "object", "properties": {}}, handle_tool_error=True)

    return [make(spec) for spec in episode.tool_specs]


def restored_messages(calls: list[tuple[str, Any, Any]]) -> list[Any]:
    """A restored prefix's calls as LangChain messages (an error observation as an error ToolMessage)."""
    from langchain_core.messages import AIMessage, ToolMessage

    messages: list[Any] = []
    for i, (tool, args, observation) in enumerate(calls):
        call_id = f"call_restored_{i}"
        messages.append(AIMessage(content="", tool_calls=[{"name": tool, "args": args or {}, "id": call_id}]))
        messages.append(ToolMessage(content=observation.text(), tool_call_id=call_id, name=tool,
                                    status="success" if observation.ok else "error"))
    return messages


def _message_dict(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": getattr(message, "type", type(message).__name__), "content": getattr(message, "content", str(message))}
    calls = getattr(message, "tool_calls", None)
    if calls:
        out["tool_calls"] = [{"name": c["name"], "args": c["args"], "id": c.get("id")} for c in calls]
    if getattr(message, "type", None) == "tool":
        out["tool_call_id"] = getattr(message, "tool_call_id", None)
        out["name"] = getattr(message, "name", None)
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content
                       if isinstance(part, (str, dict)))
    return str(content)


def _recorder(episode: Any, prices: tuple[float, float]) -> Any:
    from langchain_core.callbacks import BaseCallbackHandler

    class Recorder(BaseCallbackHandler):
        """Logs each chat-model turn of the graph as a model step (one recorder per trial)."""

        run_inline = True
        raise_error = True

        def __init__(self) -> None:
            self.started: dict[Any, tuple[float, list[Any], str | None]] = {}
            self.seen = 0
            self.turns = 0

        def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
            msgs = list(messages[0]) if messages else []
            model = None
            if isinstance(serialized, dict):
                kw = serialized.get("kwargs") or {}
                model = kw.get("model_name") or kw.get("model") or (serialized.get("id") or [None])[-1]
            self.started[run_id] = (time.perf_counter(), msgs, model)

        def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
            began, msgs, model = self.started.pop(run_id, (time.perf_counter(), [], None))
            generation = response.generations[0][0] if response.generations and response.generations[0] else None
            message = getattr(generation, "message", None)
            usage = getattr(message, "usage_metadata", None) or {}
            token_usage = (response.llm_output or {}).get("token_usage") or {}
            meta = getattr(message, "response_metadata", None) or {}
            input_tokens = usage.get("input_tokens", token_usage.get("prompt_tokens"))
            output_tokens = usage.get("output_tokens", token_usage.get("completion_tokens"))
            new = msgs[self.seen:] if len(msgs) >= self.seen else msgs
            self.seen = len(msgs) + 1
            self.turns += 1
            cost = ((input_tokens or 0) * prices[0] + (output_tokens or 0) * prices[1]) / 1e6
            episode.log_model_turn(
                messages=[_message_dict(m) for m in new],
                output=_message_dict(message) if message is not None else getattr(generation, "text", None),
                input_tokens=input_tokens, output_tokens=output_tokens,
                latency_s=meta.get("latency_s", time.perf_counter() - began), cost=cost,
                model=meta.get("model_name") or meta.get("model") or model)

    return Recorder()


def react_graph(model: Any, tools: list[Any], *, handle_tool_errors: bool = True, seed_param: str = "seed") -> Any:
    """The built-in ReAct-style graph: a model node and a ToolNode in a loop, ending when the
    model replies without tool calls."""
    from langchain_core.runnables import RunnableLambda
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    llm = model.bind_tools(tools)

    def kwargs_for(state: dict[str, Any], config: Any) -> dict[str, Any]:
        if not seed_param:
            return {}
        seed = ((config or {}).get("configurable") or {}).get("trajbench_seed", 0)
        turn = sum(getattr(m, "type", "") == "ai" for m in state["messages"])
        return {seed_param: turn_seed(seed, turn)}

    def call_model(state: dict[str, Any], config: Any) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"], config, **kwargs_for(state, config))]}

    async def acall_model(state: dict[str, Any], config: Any) -> dict[str, Any]:
        return {"messages": [await llm.ainvoke(state["messages"], config, **kwargs_for(state, config))]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", RunnableLambda(call_model, afunc=acall_model, name="agent"))
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=handle_tool_errors))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "agent")
    return graph.compile()


def _call_with_accepted(func: Any, args: tuple, extras: dict[str, Any]) -> Any:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return func(*args, **extras)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return func(*args, **extras)
    return func(*args, **{k: v for k, v in extras.items() if k in params})


class LangGraphAgent:
    def __init__(self, name: str, options: dict[str, Any], source: str = "--agent", model: Any = None):
        """`model`: a LangChain chat model object to use instead of the `model` option."""
        require_langgraph(source)
        self.name = name
        self.source = source
        opts, _ = parse_options(options, OPTIONS, source, "langgraph")
        if isinstance(opts["infra_errors"], str):
            opts["infra_errors"] = [opts["infra_errors"]]
        if not isinstance(opts["infra_errors"], list) or not all(isinstance(n, str) for n in opts["infra_errors"]):
            raise BenchError("infra_errors must be a list of exception class names", file=source, field="options.infra_errors")
        self.opts = opts
        self.infra_names = INFRA_ERROR_NAMES | set(opts["infra_errors"])
        self.prices = (opts["input_cost_per_mtok"], opts["output_cost_per_mtok"])
        self.factory = None
        if opts["graph"]:
            from bench.adapters.python import load_target

            self.factory = load_target(opts["graph"], source)
            if not callable(self.factory):
                raise BenchError(f"{opts['graph']} is not callable (expected a factory returning a compiled graph)", file=source, field="options.graph")
        if model is not None:
            self.model = model
        else:
            name_ = opts["model"] or (None if self.factory else "local")
            self.model = self._build_model(name_, opts["model_options"]) if name_ else None
        if opts["async"]:
            self.arun = self._arun

    def _build_model(self, model: str, model_options: dict[str, Any]) -> Any:
        if model == "local":
            return local_chat_model(model_options, self.source)
        from bench.adapters.python import load_target

        target = load_target(model, self.source)
        try:
            return target(**model_options)
        except Exception as exc:
            raise BenchError(f"cannot build the chat model {model}: {type(exc).__name__}: {exc}", file=self.source, field="options.model") from None

    def _prepare(self, episode: Any) -> tuple[Any, dict[str, Any], dict[str, Any], int]:
        from langchain_core.messages import HumanMessage, SystemMessage

        tools = make_tools(episode)
        if self.factory is None:
            graph = react_graph(self.model, tools, handle_tool_errors=self.opts["handle_tool_errors"], seed_param=self.opts["seed_param"])
            limit = self.opts["recursion_limit"] or 2 * episode.max_steps + 2
        else:
            extras = {"policy": episode.policy, "instruction": episode.instruction, "seed": episode.seed, **self.opts["graph_options"]}
            if self.model is not None:
                extras["model"] = self.model
            graph = _call_with_accepted(self.factory, (tools,), extras)
            if not hasattr(graph, "invoke"):
                raise BenchError(f"the graph factory {self.opts['graph']} returned {type(graph).__name__}, not a compiled graph",
                                 file=self.source, field="options.graph")
            limit = self.opts["recursion_limit"] or 4 * episode.max_steps + 4
        messages = ([SystemMessage(episode.policy)] if self.opts["system_message"] and episode.policy else []) + [HumanMessage(episode.instruction)]
        config = {"recursion_limit": limit, "callbacks": [_recorder(episode, self.prices)],
                  "configurable": {"trajbench_seed": episode.seed, "thread_id": episode.trial_id}}
        episode.annotations["langgraph"] = {"recursion_limit": limit, "graph": self.opts["graph"] or "built-in react",
                                            "model": self.opts["model"] or ("local" if self.factory is None else None)}
        return graph, {"messages": messages}, config, limit

    def run(self, episode: Any) -> str | None:
        graph, inputs, config, limit = self._prepare(episode)
        try:
            return _final_answer(graph.invoke(inputs, config))
        except Exception as exc:
            raise self._classify(exc, episode, limit) from exc

    def resume(self, episode: Any, prefix: list[str]) -> str | None:
        """Continue from a restored prefix (docs/divergence.md, "Causal replay"): the graph is
        invoked on the messages up to the node — each restored call as an AI tool call and its
        observation as the ToolMessage the tool node would have added — and goes on from there."""
        graph, inputs, config, limit = self._prepare(episode)
        inputs["messages"] += restored_messages(episode.restored_calls)
        try:
            return _final_answer(graph.invoke(inputs, config))
        except Exception as exc:
            raise self._classify(exc, episode, limit) from exc

    async def _arun(self, episode: Any) -> str | None:
        graph, inputs, config, limit = self._prepare(episode)
        try:
            return _final_answer(await graph.ainvoke(inputs, config))
        except Exception as exc:
            raise self._classify(exc, episode, limit) from exc

    def _classify(self, exc: Exception, episode: Any, limit: int) -> Exception:
        from langgraph.errors import GraphRecursionError

        if isinstance(exc, GraphRecursionError):
            reason = f"the graph reached its recursion limit of {limit} supersteps after {episode.tool_calls} tool calls"
            episode.annotations["stop_reason"] = reason
            return AgentGaveUp(reason)
        if isinstance(exc, (InfraError, AgentGaveUp)):
            return exc
        if any(cls.__name__ in self.infra_names for cls in type(exc).__mro__):
            return InfraError(f"{type(exc).__name__}: {exc}")
        return exc


def _final_answer(state: Any) -> str | None:
    if isinstance(state, dict):
        for message in reversed(state.get("messages") or []):
            if getattr(message, "type", None) == "ai":
                return _text(message.content)
        for key in ("answer", "output", "final_answer"):
            if isinstance(state.get(key), str):
                return state[key]
        return None
    return None if state is None else str(state)


def build_langgraph(spec: Any) -> LangGraphAgent:
    return LangGraphAgent(spec.name, spec.options, spec.source)


# -- a LangChain chat model over the local engine -------------------------------------------

def local_chat_model(options: dict[str, Any], source: str = "--agent") -> Any:
    """The in-process llama.cpp model (see `bench.adapters.local`) as a LangChain chat model,
    with the same scaffolds and options as the `local` adapter."""
    from bench.adapters.local import engine_for, parse_local_options

    opts, scaffold, sampling = parse_local_options(options, source, "local model (model_options)")
    return make_local_chat_model(engine_for(opts, source), scaffold, sampling)


def make_local_chat_model(engine: Any, scaffold: Any, sampling: dict[str, Any]) -> Any:
    """A `BaseChatModel` over any engine with `.name` and `.complete(messages, schema, seed=…,
    **sampling) -> Completion` (the local engine, or a scripted one in tests)."""
    return _local_chat_class()(engine=engine, scaffold=scaffold, sampling=dict(sampling))


_CLASS: list[Any] = []


def _local_chat_class() -> Any:
    if _CLASS:
        return _CLASS[0]
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.runnables.config import ensure_config
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import ConfigDict

    class LocalChatModel(BaseChatModel):
        """Reconstructs the structured-output conversation of `bench.adapters.prompting` from the
        LangChain messages, decodes one constrained JSON action, and returns it as an AIMessage
        with one tool call (or, for `final_answer`, a plain reply)."""

        model_config = ConfigDict(arbitrary_types_allowed=True)
        engine: Any
        scaffold: Any
        sampling: dict

        @property
        def _llm_type(self) -> str:
            return "trajbench-local"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

        def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            conv = conversation_from_messages(messages, kwargs.get("tools") or [], self.scaffold)
            configurable = ensure_config().get("configurable") or {}
            base = configurable.get("trajbench_seed")
            seed = kwargs.get("seed") if base is None and kwargs.get("seed") is not None else conv.turn_seed(base or 0)
            texts: list[str] = []
            totals = {"latency": 0.0, "in": 0, "out": 0}

            def decode(decode_seed: int | None = None) -> Any:
                """Decode one reply (by default with the seed of the conversation's current turn)."""
                if decode_seed is None:
                    decode_seed = conv.turn_seed(base if base is not None else int(seed))
                completion = self.engine.complete(conv.messages(), conv.schema(), seed=decode_seed, **self.sampling)
                texts.append(completion.text)
                totals["latency"] += completion.latency_s
                totals["in"] += completion.input_tokens or 0
                totals["out"] += completion.output_tokens or 0
                return parse_action(completion.text)

            action = decode(int(seed))
            while action.error is not None:  # as the local adapter: say so and decode again, or give up
                try:
                    conv.apply(None, texts[-1])
                except Stop as exc:
                    raise AgentGaveUp(str(exc)) from None
                action = decode()
            if not action.final:
                try:
                    conv.check_repeat(action.tool, action.args)
                except Stop as exc:  # the loop guard: the next decode may only be the final answer
                    conv.turns += 1
                    conv.finishing = str(exc)
                    action = decode()
            tokens_in, tokens_out, latency = totals["in"], totals["out"], totals["latency"]
            usage = {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
            meta = {"latency_s": latency, "model_name": self.engine.name, "raw": texts}
            if conv.finishing:
                meta["loop_guard"] = conv.finishing
            if action.error is not None or action.final:
                message = AIMessage(content=action.answer if action.final else texts[-1], usage_metadata=usage, response_metadata=meta)
            else:
                message = AIMessage(content="", tool_calls=[{"name": action.tool, "args": action.args, "id": f"call_{conv.turns}",
                                                             "type": "tool_call"}], usage_metadata=usage, response_metadata=meta)
            return ChatResult(generations=[ChatGeneration(message=message)])

    _CLASS.append(LocalChatModel)
    return LocalChatModel


def conversation_from_messages(messages: list[Any], tools: list[dict[str, Any]], scaffold: Any) -> Conversation:
    """The structured-output conversation that LangChain `messages` represent (same prompt as
    the `local` adapter produces for the same trajectory)."""
    system = [_text(m.content) for m in messages if m.type == "system"]
    rest = [m for m in messages if m.type != "system"]
    first = next((i for i, m in enumerate(rest) if m.type == "human"), None)
    instruction = _text(rest[first].content) if first is not None else ""
    conv = Conversation("\n\n".join(system), instruction, tool_specs_from_openai(tools), scaffold)
    names: dict[str, str] = {}
    for i, m in enumerate(rest):
        if i == first:
            continue
        if m.type == "ai":
            conv.turns += 1
            if m.tool_calls:
                for call in m.tool_calls:
                    names[call.get("id") or ""] = call["name"]
                    try:
                        conv.check_repeat(call["name"], call["args"])
                    except Stop:
                        pass
                    conv.add_call(call["name"], call["args"])
            else:
                conv.add_text("assistant", _text(m.content))
        elif m.type == "tool":
            conv.add_result(m.name or names.get(m.tool_call_id, "tool"), _text(m.content))
        else:
            conv.add_text("user", _text(m.content))
    return conv
