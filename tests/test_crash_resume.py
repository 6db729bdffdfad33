"""A real `trajbench run` killed with SIGKILL at random moments resumes with no lost and no
duplicated trial."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from bench.runs.rundir import read_run
from tests.conftest import MINI, ROOT, run_cli

K = 4000  # 3 tasks x 4000 trials: several seconds of work, killed mid-run


def start(out):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "bench", "run", str(MINI), "--agent", "sim:noisy?p=0.6&noise=0.4",
           "-k", str(K), "--out", str(out), "--quiet", "--concurrency", "3"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    out = tmp_path / "run"
    rng = random.Random(20261126)
    kills = 0
    progress = []
    for _ in range(14):
        log = out / "trajectories.jsonl.zst"  # the default encoding: a frame per attempt
        size_before = log.stat().st_size if log.exists() else 0
        proc = start(out)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:  # wait until trials are being written,
            if log.exists() and log.stat().st_size > size_before:   # then kill at a random moment of the run
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.8))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if (out / "run.json").exists():
            progress.append(len(read_run(out).summaries))
    assert kills >= 10, f"only {kills} runs were still going when killed"
    final = run_cli("run", str(MINI), "--agent", "sim:noisy?p=0.6&noise=0.4", "-k", str(K), "--out", str(out),
                    "--quiet", "--concurrency", "3")
    assert final.returncode == 0, final.stderr
    log = read_run(out)
    expected = {f"{task}/base/{i}" for task in ("cancel-pending", "refund-ask-email", "refuse-cancel-delivered")
                for i in range(K)}
    assert set(log.summaries) == expected
    assert log.duplicate_summaries == []
    assert log.torn_bytes == 0
    for trial_id, summary in log.summaries.items():
        steps = log.trial_steps(trial_id)
        assert [s["step"] for s in steps] == list(range(summary["events"])), trial_id
    # the kills happened at different moments: progress was partial and growing
    assert len(set(progress)) >= 5 and min(progress) < len(expected)
