"""Agent-spec options, checked the same way by every adapter.

An adapter declares its options as a table of `OptionSpec`s (kind, default, bounds, choices);
`parse_options` checks a spec's options against it — unknown names, wrong types and
out-of-range values are a BenchError naming the spec file and the field — and fills in the
defaults. The LLM adapters also take the prompting `Scaffold` options (one-shot example,
argument enums, loop guard: `bench.adapters.prompting`), parsed here with the same rules.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any

from bench.errors import BenchError

DEFAULT_FREE_TEXT = (
    # prose
    "question", "summary", "answer", "reason", "message", "note", "notes", "comment", "text", "description",
    "explanation", "expression", "body", "content", "title", "query", "details", "agenda", "subject",
    # values a model composes rather than copies (a new time, a date said in words)
    "start", "end", "time", "date", "datetime", "due", "deadline", "until", "since",
)


@dataclass(frozen=True)
class Scaffold:
    """Prompt and decoding scaffolds; each field is an agent-spec option of the same name."""

    one_shot: bool = True
    enum_args: bool = True
    free_text_args: tuple[str, ...] = DEFAULT_FREE_TEXT
    max_text_chars: int = 200
    max_observation_chars: int = 2000
    max_repeats: int = 1
    max_invalid: int = 3
    max_enum_values: int = 300
    example: str | None = None  # replaces the built-in one-shot example (text)

    @classmethod
    def option_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_options(cls, options: dict[str, Any], source: str) -> "Scaffold":
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in options:
                continue
            value = options[f.name]
            if f.name == "free_text_args":
                if isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                    raise BenchError("free_text_args must be a list of argument names", file=source, field="options.free_text_args")
                value = tuple(value)
            elif f.name == "example":
                if value is not None and not isinstance(value, str):
                    raise BenchError("example must be a text", file=source, field="options.example")
            elif f.type in ("bool", bool):
                value = as_bool(value, source, f"options.{f.name}")
            else:
                value = as_int(value, source, f"options.{f.name}", minimum=0)
            values[f.name] = value
        return cls(**values)


def as_bool(value: Any, source: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise BenchError(f"expected true or false, got {value!r}", file=source, field=where)


def as_int(value: Any, source: str, where: str, minimum: int | None = None) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        out = int(value)
    except (TypeError, ValueError):
        raise BenchError(f"expected a whole number, got {value!r}", file=source, field=where) from None
    if minimum is not None and out < minimum:
        raise BenchError(f"expected a number ≥ {minimum}, got {out}", file=source, field=where)
    return out


def as_float(value: Any, source: str, where: str, minimum: float | None = None, maximum: float | None = None) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        out = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"expected a number, got {value!r}", file=source, field=where) from None
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise BenchError(f"expected a number in [{minimum}, {maximum}], got {out}", file=source, field=where)
    return out


@dataclass(frozen=True)
class OptionSpec:
    """One adapter option: its kind ('str', 'int', 'float', 'bool', 'dict', 'any'), default, bounds."""

    kind: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None


def parse_options(options: dict[str, Any], known: dict[str, OptionSpec], source: str,
                  adapter: str, scaffold: bool = False) -> tuple[dict[str, Any], Scaffold | None]:
    """Validate an adapter's options: unknown names, wrong types and out-of-range values get a
    BenchError naming the file and the field. Returns (options with defaults, scaffold)."""
    allowed = set(known) | (Scaffold.option_names() if scaffold else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise BenchError(f"unknown {adapter} option(s) {unknown}; allowed: {sorted(allowed)}", file=source, field="options")
    out: dict[str, Any] = {}
    for name, spec in known.items():
        where = f"options.{name}"
        if name not in options or options[name] is None:
            out[name] = copy.deepcopy(spec.default)
            continue
        value = options[name]
        if spec.kind == "int":
            value = as_int(value, source, where, None if spec.minimum is None else int(spec.minimum))
        elif spec.kind == "float":
            value = as_float(value, source, where, spec.minimum, spec.maximum)
        elif spec.kind == "bool":
            value = as_bool(value, source, where)
        elif spec.kind == "str":
            if not isinstance(value, str):
                raise BenchError(f"expected a text, got {value!r}", file=source, field=where)
            if spec.choices is not None and value not in spec.choices:
                raise BenchError(f"expected one of {list(spec.choices)}, got {value!r}", file=source, field=where)
        elif spec.kind == "dict":
            if not isinstance(value, dict):
                raise BenchError(f"expected a table, got {value!r}", file=source, field=where)
        out[name] = value
    return out, (Scaffold.from_options(options, source) if scaffold else None)
