# Shared shell helpers for the native infrastructure scripts (sourced, not run).
# Layout: everything a server writes lives under $CASEREVIEW_LOCAL (default <repo>/.local):
#   run/<name>.pid   pid of the running server
#   logs/<name>.log  its console output
#   <name>/          its data

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR=${CASEREVIEW_LOCAL:-$REPO_ROOT/.local}
RUN_DIR=$LOCAL_DIR/run
LOG_DIR=$LOCAL_DIR/logs
mkdir -p "$RUN_DIR" "$LOG_DIR"

say() { printf '[%s] %s\n' "${SERVICE_NAME:-infra}" "$*" >&2; }
die() { say "error: $*"; exit 1; }

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# Prints the pid of a running server, or nothing; removes a stale pid file as it goes.
# A pid counts only while its process is alive, not a zombie (after kill -9 the reaper may take
# a moment, and kill -0 succeeds on a zombie), and, given a pattern, its command line has it
# (a recycled pid belongs to someone else).
running_pid() {
  local file pid state cmdline
  file=$(pid_file "$1")
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [ "$state" != Z ] && { [ -z "${2:-}" ] || [[ $cmdline == *"$2"* ]]; }; then
      printf '%s' "$pid"
      return 0
    fi
  fi
  rm -f "$file"
}

# True when something accepts TCP connections on host:port.
port_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Refuses to start when a port we need is held by a process that is not ours.
# A few seconds' grace: a server of ours that was just killed can hold its port until the
# last of its threads is gone.
require_free_port() {
  local host=$1 port=$2 deadline=$((SECONDS + 3))
  while port_open "$host" "$port"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "port $host:$port is already in use by another process; stop it, or point the project at that server with settings (CASEREVIEW_KAFKA_BOOTSTRAP / CASEREVIEW_MONGO_URL)"
    fi
    sleep 0.2
  done
}

# Runs a readiness command until it succeeds, the process dies, or the bound passes.
wait_ready() {
  local name=$1 pid=$2 seconds=$3; shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited during start-up; last lines of $LOG_DIR/$name.log:"
      tail -n 30 "$LOG_DIR/$name.log" >&2 || true
      rm -f "$(pid_file "$name")"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$name not ready after ${seconds}s; last lines of $LOG_DIR/$name.log:"
      tail -n 30 "$LOG_DIR/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

# Sends SIGTERM, waits up to a bound, then SIGKILL; removes the pid file. Args: name, seconds,
# and the optional command-line pattern of running_pid.
stop_pid() {
  local name=$1 seconds=${2:-30} pid
  pid=$(running_pid "$name" "${3:-}")
  if [ -z "$pid" ]; then
    say "$name is not running"
    return 0
  fi
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + seconds))
  while kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$name did not stop within ${seconds}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$(pid_file "$name")"
}
