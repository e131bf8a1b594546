#!/usr/bin/env bash
# Runs a native MongoDB wire-protocol server on 127.0.0.1: mongod when it is on PATH, otherwise
# FerretDB v1.24.2 with its SQLite backend, built from the Go module in this folder (main.go).
# Usage: ferretdb.sh up|down|status   (status exits 0 running and ready, 3 stopped, 1 otherwise)
# Settings (environment):
#   CASEREVIEW_MONGO_PORT               port (default 27017)
#   CASEREVIEW_FERRETDB_READY_TIMEOUT   seconds `up` waits for readiness (default 60)
#   CASEREVIEW_FERRETDB_STOP_TIMEOUT    seconds `down` waits before SIGKILL (default 30)
#   CASEREVIEW_FERRETDB_LOG_LEVEL       debug, info, warn or error (default info)
#   CASEREVIEW_MONGO_URL                URL of an external store; up/down then do nothing
# Data: .local/ferretdb/data (FerretDB) or .local/mongod (mongod); binary: bin/ferretdb (git-ignored).

SERVICE_NAME=ferretdb
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
FERRETDB_VERSION=$(sed -n 's:^require github.com/FerretDB/FerretDB \(v[^ ]*\)$:\1:p' "$HERE/go.mod")
[ -n "$FERRETDB_VERSION" ] || die "no FerretDB requirement in $HERE/go.mod"

HOST=127.0.0.1
PORT=${CASEREVIEW_MONGO_PORT:-27017}
READY_TIMEOUT=${CASEREVIEW_FERRETDB_READY_TIMEOUT:-60}
STOP_TIMEOUT=${CASEREVIEW_FERRETDB_STOP_TIMEOUT:-30}
LOG_LEVEL=${CASEREVIEW_FERRETDB_LOG_LEVEL:-info}
BUILD_TIMEOUT=600 # only bounds how long a concurrent up/down waits for the lock

BIN=$HERE/bin/ferretdb
DATA_DIR=$LOCAL_DIR/ferretdb/data
MONGOD_DIR=$LOCAL_DIR/mongod
LOG_FILE=$LOG_DIR/ferretdb.log
LOG_MAX_BYTES=$((20 * 1024 * 1024))

ready() { python3 "$HERE/ready.py" "$1" "$2"; }

# Our server only: alive, not a zombie, and its command line is our FerretDB binary or mongod
# (a recycled pid belongs to someone else; running_pid in lib.sh drops such a pid file).
server_pid() {
  local pid
  pid=$(running_pid ferretdb)
  [ -n "$pid" ] || return 0
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -e "$BIN" -e mongod; then
    printf '%s' "$pid"
  else
    rm -f "$(pid_file ferretdb)"
  fi
}

# Serializes concurrent up/down calls (where flock(1) exists); the server must not inherit fd 9.
lock() {
  command -v flock >/dev/null || return 0
  exec 9>"$RUN_DIR/ferretdb.lock"
  flock -w "$((BUILD_TIMEOUT + READY_TIMEOUT + STOP_TIMEOUT))" 9 ||
    die "another ferretdb.sh up/down is still running"
}

rotate_log() {
  if [ -f "$LOG_FILE" ] && [ "$(wc -c <"$LOG_FILE")" -gt "$LOG_MAX_BYTES" ]; then
    mv -f "$LOG_FILE" "$LOG_FILE.1"
  fi
}

# Builds the wrapper when the binary is missing or older than its sources.
build() {
  local f stale=""
  [ -x "$BIN" ] || stale=missing
  for f in "$HERE"/*.go "$HERE/go.mod" "$HERE/go.sum"; do
    if [ "$f" -nt "$BIN" ]; then stale=${stale:-outdated}; fi
  done
  [ -n "$stale" ] || return 0
  command -v go >/dev/null || die "Go is needed to build FerretDB (https://go.dev/dl/), or put mongod on PATH"
  if [ "$stale" = missing ]; then
    say "building FerretDB $FERRETDB_VERSION from the Go module proxy (first run only)…"
  else
    say "rebuilding FerretDB $FERRETDB_VERSION (sources changed)…"
  fi
  local started=$SECONDS tmp=$BIN.tmp.$$
  mkdir -p "$HERE/bin"
  # Pure Go (modernc.org/sqlite), so no C toolchain; the PostgreSQL handler is left out.
  if ! (cd "$HERE" && CGO_ENABLED=0 go build -trimpath -buildvcs=false \
    -tags ferretdb_no_postgresql -o "$tmp" .); then
    rm -f "$tmp"
    die "building FerretDB failed (see the go output above)"
  fi
  mv -f "$tmp" "$BIN"
  say "built $BIN in $((SECONDS - started))s"
}

up() {
  if [ -n "${CASEREVIEW_MONGO_URL:-}" ]; then
    say "CASEREVIEW_MONGO_URL is set: using that external store; not starting one"
    return 0
  fi
  command -v python3 >/dev/null || die "python3 is needed for the readiness check"
  lock
  local pid started=$SECONDS
  pid=$(server_pid)
  if [ -n "$pid" ]; then
    if ready "$HOST" "$PORT"; then
      say "already running (pid $pid) on $HOST:$PORT, ready"
      return 0
    fi
    say "already running (pid $pid) but not ready yet; waiting up to ${READY_TIMEOUT}s"
    wait_ready ferretdb "$pid" "$READY_TIMEOUT" ready "$HOST" "$PORT"
    say "ready on $HOST:$PORT (pid $pid)"
    return 0
  fi
  require_free_port "$HOST" "$PORT"

  local -a cmd
  if command -v mongod >/dev/null; then
    mkdir -p "$MONGOD_DIR"
    cmd=(mongod --dbpath "$MONGOD_DIR" --bind_ip "$HOST" --port "$PORT")
  else
    build
    mkdir -p "$DATA_DIR"
    cmd=("$BIN" -listen-addr "$HOST:$PORT" -sqlite-dir "$DATA_DIR" -log-level "$LOG_LEVEL")
  fi

  rotate_log
  say "starting ${cmd[0]##*/} on $HOST:$PORT; log: $LOG_FILE"
  printf '=== %s: starting %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${cmd[*]}" >>"$LOG_FILE"
  # setsid: its own session, so a Ctrl-C aimed at whatever ran `up` does not reach the server.
  nohup setsid "${cmd[@]}" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
  pid=$!
  printf '%s\n' "$pid" >"$(pid_file ferretdb)"
  wait_ready ferretdb "$pid" "$READY_TIMEOUT" ready "$HOST" "$PORT"
  say "ready on $HOST:$PORT (pid $pid) after $((SECONDS - started))s"
}

down() {
  if [ -n "${CASEREVIEW_MONGO_URL:-}" ]; then
    say "CASEREVIEW_MONGO_URL is set: the external store is not ours to stop"
    return 0
  fi
  lock
  local pid
  pid=$(server_pid)
  if [ -n "$pid" ]; then
    printf '=== %s: stopping (pid %s)\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$pid" >>"$LOG_FILE"
  fi
  stop_pid ferretdb "$STOP_TIMEOUT"
  # stop_pid returns right after a SIGKILL; give the process a moment to be gone (or a zombie).
  local deadline=$((SECONDS + 5))
  while [ -n "$pid" ] && [ "$SECONDS" -lt "$deadline" ] && kill -0 "$pid" 2>/dev/null &&
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
    sleep 0.1
  done
}

# host:port of a mongodb:// URL's first host (credentials and options dropped), or nothing.
external_address() {
  local rest=${CASEREVIEW_MONGO_URL#mongodb://}
  [ "$rest" != "$CASEREVIEW_MONGO_URL" ] || return 0
  rest=${rest%%/*}
  rest=${rest%%\?*}
  rest=${rest##*@}
  rest=${rest%%,*}
  case $rest in
    \[*\]:*) printf '%s' "$rest" ;; # [ipv6]:port
    \[*\]) printf '%s:27017' "$rest" ;;
    *:*) printf '%s' "$rest" ;;
    *) printf '%s:27017' "$rest" ;;
  esac
}

status() {
  if [ -n "${CASEREVIEW_MONGO_URL:-}" ]; then
    local address
    address=$(external_address)
    if [ -z "$address" ] || [[ $CASEREVIEW_MONGO_URL =~ [?\&](tls|ssl)=true ]]; then
      echo "ferretdb: external store (CASEREVIEW_MONGO_URL), not checked"
      exit 0
    fi
    local host=${address%:*} port=${address##*:}
    host=${host#[}
    host=${host%]}
    if ready "$host" "$port"; then
      echo "ferretdb: external store at $address, ready"
      exit 0
    fi
    echo "ferretdb: external store at $address, not ready"
    exit 1
  fi
  local pid
  pid=$(server_pid)
  if [ -z "$pid" ]; then
    echo "ferretdb: stopped"
    if port_open "$HOST" "$PORT"; then say "note: $HOST:$PORT is held by another process"; fi
    exit 3
  fi
  if ready "$HOST" "$PORT"; then
    echo "ferretdb: running (pid $pid) on $HOST:$PORT, ready"
    exit 0
  fi
  echo "ferretdb: running (pid $pid) on $HOST:$PORT, but not ready"
  exit 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
