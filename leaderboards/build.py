#!/usr/bin/env python3
"""Rebuild the published leaderboards under leaderboards/: one folder per suite, each with
README.md, leaderboard.json and index.html.

    python leaderboards/build.py                       # every built-in suite, the reference ladder
    python leaderboards/build.py --suite retail -k 8   # one suite
    python leaderboards/build.py --agent smollm2-local # add an agent (roster name or any --agent SPEC)

For each suite it runs every agent (`trajbench run SUITE --agent A -k K --seed 0`) into
runs/leaderboards/SUITE/AGENT (re-running resumes; --fresh starts over), then builds the
leaderboard from those run directories (`trajbench leaderboard`), which replays every run with
`trajbench verify` first. Run directories are not committed: only the three files per suite and
the index leaderboards/README.md. Simulated agents are deterministic given the seed, so their
figures are reproduced exactly (run ids and dates differ).

To publish a real agent, add its roster name to REAL_AGENTS (or pass --agent): its runs take the
time its model takes, and resume if interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if (ROOT / "bench" / "__init__.py").is_file() and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a source checkout without installing

SUITES = ["retail", "calendar", "incident"]

# Simulated reference agents of known reliability (agents/*.toml): a ladder from perfect to poor.
REFERENCE_AGENTS = ["sim-oracle", "sim-noisy-80", "sim-stepwise", "sim-spread"]

# Real agents to rank beside the ladder (roster names or --agent specs). Empty: the reference
# ladder alone needs no model and runs in seconds.
REAL_AGENTS: list[str] = []

DEFAULT_K = 8


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-") or "agent"


def build(suites: list[str], agents: list[str], k: int, out: Path, work: Path, fresh: bool,
          bootstrap: int, concurrency: int) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.adapters.spec import parse_agent_spec
    from bench.errors import BenchError
    from bench.publish.leaderboard import build_leaderboard
    from bench.publish.leaderboard_page import write_leaderboard
    from bench.runs.runner import RunConfig, run_benchmark
    from bench.world.suite import load_suite, require_valid

    status = 0
    index = []
    for suite_name in suites:
        suite = require_valid(load_suite(suite_name))
        run_dirs = []
        for agent in agents:
            spec = parse_agent_spec(agent)
            run_dir = work / suite.name / _safe(spec.name)
            if fresh and run_dir.exists():
                shutil.rmtree(run_dir)
            print(f"[{suite.name}] running {spec.name} (k = {k}) -> {run_dir}", flush=True)
            config = RunConfig(k=k, out=run_dir, seed=0, concurrency=concurrency, progress=False)
            try:
                run_benchmark(suite, spec, None, config)
            except BenchError as exc:
                print(f"[{suite.name}] {spec.name}: {exc} (use --fresh to start this run over)", file=sys.stderr)
                return 2
            run_dirs.append(run_dir)
        board = build_leaderboard(run_dirs, bootstrap=bootstrap, suite=suite)
        for r in board["rejected"]:
            status = 1
            print(f"[{suite.name}] rejected {r['agent']}: " + "; ".join(r["reasons"]), file=sys.stderr)
        dest = out / suite.name
        write_leaderboard(board, dest)
        index.append((suite.name, board))
        print(f"[{suite.name}] leaderboard written to {dest}", flush=True)
    if out.resolve() == HERE and set(suites) == set(SUITES):
        (out / "README.md").write_text(_index(index))
    return status


def _index(boards: list[tuple[str, dict]]) -> str:
    from bench.publish.markdown import md_escape

    lines = [
        "# Published leaderboards",
        "",
        "One folder per built-in suite: `README.md` (the ranked table), `leaderboard.json` (every number; schema "
        "`bench/schemas/leaderboard.schema.json`) and `index.html` (a self-contained page with the pass^k curves "
        "and the per-task heat map: open it in a browser, offline).",
        "",
        "| suite | content hash | tasks | k | ranked by | entries | first |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for name, board in boards:
        first = board["entries"][0] if board["entries"] else None
        top = "—" if first is None else (
            f"{md_escape(first['label'])}{' (simulated)' if first['agent']['simulated'] else ''} "
            f"{first['rank_metric']['mean']:.3f}")
        lines.append(f"| [{name}]({name}/README.md) | `{board['suite']['hash'][:12]}` | {board['n_tasks']} | "
                     f"{board['rank_by']['k']} | pass^{board['rank_by']['k']} | {len(board['entries'])} | {top} |")
    lines += [
        "",
        "The entries are trajbench's simulated reference agents (`agents/sim-*.toml`), a ladder of known "
        "reliability that calibrates the scale; they are not real agents. Real agents are added with `--agent`.",
        "",
        "## Rebuild",
        "",
        "```",
        "pip install -e '.[plots]'        # matplotlib draws the plots",
        "python leaderboards/build.py     # runs every agent on every suite, verifies, writes the three files",
        "```",
        "",
        "It is equivalent to, per suite:",
        "",
        "```",
        "trajbench run SUITE --agent sim-oracle --agent sim-noisy-80 --agent sim-stepwise --agent sim-spread \\",
        f"    -k {DEFAULT_K} --seed 0 --out runs/leaderboards/SUITE",
        "trajbench leaderboard runs/leaderboards/SUITE/* --out leaderboards/SUITE",
        "```",
        "",
        "See docs/publishing.md for what each figure means and how verification works.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="append", help="suite name or folder (repeatable; default: every built-in suite)")
    parser.add_argument("--agent", action="append", default=[], help="add an agent (roster name or --agent SPEC; repeatable)")
    parser.add_argument("--only", action="store_true", help="rank only the --agent agents, not the reference ladder")
    parser.add_argument("-k", type=int, default=DEFAULT_K, help=f"trials per task (default {DEFAULT_K})")
    parser.add_argument("--out", type=Path, default=HERE, help="where the leaderboards go (default: leaderboards/)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "leaderboards", help="run directories (default runs/leaderboards)")
    parser.add_argument("--fresh", action="store_true", help="delete existing run directories first")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default 2000)")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    agents = ([] if args.only else REFERENCE_AGENTS + REAL_AGENTS) + args.agent
    if not agents:
        parser.error("no agent to rank")
    from bench.errors import BenchError

    try:
        return build(args.suite or SUITES, agents, args.k, args.out, args.work, args.fresh, args.bootstrap, args.concurrency)
    except BenchError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
