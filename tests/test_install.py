"""The built-in suites and roster work from a plain (non-editable) install, away from the
source tree."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_wheel_ships_suites_and_runs_them(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    assert (target / "bench" / "_suites" / "retail" / "tasks").is_dir()
    assert (target / "bench" / "_agents" / "sim-oracle.toml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                              cwd=elsewhere, env=env, timeout=600)

    for suite in ("retail", "calendar", "incident"):
        assert cli("validate", suite).returncode == 0
    run = cli("run", "retail", "--agent", "sim:oracle", "-k", "4", "--out", "runs/oracle", "--quiet")
    assert run.returncode == 0, run.stderr
    report = cli("report", "runs/oracle")
    assert report.returncode == 0 and "pass^4   1.000 [1.000, 1.000]" in report.stdout
    assert str(ROOT) not in (elsewhere / "runs" / "oracle" / "run.json").read_text()
    roster = cli("run", "retail", "--agent", "sim-noisy-80", "-k", "2", "--out", "runs/roster", "--quiet")
    assert roster.returncode == 0, roster.stderr
