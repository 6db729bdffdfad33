"""Importers: other harnesses' trajectory files turned into ordinary trajbench run directories.

One module per source format (`taubench`, `tau2`, `inspectai`, `atif`; the `--success` grammar in
`success`), a shared core (`core`: the streaming reader and the writer). Formats and what cannot be recovered: docs/import.md.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.imports.core import ImportedRun

FORMATS = ("tau-bench", "tau2", "inspect", "atif")


def import_run(fmt: str, sources: list[Path], out: Path, success: str | None = None) -> ImportedRun:
    """Import `sources` (files of format `fmt`) into one new run directory at `out`; `success` is
    the outcome rule for formats whose verdict is a choice (inspect scores, tau2 reward parts)."""
    if success is not None and fmt not in ("inspect", "tau2"):
        raise BenchError(f"--success applies to inspect and tau2; {fmt} has one outcome rule (docs/import.md)",
                         field="success")
    if fmt == "tau-bench":
        from bench.imports import taubench

        return taubench.import_files(sources, out)
    if fmt == "tau2":
        from bench.imports import tau2

        return tau2.import_files(sources, out, success)
    if fmt == "inspect":
        from bench.imports import inspectai

        return inspectai.import_files(sources, out, success)
    if fmt == "atif":
        from bench.imports import atif

        return atif.import_files(sources, out)
    raise BenchError(f"unknown import format {fmt!r} (expected one of: {', '.join(FORMATS)})", field="format")
