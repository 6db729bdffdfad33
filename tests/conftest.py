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


class CliResult:
    """What `cli` returns: the exit status and the captured output, like a CompletedProcess."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """The real command line in process (fast), where no subprocess behaviour is at stake."""
    from bench.cli import main

    def call(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([*args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return call


def read_log(run_dir: Path) -> bytes:
    """The run's log as JSON lines, in either encoding: a compressed `trajectories.jsonl.zst`
    decompressed across its frames by zstandard itself (not by trajbench's reader)."""
    import zstandard

    packed = run_dir / "trajectories.jsonl.zst"
    if not packed.exists():
        return (run_dir / "trajectories.jsonl").read_bytes()
    with open(packed, "rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()


def trials_logged(run_dir: Path) -> int:
    """Finished trials in a run directory (0 before it has a manifest), read while the run may
    still be writing: the reader skips a torn tail."""
    from bench.errors import BenchError
    from bench.runs.rundir import read_run

    try:
        return len(read_run(run_dir).summaries)
    except BenchError:
        return 0


def write_log(run_dir: Path, data: bytes, encoding: str = "jsonl") -> None:
    """Replace the run's log with these bytes (JSON lines, maybe broken on purpose) in either
    encoding: a plain `trajectories.jsonl`, or (`encoding="zstd"`) a `trajectories.jsonl.zst` of
    whole-line frames (three lines each, so a bad line shares its frame with good ones) whose
    torn tail, if the bytes end inside a line, is a torn last frame — what a cut write leaves."""
    import zstandard

    (run_dir / "trajectories.jsonl.zst").unlink(missing_ok=True)
    (run_dir / "trajectories.jsonl").unlink(missing_ok=True)
    if encoding == "jsonl":
        (run_dir / "trajectories.jsonl").write_bytes(data)
        return
    cut = data.rfind(b"\n") + 1
    lines, tail = data[:cut].splitlines(keepends=True), data[cut:]
    compress = zstandard.ZstdCompressor(level=-1, write_checksum=True).compress
    frames = [compress(b"".join(lines[i:i + 3])) for i in range(0, len(lines), 3)]
    if tail:
        frames.append(compress(tail)[:-4])  # its checksum never written
    (run_dir / "trajectories.jsonl.zst").write_bytes(b"".join(frames))


@pytest.fixture(params=["jsonl", "zstd"])
def log_encoding(request: pytest.FixtureRequest) -> str:
    """For tests that corrupt a log: both encodings, since each has its own reader path."""
    return str(request.param)


def assert_follows_the_published_schemas(run_dir: Path) -> None:
    """Every log record and the manifest of a run directory valid against bench/schemas."""
    import jsonschema
    import orjson

    from bench.world.task import load_schema

    records = jsonschema.Draft202012Validator(load_schema("trajectory-record.schema.json"))
    for line in read_log(run_dir).splitlines():
        records.validate(orjson.loads(line))
    jsonschema.validate(orjson.loads((run_dir / "run.json").read_bytes()), load_schema("run.schema.json"))


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
