"""Errors that reach the user as one clear paragraph instead of a traceback."""

from __future__ import annotations


class BenchError(Exception):
    """Bad input from the user (a file, a field, an argument). The CLI prints it and exits 2."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.file = file
        self.field = field
        super().__init__(message)

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(f"file {self.file}")
        if self.field:
            where.append(f"field {self.field}")
        prefix = f"{', '.join(where)}: " if where else ""
        return prefix + self.args[0]


class InfraError(Exception):
    """Raised by an agent adapter when the infrastructure failed (endpoint down, rate limit
    exhausted...). The trial is retried and, if it keeps failing, recorded as `error`, never as an
    agent failure."""
