"""Where the frameworks' runs differ: for each suite and framework of the board (run.sh), each
trial's outcome, failed checks, tool sequence and final state; and for each suite the first
step at which the frameworks' trajectories part. Prints Markdown (pasted into docs/frameworks.md).

Usage: python leaderboards/frameworks/summarize.py RUNS_DIR   (the RUNS_DIR given to run.sh)
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.runs.rundir import read_run


def trials(run_dir: Path) -> list[tuple[str, str, list[str], str, int]]:
    """(outcome, failed checks, tool calls, final state hash, model tokens) per trial."""
    log = read_run(run_dir)
    out = []
    for trial_id in sorted(log.summaries):
        summary = log.summaries[trial_id]
        calls = [f"{s['tool']}{'!' if s.get('error') else ''}" for s in log.trial_steps(trial_id) if s["kind"] in ("tool", "user")]
        failed = ",".join(name for name, check in summary["checks"].items() if not check["passed"])
        out.append((summary["outcome"], failed, calls, summary["final_state_hash"][:8], summary["input_tokens"] + summary["output_tokens"]))
    return out


def first_parting(sequences: dict[str, list[list[str]]]) -> int:
    """How many leading steps every trial (of every framework) shares: the same tool, whether
    or not it erred."""
    flat = [[call.rstrip("!") for call in seq] for seqs in sequences.values() for seq in seqs]
    step = 0
    while all(len(seq) > step for seq in flat) and len({seq[step] for seq in flat}) == 1:
        step += 1
    return step


def main(root: Path) -> None:
    for suite_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        print(f"\n### {suite_dir.name}\n")
        print("| framework | trial | outcome | failed checks | tool calls (`!` = error) | final state | tokens |")
        print("|---|---:|---|---|---|---|---:|")
        sequences: dict[str, list[list[str]]] = {}
        for run_dir in sorted(p for p in suite_dir.iterdir() if (p / "run.json").is_file()):
            rows = trials(run_dir)
            sequences[run_dir.name] = [calls for _, _, calls, _, _ in rows]
            for i, (outcome, failed, calls, state, tokens) in enumerate(rows):
                print(f"| {run_dir.name} | {i} | {outcome} | {failed or '—'} | {' → '.join(calls) or '(none)'} | `{state}` | {tokens} |")
        print(f"\nAll trials call the same tools up to step {first_parting(sequences)}.")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
