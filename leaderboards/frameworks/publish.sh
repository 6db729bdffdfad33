#!/usr/bin/env bash
# Publish the framework board from the runs of run.sh:
#   SUITE/{README.md,leaderboard.json,index.html}  trajbench leaderboard (verifies every run first)
#   diffs.md     each framework against trajbench's own loop (smollm2-server), `trajbench diff`
#                (its exit status 1 means "significantly worse at the gate's level")
#   reports.md   `trajbench report` of every run (pass@1 / pass^k, divergence points)
#   summary.md   summarize.py: the frameworks side by side (docs/frameworks.md quotes it)
#   runs.tar.xz  the run folders themselves (run.json + the trajectory log), so anyone can
#                `trajbench verify` the ranked runs: tar -xJf runs.tar.xz -C /tmp/fw
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
{
  echo "# \`trajbench report\` of every run of the framework board"
  echo
  echo "Made by \`bash leaderboards/frameworks/publish.sh\`; the runs are in \`runs.tar.xz\`."
  for run in $(cd "$RUNS" && ls -d */*/); do
    echo
    echo "## ${run%/}"
    echo
    echo '```'
    (cd "$RUNS" && trajbench report "${run%/}")
    echo '```'
  done
} > "$HERE/reports.md"
python "$HERE/summarize.py" "$RUNS" > "$HERE/summary.md"
# Only what verify and the reports read; sorted names and fixed owners so the archive is stable.
(cd "$RUNS" && find -L . -mindepth 3 -maxdepth 3 \( -name run.json -o -name 'trajectories.jsonl*' \) -print0 | sort -z \
   | tar --null -T - --owner=0 --group=0 --numeric-owner -cf -) | xz -9e > "$HERE/runs.tar.xz"
