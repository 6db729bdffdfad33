"""Agent adapters: `python` (any callable or class), `sim` (simulated agents of known
reliability) and the built-in reference and do-nothing agents used by `validate`."""
