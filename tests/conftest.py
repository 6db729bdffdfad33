import os
import subprocess
import sys
from pathlib import Path

import pytest

for var, value in (("LANGSMITH_TRACING_V2", "false"), ("HF_HUB_OFFLINE", "1"),
                   ("HF_DATASETS_OFFLINE", "1"), ("HF_UPDATE_DOWNLOAD_COUNTS", "0")):
    os.environ[var] = value

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "fixtures" / "mini"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


@pytest.fixture
def mini_suite():
    from bench.world.suite import load_suite

    return load_suite(MINI)


@pytest.fixture
def mini_copy(tmp_path):
    """A writable copy of the mini suite, for tests that break it."""
    import shutil

    dest = tmp_path / "mini"
    shutil.copytree(MINI, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest
