"""`trajbench diff` (bench/analysis/diff.py, bench/analysis/regression.py): the statistics against independent computations, the
gate's false-alarm rate and FDR on simulated counts, and real runs through the runner."""

import io
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
from scipy import stats

from bench import cli as compare
from bench.adapters.spec import parse_agent_spec
from bench.analysis.diff import diff_runs
from bench.analysis.exact import boschloo_regression_p
from bench.analysis.metrics import benjamini_hochberg
from bench.analysis.regression import (
    PairedCounts,
    compare_counts,
    minimum_detectable_effect,
    paired_bootstrap,
    suite_test,
    task_tests,
)
from bench.cli import run_diff
from bench.errors import BenchError
from bench.publish.markdown import render_diff_markdown
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.suite import load_suite
from bench.world.task import load_schema

ALPHA = 0.05
MINI = Path(__file__).resolve().parent / "fixtures" / "mini"


def counts(nA, cA, nB, cB):
    return PairedCounts.of([f"t{i}" for i in range(len(nA))], nA, cA, nB, cB)


# ---------------------------------------------------------------------------- per-task test
def _boschloo_by_grid(cA, nA, cB, nB, grid=4001):
    """Boschloo's one-sided p-value from its definition: the supremum over the common rate π of
    P(Fisher's one-sided p ≤ the observed one), computed on a fine grid (a lower bound that is
    very close to the supremum)."""
    a = np.arange(nA + 1)[:, None]
    b = np.arange(nB + 1)[None, :]
    s = a + b
    # Fisher one-sided (base higher): P(X >= a | margins), X ~ Hypergeom(N, S, nA)
    fisher = stats.hypergeom.sf(a - 1, nA + nB, s, nA)
    extreme = fisher <= fisher[cA, cB] * (1 + 1e-7)
    pis = np.linspace(0, 1, grid)
    pa = stats.binom.pmf(np.arange(nA + 1)[None, :], nA, pis[:, None])
    pb = stats.binom.pmf(np.arange(nB + 1)[None, :], nB, pis[:, None])
    probs = np.einsum("gi,gj,ij->g", pa, pb, extreme.astype(float))
    return float(probs.max())


@pytest.mark.parametrize("table", [(8, 8, 0, 8), (8, 8, 4, 8), (7, 8, 3, 8), (5, 5, 2, 6), (3, 4, 3, 8), (10, 12, 9, 12)])
def test_boschloo_matches_its_definition(table):
    cA, nA, cB, nB = table
    assert boschloo_regression_p(cA, nA, cB, nB) == pytest.approx(_boschloo_by_grid(cA, nA, cB, nB), abs=2e-3)


def test_boschloo_direction_and_degenerate_tables():
    assert boschloo_regression_p(8, 8, 0, 8) < 1e-4            # base 8/8, candidate 0/8: a regression
    assert boschloo_regression_p(0, 8, 8, 8) == pytest.approx(1.0)  # an improvement is no evidence of regression
    assert boschloo_regression_p(8, 8, 8, 8) == 1.0
    assert boschloo_regression_p(0, 8, 0, 8) == 1.0


def test_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted 0.01, 0.03, 0.04, 0.20 -> 4p/rank = 0.04, 0.06, 0.0533, 0.20 -> running min from the top
    assert benjamini_hochberg(p) == pytest.approx([0.04, 0.0533333, 0.0533333, 0.20], abs=1e-6)
    assert benjamini_hochberg([]).size == 0


def test_tarone_family_leaves_out_tasks_that_cannot_reach_significance():
    pc = counts([8] * 4, [8, 8, 0, 7], [8] * 4, [8, 7, 0, 2])
    tt = task_tests(pc, ALPHA)
    # 8/8 vs 8/8, 8/8 vs 7/8 and 0/8 vs 0/8 can never give p <= 0.05 given their pooled outcomes
    assert tt["in_family"].tolist() == [False, False, False, True]
    assert math.isnan(tt["q"][0]) and tt["q"][3] == pytest.approx(tt["p"][3])


# ---------------------------------------------------------------------------- suite figures
def test_paired_bootstrap_means_by_hand():
    pc = counts([4, 4, 4], [4, 2, 3], [4, 4, 4], [2, 2, 4])
    out = paired_bootstrap(pc, 2, B=500)
    assert out["pass@1"]["delta"] == pytest.approx(((2 - 4) + 0 + (4 - 3)) / 4 / 3)
    # pass^2 = C(c,2)/C(4,2): base 1, 1/6, 3/6; candidate 1/6, 1/6, 1
    hand = [math.comb(c, 2) / math.comb(4, 2) for c in (4, 2, 3)], [math.comb(c, 2) / math.comb(4, 2) for c in (2, 2, 4)]
    assert out["pass^2"]["base"] == pytest.approx(np.mean(hand[0]))
    assert out["pass^2"]["delta"] == pytest.approx(np.mean(hand[1]) - np.mean(hand[0]))
    for entry in out.values():
        assert entry["lo"] <= entry["delta"] <= entry["hi"]


def test_identical_counts_give_a_zero_change_and_no_regression():
    pc = counts([8] * 10, [6] * 10, [8] * 10, [6] * 10)
    out = compare_counts(pc, k=4, permutations=500, bootstrap=300)
    assert out["suite"]["pass@1"]["delta"] == 0 and out["suite"]["pass@1"]["lo"] == out["suite"]["pass@1"]["hi"] == 0
    assert not out["test"]["significant_regression"] and out["test"]["p_value"] > 0.3


def test_permutation_p_value_matches_an_exact_enumeration():
    """Two tasks: enumerate every relabelling exactly (hypergeometric weights) and compare the
    pass@1 statistic's exact one-sided p-value with the Monte-Carlo one."""
    nA, cA, nB, cB = np.array([5, 6]), np.array([5, 4]), np.array([5, 6]), np.array([2, 3])
    S, N = cA + cB, nA + nB
    obs = np.mean(cB / nB - cA / nA)
    exact = 0.0
    for x0 in range(max(0, S[0] - nB[0]), min(S[0], nA[0]) + 1):
        for x1 in range(max(0, S[1] - nB[1]), min(S[1], nA[1]) + 1):
            d = np.mean([(S[0] - x0) / nB[0] - x0 / nA[0], (S[1] - x1) / nB[1] - x1 / nA[1]])
            w = stats.hypergeom.pmf(x0, N[0], S[0], nA[0]) * stats.hypergeom.pmf(x1, N[1], S[1], nA[1])
            exact += w * (d <= obs + 1e-12)
    res = suite_test(counts(nA, cA, nB, cB), 1, permutations=20000, seed=3)
    assert res["statistics"][0]["name"] == "pass@1"
    assert res["statistics"][0]["p_value"] == pytest.approx(exact, abs=0.01)


def test_the_gate_drawn_in_blocks_of_permutations_is_the_gate_drawn_at_once(monkeypatch):
    """The permutations are drawn and scored a block of rows at a time (memory bounded at
    10k tasks); the result must not depend on where the blocks end."""
    from bench.analysis import regression

    rng = np.random.default_rng(7)
    nA, nB = rng.integers(3, 9, 40), rng.integers(3, 9, 40)
    p = rng.random(40)
    pc = counts(nA, rng.binomial(nA, p), nB, rng.binomial(nB, np.clip(p - 0.1, 0, 1)))
    whole = suite_test(pc, 3, permutations=500, seed=1)
    monkeypatch.setattr(regression, "_BLOCK_CELLS", 40 * 7)  # blocks of 7 permutations: 500 is no multiple
    assert suite_test(pc, 3, permutations=500, seed=1) == whole
    monkeypatch.setattr(regression, "_BLOCK_CELLS", 1)  # one permutation per block
    assert suite_test(pc, 3, permutations=500, seed=1) == whole


def test_mde_against_the_closed_form_and_the_reference_table():
    """The textbook MDE of a paired mean change: T = 100 tasks, m = 10 runs, ω² = 0,
    E[p(1-p)] = 0.15, two-sided α = 0.05 (one-sided 0.025), 80% power: 4.9 pp. Our MDE also
    lets the candidate's variance follow the drop (q = p - δ has a larger q(1-q) here), so it
    may exceed the fixed-variance closed form by a few percent, never fall below it."""
    c = np.array([9] * 14 + [8] * 86)  # mean p(1-p) = 0.1502
    pc = counts([10] * 100, c, [10] * 100, c)
    mde = minimum_detectable_effect(pc, 2, 0.025)["pass@1"]["drop"]
    p = c / 10
    closed = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * math.sqrt(2 * np.mean(p * (1 - p)) / 10 / 100)
    assert closed == pytest.approx(0.049, abs=0.0005)
    assert closed <= mde <= 1.10 * closed


def test_mde_uses_the_alternative_variance_for_a_perfect_agent():
    """Both runs 8/8 everywhere: the null variance is 0, yet a drop is not detectable for free."""
    pc = counts([8] * 36, [8] * 36, [8] * 36, [8] * 36)
    mde = minimum_detectable_effect(pc, 8, 0.025)
    assert 0.01 < mde["pass@1"]["drop"] < 0.1


def test_no_drop_is_detectable_when_both_runs_never_succeed():
    """Both runs 0/4 everywhere: there is no success to lose, so no drop is detectable — not a
    drop of 0 pp (the bisection used to settle on 0 because effect and noise were both 0)."""
    pc = counts([4] * 5, [0] * 5, [4] * 5, [0] * 5)
    mde = minimum_detectable_effect(pc, 4, 0.025)
    assert mde["pass@1"] is None and mde["pass^4"] is None and mde["drop"] is None


# ---------------------------------------------------------------------------- the gate's level and the FDR
def _retail_truth():
    from bench.adapters.sim import SimAgent

    suite = load_suite("retail")
    agent = SimAgent(p="0.2..0.95")
    return np.array([agent.nominal_p(t) for t in suite.tasks])


@pytest.mark.parametrize("k,truth", [(8, "retail"), (4, "uniform-0.95")])
def test_gate_false_alarm_rate_on_500_null_diffs(k, truth):
    p = _retail_truth() if truth == "retail" else np.full(36, 0.95)
    T = p.size
    rng = np.random.default_rng(11)
    alarms = 0
    R = 500
    for r in range(R):
        pc = counts([k] * T, rng.binomial(k, p), [k] * T, rng.binomial(k, p))
        alarms += suite_test(pc, k, permutations=499, seed=r)["significant_regression"]
    assert alarms / R <= ALPHA + 0.02


def test_gate_false_alarm_rate_with_unequal_trials():
    """Infrastructure errors leave some tasks with fewer valid trials, and the runs' k differ."""
    p = _retail_truth()
    T = p.size
    rng = np.random.default_rng(5)
    alarms = 0
    R = 500
    for r in range(R):
        nA = rng.choice([3, 8], size=T)
        nB = np.full(T, 12)
        pc = counts(nA, rng.binomial(nA, p), nB, rng.binomial(nB, p))
        alarms += suite_test(pc, 2, permutations=499, seed=r)["significant_regression"]
    assert alarms / R <= ALPHA + 0.02


def test_per_task_false_discovery_rate_is_controlled():
    """Plant a drop of 0.5 on a quarter of the tasks; the share of false discoveries among the
    BH-significant tasks, averaged over simulated diffs, stays below alpha."""
    p = np.clip(_retail_truth() + 0.05, 0, 0.99)
    T, k = p.size, 16
    planted = np.zeros(T, dtype=bool)
    planted[::4] = True
    q = np.where(planted, np.clip(p - 0.5, 0, 1), p)
    rng = np.random.default_rng(2)
    fdp, found = [], 0
    for _ in range(300):
        pc = counts([k] * T, rng.binomial(k, p), [k] * T, rng.binomial(k, q))
        tt = task_tests(pc, ALPHA)
        sig = np.nan_to_num(tt["q"], nan=1.0) <= ALPHA
        fdp.append((sig & ~planted).sum() / max(sig.sum(), 1))
        found += (sig & planted).sum()
    assert np.mean(fdp) <= ALPHA
    assert found / (300 * planted.sum()) > 0.5  # and the planted tasks are mostly found


def test_worst_task_statistic_catches_a_single_newly_broken_task():
    """35 tasks unchanged and one going 8/8 -> 0/8: the mean barely moves, the gate fires."""
    rng = np.random.default_rng(4)
    p = np.full(36, 0.9)
    cA, cB = rng.binomial(8, p), rng.binomial(8, p)
    cA[0], cB[0] = 8, 0
    out = compare_counts(counts([8] * 36, cA, [8] * 36, cB), k=8, permutations=1999, bootstrap=0)
    assert out["test"]["significant_regression"] and out["test"]["worst_task"] == "t0"
    assert "t0" in out["categories"]["newly_broken"] and "t0" in out["significant_tasks"]


def test_categories():
    pc = counts([8] * 6, [8, 8, 8, 3, 0, 5], [8] * 6, [2, 6, 8, 8, 0, 4])
    cats = compare_counts(pc, k=4, permutations=200, bootstrap=0, with_mde=False)["categories"]
    assert cats == {"newly_broken": ["t0"], "newly_flaky": ["t1"], "fixed": ["t3"], "still_mixed": ["t5"],
                    "stable": ["t2", "t4"]}


# ---------------------------------------------------------------------------- real runs
def _run(suite, spec, out, k, seed=0, tasks=None):
    run_benchmark(suite, parse_agent_spec(spec), tasks, RunConfig(k=k, out=Path(out), seed=seed, progress=False,
                                                                   retry_backoff_s=0.0))
    return Path(out)


@pytest.fixture(scope="module")
def mini_runs(tmp_path_factory):
    suite = load_suite(MINI)
    root = tmp_path_factory.mktemp("diff")
    return {
        "base": _run(suite, "sim:noisy?p=0.95", root / "base", 16, seed=0),
        "same": _run(suite, "sim:noisy?p=0.95", root / "same", 16, seed=7),
        "worse": _run(suite, "sim:noisy?p=0.3", root / "worse", 16, seed=1),
        "short": _run(suite, "sim:noisy?p=0.95", root / "short", 4, seed=3),
    }


def test_real_runs_no_change_exits_0_and_a_drop_exits_1(mini_runs):
    out = io.StringIO()
    assert run_diff(mini_runs["base"], mini_runs["same"], out=out) == 0
    assert "no significant regression" in out.getvalue() and "Minimum detectable effect" in out.getvalue()
    out = io.StringIO()
    assert run_diff(mini_runs["base"], mini_runs["worse"], out=out) == 1
    text = out.getvalue()
    assert "SIGNIFICANT REGRESSION" in text and "exit 1" in text


def test_diff_json_follows_the_published_schema(mini_runs):
    validator = jsonschema.Draft202012Validator(load_schema("diff.schema.json"))
    for cand in ("same", "worse", "short"):
        out = io.StringIO()
        run_diff(mini_runs["base"], mini_runs[cand], fmt="json", out=out)
        data = json.loads(out.getvalue())
        assert not list(validator.iter_errors(data)), cand
    assert data["k"] == 4 and any("different k" in w for w in data["warnings"])


def test_diff_counts_are_recomputed_from_the_logs(mini_runs):
    from bench.runs.rundir import read_run

    diff = diff_runs(mini_runs["base"], mini_runs["worse"], permutations=200, bootstrap=200)
    for label, key in (("base", "base"), ("worse", "candidate")):
        log = read_run(mini_runs[label])
        for row in diff["tasks"]:
            trials = [s for s in log.summaries.values() if s["task"] == row["task"] and s["outcome"] != "error"]
            assert row[key]["n"] == len(trials)
            assert row[key]["successes"] == sum(s["outcome"] == "success" for s in trials)


def test_diff_refuses_different_suites_unless_forced(mini_runs, mini_copy, tmp_path):
    (mini_copy / "policy.md").write_text("A different policy.\n")
    other = _run(load_suite(mini_copy), "sim:noisy?p=0.95", tmp_path / "other", 4)
    with pytest.raises(BenchError, match="different suites") as err:
        diff_runs(mini_runs["base"], other)
    assert "--force" in str(err.value) and err.value.field == "suite.hash"
    for fmt, marker in (("text", "FORCED"), ("markdown", "FORCED"), ("json", '"forced": true')):
        out = io.StringIO()
        run_diff(mini_runs["base"], other, force=True, fmt=fmt, out=out)
        assert marker in out.getvalue()
        if fmt == "text":
            assert out.getvalue().count("FORCED") >= 2  # at the top and at the verdict


def test_diff_bad_input(mini_runs, tmp_path):
    with pytest.raises(BenchError, match="run.json"):
        diff_runs(tmp_path, mini_runs["base"])
    with pytest.raises(BenchError, match="k = 20 exceeds"):
        diff_runs(mini_runs["base"], mini_runs["same"], k=20)
    with pytest.raises(BenchError, match="alpha"):
        diff_runs(mini_runs["base"], mini_runs["same"], alpha=1.5)
    with pytest.raises(BenchError, match="baseline"):
        compare.gate(tmp_path / "nope", mini_runs["base"])


def test_gate_returns_the_diff_exit_status(mini_runs):
    assert compare.gate(mini_runs["base"], mini_runs["worse"], out=io.StringIO()) == 1
    assert compare.gate(mini_runs["base"], mini_runs["same"], out=io.StringIO()) == 0


def test_same_seed_warning(mini_runs, tmp_path):
    again = _run(load_suite(MINI), "sim:noisy?p=0.95", tmp_path / "again", 16, seed=0)
    diff = diff_runs(mini_runs["base"], again, permutations=200, bootstrap=100)
    assert diff["suite"]["pass@1"]["delta"] == 0  # a seeded sim agent replays itself
    assert any("replays" in w for w in diff["warnings"])


def test_markdown_escapes_run_text(mini_runs):
    diff = diff_runs(mini_runs["base"], mini_runs["worse"], permutations=200, bootstrap=100)
    diff["tasks"][0]["task"] = "evil|<script>alert(1)</script>"
    diff["tasks"][0]["category"] = "newly_broken"
    md = render_diff_markdown(diff)
    assert "<script>" not in md and "&lt;script&gt;" in md and "evil\\|" in md
    assert md.startswith("### 🔴")


def test_diff_reports_tool_mix_and_divergence_sections(mini_runs):
    diff = diff_runs(mini_runs["base"], mini_runs["worse"], permutations=200, bootstrap=100)
    mix = diff["tool_mix"]
    assert sum(r["base_share"] for r in mix["tools"]) == pytest.approx(1.0)
    assert {r["tool"] for r in mix["tools"]} >= {"find_customer", "cancel_order"}
    assert diff["tools"]["changed"] == [] and diff["tools"]["unchanged"] >= 4
    assert diff["divergence"]["available"]
    assert sum(diff["divergence"]["counts"].values()) == len(diff["divergence"]["tasks"])


def test_json_output_is_plain_json(mini_runs):
    out = io.StringIO()
    run_diff(mini_runs["base"], mini_runs["worse"], fmt="json", out=out, permutations=200, bootstrap=100)
    assert orjson.loads(out.getvalue())["exit_code"] == 1


# ---------------------------------------------------------------------------- the command line
@pytest.mark.slow
def test_cli_diff_and_run_baseline(tmp_path):
    """`trajbench diff` and `trajbench run --baseline` as a user runs them (exit 0 / 1 / 2)."""
    from tests.conftest import run_cli

    base, same, worse = tmp_path / "base", tmp_path / "same", tmp_path / "worse"
    assert run_cli("run", str(MINI), "--agent", "sim:noisy?p=0.95", "-k", "12", "--out", str(base), "--quiet").returncode == 0
    proc = run_cli("run", str(MINI), "--agent", "sim:noisy?p=0.95", "-k", "12", "--seed", "1", "--out", str(same),
                   "--quiet", "--baseline", str(base))
    assert proc.returncode == 0 and "no significant regression" in proc.stdout, proc.stderr
    proc = run_cli("run", str(MINI), "--agent", "sim:noisy?p=0.2", "-k", "12", "--seed", "2", "--out", str(worse),
                   "--quiet", "--baseline", str(base), "--alpha", "0.01")
    assert proc.returncode == 1 and "SIGNIFICANT REGRESSION" in proc.stdout and "α = 0.01" in proc.stdout, proc.stderr
    proc = run_cli("diff", str(base), str(worse), "--markdown")
    assert proc.returncode == 1 and proc.stdout.startswith("### 🔴")
    proc = run_cli("diff", str(base), str(worse), "--json", "--k", "4")
    assert proc.returncode == 1 and json.loads(proc.stdout)["k"] == 4
    for args in (("diff", str(base), str(tmp_path / "nope")), ("diff", str(base), str(worse), "--alpha", "2"),
                 ("diff", str(base), str(worse), "--json", "--markdown"),
                 ("run", "retail", "--agent", "sim:oracle", "-k", "1", "--out", str(tmp_path / "x"), "--baseline", str(base))):
        proc = run_cli(*args)
        assert proc.returncode == 2 and proc.stderr.startswith("trajbench: error:") and "Traceback" not in proc.stderr, args
    assert not (tmp_path / "x").exists()  # a baseline of another suite is refused before the run
