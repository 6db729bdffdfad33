"""The divergence analysis: where a task's k runs branch apart, and which branch leads to failure.

One module per numbered step of docs/divergence.md: `options` (what is keyed and tested),
`keys` (step 1: canonical keys, the corpus), `tree` (steps 2–4: prefix tree, scores, exact
tests, divergence points, critical steps, the reference) and `section` (steps 5–6: the JSON
section, and the entry points `analyse`, `analyse_run`, `divergence_section`); `power` holds the
detection-power rule shared by docs/divergence.md §6.1 and the small-k candidates.
"""
