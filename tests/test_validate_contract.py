"""`trajbench validate` checks the domain contract that verify, divergence keys and state
pooling rest on (issue 15, item 4): determinism (a tool using random, the clock or set order is
named with its step), ids created by tools never collide with seeded data (and `new_id` skips
them), and two authoring mistakes that used to pass silently."""

import json

import pytest

from bench.world.tools import Toolset, new_id
from tests.conftest import run_cli

REFUND_STEP = "reference_actions.3"  # refund-ask-email: ask_user, find_customer, list_orders, refund_order


def _edit_domain(suite_dir, old, new):
    domain = (suite_dir / "domain.py").read_text()
    assert old in domain
    (suite_dir / "domain.py").write_text(domain.replace(old, new))


def _validate(suite_dir):
    proc = run_cli("validate", str(suite_dir))
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize("imports, expression, how", [
    ("import random", "random.random()", "twice in one process"),
    ("import time", "time.perf_counter_ns()", "twice in one process"),
    ("", "sorted({'alpha', 'beta', 'gamma', 'delta', 'eps', 'zeta', 'eta', 'theta'})", None),
    ("", "list({'alpha', 'beta', 'gamma', 'delta', 'eps', 'zeta', 'eta', 'theta'})", "PYTHONHASHSEED"),
])
def test_a_nondeterministic_tool_is_named_with_its_step(mini_copy, imports, expression, how):
    _edit_domain(mini_copy, "from bench.world.tools import", f"{imports}\nfrom bench.world.tools import")
    _edit_domain(mini_copy, 'return {"refund_id": rid}', f'return {{"refund_id": rid, "extra": {expression}}}')
    proc = _validate(mini_copy)
    if how is None:  # a set whose order never reaches the observation is fine
        assert proc.returncode == 0, proc.stdout
        return
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"task refund-ask-email: field {REFUND_STEP}: tool refund_order is not deterministic" in proc.stdout
    assert how in proc.stdout


def test_new_id_skips_ids_the_state_holds():
    db = {"refunds": {"R0001": {}, "R0003": {}}, "nested": {"deep": [{"R0002": 1}]}}
    assert [new_id(db, "refund", "R") for _ in range(2)] == ["R0004", "R0005"]
    assert new_id({}, "refund", "R") == "R0001"


def _counter_ids(suite_dir):
    """The issue's example: an id generator that ignores the data (new_id as it was)."""
    _edit_domain(suite_dir, 'rid = new_id(db, "refund", "R")',
                 'counters = db.setdefault("_counters", {})\n    counters["refund"] = counters.get("refund", 0) + 1\n'
                 '    rid = f"R{counters[\'refund\']:04d}"')


def test_an_id_created_over_seeded_data_is_caught(mini_copy):
    _counter_ids(mini_copy)
    db = json.loads((mini_copy / "db.json").read_text())
    db["refunds"] = {"R0001": {"order": "O3", "amount": 1.0}}
    (mini_copy / "db.json").write_text(json.dumps(db))
    proc = _validate(mini_copy)
    assert proc.returncode == 1
    assert f"field {REFUND_STEP}: tool refund_order created id 'R0001', which a record of the task's data already holds" in proc.stdout


def test_an_id_generator_that_would_collide_is_caught_on_empty_data(mini_copy):
    _counter_ids(mini_copy)
    proc = _validate(mini_copy)
    assert proc.returncode == 1 and f"{REFUND_STEP}: tool refund_order created id 'R0001'" in proc.stdout


def test_optional_naming_a_missing_parameter_is_an_error(mini_copy):
    with pytest.raises(ValueError, match="optional names 'emial'"):
        Toolset().tool(read_only=True, params={"email": {"type": "string"}}, optional=("emial",))(lambda db, email=None: 0)
    _edit_domain(mini_copy, '@tools.tool(read_only=True, params={"email": {"type": "string"}})',
                 '@tools.tool(read_only=True, params={"email": {"type": "string"}}, optional=("emial",))')
    proc = _validate(mini_copy)
    assert proc.returncode == 2 and "optional names 'emial'" in proc.stderr and "domain.py" in proc.stderr


def test_a_milestone_on_ask_user_is_an_error(mini_copy):
    path = mini_copy / "tasks" / "tasks.json"
    tasks = json.loads(path.read_text())
    tasks[1]["milestones"] = [{"name": "asked", "action": {"tool": "ask_user"}}]
    path.write_text(json.dumps(tasks))
    proc = _validate(mini_copy)
    assert proc.returncode == 1
    assert "task refund-ask-email: field milestones.0.action: a milestone on ask_user is never reached" in proc.stdout
