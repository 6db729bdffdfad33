"""`trajbench export`: parquet, jsonl and save_to_disk round trips through `datasets`, offline,
checked row by row against the raw log lines; the documented columns are the exported ones."""

import json
import re
import sys
import textwrap

import datasets  # the export extra; the test extra installs it
import orjson
import pytest

from bench.cli import run_export
from bench.errors import BenchError
from bench.publish.export import STEP_COLUMNS, TRIAL_COLUMNS, export_run
from tests.conftest import MINI, ROOT, read_log, run_cli

AGENT = textwrap.dedent('''
    def agent(episode):
        episode.log_model_turn(messages=[{"role": "user", "content": episode.instruction}],
                               output={"tool_calls": [{"name": "find_customer"}]}, input_tokens=12, output_tokens=3,
                               latency_s=0.2, cost=0.0001, model="fake")
        episode.call("find_customer", {"email": "ada@example.com"})
        episode.call("find_customer", {"email": 7})
        episode.call("ask_user", {"question": "What is your email?"})
        episode.call("cancel_order", {"order_id": "O1"})
        return "Cancelled O1 — ünïcode ✓"
''')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    (base / "agent.py").write_text(AGENT)
    out = base / "run"
    proc = run_cli("run", str(MINI), "--agent", f"{base / 'agent.py'}:agent", "-k", "2", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def log_records(run_dir):
    recs = [orjson.loads(line) for line in read_log(run_dir).splitlines()]
    summaries = {r["trial"]: r for r in recs if r["type"] == "trial"}
    steps = [r for r in recs if r["type"] == "step"]
    return summaries, steps


def check_tables(run_dir, steps_ds, trials_ds):
    summaries, steps = log_records(run_dir)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert steps_ds.column_names == [c for c, _, _ in STEP_COLUMNS]
    assert trials_ds.column_names == [c for c, _, _ in TRIAL_COLUMNS]
    assert len(trials_ds) == len(summaries) == 6 and len(steps_ds) == len(steps) == 6 * 5

    trials = {row["trial"]: row for row in trials_ds}
    for trial, s in summaries.items():
        row = trials[trial]
        assert json.loads(row["checks"]) == s["checks"]
        assert row["failed_checks"] == [n for n, c in s["checks"].items() if not c["passed"]]
        assert json.loads(row["milestones"]) == s["milestones"]
        assert json.loads(row["agent_info"]) == s["agent_info"]
        for key in ("outcome", "reason", "answer", "seed", "steps", "events", "input_tokens", "output_tokens",
                    "final_state_hash", "attempt", "task", "variant", "index", "attempts"):
            assert row[key] == s[key], key
        assert row["cost"] == pytest.approx(s["cost"]) and row["duration_s"] == pytest.approx(s["duration_s"])
        assert (row["suite"], row["suite_hash"], row["agent"], row["simulated"], row["k"]) == (
            manifest["suite"]["name"], manifest["suite"]["hash"], manifest["agent"]["name"], False, 2)

    exported = {(row["attempt"], row["step"]): row for row in steps_ds}
    for ev in steps:
        row = exported[(ev["attempt"], ev["step"])]
        assert row["kind"] == ev["kind"] and row["trial"] == ev["trial"]
        assert row["outcome"] == summaries[ev["trial"]]["outcome"]
        if ev["kind"] == "model":
            assert json.loads(row["messages"]) == ev["messages"] and json.loads(row["output"]) == ev["output"]
            assert (row["input_tokens"], row["output_tokens"], row["model"]) == (12, 3, "fake")
            assert row["args"] is None and row["tool"] is None
        else:
            assert json.loads(row["args"]) == ev["args"]
            assert json.loads(row["observation"]) == ev["observation"]
            assert (row["tool"], row["error"], row["read_only"], row["state_hash"]) == (
                ev["tool"], ev["error"], ev["read_only"], ev["state_hash"])
            assert row["messages"] is None
    kinds = {row["kind"] for row in steps_ds}
    assert kinds == {"tool", "user", "model"}
    assert any(row["error"] for row in steps_ds)  # the invalid call's error survived


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_files_round_trip_through_load_dataset(run_dir, tmp_path, fmt):
    out = tmp_path / "export"
    result = export_run(run_dir, fmt, out)
    assert result["trials"] == 6 and result["steps"] == 30
    assert {p.name for p in out.iterdir()} == {f"steps.{fmt}", f"trials.{fmt}", "README.md", "run.json"}
    cache = str(tmp_path / "cache")
    # through the dataset card's configs, as after an upload to the Hub
    steps = datasets.load_dataset(str(out), "steps", split="train", cache_dir=cache)
    trials = datasets.load_dataset(str(out), "trials", split="train", cache_dir=cache)
    if fmt == "jsonl":  # JSON has no schema: a column that is null in every row comes back as null-typed
        assert trials.features["failed_checks"].feature.dtype == "string"
    check_tables(run_dir, steps, trials)
    # and through the packaged builder, one file at a time
    builder = "parquet" if fmt == "parquet" else "json"
    direct = datasets.load_dataset(builder, data_files={"trials": str(out / f"trials.{fmt}")}, cache_dir=cache)
    assert direct["trials"].num_rows == 6


def test_hf_round_trip_through_load_from_disk(run_dir, tmp_path):
    out = tmp_path / "hf"
    export_run(run_dir, "hf", out)
    dd = datasets.load_from_disk(str(out))
    assert set(dd) == {"steps", "trials"}
    check_tables(run_dir, dd["steps"], dd["trials"])
    assert json.loads((out / "run.json").read_text())["run_id"] == dd["trials"][0]["run_id"]
    # written through a scratch Arrow file (streamed), which is gone; the same rows, the same files
    assert sorted(p.name for p in out.iterdir()) == ["dataset_dict.json", "run.json", "steps", "trials"]
    again = tmp_path / "hf2"
    export_run(run_dir, "hf", again)
    for name in ("steps", "trials"):
        for f in sorted((out / name).iterdir()):
            assert f.read_bytes() == (again / name / f.name).read_bytes(), f


def test_dataset_card_declares_both_configs(run_dir, tmp_path):
    export_run(run_dir, "parquet", tmp_path / "e")
    card = (tmp_path / "e" / "README.md").read_text()
    assert "config_name: steps" in card and "config_name: trials" in card
    assert json.loads((run_dir / "run.json").read_text())["suite"]["hash"] in card


def test_bad_input(run_dir, tmp_path):
    with pytest.raises(BenchError, match="unknown export format"):
        export_run(run_dir, "csv", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(BenchError, match="not an empty folder"):
        export_run(run_dir, "parquet", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(BenchError, match="not a run directory"):
        export_run(tmp_path / "nope", "parquet", tmp_path / "y")


def test_missing_datasets_library_is_a_clear_error(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(BenchError, match=r"trajbench\[export\]"):
        export_run(run_dir, "parquet", tmp_path / "x")


def test_run_export_prints_how_to_load(run_dir, tmp_path, capsys):
    assert run_export(run_dir, "hf", tmp_path / "hf") == 0
    assert "load_from_disk" in capsys.readouterr().out


def test_documented_columns_are_the_exported_ones():
    doc = (ROOT / "docs" / "publishing.md").read_text()
    for heading, columns in (("steps", STEP_COLUMNS), ("trials", TRIAL_COLUMNS)):
        section = doc.split(f"<!-- columns:{heading} -->")[1].split("<!-- /columns -->")[0]
        documented = re.findall(r"^\| `([a-z_@0-9]+)` \|", section, flags=re.M)
        assert documented == [c for c, _, _ in columns], heading


def test_cli(run_dir, tmp_path):
    proc = run_cli("export", str(run_dir), "--format", "parquet", "--out", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p" / "trials.parquet").is_file()
    proc = run_cli("export", str(run_dir), "--format", "parquet", "--out", str(tmp_path / "p"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_export_that_fails_midway_leaves_nothing_behind(run_dir, tmp_path, monkeypatch, fmt):
    """The files are written batch by batch (memory holds one batch, not the run), so a failure
    part-way must take the half-written files away again."""
    import bench.publish.export as export

    trial_rows = export.trial_rows

    def rows_then_failure(log):
        yield from trial_rows(log)
        raise OSError("disk full")

    monkeypatch.setattr(export, "trial_rows", rows_then_failure)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):
        with pytest.raises(OSError, match="disk full"):
            export_run(run_dir, fmt, out)
    assert not (tmp_path / "new").exists() and not any((tmp_path / "empty").iterdir())
