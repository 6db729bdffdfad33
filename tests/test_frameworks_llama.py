"""The framework adapters and an MCP agent in its own process, on the real SmolLM2 model behind
llama-cpp-python's OpenAI-compatible server on loopback (native tool calls through
chat_format = "chatml-function-calling"), with no key: tiny budgets (1 task, k = 1, 3 steps)."""

from __future__ import annotations

import sys

import pytest

from bench.analysis.replay import verify_run
from tests.conftest import ROOT
from tests.test_adapter_frameworks import run, spec_file

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow

SAMPLING = {"tool_choice": "auto", "temperature": 0.8, "max_tokens": 48, "timeout_s": 300.0}


@pytest.fixture(scope="module")
def llama():
    from bench.adapters.llama_server import LlamaServer

    server = LlamaServer("smollm2", n_ctx=2048, chat_format="chatml-function-calling")
    yield server
    server.stop()


@pytest.mark.parametrize("adapter", ["agents-sdk", "pydantic-ai", "command"])
def test_on_the_real_llama_server(adapter, llama, mini_suite, tmp_path):
    if adapter == "command":
        path = tmp_path / "mcp.toml"
        path.write_text(f'name = "mcp"\nadapter = "command"\n[options]\ncommand = ["{sys.executable}", '
                        f'"{ROOT / "agents" / "mcp_chat_agent.py"}", "--string-max-length", "128", "--llama-cpp-patterns"]\nbase_url = "{llama.base_url}"\nmodel = "{llama.alias}"\n')
    else:
        extra = {"reset_tool_choice": False} if adapter == "agents-sdk" else {}
        path = spec_file(tmp_path, adapter, llama.base_url, model=llama.alias, **SAMPLING, **extra)
    log = run(mini_suite, path, tmp_path / "r", max_steps=3, timeout_s=600.0)
    (trial_id, summary), = log.summaries.items()
    assert summary["outcome"] in ("success", "failure"), summary  # never an infrastructure error
    events = log.trial_steps(trial_id)
    tools = [e for e in events if e["kind"] in ("tool", "user")]
    assert len(tools) == summary["steps"] <= 3
    models = [e for e in events if e["kind"] == "model"]  # a command agent reports its own (TRAJBENCH_TURNS)
    assert models and all(m["input_tokens"] > 0 and m["latency_s"] > 0 for m in models)
    if adapter != "command":
        assert summary["agent_info"]["model"] == llama.alias
    else:
        assert summary["agent_info"]["exit_status"] == 0
    assert verify_run(tmp_path / "r").ok
