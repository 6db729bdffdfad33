"""The `agents-sdk` adapter: an OpenAI Agents SDK `Agent` run by its own `Runner` on the episode.

Roster `adapter = "agents-sdk"` (install: pip install 'trajbench[agents-sdk]'). The options shared
with the `pydantic-ai` adapter are described in `bench.adapters.frameworks`; the SDK's own:

- `tools = "functions"` (default): one `FunctionTool` per episode tool, with the tool's JSON
  schema (`strict_json_schema` off: the suite's schemas are not the strict subset) and
  `episode.call` as its body. `tools = "mcp"`: the episode served over MCP
  (`bench.adapters.mcp_server`) and given to the agent as an `MCPServerStreamableHttp`; the
  model then also sees `final_answer`.
- The model: `OpenAIChatCompletionsModel` over an `AsyncOpenAI` client on `base_url` (chat
  completions, which every OpenAI-compatible server speaks), with `ModelSettings` from the
  sampling options; each request's seed is its turn's (`frameworks.TurnSeeds`).
- Model turns are recorded from the SDK's own `RunHooks`: `on_llm_start` (the input items new
  since the previous turn, the start time) and `on_llm_end` (the output items, the response's
  `usage` tokens, the latency).
- The step budget maps to `max_turns` (default `max_steps + 1`: a tool call per turn, then the
  answer). `MaxTurnsExceeded` fails the trial (`agent_completed`, with the turn count), keeping
  the steps logged. `tool_not_found` is the SDK's `tool_not_found_behavior`: `"raise_error"`
  (the SDK's default: a call to an unknown tool ends the run with `ModelBehaviorError`, the
  agent's failure) or `"return_error_to_model"`. `tool_choice` is sent as set (the SDK sends
  none by default, and llama-cpp-python's server then ignores the tools: the roster specs set
  `"auto"`); the SDK drops it after the first tool call unless `reset_tool_choice = false`.
- Tracing is off: `set_tracing_disabled(True)`, `OPENAI_AGENTS_DISABLE_TRACING=1` and
  `RunConfig(tracing_disabled=True)` — a benchmark sends nothing to OpenAI's trace backend.

The final answer is what the agent gave to `final_answer` (MCP mode), else the run's
`final_output`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson

from bench.adapters import frameworks
from bench.adapters.openai_compat import turn_cost
from bench.adapters.options import OptionSpec, parse_options
from bench.adapters.prompting import AgentGaveUp

try:
    from agents import RunHooks
except ImportError:  # the extra is missing: AgentsSdkAgent says so in one line
    RunHooks = object  # type: ignore[misc, assignment]

EXTRA = "agents-sdk"
OPTIONS: dict[str, OptionSpec] = {
    **frameworks.FRAMEWORK_OPTIONS,
    "max_turns": OptionSpec("int", None, minimum=1),
    "tool_not_found": OptionSpec("str", "raise_error", choices=("raise_error", "return_error_to_model")),
    "parallel_tool_calls": OptionSpec("bool", None),
    "reset_tool_choice": OptionSpec("bool", True),
}


def _disable_tracing() -> None:
    """No trace export during a benchmark, whatever the environment says."""
    from agents import set_tracing_disabled

    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    set_tracing_disabled(True)


class AgentsSdkAgent:
    def __init__(self, name: str, options: dict[str, Any], source: str = "--agent"):
        frameworks.require(("agents", "openai"), "agents-sdk", EXTRA, source)
        from bench.adapters.openai_compat import resolve_endpoint

        self.name = name
        self.opts, _ = parse_options(options, OPTIONS, source, "agents-sdk")
        self.endpoint = resolve_endpoint(self.opts, source, "agents-sdk")
        _disable_tracing()

    def run(self, episode: Any) -> str | None:
        return asyncio.run(self.arun(episode))

    def resume(self, episode: Any, prefix: list[str]) -> str | None:
        """Continue from a restored prefix (docs/divergence.md, "Causal replay"): the run's input
        is the conversation up to it (`run_input`), and the SDK's loop goes on from there."""
        return self.run(episode)

    async def arun(self, episode: Any) -> str | None:
        max_turns = self.opts["max_turns"] or episode.max_steps + 1
        episode.annotations["model"] = self.endpoint.model
        episode.annotations["agents_sdk"] = {"tools": self.opts["tools"], "max_turns": max_turns}
        seeds = frameworks.trial_seeds(episode, self.opts)
        client = frameworks.openai_client(self.endpoint, self.opts, seeds)
        try:
            if self.opts["tools"] == "mcp":
                output = await self._run_over_mcp(episode, client, max_turns, seeds)
            else:
                output = await self._run(episode, client, max_turns, seeds, tools=function_tools(episode), mcp_servers=[])
        finally:
            await client.close()
        return episode.answer if episode.answer is not None else _text(output)

    async def _run_over_mcp(self, episode: Any, client: Any, max_turns: int, seeds: frameworks.TurnSeeds) -> Any:
        from agents.mcp import MCPServerStreamableHttp

        async with frameworks.served(episode) as url:
            params = {"url": url, "timeout": self.opts["timeout_s"]}
            async with MCPServerStreamableHttp(params=params, cache_tools_list=True, name="trajbench",  # type: ignore[arg-type]
                                               client_session_timeout_seconds=self.opts["timeout_s"]) as server:
                return await self._run(episode, client, max_turns, seeds, tools=[], mcp_servers=[server])

    async def _run(self, episode: Any, client: Any, max_turns: int, seeds: frameworks.TurnSeeds, *,
                   tools: list[Any], mcp_servers: list[Any]) -> Any:
        from agents import Agent, RunConfig, Runner
        from agents.exceptions import MaxTurnsExceeded
        from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel

        model = OpenAIChatCompletionsModel(self.endpoint.model, client)
        agent = Agent(name=self.name, instructions=frameworks.instructions(episode), model=model, tools=tools,
                      mcp_servers=mcp_servers, model_settings=self._settings(),
                      reset_tool_choice=self.opts["reset_tool_choice"])
        config = RunConfig(tracing_disabled=True, tool_not_found_behavior=self.opts["tool_not_found"])
        given = run_input(episode)
        recorder = _Recorder(episode, self.opts, self.endpoint.model, seeds, seen=0 if isinstance(given, str) else len(given))
        try:
            result = await Runner.run(agent, given, max_turns=max_turns, hooks=recorder, run_config=config)  # type: ignore[arg-type]
        except MaxTurnsExceeded:
            reason = f"the run reached max_turns = {max_turns} model turns after {episode.tool_calls} tool calls"
            episode.annotations["stop_reason"] = reason
            raise AgentGaveUp(reason) from None
        except Exception as exc:
            mapped = frameworks.classify(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return result.final_output

    def _settings(self) -> Any:
        """The sampling options as the SDK's settings (the seed is the client's: `TurnSeeds`)."""
        from agents import ModelSettings

        return ModelSettings(temperature=self.opts["temperature"], top_p=self.opts["top_p"], max_tokens=self.opts["max_tokens"],
                             parallel_tool_calls=self.opts["parallel_tool_calls"], tool_choice=self.opts["tool_choice"],
                             extra_body=self.opts["extra_body"] or None)


def run_input(episode: Any) -> str | list[dict[str, Any]]:
    """What `Runner.run` starts from: the instruction; in a continuation, the instruction then
    each restored call as the model's `function_call` item and its logged result as the
    `function_call_output` (the SDK turns them into the chat messages it would have sent)."""
    calls = frameworks.restored_calls(episode)
    if not calls:
        return str(episode.instruction)
    items: list[dict[str, Any]] = [{"role": "user", "content": episode.instruction}]
    for call_id, tool, args, text in calls:
        items += [{"type": "function_call", "call_id": call_id, "name": tool, "arguments": orjson.dumps(args).decode()},
                  {"type": "function_call_output", "call_id": call_id, "output": text}]
    return items


def function_tools(episode: Any) -> list[Any]:
    """One SDK `FunctionTool` per episode tool; its body is `episode.call`."""
    from agents import FunctionTool

    def invoker(name: str) -> Any:
        async def invoke(ctx: Any, raw_args: str) -> str:
            return frameworks.call_tool(episode, name, raw_args)
        return invoke

    return [FunctionTool(name=spec["name"], description=spec.get("description") or "",
                         params_json_schema=spec.get("parameters") or {"type": "object", "properties": {}},
                         on_invoke_tool=invoker(spec["name"]), strict_json_schema=False)
            for spec in episode.tool_specs]


class _Recorder(RunHooks):
    """The SDK's run hooks as a trajbench model-turn recorder (see the module doc); one per
    trial, so concurrent trials never share one."""

    def __init__(self, episode: Any, opts: dict[str, Any], model: str, seeds: frameworks.TurnSeeds, seen: int = 0):
        self.episode, self.opts, self.model, self.seeds = episode, opts, model, seeds
        self.seen = seen        # input items already logged (the SDK hands the whole history each turn)
        self.started = 0.0
        self.pending: list[Any] = []

    async def on_llm_start(self, context: Any, agent: Any, system_prompt: Any, input_items: Any) -> None:
        frameworks.begin_turn(self.episode, self.seeds)
        items = list(input_items or [])
        self.pending = [_plain(i) for i in items[self.seen:]]
        if self.seen == 0 and system_prompt:
            self.pending.insert(0, {"role": "system", "content": system_prompt})
        self.seen = len(items)
        self.started = time.perf_counter()

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        latency = time.perf_counter() - self.started
        output = [_plain(item) for item in response.output]
        self.seen += len(output)
        tokens_in, tokens_out = response.usage.input_tokens, response.usage.output_tokens
        self.episode.log_model_turn(messages=self.pending, output=output, input_tokens=tokens_in,
                                    output_tokens=tokens_out, latency_s=latency,
                                    cost=turn_cost(self.opts, tokens_in, tokens_out), model=self.model)


def _plain(item: Any) -> Any:
    """An SDK item as JSON data for the log."""
    if hasattr(item, "model_dump"):
        return item.model_dump(mode="json", exclude_none=True)
    return item


def _text(output: Any) -> str | None:
    if output is None:
        return None
    return output if isinstance(output, str) else str(output)


def build_agents_sdk(spec: Any) -> AgentsSdkAgent:
    return AgentsSdkAgent(spec.name, spec.options, spec.source)
