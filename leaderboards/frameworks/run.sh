#!/usr/bin/env bash
# The framework board: the same local model (SmolLM2-135M-Instruct, llama.cpp) driven by five
# agent frameworks on one easy task of each built-in suite, k trials each, then the leaderboard
# and the pairwise diffs. Needs pip install -e '.[local,server,langgraph,agents-sdk,pydantic-ai,mcp]'.
# Usage: bash leaderboards/frameworks/run.sh [K] [RUNS_DIR] [SUITES]
#   (defaults: 2, runs/frameworks, "retail calendar incident"; one call per suite runs them side by side)
set -euo pipefail
K=${1:-2}
RUNS=${2:-runs/frameworks}
SUITES=${3:-retail calendar incident}
AGENTS=${AGENTS:-smollm2-server smollm2-langgraph smollm2-agents-sdk smollm2-pydantic-ai smollm2-mcp}
declare -A TASK=([retail]=retail-001-cancel-stated [calendar]=calendar-001-cancel-own-event [incident]=incident-001-ack-alert)
for suite in $SUITES; do
  for agent in $AGENTS; do
    trajbench run "$suite" --agent "$agent" --tasks "${TASK[$suite]}" -k "$K" --seed 0 --concurrency 1 \
        --max-steps 6 --timeout 600 --quiet --out "$RUNS/$suite/$agent"
  done
done
