"""An agent that brings its own process: a chat-completions tool loop whose tools come from an MCP
server, written against the official `mcp` SDK client and httpx only (no trajbench import), as any
team's agent would be. The `smollm2-mcp` roster spec runs it on the local model.

It reads what the `command` adapter gives every agent: TRAJBENCH_MCP_URL, TRAJBENCH_INSTRUCTION,
TRAJBENCH_POLICY, TRAJBENCH_SEED, TRAJBENCH_MAX_STEPS, and the model endpoint
(TRAJBENCH_MODEL_BASE_URL, TRAJBENCH_MODEL, optional TRAJBENCH_MODEL_API_KEY). Sampling comes
from AGENT_TEMPERATURE / AGENT_TOP_P / AGENT_MAX_TOKENS and llama.cpp's AGENT_TOP_K /
AGENT_REPEAT_PENALTY, whose defaults are the other smollm2-* roster specs' (0.8, 0.95, 256, 40, 1.0),
so the board compares frameworks, not sampling. `--string-max-length N` puts a `maxLength` on the
tools' string parameters that have none (llama-cpp-python's native tool calls ignore max_tokens
for the arguments: see `string_max_length` in bench/adapters/frameworks.py, whose rule this copies). Each turn sends the MCP tools as OpenAI `tools`; tool
calls run over MCP (an MCP tool error goes back to the model as the tool's result); the first reply
without tool calls is the answer, given to the server's `final_answer` tool. The per-turn seed is
the trial seed plus the turn index. Exit status 0 on an answer, 1 when the endpoint fails.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
import httpx
from mcp import Client

FINAL_ANSWER = "final_answer"


def openai_tools(tools: Any, string_max_length: int | None = None) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": bound_strings(t.input_schema, string_max_length)}}
            for t in tools if t.name != FINAL_ANSWER]


def bound_strings(schema: Any, max_length: int | None) -> Any:
    """The schema with `maxLength` on each string node that has no length bound, enum or const."""
    if not isinstance(schema, dict) or max_length is None:
        return schema
    out = dict(schema)
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            out[key] = {name: bound_strings(sub, max_length) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties", "contains", "not", "if", "then", "else"):
        if isinstance(schema.get(key), dict):
            out[key] = bound_strings(schema[key], max_length)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(schema.get(key), list):
            out[key] = [bound_strings(sub, max_length) for sub in schema[key]]
    types = schema.get("type")
    if (types == "string" or (isinstance(types, list) and "string" in types)) and not {"maxLength", "enum", "const"} & schema.keys():
        out["maxLength"] = max_length
    return out


def result_text(result: Any) -> str:
    text = "".join(getattr(part, "text", "") for part in result.content)
    return f"Error: {text}" if result.is_error and not text.startswith("Error") else text


async def chat(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {os.environ['TRAJBENCH_MODEL_API_KEY']}"} if os.environ.get("TRAJBENCH_MODEL_API_KEY") else {}
    response = await http.post(os.environ["TRAJBENCH_MODEL_BASE_URL"].rstrip("/") + "/chat/completions", json=body, headers=headers)
    response.raise_for_status()
    message: dict[str, Any] = response.json()["choices"][0]["message"]
    return message


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
        tools = openai_tools((await client.list_tools()).tools, string_max_length())
        for turn in range(max_steps + 1):
            body = {"model": os.environ["TRAJBENCH_MODEL"], "messages": messages, "tools": tools, "tool_choice": "auto",
                    "seed": (seed + turn) % 2_147_483_647, "temperature": float(os.environ.get("AGENT_TEMPERATURE", "0.8")),
                    "top_p": float(os.environ.get("AGENT_TOP_P", "0.95")),
                    "max_tokens": int(os.environ.get("AGENT_MAX_TOKENS", "256")),
                    "top_k": int(os.environ.get("AGENT_TOP_K", "40")),
                    "repeat_penalty": float(os.environ.get("AGENT_REPEAT_PENALTY", "1.0"))}
            try:
                message = await chat(http, body)
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                print(f"the model endpoint failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            calls = message.get("tool_calls") or []
            if not calls:
                await client.call_tool(FINAL_ANSWER, {"answer": message.get("content") or ""})
                return 0
            messages.append({"role": "assistant", "content": message.get("content") or "", "tool_calls": calls})
            for call in calls:
                try:
                    args = json.loads(call["function"].get("arguments") or "{}")
                except json.JSONDecodeError:
                    args = None
                if isinstance(args, dict):
                    text = result_text(await client.call_tool(call["function"]["name"], args))
                else:
                    text = "Error: the arguments are not a JSON object"
                messages.append({"role": "tool", "tool_call_id": call.get("id") or "call", "content": text})
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
