"""The episode served over the Model Context Protocol, so that any MCP-speaking agent runs unmodified.

One server per trial, built on the official `mcp` SDK's low-level `Server`: it lists the trial's
tools (`ask_user` included, exactly the specs the episode hands an in-process agent) plus
`final_answer`, and every tool call goes through `episode.call`, so it is logged, validated and
state-hashed exactly as an in-process call. A tool's error observation becomes an MCP tool error
(`is_error`), and so does a call after the episode ended (budget, time limit): the server never
dies under the agent. Each trial gets its own server and its own world, so concurrent trials never
share state. `serve_http` serves it as streamable HTTP on a free loopback port.

`before_call`, when given, runs before each call is served (in the call's worker thread): the
`command` adapter reads the child's model-turn report there (`bench.adapters.turn_report`), so
that a turn is logged before the calls it made; a text it returns refuses the call with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

try:
    import anyio.to_thread
    import mcp_types as types
    import uvicorn
    from mcp.server.lowlevel import Server
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the MCP server needs the mcp extra: pip install 'trajbench[mcp]'") from exc

from bench.episode import Episode, EpisodeOver

FINAL_ANSWER = "final_answer"
FINAL_ANSWER_SPEC = {
    "name": FINAL_ANSWER,
    "description": "Give your final answer to the user; call it once, when you are done.",
    "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
}


def _tool(spec: dict[str, Any]) -> types.Tool:
    read_only = spec.get("read_only")
    hints = None if read_only is None else types.ToolAnnotations(read_only_hint=bool(read_only))
    return types.Tool(name=spec["name"], description=spec.get("description"),
                      input_schema=spec["parameters"], annotations=hints)


def _result(text: str, error: bool) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=error)


BeforeCall = Callable[[], "str | None"]


def episode_server(episode: Episode, before_call: BeforeCall | None = None) -> Server[Any]:
    """An MCP server whose tools are this episode's tools plus `final_answer`."""
    tools = [_tool(spec) for spec in [*episode.tool_specs, FINAL_ANSWER_SPEC]]

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await anyio.to_thread.run_sync(_call, episode, params.name, params.arguments, before_call)

    return Server("trajbench-episode", version="1", instructions=episode.instruction,
                  on_list_tools=list_tools, on_call_tool=call_tool)


def _call(episode: Episode, name: str, arguments: dict[str, Any] | None,
          before_call: BeforeCall | None = None) -> types.CallToolResult:
    """One MCP call in a worker thread: `episode.call` blocks (it holds the episode's lock)."""
    refused = before_call() if before_call is not None else None
    if refused is not None:
        return _result(f"Error: the call was refused: {refused}", True)
    if name == FINAL_ANSWER:
        answer = (arguments or {}).get("answer")
        if not isinstance(answer, str):
            return _result("invalid arguments to final_answer: answer: a string is required", True)
        episode.finish(answer)
        return _result("answer recorded", False)
    try:
        observation = episode.call(name, arguments)
    except EpisodeOver as over:  # the trial is over; the agent learns it, the server lives on
        return _result(f"Error: the episode is over: {over}", True)
    return _result(observation.text(), not observation.ok)


class ServerStartError(RuntimeError):
    """The MCP server did not come up: an infrastructure error, not the agent's failure."""


@contextmanager
def serve_http(episode: Episode, *, before_call: BeforeCall | None = None,
               start_timeout_s: float = 10.0) -> Iterator[str]:
    """Serve the episode as streamable HTTP on a free loopback port; yields the endpoint URL."""
    app = episode_server(episode, before_call).streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=2)  # a killed agent may leave a stream open
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"mcp-{episode.trial_id}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{_wait_port(server, thread, start_timeout_s)}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _wait_port(server: uvicorn.Server, thread: threading.Thread, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and thread.is_alive():
        if server.started and server.servers and server.servers[0].sockets:
            return int(server.servers[0].sockets[0].getsockname()[1])
        time.sleep(0.01)
    raise ServerStartError("the MCP server for the trial did not start on loopback")
