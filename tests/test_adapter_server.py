"""The `openai` adapter against a REAL OpenAI-compatible server on loopback: llama-cpp-python's
server (`python -m llama_cpp.server`) serving SmolLM2-135M, started and stopped by a fixture, in
structured-output mode (`response_format` with the JSON schema of the possible calls). Skipped
when llama-cpp-python's server extra or the model package is missing; CI installs both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.adapters.openai_compat import LlamaServer
from bench.adapters.spec import AgentSpec
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
