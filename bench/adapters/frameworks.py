"""What the agent-framework adapters (`agents-sdk`, `pydantic-ai`) share, so that the two differ
only where their frameworks do.

- Options: the endpoint (`base_url` + `model`, or `launch = "llama_cpp"`; `api_key_env`, key
  optional), `tools` (`"functions"`: the episode's tools as the framework's own function tools;
  `"mcp"`: the episode served over MCP and reached with the framework's MCP client), sampling,
  the request `timeout_s` and `retries` (the OpenAI client's own), prices.
- Tool calls: every call goes through `episode.call` (logged, validated by the domain,
  state-hashed); arguments that are not a JSON object are the model's doing: it is told, and no
  step is logged (as in the `openai` adapter).
- The episode's end (budget spent, time limit) is checked before each model turn, so that a
  framework whose tool errors do not stop it (MCP) does not keep asking the model.
- Seeds: each model turn's, by the rule of every in-process loop (`TurnSeeds`), written into the
  request by the trial's HTTP client, since the frameworks build their requests themselves.
- Resuming from a restored prefix (`trajbench replay`): the restored calls become the
  framework's own message history (`restored_calls`), and its loop goes on from there.
- `string_max_length` (a `maxLength` on the tools' unbounded string parameters) and
  `llama_cpp_patterns` (their `pattern`s rewritten into what llama-cpp-python's grammar
  translation takes): rewrites of the tool schemas sent to the model, for a llama.cpp server
  (the why, and the rules: `bench.adapters.tool_schema`). Off by default: they change the
  schemas the model reads.
- Errors: the OpenAI client's connection, timeout, rate-limit and 5xx errors (after its own
  retries), and a bad key / unknown model, are infrastructure (`InfraError`: the trial is
  retried, then recorded as `error`), as is any other HTTP error but a context overflow, which
  fails the trial (`AgentGaveUp`), as in the `openai` adapter.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from bench.adapters.openai_compat import ENDPOINT_OPTIONS, TOOLS_NOTE, _is_context_error, _parse_call
from bench.adapters.options import OptionSpec
from bench.adapters.prompting import AgentGaveUp, turn_seed
from bench.adapters.tool_schema import rewrite_schema
from bench.episode import EpisodeOver, EpisodeTimeout, StepBudgetExhausted
from bench.errors import BenchError, InfraError

FRAMEWORK_OPTIONS: dict[str, OptionSpec] = {
    **ENDPOINT_OPTIONS,
    "tools": OptionSpec("str", "functions", choices=("functions", "mcp")),
    "temperature": OptionSpec("float", None, minimum=0.0, maximum=5.0),
    "top_p": OptionSpec("float", None, minimum=0.0, maximum=1.0),
    "max_tokens": OptionSpec("int", None, minimum=1),
    "tool_choice": OptionSpec("str", None, choices=("auto", "required", "none")),
    "seed": OptionSpec("bool", True),
    "extra_body": OptionSpec("dict", {}),
    "timeout_s": OptionSpec("float", 60.0, minimum=0.001),
    "retries": OptionSpec("int", 2, minimum=0),
    "string_max_length": OptionSpec("int", None, minimum=1),
    "llama_cpp_patterns": OptionSpec("bool", False),
    "input_cost_per_mtok": OptionSpec("float", 0.0, minimum=0.0),
    "output_cost_per_mtok": OptionSpec("float", 0.0, minimum=0.0),
}

NO_KEY = "no-key"  # the OpenAI client insists on a key; a loopback server ignores it


def require(modules: tuple[str, ...], adapter: str, extra: str, source: str) -> None:
    """One line naming the extra when the framework is not installed."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise BenchError(f"the {adapter} adapter needs {name}; install with pip install 'trajbench[{extra}]'",
                             file=source, field="adapter") from None


def instructions(episode: Any) -> str:
    """The system prompt: the suite's policy and the same tool-use note as the `openai` adapter."""
    return "\n\n".join(p for p in (episode.policy.strip(), TOOLS_NOTE) if p)


class TurnSeeds:
    """The sampling seed of each model turn of one trial, by trajbench's one rule
    (`bench.adapters.prompting.turn_seed`: the trial's seed and the turn's index), which its own
    loop (`openai`) and LangGraph's built-in graph follow too, so that frameworks do not differ by
    their seeds. A framework builds its requests itself, so the trial's HTTP client writes the seed
    into each chat-completions body (`request_body`), and the recorder starts each model turn
    (`begin_turn`): a request the client retries keeps its turn's seed. `seed` None: the `seed`
    option is off, and no seed is sent."""

    def __init__(self, seed: int | None, first_turn: int = 0):
        self.seed, self.turn = seed, first_turn - 1

    def start(self) -> None:
        self.turn += 1

    @property
    def current(self) -> int | None:
        return None if self.seed is None else turn_seed(self.seed, max(self.turn, 0))


def trial_seeds(episode: Any, opts: dict[str, Any]) -> TurnSeeds:
    """The trial's seeds; a continuation's first turn is numbered after its restored calls (one
    per turn, as the `openai` adapter counts them when it resumes)."""
    return TurnSeeds(int(episode.seed) if opts["seed"] else None, len(episode.restored_calls))


def restored_calls(episode: Any) -> list[tuple[str, str, Any, str]]:
    """A continuation's restored calls (docs/divergence.md, "Causal replay") as (call id, tool,
    arguments, the result text the model read), for the framework's own message history: the
    same ids and texts as the `openai` adapter's restored conversation. Empty in a fresh trial."""
    return [(f"call_restored_{i}", tool, args, observation.text())
            for i, (tool, args, observation) in enumerate(episode.restored_calls)]


def call_tool(episode: Any, name: str, raw_args: Any) -> str:
    """One function-tool call from a framework: the observation text the model gets back."""
    tool, args, problem = _parse_call({"function": {"name": name, "arguments": raw_args}})
    if problem is not None:
        episode.annotations["malformed_tool_calls"] = episode.annotations.get("malformed_tool_calls", 0) + 1
        return f"Error: {problem}"
    return str(episode.call(tool, args).text())


def begin_turn(episode: Any, seeds: TurnSeeds) -> None:
    """Before a model turn: the episode's end stops the framework (`check_open`), else the turn's
    seed is the next one."""
    check_open(episode)
    seeds.start()


def check_open(episode: Any) -> None:
    """Raise the episode's end (a BaseException the frameworks do not catch) before a model turn."""
    if episode.budget_exhausted:
        raise StepBudgetExhausted(f"step budget of {episode.max_steps} tool calls exhausted")
    if episode.timed_out or episode.remaining_s == 0.0:
        episode.timed_out = True
        raise EpisodeTimeout("the trial's time limit passed")
    if episode.closed:
        raise EpisodeOver("the episode is closed")


@asynccontextmanager
async def served(episode: Any) -> AsyncIterator[str]:
    """The episode's MCP server (streamable HTTP on loopback) for the framework's MCP client;
    started in a worker thread so that the other trials on the event loop go on."""
    from bench.adapters.mcp_server import ServerStartError, serve_http

    server = serve_http(episode)
    try:
        url = await asyncio.to_thread(server.__enter__)
    except ServerStartError as exc:
        raise InfraError(str(exc)) from exc
    try:
        yield url
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)


def openai_client(endpoint: Any, opts: dict[str, Any], seeds: TurnSeeds) -> Any:
    """An `AsyncOpenAI` client on the endpoint, for one trial (closed by the caller): the
    request timeout and retries are the client's own; no proxy from the environment; requests
    pass through `request_body`, with the current turn's seed."""
    import httpx2
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    class Transport(httpx2.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx2.AsyncHTTPTransport()

        async def handle_async_request(self, request: Any) -> Any:
            if request.method == "POST" and request.url.path.endswith("/chat/completions"):
                body = request_body(await request.aread(), opts, seeds.current)
                headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
                request = httpx2.Request("POST", request.url, headers=headers, content=body, extensions=request.extensions)
            try:
                return await self.inner.handle_async_request(request)
            except (httpx2.NetworkError, httpx2.RemoteProtocolError):
                server = endpoint.server  # a server started here that died: wait for its restart, send again
                if server is None or server.alive():
                    raise
                await asyncio.to_thread(server.wait_alive, server.startup_timeout_s)
                return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    return AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or NO_KEY, timeout=opts["timeout_s"],
                       max_retries=opts["retries"], http_client=DefaultAsyncHttpxClient(trust_env=False, transport=Transport()))


def request_body(body: bytes, opts: dict[str, Any], seed: int | None = None) -> bytes:
    """A chat-completions body as the framework's client sends it, parsed once: with the turn's
    `seed` (`TurnSeeds`; None: none set), rewritten by `fill_null_content` and `rewrite_tools`; a
    body that is not a JSON object, or that nothing changes, goes out as it came (the same bytes)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(data, dict):
        return body
    changed = seed is not None and data.get("seed") != seed
    if seed is not None:
        data["seed"] = seed
    changed = fill_null_content(data) or changed
    changed = rewrite_tools(data, opts) or changed
    return orjson.dumps(data) if changed else body


def rewrite_tools(data: dict[str, Any], opts: dict[str, Any]) -> bool:
    """Put the tools' parameter schemas of a request through the options that rewrite them
    (`string_max_length`, `llama_cpp_patterns`: see the module doc); True when there was any to."""
    max_length, patterns = opts.get("string_max_length"), opts.get("llama_cpp_patterns")
    tools = data.get("tools")
    if not (max_length or patterns) or not isinstance(tools, list):
        return False
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("parameters"), dict):
            function["parameters"] = rewrite_schema(function["parameters"], max_length, bool(patterns))
    return True


def fill_null_content(data: dict[str, Any]) -> bool:
    """`"content": ""` instead of `null` on a request's assistant messages that carry tool calls;
    True when one changed. The SDKs send that null (valid in the OpenAI API), and llama-cpp-python's
    server rejects it with a 500 (its schema wants a string; its chat template reads the key): an
    empty text means the same to every server, so the frameworks run on llama.cpp unmodified."""
    messages = data.get("messages")
    changed = False
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "assistant" and message.get("tool_calls") \
                and "content" in message and message["content"] is None:
            message["content"] = ""
            changed = True
    return changed


def classify(exc: BaseException) -> BaseException:
    """The trial's view of an exception out of the framework (see the module doc), found on it
    or on its causes (a framework may wrap the OpenAI client's error); any other exception is
    returned as it is (the agent's failure)."""
    try:
        import openai
    except ImportError:  # pragma: no cover - both frameworks depend on it
        return exc
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None:
        chain.append(link)
        link = link.__cause__
    infra = next((link for link in chain if isinstance(link, InfraError)), None)
    if infra is not None:  # e.g. the transport's word on why the launched server is gone
        return infra
    cause = next((link for link in chain if isinstance(link, openai.OpenAIError)), None)
    if cause is None:
        return exc
    if isinstance(cause, openai.APIConnectionError):  # includes APITimeoutError
        return InfraError(f"{type(cause).__name__}: {cause}")
    if isinstance(cause, openai.APIStatusError):
        status = cause.status_code
        if status in (400, 413) and _is_context_error(str(cause)):
            return AgentGaveUp(f"the conversation no longer fits the model's context window ({cause})")
        if status in (408, 409, 425, 429) or status >= 500:
            return InfraError(f"HTTP {status}: {cause} (after the client's retries)")
        return InfraError(f"HTTP {status}: {cause} (not retried: check base_url, model and the API key)")
    return exc
