"""Divergence analysis against planted ground truth: detection of a planted branch, and false
alarms where nothing on the path changes the outcome.

The large grid (s × q × k × f) is printed by `python benchmarks/divergence.py detection` (see
docs/divergence.md); here fixed seeds check the targets, and runs through the real harness
check that the sim agent's planting and the analysis meet end to end.
"""

import importlib.util
import json

import pytest

from bench.adapters.spec import AgentSpec, parse_agent_spec
from bench.analysis.divergence.section import divergence_section
from bench.canonical import step_key
from bench.errors import BenchError
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.suite import load_suite
from tests.conftest import ROOT, run_cli

_spec = importlib.util.spec_from_file_location("divergence_benchmark", ROOT / "benchmarks" / "divergence.py")
bench_div = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_div)


# ----------------------------------------------------------------- path-level simulation


@pytest.mark.parametrize("s", [1, 3, 6])
@pytest.mark.parametrize("q,f", [(0.5, 0.8), (0.5, 1.0), (0.25, 1.0)])
def test_detection_meets_the_target_at_k16(s, q, f):
    rate, n = bench_div.detection_rate(2024, s, q, f, 16, replications=10)
    assert n == 200
    assert rate >= 0.95, (s, q, f, rate)


@pytest.mark.parametrize("s", [1, 3, 6])
def test_detection_at_q025_f08_is_near_what_any_test_can_do(s):
    """With q = 0.25 and k = 16, about 6 % of tasks have at most one trial on the planted
    branch, and failures there are Binomial(f): even the planted node's own test, without
    any multiplicity correction, reaches p ≤ 0.05 for only ~89 % of tasks. The 95 % target is
    out of reach here for any method; the analysis must lose little to that bound."""
    bound = bench_div.detection_bound(16, 0.25, 0.8)
    assert 0.85 < bound < 0.95
    rate, _ = bench_div.detection_rate(2024, s, 0.25, 0.8, 16, replications=10)
    assert rate >= bound - 0.06, (rate, bound)


def test_detection_grows_with_k():
    rates = [bench_div.detection_rate(7, 3, 0.25, 1.0, k, replications=5)[0] for k in (4, 8, 16, 32)]
    assert rates[0] == 0.0  # four trials cannot make any branch significant at 5 %
    assert rates[1] < rates[2] <= rates[3] and rates[3] >= 0.95


@pytest.mark.parametrize("kind", ["noise", "branch", "mixed"])
@pytest.mark.parametrize("k", [8, 16, 32])
def test_false_alarms_stay_below_five_percent(kind, k):
    tasks_rate, _, n = bench_div.false_alarm_rate(99, k, kind, replications=10)
    assert n >= 100
    assert tasks_rate <= 0.05, (kind, k, tasks_rate)


# ----------------------------------------------------------------- through the real harness

CHAIN_DOMAIN = '''
from bench.world.tools import ToolError, Toolset

tools = Toolset()


@tools.tool(read_only=True, params={"slot": {"type": "string"}})
def read_slot(db, slot):
    """Read a slot."""
    if slot not in db["slots"]:
        raise ToolError(f"no slot {slot}")
    return db["slots"][slot]


@tools.tool(read_only=False, params={"slot": {"type": "string"}, "value": {"type": "integer"}})
def write_slot(db, slot, value):
    """Write a slot."""
    if slot not in db["slots"]:
        raise ToolError(f"no slot {slot}")
    db["slots"][slot] = value
    return {"slot": slot, "value": value}
'''


@pytest.fixture(scope="module")
def chain_suite(tmp_path_factory):
    """Tasks of eight writes, each of which matters: a wrong value at step s is fatal, and
    writing the right value afterwards recovers."""
    root = tmp_path_factory.mktemp("chain") / "chain"
    (root / "tasks").mkdir(parents=True)
    (root / "suite.toml").write_text('name = "chain"\ndescription = "eight writes per task"\n')
    (root / "domain.py").write_text(CHAIN_DOMAIN)
    (root / "db.json").write_text(json.dumps({"slots": {f"s{j}": 0 for j in range(10)}}))
    tasks = []
    for t in range(6):
        actions = [{"tool": "write_slot", "args": {"slot": f"s{j}", "value": 10 * t + j + 1}} for j in range(8)]
        tasks.append({"id": f"chain-{t}", "instruction": "Fill the slots.", "reference_actions": actions})
    (root / "tasks" / "tasks.json").write_text(json.dumps(tasks))
    return load_suite(root)


def _sim(options: str) -> AgentSpec:
    """The sim agent with planting, through the python adapter (the `sim:` spec form needs
    bench/adapters/spec.py to allow the plant_* options)."""
    return parse_agent_spec(f"python:bench.adapters.sim:SimAgent?{options}")


def _detected(section, log):
    """Per task: (planted alternative key, whether the divergence point offers it, the point)."""
    plants = {}
    for s in log.summaries.values():
        plant = s["agent_info"]["sim"].get("plant")
        if plant is not None:
            alt = plant["alternative"]
            plants[s["task"]] = (plant["step"], None if alt is None else step_key(alt["tool"], alt["args"]))
    out = {}
    for row in section["tasks"]:
        if row["task"] not in plants:
            continue
        step, key = plants[row["task"]]
        d = row["divergence"]
        hit = d is not None and any(a["action"] == key and not a["end"] for a in d["alternatives"]) if key else \
            d is not None and any(a["end"] for a in d["alternatives"])
        out[row["task"]] = (step, key, hit, d)
    return out


@pytest.mark.parametrize("s", [1, 3, 6])
def test_planted_divergence_found_through_the_harness(chain_suite, tmp_path, s):
    out = tmp_path / "run"
    config = RunConfig(k=16, out=out, progress=False, retry_backoff_s=0.0, seed=s)
    run_benchmark(chain_suite, _sim(f"plant_step={s}&plant_q=0.5&plant_f=0.8&noise=0.3"), None, config)
    log = read_run(out)
    for summary in log.summaries.values():
        plant = summary["agent_info"]["sim"]["plant"]
        assert plant["step"] == s and plant["mode"] == "wrong_arg" and plant["f"] == 0.8
        assert summary["agent_info"]["sim"]["true_p"] == pytest.approx(0.5 + 0.5 * 0.2)
        # ground truth: trials that took the alternative and did not recover failed, no other did
        assert (summary["outcome"] == "failure") == (plant["taken"] and not plant["recovered"])
    found = _detected(divergence_section(log), log)
    assert len(found) == 6
    hits = [task for task, (_, _, hit, _) in found.items() if hit]
    assert len(hits) >= 5, found
    for task in hits:
        d = found[task][3]
        assert d["step"] == s and d["significant"] and d["on_reference_path"]
        ref_alt = next(a for a in d["alternatives"] if a["on_reference"])
        assert ref_alt["successes"] == ref_alt["n"]  # the reference branch never fails here


def test_planted_divergence_on_a_builtin_suite(tmp_path):
    suite = load_suite("retail")
    out = tmp_path / "run"
    config = RunConfig(k=16, out=out, progress=False, retry_backoff_s=0.0)
    run_benchmark(suite, _sim("plant_step=1&plant_q=0.5&plant_f=1"), None, config)
    log = read_run(out)
    found = _detected(divergence_section(log), log)
    planted = {t for t, (_, _, _, _) in found.items()}
    assert len(planted) >= 20  # tasks with two reference steps or more
    rate = sum(hit for _, _, hit, _ in found.values()) / len(found)
    assert rate >= 0.95, {t: v[:3] for t, v in found.items() if not v[2]}


def test_branch_without_effect_is_not_reported(chain_suite, tmp_path):
    """f = 0: the planted alternative is always recovered from; every trial succeeds except
    background failures (p = 0.8, at random steps and modes), none of which is the plant."""
    out = tmp_path / "run"
    config = RunConfig(k=16, out=out, progress=False, retry_backoff_s=0.0)
    run_benchmark(chain_suite, _sim("plant_step=3&plant_q=0.5&plant_f=0&p=0.8"), None, config)
    log = read_run(out)
    for row in divergence_section(log)["tasks"]:
        d = row["divergence"]
        if d is None:
            continue
        taken = {step_key(s["agent_info"]["sim"]["plant"]["alternative"]["tool"],
                          s["agent_info"]["sim"]["plant"]["alternative"]["args"])
                 for s in log.summaries.values() if s["task"] == row["task"]}
        worse = set(d["failure_branches"])
        assert not worse & taken, (row["task"], d)


def test_plant_options_are_validated():
    from bench.adapters.sim import SimAgent

    for bad in ({"plant_step": "-1"}, {"plant_step": "x"}, {"plant_step": "1", "plant_q": "2"},
                {"plant_step": "1", "plant_f": "nan?"}, {"plant_q": "0.5"}):
        with pytest.raises(BenchError):
            SimAgent(**bad)
    agent = SimAgent(plant_step="2", plant_q="0.25", plant_f="0.9")
    assert agent.plant == (2, 0.25, 0.9)
    assert SimAgent(p="0.7").plant is None


def test_sim_spec_with_plant_options_on_the_command_line(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "retail", "--agent", "sim:noisy?plant_step=1&plant_q=0.5&plant_f=1", "-k", "12",
                   "--tasks", "retail-001-cancel-stated,retail-005-return-stated", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    raw = divergence_section(out, fork="raw")
    assert all(row["divergence"] is not None and row["divergence"]["step"] == 1 for row in raw["tasks"])
    # the planted write follows one lookup: the decision rule counts it as the first decision
    section = divergence_section(out)
    assert all(row["divergence"] is not None and row["divergence"]["step"] == 0 for row in section["tasks"])
