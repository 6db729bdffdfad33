"""Short labels for sibling nodes of the viewer's trial tree.

Siblings usually call the same tool and differ in one argument value (a reservation id, a
quantity), so a truncated prefix of the call (``get_reservation_detai…``) reads the same on
every branch. A sibling's label instead keeps the tool name and only the argument values that
differ among the siblings, e.g. ``get_reservation_details(reservation_id=4NQLHD)`` against
``…(reservation_id=KHIK97)``. Keys are ``tool(canonical JSON)`` as built by
``bench.canonical.step_key``.
"""

from __future__ import annotations

from typing import Any

import orjson

WIDTH = 42  # characters of a label in the tree drawing (11px text: ~255px, under view.X_STEP)


def _parse(key: str) -> tuple[str, Any]:
    """(tool, arguments) of a step key; arguments None when the key is not a tool call."""
    tool, sep, rest = key.partition("(")
    if not sep or not rest.endswith(")"):
        return key, None
    try:
        return tool, orjson.loads(rest[:-1])
    except orjson.JSONDecodeError:
        return key, None


def _value(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _call(tool: str, shown: str, width: int) -> str:
    """``tool(shown)`` in `width` characters, clipping the tool name before the values."""
    room = width - len(shown) - 2
    if room >= len(tool):
        return f"{tool}({shown})"
    if room >= 4:
        return f"{_clip(tool, room)}({shown})"
    return f"…({_clip(shown, width - 3)})"


def sibling_labels(keys: list[str], width: int = WIDTH) -> list[str]:
    """One label per key: the tool and the arguments whose values differ among same-tool siblings.

    A tool called by one sibling only is told apart by its name, so it shows ``tool(…)``; when
    same-tool siblings' arguments are not all objects, the whole argument value is shown. Too long
    a label loses the end of the tool name first, the values last.
    """
    parsed = [_parse(k) for k in keys]
    by_tool: dict[str, list[Any]] = {}
    for tool, args in parsed:
        by_tool.setdefault(tool, []).append(args)
    out = []
    for key, (tool, args) in zip(keys, parsed):
        others = by_tool[tool]
        if args is None:
            out.append(_clip(key, width))
        elif len(others) == 1:
            out.append(_clip(tool + ("()" if args in ({}, [], None) else "(…)"), width))
        elif isinstance(args, dict) and all(isinstance(o, dict) for o in others):
            names = sorted({n for o in others for n in o if any(o.get(n) != p.get(n) for p in others)})
            shown = ", ".join(f"{n}={_value(args[n])}" for n in names if n in args) or "no " + "/".join(names)
            out.append(_call(tool, shown, width))
        else:
            out.append(_call(tool, _value(args), width))
    return out
