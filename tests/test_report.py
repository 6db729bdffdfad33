"""Every figure of a report, recomputed independently from the raw log lines."""

import json
from collections import Counter, defaultdict
from fractions import Fraction
from math import comb

import jsonschema
import orjson
import pytest

from bench.analysis.report import build_report
from bench.publish.text import render_report as render_text
from bench.world.task import load_schema
from tests.conftest import MINI, read_log, run_cli, write_log


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "noisy"
    proc = run_cli("run", str(MINI), "--agent", "sim:noisy?p=0.2..0.95&noise=0.3", "-k", "9", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def raw_records(run_dir):
    return [orjson.loads(line) for line in read_log(run_dir).splitlines()]


def test_records_and_manifest_follow_published_schemas(noisy_run):
    record_schema = jsonschema.Draft202012Validator(load_schema("trajectory-record.schema.json"))
    for record in raw_records(noisy_run):
        record_schema.validate(record)
    jsonschema.validate(json.loads((noisy_run / "run.json").read_text()), load_schema("run.schema.json"))


def test_report_json_follows_schema_and_matches_independent_computation(noisy_run):
    proc = run_cli("report", str(noisy_run), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    jsonschema.validate(report, load_schema("report.schema.json"))

    outcomes = defaultdict(list)
    finals = defaultdict(list)
    for rec in raw_records(noisy_run):
        if rec["type"] == "trial":
            outcomes[rec["task"]].append(rec["outcome"] == "success")
            finals[rec["task"]].append(rec["final_state_hash"])
    rows = {r["task"]: r for r in report["tasks"]}
    k = 9
    assert set(rows) == set(outcomes)
    for task, results in outcomes.items():
        n, c = len(results), sum(results)
        row = rows[task]
        assert (row["n"], row["successes"]) == (n, c)
        assert row["pass@1"] == pytest.approx(c / n)
        assert row["pass^k"] == pytest.approx(float(Fraction(comb(c, k), comb(n, k))))
        assert row["flip"] == pytest.approx(2 * c * (n - c) / (n * (n - 1)))
        top = Counter(finals[task]).most_common(1)[0][1]
        assert row["end_states"] == {"distinct": len(set(finals[task])), "top_share": pytest.approx(top / n)}
    for entry in report["suite"]["pass^k"]:
        j = entry["k"]
        want = sum(Fraction(comb(sum(r), j), comb(len(r), j)) for r in outcomes.values()) / len(outcomes)
        assert entry["mean"] == pytest.approx(float(want))
        assert entry["lo"] <= entry["mean"] <= entry["hi"]
    for entry in report["suite"]["pass@k"]:
        j = entry["k"]
        want = sum(1 - Fraction(comb(len(r) - sum(r), j), comb(len(r), j)) for r in outcomes.values()) / len(outcomes)
        assert entry["mean"] == pytest.approx(float(want))
    assert report["suite"]["pass@1"]["mean"] == pytest.approx(sum(sum(r) / len(r) for r in outcomes.values()) / 3)


def test_simulated_agent_is_labelled_and_truth_shown(noisy_run):
    report = build_report(noisy_run, bootstrap=200)
    text = render_text(report)
    assert "SIMULATED" in text and "known truth" in text
    assert report["simulated_truth"]["pass@1"] == pytest.approx(
        sum(r["true_p"] for r in report["tasks"]) / len(report["tasks"]))


def test_report_is_reproducible(noisy_run):
    assert build_report(noisy_run, bootstrap=300) == build_report(noisy_run, bootstrap=300)


@pytest.mark.parametrize("key", ["action", "state"])
def test_divergence_does_not_depend_on_the_order_of_the_log(noisy_run, tmp_path, key):
    """Concurrent trials interleave in the log. Step keys get their ids as the log is read,
    and ties between equally good branches fall to the lower id: the report's divergence
    section must still be the same whatever the order in which the log lists the attempts."""
    from bench.analysis.divergence.options import DivergenceOptions

    by_attempt: dict[str, list[bytes]] = {}  # each attempt's steps and summary, in order
    for line in read_log(noisy_run).splitlines():
        by_attempt.setdefault(orjson.loads(line)["attempt"], []).append(line)
    reordered = tmp_path / "reordered"
    reordered.mkdir()
    (reordered / "run.json").write_bytes((noisy_run / "run.json").read_bytes())
    write_log(reordered, b"".join(line + b"\n" for lines in reversed(by_attempt.values())
                                                            for line in lines))
    options = DivergenceOptions(key=key)
    original, shuffled = (build_report(d, bootstrap=1, divergence=options)["divergence"] for d in (noisy_run, reordered))
    assert orjson.dumps(original) == orjson.dumps(shuffled)
