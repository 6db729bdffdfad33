"""Input variants never change the goal; only `drop` removes a fact, and then the user has it."""


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import BenchError
from bench.world.suite import load_suite
from bench.world.task import task_from_dict
from bench.world.user import ScriptedUser
from bench.world.variants import (
    FAMILIES,
    droppable_facts,
    make_variant,
    needed_facts,
    parse_back,
    parse_variant_spec,
    variants_of,
)

words = st.sampled_from(["please", "cancel", "my", "order", "quickly", "thanks", "because", "the", "meeting",
                         "Hello,", "I want to", "Could you", "tell me", "refund", "tomorrow", "service"])
emails = st.from_regex(r"[a-z]{3,8}\.[a-z]{3,8}@example\.com", fullmatch=True)
idents = st.from_regex(r"(W|AL-|EV)[0-9]{4}", fullmatch=True)
amounts = st.from_regex(r"\$[1-9][0-9]{0,3}\.[0-9]{2}", fullmatch=True)
dates = st.from_regex(r"2026-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])", fullmatch=True)


@st.composite
def tasks(draw):
    facts = {"email": draw(emails), "ident": draw(idents), "amount": draw(amounts), "date": draw(dates)}
    chunks = [" ".join(draw(st.lists(words, min_size=2, max_size=6))) for _ in range(4)]
    sentences = [f"{chunks[0].capitalize()} {facts['email']}.", f"{chunks[1].capitalize()} {facts['ident']} on {facts['date']}.",
                 f"{chunks[2].capitalize()} {facts['amount']}.", f"{chunks[3].capitalize()}."]
    raw = {"id": "t", "instruction": " ".join(sentences),
           "reference_actions": [{"tool": "act", "args": {"email": facts["email"], "order_id": facts["ident"],
                                                          "amount": facts["amount"], "day": facts["date"]}}]}
    return task_from_dict(raw, "generated"), facts


@settings(max_examples=150, deadline=None)
@given(tasks(), st.sampled_from([f for f in FAMILIES if f not in ("drop", "formats")]), st.integers(0, 10_000))
def test_non_dropping_families_keep_every_needed_fact_verbatim(generated, family, seed):
    task, facts = generated
    variant = make_variant(task, family, 0, {}, seed)
    if variant is None:
        return
    for fact in needed_facts(task):
        assert fact.lower() in variant.task.instruction.lower(), (family, fact, variant.task.instruction)
    assert variant.task.reference_actions == task.reference_actions
    assert variant.task.user_facts == task.user_facts


@settings(max_examples=150, deadline=None)
@given(tasks(), st.integers(0, 10_000))
def test_formats_rewrite_facts_reversibly(generated, seed):
    task, facts = generated
    variant = make_variant(task, "formats", 0, {}, seed)
    assert variant is not None  # every generated task has a date and an amount
    assert variant.task.instruction != task.instruction
    assert facts["date"] not in variant.task.instruction
    restored = parse_back(variant.task.instruction)
    for fact in facts.values():
        assert fact in restored


@settings(max_examples=150, deadline=None)
@given(tasks(), st.integers(0, 10_000))
def test_drop_moves_one_fact_to_the_user_who_answers_the_reference_question(generated, seed):
    task, facts = generated
    variant = make_variant(task, "drop", 0, {}, seed)
    dropped, key = variant.params["dropped"], variant.params["key"]
    assert dropped in (facts["email"], facts["ident"])
    assert dropped not in variant.task.instruction
    others = [f for f in needed_facts(task) if dropped not in f and f not in dropped]
    assert all(f.lower() in variant.task.instruction.lower() for f in others)
    assert variant.task.user_facts[key] == dropped
    first = variant.task.reference_actions[0]
    assert first.tool == "ask_user" and variant.task.reference_actions[1:] == task.reference_actions
    assert dropped in ScriptedUser(variant.task.user_facts).answer(first.args["question"])


def test_variants_are_deterministic_and_seeded():
    task = load_suite("retail").tasks[0]
    spec = parse_variant_spec("all", per_family=3)
    a = [(v.id, v.task.instruction) for v in variants_of(task, spec, 7)]
    assert a == [(v.id, v.task.instruction) for v in variants_of(task, spec, 7)]
    typos = [text for vid, text in a if vid.startswith("typos")]
    assert len(set(typos)) > 1
    assert a[0] == ("base", task.instruction)


def test_every_builtin_task_has_most_families():
    """Typos, paraphrase and distractors apply to every built-in task; drop to most."""
    spec = parse_variant_spec("all")
    counts = {}
    total = 0
    for name in ("retail", "calendar", "incident"):
        for task in load_suite(name).tasks:
            total += 1
            for v in variants_of(task, spec, 0)[1:]:
                counts[v.family] = counts.get(v.family, 0) + 1
    assert counts["typos"] == counts["paraphrase"] == counts["distractors"] == total
    assert counts["drop"] >= total / 2


def test_droppable_facts_skip_facts_the_user_already_holds():
    task = task_from_dict({"id": "t", "instruction": "I'm a@b.com, cancel W1001.", "user_facts": {"email": "a@b.com"},
                           "reference_actions": [{"tool": "x", "args": {"email": "a@b.com", "order_id": "W1001"}}]}, "inline")
    assert droppable_facts(task) == [("W1001", "order id number")]


@pytest.mark.parametrize("text,fragment", [("typo", "unknown perturbation family"), ("typos=2", "rate"),
                                           ("drop=0.1", "takes no parameter"), ("typos=abc", "number")])
def test_bad_variant_specs(text, fragment):
    with pytest.raises(BenchError, match=fragment):
        parse_variant_spec(text)
