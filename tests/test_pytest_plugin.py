"""The pytest plugin (bench/pytest_plugin.py), tested as a user meets it: inside a generated test
suite run by pytester, with the plugin loaded as the `pytest11` entry point would load it."""

from pathlib import Path

import pytest

# pytester runs the generated suites in this process and unloads what they import afterwards;
# numpy and scipy cannot be loaded twice in one process, so load what the plugin uses up front.
import bench.adapters.python  # noqa: F401
import bench.adapters.sim  # noqa: F401
import bench.analysis.diff  # noqa: F401
import bench.analysis.report  # noqa: F401
import bench.pytest_plugin  # noqa: F401
import bench.runs.runner  # noqa: F401
import bench.world.overlay  # noqa: F401

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "fixtures" / "mini"


@pytest.fixture
def run_suite(pytester, monkeypatch):
    """Run the generated tests with only our plugin loaded (an installed trajbench would also
    register it through its entry point: loading it twice would be an error)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.syspath_prepend(str(ROOT))

    def run(source: str, *args: str):
        pytester.makepyfile(test_consistency_example=source.replace("MINI", repr(str(MINI))))
        return pytester.runpytest_inprocess("-p", "bench.pytest_plugin", "-q", "-W", "ignore::pytest.PytestAssertRewriteWarning",
                                            *args)

    return run


def test_fixture_runs_an_agent_and_reads_pass_hat_k(run_suite):
    result = run_suite("""
        def test_oracle(trajbench):
            run = trajbench.run(MINI, "sim:oracle", k=3)
            assert run.k == 3 and run.n_tasks == 3
            assert run.pass_hat_k(3) == 1.0 and run.pass_at_1 == 1.0 and run.pass_at_k(2) == 1.0
            assert run.interval("pass^k") == (1.0, 1.0)
            assert run.task("cancel-pending")["successes"] == 3
            trajbench.assert_consistent(run, pass_hat_k_at_least=1.0, pass_at_1_at_least=1.0, conservative=True)
    """)
    result.assert_outcomes(passed=1)


def test_assert_consistent_fails_with_a_readable_message(run_suite):
    result = run_suite("""
        def test_weak_agent(trajbench):
            run = trajbench.run(MINI, "sim:noisy?p=0.4", k=6)
            trajbench.assert_consistent(run, pass_hat_k_at_least=0.9)
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*trajbench: agent sim:noisy?p=0.4 is not consistent enough on suite mini:*",
        "*pass^6 = *95% interval * over n = 3 tasks with k = 6 trials each: * is below the bound 0.9*",
        "*least consistent tasks:*",
        "*run directory:*",
    ])
    assert "Traceback" not in result.stdout.str() and "def test_weak_agent" not in result.stdout.str()


def test_conservative_bound_uses_the_interval(run_suite):
    result = run_suite("""
        def test_bound(trajbench):
            run = trajbench.run(MINI, "sim:noisy?p=0.8", k=8)
            lo, hi = run.interval("pass@1")
            assert lo < run.pass_at_1
            trajbench.assert_consistent(run, pass_at_1_at_least=run.pass_at_1)           # point estimate: passes
            trajbench.assert_consistent(run, pass_at_1_at_least=run.pass_at_1, conservative=True)  # interval: fails
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pass@1 = *: the lower end of its 95% interval*is below the bound*"])


def test_assert_no_regression_passes_and_fails(run_suite):
    result = run_suite("""
        def test_same_agent(trajbench):
            base = trajbench.run(MINI, "sim:noisy?p=0.9", k=12, seed=0)
            cand = trajbench.run(MINI, "sim:noisy?p=0.9", k=12, seed=1)
            diff = trajbench.assert_no_regression(base, cand)
            assert diff["exit_code"] == 0 and "this diff detects" in diff["mde_statement"]

        def test_worse_agent(trajbench):
            base = trajbench.run(MINI, "sim:noisy?p=0.95", k=12, seed=0)
            cand = trajbench.run(MINI, "sim:noisy?p=0.2", k=12, seed=1)
            trajbench.assert_no_regression(base.path, str(cand.path), alpha=0.05)
    """)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*trajbench: significant regression of sim:noisy?p=0.2 against the baseline (one-sided p = * ≤ α = 0.05; n = 3 tasks)*",
        "*pass@1: * → * (Δ -*, 95% CI*",
        "*see `trajbench diff *`*",
    ])


def test_recorded_baseline_and_python_agents(run_suite, tmp_path):
    """A baseline stored on disk (as in a repository), and agents passed as Python objects."""
    result = run_suite(f"""
        BASELINE = {str(tmp_path / 'baseline')!r}

        def cancel_o1(episode):
            episode.call("find_customer", {{"email": "ada@example.com"}})
            episode.call("cancel_order", {{"order_id": "O1"}})
            return "Cancelled O1."

        class Refuser:
            def run(self, episode):
                return "I cannot help with that."

        def test_record_then_compare(trajbench):
            trajbench.run(MINI, "sim:oracle", k=4, tasks=["cancel-pending"], out=BASELINE)
            baseline = trajbench.load(BASELINE)
            good = trajbench.run(MINI, cancel_o1, k=4, tasks=["cancel-pending"])
            assert good.pass_hat_k() == 1.0
            trajbench.assert_no_regression(baseline, good)
            bad = trajbench.run(MINI, Refuser(), k=4, tasks=["cancel-pending"])
            assert bad.pass_at_1 == 0.0
            trajbench.assert_no_regression(baseline, bad)
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*significant regression of *Refuser*", "*newly broken: cancel-pending*"])


def test_bad_input_is_a_readable_failure(run_suite, tmp_path):
    result = run_suite(f"""
        def test_missing_baseline(trajbench):
            run = trajbench.run(MINI, "sim:oracle", k=2)
            trajbench.assert_no_regression({str(tmp_path / 'nope')!r}, run)
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*trajbench: cannot compare * not a run directory*"])


def test_keep_runs_option(run_suite, tmp_path):
    keep = tmp_path / "kept"
    source = """
        def test_kept(trajbench):
            trajbench.run(MINI, "sim:oracle", k=2, tasks=["cancel-pending"])
    """
    run_suite(source, "--trajbench-runs", str(keep)).assert_outcomes(passed=1)
    runs = list(keep.rglob("run.json"))
    assert len(runs) == 1 and "test_consistency_example-test_kept" in str(runs[0])
    run_suite(source, "--trajbench-runs", str(keep)).assert_outcomes(passed=1)  # a second session starts afresh
    assert len(list(keep.rglob("run.json"))) == 1


@pytest.mark.slow
def test_the_documented_example_test_file_passes(pytester, monkeypatch):
    """examples/overlays/test_agent_consistency.py, as docs/regression.md tells users to run it."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.syspath_prepend(str(ROOT))
    example = ROOT / "examples" / "overlays" / "test_agent_consistency.py"
    result = pytester.runpytest_inprocess("-p", "bench.pytest_plugin", "-q", str(example))
    result.assert_outcomes(passed=3)
