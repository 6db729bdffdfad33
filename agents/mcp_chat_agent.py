"""An agent that brings its own process: a chat-completions tool loop whose tools come from an MCP
server, written against the official `mcp` SDK client and httpx, as any team's agent would be;
of trajbench it imports two rules it shares with the in-process adapters, so that the board
compares loops, not these: `rewrite_schema` (bench/adapters/tool_schema.py, standard library
only) and `turn_seed` (the per-turn seed). The roster spec runs it with trajbench's own
interpreter (`{python}`); elsewhere, install trajbench. The `smollm2-mcp` roster spec runs it on
the local model.

It reads what the `command` adapter gives every agent: TRAJBENCH_MCP_URL, TRAJBENCH_INSTRUCTION,
TRAJBENCH_POLICY, TRAJBENCH_SEED, TRAJBENCH_MAX_STEPS, and the model endpoint
(TRAJBENCH_MODEL_BASE_URL, TRAJBENCH_MODEL, optional TRAJBENCH_MODEL_API_KEY). Sampling comes
from AGENT_TEMPERATURE / AGENT_TOP_P / AGENT_MAX_TOKENS and llama.cpp's AGENT_TOP_K /
AGENT_REPEAT_PENALTY, whose defaults are the other smollm2-* roster specs' (0.8, 0.95, 256, 40, 1.0),
so the board compares frameworks, not sampling. `--string-max-length N` puts a `maxLength` on the
tools' string parameters that have none (llama-cpp-python's native tool calls ignore max_tokens
for the arguments) and `--llama-cpp-patterns` rewrites the tools' `pattern`s into what
llama-cpp-python's grammar translation takes (a `\\d` kills that server): the framework adapters'
options `string_max_length` and `llama_cpp_patterns`, by the same code (`rewrite_schema`). Each
turn sends the MCP tools as OpenAI `tools`; tool calls run over MCP (an MCP tool error goes back
to the model as the tool's result); the first reply without tool calls is the answer, given to
the server's `final_answer` tool. Each turn's seed is `turn_seed(TRAJBENCH_SEED, turn index)`,
the rule of every in-process loop. Each model turn is reported on TRAJBENCH_TURNS (one JSON line:
tokens from the response's `usage`, latency, the messages new this turn and the reply), written
before the turn's tool calls, so the harness logs it in its place (bench/adapters/turn_report.py).
Exit status 0 on an answer, 1 when the endpoint fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import anyio
import httpx
from mcp import Client

from bench.adapters.prompting import turn_seed
from bench.adapters.tool_schema import rewrite_schema

FINAL_ANSWER = "final_answer"


def openai_tools(tools: Any, string_max_length: int | None = None, llama_cpp_patterns: bool = False) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": rewrite_schema(t.input_schema, string_max_length, llama_cpp_patterns)}}
            for t in tools if t.name != FINAL_ANSWER]


def result_text(result: Any) -> str:
    text = "".join(getattr(part, "text", "") for part in result.content)
    return f"Error: {text}" if result.is_error and not text.startswith("Error") else text


async def chat(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], float]:
    """One chat-completions request: (the reply message, the whole response, seconds taken)."""
    headers = {"Authorization": f"Bearer {os.environ['TRAJBENCH_MODEL_API_KEY']}"} if os.environ.get("TRAJBENCH_MODEL_API_KEY") else {}
    started = time.perf_counter()
    response = await http.post(os.environ["TRAJBENCH_MODEL_BASE_URL"].rstrip("/") + "/chat/completions", json=body, headers=headers)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data["choices"][0]["message"], data, time.perf_counter() - started


def report_turn(tool_calls_before: int, data: dict[str, Any], latency_s: float, messages: list[Any], output: Any) -> None:
    """Append the model turn to TRAJBENCH_TURNS (one JSON line, written and closed before the
    turn's tool calls: the harness logs it before them), if the harness asked for the report."""
    path = os.environ.get("TRAJBENCH_TURNS")
    if not path:
        return
    usage = data.get("usage") or {}
    tokens = {key: usage[field] if isinstance(usage.get(field), int) else None
              for key, field in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens"))}
    line = {"tool_calls_before": tool_calls_before, "model": data.get("model") or os.environ["TRAJBENCH_MODEL"], **tokens,
            "latency_s": latency_s, "messages": messages, "output": output}
    with open(path, "a", encoding="utf-8") as report:
        report.write(json.dumps(line) + "\n")


def string_max_length() -> int | None:
    args = sys.argv[1:]
    if "--string-max-length" in args:
        return int(args[args.index("--string-max-length") + 1])
    return None


async def main() -> int:
    seed, max_steps = int(os.environ["TRAJBENCH_SEED"]), int(os.environ["TRAJBENCH_MAX_STEPS"])
    messages: list[dict[str, Any]] = [{"role": "system", "content": os.environ.get("TRAJBENCH_POLICY", "")},
                                      {"role": "user", "content": os.environ["TRAJBENCH_INSTRUCTION"]}]
    async with Client(os.environ["TRAJBENCH_MCP_URL"]) as client, httpx.AsyncClient(timeout=300, trust_env=False) as http:
        tools = openai_tools((await client.list_tools()).tools, string_max_length(), "--llama-cpp-patterns" in sys.argv[1:])
        calls_made = logged = 0  # tool calls sent over MCP; messages already in a reported turn
        for turn in range(max_steps + 1):
            body = {"model": os.environ["TRAJBENCH_MODEL"], "messages": messages, "tools": tools, "tool_choice": "auto",
                    "seed": turn_seed(seed, turn), "temperature": float(os.environ.get("AGENT_TEMPERATURE", "0.8")),
                    "top_p": float(os.environ.get("AGENT_TOP_P", "0.95")),
                    "max_tokens": int(os.environ.get("AGENT_MAX_TOKENS", "256")),
                    "top_k": int(os.environ.get("AGENT_TOP_K", "40")),
                    "repeat_penalty": float(os.environ.get("AGENT_REPEAT_PENALTY", "1.0"))}
            try:
                message, data, latency = await chat(http, body)
            except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
                print(f"the model endpoint failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            report_turn(calls_made, data, latency, messages[logged:], message)
            calls = message.get("tool_calls") or []
            if not calls:
                await client.call_tool(FINAL_ANSWER, {"answer": message.get("content") or ""})
                return 0
            messages.append({"role": "assistant", "content": message.get("content") or "", "tool_calls": calls})
            logged = len(messages)  # the reply is the turn's output; the next turn's messages start after it
            for call in calls:
                try:
                    args = json.loads(call["function"].get("arguments") or "{}")
                except json.JSONDecodeError:
                    args = None
                if isinstance(args, dict):
                    calls_made += 1
                    text = result_text(await client.call_tool(call["function"]["name"], args))
                else:
                    text = "Error: the arguments are not a JSON object"
                messages.append({"role": "tool", "tool_call_id": call.get("id") or "call", "content": text})
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
