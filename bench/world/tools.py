"""The simulated world: a JSON state and the tools that read or mutate it.

A suite's `domain.py` builds a `Toolset` and decorates plain functions with it::

    tools = Toolset()

    @tools.tool(read_only=True, params={"email": {"type": "string"}})
    def find_customer(db, email):
        "Look up a customer by email address."
        ...

Tools take the state (`db`, a plain dict) and keyword arguments, and return any JSON value.
They must be deterministic: no clock, no randomness, no network. A tool signals a domain error
(unknown order, policy refusal) by raising `ToolError`; the agent sees the message as an error
observation. Write tools must check before they mutate, so that an error leaves the state as it
was. IDs come from `new_id`, a counter kept in the state, so replays create the same IDs.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import jsonschema
import jsonschema_rs
import orjson

from bench.canonical import json_copy, state_hash
from bench.errors import InfraError


class ToolError(Exception):
    """A domain-level refusal or failure, shown to the agent as an error observation."""


class DomainBug(InfraError):
    """A tool raised something other than ToolError: a bug in the suite's code, not the agent's
    doing. The trial ends as `error` (never as an agent failure)."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    read_only: bool
    func: Callable[..., Any] = field(repr=False, compare=False)
    validator: Any = field(repr=False, compare=False)

    @functools.cached_property
    def accepts(self) -> Callable[[Any], bool]:
        """The compiled check of `parameters`, for every call's fast path: ~1 µs against ~50 µs for
        `validator` (pure Python), which is kept as the reference that explains a rejection.
        Formats are annotations only, as they are for `validator`."""
        compiled = jsonschema_rs.Draft202012Validator(self.parameters, validate_formats=False).is_valid

        def accepts(args: Any) -> bool:
            # The compiled check refuses Python values that have no JSON form (a set, bytes, an
            # int dict key) with ValueError: those go to the reference validator, which words them.
            try:
                return bool(compiled(args))
            except ValueError:
                return False

        return accepts

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the compiled check (not picklable): a Ray worker compiles its own."""
        return {k: v for k, v in self.__dict__.items() if k != "accepts"}

    def spec(self) -> dict[str, Any]:
        """What an agent is told about the tool (OpenAI-style function spec plus the flag)."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "read_only": self.read_only,
        }


def object_schema(params: dict[str, dict], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": params,
        "required": [name for name in params if name not in optional],
        "additionalProperties": False,
    }


class Toolset:
    """An ordered registry of a domain's tools."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def tool(
        self,
        *,
        read_only: bool,
        params: dict[str, dict] | None = None,
        optional: tuple[str, ...] = (),
        name: str | None = None,
        description: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = name or func.__name__
            unknown = [o for o in optional if o not in (params or {})]
            if unknown:  # a typo here would silently make the intended parameter required
                raise ValueError(f"tool {tool_name!r}: optional names {unknown[0]!r}, which is not one of its parameters "
                                 f"({', '.join(params or {}) or 'none'})")
            schema = object_schema(params or {}, optional)
            jsonschema.Draft202012Validator.check_schema(schema)
            if tool_name in self._tools:
                raise ValueError(f"tool {tool_name!r} is defined twice")
            self._tools[tool_name] = Tool(
                name=tool_name,
                description=description or inspect.cleandoc(func.__doc__ or ""),
                parameters=schema,
                read_only=read_only,
                func=func,
                validator=jsonschema.Draft202012Validator(schema),
            )
            return func

        return register

    def add(self, tool: Tool) -> None:
        self._tools[tool.name] = tool

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)


def new_id(db: dict[str, Any], kind: str, prefix: str, width: int = 4) -> str:
    """A deterministic new ID: a per-kind counter stored in the state under `_counters`, moved
    past every id the state already holds (as a key anywhere in it), so that a created record
    never overwrites a seeded one (a db.json with `R0001` and no counter: the first refund is
    `R0002`). `trajbench validate` checks every domain for this (bench/runs/validate.py)."""
    counters = db.setdefault("_counters", {})
    while True:
        counters[kind] = counters.get(kind, 0) + 1
        candidate = f"{prefix}{counters[kind]:0{width}d}"
        if not _holds_key({k: v for k, v in db.items() if k != "_counters"}, candidate):
            return candidate


def _holds_key(value: Any, key: str) -> bool:
    """Is `key` a key of some object nested in `value`? (Iterative: states may nest deeply.)"""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if key in item:
                return True
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
    return False


@dataclass
class ToolOutcome:
    """The result of one tool execution in a `World`."""

    observation: Any
    error: str | None
    read_only: bool
    state_hash: str


class World:
    """One episode's live state and the tools over it. `execute` never raises for anything the
    agent did wrong: unknown tools and invalid arguments become error observations."""

    def __init__(self, tools: Toolset, state: dict[str, Any]):
        self.tools = tools
        self.state = state
        self.state_hash = state_hash(state)

    @classmethod
    def fresh(cls, tools: Toolset, initial_state: dict[str, Any]) -> "World":
        return cls(tools, orjson.loads(orjson.dumps(initial_state)))

    def execute(self, name: str, args: Any) -> ToolOutcome:
        tool = self.tools.get(name)
        if tool is None:
            return self._error(f"unknown tool {name!r}; available tools: {', '.join(self.tools.names())}")
        if not isinstance(args, dict):
            return self._error(f"arguments to {name} must be a JSON object, got {type(args).__name__}")
        # Fast path: the compiled check; the reference validator runs only to explain a rejection
        # (and has the last word if the two ever disagree).
        problem = None if tool.accepts(args) else jsonschema.exceptions.best_match(tool.validator.iter_errors(args))
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path) or "(arguments)"
            return self._error(f"invalid arguments to {name}: {where}: {problem.message}")
        error: str | None
        try:
            observation = tool.func(self.state, **args)
        except ToolError as exc:
            observation, error = None, str(exc)
        except (Exception, SystemExit, GeneratorExit, KeyboardInterrupt) as exc:
            if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                raise  # on the main thread this may be a real Ctrl-C
            raise DomainBug(f"tool {name} crashed: {type(exc).__name__}: {exc}") from exc
        else:
            error = None
            observation = _jsonable(observation, f"tool {name} returned a value that is not JSON")
        if not tool.read_only:
            try:
                self.state_hash = state_hash(self.state)
            except TypeError as exc:
                raise DomainBug(f"tool {name} left a state that is not JSON: {exc}") from None
        return ToolOutcome(observation, error, tool.read_only, self.state_hash)

    def _error(self, message: str) -> ToolOutcome:
        return ToolOutcome(None, message, True, self.state_hash)

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.state)


def _jsonable(value: Any, what: str) -> Any:
    """Tools must return JSON; the copy also detaches the observation from the live state, so
    later mutations cannot rewrite what the agent was shown. A set, bytes or an object is a
    domain bug (a replay could not reproduce it); NaN becomes null, and lone surrogates and big
    integers are kept exactly (`bench.canonical.json_copy`)."""
    try:
        return json_copy(value)
    except TypeError as exc:
        raise DomainBug(f"{what}: {exc}") from None
