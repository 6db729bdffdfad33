"""Goal checks on the end state (and on the logged actions, for `forbidden` and milestones).

Every check is reported on its own, so a trial summary says *which* part of the goal failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

_MISSING = object()


def path_parts(path: str | list) -> list[str]:
    """A path is a dotted string ('orders.W1001.items.0') or, for keys that contain dots (an
    email as a key), a list of keys (["people", "ada@example.com", "zone"])."""
    return [str(p) for p in path] if isinstance(path, list) else path.split(".")


def path_label(path: str | list) -> str:
    return ".".join(path_parts(path))


def resolve(state: Any, path: str | list) -> Any:
    """Follow a path; returns _MISSING when it leads nowhere."""
    node = state
    for part in path_parts(path):
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            index = int(part)
            node = node[index] if -len(node) <= index < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def assertion_holds(state: Any, assertion: dict[str, Any]) -> bool:
    value = resolve(state, assertion["path"])
    op = assertion["op"]
    expected = assertion.get("value")
    if op == "exists":
        return value is not _MISSING
    if op == "absent":
        return value is _MISSING
    if op == "equals":
        return value is not _MISSING and value == expected
    if op == "not_equals":
        return value is _MISSING or value != expected
    if op in ("contains", "not_contains"):
        found = value is not _MISSING and _contains(value, expected)
        return found if op == "contains" else not found
    if op == "count":
        return value is not _MISSING and _count(value, assertion.get("where")) == expected
    raise ValueError(f"unknown assertion op {op!r}")


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item.lower() in container.lower()
    if isinstance(container, dict):
        try:
            if item in container:
                return True
        except TypeError:  # an unhashable value cannot be a key
            pass
        return item in container.values()
    if isinstance(container, list):
        return item in container
    return False


def _count(container: Any, where: dict[str, Any] | None) -> int:
    items = container.values() if isinstance(container, dict) else container
    if not isinstance(items, Iterable) or isinstance(items, str):
        return 0
    if not where:
        return len(list(items))
    return sum(1 for it in items if isinstance(it, dict) and all(it.get(k) == v for k, v in where.items()))


def _loose(value: Any) -> Any:
    """Argument values as a pattern compares them: case and outer/double whitespace of strings,
    and 2 vs 2.0, do not matter."""
    if isinstance(value, str):
        return " ".join(value.split()).lower()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_loose(v) for v in value]
    if isinstance(value, dict):
        return {k: _loose(v) for k, v in value.items()}
    return value


def action_matches(pattern: dict[str, Any], tool: str, args: dict[str, Any]) -> bool:
    if pattern["tool"] != tool:
        return False
    return all(k in args and _loose(args[k]) == _loose(v) for k, v in pattern.get("args", {}).items())


def scoped(state: dict[str, Any], state_check: Any) -> Any:
    """The part of a state that `state_check` says must match."""
    if state_check == "all":
        return state
    if state_check == "none":
        return None
    excludes = [path_parts(p) for p in state_check.get("exclude", ())]
    if "include" not in state_check:
        for parts in excludes:
            state = _without(state, parts)
        return state
    view = {}
    for include in state_check["include"]:
        head = path_parts(include)
        value = resolve(state, head)
        for parts in excludes:  # an exclude below an include trims the included value
            if len(parts) > len(head) and parts[:len(head)] == head:
                value = _without(value, parts[len(head):])
        view[path_label(include)] = value if value is not _MISSING else "<absent>"
    return view


def _without(state: Any, path: str | list) -> Any:
    """A copy of the state without the value at path (dict keys or list indexes)."""
    head, *rest = path_parts(path)
    if isinstance(state, list) and head.isdigit() and int(head) < len(state):
        index = int(head)
        return state[:index] + ([_without(state[index], rest)] if rest else []) + state[index + 1:]
    if not isinstance(state, dict) or head not in state:
        return state
    copy = dict(state)
    if rest:
        copy[head] = _without(state[head], rest)
    else:
        del copy[head]
    return copy


_NUMBER = re.compile(r"(?<![\d.])-?\d[\d,]*(?:\.\d+)?")


def _norm_text(text: str) -> str:
    return " ".join(text.lower().split())


def _numbers(text: str) -> set[float]:
    out = set()
    for match in _NUMBER.findall(text):
        try:
            out.add(round(float(match.replace(",", "")), 6))
        except ValueError:
            pass
    return out


def output_stated(answer: str, required: str) -> bool:
    """Is a required fact stated in the answer? Case and whitespace do not matter, and the fact
    must stand as whole words ("shipped" is not in "unshipped"). A fact that is a number
    ("$1,250.00") matches the same value however written ("1250") but never a part of a larger
    number ("5.50" is not in "25.50")."""
    stripped = required.strip().lstrip("$€£").rstrip("%").strip()
    if _NUMBER.fullmatch(stripped):
        return round(float(stripped.replace(",", "")), 6) in _numbers(answer)
    pattern = r"(?<![\w])" + re.escape(_norm_text(required)) + r"(?![\w])"
    return re.search(pattern, _norm_text(answer)) is not None


def required_output_met(answer: str, spec: Any) -> bool:
    options = [spec] if isinstance(spec, str) else spec["any_of"]
    return any(output_stated(answer, opt) for opt in options)


def label(spec: Any) -> str:
    return spec if isinstance(spec, str) else " | ".join(spec["any_of"])


@dataclass
class LoggedAction:
    """What the checks need to know of one tool step."""

    step: int
    tool: str
    args: dict[str, Any]
    error: str | None


class MilestoneTracker:
    """Records the step at which each milestone is first reached. State milestones are checked
    after steps that changed the state (and on the initial state); action milestones when a
    matching call succeeds."""

    def __init__(self, milestones: tuple[dict[str, Any], ...], initial_state: dict[str, Any]):
        self.milestones = milestones
        self.reached: dict[str, int | None] = {m["name"]: None for m in milestones}
        self._check_state(initial_state, 0)

    def observe(self, step: int, action: LoggedAction | None, state: dict[str, Any], state_changed: bool) -> None:
        for m in self.milestones:
            if self.reached[m["name"]] is not None:
                continue
            if "action" in m and action is not None and action.error is None:
                if action_matches(m["action"], action.tool, action.args):
                    self.reached[m["name"]] = step
        if state_changed:
            self._check_state(state, step)

    def _check_state(self, state: dict[str, Any], step: int) -> None:
        for m in self.milestones:
            if "state" in m and self.reached[m["name"]] is None and assertion_holds(state, m["state"]):
                self.reached[m["name"]] = step


def differing_paths(a: Any, b: Any, prefix: str = "", limit: int = 5) -> list[str]:
    """Up to `limit` dotted paths where two JSON values differ (for the state check's detail)."""
    out: list[str] = []
    _diff(a, b, prefix, out, limit)
    return out


def _diff(a: Any, b: Any, prefix: str, out: list[str], limit: int) -> None:
    if len(out) >= limit or a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _diff(a.get(key, _MISSING), b.get(key, _MISSING), f"{prefix}.{key}" if prefix else str(key), out, limit)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{prefix}.{i}" if prefix else str(i), out, limit)
    else:
        out.append(prefix or "(root)")


def evaluate(
    task: Any,
    end_state: dict[str, Any],
    expected_state: dict[str, Any],
    actions: list[LoggedAction],
    answer: str,
) -> dict[str, dict[str, Any]]:
    """Every goal check of a task on one trial's end state, actions and final answer.
    The trial succeeds when every check passes."""
    checks: dict[str, dict[str, Any]] = {}
    if task.state_check != "none":
        got, want = scoped(end_state, task.state_check), scoped(expected_state, task.state_check)
        same = got == want
        checks["state"] = {"passed": same, "detail": "" if same else "differs at " + ", ".join(differing_paths(got, want))}
    for i, assertion in enumerate(task.assertions):
        checks[f"assertion[{i}]"] = {
            "passed": assertion_holds(end_state, assertion),
            "detail": f"{path_label(assertion['path'])} {assertion['op']} {assertion.get('value', '')}".strip(),
        }
    for i, spec in enumerate(task.required_outputs):
        checks[f"output[{i}]"] = {"passed": required_output_met(answer or "", spec), "detail": label(spec)}
    for i, rule in enumerate(task.forbidden):
        if "action" in rule:
            hits = [a.step for a in actions if a.error is None and action_matches(rule["action"], a.tool, a.args)]
            violated, detail = bool(hits), f"forbidden call {rule['action']['tool']} at step {hits[0]}" if hits else ""
        else:
            violated, detail = assertion_holds(end_state, rule["state"]), f"forbidden state {path_label(rule['state']['path'])}"
        checks[f"forbidden[{i}]"] = {"passed": not violated, "detail": rule.get("reason", detail) if violated else ""}
    return checks
