#!/usr/bin/env bash
# Benchmark: ecp syncing N sample orders into the stand-in in discard mode,
# against limits measured in the same run, on the same data.  Contenders,
# in $rounds rounds whose order alternates (after a warm-up of each limit):
#   limit 1   COPY (SELECT row_to_json(o) FROM orders o) TO '/dev/null'
#             in one session: the one-session limit
#   limit 2   the same COPY in two sessions at once, over the two halves of
#             the table by TID range (ctid < '(n,0)' and >= '(n,0)', n half
#             the table's pages): from just before both are sent to the
#             end of the last (bench.sessions, dblink): the two-session limit
#   ecp p1    a task over SELECT * FROM orders, default options
#   ecp p2    the same with "parallelism": 2
#   node      @elastic/elasticsearch 8 helpers.bulk fed by a pg-query-stream
#             (test/bench/node_peer.js; installed from npm into $work)
# and once, first: COPY (SELECT id, to_jsonb(o)::text FROM orders o).
# Every contender writes to the same esd --discard, each to its own index.
# ecp's time is from ecp.start (the run's created_at) to its finished_at.
# The targets (issue 25) are on the medians of the rounds' ratios, each
# ratio within one round: p1 / limit 1, p2 / limit 2, p1 / node.
#
# Per-part overhead: from a part's claim (started_at) to its first
# checkpoint, for the p2 runs (bench.part_event, test/bench/bench_lib.sh);
# and a slot's time per empty part: a task of 256 queries that each read
# no row of orders, parallelism 2, the run's wall time (created_at to
# finished_at) x 2 slots / 256, in $rounds runs.
#
# Memory: while ecp runs, a sampler reads RssAnon of every ecp worker
# every 0.2 s; the peaks at 1x and over $big_rows rows (ecp p2 over an
# UNLOGGED copy of the orders, ids shifted, ECP_BENCH_BIG_ROWS=0 skips it).
# Then the limiter's own cost (ECP_BENCH_LIMITER_ROUNDS adjacent pairs).
# Usage: test/bench/sync_throughput.sh [rows] [batch_size]
#   batch_size: for the limiter runs (default 5000) and, when given, for the
#   ecp contenders too (else they run with ecp's defaults).
#   ECP_BENCH_ROUNDS: rounds of the contenders (5).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
rows=${1:-1000000}
batch=${2:-5000}
ecp_opt=${2:+"\"batch_size\": $2, "}
rounds=${ECP_BENCH_ROUNDS:-5}
big_rows=${ECP_BENCH_BIG_ROWS:-10000000}
empty_parts=256
. "$top/test/scripts/throwaway.sh"
. "$here/bench_lib.sh"
make -s -C "$top" all >/dev/null

throwaway_init bench
throwaway_start_pg
throwaway_start_esd --discard
tpsql -c "CREATE EXTENSION ecp" >/dev/null
tpsql -v rows="$rows" -f "$top/test/scripts/sample_orders.sql" >/dev/null
tpsql -c "VACUUM ANALYZE orders" -c "CHECKPOINT" >/dev/null
max_workers=$(tpsql -At -c "SHOW ecp.max_workers")
[ "$max_workers" -ge 2 ] || { echo "ecp.max_workers is $max_workers: parallelism 2 needs 2" >&2; exit 1; }
bench_sessions_install
part_events_install

esd_stat() { curl -fsS --max-time 10 "$es_url/_esd/stats" | jq -r ".$1"; }
esd_reset_stats() { curl -fsS --max-time 10 -X DELETE "$es_url/_esd/stats" >/dev/null; }

# One ecp run of task $1, bounded: "peak_kB worker_processes state
# processed ms_from_start run_id".
ecp_run() {
	bench_sampled_run "$1" 7200 "SELECT r.state, p.processed,
		       round(extract(epoch FROM r.finished_at - r.created_at) * 1000), r.id
		  FROM ecp.run r JOIN ecp.progress p ON p.run_id = r.id WHERE r.id = :run;"
}

# --- the contenders: each adds "ms docs bytes" to $work/fig.<name> --------
record() { echo "$2 $3 $4" >>"$work/fig.$1"; }
half=$(tpsql -At -c "SELECT pg_relation_size('orders') / current_setting('block_size')::bigint / 2")
q_all="COPY (SELECT row_to_json(o) FROM orders o) TO '/dev/null'"
q_low="COPY (SELECT row_to_json(o) FROM orders o WHERE ctid < '($half,0)') TO '/dev/null'"
q_high="COPY (SELECT row_to_json(o) FROM orders o WHERE ctid >= '($half,0)') TO '/dev/null'"
json_bytes=$(tpsql -At -c "SELECT sum(octet_length(row_to_json(o)::text)) FROM orders o")
[ "$(tpsql -At -c "SELECT count(*) FILTER (WHERE ctid < '($half,0)') > 0 AND count(*) FILTER (WHERE ctid >= '($half,0)') > 0 AND count(*) = $rows FROM orders")" = t ] ||
	{ echo "the TID halves of orders do not cover its $rows rows" >&2; exit 1; }
limit_n() { # figure, statements... (each in a session of its own, at once)
	local name=$1 list="" q ms
	shift
	for q in "$@"; do list="$list${list:+, }\$q\$$q\$q\$"; done
	ms=$(tpsql -At -c "SELECT bench.sessions(ARRAY[$list])")
	[ -n "$ms" ] || { echo "the $name COPY gave no time" >&2; exit 1; }
	record "$name" "$ms" "$rows" "$json_bytes"
}
limit_1() { limit_n limit1 "$q_all"; }
limit_2() { limit_n limit2 "$q_low" "$q_high"; }

tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_consumer('bench', '$es_url')" >/dev/null
tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_task('orders_p1', 'bench', 'orders_p1', query => 'SELECT * FROM orders', options => '{${ecp_opt%, }}')" >/dev/null
tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_task('orders_p2', 'bench', 'orders_p2', query => 'SELECT * FROM orders', options => '{$ecp_opt\"parallelism\": 2}')" >/dev/null
: >"$work/runs.p2" >"$work/rss.p1" >"$work/rss.p2"
ecp_contender() { # task name -> a figure; the run's id into runs.<name>, its peak into rss.<name>
	local state processed ms run peak_kB procs
	esd_reset_stats
	read -r peak_kB procs state processed ms run <<<"$(ecp_run "$1")"
	if [ "$state" != succeeded ] || [ "$processed" != "$rows" ]; then
		echo "ecp run of $1: $state, $processed of $rows rows" >&2; exit 1
	fi
	record "$2" "$ms" "$(esd_stat bulk_items)" "$(esd_stat bulk_bytes)"
	echo "$run" >>"$work/runs.$2"
	echo "$peak_kB $procs" >>"$work/rss.$2"
}
ecp_p1() { ecp_contender orders_p1 p1; }
ecp_p2() { ecp_contender orders_p2 p2; }

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
fi
node_peer() {
	local out
	[ -z "$node_skip" ] || return 0
	esd_reset_stats
	if out=$(NODE_PATH="$node_tmp/node_modules" timeout 3600 node "$here/node_peer.js" \
		"$es_url" 127.0.0.1 "$pg_port" 'SELECT * FROM orders' orders_node 2>"$work/node.log") &&
		[ "$(jq -r .docs <<<"$out")" = "$rows" ]; then
		record node "$(jq -r .ms <<<"$out")" "$(esd_stat bulk_items)" "$(esd_stat bulk_bytes)"
	else
		# a figure per round or none: the ratios pair the rounds
		node_skip="the peer failed: $(tail -n 1 "$work/node.log")${out:+ $out}"
		rm -f "$work/fig.node"
	fi
}

# warm-up (the page cache, the two sessions), then COPY to_jsonb once
limit_1; limit_2; rm -f "$work/fig.limit1" "$work/fig.limit2"
q_jsonb="COPY (SELECT id, to_jsonb(o)::text FROM orders o) TO '/dev/null'"
record to_jsonb "$(ms_of "$q_jsonb")" "$rows" "$(tpsql -At -c "SELECT sum(octet_length(to_jsonb(o)::text)) FROM orders o")"
for round in $(seq 1 "$rounds"); do
	order="limit_1 limit_2 ecp_p1 ecp_p2 node_peer"
	[ $((round % 2)) = 1 ] || order="node_peer ecp_p2 ecp_p1 limit_2 limit_1"
	for contender in $order; do $contender; done
done

# A slot's time per empty part: $empty_parts queries of no row, parallelism 2.
tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_task('empty', 'bench', 'empty',
	queries => (SELECT array_agg(format('SELECT * FROM orders WHERE id = -%s', i)) FROM generate_series(1, $empty_parts) i),
	options => '{$ecp_opt\"parallelism\": 2}')" >/dev/null
: >"$work/empty_slot_ms"
for _ in $(seq 1 "$rounds"); do
	read -r _ _ state _ ms _ <<<"$(ecp_run empty)"
	[ "$state" = succeeded ] || { echo "the empty task: $state" >&2; exit 1; }
	awk -v ms="$ms" -v n="$empty_parts" 'BEGIN { print ms * 2 / n }' >>"$work/empty_slot_ms"
done

# ecp p2 over $big_rows orders: the worker's peak against the 1x runs'.
# The table: UNLOGGED copies of orders with ids shifted, its key after.
big_line=""
if [ "$big_rows" -gt 0 ]; then
	tpsql >/dev/null <<SQL
CREATE UNLOGGED TABLE big_orders (LIKE orders);
DO \$\$ DECLARE cols text; BEGIN
	SELECT string_agg(CASE attname WHEN 'id' THEN 'id + \$1' ELSE quote_ident(attname) END, ', ' ORDER BY attnum)
	  INTO cols FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped;
	FOR k IN 0 .. ($big_rows - 1) / $rows LOOP
		EXECUTE 'INSERT INTO big_orders SELECT ' || cols || ' FROM orders WHERE id + \$1 <= $big_rows'
		  USING k::bigint * $rows;
	END LOOP;
END \$\$;
ALTER TABLE big_orders ADD PRIMARY KEY (id);
ANALYZE big_orders;
SQL
	tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_task('orders_big', 'bench', 'orders_big', query => 'SELECT * FROM big_orders', options => '{$ecp_opt\"parallelism\": 2}')" >/dev/null
	esd_reset_stats
	read -r big_kB big_procs state processed big_ms _ <<<"$(ecp_run orders_big)"
	[ "$state" = succeeded ] && [ "$processed" = "$big_rows" ] ||
		{ echo "ecp run over $big_rows rows: $state, $processed" >&2; exit 1; }
	big_line="$big_ms $big_kB $big_procs"
	tpsql -c "DROP TABLE big_orders" >/dev/null
fi

# The limiter's own cost: one task over the first $lim_rows orders, run
# with a rate limit far above the actual rate and with none (ecp.set_rate
# between runs), in $lim_rounds adjacent pairs whose order alternates.  This
# machine's speed drifts by tens of percent over tens of seconds, so
# separate best-of runs mislead; the median of the paired ratios does not.
# Each run is waited for inside one psql session (no polling processes).
lim_rows=$(( rows < 200000 ? rows : 200000 ))
lim_rounds=${ECP_BENCH_LIMITER_ROUNDS:-20}
tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_task('orders_rate', 'bench', 'orders_rate', query => 'SELECT * FROM orders WHERE id <= $lim_rows', options => '{\"batch_size\": $batch}')" >/dev/null
run_at_rate() { # docs/s (0: unlimited) -> milliseconds of the run
	{ echo "SELECT ecp.set_rate('orders_rate', $1) \\g /dev/null"; bench_wait_run "ecp.start('orders_rate')"
	  echo "SELECT CASE WHEN state = 'succeeded' THEN round(extract(epoch FROM finished_at - started_at) * 1000) END
	          FROM ecp.run WHERE id = :run;"; } | tpsql -At
}
pairs=""
for i in $(seq 1 "$lim_rounds"); do
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

# --- the report ------------------------------------------------------------
round_ratios() { # numerator denominator -> one ratio a round (docs/s: inverse of ms)
	paste -d ' ' "$work/fig.$1" "$work/fig.$2" | awk '{ print $4 / $1 }'
}
echo "== sync throughput: orders $rows ($(awk -v b="$json_bytes" -v r="$rows" 'BEGIN { printf "%.0f", b / r }') bytes of JSON each), ${ecp_opt:+batch_size $batch, }$(nproc) cores, ecp.max_workers $max_workers, $rounds rounds in alternating order: medians (min to max) =="
printf '%-44s %18s %10s %7s\n' "" "seconds" "docs/s" "MB/s"
line() { # figure name, label
	[ -s "$work/fig.$1" ] || return 0
	read -r med lo hi <<<"$(awk '{ print $1 }' "$work/fig.$1" | stats)"
	awk -v l="$2" -v ms="$med" -v lo="$lo" -v hi="$hi" -v docs="$(awk '{ print $2 }' "$work/fig.$1" | stats | cut -d' ' -f1)" \
		-v bytes="$(awk '{ print $3 }' "$work/fig.$1" | stats | cut -d' ' -f1)" 'BEGIN {
		printf "%-44s %6.2f (%.2f-%.2f) %10.0f %7.1f\n", l, ms / 1000, lo / 1000, hi / 1000, docs / (ms / 1000), bytes / 1e6 / (ms / 1000) }'
}
line limit1 "limit 1: one COPY row_to_json"
line limit2 "limit 2: two COPY row_to_json, TID halves"
line to_jsonb "COPY id, to_jsonb(o)::text (once)"
line p1 "ecp p1 -> esd --discard"
line p2 "ecp p2 -> esd --discard"
line node "node @elastic/es ${node_ver:-?} bulk"
echo "(MB/s: of the JSON produced for the COPYs, of the NDJSON esd received for the others)"
echo "two-session limit / one-session limit: $(round_ratios limit2 limit1 | stats | awk '{ printf "%.2f (%.2f to %.2f)", $1, $2, $3 }')x: this machine's two-core gain"
verdict "ecp parallelism 1 / one-session limit" "$(round_ratios p1 limit1 | stats)" ">=" 0.9
verdict "ecp parallelism 2 / two-session limit" "$(round_ratios p2 limit2 | stats)" ">=" 0.85
if [ -s "$work/fig.node" ]; then
	verdict "ecp parallelism 1 / Node.js peer" "$(round_ratios p1 node | stats)" ">=" 5 x
	echo "(ecp parallelism 2 / Node.js peer: $(round_ratios p2 node | stats | awk '{ printf "%.2f (%.2f to %.2f)", $1, $2, $3 }')x)"
else
	printf '%-46s %8s  target >= 5x  MISS  (%s)\n' "ecp parallelism 1 / Node.js peer" "n/a" "node peer skipped: $node_skip"
fi
read -r first_med first_lo first_hi first_parts interval <<<"$(part_overhead "$(paste -sd, "$work/runs.p2")")"
echo "per part, ecp p2 ($first_parts parts in $rounds runs): claim (started_at) to first checkpoint ${first_med} ms median (${first_lo} to ${first_hi}); a page after that: ${interval:-n/a} ms median between checkpoints (no target)"
verdict "slot time per empty part (local, p2)" "$(stats <"$work/empty_slot_ms")" "<=" 5 " ms" \
	"(wall x 2 / $empty_parts parts, $rounds runs)" "%.1f"
p1_kB=$(awk '$1 > m { m = $1 } END { print m + 0 }' "$work/rss.p1")
p2_kB=$(awk '$1 > m { m = $1 } END { print m + 0 }' "$work/rss.p2")
p2_procs=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$work/rss.p2")
verdict "worker peak RssAnon, $rows rows, p1" "$(awk -v k="$p1_kB" 'BEGIN { if (k > 0) printf "%.1f", k / 1024; else print "n/a" }')" "<" 64 " MB" "" "%.1f"
verdict "worker peak RssAnon, $rows rows, p2" "$(awk -v k="$p2_kB" 'BEGIN { if (k > 0) printf "%.1f", k / 1024; else print "n/a" }')" "<" 64 " MB" \
	"(max of $rounds runs, up to $p2_procs worker processes seen a run)" "%.1f"
if [ -n "$big_line" ]; then
	read -r big_ms big_kB big_procs <<<"$big_line"
	verdict "worker peak RssAnon, $big_rows rows, p2" "$(awk -v k="$big_kB" 'BEGIN { if (k > 0) printf "%.1f", k / 1024; else print "n/a" }')" "<" 64 " MB" \
		"($big_procs worker processes seen, $(awk -v ms="$big_ms" -v r="$big_rows" 'BEGIN { printf "%.1f s, %.0f docs/s", ms / 1000, r / (ms / 1000) }'))" "%.1f"
	verdict "RssAnon $big_rows rows - $rows rows, p2" "$(awk -v a="$big_kB" -v b="$p2_kB" 'BEGIN { if (a > 0 && b > 0) printf "%+.1f", (a - b) / 1024; else print "n/a" }')" "<=" 4 " MB" \
		"(flat: within a few MB)" "%+.1f"
fi
echo "$limiter_line"
