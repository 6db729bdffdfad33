from bench.world.goal import LoggedAction, MilestoneTracker, assertion_holds, evaluate, output_stated, scoped
from bench.world.task import task_from_dict

STATE = {"orders": {"A": {"status": "open", "items": [1, 2]}, "B": {"status": "closed", "items": []}},
         "tickets": [{"sev": "sev1"}, {"sev": "sev2"}, {"sev": "sev1"}], "note": "Disk Full on db-1"}


def holds(path, op, value=None, **extra):
    a = {"path": path, "op": op, **extra}
    if value is not None:
        a["value"] = value
    return assertion_holds(STATE, a)


def test_assertion_ops():
    assert holds("orders.A.status", "equals", "open")
    assert not holds("orders.A.status", "equals", "closed")
    assert holds("orders.A.status", "not_equals", "closed")
    assert holds("orders.A.items", "contains", 2) and holds("orders.A.items", "not_contains", 3)
    assert holds("note", "contains", "disk full")
    assert holds("orders.C", "absent") and holds("orders.B", "exists")
    assert holds("orders.A.items.1", "equals", 2) and holds("orders.A.items.5", "absent")
    assert holds("tickets", "count", 3) and holds("tickets", "count", 2, where={"sev": "sev1"})
    assert holds("orders", "count", 1, where={"status": "closed"})
    assert not holds("missing.path", "count", 0)


def test_numbers_and_case_in_required_outputs():
    assert output_stated("Your refund of 1250 dollars is on its way", "$1,250.00")
    assert output_stated("refund: $12.50", "12.5")
    assert output_stated("Order W1001 is CANCELLED", "cancelled")
    assert not output_stated("refund 125", "12.5")
    assert not output_stated("", "x")


def test_state_check_scopes():
    assert scoped(STATE, "none") is None
    view = scoped(STATE, {"include": ["orders.A.status", "nope"]})
    assert view == {"orders.A.status": "open", "nope": "<absent>"}
    without = scoped(STATE, {"exclude": ["orders.B", "note"]})
    assert "B" not in without["orders"] and "note" not in without and "B" in STATE["orders"]


def task(**goal):
    raw = {"id": "t", "instruction": "x", "reference_actions": [], **goal}
    return task_from_dict(raw, "inline")


def test_evaluate_reports_each_check():
    t = task(assertions=[{"path": "note", "op": "contains", "value": "disk"}],
             required_outputs=["42", {"any_of": ["alpha", "beta"]}],
             forbidden=[{"action": {"tool": "drop", "args": {"table": "users"}}, "reason": "dropped users"},
                        {"state": {"path": "orders.B", "op": "absent"}}])
    actions = [LoggedAction(0, "drop", {"table": "users", "why": "x"}, None)]
    checks = evaluate(t, STATE, STATE, actions, "the answer is 42 and beta")
    assert {k: v["passed"] for k, v in checks.items()} == {
        "state": True, "assertion[0]": True, "output[0]": True, "output[1]": True,
        "forbidden[0]": False, "forbidden[1]": True}
    assert checks["forbidden[0]"]["detail"] == "dropped users"
    failed_call = [LoggedAction(0, "drop", {"table": "users"}, "refused")]
    assert evaluate(t, STATE, STATE, failed_call, "42 alpha")["forbidden[0]"]["passed"]
    other = {**STATE, "note": "ok"}
    state_check = evaluate(t, other, STATE, [], "42 alpha")["state"]
    assert not state_check["passed"] and "note" in state_check["detail"]


def test_milestones_record_first_step():
    milestones = ({"name": "looked", "action": {"tool": "get"}},
                  {"name": "closed", "state": {"path": "orders.A.status", "op": "equals", "value": "closed"}})
    state = {"orders": {"A": {"status": "open"}}}
    tracker = MilestoneTracker(milestones, state)
    tracker.observe(0, LoggedAction(0, "get", {}, "error"), state, False)
    tracker.observe(1, LoggedAction(1, "get", {}, None), state, False)
    state["orders"]["A"]["status"] = "closed"
    tracker.observe(2, LoggedAction(2, "close", {}, None), state, True)
    tracker.observe(3, LoggedAction(3, "get", {}, None), state, False)
    assert tracker.reached == {"looked": 1, "closed": 2}


def test_required_outputs_match_whole_words_and_whole_numbers():
    assert not output_stated("Your gift card balance is now $25.50.", "5.50")
    assert not output_stated("refund of $180.00", "80.00")
    assert output_stated("refund of $180.00", "180")
    assert not output_stated("the order is unshipped", "shipped")
    assert output_stated("It shipped today.", "shipped")


def test_paths_as_lists_for_keys_with_dots():
    state = {"people": {"ada@example.com": {"zone": "UTC+1"}}}
    assert assertion_holds(state, {"path": ["people", "ada@example.com", "zone"], "op": "equals", "value": "UTC+1"})
    assert assertion_holds(state, {"path": "people.ada@example.com.zone", "op": "absent"})


def test_excludes_inside_includes_and_list_items():
    nested = {"a": {"b": {"c": 1, "d": 2}}, "pages": [{"msg": "x", "id": 1}]}
    assert scoped(nested, {"include": ["a.b"], "exclude": ["a.b.c"]}) == {"a.b": {"d": 2}}
    assert scoped(nested, {"exclude": ["pages.0.msg"]})["pages"] == [{"id": 1}]


def test_contains_with_unhashable_value_in_a_dict():
    assert not assertion_holds({"a": {"x": 1}}, {"path": "a", "op": "contains", "value": ["x"]})
    assert assertion_holds({"a": {"x": [1]}}, {"path": "a", "op": "contains", "value": [1]})


def test_action_patterns_ignore_case_and_spacing():
    from bench.world.goal import action_matches

    assert action_matches({"tool": "t", "args": {"email": "ada@example.com"}}, "t", {"email": " ADA@example.com"})
    assert not action_matches({"tool": "t", "args": {"email": "ada@example.com"}}, "t", {})
