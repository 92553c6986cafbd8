#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL cluster with ecp preloaded, the
# Elasticsearch stand-in, and a look at what runs.  Everything it starts is
# stopped when it ends, also on failure or Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"

bash test/scripts/install-deps.sh
echo "== building and installing ecp, building the stand-in"
make -s all
make -s esd
if [ "$(id -u)" = 0 ]; then make -s install; else make -s install || {
	echo "make install needs to write to $(pg_config --pkglibdir): run as root" >&2; exit 1; }; fi

. "$here/throwaway.sh"
throwaway_init demo
throwaway_start_pg
echo "== started a throwaway cluster in $pgdata (port $pg_port)"
throwaway_start_esd
echo "== started the Elasticsearch stand-in at $es_url"
curl -fsS "$es_url/" | head -c 300; echo

echo "== ecp in the cluster"
tpsql <<'SQL'
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
tpsql -v rows="$rows" -f "$here/sample_orders.sql"

echo "== one document, as ecp.preview shows it"
tpsql -At -c "SELECT jsonb_pretty(d) FROM ecp.preview('SELECT * FROM orders ORDER BY id', 1) d"

echo "== syncing into the stand-in ($es_url/orders)"
run=$(tpsql -At <<SQL
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
	line=$(tpsql -At -F ' | ' -c "SELECT state, processed || '/' || coalesce(total::text, '?'),
	         coalesce(percent::text, '?') || '%', coalesce(docs_per_second::text, '-') || ' docs/s',
	         'eta ' || coalesce(eta::text, '-'), 'elapsed ' || date_trunc('second', duration)::text
	    FROM ecp.progress WHERE run_id = $run")
	echo "  $line"
	case $line in succeeded*|failed*|cancelled*) break ;; esac
	[ $SECONDS -lt $deadline ] || { echo "demo: the run did not finish in time" >&2; exit 1; }
	sleep 1
done

echo "== the result"
tpsql <<SQL
\pset footer off
SELECT run_id, task, state, processed, failed, total, duration, operator, last_error
  FROM ecp.progress WHERE run_id = $run;
SELECT at::time(0) AS at, action, operator, content FROM ecp.flow WHERE run_id = $run ORDER BY at;
SQL
curl -fsS -X POST "$es_url/orders/_refresh" >/dev/null
echo "documents in the index: $(curl -fsS "$es_url/orders/_count" | sed 's/.*"count":\([0-9]*\).*/\1/')"
echo "GET $es_url/orders/_doc/42:"
curl -fsS "$es_url/orders/_doc/42"; echo
state=$(tpsql -At -c "SELECT state FROM ecp.progress WHERE run_id = $run")
echo "== demo done ($state); stopping everything"
[ "$state" = succeeded ]
