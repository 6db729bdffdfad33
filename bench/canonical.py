"""Canonical JSON and content hashes: the identity of arguments, states and suites."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson

_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _normalise(value: Any) -> Any:
    """Make equal values serialise equally: 2.0 and 2 are the same argument, and so are
    lists and tuples."""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, str):
        return " ".join(value.split()) if value != value.strip() or "  " in value else value
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, integral floats as ints, outer/double whitespace in strings
    folded: two argument dicts that mean the same thing give the same string."""
    return orjson.dumps(_normalise(value), option=_OPTS).decode()


def state_hash(state: Any) -> str:
    """Hash of a JSON state. States are plain JSON from the domain: no normalisation needed,
    sorted keys suffice (and keep this fast: it runs after every write step)."""
    return hashlib.blake2b(orjson.dumps(state, option=_OPTS), digest_size=12).hexdigest()


def digest(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from its parts, stable across processes and Python versions."""
    raw = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big") >> 1


def step_key(tool: str, args: Any) -> str:
    """A step's identity for comparing trajectories: the tool and its canonical arguments."""
    return f"{tool}({canonical_json(args)})"
