"""Analysis: every figure computed from run directories, returned as JSON-ready data. Nothing
here prints, renders or chooses an exit code (that is `bench.publish` and `bench.cli`)."""
