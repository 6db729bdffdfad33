"""The reading pass keeps where each summary and step lies, not the records (bench.runs.rundir
SummaryIndex, StepIndex): what is read back on demand must be exactly what a plain parse of
the log gives, whatever the line order (logs written before one write per attempt interleave
the attempts' steps), and the figures must not depend on it."""

import orjson

from bench.analysis.replay import verify_run
from bench.analysis.report import build_report
from bench.runs.rundir import read_run
from bench.runs.seal import seal_run
from tests.conftest import MINI, read_log, run_cli, write_log


def _plain_parse(run_dir):
    """The reading rules, the naive way: every record in memory."""
    summaries, steps = {}, {}
    for line in read_log(run_dir).split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:  # the torn tail
            continue
        if rec["type"] == "step":
            steps.setdefault(rec["attempt"], []).append(rec)
        elif rec["type"] == "trial":
            summaries.setdefault(rec["trial"], rec)
    return summaries, steps


def _interleaved(lines):
    """The same records with the step lines of neighbouring attempts alternating (each
    attempt's own steps, and its summary after them, keep their order), blank lines between."""
    blocks, current = [], []
    for line in lines:
        current.append(line)
        if b'"type":"trial"' in line:
            blocks.append(current)
            current = []
    out = []
    for a, b in zip(blocks[0::2], blocks[1::2]):
        sa, sb = a[:-1], b[:-1]
        for i in range(max(len(sa), len(sb))):
            out += sa[i:i + 1] + sb[i:i + 1] + [b""]
        out += [a[-1], b[-1]]
    if len(blocks) % 2:
        out += blocks[-1]
    return out + current


def test_records_read_on_demand_equal_a_plain_parse_in_any_line_order(tmp_path, log_encoding):
    src = tmp_path / "r"
    assert run_cli("run", str(MINI), "--agent", "sim:noisy?p=0.5", "-k", "3", "--out", str(src), "--quiet").returncode == 0
    lines = read_log(src).splitlines()
    first = orjson.loads(lines[-1])
    extra = [orjson.dumps({**first, "outcome": "error"}),  # a duplicate summary: the first one counts
             orjson.dumps({"type": "step", "trial": "t", "attempt": "t@orphan", "step": 0, "kind": "tool"})]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "run.json").write_bytes((src / "run.json").read_bytes())
    write_log(mixed, b"\n".join(_interleaved(lines) + extra) + b'\n{"type":"step","tri', log_encoding)
    for run in (src, mixed):
        log = read_run(run)
        summaries, steps = _plain_parse(run)
        assert dict(log.summaries) == summaries and dict(log.steps) == steps
        assert all(log.trial_steps(t) == steps.get(s["attempt"], []) for t, s in summaries.items())
    log = read_run(mixed)
    assert log.duplicate_summaries == [first["trial"]] and log.orphan_attempts == 1 and log.torn_bytes > 0
    assert sum(len(trials) for _, trials in log.by_task()) == len(log.base_trials()) == len(summaries)
    assert [t for t, _ in log.by_task()] == [t for t in log.manifest["tasks"] if any(s["task"] == t for s in summaries.values())]


def test_report_does_not_depend_on_the_order_of_the_log_lines(tmp_path):
    src = tmp_path / "r"
    assert run_cli("run", str(MINI), "--agent", "sim:noisy?p=0.5", "-k", "4", "--out", str(src), "--quiet").returncode == 0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "run.json").write_bytes((src / "run.json").read_bytes())
    write_log(mixed, b"\n".join(_interleaved(read_log(src).splitlines())) + b"\n")
    seal_run(mixed)  # as if its writer had interleaved them: the seal covers the log as written
    a, b = build_report(src, bootstrap=50), build_report(mixed, bootstrap=50)
    a["run"].pop("dir")
    b["run"].pop("dir")
    assert a == b
    result = verify_run(mixed)  # every trial replays from the interleaved log
    assert result.ok and result.trials == 12 and result.steps_replayed > 0, result.mismatches
