#!/usr/bin/env bash
# Benchmark: ecp syncing N sample orders into the stand-in in discard mode,
# against baselines measured in the same run, on the same data, one after
# the other (a warm-up COPY first):
#   limit     COPY (SELECT row_to_json(o) FROM orders o) TO '/dev/null'
#   to_jsonb  COPY (SELECT id, to_jsonb(o)::text FROM orders o) TO '/dev/null'
#   ecp p1    a task over SELECT * FROM orders, default options
#   ecp p2    the same with "parallelism": 2 (key ranges, two workers at once)
#   node      @elastic/elasticsearch 8 helpers.bulk fed by a pg-query-stream
#             (test/bench/node_peer.js; installed from npm into $work)
# Every contender writes to the same esd --discard, each to its own index.
# Each line: seconds, docs/s, MB/s (of the JSON produced for the COPYs, of
# the NDJSON esd received for the others) and docs/s as a ratio to the limit.
# ecp's time is from ecp.start (the run's created_at) to its finished_at.
# While ecp runs, a sampler reads RssAnon of every ecp worker every 0.2 s;
# the peak is printed per run.  ECP_BENCH_10M=1 adds an ecp p1 run over
# 10,000,000 orders and compares its peak with the 1x run's.
# Then the limiter's own cost (as before).
# Usage: test/bench/sync_throughput.sh [rows] [batch_size]
#   batch_size: for the limiter runs (default 5000) and, when given, for the
#   ecp contenders too (else they run with ecp's defaults).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
rows=${1:-1000000}
batch=${2:-5000}
ecp_opt=${2:+"\"batch_size\": $2, "}
big_rows=10000000
. "$top/test/scripts/throwaway.sh"
make -s -C "$top" all >/dev/null

throwaway_init bench
throwaway_start_pg
throwaway_start_esd --discard
tpsql -c "CREATE EXTENSION ecp" >/dev/null
tpsql -v rows="$rows" -f "$top/test/scripts/sample_orders.sql" >/dev/null
tpsql -c "VACUUM ANALYZE orders" -c "CHECKPOINT" >/dev/null
max_workers=$(tpsql -At -c "SHOW ecp.max_workers")

ms_of() { # milliseconds psql's \timing reports for one statement
	tpsql -At -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1
}
esd_stat() { curl -fsS --max-time 10 "$es_url/_esd/stats" | jq -r ".$1"; }
esd_reset_stats() { curl -fsS --max-time 10 -X DELETE "$es_url/_esd/stats" >/dev/null; }

# Peak RssAnon (kB) of the ecp workers, sampled every 0.2 s until $1 exists
# (or $work is gone, or $2 seconds have passed); writes "peak_kB processes"
# to $1.out.  Workers are the postmaster's children titled "ecp worker ..."
# (bgw_name; their backend_type is 'ecp worker').
rss_sampler() {
	local stop=$1 end=$((SECONDS + $2)) pm pid title k v max=0 seen=" "
	pm=$(head -n 1 "$pgdata/postmaster.pid")
	while [ -d "$work" ] && [ ! -e "$stop" ] && [ $SECONDS -lt "$end" ]; do
		for pid in $(cat "/proc/$pm/task/$pm/children" 2>/dev/null); do
			title=""
			read -r -d '' title 2>/dev/null <"/proc/$pid/cmdline" || true
			case $title in *"ecp worker"*) ;; *) continue ;; esac
			case $seen in *" $pid "*) ;; *) seen="$seen$pid " ;; esac
			while read -r k v _; do
				if [ "$k" = RssAnon: ]; then [ "$v" -gt "$max" ] && max=$v; break; fi
			done 2>/dev/null <"/proc/$pid/status" || true
		done
		sleep 0.2
	done
	set -- $seen
	echo "$max $#" >"$stop.out"
}

# One ecp run of task $1, waited for inside one psql session, bounded.
# Prints "state processed ms_from_start ms_to_started_at peak_kB worker_processes".
ecp_run() {
	local stop="$work/rss.$1" sampler out
	rm -f "$stop" "$stop.out"
	rss_sampler "$stop" 7200 &
	sampler=$!
	out=$(tpsql -At -F ' ' <<SQL
SELECT ecp.start('$1') AS run \\gset
SELECT set_config('bench.run', :'run', false) \\g /dev/null
DO \$\$ BEGIN
	WHILE NOT EXISTS (SELECT FROM ecp.run WHERE id = current_setting('bench.run')::bigint
	                  AND state IN ('succeeded', 'failed', 'cancelled')) LOOP
		IF clock_timestamp() - now() > interval '2 hours' THEN RAISE EXCEPTION 'the run did not finish'; END IF;
		PERFORM pg_sleep(0.05);
	END LOOP;
END \$\$;
SELECT r.state, p.processed, round(extract(epoch FROM r.finished_at - r.created_at) * 1000),
       round(extract(epoch FROM r.started_at - r.created_at) * 1000)
  FROM ecp.run r JOIN ecp.progress p ON p.run_id = r.id WHERE r.id = :run;
SQL
) || true
	touch "$stop"
	wait "$sampler" || true
	echo "${out:-failed 0 0 0} $(cat "$stop.out" 2>/dev/null || echo "0 0")"
}

results="" # name|ms|docs|bytes lines for the report
add() { results="$results$1|$2|$3|$4"$'\n'; }

# warm the cache, then the limit and the to_jsonb baseline
q_limit="COPY (SELECT row_to_json(o) FROM orders o) TO '/dev/null'"
q_jsonb="COPY (SELECT id, to_jsonb(o)::text FROM orders o) TO '/dev/null'"
ms_of "$q_limit" >/dev/null
add "limit: COPY row_to_json" "$(ms_of "$q_limit")" "$rows" \
	"$(tpsql -At -c "SELECT sum(octet_length(row_to_json(o)::text)) FROM orders o")"
add "COPY id, to_jsonb(o)::text" "$(ms_of "$q_jsonb")" "$rows" \
	"$(tpsql -At -c "SELECT sum(octet_length(to_jsonb(o)::text)) FROM orders o")"

tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_consumer('bench', '$es_url')" >/dev/null
tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_task('orders_p1', 'bench', 'orders_p1', query => 'SELECT * FROM orders', options => '{${ecp_opt%, }}')" >/dev/null
tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_task('orders_p2', 'bench', 'orders_p2', query => 'SELECT * FROM orders', options => '{$ecp_opt\"parallelism\": 2}')" >/dev/null
notes=""
ecp_contender() { # task label -> adds a result line, sets peak_kB and procs
	local state processed ms
	esd_reset_stats
	read -r state processed ms lag_ms peak_kB procs <<<"$(ecp_run "$1")"
	if [ "$state" != succeeded ] || [ "$processed" != "$rows" ]; then
		echo "ecp run of $1: $state, $processed of $rows rows" >&2; exit 1
	fi
	add "$2" "$ms" "$(esd_stat bulk_items)" "$(esd_stat bulk_bytes)"
}
ecp_contender orders_p1 "ecp p1 -> esd --discard"
p1_kB=$peak_kB p1_procs=$procs lags="p1 $lag_ms ms"
if [ "$max_workers" -ge 2 ]; then
	ecp_contender orders_p2 "ecp p2 -> esd --discard"
	p2_kB=$peak_kB p2_procs=$procs lags="$lags, p2 $lag_ms ms"
else
	notes="${notes}ecp p2 skipped: ecp.max_workers is $max_workers"$'\n'
	p2_kB="" p2_procs=0
fi

# The Node.js peer, installed from npm into the throwaway directory.
node_tmp="$work/node"
node_skip=""
mkdir -p "$node_tmp"
if ! timeout 300 npm install --prefix "$node_tmp" --no-audit --no-fund --no-save --loglevel=error \
	@elastic/elasticsearch@8 pg pg-query-stream >"$work/npm.log" 2>&1; then
	node_skip="npm install failed: $(grep -v -e '^\s*$' -e 'complete log' "$work/npm.log" | sed 's/^npm error //' |
		head -n 4 | paste -sd ' ' | cut -c 1-200)"
else
	node_ver=$(node -p "require('$node_tmp/node_modules/@elastic/elasticsearch/package.json').version")
	esd_reset_stats
	if node_out=$(NODE_PATH="$node_tmp/node_modules" timeout 3600 node "$here/node_peer.js" \
		"$es_url" 127.0.0.1 "$pg_port" 'SELECT * FROM orders' orders_node 2>"$work/node.log") &&
		[ "$(jq -r .docs <<<"$node_out")" = "$rows" ]; then
		add "node @elastic/es $node_ver bulk" "$(jq -r .ms <<<"$node_out")" \
			"$(esd_stat bulk_items)" "$(esd_stat bulk_bytes)"
	else
		node_skip="the peer failed: $(tail -n 1 "$work/node.log")${node_out:+ $node_out}"
	fi
fi
[ -z "$node_skip" ] || notes="${notes}node peer skipped: $node_skip"$'\n'

# ECP_BENCH_10M=1: ecp p1 over 10,000,000 orders (schema big), its peak
# against the 1x run's.
big_line=""
if [ "${ECP_BENCH_10M:-0}" = 1 ]; then
	tpsql -v rows="$big_rows" -c "CREATE SCHEMA big" -c "SET search_path = big" \
		-f "$top/test/scripts/sample_orders.sql" >/dev/null
	tpsql -c "VACUUM ANALYZE big.orders" -c "CHECKPOINT" >/dev/null
	tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_task('orders_big', 'bench', 'orders_big', query => 'SELECT * FROM big.orders', options => '{${ecp_opt%, }}')" >/dev/null
	esd_reset_stats
	read -r state processed big_ms _ big_kB _ <<<"$(ecp_run orders_big)"
	[ "$state" = succeeded ] && [ "$processed" = "$big_rows" ] ||
		{ echo "ecp run over $big_rows rows: $state, $processed" >&2; exit 1; }
	big_line=$(awk -v r="$big_rows" -v ms="$big_ms" -v a="$p1_kB" -v b="$big_kB" 'BEGIN {
		ratio = a > 0 ? b / a : 0; d = ratio > 1 ? ratio - 1 : 1 - ratio
		printf "ecp p1 over %d rows: %.1f s, %.0f docs/s; peak RssAnon %.1f MB vs %.1f MB at 1x, ratio %.2f (target < 64 MB, within 10%%: %s)\n",
			r, ms / 1000, r / (ms / 1000), b / 1024, a / 1024, ratio, (b < 65536 && a < 65536 && d <= 0.10) ? "met" : "missed"
	}')
fi

# The limiter's own cost: one task over the first $lim_rows orders, run
# with a rate limit far above the actual rate and with none (ecp.set_rate
# between runs), in $rounds adjacent pairs whose order alternates.  This
# machine's speed drifts by tens of percent over tens of seconds, so
# separate best-of runs mislead; the median of the paired ratios does not.
# Each run is waited for inside one psql session (no polling processes).
lim_rows=$(( rows < 200000 ? rows : 200000 ))
rounds=${ECP_BENCH_ROUNDS:-20}
tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_task('orders_rate', 'bench', 'orders_rate', query => 'SELECT * FROM orders WHERE id <= $lim_rows', options => '{\"batch_size\": $batch}')" >/dev/null
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
SELECT CASE WHEN state = 'succeeded' THEN round(extract(epoch FROM finished_at - started_at) * 1000) END
  FROM ecp.run WHERE id = :run;
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

printf '%s' "$results" | awk -F'|' -v rows="$rows" -v cores="$(nproc)" -v mw="$max_workers" \
	-v opts="${ecp_opt:+batch_size $batch, }" -v p1kb="$p1_kB" -v p1n="$p1_procs" -v p2kb="$p2_kB" -v p2n="$p2_procs" -v lags="$lags" '
	function target(name, r, t) {
		printf "%-26s %6.2f  target >= %-4.1f %s\n", name, r, t, r >= t ? "met" : sprintf("missed by %.0f%%", (1 - r / t) * 100)
	}
	{ name[NR] = $1; ms[NR] = $2; docs[NR] = $3; bytes[NR] = $4; rate[$1] = $3 / ($2 / 1000); n = NR }
	END {
		lim = docs[1] / (ms[1] / 1000)
		printf "orders %d (%.0f bytes of JSON each), %s%d cores, ecp.max_workers %s\n", rows, bytes[1] / rows, opts, cores, mw
		printf "%-34s %8s %10s %7s %9s\n", "", "seconds", "docs/s", "MB/s", "vs limit"
		for (i = 1; i <= n; i++) {
			r = docs[i] / (ms[i] / 1000)
			printf "%-34s %8.2f %10.0f %7.1f %9.2f\n", name[i], ms[i] / 1000, r, bytes[i] / 1e6 / (ms[i] / 1000), r / lim
			if (name[i] ~ /^ecp p1/) p1 = r
			if (name[i] ~ /^ecp p2/) p2 = r
			if (name[i] ~ /^node/) nodep = r
		}
		print "(MB/s: of the JSON produced for the COPYs, of the NDJSON esd received for the others)"
		if (p1) target("ecp p1 / limit", p1 / lim, 0.7)
		if (p2) target("ecp p2 / limit", p2 / lim, 1.0)
		if (p1 && nodep) target("ecp p1 / node peer", p1 / nodep, 4)
		else if (p1) printf "%-26s    n/a  target >= 4.0  (node peer skipped)\n", "ecp p1 / node peer"
		printf "ecp worker peak RssAnon: p1 %.1f MB (%d process%s)", p1kb / 1024, p1n, p1n == 1 ? "" : "es"
		if (p2kb != "") printf ", p2 %.1f MB (max of %d processes)", p2kb / 1024, p2n
		printf "\necp time from ecp.start; the run was started (started_at) after: %s\n", lags
	}'
printf '%s' "$notes"
[ -z "$big_line" ] || echo "$big_line"
echo "$limiter_line"
