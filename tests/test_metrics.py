"""Tests for bench.analysis.metrics against independent computations (exact rationals, scipy,
closed forms, hand-worked values, simulation)."""

from __future__ import annotations

import json
import math
import warnings
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bench.analysis import metrics as M

# ---------------------------------------------------------------------------------------
# Exact references
# ---------------------------------------------------------------------------------------


def ref_pass_hat(n: int, c: int, k: int) -> Fraction:
    return Fraction(comb(c, k), comb(n, k))


def ref_pass_at(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


def ref_flip(n: int, c: int) -> Fraction:
    # P(two distinct runs drawn without replacement disagree), by counting ordered pairs
    return Fraction(2 * c * (n - c), n * (n - 1))


SMALL_GRID = [(n, c, k) for n in range(1, 13) for c in range(n + 1) for k in range(1, n + 1)]


def test_exhaustive_small_grid_matches_exact_rationals():
    for n, c, k in SMALL_GRID:
        assert M.pass_hat_k(n, c, k) == pytest.approx(float(ref_pass_hat(n, c, k)), abs=1e-13)
        assert M.pass_at_k(n, c, k) == pytest.approx(float(ref_pass_at(n, c, k)), abs=1e-13)
        if n >= 2:
            assert M.flip_probability(n, c) == pytest.approx(float(ref_flip(n, c)), abs=1e-15)


def test_curves_match_scalar_functions_and_exact():
    for n in range(1, 13):
        for c in range(n + 1):
            hat = M.pass_hat_k_curve(n, c)
            at = M.pass_at_k_curve(n, c)
            assert hat.shape == at.shape == (n,)
            for k in range(1, n + 1):
                assert hat[k - 1] == pytest.approx(float(ref_pass_hat(n, c, k)), abs=1e-13)
                assert at[k - 1] == pytest.approx(float(ref_pass_at(n, c, k)), abs=1e-13)
                assert at[k - 1] == pytest.approx(M.pass_at_k(n, c, k), abs=1e-13)


def test_hand_worked_values():
    # n=8, c=5, k=4: C(5,4)/C(8,4) = 5/70
    assert M.pass_hat_k(8, 5, 4) == pytest.approx(5 / 70, rel=1e-14)
    # pass@4 = 1 - C(3,4)/C(8,4) = 1 (fewer failures than k)
    assert M.pass_at_k(8, 5, 4) == 1.0
    # pass@2 with n=8, c=5: 1 - C(3,2)/C(8,2) = 1 - 3/28 = 25/28
    assert M.pass_at_k(8, 5, 2) == pytest.approx(25 / 28, rel=1e-14)
    # pass^2 = C(5,2)/C(8,2) = 10/28
    assert M.pass_hat_k(8, 5, 2) == pytest.approx(10 / 28, rel=1e-14)
    # flip = 2*5*3/(8*7) = 30/56
    assert M.flip_probability(8, 5) == pytest.approx(30 / 56, rel=1e-14)
    # k = 1 is the plain success rate for both
    assert M.pass_hat_k(8, 5, 1) == pytest.approx(5 / 8, rel=1e-14)
    assert M.pass_at_k(8, 5, 1) == pytest.approx(5 / 8, rel=1e-14)
    assert M.pass_hat_k(8, 3, 4) == 0.0  # c < k
    assert M.pass_at_k(8, 0, 4) == 0.0
    assert M.pass_hat_k(8, 8, 8) == 1.0
    assert math.isnan(M.flip_probability(1, 1))
    assert math.isnan(M.flip_probability(0, 0))


@pytest.mark.parametrize("fn", [M.pass_at_k, M.pass_hat_k])
@pytest.mark.parametrize("n,c,k", [(5, 2, 6), (5, 2, 0), (5, 6, 2), (5, -1, 2), (-1, 0, 1)])
def test_validation(fn, n, c, k):
    with pytest.raises(ValueError):
        fn(n, c, k)


def test_validation_other():
    with pytest.raises(ValueError):
        M.flip_probability(3, 4)
    with pytest.raises(TypeError):
        M.pass_at_k(5.0, 2, 1)  # type: ignore[arg-type]  # non-integers are refused
    assert M.pass_hat_k(np.int64(8), np.int64(5), np.int64(4)) == pytest.approx(5 / 70)


def test_large_n_is_stable_and_exact():
    rng = np.random.default_rng(1234)
    for _ in range(60):
        n = int(rng.integers(100, 2001))
        c = int(rng.integers(0, n + 1))
        k = int(rng.integers(1, n + 1))
        for got, ref in [
            (M.pass_hat_k(n, c, k), ref_pass_hat(n, c, k)),
            (M.pass_at_k(n, c, k), ref_pass_at(n, c, k)),
        ]:
            assert math.isfinite(got) and 0.0 <= got <= 1.0
            assert got == pytest.approx(float(ref), rel=1e-9, abs=1e-12)
        f = M.flip_probability(n, c)
        assert f == pytest.approx(float(ref_flip(n, c)), rel=1e-12)
    # Extreme but meaningful corners: where float comb ratios overflow to inf/inf = nan
    n = 2000
    ref = float(ref_pass_hat(n, 1999, 1000))
    assert M.pass_hat_k(n, 1999, 1000) == pytest.approx(ref, rel=1e-9)
    assert M.pass_at_k(n, 1, 1000) == pytest.approx(float(ref_pass_at(n, 1, 1000)), rel=1e-9)
    curve = M.pass_hat_k_curve(n, 1500)
    assert np.all(np.isfinite(curve)) and np.all(np.diff(curve) <= 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_properties_monotone_and_ordered(nc):
    n, c = nc
    hat = M.pass_hat_k_curve(n, c)
    at = M.pass_at_k_curve(n, c)
    assert hat[0] == pytest.approx(c / n) and at[0] == pytest.approx(c / n)
    assert np.all(np.diff(hat) <= 1e-15)  # pass^k non-increasing in k
    assert np.all(np.diff(at) >= -1e-15)  # pass@k non-decreasing in k
    assert np.all(hat <= at + 1e-15)
    assert np.all((hat >= 0) & (hat <= 1) & (at >= 0) & (at <= 1))


# ---------------------------------------------------------------------------------------
# Unbiasedness: exact expectation over c ~ Binomial(n, p)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 8, 13, 40])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.7, 0.95])
def test_unbiased_under_binomial(n, p):
    pmf = stats.binom.pmf(np.arange(n + 1), n, p)
    for k in range(1, n + 1):
        e_hat = sum(pmf[c] * M.pass_hat_k(n, c, k) for c in range(n + 1))
        e_at = sum(pmf[c] * M.pass_at_k(n, c, k) for c in range(n + 1))
        assert e_hat == pytest.approx(p**k, rel=1e-9, abs=1e-13)
        assert e_at == pytest.approx(1 - (1 - p) ** k, rel=1e-9, abs=1e-13)
    e_flip = sum(pmf[c] * M.flip_probability(n, c) for c in range(n + 1))
    assert e_flip == pytest.approx(2 * p * (1 - p), rel=1e-9)


def test_plug_in_would_be_biased():
    """Sanity check of the test itself: the naive plug-ins are NOT unbiased (reference
    values: p=0.7, n=8, k=4)."""
    n, p, k = 8, 0.7, 4
    pmf = stats.binom.pmf(np.arange(n + 1), n, p)
    plug_hat = sum(pmf[c] * (c / n) ** k for c in range(n + 1))
    ours = sum(pmf[c] * M.pass_hat_k(n, c, k) for c in range(n + 1))
    assert plug_hat == pytest.approx(0.316, abs=1e-3)
    assert ours == pytest.approx(0.7**4, rel=1e-12)
    assert M.pass_at_k(8, 5, 4) != pytest.approx(1 - (1 - 5 / 8) ** 4)


# ---------------------------------------------------------------------------------------
# Per-task intervals
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("conf", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy(conf):
    for n in range(1, 31):
        for c in range(n + 1):
            ci = stats.binomtest(c, n).proportion_ci(confidence_level=conf, method="wilson")
            lo, hi = M.wilson_interval(c, n, conf)
            assert lo == pytest.approx(ci.low, abs=1e-12)
            assert hi == pytest.approx(ci.high, abs=1e-12)
            assert 0.0 <= lo <= c / n <= hi <= 1.0


def test_wilson_hand_value_and_edges():
    lo, hi = M.wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2365931, 0.7634069), abs=1e-6)
    assert M.wilson_interval(0, 10)[0] == 0.0
    assert M.wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in M.wilson_interval(0, 0))
    with pytest.raises(ValueError):
        M.wilson_interval(1, 5, confidence=1.0)


@pytest.mark.parametrize("conf", [0.9, 0.95])
def test_beta_interval_matches_posterior(conf):
    a = 1 - conf
    for n in range(0, 25):
        for c in range(n + 1):
            lo, hi = M.beta_interval(c, n, conf)
            post = stats.beta(c + 1, n - c + 1)
            assert lo == pytest.approx(post.ppf(a / 2), abs=1e-12)
            assert hi == pytest.approx(post.ppf(1 - a / 2), abs=1e-12)
            # equal tails, total mass = confidence
            assert post.cdf(lo) == pytest.approx(a / 2, abs=1e-9)
            assert post.sf(hi) == pytest.approx(a / 2, abs=1e-9)
    # closed form at c = 0: posterior Beta(1, n+1), CDF 1-(1-x)^(n+1)
    for n in (0, 3, 10, 50):
        lo, hi = M.beta_interval(0, n)
        assert lo == pytest.approx(1 - 0.975 ** (1 / (n + 1)), rel=1e-9)
        assert hi == pytest.approx(1 - 0.025 ** (1 / (n + 1)), rel=1e-9)


# ---------------------------------------------------------------------------------------
# Bootstrap over tasks
# ---------------------------------------------------------------------------------------


class _SpyRng:
    """Wraps a numpy Generator and records every integers() draw."""

    def __init__(self, real):
        self.real = real
        self.draws = []

    def integers(self, *args, **kwargs):
        out = self.real.integers(*args, **kwargs)
        self.draws.append(out)
        return out

    def __getattr__(self, name):
        raise AssertionError(f"bootstrap used unexpected RNG method {name!r}")


@pytest.fixture
def spy_rng(monkeypatch):
    spies = []
    real_default_rng = np.random.default_rng

    def fake(seed=None):
        spy = _SpyRng(real_default_rng(seed))
        spies.append(spy)
        return spy

    monkeypatch.setattr(np.random, "default_rng", fake)
    return spies


def test_bootstrap_draws_one_task_index_matrix(spy_rng):
    T, B = 7, 50
    values = np.arange(T, dtype=float)
    reps = M.bootstrap_task_replicates(values, B=B, seed=3)
    (spy,) = spy_rng
    assert len(spy.draws) == 1
    idx = spy.draws[0]
    assert idx.shape == (B, T)
    assert idx.min() >= 0 and idx.max() < T
    # each replicate is the mean of the resampled task rows
    np.testing.assert_allclose(reps, values[idx].mean(axis=1), rtol=1e-14)


def test_bootstrap_replicates_are_multisets_of_task_values():
    """Per-task values are distinct powers of base T+1, so a replicate's sum (= T * mean)
    is a base-(T+1) number whose digits are the multiplicities of each task; those must be
    non-negative integers summing to T. A within-task (trial) resample could not produce
    such sums."""
    T, B = 6, 400
    base = T + 1
    values = np.array([float(base**i) for i in range(T)])
    reps = M.bootstrap_task_replicates(values, B=B, seed=11)
    for r in reps:
        s = r * T
        total = round(s)
        assert abs(s - total) < 1e-6
        digits = []
        for _ in range(T):
            total, d = divmod(total, base)
            digits.append(d)
        assert total == 0
        assert sum(digits) == T


def test_bootstrap_nan_aware_matches_direct_nanmean(spy_rng):
    rng = np.random.Generator(np.random.PCG64(5))  # not through the patched default_rng
    T, Mcols, B = 9, 4, 300
    vals = rng.random((T, Mcols))
    vals[rng.random((T, Mcols)) < 0.4] = np.nan
    vals[:, 3] = np.nan
    vals[0, 3] = 0.25  # column 3 defined for a single task only
    reps = M.bootstrap_task_replicates(vals, B=B, seed=8)
    idx = spy_rng[0].draws[0]
    assert reps.shape == (B, Mcols)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        direct = np.nanmean(vals[idx], axis=1)  # (B, M), all-nan -> nan (warns)
    np.testing.assert_allclose(reps, direct, rtol=1e-12, equal_nan=True)
    # single-task column: replicates are either that task's value or undefined
    col = reps[:, 3]
    assert set(np.unique(col[~np.isnan(col)])) == {0.25}
    lo, hi = M.bootstrap_task_means(vals, B=B, seed=8)
    assert lo[3] == hi[3] == 0.25


def test_bootstrap_interval_shapes_and_degenerate_cases():
    lo, hi = M.bootstrap_task_means(np.array([0.3, 0.5, 0.9, 0.1]), B=500, seed=0)
    assert isinstance(lo, float) and isinstance(hi, float) and lo <= 0.45 <= hi
    # one task: resampling tasks cannot move the estimate (trial resampling would)
    assert M.bootstrap_task_means(np.array([5 / 70]), B=200) == (5 / 70, 5 / 70)
    # identical tasks -> zero-width interval
    lo, hi = M.bootstrap_task_means(np.full(10, 0.4), B=200)
    assert lo == pytest.approx(0.4) and hi == pytest.approx(0.4)
    lo, hi = M.bootstrap_task_means(np.ones((5, 3)), B=100)
    assert lo.shape == hi.shape == (3,)
    assert all(math.isnan(x) for x in M.bootstrap_task_means(np.array([]), B=10))
    # deterministic for a fixed seed, different for another
    v = np.random.default_rng(0).random(30)
    assert M.bootstrap_task_means(v, seed=1) == M.bootstrap_task_means(v, seed=1)
    assert M.bootstrap_task_means(v, seed=1) != M.bootstrap_task_means(v, seed=2)


def test_bootstrap_interval_close_to_normal_theory():
    """For a mean of many tasks the percentile interval should be near mean +/- z*sd/sqrt(T)."""
    v = np.random.default_rng(42).random(400)
    lo, hi = M.bootstrap_task_means(v, B=4000, seed=0)
    se = v.std(ddof=1) / math.sqrt(v.size)
    assert lo == pytest.approx(v.mean() - 1.96 * se, abs=0.15 * se)
    assert hi == pytest.approx(v.mean() + 1.96 * se, abs=0.15 * se)


# ---------------------------------------------------------------------------------------
# Calibration by simulation
# ---------------------------------------------------------------------------------------


def _coverage(p_sampler, R: int, T: int, n: int, ks: tuple[int, ...], seed: int):
    rng = np.random.default_rng(seed)
    hits = {k: 0 for k in ks}
    for r in range(R):
        p = p_sampler(rng)
        c = rng.binomial(n, p)
        s = M.suite_summary([(n, int(ci)) for ci in c], B=500, seed=r)
        for k in ks:
            e = s["pass^k"][k - 1]
            assert e["k"] == k and e["n_tasks"] == T
            truth = float(np.mean(p**k)) if p_sampler.fixed else p_sampler.truth(k)
            hits[k] += e["lo"] <= truth <= e["hi"]
    return {k: h / R for k, h in hits.items()}


def test_bootstrap_calibration_fixed_tasks():
    """Fixed task difficulties p_t in [0.2, 0.95], n=8 binomial trials: the 95% interval for
    suite pass@1 (= pass^1) and pass^2, pass^4 covers mean_t p_t^k at least 93% of the time."""
    T, n, R = 40, 8, 400
    p_fixed = np.linspace(0.2, 0.95, T)

    def sampler(rng):
        return p_fixed

    sampler.fixed = True
    cov = _coverage(sampler, R=R, T=T, n=n, ks=(1, 2, 4), seed=2024)
    for k, v in cov.items():
        assert v >= 0.93, (k, v)


def test_bootstrap_calibration_sampled_tasks():
    """Tasks drawn afresh each repetition from p ~ U(0.2, 0.95): the target is then the
    population value E[p^k] = (0.95^(k+1) - 0.2^(k+1)) / ((k+1) * 0.75). This is the case the
    task bootstrap is built for; percentile intervals with T=40 run slightly under nominal,
    so the threshold is looser (nominal ~0.94; R=400 gives sd ~0.012)."""
    T, n, R = 40, 8, 400

    def sampler(rng):
        return rng.uniform(0.2, 0.95, size=T)

    sampler.fixed = False
    sampler.truth = lambda k: (0.95 ** (k + 1) - 0.2 ** (k + 1)) / ((k + 1) * 0.75)
    cov = _coverage(sampler, R=R, T=T, n=n, ks=(1, 2, 4), seed=7)
    for k, v in cov.items():
        assert v >= 0.90, (k, v)


# ---------------------------------------------------------------------------------------
# Clustered SE
# ---------------------------------------------------------------------------------------


def test_clustered_se_hand_value():
    s = [1, 0, 1, 1, 0, 0]
    cl = ["a", "a", "b", "b", "c", "c"]
    # mean 0.5; residual sums per cluster: a: 0, b: +1, c: -1 -> sum of squares 2
    assert M.clustered_se(s, cl) == pytest.approx(math.sqrt(3 / 2 * 2) / 6, rel=1e-14)
    # labels may be any hashable; order of rows does not matter
    perm = [5, 2, 0, 4, 1, 3]
    assert M.clustered_se([s[i] for i in perm], [hash(cl[i]) for i in perm]) == pytest.approx(
        math.sqrt(3) / 6, rel=1e-14
    )


def test_clustered_se_singletons_reduce_to_clt_se():
    v = np.random.default_rng(3).random(25)
    assert M.clustered_se(v, range(25)) == pytest.approx(v.std(ddof=1) / 5, rel=1e-12)


def test_clustered_se_double_sum_form():
    """Independent computation via pairwise products: sum_c (sum_i r_i)^2 =
    sum_c sum_i sum_j r_i r_j."""
    rng = np.random.default_rng(9)
    v = rng.random(30)
    cl = rng.integers(0, 6, size=30)
    r = v - v.mean()
    total = sum(r[i] * r[j] for i in range(30) for j in range(30) if cl[i] == cl[j])
    C = len(set(cl.tolist()))
    assert M.clustered_se(v, cl.tolist()) == pytest.approx(math.sqrt(C / (C - 1) * total) / 30)


def test_clustered_se_undefined_and_errors():
    assert math.isnan(M.clustered_se([0.1, 0.5, 0.9], ["x", "x", "x"]))
    with pytest.raises(ValueError):
        M.clustered_se([0.1, 0.2], ["x"])


# ---------------------------------------------------------------------------------------
# suite_summary
# ---------------------------------------------------------------------------------------


def test_suite_summary_hand_worked():
    counts = [(8, 5), (4, 4), (2, 0), (0, 0)]
    s = M.suite_summary(counts, B=300, seed=1)
    json.dumps(s, allow_nan=False)  # JSON-serialisable, no NaN
    assert s["n_tasks"] == 3 and s["n_tasks_without_trials"] == 1
    assert s["trials_min"] == 2 and s["trials_max"] == 8
    assert s["pass@1"]["mean"] == pytest.approx((5 / 8 + 1 + 0) / 3)
    assert s["pass@1"]["n_tasks"] == 3
    assert s["pass@1"]["clustered_se"] is None
    assert [e["k"] for e in s["pass^k"]] == list(range(1, 9))
    assert [e["k"] for e in s["pass@k"]] == list(range(1, 9))
    assert [e["n_tasks"] for e in s["pass^k"]] == [3, 3, 2, 2, 1, 1, 1, 1]
    assert s["pass^k"][2]["mean"] == pytest.approx((10 / 56 + 1) / 2)  # k=3
    assert s["pass^k"][3]["mean"] == pytest.approx((5 / 70 + 1) / 2)  # k=4
    assert s["pass^k"][7]["mean"] == 0.0  # only the 8-trial task, c=5 < 8
    assert s["pass@k"][1]["mean"] == pytest.approx((25 / 28 + 1 + 0) / 3)  # k=2
    assert s["pass@k"][3]["mean"] == pytest.approx(1.0)  # k=4: (1 + 1)/2
    assert s["flip"]["mean"] == pytest.approx((30 / 56 + 0 + 0) / 3)
    assert s["flip"]["n_tasks"] == 3
    for e in [s["pass@1"], s["flip"], *s["pass^k"], *s["pass@k"]]:
        assert e["lo"] <= e["mean"] + 1e-12 and e["mean"] <= e["hi"] + 1e-12
    # single-task columns: task resampling leaves them fixed
    assert s["pass^k"][4]["lo"] == s["pass^k"][4]["hi"] == pytest.approx(comb(5, 5) / comb(8, 5))


def test_suite_summary_single_task_not_trial_bootstrap():
    """One task with c=5, n=8: pass^4 = 5/70 with a zero-width interval. A within-task trial
    bootstrap would centre near 0.152 and have width."""
    s = M.suite_summary([(8, 5)], B=500)
    e = s["pass^k"][3]
    assert e["mean"] == pytest.approx(5 / 70) and e["lo"] == e["hi"] == pytest.approx(5 / 70)


def test_suite_summary_intervals_match_bootstrap_task_means():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 11, size=30)
    c = rng.binomial(n, 0.6)
    counts = list(zip(n.tolist(), c.tolist()))
    s = M.suite_summary(counts, B=700, seed=4, confidence=0.9)
    assert s["confidence"] == 0.9 and s["bootstrap_B"] == 700
    lo, hi = M.bootstrap_task_means(c / n, B=700, seed=4, confidence=0.9)
    assert s["pass@1"]["lo"] == pytest.approx(lo, abs=1e-12)
    assert s["pass@1"]["hi"] == pytest.approx(hi, abs=1e-12)
    # pass^3 uses only tasks with n >= 3, computed independently
    use = n >= 3
    vals = np.array([float(ref_pass_hat(ni, ci, 3)) for ni, ci in zip(n[use], c[use])])
    assert s["pass^k"][2]["n_tasks"] == int(use.sum())
    assert s["pass^k"][2]["mean"] == pytest.approx(vals.mean(), rel=1e-12)


def test_suite_summary_clusters():
    counts = [(4, 4), (4, 0), (0, 0), (4, 2), (4, 3)]
    clusters = ["a", "a", "z", "b", "b"]  # the n=0 task's label is dropped with it
    s = M.suite_summary(counts, clusters=clusters, B=100)
    v = [1.0, 0.0, 0.5, 0.75]
    assert s["pass@1"]["n_clusters"] == 2
    assert s["pass@1"]["clustered_se"] == pytest.approx(M.clustered_se(v, ["a", "a", "b", "b"]))
    # hand value: mean 0.5625; cluster residual sums a: -0.125, b: 0.125 -> 2/1*(2*0.015625)
    assert s["pass@1"]["clustered_se"] == pytest.approx(math.sqrt(2 * 2 * 0.125**2) / 4)
    one = M.suite_summary([(3, 1), (3, 2)], clusters=["a", "a"], B=50)
    assert one["pass@1"]["clustered_se"] is None  # C < 2 -> undefined
    with pytest.raises(ValueError):
        M.suite_summary([(3, 1)], clusters=["a", "b"])


def test_suite_summary_empty_and_degenerate():
    s = M.suite_summary([], B=50)
    json.dumps(s, allow_nan=False)
    assert s["n_tasks"] == 0 and s["pass^k"] == [] and s["pass@k"] == []
    assert s["pass@1"]["mean"] is None and s["flip"]["mean"] is None
    assert s["trials_min"] is None and s["trials_max"] is None
    s = M.suite_summary([(0, 0), (1, 1)], B=50)
    json.dumps(s, allow_nan=False)
    assert s["n_tasks"] == 1 and s["n_tasks_without_trials"] == 1
    assert s["flip"] == {"mean": None, "lo": None, "hi": None, "n_tasks": 0}
    with pytest.raises(ValueError):
        M.suite_summary([(3, 4)])


# ---------------------------------------------------------------------------------------
# End states, trajectories, resources
# ---------------------------------------------------------------------------------------


def test_end_state_agreement():
    assert M.end_state_agreement(["a", "b", "a", "c", "a"]) == {"distinct": 3, "top_share": 0.6}
    assert M.end_state_agreement(["h"] * 4) == {"distinct": 1, "top_share": 1.0}
    assert M.end_state_agreement([]) == {"distinct": 0, "top_share": None}


def ref_levenshtein(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_normalized_edit_distance_hand_worked():
    d = M.normalized_edit_distance(["search", "get", "buy"], ["search", "buy"])
    assert d == pytest.approx(1 / 3)
    assert M.normalized_edit_distance(list("kitten"), list("sitting")) == pytest.approx(3 / 7)
    assert M.normalized_edit_distance([], []) == 0.0
    assert M.normalized_edit_distance([], ["a"]) == 1.0
    assert M.normalized_edit_distance(["a", "b"], ["b", "a"]) == 1.0
    # multi-character strings are single actions, not character sequences
    assert M.normalized_edit_distance(["ab"], ["a", "b"]) == 1.0
    # items with colliding CPython hashes (hash(-1) == hash(-2)) are still different
    assert M.normalized_edit_distance([-1], [-2]) == 1.0
    # tuples (tool, args-hash) work as items
    assert M.normalized_edit_distance([("get", 1), ("put", 2)], [("get", 1), ("put", 3)]) == 0.5


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", ("t", 1)]), max_size=12),
    st.lists(st.sampled_from(["a", "b", "c", ("t", 1)]), max_size=12),
)
def test_normalized_edit_distance_matches_dp(a, b):
    d = M.normalized_edit_distance(a, b)
    expect = 0.0 if not a and not b else ref_levenshtein(a, b) / max(len(a), len(b))
    assert d == pytest.approx(expect)
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(M.normalized_edit_distance(b, a))


def test_trajectory_consistency():
    seqs = [["a", "b", "c"], ["a", "b", "c"], ["a", "c"]]
    # pairs: 0, 1/3, 1/3
    assert M.trajectory_consistency(seqs) == pytest.approx(2 / 9)
    assert M.trajectory_consistency([["a"]]) is None
    assert M.trajectory_consistency([]) is None
    assert M.trajectory_consistency([["x", "y"]] * 5) == 0.0
    ints = [[3, 9, 4], [3, 9, 4], [3, 4], [2 ** 31 - 1, 0, 3, 4]]  # key ids compared as they are: the same figure
    assert M.trajectory_consistency(ints, ids=True) == M.trajectory_consistency(ints)


def test_coefficient_of_variation():
    assert M.coefficient_of_variation([1, 2, 3]) == pytest.approx(0.5)
    v = [10.0, 12.5, 7.0, 30.0]
    assert M.coefficient_of_variation(v) == pytest.approx(
        stats.tstd(v) / np.mean(v)  # scipy's sample sd (ddof=1)
    )
    assert M.coefficient_of_variation([5]) is None
    assert M.coefficient_of_variation([]) is None
    assert M.coefficient_of_variation([0, 0]) is None
    assert M.coefficient_of_variation([-1, 1]) is None


def test_trajectory_consistency_samples_beyond_the_cap(monkeypatch):
    """Past MAX_DISTINCT_COMPARED distinct sequences the figure is the mean over a seeded sample
    of trials: reproducible, and unbiased for the all-pairs mean (computed here pair by pair
    with an independent Levenshtein)."""
    rng = np.random.default_rng(7)
    seqs = [list(rng.integers(0, 4, size=int(rng.integers(1, 7)))) for _ in range(240)]
    n = len(seqs)
    truth = sum(ref_levenshtein(seqs[i], seqs[j]) / max(len(seqs[i]), len(seqs[j]))
                for i in range(n) for j in range(i + 1, n)) / (n * (n - 1) / 2)
    assert M.trajectory_consistency(seqs) == pytest.approx(truth)  # under the cap: exact
    monkeypatch.setattr(M, "MAX_DISTINCT_COMPARED", 40)
    assert len({tuple(s) for s in seqs}) > 40
    estimates = np.array([M.trajectory_consistency(seqs, seed=s) for s in range(300)])
    assert M.trajectory_consistency(seqs, seed=3) == estimates[3]  # seeded: the same figure again
    assert estimates.std() > 0  # a sample, not the exact figure
    se = estimates.std() / np.sqrt(estimates.size)
    assert abs(estimates.mean() - truth) < 4 * se + 1e-9


def test_bootstrap_means_in_column_blocks_equal_the_whole_product(monkeypatch):
    """A long pass^k curve is bootstrapped a block of columns at a time (bounded memory at any
    k): the same intervals as the replicates formed at once, to rounding."""
    rng = np.random.default_rng(3)
    table = rng.random((30, 41))
    table[rng.random(table.shape) < 0.2] = np.nan
    reps = M.bootstrap_task_replicates(table, B=300, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanpercentile(reps, [2.5, 97.5], axis=0)
    monkeypatch.setattr(M, "_CELLS_AT_ONCE", 300 * 7)  # blocks of 7 columns
    lo, hi = M.bootstrap_task_means(table, B=300, seed=5)
    assert np.allclose(lo, want[0], rtol=1e-12, equal_nan=True) and np.allclose(hi, want[1], rtol=1e-12, equal_nan=True)


def _old_exact_trajectory_consistency(seqs):
    """The exact branch as it was before the canonical order (distinct sequences in first-seen
    order, one cdist): the reference for 'exact is unchanged'."""
    from collections import Counter

    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein
    groups = Counter(map(tuple, seqs))
    distinct = list(groups)
    w = np.array(list(groups.values()), dtype=np.float64)
    dist = process.cdist(distinct, distinct, scorer=Levenshtein.normalized_distance, dtype=np.float64)
    n = len(seqs)
    return float((np.triu(np.outer(w, w), k=1) * dist).sum() / (n * (n - 1) / 2))


def test_trajectory_consistency_is_order_invariant_and_exact_unchanged(monkeypatch):
    """The figure depends on the multiset of trials only: the same trials shuffled (interleaved,
    resumed or imported logs) give the identical figure, exact or sampled; the exact figure is the
    old one (to rounding) whatever the row-block size."""
    rng = np.random.default_rng(11)
    seqs = [[int(x) for x in rng.integers(0, 5, size=int(rng.integers(1, 6)))] for _ in range(400)]
    seqs += seqs[:150]  # repeated sequences: counts > 1
    shuffled = [seqs[i] for i in rng.permutation(len(seqs))]
    exact = M.trajectory_consistency(seqs, ids=True)
    assert exact == pytest.approx(_old_exact_trajectory_consistency(seqs), rel=1e-12)
    assert M.trajectory_consistency(shuffled, ids=True) == exact
    monkeypatch.setattr(M, "_ROWS_AT_ONCE", 7)
    assert M.trajectory_consistency(seqs, ids=True) == pytest.approx(exact, rel=1e-12)
    monkeypatch.setattr(M, "MAX_DISTINCT_COMPARED", 60)
    assert len({tuple(s) for s in seqs}) > 60
    for seed in (0, 1, 2):
        sampled = M.trajectory_consistency(seqs, ids=True, seed=seed)
        assert M.trajectory_consistency(shuffled, ids=True, seed=seed) == sampled
        assert M.trajectory_consistency(list(reversed(seqs)), ids=True, seed=seed) == sampled
    mixed = [["a", 1], [1, "a"], [("t", 2)], ["a", 1]] * 30  # items that do not compare: sorted by repr
    monkeypatch.setattr(M, "MAX_DISTINCT_COMPARED", 2)
    assert M.trajectory_consistency(mixed, seed=4) == M.trajectory_consistency(mixed[::-1], seed=4)


def test_bootstrap_in_replicate_blocks_is_bit_identical(monkeypatch):
    """The (B, T) index matrix is drawn a few replicates at a time (bounded memory at 10k tasks):
    the replicates and intervals are bit for bit those of the matrix drawn at once, and a caller's
    Generator ends in the same state."""
    rng = np.random.default_rng(4)
    table = rng.random((23, 9))
    table[rng.random(table.shape) < 0.25] = np.nan
    whole = M.bootstrap_task_replicates(table, B=101, seed=9)
    lo_w, hi_w = M.bootstrap_task_means(table, B=101, seed=9)
    g_whole = np.random.default_rng(5)
    M.bootstrap_task_means(table, B=101, seed=g_whole)
    monkeypatch.setattr(M, "_DRAW_CELLS", 23 * 4)  # blocks of 4 replicates (the last one: 1)
    assert np.array_equal(M.bootstrap_task_replicates(table, B=101, seed=9), whole, equal_nan=True)
    lo, hi = M.bootstrap_task_means(table, B=101, seed=9)
    assert np.array_equal(lo, lo_w, equal_nan=True) and np.array_equal(hi, hi_w, equal_nan=True)
    monkeypatch.setattr(M, "_CELLS_AT_ONCE", 101 * 2)  # and columns in blocks of 2: the draw replayed
    g_blocked = np.random.default_rng(5)
    lo, hi = M.bootstrap_task_means(table, B=101, seed=g_blocked)
    lo_g, hi_g = M.bootstrap_task_means(table, B=101, seed=np.random.default_rng(5))
    assert np.array_equal(lo, lo_g, equal_nan=True) and np.array_equal(hi, hi_g, equal_nan=True)
    assert g_blocked.random() == g_whole.random()
