"""A command agent in its own process, speaking MCP with the official SDK client (tests only).

Usage: mcp_child_agent.py MODE, MODE one of: cancel (cancels EV0006, answers over MCP), stdout
(answers on stdout), hang (writes its pid to $CHILD_PID_FILE after one call, then sleeps), crash (exits 3), unknown (calls a tool
that does not exist, then answers), resume (reads the restored calls from $TRAJBENCH_PREFIX, if set,
and makes only the calls of `cancel` not made yet: the resume protocol of bench.adapters.command).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import anyio
from mcp import Client


async def main(mode: str) -> None:
    async with Client(os.environ["TRAJBENCH_MCP_URL"]) as client:
        if mode == "unknown":
            result = await client.call_tool("teleport", {})
            await client.call_tool("final_answer", {"answer": f"is_error={result.is_error}"})
            return
        if mode == "resume":
            where = os.environ.get("TRAJBENCH_PREFIX")
            steps = json.loads(Path(where).read_text())["steps"] if where else []
            done = {step["tool"] for step in steps}
            for tool in ("get_event", "cancel_event"):
                if tool not in done:
                    await client.call_tool(tool, {"event_id": "EV0006"})
            await client.call_tool("final_answer", {"answer": f"resumed after {len(steps)} step(s)"})
            return
        await client.call_tool("get_event", {"event_id": "EV0006"})
        if mode == "hang":
            Path(os.environ["CHILD_PID_FILE"]).write_text(str(os.getpid()))
            time.sleep(3600)
        if mode == "crash":
            os._exit(3)  # a hard crash mid-session
        if mode == "cancel":
            await client.call_tool("cancel_event", {"event_id": "EV0006"})
            await client.call_tool("final_answer", {"answer": f"cancelled (seed {os.environ['TRAJBENCH_SEED']})"})
    if mode == "stdout":
        print("looked it up")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
