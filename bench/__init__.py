"""trajbench: a benchmark for the consistency of tool-using AI agents.

The public API (docs/api.md). Every name below is loaded on first use, so that `import bench`
stays cheap (the command line starts fast, and a suite's `domain.py` imports only the tools
framework); the modules behind the names are the package's wings (`bench.world`,
`bench.adapters`, `bench.runs`, `bench.analysis`, `bench.publish`), whose paths may change
between 0.x releases — these names do not.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bench.__version__ import __version__

if TYPE_CHECKING:
    from bench.adapters.spec import AgentSpec, parse_agent_spec
    from bench.analysis.divergence.options import DivergenceOptions
    from bench.analysis.divergence.section import divergence_section
    from bench.analysis.replay import VerifyResult
    from bench.api import Run, diff, load, report, run, verify
    from bench.episode import Agent, Episode, EpisodeOver, Observation
    from bench.errors import BenchError, InfraError
    from bench.publish.export import export_run
    from bench.publish.leaderboard import build_leaderboard
    from bench.publish.leaderboard_page import write_leaderboard
    from bench.publish.view import write_view
    from bench.runs.runner import RunConfig
    from bench.world.overlay import apply_overlay
    from bench.world.suite import Suite, load_suite
    from bench.world.task import Task
    from bench.world.tools import ToolError, Toolset, new_id
    from bench.world.variants import VariantSpec, parse_variant_spec

# name -> the module that defines it
_HOME = {
    "Agent": "bench.episode",
    "AgentSpec": "bench.adapters.spec",
    "BenchError": "bench.errors",
    "DivergenceOptions": "bench.analysis.divergence.options",
    "Episode": "bench.episode",
    "EpisodeOver": "bench.episode",
    "InfraError": "bench.errors",
    "Observation": "bench.episode",
    "Run": "bench.api",
    "RunConfig": "bench.runs.runner",
    "Suite": "bench.world.suite",
    "Task": "bench.world.task",
    "ToolError": "bench.world.tools",
    "Toolset": "bench.world.tools",
    "VariantSpec": "bench.world.variants",
    "VerifyResult": "bench.analysis.replay",
    "apply_overlay": "bench.world.overlay",
    "build_leaderboard": "bench.publish.leaderboard",
    "diff": "bench.api",
    "divergence_section": "bench.analysis.divergence.section",
    "export_run": "bench.publish.export",
    "load": "bench.api",
    "load_suite": "bench.world.suite",
    "new_id": "bench.world.tools",
    "parse_agent_spec": "bench.adapters.spec",
    "parse_variant_spec": "bench.world.variants",
    "report": "bench.api",
    "run": "bench.api",
    "verify": "bench.api",
    "write_leaderboard": "bench.publish.leaderboard_page",
    "write_view": "bench.publish.view",
}

__all__ = [
    "Agent",
    "AgentSpec",
    "BenchError",
    "DivergenceOptions",
    "Episode",
    "EpisodeOver",
    "InfraError",
    "Observation",
    "Run",
    "RunConfig",
    "Suite",
    "Task",
    "ToolError",
    "Toolset",
    "VariantSpec",
    "VerifyResult",
    "__version__",
    "apply_overlay",
    "build_leaderboard",
    "diff",
    "divergence_section",
    "export_run",
    "load",
    "load_suite",
    "new_id",
    "parse_agent_spec",
    "parse_variant_spec",
    "report",
    "run",
    "verify",
    "write_leaderboard",
    "write_view",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
