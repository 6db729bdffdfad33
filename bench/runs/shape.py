"""The shape of run.json that every reader relies on, checked once where the manifest is read.

`read_manifest` requires the four fields that make a directory a run; this module checks the
type of every field a reader uses (report, diff, view, verify, export, leaderboard), so that a
manifest holding `"k": null`, `"agent": 1` or `"overlay": "nope.toml"` is one clear error
naming the field (exit 2), not a crash deep inside a reader. Only types are checked, and only of
the fields present: older and imported runs leave some out, or null (bench/schemas/run.schema.json).
"""

from __future__ import annotations

from typing import Any, Callable

_Check = tuple[Callable[[Any], bool], str]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


FIELDS: dict[str, _Check] = {
    "run_id": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "harness_version": (_opt(lambda v: isinstance(v, str)), "a string"),
    "created_at": (_opt(lambda v: isinstance(v, str)), "a string"),
    "k": (lambda v: _int(v) and v >= 1, "a whole number ≥ 1"),
    "tasks": (_str_list, "a list of task ids (strings)"),
    "suite": (lambda v: isinstance(v, dict) and "name" in v and "hash" in v, "an object with name, hash and path"),
    "suite.name": (_opt(lambda v: isinstance(v, str)), "a string"),
    "suite.hash": (_opt(lambda v: isinstance(v, str)), "a string"),
    "suite.path": (_opt(lambda v: isinstance(v, str)), "a string or null"),
    "agent": (lambda v: isinstance(v, dict), "an object (name, adapter, options, ...)"),
    "agent.name": (lambda v: isinstance(v, str), "a string"),
    "agent.adapter": (_opt(lambda v: isinstance(v, str)), "a string"),
    "agent.options": (_opt(lambda v: isinstance(v, dict)), "an object"),
    "base_seed": (_opt(_int), "a whole number or null"),
    "max_steps": (_opt(_int), "a whole number or null"),
    "timeout_s": (_opt(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)), "a number or null"),
    "perturbations": (lambda v: isinstance(v, list) and all(isinstance(p, dict) for p in v), "a list of objects"),
    "overlay": (_opt(lambda v: isinstance(v, dict)), "an object (as `trajbench run --overlay` records it) or null"),
    "tool_schema_hashes": (_opt(lambda v: isinstance(v, dict)), "an object"),
    "host": (_opt(lambda v: isinstance(v, dict)), "an object"),
    "source": (_opt(lambda v: isinstance(v, dict)), "an object"),
}


def manifest_problem(manifest: dict[str, Any]) -> tuple[str, str] | None:
    """(field, what was expected) for the first field of the wrong type, or None."""
    for name, (ok, expected) in FIELDS.items():
        head, _, member = name.partition(".")
        holder = manifest.get(head) if member else manifest
        key = member or head
        if not isinstance(holder, dict) or key not in holder:
            continue
        if not ok(holder[key]):
            shown = repr(holder[key])
            return name, f"must be {expected}, not {shown if len(shown) <= 60 else shown[:57] + '...'}"
    return None
