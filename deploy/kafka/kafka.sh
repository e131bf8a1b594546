#!/usr/bin/env bash
# Runs a native single-node Apache Kafka broker (KRaft, combined broker+controller).
# Usage: kafka.sh up|down|status
# Settings (environment):
#   CASEREVIEW_KAFKA_PORT             broker port (default 9092)
#   CASEREVIEW_KAFKA_CONTROLLER_PORT  controller port (default 9093)
#   CASEREVIEW_KAFKA_READY_TIMEOUT    seconds `up` waits for readiness (default 90)
#   CASEREVIEW_KAFKA_STOP_TIMEOUT     seconds `down` waits before SIGKILL (default 30)
#   CASEREVIEW_KAFKA_HEAP             JVM heap options (default "-Xms256m -Xmx512m")
#   CASEREVIEW_KAFKA_BOOTSTRAP        host:port of an external broker; up/down then do nothing
# Jars come from Maven Central (versions pinned in pom.xml), cached in .local/kafka/libs-<version>/.

SERVICE_NAME=kafka
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
KAFKA_VERSION=$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$HERE/pom.xml")
[ -n "$KAFKA_VERSION" ] || die "no <kafka.version> in $HERE/pom.xml"

HOST=127.0.0.1
PORT=${CASEREVIEW_KAFKA_PORT:-9092}
CONTROLLER_PORT=${CASEREVIEW_KAFKA_CONTROLLER_PORT:-9093}
READY_TIMEOUT=${CASEREVIEW_KAFKA_READY_TIMEOUT:-90}
STOP_TIMEOUT=${CASEREVIEW_KAFKA_STOP_TIMEOUT:-30}
read -r -a HEAP <<<"${CASEREVIEW_KAFKA_HEAP:--Xms256m -Xmx512m}"

KAFKA_DIR=$LOCAL_DIR/kafka
LIBS=$KAFKA_DIR/libs-$KAFKA_VERSION
LIBS_MARKER=$LIBS/.complete
DATA_DIR=$KAFKA_DIR/data
CONFIG=$KAFKA_DIR/server.properties
LOG_FILE=$LOG_DIR/kafka.log
LOG_MAX_BYTES=$((20 * 1024 * 1024))
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

ready() { python3 "$HERE/ready.py" "$1"; }

# Our broker JVM only: not a zombie, not a recycled pid (see running_pid in lib.sh).
kafka_pid() { running_pid kafka kafka.Kafka; }

# Readiness probe while waiting on a broker an earlier `up` started: also ends the wait if it is gone.
ready_or_gone() { ready "$HOST:$PORT" || [ -z "$(kafka_pid)" ]; }

# First entry of CASEREVIEW_KAFKA_BOOTSTRAP, without a PLAINTEXT:// style prefix.
external_bootstrap() {
  local first=${CASEREVIEW_KAFKA_BOOTSTRAP%%,*}
  printf '%s' "${first#*://}"
}

fetch_jars() {
  [ -f "$LIBS_MARKER" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars; install it (apt-get install maven)"
  say "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central (first run only)…"
  rm -rf "$LIBS"
  # Maven's full output goes to a file (mvn -q still prints stray colour codes); errors are shown on failure.
  local mvn_log=$LOG_DIR/kafka-fetch.log
  if ! mvn -B -ntp -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$LIBS" >"$mvn_log" 2>&1; then
    rm -rf "$LIBS"
    local error
    error=$(sed -e 's/\x1b\[[0-9;]*m//g' "$mvn_log" | grep -m 1 '^\[ERROR\] .' || true)
    if [ -n "$error" ]; then printf '%s\n' "$error" >&2; else tail -n 20 "$mvn_log" >&2; fi
    die "could not fetch the Kafka $KAFKA_VERSION jars; full Maven output: $mvn_log"
  fi
  touch "$LIBS_MARKER"
  say "cached $(find "$LIBS" -name '*.jar' | wc -l) jars in $LIBS"
}

render_config() {
  mkdir -p "$DATA_DIR"
  sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$DATA_DIR|g" \
    "$HERE/server.properties.in" >"$CONFIG"
}

java_cmd() {
  "$JAVA" -Xmx256m -Dlog4j.configuration="file:$HERE/log4j.properties" -cp "$LIBS/*" "$@"
}

format_storage() {
  [ -f "$DATA_DIR/meta.properties" ] && return 0
  local cluster_id
  # stdout also carries log4j lines (the config logs to stdout); the id is the 22-character base64url line.
  cluster_id=$(java_cmd kafka.tools.StorageTool random-uuid 2>>"$LOG_FILE" | grep -E '^[A-Za-z0-9_-]{22}$' | tail -n 1) \
    || true
  [ -n "$cluster_id" ] || die "kafka.tools.StorageTool random-uuid gave no cluster id; see $LOG_FILE"
  say "formatting KRaft storage in $DATA_DIR (cluster id $cluster_id)"
  if ! java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" --ignore-formatted >>"$LOG_FILE" 2>&1; then
    tail -n 20 "$LOG_FILE" >&2 || true
    die "formatting KRaft storage failed (last lines of $LOG_FILE above)"
  fi
}

# Serializes concurrent up/down calls (where flock(1) exists); the broker itself must not inherit fd 9.
lock() {
  command -v flock >/dev/null || return 0
  exec 9>"$RUN_DIR/kafka.lock"
  flock -w "$((READY_TIMEOUT + STOP_TIMEOUT))" 9 || die "another kafka.sh up/down is still running"
}

rotate_log() {
  if [ -f "$LOG_FILE" ] && [ "$(wc -c <"$LOG_FILE")" -gt "$LOG_MAX_BYTES" ]; then
    mv -f "$LOG_FILE" "$LOG_FILE.1"
  fi
}

up() {
  if [ -n "${CASEREVIEW_KAFKA_BOOTSTRAP:-}" ]; then
    say "CASEREVIEW_KAFKA_BOOTSTRAP is set: using the external broker at $CASEREVIEW_KAFKA_BOOTSTRAP; not starting one"
    return 0
  fi
  command -v python3 >/dev/null || die "python3 is needed for the readiness check"
  lock
  local pid
  pid=$(kafka_pid)
  if [ -n "$pid" ]; then
    if ready "$HOST:$PORT"; then
      say "already running (pid $pid) on $HOST:$PORT, ready"
      return 0
    fi
    say "already running (pid $pid) but not ready yet; waiting up to ${READY_TIMEOUT}s"
    wait_ready kafka "$pid" "$READY_TIMEOUT" ready_or_gone
    if [ -n "$(kafka_pid)" ]; then
      say "ready on $HOST:$PORT (pid $pid)"
      return 0
    fi
    say "kafka (pid $pid) exited while starting; starting it again"
  fi

  require_free_port "$HOST" "$PORT"
  require_free_port "$HOST" "$CONTROLLER_PORT"
  command -v "$JAVA" >/dev/null || die "java is needed (OpenJDK 17 or newer)"
  fetch_jars
  render_config
  rotate_log
  format_storage

  say "starting Kafka $KAFKA_VERSION on $HOST:$PORT (controller $HOST:$CONTROLLER_PORT); log: $LOG_FILE"
  printf '=== %s: starting Kafka %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$KAFKA_VERSION" >>"$LOG_FILE"
  nohup setsid "$JAVA" "${HEAP[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true -Dlog4j.configuration="file:$HERE/log4j.properties" \
    -cp "$LIBS/*" kafka.Kafka "$CONFIG" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
  pid=$!
  printf '%s\n' "$pid" >"$(pid_file kafka)"

  local started=$SECONDS
  wait_ready kafka "$pid" "$READY_TIMEOUT" ready "$HOST:$PORT"
  say "ready on $HOST:$PORT (pid $pid) after $((SECONDS - started))s"
}

down() {
  if [ -n "${CASEREVIEW_KAFKA_BOOTSTRAP:-}" ]; then
    say "CASEREVIEW_KAFKA_BOOTSTRAP is set: the external broker at $CASEREVIEW_KAFKA_BOOTSTRAP is not ours to stop"
    return 0
  fi
  lock
  if [ -n "$(kafka_pid)" ]; then
    printf '=== %s: stopping Kafka\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$LOG_FILE"
  fi
  stop_pid kafka "$STOP_TIMEOUT" kafka.Kafka
}

status() {
  if [ -n "${CASEREVIEW_KAFKA_BOOTSTRAP:-}" ]; then
    local target
    target=$(external_bootstrap)
    if ready "$target"; then
      echo "kafka: external broker at $target, ready"
      return 0
    fi
    echo "kafka: external broker at $target, not ready"
    return 1
  fi
  local pid
  pid=$(kafka_pid)
  if [ -z "$pid" ]; then
    echo "kafka: stopped"
    return 3
  fi
  if ready "$HOST:$PORT"; then
    echo "kafka: running (pid $pid) on $HOST:$PORT, ready"
    return 0
  fi
  echo "kafka: running but not ready (pid $pid)"
  return 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
