"""`trajbench run --k-max/--until` and `diff --sequential`: the design's rounds, resume after a
kill between rounds and mid-round, verify and report on a sequential run, the gate's exit
statuses, and the false-alarm rate of the paired sequential gate checked after every round."""

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from bench.adapters.spec import parse_agent_spec
from bench.analysis.replay import verify_run
from bench.analysis.report import build_report
from bench.analysis.sequential import paired_gate
from bench.analysis.stopping import build_rule
from bench.errors import BenchError
from bench.runs.design import Design, parse_until, walk
from bench.runs.executor import LocalExecutor
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.task import load_schema
from tests.conftest import MINI, run_cli

AGENT = "sim:noisy?p=0.6&noise=0.4"


class Killed(Exception):
    pass


class KillAfter(LocalExecutor):
    """The real local executor, made to die after `trials` finished trials (like a SIGKILL
    between two trials: every finished trial's summary is in the log, trials in flight are lost)."""

    def __init__(self, trials: int):
        super().__init__(2)
        self.left = trials

    def run(self, pending, play, lose, sink, on_done):
        def done(outcome):
            on_done(outcome)
            self.left -= 1
            if self.left <= 0:
                raise Killed

        super().run(pending, play, lose, sink, done)


def sequential(suite, out, until="task:0.6", k=2, k_max=16, executor=None, baseline=None):
    design = Design(k, k_max, until, baseline=baseline)
    config = RunConfig(k=k, out=Path(out), progress=False, retry_backoff_s=0.0, design=design)
    base = None if baseline is None else {t: [str(o) for o in row] for t, row in _outcomes(baseline["dir"]).items()}
    run_benchmark(suite, parse_agent_spec(AGENT), None, config, executor, stop_rule=build_rule(design, base))
    return read_run(out)


def _outcomes(run_dir):
    from bench.runs.design import outcomes_of

    return outcomes_of(list(read_run(run_dir).summaries.values()))


def _trials(log):
    return {t: (s["outcome"], s["seed"]) for t, s in log.summaries.items()}


def test_schedule_and_until_syntax():
    assert Design(4, 32, "task:0.2").schedule() == [4, 8, 16, 32]
    assert Design(4, 30, "task:0.2").schedule() == [4, 8, 16, 30]
    assert Design(3, 10, "pass1:0.1", round_size=3).schedule() == [3, 6, 9, 10]
    assert Design(5, 5, "task:0.2").schedule() == [5]
    assert parse_until("pass1:0.05") == ("pass1", 0.05) and parse_until("gate") == ("gate", None)
    for bad in ("pass1", "task:1.5", "task:x", "gate:1", "width:0.1"):
        with pytest.raises(BenchError):
            parse_until(bad)
    with pytest.raises(BenchError):
        Design(8, 4, "task:0.2")
    with pytest.raises(BenchError):
        Design(2, 8, "gate")  # no baseline


def test_walk_never_shows_the_rule_a_trial_beyond_the_round():
    seen_lengths = []

    def rule(seen, active, n):
        seen_lengths.append((n, max(len(r) for r in seen.values())))
        return {t: "stop" for t in active if seen[t].count("success") == n}  # stop all-success tasks

    design = Design(2, 8, "task:0.5")
    full = {"a": ["success"] * 8, "b": ["failure", "success"] * 4}
    progress = walk(design, rule, ["a", "b"], full)
    assert progress.finished and progress.per_task_n == {"a": 2, "b": 8}
    assert all(longest <= n for n, longest in seen_lengths)
    # with trials missing mid-round, they are owed and no later decision is taken
    partial = {"a": ["success"] * 2, "b": ["failure", "success", None, "failure"]}
    progress = walk(design, rule, ["a", "b"], partial)
    assert progress.owed == {"b": [2]} and len(progress.rounds) == 1


@pytest.mark.parametrize("kill_after", [12, 7])  # 3 tasks × 4 = the first round exactly; mid-round
def test_resume_after_a_kill_continues_the_same_design(mini_suite, tmp_path, kill_after):
    whole = sequential(mini_suite, tmp_path / "whole", k=4)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        sequential(mini_suite, out, k=4, executor=KillAfter(kill_after))
    assert 0 < len(read_run(out).summaries) < len(whole.summaries)
    resumed = sequential(mini_suite, out, k=4)
    assert _trials(resumed) == _trials(whole) and resumed.duplicate_summaries == []
    assert resumed.manifest["design"] == whole.manifest["design"]
    assert resumed.manifest["design"]["finished"]


def test_sequential_run_verifies_reports_and_refuses_another_design(mini_suite, tmp_path):
    log = sequential(mini_suite, tmp_path / "r", until="task:0.5", k=2, k_max=12)
    design = log.manifest["design"]
    assert log.manifest["k"] == 2 and design["schedule"] == [2, 4, 8, 12]
    assert sum(design["per_task_n"].values()) == len(log.summaries)
    assert verify_run(tmp_path / "r").ok
    report = build_report(tmp_path / "r", bootstrap=50)
    seq = report["sequential"]
    assert report["completeness"]["expected_trials"] == len(log.summaries) == seq["expected_trials"]
    assert seq["suite_pass@1_cs"]["lo"] <= report["suite"]["pass@1"]["mean"] <= seq["suite_pass@1_cs"]["hi"]
    assert [e["k"] for e in seq["unbiased_pass^k"]] == [1, 2]
    jsonschema.validate(json.loads(json.dumps(report)), load_schema("report.schema.json"))
    with pytest.raises(BenchError, match="design"):
        sequential(mini_suite, tmp_path / "r", until="task:0.3", k=2, k_max=12)
    # a tampered record of the design is a verify mismatch
    manifest = json.loads((tmp_path / "r" / "run.json").read_text())
    task = next(iter(manifest["design"]["per_task_n"]))
    manifest["design"]["per_task_n"][task] += 1
    (tmp_path / "r" / "run.json").write_text(json.dumps(manifest))
    assert any(m.field == "design" for m in verify_run(tmp_path / "r").mismatches)


def test_cli_refuses_bad_designs_with_exit_2(tmp_path, capsys):
    from bench.cli import main

    for args in (["--until", "task:0.2"], ["--k-max", "8", "--until", "nope"], ["--k-max", "1", "--until", "task:0.2"],
                 ["--k-max", "8", "--until", "gate"], ["--round-size", "2"]):
        assert main(["run", str(MINI), "--agent", AGENT, "-k", "2", "--out", str(tmp_path / "x"), "--quiet", *args]) == 2
        assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_gate_exit_statuses(tmp_path):
    base, cand = tmp_path / "base", tmp_path / "cand"
    assert run_cli("run", str(MINI), "--agent", "sim:oracle", "-k", "8", "--out", str(base), "--quiet").returncode == 0
    bad = run_cli("run", str(MINI), "--agent", AGENT, "-k", "2", "--k-max", "8", "--until", "gate",
                  "--baseline", str(base), "--out", str(cand), "--quiet")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "REGRESSED" in bad.stdout
    # an unfinished candidate: the gate has not decided yet -> 3; a finished one without a drop -> 0
    ok = tmp_path / "ok"
    assert run_cli("run", str(MINI), "--agent", "sim:oracle", "-k", "2", "--k-max", "8", "--until", "gate",
                   "--baseline", str(base), "--out", str(ok), "--quiet", "--seed", "5").returncode == 0
    manifest = json.loads((ok / "run.json").read_text())
    manifest["design"]["finished"] = False
    (ok / "run.json").write_text(json.dumps(manifest))
    undecided = run_cli("diff", str(base), str(ok), "--sequential", "--json")
    assert undecided.returncode == 3, undecided.stderr
    diff = json.loads(undecided.stdout)
    assert diff["sequential"]["outcome"] == "not yet decided" and diff["exit_code"] == 3
    jsonschema.validate(diff, load_schema("diff.schema.json"))


def test_paired_gate_false_alarms_at_most_alpha_when_checked_every_round():
    """H0 true (same rate in both runs, tasks spread 0.1 … 0.95): 20 tasks, rounds of 2 trials up
    to 24, the gate looked at after every round; a false alarm is ANY look saying regressed."""
    rng = np.random.default_rng(18)
    rates = np.linspace(0.1, 0.95, 20)
    streams, alarms = 400, 0
    for _ in range(streams):
        b = rng.random((20, 24)) < rates[:, None]
        c = rng.random((20, 24)) < rates[:, None]
        word = np.where(b, "success", "failure"), np.where(c, "success", "failure")
        for n in range(2, 25, 2):
            base = {str(t): list(word[0][t, :n]) for t in range(20)}
            cand = {str(t): list(word[1][t, :n]) for t in range(20)}
            if paired_gate(base, cand, 0.05).outcome == "regressed":
                alarms += 1
                break
    assert alarms / streams <= 0.05 + 0.01 * 3  # 400 streams: s.e. of a 5% rate is 1.1%
    # and a planted drop of 0.3 on every task is caught
    b = rng.random((20, 24)) < 0.9
    c = rng.random((20, 24)) < 0.6
    decision = paired_gate({str(t): list(np.where(b[t], "success", "failure")) for t in range(20)},
                           {str(t): list(np.where(c[t], "success", "failure")) for t in range(20)})
    assert decision.outcome == "regressed" and decision.extra_trials_per_task == 0
