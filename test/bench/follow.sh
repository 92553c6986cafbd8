#!/usr/bin/env bash
# Benchmark: following changes (ecp.follow), in mode decoding and in mode
# trigger, on one cluster with wal_level = logical for every figure (so the
# runs without a follower pay for logical WAL too, and the write-path
# comparison is fair).  Table items (rows + 1 rows: id 0 is the probe) is
# followed by task items (SELECT * FROM items); items_plain, the same rows,
# is never followed.  Autovacuum is off on both (VACUUM between modes).
# For each mode, one after the other (the follower starts without a
# backfill: only changes are measured):
#   latency   pgbench updates random rows of items at $rate per second for
#             $secs s while a psql loop sets the probe row's column probe
#             to clock_timestamp() (microseconds) every ~100 ms, each in
#             its own committed statement; a poller GETs the probe's
#             document from the stand-in (realtime) every 5 ms and notes
#             when a new value appears.  A probe's latency is the time its
#             value, or a newer one, was first seen minus the timestamp it
#             set (set just before its commit): p50, p95, max.
#   catch-up  one UPDATE of rows 1..$rows of items, the follower
#             following: from the UPDATE's commit until ecp.followers
#             shows queue_length 0, changes_applied grown by $rows and (mode
#             decoding) the slot confirmed past the UPDATE's commit.  The
#             same UPDATE on items_plain then (the two times: the write
#             cost of one big statement; and both tables stay alike).
#   write     the follower paused (capture goes on: the triggers still
#             queue, the slot keeps its WAL; the follower's own work is
#             what catch-up measures), the same pgbench workload on items
#             and on items_plain in adjacent pairs of alternating order:
#             single-row UPDATEs by random id (2 clients, $cost_secs s) and
#             UPDATEs of 10,000 rows per statement (1 client, $batch_count
#             statements); throughput ratio followed/not, the median of
#             the pairs.
#   full run  ecp.unfollow, then a full run of task items (ecp.start;
#             ecp.run created_at to finished_at), the catch-up's baseline;
#             VACUUM of both tables.
# The stand-in keeps documents for the latency part and discards them
# for the others (PUT /_esd/config {"discard": ...}).
# Usage: test/bench/follow.sh [rows] [rate] [seconds]
#   rows (1000000), changes per second (1000), seconds of load (30);
#   ECP_BENCH_COST_SECONDS (2), ECP_BENCH_COST_ROUNDS (4: even, so each
#   table goes first as often) and ECP_BENCH_BATCHES (10) size the
#   write-cost runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
rows=${1:-1000000}
rate=${2:-1000}
secs=${3:-30}
cost_secs=${ECP_BENCH_COST_SECONDS:-2}
cost_rounds=${ECP_BENCH_COST_ROUNDS:-4}
batch_count=${ECP_BENCH_BATCHES:-10}
batch_rows=10000
poll_ms=5
. "$top/test/scripts/throwaway.sh"
. "$here/bench_lib.sh"
make -s -C "$top" all >/dev/null

throwaway_init followbench
# the poller and the load too, when the script stops early
trap 'kill $(jobs -p) 2>/dev/null; throwaway_cleanup' EXIT
# a big max_wal_size and a long checkpoint_timeout: no checkpoint storm
# in the middle of a measured UPDATE
throwaway_start_pg "wal_level = logical" "max_wal_size = 8GB" "checkpoint_timeout = 30min"
throwaway_start_esd
tpsql -c "CREATE EXTENSION ecp" >/dev/null
tpsql <<SQL >/dev/null
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric NOT NULL,
                    qty integer NOT NULL, probe bigint) WITH (autovacuum_enabled = false);
INSERT INTO items SELECT g, 'item ' || g, (g % 1000) / 10.0, g % 100, NULL FROM generate_series(0, $rows) g;
CREATE TABLE items_plain (LIKE items INCLUDING ALL) WITH (autovacuum_enabled = false);
INSERT INTO items_plain SELECT * FROM items;
VACUUM ANALYZE items;
VACUUM ANALYZE items_plain;
CHECKPOINT;
SET client_min_messages = warning;
SELECT ecp.create_consumer('bench', '$es_url');
SELECT ecp.create_task('items', 'bench', 'items', query => 'SELECT * FROM items');
SQL
follow_interval=$(tpsql -At -c "SHOW ecp.follow_interval")

# pgbench scripts (the table is substituted per run)
cat >"$work/one.sql" <<'EOF'
\set id random(1, :rows)
UPDATE :tbl SET qty = qty + 1 WHERE id = :id;
EOF
cat >"$work/batch.sql" <<EOF
\set lo random(1, :rows - $((batch_rows - 1)))
UPDATE :tbl SET qty = qty + 1 WHERE id BETWEEN :lo AND :lo + $((batch_rows - 1));
EOF
chmod 644 "$work"/*.sql
# pgbench $table $script [options...] -> its tps (without connection time)
bench_tps() {
	local table=$1 script=$2
	shift 2
	as_test_user pgbench -n -h "$work" -p "$pg_port" -D rows="$rows" -D tbl="$table" \
		-f "$work/$script" "$@" postgres 2>"$work/pgbench.err" | tee "$work/pgbench.out" |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
esd_discard() {
	curl -fsS --max-time 10 -X PUT "$es_url/_esd/config" -H 'Content-Type: application/json' \
		-d "{\"discard\": $1}" >/dev/null
}
fail() { echo "follow.sh: $*" >&2; exit 1; }

# Wait (inside one psql session, bounded) until the follower of task items
# has applied everything committed so far: queue empty, and in mode
# decoding the slot confirmed past the current WAL position (the decoder
# moved every earlier commit into the queue).  $1: an SQL expression, the
# least changes_applied.
caught_up_sql() {
	cat <<SQL
SELECT set_config('bench.lsn', pg_current_wal_lsn()::text, false), set_config('bench.min', ($1)::text, false) \\g /dev/null
DO \$\$ BEGIN
	WHILE NOT EXISTS (
		SELECT FROM ecp.followers f LEFT JOIN pg_replication_slots s ON s.slot_name = f.slot_name
		 WHERE f.task = 'items' AND f.state = 'following' AND f.queue_length = 0
		   AND f.changes_applied >= current_setting('bench.min')::bigint
		   AND (f.mode = 'trigger' OR s.confirmed_flush_lsn >= current_setting('bench.lsn')::pg_lsn)) LOOP
		IF clock_timestamp() - now() > interval '10 minutes' THEN
			RAISE EXCEPTION 'the follower did not catch up in 10 minutes';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END \$\$;
SQL
}
wait_caught_up() { caught_up_sql "${1:-0}" | tpsql -At >/dev/null; }
wait_for() { # SQL that must return t, seconds
	tpsql_wait "$1" "$2" || fail "waited $2 s in vain for: $1"
}

# One full run of task items; prints its milliseconds (created_at to finished_at).
full_run_ms() {
	local out
	out=$({ bench_wait_run "ecp.start('items')" 600
		echo "SELECT r.state, p.processed, round(extract(epoch FROM r.finished_at - r.created_at) * 1000)
		        FROM ecp.run r JOIN ecp.progress p ON p.run_id = r.id WHERE r.id = :run;"; } | tpsql -At -F ' ')
	read -r state processed ms <<<"$out"
	[ "$state" = succeeded ] && [ "$processed" = $((rows + 1)) ] ||
		fail "full run: $state, $processed of $((rows + 1)) rows"
	echo "$ms"
}

# The poller: GET the probe's document every $poll_ms ms, print
# "microseconds value" whenever a newer value shows.  Stops once $stop
# exists and the last value of $probes was seen (or 60 s after $stop, or
# after $limit s in all).
poll_probe() {
	perl - "$es_url/items/_doc/0" "$1" "$2" "$3" "$poll_ms" <<'PERL'
use strict;
use warnings;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);
my ($url, $probes, $stop, $limit, $poll_ms) = @ARGV;
my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 5);
$| = 1;
my ($seen, $target, $stop_at) = (0, undef, undef);
my $deadline = time + $limit;
while (time < $deadline)
{
	my $res = $http->get($url);
	my $now = time;
	if ($res->{status} == 200)
	{
		my $value = decode_json($res->{content})->{_source}{probe} // 0;
		if ($value > $seen)
		{
			printf "%.0f %s\n", $now * 1e6, $value;
			$seen = $value;
		}
	}
	if (!defined $stop_at && -e $stop)
	{
		$stop_at = time;
		open my $fh, '<', $probes or die "$probes: $!";
		while (<$fh>) { $target = $1 if /^(\d+)$/; }
		$target //= 0;
	}
	last if defined $target && $seen >= $target;
	last if defined $stop_at && time > $stop_at + 60;
	sleep $poll_ms / 1000;
}
PERL
}

# "p50 p95 max samples missed" in ms from the poller's sightings ($1) and
# the probes' values ($2): a probe is seen when its value or a newer one
# is (a newer probe's document holds the row as it is, so it shows the
# older change too).
latencies() {
	awk 'NR == FNR { seen_t[++n] = $1; seen_v[n] = $2; next }
	     /^[0-9]+$/ {
		while (j < n && seen_v[j + 1] < $1) j++
		print j < n ? (seen_t[j + 1] - $1) / 1000 : "missed"
	     }' "$1" "$2" | sort -g | awk '
		$1 == "missed" { missed++; next }
		{ l[++k] = $1 }
		END {
			if (k == 0) { printf "0 0 0 0 %d\n", missed; exit }
			printf "%.0f %.0f %.0f %d %d\n", l[int((k * 50 + 99) / 100)], l[int((k * 95 + 99) / 100)], l[k], k, missed
		}'
}

# Paired runs of one workload on items (with) and items_plain (without),
# alternating which goes first: "median min max with_avg without_avg".
paired() { # script, pgbench options...
	local script=$1 i with without pairs="" sum_w=0 sum_o=0
	shift
	for i in $(seq 1 "$cost_rounds"); do
		if [ $((i % 2)) = 1 ]; then
			without=$(bench_tps items_plain "$script" "$@"); with=$(bench_tps items "$script" "$@")
		else
			with=$(bench_tps items "$script" "$@"); without=$(bench_tps items_plain "$script" "$@")
		fi
		[ -n "$with" ] && [ -n "$without" ] || fail "pgbench: $(cat "$work/pgbench.err")"
		pairs="$pairs$(awk -v w="$with" -v o="$without" 'BEGIN { print w / o }')"$'\n'
		sum_w=$(awk -v a="$sum_w" -v b="$with" 'BEGIN { print a + b }')
		sum_o=$(awk -v a="$sum_o" -v b="$without" 'BEGIN { print a + b }')
	done
	echo "$(printf '%s' "$pairs" | stats) $(awk -v w="$sum_w" -v o="$sum_o" -v n="$cost_rounds" \
		'BEGIN { printf "%.1f %.1f", w / n, o / n }')"
}

report=""
line() { report="$report$1"$'\n'; }

for mode in decoding trigger; do
	run=$(tpsql -At -c "SET client_min_messages = warning" \
		-c "SELECT ecp.follow('items', backfill => false, mode => '$mode')")
	wait_for "SELECT EXISTS (SELECT FROM ecp.followers WHERE task = 'items' AND mode = '$mode' AND state = 'following')" 60
	wait_caught_up

	# --- latency at $rate changes per second --------------------------------
	t_latency=$SECONDS
	esd_discard false
	probes="$work/probes.$mode" seen="$work/seen.$mode" stop="$work/stop.$mode"
	nprobes=$((secs * 10))
	: >"$probes"
	poll_probe "$probes" "$stop" $((secs + 120)) >"$seen" &
	poller=$!
	as_test_user pgbench -n -h "$work" -p "$pg_port" -D rows="$rows" -D tbl=items -f "$work/one.sql" \
		-c 4 -j 2 -R "$rate" -T "$secs" postgres >"$work/load.$mode" 2>&1 &
	load=$!
	for _ in $(seq 1 "$nprobes"); do
		echo "UPDATE items SET probe = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint WHERE id = 0 RETURNING probe;"
		echo "SELECT pg_sleep(0.1) \\g /dev/null"
	done | tpsql -At >"$probes"
	wait "$load" || fail "the load failed: $(tail -n 3 "$work/load.$mode")"
	touch "$stop"
	wait "$poller" || fail "the poller failed"
	read -r p50 p95 pmax samples missed <<<"$(latencies "$seen" "$probes")"
	[ "$samples" -gt 0 ] || fail "no probe was seen in the index"
	load_tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$work/load.$mode")
	wait_caught_up
	esd_discard true

	# --- catch-up of one UPDATE of $rows rows -------------------------------------
	t_catch=$SECONDS
	# (mode decoding: what the slot decoded meanwhile, from its statistics)
	slot_stats_sql="SELECT coalesce(sum(st.total_bytes), 0) || ' ' || coalesce(sum(st.spill_bytes), 0)
	                  FROM ecp.followers f JOIN pg_stat_replication_slots st USING (slot_name) WHERE f.task = 'items'"
	read -r decoded0 spilled0 <<<"$(tpsql -At -c "$slot_stats_sql")"
	out=$(tpsql -At -F ' ' <<SQL
SELECT changes_applied AS before FROM ecp.followers WHERE task = 'items' \\gset
SELECT clock_timestamp() AS t_start \\gset
UPDATE items SET qty = qty + 1 WHERE id BETWEEN 1 AND $rows;
SELECT clock_timestamp() AS t_commit \\gset
$(caught_up_sql ":before + $rows")
SELECT round(extract(epoch FROM clock_timestamp() - :'t_commit'::timestamptz) * 1000),
       round(extract(epoch FROM :'t_commit'::timestamptz - :'t_start'::timestamptz) * 1000),
       changes_applied - :before
  FROM ecp.followers WHERE task = 'items';
SQL
)
	read -r catch_ms update_ms applied <<<"$out"
	[ "${applied:-0}" -ge "$rows" ] || fail "catch-up: $applied changes applied, $rows expected"
	read -r decoded1 spilled1 <<<"$(tpsql -At -c "$slot_stats_sql")"
	plain_update_ms=$(tpsql -At -c '\timing on' -c "UPDATE items_plain SET qty = qty + 1 WHERE id BETWEEN 1 AND $rows" |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')

	# --- write-path cost, the follower paused (then unfollowed: no catching up) --
	t_write=$SECONDS
	tpsql -At -c "SELECT ecp.pause($run)" >/dev/null
	wait_for "SELECT EXISTS (SELECT FROM ecp.followers WHERE task = 'items' AND state = 'paused')
	            AND NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'ecp worker')" 60
	read -r one_med one_min one_max one_with one_without <<<"$(paired one.sql -c 2 -j 2 -T "$cost_secs")"
	read -r bat_med bat_min bat_max bat_with bat_without <<<"$(paired batch.sql -c 1 -t "$batch_count")"
	[ -n "$one_med" ] && [ -n "$bat_med" ] || fail "a write-cost run failed"

	t_full=$SECONDS
	tpsql -At -c "SELECT ecp.unfollow('items')" >/dev/null
	full_ms=$(full_run_ms)
	tpsql -c "VACUUM items" -c "VACUUM items_plain" >/dev/null
	phases="latency $((t_catch - t_latency)) s, catch-up $((t_write - t_catch)) s, write cost $((t_full - t_write)) s, full run and VACUUM $((SECONDS - t_full)) s"

	line "mode $mode:"
	line "$(awk -v r="$rate" -v s="$secs" -v t="$load_tps" -v a="$p50" -v b="$p95" -v c="$pmax" -v n="$samples" \
		-v m="$missed" -v pm="$poll_ms" 'BEGIN {
		printf "  latency at %d changes/s for %d s (achieved %.0f/s): commit to document p50 %d ms, p95 %d ms, max %d ms (%d probes, %d never seen; poll every %d ms)", r, s, t, a, b, c, n, m, pm }')"
	line "$(awk -v a="$one_with" -v b="$one_without" -v m="$one_med" -v lo="$one_min" -v hi="$one_max" \
		-v n="$cost_rounds" -v s="$cost_secs" 'BEGIN {
		printf "  write cost, single-row UPDATEs (2 clients, %d pairs of %d s): %.0f tps followed vs %.0f not, ratio %.2f (pairs %.2f..%.2f)", n, s, a, b, m, lo, hi }')"
	line "$(awk -v a="$bat_with" -v b="$bat_without" -v m="$bat_med" -v lo="$bat_min" -v hi="$bat_max" \
		-v n="$cost_rounds" -v c="$batch_count" -v br="$batch_rows" 'BEGIN {
		printf "  write cost, %d-row UPDATEs (1 client, %d pairs of %d statements): %.0f ms followed vs %.0f ms not per statement, ratio %.2f (pairs %.2f..%.2f)", br, n, c, 1000 / a, 1000 / b, m, lo, hi }')"
	line "$(awk -v a="$update_ms" -v b="$plain_update_ms" -v r="$rows" 'BEGIN {
		printf "  write cost, one %d-row UPDATE: %.1f s followed vs %.1f s not, ratio %.2f", r, a / 1000, b / 1000, b / a }')"
	line "$(awk -v c="$catch_ms" -v f="$full_ms" -v r="$rows" 'BEGIN {
		printf "  catch-up of that UPDATE: %.1f s, %.0f docs/s; full run of the %d rows %.1f s, %.0f docs/s; ratio follow/full %.2f", c / 1000, r / (c / 1000), r + 1, f / 1000, (r + 1) / (f / 1000), (r / (c / 1000)) / ((r + 1) / (f / 1000)) }')"
	if [ "$mode" = decoding ]; then
		line "$(awk -v d=$((decoded1 - decoded0)) -v s=$((spilled1 - spilled0)) 'BEGIN {
			printf "  (the slot meanwhile: %.0f MB of transactions decoded, %.0f MB spilled to disk; pg_stat_replication_slots)", d / 1048576, s / 1048576 }')"
	fi
	line "  (this mode's parts took: $phases)"
done

echo "following changes: items of $((rows + 1)) rows, $(nproc) cores, wal_level logical for every figure, ecp.follow_interval $follow_interval; $SECONDS s in all"
echo "(ratios: throughput followed / not followed, paired runs in alternating order, median; the follower is paused while the write cost is measured)"
printf '%s' "$report"
