"""A command agent in its own process, speaking MCP with the official SDK client (tests only).

Usage: mcp_child_agent.py MODE, MODE one of: cancel (cancels EV0006, answers over MCP), stdout
(answers on stdout), hang (writes its pid to $CHILD_PID_FILE after one call, then sleeps), crash (exits 3), unknown (calls a tool
that does not exist, then answers), resume (reads the restored calls from $TRAJBENCH_PREFIX, if set,
and makes only the calls of `cancel` not made yet: the resume protocol of bench.adapters.command),
turns (does `cancel` and reports its three model turns on $TRAJBENCH_TURNS, each before its calls),
badturn (one good turn, a call, then the line $CHILD_TURN_LINE as its second turn, then tries
cancel_event), lateturn (reports its second turn after that turn's call: out of place).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import anyio
from mcp import Client


def report(line: str | dict[str, object]) -> None:
    """Append one model-turn line to the harness's report (the protocol of bench.adapters.turn_report)."""
    with open(os.environ["TRAJBENCH_TURNS"], "a", encoding="utf-8") as out:
        out.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def turn(before: int, tokens_in: int, tokens_out: int) -> dict[str, object]:
    return {"tool_calls_before": before, "model": "child-model", "input_tokens": tokens_in, "output_tokens": tokens_out,
            "latency_s": 0.25, "messages": [{"role": "user", "content": f"turn after {before} call(s)"}],
            "output": {"role": "assistant", "content": None}}


async def main(mode: str) -> None:
    async with Client(os.environ["TRAJBENCH_MCP_URL"]) as client:
        if mode in ("turns", "badturn", "lateturn"):
            report(turn(0, 100, 10))
            await client.call_tool("get_event", {"event_id": "EV0006"})
            if mode != "lateturn":
                report(os.environ["CHILD_TURN_LINE"] if mode == "badturn" else turn(1, 120, 12))
            result = await client.call_tool("cancel_event", {"event_id": "EV0006"})
            if mode == "lateturn":
                report(turn(1, 120, 12))
            report(turn(2, 140, 5))
            await client.call_tool("final_answer", {"answer": f"cancel is_error={result.is_error}"})
            return
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
