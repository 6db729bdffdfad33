"""The tool schemas a model is sent, rewritten for servers that cannot take them as they are: one
implementation for the framework adapters (`bench.adapters.frameworks`, the options
`string_max_length` and `llama_cpp_patterns`) and for agents in their own process
(`agents/mcp_chat_agent.py`, `--string-max-length N` and `--llama-cpp-patterns`).

It imports nothing but the standard library, so an agent importing it pulls in nothing of
trajbench but this file (`bench/__init__.py` loads its names lazily): a roster agent runs under
trajbench's interpreter (`{python}`), and an agent outside trajbench can copy the file alone.

- `bound_strings`: a `maxLength` on every string node that has no length bound, `enum` or
  `const`. llama-cpp-python's native tool calls generate the arguments under a grammar from the
  schema with no `max_tokens`, so an argument string the model never closes runs to the end of
  the context — minutes on a CPU, with the one-slot server held; a `maxLength` bounds it in the
  grammar.
- `grammar_safe_patterns`: each `pattern` rewritten into the regex subset that llama-cpp-python's
  schema-to-grammar translation turns into a grammar its parser takes, or dropped when it has no
  such form. The translation copies regex escapes into the grammar as they are, and the grammar
  parser knows only \\x \\u \\t \\n \\r \\\\ \\" \\[ \\]: calendar's `^EV\\d{4}$` gives "unknown escape"
  and the server process exits, taking every later trial with it. `\\d` `\\w` `\\s` become classes
  (`[0-9]` ...), an escaped punctuation mark a one-character class, `(?:` a group, so the
  constraint stays; a pattern with anchors or escapes it cannot express (`\\b`, a back reference, a
  lookahead, an unanchored pattern) goes, and the domain still checks the argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def rewrite_schema(schema: Any, string_max_length: int | None, llama_cpp_patterns: bool) -> Any:
    """A tool's parameter schema as sent to the model: strings bounded (when a length is given),
    then patterns made grammar-safe (when asked); a copy, or the schema itself when nothing is
    asked."""
    if string_max_length:
        schema = bound_strings(schema, string_max_length)
    return grammar_safe_patterns(schema) if llama_cpp_patterns else schema


def map_schema(schema: Any, node: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """The JSON schema with `node` applied to each schema object (a copy: the input is not
    changed), through every place a schema nests subschemas."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            out[key] = {name: map_schema(sub, node) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties", "contains", "not", "if", "then", "else"):
        if isinstance(schema.get(key), dict):
            out[key] = map_schema(schema[key], node)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(schema.get(key), list):
            out[key] = [map_schema(sub, node) for sub in schema[key]]
    return node(out)


def bound_strings(schema: Any, max_length: int) -> Any:
    """The JSON schema with `maxLength` on each string node that has no length bound, enum or
    const."""
    def bound(node: dict[str, Any]) -> dict[str, Any]:
        types = node.get("type")
        if (types == "string" or (isinstance(types, list) and "string" in types)) \
                and not {"maxLength", "enum", "const"} & node.keys():
            node["maxLength"] = max_length
        return node
    return map_schema(schema, bound)


def grammar_safe_patterns(schema: Any) -> Any:
    """The JSON schema with each string `pattern` rewritten by `grammar_safe_pattern`, or
    removed when that has no form for it."""
    def rewrite(node: dict[str, Any]) -> dict[str, Any]:
        if isinstance(node.get("pattern"), str):
            safe = grammar_safe_pattern(node["pattern"])
            if safe is None:
                del node["pattern"]
            else:
                node["pattern"] = safe
        return node
    return map_schema(schema, rewrite)


CLASS_ESCAPES = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\r"}  # \\f \\v: no grammar escape
GRAMMAR_ESCAPES = set("tnr\\[]")  # kept as they are (the parser's own escapes)
REGEX_OPERATORS = set("()|{}*+?")  # escaped outside a class: the translation unescapes them


def grammar_safe_pattern(pattern: str) -> str | None:
    """`pattern` in the regex subset whose llama-cpp-python translation parses as a grammar (see the
    module doc), matching the same strings; None when there is none.
    The translation wants `^...$`; it copies `\\X` into the grammar."""
    if len(pattern) < 2 or not pattern.startswith("^") or not pattern.endswith("$") or pattern.endswith("\\$"):
        return None
    body, out, i, in_class = pattern[1:-1], [], 0, False
    while i < len(body):
        c = body[i]
        if c == "\\":
            piece = _escape(body, i, in_class)
            if piece is None:
                return None
            out.append(piece[0])
            i = piece[1]
            continue
        if in_class:
            in_class = c != "]"  # the translation ends a class at its first bare "]"
        elif c == "[":
            if body.startswith(("[]", "[^]"), i):
                return None
            in_class = True
        elif c in "^$":
            return None  # an anchor inside: no grammar form
        elif body.startswith("(?", i):
            if not body.startswith("(?:", i):
                return None  # lookaround, named group, flags
            out.append("(")
            i += 3
            continue
        out.append(c)
        i += 1
    return None if in_class else "^" + "".join(out) + "$"


def _escape(body: str, i: int, in_class: bool) -> tuple[str, int] | None:
    """The grammar-safe form of the escape at `body[i]` and the index after it, or None."""
    if i + 1 >= len(body):
        return None
    e = body[i + 1]
    if e in ("x", "u"):
        width = 2 if e == "x" else 4
        digits = body[i + 2:i + 2 + width]
        ok = len(digits) == width and all(d in "0123456789abcdefABCDEF" for d in digits)
        return ("\\" + e + digits, i + 2 + width) if ok else None
    if e in GRAMMAR_ESCAPES or (e in REGEX_OPERATORS and not in_class):
        return "\\" + e, i + 2
    if e in CLASS_ESCAPES:
        return (CLASS_ESCAPES[e] if in_class else f"[{CLASS_ESCAPES[e]}]"), i + 2
    if e.lower() in CLASS_ESCAPES and not in_class:
        return f"[^{CLASS_ESCAPES[e.lower()]}]", i + 2
    if e.isalnum() or e.isspace() or e == "^" or (in_class and e == "-"):
        return None  # \\b, \\1, \\p, \\D inside a class, a caret, a hyphen that would make a range
    return (e if in_class else f"[{e}]"), i + 2
