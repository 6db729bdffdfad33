"""`trajbench export RUN --format otel`: the run as OpenTelemetry traces, OTLP JSON (docs/publishing.md).

`traces.jsonl` holds one OTLP `TracesData` object (the `ExportTraceServiceRequest` shape:
resourceSpans → scopeSpans → spans) per line, one line and one trace per trial, as the OTLP
file exporter writes them. Spans follow the GenAI semantic conventions (v1.41, status
Development): the trial is an `invoke_agent` span; each model turn a `chat` child
(`gen_ai.request.model`, `gen_ai.usage.input_tokens` / `output_tokens`); each tool call and
ask_user turn an `execute_tool` child (`gen_ai.tool.name`, `gen_ai.tool.call.id`, arguments and
result). The outcome and checks are attributes of the root (custom `trajbench.*` keys: the
conventions have none) and a `gen_ai.evaluation.result` event. Ids are hashes of (run id, trial,
step), so exporting a run twice gives the same file; OTLP/JSON's own encoding rules apply (hex
ids, integer enums, 64-bit integers as decimal strings, null attributes left out).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import orjson

from bench.__version__ import __version__
from bench.adapters.spec import is_simulated
from bench.publish.atif import call_id
from bench.runs.rundir import Manifest, StepEvent, TrialSummary, iter_trials, read_manifest

FILE = "traces.jsonl"
KIND_INTERNAL, KIND_CLIENT = 1, 3
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_INT64 = 1 << 63


def write_otel(run_dir: Path, out: Path) -> dict[str, int]:
    """Write `out/traces.jsonl`, streaming the log: one trial in memory at a time."""
    manifest = read_manifest(run_dir)
    counts = {"trials": 0, "steps": 0}
    with (out / FILE).open("wb") as fh:
        for summary, steps in iter_trials(run_dir):
            fh.write(orjson.dumps(trial_traces(manifest, summary, steps)) + b"\n")
            counts["trials"] += 1
            counts["steps"] += len(steps)
    return counts


def span_id(run_id: str, trial: str, part: str) -> str:
    """A 16-hex-digit span id derived from the run, the trial and the span's place in it."""
    return hashlib.sha256(f"{run_id}\0{trial}\0{part}".encode()).hexdigest()[:16]


def trace_id(run_id: str, trial: str) -> str:
    return hashlib.sha256(f"{run_id}\0{trial}".encode()).hexdigest()[:32]


def trial_traces(manifest: Manifest, summary: TrialSummary, steps: Iterable[StepEvent]) -> dict[str, Any]:
    """One trial as a `TracesData` object: its invoke_agent span and a child per step."""
    run_id, trial = str(manifest.get("run_id")), summary["trial"]
    agent, suite = manifest.get("agent") or {}, manifest.get("suite") or {}
    steps = list(steps)
    root_id, tid = span_id(run_id, trial, "trial"), trace_id(run_id, trial)
    start, end = _trial_times(summary, steps)
    children = [_step_span(ev, tid, span_id(run_id, trial, f"step-{ev['step']}"), root_id, agent, start)
                for ev in steps]
    resource = _attributes({"service.name": "trajbench", "service.version": manifest.get("harness_version"),
                            "trajbench.run_id": run_id, "trajbench.suite.name": suite.get("name"),
                            "trajbench.suite.hash": suite.get("hash"), "trajbench.agent.adapter": agent.get("adapter"),
                            "trajbench.agent.simulated": is_simulated(agent.get("adapter"))})
    return {"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [
        {"scope": {"name": "trajbench", "version": __version__},
         "spans": [_root_span(manifest, summary, tid, root_id, start, end), *children]}]}]}


def _trial_times(summary: TrialSummary, steps: list[StepEvent]) -> tuple[int, int]:
    """The trial's start and end in Unix nanoseconds, widened to cover every step (a model turn
    logged with its latency may start before the trial's clock did); 0: unknown, as in OTLP."""
    starts = [ev["t_start"] for ev in steps if ev.get("t_start") is not None]
    ends = [ev["t_end"] for ev in steps if ev.get("t_end") is not None]
    started = summary.get("started_at")
    if started is not None:
        starts.append(started)
        ends.append(started + (summary.get("duration_s") or 0.0))
    if not starts:
        return 0, 0
    return _nanos(min(starts)), _nanos(max(ends + starts))


def _root_span(manifest: Manifest, summary: TrialSummary, tid: str, sid: str, start: int, end: int) -> dict[str, Any]:
    agent = manifest.get("agent") or {}
    name = str(agent.get("name") or "agent")
    checks = summary.get("checks") or {}
    outcome = summary["outcome"]
    model = (summary.get("agent_info") or {}).get("model")
    attrs = {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name, "gen_ai.agent.id": agent.get("hash"),
        "gen_ai.conversation.id": summary["trial"], "gen_ai.request.model": model if isinstance(model, str) else None,
        "gen_ai.usage.input_tokens": summary.get("input_tokens"), "gen_ai.usage.output_tokens": summary.get("output_tokens"),
        "trajbench.task_id": summary["task"], "trajbench.trial": summary["trial"], "trajbench.trial.index": summary.get("index"),
        "trajbench.variant": summary.get("variant"), "trajbench.seed": summary.get("seed"),
        "trajbench.outcome": outcome, "trajbench.reason": summary.get("reason"),
        "trajbench.checks": orjson.dumps(checks).decode(),
        "trajbench.checks.failed": [n for n, c in checks.items() if not c.get("passed")],
        "trajbench.final_state_hash": summary.get("final_state_hash"), "trajbench.answer": summary.get("answer"),
        "trajbench.cost": summary.get("cost"), "trajbench.attempts": summary.get("attempts"),
        **{f"trajbench.check.{n}.passed": bool(c.get("passed")) for n, c in checks.items()},
    }
    span: dict[str, Any] = {
        "traceId": tid, "spanId": sid, "name": f"invoke_agent {name}", "kind": KIND_INTERNAL,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(end), "attributes": _attributes(attrs),
        "events": [{"timeUnixNano": str(end), "name": "gen_ai.evaluation.result", "attributes": _attributes({
            "gen_ai.evaluation.name": "trajbench.outcome", "gen_ai.evaluation.score.label": outcome,
            "gen_ai.evaluation.score.value": None if outcome == "error" else float(outcome == "success"),
            "gen_ai.evaluation.explanation": summary.get("reason")})}],
        "status": {"code": STATUS_OK},
    }
    if outcome == "error":  # an infrastructure error: the only outcome that is an operation failure
        span["status"] = {"code": STATUS_ERROR, "message": str(summary.get("reason") or "infrastructure error")}
        span["attributes"] += _attributes({"error.type": "infrastructure"})
    return span


def _step_span(ev: StepEvent, tid: str, sid: str, parent: str, agent: dict[str, Any], fallback: int) -> dict[str, Any]:
    start = _nanos(ev["t_start"]) if ev.get("t_start") is not None else fallback
    end = _nanos(ev["t_end"]) if ev.get("t_end") is not None else start
    common = {"trajbench.step": ev["step"], "trajbench.step.kind": ev["kind"]}
    if ev["kind"] == "model":
        model = ev.get("model")
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": agent.get("adapter") or "unknown",
                 "gen_ai.request.model": model, "gen_ai.usage.input_tokens": ev.get("input_tokens"),
                 "gen_ai.usage.output_tokens": ev.get("output_tokens"), "trajbench.cost": ev.get("cost"),
                 "trajbench.latency_s": ev.get("latency_s"), "trajbench.output": _json(ev.get("output")),
                 "trajbench.messages": _json(ev.get("messages")), **common}
        name = f"chat {model}" if model else "chat"
        kind = KIND_INTERNAL if agent.get("adapter") == "local" else KIND_CLIENT  # in-process model: INTERNAL
    else:
        attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": ev.get("tool"),
                 "gen_ai.tool.call.id": call_id(ev), "gen_ai.tool.type": "function",
                 "gen_ai.tool.call.arguments": _json(ev.get("args")), "gen_ai.tool.call.result": _json(ev.get("observation")),
                 "trajbench.read_only": ev.get("read_only"), "trajbench.state_hash": ev.get("state_hash"), **common}
        name, kind = f"execute_tool {ev.get('tool')}", KIND_INTERNAL
    span: dict[str, Any] = {"traceId": tid, "spanId": sid, "parentSpanId": parent, "name": name, "kind": kind,
                            "startTimeUnixNano": str(start), "endTimeUnixNano": str(max(start, end)),
                            "attributes": _attributes(attrs), "status": {"code": STATUS_UNSET}}
    if ev.get("error"):
        span["status"] = {"code": STATUS_ERROR, "message": str(ev["error"])}
        span["attributes"] += _attributes({"error.type": "tool_error"})
    return span


def _attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    """OTLP KeyValues; null values are left out (OTel attributes cannot be null)."""
    return [{"key": key, "value": _value(value)} for key, value in values.items() if value is not None]


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)} if -_INT64 <= value < _INT64 else {"stringValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": _json(value)}


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _nanos(seconds: float) -> int:
    return int(round(seconds * 1e9))
