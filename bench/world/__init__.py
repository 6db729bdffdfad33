"""The world: what a suite is — its tools over a JSON state, its tasks and their goals, the
scripted user, tool overlays and input variants. Imports nothing above `errors`/`canonical`."""
