"""The Python API: run agents on suites, load recorded runs, and compute what the commands show.

    import bench

    run = bench.run("retail", "sim:noisy?p=0.8", k=8, tasks=["retail-005-return-stated"])
    run.pass_hat_k()                    # mean over tasks of the unbiased pass^k
    baseline = bench.load("baselines/retail")
    bench.diff(baseline, run)["verdict"]
    bench.verify(run).ok

Everything here is what `trajbench run / report / diff / verify` do, as data: nothing prints.
The pytest plugin's `trajbench` fixture is this API with per-test run directories.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.adapters.python import FunctionAgent
from bench.adapters.spec import AgentSpec, parse_agent_spec
from bench.analysis.diff import diff_runs
from bench.analysis.divergence.options import DivergenceOptions
from bench.analysis.replay import VerifyResult, verify_run
from bench.analysis.report import build_report
from bench.errors import BenchError
from bench.runs.rundir import Manifest, read_manifest, run_dir_name
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.overlay import apply_overlay
from bench.world.suite import Suite, valid_suite
from bench.world.variants import VariantSpec


class Run:
    """A finished run directory with its report (recomputed from the directory alone, once)."""

    def __init__(self, path: str | Path, *, bootstrap: int = 2000):
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        self._bootstrap = bootstrap
        self._report: dict[str, Any] | None = None

    @property
    def report(self) -> dict[str, Any]:
        """The run's report (bench/schemas/report.schema.json), as `trajbench report --json`."""
        if self._report is None:
            self._report = build_report(self.path, bootstrap=self._bootstrap)
        return self._report

    @property
    def k(self) -> int:
        return int(self.manifest["k"])

    @property
    def _suite(self) -> dict[str, Any]:
        """The suite figures; a replay has none (its report keeps its arms apart: report["replay"])."""
        if "replay" in self.report:
            raise BenchError("a replay (trajbench replay) is not a benchmark run: it has no suite figures; its arms are "
                             "in .report['replay'] and its verdict in .report['causal']", file=str(self.path / "run.json"),
                             field="replay_of")
        suite: dict[str, Any] = self.report["suite"]
        return suite

    @property
    def n_tasks(self) -> int:
        return int(self._suite["n_tasks"])

    def _entry(self, key: str, k: int) -> dict[str, Any]:
        for entry in self._suite[key]:
            if entry["k"] == k:
                return entry
        raise ValueError(f"{key.replace('k', str(k))} is not defined for this run (k = {self.k}; "
                         f"choose 1 <= k <= {self._suite['trials_max']})")

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
        self._suite  # noqa: B018 - a replay has no task rows: one clear error
        for row in self.report["tasks"]:
            if row["task"] == task_id:
                return row
        raise KeyError(task_id)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, k={self.k})"


RunLike = Run | str | Path


def load(run_dir: RunLike) -> Run:
    """A recorded run (e.g. a baseline checked into the repository)."""
    return run_dir if isinstance(run_dir, Run) else Run(run_dir)


def default_run_dir(suite_name: str, agent_name: str) -> Path:
    """Where a run goes when no directory is given: runs/SUITE/AGENT (as `trajbench run`)."""
    return Path("runs") / suite_name / run_dir_name(agent_name)


def run(suite: str | Path | Suite, agent: Any, k: int = 4, *, tasks: list[str] | None = None, seed: int = 0,
        overlay: str | Path | dict[str, Any] | None = None, out: str | Path | None = None, concurrency: int = 4,
        max_steps: int = 50, timeout_s: float = 300.0, retries: int = 2, variants: VariantSpec | None = None,
        progress: bool = False) -> Run:
    """Run an agent on a suite, k trials per task, and return the finished run.

    suite: a built-in suite name, a suite folder, or a loaded Suite. agent: a spec string
    (``sim:noisy?p=0.8``, ``module:attr``, ``file.py:attr``, a TOML spec or roster name), an
    AgentSpec, or the agent itself (a function ``agent(episode)`` or an object with
    ``run(episode)``). overlay: a tool overlay file (docs/regression.md). out: where to write
    the run (default runs/SUITE/AGENT); an existing run there is resumed."""
    loaded = valid_suite(suite)
    if overlay is not None:
        loaded = apply_overlay(loaded, overlay)
    spec = agent_spec(agent)
    target = Path(out) if out is not None else default_run_dir(loaded.name, spec.name)
    config = RunConfig(k=k, out=target, seed=seed, concurrency=concurrency, timeout_s=timeout_s, max_steps=max_steps,
                       retries=retries, progress=progress, variants=variants or VariantSpec())
    run_benchmark(loaded, spec, tasks, config)
    return Run(target)


def report(run_dir: RunLike, *, bootstrap: int = 2000, seed: int = 0,
           divergence: DivergenceOptions | None = None) -> dict[str, Any]:
    """Every figure of a run, recomputed from its directory (`trajbench report --json`)."""
    return build_report(Path(run_dir), bootstrap=bootstrap, seed=seed, divergence=divergence)


def diff(baseline: RunLike, candidate: RunLike, *, alpha: float = 0.05, k: int | None = None,
         force: bool = False) -> dict[str, Any]:
    """The diff of two runs as a dict (bench/schemas/diff.schema.json; `exit_code` 1 is a
    significant regression), as `trajbench diff --json`."""
    return diff_runs(Path(baseline), Path(candidate), alpha=alpha, k=k, force=force)


def verify(run_dir: RunLike, *, suite: str | Path | Suite | None = None) -> VerifyResult:
    """Replay a run on a fresh world of its suite; `.ok` when every claim matches the log."""
    return verify_run(Path(run_dir), suite=suite)


def agent_spec(agent: Any, *, source: str = "python") -> AgentSpec:
    """An agent as a spec: a spec string, an AgentSpec, or the agent object itself (`source`
    says where it came from, for the run's manifest)."""
    if isinstance(agent, AgentSpec):
        return agent
    if isinstance(agent, str):
        return parse_agent_spec(agent)
    return _object_spec(agent, source)


@dataclass(frozen=True)
class _ObjectSpec(AgentSpec):
    """An agent object (a function, or an instance with run/arun) behind an agent spec."""

    obj: Any = field(default=None, compare=False, repr=False)

    def build(self) -> Any:
        if hasattr(self.obj, "run") or hasattr(self.obj, "arun"):
            return self.obj
        if callable(self.obj):
            return FunctionAgent(self.name, self.obj)
        raise TypeError(f"{self.obj!r} is neither a callable nor an object with run()/arun()")


def _object_spec(agent: Any, source: str) -> AgentSpec:
    if inspect.isclass(agent):
        raise TypeError("pass an agent instance or function, not a class (or a spec string 'module:Class?option=value')")
    name = getattr(agent, "__qualname__", None) or type(agent).__qualname__
    target = f"{getattr(agent, '__module__', None) or type(agent).__module__}:{name}"
    return _ObjectSpec(name, "python", {}, target=target, source=source, obj=agent)
