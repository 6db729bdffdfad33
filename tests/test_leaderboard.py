"""`trajbench leaderboard`: every number recomputed independently from the run directories;
refusals (different suites or tasks, bad k), rejection of runs that do not verify, escaping."""

import json
import shutil
import sys
import tarfile
import textwrap
from collections import Counter, defaultdict
from fractions import Fraction
from math import comb

import jsonschema
import numpy as np
import orjson
import pytest

from bench.canonical import step_key
from bench.cli import run_leaderboard
from bench.errors import BenchError
from bench.publish.leaderboard import build_leaderboard
from bench.publish.leaderboard_page import render_html, render_markdown, write_leaderboard
from bench.world.task import load_schema
from tests.conftest import MINI, ROOT, read_log, run_cli, write_log

B = 300  # bootstrap replicates in these tests

# A python agent that reports model turns (tokens, cost), makes tool errors, and loses trial 0 of
# every task to an infrastructure error (so its tasks have fewer valid trials than k).
MODEL_AGENT = textwrap.dedent('''
    import random

    from bench.errors import InfraError

    def agent(episode):
        index = int(episode.trial_id.rsplit("/", 1)[1])
        if index == 0:
            raise InfraError("rate limit exhausted")
        rng = random.Random(episode.seed)
        episode.log_model_turn(output="plan", input_tokens=100 + rng.randint(0, 50), output_tokens=20, cost=0.002)
        if rng.random() < 0.5:
            episode.call("find_customer", {"email": "nobody@example.com"})
        episode.call("find_customer", {"email": "ada@example.com"})
        episode.call("list_orders", {"customer_id": "C1"})
        if "cancel" in episode.instruction and "O2" not in episode.instruction:
            episode.call("cancel_order", {"order_id": "O1" if rng.random() < 0.7 else "O3"})
        episode.log_model_turn(output="answer", input_tokens=80, output_tokens=15, cost=0.001)
        return "Cancelled O1." if rng.random() < 0.8 else "done"
''')


def _run(out, agent, k, *extra):
    proc = run_cli("run", str(MINI), "--agent", agent, "-k", str(k), "--out", str(out), "--quiet", "--retries", "0", *extra)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("lb")
    (base / "model_agent.py").write_text(MODEL_AGENT)
    return [
        _run(base / "oracle", "sim:oracle", 6),
        _run(base / "noisy", "sim:noisy?p=0.2..0.95&noise=0.3", 5),
        _run(base / "model", f"{base / 'model_agent.py'}:agent", 6),
    ]


@pytest.fixture(scope="module")
def board(runs):
    return build_leaderboard(runs, bootstrap=B)


def raw(run_dir):
    manifest = json.loads((run_dir / "run.json").read_text())
    recs = [orjson.loads(line) for line in read_log(run_dir).splitlines()]
    return manifest, recs


# ----------------------------------------------------------------------- independent estimators
def pass_hat(n, c, k):
    return Fraction(comb(c, k), comb(n, k))


def flip(n, c):
    return Fraction(2 * c * (n - c), n * (n - 1))


def bootstrap(per_task, seed=0, replicates=B):
    """Percentile interval of the mean over tasks, resampling tasks with numpy's default_rng(seed)
    draws (the leaderboard's recorded seed); None marks a task where the figure is undefined."""
    T = len(per_task)
    idx = np.random.default_rng(seed).integers(0, T, size=(replicates, T))
    means = []
    for row in idx:
        vals = [per_task[t] for t in row if per_task[t] is not None]
        if vals:
            means.append(float(sum(vals) / len(vals)))
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def expected_entry(run_dir):
    """Every figure of one leaderboard entry, from the raw log lines alone."""
    manifest, recs = raw(run_dir)
    # headline figures: the unperturbed input only (input variants are reported on their own)
    summaries = [r for r in recs if r["type"] == "trial" and r.get("variant_family", "base") == "base"]
    attempts = {s["attempt"] for s in summaries if s["outcome"] != "error"}
    steps = defaultdict(list)
    for r in recs:
        if r["type"] == "step" and r["attempt"] in attempts:
            steps[r["attempt"]].append(r)
    by_task = defaultdict(list)
    for s in summaries:
        if s["outcome"] != "error":
            by_task[s["task"]].append(s)
    tasks = [t for t in manifest["tasks"] if by_task[t]]
    counts = [(len(by_task[t]), sum(s["outcome"] == "success" for s in by_task[t])) for t in tasks]
    kmax = max(n for n, _ in counts)
    exp = {"n_tasks": len(tasks), "k": manifest["k"], "errors": sum(s["outcome"] == "error" for s in summaries)}

    def estimate(values):
        defined = [v for v in values if v is not None]
        lo, hi = bootstrap(values)
        return {"mean": float(sum(defined) / len(defined)), "lo": lo, "hi": hi, "n_tasks": len(defined)}

    exp["pass@1"] = estimate([Fraction(c, n) for n, c in counts])
    exp["pass^k"] = [{"k": j, **estimate([pass_hat(n, c, j) if n >= j else None for n, c in counts])} for j in range(1, kmax + 1)]
    exp["flip"] = estimate([flip(n, c) if n >= 2 else None for n, c in counts])
    exp["per_task"] = [{"task": t, "n": len(by_task[t]), "successes": sum(s["outcome"] == "success" for s in by_task[t]),
                        "pass@1": (sum(s["outcome"] == "success" for s in by_task[t]) / len(by_task[t])) if by_task[t] else None}
                       for t in manifest["tasks"]]

    def per_task_mean(field):
        return sum(sum(s[field] for s in by_task[t]) / len(by_task[t]) for t in tasks) / len(tasks)

    model_turns = [e for a in attempts for e in steps[a] if e["kind"] == "model"]
    exp["mean_steps"] = per_task_mean("steps")
    exp["mean_input_tokens"] = per_task_mean("input_tokens") if model_turns else None
    exp["mean_output_tokens"] = per_task_mean("output_tokens") if model_turns else None
    exp["mean_cost"] = per_task_mean("cost") if model_turns else None
    calls = [e for a in attempts for e in steps[a] if e["kind"] in ("tool", "user")]
    errors = Counter((step_key(e["tool"], e["args"]), e["error"]) for e in calls if e["error"] is not None)
    exp["tool_errors"] = {"calls": len(calls), "errors": sum(errors.values()), "counts": dict(errors)}
    return exp


def close(got, want):
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_every_number_recomputed_independently(runs, board):
    assert board["rank_by"] == {"metric": "pass^k", "k": 5}  # the largest k all three runs share
    assert board["n_tasks"] == 3 and board["tasks"] == json.loads((runs[0] / "run.json").read_text())["tasks"]
    assert len(board["entries"]) == 3 and board["rejected"] == []
    by_dir = {e["run"]["dir"]: e for e in board["entries"]}
    for run_dir in runs:
        entry, exp = by_dir[run_dir.name], expected_entry(run_dir)
        assert entry["n_tasks"] == exp["n_tasks"] and entry["k"] == exp["k"] and entry["trials"]["errors"] == exp["errors"]
        for name in ("pass@1", "flip"):
            for key in ("mean", "lo", "hi"):
                close(entry[name][key], exp[name][key])
            assert entry[name]["n_tasks"] == exp[name]["n_tasks"]
        assert [p["k"] for p in entry["pass^k"]] == [p["k"] for p in exp["pass^k"]]
        for got, want in zip(entry["pass^k"], exp["pass^k"]):
            for key in ("mean", "lo", "hi"):
                close(got[key], want[key])
            assert got["n_tasks"] == want["n_tasks"]
        rank = next(p for p in exp["pass^k"] if p["k"] == 5)
        for key in ("mean", "lo", "hi"):
            close(entry["rank_metric"][key], rank[key])
        assert [(t["task"], t["n"], t["successes"]) for t in entry["per_task"]] == [(t["task"], t["n"], t["successes"]) for t in exp["per_task"]]
        for got, want in zip(entry["per_task"], exp["per_task"]):
            close(got["pass@1"], want["pass@1"])
        for name in ("mean_steps", "mean_input_tokens", "mean_output_tokens", "mean_cost"):
            if exp[name] is None:
                assert entry[name] is None, name
            else:
                close(entry[name], exp[name])
        te = entry["tool_errors"]
        assert (te["calls"], te["errors"]) == (exp["tool_errors"]["calls"], exp["tool_errors"]["errors"])
        for row in te["top"]:
            assert exp["tool_errors"]["counts"][(row["action"], row["error"])] == row["count"]
        assert te["top"] == sorted(te["top"], key=lambda r: -r["count"])
    # ranks: by pass^5, then pass@1, best first
    keys = [(e["rank_metric"]["mean"], e["pass@1"]["mean"]) for e in board["entries"]]
    assert keys == sorted(keys, reverse=True)
    assert [e["rank"] for e in board["entries"]] == [1, 2, 3] or len(set(keys)) < 3
    assert board["entries"][0]["agent"]["name"] == "sim:oracle"
    model = by_dir["model"]
    assert model["mean_cost"] is not None and model["trials"]["errors"] == 3 and not model["agent"]["simulated"]


def test_runs_with_input_variants_are_ranked_on_the_unperturbed_input(runs, tmp_path):
    varied = _run(tmp_path / "varied", "sim:noisy?p=0.2..0.95&noise=0.3", 5, "--variants", "typos,drop")
    board = build_leaderboard([runs[0], varied], bootstrap=B)
    entry = next(e for e in board["entries"] if e["run"]["dir"] == "varied")
    exp = expected_entry(varied)
    assert entry["trials"] == {"expected": 15, "finished": 15, "valid": 15, "errors": 0}
    assert [t["n"] for t in entry["per_task"]] == [5, 5, 5]
    for key in ("mean", "lo", "hi"):
        close(entry["rank_metric"][key], exp["pass^k"][4][key])
        close(entry["pass@1"][key], exp["pass@1"][key])
    close(entry["mean_steps"], exp["mean_steps"])


def test_leaderboard_json_follows_its_schema(runs, board, tmp_path):
    write_leaderboard(board, tmp_path / "lb")
    data = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    jsonschema.Draft202012Validator(load_schema("leaderboard.schema.json")).validate(data)
    assert data == json.loads(json.dumps(board))


def test_readme_ranks_and_labels(board):
    text = render_markdown(board)
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Rank")]
    assert [line.split(" | ")[0] for line in table] == [f"| {e['rank']}" for e in board["entries"]]
    assert "sim:oracle · *simulated*" in text and "*simulated*" not in table[[e["agent"]["simulated"] for e in board["entries"]].index(False)]
    assert board["suite"]["hash"] in text and "pass^5 [95% CI]" in text and "n = 3 tasks" in text
    model_row = table[[e["run"]["dir"] for e in board["entries"]].index("model")]
    assert "$0.0030" in model_row  # cost per trial, known for the model agent
    assert "Infrastructure errors" in text


def test_chosen_k_and_bad_k(runs):
    board = build_leaderboard(runs, k=2, bootstrap=50)
    assert board["rank_by"]["k"] == 2 and board["shown_k"] == [2]
    with pytest.raises(BenchError, match="--k must be between 1 and 5"):
        build_leaderboard(runs, k=6, bootstrap=50)


def test_refuses_runs_of_different_suites(runs, tmp_path, mini_copy):
    db = mini_copy / "db.json"
    db.write_text(db.read_text().replace("12.5", "13.5"))
    other = tmp_path / "other"
    proc = run_cli("run", str(mini_copy), "--agent", "sim:oracle", "-k", "5", "--out", str(other), "--quiet")
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(BenchError, match="different suites"):
        build_leaderboard([runs[0], other], bootstrap=50)


def test_refuses_runs_of_different_tasks(runs, tmp_path):
    subset = _run(tmp_path / "subset", "sim:oracle", 5, "--tasks", "cancel-pending")
    with pytest.raises(BenchError, match="different tasks"):
        build_leaderboard([runs[0], subset], bootstrap=50)


def test_refuses_the_same_run_twice(runs):
    with pytest.raises(BenchError, match="more than once"):
        build_leaderboard([runs[0], runs[0]], bootstrap=50)


def test_run_that_fails_verify_is_rejected_with_reasons(runs, tmp_path, capsys):
    bad = tmp_path / "tampered"
    shutil.copytree(runs[1], bad)
    recs = [orjson.loads(line) for line in read_log(bad).splitlines()]
    victim = next(r for r in recs if r["type"] == "trial" and r["outcome"] == "failure")
    victim["outcome"], victim["reason"] = "success", None
    write_log(bad, b"".join(orjson.dumps(r) + b"\n" for r in recs))

    out = tmp_path / "lb"
    assert run_leaderboard([str(runs[0]), str(bad)], str(out), bootstrap=50) == 1
    err = capsys.readouterr().err
    assert "rejected tampered" in err and "outcome" in err and victim["trial"] in err
    data = json.loads((out / "leaderboard.json").read_text())
    assert [e["run"]["dir"] for e in data["entries"]] == ["oracle"]
    assert data["rejected"][0]["run_dir"] == "tampered" and any("outcome" in r for r in data["rejected"][0]["reasons"])
    assert "Rejected runs" in (out / "README.md").read_text()
    assert 'id="rejected"' in (out / "index.html").read_text()


def test_no_verified_run_writes_nothing(runs, tmp_path, capsys):
    bad = tmp_path / "unfinished"
    shutil.copytree(runs[0], bad)
    lines = read_log(bad).splitlines()
    write_log(bad, b"\n".join(lines[:-1]) + b"\n")  # last summary lost
    assert run_leaderboard([str(bad)], str(tmp_path / "lb"), bootstrap=50) == 1
    assert "completeness" in capsys.readouterr().err
    assert not (tmp_path / "lb").exists()


def test_missing_matplotlib_is_a_clear_error(board, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(BenchError, match=r"trajbench\[plots\]"):
        write_leaderboard(board, tmp_path / "lb")
    assert not (tmp_path / "lb").exists()


def test_untrusted_text_is_escaped_everywhere(board):
    evil = json.loads(json.dumps(board))
    payload = "<script>alert(1)</script> | *x* [l](http://e)"
    evil["entries"][0]["label"] = payload
    evil["entries"][1]["label"] = r"price $\frac{1}{2}$ & 50% {x} \n"  # mathtext and markup: plain text
    evil["entries"][0]["tool_errors"]["top"] = [{"action": f"find_customer({{\"email\":\"{payload}\"}})",
                                                  "error": f"no customer with email {payload}", "count": 1, "trials": 1}]
    evil["rejected"] = [{"run_dir": "x", "run_id": "<b>id</b>", "agent": payload, "simulated": False, "mismatches": 1,
                         "reasons": [f"observation differs: {payload}"]}]
    page = render_html(evil)
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>id</b>" not in page
    assert r"price $\frac{1}{2}$ &amp; 50% {x} \n" in page  # in the table and, verbatim, in the plots' legends
    assert page.count(r"$\frac{1}{2}$") >= 3
    text = render_markdown(evil)
    assert "<script>" not in text and "&lt;script&gt;" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 "))
    assert row.count(" | ") == text.splitlines()[4].count(" | ")  # the | in the name did not add a column
    assert "\\[l\\](http://e)" in text


def test_reproducible_with_source_date_epoch(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    a = build_leaderboard(runs, bootstrap=50)
    b = build_leaderboard(runs, bootstrap=50)
    write_leaderboard(a, tmp_path / "a")
    write_leaderboard(b, tmp_path / "b")
    for name in ("leaderboard.json", "README.md", "index.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a["generated_at"] == "2026-01-01T00:00:00+00:00"


def test_cli(runs, tmp_path, mini_copy):
    out = tmp_path / "lb"
    proc = run_cli("leaderboard", *map(str, runs), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"README.md", "leaderboard.json", "index.html"}
    db = mini_copy / "db.json"
    db.write_text(db.read_text().replace("12.5", "13.5"))
    other = _run(tmp_path / "other", "sim:oracle", 5)
    manifest = json.loads((other / "run.json").read_text())
    manifest["suite"]["hash"] = "0" * 32
    (other / "run.json").write_text(json.dumps(manifest))
    proc = run_cli("leaderboard", str(runs[0]), str(other), "--out", str(tmp_path / "lb2"))
    assert proc.returncode == 2 and "different suites" in proc.stderr and "Traceback" not in proc.stderr


def test_build_script_reproduces_a_leaderboard(tmp_path):
    import subprocess

    out, work = tmp_path / "out", tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "leaderboards" / "build.py"), "--suite", str(MINI), "-k", "3", "--out", str(out),
           "--work", str(work), "--bootstrap", "100"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = {p.name for p in (out / "mini").iterdir()}
    assert files == {"README.md", "leaderboard.json", "index.html"}
    data = json.loads((out / "mini" / "leaderboard.json").read_text())
    assert [e["agent"]["name"] for e in data["entries"]][0] == "sim-oracle"
    assert {e["agent"]["name"] for e in data["entries"]} == {"sim-oracle", "sim-noisy-80", "sim-stepwise", "sim-spread"}
    assert all(e["agent"]["simulated"] for e in data["entries"]) and data["rank_by"]["k"] == 3
    # a rerun resumes the finished runs and gives the same figures
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    again = json.loads((out / "mini" / "leaderboard.json").read_text())
    assert [(e["label"], e["rank_metric"]) for e in again["entries"]] == [(e["label"], e["rank_metric"]) for e in data["entries"]]


@pytest.mark.parametrize("suite", ["retail", "calendar", "incident"])
def test_published_leaderboards_are_current(suite):
    """The committed leaderboards/ follow the schema and were made on the suites as shipped:
    after a change to a suite, rebuild them with `python leaderboards/build.py`."""
    from bench.world.suite import load_suite

    folder = ROOT / "leaderboards" / suite
    data = json.loads((folder / "leaderboard.json").read_text())
    jsonschema.Draft202012Validator(load_schema("leaderboard.schema.json")).validate(data)
    assert data["suite"]["hash"] == load_suite(suite).content_hash, (
        f"leaderboards/{suite} was built on another version of the suite: run `python leaderboards/build.py`")
    assert data["entries"] and not data["rejected"]
    assert (folder / "README.md").is_file() and (folder / "index.html").is_file()


FRAMEWORK_BOARDS = sorted(p for p in (ROOT / "leaderboards" / "frameworks").glob("*") if (p / "leaderboard.json").is_file())


@pytest.mark.parametrize("folder", FRAMEWORK_BOARDS, ids=lambda p: p.name)
def test_the_framework_board_is_published_whole(folder):
    """leaderboards/frameworks/SUITE (the same local model through several agent frameworks,
    leaderboards/frameworks/run.sh) follows the schema, has real (not simulated) entries, its
    pages, and the diffs between frameworks."""
    data = json.loads((folder / "leaderboard.json").read_text())
    jsonschema.Draft202012Validator(load_schema("leaderboard.schema.json")).validate(data)
    assert len(data["entries"]) >= 2 and not any(e["agent"]["simulated"] for e in data["entries"])
    assert not data["rejected"], "a published framework run fails trajbench verify: re-run leaderboards/frameworks/run.sh"
    assert (folder / "README.md").is_file() and (folder / "index.html").is_file()
    for page in ("diffs.md", "reports.md", "summary.md", "runs.tar.xz"):
        assert (folder.parent / page).is_file(), f"leaderboards/frameworks/{page} is missing: run publish.sh"


def _ranked(board: dict) -> list[tuple]:
    return [(e["agent"]["name"], e["run"]["run_id"], e["digest"], e["pass@1"]["mean"], e["pass^k"][-1]["mean"], e["trials"])
            for e in board["entries"]]


@pytest.mark.parametrize("folder", FRAMEWORK_BOARDS, ids=lambda p: p.name)
def test_the_framework_board_is_rebuilt_from_its_committed_runs(folder, tmp_path):
    """The real-model runs cannot be re-made in a test, so the board commits them
    (leaderboards/frameworks/runs.tar.xz): unpacked, every run replays under verify on the
    current suite and gives exactly the published ranking, figures and digests."""
    with tarfile.open(folder.parent / "runs.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    published = json.loads((folder / "leaderboard.json").read_text())
    runs = sorted(p for p in (tmp_path / folder.name).iterdir() if (p / "run.json").is_file())
    assert len(runs) == len(published["entries"]), "runs.tar.xz holds other runs than the published board"
    rebuilt = build_leaderboard(runs, bootstrap=published["bootstrap"]["replicates"], suite=folder.name)
    assert not rebuilt["rejected"], f"a committed run no longer replays on the suite: {rebuilt['rejected']}"
    assert _ranked(rebuilt) == _ranked(published)
