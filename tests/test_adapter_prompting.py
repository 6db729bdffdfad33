"""The shared scaffolding of the LLM adapters (bench/adapters/prompting.py): candidate values,
the action schema, parsing, the loop guard — against hand-computed expectations and the domain's
own validator. No model needed."""

from __future__ import annotations

import json

import jsonschema
import orjson
import pytest

from bench.adapters.prompting import (
    FINAL,
    Conversation,
    Scaffold,
    Stop,
    action_schema,
    harvest,
    parse_action,
    simple_pattern,
)
from bench.errors import BenchError
from bench.world.suite import load_suite


def cands(value, whole=True):
    out: dict[str, None] = {}
    harvest(value, out, whole=whole)
    return list(out)


def test_candidates_from_an_instruction():
    got = cands("Hi, I'm ada.lovelace@example.com. Please cancel order #W1001 ('no longer needed'); zip 02139, "
                "Liam O'Brien at 55 Market St, Apt 9.", whole=False)
    for expected in ["ada.lovelace@example.com", "#W1001", "W1001", "no longer needed", "02139", "Liam", "O'Brien",
                     "55 Market St", "Apt 9", "Market St", "cancel", "order"]:
        assert expected in got, expected
    for unexpected in ["Hi", "I'm", "Please", "Hi, I'm ada.lovelace@example.com. Please cancel order #W1001"]:
        assert unexpected not in got, unexpected  # greetings and the whole sentence are not values


def test_candidates_from_a_tool_result():
    got = cands({"O1": {"customer": "C1", "status": "pending", "total": 30.0, "note": 'said "hi"'}})
    assert got[:4] == ["O1", "customer", "C1", "status"]
    assert "30.0" in got and "pending" in got
    assert 'said "hi"' not in got  # quotes never become grammar literals


def test_string_arguments_take_seen_values_that_fit_their_schema():
    specs = [{"name": "get_order", "description": "", "parameters": {
        "type": "object", "properties": {
            "order_id": {"type": "string", "pattern": "^W[0-9]{4}$"},
            "reason": {"type": "string", "enum": ["no longer needed", "ordered by mistake"]},
            "note": {"type": "string"},
            "item_ids": {"type": "array", "items": {"type": "string", "pattern": "^I[0-9]{4}$"}},
            "zip": {"type": "string", "pattern": "^\\d{5}$"},
            "amount": {"type": "number", "exclusiveMinimum": 0},
        }, "required": ["order_id"], "additionalProperties": False}}]
    schema = action_schema(specs, Scaffold(), ["W1001", "1001", "W12", "I1101", "x@y.org", "hello"])
    branch = schema["anyOf"][0]["properties"]["arguments"]["properties"]
    assert branch["order_id"] == {"type": "string", "enum": ["W1001"]}
    assert branch["reason"]["enum"] == ["no longer needed", "ordered by mistake"]  # a spec enum is kept
    assert "enum" not in branch["note"] and branch["note"]["maxLength"] == 200  # free text stays free, capped
    assert branch["item_ids"]["items"] == {"type": "string", "enum": ["I1101"]}
    assert branch["zip"]["pattern"] == "^[0-9]{5}$" and "enum" not in branch["zip"]  # nothing fits yet: free, with its pattern
    assert branch["amount"] == {"type": "number"}
    assert schema["anyOf"][-1]["properties"]["tool"] == {"const": FINAL}
    # switched off: no enums at all
    off = action_schema(specs, Scaffold(enum_args=False), ["W1001"])
    assert "enum" not in off["anyOf"][0]["properties"]["arguments"]["properties"]["order_id"]


def test_simple_pattern_spells_out_shorthand_classes():
    assert simple_pattern(r"^\d{4}-[\d.]+\w$") == "^[0-9]{4}-[0-9.]+[A-Za-z0-9_]$"
    assert simple_pattern(r"^a\.b$") == r"^a\.b$"


def test_parse_action():
    assert parse_action('{"tool": "t", "arguments": {"a": 1}}').tool == "t"
    assert parse_action('```json\n{"tool": "t", "arguments": {}}\n```').args == {}
    assert parse_action('sure: {"tool": "final_answer", "arguments": {"answer": "ok"}} bye').answer == "ok"
    assert parse_action("no json here").error and parse_action('{"tool": 3}').error
    assert parse_action('{"tool": "t", "arguments": [1]}').error == "arguments must be a JSON object"


class FakeEpisode:
    def __init__(self):
        self.calls = []

    def call(self, tool, args):
        from bench.episode import Observation

        self.calls.append((tool, args))
        return Observation({"ok": tool}, None)


def test_loop_guard_forces_the_final_answer():
    conv = Conversation("policy", "cancel W1001", [{"name": "cancel", "parameters": {"type": "object", "properties": {}}}],
                        Scaffold(max_repeats=1))
    episode = FakeEpisode()
    call = '{"tool": "cancel", "arguments": {}}'
    assert conv.apply(episode, call) is None and len(episode.calls) == 1
    assert conv.apply(episode, call) is None and len(episode.calls) == 1  # the repeat is not run
    assert conv.finishing and [b["properties"]["tool"]["const"] for b in [conv.schema()]] == [FINAL]
    with pytest.raises(Stop):
        conv.apply(episode, call)  # only an answer is acceptable now
    conv.finishing = "x"
    assert conv.apply(episode, '{"tool": "final_answer", "arguments": {"answer": "done"}}') == "done"


def test_invalid_replies_are_told_then_stop():
    conv = Conversation("p", "i", [], Scaffold(max_invalid=2))
    assert conv.apply(FakeEpisode(), "garbage") is None
    assert "not valid" in conv.history[-1]["content"]
    assert conv.apply(FakeEpisode(), "garbage") is None
    with pytest.raises(Stop, match="3 invalid replies"):
        conv.apply(FakeEpisode(), "garbage")


def test_turn_seeds_depend_on_trial_seed_and_turn_only():
    a = Conversation("p", "i", [], Scaffold())
    b = Conversation("other policy", "other instruction", [], Scaffold())
    assert a.turn_seed(7) == b.turn_seed(7) != a.turn_seed(8)
    a.turns = 1
    assert a.turn_seed(7) != b.turn_seed(7) and 0 <= a.turn_seed(7) < 2**31


def test_scaffold_options_are_validated():
    assert Scaffold.from_options({"one_shot": "false", "free_text_args": "a, b"}, "x").free_text_args == ("a", "b")
    with pytest.raises(BenchError, match="options.max_repeats"):
        Scaffold.from_options({"max_repeats": -1}, "spec.toml")
    with pytest.raises(BenchError, match="options.one_shot"):
        Scaffold.from_options({"one_shot": "maybe"}, "spec.toml")


@pytest.mark.parametrize("suite_name", ["retail", "calendar", "incident"])
def test_reference_solutions_stay_expressible_under_the_scaffold(suite_name):
    """Replaying each task's reference actions through the conversation, every reference call
    must be allowed by the schema the model would decode under at that point (otherwise the
    scaffold, not the model, caps the score). Values the reference knows from outside the
    conversation (domain knowledge) are the only exceptions allowed: ≤ 10 % of tasks."""
    from bench.world.user import ScriptedUser

    suite = load_suite(suite_name)
    blocked = []
    for task in suite.tasks:
        conv = Conversation(suite.policy, task.instruction, suite.tool_specs(), Scaffold())
        world, user = suite.new_world(task), ScriptedUser(task.user_facts)
        for action in task.reference_actions:
            if not jsonschema.Draft202012Validator(conv.schema()).is_valid({"tool": action.tool, "arguments": action.args}):
                blocked.append(f"{task.id}: {action.tool}({json.dumps(action.args)})")
                break
            if action.tool == "ask_user":
                text = user.answer(action.args["question"])
            else:
                outcome = world.execute(action.tool, action.args)
                value = outcome.observation
                text = (f"Error: {outcome.error}" if outcome.error else value if isinstance(value, str) else orjson.dumps(value).decode())
            conv.add_call(action.tool, action.args)
            conv.add_result(action.tool, text)
    assert len(blocked) <= 0.1 * len(suite.tasks), blocked
