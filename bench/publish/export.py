"""`trajbench export RUN_DIR --format parquet|jsonl|hf|atif|otel --out PATH`: a run as a shareable
dataset, or in an interchange format (`atif`: bench/publish/atif.py; `otel`: bench/publish/otel.py).

Two tables, through the Hugging Face `datasets` library (an optional extra, imported lazily):
`steps` (one row per logged step of every trial's summarised attempt) and `trials` (one row per
trial summary). Values whose type varies from row to row (tool arguments, observations, checks,
model messages) are JSON strings, because an Arrow column holds one type. The columns are listed
below (`STEP_COLUMNS`, `TRIAL_COLUMNS`) and documented in docs/publishing.md.

Layouts of PATH:
- `parquet` / `jsonl`: `steps.parquet` and `trials.parquet` (or `.jsonl`), a dataset card
  `README.md` declaring them as the configs `steps` and `trials` (so that
  `datasets.load_dataset(PATH, "trials")` works, locally or after an upload to the Hub), and
  a copy of the run's manifest `run.json`;
- `hf`: `DatasetDict({"steps", "trials"}).save_to_disk(PATH)` (read with
  `datasets.load_from_disk(PATH)`), plus `run.json`.

Everything runs offline: nothing is downloaded or uploaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from bench.adapters.spec import is_simulated
from bench.canonical import dump_line
from bench.errors import BenchError
from bench.publish.markdown import md_escape
from bench.runs.rundir import RunLog, TrialSummary, read_manifest, read_run

__all__ = ["FORMATS", "STEP_COLUMNS", "TRIAL_COLUMNS", "export_run", "step_rows", "trial_rows"]

FORMATS = ("parquet", "jsonl", "hf", "atif", "otel")

# (column, type, description). Types: string, int64, float64, bool, json (a JSON text, or null
# when the field does not apply to the row), list[string].
STEP_COLUMNS: list[tuple[str, str, str]] = [
    ("run_id", "string", "the run's id (run.json run_id)"),
    ("agent", "string", "the agent's name"),
    ("trial", "string", "trial id TASK/VARIANT/INDEX"),
    ("attempt", "string", "the attempt that produced the trial's summary (TRIAL@random)"),
    ("task", "string", "task id"),
    ("variant", "string", "input variant id (`base` for the task as written, e.g. `typos-0` for a perturbed input)"),
    ("variant_family", "string", "perturbation family of the variant (base, typos, paraphrase, reorder, distractors, formats, drop)"),
    ("index", "int64", "trial index within (task, variant), 0..k-1"),
    ("outcome", "string", "the trial's outcome: success, failure or error (repeated on each of its steps)"),
    ("step", "int64", "position of the step in the attempt, 0-based, counting every kind"),
    ("kind", "string", "tool (a tool call), user (an ask_user turn) or model (a model turn)"),
    ("tool", "string", "tool name (ask_user for user turns; null for model turns)"),
    ("args", "json", "the arguments exactly as passed to the tool (null for model turns)"),
    ("observation", "json", "what the tool returned ('null' when it errored; null for model turns)"),
    ("error", "string", "the error message shown to the agent, or null"),
    ("read_only", "bool", "whether the step left the state unchanged by design (null for model turns)"),
    ("state_hash", "string", "hash of the world state after the step (null for model turns)"),
    ("model", "string", "model name (model turns)"),
    ("messages", "json", "the messages sent to the model (model turns)"),
    ("output", "json", "what the model returned (model turns)"),
    ("input_tokens", "int64", "prompt tokens (model turns, when the adapter reports them)"),
    ("output_tokens", "int64", "completion tokens (model turns)"),
    ("latency_s", "float64", "model latency in seconds (model turns)"),
    ("cost", "float64", "cost of the model turn (model turns, when known)"),
    ("t_start", "float64", "Unix time the step started"),
    ("t_end", "float64", "Unix time the step ended"),
]

TRIAL_COLUMNS: list[tuple[str, str, str]] = [
    ("run_id", "string", "the run's id"),
    ("suite", "string", "suite name"),
    ("suite_hash", "string", "suite content hash: results are comparable only under the same hash"),
    ("agent", "string", "the agent's name"),
    ("agent_hash", "string", "hash of the agent spec (adapter, target, options)"),
    ("adapter", "string", "the agent's adapter (sim, python, openai, langgraph, local...)"),
    ("simulated", "bool", "true for simulated reference agents (sim), which are not real agents"),
    ("harness_version", "string", "trajbench version that made the run"),
    ("k", "int64", "trials per task in the run"),
    ("trial", "string", "trial id TASK/VARIANT/INDEX"),
    ("attempt", "string", "the summarised attempt (join key to steps)"),
    ("task", "string", "task id"),
    ("variant", "string", "input variant id (`base` for the task as written)"),
    ("variant_family", "string", "perturbation family of the variant (`base` for the unperturbed input)"),
    ("variant_params", "json", "the perturbation's parameters and details (e.g. the dropped fact); {} for base"),
    ("instruction", "string", "the perturbed instruction the agent was given (null for base: the task's own)"),
    ("index", "int64", "trial index within (task, variant)"),
    ("seed", "int64", "the trial's seed, derived from (base seed, task, variant, index)"),
    ("attempts", "int64", "attempts made (more than 1 after infrastructure errors)"),
    ("outcome", "string", "success, failure, or error (infrastructure: excluded from every metric)"),
    ("reason", "string", "why the trial failed (the failed checks) or errored; null on success"),
    ("checks", "json", "every goal check: {name: {passed, detail}}"),
    ("failed_checks", "list[string]", "names of the checks that failed"),
    ("milestones", "json", "{milestone: step at which it was first reached, or null}"),
    ("final_state_hash", "string", "hash of the end state"),
    ("answer", "string", "the agent's final answer"),
    ("steps", "int64", "tool and ask_user calls"),
    ("events", "int64", "all logged steps, model turns included"),
    ("input_tokens", "int64", "prompt tokens over the trial"),
    ("output_tokens", "int64", "completion tokens over the trial"),
    ("cost", "float64", "cost over the trial"),
    ("duration_s", "float64", "wall-clock seconds"),
    ("started_at", "float64", "Unix time the trial started"),
    ("agent_info", "json", "adapter facts (model name; for sim agents the true success probability)"),
]


def _json(value: Any) -> str:
    """A JSON column: exact, lone surrogates as JSON `\\uXXXX` escapes (`json.loads` restores them)."""
    return dump_line(value).strip().decode()


def _text(value: Any) -> Any:
    """A plain text column must be valid UTF-8 (Arrow, Parquet): a lone surrogate in an answer
    or an error is written as the text `\\udXXX` (docs/publishing.md; the run's log keeps it exactly)."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _ordered_summaries(log: RunLog) -> Iterator[TrialSummary]:
    """The summaries in task, variant, index order, read one at a time."""
    order = {t: i for i, t in enumerate(log.manifest.get("tasks") or [])}
    return log.in_order(lambda s: (order.get(s["task"], len(order)), str(s.get("variant")), s.get("index", 0), s["trial"]))


def step_rows(log: RunLog) -> Iterator[dict[str, Any]]:
    """One dict per step of every trial's summarised attempt (orphaned attempts are left out)."""
    manifest = log.manifest
    agent = (manifest.get("agent") or {}).get("name")
    for summary in _ordered_summaries(log):
        for ev in sorted(log.steps_of(summary), key=lambda e: e["step"]):
            model = ev.get("kind") == "model"
            yield {
                "run_id": manifest.get("run_id"), "agent": agent, "trial": summary["trial"], "attempt": summary["attempt"],
                "task": summary["task"], "variant": summary.get("variant"),
                "variant_family": summary.get("variant_family", "base"), "index": summary.get("index"),
                "outcome": summary["outcome"], "step": ev["step"], "kind": ev["kind"],
                "tool": _text(ev.get("tool")),
                "args": None if model else _json(ev.get("args")),
                "observation": None if model else _json(ev.get("observation")),
                "error": _text(ev.get("error")), "read_only": ev.get("read_only"), "state_hash": ev.get("state_hash"),
                "model": _text(ev.get("model")),
                "messages": _json(ev.get("messages")) if model else None,
                "output": _json(ev.get("output")) if model else None,
                "input_tokens": ev.get("input_tokens"), "output_tokens": ev.get("output_tokens"),
                "latency_s": ev.get("latency_s"), "cost": ev.get("cost"),
                "t_start": ev.get("t_start"), "t_end": ev.get("t_end"),
            }


def trial_rows(log: RunLog) -> Iterator[dict[str, Any]]:
    manifest = log.manifest
    agent = manifest.get("agent") or {}
    suite = manifest.get("suite") or {}
    for s in _ordered_summaries(log):
        checks = s.get("checks") or {}
        yield {
            "run_id": manifest.get("run_id"), "suite": suite.get("name"), "suite_hash": suite.get("hash"),
            "agent": agent.get("name"), "agent_hash": agent.get("hash"), "adapter": agent.get("adapter"),
            "simulated": is_simulated(agent.get("adapter")), "harness_version": manifest.get("harness_version"),
            "k": manifest.get("k"),
            "trial": s["trial"], "attempt": s["attempt"], "task": s["task"], "variant": s.get("variant"),
            "variant_family": s.get("variant_family", "base"), "variant_params": _json(s.get("variant_params") or {}),
            "instruction": _text(s.get("instruction")), "index": s.get("index"), "seed": s.get("seed"), "attempts": s.get("attempts"),
            "outcome": s["outcome"], "reason": _text(s.get("reason")),
            "checks": _json(checks), "failed_checks": [n for n, c in checks.items() if not c.get("passed")],
            "milestones": _json(s.get("milestones") or {}), "final_state_hash": s.get("final_state_hash"),
            "answer": _text(s.get("answer")), "steps": s.get("steps"), "events": s.get("events"),
            "input_tokens": s.get("input_tokens"), "output_tokens": s.get("output_tokens"), "cost": s.get("cost"),
            "duration_s": s.get("duration_s"), "started_at": s.get("started_at"),
            "agent_info": _json(s.get("agent_info") or {}),
        }


def _import_datasets() -> Any:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
    try:
        import datasets
    except ImportError:
        raise BenchError("exporting needs the Hugging Face `datasets` library: pip install 'trajbench[export]' "
                         "(or pip install datasets)", field="--format") from None
    return datasets


def _features(datasets: Any, columns: list[tuple[str, str, str]]) -> Any:
    list_type = getattr(datasets, "List", None) or datasets.Sequence
    kinds = {"string": datasets.Value("string"), "json": datasets.Value("string"), "int64": datasets.Value("int64"),
             "float64": datasets.Value("float64"), "bool": datasets.Value("bool"),
             "list[string]": list_type(datasets.Value("string"))}
    return datasets.Features({name: kinds[kind] for name, kind, _ in columns})


def _tables(datasets: Any, rows: Iterator[dict[str, Any]], columns: list[tuple[str, str, str]],
            batch: int = 20_000) -> Iterator[Any]:
    """Rows as Arrow tables of `batch` rows each (at least one table, maybe empty)."""
    import pyarrow as pa

    schema = _features(datasets, columns).arrow_schema
    chunk: list[dict[str, Any]] = []
    sent = False
    for row in rows:
        chunk.append(row)
        if len(chunk) >= batch:
            yield pa.Table.from_pylist(chunk, schema=schema)
            chunk, sent = [], True
    if chunk or not sent:
        yield pa.Table.from_pylist(chunk, schema=schema)


def _dataset(datasets: Any, rows: Iterator[dict[str, Any]], columns: list[tuple[str, str, str]], scratch: Path,
             maps: list[tuple[int, int]]) -> Any:
    """Rows to a Dataset backed by an Arrow file written batch by batch to `scratch` and
    memory-mapped (`hf` only): `save_to_disk` then copies it shard by shard, so memory holds
    one batch, not the run. Its fingerprint is the SHA-256 of that file (the default would
    hash its path and modification time): the same rows give the same `state.json`. The
    mapping's (address, length) is appended to `maps` (`_pages_dropped`)."""
    import pyarrow as pa
    from datasets.table import MemoryMappedTable

    schema = _features(datasets, columns).arrow_schema
    with pa.OSFile(str(scratch), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for table in _tables(datasets, rows, columns):
            writer.write_table(table)
    sha = hashlib.sha256()
    with open(scratch, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    mapped = pa.memory_map(str(scratch))
    table = pa.ipc.open_stream(mapped).read_all()  # zero-copy: its buffers lie in the mapping
    mapped.seek(0)
    maps.append((mapped.read_buffer(1).address, mapped.size()))
    return datasets.Dataset(MemoryMappedTable(table, str(scratch)), fingerprint=sha.hexdigest()[:16])


_MADV_DONTNEED = 4  # Linux


@contextmanager
def _pages_dropped(maps: list[tuple[int, int]], every_s: float = 0.05) -> Iterator[None]:
    """While `save_to_disk` reads through the memory-mapped scratch files, tell the kernel every
    `every_s` that the pages read so far are not needed (madvise MADV_DONTNEED). A mapped
    file's pages count in the process's resident memory and stay mapped until the file is
    unmapped: without this the peak RSS of `export --format hf` grew by the whole tables' size
    (470 MB of file pages at 100k trials). The files are only read, so a page dropped is read
    again from the page cache if needed: the output is the same. Elsewhere than Linux: nothing
    is done."""
    if not sys.platform.startswith("linux"):
        yield
        return
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes, madvise.restype = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int), ctypes.c_int
    page = mmap.PAGESIZE
    spans = [(address - address % page, size + address % page) for address, size in maps]
    stop = threading.Event()

    def drop() -> None:
        while not stop.wait(every_s):
            for address, size in spans:
                madvise(address, size, _MADV_DONTNEED)

    dropper = threading.Thread(target=drop, name="trajbench-export-pages", daemon=True)
    dropper.start()
    try:
        yield
    finally:
        stop.set()
        dropper.join()


def _write_file(datasets: Any, fmt: str, path: Path, rows: Iterator[dict[str, Any]],
                columns: list[tuple[str, str, str]]) -> int:
    """Write one table to `path` batch by batch, so that memory holds one batch, not the run;
    returns the number of rows. Parquet keeps the `datasets` schema metadata (the features), so
    `load_dataset` reads the columns' types back; JSON lines are `Dataset.to_json`'s, batch after
    batch."""
    import pyarrow.parquet as pq

    n = 0
    if fmt == "parquet":
        schema = _features(datasets, columns).arrow_schema
        with pq.ParquetWriter(str(path), schema) as writer:
            for table in _tables(datasets, rows, columns):
                writer.write_table(table)
                n += table.num_rows
        return n
    with open(path, "wb") as fh:
        for table in _tables(datasets, rows, columns):
            if table.num_rows:
                datasets.Dataset(table).to_json(fh, lines=True, force_ascii=False)
            n += table.num_rows
    return n


def _card(log: RunLog, fmt: str, counts: dict[str, int]) -> str:
    m = log.manifest
    agent, suite = m.get("agent") or {}, m.get("suite") or {}
    name = md_escape(agent.get("name", ""))
    sim = " (a SIMULATED reference agent, not a real agent)" if is_simulated(agent.get("adapter")) else ""
    return (
        "---\n"
        "configs:\n"
        f"- config_name: trials\n  data_files:\n  - split: train\n    path: trials.{fmt}\n"
        f"- config_name: steps\n  data_files:\n  - split: train\n    path: steps.{fmt}\n"
        "tags:\n- trajbench\n- agents\n- tool-use\n"
        "---\n\n"
        f"# trajbench run {md_escape(m.get('run_id'))}\n\n"
        f"Agent **{name}**{sim} on suite **{md_escape(suite.get('name'))}** (content hash `{suite.get('hash')}`), "
        f"k = {m.get('k')} trials per task, harness {m.get('harness_version')}, made {m.get('created_at')}.\n\n"
        f"- `trials`: {counts['trials']} rows, one per trial (outcome, goal checks, tokens, cost).\n"
        f"- `steps`: {counts['steps']} rows, one per logged step (tool calls, ask_user turns, model turns).\n\n"
        "Arguments, observations, checks and model messages are JSON strings. `run.json` is the run's manifest. "
        "The columns are documented in trajbench's docs/publishing.md.\n"
    )


def _remove_export(out: Path, created: bool) -> None:
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir():  # the folder was empty before the export
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> dict[str, Any]:
    """Write the run's `steps` and `trials` tables to `out` in `fmt` (or, for `atif` / `otel`,
    its trials in that interchange format); returns what was written."""
    if fmt not in FORMATS:
        raise BenchError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}", field="--format")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchError("the output path exists and is not an empty folder; choose another --out or remove it",
                         file=str(out), field="--out")
    if fmt in ("atif", "otel"):
        return _export_interchange(Path(run_dir), fmt, out)
    log = read_run(run_dir)
    datasets = _import_datasets()
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        sources = {"steps": (step_rows(log), STEP_COLUMNS), "trials": (trial_rows(log), TRIAL_COLUMNS)}
        if fmt == "hf":
            with tempfile.TemporaryDirectory(prefix=".trajbench-export-", dir=out) as scratch:
                maps: list[tuple[int, int]] = []
                tables = {name: _dataset(datasets, rows, columns, Path(scratch) / f"{name}.arrow", maps)
                          for name, (rows, columns) in sources.items()}
                counts = {name: len(ds) for name, ds in tables.items()}
                with _pages_dropped(maps):
                    datasets.DatasetDict(tables).save_to_disk(str(out))
                del tables  # the memory maps close before their files go
            files = ["dataset_dict.json", "steps/", "trials/"]
        else:
            counts = {name: _write_file(datasets, fmt, out / f"{name}.{fmt}", rows, columns)
                      for name, (rows, columns) in sources.items()}
            files = [f"{name}.{fmt}" for name in sources]
            (out / "README.md").write_text(_card(log, fmt, counts))
            files.append("README.md")
        shutil.copyfile(Path(run_dir) / "run.json", out / "run.json")
        files.append("run.json")
    except BaseException:  # the tables are written as they are made: leave no half export behind
        _remove_export(out, created)
        raise
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
    return {"format": fmt, "out": str(out), "files": files, **counts}


def _export_interchange(run_dir: Path, fmt: str, out: Path) -> dict[str, Any]:
    """ATIF files or OTLP JSON traces, streamed from the log (no `datasets` needed)."""
    from bench.publish.atif import write_atif
    from bench.publish.otel import FILE, write_otel

    read_manifest(run_dir)  # a bad run directory fails before anything is created
    out.mkdir(parents=True, exist_ok=True)
    counts = write_atif(run_dir, out) if fmt == "atif" else write_otel(run_dir, out)
    files = ["one TRIAL.json per trial"] if fmt == "atif" else [FILE]
    return {"format": fmt, "out": str(out), "files": files, **counts}
