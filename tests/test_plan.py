"""`trajbench plan`: the planner's MDE against independent closed forms, spreads, pilots, the CLI."""

import math

import numpy as np
import pytest
from scipy import stats

from bench.analysis import planning
from bench.cli import main
from bench.errors import BenchError


def _fixed_point(p, T, var1, var0, za, zb):
    """Solve δ = za·SE0(δ) + zb·SE1(δ) by iteration, from the stated closed-form variances."""
    delta = 0.05
    for _ in range(200):
        delta = za * math.sqrt(var0(p, delta) / T) + zb * math.sqrt(var1(p, delta) / T)
    return delta


@pytest.mark.parametrize("p,T,n", [(0.5, 100, 8), (0.8, 50, 16), (0.3, 200, 4)])
def test_pass1_mde_is_the_textbook_two_sample_formula(p, T, n):
    za, zb = stats.norm.ppf(1 - 0.05 / 3), stats.norm.ppf(0.8)
    got = planning.mde(np.full(T, p), n, None, 0.05, 0.8)
    textbook = (za + zb) * math.sqrt(2 * p * (1 - p) / (n * T))  # small-effect approximation
    assert got == pytest.approx(textbook, rel=0.1)
    exact = _fixed_point(p, T, lambda p, d: (p * (1 - p) + (p - d) * (1 - p + d)) / n,
                         lambda p, d: (p - d / 2) * (1 - p + d / 2) * (2 / n) * (2 * n) / (2 * n - 1), za, zb)
    assert got == pytest.approx(exact, rel=1e-3)


def test_pass_k_mde_with_k_trials_uses_the_all_succeed_indicator():
    """With n = k trials the unbiased pass^k estimate is 1{all k succeed}: variance p^k (1 − p^k)."""
    p, T, k = 0.85, 60, 3
    za, zb = stats.norm.ppf(1 - 0.05 / 3), stats.norm.ppf(0.8)

    def var(r):
        return r ** k * (1 - r ** k)

    # solve for the rate drop d, then report the pass^k change p^k − (p − d)^k
    d = 0.05
    for _ in range(300):
        q, m = p - d, p - d / 2
        gap = za * math.sqrt(2 * var(m) / T) + zb * math.sqrt((var(p) + var(q)) / T)
        d = p - (p ** k - gap) ** (1 / k)
    assert planning.mde(np.full(T, p), k, k, 0.05, 0.8) == pytest.approx(p ** k - (p - d) ** k, rel=2e-3)


def test_spreads_and_plan_table():
    rates = planning.parse_spread("near01:0.5")(20)
    assert rates.size == 20 and (np.isin(rates[:10], [0.03, 0.97])).all() and ((rates[10:] > 0.3) & (rates[10:] < 0.7)).all()
    beta = planning.parse_spread("beta:2,2")(101)
    assert beta[50] == pytest.approx(0.5)
    for bad in ("beta:1", "near01:2", "uniform:1", "beta:a,b"):
        with pytest.raises(BenchError):
            planning.parse_spread(bad)
    table = planning.plan(planning.parse_spread("beta:2,2"), effect=0.1, k=None, tasks=[25, 100])
    small, big = table["rows"]
    assert big["trials_needed"] <= small["trials_needed"]  # more tasks, fewer trials each
    mdes = [c["mde"] for c in small["cells"]]
    assert all(a > b for a, b in zip(mdes, mdes[1:]))  # more trials, smaller MDE
    need = small["trials_needed"]
    cell = next(c for c in small["cells"] if c["trials"] == need)
    assert cell["mde"] <= 0.1


def test_cli_plan(tmp_path, capsys):
    assert main(["plan", "--spread", "near01:0.7", "--effect", "0.1", "--n-tasks", "40"]) == 0
    assert "trials per task" in capsys.readouterr().out
    assert main(["plan", "--effect", "0.1"]) == 2
    assert main(["plan", "--spread", "near01:0.7", "--effect", "0.1", "--metric", "passk"]) == 2
    assert main(["plan", "--pilot", str(tmp_path / "missing"), "--effect", "0.1"]) == 2


def test_achieved_mde_of_a_run(tmp_path, capsys):
    from tests.conftest import MINI

    out = tmp_path / "r"
    assert main(["run", str(MINI), "--agent", "sim:noisy?p=0.6", "-k", "6", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    result = planning.achieved(out, k=None)
    rates, n = planning.pilot_rates(out)
    assert result["tasks"] == 3 and result["trials_per_task"] == {"min": 6, "max": 6}
    assert result["mde"] == pytest.approx(planning.mde(rates, 6, None, 0.05, 0.8))
    assert main(["plan", "--achieved", str(out)]) == 0
    assert "detects a drop of pass@1" in capsys.readouterr().out
