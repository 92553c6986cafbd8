#!/usr/bin/env bash
# Benchmark: ecp syncing N sample orders into the stand-in in discard mode,
# against a baseline run in the same cluster and the same command:
#   COPY (SELECT id, to_jsonb(o)::text FROM orders o) TO '/dev/null'
# i.e. PostgreSQL serialising every row once with nothing sent anywhere.
# Usage: test/bench/sync_throughput.sh [rows] [batch_size]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
rows=${1:-1000000}
batch=${2:-5000}
. "$top/test/scripts/throwaway.sh"
make -s -C "$top" all >/dev/null

throwaway_init bench
throwaway_start_pg
throwaway_start_esd --discard
tpsql -c "CREATE EXTENSION ecp" >/dev/null
tpsql -v rows="$rows" -f "$top/test/scripts/sample_orders.sql" >/dev/null
tpsql -c "VACUUM ANALYZE orders" >/dev/null

ms_of() { # milliseconds psql's \timing reports for one statement
	tpsql -At -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1
}
# warm the cache, then the baseline
ms_of "COPY (SELECT id, to_jsonb(o)::text FROM orders o) TO '/dev/null'" >/dev/null
base_ms=$(ms_of "COPY (SELECT id, to_jsonb(o)::text FROM orders o) TO '/dev/null'")

tpsql -At -c "SELECT ecp.create_consumer('bench', '$es_url')" >/dev/null
tpsql -At -c "SELECT ecp.create_task('orders', 'bench', 'orders', query => 'SELECT * FROM orders', options => '{\"batch_size\": $batch}')" >/dev/null
run=$(tpsql -At -c "SELECT ecp.start('orders')")
tpsql_wait "SELECT state IN ('succeeded', 'failed', 'cancelled') FROM ecp.run WHERE id = $run" 3600 ||
	{ echo "the run did not finish" >&2; exit 1; }
read -r state processed run_ms <<<"$(tpsql -At -F ' ' -c "SELECT state, processed, round(extract(epoch FROM duration) * 1000) FROM ecp.progress WHERE run_id = $run")"
[ "$state" = succeeded ] || { echo "run $state" >&2; exit 1; }
bytes=$(curl -fsS "$es_url/_esd/stats" | sed 's/.*"bulk_bytes":\([0-9]*\).*/\1/')

# The limiter's own cost: the same sync with a rate limit far above the
# actual rate, alternating with unlimited runs (the minimum of 3 each, as
# single runs on a shared 2-core machine vary by several percent).
run_once() { # task name -> milliseconds
	local r
	r=$(tpsql -At -c "SELECT ecp.start('$1')")
	tpsql_wait "SELECT state IN ('succeeded', 'failed', 'cancelled') FROM ecp.run WHERE id = $r" 3600 ||
		{ echo "run of $1 did not finish" >&2; exit 1; }
	tpsql -At -c "SELECT round(extract(epoch FROM duration) * 1000) FROM ecp.progress WHERE run_id = $r"
}
tpsql -At -c "SELECT ecp.create_task('orders_limited', 'bench', 'orders_limited', query => 'SELECT * FROM orders', options => '{\"batch_size\": $batch, \"rate_limit\": 100000000}')" >/dev/null
free_ms=$run_ms
limited_ms=999999999
for _ in 1 2 3; do
	ms=$(run_once orders_limited); [ "$ms" -lt "$limited_ms" ] && limited_ms=$ms
	ms=$(run_once orders); [ "$ms" -lt "$free_ms" ] && free_ms=$ms
done

awk -v rows="$rows" -v limited="$limited_ms" -v free="$free_ms" -v base="$base_ms" -v run="$run_ms" -v bytes="$bytes" -v batch="$batch" 'BEGIN {
	printf "rows %d, batch_size %d\n", rows, batch
	printf "baseline  COPY to_jsonb -> /dev/null: %8.0f ms  %9.0f rows/s\n", base, rows / (base / 1000)
	printf "ecp sync  -> esd --discard:           %8.0f ms  %9.0f docs/s  %.1f MB/s of NDJSON\n", run, rows / (run / 1000), bytes / 1e6 / (run / 1000)
	printf "ratio ecp / baseline (time):          %8.2f\n", run / base
	printf "limiter cost, limit far above the rate: %+.1f%% (best of 3+1 unlimited %.0f ms, best of 3 limited %.0f ms)\n", (limited / free - 1) * 100, free, limited
}'
