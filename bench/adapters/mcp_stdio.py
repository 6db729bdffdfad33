"""The trial's MCP episode over stdio, for agents that only launch stdio MCP servers.

`python -m bench.adapters.mcp_stdio URL` (URL: the trial's `TRAJBENCH_MCP_URL`) is a small proxy
built on the official SDK: it serves stdio and forwards tool listing and calls to the trial's
streamable-HTTP server, so every call still goes through that trial's `episode.call`. The proxy
holds no state of its own.
"""

from __future__ import annotations

import sys
from typing import Any

try:
    import anyio
    import mcp_types as types
    from mcp import Client
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the MCP stdio proxy needs the mcp extra: pip install 'trajbench[mcp]'") from exc


def proxy_server(client: Client) -> Server[Any]:
    """A server that answers every list/call with the upstream episode server's own result."""
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return await client.list_tools()

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await client.call_tool(params.name, params.arguments or {})

    return Server("trajbench-episode-stdio", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(url: str) -> None:
    async with Client(url) as client, stdio_server() as (read, write):
        server = proxy_server(client)
        await server.run(read, write, server.create_initialization_options())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.adapters.mcp_stdio MCP_URL", file=sys.stderr)
        return 2
    anyio.run(serve_stdio, args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
