import orjson

from bench.runs.logfile import LogWriter
from bench.runs.rundir import read_run
from tests.conftest import MINI, run_cli


def make_run(tmp_path, k="2"):
    out = tmp_path / "r"
    assert run_cli("run", str(MINI), "--agent", "sim:oracle", "-k", k, "--out", str(out), "--quiet").returncode == 0
    return out


def test_torn_last_line_is_tolerated_reported_and_cut_on_resume(tmp_path):
    out = make_run(tmp_path)
    log_path = out / "trajectories.jsonl"
    whole = read_run(out)
    with open(log_path, "ab") as fh:
        fh.write(b'{"type":"step","trial":"cancel-pe')
    torn = read_run(out)
    assert torn.torn_bytes == len(b'{"type":"step","trial":"cancel-pe') and len(torn.summaries) == len(whole.summaries)
    report = run_cli("report", str(out))
    assert report.returncode == 0 and "torn line" in report.stdout
    writer = LogWriter(out)
    assert writer.torn_bytes > 0
    writer.append({"type": "attempt_error", "trial": "x", "attempt": "y"})
    writer.close()
    assert log_path.read_bytes().endswith(b'"attempt":"y"}\n')
    assert read_run(out).torn_bytes == 0


def test_steps_reach_the_file_with_the_record_that_ends_their_attempt(tmp_path):
    writer = LogWriter(tmp_path)
    step = {"type": "step", "trial": "t", "kind": "tool"}
    writer.append({**step, "attempt": "t@a", "step": 0})
    writer.append({**step, "attempt": "t@b", "step": 0})
    writer.append({**step, "attempt": "t@a", "step": 1})
    assert writer.path.read_bytes() == b""  # nothing finished yet: a kill here loses nothing finished
    writer.append({"type": "trial", "trial": "t", "attempt": "t@a", "task": "x", "outcome": "pass"})
    records = [orjson.loads(line) for line in writer.path.read_bytes().splitlines()]
    assert [(r["type"], r.get("step")) for r in records] == [("step", 0), ("step", 1), ("trial", None)]
    assert {r["attempt"] for r in records} == {"t@a"}
    writer.close()  # the attempt that never ended keeps its steps
    assert orjson.loads(writer.path.read_bytes().splitlines()[-1])["attempt"] == "t@b"


def test_every_record_is_one_json_line(tmp_path):
    out = make_run(tmp_path)
    lines = (out / "trajectories.jsonl").read_bytes().splitlines()
    kinds = [orjson.loads(line)["type"] for line in lines]
    assert kinds.count("trial") == 6 and set(kinds) == {"step", "trial"}


def test_streamed_steps_are_handed_over_in_order_and_not_kept(tmp_path):
    out = make_run(tmp_path)
    with open(out / "trajectories.jsonl", "ab") as fh:  # an orphan attempt's step, then a torn line
        fh.write(orjson.dumps({"type": "step", "trial": "t", "attempt": "t@dead", "step": 0, "kind": "tool"}) + b"\n")
        fh.write(b'{"type":"step","trial":"cancel-pe')
    whole = read_run(out)
    handed: dict[str, list[dict]] = {}
    streamed = read_run(out, on_step=lambda step: handed.setdefault(step["attempt"], []).append(step))
    assert streamed.steps == {} and handed == whole.steps  # each attempt's steps, in log order
    assert (streamed.summaries, streamed.orphan_attempts, streamed.torn_bytes) == (whole.summaries, 1, whole.torn_bytes)


def test_gc_paused_nests_and_restores_the_collector():
    import gc

    from bench.runs.rundir import gc_paused

    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
