#!/usr/bin/env bash
# Runs the three services as background processes, logs under .local/logs, pids under .local/run.
# Usage: deploy/services.sh up|down|status
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SERVICE_NAME=services

PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}
SERVICES=(intake themes recommendations)
# Demo and local runs generate a pseudonymisation key; production must set its own.
export CASEREVIEW_MODE=${CASEREVIEW_MODE:-demo}
export CASEREVIEW_LOCAL_DIR=${CASEREVIEW_LOCAL_DIR:-$LOCAL_DIR}
export CASEREVIEW_LOG_FORMAT=${CASEREVIEW_LOG_FORMAT:-json}
# The services talk to the servers `make infra-up` started, on whatever ports it was given.
export CASEREVIEW_KAFKA_BOOTSTRAP=${CASEREVIEW_KAFKA_BOOTSTRAP:-127.0.0.1:${CASEREVIEW_KAFKA_PORT:-9092}}
export CASEREVIEW_MONGO_URL=${CASEREVIEW_MONGO_URL:-mongodb://127.0.0.1:${CASEREVIEW_MONGO_PORT:-27017}}

port_of() {
  case "$1" in
    intake) echo "${CASEREVIEW_INTAKE_PORT:-8001}" ;;
    themes) echo "${CASEREVIEW_THEMES_PORT:-8002}" ;;
    recommendations) echo "${CASEREVIEW_RECOMMENDATIONS_PORT:-8003}" ;;
  esac
}

ready() {
  python3 - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

up() {
  local name pid port
  if [ "$CASEREVIEW_MODE" != production ]; then
    # Demo and local runs get generated bearer tokens; only their hashes reach the services.
    "$PYTHON" -m services.cli init-secrets >/dev/null
    export CASEREVIEW_AGENCY_TOKENS_FILE=${CASEREVIEW_AGENCY_TOKENS_FILE:-$LOCAL_DIR/secrets/agency-tokens.yaml}
    export CASEREVIEW_RECOMMENDATIONS_TOKENS_FILE=${CASEREVIEW_RECOMMENDATIONS_TOKENS_FILE:-$LOCAL_DIR/secrets/lead-tokens.yaml}
  fi
  for name in "${SERVICES[@]}"; do
    port=$(port_of "$name")
    pid=$(running_pid "$name" "services.$name")
    if [ -n "$pid" ]; then
      say "$name already running (pid $pid)"
      continue
    fi
    require_free_port 127.0.0.1 "$port"
    cd "$REPO_ROOT"
    setsid nohup "$PYTHON" -m "services.$name" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$(pid_file "$name")"
    say "$name started (pid $!), log $LOG_DIR/$name.log"
  done
  for name in "${SERVICES[@]}"; do
    wait_ready "$name" "$(running_pid "$name" "services.$name")" "${CASEREVIEW_SERVICE_READY_TIMEOUT:-60}" ready "$(port_of "$name")"
    say "$name ready on 127.0.0.1:$(port_of "$name")"
  done
}

case "${1:-status}" in
  up) up ;;
  down)
    for name in recommendations themes intake; do stop_pid "$name" 40 "services.$name"; done ;;
  status)
    rc=0
    for name in "${SERVICES[@]}"; do
      pid=$(running_pid "$name" "services.$name")
      if [ -z "$pid" ]; then echo "$name: stopped"; rc=3
      elif ready "$(port_of "$name")"; then echo "$name: running (pid $pid), ready"
      else echo "$name: running (pid $pid), not ready"; rc=1
      fi
    done
    exit $rc ;;
  *) die "usage: deploy/services.sh up|down|status" ;;
esac
