"""Causal replay (bench.analysis.prefix, bench.analysis.causal): restoring prefixes, resuming
sim agents, the statistics against independent computation, and planted truth."""

import json

import pytest
from scipy import stats

from bench.adapters.builtin import ReferenceAgent
from bench.adapters.spec import parse_agent_spec
from bench.analysis.causal import Sampler, clopper_pearson, holm, newcombe_difference, replay_node
from bench.analysis.divergence.section import divergence_section
from bench.analysis.prefix import prefix_of
from bench.canonical import step_key
from bench.errors import BenchError
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.suite import load_suite
from tests.conftest import read_log, run_cli, write_log


@pytest.fixture(scope="module")
def retail():
    return load_suite("retail")


def _run(suite, agent, tasks, path, k=16):
    run_benchmark(suite, parse_agent_spec(agent), tasks, RunConfig(k=k, out=path, progress=False, retry_backoff_s=0.0))
    return read_run(path)


def test_clopper_pearson_matches_scipy():
    for c, n in [(0, 8), (3, 8), (8, 8), (7, 16), (1, 40)]:
        want = stats.binomtest(c, n).proportion_ci(0.95, method="exact")
        assert clopper_pearson(c, n) == pytest.approx((want.low, want.high), abs=1e-9)


def test_newcombe_difference_matches_newcombe_1998_example():
    # Newcombe (1998), Table II, example (a): 56/70 vs 48/80 -> 0.0524 to 0.3339 (method 10)
    lo, hi = newcombe_difference(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_prefix_that_does_not_replay_is_an_error(retail, tmp_path):
    log = _run(retail, "sim:oracle", [retail.tasks[0].id], tmp_path / "run", k=1)
    trial = next(iter(log.summaries))
    lines = [json.loads(line) for line in read_log(tmp_path / "run").splitlines()]
    first = next(r for r in lines if r["type"] == "step" and r["trial"] == trial and r["step"] == 0)
    first["observation"] = "tampered"  # the log edited after the run
    write_log(tmp_path / "run", "".join(json.dumps(r) + "\n" for r in lines).encode())
    log = read_run(tmp_path / "run")
    sampler = Sampler(retail, parse_agent_spec("sim:oracle").build(), 50)
    with pytest.raises(BenchError, match=r"does not restore: trial .*step 0: observation"):
        sampler.continuation(prefix_of(log, retail, trial, 2), None, 0)


def test_agent_without_resume_names_the_protocol(retail):
    with pytest.raises(BenchError, match=r"resume\(episode, prefix\)"):
        Sampler(retail, ReferenceAgent(), 50)


def test_restored_continuation_is_a_whole_trajectory(retail, tmp_path):
    log = _run(retail, "sim:oracle", [retail.tasks[0].id], tmp_path / "run", k=1)
    trial = next(iter(log.summaries))
    events = []
    sampler = Sampler(retail, parse_agent_spec("sim:oracle").build(), 50, sink=events.append)
    assert sampler.continuation(prefix_of(log, retail, trial, 2), None, 0)[0] == "success"
    steps = [e for e in events if e.get("type") == "step"]
    logged = log.trial_steps(trial)
    assert [(e["tool"], e["args"], e["state_hash"]) for e in steps] == [(e["tool"], e["args"], e["state_hash"]) for e in logged]


def test_planted_cause_is_confirmed_and_covered(retail, tmp_path):
    """plant_f = f: forcing the planted alternative must be confirmed against the reference step,
    and its continuation rate's 95% interval must cover 1 − f at ≥ 93% over many seeds."""
    f, m = 0.7, 16
    spec = f"sim:noisy?plant_step=1&plant_q=0.5&plant_f={f}"
    agent = parse_agent_spec(spec).build()
    task = next(t for t in retail.tasks if (p := agent.planted(retail, t)) is not None and p.alternative and p.f == f)
    log = _run(retail, spec, [task.id], tmp_path / "run", k=8)
    trial = next(t for t, s in sorted(log.summaries.items()) if not s["agent_info"]["sim"]["plant"]["taken"])
    prefix = prefix_of(log, retail, trial, 1)
    planted = agent.planted(retail, task).alternative
    alt = step_key(planted.tool, planted.args)
    covered = confirmed = 0
    seeds = 100
    for seed in range(seeds):
        result = replay_node(log, Sampler(retail, agent, 50, seed=seed), prefix, m)
        arm = next(a for a in result["alternatives"] if a["action"] == alt)
        lo, hi = arm["interval"]
        covered += lo <= 1 - f <= hi
        confirmed += arm["verdict"] == "confirmed"
    assert covered / seeds >= 0.93
    assert confirmed / seeds >= 0.6  # power at m = 16 for 1.0 vs 0.3 (Boschloo)


@pytest.mark.slow
def test_mood_symptom_is_not_confirmed_and_the_write_is(retail, tmp_path):
    """The hidden mood decides an early lookup and the fatal write: the raw first fork is the
    lookup (the decision rule names the write, the lookup as its context); replay says not
    confirmed at the lookup and confirmed at the write (≥ 90%)."""
    agent = parse_agent_spec("sim:noisy?mood=0.5").build()
    tasks = [t.id for t in retail.tasks if agent.mood_plan(retail, t) is not None][:12]
    log = _run(retail, "sim:noisy?mood=0.5", tasks, tmp_path / "run")
    section = {row["task"]: row for row in divergence_section(log, fork="raw")["tasks"]}
    decided = {row["task"]: row for row in divergence_section(log)["tasks"]}
    good = 0
    for task in tasks:
        plan = agent.mood_plan(retail, next(t for t in retail.tasks if t.id == task))
        bad = [t for t, s in sorted(log.summaries.items()) if s["task"] == task and s["agent_info"]["sim"]["mood"] == "bad"]
        if not bad or section[task]["divergence"] is None:
            continue
        lookup, write = step_key(plan.lookup.tool, plan.lookup.args), step_key(plan.write.tool, plan.write.args)
        assert lookup in [a["action"] for a in section[task]["divergence"]["alternatives"]]
        decision = decided[task]["divergence"] or decided[task]["candidate"]
        assert write in [a["action"] for a in decision["alternatives"]]
        assert lookup in [a["action"] for a in decided[task]["context"]["alternatives"]]
        keys = [step_key(e["tool"], e["args"]) for e in log.trial_steps(bad[0])]
        sampler = Sampler(retail, agent, 50)
        at_lookup = replay_node(log, sampler, prefix_of(log, retail, bad[0], keys.index(lookup)), 16)
        at_write = replay_node(log, sampler, prefix_of(log, retail, bad[0], keys.index(write)), 16)
        good += at_lookup["verdict"] == "not confirmed" and at_write["verdict"] == "confirmed"
    assert len(tasks) >= 10 and good / len(tasks) >= 0.9, (good, len(tasks))


def test_replay_command(tmp_path):
    task = "retail-001-cancel-stated"
    run = tmp_path / "run"
    assert run_cli("run", "retail", "--agent", "sim:noisy?mood=0.5", "-k", "16", "--tasks", task, "--out", str(run),
                   "--quiet").returncode == 0
    done = run_cli("replay", str(run), "--task", task, "-m", "8", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # `--at divergence` is the decision point: the first write, after the logged lookups
    assert result["step"] == len(result["prefix"]) and result["step"] > 0
    assert all(key.startswith(("get_", "find_", "list_")) for key in result["prefix"])
    assert result["continuations"] == 8 * (1 + len(result["alternatives"]))
    assert {a["verdict"] for a in result["alternatives"]} <= {"best", "confirmed", "not confirmed"}
    bad = run_cli("replay", str(run), "--task", task, "--at", "nowhere")
    assert bad.returncode == 2 and "TRIAL:STEP" in bad.stderr and "Traceback" not in bad.stderr
    over = run_cli("replay", str(run), "--task", task, "--budget", "3")
    assert over.returncode == 2 and "budget of 3" in over.stderr
    part = run_cli("replay", str(run), "--task", task, "-m", "8", "--budget", "16", "--json", "--out", str(tmp_path / "part"))
    assert part.returncode == 0, part.stderr
    partial = json.loads(part.stdout)
    assert partial["continuations"] == 16 and len(partial["alternatives"]) == 1
    assert partial["unreplayed"] == [a["action"] for a in result["alternatives"]][1:]
    # the partial replay resumes into the remaining arms: the same seeds give the full verdict
    rest = run_cli("replay", str(tmp_path / "part"), "--json")
    assert rest.returncode == 0, rest.stderr
    assert json.loads(rest.stdout) == {**result, "replay_dir": str(tmp_path / "part")}
    assert f"16 continuation(s) already logged, {result['continuations'] - 16} run now" in rest.stderr


def test_local_agent_resumes_with_the_rebuilt_conversation(tmp_path):
    """The local loop continues from a restored prefix with the conversation up to the node: the
    scripted engine (cancels O1, or O2 on an odd turn seed) sees the restored calls and results."""
    from bench.adapters.local import LocalAgent
    from tests.conftest import MINI
    from tests.test_adapter_langgraph import ScriptedEngine

    suite = load_suite(MINI)
    engine = ScriptedEngine()
    agent = LocalAgent("scripted-local", {}, engine=engine)
    task = next(t for t in suite.tasks if "cancel" in t.id)
    run_benchmark(suite, parse_agent_spec("sim:oracle"), [task.id], RunConfig(k=1, out=tmp_path / "run", progress=False))
    log = read_run(tmp_path / "run")
    trial = next(iter(log.summaries))
    sampler = Sampler(suite, agent, 20)
    result = replay_node(log, sampler, prefix_of(log, suite, trial, 2), 4)
    first = engine.requests[0][0]
    assert [m["content"].split(":")[0] for m in first if m["role"] == "user"][1:] == ["Result of find_customer", "Result of list_orders"]
    assert result["node"]["n"] == 4 and len(result["alternatives"]) >= 1


def test_point_of_no_return_is_the_fatal_write(retail, tmp_path):
    """A bad-mood trial is doomed by its write, not before: continuations from any prefix that
    holds the write never succeed (0/40, upper bound 0.088 < 0.1), while those from the prefix
    just before it draw a fresh mood and succeed half the time. The point is the step after
    the write, found through the command line; too small an m for the threshold is one clear error."""
    agent = parse_agent_spec("sim:noisy?mood=0.5").build()
    task = next(t for t in retail.tasks if agent.mood_plan(retail, t) is not None)
    run = tmp_path / "run"
    _run(retail, "sim:noisy?mood=0.5", [task.id], run, k=8)
    log = read_run(run)
    bad = [t for t, s in sorted(log.summaries.items()) if s["agent_info"]["sim"]["mood"] == "bad"]
    assert bad, "no bad-mood trial in 8 (p = 0.004): change the seed"
    plan = agent.mood_plan(retail, task)
    keys = [step_key(e["tool"], e["args"]) for e in log.trial_steps(bad[0])]
    write_at = keys.index(step_key(plan.write.tool, plan.write.args))
    done = run_cli("replay", str(run), "--task", task.id, "-m", "40", "--no-return", bad[0], "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["no_return"]
    assert row["trial"] == bad[0] and row["point_of_no_return"] == write_at + 1
    before = next(s for s in row["steps"] if s["step"] == write_at)
    assert before["successes"] > 0
    small = run_cli("replay", str(run), "--task", task.id, "-m", "16", "--no-return", "failed")
    assert small.returncode == 2 and "use -m 36 or more" in small.stderr and "Traceback" not in small.stderr
