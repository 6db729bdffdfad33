"""The package version: read by the build backend (pyproject.toml) and recorded in every run."""

__version__ = "0.1.0"
