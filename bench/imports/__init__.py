"""Importers: other harnesses' trajectory files turned into ordinary trajbench run directories.

One module per source format (`taubench`, `atif`), a shared core (`core`: the streaming reader and the
writer). Formats and what cannot be recovered: docs/import.md.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.imports.core import ImportedRun

FORMATS = ("tau-bench", "atif")


def import_run(fmt: str, sources: list[Path], out: Path) -> ImportedRun:
    """Import `sources` (files of format `fmt`) into one new run directory at `out`."""
    if fmt == "tau-bench":
        from bench.imports import taubench

        return taubench.import_files(sources, out)
    if fmt == "atif":
        from bench.imports import atif

        return atif.import_files(sources, out)
    raise BenchError(f"unknown import format {fmt!r} (expected one of: {', '.join(FORMATS)})", field="format")
