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

# The limiter's own cost: one task over the first $lim_rows orders, run
# with a rate limit far above the actual rate and with none (ecp.set_rate
# between runs), in $rounds adjacent pairs whose order alternates.  This
# machine's speed drifts by tens of percent over tens of seconds, so
# separate best-of runs mislead; the median of the paired ratios does not.
# Each run is waited for inside one psql session (no polling processes).
lim_rows=$(( rows < 200000 ? rows : 200000 ))
rounds=${ECP_BENCH_ROUNDS:-20}
tpsql -At -c "SELECT ecp.create_task('orders_rate', 'bench', 'orders_rate', query => 'SELECT * FROM orders WHERE id <= $lim_rows', options => '{\"batch_size\": $batch}')" >/dev/null
run_at_rate() { # docs/s (0: unlimited) -> milliseconds of the run
	tpsql -At <<SQL
SELECT ecp.set_rate('orders_rate', $1) \\g /dev/null
SELECT ecp.start('orders_rate') AS run \\gset
SELECT set_config('bench.run', :'run', false) \\g /dev/null
DO \$\$ BEGIN
	WHILE NOT EXISTS (SELECT FROM ecp.run WHERE id = current_setting('bench.run')::bigint
	                  AND state IN ('succeeded', 'failed', 'cancelled')) LOOP
		PERFORM pg_sleep(0.02);
	END LOOP;
END \$\$;
SELECT CASE WHEN state = 'succeeded' THEN round(extract(epoch FROM duration) * 1000) END
  FROM ecp.progress WHERE run_id = :run;
SQL
}
pairs=""
for i in $(seq 1 "$rounds"); do
	if [ $((i % 2)) = 1 ]; then
		free=$(run_at_rate 0); limited=$(run_at_rate 100000000)
	else
		limited=$(run_at_rate 100000000); free=$(run_at_rate 0)
	fi
	[ -n "$free" ] && [ -n "$limited" ] || { echo "a limiter run did not succeed" >&2; exit 1; }
	pairs="$pairs $free:$limited"
done
# ratio, limited ms, unlimited ms per pair, sorted by ratio (plain awk: no asort)
limiter_line=$(echo "$pairs" | tr ' ' '\n' | awk -F: 'NF == 2 { print $2 / $1, $2, $1 }' | sort -g |
	awk -v rows="$lim_rows" '{ r[++n] = $1; l += $2; f += $3 }
	END {
		med = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
		printf "limiter cost, limit far above the rate: %+.1f%% (median of %d paired runs of %d orders; totals %.0f ms limited, %.0f ms unlimited; pairs from %+.1f%% to %+.1f%%)\n", (med - 1) * 100, n, rows, l, f, (r[1] - 1) * 100, (r[n] - 1) * 100
	}')

awk -v rows="$rows" -v base="$base_ms" -v run="$run_ms" -v bytes="$bytes" -v batch="$batch" 'BEGIN {
	printf "rows %d, batch_size %d\n", rows, batch
	printf "baseline  COPY to_jsonb -> /dev/null: %8.0f ms  %9.0f rows/s\n", base, rows / (base / 1000)
	printf "ecp sync  -> esd --discard:           %8.0f ms  %9.0f docs/s  %.1f MB/s of NDJSON\n", run, rows / (run / 1000), bytes / 1e6 / (run / 1000)
	printf "ratio ecp / baseline (time):          %8.2f\n", run / base
}'
echo "$limiter_line"
