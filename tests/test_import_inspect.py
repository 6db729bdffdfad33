"""`trajbench import inspect` on REAL Inspect AI logs: the test runs inspect-ai itself (its
mockllm model, scripted tool calls, a small tool-using task, 2 epochs) and imports the `.eval`
log it writes and the same log written by the library as `.json`. Also: the `--success`
grammar, pass^k against an independent computation from the log, bad input."""

from __future__ import annotations

import json
import sys
from math import comb
from pathlib import Path
from typing import Any

import pytest

from bench.analysis.report import build_report
from bench.cli import main
from bench.errors import BenchError
from bench.imports.success import Ref, parse_rule
from bench.runs.rundir import read_run

inspect_ai = pytest.importorskip("inspect_ai")

ATTEMPTS: dict[str, int] = {}


def _script(messages: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
    """The scripted agent, a function of the conversation: R0 is looked up then cancelled and
    the agent reports it (always passes); R1's first attempt is cancelled, its second is refused
    (so that task is mixed); R9 hits a tool error; 'Crash' makes the model raise (a sample error)."""
    from inspect_ai.model import ModelOutput, ModelUsage

    prompt = messages[0].text
    tool_results = [m for m in messages if m.role == "tool"]
    if not tool_results:
        ATTEMPTS[prompt] = ATTEMPTS.get(prompt, 0) + 1
    reservation = prompt.split()[-1].rstrip(".")
    if reservation == "Crash":
        raise RuntimeError("model backend exploded")
    if len(tool_results) == 0:
        out = ModelOutput.for_tool_call("mockllm/model", "get_reservation", {"reservation_id": reservation})
    elif len(tool_results) == 1 and not (reservation == "R1" and ATTEMPTS[prompt] > 1) and reservation != "R9":
        out = ModelOutput.for_tool_call("mockllm/model", "cancel_reservation", {"reservation_id": reservation})
    else:
        said = "cancelled" if len(tool_results) == 2 else "I cannot help with that"
        out = ModelOutput.from_content("mockllm/model", said)
    out.usage = ModelUsage(input_tokens=100 + 10 * len(messages), output_tokens=7, total_tokens=107 + 10 * len(messages))
    return out


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real eval (3 samples × 2 epochs, run one sample at a time) as .eval and as .json."""
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.log import read_eval_log, write_eval_log
    from inspect_ai.model import get_model
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate, use_tools
    from inspect_ai.tool import ToolError, tool

    @tool
    def get_reservation() -> Any:
        async def execute(reservation_id: str) -> str:
            """Look a reservation up.

            Args:
                reservation_id: the reservation
            """
            if reservation_id == "R9":
                raise ToolError(f"no reservation {reservation_id}")
            return json.dumps({"reservation_id": reservation_id, "status": "active"})
        return execute

    @tool
    def cancel_reservation() -> Any:
        async def execute(reservation_id: str) -> str:
            """Cancel a reservation.

            Args:
                reservation_id: the reservation
            """
            return json.dumps({"reservation_id": reservation_id, "status": "cancelled"})
        return execute

    folder = tmp_path_factory.mktemp("inspect")
    ATTEMPTS.clear()
    samples = [Sample(id=f"t{r[1]}", input=f"Please cancel {r}.", target="cancelled") for r in ("R0", "R1", "R9")]
    samples.append(Sample(id="t4", input="Please cancel Crash.", target="cancelled"))
    task = Task(dataset=samples, solver=[use_tools(get_reservation(), cancel_reservation()), generate()],
                scorer=includes(), epochs=2, name="cancel")
    [log] = eval(task, model=get_model("mockllm/model", custom_outputs=_script), log_dir=str(folder),
                 log_format="eval", display="none", max_samples=1, fail_on_error=False)
    as_json = folder / "log.json"
    write_eval_log(read_eval_log(log.location), str(as_json), format="json")
    return {"eval": Path(log.location), "json": as_json}


def _import(tmp_path: Path, *sources: Path, name: str = "run", success: str | None = None) -> Path:
    out = tmp_path / name
    extra = ["--success", success] if success else []
    assert main(["import", "inspect", *map(str, sources), "--out", str(out), *extra]) == 0
    return out


@pytest.mark.parametrize("fmt", ["eval", "json"])
def test_steps_outcomes_and_null_fields_from_a_real_log(tmp_path: Path, logs: dict[str, Path], fmt: str) -> None:
    log = read_run(_import(tmp_path, logs[fmt]))
    assert len(log.summaries) == 8 and log.manifest["k"] == 2
    assert {t: s["outcome"] for t, s in log.summaries.items() if s["task"] == "t0"} == {
        "t0/base/0": "success", "t0/base/1": "success"}
    assert sorted(log.summaries[f"t1/base/{e}"]["outcome"] for e in (0, 1)) == ["failure", "success"]
    crash = log.summaries["t4/base/0"]
    assert crash["outcome"] == "error" and "model backend exploded" in crash["reason"]
    steps = log.trial_steps("t0/base/0")
    assert [s["kind"] for s in steps] == ["user", "model", "tool", "model", "tool", "model"]
    assert steps[0]["observation"] == "Please cancel R0." and steps[0]["args"] == {"question": None}
    lookup = steps[2]
    assert lookup["tool"] == "get_reservation" and lookup["args"] == {"reservation_id": "R0"}
    assert json.loads(lookup["observation"]) == {"reservation_id": "R0", "status": "active"}
    assert lookup["read_only"] is None and lookup["state_hash"] is None  # Inspect records neither
    assert lookup["t_end"] >= lookup["t_start"] > 1e9 and lookup["latency_s"] >= 0
    model = steps[1]
    assert model["input_tokens"] == 110 and model["output_tokens"] == 7 and model["cost"] is None
    assert model["latency_s"] is not None and model["model"] == "mockllm/model"
    failed_tool = log.trial_steps("t9/base/0")[2]
    assert failed_tool["error"] is not None and "no reservation R9" in failed_tool["error"]
    first = log.summaries["t0/base/0"]
    assert first["seed"] is None and first["final_state_hash"] is None
    assert first["checks"]["score:includes"]["value"] == "C" and first["answer"] == "cancelled"
    source = log.manifest["source"]
    assert source["format"] == "inspect" and source["outcome_rule"] == "accuracy == 1"
    assert source["harness_version"] == f"inspect_ai {inspect_ai.__version__}"
    assert source["reference"]["t0"] == [] and source["evals"][0]["task"] == "cancel"
    assert log.manifest["agent"]["name"] == "mockllm/model"


def test_eval_and_json_logs_import_to_the_same_trials(tmp_path: Path, logs: dict[str, Path]) -> None:
    a, b = read_run(_import(tmp_path, logs["eval"], name="a")), read_run(_import(tmp_path, logs["json"], name="b"))
    assert a.summaries == b.summaries and a.manifest["suite"]["hash"] == b.manifest["suite"]["hash"]
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) in (0, 1)


@pytest.mark.parametrize("fmt", ["eval", "json"])
def test_the_one_pass_reader_gives_what_read_eval_log_samples_gives(logs: dict[str, Path], fmt: str) -> None:
    """The importer opens a log once (the API re-opens it per sample: quadratic); it must yield
    exactly the samples of the API's own streaming reader, attachments resolved."""
    from inspect_ai.log import read_eval_log_samples

    from bench.imports.inspectai import _api, _samples

    ours = {(s.id, s.epoch): s.model_dump(exclude={"timelines"}) for s in _samples(_api(), logs[fmt])}
    theirs = {(s.id, s.epoch): s.model_dump(exclude={"timelines"})
              for s in read_eval_log_samples(str(logs[fmt]), all_samples_required=False, resolve_attachments=True)}
    assert ours == theirs and len(ours) == 8


def test_pass_hat_k_equals_an_independent_computation_from_the_log(tmp_path: Path, logs: dict[str, Path]) -> None:
    """Read the log with Inspect's API alone: per sample, errors dropped, C = success."""
    from inspect_ai.log import read_eval_log

    runs: dict[str, list[bool]] = {}
    for sample in read_eval_log(str(logs["eval"])).samples or []:
        if sample.error is None:
            runs.setdefault(str(sample.id), []).append(sample.scores["includes"].value == "C")
    suite = build_report(_import(tmp_path, logs["eval"]))["suite"]
    figures = {e["k"]: e["mean"] for e in suite["pass^k"]}
    for k in (1, 2):
        tasks = [v for v in runs.values() if len(v) >= k]
        expected = sum(comb(sum(v), k) / comb(len(v), k) for v in tasks) / len(tasks)
        assert figures[k] == pytest.approx(expected)


def test_success_rules_select_the_outcome(tmp_path: Path, logs: dict[str, Path]) -> None:
    default = read_run(_import(tmp_path, logs["eval"], name="default"))
    named = read_run(_import(tmp_path, logs["eval"], name="named", success='score:includes == "C"'))
    inverted = read_run(_import(tmp_path, logs["eval"], name="inv", success="not accuracy:includes >= 1"))
    for trial, summary in default.summaries.items():
        assert named.summaries[trial]["outcome"] == summary["outcome"]
        flipped = {"success": "failure", "failure": "success", "error": "error"}[summary["outcome"]]
        assert inverted.summaries[trial]["outcome"] == flipped
    assert inverted.manifest["source"]["outcome_rule"] == "not accuracy:includes >= 1"


@pytest.mark.parametrize(("rule", "needle"), [
    ("accuracy ==", "the rule ends too early"),
    ("reward == 1", "unknown name 'reward'"),
    ("score:nope == 1", "no scorer 'nope'"),
    ("score > 1", "compares numbers"),
])
def test_a_bad_rule_is_one_clear_error(tmp_path: Path, logs: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                       rule: str, needle: str) -> None:
    assert main(["import", "inspect", str(logs["eval"]), "--out", str(tmp_path / "run"), "--success", rule]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".*importing"))


def _without_scores(tmp_path: Path, logs: dict[str, Path]) -> Path:
    document = json.loads(logs["json"].read_text())
    next(s for s in document["samples"] if s["id"] == "t1" and s["epoch"] == 2).pop("scores")
    path = tmp_path / "noscore.json"
    path.write_text(json.dumps(document))
    return path


def _cut(tmp_path: Path, logs: dict[str, Path], fmt: str) -> Path:
    data = logs[fmt].read_bytes()
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(("make", "needle"), [
    (_without_scores, "sample 't1' epoch 2: no scores"),
    (lambda p, logs: _cut(p, logs, "eval"), "not a readable Inspect log"),
    (lambda p, logs: _cut(p, logs, "json"), "truncated or invalid JSON"),
    (lambda p, logs: (p / "log.txt").write_text("{}") and p / "log.txt", "expected an Inspect AI log (.eval or .json)"),
])
def test_bad_logs_are_one_clear_error(tmp_path: Path, logs: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                      make: Any, needle: str) -> None:
    source = make(tmp_path, logs)
    assert main(["import", "inspect", str(source), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(source) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".*importing"))


def test_the_same_log_twice_is_a_duplicate_trial(tmp_path: Path, logs: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "inspect", str(logs["eval"]), str(logs["json"]), "--out", str(tmp_path / "run")]) == 2
    assert "already imported" in capsys.readouterr().err


def test_logs_of_two_eval_tasks_keep_their_tasks_apart(tmp_path: Path, logs: dict[str, Path]) -> None:
    """The same sample ids under another eval task: task ids become TASK:SAMPLE_ID, no clash."""
    document = json.loads(logs["json"].read_text())
    document["eval"]["task"] = "other"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(document))
    log = read_run(_import(tmp_path, logs["eval"], other))
    assert len(log.summaries) == 16 and {"cancel:t0", "other:t0"} <= set(log.manifest["tasks"])


def test_an_eval_that_did_not_finish_imports_what_it_logged_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fail_on_error (Inspect's default) stops the eval at sample 2's error: status 'error'."""
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate

    def script(messages: list[Any], *_: Any) -> Any:
        if "boom" in messages[0].text:
            raise RuntimeError("boom")
        out = ModelOutput.from_content("mockllm/model", "cancelled")
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        return out

    task = Task(dataset=[Sample(id=i, input="boom" if i == 2 else "hi", target="cancelled") for i in (1, 2, 3, 4)],
                solver=[generate()], scorer=includes())
    [log] = eval(task, model=get_model("mockllm/model", custom_outputs=script), log_dir=str(tmp_path / "logs"),
                 display="none", max_samples=1)
    assert log.status == "error"
    run = read_run(_import(tmp_path, Path(log.location)))
    assert run.summaries["1/base/0"]["outcome"] == "success" and run.summaries["2/base/0"]["outcome"] == "error"
    assert run.manifest["source"]["evals"][0]["status"] == "error"
    assert "status is 'error': it did not finish" in capsys.readouterr().err


def test_without_inspect_ai_the_error_names_the_extra(tmp_path: Path, logs: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "inspect_ai.log", None)
    assert main(["import", "inspect", str(logs["eval"]), "--out", str(tmp_path / "run")]) == 2
    assert "pip install 'trajbench[inspect]'" in capsys.readouterr().err


def test_report_view_and_export_read_an_import(tmp_path: Path, logs: dict[str, Path]) -> None:
    run = _import(tmp_path, logs["eval"])
    assert main(["report", str(run)]) == 0
    assert main(["view", str(run), "--task", "t1", "--out", str(tmp_path / "view.html")]) == 0
    assert "cancel_reservation" in (tmp_path / "view.html").read_text()
    assert main(["export", str(run), "--format", "jsonl", "--out", str(tmp_path / "exp")]) == 0
    assert len((tmp_path / "exp" / "trials.jsonl").read_bytes().splitlines()) == 8


def test_the_success_grammar_without_inspect() -> None:
    """The rule language against hand-made values (no eval(): names resolve through a function)."""
    values = {Ref("score", None, None): "C", Ref("accuracy", None, None): 1.0,
              Ref("score", "m", "ok"): True, Ref("score", "n", None): 0.25}
    resolve = values.__getitem__
    assert parse_rule("accuracy == 1").passes(resolve)
    assert parse_rule('score == "C" and not score:n >= 0.5').passes(resolve)
    assert parse_rule("score:m.ok").passes(resolve)
    assert parse_rule("(score == 'I' or score:n < 1) and score:m.ok == true").passes(resolve)
    assert not parse_rule('score == 1').passes(resolve)  # a string is never equal to a number
    for bad in ("__import__('os')", "score == ", "score = 1", "accuracy == 1 1"):
        with pytest.raises(BenchError):
            parse_rule(bad).passes(resolve)
