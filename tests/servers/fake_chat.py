"""A small OpenAI-compatible chat-completions server on loopback, for the `openai` adapter's tests.

It runs `http.server` in a daemon thread. Each POST to `/v1/chat/completions` is answered by a
*behaviour*: a function `(request_body, n) -> Reply` where `n` counts the requests so far (from
0). Behaviours below script a model (native tool calls), and faults: 429 storms, 5xx, malformed
tool calls, unreadable bodies and hangs. Every request body is kept in `server.requests`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    status: int = 200
    body: Any = None               # dict (sent as JSON), str or bytes (sent as is)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Behaviour = Callable[[dict[str, Any], int], Reply]


def completion(message: dict[str, Any], prompt_tokens: int = 50, completion_tokens: int = 7, model: str = "fake-model") -> Reply:
    return Reply(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", **message},
                                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens}})


def tool_call(name: str, arguments: Any, call_id: str = "call_1", **kw: Any) -> Reply:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return completion({"content": None, "tool_calls": [{"id": call_id, "type": "function",
                                                        "function": {"name": name, "arguments": args}}]}, **kw)


def answer(text: str, **kw: Any) -> Reply:
    return completion({"content": text}, **kw)


def shop_agent(body: dict[str, Any], n: int) -> Reply:
    """A scripted tool-calling 'model' for the mini suite's cancel-pending task. Its choice of
    order depends on the request seed (odd seeds cancel the wrong order O3): a pure function of
    the request, so the same seed gives the same trajectory. The prompt size sets the token
    counts, so they are > 0 and grow with the conversation."""
    messages = body["messages"]
    results = [m for m in messages if m["role"] == "tool"]
    size = sum(len(str(m.get("content") or "")) for m in messages)
    kw = {"prompt_tokens": size // 4 + 1, "completion_tokens": 9}
    wrong = body.get("seed", 0) % 2 == 1
    if len(results) == 0:
        return tool_call("find_customer", {"email": "ada@example.com"}, "call_a", **kw)
    if len(results) == 1:
        return tool_call("list_orders", {"customer_id": json.loads(results[0]["content"])["customer_id"]}, "call_b", **kw)
    if len(results) == 2:
        return tool_call("cancel_order", {"order_id": "O3" if wrong else "O1"}, "call_c", **kw)
    return answer("Cancelled O3." if wrong else "Cancelled O1.", **kw)


def sequence(*replies: Reply | Behaviour, then: Behaviour | None = None) -> Behaviour:
    """Reply with these (fixed replies or behaviours) for the first requests, then `then`."""
    def behave(body: dict[str, Any], n: int) -> Reply:
        item = replies[n] if n < len(replies) else then
        if item is None:
            return Reply(500, {"error": "script exhausted"})
        return item(body, n) if callable(item) else item
    return behave


def always(reply: Reply) -> Behaviour:
    return lambda body, n: reply


class FakeChatServer:
    def __init__(self, behaviour: Behaviour = shop_agent):
        self.behaviour = behaviour
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0   # requests being answered at once (the client's concurrency)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(Reply(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._send(Reply(400, {"error": "bad json"}))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(Reply(404, {"error": f"no route {self.path}"}))
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.behaviour(body, n)
                    if reply.delay_s:
                        server._stop.wait(reply.delay_s)  # a hang, cut short when the server stops
                finally:
                    with server._lock:
                        server.in_flight -= 1
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                data = reply.body
                if isinstance(data, (dict, list)):
                    data = json.dumps(data).encode()
                elif isinstance(data, str):
                    data = data.encode()
                data = data or b""
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":  # a manual check: serve the scripted shop agent until interrupted
    with FakeChatServer() as s:
        print("serving", s.base_url)
        while True:
            time.sleep(3600)
