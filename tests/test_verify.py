"""`trajbench verify`: honest runs replay clean; every kind of tampering is caught."""

import shutil
import textwrap

import orjson
import pytest

from bench.analysis.replay import verify_run
from bench.cli import run_verify
from bench.errors import BenchError
from bench.publish.text import render_verify as render_text
from bench.runs.logfile import log_path
from bench.runs.seal import seal_run
from tests.conftest import MINI, read_log, run_cli, write_log

# A python agent that does everything wrong at least once: unknown tools, invalid and non-JSON
# arguments, bad ask_user calls, model turns with tokens and cost, infrastructure errors (once,
# and on every attempt), a crash, an exhausted step budget and a timeout. Behaviour is chosen by
# the trial index so that every kind occurs for every task.
MESSY_AGENT = textwrap.dedent('''
    import random
    import time

    from bench.errors import InfraError

    SEEN = {}

    def messy(episode):
        index = int(episode.trial_id.rsplit("/", 1)[1])
        attempt = SEEN[episode.trial_id] = SEEN.get(episode.trial_id, 0) + 1
        rng = random.Random(episode.seed)
        if index == 0 or (index == 1 and attempt == 1):
            episode.call("list_orders", {"customer_id": "C1"})
            raise InfraError("endpoint returned 503")
        episode.log_model_turn(messages=[{"role": "user", "content": episode.instruction}], output="thinking",
                               input_tokens=rng.randint(10, 99), output_tokens=7, latency_s=0.01, cost=0.0013,
                               model="fake-1")
        episode.call("no_such_tool", {"x": 1})
        episode.call("find_customer", {"email": 42})
        episode.call("find_customer", ["not", "a", "dict"])
        episode.call("find_customer", {"email": {1, 2}})
        episode.call("ask_user", {"question": 5})
        episode.call("ask_user", {"question": "What is your email?"})
        episode.call("find_customer", {"email": "ada@example.com"})
        if index == 2:
            raise ValueError("agent bug")
        if index == 3:
            while True:
                episode.call("list_orders", {"customer_id": "C1"})
        if index == 4:
            time.sleep(1.3)
        episode.call("cancel_order", {"order_id": rng.choice(["O1", "O2", "O3"])})
        episode.call("refund_order", {"order_id": "O2", "amount": rng.choice([12.5, 99.0])})
        episode.log_model_turn(output="final", input_tokens=5, output_tokens=3, cost=0.0002)
        return rng.choice(["Cancelled O1.", "Refunded 12.50", "done"])
''')


def _run(out, agent, *extra):
    proc = run_cli("run", str(MINI), "--agent", agent, "--out", str(out), "--quiet", *extra)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "noisy"
    return _run(out, "sim:noisy?p=0.2..0.95&noise=0.3", "-k", "8")


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("verify-messy")
    (base / "messy_agent.py").write_text(MESSY_AGENT)
    return _run(base / "run", f"{base / 'messy_agent.py'}:messy", "-k", "8", "--max-steps", "12",
                "--timeout", "1", "--retries", "1", "--concurrency", "8")


def records(run_dir):
    return [orjson.loads(line) for line in read_log(run_dir).splitlines()]


def tamper(run_dir, tmp_path, edit):
    """A copy of the run with its log records passed through `edit` and the run resealed (as a
    tamperer who knows the seal would: the replay alone must catch the edit); returns the
    verify result."""
    dest = tmp_path / "tampered"
    shutil.copytree(run_dir, dest)
    recs = edit(records(dest))
    write_log(dest, b"".join(orjson.dumps(r) + b"\n" for r in recs))
    seal_run(dest)
    return verify_run(dest)


def summaries(recs, **where):
    return [r for r in recs if r["type"] == "trial" and all(r.get(k) == v for k, v in where.items())]


def steps_of(recs, summary):
    return [r for r in recs if r["type"] == "step" and r["attempt"] == summary["attempt"]]


def fields(result, trial=None):
    return {m.field for m in result.mismatches if trial is None or m.trial == trial}


# ----------------------------------------------------------------------- honest runs
def test_noisy_sim_run_verifies_clean(noisy_run):
    result = verify_run(noisy_run)
    assert result.ok, render_text(result)
    assert result.trials == 24 and result.error_trials == 0
    assert result.steps_replayed == sum(r["steps"] for r in summaries(records(noisy_run)))
    assert {r["outcome"] for r in summaries(records(noisy_run))} == {"success", "failure"}


def test_messy_python_agent_run_verifies_clean(messy_run):
    recs = records(messy_run)
    reasons = " ".join(str(r["reason"]) for r in summaries(recs))
    # the run really holds every kind of trouble this test is about
    assert "agent_completed" in reasons and "within_budget" in reasons and "within_time" in reasons
    assert summaries(recs, outcome="error") and any(r["attempts"] == 2 for r in summaries(recs, outcome="failure") + summaries(recs, outcome="success"))
    assert any(r["type"] == "step" and r["kind"] == "model" for r in recs)
    assert any(r["type"] == "step" and r.get("error", "").startswith("unknown tool") for r in recs if r.get("error"))
    result = verify_run(messy_run)
    assert result.ok, render_text(result)
    assert result.error_trials == 3
    assert any("non-JSON arguments" in note for note in result.notes)


def test_exit_codes(noisy_run, tmp_path, capsys):
    assert run_verify(noisy_run) == 0
    assert "verified: 24 trials" in capsys.readouterr().out

    def flip(recs):
        summaries(recs, outcome="failure")[0]["outcome"] = "success"
        return recs

    tamper(noisy_run, tmp_path, flip)
    assert run_verify(tmp_path / "tampered") == 1
    assert "FAILED" in capsys.readouterr().out
    assert run_verify(tmp_path / "tampered", as_json=True) == 1
    report = orjson.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["mismatches"]


# ----------------------------------------------------------------------- tampering, one kind each
def test_edited_outcome_is_caught(noisy_run, tmp_path):
    target = {}

    def edit(recs):
        s = summaries(recs, outcome="failure")[0]
        s["outcome"], s["reason"] = "success", None
        target["trial"] = s["trial"]
        return recs

    result = tamper(noisy_run, tmp_path, edit)
    assert not result.ok
    assert "outcome" in fields(result, target["trial"])
    assert any(m.field == "metrics" and m.detail.startswith("pass@1") for m in result.mismatches)


def test_edited_check_is_caught(noisy_run, tmp_path):
    def edit(recs):
        s = summaries(recs, outcome="failure")[0]
        name = next(n for n, c in s["checks"].items() if not c["passed"])
        s["checks"][name]["passed"] = True
        edit.trial, edit.name = s["trial"], name
        return recs

    result = tamper(noisy_run, tmp_path, edit)
    assert f"checks.{edit.name}" in fields(result, edit.trial)


def test_edited_observation_is_caught(noisy_run, tmp_path):
    def edit(recs):
        s = summaries(recs, outcome="success")[0]
        step = next(e for e in steps_of(recs, s) if e["kind"] == "tool" and e["observation"] is not None)
        step["observation"] = {"tampered": True}
        edit.trial, edit.step = s["trial"], step["step"]
        return recs

    result = tamper(noisy_run, tmp_path, edit)
    assert [(m.trial, m.step, m.field) for m in result.mismatches] == [(edit.trial, edit.step, "observation")]


def test_edited_user_reply_is_caught(noisy_run, tmp_path):
    def edit(recs):
        step = next(r for r in recs if r["type"] == "step" and r["kind"] == "user")
        step["observation"] = "email: eve@example.com"
        edit.trial, edit.step = step["trial"], step["step"]
        return recs

    result = tamper(noisy_run, tmp_path, edit)
    assert (edit.trial, edit.step, "observation") in {(m.trial, m.step, m.field) for m in result.mismatches}


def test_deleted_step_is_caught(noisy_run, tmp_path):
    def edit(recs):
        s = next(s for s in summaries(recs) if len(steps_of(recs, s)) >= 3)
        victim = steps_of(recs, s)[1]
        edit.trial = s["trial"]
        return [r for r in recs if r is not victim]

    result = tamper(noisy_run, tmp_path, edit)
    got = fields(result, edit.trial)
    assert "steps" in got
    assert any("step 1 missing" in m.detail for m in result.mismatches)


def test_swapped_state_hashes_are_caught(noisy_run, tmp_path):
    def edit(recs):
        for s in summaries(recs):
            steps = steps_of(recs, s)
            hashes = [e["state_hash"] for e in steps]
            if len(set(hashes)) > 1:
                i, j = hashes.index(hashes[0]), next(n for n, h in enumerate(hashes) if h != hashes[0])
                steps[i]["state_hash"], steps[j]["state_hash"] = steps[j]["state_hash"], steps[i]["state_hash"]
                edit.trial, edit.steps = s["trial"], {steps[i]["step"], steps[j]["step"]}
                return recs
        raise AssertionError("no trial changes the state")

    result = tamper(noisy_run, tmp_path, edit)
    flagged = {m.step for m in result.mismatches if m.trial == edit.trial and m.field == "state_hash"}
    assert flagged == edit.steps


def test_duplicated_trial_summary_is_caught(noisy_run, tmp_path):
    def edit(recs):
        s = summaries(recs)[3]
        edit.trial = s["trial"]
        return recs + [dict(s)]

    result = tamper(noisy_run, tmp_path, edit)
    assert [(m.trial, m.field) for m in result.mismatches] == [(edit.trial, "duplicate")]


def test_edited_final_answer_is_caught(noisy_run, tmp_path):
    def edit(recs):
        s = summaries(recs, task="cancel-pending", outcome="success")[0]  # required output: "O1"
        s["answer"] = "All done."
        edit.trial = s["trial"]
        return recs

    result = tamper(noisy_run, tmp_path, edit)
    assert {"checks.output[0]", "outcome"} <= fields(result, edit.trial)


def test_missing_trial_is_caught(noisy_run, tmp_path):
    def edit(recs):
        s = summaries(recs)[5]
        edit.trial = s["trial"]
        return [r for r in recs if r is not s]

    result = tamper(noisy_run, tmp_path, edit)
    assert (edit.trial, "completeness") in {(m.trial, m.field) for m in result.mismatches}


def test_failure_relabelled_as_infrastructure_error_is_caught(noisy_run, tmp_path):
    def edit(recs):
        s = summaries(recs, outcome="failure")[0]
        s.update(outcome="error", reason="infrastructure error after 1 attempt(s): 503", checks={}, steps=0)
        edit.trial = s["trial"]
        return recs

    result = tamper(noisy_run, tmp_path, edit)
    assert "outcome" in fields(result, edit.trial)  # no attempt_error record backs the claim


def test_forged_budget_claim_is_caught(noisy_run, tmp_path):
    def edit(recs):
        s = summaries(recs, outcome="success")[0]
        s["checks"]["within_budget"] = {"passed": False, "detail": "more than 50 tool calls"}
        s.update(outcome="failure", reason="failed: within_budget")
        edit.trial = s["trial"]
        return recs

    result = tamper(noisy_run, tmp_path, edit)
    assert "checks.within_budget" in fields(result, edit.trial)


def test_edited_step_count_and_tokens_are_caught(messy_run, tmp_path):
    def edit(recs):
        s = summaries(recs, outcome="failure")[0]
        s["steps"] += 1
        s["input_tokens"] += 1000
        edit.trial = s["trial"]
        return recs

    result = tamper(messy_run, tmp_path, edit)
    assert {"steps", "input_tokens"} <= fields(result, edit.trial)


# ----------------------------------------------------------------------- the suite
def test_changed_suite_is_a_mismatch(noisy_run, tmp_path, mini_copy):
    db = mini_copy / "db.json"
    db.write_text(db.read_text().replace("12.5", "13.5"))
    result = verify_run(noisy_run, suite=str(mini_copy))
    assert not result.ok and [m.field for m in result.mismatches] == ["suite"]
    assert "hash" in result.mismatches[0].detail and "--suite" in result.mismatches[0].detail


def test_suite_found_by_name_or_flag_when_its_path_is_gone(noisy_run, tmp_path, mini_copy):
    dest = tmp_path / "moved"
    shutil.copytree(noisy_run, dest)
    manifest = orjson.loads((dest / "run.json").read_bytes())
    manifest["suite"]["path"] = str(tmp_path / "gone")
    (dest / "run.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(BenchError, match="--suite"):
        verify_run(dest)  # no built-in suite is called "mini"
    assert verify_run(dest, suite=str(mini_copy)).ok


def test_not_a_run_directory(tmp_path):
    with pytest.raises(BenchError, match="not a run directory"):
        verify_run(tmp_path / "nothing")


# ----------------------------------------------------------------------- the command line
def test_cli(noisy_run, tmp_path):
    proc = run_cli("verify", str(noisy_run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified" in proc.stdout
    proc = run_cli("verify", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not a run directory" in proc.stderr


def _mutate(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return "tampered"
    return {"tampered": value}


@pytest.mark.parametrize("seed", range(30))
def test_random_tampering_of_a_scored_field_is_caught(noisy_run, tmp_path, seed):
    """Any change to a field that a replay re-derives is reported, and verify never crashes."""
    import random

    rng = random.Random(seed)

    def edit(recs):
        if rng.random() < 0.5:
            step = rng.choice([r for r in recs if r["type"] == "step"])
            name = rng.choice(["observation", "error", "state_hash", "args", "tool", "step", "read_only"])
            step[name] = _mutate(step[name]) if name != "args" else {**step["args"], "extra": 1}
        else:
            name = rng.choice(["outcome", "checks", "final_state_hash", "steps", "events", "milestones", "seed", "index"])
            summary = rng.choice([r for r in recs if r["type"] == "trial" and (name != "milestones" or r["milestones"])])
            if name == "outcome":
                summary[name] = "failure" if summary[name] == "success" else "success"
            elif name == "checks":
                check = rng.choice(list(summary["checks"]))
                summary["checks"][check]["passed"] = not summary["checks"][check]["passed"]
            elif name == "milestones":
                summary[name] = {m: (None if v is not None else 0) for m, v in summary[name].items()}
            else:
                summary[name] = _mutate(summary[name])
        edit.name = name
        return recs

    result = tamper(noisy_run, tmp_path, edit)
    assert not result.ok, f"an edit of {edit.name} went unnoticed"


WEIRD = [None, [], {}, "", "x", -1, 1.5, True, ["a"], {"a": [1]}]


@pytest.mark.parametrize("seed", range(30))
def test_hostile_values_never_crash_verify(noisy_run, tmp_path, seed):
    """Any JSON value in any replayed field: a mismatch, never a traceback."""
    import random

    rng = random.Random(1000 + seed)

    def edit(recs):
        kind = rng.choice(["step", "trial"])
        rec = rng.choice([r for r in recs if r["type"] == kind])
        fields = (["observation", "error", "state_hash", "args", "tool", "step", "read_only", "kind", "trial"] if kind == "step"
                  else ["outcome", "checks", "final_state_hash", "steps", "events", "milestones", "seed", "index", "task",
                        "variant", "attempt", "attempts", "input_tokens", "cost"])
        name = rng.choice(fields)
        value = rng.choice([v for v in WEIRD if v != rec.get(name) or type(v) is not type(rec.get(name))])
        rec[name] = value
        edit.what = (kind, name, value)
        return recs

    result = tamper(noisy_run, tmp_path, edit)
    assert not result.ok, f"{edit.what} went unnoticed"
    render_text(result)


# ----------------------------------------------------------------------- input variants
@pytest.fixture(scope="module")
def variant_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify-variants") / "run"
    return _run(out, "sim:noisy?p=0.6&noise=0.2", "-k", "3", "--variants", "all")


def test_run_with_input_variants_verifies_clean(variant_run):
    result = verify_run(variant_run)
    assert result.ok, render_text(result)
    families = {r.get("variant_family") for r in summaries(records(variant_run))}
    assert {"base", "drop", "typos"} <= families


def test_tampered_variant_is_caught(variant_run, tmp_path):
    def edit(recs):
        dropped = next(s for s in summaries(recs) if s["variant_family"] == "drop"
                       and any(e["kind"] == "user" for e in steps_of(recs, s)))
        reply = next(e for e in steps_of(recs, dropped) if e["kind"] == "user")
        reply["observation"] = "email: eve@example.com"  # the hidden fact the drop variant moved to the user
        typo = next(s for s in summaries(recs) if s["variant_family"] == "typos")
        typo["instruction"] = "Please refund everything."
        gone = next(s for s in summaries(recs) if s["variant_family"] == "paraphrase")
        edit.expect = {(dropped["trial"], "observation"), (typo["trial"], "instruction"), (gone["trial"], "completeness")}
        return [r for r in recs if r is not gone]

    result = tamper(variant_run, tmp_path, edit)
    assert edit.expect <= {(m.trial, m.field) for m in result.mismatches}


# ----------------------------------------------------------------------- the manifest (the run seal)
def _edit_manifest(run_dir, tmp_path, edit, reseal=False):
    dest = tmp_path / "edited"
    shutil.copytree(run_dir, dest)
    manifest = orjson.loads((dest / "run.json").read_bytes())
    edit(manifest)
    (dest / "run.json").write_bytes(orjson.dumps(manifest))
    if reseal:
        seal_run(dest)
    return dest


def _rename_as_real(manifest):
    manifest["agent"]["name"] = "gpt-99-real"
    manifest["agent"]["simulated"] = False


def test_sim_run_renamed_real_fails_verify_and_is_refused_by_the_leaderboard(noisy_run, tmp_path):
    """The issue's example: a simulated run renamed `gpt-99-real` with simulated=false."""
    from bench.publish.leaderboard import build_leaderboard

    dest = _edit_manifest(noisy_run, tmp_path, _rename_as_real)
    result = verify_run(dest)
    assert {"agent.name", "agent.simulated"} <= fields(result)
    assert run_verify(dest) == 1
    board = build_leaderboard([dest], bootstrap=10)
    assert board["entries"] == [] and board["rejected"][0]["run_dir"] == dest.name
    assert any(r.startswith("run: agent.name: run.json was edited") for r in board["rejected"][0]["reasons"])


def test_resealed_rename_still_fails_on_the_derived_simulated_flag(noisy_run, tmp_path):
    """A tamperer who reseals passes the seal, but `simulated` is derived from the adapter, so
    verify fails and the leaderboard shows the adapter's truth."""
    from bench.publish.leaderboard import build_leaderboard

    dest = _edit_manifest(noisy_run, tmp_path, _rename_as_real, reseal=True)
    assert fields(verify_run(dest)) == {"agent.simulated"}
    dest2 = _edit_manifest(noisy_run, tmp_path / "b", lambda m: m["agent"].update(name="gpt-99-real"), reseal=True)
    board = build_leaderboard([dest2], bootstrap=10)
    assert board["entries"][0]["agent"]["simulated"] is True  # a resealed rename is still labelled simulated
    from bench.analysis.report import build_report

    assert build_report(dest, bootstrap=1)["run"]["agent"]["simulated"] is True  # the report derives it too


@pytest.mark.parametrize("edit, field", [
    (lambda m: m.update(k=4), "k"),
    (lambda m: m.update(base_seed=1), "base_seed"),
    (lambda m: m["agent"]["options"].update(p="1"), "agent.options"),
    (lambda m: m.update(max_steps=999), "max_steps"),
    (lambda m: m.pop("timeout_s"), "timeout_s"),
    (lambda m: m["host"].update(python="9.9"), "host.python"),
    (lambda m: m.update(created_at="2020-01-01T00:00:00+00:00"), "created_at"),
    (lambda m: m.pop("seal"), "seal"),
])
def test_every_edited_manifest_field_is_named(noisy_run, tmp_path, edit, field):
    assert field in fields(verify_run(_edit_manifest(noisy_run, tmp_path, edit)))


def test_an_edited_overlay_record_is_one_clear_error(noisy_run, tmp_path):
    dest = _edit_manifest(noisy_run, tmp_path, lambda m: m.update(overlay="nope.toml"))
    with pytest.raises(BenchError, match="overlay"):
        verify_run(dest)


def test_an_appended_log_line_breaks_the_seal(noisy_run, tmp_path):
    dest = tmp_path / "appended"
    shutil.copytree(noisy_run, dest)
    with open(log_path(dest), "ab") as fh:  # whichever encoding the log is in
        fh.write(b"\n")
    result = verify_run(dest)
    assert fields(result) == {"log"} and "appended" in result.mismatches[0].detail
    digest = orjson.loads((noisy_run / "run.json").read_bytes())["seal"]["digest"]
    assert verify_run(noisy_run).digest == digest and f"run digest (sha256, the value to sign): {digest}" in render_text(verify_run(noisy_run))
