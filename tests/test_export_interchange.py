"""`trajbench export --format atif|otel`: every ATIF document valid against the schema written
from the RFC's field tables; OTLP JSON parsed by the real `opentelemetry-proto` messages; the
round trip run → ATIF → import keeps every step, observation and outcome, and pass^k."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.adapters.spec import parse_agent_spec
from bench.analysis.report import build_report
from bench.cli import main
from bench.imports.atif import check_trajectory
from bench.publish.atif import file_name
from bench.runs.rundir import iter_trials, read_run
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.suite import load_suite
from bench.world.task import load_schema
from tests.conftest import MINI, read_log, write_log

AGENT = textwrap.dedent('''
    def agent(episode):
        episode.log_model_turn(messages=[{"role": "user", "content": episode.instruction}],
                               output={"role": "assistant", "content": "Looking you up.", "tool_calls": [{"name": "find_customer"}]},
                               input_tokens=12, output_tokens=3, latency_s=0.2, cost=0.0001, model="fake")
        episode.call("find_customer", {"email": "ada@example.com"})
        episode.call("find_customer", {"email": 7})
        episode.log_model_turn(output="What is your email?", input_tokens=20, output_tokens=5, model="fake")
        episode.call("ask_user", {"question": "What is your email?"})
        episode.call("cancel_order", {"order_id": "O1"})
        return "Cancelled O1"
''')


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A simulated agent with mixed outcomes (no model turns) and a Python agent with model turns."""
    base = tmp_path_factory.mktemp("interchange")
    (base / "agent.py").write_text(AGENT)
    suite = load_suite(MINI)
    out = {}
    for name, spec in (("sim", "sim:noisy?p=0.5&noise=0.4"), ("model", f"{base / 'agent.py'}:agent")):
        config = RunConfig(k=4 if name == "sim" else 2, out=base / name, progress=False, retry_backoff_s=0.0)
        out[name] = run_benchmark(suite, parse_agent_spec(spec), None, config)
    return out


def _export(run: Path, fmt: str, out: Path) -> Path:
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    return out


def test_atif_documents_follow_the_schema(runs: dict[str, Path], tmp_path: Path) -> None:
    validator = jsonschema.Draft202012Validator(load_schema("atif.schema.json"), format_checker=jsonschema.FormatChecker())
    for name, run in runs.items():
        out = _export(run, "atif", tmp_path / name)
        log = read_run(run)
        assert sorted(p.name for p in out.iterdir()) == sorted(file_name(t) for t in log.summaries)
        for path in out.iterdir():
            doc = orjson.loads(path.read_bytes())
            validator.validate(doc)
            check_trajectory(doc, path.name)
            assert doc["schema_version"] == "ATIF-v1.7" and doc["session_id"] == log.manifest["run_id"]
            assert doc["steps"][0]["source"] == "system" and doc["steps"][1]["source"] == "user"  # policy, instruction
    doc = orjson.loads(next((tmp_path / "model").iterdir()).read_bytes())
    turn = doc["steps"][2]  # the first model turn carries the two tool calls that follow it
    assert turn["source"] == "agent" and turn["message"] == "Looking you up." and turn["model_name"] == "fake"
    assert turn["metrics"] == {"prompt_tokens": 12, "completion_tokens": 3, "cost_usd": 0.0001}
    assert [c["function_name"] for c in turn["tool_calls"]] == ["find_customer", "find_customer"]
    assert [r["source_call_id"] for r in turn["observation"]["results"]] == [c["tool_call_id"] for c in turn["tool_calls"]]
    assert doc["steps"][4]["source"] == "user"  # the ask_user reply
    assert doc["extra"]["task_id"] and doc["extra"]["reward"] in (0.0, 1.0)


@pytest.mark.parametrize("broken", [
    {"step_id": 1, "source": "user", "message": "hi", "tool_calls": []},  # agent-only field on a user step
    {"step_id": 1, "source": "agent", "message": "", "colour": "red"},  # unknown key
    {"step_id": 1, "source": "agent", "message": "", "tool_calls": [{"tool_call_id": "a", "function_name": "f",
                                                                     "arguments": "{}"}]},  # arguments as a string
    {"step_id": 1, "source": "agent", "message": "", "llm_call_count": 0, "metrics": {"prompt_tokens": 1}},
    {"step_id": 1, "source": "bot", "message": ""},
    {"step_id": 1, "source": "agent"},  # no message
])
def test_the_schema_rejects_what_the_rfc_forbids(broken: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(load_schema("atif.schema.json"))
    doc = {"schema_version": "ATIF-v1.7", "agent": {"name": "a", "version": "1"}, "steps": [broken]}
    assert list(validator.iter_errors(doc))
    assert not list(validator.iter_errors({**doc, "steps": [{"step_id": 1, "source": "agent", "message": ""}]}))
    old = {**doc, "schema_version": "ATIF-v1.6", "steps": [{"step_id": 1, "source": "agent", "message": ""}]}
    assert list(validator.iter_errors(old))  # session_id is required up to v1.6


def _comparable(log: Any, trial: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in ev.items() if k != "attempt"} for ev in log.trial_steps(trial)]


def test_round_trip_keeps_steps_observations_outcomes_and_pass_k(runs: dict[str, Path], tmp_path: Path) -> None:
    for name, run in runs.items():
        exported = _export(run, "atif", tmp_path / f"{name}-atif")
        back = tmp_path / f"{name}-back"
        assert main(["import", "atif", *map(str, sorted(exported.iterdir())), "--out", str(back)]) == 0
        native, imported = read_run(run), read_run(back)
        assert native.summaries.keys() == imported.summaries.keys()
        for trial, summary in native.summaries.items():
            assert _comparable(native, trial) == _comparable(imported, trial), trial
            again = imported.summaries[trial]
            for key in ("outcome", "reason", "checks", "seed", "final_state_hash", "answer", "milestones", "index"):
                assert again[key] == summary[key], (trial, key)  # type: ignore[literal-required]
        assert imported.manifest["source"]["format"] == "atif" and imported.manifest["k"] == native.manifest["k"]
        before, after = build_report(run)["suite"], build_report(back)["suite"]
        assert [(e["k"], e["mean"]) for e in before["pass^k"]] == [(e["k"], e["mean"]) for e in after["pass^k"]]
    log = read_run(runs["model"])
    kinds = {ev["kind"] for t in log.summaries for ev in log.trial_steps(t)}
    assert kinds == {"model", "tool", "user"}  # every kind of step went through the round trip
    assert any(ev.get("error") for t in log.summaries for ev in log.trial_steps(t))  # and an errored call


def _ids_to_base64(obj: Any) -> Any:
    """OTLP/JSON writes ids as hex; the protobuf JSON mapping reads bytes as base64 (the OTLP
    spec's one deviation), so a receiver converts them before json_format.Parse."""
    if isinstance(obj, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in ("traceId", "spanId", "parentSpanId") else
                    _ids_to_base64(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_ids_to_base64(v) for v in obj]
    return obj


def _attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        field = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, field) if field != "array_value" else [v.string_value for v in kv.value.array_value.values]
    return out


def test_otel_parses_as_export_trace_service_request(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["model"]
    out = _export(run, "otel", tmp_path / "otel")
    lines = (out / "traces.jsonl").read_bytes().splitlines()
    trials = list(iter_trials(run))
    assert len(lines) == len(trials)
    span_ids: set[bytes] = set()
    for line, (summary, steps) in zip(lines, trials):
        request = json_format.Parse(orjson.dumps(_ids_to_base64(orjson.loads(line))), ExportTraceServiceRequest())
        (resource,) = request.resource_spans
        assert {kv.key: kv.value.string_value for kv in resource.resource.attributes}["service.name"] == "trajbench"
        spans = resource.scope_spans[0].spans
        assert len(spans) == len(steps) + 1
        root, children = spans[0], spans[1:]
        assert len(root.trace_id) == 16 and len(root.span_id) == 8 and not root.parent_span_id
        attrs = _attrs(root)
        assert root.name == "invoke_agent " + read_run(run).manifest["agent"]["name"]
        assert attrs["gen_ai.operation.name"] == "invoke_agent" and attrs["trajbench.outcome"] == summary["outcome"]
        assert orjson.loads(attrs["trajbench.checks"]) == summary["checks"]
        assert attrs["trajbench.checks.failed"] == [n for n, c in summary["checks"].items() if not c["passed"]]
        assert root.events[0].name == "gen_ai.evaluation.result"
        assert root.start_time_unix_nano <= min(c.start_time_unix_nano for c in children)
        for span, ev in zip(children, steps):
            assert span.parent_span_id == root.span_id and span.trace_id == root.trace_id
            assert span.start_time_unix_nano == round(ev["t_start"] * 1e9)
            a = _attrs(span)
            if ev["kind"] == "model":
                assert span.name == "chat fake" and a["gen_ai.operation.name"] == "chat"
                assert (a["gen_ai.usage.input_tokens"], a["gen_ai.request.model"]) == (ev["input_tokens"], "fake")
            else:
                assert span.name == f"execute_tool {ev['tool']}" and a["gen_ai.tool.name"] == ev["tool"]
                assert a["gen_ai.tool.call.id"] == f"call-{ev['step']}"
                assert orjson.loads(a["gen_ai.tool.call.arguments"]) == ev["args"]
                assert (span.status.code == 2) == bool(ev["error"])
            span_ids.add(span.span_id)
        span_ids.add(root.span_id)
    assert len(span_ids) == sum(len(s) + 1 for _, s in trials)  # ids unique across the run
    again = _export(run, "otel", tmp_path / "otel-again")
    assert (again / "traces.jsonl").read_bytes() == (out / "traces.jsonl").read_bytes()  # deterministic


def test_iter_trials_agrees_with_read_run(runs: dict[str, Path], tmp_path: Path) -> None:
    """The streaming grouping exporters use sees what read_run sees, also with a failed attempt's
    steps and a duplicated summary in the log."""
    run = runs["sim"]
    log = read_run(run)
    lines = read_log(run).splitlines(keepends=True)
    first = orjson.loads(lines[0])
    stray = [orjson.dumps({**first, "attempt": "x@dead"}) + b"\n",
             orjson.dumps({"type": "attempt_error", "trial": first["trial"], "attempt": "x@dead", "error": "e"}) + b"\n"]
    summary_line = next(line for line in lines if orjson.loads(line)["type"] == "trial")
    (run.parent / "messy").mkdir()
    (run.parent / "messy" / "run.json").write_bytes((run / "run.json").read_bytes())
    write_log(run.parent / "messy", b"".join(stray + lines + [summary_line]))
    streamed = {s["trial"]: steps for s, steps in iter_trials(run.parent / "messy")}
    assert streamed.keys() == log.summaries.keys()
    for trial, steps in streamed.items():
        assert steps == log.trial_steps(trial)


def test_export_of_a_missing_run_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope"), "--format", "otel", "--out", str(tmp_path / "o")]) == 2
    assert "not a run directory" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_an_import_survives_the_round_trip_with_its_reference(tmp_path: Path) -> None:
    """A τ-bench import (no times, no state hashes, gold actions as the reference) → ATIF → back:
    the same steps and summaries, the same reference and task-set hash, so `diff` pairs them."""
    tau = Path(__file__).parent / "fixtures" / "imports" / "tau-bench.json"
    first = tmp_path / "tau"
    assert main(["import", "tau-bench", str(tau), "--out", str(first)]) == 0
    exported = _export(first, "atif", tmp_path / "atif")
    back = tmp_path / "back"
    assert main(["import", "atif", *map(str, sorted(exported.iterdir())), "--out", str(back)]) == 0
    native, again = read_run(first), read_run(back)
    for trial, summary in native.summaries.items():
        assert _comparable(native, trial) == _comparable(again, trial)
        assert {**again.summaries[trial], "attempt": summary["attempt"]} == summary
    assert again.manifest["source"]["reference"] == native.manifest["source"]["reference"]
    assert again.manifest["suite"]["hash"] == native.manifest["suite"]["hash"]
    assert main(["diff", str(first), str(back)]) in (0, 1)
