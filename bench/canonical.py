"""Canonical JSON and content hashes: the identity of arguments, states and suites; and the one
JSON rule for values that orjson refuses (docs/run-directory.md, "Every log write succeeds"):

- strings that are not valid Unicode (lone surrogates, e.g. from a model's broken output) and
  integers beyond 64 bits are kept exactly: such a value is written by Python's `json` module
  with ASCII `\\uXXXX` escapes and read back by it (`dump_line` / `load_line`);
- NaN and ±Infinity become `null` (JSON has no such numbers);
- non-JSON types in a record become JSON by `to_json_default` (a set: its sorted elements; bytes:
  their UTF-8 text, other bytes as `\\xNN`; anything else: its `repr`). A tool *returning* one
  is a domain bug instead (`bench.world.tools`).
"""

from __future__ import annotations

import hashlib
import json
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
    return _sorted_dumps(_normalise(value)).decode()


def state_hash(state: Any) -> str:
    """Hash of a JSON state. States are plain JSON from the domain: no normalisation needed,
    sorted keys suffice (and keep this fast: it runs after every write step). Raises TypeError
    for a value that is not JSON (a set in the state: a domain bug)."""
    return hashlib.blake2b(_sorted_dumps(state), digest_size=12).hexdigest()


def _sorted_dumps(value: Any) -> bytes:
    """orjson with sorted keys; Python's json (ASCII escapes) for the strings and integers orjson
    refuses. Deterministic: which of the two runs depends on the value alone."""
    try:
        return orjson.dumps(value, option=_OPTS)
    except orjson.JSONEncodeError as exc:
        if _NOT_JSON in str(exc):
            raise
        return _py_dumps(value, sort_keys=True).encode()


_NOT_JSON = "not JSON serializable"  # orjson's message for a type it has no JSON form for
_LINE_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def to_json_default(value: Any) -> Any:
    """The JSON form of a non-JSON value in a log record (the module docstring's rule)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=lambda v: _py_dumps(v, sort_keys=True))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - an agent's object whose __repr__ is broken still gets logged
        return f"<unrepresentable {type(value).__name__}>"


def _finite(value: Any) -> Any:
    """NaN and ±Infinity as null, sets and other non-JSON values by `to_json_default`, dict keys
    as strings: what orjson does, for Python's json module."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _py_dumps(k).strip('"'): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if value is None or isinstance(value, (str, int)):
        return value
    return _finite(to_json_default(value))


def _py_dumps(value: Any, *, sort_keys: bool = False) -> str:
    return json.dumps(_finite(value), ensure_ascii=True, sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)


def dump_line(record: Any) -> bytes:
    """One log line (with its newline); never fails for a record of JSON-like values. A line
    orjson cannot write (lone surrogates, integers beyond 64 bits) is written by Python's json
    with ASCII escapes and starts with a space, so `load_line` knows to read it back the same way
    (orjson would read a big integer as a float). Nesting too deep for both: the record's
    offending fields become `{"unencodable": TYPE}` (documented as lossy)."""
    try:
        return orjson.dumps(record, default=to_json_default, option=_LINE_OPTS) + b"\n"
    except orjson.JSONEncodeError:
        pass
    try:
        return b" " + _py_dumps(record).encode() + b"\n"
    except (RecursionError, ValueError):
        if not isinstance(record, dict):
            return dump_line({"unencodable": type(record).__name__})
        return dump_line({k: v if _encodable(v) else {"unencodable": type(v).__name__} for k, v in record.items()})


def _encodable(value: Any) -> bool:
    try:
        _py_dumps(value)
    except (RecursionError, ValueError):
        return False
    return True


def load_line(line: bytes) -> Any:
    """Read one `dump_line` line back exactly (raises ValueError when it is not JSON)."""
    if line[:1] == b" ":
        return json.loads(line)
    return orjson.loads(line)


def json_copy(value: Any) -> Any:
    """A detached JSON copy of a value (lossless for lone surrogates and big integers; NaN as
    null). Raises TypeError for a type with no JSON form (a set, bytes, an object)."""
    try:
        return orjson.loads(orjson.dumps(value))
    except orjson.JSONEncodeError as exc:
        if _NOT_JSON in str(exc) or "Dict key must be str" in str(exc):
            raise TypeError(str(exc)) from None
        if "Recursion limit" in str(exc):
            raise TypeError("nested too deep (more than 254 levels)") from None
    return json.loads(json.dumps(_finite(value), ensure_ascii=True, allow_nan=False))


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


def dump_document(value: Any) -> bytes:
    """A JSON document (run.json): indented, sorted keys; orjson, else Python's json with ASCII
    escapes for what orjson refuses (a suite folder whose name is not UTF-8, a lone surrogate in
    an agent option). `load_document` reads either back exactly."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(_finite(value), indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False).encode()


def load_document(data: bytes) -> Any:
    """Read a `dump_document` document (raises ValueError when it is not JSON)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # lone-surrogate escapes, which orjson refuses; else the same error


def sorted_digest_bytes(value: Any) -> bytes:
    """Sorted-key JSON bytes for hashing, deterministic for every value `dump_document` writes."""
    return _sorted_dumps(value)
