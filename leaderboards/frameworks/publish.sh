#!/usr/bin/env bash
# Publish the framework board from the runs of run.sh: one leaderboard per suite under
# leaderboards/frameworks/SUITE, and diffs.md (each framework against trajbench's own loop,
# smollm2-server, with `trajbench diff`; its exit status 1 means "worse at the gate's level").
# Usage: bash leaderboards/frameworks/publish.sh [RUNS_DIR]   (default runs/frameworks)
set -euo pipefail
RUNS=${1:-runs/frameworks}
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=smollm2-server
{
  echo "# Framework diffs: each framework against trajbench's own loop ($BASE)"
  echo
  echo "Made by \`bash leaderboards/frameworks/publish.sh\` from the runs of \`run.sh\`."
  for suite_dir in "$RUNS"/*/; do
    suite=$(basename "$suite_dir")
    trajbench leaderboard "$suite_dir"*/ --out "$HERE/$suite" >&2 || echo "(trajbench leaderboard exit status $? for $suite: a run was rejected, see $suite/README.md)"
    for cand in "$suite_dir"*/; do
      name=$(basename "$cand")
      [ "$name" = "$BASE" ] && continue
      [ -d "$suite_dir$BASE" ] || continue
      echo
      echo "## $suite: $name vs $BASE"
      echo
      status=0
      trajbench diff "$suite_dir$BASE" "$cand" --markdown || status=$?
      echo
      echo "(\`trajbench diff\` exit status $status)"
    done
  done
} > "$HERE/diffs.md"
