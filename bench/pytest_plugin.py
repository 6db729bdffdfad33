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
``assert_consistent`` and ``assert_no_regression`` can also be imported from this module.

Options: ``--trajbench-runs DIR`` keeps every run directory under DIR (default: pytest's
temporary directories), so that a failing test's runs can be inspected with
``trajbench report`` / ``trajbench diff`` afterwards.
"""

from __future__ import annotations

import inspect
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RunResult", "Trajbench", "assert_consistent", "assert_no_regression", "trajbench"]


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


class RunResult:
    """A finished run directory with its report (recomputed from the directory alone)."""

    def __init__(self, path: str | Path, *, bootstrap: int = 2000):
        from bench.run.rundir import read_manifest

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._bootstrap = bootstrap
        self._report: dict[str, Any] | None = None

    @property
    def report(self) -> dict[str, Any]:
        if self._report is None:
            from bench.analysis.report import build_report

            self._report = build_report(self.path, bootstrap=self._bootstrap)
        return self._report

    @property
    def k(self) -> int:
        return int(self.manifest["k"])

    @property
    def n_tasks(self) -> int:
        return int(self.report["suite"]["n_tasks"])

    def _entry(self, key: str, k: int) -> dict[str, Any]:
        for entry in self.report["suite"][key]:
            if entry["k"] == k:
                return entry
        raise ValueError(f"{key.replace('k', str(k))} is not defined for this run (k = {self.k}; "
                         f"choose 1 <= k <= {self.report['suite']['trials_max']})")

    def pass_hat_k(self, k: int | None = None) -> float:
        """Mean over tasks of the unbiased pass^k (every one of k runs succeeds); k defaults to
        the run's k."""
        return self._value("pass^k", k)

    def pass_at_k(self, k: int | None = None) -> float:
        return self._value("pass@k", k)

    @property
    def pass_at_1(self) -> float:
        return self._value("pass^k", 1)

    def interval(self, metric: str = "pass^k", k: int | None = None) -> tuple[float, float]:
        """The 95% interval (bootstrap over tasks) of pass^k, pass@k or pass@1."""
        key = "pass^k" if metric in ("pass^k", "pass@1") else metric
        entry = self._entry(key, 1 if metric == "pass@1" else (k or self.k))
        return (entry["lo"], entry["hi"])

    def _value(self, key: str, k: int | None) -> float:
        entry = self._entry(key, k or self.k)
        if entry["mean"] is None:
            raise ValueError(f"the run has no task with enough valid trials for {key} at k = {k or self.k}")
        return float(entry["mean"])

    def task(self, task_id: str) -> dict[str, Any]:
        """The report's row for one task (successes, n, pass@1, pass^k, flip, failing checks...)."""
        for row in self.report["tasks"]:
            if row["task"] == task_id:
                return row
        raise KeyError(task_id)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunResult({str(self.path)!r}, k={self.k})"


def _path(run: RunResult | str | Path) -> Path:
    return run.path if isinstance(run, RunResult) else Path(run)


def _result(run: RunResult | str | Path) -> RunResult:
    return run if isinstance(run, RunResult) else RunResult(run)


# ---------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------


def assert_consistent(run: RunResult | str | Path, *, pass_hat_k_at_least: float | None = None, k: int | None = None,
                      pass_at_1_at_least: float | None = None, conservative: bool = False) -> None:
    """Fail the test when the run's pass^k (k defaults to the run's k) or pass@1 is below the
    bound. With ``conservative=True`` the bound applies to the lower end of the 95% interval
    (bootstrap over tasks): the test passes only when the bound is met with confidence."""
    if pass_hat_k_at_least is None and pass_at_1_at_least is None:
        raise TypeError("assert_consistent needs pass_hat_k_at_least= and/or pass_at_1_at_least=")
    result = _result(run)
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


def assert_no_regression(baseline: RunResult | str | Path, candidate: RunResult | str | Path, *, alpha: float = 0.05,
                         k: int | None = None, force: bool = False) -> dict[str, Any]:
    """Fail the test when `trajbench diff BASELINE CANDIDATE` finds a significant regression at
    level alpha (the same gate as the command's exit status 1). Returns the diff (a dict, see
    bench/schemas/diff.schema.json) when there is none, e.g. to assert on its MDE."""
    from bench.analysis.diff import diff_runs, mde_statement
    from bench.errors import BenchError

    base, cand = _path(baseline), _path(candidate)
    try:
        diff = diff_runs(base, cand, alpha=alpha, k=k, force=force)
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


def _object_spec(agent: Any) -> Any:
    """An agent object (a function, or an instance with run/arun) as an agent spec."""
    from bench.adapters.python import FunctionAgent
    from bench.adapters.spec import AgentSpec

    name = getattr(agent, "__qualname__", None) or type(agent).__qualname__
    target = f"{getattr(agent, '__module__', None) or type(agent).__module__}:{name}"

    @dataclass(frozen=True)
    class ObjectSpec(AgentSpec):
        obj: Any = field(default=None, compare=False, repr=False)

        def build(self) -> Any:
            if hasattr(self.obj, "run") or hasattr(self.obj, "arun"):
                return self.obj
            if callable(self.obj):
                return FunctionAgent(self.name, self.obj)
            raise TypeError(f"{self.obj!r} is neither a callable nor an object with run()/arun()")

    if inspect.isclass(agent):
        raise TypeError("pass an agent instance or function, not a class (or a spec string 'module:Class?option=value')")
    return ObjectSpec(name, "python", {}, target=target, source="pytest", obj=agent)


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
            max_steps: int = 50, timeout_s: float = 300.0, retries: int = 2) -> RunResult:
        """Run an agent on a suite, k trials per task, and return the finished run.

        suite: a built-in suite name, a suite folder, or a loaded Suite. agent: a spec string
        (``sim:noisy?p=0.8``, ``module:attr``, ``file.py:attr``, a TOML spec or roster name), an
        AgentSpec, or the agent itself (a function ``agent(episode)`` or an object with
        ``run(episode)``). overlay: a tool overlay file (docs/regression.md). out: where to
        write the run (default: a fresh directory per call); an existing run there is resumed."""
        from bench.adapters.spec import AgentSpec, parse_agent_spec
        from bench.run.runner import RunConfig, run_benchmark
        from bench.world.suite import Suite, load_suite, require_valid

        loaded = suite if isinstance(suite, Suite) else require_valid(load_suite(suite))
        if overlay is not None:
            from bench.world.overlay import apply_overlay

            loaded = apply_overlay(loaded, overlay)
        spec = agent if isinstance(agent, AgentSpec) else parse_agent_spec(agent) if isinstance(agent, str) else _object_spec(agent)
        target = Path(out) if out is not None else self._new_dir(f"{loaded.name}-{spec.name}")
        config = RunConfig(k=k, out=target, seed=seed, concurrency=concurrency, timeout_s=timeout_s, max_steps=max_steps,
                           retries=retries, progress=False)
        run_benchmark(loaded, spec, tasks, config)
        return RunResult(target)

    def load(self, run_dir: str | Path) -> RunResult:
        """A recorded run (e.g. a baseline checked into the repository)."""
        return RunResult(run_dir)

    def diff(self, baseline: RunResult | str | Path, candidate: RunResult | str | Path, *, alpha: float = 0.05,
             k: int | None = None, force: bool = False) -> dict[str, Any]:
        """The full diff as a dict (bench/schemas/diff.schema.json), without asserting."""
        from bench.analysis.diff import diff_runs

        return diff_runs(_path(baseline), _path(candidate), alpha=alpha, k=k, force=force)


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
