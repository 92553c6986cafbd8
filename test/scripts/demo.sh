#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL cluster with ecp preloaded, the
# Elasticsearch stand-in, and a look at what runs.  Everything it starts is
# stopped when it ends, also on failure or Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"

bash test/scripts/install-deps.sh
. "$here/common.sh"

echo "== building and installing ecp"
make -s all
if [ "$(id -u)" = 0 ]; then make -s install; else make -s install || {
	echo "make install needs to write to $(pg_config --pkglibdir): run as root" >&2; exit 1; }; fi

work=$(mktemp -d /tmp/ecp-demo.XXXXXX)
chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown "$ECP_TEST_USER" "$work"
pgdata="$work/pgdata"
esd_pid=""

cleanup() {
	set +e
	[ -n "$esd_pid" ] && kill "$esd_pid" 2>/dev/null && wait "$esd_pid" 2>/dev/null
	[ -f "$pgdata/postmaster.pid" ] && as_test_user pg_ctl -D "$pgdata" -m fast -w stop >/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free port for PostgreSQL: ask the kernel for one.
pg_port=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1",LocalPort=>0)->sockport')

echo "== starting a throwaway cluster in $pgdata (port $pg_port)"
as_test_user initdb -D "$pgdata" -A trust -E UTF8 --locale=C >"$work/initdb.log"
cat >>"$pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
shared_preload_libraries = 'ecp'
CONF
as_test_user pg_ctl -D "$pgdata" -l "$work/postgres.log" -w start >/dev/null
psql_demo() { as_test_user psql -X -q -h "$work" -p "$pg_port" -d postgres -v ON_ERROR_STOP=1 "$@"; }

echo "== starting the Elasticsearch stand-in"
./test/esd/esd --port 0 --port-file "$work/esd.port" >"$work/esd.log" 2>&1 &
esd_pid=$!
for _ in $(seq 1 100); do [ -s "$work/esd.port" ] && break; sleep 0.1; done
es_url="http://127.0.0.1:$(cat "$work/esd.port")"
curl -fsS "$es_url/" | head -c 400; echo

echo "== ecp in the cluster"
psql_demo <<'SQL'
CREATE EXTENSION ecp;
DO $$
BEGIN
  FOR i IN 1..100 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM ecp.launcher WHERE database IS NOT NULL);
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
\pset footer off
SELECT ecp.version() AS version, ecp.launcher_pid() AS launcher_pid;
SELECT * FROM ecp.launcher;
SQL
echo "== launcher log"
grep -E 'ecp launcher' "$work/postgres.log" || true
echo "== demo done; stopping everything"
