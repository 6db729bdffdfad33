"""What every importer shares: a streaming reader for a top-level JSON array, the file digest
recorded in the manifest, the task-set hash used as the suite hash, and the writer that turns
mapped trials into a normal run directory through `bench.runs.rundir`."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import orjson

from bench.__version__ import __version__
from bench.errors import BenchError
from bench.runs.logwriter import LogWriter
from bench.runs.rundir import Manifest, write_manifest
from bench.runs.seal import seal_run

_CHUNK = 1 << 20


class _Stream:
    """A JSON text read in 1 MiB chunks: whitespace skipping, punctuation and one value at a
    time, so a file is never held whole (only the value being decoded is)."""

    def __init__(self, fh: Any, path: Path):
        self.fh, self.path = fh, path
        self.buf, self.pos = "", 0
        self._decoder = json.JSONDecoder()

    def peek(self) -> str:
        """The next non-whitespace character ("" at the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def _more(self) -> bool:
        more = self.fh.read(_CHUNK)
        if not more:
            return False
        self.buf, self.pos = self.buf[self.pos:] + more, 0
        return True

    def take(self, char: str, where: str, expected: str) -> None:
        if self.peek() != char:
            raise BenchError(f"{where}: truncated or invalid JSON (expected {expected})", file=str(self.path))
        self.pos += 1

    def value(self, where: str) -> Any:
        """Decode the next value, reading on while it is cut by the chunk boundary (a value that
        ends exactly at the buffer's end may be a number cut short: read on to be sure)."""
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or not self._more():
                    self.pos = end
                    return value
            except json.JSONDecodeError:
                if not self._more():
                    raise BenchError(f"{where}: truncated or invalid JSON", file=str(self.path)) from None


def _guarded(path: Path, body: Callable[[_Stream], Iterator[Any]]) -> Iterator[Any]:
    """Run a reader over the opened file; read errors become one clear error naming it."""
    try:
        with path.open("r", encoding="utf-8") as fh:
            yield from body(_Stream(fh, path))
    except OSError as exc:
        raise BenchError(f"cannot be read: {exc.strerror or exc}", file=str(path)) from None
    except UnicodeDecodeError:
        raise BenchError("not UTF-8 text", file=str(path)) from None


def _elements(stream: _Stream, label: str) -> Iterator[Any]:
    """The elements of the array starting at the stream's position ("[" not yet taken)."""
    stream.take("[", f"{label} 0", "'['")
    if stream.peek() == "]":
        stream.pos += 1
        return
    index = 0
    while True:
        yield stream.value(f"{label} {index}")
        index += 1
        sep = stream.peek()
        if sep == "]":
            stream.pos += 1
            return
        if sep != ",":
            raise BenchError(f"{label} {index}: truncated (expected ',' or ']' after the previous {label})",
                             file=str(stream.path))
        stream.pos += 1


def iter_json_array(path: Path, label: str = "record") -> Iterator[Any]:
    """Yield the elements of a file holding one JSON array, one at a time, reading it in 1 MiB
    chunks: a 100k-trial file is never held whole. A truncated or malformed file is one clear
    error naming the file and the element index."""
    def body(stream: _Stream) -> Iterator[Any]:
        if stream.peek() != "[":
            raise BenchError("expected a JSON array at the top level", file=str(path))
        yield from _elements(stream, label)
    return _guarded(path, body)


def iter_json_members(path: Path, streamed: frozenset[str]) -> Iterator[tuple[str, int | None, Any]]:
    """Yield the members of a file holding one JSON object as (key, None, value), except that
    an array under a key in `streamed` comes element by element as (key, index, element): a
    results file whose `simulations` hold 100k trials is never held whole."""
    def body(stream: _Stream) -> Iterator[tuple[str, int | None, Any]]:
        if stream.peek() != "{":
            raise BenchError("expected a JSON object at the top level", file=str(path))
        stream.pos += 1
        if stream.peek() == "}":
            return
        while True:
            key = stream.value("a member name")
            if not isinstance(key, str):
                raise BenchError("invalid JSON (a member name must be a string)", file=str(path))
            stream.take(":", f"member {key!r}", "':'")
            if key in streamed and stream.peek() == "[":
                label = key.rstrip("s") or key
                yield from ((key, i, v) for i, v in enumerate(_elements(stream, label)))
            else:
                yield key, None, stream.value(f"member {key!r}")
            sep = stream.peek()
            if sep == "}":
                return
            if sep != ",":
                raise BenchError(f"after member {key!r}: truncated (expected ',' or '}}')", file=str(path))
            stream.pos += 1
    return _guarded(path, body)


def check_suffix(path: Path, suffixes: tuple[str, ...], what: str) -> None:
    """A source named for another format is refused before any of it is read."""
    if path.suffix.lower() not in suffixes:
        raise BenchError(f"expected {what} ({' or '.join(suffixes)}), not a {path.suffix or 'file without extension'}",
                         file=str(path))


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

    def add(self, task_id: str, instruction: str | None, gold: list[dict[str, Any]], target: Any = None) -> None:
        """Record a task; a record without the task (an agent error) never hides one with it.
        `target` is a gold answer (Inspect) where the source has no gold actions; it joins the
        hash only when given, so the hashes of τ imports do not depend on it."""
        entry: dict[str, Any] = {"instruction": instruction, "gold": gold}
        if target is not None:
            entry["target"] = target
        known = self.tasks.get(task_id)
        if known is None or (known["instruction"] is None and instruction is not None):
            self.tasks[task_id] = entry

    def content_hash(self) -> str:
        return hashlib.sha256(orjson.dumps(self.tasks, option=orjson.OPT_SORT_KEYS)).hexdigest()


def staging_dir(out: Path) -> Path:
    """Where an import is written until it is complete: a failed import leaves `out` untouched."""
    return out.parent / f".{out.name}.importing"


@dataclass
class ImportedRun:
    """The writer: trial summaries and their steps appended to the log as they come, in a
    staging folder that becomes `out` only when `finish` has written run.json."""

    out: Path
    fmt: str
    writer: LogWriter = field(init=False)
    tasks: TaskSet = field(default_factory=TaskSet)
    trials: set[int] = field(default_factory=set)
    seen: dict[str, int] = field(default_factory=dict)
    count: int = 0
    notes: list[str] = field(default_factory=list)  # what the user should know (the CLI prints them)
    _sources: list[str] = field(default_factory=list)
    _source_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.out / "run.json").exists():
            raise BenchError("already a run directory; choose a new --out", file=str(self.out))
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise BenchError("exists and is not an empty folder; choose a new --out", file=str(self.out))
        staging = staging_dir(self.out)
        if staging.exists():
            shutil.rmtree(staging)  # the leftover of an import that was killed
        staging.mkdir(parents=True)
        self.writer = LogWriter(staging)

    def add(self, summary: dict[str, Any], steps: list[dict[str, Any]], origin: str = "", source: str = "") -> None:
        """Append one trial; the same trial id twice (e.g. trial 0 in two files) is an error
        naming where (`origin`: file and record) and the source file of the first. Only a small
        index of the source is kept per trial, so memory stays flat on a 100k-trial import."""
        trial = summary["trial"]
        if trial in self.seen:
            raise BenchError(f"{origin}: trial {summary['index']} of task {summary['task']!r} ({trial}) was already "
                             f"imported from {self._sources[self.seen[trial]]}: every (task, trial) must occur once "
                             "across the sources")
        if source not in self._source_index:
            self._source_index[source] = len(self._sources)
            self._sources.append(source)
        self.seen[trial] = self._source_index[source]
        attempt = summary["attempt"]
        for number, step in enumerate(steps):
            self.writer.append({"type": "step", "trial": trial, "attempt": attempt, "step": number, **step})
        self.writer.append({"type": "trial", **summary})
        self.trials.add(summary["index"])
        self.count += 1

    def finish(self, sources: list[Path], source_version: str | None, outcome_rule: str,
               agent_name: str | None = None, details: dict[str, Any] | None = None) -> Manifest:
        """Close the log, write run.json and move the run to `out`. Unknowable fields are null,
        never invented. `agent_name` is the source's own name for the agent, when it has one;
        `details` are further format-specific `source` fields."""
        self.writer.close()
        manifest: Manifest = {
            "run_id": f"import-{self.fmt}-{self.tasks.content_hash()[:8]}",
            "harness_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "suite": {"name": f"imported-{self.fmt}", "hash": self.tasks.content_hash(), "path": None},
            "agent": {"name": agent_name or f"imported-{self.fmt}", "adapter": "import", "target": None,
                      "options": {}, "source": None, "hash": None, "simulated": False},
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
            **(details or {}),
        }
        staging = staging_dir(self.out)
        write_manifest(staging, manifest)
        seal_run(staging)
        if self.out.exists():
            self.out.rmdir()  # checked empty in __post_init__
        staging.rename(self.out)
        return manifest

    def __enter__(self) -> ImportedRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.abort()

    def abort(self) -> None:
        """Remove the staging folder of a failed import: nothing is left half-written."""
        self.writer.close()
        shutil.rmtree(staging_dir(self.out), ignore_errors=True)


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
