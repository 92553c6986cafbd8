#!/usr/bin/env bash
# Benchmark: a 16 x 16 MySQL sharding read by ecp through mysql_fdw.
#
# 16 MariaDB databases shard_0 .. shard_15, 16 tables each (orders_0 ..
# orders_255, table t in database t / 16), order n (1 .. rows) in table
# n % 256, so every table's ids are sparse (256 apart); 16 foreign servers
# (one per database, IMPORT FOREIGN SCHEMA into schemas of the same names)
# and one ecp task with queries => the 256 tables (one part each) and
# parallelism 2, into the stand-in in discard mode.  Baseline in the same
# run, after one warm-up of it:
#   COPY (SELECT row_to_json(o) FROM (<UNION ALL of the 256 foreign
#         tables>) o) TO '/dev/null'
# i.e. one backend streaming every row through mysql_fdw once, nothing sent.
#
# $rounds rounds (ECP_BENCH_SHARDED_ROUNDS, 3), the COPY and ecp in
# alternating order.  Prints: seconds and rows/s of each (medians, min to
# max), the median of the rounds' ratios ecp / COPY against its target
# (<= 0.8, issue 25); per part: a slot's time per empty part (a second
# task of 256 queries ... WHERE id < 0, $rounds runs: wall x parallelism /
# 256, target <= 5 ms), a part's claim (started_at) to its first
# checkpoint (bench.part_event, bench_lib.sh), an empty part's claim to
# its end, the launcher's ecp.start to the first claim; the workers' peak
# RssAnon; and an extrapolation to 10^9 rows from the median rows/s,
# assuming time linear in rows (same per-row cost, 256 parts, per-part
# overhead as measured here and so negligible at that size).
#
# Uses the installed ecp (no build here: the extension must be installed).
# Servers listen on 127.0.0.1 only; every wait is bounded; MariaDB,
# PostgreSQL and the stand-in are stopped and the directory removed on exit.
# Usage: test/bench/mysql_sharded.sh [rows] [batch_size] [parallelism]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
rows=${1:-2000000}
batch=${2:-5000}
par=${3:-2}
rounds=${ECP_BENCH_SHARDED_ROUNDS:-3}
DBS=16
TABLES=256
WAIT=${ECP_BENCH_TIMEOUT:-1800}    # seconds, for each run and statement
. "$top/test/scripts/throwaway.sh"
. "$here/bench_lib.sh"

throwaway_init mysqlsharded
bench_mariadb_start

# --- MariaDB: 16 databases x 16 tables, loaded from seq_0_to_N --------------
# (a larger buffer pool than mariadb.sh's 64M, so that neither side reads
# from disk; resized online, best effort)
my -e "SET GLOBAL innodb_buffer_pool_size = 1024 * 1024 * 1024" 2>/dev/null || true
maxseq=$((rows / TABLES))
load_start=$SECONDS
for d in $(seq 0 $((DBS - 1))); do
	sql="DROP DATABASE IF EXISTS shard_$d; CREATE DATABASE shard_$d CHARACTER SET utf8mb4;"
	for t in $(seq $((d * TABLES / DBS)) $(((d + 1) * TABLES / DBS - 1))); do
		sql+="CREATE TABLE shard_$d.orders_$t (id BIGINT PRIMARY KEY, customer VARCHAR(64) NOT NULL,
		  amount DECIMAL(12,2) NOT NULL, created_at DATETIME NOT NULL, note VARCHAR(100) NULL)
		  ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
		INSERT INTO shard_$d.orders_$t
		SELECT n, CONCAT('cust-', n % 997), (n * 7919 % 1000000) / 100,
		       TIMESTAMP'2024-01-01 00:00:00' + INTERVAL n MINUTE, IF(n % 3 = 0, NULL, CONCAT('note ', n))
		  FROM (SELECT seq * $TABLES + $t AS n FROM seq_0_to_$maxseq) s WHERE n BETWEEN 1 AND $rows;"
	done
	my -e "$sql"
done
loaded=$(my -N -e "SELECT COUNT(*) FROM information_schema.TABLES
	WHERE TABLE_SCHEMA LIKE 'shard\\_%' AND TABLE_NAME LIKE 'orders\\_%'")
[ "$loaded" = "$TABLES" ] || { echo "MariaDB: $loaded tables, not $TABLES" >&2; exit 1; }
load_s=$((SECONDS - load_start))

# --- PostgreSQL: one foreign server per database -----------------------------
throwaway_start_pg
throwaway_start_esd --discard
{
	echo "SET client_min_messages = warning; CREATE EXTENSION ecp; CREATE EXTENSION mysql_fdw;"
	for d in $(seq 0 $((DBS - 1))); do
		cat <<SQL
CREATE SERVER shard_$d FOREIGN DATA WRAPPER mysql_fdw
  OPTIONS (host '127.0.0.1', port '$ECP_MYSQL_PORT', character_set 'utf8mb4');
CREATE USER MAPPING FOR CURRENT_USER SERVER shard_$d
  OPTIONS (username '$ECP_MYSQL_USER', password '$ECP_MYSQL_PASSWORD');
CREATE SCHEMA shard_$d;
IMPORT FOREIGN SCHEMA shard_$d FROM SERVER shard_$d INTO shard_$d;
SQL
	done
	cat <<SQL
SELECT ecp.create_consumer('bench', '$es_url');
SELECT ecp.create_task('sharded', 'bench', 'sharded',
    queries => (SELECT array_agg(format('SELECT * FROM shard_%s.orders_%s', i / 16, i) ORDER BY i)
                  FROM generate_series(0, $((TABLES - 1))) i),
    options => '{"parallelism": $par, "batch_size": $batch}');
SELECT ecp.create_task('empty', 'bench', 'empty',
    queries => (SELECT array_agg(format('SELECT * FROM shard_%s.orders_%s WHERE id < 0', i / 16, i) ORDER BY i)
                  FROM generate_series(0, $((TABLES - 1))) i),
    options => '{"parallelism": $par, "batch_size": $batch}');
SQL
} | tpsql >/dev/null
ntables=$(tpsql -At -c "SELECT count(*) FROM information_schema.foreign_tables WHERE foreign_table_name LIKE 'orders\\_%'")
[ "$ntables" = "$TABLES" ] || { echo "PostgreSQL: $ntables foreign tables, not $TABLES" >&2; exit 1; }

union=$(tpsql -At -c "SELECT string_agg(format('SELECT * FROM shard_%s.orders_%s', i / 16, i), ' UNION ALL ' ORDER BY i)
	FROM generate_series(0, $((TABLES - 1))) i")
copy_sql="COPY (SELECT row_to_json(o) FROM ($union) o) TO '/dev/null'"
part_events_install

# One run of task $1, bounded and checked: "run_id ms peak_kB
# worker_processes" (ms: ecp.start, the run's created_at, to its
# finished_at; the peak RssAnon of its workers).
ecp_run() {
	local kB procs r state ms err
	read -r kB procs r state ms err <<<"$(bench_sampled_run "$1" "$WAIT" "SELECT id, state,
		round(extract(epoch FROM finished_at - created_at) * 1000), coalesce(last_error, '') FROM ecp.run WHERE id = :run;")"
	[ "${state:-}" = succeeded ] || { echo "the $1 run: ${state:-did not finish in ${WAIT}s} $err" >&2; exit 1; }
	echo "$r $ms $kB $procs"
}
ecp_sharded() { # a run of task sharded, checked: every row processed and sent
	local out r ms kB procs processed nparts sent
	curl -fsS -X DELETE "$es_url/_esd/stats" >/dev/null
	out=$(ecp_run sharded)
	read -r r ms kB procs <<<"$out"
	read -r processed nparts <<<"$(tpsql -At -F ' ' -c "SELECT sum(processed), count(*) FROM ecp.part WHERE run_id = $r")"
	sent=$(curl -fsS "$es_url/_esd/stats" | sed 's/.*"bulk_items":\([0-9]*\).*/\1/')
	[ "$processed" = "$rows" ] && [ "$sent" = "$rows" ] && [ "$nparts" = "$TABLES" ] ||
		{ echo "ecp: $processed processed, $sent sent in $nparts parts, for $rows rows in $TABLES tables" >&2; exit 1; }
	echo "$ms" >>"$work/ecp_ms"; echo "$r" >>"$work/ecp_runs"; echo "$kB $procs" >>"$work/ecp_rss"
}
copy_union() { ms_of "$copy_sql" "$WAIT" >>"$work/copy_ms"; }

# $rounds rounds, the COPY and ecp in alternating order, after a warm-up
# of the COPY; then the empty task $rounds times.
ms_of "$copy_sql" "$WAIT" >/dev/null
: >"$work/copy_ms" >"$work/ecp_ms" >"$work/ecp_runs" >"$work/ecp_rss" >"$work/empty_slot_ms"
for round in $(seq 1 "$rounds"); do
	if [ $((round % 2)) = 1 ]; then copy_union; ecp_sharded; else ecp_sharded; copy_union; fi
done
for _ in $(seq 1 "$rounds"); do
	out=$(ecp_run empty)
	read -r r ms _ <<<"$out"
	[ "$(tpsql -At -c "SELECT count(*) FROM ecp.part WHERE run_id = $r AND processed = 0")" = "$TABLES" ] ||
		{ echo "the empty task: not $TABLES parts with no row" >&2; exit 1; }
	awk -v ms="$ms" -v par="$par" -v n="$TABLES" 'BEGIN { print ms * par / n }' >>"$work/empty_slot_ms"
	empty_runs="${empty_runs:+$empty_runs,}$r"
done

# the launcher: ecp.start (created_at) to the first part's claim, per run
launcher_ms=$(tpsql -At -c "SELECT extract(epoch FROM min(p.started_at) - r.created_at) * 1000
	FROM ecp.run r JOIN ecp.part p ON p.run_id = r.id WHERE r.id IN ($(paste -sd, "$work/ecp_runs")) GROUP BY r.id" | stats)
empty_part_ms=$(tpsql -At -c "SELECT extract(epoch FROM finished_at - started_at) * 1000 FROM ecp.part WHERE run_id IN ($empty_runs)" | stats)
read -r first_med first_lo first_hi first_parts interval <<<"$(part_overhead "$(paste -sd, "$work/ecp_runs")")"
copy_med=$(stats <"$work/copy_ms" | cut -d' ' -f1)
ecp_med=$(stats <"$work/ecp_ms" | cut -d' ' -f1)
empty_med=$(stats <"$work/empty_slot_ms" | cut -d' ' -f1)

echo "== 16 x 16 MariaDB shards: $DBS databases x $((TABLES / DBS)) tables, $rows rows (loaded in $load_s s), mysql_fdw, batch_size $batch, parallelism $par, $rounds rounds in alternating order: medians (min to max) =="
awk -v rows="$rows" -v tables="$TABLES" -v copy="$(stats <"$work/copy_ms")" -v ecp="$(stats <"$work/ecp_ms")" 'BEGIN {
	split(copy, c, " "); split(ecp, e, " ")
	printf "baseline  COPY row_to_json over the UNION ALL of the %d foreign tables: %6.1f s (%.1f-%.1f)  %9.0f rows/s\n", tables, c[1] / 1000, c[2] / 1000, c[3] / 1000, rows / (c[1] / 1000)
	printf "ecp       %d parts -> esd --discard (ecp.start to finished):        %6.1f s (%.1f-%.1f)  %9.0f rows/s\n", tables, e[1] / 1000, e[2] / 1000, e[3] / 1000, rows / (e[1] / 1000)
}'
verdict "16x16 ecp parallelism $par / COPY over UNION ALL" \
	"$(paste -d ' ' "$work/ecp_ms" "$work/copy_ms" | awk '{ print $1 / $2 }' | stats)" "<=" 0.8 x "(time ratio, each round's own)"
verdict "16x16 slot time per empty part" "$(stats <"$work/empty_slot_ms")" "<=" 5 " ms" \
	"(wall x $par / $TABLES parts, $rounds runs)" "%.1f"
awk -v l="$launcher_ms" -v e="$empty_part_ms" -v f="$first_med $first_lo $first_hi $first_parts $interval" \
	-v kB="$(awk '$1 > m { m = $1 } END { print m + 0 }' "$work/ecp_rss")" -v procs="$(awk '$2 > m { m = $2 } END { print m + 0 }' "$work/ecp_rss")" 'BEGIN {
	split(l, a, " "); split(e, b, " "); split(f, c, " ")
	printf "per part  claim (started_at) to first checkpoint %.1f ms median (%.1f to %.1f, %d parts); then %.1f ms between checkpoints (no target)\n", c[1], c[2], c[3], c[4], c[5]
	printf "empty     a part of no row: %.1f ms median from its claim to its end (%.1f to %.1f)\n", b[1], b[2], b[3]
	printf "launcher  ecp.start to the first part'"'"'s claim: %.1f ms median (%.1f to %.1f)\n", a[1], a[2], a[3]
	printf "memory    worker peak RssAnon over the runs: %.1f MB (up to %d worker processes seen a run)\n", kB / 1024, procs
}'
# an extrapolation to 10^9 rows from the median run
awk -v rows="$rows" -v tables="$TABLES" -v copy="$copy_med" -v ecp="$ecp_med" -v empty="$(awk -v m="$empty_med" -v n="$TABLES" -v par="$par" 'BEGIN { print m * n / par }')" 'BEGIN {
	s = 1e9 / (rows / (ecp / 1000))
	printf "10^9 rows at %.0f rows/s (assumes time linear in rows: same per-row cost, %d parts): %.0f s = %.1f h (COPY: %.1f h)\n", rows / (ecp / 1000), tables, s, s / 3600, 1e9 / (rows / (copy / 1000)) / 3600
	if (ecp > empty) {
		s2 = 1e9 / (rows / ((ecp - empty) / 1000)) + empty / 1000
		printf "          the same with the %d parts'"'"' fixed cost (the empty task, %.1f s) not scaled: %.0f s = %.1f h\n", tables, empty / 1000, s2, s2 / 3600
	}
}'
