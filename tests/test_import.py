"""Importers (bench/imports): a τ-bench trajectory file becomes an ordinary run directory that
report and diff read; the figures match an independent computation from the source file; bad
input is one clear error naming the file and record."""

from __future__ import annotations

import copy
import json
from math import comb
from pathlib import Path

import orjson
import pytest

from bench.analysis.report import build_report
from bench.cli import main
from bench.imports.core import iter_json_array
from bench.runs.rundir import read_run
from tests.conftest import assert_follows_the_published_schemas

FIXTURE = Path(__file__).parent / "fixtures" / "imports" / "tau-bench.json"


def _import(tmp_path: Path, *sources: Path, name: str = "run") -> Path:
    out = tmp_path / name
    assert main(["import", "tau-bench", *map(str, sources), "--out", str(out)]) == 0
    return out


def test_steps_outcomes_reference_and_null_fields(tmp_path: Path) -> None:
    log = read_run(_import(tmp_path, FIXTURE))
    assert len(log.summaries) == 9
    first = log.summaries["0/base/0"]
    assert first["outcome"] == "success" and first["seed"] is None and first["final_state_hash"] is None
    assert log.summaries["1/base/1"]["outcome"] == "failure"
    assert log.summaries["2/base/2"]["outcome"] == "error" and log.summaries["2/base/2"]["reason"] == "boom"
    kinds = [s["kind"] for s in log.trial_steps("0/base/0")]
    assert kinds == ["user", "model", "tool", "model", "user"]  # system prompt skipped
    tool = log.trial_steps("0/base/0")[2]
    assert tool["tool"] == "cancel_reservation" and tool["args"] == {"reservation_id": "R0"}
    assert tool["observation"] == '{"status": "cancelled"}'
    assert tool["state_hash"] is None and tool["read_only"] is None
    source = log.manifest["source"]
    assert source["kind"] == "import" and source["format"] == "tau-bench"
    assert len(source["files"][0]["sha256"]) == 64
    assert source["reference"]["0"] == [{"name": "cancel_reservation", "kwargs": {"reservation_id": "R0"}}]
    assert log.manifest["base_seed"] is None  # type: ignore[typeddict-item]


def test_import_follows_the_published_schemas(tmp_path: Path) -> None:
    run = _import(tmp_path, FIXTURE)
    assert_follows_the_published_schemas(run)


def test_pass_hat_k_equals_tau_bench_formula(tmp_path: Path) -> None:
    """τ-bench's own pass^k (tau_bench/run.py display_metrics: n = distinct trials in the file,
    mean over tasks of comb(c, k) / comb(n, k)) on a file whose error record became a failure."""
    records = json.loads(FIXTURE.read_text())
    plain = next(r for r in records if "error" not in r["info"])
    for record in records:
        if "error" in record["info"]:
            record["info"], record["traj"] = copy.deepcopy(plain["info"]), plain["traj"]
    source = tmp_path / "clean.json"
    source.write_bytes(orjson.dumps(records))
    suite = build_report(_import(tmp_path, source))["suite"]
    n = len({r["trial"] for r in records})
    successes: dict[int, int] = {}
    for r in records:
        successes[r["task_id"]] = successes.get(r["task_id"], 0) + (abs(r["reward"] - 1) <= 1e-6)
    assert [e["k"] for e in suite["pass^k"]] == [1, 2, 3]
    for entry in suite["pass^k"]:
        k = entry["k"]
        expected = sum(comb(c, k) / comb(n, k) for c in successes.values()) / len(successes)
        assert entry["mean"] == pytest.approx(expected)


def test_several_files_become_one_run_and_diff_pairs_them(tmp_path: Path) -> None:
    records = json.loads(FIXTURE.read_text())
    halves = [tmp_path / "a.json", tmp_path / "b.json"]
    halves[0].write_bytes(orjson.dumps(records[:3]))
    halves[1].write_bytes(orjson.dumps(records[3:]))
    split = read_run(_import(tmp_path, *halves, name="split"))
    whole = read_run(_import(tmp_path, FIXTURE, name="whole"))
    assert split.summaries.keys() == whole.summaries.keys()
    assert split.manifest["suite"]["hash"] == whole.manifest["suite"]["hash"]
    assert main(["diff", str(tmp_path / "whole"), str(tmp_path / "split")]) in (0, 1)


def test_verify_refuses_an_import_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _import(tmp_path, FIXTURE)
    capsys.readouterr()
    assert main(["verify", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cannot be replayed" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("text", "needle"), [
    ('[{"task_id": 1, "trial": 0, "reward": 1.0, "info": {}}, {"task_id": 2, "tri', "record 1: truncated"),
    ('[{"task_id": 1, "trial": 0, "info": {}}]', "record 0: missing field 'reward'"),
    ('{"task_id": 1}', "expected a JSON array"),
])
def test_bad_input_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str) -> None:
    source = tmp_path / "bad.json"
    source.write_text(text)
    assert main(["import", "tau-bench", str(source), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(source) in err and "Traceback" not in err


def test_unknown_format_exits_2(tmp_path: Path) -> None:
    assert main(["import", "nope", str(FIXTURE), "--out", str(tmp_path / "run")]) == 2


def test_streaming_reader_matches_a_whole_parse(tmp_path: Path) -> None:
    """Elements larger than the reader's chunk, and many small ones, come out as a whole parse."""
    values = [{"i": i, "pad": "x" * (3 << 20 if i == 2 else 10)} for i in range(50)]
    source = tmp_path / "big.json"
    source.write_text(json.dumps(values, indent=1))
    assert list(iter_json_array(source)) == values
    (tmp_path / "empty.json").write_text(" [ ] ")
    assert list(iter_json_array(tmp_path / "empty.json")) == []


def test_view_and_export_read_an_import(tmp_path: Path) -> None:
    run = _import(tmp_path, FIXTURE)
    assert main(["view", str(run), "--task", "1", "--out", str(tmp_path / "view.html")]) == 0
    assert "cancel_reservation" in (tmp_path / "view.html").read_text()
    assert main(["export", str(run), "--format", "jsonl", "--out", str(tmp_path / "exp")]) == 0
    assert len((tmp_path / "exp" / "trials.jsonl").read_bytes().splitlines()) == 9


def test_diff_refuses_imports_of_different_task_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.json"
    other.write_text(FIXTURE.read_text().replace("You are user 0", "You are someone else"))
    first, second = _import(tmp_path, FIXTURE, name="a"), _import(tmp_path, other, name="b")
    capsys.readouterr()
    assert main(["diff", str(first), str(second)]) == 2
    assert "different suites" in capsys.readouterr().err
