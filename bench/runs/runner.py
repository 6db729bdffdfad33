"""`trajbench run`: agents × tasks × trials, with a concurrency limit, per-trial time limit and
step budget, infrastructure retries, a live progress bar, and resume.

Resume: re-running the same command on the same output directory runs only the trials that
have no summary yet. Trial seeds depend on (base seed, task, variant, trial index) alone, so a
resumed trial gets the same seed as it would have had, and raising k only adds trials.
"""

from __future__ import annotations

import asyncio
import functools
import platform
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.__version__ import __version__
from bench.adapters.spec import AgentSpec
from bench.canonical import derive_seed
from bench.episode import Episode
from bench.errors import BenchError
from bench.runs.design import Design, StopRule, outcomes_of, walk
from bench.runs.executor import Executor, LocalExecutor, Sink
from bench.runs.logwriter import LogWriter
from bench.runs.rundir import Manifest, enclosing_run, read_manifest, read_run, write_manifest
from bench.runs.seal import seal_run
from bench.runs.trial import AttemptError, play_async
from bench.world.suite import Suite
from bench.world.task import Task
from bench.world.variants import BASE, Variant, VariantSpec, variants_of


@dataclass(frozen=True)
class RunConfig:
    k: int
    out: Path
    seed: int = 0
    concurrency: int = 4
    timeout_s: float = 300.0
    max_steps: int = 50
    retries: int = 2
    retry_backoff_s: float = 0.5
    progress: bool = True
    variants: VariantSpec = VariantSpec()
    design: Design | None = None  # sequential: k is the design's k_min (bench.runs.design)
    log_format: str = "zstd"  # a new log's encoding (bench.runs.logfile.FORMATS); a resumed run keeps its own


@dataclass(frozen=True)
class TrialKey:
    variant: Variant
    index: int

    @property
    def task(self) -> Task:
        """The task as this variant presents it (perturbed instruction, hidden facts)."""
        return self.variant.task

    @property
    def trial_id(self) -> str:
        return f"{self.task.id}/{self.variant.id}/{self.index}"


def trial_keys(tasks: list[Task], config: RunConfig) -> list[TrialKey]:
    """The grid: tasks × variants (base first) × trial indices."""
    return [TrialKey(variant, i) for task in tasks for variant in variants_of(task, config.variants, config.seed)
            for i in range(config.k)]


def build_manifest(suite: Suite, spec: AgentSpec, tasks: list[Task], config: RunConfig) -> Manifest:
    return {
        "run_id": uuid.uuid4().hex,
        "harness_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "suite": {"name": suite.name, "hash": suite.content_hash, "path": str(suite.path)},
        "agent": spec.as_dict(),
        "k": config.k,
        "base_seed": config.seed,
        "tasks": [t.id for t in tasks],
        "perturbations": config.variants.as_list(),
        "max_steps": config.max_steps,
        "timeout_s": config.timeout_s,
        "tool_schema_hashes": suite.tool_schema_hashes(),
        "overlay": getattr(suite, "overlay", None) or None,  # bench.world.overlay: the tool overlay applied, if any
        "host": {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine()},
        **({"design": config.design.as_dict()} if config.design else {}),
    }


def _check_resumable(old: Manifest, new: Manifest, run_dir: Path) -> None:
    """A run directory may only be resumed by the same benchmark (k may grow)."""
    checks = [
        ("suite.hash", old["suite"]["hash"], new["suite"]["hash"]),
        ("agent.hash", old["agent"].get("hash"), new["agent"]["hash"]),
        ("base_seed", old.get("base_seed"), new["base_seed"]),
        ("tasks", old.get("tasks"), new["tasks"]),
        ("overlay.hash", (old.get("overlay") or {}).get("hash"), (new.get("overlay") or {}).get("hash")),
        ("max_steps", old.get("max_steps"), new["max_steps"]),
        ("perturbations", old.get("perturbations", []), new["perturbations"]),
        ("design", _design_part(old), _design_part(new)),
    ]
    for name, was, now in checks:
        if was != now:
            raise BenchError(
                f"this directory holds a different run ({name} was {_short(was)}, now {_short(now)}); "
                "resume with the same suite, agent, seed, tasks and budget, or choose another --out",
                file=str(run_dir / "run.json"), field=name)
    if new.get("design") and new["k"] != old["k"]:
        raise BenchError(f"the sequential run has -k {old['k']}; a resume must keep it", file=str(run_dir / "run.json"), field="k")
    if new["k"] < old["k"]:
        raise BenchError(f"the run has k={old['k']}; a resume cannot lower k to {new['k']}",
                         file=str(run_dir / "run.json"), field="k")


def _design_part(manifest: Manifest) -> dict[str, Any] | None:
    """The parameters of a sequential design (not its progress): a resume must keep them."""
    design = manifest.get("design")
    return None if design is None else Design.from_dict(design).as_dict()


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def prepare_run_dir(suite: Suite, spec: AgentSpec, tasks: list[Task], config: RunConfig) -> tuple[Manifest, set[str]]:
    """Create or reopen the run directory; returns the manifest and the finished trial ids."""
    manifest = build_manifest(suite, spec, tasks, config)
    if (config.out / "run.json").exists():
        old = read_manifest(config.out)
        _check_resumable(old, manifest, config.out)
        manifest["run_id"], manifest["created_at"] = old["run_id"], old["created_at"]
        done = set(read_run(config.out).summaries)
    else:
        if config.out.exists() and not config.out.is_dir():
            raise BenchError("--out names an existing file; a run directory is a folder (a new or empty one, or a "
                             "run to resume)", file=str(config.out), field="--out")
        if config.out.exists() and any(config.out.iterdir()):
            raise BenchError("the output directory exists, is not empty, and holds no run.json", file=str(config.out))
        outer = enclosing_run(config.out)
        if outer is not None:
            raise BenchError(f"--out is inside the run directory {outer}; a run directory holds only its own run",
                             file=str(config.out), field="--out")
        done = set()
    write_manifest(config.out, manifest)
    return manifest, done


class _Progress:
    """The progress bar; without one (`--quiet`, the API's default) tqdm is not even imported:
    a disabled bar still costs its import and a multiprocessing lock (~15 ms), and a call per trial."""

    def __init__(self, total: int, done: int, enabled: bool, label: str):
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=label, unit="trial", dynamic_ncols=True)
        self.success = self.valid = 0

    def update(self, outcome: str) -> None:
        if self.bar is None:
            return
        if outcome != "error":
            self.valid += 1
            self.success += outcome == "success"
        rate = self.success / self.valid if self.valid else 0.0
        self.bar.set_postfix_str(f"pass {rate:.0%} ({self.success}/{self.valid} new)")
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _play(suite: Suite, config: RunConfig, agent: Any, key: TrialKey, writer: Sink) -> str:
    seed = derive_seed(config.seed, key.task.id, key.variant.id, key.index)
    errors: list[str] = []
    for attempt_no in range(config.retries + 1):
        attempt = f"{key.trial_id}@{uuid.uuid4().hex[:10]}"
        episode = Episode(suite, key.task, trial_id=key.trial_id, attempt=attempt, seed=seed,
                          max_steps=config.max_steps, timeout_s=config.timeout_s, sink=writer.append,
                          variant=key.variant.family)
        started_at = time.time()
        try:
            result = await play_async(agent, episode, config.timeout_s)
        except AttemptError as exc:
            errors.append(str(exc))
            writer.append({"type": "attempt_error", "trial": key.trial_id, "attempt": attempt, "message": str(exc)})
            await asyncio.sleep(config.retry_backoff_s * 2 ** attempt_no)
            continue
        writer.append(_summary(key, attempt, seed, started_at, attempt_no + 1, result))
        return result["outcome"]
    return _record_infra_error(key, attempt, seed, len(errors), errors[-1], writer)


def _record_infra_error(key: TrialKey, attempt: str, seed: int, attempts: int, reason: str, writer: Sink) -> str:
    error = {"outcome": "error", "reason": f"infrastructure error after {attempts} attempt(s): {reason}",
             "checks": {}, "steps": 0}
    writer.append(_summary(key, attempt, seed, time.time(), attempts, error))
    return "error"


def _lose(config: RunConfig, key: TrialKey, reason: str, writer: Sink) -> str:
    """A trial the executor could not play at all (its worker process kept dying)."""
    seed = derive_seed(config.seed, key.task.id, key.variant.id, key.index)
    return _record_infra_error(key, f"{key.trial_id}@lost", seed, 1, reason, writer)


def _summary(key: TrialKey, attempt: str, seed: int, started_at: float, attempts: int, result: dict[str, Any]) -> dict[str, Any]:
    record = {"type": "trial", "trial": key.trial_id, "attempt": attempt, "task": key.task.id,
              "variant": key.variant.id, "variant_family": key.variant.family, "index": key.index, "seed": seed,
              "started_at": started_at, "attempts": attempts}
    if key.variant.family != BASE:
        record["variant_params"] = key.variant.params
        record["instruction"] = key.task.instruction
    record.update(result)
    return record


MAX_TRIALS = 1_000_000  # a grid larger than this is a typo (`-k 1000000000`), not a benchmark


def check_grid(tasks: list[Task], config: RunConfig) -> int:
    """The most trials the run can have (tasks × inputs × k), refused above MAX_TRIALS before
    anything is built: an absurd size fails at once instead of hanging."""
    inputs = 1 + len(config.variants.families) * config.variants.per_family
    bound = len(tasks) * inputs * config.k
    if bound > MAX_TRIALS:
        raise BenchError(f"the run would have up to {bound:,} trials ({len(tasks)} task(s) × {inputs} input(s) × "
                         f"k={config.k}), more than the limit of {MAX_TRIALS:,}: lower -k or --variants-per-family, "
                         "or select fewer --tasks", field="-k")
    return bound


def run_benchmark(suite: Suite, spec: AgentSpec, task_ids: list[str] | None, config: RunConfig,
                  executor: Executor | None = None, stop_rule: StopRule | None = None) -> Path:
    """Run the grid (or, with `config.design`, the sequential design under `stop_rule`)."""
    tasks = suite.select(task_ids)
    check_grid(tasks, config)
    executor = executor or LocalExecutor(config.concurrency)
    if config.design is not None and (stop_rule is None or config.variants.as_list()):
        raise BenchError("a sequential design (--k-max/--until) needs a stopping rule and runs no input variants",
                         field="--until")
    keys = trial_keys(tasks, config) if config.design is None else []
    executor.start(spec, len(keys) or len(tasks) * (config.design.k_max if config.design else 0))
    try:
        if config.design is None:
            _, done = prepare_run_dir(suite, spec, tasks, config)
            _run_pending(suite, spec, config, executor, keys, done)
        else:
            assert stop_rule is not None
            _run_rounds(suite, spec, tasks, config, executor, config.design, stop_rule)
    finally:
        executor.close()
    seal_run(config.out)  # bench.runs.seal: the manifest and log as they stand at the run's end
    return config.out


def _run_rounds(suite: Suite, spec: AgentSpec, tasks: list[Task], config: RunConfig, executor: Executor,
                design: Design, rule: StopRule) -> None:
    """Round after round: ask `walk` which trials the design still owes, run them, record the
    rounds in the manifest, until the design is finished. A kill at any point resumes here."""
    manifest, _ = prepare_run_dir(suite, spec, tasks, config)
    base = {t.id: variants_of(t, config.variants, config.seed)[0] for t in tasks}
    last: dict[str, list[int]] | None = None
    while True:
        log = read_run(config.out)
        progress = walk(design, rule, [t.id for t in tasks], outcomes_of(log.summaries.values()))
        manifest["design"] = {**design.as_dict(), **progress.as_dict()}
        write_manifest(config.out, manifest)
        if progress.finished:
            return
        if progress.owed == last:  # the executor ran them but no summary arrived: never loop on it
            raise BenchError(f"the trials {sorted(progress.owed)[:3]} of the round did not finish", file=str(config.out))
        last = progress.owed
        keys = [TrialKey(base[t], i) for t, indices in progress.owed.items() for i in indices]
        done = {s for s in log.summaries}
        _run_pending(suite, spec, config, executor, keys, done, f" round {len(progress.rounds) + 1}")


def _run_pending(suite: Suite, spec: AgentSpec, config: RunConfig, executor: Executor,
                 keys: list[TrialKey], done: set[str], label: str = "") -> None:
    pending = [key for key in keys if key.trial_id not in done]
    writer = LogWriter(config.out, log_format=config.log_format)
    if writer.torn_bytes:
        print(f"trajbench: cut a torn last line ({writer.torn_bytes} bytes) from the log before resuming", file=sys.stderr)
    if done and len(pending) < len(keys):
        print(f"trajbench: resuming {config.out}: {len(keys) - len(pending)} of {len(keys)} trials already finished", file=sys.stderr)
    progress = _Progress(len(keys), len(keys) - len(pending), config.progress, f"{spec.name} on {suite.name}{label}")
    try:
        play = functools.partial(_play, suite, config)
        executor.run(pending, play, functools.partial(_lose, config), writer, progress.update)
    finally:
        progress.close()
        writer.close()
