"""Replays as run directories (#13): `trajbench replay` logs every continuation into a replay
directory linked to its original (`replay_of`), which report, view, export and verify read;
a killed replay resumes with no continuation lost or duplicated; a changed original is refused.

The agent is the mood agent (`sim:noisy?mood=0.5`): a hidden per-trial mood decides both an
early lookup and the later fatal write, so a replay at the lookup must say *not confirmed* and
one at the write *confirmed* (bench/adapters/sim_mood.py)."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.adapters.spec import parse_agent_spec
from bench.canonical import step_key
from bench.runs.rundir import read_run
from bench.runs.seal import seal_run
from bench.world.suite import load_suite
from tests.conftest import ROOT, assert_follows_the_published_schemas, run_cli

TASK = "retail-001-cancel-stated"
AGENT = "sim:noisy?mood=0.5"


@pytest.fixture(scope="module")
def mood(tmp_path_factory):
    """A k = 16 run of the mood agent, its first bad-mood trial, and where its lookup and write are."""
    base = tmp_path_factory.mktemp("replays")
    run = base / "run"
    assert run_cli("run", "retail", "--agent", AGENT, "-k", "16", "--tasks", TASK, "--out", str(run), "--quiet",
                   "--log-format", "jsonl").returncode == 0  # plain JSON lines: the tests below edit logs as text
    log = read_run(run)
    retail = load_suite("retail")
    plan = parse_agent_spec(AGENT).build().mood_plan(retail, next(t for t in retail.tasks if t.id == TASK))
    bad = next(t for t, s in sorted(log.summaries.items()) if s["agent_info"]["sim"]["mood"] == "bad")
    keys = [step_key(e["tool"], e["args"]) for e in log.trial_steps(bad)]
    lookup, write = keys.index(step_key(plan.lookup.tool, plan.lookup.args)), keys.index(step_key(plan.write.tool, plan.write.args))
    at_lookup = run_cli("replay", str(run), "--task", TASK, "--at", f"{bad}:{lookup}", "-m", "16", "--json")
    at_write = run_cli("replay", str(run), "--task", TASK, "--at", f"{bad}:{write}", "-m", "40", "--no-return", bad, "--json")
    assert at_lookup.returncode == 0 and at_write.returncode == 0, at_lookup.stderr + at_write.stderr
    return {"run": run, "bad": bad, "lookup": json.loads(at_lookup.stdout), "write": json.loads(at_write.stdout),
            "write_at": write, "base": base}


def test_a_replay_is_a_run_directory_linked_to_its_original(mood, cli):
    run, result = mood["run"], mood["write"]
    replay = run / "replays" / f"{TASK}--base-{mood['bad'].rsplit('/', 1)[1]}-{mood['write_at']}--m40"
    assert result["replay_dir"] == str(replay)
    manifest = json.loads((replay / "run.json").read_text())
    original = json.loads((run / "run.json").read_text())
    info = manifest["replay_of"]
    assert info["run_dir"] == "../.." and info["run_id"] == original["run_id"]
    assert info["digest"] == original["seal"]["digest"] and info["log"] == original["seal"]["log"]
    assert (replay / "trajectories.jsonl").exists()  # encoded as its original's log (plain JSON lines here)
    assert info["node"] == {"trial": mood["bad"], "step": mood["write_at"], "prefix": result["prefix"]}
    assert manifest["seal"] and manifest["k"] == 40 and len(info["arms"]) * 40 == result["continuations"]
    assert_follows_the_published_schemas(replay)
    log = read_run(replay)
    original_steps = read_run(run).trial_steps(mood["bad"])
    for summary in log.summaries.values():  # the restored prefix: the original's steps, marked restored
        steps = log.steps_of(summary)
        n = summary["replay"]["step"]
        assert all(e.get("restored") for e in steps[:n]) and not any(e.get("restored") for e in steps[n:])
        assert [e["observation"] for e in steps[:n]] == [e["observation"] for e in original_steps[:n]]
        assert summary["trial"] == f"{TASK}/{summary['variant']}/{summary['index']}"
    # verify replays the replay (its continuations from the restored prefixes) and the original still verifies
    assert cli("verify", str(replay)).returncode == 0
    assert cli("verify", str(run)).returncode == 0
    assert cli("export", str(replay), "--format", "jsonl", "--out", str(mood["base"] / "export")).returncode == 0
    own = cli("report", str(replay), "--json")
    assert own.returncode == 0 and json.loads(own.stdout)["causal"] == [result]
    assert json.loads(own.stdout)["completeness"]["expected_trials"] == result["continuations"]


def test_the_report_shows_lookup_not_confirmed_and_write_confirmed(mood, cli):
    """The symptom and the cause, side by side with the statistical divergence point."""
    report = json.loads(cli("report", str(mood["run"]), "--json").stdout)
    by_step = {r["step"]: r for r in report["causal"]}
    assert by_step == {mood["write_at"]: mood["write"], mood["lookup"]["step"]: mood["lookup"]}
    assert mood["lookup"]["verdict"] == "not confirmed" and mood["write"]["verdict"] == "confirmed"
    [no_return] = mood["write"]["no_return"]
    assert no_return["point_of_no_return"] == mood["write_at"] + 1
    text = cli("report", str(mood["run"])).stdout
    assert "Causal replays" in text and f"step {mood['write_at']}: confirmed" in text
    assert f"step {mood['lookup']['step']}: not confirmed" in text and f"point of no return of {mood['bad']}" in text
    md = cli("report", str(mood["run"]), "--markdown").stdout
    assert "## Causal replays" in md and "| alternative | success | 95% CI |" in md
    assert f"step {mood['write_at']}: confirmed" in md  # in the task table, beside the divergence point


def test_replays_elsewhere_are_found_with_replays_and_bad_outputs_refused(mood, cli, tmp_path):
    out = tmp_path / "elsewhere"
    at = f"{mood['bad']}:{mood['write_at']}"
    done = cli("replay", str(mood["run"]), "--task", TASK, "--at", at, "-m", "4", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["replay_of"]["run_dir"] == str(mood["run"].resolve())
    plain = json.loads(cli("report", str(mood["run"]), "--json").stdout)["causal"]
    found = json.loads(cli("report", str(mood["run"]), "--json", "--replays", str(tmp_path)).stdout)["causal"]
    assert len(found) == len(plain) + 1 and json.loads(done.stdout) in found
    page = tmp_path / "view.html"
    assert cli("view", str(mood["run"]), "--replays", str(out), "--out", str(page)).returncode == 0
    assert str(out) in page.read_text()  # the replay given with --replays annotates the tree
    assert cli("view", str(out), "--out", str(tmp_path / "own.html")).returncode == 0  # a replay's own tree
    assert "replay-label" in (tmp_path / "own.html").read_text()
    other = tmp_path / "other"
    assert cli("run", "retail", "--agent", "sim:oracle", "-k", "1", "--tasks", TASK, "--out", str(other), "--quiet").returncode == 0
    inside = cli("replay", str(mood["run"]), "--task", TASK, "--at", at, "-m", "4", "--out", str(other / "r"))
    assert inside.returncode == 2 and "inside the run directory" in inside.stderr
    different = cli("replay", str(mood["run"]), "--task", TASK, "--at", f"{mood['bad']}:0", "-m", "4", "--out", str(out))
    assert different.returncode == 2 and "a different replay" in different.stderr


def test_a_resumed_original_keeps_its_replays_and_a_changed_one_is_refused(mood, cli, tmp_path):
    """The log is append-only: trials added to the original (`run` again with a larger -k, the
    documented workflow) keep its replays valid; an edit within the bytes a replay read does not."""
    run = tmp_path / "run"
    shutil.copytree(mood["run"], run)
    replay = run / "replays" / Path(mood["write"]["replay_dir"]).name
    before = json.loads(cli("report", str(run), "--json").stdout)["causal"]
    assert cli("run", "retail", "--agent", AGENT, "-k", "18", "--tasks", TASK, "--out", str(run), "--quiet",
               "--log-format", "jsonl").returncode == 0
    assert len(read_run(run).summaries) == 18  # trials added: the seal digest and the log changed
    after = json.loads(cli("report", str(run), "--json").stdout)["causal"]
    assert not any("error" in r for r in after) and len(after) == len(before) == 2
    assert cli("replay", str(replay), "--json").returncode == 0  # resumes (nothing to do)
    assert cli("verify", str(replay)).returncode == 0
    text = (run / "trajectories.jsonl").read_text()  # now edit a byte the replay read
    (run / "trajectories.jsonl").write_text(text.replace('"outcome":"failure"', '"outcome":"success"', 1)
                                            .replace('"outcome": "failure"', '"outcome": "success"', 1))
    again = cli("replay", str(replay))
    assert again.returncode == 2 and "changed since this replay began" in again.stderr and "Traceback" not in again.stderr
    assert "first" in again.stderr and "bytes differ" in again.stderr
    report = json.loads(cli("report", str(run), "--json").stdout)
    assert all("changed since this replay began" in r["error"] for r in report["causal"])
    verify = cli("verify", str(replay), "--json")
    assert verify.returncode == 1 and any(m["field"] == "replay_of" for m in json.loads(verify.stdout)["mismatches"])


def test_a_broken_replay_manifest_is_one_clear_error(mood, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mood["run"], run)
    replay = next((run / "replays").iterdir())
    manifest = json.loads((replay / "run.json").read_text())
    manifest["replay_of"]["arms"][0]["step"] = "three"
    (replay / "run.json").write_text(json.dumps(manifest))
    for command in (["replay", str(replay)], ["verify", str(replay)], ["report", str(replay)]):
        done = cli(*command)
        assert done.returncode == 2 and "replay_of.arms must be" in done.stderr and str(replay) in done.stderr, command
    rows = json.loads(cli("report", str(run), "--json").stdout)["causal"]  # the original's report still works
    assert any("replay_of.arms must be" in r.get("error", "") for r in rows) and any("error" not in r for r in rows)


def test_verify_checks_the_restored_steps(mood, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mood["run"], run)
    replay = run / "replays" / Path(mood["write"]["replay_dir"]).name  # its prefix is not empty
    lines = (replay / "trajectories.jsonl").read_text().splitlines()
    rec = next(json.loads(line) for line in lines if '"restored":true' in line.replace(" ", ""))
    lines = [line if json.loads(line) != rec else json.dumps({**rec, "restored": False}) for line in lines]
    (replay / "trajectories.jsonl").write_text("\n".join(lines) + "\n")
    seal_run(replay)  # resealed: only the link check can see it
    verify = json.loads(cli("verify", str(replay), "--json").stdout)
    assert [(m["trial"], m["field"]) for m in verify["mismatches"]] == [(rec["trial"], "restored")]


@pytest.mark.slow
def test_a_killed_replay_resumes_with_nothing_lost_or_duplicated(mood, tmp_path):
    """A real subprocess killed mid-replay (SIGKILL), a torn last line added, then the same
    command: every continuation once, and the verdict of an uninterrupted replay."""
    run = tmp_path / "run"  # the default, compressed log (trajectories.jsonl.zst): the replay's is too
    assert run_cli("run", "retail", "--agent", AGENT, "-k", "16", "--tasks", TASK, "--out", str(run), "--quiet").returncode == 0
    args = ["replay", str(run), "--task", TASK, "-m", "40", "--no-return", "failed", "--json"]
    replays = run / "replays"
    child = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    deadline, killed_at = time.monotonic() + 120, 0
    while time.monotonic() < deadline and killed_at < 100 and child.poll() is None:
        logs = list(replays.glob("*/trajectories.jsonl.zst"))
        killed_at = len(read_run(logs[0].parent).summaries) if logs else 0
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the replay finished before it was killed: give it more to do"
    [log_file] = logs
    killed_at = len(read_run(log_file.parent).summaries)  # what the kill left (a torn frame is not read)
    with open(log_file, "ab") as fh:
        fh.write(b"\x28\xb5\x2f\xfd\x24\x00")  # a frame cut short
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"cut a torn last line \(\d+ bytes\)", resumed.stderr), resumed.stderr
    assert f"{killed_at} continuation(s) already logged" in resumed.stderr
    result = json.loads(resumed.stdout)
    log = read_run(log_file.parent)
    assert log.duplicate_summaries == [] and len(log.summaries) == result["continuations"] > killed_at
    whole = run_cli(*args[:-1], "--out", str(tmp_path / "whole"), "--json")
    assert {**json.loads(whole.stdout), "replay_dir": result["replay_dir"]} == result
    assert run_cli("verify", str(log_file.parent)).returncode == 0


@pytest.mark.slow
def test_view_annotates_replayed_nodes_in_chromium(mood, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from bench.publish.view import write_view
    from tests.browser import chromium

    page = write_view(mood["run"], task_id=TASK, out=tmp_path / "view.html")
    with chromium(window="1600,1000") as driver:
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1")
        section = driver.find_element(By.CSS_SELECTOR, "section.task.active")
        labels = [t.get_attribute("textContent") for t in section.find_elements(By.CSS_SELECTOR, "text.replay-label")]
        node = mood["write"]["node"]
        assert f"replay {node['successes']}/{node['n']}" in " ".join(labels)
        assert any("confirmed" in label for label in labels)  # a drawn alternative's forced arm and its verdict
        [marked] = section.find_elements(By.CSS_SELECTOR, "g.node.no-return")
        assert marked.find_elements(By.CSS_SELECTOR, ".no-return-mark")
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", marked)
        details = driver.find_element(By.ID, "details").text
        assert f"Point of no return\nof trial {mood['bad']}" in details
        replayed = next(g for g in section.find_elements(By.CSS_SELECTOR, "g.node.replayed")
                        if not g.find_elements(By.CSS_SELECTOR, ".no-return-mark"))
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", replayed)
        details = driver.find_element(By.ID, "details").text
        assert "Continuations from here (replay)" in details and "95% CI [" in details


def test_a_command_agent_resumes_from_trajbench_prefix(tmp_path, cli):
    """The child's own process owns its conversation: it reads the restored calls from the JSON
    file TRAJBENCH_PREFIX names and makes only the calls still to make, over the MCP server of
    the restored episode; a child that declares `resume=none` is refused by one clear error."""
    child = f"cmd:{sys.executable} {ROOT / 'tests' / 'agents' / 'mcp_child_agent.py'} resume"
    run, task = tmp_path / "run", "calendar-001-cancel-own-event"
    assert cli("run", "calendar", "--agent", child, "-k", "1", "--tasks", task, "--out", str(run), "--quiet").returncode == 0
    done = cli("replay", str(run), "--task", task, "--at", f"{task}/base/0:1", "-m", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["node"]["successes"] == 2 and [a["successes"] for a in result["alternatives"]] == [2]
    log = read_run(result["replay_dir"])
    for summary in log.summaries.values():
        own = [e["tool"] for e in log.steps_of(summary) if not e.get("restored")]
        assert own == ["cancel_event"]  # the lookup is not made again; the forced cancel is not repeated
        forced = summary["replay"]["forced"] is not None
        assert summary["answer"] == f"resumed after {1 + forced} step(s)"
    assert cli("verify", result["replay_dir"]).returncode == 0
    refused = cli("replay", str(run), "--task", task, "--at", f"{task}/base/0:1", "-m", "2", "--agent", f"{child}?resume=none")
    assert refused.returncode == 2 and "declares that it cannot continue from a prefix" in refused.stderr
    assert "TRAJBENCH_PREFIX" in refused.stderr and len(list((run / "replays").iterdir())) == 1  # nothing written


def test_default_folders_of_two_variants_at_one_step_differ(tmp_path):
    """TASK/v1/0 and TASK/v2/0 replayed at the same step get folders of their own."""
    from bench.analysis.replays import default_dir

    one, two = (default_dir(tmp_path, TASK, f"{TASK}/{v}/0", 3, 16, "a", "a") for v in ("typo-1", "typo-2"))
    assert one != two and one.name == f"{TASK}--typo-1-0-3--m16"
    assert default_dir(tmp_path, TASK, f"{TASK}/base/2", 3, 16, "b", "a").name == f"{TASK}--base-2-3--m16--b"


def test_a_wrong_replays_path_is_one_clear_error(mood, cli, tmp_path):
    """--replays names a path that holds no replay of this run: refused, not silently dropped."""
    other = tmp_path / "other"
    assert cli("run", "retail", "--agent", "sim:oracle", "-k", "1", "--tasks", TASK, "--out", str(other), "--quiet").returncode == 0
    replay = mood["write"]["replay_dir"]
    for command, path in (("report", tmp_path / "missing"), ("report", replay), ("view", replay), ("report", tmp_path)):
        done = cli(command, str(other), "--replays", str(path), "--out" if command == "view" else "--json",
                   *([str(tmp_path / "v.html")] if command == "view" else []))
        assert done.returncode == 2 and "holds no replay of the run" in done.stderr and str(path) in done.stderr, (command, path)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_replay_seeds_default_to_the_runs_and_another_seed_draws_other_continuations(mood, cli, tmp_path):
    """--seed: by default the original's base seed (recorded in replay_of.seed); two replays of
    one node with different seeds draw different continuations; another seed into the same
    folder is refused."""
    run, at = mood["run"], f"{mood['bad']}:{mood['lookup']['step']}"
    seeds = {}
    for name, extra in (("default", []), ("seven", ["--seed", "7"])):
        done = cli("replay", str(run), "--task", TASK, "--at", at, "-m", "2", "--out", str(tmp_path / name), "--json", *extra)
        assert done.returncode == 0, done.stderr
        manifest = json.loads((tmp_path / name / "run.json").read_text())
        seeds[name] = (manifest["replay_of"]["seed"], sorted(s["seed"] for s in read_run(tmp_path / name).summaries.values()))
    assert seeds["default"][0] == json.loads((run / "run.json").read_text())["base_seed"] and seeds["seven"][0] == 7
    assert not set(seeds["default"][1]) & set(seeds["seven"][1])  # other draws, not the same continuations
    again = cli("replay", str(run), "--task", TASK, "--at", at, "-m", "2", "--out", str(tmp_path / "seven"), "--seed", "8")
    assert again.returncode == 2 and "replay_of.seed was 7, now 8" in again.stderr
    own = cli("replay", str(tmp_path / "seven"), "--seed", "8")
    assert own.returncode == 2 and "seed 7, not 8" in own.stderr and "Traceback" not in own.stderr
    assert cli("replay", str(tmp_path / "seven"), "--seed", "7", "--json").returncode == 0  # its own seed: resumes


def test_diff_and_leaderboard_refuse_a_replay_and_its_report_keeps_the_arms_apart(mood, cli, tmp_path):
    """A replay is not a benchmark run: diff (either side) and leaderboard refuse it from its
    run.json (its log is not even read); its report shows the arms and the verdict, never
    pass^k over pooled arms, a simulated agent's known truth or a divergence analysis."""
    import jsonschema

    from bench.world.task import load_schema

    run, replay = mood["run"], Path(mood["write"]["replay_dir"])
    for base, cand in ((run, replay), (replay, run)):
        done = cli("diff", str(base), str(cand))
        assert done.returncode == 2 and "is not a benchmark run" in done.stderr and "trajbench diff" in done.stderr
        assert "no significant regression" not in done.stdout and len(done.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    shutil.copytree(replay, broken)
    (broken / "trajectories.jsonl").write_text("not json\n")  # never read: the manifest decides first
    ranked = cli("leaderboard", str(run), str(broken), "--out", str(tmp_path / "board"))
    assert ranked.returncode == 2 and "is not a benchmark run" in ranked.stderr and "line 1" not in ranked.stderr
    report = json.loads(cli("report", str(replay), "--json").stdout)
    jsonschema.validate(report, load_schema("report.schema.json"))
    assert not {"suite", "tasks", "divergence", "simulated_truth"} & set(report)
    arms = report["replay"]["arms"]
    assert [a["variant"] for a in arms] == [a["variant"] for a in json.loads((replay / "run.json").read_text())["replay_of"]["arms"]]
    assert all(a["n"] == 40 for a in arms) and sum(a["successes"] for a in arms) == sum(
        s["outcome"] == "success" for s in read_run(replay).summaries.values())
    node = next(a for a in arms if a["role"] == "node")
    assert (node["successes"], node["n"]) == (mood["write"]["node"]["successes"], mood["write"]["node"]["n"])
    text = cli("report", str(replay)).stdout
    assert not re.search(r"pass[\^@]\d", text) and "known truth" not in text and "q =" not in text and "Causal replays" in text
    assert "not a benchmark run" in text and f"{node['successes']:>3}/40" in text
    md = cli("report", str(replay), "--markdown").stdout
    assert "| role | from | forced step | success | 95% CI |" in md and not re.search(r"pass[\^@]\d", md) and "## Causal replays" in md
    import bench
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="not a benchmark run"):
        bench.load(replay).pass_hat_k()  # the Python API: the same rule, no KeyError
