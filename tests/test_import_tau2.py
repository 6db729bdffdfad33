"""`trajbench import tau2`: a τ²-bench results file (hand-made fixture, every field kind τ²
writes) becomes a run directory that report, diff, view and export read; pass^k equals τ²'s own
formula computed from the source; bad input is one clear error and leaves nothing behind."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path
from typing import Any

import pytest

from bench.analysis.report import build_report
from bench.cli import main
from bench.imports.core import iter_json_members
from bench.runs.rundir import read_run
from tests.conftest import assert_follows_the_published_schemas

FIXTURE = Path(__file__).parent / "fixtures" / "imports" / "tau2.json"


def _import(tmp_path: Path, *sources: Path, name: str = "run", success: str | None = None) -> Path:
    out = tmp_path / name
    extra = ["--success", success] if success else []
    assert main(["import", "tau2", *map(str, sources), "--out", str(out), *extra]) == 0
    return out


def _results() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def test_steps_outcomes_reference_and_null_fields(tmp_path: Path) -> None:
    log = read_run(_import(tmp_path, FIXTURE))
    assert len(log.summaries) == 9 and log.manifest["k"] == 3
    first = log.summaries["0/base/0"]
    assert first["outcome"] == "success" and first["seed"] == 41233 and first["final_state_hash"] is None
    assert first["started_at"] is None  # τ² times have no zone: a Unix time would be a guess
    assert first["input_tokens"] == 2800 and first["cost"] == pytest.approx(0.01)
    assert first["checks"]["db"]["passed"] and first["checks"]["action:0_1"]["tool_type"] == "write"
    steps = log.trial_steps("0/base/0")
    assert [s["kind"] for s in steps] == ["model", "user", "model", "tool", "model", "tool", "model", "user"]
    lookup, cancel = steps[3], steps[5]
    assert lookup["tool"] == "get_reservation" and lookup["args"] == {"reservation_id": "R0"}
    assert lookup["read_only"] is True and cancel["read_only"] is False  # from τ²'s action_checks tool_type
    assert cancel["observation"] == '{"status": "cancelled"}' and cancel["state_hash"] is None
    model = steps[2]
    assert (model["input_tokens"], model["output_tokens"], model["cost"], model["latency_s"]) == (900, 25, 0.004, 1.25)
    assert steps[1]["args"] == {"question": "Hi! How can I help you today?"} and steps[1]["observation"] == "Please cancel R0."
    failed = log.summaries["1/base/1"]
    assert failed["outcome"] == "failure" and not failed["checks"]["action:1_0"]["passed"]
    source = log.manifest["source"]
    assert source["format"] == "tau2" and source["harness_version"] == "tau2-bench git abc1234"
    assert "reward == 1" in source["outcome_rule"] and len(source["files"][0]["sha256"]) == 64
    assert [(a["name"], a["kwargs"]) for a in source["reference"]["0"]] == [
        ("get_reservation", {"reservation_id": "R0"}), ("cancel_reservation", {"reservation_id": "R0"})]
    assert source["reference"]["2"][0]["requestor"] == "user"
    assert log.manifest["agent"]["name"] == "llm_agent:some-model"


def test_unrecorded_fields_stay_null_and_empty_ids_pair_in_order(tmp_path: Path) -> None:
    log = read_run(_import(tmp_path, FIXTURE))
    steps = log.trial_steps("1/base/2")  # no costs, no usage, tool calls with τ²'s default empty id
    assert all(s["cost"] is None and s["input_tokens"] is None for s in steps if s["kind"] == "model")
    assert log.summaries["1/base/2"]["agent_info"]["agent_cost"] is None
    tools = [s for s in steps if s["kind"] == "tool"]
    assert tools[0]["error"] == "Error: missing argument 'flight'" and tools[1]["observation"] == '{"ok": true}'
    user_tool = log.trial_steps("2/base/0")[3]
    assert (user_tool["kind"], user_tool["tool"], user_tool["requestor"]) == ("user", "toggle_airplane_mode", "user")
    infra = log.summaries["2/base/1"]
    assert infra["outcome"] == "error" and "RateLimitError" in infra["reason"] and infra["checks"] == {}
    assert log.summaries["2/base/2"]["outcome"] == "failure" and "max_steps" in log.summaries["2/base/2"]["reason"]


def test_import_follows_the_published_schemas(tmp_path: Path) -> None:
    run = _import(tmp_path, FIXTURE)
    assert_follows_the_published_schemas(run)


def test_pass_hat_k_equals_tau2_formula(tmp_path: Path) -> None:
    """τ²'s own pass^k (src/tau2/metrics/agent_metrics.py): infrastructure errors dropped, per
    task comb(c, k) / comb(n_task, k) with the task's own run count, mean over tasks."""
    results = _results()
    runs: dict[str, list[bool]] = {}
    for sim in results["simulations"]:
        if sim["termination_reason"] != "infrastructure_error":
            reward = sim["reward_info"]["reward"]
            runs.setdefault(sim["task_id"], []).append(1 - 1e-6 <= reward <= 1 + 1e-6)
    suite = build_report(_import(tmp_path, FIXTURE))["suite"]
    max_k = min(len(v) for v in runs.values())
    figures = {e["k"]: e["mean"] for e in suite["pass^k"]}
    for k in range(1, max_k + 1):
        expected = sum(comb(sum(v), k) / comb(len(v), k) for v in runs.values()) / len(runs)
        assert figures[k] == pytest.approx(expected)


def _split(tmp_path: Path) -> list[Path]:
    """The fixture as two results files: trials 0-1 in one, trial 2 in the other (tasks in both)."""
    results, files = _results(), []
    for name, trials in (("a", {0, 1}), ("b", {2})):
        part = {**results, "simulations": [s for s in results["simulations"] if s["trial"] in trials]}
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(part))
    return files


def test_several_files_become_one_run_and_diff_pairs_them(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    split = read_run(_import(tmp_path, *_split(tmp_path), name="split"))
    whole = read_run(_import(tmp_path, FIXTURE, name="whole"))
    assert split.summaries.keys() == whole.summaries.keys() and len(split.manifest["source"]["files"]) == 2
    assert split.manifest["suite"]["hash"] == whole.manifest["suite"]["hash"]
    assert "num_trials" not in capsys.readouterr().err  # k split over files is no unfinished run
    _import(tmp_path, _split(tmp_path)[1], name="part")
    assert "info.num_trials is 3 but the sources hold trials [2]" in capsys.readouterr().err
    assert main(["diff", str(tmp_path / "whole"), str(tmp_path / "split")]) in (0, 1)


def test_the_dir_layout_reads_like_the_json_layout(tmp_path: Path) -> None:
    results = _results()
    folder = tmp_path / "results"
    (folder / "simulations").mkdir(parents=True)
    for sim in results["simulations"]:
        (folder / "simulations" / f"{sim['id']}.json").write_text(json.dumps(sim))
    index = [{"id": s["id"], "task_id": s["task_id"], "trial": s["trial"]} for s in results["simulations"]]
    (folder / "results.json").write_text(json.dumps({**results, "simulations": [], "simulation_index": index}))
    from_dir = read_run(_import(tmp_path, folder, name="dir"))
    from_json = read_run(_import(tmp_path, FIXTURE, name="json"))
    assert from_dir.summaries == from_json.summaries
    assert [from_dir.trial_steps(t) for t in from_dir.summaries] == [from_json.trial_steps(t) for t in from_json.summaries]


def test_simulations_before_tasks_read_the_same(tmp_path: Path) -> None:
    """A hand-made file with `simulations` ahead of `tasks` still gets instructions and gold."""
    results = _results()
    reordered = tmp_path / "reordered.json"
    reordered.write_text(json.dumps({"simulations": results["simulations"], "info": results["info"],
                                     "tasks": results["tasks"]}))
    a, b = read_run(_import(tmp_path, reordered, name="a")), read_run(_import(tmp_path, FIXTURE, name="b"))
    assert a.summaries == b.summaries and a.manifest["source"]["reference"] == b.manifest["source"]["reference"]


def test_success_rules_over_the_reward(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    default = read_run(_import(tmp_path, FIXTURE, name="default"))
    same = read_run(_import(tmp_path, FIXTURE, name="same", success="reward:DB == 1 and db == true"))
    lenient = read_run(_import(tmp_path, FIXTURE, name="lenient", success="reward >= 0"))
    assert {t: s["outcome"] for t, s in same.summaries.items()} == {t: s["outcome"] for t, s in default.summaries.items()}
    assert {s["outcome"] for s in lenient.summaries.values()} == {"success", "error"}  # errors stay errors
    assert lenient.manifest["source"]["outcome_rule"].startswith("success iff reward >= 0;")
    for rule, needle in (("reward:Db == 1", "'Db' is not a τ² reward component"),
                         ("score == 1", "unknown name 'score'")):
        assert main(["import", "tau2", str(FIXTURE), "--out", str(tmp_path / "bad"), "--success", rule]) == 2
        assert needle in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["import", "tau-bench", str(FIXTURE), "--out", str(tmp_path / "tb"), "--success", "reward == 1"]) == 2
    assert "--success applies to inspect and tau2" in capsys.readouterr().err


def test_a_trial_imported_twice_is_refused_and_nothing_is_written(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["import", "tau2", str(FIXTURE), str(FIXTURE), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "simulation 0 (id sim-0-0)" in err and "already imported" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _bad(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _no_reward(tmp_path: Path) -> Path:
    results = _results()
    del results["simulations"][4]["reward_info"]["reward"]
    return _bad(tmp_path, "bad.json", json.dumps(results))


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: _bad(p, "bad.json", FIXTURE.read_text()[:20_000]), "truncated or invalid JSON"),
    (_no_reward, "simulation 4 (id sim-1-1): missing field 'reward_info.reward'"),
    (lambda p: _bad(p, "bad.json", "[]"), "expected a JSON object at the top level"),
    (lambda p: _bad(p, "bad.eval", "{}"), "expected a τ²-bench results file"),
    (lambda p: _bad(p, "bad.json", '{"tasks": [], "simulations": [{"task_id": "1", "trial": 0}]}'),
     "missing field 'termination_reason'"),
])
def test_bad_input_is_one_clear_error_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         make: Any, needle: str) -> None:
    source = make(tmp_path)
    assert main(["import", "tau2", str(source), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(source) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == [source.name]  # no run, no staging folder


def test_members_reader_streams_arrays_and_reads_numbers_cut_by_a_chunk(tmp_path: Path) -> None:
    """Elements larger than the reader's chunk, and a number ending exactly at a chunk's end."""
    pad = "x" * ((1 << 20) - len('{"a": "') - 1)
    source = tmp_path / "big.json"
    source.write_text('{"a": "' + pad + '", "n": 12345, "simulations": [1, {"p": "' + "y" * (3 << 20) + '"}, 3]}')
    got = list(iter_json_members(source, frozenset({"simulations"})))
    assert [(k, i) for k, i, _ in got] == [("a", None), ("n", None), ("simulations", 0), ("simulations", 1),
                                           ("simulations", 2)]
    assert got[1][2] == 12345 and len(got[3][2]["p"]) == 3 << 20


def test_report_view_and_export_read_an_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _import(tmp_path, FIXTURE)
    assert main(["report", str(run)]) == 0
    assert "1 infrastructure errors" in capsys.readouterr().out
    assert main(["view", str(run), "--task", "1", "--out", str(tmp_path / "view.html")]) == 0
    assert "update_reservation_flights" in (tmp_path / "view.html").read_text()
    assert main(["export", str(run), "--format", "jsonl", "--out", str(tmp_path / "exp")]) == 0
    assert len((tmp_path / "exp" / "trials.jsonl").read_bytes().splitlines()) == 9


def test_user_side_tool_calls_are_user_nodes_named_after_their_tool(tmp_path: Path) -> None:
    """With --include-user, the telecom user's toggle is a node of its own name, not ask_user."""
    from bench.analysis.divergence.section import divergence_section

    section = divergence_section(_import(tmp_path, FIXTURE), include_user=True)
    assert "toggle_airplane_mode" in json.dumps(section)
    assert "toggle_airplane_mode" not in json.dumps(divergence_section(tmp_path / "run"))


def test_diff_refuses_imports_of_different_task_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _bad(tmp_path, "other.json", FIXTURE.read_text().replace("You are Ann", "You are Bo"))
    first, second = _import(tmp_path, FIXTURE, name="a"), _import(tmp_path, other, name="b")
    capsys.readouterr()
    assert main(["diff", str(first), str(second)]) == 2
    assert "different suites" in capsys.readouterr().err
