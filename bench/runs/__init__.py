"""Runs: agents × tasks × k trials (`runner`), one trial and its scoring (`trial`), suite
validation by running the reference and do-nothing agents (`validate`), and the run directory
— its format, its reading rules, which of its trials count, how its suite is reopened (`rundir`).

(Named `runs`, not `run`: `bench.run` is the public function that makes one.)
"""
