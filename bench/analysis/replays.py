"""The replay directory: a causal replay stored as a run directory linked to its original
(docs/divergence.md §11, "Replays are run directories").

`trajbench replay` logs every continuation as it runs, exactly as `trajbench run` logs a trial
(`bench.runs.logwriter.LogWriter`, run.json, the seal at the end), so `report`, `view`, `export`
and `verify` read a replay like any run. What makes it a replay is the manifest's `replay_of`:

    {"run_dir": "../..", "run_id": ..., "digest": <the original's seal digest, a record>,
     "log": {"sha256": ..., "bytes": ...},          # the original's log content as replayed (checked as a prefix)
     "seed": S,                                     # the continuations' base seed (--seed; default the run's)
     "task": ..., "at": "divergence" | "TRIAL:STEP", "node": {"trial", "step", "prefix"},
     "m": M, "threshold": T, "no_return": null | {"which": "failed" | TRIAL, "trials": [...]},
     "alternatives": [step key, ...] | null,        # the node's candidates, in replay order
     "arms": [{"variant", "trial", "step", "forced", "forced_event", "role"}, ...]}

A continuation is trial `TASK/VARIANT/J` of the arm's `VARIANT` (a label derived from the
prefix's trial, length and forced step), on the task's own input (`variant_family` base), with
seed `derive_seed(base_seed, task, VARIANT, J)`: the run's own identity and seed rules, so a
resumed replay gives each continuation the seed it would have had. Its first `replay.step`
events are the restored prefix (marked `"restored": true`), then, in an alternative's arm, the
forced step, then the agent's continuation. The default place is `RUN/replays/NAME/`: the
original's seal covers only its run.json and log, so adding a replay never breaks it.

This module also reads replays (the verdicts from the logged outcomes alone: no agent is built)
for `report` and `view`, and gives `verify` what it checks of a replay (`replay_variants`,
`check_link`).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from bench.__version__ import __version__
from bench.analysis.verdicts import TEST, Arm, no_return_point, verdicts
from bench.canonical import derive_seed, step_key
from bench.errors import BenchError
from bench.runs.logfile import contents, is_packed, log_path
from bench.runs.logwriter import LogWriter
from bench.runs.rundir import (
    MANIFEST,
    Manifest,
    RunLog,
    enclosing_run,
    read_manifest,
    read_run,
    run_dir_name,
    write_manifest,
)
from bench.runs.seal import log_digest, run_digest, seal_run
from bench.world.task import Task
from bench.world.variants import BASE, Variant

REPLAYS = "replays"  # the default home of a run's replays: RUN/replays/NAME/
# replay_of fields a resume must keep (the rest is progress: arms, alternatives, log)
SAME = ("run_id", "task", "node", "m", "threshold", "no_return_which", "seed", "agent_hash")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _arm_ok(a: Any) -> bool:
    return (isinstance(a, dict) and isinstance(a.get("variant"), str) and isinstance(a.get("trial"), str)
            and _int(a.get("step")) and (a.get("forced") is None or isinstance(a.get("forced"), str))
            and a.get("role") in ("node", "alternative", "no_return"))


def _no_return_ok(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and isinstance(v.get("trials"), list) and all(
        isinstance(t, dict) and isinstance(t.get("trial"), str) and _int(t.get("length")) for t in v["trials"]))


# replay_of's fields every reader relies on, and what each must be (the first wrong one is named)
_SHAPE: tuple[tuple[str, Any, str], ...] = (
    ("run_dir", lambda v: isinstance(v, str), "a path (string)"),
    ("run_id", lambda v: isinstance(v, str), "the original's run id"),
    ("task", lambda v: isinstance(v, str), "a task id"),
    ("at", lambda v: isinstance(v, str), "divergence or TRIAL:STEP"),
    ("node", lambda v: isinstance(v, dict) and isinstance(v.get("trial"), str) and _int(v.get("step"))
     and isinstance(v.get("prefix"), list), "an object with trial, step and prefix"),
    ("m", lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    ("threshold", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1, "a number in (0, 1)"),
    ("arms", lambda v: isinstance(v, list) and all(_arm_ok(a) for a in v),
     "a list of arms {variant, trial, step, forced, role}"),
    ("alternatives", lambda v: v is None or (isinstance(v, list) and all(isinstance(k, str) for k in v)),
     "null or a list of step keys"),
    ("no_return", _no_return_ok, "null or {which, trials: [{trial, length}]}"),
)


def replay_info(manifest: Manifest | dict[str, Any], where: Path | None = None) -> dict[str, Any] | None:
    """The manifest's `replay_of` (None: an ordinary run), checked to have the shape every
    reader relies on: a hand-edited or truncated one is one clear error naming the field
    (and the run.json of the directory `where`)."""
    if "replay_of" not in manifest:
        return None
    info = manifest.get("replay_of")
    file = None if where is None else str(Path(where) / MANIFEST)
    if not isinstance(info, dict):
        raise BenchError("replay_of is not an object: not a trajbench replay manifest", file=file, field="replay_of")
    for name, ok, expected in _SHAPE:
        if not ok(info.get(name)):
            raise BenchError(f"replay_of.{name} must be {expected}, not {str(info.get(name))[:60]!r}",
                             file=file, field=f"replay_of.{name}")
    return info


def step_key_of(ev: dict[str, Any]) -> str:
    return step_key(str(ev.get("tool")), ev.get("args"))


def arm_variant(trial: str, step: int, forced: str | None) -> str:
    """The arm's label, used as its continuations' variant id: stable for the same node and forced step."""
    return f"r{derive_seed(trial, step, 'node' if forced is None else forced) % 10**8:08d}"


def fingerprint(run_dir: Path) -> dict[str, Any]:
    """What a replay records of its original: its run id, seal digest (for the record) and its
    log's content digest (`bytes`: the decoded JSON lines' length, in either encoding)."""
    manifest = read_manifest(run_dir)
    return {"run_id": manifest.get("run_id"), "digest": run_digest(manifest), "log": log_digest(run_dir)}


@dataclass
class Original:
    """An original run as its replays check it: the run id, and the digest of its log's first
    n content bytes for each n asked (cached: many replays of one length cost one read)."""

    path: Path
    run_id: Any
    digests: dict[int, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, run_dir: Path) -> Original:
        return cls(run_dir, read_manifest(run_dir).get("run_id"))

    def prefix_sha256(self, n: int) -> str | None:
        if n not in self.digests:
            self.digests[n] = prefix_digest(log_path(self.path), n)
        return self.digests[n]


def prefix_digest(path: Path, n: int) -> str | None:
    """sha256 of the first n bytes of the log's content (a compressed log's decoded stream, as
    `bench.runs.logfile.content_digest` counts it); None when the log holds fewer whole lines."""
    h, left = hashlib.sha256(), n
    for _, content, _ in contents(path):
        if left == 0:
            break
        if content is None:  # a torn tail: not content the replay can have read
            return None
        piece = content[:left]
        h.update(piece)
        left -= len(piece)
    return h.hexdigest() if left == 0 else None


def original_of(replay_dir: Path, info: dict[str, Any]) -> Path:
    where = Path(str(info.get("run_dir", "")))
    return where if where.is_absolute() else (replay_dir / where).resolve()


def check_original(replay_dir: Path, info: dict[str, Any], now: Original | None = None) -> Path:
    """The original run, checked to still hold what the replay read (else one clear error): the
    same run id, and the same first `replay_of.log.bytes` bytes of log content. The log is
    append-only, so a resumed original (trials added: `run` with a larger -k) keeps its
    replays; its seal digest changes then and is not compared. `now`: the original, when the
    caller has it (its log read once for many replays)."""
    original = original_of(replay_dir, info)
    now = now if now is not None else Original.of(original)
    log = info.get("log")
    problem, name = None, "run_id"
    if now.run_id != info.get("run_id"):
        problem = "it is another run"
    elif not (isinstance(log, dict) and _int(log.get("bytes")) and isinstance(log.get("sha256"), str)):
        problem, name = "replay_of.log must be {sha256, bytes}", "log"
    elif now.prefix_sha256(log["bytes"]) != log["sha256"]:
        problem, name = (f"its log's first {log['bytes']} bytes differ: edited or truncated; trials added after the "
                         "replay began would keep them"), "log"
    if problem is not None:
        raise BenchError(f"the original run {original} changed since this replay began ({problem}): its continuations "
                         "no longer replay that run; start a new replay (another --out)",
                         file=str(replay_dir / MANIFEST), field=f"replay_of.{name}")
    return original


def default_dir(run_dir: Path, task: str, trial: str, step: int, m: int, agent: str, run_agent: str,
                seed: int = 0, run_seed: int = 0) -> Path:
    """RUN/replays/TASK--VARIANT-INDEX-STEP--mM[--AGENT][--seedS]: one folder per node (trial
    TASK/VARIANT/INDEX, so trials of two variants at the same step never share one), m, agent
    and seed (named only when not the run's own)."""
    variant, _, index = trial.removeprefix(f"{task}/").rpartition("/")
    name = (f"{task}--{variant or 'base'}-{index}-{step}--m{m}" + ("" if agent == run_agent else f"--{agent}")
            + ("" if seed == run_seed else f"--seed{seed}"))
    return run_dir / REPLAYS / run_dir_name(name)


def expected_trials(manifest: Manifest, where: Path | None = None) -> int | None:
    """A replay's expected continuations (m per arm begun); None for an ordinary run."""
    info = replay_info(manifest, where)
    return None if info is None else len(info.get("arms", [])) * int(info.get("m", 0))


def refuse_as_benchmark(run_dir: str | Path, command: str) -> None:
    """The one rule for commands that compare or rank benchmark runs (`diff`, `leaderboard`,
    `run --baseline`): a replay is not one. Its trials are continuations resampled from one node
    (the node's own arm, forced alternatives, no-return prefixes), so its pass rates measure
    that node, not the agent on the suite. Decided from run.json alone, before any log is read."""
    run_dir = Path(run_dir)
    if "replay_of" in read_manifest(run_dir):
        raise BenchError(f"a replay (trajbench replay: continuations resampled from one node) is not a benchmark run, "
                         f"so `trajbench {command}` cannot use it: give its original run", file=str(run_dir / MANIFEST),
                         field="replay_of")


# ------------------------------------------------------------------------------ writing
@dataclass
class ReplayStore:
    """An open replay directory: the manifest (rewritten as arms start), the log writer, and
    the continuations already logged (trial id -> outcome, first step after the prefix)."""

    path: Path
    manifest: dict[str, Any]
    writer: LogWriter
    done: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def info(self) -> dict[str, Any]:
        return self.manifest["replay_of"]

    def note_arm(self, arm: dict[str, Any]) -> None:
        if all(a["variant"] != arm["variant"] for a in self.info["arms"]):
            self.info["arms"].append(arm)
            write_manifest(self.path, self.manifest)  # type: ignore[arg-type]

    def note(self, name: str, value: Any) -> None:
        if self.info.get(name) != value:
            self.info[name] = value
            write_manifest(self.path, self.manifest)  # type: ignore[arg-type]

    def append(self, record: dict[str, Any]) -> None:
        self.writer.append(record)

    def close(self, seal: bool) -> None:
        self.writer.close()
        if seal:
            seal_run(self.path)


def open_store(out: Path, original: Path, manifest: dict[str, Any]) -> ReplayStore:
    """Create the replay directory, or reopen it to resume (same replay, original unchanged)."""
    if (out / MANIFEST).exists():
        old = read_manifest(out)
        info = replay_info(old, out)
        if info is None:
            raise BenchError("this directory holds a run, not a replay: choose another --out", file=str(out / MANIFEST))
        new = manifest["replay_of"]
        for name in SAME:
            if name == "no_return_which" and info.get(name) is None:
                continue  # a replay may gain a no-return scan later: its arms so far are kept
            if info.get(name) != new.get(name):
                raise BenchError(f"this directory holds a different replay (replay_of.{name} was {info.get(name)!r}, now "
                                 f"{new.get(name)!r}); re-run the same command to resume it, or choose another --out",
                                 file=str(out / MANIFEST), field=f"replay_of.{name}")
        check_original(out, info)
        manifest = {**old, "replay_of": {**new, "arms": info.get("arms", []), "alternatives": info.get("alternatives"),
                                         "no_return": info.get("no_return"), "run_dir": info["run_dir"],
                                         **{k: info.get(k) for k in ("digest", "log")}}}  # what it read first
        manifest.pop("seal", None)  # resumed: unsealed until it ends again (bench.runs.seal)
        log = read_run(out)
        done = {trial: (s["outcome"], next_action(log, s)) for trial, s in log.summaries.items()}
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise BenchError("--out exists and is neither empty nor a replay to resume", file=str(out), field="--out")
        outer = enclosing_run(out)
        if outer is not None and outer != original.resolve():
            raise BenchError(f"--out is inside the run directory {outer}; a replay lives in its original's "
                             f"{REPLAYS}/ folder or outside any run", file=str(out), field="--out")
        if outer is not None and not out.resolve().is_relative_to(original.resolve() / REPLAYS):
            raise BenchError(f"inside its original run, a replay lives under {original / REPLAYS}", file=str(out), field="--out")
        where = original.resolve()
        rel = Path(*[".."] * len(out.resolve().relative_to(where).parts)) if out.resolve().is_relative_to(where) else where
        manifest["replay_of"]["run_dir"] = str(rel)
        done = {}
    write_manifest(out, manifest)  # type: ignore[arg-type]
    # a replay's log is encoded as its original's (zstd or plain JSON lines); a resumed one keeps its own
    writer = LogWriter(out, log_format="zstd" if is_packed(log_path(original)) else "jsonl")
    return ReplayStore(out, manifest, writer, done)


def replay_manifest(original: Manifest, agent: dict[str, Any], info: dict[str, Any], m: int, seed: int) -> dict[str, Any]:
    """The run.json of a new replay: the original's suite, budget and tools; k = m; `replay_of`."""
    keep = ("suite", "max_steps", "timeout_s", "tool_schema_hashes", "overlay", "host")
    return {"run_id": uuid.uuid4().hex, "harness_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **{k: original[k] for k in keep if k in original},  # type: ignore[literal-required]
            "agent": agent, "k": m, "base_seed": seed, "tasks": [info["task"]], "perturbations": [],
            "replay_of": {"arms": [], "alternatives": None, **info}}


# ------------------------------------------------------------------------------ reading
def next_action(log: RunLog, summary: Mapping[str, Any]) -> str | None:
    """The first tool or ask_user step a continuation took after its restored prefix (and forced step)."""
    info = summary.get("replay") or {}
    start = int(info.get("step", 0)) + (info.get("forced") is not None)
    after = [e for e in log.steps_of(summary) if isinstance(e.get("step"), int) and e["step"] >= start
             and e.get("kind") in ("tool", "user")]
    after.sort(key=lambda e: e["step"])
    return step_key_of(after[0]) if after else None  # type: ignore[arg-type]


def arms_of(log: RunLog) -> dict[str, Arm]:
    """variant -> its arm's counts, from the logged continuations."""
    info = replay_info(log.manifest, log.path) or {}
    arms = {a["variant"]: Arm(a.get("forced")) for a in info.get("arms", [])}
    for summary in log.summaries.values():
        arm = arms.get(str(summary.get("variant")))
        if arm is not None and summary.get("outcome") in ("success", "failure"):
            arm.n += 1
            arm.successes += summary["outcome"] == "success"
    return arms


def arm_rows(log: RunLog) -> list[dict[str, Any]]:
    """For `report` on a replay: each arm's continuation success with its exact 95% interval,
    kept apart (the arms differ by design: pooling them would measure nothing)."""
    info = replay_info(log.manifest, log.path) or {}
    counts = arms_of(log)
    return [{"variant": a["variant"], "role": a["role"], "trial": a["trial"], "step": a["step"], "forced": a.get("forced"),
             **{k: v for k, v in counts[a["variant"]].as_dict().items() if k != "action"}} for a in info.get("arms", [])]


def verdict_from(log: RunLog, info: dict[str, Any], arms: dict[str, Arm], used: int) -> dict[str, Any]:
    """The replay's result from the arms' counts: what `trajbench replay --json` prints."""
    node = info["node"]
    alternatives = [arms[a["variant"]] for a in info.get("arms", []) if a.get("role") == "alternative" and a["variant"] in arms]
    rows = verdicts(alternatives)
    sampled = {a.action for a in alternatives}
    unreplayed = [key for key in info.get("alternatives") or [] if key not in sampled]
    own = arms.get(arm_variant(node["trial"], node["step"], None), Arm(None))
    result: dict[str, Any] = {
        "trial": node["trial"], "step": node["step"], "prefix": node["prefix"], "m": info["m"], "node": own.as_dict(),
        "alternatives": rows, "unreplayed": unreplayed, "test": TEST,
        "verdict": "confirmed" if any(r["verdict"] == "confirmed" for r in rows) else "not confirmed"}
    if info.get("no_return"):
        result["no_return"] = [_no_return_row(row, arms, info) for row in info["no_return"]["trials"]]
    result.update({"run_dir": str(original_of(log.path, info)), "replay_dir": str(log.path), "task": info["task"],
                   "at": info["at"], "continuations": used})
    return result


def _no_return_row(row: dict[str, Any], arms: dict[str, Arm], info: dict[str, Any]) -> dict[str, Any]:
    steps = []
    for step in range(row["length"], -1, -1):
        arm = arms.get(arm_variant(row["trial"], step, None))
        if arm is None or arm.n < info["m"]:
            break
        steps.append({**arm.as_dict(), "step": step})
        if steps[-1]["interval"][1] >= info["threshold"]:
            break
    return {"trial": row["trial"], "point_of_no_return": no_return_point(steps, info["threshold"]),
            "threshold": info["threshold"], "m": info["m"], "steps": steps[::-1]}


def read_verdict(replay_dir: str | Path, *, check: bool = True, original: Original | None = None) -> dict[str, Any]:
    """The verdict of a replay directory, from its log alone (`check`: refuse a changed original,
    given as `original` when the caller has it)."""
    log = read_run(replay_dir)
    info = replay_info(log.manifest, log.path)
    if info is None:
        raise BenchError("not a replay directory (run.json has no replay_of)", file=str(Path(replay_dir) / MANIFEST))
    if check:
        check_original(Path(replay_dir), info, original)
    return verdict_from(log, info, arms_of(log), len(log.summaries))


def replays_of(run_dir: str | Path, extra: Iterable[str | Path] = ()) -> Iterator[Path]:
    """The replay directories of a run: RUN/replays/*/ and each of `extra` (a replay, or a
    folder of replays), those whose `replay_of.run_id` is the run's. A path of `extra` that
    holds no replay of this run (missing, another run's replay, a folder with none) is one
    clear error: the user asked for it, so dropping it silently would hide the mistake."""
    run_dir = Path(run_dir)
    run_id = read_manifest(run_dir).get("run_id")
    seen: set[Path] = set()
    for folder, explicit in [(run_dir / REPLAYS, False), *((Path(p), True) for p in extra)]:
        found = list(_replays_in(folder, run_id))
        if explicit and not found:
            raise BenchError(f"holds no replay of the run {run_dir} (run id {run_id}): give a replay directory of "
                             "this run, or a folder of them", file=str(folder), field="--replays")
        for path in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                yield path


def _replays_in(folder: Path, run_id: Any) -> Iterator[Path]:
    """`folder` itself when it is a replay of `run_id`, else its sub-folders that are."""
    candidates = [folder] if (folder / MANIFEST).is_file() else sorted(p.parent for p in folder.glob(f"*/{MANIFEST}")) if folder.is_dir() else []
    for path in candidates:
        try:
            info = replay_info(read_manifest(path), path)
            ours = info is not None and info.get("run_id") == run_id
        except BenchError:  # unreadable: listed, so that its error is shown rather than hidden
            ours = True
        if ours:
            yield path


def causal_section(run_dir: str | Path, extra: Iterable[str | Path] = ()) -> list[dict[str, Any]]:
    """The causal verdicts of a run's replays (a replay directory: its own), for `report` and
    `view`. A replay whose original changed is listed with its error instead of figures."""
    run_dir = Path(run_dir)
    own = replay_info(read_manifest(run_dir), run_dir)
    paths = [run_dir] if own is not None else list(replays_of(run_dir, extra))
    now = Original.of(run_dir) if own is None and paths else None  # the run's log hashed once per length, not per replay
    rows = []
    for path in paths:
        try:
            rows.append(read_verdict(path, original=now))
        except BenchError as exc:
            where = "" if exc.file else f"{path / MANIFEST}: "
            rows.append({"replay_dir": str(path), "error": f"{where}{exc}"})
    return rows


# ------------------------------------------------------------------------------ verify
def replay_variants(manifest: Manifest, tasks_by_id: dict[str, Task]) -> dict[str, dict[str, Variant]]:
    """For `verify`: a replay's "variants" are its arms, each on the task's own input."""
    info = replay_info(manifest) or {}
    task = tasks_by_id.get(str(info.get("task")))
    if task is None:
        return {}
    return {task.id: {a["variant"]: Variant(a["variant"], BASE, {}, task) for a in info.get("arms", [])}}


_CONTENT = ("kind", "tool", "args", "observation", "error", "read_only", "state_hash", "model", "messages", "output")


def check_link(replay_dir: Path, log: RunLog) -> list[tuple[str | None, int | None, str, str]]:
    """For `verify`: the replay is of an unchanged original, each continuation's restored steps
    are the original trial's first steps (content as logged, marked restored), and an
    alternative's continuation takes its forced step next. (trial, step, field, detail) each."""
    info = replay_info(log.manifest, replay_dir) or {}
    try:
        original = read_run(check_original(replay_dir, info))
    except BenchError as exc:
        return [(None, None, "replay_of", str(exc))]
    arms = {a["variant"]: a for a in info.get("arms", [])}
    prefixes: dict[tuple[str, int], list[dict[str, Any]]] = {}
    out: list[tuple[str | None, int | None, str, str]] = []
    for trial, summary in log.summaries.items():
        arm = arms.get(str(summary.get("variant")))
        rep: dict[str, Any] = summary.get("replay") or {}  # type: ignore[assignment]
        if arm is None or (rep.get("trial"), rep.get("step"), rep.get("forced")) != (arm["trial"], arm["step"], arm["forced"]):
            out.append((trial, None, "replay", "the continuation is of no arm that replay_of.arms lists"))
            continue
        key = (arm["trial"], arm["step"])
        if key not in prefixes:
            events = sorted(original.trial_steps(arm["trial"]), key=lambda e: e.get("step", -1)) if arm["trial"] in original.summaries else []
            prefixes[key] = [dict(e) for e in events[:arm["step"]]]
        out += _check_restored(trial, prefixes[key], arm, sorted(log.steps_of(summary), key=lambda e: e.get("step", -1)))
    return out


def _check_restored(trial: str, want: list[dict[str, Any]], arm: dict[str, Any], events: list[Any]) -> list[tuple[str | None, int | None, str, str]]:
    out: list[tuple[str | None, int | None, str, str]] = []
    if len(want) < arm["step"]:
        return [(trial, None, "restored", f"the original trial {arm['trial']} has fewer than {arm['step']} steps")]
    for i, logged in enumerate(want):
        ev: dict[str, Any] = events[i] if i < len(events) else {}
        if not ev.get("restored") or any(ev.get(k) != logged.get(k) for k in _CONTENT):
            return [(trial, i, "restored", f"not step {i} of the original trial {arm['trial']} as logged there (the restored "
                     "prefix must be the original's steps, marked restored)")]
    if arm["forced"] is not None:
        ev = events[arm["step"]] if len(events) > arm["step"] else {}
        if ev.get("kind") not in ("tool", "user") or ev.get("restored") or step_key_of(ev) != arm["forced"]:
            out.append((trial, arm["step"], "forced", f"the arm's forced step {arm['forced']} is not the step after the prefix"))
    for ev in events[arm["step"]:]:
        if ev.get("restored"):
            out.append((trial, ev.get("step"), "restored", "a step after the prefix is marked restored"))
            break
    return out
