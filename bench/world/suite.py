"""Suites: a folder with a domain (tools, initial state, policy) and its tasks.

Layout of a suite folder (names configurable in suite.toml)::

    suite.toml    name, description, and optionally the file names below
    domain.py     defines `tools`, a bench.world.tools.Toolset
    db.json       the initial state (a JSON object)
    policy.md     the policy text given to the agent (its system prompt)
    tasks/        task files (*.json: one task object or a list of them)

A suite's content hash covers every file that can change a score (all files in the folder but
README.md and caches), and so changes whenever tasks, state, domain code or tool schemas do.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.canonical import canonical_json, digest
from bench.errors import BenchError
from bench.world.task import Problem, Task, merge_patch, read_task_files
from bench.world.tools import DomainBug, Toolset, World

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ASK_USER_SPEC: dict[str, Any] = {
    "name": "ask_user",
    "description": "Ask the user a question (for a fact you need that the request did not give). Returns the user's reply.",
    "parameters": {
        "type": "object",
        "properties": {"question": {"type": "string", "description": "The question to the user."}},
        "required": ["question"],
        "additionalProperties": False,
    },
    "read_only": True,
}

_IGNORED_NAMES = {"README.md", "__pycache__", ".DS_Store"}


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    policy: str
    initial_state: dict[str, Any]
    tools: Toolset
    tasks: list[Task]
    content_hash: str
    problems: list[Problem] = field(default_factory=list)
    _expected: dict[str, tuple[dict[str, Any], list[str]]] = field(default_factory=dict, repr=False)

    def task(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise BenchError(f"suite {self.name} has no task {task_id!r}", field="--tasks")

    def select(self, ids: list[str] | None) -> list[Task]:
        return list(self.tasks) if not ids else [self.task(i) for i in ids]

    def initial_state_for(self, task: Task) -> dict[str, Any]:
        state = orjson.loads(orjson.dumps(self.initial_state))
        return merge_patch(state, task.initial_state_patch) if task.initial_state_patch else state

    def new_world(self, task: Task) -> World:
        return World(self.tools, self.initial_state_for(task))

    def tool_specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self.tools] + [ASK_USER_SPEC]

    def tool_schema_hashes(self) -> dict[str, str]:
        return {spec["name"]: digest(canonical_json(spec)) for spec in self.tool_specs()}

    def expected_state(self, task: Task) -> tuple[dict[str, Any], list[str]]:
        """The initial state after replaying the reference actions, and any reference step that
        failed (a task whose reference fails is invalid; `validate` reports it)."""
        if task.id not in self._expected:
            world = self.new_world(task)
            errors = []
            for i, action in enumerate(task.reference_actions):
                if action.tool == "ask_user":
                    continue
                try:
                    outcome = world.execute(action.tool, action.args)
                except DomainBug as exc:  # the domain's code failed on this task's data: name the step
                    errors.append(f"reference_actions.{i} ({action.tool}): {exc}")
                    break
                if outcome.error is not None:
                    errors.append(f"reference_actions.{i} ({action.tool}): {outcome.error}")
            self._expected[task.id] = (world.state, errors)
        return self._expected[task.id]


def builtin_roots() -> list[Path]:
    """Where built-in suites live: inside the installed package, or the source checkout's tasks/."""
    package = Path(__file__).resolve().parent.parent  # bench/
    return [p for p in (package / "_suites", package.parent / "tasks") if p.is_dir()]


def builtin_suites() -> list[str]:
    names: set[str] = set()
    for root in builtin_roots():
        names.update(p.name for p in root.iterdir() if (p / "suite.toml").is_file())
    return sorted(names)


def resolve_suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "suite.toml").is_file():
            raise BenchError("this folder is not a suite: it has no suite.toml", file=str(path))
        return path
    for root in builtin_roots():
        if (root / name_or_path / "suite.toml").is_file():
            return root / name_or_path
    known = ", ".join(builtin_suites()) or "none"
    raise BenchError(f"no suite {name_or_path!r}: not a folder, and not a built-in suite (built-in: {known})", field="SUITE")


def content_hash(folder: Path) -> str:
    parts = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not (set(rel.parts) & _IGNORED_NAMES) and path.suffix != ".pyc":
            parts.append(rel.as_posix().encode() + b"\0" + path.read_bytes())
    return digest(b"\1".join(parts))


def _read_manifest(folder: Path) -> dict[str, Any]:
    manifest = folder / "suite.toml"
    try:
        return tomllib.loads(manifest.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"not valid TOML: {exc}", file=str(manifest)) from None


def _load_tools(folder: Path, filename: str, suite_name: str, digest_: str) -> Toolset:
    path = folder / filename
    if not path.is_file():
        raise BenchError("the domain module is missing", file=str(path))
    if path.suffix != ".py":
        raise BenchError("the domain module must be a Python file (.py)", file=str(folder / "suite.toml"), field="domain")
    module_name = f"bench_suite_{suite_name}_{digest_[:8]}".replace("-", "_")
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user's domain code: report, don't crash
            raise BenchError(f"the domain module failed to import: {type(exc).__name__}: {exc}", file=str(path)) from None
        sys.modules[module_name] = module
    tools = getattr(module, "tools", None)
    if not isinstance(tools, Toolset):
        raise BenchError("the domain module must define `tools`, a bench.world.tools.Toolset", file=str(path), field="tools")
    if "ask_user" in tools:
        raise BenchError("`ask_user` is provided by the harness; a domain must not define it", file=str(path))
    return tools


def _task_paths(folder: Path, entry: str) -> list[Path]:
    target = folder / entry
    if target.is_dir():
        return sorted(target.glob("*.json"))
    if target.is_file():
        return [target]
    raise BenchError("the suite has no tasks file or folder", file=str(target))


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a suite. Task-file problems are collected in `Suite.problems` (see `require_valid`)."""
    folder = resolve_suite_path(str(name_or_path))
    meta = _read_manifest(folder)
    for key in ("name", "description", "domain", "initial_state", "policy", "tasks"):
        if key in meta and not (isinstance(meta[key], str) and (meta[key] or key == "description")):
            raise BenchError(f"must be a non-empty string (a {'file name' if key not in ('name', 'description') else 'text'}), "
                             f"not {meta[key]!r}", file=str(folder / "suite.toml"), field=key)
    name = str(meta.get("name", folder.name))
    hash_ = content_hash(folder)
    state_file = folder / meta.get("initial_state", "db.json")
    try:
        initial_state = orjson.loads(state_file.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BenchError(f"the initial state cannot be read as JSON: {exc}", file=str(state_file)) from None
    if not isinstance(initial_state, dict):
        raise BenchError("the initial state must be a JSON object", file=str(state_file))
    policy_file = folder / meta.get("policy", "policy.md")
    policy = policy_file.read_text() if policy_file.is_file() else ""
    tools = _load_tools(folder, meta.get("domain", "domain.py"), name, hash_)
    tasks, problems = read_task_files(_task_paths(folder, meta.get("tasks", "tasks")))
    return Suite(name, folder, str(meta.get("description", "")), policy, initial_state, tools, tasks, hash_, problems)


def require_valid(suite: Suite) -> Suite:
    """Refuse to run a suite with schema problems or a reference that does not replay."""
    problems = [str(p) for p in suite.problems]
    for task in suite.tasks:
        problems += [f"{task.source}, task {task.id}: field {err}" for err in suite.expected_state(task)[1]]
    if problems:
        listing = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise BenchError(f"suite {suite.name} has invalid tasks (run `trajbench validate` for all):\n  {listing}{more}")
    return suite
