"""trajbench's tests: a package, so that pytest puts the repository root (not tests/) on sys.path
and tests/agents/ never shadows the OpenAI Agents SDK's `agents` package."""
