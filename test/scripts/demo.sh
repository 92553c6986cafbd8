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
SQL

rows=${ECP_DEMO_ROWS:-1000000}
echo "== creating $rows sample orders (10 columns: numeric, timestamptz, text, jsonb, NULLs)"
psql_demo <<SQL
CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer    text NOT NULL,
    status      text NOT NULL,
    amount      numeric(12,2) NOT NULL,
    currency    char(3) NOT NULL,
    items       integer NOT NULL,
    created_at  timestamptz NOT NULL,
    shipped_at  timestamptz,
    note        text,
    attributes  jsonb NOT NULL
);
INSERT INTO orders
SELECT g,
       'customer-' || (g % 50000),
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'returned'])[1 + g % 5],
       round((g % 100000) / 7.0, 2),
       (ARRAY['EUR', 'USD', 'GBP'])[1 + g % 3],
       1 + g % 9,
       timestamptz '2025-01-01 00:00:00+00' + g * interval '17 seconds',
       CASE WHEN g % 5 >= 2 THEN timestamptz '2025-01-02 00:00:00+00' + g * interval '17 seconds' END,
       CASE WHEN g % 10 = 0 THEN 'gift: "wrap it", ' || chr(10) || 'thanks ✓' END,
       jsonb_build_object('channel', (ARRAY['web', 'app', 'store'])[1 + g % 3],
                          'coupon', CASE WHEN g % 4 = 0 THEN 'SPRING' || g % 100 END,
                          'lines', jsonb_build_array(g % 13, g % 17))
  FROM generate_series(1, $rows) g;
ANALYZE orders;
SQL

echo "== one document, as ecp.preview shows it"
psql_demo -At -c "SELECT jsonb_pretty(d) FROM ecp.preview('SELECT * FROM orders ORDER BY id', 1) d"

echo "== syncing into the stand-in ($es_url/orders)"
run=$(psql_demo -At <<SQL
SELECT ecp.create_consumer('demo-es', '$es_url');
SELECT ecp.create_task('orders', 'demo-es', 'orders', query => 'SELECT * FROM orders',
                       options => '{"batch_size": 5000}');
SELECT ecp.start('orders');
SQL
)
run=$(echo "$run" | tail -n 1)
echo "run $run started; progress every second from ecp.progress:"
deadline=$((SECONDS + ${ECP_DEMO_TIMEOUT:-900}))
while :; do
	line=$(psql_demo -At -F ' | ' -c "SELECT state, processed || '/' || coalesce(total::text, '?'),
	         coalesce(percent::text, '?') || '%', coalesce(docs_per_second::text, '-') || ' docs/s',
	         'eta ' || coalesce(eta::text, '-'), 'elapsed ' || date_trunc('second', duration)::text
	    FROM ecp.progress WHERE run_id = $run")
	echo "  $line"
	case $line in succeeded*|failed*|cancelled*) break ;; esac
	[ $SECONDS -lt $deadline ] || { echo "demo: the run did not finish in time" >&2; exit 1; }
	sleep 1
done

echo "== the result"
psql_demo <<SQL
\pset footer off
SELECT run_id, task, state, processed, failed, total, duration, operator, last_error
  FROM ecp.progress WHERE run_id = $run;
SELECT at::time(0) AS at, action, operator, content FROM ecp.flow WHERE run_id = $run ORDER BY at;
SQL
curl -fsS -X POST "$es_url/orders/_refresh" >/dev/null
echo "documents in the index: $(curl -fsS "$es_url/orders/_count" | sed 's/.*"count":\([0-9]*\).*/\1/')"
echo "GET $es_url/orders/_doc/42:"
curl -fsS "$es_url/orders/_doc/42"; echo
state=$(psql_demo -At -c "SELECT state FROM ecp.progress WHERE run_id = $run")
echo "== demo done ($state); stopping everything"
[ "$state" = succeeded ]
