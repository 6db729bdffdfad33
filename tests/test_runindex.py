"""The run index (bench/runs/runindex.py): written by the run, verified before use, rebuilt or
extended from the log whenever it does not describe it — and `report` is the same with it,
without it, and whatever was done to it or to the log."""

import os
import struct
import zlib

import orjson
import pytest

from bench.analysis.divergence import keys
from bench.analysis.divergence.keys import read_keyed
from bench.analysis.divergence.options import DivergenceOptions
from bench.analysis.report import build_report
from bench.runs import indexcodec, runindex
from bench.runs.logfile import log_path
from bench.runs.logwriter import LogWriter
from bench.runs.repair import repair_run
from bench.runs.rundir import read_run
from bench.runs.runindex import INDEX, load
from tests.conftest import MINI, read_log, run_cli, write_log

OPTIONS = [DivergenceOptions(), DivergenceOptions(key="state"), DivergenceOptions(key="state", ignore_read_only=True,
           include_user=True), DivergenceOptions(fork="raw", include_user=True, include_model=True, collapse_repeats=False),
           DivergenceOptions(ignore_read_only=True)]


def _run(tmp_path, name="r", suite=str(MINI), agent="sim:noisy?step_error=0.15", k="3", log_format="zstd"):
    out = tmp_path / name
    proc = run_cli("run", suite, "--agent", agent, "-k", k, "--out", str(out), "--quiet", "--log-format", log_format)
    assert proc.returncode == 0, proc.stderr
    return out


def _slow(run, options=None):
    return orjson.dumps(build_report(run, bootstrap=50, divergence=options, index=False))


def _fast(run, options=None):
    return orjson.dumps(build_report(run, bootstrap=50, divergence=options))


def _same_keys(run, options):
    """The index's keyed run against the reading pass's: keys (as labels), positions, calls,
    actions, read-only calls, and the reading pass's counts."""
    a, b = read_keyed(run, options), read_keyed(run, options, index=False)
    assert list(a.log.summaries) == list(b.log.summaries)
    assert list(a.log.summaries.cores()) == list(b.log.summaries.cores())
    for trial in b.log.summaries:
        ka, kb = a.keys(b.log.summaries[trial]), b.keys(b.log.summaries[trial])
        assert [a.keyer.labels[i] for i in ka.keys] == [b.keyer.labels[i] for i in kb.keys]
        assert [a.keyer.labels[i] for i in ka.actions] == [b.keyer.labels[i] for i in kb.actions]
        assert (ka.where, ka.calls, ka.events) == (kb.where, kb.calls, kb.events)
    assert {a.keyer.labels[i] for i in a.keyer.read_only_ids} == {b.keyer.labels[i] for i in b.keyer.read_only_ids}
    for field in ("attempt_errors", "duplicate_summaries", "orphan_attempts", "torn_bytes"):
        assert getattr(a.log, field) == getattr(b.log, field), field


@pytest.mark.parametrize("log_format", ["zstd", "jsonl"])
def test_a_run_writes_its_index_and_report_reads_the_same_from_it(tmp_path, log_format, monkeypatch):
    out = _run(tmp_path, log_format=log_format)
    assert (out / INDEX).is_file()
    loaded = load(out)
    assert not loaded.rebuilt and loaded.indexable  # the run's own index, used as it is
    monkeypatch.setattr(keys, "KEY_CHUNK", 4)  # attempts keyed in chunks, as on a large run
    for options in OPTIONS:
        _same_keys(out, options)
        assert _fast(out, options) == _slow(out, options)
    calls = []
    monkeypatch.setattr(runindex, "log_records", lambda *a, **k: calls.append(a) or iter(()))
    _fast(out)
    assert not calls  # read from the index alone: not one line of the log parsed


@pytest.mark.slow
def test_the_built_in_suites_report_the_same_with_and_without_the_index(tmp_path):
    for suite in ("retail", "calendar", "incident"):
        out = _run(tmp_path, suite, suite=suite, agent="sim:noisy?p=0.2..0.95", k="2")
        assert _fast(out) == _slow(out)
        text = run_cli("report", str(out), "--markdown").stdout
        (out / INDEX).unlink()
        assert run_cli("report", str(out), "--markdown").stdout == text  # rebuilt in memory from the log
        assert not (out / INDEX).exists()  # a read-only command never writes into the run directory


def _tamper_cases():
    def resumed(out):  # a later writer that keeps no index (an older trajbench) appends to the log
        writer = LogWriter(out, index=False)
        writer.append({"type": "step", "trial": "x/base/0", "attempt": "x@1", "step": 0, "kind": "tool",
                       "tool": "get_order", "args": {"order_id": "#W1"}, "read_only": True, "state_hash": "s"})
        writer.append({"type": "trial", "trial": "x/base/0", "attempt": "x@1", "task": "x", "outcome": "success",
                       "steps": 1, "final_state_hash": "s", "checks": {}, "milestones": {}})
        writer.append({"type": "attempt_error", "trial": "x/base/1", "attempt": "x@2", "error": "boom"})
        writer.close()

    def edited(out):  # a summary edited in place: the same bytes long, a later mtime
        data = read_log(out)
        at = data.index(b'"outcome":"success"')
        write_log(out, data[:at] + b'"outcome":"failure"' + data[at + 19:], "zstd")

    def truncated(out):  # a kill in the middle of a block's write
        path = out / INDEX
        path.write_bytes(path.read_bytes()[:-7])

    def garbage(out):
        (out / INDEX).write_bytes(os.urandom(5000))

    def garbage_block(out):  # a sound header, a damaged block
        data = bytearray((out / INDEX).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (out / INDEX).write_bytes(bytes(data))

    def crafted(out):  # a block whose crc holds but whose call keys point past the key table
        data = bytearray((out / INDEX).read_bytes())
        at = indexcodec.HEAD.size
        main_len = struct.unpack_from("<I", data, at)[0]
        main = at + indexcodec.BLOCK.size
        meta = indexcodec.Meta(*indexcodec.META.unpack_from(data, main))
        labels = main + indexcodec.META.size + meta.entries * 31 + meta.steps * 5
        struct.pack_into("<i", data, labels, 10 ** 6)
        struct.pack_into("<I", data, at + 4, zlib.crc32(bytes(data[main:main + main_len])))
        (out / INDEX).write_bytes(bytes(data))
        assert load(out).rebuilt

    def states(out):  # a damaged section of state hashes (read only for key="state")
        data = bytearray((out / INDEX).read_bytes())
        at = indexcodec.HEAD.size
        main_len, _, states_len, _ = indexcodec.BLOCK.unpack_from(data, at)
        data[at + indexcodec.BLOCK.size + main_len + states_len // 2] ^= 0x01
        (out / INDEX).write_bytes(bytes(data))

    def version(out):
        data = bytearray((out / INDEX).read_bytes())
        struct.pack_into("<I", data, 8, indexcodec.VERSION + 1)
        (out / INDEX).write_bytes(bytes(data))

    def torn_log(out):  # a kill in the middle of the log's last write
        with open(log_path(out), "ab") as fh:
            fh.write(b"\x28\xb5\x2f\xfd\x24\x55\x00\x00")

    def duplicate(out):  # a second summary of a trial, and steps no summary claims
        data = read_log(out)
        line = next(x for x in data.splitlines(keepends=True) if x.startswith(b'{"type":"trial"'))
        orphan = b'{"type":"step","trial":"x/base/9","attempt":"orphan","step":0,"kind":"tool","tool":"get_x"}\n'
        write_log(out, data + line + orphan, "zstd")

    return {f.__name__: f for f in (resumed, edited, truncated, garbage, garbage_block, crafted, states, version, torn_log, duplicate)}


@pytest.mark.parametrize("case", list(_tamper_cases()))
def test_whatever_was_done_to_the_index_or_the_log_the_report_is_the_log_s(tmp_path, case):
    out = _run(tmp_path)
    _tamper_cases()[case](out)
    _same_keys(out, DivergenceOptions())
    _same_keys(out, DivergenceOptions(key="state"))
    assert _fast(out) == _slow(out)
    assert _fast(out) == _slow(out)  # again: with the index as the first report left it


def test_an_index_from_another_run_is_not_used(tmp_path):
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b", agent="sim:noisy?p=0.3", k="2")
    (b / INDEX).write_bytes((a / INDEX).read_bytes())
    assert load(b).rebuilt
    assert _fast(b) == _slow(b)


def test_a_killed_run_s_index_lags_and_is_extended_then_a_resume_brings_it_up_to_date(tmp_path, monkeypatch):
    out = _run(tmp_path)
    path = out / INDEX
    monkeypatch.setattr(runindex, "FLUSH_ENTRIES", 2)
    assert runindex.write_index(out)  # in blocks of 2 attempts (the run wrote one: it had fewer than 1024)
    blocks, end, _ = runindex._read_index(out, log_path(out))
    assert len(blocks) > 2
    path.write_bytes(path.read_bytes()[:end - 1])  # the last block torn: the index covers a prefix of the log
    loaded = load(out)
    assert not loaded.rebuilt
    assert _fast(out) == _slow(out)
    writer = LogWriter(out)  # what a resume does: the index is brought up to the log first, then appended to
    writer.append({"type": "attempt_error", "trial": "x/base/1", "attempt": "x@2", "error": "boom"})
    writer.close()
    blocks, end, _ = runindex._read_index(out, log_path(out))
    assert end == path.stat().st_size and runindex._check(log_path(out), blocks) == "exact"
    assert _fast(out) == _slow(out)


def test_an_edit_in_place_of_an_earlier_block_then_growth_is_found(tmp_path, monkeypatch):
    """Review s4 finding 1: a same-length edit of an early record, then an append: not served
    from the stale columns (every block's edges are checked, not only the last block's)."""
    out = _run(tmp_path, log_format="jsonl")
    monkeypatch.setattr(runindex, "FLUSH_ENTRIES", 2)
    monkeypatch.setattr(runindex, "EDGE", 256)  # blocks longer than their two edges, as on a real run
    records = [orjson.loads(line) for line in read_log(out).splitlines()]
    log_path(out).unlink()
    (out / INDEX).unlink()
    writer = LogWriter(out, log_format="jsonl")  # the run's log written again, its index in blocks of 2 writes
    for rec in records:
        writer.append(rec)
    writer.close()
    blocks, _, _ = runindex._read_index(out, log_path(out))
    assert len(blocks) > 2 and blocks[0][0].log_end > 2 * runindex.EDGE
    assert not load(out).rebuilt
    data = read_log(out)
    at = data.index(b'"tool":"') + 8  # the first call's tool, renamed (same length): its key changes
    edited = data[:at] + b"x" * (data.index(b'"', at) - at) + data[data.index(b'"', at):]
    write_log(out, edited + b"\n", "jsonl")  # ...then the log grows
    assert load(out).rebuilt
    _same_keys(out, DivergenceOptions())
    assert _fast(out) == _slow(out)


def test_a_resumed_run_reads_the_same(tmp_path):
    out = _run(tmp_path, k="2")
    proc = run_cli("run", str(MINI), "--agent", "sim:noisy?step_error=0.15", "-k", "2", "--out", str(out),
                   "--quiet")  # the same command again: nothing left to run, the writer reopens the index
    assert proc.returncode == 0, proc.stderr
    assert not load(out).rebuilt
    assert _fast(out) == _slow(out)


def test_an_interleaved_old_log_and_an_unindexable_one_read_as_the_log_says(tmp_path):
    out = _run(tmp_path, k="2", log_format="jsonl")
    lines = read_log(out).splitlines(keepends=True)
    steps = [x for x in lines if x.startswith(b'{"type":"step"')]
    rest = [x for x in lines if not x.startswith(b'{"type":"step"')]
    write_log(out, b"".join(steps[1::2] + steps[0::2] + rest))  # attempts' steps interleaved, summaries last
    _same_keys(out, DivergenceOptions())
    assert _fast(out) == _slow(out)
    write_log(out, b"".join(lines).replace(b'"step":0,', b'"step":4294967296,', 1))  # beyond the int32 columns
    assert not load(out).indexable
    assert _fast(out) == _slow(out)


def test_the_read_only_commands_never_write_the_index_and_repair_writes_it_where_it_can(tmp_path, monkeypatch):
    out = _run(tmp_path)
    (out / INDEX).unlink()
    for command in (("report", str(out)), ("diff", str(out), str(out)),
                    ("export", str(out), "--format", "jsonl", "--out", str(tmp_path / "export"))):
        proc = run_cli(*command)
        assert proc.returncode in (0, 1) and not (out / INDEX).exists(), (command, proc.stderr)
    assert load(out).rebuilt and _fast(out) == _slow(out)

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(runindex.os, "replace", refuse)
    assert not runindex.write_index(out) and not (out / INDEX).exists()


def test_repair_writes_a_fresh_index_and_verify_never_reads_it(tmp_path, monkeypatch):
    out = _run(tmp_path)
    data = read_log(out)
    write_log(out, data + b'{"type":"trial","oops\n' + data[-10:], "jsonl")
    repair_run(out)
    assert (out / INDEX).is_file() and not load(out).rebuilt
    assert _fast(out) == _slow(out)

    def no_index(*args, **kwargs):
        raise AssertionError("verify read the index")

    monkeypatch.setattr(runindex, "load", no_index)
    assert run_cli("verify", str(out)).returncode in (0, 1)
    from bench.analysis.replay import verify_run

    verify_run(out)  # in this process, where reading the index would raise


def test_read_run_is_unchanged_by_the_index(tmp_path):
    out = _run(tmp_path)
    a = read_run(out)
    (out / INDEX).unlink()
    b = read_run(out)
    assert list(a.summaries.items()) == list(b.summaries.items())


def test_run_writes_the_index_without_importing_numpy(tmp_path):
    code = ("import sys; from bench.cli import main; sys.argv = ['trajbench', 'run', sys.argv[1], '--agent', 'sim:oracle', "
            "'-k', '1', '--out', sys.argv[2], '--quiet']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('numpy' in sys.modules)")
    import subprocess
    import sys

    for _ in range(2):  # a new run, then a resume (the index reopened)
        proc = subprocess.run([sys.executable, "-c", code, str(MINI), str(tmp_path / "r")], capture_output=True, text=True)
        assert proc.stdout.strip().splitlines()[-1] == "False", proc.stderr
    assert (tmp_path / "r" / INDEX).is_file()
