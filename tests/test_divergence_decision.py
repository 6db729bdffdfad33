"""The decision rule (forks at writes and stops, lookups as context) and small k (docs/divergence.md §1, §4)."""

import json
from math import comb

import jsonschema
import pytest
from scipy import stats

from bench.analysis.divergence.keys import looks_read_only
from bench.analysis.divergence.options import DivergenceOptions, TaskTrials, TrialPath
from bench.analysis.divergence.power import detectable_k, detection_power, smallest_testable_n
from bench.analysis.divergence.section import analyse, divergence_section
from bench.imports import import_run
from bench.publish.text import render_divergence
from bench.world.task import load_schema

RAW = DivergenceOptions(fork="raw")


def _call(tool, **args):
    return f"{tool}({json.dumps(args, sort_keys=True, separators=(',', ':'))})"


def _lookup_then_write(task, k, bad_every=2):
    """The issue's pattern: each trial looks up reservation A or B (the user drives it), then
    the trials that looked up B make the wrong write and fail."""
    trials = []
    for i in range(k):
        bad = i % bad_every == 1
        res = "B" if bad else "A"
        keys = [_call("get_user_details", user_id="u1"), _call("get_reservation_details", reservation_id=res),
                _call("update_reservation_flights", reservation_id="A", price=900 if bad else 700)]
        trials.append(TrialPath(f"{task}/{i}", not bad, keys, read_only=[True, True, False]))
    return TaskTrials(task, trials)


def test_decision_rule_names_the_write_where_the_raw_fork_names_the_lookup():
    raw = analyse([_lookup_then_write("t", 12)], RAW).section["tasks"][0]
    assert raw["divergence"]["step"] == 1  # the old default: the lookup
    assert all(a["tool"] == "get_reservation_details" for a in raw["divergence"]["alternatives"])
    assert raw["context"] is None
    row = analyse([_lookup_then_write("t", 12)]).section["tasks"][0]
    d = row["divergence"]
    assert d["significant"] and d["step"] == 0  # the first write
    assert {a["action"] for a in d["alternatives"]} == {_call("update_reservation_flights", reservation_id="A", price=p)
                                                       for p in (700, 900)}
    cx = row["context"]
    assert cx["at"] == "divergence" and cx["tool_call"] == 1 and cx["trials"] == 12
    assert {(a["action"], a["read_only"], a["n"], a["successes"]) for a in cx["alternatives"]} == {
        (_call("get_reservation_details", reservation_id="A"), True, 6, 6),
        (_call("get_reservation_details", reservation_id="B"), True, 6, 0)}
    text = render_divergence(analyse([_lookup_then_write("t", 12)]).section)
    assert "their lookups already differed from tool call 1" in text and "forks at writes and stops" in text


def test_a_fork_between_a_write_and_a_lookup_is_a_decision_not_context():
    """Trials that part at their first call into a write or a lookup part at a decision: the tree
    holds that fork, and it is not repeated as "their lookups already differed"."""
    trials = []
    for i in range(12):
        if i % 2:
            keys, flags = [_call("exchange_items", order_id="W1", item="I1")], [False]
        else:
            keys = [_call("get_order_details", order_id="W1"), _call("exchange_items", order_id="W1", item="I2")]
            flags = [True, False]
        trials.append(TrialPath(f"t/{i}", i % 2 == 0, keys, read_only=flags))
    row = analyse([TaskTrials("t", trials)]).section["tasks"][0]
    assert row["context"] is None


def test_a_stop_is_a_decision():
    """Failed trials stop after the first write; their lookups before it differ (and do not count)."""
    trials = []
    for i in range(12):
        keys, lookup = [_call("find", q=str(i % 3)), _call("write", v=1)], [True, False]
        if i % 2 == 0:
            keys, lookup = keys + [_call("find", q="x"), _call("write", v=2)], lookup + [True, False]
        trials.append(TrialPath(f"t/{i}", i % 2 == 0, keys, read_only=lookup))
    d = analyse([TaskTrials("t", trials)]).section["tasks"][0]["divergence"]
    assert d["step"] == 1 and d["significant"]
    assert {(a["end"], a["action"]) for a in d["alternatives"]} == {(True, None), (False, _call("write", v=2))}


def test_trials_parting_only_in_lookups_get_context_not_a_bogus_write():
    """Outcomes differ (say, a wrong final answer), the writes do not: no divergence point,
    no candidate, and the lookup fork as the task's context."""
    trials = [TrialPath(f"t/{i}", i % 2 == 0, [_call("get_order", order_id="O1" if i % 2 == 0 else "O2"), _call("cancel", order_id="O1")],
                        read_only=[True, False]) for i in range(12)]
    section = analyse([TaskTrials("t", trials)]).section
    row = section["tasks"][0]
    assert row["divergence"] is None and row["candidate"] is None and row["branches"] == []
    assert row["context"]["at"] == "task" and all(a["read_only"] for a in row["context"]["alternatives"])
    text = render_divergence(section)
    assert "no fork in writes or stops" in text and "the trials part only in lookups from tool call 0" in text
    assert analyse([TaskTrials("t", trials)], RAW).section["tasks"][0]["divergence"]["step"] == 0  # raw: the lookup


def test_without_read_only_flags_every_key_is_a_decision():
    """TaskTrials without flags (and the planted-detection simulation's writes): the rule changes nothing."""
    flagless = [TaskTrials("t", [TrialPath(t.trial, t.success, t.keys) for t in _lookup_then_write("t", 12).trials])]
    a, b = analyse(flagless).section, analyse(flagless, RAW).section
    assert a["tasks"][0]["divergence"] == b["tasks"][0]["divergence"]


def test_read_only_inferred_from_the_tool_name_when_the_log_has_no_flag():
    assert all(looks_read_only(t) for t in ("get_reservation_details", "search_direct_flight", "list_all_airports",
                                             "calculate", "think", "getOrder", "crm.find_customer"))
    assert not any(looks_read_only(t) for t in ("update_reservation_flights", "cancel_reservation", "book_reservation",
                                                 "send_certificate", "transfer_to_human_agents", "target"))


def _tau_record(task, trial, reservation, price, reward):
    calls = [("get_reservation_details", {"reservation_id": reservation}),
             ("update_reservation_flights", {"reservation_id": "A", "price": price})]
    traj = [{"role": "system", "content": "# policy"}, {"role": "user", "content": f"Change reservation {reservation}."}]
    for n, (name, args) in enumerate(calls):
        traj += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": f"c{n}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]},
                 {"role": "tool", "tool_call_id": f"c{n}", "name": name, "content": "{}"}]
    gold = [{"name": n, "kwargs": a} for n, a in calls]
    return {"task_id": task, "trial": trial, "reward": reward, "traj": traj,
            "info": {"task": {"user_id": "u", "instruction": "Change my flight.", "actions": gold},
                     "reward_info": {"reward": reward, "info": {"r_actions": reward}}}}


def test_imported_tau_bench_run_names_the_write(tmp_path):
    """τ-bench logs carry no read-only flags: the tool names decide (`looks_read_only`)."""
    records = [_tau_record(t, i, "A" if i % 2 == 0 else "B", 700 if i % 2 == 0 else 900, 1.0 if i % 2 == 0 else 0.0)
               for t in range(3) for i in range(8)]
    src = tmp_path / "tau.json"
    src.write_text(json.dumps(records))
    import_run("tau-bench", [src], tmp_path / "run")
    section = divergence_section(tmp_path / "run")
    jsonschema.validate(section, load_schema("divergence.schema.json"))
    for row in section["tasks"]:
        top = row["divergence"] or row["candidate"]
        assert all(a["tool"] == "update_reservation_flights" for a in top["alternatives"])
        assert row["context"]["tool_call"] == 0
    raw = divergence_section(tmp_path / "run", fork="raw")
    assert all((r["divergence"] or r["candidate"])["alternatives"][0]["tool"] == "get_reservation_details" for r in raw["tasks"])


# ------------------------------------------------------------------------------- small k
def _independent_power(k, q, p_main, p_alt, alpha=0.05):
    """The power sum with scipy's own Boschloo test (the benchmark's former bound)."""
    total = 0.0
    for x in range(1, k):
        for a in range(k - x + 1):
            for b in range(x + 1):
                if a + b in (0, k):
                    continue
                w = comb(k, x) * q ** x * (1 - q) ** (k - x) * comb(k - x, a) * p_main ** a * (1 - p_main) ** (k - x - a) \
                    * comb(x, b) * p_alt ** b * (1 - p_alt) ** (x - b)
                if w > 1e-7 and stats.boschloo_exact([[a, b], [k - x - a, x - b]]).pvalue <= alpha:
                    total += w
    return total


@pytest.mark.parametrize("k,q,p_main,p_alt", [(8, 0.5, 1.0, 0.0), (8, 0.25, 1.0, 0.2), (8, 0.5, 0.9, 0.2)])
def test_detection_power_matches_an_independent_computation(k, q, p_main, p_alt):
    assert detection_power(k, q, p_main, p_alt) == pytest.approx(_independent_power(k, q, p_main, p_alt), abs=2e-3)


def test_smallest_testable_k_and_detectable_k():
    assert smallest_testable_n() == 6 and smallest_testable_n(test="fisher") == 7
    assert detectable_k(0.5, 1.0, 0.0) == 8  # docs/divergence.md §6.1: q = 0.5, f = 1 is 92% at k = 8
    assert detectable_k(0.25, 1.0, 0.2) == 16  # q = 0.25, f = 0.8: 36% at k = 8, 89% at 16
    assert detectable_k(0.5, 0.5, 0.5) is None


def test_small_k_lists_every_mixed_task_with_an_exploratory_candidate():
    tasks = [_lookup_then_write(f"task-{j:02d}", 4) for j in range(12)]
    section = analyse(tasks).section
    jsonschema.validate(section, load_schema("divergence.schema.json"))
    assert section["suite"]["testable_from_k"] == 6
    for row in section["tasks"]:
        c = row["candidate"]
        assert row["divergence"] is None and c["label"] == "exploratory — not testable at k = 4"
        assert not c["testable"] and c["detectable_at_k"] == 8
        assert {a["tool"] for a in c["alternatives"]} == {"update_reservation_flights"}
    text = render_divergence(section)
    for j in range(12):
        assert f"task-{j:02d}" in text
    assert text.count("exploratory — not testable at k = 4; detectable (80% power) at k ≈ 8") == 12
    # at a testable k the same kind of unresolved task is "not significant", with no k suggested
    weak = analyse([_lookup_then_write("w", 8, bad_every=4)]).section["tasks"][0]
    if weak["divergence"] is None:
        assert weak["candidate"]["label"] == "not significant" and weak["candidate"]["detectable_at_k"] is None


@pytest.mark.slow
def test_report_command_on_an_imported_tau_bench_fixture(tmp_path):
    """The committed airline fixture (k = 4): every mixed task listed with its exploratory
    candidate naming a write or a stop, the lookup-only task with context; raw on request."""
    from tests.conftest import ROOT, run_cli

    run = tmp_path / "run"
    assert run_cli("import", "tau-bench", str(ROOT / "tests/fixtures/imports/tau-bench-airline.json"),
                   "--out", str(run)).returncode == 0
    text = run_cli("report", str(run)).stdout
    assert text.count("exploratory — not testable at k = 4") == 3 and "no fork in writes or stops" in text
    assert "update_reservation_flights(price=700) 2/2  vs  update_reservation_flights(price=900) 0/2" in text
    assert "the trials part only in lookups from tool call 1" in text
    raw = json.loads(run_cli("report", str(run), "--json", "--divergence", "raw").stdout)["divergence"]
    assert raw["options"]["fork"] == "raw" and all(t["context"] is None for t in raw["tasks"])
    decided = json.loads(run_cli("report", str(run), "--json").stdout)["divergence"]
    tops = [t["candidate"] for t in decided["tasks"] if t["candidate"]]
    assert len(tops) == 3 and all(a["end"] or a["tool"] in ("update_reservation_flights", "cancel_reservation",
                                                            "book_reservation", "transfer_to_human_agents")
                                  for c in tops for a in c["alternatives"])
