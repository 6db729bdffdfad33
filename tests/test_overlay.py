"""Tool overlays (bench/world/overlay.py): loading and validation, what the agent sees, that the same
functions run underneath, that goal checks stay correct, and the example end to end."""

import io
import json
from pathlib import Path

import jsonschema
import pytest

from bench.adapters.spec import parse_agent_spec
from bench.analysis.diff import diff_runs
from bench.cli import run_diff
from bench.errors import BenchError
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from bench.runs.validate import validate_suite
from bench.world.goal import evaluate
from bench.world.overlay import OverlaidSuite, apply_overlay, format_result, load_overlay
from bench.world.suite import load_suite
from bench.world.task import load_schema
from bench.world.tools import World

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "overlays" / "order-number.toml"

RENAME = {
    "name": "rename",
    "tools": {
        "cancel_order": {
            "rename": "void_order",
            "description": "Void an order that has not shipped.",
            "arguments": {"order_id": {"rename": "order_ref", "description": "The order reference, e.g. O1."}},
        },
        "refund_order": {"arguments": {"amount": {"schema": {"maximum": 100}}}},
    },
}


def test_json_and_toml_overlays_are_the_same_overlay(tmp_path):
    (tmp_path / "o.json").write_text(json.dumps(RENAME))
    (tmp_path / "o.toml").write_text(
        'name = "rename"\n[tools.cancel_order]\nrename = "void_order"\ndescription = "Void an order that has not shipped."\n'
        '[tools.cancel_order.arguments.order_id]\nrename = "order_ref"\ndescription = "The order reference, e.g. O1."\n'
        '[tools.refund_order.arguments.amount]\nschema = {maximum = 100}\n')
    a, b = load_overlay(tmp_path / "o.json"), load_overlay(tmp_path / "o.toml")
    assert a.hash == b.hash == load_overlay(RENAME).hash
    assert a.source == str(tmp_path / "o.json")


def test_the_published_schema_accepts_the_examples():
    validator = jsonschema.Draft202012Validator(load_schema("overlay.schema.json"))
    for path in (ROOT / "examples" / "overlays").glob("*.toml"):
        if "agent" not in path.name:
            assert not list(validator.iter_errors(load_overlay(path).spec)), path
    for path in (ROOT / "examples" / "overlays").glob("*.json"):
        assert not list(validator.iter_errors(json.loads(path.read_text()))), path


@pytest.mark.parametrize("spec,field,message", [
    ({"tools": {}}, "tools", "should be non-empty"),
    ({"tools": {"cancel_order": {"rename": "has space"}}}, "tools.cancel_order.rename", "does not match"),
    ({"tools": {"cancel_order": {"colour": "red"}}}, "tools.cancel_order", "Additional properties"),
    ({"tools": {"cancel_order": {"result": {"template": "x", "format": "text"}}}}, "tools.cancel_order.result", "should not be valid"),
])
def test_schema_errors_name_the_field(spec, field, message):
    with pytest.raises(BenchError, match=message) as err:
        load_overlay(spec)
    assert err.value.field == field


@pytest.mark.parametrize("spec,field,message", [
    ({"tools": {"nope": {"description": "x"}}}, "tools.nope", "has no tool 'nope'"),
    ({"tools": {"cancel_order": {"arguments": {"id": {"rename": "x"}}}}}, "tools.cancel_order.arguments.id", "no argument 'id'"),
    ({"tools": {"cancel_order": {"rename": "refund_order"}}}, "tools.refund_order.rename", "both be called"),
    ({"tools": {"cancel_order": {"rename": "ask_user"}}}, "tools.cancel_order.rename", "both be called"),
    ({"tools": {"ask_user": {"description": "x"}}}, "tools.ask_user", "harness"),
    ({"tools": {"refund_order": {"arguments": {"amount": {"rename": "order_id"}}}}}, "tools.refund_order.arguments.amount", "both be called"),
    ({"tools": {"refund_order": {"arguments": {"amount": {"schema": {"type": "money"}}}}}}, "tools.refund_order.arguments.amount", "not a valid JSON Schema"),
    ({"tools": {"refund_order": {"arguments": {"amount": {"default": -1}}}}}, "tools.refund_order.arguments.amount.default", "default"),
    ({"suite": "retail", "tools": {"cancel_order": {"description": "x"}}}, "suite", "for suite 'retail'"),
])
def test_semantic_errors_name_the_field(mini_suite, spec, field, message):
    with pytest.raises(BenchError, match=message) as err:
        apply_overlay(mini_suite, spec)
    assert err.value.field == field


def test_bad_files(tmp_path, mini_suite):
    with pytest.raises(BenchError, match="no such overlay"):
        apply_overlay(mini_suite, tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("tools = [")
    with pytest.raises(BenchError, match="not valid TOML"):
        load_overlay(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BenchError, match="not valid JSON"):
        load_overlay(tmp_path / "bad.json")


def test_what_the_agent_sees_changes_and_nothing_else(mini_suite):
    before_specs = {s["name"]: s for s in mini_suite.tool_specs()}
    before_hashes = mini_suite.tool_schema_hashes()
    ov = apply_overlay(mini_suite, RENAME)
    assert isinstance(ov, OverlaidSuite)
    specs = {s["name"]: s for s in ov.tool_specs()}
    assert "cancel_order" not in specs and specs["void_order"]["description"] == "Void an order that has not shipped."
    params = specs["void_order"]["parameters"]
    assert list(params["properties"]) == ["order_ref"] and params["required"] == ["order_ref"]
    assert params["properties"]["order_ref"]["description"] == "The order reference, e.g. O1."
    assert specs["refund_order"]["parameters"]["properties"]["amount"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 100}
    # hashes change for exactly the edited tools; the suite's own identity does not
    hashes = ov.tool_schema_hashes()
    assert {n for n in before_hashes if before_hashes[n] != hashes.get(n)} == {"cancel_order", "refund_order"}
    assert hashes["find_customer"] == before_hashes["find_customer"] and hashes["ask_user"] == before_hashes["ask_user"]
    assert ov.content_hash == mini_suite.content_hash
    # the original suite is untouched
    assert {s["name"]: s for s in mini_suite.tool_specs()} == before_specs
    assert ov.overlay["renamed"] == {"cancel_order": "void_order"}
    assert ov.overlay["arguments_renamed"] == {"cancel_order": {"order_id": "order_ref"}}
    assert "argument order_id renamed to order_ref" in ov.overlay["changes"]["cancel_order"]


def test_renamed_argument_reaches_the_same_function(mini_suite):
    ov = apply_overlay(mini_suite, RENAME)
    task = mini_suite.task("cancel-pending")
    plain = World(mini_suite.tools, mini_suite.initial_state_for(task))
    seen = World(ov.tools, ov.initial_state_for(task))
    a = plain.execute("cancel_order", {"order_id": "O1"})
    b = seen.execute("void_order", {"order_ref": "O1"})
    assert a.error is None and b.error is None and a.observation == b.observation and a.state_hash == b.state_hash
    stale = World(ov.tools, ov.initial_state_for(task)).execute("void_order", {"order_id": "O1"})
    assert "invalid arguments to void_order" in stale.error
    gone = World(ov.tools, ov.initial_state_for(task)).execute("cancel_order", {"order_id": "O1"})
    assert "unknown tool 'cancel_order'" in gone.error
    # a domain error is passed through unchanged
    assert "no order O9" in World(ov.tools, ov.initial_state_for(task)).execute("void_order", {"order_ref": "O9"}).error
    # an edited schema is enforced before the function runs
    refund = World(ov.tools, ov.initial_state_for(task)).execute("refund_order", {"order_id": "O2", "amount": 500})
    assert "invalid arguments" in refund.error and "maximum" in refund.error


def test_default_makes_an_argument_optional(mini_suite):
    ov = apply_overlay(mini_suite, {"tools": {"refund_order": {"arguments": {"amount": {"default": 12.5}}}}})
    spec = next(s for s in ov.tool_specs() if s["name"] == "refund_order")
    assert spec["parameters"]["required"] == ["order_id"] and spec["parameters"]["properties"]["amount"]["default"] == 12.5
    world = World(ov.tools, ov.initial_state_for(mini_suite.task("refund-ask-email")))
    out = world.execute("refund_order", {"order_id": "O2"})
    assert out.error is None and world.state["refunds"][out.observation["refund_id"]]["amount"] == 12.5


def test_result_formatting():
    order = {"order_id": "O1", "status": "pending", "items": [{"sku": "A", "qty": 2}], "total": 9.5}
    assert format_result(order, {"fields": ["status", "order_id"]}) == {"status": "pending", "order_id": "O1"}
    assert format_result(order, {"fields": ["order_id"], "rename_fields": {"order_id": "id"}}) == {"id": "O1"}
    assert format_result([order, order], {"fields": ["total"]}) == [{"total": 9.5}, {"total": 9.5}]
    assert format_result(order, {"template": "Order {order_id} is {status}; first item {items.0.sku}×{items.0.qty}; "
                                             "{nothing}; {{literal}}"}) == \
        "Order O1 is pending; first item A×2; null; {literal}"
    assert format_result("C1", {"template": "customer {result}"}) == "customer C1"
    assert format_result({"a": 1}, {"template": "{result}"}) == '{"a":1}'
    assert format_result(order, {"fields": ["order_id", "items"], "format": "text"}) == 'order_id: O1\nitems: [{"sku":"A","qty":2}]'
    assert format_result(["x", 1], {"format": "text"}) == "- x\n- 1"
    assert format_result({"a": 1}, {"format": "pretty_json"}) == '{\n  "a": 1\n}'


def test_result_formatting_through_a_tool(mini_suite):
    ov = apply_overlay(mini_suite, {"tools": {"find_customer": {"result": {"template": "Customer {customer_id} ({name})"}}}})
    world = World(ov.tools, ov.initial_state_for(mini_suite.task("cancel-pending")))
    assert world.execute("find_customer", {"email": "ada@example.com"}).observation == "Customer C1 (Ada Lovelace)"
    assert "no customer" in world.execute("find_customer", {"email": "zed@example.com"}).error


def test_goal_checks_follow_the_renames(mini_suite):
    """The forbidden action, the reference replay and action milestones use the overlay's names:
    an overlay must never make a forbidden call slip through unnoticed."""
    ov = apply_overlay(mini_suite, RENAME)
    task = ov.task("cancel-pending")
    assert [a.tool for a in task.reference_actions] == ["find_customer", "list_orders", "void_order"]
    assert task.reference_actions[2].args == {"order_ref": "O1"}
    assert task.forbidden[0]["action"] == {"tool": "void_order", "args": {"order_ref": "O3"}}
    assert validate_suite(ov) == [] and validate_suite(mini_suite) == []
    world = World(ov.tools, ov.initial_state_for(task))
    from bench.world.goal import LoggedAction

    world.execute("void_order", {"order_ref": "O3"})
    checks = evaluate(task, world.state, ov.expected_state(task)[0], [LoggedAction(0, "void_order", {"order_ref": "O3"}, None)], "")
    assert checks["forbidden[0]"]["passed"] is False


def test_the_manifest_record_rebuilds_the_same_tools(mini_suite):
    ov = apply_overlay(mini_suite, RENAME)
    record = json.loads(json.dumps(ov.overlay))  # as stored in run.json
    again = apply_overlay(mini_suite, record["spec"])
    assert again.tool_schema_hashes() == ov.tool_schema_hashes() and again.overlay["hash"] == record["hash"]
    with pytest.raises(BenchError, match="already has an overlay"):
        apply_overlay(ov, RENAME)


# ---------------------------------------------------------------------------- the example, end to end
ORDER_TASKS = ["retail-001-cancel-stated", "retail-002-tracking-stated", "retail-005-return-stated",
               "retail-006-cancel-name-zip", "retail-008-order-address-stated", "retail-010-payment-switch-stated",
               "retail-015-exchange-ask-switch", "retail-016-move-ask-address"]


def _run(suite, spec, out, k, seed):
    run_benchmark(suite, parse_agent_spec(spec), ORDER_TASKS, RunConfig(k=k, out=out, seed=seed, progress=False))
    return out


def test_example_overlay_end_to_end(tmp_path):
    """docs/regression.md, "I renamed an argument; did my agent get worse?": runs through the
    runner with and without the example overlay; the diff names the changed tools; a robust
    agent shows no significant change, an agent with the old name as a habit regresses."""
    retail = load_suite("retail")
    overlaid = apply_overlay(retail, EXAMPLE)
    assert validate_suite(overlaid) == []
    changed = {"get_order_details", "cancel_pending_order", "modify_pending_order_items", "modify_pending_order_address",
               "modify_pending_order_payment", "return_delivered_order_items", "exchange_delivered_order_items"}

    base = _run(retail, "sim:noisy?p=0.95", tmp_path / "base", 8, 0)
    cand = _run(overlaid, "sim:noisy?p=0.95", tmp_path / "cand", 8, 1)
    # the agent saw, called and was logged with the new argument name
    steps = [s for steps in read_run(cand).steps.values() for s in steps if s.get("tool") == "cancel_pending_order"]
    assert steps and all("order_number" in s["args"] and "order_id" not in s["args"] for s in steps)
    diff = diff_runs(base, cand, permutations=999, bootstrap=500)
    assert {c["tool"] for c in diff["tools"]["changed"]} == changed
    assert diff["exit_code"] == 0
    text = io.StringIO()
    run_diff(base, cand, out=text, permutations=999, bootstrap=500)
    assert "changed  cancel_pending_order" in text.getvalue()

    habit = str(ROOT / "examples" / "overlays" / "habit_agent.py") + ":HabitAgent?p=0.95&slip=0.6"
    hb = _run(retail, habit, tmp_path / "hb", 8, 0)
    hc = _run(overlaid, habit, tmp_path / "hc", 8, 1)
    diff = diff_runs(hb, hc, permutations=999, bootstrap=500)
    assert diff["exit_code"] == 1 and diff["suite"]["pass@1"]["delta"] < -0.2
    errors = {r["tool"]: r["candidate_error_rate"] for r in diff["tool_mix"]["tools"]}
    assert errors["cancel_pending_order"] > 0.3 and errors["find_user_id_by_email"] == 0


@pytest.mark.slow
def test_cli_run_with_an_overlay_records_it(tmp_path):
    """`trajbench run --overlay`: the manifest records the overlay and the tools as the agent saw
    them; a resume under another overlay is refused; `diff` names the changed tool."""
    from tests.conftest import MINI, run_cli

    overlay = tmp_path / "rename.json"
    overlay.write_text(json.dumps(RENAME))
    base, cand = tmp_path / "base", tmp_path / "cand"
    assert run_cli("run", str(MINI), "--agent", "sim:oracle", "-k", "2", "--out", str(base), "--quiet").returncode == 0
    proc = run_cli("run", str(MINI), "--agent", "sim:oracle", "-k", "2", "--seed", "1", "--out", str(cand), "--quiet",
                   "--overlay", str(overlay))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((cand / "run.json").read_text())
    assert manifest["overlay"]["hash"] == load_overlay(RENAME).hash and manifest["overlay"]["renamed"] == {"cancel_order": "void_order"}
    assert "void_order" in manifest["tool_schema_hashes"] and "cancel_order" not in manifest["tool_schema_hashes"]
    assert manifest["suite"]["hash"] == json.loads((base / "run.json").read_text())["suite"]["hash"]
    assert all(s["outcome"] == "success" for s in read_run(cand).summaries.values())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"tools": {"find_customer": {"description": "Look up a customer."}}}))
    proc = run_cli("run", str(MINI), "--agent", "sim:oracle", "-k", "3", "--seed", "1", "--out", str(cand), "--quiet",
                   "--overlay", str(other))
    assert proc.returncode == 2 and "overlay.hash" in proc.stderr
    proc = run_cli("diff", str(base), str(cand))
    assert proc.returncode == 0
    assert "changed  cancel_order → void_order: renamed to void_order; description edited; argument order_id renamed to order_ref" in proc.stdout
    assert "changed  refund_order: argument amount: schema edited" in proc.stdout
