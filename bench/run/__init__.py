"""Running: agents × tasks × k trials, one trial's scoring, suite validation, and the run
directory (its format, its reading rules, and which of its trials count)."""
