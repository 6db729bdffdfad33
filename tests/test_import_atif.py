"""`trajbench import atif`: Harbor ATIF trajectories (hand-written from the RFC's field tables,
in both the `extra` convention and Harbor's trial-directory layout) become one run directory;
pass^k equals an independent computation from the source rewards; bad input is one clear error
naming the file and the record."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import jsonschema
import orjson
import pytest

from bench.analysis.report import build_report
from bench.cli import main
from bench.runs.rundir import read_run
from bench.world.task import load_schema
from tests.conftest import read_log

FIXTURES = Path(__file__).parent / "fixtures" / "imports" / "atif"
CONVENTIONS = FIXTURES / "conventions.json"
HARBOR = sorted((FIXTURES / "harbor").glob("*/agent/trajectory.json"))


def _import(tmp_path: Path, *sources: Path, name: str = "run") -> Path:
    out = tmp_path / name
    assert main(["import", "atif", *map(str, sources), "--out", str(out)]) == 0
    return out


def test_steps_tokens_outcomes_and_null_fields(tmp_path: Path) -> None:
    log = read_run(_import(tmp_path, CONVENTIONS))
    assert sorted(log.summaries) == ["7/base/0", "7/base/1", "8/base/0"]
    first = log.summaries["7/base/0"]
    assert first["outcome"] == "success" and first["instruction"] == "Cancel reservation ABC123, please."
    assert first["seed"] is None and first["final_state_hash"] is None and first["answer"] == "Cancelled."
    assert (first["input_tokens"], first["output_tokens"]) == (900 + 940 + 960 + 990, 25 + 8 + 20 + 4)
    assert first["cost"] == pytest.approx(0.0042)
    steps = log.trial_steps("7/base/0")
    assert [(s["kind"], s.get("tool")) for s in steps] == [
        ("model", None), ("tool", "get_reservation_details"), ("tool", "get_user_details"), ("model", None),
        ("user", "ask_user"), ("model", None), ("tool", "cancel_reservation"), ("model", None)]
    model, lookup, user = steps[0], steps[1], steps[4]
    assert (model["model"], model["input_tokens"], model["output_tokens"], model["cost"]) == ("some-model", 900, 25, 0.0012)
    assert model["cached_tokens"] == 600 and model["output"] == "Let me look that up." and model["latency_s"] is None
    assert lookup["args"] == {"reservation_id": "ABC123"}
    assert lookup["observation"] == '{"reservation_id": "ABC123", "status": "booked"}'
    assert lookup["state_hash"] is None and lookup["read_only"] is None and lookup["t_end"] is None
    assert lookup["t_start"] == pytest.approx(1767607202.0)  # the agent step's timestamp
    assert user["args"] == {"question": "Shall I cancel ABC123?"} and user["observation"] == "Yes, go ahead."

    second = log.trial_steps("7/base/1")
    assert log.summaries["7/base/1"]["outcome"] == "failure"
    assert log.summaries["7/base/1"]["instruction"] == "Cancel reservation ABC123, please."  # content parts
    assert second[0]["reasoning"] == "The user wants a cancellation."
    assert second[0]["observations"] == ["[context note: policy reminder]"]  # a result with no call id
    assert second[1]["observation"] == "Error: reservation ABC124 not found"

    dispatch = log.trial_steps("8/base/0")  # llm_call_count 0: a tool call with no model turn
    assert [s["kind"] for s in dispatch] == ["tool", "model"] and dispatch[1]["model"] == "other-model"
    manifest = log.manifest
    assert manifest["k"] == 2 and manifest["base_seed"] is None  # type: ignore[typeddict-item]
    source = manifest["source"]
    assert source["format"] == "atif" and source["harness_version"] == "ATIF-v1.7"
    assert len(source["files"][0]["sha256"]) == 64


def test_harbor_trial_directories(tmp_path: Path) -> None:
    """The task from result.json's task_name, the reward from verifier/reward.txt or
    result.json, an exception_info as an infrastructure error; trial indices in file order."""
    log = read_run(_import(tmp_path, *HARBOR))
    outcomes = {t: s["outcome"] for t, s in log.summaries.items()}
    assert outcomes == {"hello/base/0": "success", "hello/base/1": "failure", "hello/base/2": "error"}
    assert log.summaries["hello/base/2"]["reason"] == "agent timed out after 600 s"
    assert log.summaries["hello/base/0"]["duration_s"] == pytest.approx(7.0)
    assert log.trial_steps("hello/base/1")[1]["args"] == {"command": "echo hello > hello.txt"}


def test_a_harbor_job_folder_is_its_trajectory_files(tmp_path: Path) -> None:
    """A folder is the trajectory.json files under it, in path order: the same run as the files."""
    by_folder = read_run(_import(tmp_path, FIXTURES / "harbor", name="folder"))
    by_files = read_run(_import(tmp_path, *HARBOR, name="files"))
    assert {t: s["outcome"] for t, s in by_folder.summaries.items()} == {t: s["outcome"] for t, s in by_files.summaries.items()}
    assert [f["path"] for f in by_folder.manifest["source"]["files"]] == [str(p) for p in HARBOR]


def test_import_follows_the_published_schemas(tmp_path: Path) -> None:
    run = _import(tmp_path, CONVENTIONS, *HARBOR)
    records = jsonschema.Draft202012Validator(load_schema("trajectory-record.schema.json"))
    for line in read_log(run).splitlines():
        records.validate(orjson.loads(line))
    jsonschema.validate(orjson.loads((run / "run.json").read_bytes()), load_schema("run.schema.json"))


def test_pass_hat_k_equals_an_independent_computation(tmp_path: Path) -> None:
    """Three files holding k = 2 trials of two tasks, spread across them; pass^k per task is
    comb(c, k) / comb(n, k) over the source rewards, then the mean over tasks."""
    docs = json.loads(CONVENTIONS.read_text())
    extra = json.loads(json.dumps(docs[2]))
    extra["extra"] = {"task_id": "8", "trial": 1, "reward": 0.0}
    files = []
    for number, group in enumerate([[docs[0]], [docs[1], extra], [docs[2]]]):
        files.append(tmp_path / f"part{number}.json")
        files[-1].write_bytes(orjson.dumps(group if len(group) > 1 else group[0]))
    suite = build_report(_import(tmp_path, *files))["suite"]
    rewards: dict[str, list[float]] = {}
    for doc in [*docs, extra]:
        rewards.setdefault(doc["extra"]["task_id"], []).append(doc["extra"]["reward"])
    for entry in suite["pass^k"]:
        k = entry["k"]
        expected = sum(comb(sum(r == 1 for r in rs), k) / comb(len(rs), k) for rs in rewards.values()) / len(rewards)
        assert entry["mean"] == pytest.approx(expected)
    assert [e["k"] for e in suite["pass^k"]] == [1, 2]


def test_jsonl_of_trajectories(tmp_path: Path) -> None:
    source = tmp_path / "many.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps(d) for d in json.loads(CONVENTIONS.read_text())) + b"\n")
    assert len(read_run(_import(tmp_path, source)).summaries) == 3


def _doc() -> dict:
    return json.loads(CONVENTIONS.read_text())[0]


def _bad(doc: dict, *path_value: tuple) -> dict:
    for path, value in path_value:
        target = doc
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(("make", "needle"), [
    (lambda: orjson.dumps(_doc())[:300], "record 0: truncated or invalid JSON"),
    (lambda: orjson.dumps([_doc(), _doc()])[:-40], "record 1: truncated"),
    (lambda: orjson.dumps(_bad(_doc(), (("schema_version",), "ATIF-v2.0"))), "unsupported schema_version 'ATIF-v2.0'"),
    (lambda: orjson.dumps(_bad(_doc(), (("agent", "version"), _DELETE))), "not ATIF at agent: 'version' is a required"),
    (lambda: orjson.dumps(_bad(_doc(), (("steps", 2, "tool_calls", 0, "arguments"), '{"a": 1}'))),
     "steps[2].tool_calls[0].arguments"),
    (lambda: orjson.dumps(_bad(_doc(), (("steps", 3, "step_id"), 9))), "steps[3].step_id is 9, expected 4"),
    (lambda: orjson.dumps(_bad(_doc(), (("steps", 2, "observation", "results", 0, "source_call_id"), "zz"))),
     "result for call 'zz'"),
    (lambda: orjson.dumps(_bad(_doc(), (("extra", "reward"), _DELETE))), "record 0: no outcome"),
    (lambda: orjson.dumps(_bad(_doc(), (("steps", 2, "timestamp"), "yesterday"))), "record 0: "),
    (lambda: orjson.dumps([_doc(), _doc()]), "record 1: a second trajectory for trial 7/base/0"),
    (lambda: orjson.dumps(_bad(_doc(), (("extra", "trajbench"), {"summary": {"trial": "7/base/0"}}))),
     "extra.trajbench.summary lacks 'task'"),
])
def test_bad_input_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], make, needle: str) -> None:
    source = tmp_path / "bad.json"
    source.write_bytes(make())
    assert main(["import", "atif", str(source), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(source) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing half-written for a second attempt to append to


def test_a_broken_harbor_reward_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trial = tmp_path / "hello__x" / "agent"
    trial.mkdir(parents=True)
    (trial / "trajectory.json").write_text(HARBOR[0].read_text())
    (trial.parent / "verifier").mkdir()
    (trial.parent / "verifier" / "reward.txt").write_text("passed")
    assert main(["import", "atif", str(trial / "trajectory.json"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "reward.txt" in err and "expected one number" in err


def test_copied_context_steps_are_not_the_trials(tmp_path: Path) -> None:
    doc = _doc()
    doc["steps"][2]["is_copied_context"] = True  # the first agent step, copied from an earlier run
    source = tmp_path / "copied.json"
    source.write_bytes(orjson.dumps(doc))
    steps = read_run(_import(tmp_path, source)).trial_steps("7/base/0")
    assert [s.get("tool") for s in steps if s["kind"] == "tool"] == ["cancel_reservation"]
