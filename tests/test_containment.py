"""Issue 15, items 1, 2 and 5: agent code is contained whatever it raises, every log write
succeeds, and the time limit holds for a synchronous agent that never returns. Real runner, real
python adapter, real CLI in a subprocess where the exit status is the point."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.adapters.spec import parse_agent_spec
from bench.runs.logfile import log_path
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from tests.conftest import MINI, ROOT, read_log, run_cli, trials_logged

TASKS = 3  # the mini suite


def run(suite, spec, out, k=2, **kw):
    config = RunConfig(k=k, out=Path(out), progress=False, retry_backoff_s=0.0, **kw)
    run_benchmark(suite, parse_agent_spec(spec), None, config)
    return read_run(out)


@pytest.mark.parametrize("agent", ["RaisesOn", "AsyncRaisesOn"])
@pytest.mark.parametrize("kind, name", [("exit", "SystemExit"), ("interrupt", "KeyboardInterrupt"),
                                        ("genexit", "GeneratorExit")])
def test_an_agent_raising_a_base_exception_fails_its_trial_and_the_run_goes_on(mini_suite, tmp_path, agent, kind, name):
    log = run(mini_suite, f"tests.agents.hostile:{agent}?kind={kind}", tmp_path / "r", k=3)
    assert len(log.summaries) == TASKS * 3  # every trial recorded: the run did not stop
    for s in log.summaries.values():
        if s["task"] == "refund-ask-email":
            assert s["outcome"] == "failure"
            assert f"agent raised {name}" in s["checks"]["agent_completed"]["detail"]
        else:
            assert "agent_completed" not in s["checks"]


def test_sys_exit_in_an_agent_never_claims_a_complete_run(tmp_path):
    """The issue's example: `sys.exit(0)` on one task stopped the run at 16 of 30 trials, exit 0."""
    out = tmp_path / "r"
    proc = run_cli("run", str(MINI), "--agent", "tests.agents.hostile:RaisesOn?kind=exit", "-k", "10",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr  # all 30 recorded: complete (10 of them failures)
    assert len(read_run(out).summaries) == 30 and "Traceback" not in proc.stderr


def test_a_run_with_unrecorded_trials_exits_1(tmp_path, monkeypatch, capsys):
    """The exit status never claims a complete run that is not: if trials of the grid end with
    no record (here: the executor loses one), `run` says how many and exits 1."""
    from bench.cli import main
    from bench.runs import executor as executor_module

    real = executor_module.LocalExecutor.run

    def loses_one(self, pending, *rest):
        return real(self, pending[1:], *rest)

    monkeypatch.setattr(executor_module.LocalExecutor, "run", loses_one)
    code = main(["run", str(MINI), "--agent", "sim:oracle", "-k", "2", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 1 and "1 of 6 trial(s) have no record" in capsys.readouterr().err


def test_timeout_abandons_a_sleeping_sync_agent_at_the_deadline(mini_suite, tmp_path):
    """A sync agent sleeping 20 s under a 2 s limit: the trial ends at ~2 s, recorded as timed out,
    and nothing its thread does afterwards reaches the log."""
    out = tmp_path / "r"
    started = time.monotonic()
    log = run(mini_suite, "tests.agents.hostile:Hangs?seconds=4", out, k=1, timeout_s=1.0, concurrency=2)
    took = time.monotonic() - started
    assert took < 3.5, f"the trials took {took:.1f} s under a 1 s limit"
    assert len(log.summaries) == TASKS
    for s in log.summaries.values():
        assert s["outcome"] == "failure" and s["checks"]["within_time"]["passed"] is False and s["steps"] == 1
    size = log_path(out).stat().st_size
    time.sleep(4.5)  # the abandoned threads wake up and try to call a tool
    assert log_path(out).stat().st_size == size


def test_cli_timeout_2s_on_an_agent_sleeping_20s(tmp_path):
    started = time.monotonic()
    proc = run_cli("run", str(MINI), "--agent", "tests.agents.hostile:Hangs?seconds=20", "-k", "1", "--tasks",
                   "cancel-pending", "--timeout", "2", "--out", str(tmp_path / "r"), "--quiet")
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert took < 12, f"`--timeout 2` on a 20 s sleep took {took:.1f} s (process start included)"
    (summary,) = read_run(tmp_path / "r").summaries.values()
    assert summary["checks"]["within_time"]["passed"] is False and summary["duration_s"] < 3


def test_unencodable_strings_reach_the_log_and_read_back_exactly(mini_suite, tmp_path, cli):
    """The issue's example: an answer with a lone surrogate crashed the writer on every attempt."""
    out = tmp_path / "r"
    log = run(mini_suite, "tests.agents.hostile:surrogates", out, k=2)
    assert len(log.summaries) == TASKS * 2
    for s in log.summaries.values():
        assert s["answer"] == "Cancelled O1 \ud83d and \udfff."
        steps = log.trial_steps(s["trial"])
        assert steps[0]["args"] == {"email": "ada\udc80@example.com"}
        assert steps[1]["messages"][0]["content"] == "hi \ud800"
        assert steps[1]["output"] == {"n": 2**80, "s": [1, 2, 3]}  # a big int exactly; a set as its sorted list
    for line in read_log(out).splitlines():
        json.loads(line)  # every line is JSON text, whichever writer wrote it
    for command in (["report"], ["verify"], ["view"], ["export", "--format", "parquet", "--out", str(tmp_path / "x")]):
        proc = cli(command[0], str(out), *command[1:])
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, (command, proc.stderr)


def test_a_tool_raising_system_exit_in_a_run_is_a_domain_bug(mini_copy, tmp_path):
    """The reference never cancels O3 (so `run`'s suite check passes); the agent does."""
    domain = (mini_copy / "domain.py").read_text()
    marker = '"""Cancel a pending order."""'
    (mini_copy / "domain.py").write_text(domain.replace(marker, f"{marker}\n    if order_id == 'O3':\n        sys.exit(0)"))
    (mini_copy / "domain.py").write_text("import sys\n" + (mini_copy / "domain.py").read_text())
    out = tmp_path / "r"
    proc = run_cli("run", str(mini_copy), "--agent", "tests.agents.toy:cancel_o3", "-k", "1", "--retries", "0",
                   "--tasks", "cancel-pending", "--out", str(out), "--quiet")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "1 of 1 trial(s) ended in an infrastructure error" in proc.stderr
    (summary,) = read_run(out).summaries.values()
    assert summary["outcome"] == "error" and "tool cancel_order crashed: SystemExit" in summary["reason"]


def test_ctrl_c_stops_the_run_promptly_and_resume_completes_it(tmp_path):
    """A real SIGINT to the CLI: exit 130 within seconds, then the same command resumes with no
    lost and no duplicated trial."""
    out = tmp_path / "r"
    # 36 trials at ~1.5 s, two at once: ~27 s of run, room to interrupt it on a loaded machine (at
    # 0.5 s a starved test process once woke after the run had ended and signalled it at exit)
    k = 12
    cmd = [sys.executable, "-m", "bench", "run", str(MINI), "--agent", "tests.agents.hostile:Slow?pause=1.5",
           "-k", str(k), "--concurrency", "2", "--out", str(out), "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if trials_logged(out) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None and trials_logged(out) < TASKS * k, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - sent < 10 and "Traceback" not in stderr
    assert "re-run the same command to resume" in stderr
    partial = len(read_run(out).summaries)
    assert 3 <= partial < TASKS * k
    resumed = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    log = read_run(out)
    assert not log.duplicate_summaries
    assert sorted(log.summaries) == sorted(f"{t}/base/{i}" for t in ("cancel-pending", "refund-ask-email",
                                                                       "refuse-cancel-delivered") for i in range(k))


@pytest.mark.parametrize("arguments, fragment", [
    (["-k", "99999999999999999999999"], "argument -k: expected a whole number from 1 to 100,000"),
    (["-k", "1000000000"], "argument -k: expected a whole number from 1 to 100,000"),
    (["--variants", "typos", "--variants-per-family", "1000000"], "--variants-per-family: expected a whole number from 1 to 1,000"),
    (["--seed", "18446744073709551616"], "--seed: expected a whole number that fits in 64 bits"),
    (["--retries", "-1"], "--retries: expected a whole number from 0 to 100"),
    (["--timeout", "inf"], "--timeout: expected a number of seconds > 0 (at most 7 days)"),
    (["-k", "60000", "--variants", "all"], "the run would have up to 1,260,000 trials"),
])
def test_absurd_run_arguments_fail_at_once_with_the_range(tmp_path, cli, arguments, fragment):
    started = time.monotonic()
    proc = cli("run", str(MINI), "--agent", "sim:oracle", "--out", str(tmp_path / "r"), "--quiet", *arguments)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 30
    assert not (tmp_path / "r").exists()


def test_run_out_and_agent_file_mistakes_are_named(tmp_path, cli):
    existing = tmp_path / "file.txt"
    existing.write_text("not a folder")
    proc = cli("run", str(MINI), "--agent", "sim:oracle", "--out", str(existing), "--quiet")
    assert proc.returncode == 2 and "--out names an existing file" in proc.stderr, proc.stderr
    binary = tmp_path / "agent.toml"
    binary.write_bytes(bytes(range(256)))
    proc = cli("run", str(MINI), "--agent", str(binary), "--out", str(tmp_path / "r"), "--quiet")
    assert proc.returncode == 2 and "not a text file" in proc.stderr and str(binary) in proc.stderr, proc.stderr


def test_outputs_are_never_written_into_a_run_directory(tmp_path, cli):
    run_dir = tmp_path / "run"
    assert cli("run", str(MINI), "--agent", "sim:oracle", "-k", "1", "--out", str(run_dir), "--quiet").returncode == 0
    before = sorted(p.name for p in run_dir.iterdir())
    for command in (["leaderboard", str(run_dir), "--out", str(run_dir)],
                    ["leaderboard", str(run_dir), "--out", str(run_dir / "board")],
                    ["export", str(run_dir), "--format", "jsonl", "--out", str(run_dir / "export")],
                    ["import", "tau-bench", str(run_dir / "run.json"), "--out", str(run_dir / "imported")],
                    ["run", str(MINI), "--agent", "sim:oracle", "-k", "1", "--out", str(run_dir / "nested"), "--quiet"]):
        proc = cli(*command)
        assert proc.returncode == 2 and "run directory" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_more_run_argument_mistakes_are_named(tmp_path, cli):
    binary = tmp_path / "env.json"
    binary.write_bytes(b"\xff\xfe\x00binary")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for arguments, fragment in ((["--executor", "ray", "--runtime-env", str(binary)], "byte 0 is not UTF-8 text"),
                                (["--tasks", ",,,"], "--tasks names no task"),
                                (["--baseline", str(a_file)], "not a run directory (a file, not a folder)"),
                                (["--out", str(a_file / "sub")], "cannot write the run directory")):
        args = ["run", str(MINI), "--agent", "sim:oracle", "-k", "1", "--quiet", *arguments]
        proc = cli(*(args if "--out" in arguments else [*args, "--out", str(tmp_path / "r")]))
        assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr, (arguments, proc.stderr)


def test_a_suite_folder_whose_name_is_not_utf8_runs_and_verifies(tmp_path, cli):
    """Linux paths are bytes: a folder named b"mini\\xff" reaches Python as "mini\\udcff"; the
    manifest, its seal and every reader keep it exactly."""
    import shutil

    suite = tmp_path / "mini\udcff"
    shutil.copytree(MINI, suite, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "r"
    assert cli("run", str(suite), "--agent", "sim:oracle", "-k", "1", "--out", str(out), "--quiet").returncode == 0
    assert read_run(out).manifest["suite"]["path"] == str(suite)
    proc = cli("verify", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_objects_whose_str_and_repr_raise_are_contained(mini_suite, tmp_path):
    log = run(mini_suite, "tests.agents.hostile:broken_objects", tmp_path / "r", k=1)
    assert len(log.summaries) == TASKS
    for s in log.summaries.values():
        assert s["outcome"] == "failure" and "RuntimeError: no text" in s["checks"]["agent_completed"]["detail"]
        assert s["agent_info"]["weird"] == "<unrepresentable _Broken>"


@pytest.mark.parametrize("stateless", [False, True])
def test_a_synchronous_agent_gets_a_new_thread_per_trial_unless_it_is_thread_stateless(stateless):
    """Per-thread state (a threading.local, an event loop the agent set) must not carry from one
    trial to the next: trials on a new thread each, unless the agent declares it keeps none."""
    import asyncio
    import threading

    from bench.runs.trial import _on_thread

    class Agent:
        thread_stateless = stateless

        def __init__(self):
            self.local = threading.local()

        def run(self, episode):
            seen = getattr(self.local, "trials", 0)
            self.local.trials = seen + 1
            if asyncio._get_running_loop() is None:
                try:
                    loop_set = asyncio.get_event_loop_policy().get_event_loop() is not None
                except RuntimeError:
                    loop_set = False
                if not loop_set:
                    asyncio.set_event_loop(asyncio.new_event_loop())
                return (seen, loop_set)
            return (seen, None)

    agent = Agent()

    async def trials():
        return [(await _on_thread(agent, None, None))[0] for _ in range(3)]

    seen = asyncio.run(trials())
    if stateless:  # reused threads: the agent's own promise that nothing per thread matters
        assert seen[1:] == [(1, True), (2, True)]
    else:
        assert seen == [(0, False)] * 3
