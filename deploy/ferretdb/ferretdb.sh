#!/usr/bin/env bash
# Runs a native MongoDB wire-protocol server on 127.0.0.1: mongod when it is on PATH, otherwise
# FerretDB v1.24.2, built from the Go module in this folder (main.go), with its SQLite backend
# or on a private PostgreSQL cluster this script runs as well (CASEREVIEW_FERRETDB_BACKEND).
# Usage: ferretdb.sh up|down|status|forget   (status exits 0 running and ready, 3 stopped, 1
# otherwise; forget stops it and deletes a PostgreSQL cluster kept outside the data folder)
# Settings (environment):
#   CASEREVIEW_MONGO_PORT               port (default 27017)
#   CASEREVIEW_FERRETDB_BACKEND         sqlite or postgresql (default postgresql where PostgreSQL
#                                       is installed, else sqlite)
#   CASEREVIEW_FERRETDB_SERIALIZE       the front end of serialize.go: true (one command at a time),
#                                       writes (writes one at a time, reads concurrently),
#                                       collections (writes to one collection one at a time, the
#                                       rest concurrently) or false (none: single-document writes
#                                       are then not atomic); default true on sqlite,
#                                       collections on postgresql
#   CASEREVIEW_PG_BIN                   PostgreSQL's bin folder (default: pg_config --bindir, else
#                                       the newest /usr/lib/postgresql/*/bin)
#   CASEREVIEW_PG_USER                  when run as root, the user PostgreSQL runs as (default postgres)
#   CASEREVIEW_FERRETDB_READY_TIMEOUT   seconds `up` waits for readiness (default 60)
#   CASEREVIEW_FERRETDB_STOP_TIMEOUT    seconds `down` waits before SIGKILL (default 30)
#   CASEREVIEW_FERRETDB_LOG_LEVEL       debug, info, warn or error (default info)
#   CASEREVIEW_FERRETDB_PPROF_ADDR      loopback host:port serving FerretDB's Go profiles at
#                                       /debug/pprof/ (default: none)
#   CASEREVIEW_MONGO_URL                URL of an external store; up/down then do nothing
# Data: .local/ferretdb/data (FerretDB on SQLite), .local/ferretdb-pg (FerretDB on PostgreSQL: the
# cluster in data/, its socket in run/; it listens on no TCP port) or .local/mongod (mongod);
# binary: bin/ferretdb (git-ignored).

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
PPROF_ADDR=${CASEREVIEW_FERRETDB_PPROF_ADDR:-}
# PostgreSQL where it is installed (every filter on _id or a field is then an index lookup,
# where SQLite reads the whole collection: docs/performance.md), else SQLite.
if [ -z "${CASEREVIEW_FERRETDB_BACKEND:-}" ]; then
  if command -v pg_config >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    BACKEND=postgresql
  else
    BACKEND=sqlite
  fi
else
  BACKEND=$CASEREVIEW_FERRETDB_BACKEND
fi
if [ "$BACKEND" = postgresql ]; then SERIALIZE=${CASEREVIEW_FERRETDB_SERIALIZE:-collections}; else SERIALIZE=${CASEREVIEW_FERRETDB_SERIALIZE:-true}; fi
case $BACKEND in sqlite | postgresql) ;; *) die "CASEREVIEW_FERRETDB_BACKEND must be sqlite or postgresql, not '$BACKEND'" ;; esac
case $SERIALIZE in
  true) SERIALIZE_FLAGS=(-serialize=true -serialize-reads=true) ;;
  writes) SERIALIZE_FLAGS=(-serialize=true -serialize-reads=false) ;;
  collections) SERIALIZE_FLAGS=(-serialize=true -serialize-reads=false -serialize-collections=true) ;;
  false) SERIALIZE_FLAGS=(-serialize=false) ;;
  *) die "CASEREVIEW_FERRETDB_SERIALIZE must be true, writes, collections or false, not '$SERIALIZE'" ;;
esac
BUILD_TIMEOUT=600 # only bounds how long a concurrent up/down waits for the lock
# FerretDB allocates for every document it decodes, and with Go's default GOGC=100 its
# collector took about a fifth of its CPU under the benchmark's load; at 400 it collects a
# quarter as often, letting its heap grow to five times what is live between collections:
# its peak RSS on the benchmark's 30,319-record load was 211 MiB against 111 (docs/performance.md).
FERRETDB_GOGC=${CASEREVIEW_FERRETDB_GOGC:-400}

BIN=$HERE/bin/ferretdb
DATA_DIR=$LOCAL_DIR/ferretdb/data
MONGOD_DIR=$LOCAL_DIR/mongod
LOG_FILE=$LOG_DIR/ferretdb.log
LOG_MAX_BYTES=$((20 * 1024 * 1024))

# The private PostgreSQL cluster (CASEREVIEW_FERRETDB_BACKEND=postgresql): unix socket only, in
# PG_SOCKET_DIR (the port only names the socket file there), trust authentication for the
# superuser ferretdb, which FerretDB connects as.
PG_DIR=$LOCAL_DIR/ferretdb-pg
# Run as root, the cluster belongs to another user (PostgreSQL refuses root), who may not be
# able to reach a checkout under a private home folder, and a socket path must be short: the
# cluster then lives in a folder of its own under /tmp, named after the data folder.
if [ "$(id -u)" = 0 ] && { [ "${#PG_DIR}" -gt 80 ] ||
  ! runuser -u "${CASEREVIEW_PG_USER:-postgres}" -- test -x "$LOCAL_DIR" 2>/dev/null; }; then
  PG_DIR=${TMPDIR:-/tmp}/casereview-pg-$(printf '%s' "$LOCAL_DIR" | sha1sum | cut -c1-12)
  PG_LOG_FILE=$PG_DIR/postgresql.log
fi
PG_DATA=$PG_DIR/data
PG_SOCKET_DIR=$PG_DIR/run
PG_PORT=5432
PG_ROLE=ferretdb
PG_DATABASE=ferretdb
PG_LOG_FILE=${PG_LOG_FILE:-$LOG_DIR/postgresql.log}
# FerretDB's pool: its default of 50 connections is shared by open read cursors and by every
# statement of an update command (each holds one until the command ends); too few, and a
# write waits for a connection forever. PostgreSQL is started with room for all of them.
PG_POOL=100
PG_URL="postgres://$PG_ROLE@/$PG_DATABASE?host=$PG_SOCKET_DIR&port=$PG_PORT&pool_max_conns=$PG_POOL"

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
#
# FerretDB is built from its module with the patches beside this script applied (*.patch,
# each against the module's root; see the patch for what and why): the module is copied out
# of Go's read-only module cache, patched, and named by a `replace` in a go.mod kept for the
# build only, so go.mod and go.sum here stay those of the released module.
build() {
  local f stale=""
  [ -x "$BIN" ] || stale=missing
  for f in "$HERE"/*.go "$HERE"/*.patch "$HERE/go.mod" "$HERE/go.sum"; do
    if [ "$f" -nt "$BIN" ]; then stale=${stale:-outdated}; fi
  done
  [ -n "$stale" ] || return 0
  command -v go >/dev/null || die "Go is needed to build FerretDB (https://go.dev/dl/), or put mongod on PATH"
  command -v patch >/dev/null || die "patch is needed to build FerretDB (Debian: apt-get install patch)"
  if [ "$stale" = missing ]; then
    say "building FerretDB $FERRETDB_VERSION from the Go module proxy (first run only)…"
  else
    say "rebuilding FerretDB $FERRETDB_VERSION (sources changed)…"
  fi
  local started=$SECONDS tmp=$BIN.tmp.$$ work
  mkdir -p "$HERE/bin"
  work=$(mktemp -d "$HERE/bin/build.XXXXXX")
  # Pure Go (modernc.org/sqlite, jackc/pgx), so no C toolchain.
  # Every step ends the subshell on failure: `set -e` does not apply inside `if ! ( … )`.
  if ! (
    cd "$HERE" || exit 1
    module=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$module" ] || exit 1
    cp -R "$module" "$work/ferretdb" && chmod -R u+w "$work/ferretdb" || exit 1
    for f in "$HERE"/*.patch; do
      [ -e "$f" ] || continue
      patch --quiet --forward -p1 -d "$work/ferretdb" <"$f" || exit 1
    done
    # The patches' own tests, with FerretDB's tests of the package they change, on every
    # build: a patch that no longer holds on this module stops the build. (FerretDB's test
    # helpers find the module's root by git.)
    if command -v git >/dev/null; then
      (cd "$work/ferretdb" && git init -q && go test -count=1 ./internal/handler/sjson/ >&2) || exit 1
    else
      say "git is not installed: the FerretDB patches' tests were skipped"
    fi
    cp go.mod "$work/build.mod" && cp go.sum "$work/build.sum" || exit 1
    printf '\nreplace github.com/FerretDB/FerretDB => %s\n' "$work/ferretdb" >>"$work/build.mod"
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -modfile="$work/build.mod" -o "$tmp" .
  ); then
    rm -rf "$tmp" "$work"
    die "building FerretDB failed (see the output above)"
  fi
  rm -rf "$work"
  mv -f "$tmp" "$BIN"
  say "built $BIN in $((SECONDS - started))s"
}

# PostgreSQL's bin folder: CASEREVIEW_PG_BIN, pg_config's, or the newest Debian-style one.
pg_bin() {
  local dir=${CASEREVIEW_PG_BIN:-}
  if [ -z "$dir" ] && command -v pg_config >/dev/null; then dir=$(pg_config --bindir); fi
  if [ -z "$dir" ] || [ ! -x "$dir/postgres" ]; then
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  fi
  if [ -z "$dir" ] || [ ! -x "$dir/postgres" ]; then
    die "PostgreSQL is needed for CASEREVIEW_FERRETDB_BACKEND=postgresql (initdb, pg_ctl, postgres); set CASEREVIEW_PG_BIN to its bin folder"
  fi
  printf '%s' "$dir"
}

# Runs a command as the cluster's owner: PostgreSQL refuses to run as root.
as_pg_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "${CASEREVIEW_PG_USER:-postgres}" -- "$@"
  else
    "$@"
  fi
}

pg_running() {
  [ -f "$PG_DATA/postmaster.pid" ] && as_pg_owner "$(pg_bin)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

# Creates (first run) and starts the private cluster and FerretDB's database in it.
pg_up() {
  local bin owner
  bin=$(pg_bin)
  # The socket's path must fit in sun_path (107 bytes).
  [ "${#PG_SOCKET_DIR}" -le 90 ] ||
    die "$PG_SOCKET_DIR is too long for a unix socket path; set CASEREVIEW_LOCAL to a shorter folder"
  mkdir -p "$PG_DIR"
  if [ "$(id -u)" = 0 ]; then
    owner=${CASEREVIEW_PG_USER:-postgres}
    id "$owner" >/dev/null 2>&1 ||
      die "user $owner does not exist; set CASEREVIEW_PG_USER to a non-root user to run PostgreSQL as"
    chown "$owner": "$PG_DIR"
    touch "$PG_LOG_FILE"
    chown "$owner": "$PG_LOG_FILE"
    as_pg_owner test -w "$PG_DIR" ||
      die "user $owner cannot reach $PG_DIR; set CASEREVIEW_LOCAL to a folder it can (e.g. under /tmp)"
  fi
  as_pg_owner mkdir -p -m 700 "$PG_SOCKET_DIR"
  # Where the cluster is, for whatever measures its processes (the benchmark): not always
  # under LOCAL_DIR (see PG_DIR).
  printf '%s\n' "$PG_DATA" >"$RUN_DIR/postgresql.data"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    say "creating a PostgreSQL cluster in $PG_DATA…"
    as_pg_owner "$bin/initdb" -D "$PG_DATA" -U "$PG_ROLE" --auth=trust -E UTF8 --locale=C.UTF-8 \
      >>"$PG_LOG_FILE" 2>&1 || die "initdb failed; see $PG_LOG_FILE"
    # A development store: no TCP listener; no wait for fsync at commit (a crash can lose the
    # last commits, not consistency).
    as_pg_owner tee -a "$PG_DATA/postgresql.conf" >/dev/null <<EOF
# casereview (deploy/ferretdb/ferretdb.sh)
listen_addresses = ''
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
synchronous_commit = off
EOF
  fi
  pg_running && return 0
  say "starting PostgreSQL ($PG_DATA); log: $PG_LOG_FILE"
  # setsid: its own session, like FerretDB's; -w: until it accepts connections.
  as_pg_owner setsid "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG_FILE" -w -t "$READY_TIMEOUT" \
    -o "-c max_connections=$((PG_POOL + 20))" start \
    >/dev/null 9>&- || {
    tail -n 30 "$PG_LOG_FILE" >&2
    die "PostgreSQL did not start"
  }
  if ! as_pg_owner "$bin/psql" -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U "$PG_ROLE" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'" | grep -q 1; then
    as_pg_owner "$bin/createdb" -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U "$PG_ROLE" "$PG_DATABASE" ||
      die "could not create the PostgreSQL database $PG_DATABASE"
  fi
  # Indexes FerretDB's pushed-down filters can use (see the file); idempotent.
  as_pg_owner "$bin/psql" -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U "$PG_ROLE" -d "$PG_DATABASE" -q \
    -v ON_ERROR_STOP=1 <"$HERE/pg-gin-indexes.sql" >/dev/null 2>>"$PG_LOG_FILE" ||
    die "could not apply $HERE/pg-gin-indexes.sql; see $PG_LOG_FILE"
}

# Stops the private cluster, if there is one and it runs.
pg_down() {
  [ -f "$PG_DATA/PG_VERSION" ] || return 0
  pg_running || return 0
  say "stopping PostgreSQL ($PG_DATA)"
  local bin
  bin=$(pg_bin)
  as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null ||
    as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null || true
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
    cmd=("$BIN" -listen-addr "$HOST:$PORT" -log-level "$LOG_LEVEL" "${SERIALIZE_FLAGS[@]}")
    if [ -n "$PPROF_ADDR" ]; then cmd+=(-pprof-addr "$PPROF_ADDR"); fi
    if [ "$BACKEND" = postgresql ]; then
      pg_up
      cmd+=(-handler postgresql -postgresql-url "$PG_URL")
    else
      mkdir -p "$DATA_DIR"
      cmd+=(-handler sqlite -sqlite-dir "$DATA_DIR")
    fi
  fi

  rotate_log
  say "starting ${cmd[0]##*/} on $HOST:$PORT; log: $LOG_FILE"
  printf '=== %s: starting %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${cmd[*]}" >>"$LOG_FILE"
  # setsid: its own session, so a Ctrl-C aimed at whatever ran `up` does not reach the server.
  GOGC=$FERRETDB_GOGC nohup setsid "${cmd[@]}" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
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
  # The cluster stops whatever the backend setting is now, so changing it leaves none running.
  pg_down
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
  local pid pg_down=""
  pid=$(server_pid)
  if [ -f "$PG_DATA/PG_VERSION" ]; then
    if pg_running; then
      echo "ferretdb: its PostgreSQL cluster ($PG_DATA) is running"
    elif [ "$BACKEND" = postgresql ]; then
      echo "ferretdb: its PostgreSQL cluster ($PG_DATA) is stopped"
      pg_down=1
    fi
  fi
  if [ -z "$pid" ]; then
    echo "ferretdb: stopped"
    if port_open "$HOST" "$PORT"; then say "note: $HOST:$PORT is held by another process"; fi
    exit 3
  fi
  if [ -z "$pg_down" ] && ready "$HOST" "$PORT"; then
    echo "ferretdb: running (pid $pid) on $HOST:$PORT, ready"
    exit 0
  fi
  echo "ferretdb: running (pid $pid) on $HOST:$PORT, but not ready"
  exit 1
}

# Stops the server and deletes a cluster kept under /tmp (see PG_DIR); what is under
# LOCAL_DIR is the caller's to delete (make clean removes the whole folder).
forget() {
  down
  case $PG_DIR in
    "$LOCAL_DIR"/*) ;;
    *)
      if [ -d "$PG_DIR" ] && pg_running; then
        say "$PG_DIR: its cluster still runs; not deleted"
      elif [ -d "$PG_DIR" ]; then
        say "deleting $PG_DIR"
        rm -rf "$PG_DIR"
      fi
      ;;
  esac
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  forget) forget ;;
  *)
    echo "usage: $0 up|down|status|forget" >&2
    exit 2
    ;;
esac
