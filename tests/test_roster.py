"""Every spec of the shipped roster (agents/*.toml) validates against the published schema and
its adapter's own option checks — without loading a model or starting a server."""

import pytest

from bench.adapters.options import parse_options
from bench.adapters.spec import load_agent_file
from tests.conftest import ROOT

ROSTER = sorted((ROOT / "agents").glob("*.toml"))


def adapter_options(adapter: str) -> tuple[dict, bool]:
    """The option table of an adapter and whether it takes the prompting scaffolds."""
    if adapter == "local":
        from bench.adapters.local import ENGINE_OPTIONS, SAMPLING_OPTIONS

        return {**ENGINE_OPTIONS, **SAMPLING_OPTIONS}, True
    if adapter == "openai":
        from bench.adapters.openai_compat import OPTIONS

        return OPTIONS, True
    if adapter == "command":
        from bench.adapters.command import options_table

        return options_table(), False
    if adapter == "agents-sdk":
        from bench.adapters.agents_sdk import OPTIONS

        return OPTIONS, False
    if adapter == "pydantic-ai":
        from bench.adapters.pydantic_ai_adapter import OPTIONS

        return OPTIONS, False
    from bench.adapters.langgraph_adapter import OPTIONS

    return OPTIONS, False


def test_the_roster_has_the_real_and_simulated_references():
    names = {path.stem for path in ROSTER}
    assert {"smollm2-local", "smollm2-langgraph", "smollm2-server", "openai-compatible", "sim-oracle"} <= names


@pytest.mark.parametrize("path", ROSTER, ids=lambda p: p.stem)
def test_roster_spec_is_valid(path):
    spec = load_agent_file(path)  # the JSON schema: names, types, ranges
    assert spec.name == path.stem and spec.description
    if spec.adapter == "sim":
        assert spec.build().name == spec.name
        return
    options, scaffold = adapter_options(spec.adapter)
    parse_options(spec.options, options, str(path), spec.adapter, scaffold=scaffold)
    if spec.adapter == "langgraph" and spec.options.get("model") == "local":
        from bench.adapters.local import parse_local_options

        parse_local_options(spec.options["model_options"], str(path))
