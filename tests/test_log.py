import hashlib
import os
import re

import orjson
import pytest
import zstandard

from bench.errors import BenchError
from bench.runs.logfile import LOG, PACKED_LOG, LogFile, log_path
from bench.runs.logwriter import LogWriter
from bench.runs.rundir import _unpacked, read_run
from bench.runs.seal import log_digest
from tests.conftest import MINI, read_log, run_cli, write_log


def make_run(tmp_path, k="2", log_format="zstd"):
    out = tmp_path / "r"
    proc = run_cli("run", str(MINI), "--agent", "sim:oracle", "-k", k, "--out", str(out), "--quiet",
                   "--log-format", log_format)
    assert proc.returncode == 0, proc.stderr
    return out


def _torn_write(log_format):
    """What a kill in the middle of a write leaves: part of a line, or part of a frame."""
    line = b'{"type":"step","trial":"cancel-pending/base/9","attempt":"x","step":0,"kind":"tool"}\n'
    return line[:30] if log_format == "jsonl" else zstandard.ZstdCompressor().compress(line)[:-5]


@pytest.mark.parametrize("log_format", ["zstd", "jsonl"])
def test_torn_last_write_is_tolerated_reported_and_cut_on_resume(tmp_path, log_format):
    out = make_run(tmp_path, log_format=log_format)
    path = log_path(out)
    assert path.name == (PACKED_LOG if log_format == "zstd" else LOG)
    whole, torn_bytes = read_run(out), _torn_write(log_format)
    with open(path, "ab") as fh:
        fh.write(torn_bytes)
    torn = read_run(out)
    assert torn.torn_bytes == len(torn_bytes) and len(torn.summaries) == len(whole.summaries)
    report = run_cli("report", str(out))
    assert report.returncode == 0 and "torn line" in report.stdout
    writer = LogWriter(out, log_format="jsonl" if log_format == "zstd" else "zstd")  # the log keeps its encoding
    assert writer.torn_bytes == len(torn_bytes) and writer.path == path
    writer.append({"type": "attempt_error", "trial": "x", "attempt": "y"})
    writer.close()
    assert read_log(out).endswith(b'"attempt":"y"}\n')
    assert read_run(out).torn_bytes == 0


def test_steps_reach_the_file_with_the_record_that_ends_their_attempt(tmp_path):
    writer = LogWriter(tmp_path)
    step = {"type": "step", "trial": "t", "kind": "tool"}
    writer.append({**step, "attempt": "t@a", "step": 0})
    writer.append({**step, "attempt": "t@b", "step": 0})
    writer.append({**step, "attempt": "t@a", "step": 1})
    assert writer.path.read_bytes() == b""  # nothing finished yet: a kill here loses nothing finished
    writer.append({"type": "trial", "trial": "t", "attempt": "t@a", "task": "x", "outcome": "pass"})
    records = [orjson.loads(line) for line in read_log(tmp_path).splitlines()]
    assert [(r["type"], r.get("step")) for r in records] == [("step", 0), ("step", 1), ("trial", None)]
    assert {r["attempt"] for r in records} == {"t@a"}
    writer.close()  # the attempt that never ended keeps its steps
    assert orjson.loads(read_log(tmp_path).splitlines()[-1])["attempt"] == "t@b"


def test_a_compressed_log_is_frames_per_attempt_and_decompresses_to_the_plain_lines(tmp_path):
    out = make_run(tmp_path)
    data = (out / PACKED_LOG).read_bytes()
    plain = read_log(out)  # zstandard's own multi-frame decoder
    summaries = plain.count(b'"type":"trial"')
    assert data.count(b"\x28\xb5\x2f\xfd") >= 2 * summaries  # an attempt's steps, then its summary
    assert len(data) * 3 < len(plain) * 2  # small oracle trials (1.7x); ~4x on model transcripts (docs/performance.md)
    log = read_run(out)
    records = [orjson.loads(line) for line in plain.splitlines()]
    assert dict(log.summaries) == {r["trial"]: r for r in records if r["type"] == "trial"}
    for trial in log.summaries:
        attempt = log.summaries[trial]["attempt"]
        assert log.trial_steps(trial) == [r for r in records if r["type"] == "step" and r["attempt"] == attempt]
    # the seal covers the JSON lines, not their encoding: decompressed for grep, the run still verifies
    assert log_digest(out) == {"sha256": hashlib.sha256(plain).hexdigest(), "bytes": len(plain)}
    write_log(out, plain)
    assert run_cli("verify", str(out)).returncode == 0


def test_positions_in_a_compressed_log_name_a_frame_and_an_offset_in_it(tmp_path):
    out = make_run(tmp_path, k="1")
    log = read_run(out)
    reader, (start, end) = LogFile(out / PACKED_LOG), log.summaries.span(next(iter(log.summaries)))
    assert start >> 32 > 0 and start & 0xFFFFFFFF == 0  # a frame of its own, after its attempt's steps' frame
    line = reader.read(start, end)
    assert orjson.loads(line) == log.summaries[next(iter(log.summaries))]
    (packed,) = [log.steps._spans[a] for a in [log.summaries[next(iter(log.summaries))]["attempt"]]]
    spans = _unpacked(packed) if isinstance(packed, int) else packed
    assert len(spans) == 2 and spans[0] == 0 and spans[1] >> 32 == 0  # the steps: the file's first frame, whole


def test_a_corrupted_frame_or_line_in_a_compressed_log_is_one_clear_error(tmp_path):
    out = make_run(tmp_path)
    path = out / PACKED_LOG
    good, lines = path.read_bytes(), read_log(out).splitlines(keepends=True)
    bad = bytearray(good)
    bad[len(good) // 2] ^= 0xFF  # a flipped byte inside some frame: its checksum or its data no longer holds
    path.write_bytes(bytes(bad))
    proc = run_cli("report", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "byte " in proc.stderr and "trajbench repair" in proc.stderr and str(path) in proc.stderr
    lines[3] = b"garbage\n"  # a bad line in a sound frame: named by its line number, as zstdcat counts
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines)))
    with pytest.raises(BenchError, match="line 4: not valid JSON"):
        read_run(out)


def test_a_frame_over_4_gib_and_a_log_changed_under_a_reader_are_one_clear_error(tmp_path):
    """A sound frame declaring more than 4 GiB of content (a position's in-frame offset has 32
    bits) is refused in one line that says what to do, not quarantined by repair; a position
    that no longer points at a frame (the log changed under the reader) names the file."""
    out = make_run(tmp_path)
    path = out / PACKED_LOG
    good = path.read_bytes()
    # single-segment frame, 8-byte content size (5 GiB), one raw last block of 2 bytes
    huge = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (5 << 30).to_bytes(8, "little") + (2 << 3 | 1).to_bytes(3, "little") + b"x\n"
    path.write_bytes(good + huge)
    for command in ("report", "repair"):
        proc = run_cli(command, str(out))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "more than trajbench reads in one frame (4 GiB)" in proc.stderr and "zstdcat" in proc.stderr
    path.write_bytes(good)
    reader = LogFile(path)
    with pytest.raises(BenchError, match=f"{re.escape(str(path))}.*byte 3"):
        reader.read(3 << 32, (3 << 32) + 10)


def test_a_run_directory_with_both_encodings_is_refused(tmp_path):
    out = make_run(tmp_path, k="1")
    (out / LOG).write_bytes(read_log(out))
    proc = run_cli("report", str(out))
    assert proc.returncode == 2 and "both" in proc.stderr and "Traceback" not in proc.stderr


def test_a_new_log_format_is_checked(tmp_path):
    with pytest.raises(BenchError, match="unknown log format 'gz'"):
        LogWriter(tmp_path, log_format="gz")
    proc = run_cli("run", str(MINI), "--agent", "sim:oracle", "--log-format", "gz", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--log-format" in proc.stderr


def test_every_record_is_one_json_line(tmp_path):
    out = make_run(tmp_path)
    lines = read_log(out).splitlines()
    kinds = [orjson.loads(line)["type"] for line in lines]
    assert kinds.count("trial") == 6 and set(kinds) == {"step", "trial"}


def test_streamed_steps_are_handed_over_in_order_and_not_kept(tmp_path, log_encoding):
    out = make_run(tmp_path)
    orphan = orjson.dumps({"type": "step", "trial": "t", "attempt": "t@dead", "step": 0, "kind": "tool"}) + b"\n"
    write_log(out, read_log(out) + orphan + b'{"type":"step","trial":"cancel-pe', log_encoding)  # a torn line
    whole = read_run(out)
    handed: dict[str, list[dict]] = {}
    streamed = read_run(out, on_step=lambda step: handed.setdefault(step["attempt"], []).append(step))
    assert streamed.steps == {} and handed == whole.steps  # each attempt's steps, in log order
    assert (streamed.summaries, streamed.orphan_attempts, streamed.torn_bytes) == (whole.summaries, 1, whole.torn_bytes)
    assert whole.torn_bytes > 0


def test_gc_paused_nests_and_restores_the_collector():
    import gc

    from bench.runs.rundir import gc_paused

    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.parametrize("log_format", ["zstd", "jsonl"])
def test_a_short_write_is_completed_and_a_failed_one_leaves_no_torn_frame(tmp_path, monkeypatch, log_format):
    """An unbuffered write may write part of the bytes: the writer writes the rest. A write that
    fails part way (a full disk) is cut back, so the log never holds a torn frame with whole
    frames after it, and the run stops with one clear error."""
    import errno

    import bench.runs.logfile as logfile

    real_write, calls = os.write, []

    def short_write(fd, data):
        calls.append(len(data))
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data)[:len(data) if len(calls) == 2 else max(1, len(data) // 2)])

    writer = LogWriter(tmp_path, log_format=log_format)
    writer.append({"type": "step", "trial": "t", "attempt": "a", "step": 0, "kind": "observation"})
    monkeypatch.setattr(logfile.os, "write", short_write)
    writer.append({"type": "attempt_error", "trial": "t", "attempt": "a"})  # a short write, then the rest
    size = writer.path.stat().st_size
    writer.append({"type": "step", "trial": "u", "attempt": "b", "step": 0, "kind": "observation"})
    with pytest.raises(BenchError, match="cannot be written .No space left"):
        writer.append({"type": "attempt_error", "trial": "u", "attempt": "b"})  # half written, then ENOSPC
    monkeypatch.undo()
    assert writer.path.stat().st_size == size
    records = [rec for rec, _, _ in logfile.log_records(writer.path)]
    assert [r["type"] for r in records] == ["step", "attempt_error"] and read_log(tmp_path).count(b"\n") == 2
