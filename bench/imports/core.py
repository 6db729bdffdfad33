"""What every importer shares: a streaming reader for a top-level JSON array, the file digest
recorded in the manifest, the task-set hash used as the suite hash, and the writer that turns
mapped trials into a normal run directory through `bench.runs.rundir`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import orjson

from bench.__version__ import __version__
from bench.errors import BenchError
from bench.runs.rundir import LogWriter, Manifest, write_manifest
from bench.runs.seal import seal_run

_CHUNK = 1 << 20


def iter_json_array(path: Path) -> Iterator[Any]:
    """Yield the elements of a file holding one JSON array, one at a time, reading it in 1 MiB
    chunks: a 100k-trial file is never held whole. A truncated or malformed file is one clear
    error naming the file and the element index."""
    decoder = json.JSONDecoder()
    index = 0
    try:
        with path.open("r", encoding="utf-8") as fh:
            buf, pos = _skip_ws(fh, "", 0)
            if buf[pos:pos + 1] != "[":
                raise BenchError("expected a JSON array at the top level", file=str(path))
            pos += 1
            while True:
                buf, pos = _skip_ws(fh, buf, pos)
                if buf[pos:pos + 1] == "]" and index == 0:
                    return
                while True:
                    try:
                        value, end = decoder.raw_decode(buf, pos)
                        break
                    except json.JSONDecodeError:
                        more = fh.read(_CHUNK)
                        if not more:
                            raise BenchError(f"record {index}: truncated or invalid JSON", file=str(path)) from None
                        buf, pos = buf[pos:] + more, 0
                yield value
                index += 1
                buf, pos = _skip_ws(fh, buf, end)
                sep = buf[pos:pos + 1]
                if sep == "]":
                    return
                if sep != ",":
                    raise BenchError(f"record {index}: truncated (expected ',' or ']' after the previous record)",
                                     file=str(path))
                pos += 1
    except OSError as exc:
        raise BenchError(f"cannot be read: {exc.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise BenchError("not UTF-8 text", file=str(path)) from None


def _skip_ws(fh: Any, buf: str, pos: int) -> tuple[str, int]:
    """Advance past whitespace, reading more of the file when the buffer runs out."""
    while True:
        while pos < len(buf) and buf[pos] in " \t\r\n":
            pos += 1
        if pos < len(buf):
            return buf, pos
        more = fh.read(_CHUNK)
        if not more:
            return "", 0
        buf, pos = more, 0


def sha256_file(path: Path) -> str:
    """The source file's digest, recorded so an import can be traced to the exact bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class TaskSet:
    """The tasks seen in a source, for the task-set hash (ids + instructions + gold actions):
    two imports of the same task set get the same suite hash, so `diff` pairs them."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, task_id: str, instruction: str | None, gold: list[dict[str, Any]]) -> None:
        """Record a task; a record without the task (an agent error) never hides one with it."""
        if instruction is not None or task_id not in self.tasks:
            self.tasks.setdefault(task_id, {"instruction": instruction, "gold": gold})
            if self.tasks[task_id]["instruction"] is None:
                self.tasks[task_id] = {"instruction": instruction, "gold": gold}

    def content_hash(self) -> str:
        return hashlib.sha256(orjson.dumps(self.tasks, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class ImportedRun:
    """The writer: trial summaries and their steps appended to the log as they come."""

    out: Path
    fmt: str
    writer: LogWriter = field(init=False)
    tasks: TaskSet = field(default_factory=TaskSet)
    trials: set[int] = field(default_factory=set)
    count: int = 0

    def __post_init__(self) -> None:
        if (self.out / "run.json").exists():
            raise BenchError("already a run directory; choose a new --out", file=str(self.out))
        self.out.mkdir(parents=True, exist_ok=True)
        self.writer = LogWriter(self.out)

    def add(self, summary: dict[str, Any], steps: list[dict[str, Any]]) -> None:
        attempt = summary["attempt"]
        for number, step in enumerate(steps):
            self.writer.append({"type": "step", "trial": summary["trial"], "attempt": attempt, "step": number, **step})
        self.writer.append({"type": "trial", **summary})
        self.trials.add(summary["index"])
        self.count += 1

    def finish(self, sources: list[Path], source_version: str | None, outcome_rule: str) -> Manifest:
        """Close the log and write run.json. Unknowable fields are null, never invented."""
        self.writer.close()
        manifest: Manifest = {
            "run_id": f"import-{self.fmt}-{self.tasks.content_hash()[:8]}",
            "harness_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "suite": {"name": f"imported-{self.fmt}", "hash": self.tasks.content_hash(), "path": None},
            "agent": {"name": f"imported-{self.fmt}", "adapter": "import", "target": None, "options": {},
                      "source": None, "hash": None, "simulated": False},
            "k": len(self.trials),
            "base_seed": None,  # type: ignore[typeddict-item]  # unknowable: the source does not record it
            "tasks": sorted(self.tasks.tasks),
            "perturbations": [],
            "tool_schema_hashes": {},
            "overlay": None,
            "max_steps": None,  # type: ignore[typeddict-item]
            "timeout_s": None,  # type: ignore[typeddict-item]
            "host": {},
        }
        manifest["source"] = {
            "kind": "import", "format": self.fmt, "harness_version": source_version,
            "files": [{"path": str(p), "sha256": sha256_file(p)} for p in sources],
            "outcome_rule": outcome_rule,
            "reference": {t: v["gold"] for t, v in self.tasks.tasks.items()},
        }
        write_manifest(self.out, manifest)
        seal_run(self.out)
        return manifest


def import_source(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `source` record of an imported run, None for a native one: the one rule every
    reader (verify, leaderboard) uses to tell them apart."""
    source = manifest.get("source")
    return source if isinstance(source, dict) and source.get("kind") == "import" else None


def refuse_replay(run_dir: Path) -> None:
    """An imported run has no suite or seeds to replay on: say so in one line (exit 2)."""
    from bench.runs.rundir import read_manifest

    source = import_source(read_manifest(run_dir))
    if source is not None:
        raise BenchError(f"imported from {source.get('format')}, so it cannot be replayed: the source records no "
                         "world state, seeds or tool schemas to replay against", file=str(run_dir))
