"""Speed of `trajbench import inspect` against Inspect's own streaming reader.

Runs a real 2-sample tool-using eval with inspect-ai's mockllm model, copies its samples into a
log of N samples (written by inspect-ai itself, as `.eval` and as `.json`), then times in the same
process:
- baseline: iterating `inspect_ai.log.read_eval_log_samples(..., resolve_attachments=True)`
  (it re-opens the log for every sample);
- import: bench.imports.import_run("inspect", ...) into a fresh run directory (the log opened once,
  samples validated and resolved with the same API, the run written).
Prints samples/s of each and the ratio import / baseline. Needs the `inspect` extra.

    python benchmarks/import_inspect_speed.py             # 800 samples (~1 minute)
    python benchmarks/import_inspect_speed.py --samples 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any


def real_log(folder: Path) -> Any:
    """A real eval log: two samples, one tool call each, scored by includes()."""
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.log import read_eval_log
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate, use_tools
    from inspect_ai.tool import tool

    @tool
    def cancel_reservation() -> Any:
        async def execute(reservation_id: str) -> str:
            """Cancel a reservation.

            Args:
                reservation_id: the reservation
            """
            return f"cancelled {reservation_id}"
        return execute

    def script(messages: list[Any], *_: Any) -> Any:
        done = any(m.role == "tool" for m in messages)
        out = (ModelOutput.from_content("mockllm/model", "cancelled") if done else
               ModelOutput.for_tool_call("mockllm/model", "cancel_reservation", {"reservation_id": "R0"}))
        out.usage = ModelUsage(input_tokens=100, output_tokens=7, total_tokens=107)
        return out

    task = Task(dataset=[Sample(id=i, input="Cancel R0.", target="cancelled") for i in (1, 2)],
                solver=[use_tools(cancel_reservation()), generate()], scorer=includes())
    [log] = eval(task, model=get_model("mockllm/model", custom_outputs=script), log_dir=str(folder),
                 display="none")
    return read_eval_log(log.location)


def scaled(log: Any, n: int) -> Any:
    """The log with its samples copied to n distinct samples (one epoch)."""
    base = log.samples
    samples = []
    for i in range(n):
        sample = base[i % len(base)].model_copy(deep=True)
        sample.id, sample.epoch, sample.uuid = f"s{i}", 1, f"u{i}"
        samples.append(sample)
    log.samples = samples
    log.eval.dataset.sample_ids = [s.id for s in samples]
    log.eval.dataset.samples = n
    log.eval.config.epochs = 1
    return log


def main() -> None:
    from inspect_ai.log import read_eval_log_samples, write_eval_log

    from bench.imports import import_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = scaled(real_log(Path(tmp) / "logs"), args.samples)
        print(f"{args.samples} samples\n| log | reader | samples/s |\n|---|---|---|")
        for fmt in ("eval", "json"):
            path = Path(tmp) / f"log.{fmt}"
            write_eval_log(log, str(path), format=fmt)
            start = time.perf_counter()
            n_base = sum(1 for _ in read_eval_log_samples(str(path), resolve_attachments=True))
            t_base = time.perf_counter() - start
            start = time.perf_counter()
            n_imp = import_run("inspect", [path], Path(tmp) / f"run-{fmt}").count
            t_imp = time.perf_counter() - start
            assert n_base == n_imp == args.samples
            print(f"| .{fmt} ({path.stat().st_size / 2**20:.1f} MiB) | read_eval_log_samples | {n_base / t_base:,.0f} |")
            print(f"| .{fmt} | trajbench import inspect | {n_imp / t_imp:,.0f} |")
            print(f"| .{fmt} | import / baseline | {t_base / t_imp:.2f}× speed |")


if __name__ == "__main__":
    main()
