"""Bad input: exit 2, one clear message naming the file and the field, never a traceback."""

import json

import pytest

from tests.conftest import MINI, read_log, run_cli, write_log


def assert_clean_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)


def tasks_file(suite_dir):
    return suite_dir / "tasks" / "tasks.json"


def test_malformed_task_json(mini_copy, tmp_path):
    tasks_file(mini_copy).write_text('[{"id": "x", ')
    proc = run_cli("run", str(mini_copy), "--agent", "sim:oracle", "--out", str(tmp_path / "r"))
    assert_clean_error(proc, "tasks.json", "not valid JSON")


def test_schema_violation_names_task_and_field(mini_copy, tmp_path):
    tasks = json.loads(tasks_file(mini_copy).read_text())
    tasks[0]["assertions"] = [{"path": "orders.O1.status", "op": "equalz", "value": 1}]
    del tasks[1]["instruction"]
    tasks_file(mini_copy).write_text(json.dumps(tasks))
    proc = run_cli("run", str(mini_copy), "--agent", "sim:oracle", "--out", str(tmp_path / "r"))
    assert_clean_error(proc, "task cancel-pending", "field assertions.0.op", "task refund-ask-email", "instruction")
    proc = run_cli("validate", str(mini_copy))
    assert proc.returncode == 1 and "assertions.0.op" in proc.stdout and "Traceback" not in proc.stderr


def test_unknown_tool_in_reference_actions(mini_copy):
    tasks = json.loads(tasks_file(mini_copy).read_text())
    tasks[0]["reference_actions"][2]["tool"] = "cancel_everything"
    tasks_file(mini_copy).write_text(json.dumps(tasks))
    proc = run_cli("validate", str(mini_copy))
    assert proc.returncode == 1
    assert "task cancel-pending" in proc.stdout and "reference_actions.2" in proc.stdout and "unknown tool" in proc.stdout


def test_validate_rejects_meaningless_goals(mini_copy):
    tasks = json.loads(tasks_file(mini_copy).read_text())
    tasks[2]["noop_passes"] = False  # a refusal task whose do-nothing agent passes
    tasks[0]["required_outputs"] = ["a fact the reference never states"]
    tasks[0]["reference_answer"] = "done"
    tasks_file(mini_copy).write_text(json.dumps(tasks))
    proc = run_cli("validate", str(mini_copy))
    assert proc.returncode == 1
    assert "refuse-cancel-delivered: a do-nothing agent passes" in proc.stdout
    assert "cancel-pending: the reference agent fails its own goal" in proc.stdout


@pytest.mark.parametrize("spec,fragment", [
    ("sim:perfect", "unknown simulated agent"),
    ("sim:noisy?p=1.7", "options.p"),
    ("sim:noisy?p=0.5&bogus=1", "unknown sim option"),
    ("nosuchagent", "unknown agent spec"),
    ("no_such_module_xyz:agent", "cannot import"),
    ("tests.agents.toy:missing", "has no attribute"),
])
def test_bad_agent_specs(spec, fragment, tmp_path):
    proc = run_cli("run", str(MINI), "--agent", spec, "--out", str(tmp_path / "r"))
    assert_clean_error(proc, fragment)
    assert not any((tmp_path / "r").glob("trajectories.*"))


def test_bad_agent_toml(tmp_path):
    spec = tmp_path / "a.toml"
    spec.write_text('name = "x"\nadapter = "telepathy"\n')
    assert_clean_error(run_cli("run", str(MINI), "--agent", str(spec), "--out", str(tmp_path / "r")), str(spec), "field adapter")
    spec.write_text('name = "x"\nadapter = "python"\n')
    assert_clean_error(run_cli("run", str(MINI), "--agent", str(spec), "--out", str(tmp_path / "r")), "target")
    spec.write_text('name = [')
    assert_clean_error(run_cli("run", str(MINI), "--agent", str(spec), "--out", str(tmp_path / "r")), "not valid TOML")


def test_unreadable_or_foreign_run_dirs(tmp_path):
    assert_clean_error(run_cli("report", str(tmp_path / "nowhere")), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_clean_error(run_cli("report", str(tmp_path / "empty")), "run.json is missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{nope")
    assert_clean_error(run_cli("report", str(tmp_path / "bad")), "run.json", "not valid JSON")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert_clean_error(run_cli("run", str(MINI), "--agent", "sim:oracle", "--out", str(tmp_path / "other")), "not empty")


def test_corrupted_log_line(tmp_path, log_encoding):
    out = tmp_path / "r"
    assert run_cli("run", str(MINI), "--agent", "sim:oracle", "-k", "1", "--out", str(out), "--quiet").returncode == 0
    lines = read_log(out).decode().splitlines(keepends=True)
    lines[1] = "garbage\n"
    write_log(out, "".join(lines).encode(), log_encoding)
    assert_clean_error(run_cli("report", str(out)), "trajectories.jsonl", "line 2")


@pytest.mark.parametrize("args,fragment", [
    (["run", str(MINI), "--agent", "sim:oracle", "-k", "0"], "-k"),
    (["run", str(MINI), "--agent", "sim:oracle", "--tasks", "nope"], "no task 'nope'"),
    (["run", "retail", "--agent", "sim:oracle", "--tags", "easyy"], "has the tag(s) ['easyy']"),
    (["run", "retail", "--agent", "sim:oracle", "--tags", "easy", "--tasks", "retail-012-cancel-ask-email"],
     "no selected task has every tag"),
    (["run", "no-such-suite", "--agent", "sim:oracle"], "no suite 'no-such-suite'"),
    (["run", str(MINI)], "--agent"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments(args, fragment, tmp_path):
    assert_clean_error(run_cli(*args, cwd=tmp_path), fragment)


def test_broken_domain_module(mini_copy, tmp_path):
    (mini_copy / "domain.py").write_text("import nonexistent_thing\n")
    assert_clean_error(run_cli("validate", str(mini_copy)), "domain.py", "failed to import")
    (mini_copy / "domain.py").write_text("tools = 3\n")
    assert_clean_error(run_cli("validate", str(mini_copy)), "domain.py", "field tools")


def test_validate_catches_typos_and_lying_read_flags(mini_copy):
    tasks = json.loads(tasks_file(mini_copy).read_text())
    tasks[0]["forbidden"].append({"state": {"path": "ordrs.O3.status", "op": "equals", "value": "cancelled"}})
    tasks[0]["milestones"].append({"name": "never", "action": {"tool": "refund_order"}})
    tasks[1]["reference_actions"][0]["args"]["question"] = "How are you today?"
    tasks_file(mini_copy).write_text(json.dumps(tasks))
    domain = (mini_copy / "domain.py").read_text()
    (mini_copy / "domain.py").write_text(domain.replace(
        '"""List a customer\'s orders."""', '"""List a customer\'s orders."""\n    db["refunds"]["peek"] = 1'))
    proc = run_cli("validate", str(mini_copy))
    assert proc.returncode == 1
    assert "field forbidden.1.state: path 'ordrs.O3.status' leads nowhere" in proc.stdout
    assert "never reaches milestone 'never'" in proc.stdout
    assert "reveals no fact for 'How are you today?'" in proc.stdout
    assert "tool list_orders is flagged read-only but changed the state" in proc.stdout


def test_run_refuses_a_reference_that_does_not_replay(mini_copy, tmp_path):
    tasks = json.loads(tasks_file(mini_copy).read_text())
    tasks[0]["reference_actions"][2]["args"]["order_id"] = "O2"  # delivered: cannot be cancelled
    tasks_file(mini_copy).write_text(json.dumps(tasks))
    proc = run_cli("run", str(mini_copy), "--agent", "sim:oracle", "--out", str(tmp_path / "r"))
    assert_clean_error(proc, "task cancel-pending", "reference_actions.2")


def test_a_crashing_tool_is_an_error_not_an_agent_failure(mini_copy, tmp_path):
    from bench.runs.rundir import read_run

    domain = (mini_copy / "domain.py").read_text()
    (mini_copy / "domain.py").write_text(domain.replace(
        '"""Cancel a pending order."""', '"""Cancel a pending order."""\n    if order_id == "O3":\n        raise KeyError("bug")'))
    proc = run_cli("run", str(mini_copy), "--agent", "tests.agents.toy:cancel_o3", "-k", "1", "--tasks", "cancel-pending",
                   "--retries", "1", "--out", str(tmp_path / "r"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "1 of 1 trial(s) ended in an infrastructure error" in proc.stderr  # said, not hidden
    (summary,) = read_run(tmp_path / "r").summaries.values()
    assert summary["outcome"] == "error" and "tool cancel_order crashed: KeyError" in summary["reason"]
