"""The stable import path for suite authors: `from bench.domain import Toolset, ToolError, new_id`.

The tools framework lives in `bench.world.tools`; this module re-exports the names a suite's
`domain.py` uses. It stays because a suite's content hash covers its domain code: the built-in
suites (and every suite already published, with leaderboards and recorded baselines keyed by
that hash) import from here, and changing their import line would change their hash. New
suites may equally write `from bench import Toolset, ToolError, new_id`.
"""

from bench.world.tools import Tool, ToolError, Toolset, new_id

__all__ = ["Tool", "ToolError", "Toolset", "new_id"]
