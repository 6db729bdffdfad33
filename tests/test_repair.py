"""`trajbench repair` (issue 15, item 6): corrupted lines move to a quarantine file, every valid
record stays, the command says what it did and is idempotent, read-only commands name the bad
line and point to repair, and resuming after a repair completes the run."""

import json

import pytest

from bench.runs.logfile import log_path, unpack_frame, walk_frames
from bench.runs.repair import QUARANTINE
from bench.runs.rundir import LOG, read_run
from tests.conftest import MINI, read_log, write_log

K = 2
GRID = sorted(f"{t}/base/{i}" for t in ("cancel-pending", "refund-ask-email", "refuse-cancel-delivered") for i in range(K))


@pytest.fixture
def run_dir(tmp_path, cli):
    out = tmp_path / "run"
    proc = cli("run", str(MINI), "--agent", "sim:oracle", "-k", str(K), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def _corrupt(run_dir, encoding="jsonl"):
    """Line 2: not JSON; a trial summary with `"outcome": 1` (fails the schema); a step without
    its `kind`; and a torn last line. Returns the original lines and the corrupted line numbers."""
    lines = read_log(run_dir).splitlines(keepends=True)
    summary_at = next(i for i, line in enumerate(lines) if b'"type":"trial"' in line)
    bad_summary = json.loads(lines[summary_at])
    bad_summary["outcome"] = 1
    lines[summary_at] = json.dumps(bad_summary).encode() + b"\n"
    step = json.loads(lines[0])
    del step["kind"]
    lines[0] = json.dumps(step).encode() + b"\n"
    lines.insert(1, b'{"type": "step", "trial": \xff\xfe oops\n')
    write_log(run_dir, b"".join(lines) + b'{"type": "step", "tr', encoding)
    return lines, sorted({1, 2, summary_at + 2})


def _torn_bytes(run_dir):
    """The bytes of the log's torn tail on disk (a torn line, or a torn last frame)."""
    path = log_path(run_dir)
    if path.name == LOG:
        return len(path.read_bytes()) - path.read_bytes().rfind(b"\n") - 1
    return sum(len(seg.data) for seg in walk_frames(open(path, "rb").read) if seg.torn)


def _lines(run_dir):
    """The log's whole lines then its torn tail as text, in either encoding (a torn frame: the
    tail `_corrupt` wrote), as trajbench's own reader finds them."""
    path = log_path(run_dir)
    if path.name == LOG:
        return path.read_bytes()
    whole = b"".join(unpack_frame(seg.data) for seg in walk_frames(open(path, "rb").read) if not seg.torn)
    return whole + (b'{"type": "step", "tr' if _torn_bytes(run_dir) else b"")


def test_read_only_commands_name_the_bad_line_and_point_to_repair(run_dir, tmp_path, cli, log_encoding):
    _corrupt(run_dir, log_encoding)
    before = log_path(run_dir).read_bytes()
    for command in (["report"], ["verify"], ["view", "--out", str(tmp_path / "v.html")], ["diff", str(run_dir)],
                    ["export", "--format", "jsonl", "--out", str(tmp_path / "e")]):
        proc = cli(command[0], str(run_dir), *command[1:])
        assert proc.returncode == 2, (command, proc.stderr)
        assert "line 1" in proc.stderr and str(log_path(run_dir)) in proc.stderr and "trajbench repair" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert log_path(run_dir).read_bytes() == before  # read-only: untouched


def test_repair_quarantines_bad_lines_keeps_the_rest_and_is_idempotent(run_dir, cli, log_encoding):
    original = read_log(run_dir)
    total = len(original.splitlines())
    lines, bad = _corrupt(run_dir, log_encoding)
    proc = cli("repair", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [m["line"] for m in result["moved"]] == bad
    reasons = {m["line"]: m["reason"] for m in result["moved"]}
    assert "not valid JSON" in reasons[2] and "lacks 'kind'" in reasons[1] and "outcome" in reasons[bad[2]]
    assert result["kept"] == total - 2 and result["torn_bytes"] == _torn_bytes(run_dir) > 0
    quarantined = [json.loads(line) for line in (run_dir / QUARANTINE).read_bytes().splitlines()]
    assert [q["line"] for q in quarantined] == bad
    assert quarantined[1]["raw"].encode("utf-8", "surrogateescape") == b'{"type": "step", "trial": \xff\xfe oops'
    repaired = _lines(run_dir)
    assert repaired.endswith(b'{"type": "step", "tr')  # the torn tail is left as `run` handles it
    assert repaired.splitlines()[:-1] == [line.rstrip(b"\n") for n, line in enumerate(lines, start=1)
                                          if n not in bad]  # every other line, in order
    # idempotent
    again = cli("repair", str(run_dir))
    assert again.returncode == 0 and "nothing to repair" in again.stdout and "torn last line" in again.stdout
    assert _lines(run_dir) == repaired
    assert len((run_dir / QUARANTINE).read_bytes().splitlines()) == 3
    # readable again: one trial lost its summary, and resume plays it again
    assert len(read_run(run_dir).summaries) == len(GRID) - 1
    assert cli("report", str(run_dir)).returncode == 0
    resumed = cli("run", str(MINI), "--agent", "sim:oracle", "-k", str(K), "--out", str(run_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    log = read_run(run_dir)
    assert sorted(log.summaries) == GRID and not log.duplicate_summaries
    assert cli("verify", str(run_dir)).returncode == 0


def test_repair_of_a_clean_run_changes_nothing(run_dir, cli):
    before = read_log(run_dir)
    proc = cli("repair", str(run_dir))
    assert proc.returncode == 0 and "nothing to repair" in proc.stdout, proc.stdout + proc.stderr
    assert read_log(run_dir) == before and not (run_dir / QUARANTINE).exists()


def test_repair_of_something_that_is_no_run_is_bad_input(tmp_path, cli):
    proc = cli("repair", str(tmp_path))
    assert proc.returncode == 2 and "run.json is missing" in proc.stderr and "Traceback" not in proc.stderr


def test_repair_of_a_compressed_log_moves_a_bad_frame_and_a_bad_line_and_keeps_the_rest(run_dir, cli):
    """The default log, one zstd frame per attempt: a frame whose bytes were damaged goes to the
    quarantine whole (its attempt's trial is played again on resume), a bad line inside a sound
    frame alone (verify then names its trial's missing step); the other frames keep their lines."""
    import base64

    import zstandard

    from bench.runs.logfile import PACKED_LOG, frame_length

    path = run_dir / PACKED_LOG
    data = path.read_bytes()
    frames, pos = [], 0
    while pos < len(data):
        end = frame_length(data, pos)
        frames.append(data[pos:end])
        pos = end
    assert len(frames) == 2 * len(GRID)  # per attempt: its steps, its summary
    damaged = bytearray(frames[3])  # the second trial's summary
    damaged[len(damaged) // 2] ^= 0xFF
    content = zstandard.ZstdDecompressor().decompress(frames[4]).splitlines(keepends=True)  # the third's steps
    content[0] = b'{"type": "step"}\n'  # lacks its trial, attempt, step and kind
    frames[3], frames[4] = bytes(damaged), zstandard.ZstdCompressor().compress(b"".join(content))
    path.write_bytes(b"".join(frames))
    proc = cli("repair", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    moved = json.loads(proc.stdout)["moved"]
    assert len(moved) == 2 and "no readable zstd frame" in moved[0]["reason"] and "lacks" in moved[1]["reason"]
    quarantined = [json.loads(line) for line in (run_dir / QUARANTINE).read_bytes().splitlines()]
    assert base64.b64decode(quarantined[0]["raw_base64"]) == bytes(damaged)
    assert quarantined[1]["raw"] == '{"type": "step"}'
    log = read_run(run_dir)
    assert len(log.summaries) == len(GRID) - 1  # the damaged frame's trial
    assert cli("repair", str(run_dir)).stdout.startswith("nothing to repair")
    resumed = cli("run", str(MINI), "--agent", "sim:oracle", "-k", str(K), "--out", str(run_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(read_run(run_dir).summaries) == GRID
    verify = cli("verify", str(run_dir))  # the trial that lost a step line (its summary stayed) is named
    assert verify.returncode == 1 and "step 0 missing" in verify.stdout and "1 trial(s)" in verify.stdout


def _packed_frames(run_dir):
    from bench.runs.logfile import PACKED_LOG, walk_frames

    path = run_dir / PACKED_LOG
    return path, [seg.data for seg in walk_frames(open(path, "rb").read)]


def test_a_log_in_another_tools_frames_is_refused_by_readers_and_reframed_by_repair(run_dir, cli):
    """pzstd and other tools cut the stream into frames that end inside a line, with skippable
    frames between: the readers refuse it (a record must lie in one frame to be found by its
    position) and point to repair, which reads the frames as one stream and writes every record
    again in trajbench's frames — nothing quarantined, the content (so the seal) unchanged."""
    import zstandard

    from bench.runs.logfile import content_digest

    path, _ = _packed_frames(run_dir)
    before = content_digest(path)
    stream = read_log(run_dir)
    cuts = [0, 101, len(stream) // 2 + 7, len(stream)]  # inside lines
    compress = zstandard.ZstdCompressor(level=3).compress
    skippable = (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"pzst"
    path.write_bytes(b"".join(skippable + compress(stream[a:b]) for a, b in zip(cuts, cuts[1:])))
    report = cli("report", str(run_dir))
    assert report.returncode == 2 and "trajbench repair" in report.stderr and "Traceback" not in report.stderr
    proc = cli("repair", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["moved"] == [] and result["reframed"] and not (run_dir / QUARANTINE).exists()
    assert content_digest(path) == before and sorted(read_run(run_dir).summaries) == GRID
    assert cli("repair", str(run_dir)).stdout.startswith("nothing to repair")


def test_a_frame_claiming_too_many_bytes_mid_log_is_quarantined_alone(run_dir, cli):
    """A damaged block header in the middle of the log makes a frame claim bytes past the end of
    the file: not a torn last write, since whole frames follow. Repair moves that frame alone
    (numbered by the lines before it), and keeps every frame after it."""
    path, frames = _packed_frames(run_dir)
    damaged = bytearray(frames[3])  # the second trial's summary
    descriptor = damaged[4]
    single = descriptor >> 5 & 1
    p = 5 + (1 - single) + (0, 1, 2, 4)[descriptor & 3] + (single, 2, 4, 8)[descriptor >> 6]
    header = int.from_bytes(damaged[p:p + 3], "little")
    damaged[p:p + 3] = ((1 << 21) - 1 << 3 | header & 7).to_bytes(3, "little")
    frames[3] = bytes(damaged)
    path.write_bytes(b"".join(frames))
    report = cli("report", str(run_dir))
    assert report.returncode == 2 and "whole frames follow" in report.stderr and "Traceback" not in report.stderr
    proc = cli("repair", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    lines_before = sum(frame and len(__import__("zstandard").ZstdDecompressor().decompress(frame).splitlines())
                       for frame in frames[:3])
    assert [m["line"] for m in result["moved"]] == [lines_before + 1] and result["torn_bytes"] == 0
    assert len(read_run(run_dir).summaries) == len(GRID) - 1
    assert cli("report", str(run_dir)).returncode == 0
