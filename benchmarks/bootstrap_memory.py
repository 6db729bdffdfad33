"""Peak memory and CPU of the suite bootstrap (`suite_summary`, B = 2000) at many tasks, in one process.

    python benchmarks/bootstrap_memory.py [--tasks 10000] [--trials 4] [--B 2000] [--repeat 2] [--old FILE]

Each round measures, interleaved, the replicate-blocked computation (the default `_DRAW_CELLS`)
and the baseline: the same code with the whole (B, T) index matrix drawn at once
(`_DRAW_CELLS` = B x T). Peak memory is tracemalloc's (numpy reports its buffers to it), CPU
is `time.process_time`. The two must give the identical summary (checked). `--old FILE` adds a
third: another version of bench/analysis/metrics.py loaded from FILE (e.g. the file before the
change, `git show REV:bench/analysis/metrics.py > /tmp/old_metrics.py`); its summary is
compared to rounding, since it formed replicate sums by one matrix product.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
import tracemalloc
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from bench.analysis import metrics


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("old_metrics", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, peak MB above the start, CPU seconds)."""
    tracemalloc.start()
    t = time.process_time()
    out = fn()
    cpu = time.process_time() - t
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return out, peak, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--B", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--old", help="another metrics.py to measure beside (the code before a change)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    p = rng.beta(2, 2, size=args.tasks)
    counts = [(args.trials, int(c)) for c in rng.binomial(args.trials, p)]
    blocked_cells = metrics._DRAW_CELLS

    def run(mod: ModuleType, cells: int | None) -> dict[str, Any]:
        if cells is not None:
            mod._DRAW_CELLS = cells  # type: ignore[attr-defined]
        return mod.suite_summary(counts, B=args.B, seed=0)  # type: ignore[no-any-return]

    variants: dict[str, Callable[[], dict[str, Any]]] = {
        "one block (baseline)": lambda: run(metrics, args.B * args.tasks),
        f"blocks of {blocked_cells:,} cells": lambda: run(metrics, blocked_cells),
    }
    if args.old:
        old = _load(args.old)
        variants["--old file"] = lambda: run(old, None)
    print(f"suite_summary: {args.tasks:,} tasks x {args.trials} trials, B = {args.B}")
    results: dict[str, dict[str, Any]] = {}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, fn in variants.items():
            out, peak, cpu = _measure(fn)
            results[name] = out
            figures[name].append((peak, cpu))
    base_peak = max(f[0] for f in figures["one block (baseline)"])
    base_cpu = min(f[1] for f in figures["one block (baseline)"])
    for name, figs in figures.items():
        peak, cpu = max(f[0] for f in figs), min(f[1] for f in figs)
        print(f"  {name:<28} peak {peak:8.1f} MB ({peak / base_peak:5.3f}x)   CPU {cpu:6.2f} s ({cpu / base_cpu:5.2f}x)")
    same = json.dumps(results["one block (baseline)"]) == json.dumps(results[f"blocks of {blocked_cells:,} cells"])
    print(f"  blocked == one block (identical JSON): {same}")
    if args.old:
        a, b = results["--old file"], results["one block (baseline)"]
        diff = max(abs((x or 0.0) - (y or 0.0)) for key in ("pass^k", "pass@k")
                   for ea, eb in zip(a[key], b[key], strict=True) for x, y in ((ea["lo"], eb["lo"]), (ea["hi"], eb["hi"])))
        print(f"  --old file: max |bound difference| {diff:.3g}")
    if not same:
        raise SystemExit("blocked and one-block summaries differ")


if __name__ == "__main__":
    main()
