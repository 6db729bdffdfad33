from bench.canonical import canonical_json, state_hash, step_key
from bench.world.suite import builtin_suites, load_suite
from bench.world.tools import World
from tests.conftest import MINI


def world():
    suite = load_suite(MINI)
    return World.fresh(suite.tools, suite.initial_state)


def test_invalid_arguments_become_error_observations():
    w = world()
    before = w.state_hash
    missing = w.execute("cancel_order", {})
    assert missing.error and "order_id" in missing.error
    wrong_type = w.execute("cancel_order", {"order_id": 17})
    assert wrong_type.error and "invalid arguments" in wrong_type.error
    extra = w.execute("cancel_order", {"order_id": "O1", "force": True})
    assert extra.error and "force" in extra.error
    not_object = w.execute("cancel_order", ["O1"])
    assert not_object.error
    unknown = w.execute("launch_rocket", {})
    assert unknown.error and "unknown tool" in unknown.error and "cancel_order" in unknown.error
    assert w.state_hash == before and w.state["orders"]["O1"]["status"] == "pending"


def test_compiled_argument_check_agrees_with_the_reference_validator():
    """The fast path (`Tool.accepts`) must accept and reject exactly what jsonschema does, on every
    built-in tool: each reference call's arguments, and the same arguments broken four ways."""
    checked = 0
    for name in builtin_suites():
        suite = load_suite(name)
        for task in suite.tasks:
            for action in task.reference_actions:
                tool = suite.tools.get(action.tool)
                if tool is None:
                    continue
                first = next(iter(action.args), None)
                variants = [action.args, {**action.args, "zz_extra": 1}, {}, {k: [v] for k, v in action.args.items()}]
                if first is not None:
                    variants.append({k: v for k, v in action.args.items() if k != first})
                for args in variants:
                    assert tool.accepts(args) == tool.validator.is_valid(args), (tool.name, args)
                    checked += 1
    assert checked > 100


def test_arguments_with_no_json_form_are_an_error_observation_not_a_crash():
    """A set, bytes or an int key has no JSON form: the compiled check cannot even look at it, so the
    reference validator words the rejection and the agent gets an error observation."""
    w = world()
    for args in ({"email": {1, 2}}, {"email": b"ada"}, {1: "ada"}):
        out = w.execute("find_customer", args)
        assert out.error and out.error.startswith("invalid arguments to find_customer"), (args, out.error)


def test_tool_error_is_an_observation_and_leaves_state():
    w = world()
    before = w.state_hash
    out = w.execute("cancel_order", {"order_id": "O2"})
    assert out.error == "order O2 is delivered, only pending orders can be cancelled"
    assert w.state_hash == before


def test_reads_keep_hash_and_writes_change_it():
    w = world()
    h0 = w.state_hash
    read = w.execute("list_orders", {"customer_id": "C1"})
    assert read.error is None and read.read_only and read.state_hash == h0
    write = w.execute("cancel_order", {"order_id": "O1"})
    assert not write.read_only and write.state_hash != h0
    assert write.state_hash == state_hash(w.state)


def test_observations_are_detached_from_state():
    w = world()
    obs = w.execute("list_orders", {"customer_id": "C1"}).observation
    w.execute("cancel_order", {"order_id": "O1"})
    assert obs["O1"]["status"] == "pending"


def test_generated_ids_are_deterministic():
    ids = []
    for _ in range(2):
        w = world()
        ids.append(w.execute("refund_order", {"order_id": "O2", "amount": 5}).observation["refund_id"])
    assert ids == ["R0001", "R0001"]


def test_canonical_keys():
    assert canonical_json({"b": 1, "a": 2.0}) == canonical_json({"a": 2, "b": 1.0}) == '{"a":2,"b":1}'
    assert step_key("t", {"q": " hello   world "}) == step_key("t", {"q": "hello world"})
    assert step_key("t", {"q": 1.5}) != step_key("t", {"q": 1})
