"""The `python` adapter: any callable or class, named `module:attr` or `path/to/file.py:attr`.

- a function `agent(episode) -> str | None` (or `async def`);
- a class, instantiated once per run with the spec's options as keyword arguments, whose
  instances have `run(episode)` (or `async arun(episode)`) or are callable.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from bench.episode import Episode
from bench.errors import BenchError


def load_target(target: str, source: str) -> Any:
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise BenchError(f"a python agent is named 'module:attr' or 'file.py:attr', got {target!r}", file=source, field="target")
    try:
        if module_part.endswith(".py"):
            path = Path(module_part)
            if not path.is_file():
                raise BenchError(f"no such file {module_part!r}", file=source, field="target")
            name = f"trajbench_agent_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"cannot import {module_part!r}: {type(exc).__name__}: {exc}", file=source, field="target") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise BenchError(f"{module_part!r} has no attribute {attr!r}", file=source, field="target") from None


class FunctionAgent:
    def __init__(self, name: str, func: Any):
        self.name = name
        self._func = func
        if inspect.iscoroutinefunction(func):
            self.arun = self._arun

    def run(self, episode: Episode) -> Any:
        return self._func(episode)

    async def _arun(self, episode: Episode) -> Any:
        return await self._func(episode)


def build_python_agent(name: str, target: str, options: dict[str, Any], source: str) -> Any:
    obj = load_target(target, source)
    if inspect.isclass(obj):
        try:
            obj = obj(**options)
        except TypeError as exc:
            raise BenchError(f"cannot build {target}: {exc}", file=source, field="options") from None
        if hasattr(obj, "run") or hasattr(obj, "arun"):
            if not hasattr(obj, "name"):
                obj.name = name
            return obj
    elif options:
        raise BenchError(f"{target} is a function; options are only passed to classes", file=source, field="options")
    if callable(obj):
        return FunctionAgent(name, obj)
    raise BenchError(f"{target} is neither a callable nor a class with run()", file=source, field="target")
