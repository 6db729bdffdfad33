#!/usr/bin/env bash
# The framework board: the same local model (SmolLM2-135M-Instruct, llama.cpp) driven by five
# agent frameworks on two easy tasks of each built-in suite, k trials each, one framework at a
# time (--concurrency 1: the llama.cpp server decodes one request at a time). Then publish.sh
# builds the leaderboards and the diffs. Needs
#   pip install -e '.[local,server,langgraph,agents-sdk,pydantic-ai,mcp]'
# Usage: bash leaderboards/frameworks/run.sh [K] [RUNS_DIR] [SUITES]
#   (defaults: 4, runs/frameworks, "incident calendar retail"; AGENTS=... picks frameworks,
#   TASKS_CALENDAR=... a suite's tasks)
# Re-running the same command resumes: each run's folder keeps the trials already finished, and a
# larger K adds trials to them.
# --max-steps is the largest step count of the suite's chosen tasks under `--agent sim:oracle`,
# plus one (a lookup the oracle skips), and at least 3.
set -euo pipefail
K=${1:-4}
RUNS=${2:-runs/frameworks}
SUITES=${3:-incident calendar retail}
AGENTS=${AGENTS:-smollm2-server smollm2-langgraph smollm2-agents-sdk smollm2-pydantic-ai smollm2-mcp}
declare -A TASKS=(
  [incident]=incident-001-ack-alert,incident-002-scale-auth                 # oracle: 1, 1 steps
  [calendar]=calendar-001-cancel-own-event,calendar-002-invite-colleague    # oracle: 2, 1 steps
  [retail]=retail-001-cancel-stated,retail-002-tracking-stated              # oracle: 3, 2 steps
)
for suite in incident calendar retail; do  # TASKS_CALENDAR=... etc. picks other tasks for a suite
  override="TASKS_${suite^^}"
  if [ -n "${!override:-}" ]; then TASKS[$suite]=${!override}; fi
done
declare -A MAX_STEPS=([incident]=3 [calendar]=3 [retail]=4)
# Seconds per trial: the same limit for every framework (a cold first prompt took up to 180 s
# at a load average of 8).
declare -A TIMEOUT=([incident]=300 [calendar]=300 [retail]=300)
# trajbench's loop and LangGraph run alone; the three native tool-calling frameworks run in one
# `trajbench run` (one after the other), so they share one llama.cpp server: one cold prompt per
# suite instead of three.
NATIVE="smollm2-agents-sdk smollm2-pydantic-ai smollm2-mcp"
run() {  # run SUITE AGENT...: one `trajbench run` of these agents into RUNS/SUITE/AGENT
  local suite=$1; shift
  local agents=() a
  for a in "$@"; do [[ " $AGENTS " == *" $a "* ]] && agents+=(--agent "$a"); done
  [ ${#agents[@]} -gt 0 ] || return 0
  local out="$RUNS/$suite"
  [ ${#agents[@]} -eq 2 ] && out="$RUNS/$suite/${agents[1]}"  # one agent: --out is the run folder itself
  echo "$(date -u +%FT%TZ) start $suite $* k=$K" >&2
  ${NICE:-nice -n 5} trajbench run "$suite" "${agents[@]}" --tasks "${TASKS[$suite]}" -k "$K" --seed 0 \
      --concurrency 1 --max-steps "${MAX_STEPS[$suite]}" --timeout "${TIMEOUT[$suite]}" --quiet --out "$out" \
    || echo "$(date -u +%FT%TZ) trajbench run exit status $? for $suite $*" >&2
  echo "$(date -u +%FT%TZ) end $suite $* load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}
for suite in $SUITES; do
  run "$suite" smollm2-server
  run "$suite" smollm2-langgraph
  # shellcheck disable=SC2086
  run "$suite" $NATIVE
done
