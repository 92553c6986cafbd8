#!/usr/bin/env bash
# Throwaway MariaDB server for ecp's tests.
#
#   mariadb.sh start DIR   start (or find running) server for DIR, print env
#   mariadb.sh stop DIR    stop it; never leaves a server behind
#   mariadb.sh env DIR     print DIR/env of a running server
#
# Everything lives under DIR: data/ (created by mariadb-install-db if absent),
# mysqld.sock, mysqld.pid, mysqld.log, tmp/, env.  Option files are never read
# (--no-defaults), the system service and /var/lib/mysql are never touched.
#
# Runs as the current user.  Started as root it re-runs itself as the owner of
# DIR (or of DIR's parent if DIR does not exist yet) and refuses if that owner
# is root, because mariadbd must not run as root.
#
# DIR/env holds shell-sourceable lines:
#   ECP_MYSQL_HOST ECP_MYSQL_PORT ECP_MYSQL_SOCKET ECP_MYSQL_USER
#   ECP_MYSQL_PASSWORD ECP_MYSQL_DB
# Use:  eval "$(mariadb.sh start DIR)"   or   . DIR/env after start.
#
# Tunables (environment): ECP_MYSQL_START_TIMEOUT (s, default 60),
# ECP_MYSQL_STOP_TIMEOUT (s, default 60), ECP_MYSQL_PORT_BASE (default 33060),
# ECP_MYSQL_PORT_TRIES (default 50).

set -u
set -o pipefail

MARIADBD=${MARIADBD:-/usr/sbin/mariadbd}
INSTALL_DB=${MARIADB_INSTALL_DB:-mariadb-install-db}
CLIENT=${MARIADB_CLIENT:-mariadb}
ADMIN=${MARIADB_ADMIN:-mariadb-admin}

START_TIMEOUT=${ECP_MYSQL_START_TIMEOUT:-60}
STOP_TIMEOUT=${ECP_MYSQL_STOP_TIMEOUT:-60}
PORT_BASE=${ECP_MYSQL_PORT_BASE:-33060}
PORT_TRIES=${ECP_MYSQL_PORT_TRIES:-50}

ECP_USER=ecp
ECP_PASSWORD=ecp
ECP_DB=ecp_test

die() { echo "mariadb.sh: $*" >&2; exit 1; }

usage() { echo "usage: $0 start|stop|env DIR" >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd=$1
case $2 in
  /*) dir=$2 ;;
  *)  dir=$PWD/$2 ;;
esac
dir=${dir%/}

# --- running as root: hand over to the owner of DIR ------------------------
if [ "$(id -u)" -eq 0 ]; then
  probe=$dir
  [ -e "$probe" ] || probe=$(dirname "$dir")
  owner=$(stat -c %U "$probe") || die "cannot stat $probe"
  if [ "$owner" = root ]; then
    die "refusing to run MariaDB as root: make $probe owned by an unprivileged user (e.g. chown postgres $probe)"
  fi
  self=$(readlink -f "$0")
  exec runuser -u "$owner" -- env \
    ECP_MYSQL_START_TIMEOUT="$START_TIMEOUT" ECP_MYSQL_STOP_TIMEOUT="$STOP_TIMEOUT" \
    ECP_MYSQL_PORT_BASE="$PORT_BASE" ECP_MYSQL_PORT_TRIES="$PORT_TRIES" \
    PATH="$PATH" bash "$self" "$cmd" "$dir"
fi

datadir=$dir/data
sock=$dir/mysqld.sock
pidfile=$dir/mysqld.pid
log=$dir/mysqld.log
envfile=$dir/env
tmpdir=$dir/tmp

# unix socket paths are limited to 107 bytes
[ ${#sock} -lt 100 ] || die "socket path too long (${#sock} bytes): $sock; use a shorter DIR"

# --- helpers ----------------------------------------------------------------
# root@localhost over the socket, no option files, no password
sql() { "$CLIENT" --no-defaults --protocol=socket --socket="$sock" -uroot \
          --batch --skip-column-names "$@"; }

# alive and not a zombie (a server that died during start is our child)
alive() {
  local st
  st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# is pid $1 a mariadbd serving our datadir?
ours() {
  alive "$1" || return 1
  tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "--datadir=$datadir"
}

# pid of the server for DIR: from the pid file, else by scanning /proc
# (the pid file is missing early in startup or after a crash)
server_pid() {
  local p
  if [ -s "$pidfile" ]; then
    p=$(cat "$pidfile" 2>/dev/null)
    case $p in ''|*[!0-9]*) ;; *) if ours "$p"; then echo "$p"; return 0; fi ;; esac
  fi
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    if ours "$p"; then echo "$p"; return 0; fi
  done
  return 1
}

answers() { [ "$(sql -e 'SELECT 1' 2>/dev/null)" = 1 ]; }

print_log_tail() {
  if [ -f "$log" ]; then
    echo "---- last lines of $log ----" >&2
    tail -n 40 "$log" >&2
    echo "---- end of $log ----" >&2
  fi
}

# true if nothing listens on 127.0.0.1:$1 and we can bind it
port_free() {
  perl -MSocket -e '
    socket(my $s, PF_INET, SOCK_STREAM, 0) or exit 1;
    setsockopt($s, SOL_SOCKET, SO_REUSEADDR, 1);
    bind($s, sockaddr_in($ARGV[0], inet_aton("127.0.0.1"))) or exit 1;
    exit 0;' "$1"
}

write_env() {
  local port=$1
  local tmp=$envfile.tmp.$$
  {
    echo "ECP_MYSQL_HOST=127.0.0.1"
    echo "ECP_MYSQL_PORT=$port"
    echo "ECP_MYSQL_SOCKET=$sock"
    echo "ECP_MYSQL_USER=$ECP_USER"
    echo "ECP_MYSQL_PASSWORD=$ECP_PASSWORD"
    echo "ECP_MYSQL_DB=$ECP_DB"
    echo "export ECP_MYSQL_HOST ECP_MYSQL_PORT ECP_MYSQL_SOCKET ECP_MYSQL_USER ECP_MYSQL_PASSWORD ECP_MYSQL_DB"
  } > "$tmp" && mv -f "$tmp" "$envfile"
}

# wait until pid $1 is gone, at most $2 seconds; 0 if gone
wait_gone() {
  local p=$1 limit=$2 i=0
  while alive "$p"; do
    [ "$i" -ge $((limit * 10)) ] && return 1
    sleep 0.1
    i=$((i + 1))
  done
  return 0
}

do_stop() {
  local p
  if ! p=$(server_pid); then
    rm -f "$pidfile" "$envfile"
    return 0
  fi
  "$ADMIN" --no-defaults --protocol=socket --socket="$sock" -uroot \
    --shutdown-timeout="$STOP_TIMEOUT" shutdown >/dev/null 2>&1 || true
  if ! wait_gone "$p" "$STOP_TIMEOUT"; then
    echo "mariadb.sh: shutdown did not stop pid $p, sending SIGTERM" >&2
    kill -TERM "$p" 2>/dev/null || true
    if ! wait_gone "$p" "$STOP_TIMEOUT"; then
      echo "mariadb.sh: SIGTERM did not stop pid $p, sending SIGKILL" >&2
      kill -KILL "$p" 2>/dev/null || true
      wait_gone "$p" 10 || die "pid $p survives SIGKILL"
    fi
  fi
  rm -f "$pidfile" "$envfile"
  return 0
}

# kill whatever this start attempt left behind, identified by pid $1
abort_start() {
  local p=${1:-}
  if [ -n "$p" ] && alive "$p"; then
    kill -TERM "$p" 2>/dev/null || true
    if ! wait_gone "$p" "$STOP_TIMEOUT"; then
      kill -KILL "$p" 2>/dev/null || true
      wait_gone "$p" 10 || true
    fi
  fi
  [ -n "$p" ] && wait "$p" 2>/dev/null
  rm -f "$pidfile"
}

do_start() {
  local p port
  mkdir -p "$dir" "$tmpdir" || die "cannot create $dir"

  # already running for DIR?
  if p=$(server_pid) && answers; then
    port=$(sql -e 'SELECT @@port') || die "cannot read port of running server"
    write_env "$port"
    cat "$envfile"
    return 0
  fi
  if p=$(server_pid); then
    # a process exists but does not answer: stop it, then start afresh
    echo "mariadb.sh: server pid $p for $dir does not answer, restarting" >&2
    do_stop
  fi
  rm -f "$pidfile" "$envfile" "$sock" "$sock.lock"

  if [ ! -d "$datadir/mysql" ]; then
    rm -rf "$datadir"
    if ! "$INSTALL_DB" --no-defaults --datadir="$datadir" \
          --auth-root-authentication-method=normal --skip-test-db \
          --skip-name-resolve --tmpdir="$tmpdir" \
          > "$dir/install.log" 2>&1; then
      echo "mariadb.sh: mariadb-install-db failed:" >&2
      tail -n 40 "$dir/install.log" >&2
      exit 1
    fi
  fi

  local attempt=0 cand started=0
  cand=$(( PORT_BASE + ($$ % 1000) ))
  while [ "$attempt" -lt "$PORT_TRIES" ]; do
    attempt=$((attempt + 1))
    cand=$(( cand + 1 ))
    [ "$cand" -gt 65000 ] && cand=$PORT_BASE
    port_free "$cand" || continue
    port=$cand

    : > "$log"
    # setsid: own session, so the server survives this shell and its job
    # control and never becomes a zombie child of a long-lived caller.
    setsid "$MARIADBD" --no-defaults \
      --datadir="$datadir" \
      --socket="$sock" \
      --pid-file="$pidfile" \
      --log-error="$log" \
      --tmpdir="$tmpdir" \
      --bind-address=127.0.0.1 \
      --port="$port" \
      --skip-name-resolve \
      --skip-log-bin \
      --performance-schema=OFF \
      --innodb-buffer-pool-size=64M \
      --innodb-log-file-size=16M \
      --innodb-log-buffer-size=2M \
      --innodb-flush-log-at-trx-commit=2 \
      --innodb-doublewrite=0 \
      --key-buffer-size=1M \
      --aria-pagecache-buffer-size=8M \
      --query-cache-size=0 \
      --max-connections=100 \
      --character-set-server=utf8mb4 \
      --collation-server=utf8mb4_general_ci \
      --default-time-zone=+00:00 \
      < /dev/null > /dev/null 2>&1 &
    local spid=$!

    # poll until it answers, dies, or times out
    local i=0 up=0
    while [ "$i" -lt $((START_TIMEOUT * 10)) ]; do
      if ! alive "$spid"; then
        break
      fi
      if [ -S "$sock" ] && answers; then
        up=1
        break
      fi
      sleep 0.1
      i=$((i + 1))
    done

    if [ "$up" -eq 1 ]; then
      started=1
      break
    fi
    if alive "$spid"; then
      echo "mariadb.sh: server did not answer within ${START_TIMEOUT}s" >&2
      print_log_tail
      abort_start "$spid"
      exit 1
    fi
    # died: retry on another port only if the port was taken under our feet
    if grep -qiE 'bind on tcp/ip port|address already in use' "$log"; then
      echo "mariadb.sh: port $port taken, retrying" >&2
      wait "$spid" 2>/dev/null
      continue
    fi
    echo "mariadb.sh: server exited during startup" >&2
    print_log_tail
    abort_start "$spid"
    exit 1
  done
  [ "$started" -eq 1 ] || die "no free port found in $PORT_TRIES tries from $PORT_BASE"

  if ! sql <<EOF
CREATE USER IF NOT EXISTS '$ECP_USER'@'127.0.0.1' IDENTIFIED BY '$ECP_PASSWORD';
CREATE USER IF NOT EXISTS '$ECP_USER'@'localhost' IDENTIFIED BY '$ECP_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$ECP_USER'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$ECP_USER'@'localhost' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS \`$ECP_DB\` CHARACTER SET utf8mb4;
FLUSH PRIVILEGES;
EOF
  then
    echo "mariadb.sh: creating user/database failed" >&2
    print_log_tail
    do_stop
    exit 1
  fi

  write_env "$port"
  cat "$envfile"
}

case $cmd in
  start) do_start ;;
  stop)  do_stop ;;
  env)
    server_pid >/dev/null && [ -s "$envfile" ] || die "no server running for $dir"
    cat "$envfile" ;;
  *) usage ;;
esac
