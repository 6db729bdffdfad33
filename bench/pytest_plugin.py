"""pytest plugin: assert on an agent's consistency in your own test suite.

Installed with trajbench (entry point ``pytest11``), it provides the ``trajbench`` fixture::

    def test_refunds_are_consistent(trajbench):
        run = trajbench.run("retail", "my_agents:support_agent", k=8, tasks=["retail-005-return-stated"])
        trajbench.assert_consistent(run, pass_hat_k_at_least=0.8)

    def test_no_regression_against_the_recorded_baseline(trajbench):
        run = trajbench.run("retail", "my_agents:support_agent", k=8, seed=1)
        trajbench.assert_no_regression("baselines/retail", run, alpha=0.05)

A failed assertion fails the test with a readable paragraph (the figures, the bound, the least
consistent tasks, or the diff's verdict and regressed tasks), not a traceback. The helpers
``assert_consistent`` and ``assert_no_regression`` can also be imported from this module; the
rest is the Python API of `bench.api` (``bench.run``, ``bench.load``, ``bench.diff``), with a
fresh run directory per call.

Options: ``--trajbench-runs DIR`` keeps every run directory under DIR (default: pytest's
temporary directories), so that a failing test's runs can be inspected with
``trajbench report`` / ``trajbench diff`` afterwards.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bench.errors import BenchError

if TYPE_CHECKING:  # the plugin loads in every pytest session: the API is imported on first use
    from bench.api import Run, RunLike

__all__ = ["Trajbench", "assert_consistent", "assert_no_regression", "trajbench"]


# ---------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------


def assert_consistent(run: RunLike, *, pass_hat_k_at_least: float | None = None, k: int | None = None,
                      pass_at_1_at_least: float | None = None, conservative: bool = False) -> None:
    """Fail the test when the run's pass^k (k defaults to the run's k) or pass@1 is below the
    bound. With ``conservative=True`` the bound applies to the lower end of the 95% interval
    (bootstrap over tasks): the test passes only when the bound is met with confidence."""
    if pass_hat_k_at_least is None and pass_at_1_at_least is None:
        raise TypeError("assert_consistent needs pass_hat_k_at_least= and/or pass_at_1_at_least=")
    from bench import api

    result = api.load(run)
    k = k or result.k
    problems = []
    checks = []
    if pass_hat_k_at_least is not None:
        checks.append((f"pass^{k}", result.pass_hat_k(k), result.interval("pass^k", k), pass_hat_k_at_least))
    if pass_at_1_at_least is not None:
        checks.append(("pass@1", result.pass_at_1, result.interval("pass@1"), pass_at_1_at_least))
    for name, value, (lo, hi), bound in checks:
        compared = lo if conservative else value
        if compared is None or compared < bound:
            what = f"the lower end of its 95% interval ({lo:.3f})" if conservative else f"{value:.3f}"
            problems.append(f"{name} = {value:.3f} [95% interval {lo:.3f}, {hi:.3f}] over n = {result.n_tasks} tasks "
                            f"with k = {result.k} trials each: {what} is below the bound {bound}")
    if problems:
        worst = sorted(result.report["tasks"], key=lambda r: (r["pass@1"] if r["pass@1"] is not None else -1))[:5]
        listing = "; ".join(f"{r['task']} {r['successes']}/{r['n']}" + (f" (fails: {', '.join(list(r['failed_checks'])[:2])})"
                                                                          if r["failed_checks"] else "") for r in worst)
        agent = result.manifest["agent"]["name"]
        pytest.fail(f"trajbench: agent {agent} is not consistent enough on suite {result.manifest['suite']['name']}:\n  "
                    + "\n  ".join(problems) + f"\n  least consistent tasks: {listing}\n  run directory: {result.path} "
                    f"(`trajbench report {result.path}`)", pytrace=False)


def assert_no_regression(baseline: RunLike, candidate: RunLike, *, alpha: float = 0.05,
                         k: int | None = None, force: bool = False) -> dict[str, Any]:
    """Fail the test when `trajbench diff BASELINE CANDIDATE` finds a significant regression at
    level alpha (the same gate as the command's exit status 1). Returns the diff (a dict, see
    bench/schemas/diff.schema.json) when there is none, e.g. to assert on its MDE."""
    from bench import api
    from bench.publish.text import mde_statement

    base, cand = Path(baseline), Path(candidate)  # a Run is a path (os.fspath)
    try:
        diff = api.diff(base, cand, alpha=alpha, k=k, force=force)
    except BenchError as exc:
        pytest.fail(f"trajbench: cannot compare {base} with {cand}: {exc}", pytrace=False)
    if diff["exit_code"] == 1:
        s = diff["suite"]
        lines = [f"trajbench: significant regression of {diff['candidate']['agent']['name']} against the baseline "
                 f"(one-sided p = {diff['test']['p_value']:.4f} ≤ α = {alpha}; n = {diff['task_sets']['shared']} tasks)"]
        for name, e in s.items():
            if e["delta"] is not None:
                lines.append(f"  {name}: {e['base']:.3f} → {e['candidate']:.3f} (Δ {e['delta']:+.3f}, 95% CI "
                             f"[{e['lo']:+.3f}, {e['hi']:+.3f}])")
        for cat in ("newly_broken", "newly_flaky"):
            if diff["categories"][cat]:
                lines.append(f"  {cat.replace('_', ' ')}: {', '.join(diff['categories'][cat][:10])}")
        if diff["significant_tasks"]:
            lines.append(f"  significantly worse tasks (BH q ≤ {alpha}): {', '.join(diff['significant_tasks'][:10])}")
        for change in diff["tools"]["changed"]:
            lines.append(f"  tool changed: {change['tool']}")
        lines.append(f"  see `trajbench diff {base} {cand}`")
        pytest.fail("\n".join(lines), pytrace=False)
    diff["mde_statement"] = mde_statement(diff)
    return diff


# ---------------------------------------------------------------------------------------
# The fixture
# ---------------------------------------------------------------------------------------


class Trajbench:
    """What the ``trajbench`` fixture gives a test: run agents, load runs, assert on them."""

    assert_consistent = staticmethod(assert_consistent)
    assert_no_regression = staticmethod(assert_no_regression)

    def __init__(self, root: Path):
        self.root = root
        self._count = 0

    def _new_dir(self, label: str) -> Path:
        self._count += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")[:60] or "run"
        return self.root / f"{self._count:02d}-{safe}"

    def run(self, suite: Any, agent: Any, k: int = 4, *, tasks: list[str] | None = None, seed: int = 0,
            overlay: str | Path | dict[str, Any] | None = None, out: str | Path | None = None, concurrency: int = 4,
            max_steps: int = 50, timeout_s: float = 300.0, retries: int = 2) -> Run:
        """`bench.run` (see there), into a fresh directory of this test unless `out` is given."""
        from bench import api

        loaded, spec = api.valid_suite(suite), api.agent_spec(agent, source="pytest")
        if out is None:
            out = self._new_dir(f"{loaded.name}-{spec.name}")
        return api.run(loaded, spec, k, tasks=tasks, seed=seed, overlay=overlay, out=out, concurrency=concurrency,
                       max_steps=max_steps, timeout_s=timeout_s, retries=retries)

    def load(self, run_dir: RunLike) -> Run:
        """A recorded run (e.g. a baseline checked into the repository)."""
        from bench import api

        return api.load(run_dir)

    def diff(self, baseline: RunLike, candidate: RunLike, *, alpha: float = 0.05, k: int | None = None,
             force: bool = False) -> dict[str, Any]:
        """The full diff as a dict (bench/schemas/diff.schema.json), without asserting."""
        from bench import api

        return api.diff(baseline, candidate, alpha=alpha, k=k, force=force)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trajbench", "trajbench: consistency of tool-using agents")
    group.addoption("--trajbench-runs", metavar="DIR", default=None,
                    help="keep the run directories made by the `trajbench` fixture under DIR (default: pytest's tmp dirs)")


@pytest.fixture
def trajbench(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trajbench:
    """Run agents on suites and assert on their consistency (see bench.pytest_plugin)."""
    keep = request.config.getoption("--trajbench-runs")
    if keep:
        module, _, rest = request.node.nodeid.partition("::")
        root = Path(keep) / re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{Path(module).stem}-{rest}").strip("-")
        if root.exists():  # a previous session's runs: start afresh rather than resume them
            shutil.rmtree(root)
        root.mkdir(parents=True)
    else:
        root = tmp_path_factory.mktemp("trajbench")
    return Trajbench(root)
