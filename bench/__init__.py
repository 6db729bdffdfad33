"""trajbench: a benchmark for the consistency of tool-using AI agents."""

__version__ = "0.1.0"
