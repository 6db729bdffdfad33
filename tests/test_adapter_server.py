"""The `openai` adapter against a REAL OpenAI-compatible server on loopback: llama-cpp-python's
server (`python -m llama_cpp.server`) serving SmolLM2-135M, started and stopped by a fixture, in
structured-output mode (`response_format` with the JSON schema of the possible calls). Skipped
when llama-cpp-python's server extra or the model package is missing; CI installs both."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.adapters.llama_server import LlamaServer
from bench.adapters.spec import AgentSpec
from bench.errors import InfraError
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture
def start_server(tmp_path):
    """Start fresh llama.cpp servers for a test; every one is stopped (and checked gone) after it."""
    servers = []

    def start():
        servers.append(LlamaServer("smollm2", n_ctx=2048, log_path=str(tmp_path / f"server{len(servers)}.log")))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
        assert server.process.poll() is not None  # stopped, not left behind


def spec(server, **options):
    return AgentSpec("smollm2-server-test", "openai", {
        "base_url": server.base_url, "model": server.alias, "mode": "structured", "response_format": "json_object",
        "temperature": 0.0, "max_tokens": 96, "max_concurrency": 1, "timeout_s": 300.0,
        "extra_body": {"top_k": 40, "repeat_penalty": 1.0}, **options})


def run(suite, agent_spec, out, k, tasks):
    config = RunConfig(k=k, out=Path(out), progress=False, retry_backoff_s=0.0, max_steps=6, concurrency=1)
    run_benchmark(suite, agent_spec, tasks, config)
    return read_run(out)


def trajectory(log):
    return {t: [(s["kind"], s.get("tool"), json.dumps(s.get("args"), sort_keys=True), s.get("output"))
                for s in log.trial_steps(t)] for t in log.summaries}


def test_structured_mode_against_llama_cpp_server(start_server, mini_suite, tmp_path):
    server = start_server()
    a = run(mini_suite, spec(server), tmp_path / "a", k=2, tasks=["cancel-pending"])
    assert {s["outcome"] for s in a.summaries.values()} <= {"success", "failure"}  # never an infrastructure error
    for trial_id, summary in a.summaries.items():
        steps = a.trial_steps(trial_id)
        models = [s for s in steps if s["kind"] == "model"]
        assert models and all(m["input_tokens"] > 0 and m["output_tokens"] > 0 for m in models)
        assert all(m["model"] == "smollm2" for m in models)
        for i, step in enumerate(steps):
            if step["kind"] in ("tool", "user"):
                decoded = json.loads(steps[i - 1]["output"])  # the server's JSON output is the call that was run
                assert (step["tool"], step["args"]) == (decoded["tool"], decoded["arguments"])
    # Per-turn seeds go with each request. The server reuses its KV cache from the previous
    # request, so the chunks a prompt is evaluated in (and, by rounding, a near-tie between two
    # tokens) depend on what it served before: reproducibility holds for the same requests sent
    # to a fresh server in the same order — which is what a roster agent with launch = "llama_cpp" gets.
    server.stop()
    b = run(mini_suite, spec(start_server()), tmp_path / "b", k=2, tasks=["cancel-pending"])
    assert trajectory(a) == trajectory(b)


def test_server_gone_is_an_infrastructure_error(mini_suite, tmp_path):
    server = LlamaServer("smollm2", n_ctx=1024)
    server.stop()  # the endpoint is down for the whole run
    log = run(mini_suite, spec(server, retries=1, backoff_s=0.01, timeout_s=5.0), tmp_path / "r", k=1, tasks=["cancel-pending"])
    (summary,) = log.summaries.values()
    assert summary["outcome"] == "error" and "connection failed" in summary["reason"]


def test_a_run_goes_on_after_its_server_dies(mini_suite, tmp_path):
    """The openai adapter with launch = "llama_cpp": the server is killed (-9) once it has
    answered its first chat completion, mid-trial; the run goes on on the restarted server and
    no trial is an infrastructure error."""
    import threading

    log_path = tmp_path / "server.log"
    options = {"n_ctx": 2048, "log_path": str(log_path)}
    agent = AgentSpec("smollm2-launch-test", "openai", {
        "launch": "llama_cpp", "launch_options": options, "mode": "structured", "response_format": "json_object",
        "temperature": 0.0, "max_tokens": 96, "max_concurrency": 1, "timeout_s": 300.0, "retries": 2, "backoff_s": 0.01})
    server = LlamaServer.shared("smollm2", **options)  # the one the run's agent gets
    first = server.process

    def kill_after_first_answer():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and b"POST /v1/chat/completions HTTP/1.1\" 200" not in log_path.read_bytes():
            time.sleep(0.1)
        first.kill()

    killer = threading.Thread(target=kill_after_first_answer, daemon=True)
    killer.start()
    try:
        config = RunConfig(k=3, out=tmp_path / "a", progress=False, retry_backoff_s=0.0, max_steps=6, concurrency=1)
        run_benchmark(mini_suite, agent, ["cancel-pending"], config)
        killer.join(5)
        log = read_run(tmp_path / "a")
        assert len(log.summaries) == 3 and {s["outcome"] for s in log.summaries.values()} <= {"success", "failure"}
        assert first.poll() == -9 and server.restarts == 1
    finally:
        server.stop()


def test_the_framework_client_waits_for_a_restarted_server(tmp_path, capfd):
    """kill -9 of a launched server: the watchdog says why it died and starts it again on the
    same port; the Agents SDK / PydanticAI client (frameworks.openai_client) that met the dead
    server waits for the restart and sends the request again; a server that will not be back
    is an InfraError that says why it died, not a bare 'Connection error.'."""
    import asyncio

    pytest.importorskip("openai")
    import threading

    from bench.adapters.frameworks import TurnSeeds, classify, openai_client
    from bench.adapters.openai_compat import Endpoint

    made: list[LlamaServer] = []  # built on a thread that then ends: the server must outlive it
    builder = threading.Thread(target=lambda: made.append(
        LlamaServer("smollm2", n_ctx=1024, log_path=str(tmp_path / "server.log"), max_restarts=1)))
    builder.start()
    builder.join()
    (server,) = made
    time.sleep(1.5)
    assert server.process.poll() is None and server.restarts == 0
    endpoint = Endpoint(server.base_url, server.alias, None, server)
    opts = {"timeout_s": 60.0, "retries": 0, "string_max_length": None, "llama_cpp_patterns": False}

    async def models() -> list[str]:
        client = openai_client(endpoint, opts, TurnSeeds(None))
        try:
            return [m.id async for m in client.models.list()]
        finally:
            await client.close()

    try:
        first = server.process
        first.kill()
        first.wait()
        assert asyncio.run(models()) == ["smollm2"]  # the same base_url: the same port
        assert server.restarts == 1 and server.process is not first and "exited with status -9" in server.deaths[0]
        assert "restarting it on the same port" in capfd.readouterr().err
        server.process.kill()  # past max_restarts
        server.process.wait()
        with pytest.raises(Exception) as raised:
            asyncio.run(models())
        infra = classify(raised.value)
        assert isinstance(infra, InfraError) and "not restarted again" in str(infra) and "status -9" in str(infra)
        with pytest.raises(InfraError, match="not restarted again"):
            server.wait_alive(1)
    finally:
        server.stop()
    assert server.process.poll() is not None
