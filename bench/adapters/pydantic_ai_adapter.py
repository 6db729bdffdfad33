"""The `pydantic-ai` adapter: a PydanticAI `Agent` run by its own graph on the episode. Named
`pydantic_ai_adapter` so that it never shadows the `pydantic_ai` package.

Roster `adapter = "pydantic-ai"` (install: pip install 'trajbench[pydantic-ai]'). The options
shared with the `agents-sdk` adapter are described in `bench.adapters.frameworks`; PydanticAI's:

- `tools = "functions"` (default): one `Tool.from_schema` per episode tool, with the tool's JSON
  schema (PydanticAI skips its own validation for such tools: the domain validates, as for every
  adapter) and `episode.call` as its body; an error observation is returned to the model as the
  tool's result. `tools = "mcp"`: the episode served over MCP and given to the agent as an
  `MCPToolset` (its FastMCP-based client) with `tool_error_behavior = "failed"`, so that an MCP
  tool error reaches the model as a failed tool result in both modes (PydanticAI's default,
  "retry", would spend the tool's retry budget on domain errors).
- The model: `OpenAIChatModel` with an `OpenAIProvider` over an `AsyncOpenAI` client on
  `base_url`; `ModelSettings` from the sampling options; each request's seed is its turn's
  (`frameworks.TurnSeeds`).
- Model turns are recorded by iterating the agent's graph (`Agent.iter`): each model-request
  node's request parts, then the model response (its parts, `usage` tokens), the latency between.
- The step budget maps to `UsageLimits(request_limit = max_steps + 1)` (or `request_limit`);
  `UsageLimitExceeded` fails the trial (`agent_completed`), keeping the steps logged. A model that
  keeps sending arguments PydanticAI cannot parse, or calls unknown tools, past `tool_retries`
  (PydanticAI's `retries`, default 1) ends the run with `UnexpectedModelBehavior`: the agent's
  failure.
- Instrumentation is off (`agent.instrument = False`): nothing is sent to Logfire or OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.adapters import frameworks
from bench.adapters.openai_compat import turn_cost
from bench.adapters.options import OptionSpec, parse_options
from bench.adapters.prompting import AgentGaveUp

EXTRA = "pydantic-ai"
OPTIONS: dict[str, OptionSpec] = {
    **frameworks.FRAMEWORK_OPTIONS,
    "request_limit": OptionSpec("int", None, minimum=1),
    "tool_retries": OptionSpec("int", 1, minimum=0),
}


class PydanticAIAgent:
    def __init__(self, name: str, options: dict[str, Any], source: str = "--agent"):
        frameworks.require(("pydantic_ai", "openai"), "pydantic-ai", EXTRA, source)
        from bench.adapters.openai_compat import resolve_endpoint

        self.name = name
        self.opts, _ = parse_options(options, OPTIONS, source, "pydantic-ai")
        self.endpoint = resolve_endpoint(self.opts, source, "pydantic-ai")

    def run(self, episode: Any) -> str | None:
        return asyncio.run(self.arun(episode))

    def resume(self, episode: Any, prefix: list[str]) -> str | None:
        """Continue from a restored prefix (docs/divergence.md, "Causal replay"): the run starts
        from the conversation up to it as PydanticAI's `message_history` (`history`)."""
        return self.run(episode)

    async def arun(self, episode: Any) -> str | None:
        limit = self.opts["request_limit"] or episode.max_steps + 1
        episode.annotations["model"] = self.endpoint.model
        episode.annotations["pydantic_ai"] = {"tools": self.opts["tools"], "request_limit": limit}
        seeds = frameworks.trial_seeds(episode, self.opts)
        client = frameworks.openai_client(self.endpoint, self.opts, seeds)
        try:
            if self.opts["tools"] == "mcp":
                from pydantic_ai.mcp import MCPToolset

                async with frameworks.served(episode) as url:
                    toolset = MCPToolset(url, tool_error_behavior="failed", read_timeout=self.opts["timeout_s"])
                    output = await self._run(episode, client, limit, seeds, tools=[], toolsets=[toolset])
            else:
                output = await self._run(episode, client, limit, seeds, tools=function_tools(episode), toolsets=[])
        finally:
            await client.close()
        return episode.answer if episode.answer is not None else output

    async def _run(self, episode: Any, client: Any, limit: int, seeds: frameworks.TurnSeeds, *,
                   tools: list[Any], toolsets: list[Any]) -> str | None:
        from pydantic_ai import Agent
        from pydantic_ai.exceptions import UsageLimitExceeded
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
        from pydantic_ai.usage import UsageLimits

        model = OpenAIChatModel(self.endpoint.model, provider=OpenAIProvider(openai_client=client))
        agent = Agent(model, name=self.name, instructions=frameworks.instructions(episode), tools=tools, toolsets=toolsets,
                      model_settings=self._settings(), retries=self.opts["tool_retries"])
        agent.instrument = False  # whatever Agent.instrument_all says elsewhere in the process
        try:
            past = history(episode)
            prompt = None if past else episode.instruction
            async with agent.iter(prompt, message_history=past, usage_limits=UsageLimits(request_limit=limit)) as run:
                await _record(run, episode, self.opts, self.endpoint.model, seeds)
                result = run.result
        except UsageLimitExceeded as exc:
            reason = f"the run reached request_limit = {limit} model requests after {episode.tool_calls} tool calls ({exc})"
            episode.annotations["stop_reason"] = reason
            raise AgentGaveUp(reason) from None
        except Exception as exc:
            mapped = frameworks.classify(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return None if result is None else str(result.output)

    def _settings(self) -> Any:  # a pydantic_ai ModelSettings (a TypedDict)
        """The sampling options as PydanticAI's settings (the seed is the client's: `TurnSeeds`)."""
        settings: dict[str, Any] = {key: self.opts[key] for key in ("temperature", "top_p", "max_tokens", "tool_choice")
                                    if self.opts[key] is not None}
        if self.opts["extra_body"]:
            settings["extra_body"] = self.opts["extra_body"]
        return settings


async def _record(run: Any, episode: Any, opts: dict[str, Any], model: str, seeds: frameworks.TurnSeeds) -> None:
    """Walk the agent's graph to its end, logging each model turn: the request node's parts
    (what was sent new this turn), then the response and its usage when the next node comes."""
    from pydantic_ai import Agent

    pending: tuple[Any, float] | None = None
    async for node in run:
        if Agent.is_model_request_node(node):
            frameworks.begin_turn(episode, seeds)
            pending = (node.request, time.perf_counter())
        elif Agent.is_call_tools_node(node) and pending is not None:
            request, started = pending
            pending = None
            response = node.model_response
            tokens_in, tokens_out = response.usage.input_tokens, response.usage.output_tokens
            episode.log_model_turn(messages=_plain(request.parts), output=_plain(response.parts), input_tokens=tokens_in,
                                   output_tokens=tokens_out, latency_s=time.perf_counter() - started,
                                   cost=turn_cost(opts, tokens_in, tokens_out), model=model)


def history(episode: Any) -> list[Any] | None:
    """A continuation's conversation up to its restored prefix, as PydanticAI messages: the
    instruction, then each restored call as the model's tool call and its logged result as the
    tool's return; the run goes on from the last return. None in a fresh trial."""
    from pydantic_ai.messages import ModelRequest, ModelResponse, ToolCallPart, ToolReturnPart, UserPromptPart

    calls = frameworks.restored_calls(episode)
    if not calls:
        return None
    past: list[Any] = [ModelRequest(parts=[UserPromptPart(episode.instruction)])]
    for call_id, tool, args, text in calls:
        past += [ModelResponse(parts=[ToolCallPart(tool, args, call_id)]),
                 ModelRequest(parts=[ToolReturnPart(tool, text, call_id)])]
    return past


def function_tools(episode: Any) -> list[Any]:
    """One PydanticAI tool per episode tool, from its JSON schema; its body is `episode.call`."""
    from pydantic_ai import Tool

    def caller(name: str) -> Any:
        async def call(**kwargs: Any) -> str:  # async: runs on the loop, not in a worker thread
            return frameworks.call_tool(episode, name, kwargs)
        return call

    return [Tool.from_schema(caller(spec["name"]), name=spec["name"], description=spec.get("description") or "",
                             json_schema=spec.get("parameters") or {"type": "object", "properties": {}})
            for spec in episode.tool_specs]


def _plain(parts: Any) -> Any:
    """Message parts as JSON data for the log."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(parts, fallback=str)


def build_pydantic_ai(spec: Any) -> PydanticAIAgent:
    return PydanticAIAgent(spec.name, spec.options, spec.source)
