"""Tool overlays: change what the agent is told about the tools — names, descriptions, argument
schemas, result formatting — without touching the suite's code (the tool-change A/B).

An overlay is a JSON or TOML file (bench/schemas/overlay.schema.json; docs/regression.md)::

    name = "order-number"
    suite = "retail"                                  # optional: refuse other suites

    [tools.cancel_pending_order]
    rename = "cancel_order"                           # the name the agent sees
    description = "Cancel a pending order ..."

    [tools.cancel_pending_order.arguments.order_id]
    rename = "order_number"                           # mapped back to the function's `order_id`
    description = "The order number, e.g. '#W1001'."
    schema = {pattern = "^#W\\\\d+$"}                  # JSON merge patch on the argument's schema

    [tools.get_order_details.result]
    fields = ["order_id", "status", "items"]          # keep only these keys
    template = "Order {order_id} is {status}."        # or: format = "text"

Applying one is a single call, ``suite = apply_overlay(suite, "my-overlay.toml")``: it returns a
new suite whose tools carry the overlay's names, descriptions and schemas (so the manifest's
``tool_schema_hashes`` change for exactly the changed tools) and call the same underlying
functions, with renamed arguments mapped back to the function's parameters and results
reformatted after the call. The suite's content hash stays the suite's own: the overlay is
recorded separately (``suite.overlay``, for the manifest's ``overlay`` field, with the full
spec so that the run directory alone can rebuild the overlaid tools).

Goal checks stay correct: the tasks' reference actions, forbidden-action patterns and action
milestones are translated to the overlay's names, so a renamed tool is still forbidden, the
expected end state is replayed through the overlaid tools, and the reference path that the
divergence analysis compares against is spelled as the agent sees it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import jsonschema
import orjson

from bench.canonical import canonical_json, digest
from bench.errors import BenchError
from bench.world.suite import Suite
from bench.world.task import Action, Task, load_schema, merge_patch
from bench.world.tools import Tool, Toolset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["OVERLAY_VERSION", "Overlay", "OverlaidSuite", "load_overlay", "apply_overlay", "apply_run_overlay", "format_result"]

OVERLAY_VERSION = 1
HARNESS_TOOLS = {"ask_user"}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z0-9_.\-]+)\}")


@dataclass(frozen=True)
class Overlay:
    """A parsed, schema-valid overlay. `spec` is the file's content; `hash` identifies it (the
    same content in JSON or TOML has the same hash)."""

    spec: dict[str, Any]
    source: str | None = None

    @property
    def name(self) -> str | None:
        return self.spec.get("name")

    @property
    def hash(self) -> str:
        return digest(canonical_json(self.spec))

    @property
    def tools(self) -> dict[str, dict[str, Any]]:
        return self.spec.get("tools", {})


@dataclass
class OverlaidSuite(Suite):
    """A suite seen through an overlay. `overlay` is the record for the run manifest."""

    overlay: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=None)
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(load_schema("overlay.schema.json"))


def load_overlay(overlay: str | Path | Mapping[str, Any] | Overlay, *, source: str | None = None) -> Overlay:
    """Read and validate an overlay: a path to a .json or .toml file, a dict (e.g. a manifest's
    recorded `overlay.spec`), or an Overlay. Bad input raises BenchError naming the field."""
    if isinstance(overlay, Overlay):
        return overlay
    if isinstance(overlay, Mapping):
        spec = dict(overlay)
    else:
        path = Path(overlay)
        source = source or str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise BenchError("no such overlay file", file=str(path), field="--overlay") from None
        except OSError as exc:
            raise BenchError(f"the overlay cannot be read: {exc.strerror}", file=str(path), field="--overlay") from None
        try:
            spec = tomllib.loads(raw.decode()) if path.suffix.lower() == ".toml" else orjson.loads(raw)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BenchError(f"not valid TOML: {exc}", file=str(path)) from None
        except orjson.JSONDecodeError as exc:
            raise BenchError(f"not valid JSON: {exc} (an overlay is a .json or a .toml file)", file=str(path)) from None
    problem = jsonschema.exceptions.best_match(_validator().iter_errors(spec))
    if problem is not None:
        where = ".".join(str(p) for p in problem.absolute_path) or "(top level)"
        raise BenchError(f"{problem.message} (see bench/schemas/overlay.schema.json)", file=source, field=where)
    return Overlay(orjson.loads(orjson.dumps(spec)), source)


# ---------------------------------------------------------------------------------------
# Result formatting
# ---------------------------------------------------------------------------------------


def _project(value: Any, fields: list[str] | None, renames: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_project(v, fields, renames) for v in value]
    if not isinstance(value, dict):
        return value
    if fields is not None:
        value = {k: value[k] for k in fields if k in value}
    return {renames.get(k, k): v for k, v in value.items()}


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _lookup(value: Any, path: str) -> Any:
    node = value
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _fill(template: str, value: Any) -> str:
    """`{name}` / `{a.b.0}` from the result (a missing one renders as null); `{result}` is the
    whole result unless it has a `result` key; `{{` and `}}` are literal braces."""
    def sub(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        path = match.group(1)
        if path == "result" and not (isinstance(value, dict) and "result" in value):
            return _as_text(value)
        return _as_text(_lookup(value, path))

    return _PLACEHOLDER.sub(sub, template)


def _text_format(value: Any) -> str:
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_as_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "\n".join(f"- {_as_text(v)}" for v in value)
    return _as_text(value)


def format_result(value: Any, result_spec: Mapping[str, Any]) -> Any:
    """Apply an overlay's `result` section to one tool result: `fields` (keep these keys of a
    dict, or of each dict of a list), then `rename_fields`, then `template` or `format`."""
    value = _project(value, result_spec.get("fields"), result_spec.get("rename_fields") or {})
    if "template" in result_spec:
        return _fill(result_spec["template"], value)
    if result_spec.get("format") == "text":
        return _text_format(value)
    if result_spec.get("format") == "pretty_json":
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    return value


# ---------------------------------------------------------------------------------------
# Applying an overlay
# ---------------------------------------------------------------------------------------


def _err(message: str, overlay: Overlay, field_: str) -> BenchError:
    return BenchError(message, file=overlay.source, field=field_)


def _edited_tool(tool: Tool, edit: Mapping[str, Any], overlay: Overlay, where: str) -> tuple[Tool, dict[str, str], list[str]]:
    """The tool as the overlay presents it; the argument renames (new -> function parameter);
    human-readable notes on what changed."""
    notes: list[str] = []
    new_name = edit.get("rename", tool.name)
    if new_name != tool.name:
        notes.append(f"renamed to {new_name}")
    description = edit.get("description", tool.description)
    if description != tool.description:
        notes.append("description edited")
    schema = orjson.loads(orjson.dumps(tool.parameters))
    props: dict[str, Any] = schema.get("properties", {})
    required: list[str] = list(schema.get("required", []))
    arg_edits: Mapping[str, Any] = edit.get("arguments", {})
    unknown = [a for a in arg_edits if a not in props]
    if unknown:
        raise _err(f"tool {tool.name} has no argument {unknown[0]!r} (its arguments: {', '.join(props) or 'none'})",
                   overlay, f"{where}.arguments.{unknown[0]}")
    back: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    new_props: dict[str, Any] = {}
    new_required: list[str] = []
    for arg, prop in props.items():
        a_edit = arg_edits.get(arg, {})
        a_where = f"{where}.arguments.{arg}"
        new_arg = a_edit.get("rename", arg)
        if new_arg != arg:
            notes.append(f"argument {arg} renamed to {new_arg}")
        if new_arg in new_props:
            raise _err(f"two arguments of {tool.name} would both be called {new_arg!r}", overlay, a_where)
        prop = dict(prop)
        if "schema" in a_edit:
            prop = merge_patch(prop, a_edit["schema"])
            notes.append(f"argument {new_arg}: schema edited")
        if "description" in a_edit and a_edit["description"] != prop.get("description"):
            prop["description"] = a_edit["description"]
            notes.append(f"argument {new_arg}: description edited")
        if "default" in a_edit:
            prop["default"] = a_edit["default"]
            defaults[new_arg] = a_edit["default"]
            notes.append(f"argument {new_arg}: optional, default {canonical_json(a_edit['default'])}")
        try:
            jsonschema.Draft202012Validator.check_schema(prop)
        except jsonschema.SchemaError as exc:
            raise _err(f"the edited schema of argument {arg} is not a valid JSON Schema: {exc.message}", overlay, a_where) from None
        if "default" in a_edit:
            problem = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(prop).iter_errors(a_edit["default"]))
            if problem is not None:
                raise _err(f"the default does not satisfy the argument's schema: {problem.message}", overlay, f"{a_where}.default")
        new_props[new_arg] = prop
        back[new_arg] = arg
        if arg in required and new_arg not in defaults:
            new_required.append(new_arg)
    schema["properties"] = new_props
    schema["required"] = new_required
    result_spec = edit.get("result")
    if result_spec:
        notes.append("result reformatted (" + ", ".join(k for k in ("fields", "rename_fields", "template", "format") if k in result_spec) + ")")
    func = _wrapped(tool.func, {n: o for n, o in back.items() if n != o}, defaults, result_spec)
    new_tool = Tool(name=new_name, description=description, parameters=schema, read_only=tool.read_only,
                    func=func, validator=jsonschema.Draft202012Validator(schema))
    return new_tool, back, notes


def _wrapped(func: Callable[..., Any], back: dict[str, str], defaults: dict[str, Any],
             result_spec: Mapping[str, Any] | None) -> Callable[..., Any]:
    if not back and not defaults and not result_spec:
        return func

    def call(db: Any, **kwargs: Any) -> Any:
        for name, value in defaults.items():
            kwargs.setdefault(name, orjson.loads(orjson.dumps(value)))
        result = func(db, **{back.get(k, k): v for k, v in kwargs.items()})
        return format_result(orjson.loads(orjson.dumps(result)), result_spec) if result_spec else result

    call.__wrapped__ = func  # type: ignore[attr-defined]
    return call


def _translate_args(args: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    return {renames.get(k, k): v for k, v in args.items()}


def _translate_pattern(pattern: dict[str, Any], tools: Mapping[str, str], args: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    tool = pattern["tool"]
    out = dict(pattern, tool=tools.get(tool, tool))
    if "args" in pattern:
        out["args"] = _translate_args(pattern["args"], args.get(tool, {}))
    return out


def _translate_task(task: Task, tools: Mapping[str, str], args: Mapping[str, Mapping[str, str]]) -> Task:
    """The task's goal spelled in the overlay's names (the goal itself is unchanged)."""
    def rule(r: dict[str, Any]) -> dict[str, Any]:
        return dict(r, action=_translate_pattern(r["action"], tools, args)) if "action" in r else r

    return dataclasses.replace(
        task,
        reference_actions=tuple(Action(tools.get(a.tool, a.tool), _translate_args(a.args, args.get(a.tool, {})))
                                for a in task.reference_actions),
        forbidden=tuple(rule(r) for r in task.forbidden),
        milestones=tuple(rule(m) for m in task.milestones),
    )


def apply_overlay(suite: Suite, overlay: str | Path | Mapping[str, Any] | Overlay) -> OverlaidSuite:
    """A new suite whose tools are seen through the overlay (the original suite is untouched).

    Raises BenchError when the overlay names a tool or argument the suite does not have, would
    give two tools (or two arguments) the same name, touches a harness tool (`ask_user`), or is
    meant for another suite."""
    ov = load_overlay(overlay)
    if isinstance(suite, OverlaidSuite):
        raise BenchError("this suite already has an overlay applied; put all changes in one overlay file",
                         file=ov.source, field="--overlay")
    target = ov.spec.get("suite")
    if target is not None and target != suite.name:
        raise _err(f"this overlay is for suite {target!r}, not {suite.name!r}", ov, "suite")
    edits = ov.tools
    for name in edits:
        if name in HARNESS_TOOLS:
            raise _err(f"{name} is provided by the harness; an overlay cannot change it", ov, f"tools.{name}")
        if name not in suite.tools:
            raise _err(f"suite {suite.name} has no tool {name!r} (its tools: {', '.join(suite.tools.names())})", ov, f"tools.{name}")
    toolset = Toolset()
    tool_renames: dict[str, str] = {}
    arg_renames: dict[str, dict[str, str]] = {}
    changes: dict[str, list[str]] = {}
    for tool in suite.tools:
        if tool.name in edits:
            new_tool, back, notes = _edited_tool(tool, edits[tool.name], ov, f"tools.{tool.name}")
            arg_renames[tool.name] = {old: new for new, old in back.items() if old != new}
            if notes:
                changes[tool.name] = notes
        else:
            new_tool = tool
        if new_tool.name in toolset or new_tool.name in HARNESS_TOOLS:
            raise _err(f"two tools would both be called {new_tool.name!r}", ov, f"tools.{tool.name}.rename")
        if new_tool.name != tool.name:
            tool_renames[tool.name] = new_tool.name
        toolset.add(new_tool)
    record = {
        "version": OVERLAY_VERSION,
        "name": ov.name,
        "hash": ov.hash,
        "source": ov.source,
        "renamed": tool_renames,
        "arguments_renamed": {t: r for t, r in arg_renames.items() if r},
        "changes": changes,
        "spec": ov.spec,
    }
    base = {f.name: getattr(suite, f.name) for f in dataclasses.fields(Suite)}
    base.update(tools=toolset, tasks=[_translate_task(t, tool_renames, arg_renames) for t in suite.tasks], _expected={})
    return OverlaidSuite(**base, overlay=record)


def apply_run_overlay(suite: Suite, manifest: Mapping[str, Any]) -> Suite:
    """The suite as a run saw it: `suite` with the overlay recorded in the run's manifest
    (`manifest["overlay"]["spec"]`) applied, or `suite` itself when the run used none. For
    readers that rebuild a run's tools from its directory (verify's replay, the divergence
    analysis's reference path)."""
    record = manifest.get("overlay")
    if not record:
        return suite
    if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
        raise BenchError("the run's overlay record must be an object holding the overlay's `spec` (as `trajbench run "
                         f"--overlay` writes it), not {str(record)[:80]!r}", file="run.json", field="overlay.spec")
    return apply_overlay(suite, load_overlay(record["spec"], source=record.get("source")))
