"""The input-variance report against planted ground truth, through the real harness."""

import numpy as np
import pytest

from bench.adapters.spec import parse_agent_spec
from bench.analysis.report import build_report
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.suite import load_suite
from bench.world.variants import parse_variant_spec


@pytest.fixture(scope="module")
def retail():
    return load_suite("retail")


def run(suite, spec, out, families, k, seed=0):
    config = RunConfig(k=k, out=out, seed=seed, progress=False, variants=parse_variant_spec(families))
    run_benchmark(suite, parse_agent_spec(spec), None, config)
    return build_report(out, bootstrap=1000, seed=seed)


def true_delta(run_dir, family):
    """The planted effect, from the known per-trial truth: mean over tasks of true p under the
    family minus true p on the base input."""
    truth = {}
    for s in read_run(run_dir).summaries.values():
        truth.setdefault((s["variant_family"], s["task"]), s["agent_info"]["sim"]["true_p"])
    tasks = [t for (f, t) in truth if f == family]
    return float(np.mean([truth[(family, t)] - truth[("base", t)] for t in tasks]))


def test_a_planted_family_drop_is_recovered_inside_its_interval(retail, tmp_path):
    report = run(retail, "sim:noisy?p=0.9&family_p=typos:0.5,drop:0.75", tmp_path / "r", "typos,drop,paraphrase", k=8)
    families = {f["family"]: f for f in report["variants"]["families"]}
    for family in ("typos", "drop"):
        delta = families[family]["delta_pass@1"]
        truth = true_delta(tmp_path / "r", family)
        assert truth < -0.1
        assert delta["lo"] <= truth <= delta["hi"], (family, truth, delta)
        assert families[family]["verdict"] == "worse"
    assert families["paraphrase"]["verdict"] == "within noise"
    assert families["typos"]["hal_ratio"] == pytest.approx(
        families["typos"]["pass@1"]["mean"] / report["suite"]["pass@1"]["mean"], rel=0.05)


def test_a_variant_independent_agent_raises_few_false_alarms(retail, tmp_path):
    verdicts = []
    for seed in range(4):
        report = run(retail, "sim:noisy?p=0.2..0.95", tmp_path / f"r{seed}", "all", k=4, seed=seed)
        verdicts += [f["verdict"] for f in report["variants"]["families"]]
    assert len(verdicts) == 24
    # each family's 95% interval excludes 0 by chance 5% of the time (2.5% on the "worse" side):
    # expected about 0.6 "worse" verdicts in 24; P(more than 3) < 0.3% under the null
    assert verdicts.count("worse") <= 3, verdicts
