"""`trajbench export RUN --format atif`: one Harbor ATIF v1.7 trajectory per trial (docs/publishing.md).

The mapping is the importer's (bench/imports/atif.py) run backwards: the suite's policy is a
`system` step and the task's instruction the first `user` step (when the suite can be found);
each model turn is an `agent` step carrying the tool calls that follow it, with their results;
a tool call the agent made without a logged model turn (a scripted or simulated agent) is an
agent step of its own with `llm_call_count: 0`; an ask_user turn is a `user` step (the reply).
ATIF has no field for the outcome, checks, seed, state hashes or read/write flags: they go under
the `extra.trajbench` objects (and `extra.task_id` / `extra.trial` / `extra.reward`, the
convention other readers use), so that `trajbench import atif` restores the run step for step.
Every document is checked against bench/schemas/atif.schema.json before it is written.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

import orjson

from bench.imports.atif import EXTRA, check_trajectory
from bench.runs.rundir import Manifest, StepEvent, TrialSummary, iter_trials, read_manifest, suite_of_run
from bench.world.suite import Suite

VERSION = "ATIF-v1.7"
_SKIP = ("type", "trial", "attempt", "step")  # log bookkeeping, restored by the importer


def call_id(step: StepEvent) -> str:
    """The tool call's id: trajbench logs none, so it is derived from the step's position
    (stable, so two exports of a run agree; OTel's `gen_ai.tool.call.id` uses the same)."""
    return f"call-{step['step']}"


def file_name(trial_id: str) -> str:
    """TASK/VARIANT/INDEX as a file name that any file system takes and that maps back."""
    return quote(trial_id, safe="") + ".json"


def write_atif(run_dir: Path, out: Path) -> dict[str, int]:
    """Write one trajectory file per trial into `out`, streaming the log (one trial in memory)."""
    manifest = read_manifest(run_dir)
    suite, _ = suite_of_run(manifest)
    counts = {"trials": 0, "steps": 0}
    for summary, steps in iter_trials(run_dir):
        doc = to_atif(manifest, summary, steps, suite)
        check_trajectory(doc, f"trial {summary['trial']}")
        (out / file_name(summary["trial"])).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        counts["trials"] += 1
        counts["steps"] += len(steps)
    return counts


def to_atif(manifest: Manifest, summary: TrialSummary, steps: Iterable[StepEvent], suite: Suite | None) -> dict[str, Any]:
    """One trial as an ATIF document."""
    agent = manifest.get("agent") or {}
    info = summary.get("agent_info") or {}
    out: list[dict[str, Any]] = []
    instruction = summary.get("instruction") or _instruction(suite, summary["task"])
    if suite is not None and suite.policy:
        out.append({"source": "system", "message": suite.policy})
    if instruction:
        out.append({"source": "user", "message": instruction})
    open_turn: dict[str, Any] | None = None  # the model turn whose tool calls are being collected
    for ev in steps:
        if ev["kind"] == "model":
            open_turn = _model_step(ev)
            out.append(open_turn)
        elif ev["kind"] == "user":
            out.append(_user_step(ev))
            open_turn = None
        else:
            target = open_turn if open_turn is not None else {"source": "agent", "message": "", "llm_call_count": 0,
                                                              **_when(ev)}
            if target is not open_turn:
                out.append(target)
            _add_call(target, ev)
    if not out:
        out.append({"source": "system", "message": f"trajbench trial {summary['trial']}: no steps were logged"})
    for number, step in enumerate(out, start=1):
        step["step_id"] = number
    doc: dict[str, Any] = {
        "schema_version": VERSION, "session_id": manifest.get("run_id"), "trajectory_id": summary["trial"],
        "agent": {"name": str(agent.get("name") or "unknown"), "version": str(agent.get("hash") or "unknown")},
        "steps": [{"step_id": s.pop("step_id"), **s} for s in out],
        "final_metrics": {"total_prompt_tokens": summary.get("input_tokens") or 0,
                          "total_completion_tokens": summary.get("output_tokens") or 0,
                          "total_cost_usd": summary.get("cost") or 0.0, "total_steps": len(out)},
        "notes": f"trajbench run {manifest.get('run_id')}: task {summary['task']}, trial {summary['trial']}, "
                 f"outcome {summary['outcome']}",
        "extra": {"task_id": summary["task"], "trial": summary.get("index"),
                  EXTRA: {"summary": {k: v for k, v in summary.items() if k != "type"},
                          "reference": ((manifest.get("source") or {}).get("reference") or {}).get(summary["task"]),
                          "run": {"run_id": manifest.get("run_id"), "suite": manifest.get("suite"),
                                  "agent": agent, "harness_version": manifest.get("harness_version"),
                                  "k": manifest.get("k")}}},
    }
    if summary["outcome"] in ("success", "failure"):
        doc["extra"]["reward"] = 1.0 if summary["outcome"] == "success" else 0.0
    if isinstance(info.get("model"), str):
        doc["agent"]["model_name"] = info["model"]
    if suite is not None:
        doc["agent"]["tool_definitions"] = [
            {"type": "function", "function": {k: spec[k] for k in ("name", "description", "parameters")}}
            for spec in suite.tool_specs()]
    return doc


def _instruction(suite: Suite | None, task_id: str) -> str | None:
    if suite is None:
        return None
    return next((t.instruction for t in suite.tasks if t.id == task_id), None)


def _when(ev: StepEvent) -> dict[str, Any]:
    stamp = ev.get("t_start")
    if stamp is None:
        return {}
    return {"timestamp": datetime.fromtimestamp(stamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")}


def _model_step(ev: StepEvent) -> dict[str, Any]:
    output = ev.get("output")
    text = output if isinstance(output, str) else (output.get("content") if isinstance(output, dict) else None)
    metrics = {key: ev.get(name) for key, name in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens"),
                                                    ("cost_usd", "cost")) if ev.get(name) is not None}
    step: dict[str, Any] = {"source": "agent", "message": text if isinstance(text, str) else "", **_when(ev),
                            "llm_call_count": 1, "extra": {EXTRA: {"model": _kept(ev)}}}
    if ev.get("model"):
        step["model_name"] = ev["model"]
    if metrics:
        step["metrics"] = metrics
    return step


def _user_step(ev: StepEvent) -> dict[str, Any]:
    content, flags = _content(ev.get("observation"))
    return {"source": "user", "message": content, **_when(ev), "extra": {EXTRA: {"kind": "user", **_kept(ev), **flags}}}


def _add_call(step: dict[str, Any], ev: StepEvent) -> None:
    args = ev.get("args")
    content, flags = _content(ev.get("observation"))
    step.setdefault("tool_calls", []).append({"tool_call_id": call_id(ev), "function_name": str(ev.get("tool")),
                                              "arguments": args if isinstance(args, dict) else {"value": args}})
    step.setdefault("observation", {"results": []})["results"].append(
        {"source_call_id": call_id(ev), "content": content, "extra": {EXTRA: {**_kept(ev), **flags}}})


def _kept(ev: StepEvent) -> dict[str, Any]:
    """The step's fields, for an exact restore on import (ATIF has no place for most of them)."""
    return {k: v for k, v in ev.items() if k not in _SKIP and k != "observation"}


def _content(observation: Any) -> tuple[str, dict[str, Any]]:
    """ATIF content is text: a string observation as is, anything else as its JSON (flagged so
    the importer parses it back; a null observation, an errored call's, is kept as null)."""
    if isinstance(observation, str):
        return observation, {}
    if observation is None:
        return "", {"observation": None}
    return orjson.dumps(observation, option=orjson.OPT_NON_STR_KEYS).decode(), {"json": True}
