"""Tasks: loading, schema validation with clear errors, and the typed view the harness uses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import orjson


@dataclass(frozen=True)
class Action:
    tool: str
    args: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "args": self.args}


@dataclass(frozen=True)
class Task:
    id: str
    instruction: str
    reference_actions: tuple[Action, ...]
    user_facts: dict[str, Any] = field(default_factory=dict)
    initial_state_patch: dict[str, Any] | None = None
    reference_answer: str | None = None
    state_check: Any = "all"
    assertions: tuple[dict[str, Any], ...] = ()
    required_outputs: tuple[Any, ...] = ()
    forbidden: tuple[dict[str, Any], ...] = ()
    milestones: tuple[dict[str, Any], ...] = ()
    noop_passes: bool = False
    tags: tuple[str, ...] = ()
    template: str | None = None
    source: str = ""

    @property
    def answer_for_reference(self) -> str:
        """What the reference agent answers: the stated reference answer, else every required
        output (the first alternative of each)."""
        if self.reference_answer is not None:
            return self.reference_answer
        parts = [o if isinstance(o, str) else o["any_of"][0] for o in self.required_outputs]
        return "; ".join(parts)


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("bench.schemas").joinpath(name).read_text())


@lru_cache(maxsize=None)
def _task_validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(load_schema("task.schema.json"))


def schema_problems(raw: Any) -> list[str]:
    """Every schema violation of one task, each as 'field: what was expected'."""
    problems = []
    for err in sorted(_task_validator().iter_errors(raw), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(task)"
        problems.append(f"{where}: {_short(err)}")
    return problems


def _short(err: jsonschema.ValidationError) -> str:
    if err.validator == "oneOf" and err.context:
        best = jsonschema.exceptions.best_match(err.context)
        return best.message if best is not None else err.message
    return err.message


def task_from_dict(raw: dict[str, Any], source: str) -> Task:
    """Build a Task from a dict that already passed the schema."""
    return Task(
        id=raw["id"],
        instruction=raw["instruction"],
        reference_actions=tuple(Action(a["tool"], a.get("args", {})) for a in raw["reference_actions"]),
        user_facts=dict(raw.get("user_facts", {})),
        initial_state_patch=raw.get("initial_state_patch"),
        reference_answer=raw.get("reference_answer"),
        state_check=raw.get("state_check", "all"),
        assertions=tuple(raw.get("assertions", ())),
        required_outputs=tuple(raw.get("required_outputs", ())),
        forbidden=tuple(raw.get("forbidden", ())),
        milestones=tuple(raw.get("milestones", ())),
        noop_passes=bool(raw.get("noop_passes", False)),
        tags=tuple(raw.get("tags", ())),
        template=raw.get("template"),
        source=source,
    )


@dataclass
class Problem:
    """A problem with a task: which file, which task, what is wrong."""

    file: str
    task_id: str | None
    message: str

    def __str__(self) -> str:
        task = f", task {self.task_id}" if self.task_id else ""
        return f"{self.file}{task}: {self.message}"


MAX_NESTING = 100  # far above any real task; deep enough input would exhaust the recursion of every reader


def _nesting(value: Any) -> int:
    """How deeply a JSON value nests (iteratively: the point is to survive absurd input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_NESTING:
                return depth
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_task_files(paths: list[Path]) -> tuple[list[Task], list[Problem]]:
    """Read tasks from JSON files (each holds one task object or a list of them). Returns the
    valid tasks and every problem found, so that `validate` can list them all at once."""
    tasks: list[Task] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            problems.append(Problem(str(path), None, f"not valid JSON: {exc}"))
            continue
        except OSError as exc:
            problems.append(Problem(str(path), None, f"cannot be read: {exc.strerror}"))
            continue
        items = data if isinstance(data, list) else [data]
        for index, raw in enumerate(items):
            task_id = raw.get("id") if isinstance(raw, dict) else None
            label = task_id if isinstance(task_id, str) else f"#{index}"
            deep = _nesting(raw) > MAX_NESTING
            issues = [f"(task): nested more than {MAX_NESTING} levels deep; a task is a handful of levels"] if deep else schema_problems(raw)
            if issues:
                problems.extend(Problem(str(path), label, f"field {p}") for p in issues)
                continue
            if task_id in seen:
                problems.append(Problem(str(path), label, f"field id: duplicate task id (also in {seen[task_id]})"))
                continue
            seen[str(task_id)] = str(path)
            tasks.append(task_from_dict(raw, str(path)))
    return tasks, problems


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (returns a new value; null deletes a key)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
