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
# Prints: seconds, rows/s and the ratio ecp / COPY; the launcher's overhead
# (ecp.start to the first part's started_at) and what a part costs when it
# reads no row (a second task of 256 queries ... WHERE id < 0); and an
# extrapolation to 10^9 rows from the measured rows/s, assuming time
# linear in rows (same per-row cost, 256 parts, per-part overhead as
# measured here and so negligible at that size).
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
DBS=16
TABLES=256
WAIT=${ECP_BENCH_TIMEOUT:-1800}    # seconds, for each run and statement
. "$top/test/scripts/throwaway.sh"

throwaway_init mysqlsharded
mysql_dir="$work/mariadb"
mkdir -p "$mysql_dir"
[ "$(id -u)" = 0 ] && chown "$ECP_TEST_USER" "$mysql_dir"
stop_all() {
	as_test_user bash "$top/test/scripts/mariadb.sh" stop "$mysql_dir" >/dev/null 2>&1 || true
	throwaway_cleanup
}
trap stop_all EXIT
as_test_user bash "$top/test/scripts/mariadb.sh" start "$mysql_dir" >/dev/null
set -a; . "$mysql_dir/env"; set +a
my() { as_test_user mariadb --no-defaults --protocol=socket --socket="$ECP_MYSQL_SOCKET" \
	-u"$ECP_MYSQL_USER" -p"$ECP_MYSQL_PASSWORD" "$ECP_MYSQL_DB" "$@"; }

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
ms_of() { # milliseconds psql's \timing reports for one statement
	tpsql -At -c "SET statement_timeout = '${WAIT}s'" -c '\timing on' -c "$1" |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1
}
run_of() { # task -> run id, once it succeeded
	local r state
	r=$(tpsql -At -c "SELECT ecp.start('$1')")
	tpsql_wait "SELECT state IN ('succeeded', 'failed', 'cancelled') FROM ecp.run WHERE id = $r" "$WAIT" ||
		{ echo "the $1 run did not finish in ${WAIT}s" >&2; exit 1; }
	state=$(tpsql -At -c "SELECT state FROM ecp.run WHERE id = $r")
	[ "$state" = succeeded ] || { echo "the $1 run $state: $(tpsql -At -c "SELECT last_error FROM ecp.run WHERE id = $r")" >&2; exit 1; }
	echo "$r"
}

ms_of "$copy_sql" >/dev/null
copy_ms=$(ms_of "$copy_sql")
run=$(run_of sharded)
empty=$(run_of empty)

# ecp: from ecp.start (the run's created_at) to its end; the launcher's
# overhead up to the first part's start; every row processed, and sent
read -r ecp_ms first_ms processed nparts <<<"$(tpsql -At -F ' ' -c "
	SELECT round(extract(epoch FROM r.finished_at - r.created_at) * 1000),
	       round(extract(epoch FROM min(p.started_at) - r.created_at) * 1000, 1),
	       sum(p.processed), count(*)
	  FROM ecp.run r JOIN ecp.parts p ON p.run_id = r.id WHERE r.id = $run GROUP BY r.id")"
sent=$(curl -fsS "$es_url/_esd/stats" | sed 's/.*"bulk_items":\([0-9]*\).*/\1/')
[ "$processed" = "$rows" ] && [ "$sent" = "$rows" ] && [ "$nparts" = "$TABLES" ] ||
	{ echo "ecp: $processed processed, $sent sent in $nparts parts, for $rows rows in $TABLES tables" >&2; exit 1; }
read -r empty_ms empty_first_ms empty_part_ms empty_parts <<<"$(tpsql -At -F ' ' -c "
	SELECT round(extract(epoch FROM r.finished_at - r.created_at) * 1000),
	       round(extract(epoch FROM min(p.started_at) - r.created_at) * 1000, 1),
	       round(avg(extract(epoch FROM p.finished_at - p.started_at)) * 1000, 1),
	       count(*) FILTER (WHERE p.processed = 0)
	  FROM ecp.run r JOIN ecp.parts p ON p.run_id = r.id WHERE r.id = $empty GROUP BY r.id")"
[ "$empty_parts" = "$TABLES" ] || { echo "the empty task: $empty_parts parts with no row, not $TABLES" >&2; exit 1; }

awk -v rows="$rows" -v batch="$batch" -v par="$par" -v tables="$TABLES" -v dbs="$DBS" -v loadsec="$load_s" \
	-v copy="$copy_ms" -v ecp="$ecp_ms" -v first="$first_ms" \
	-v empty="$empty_ms" -v efirst="$empty_first_ms" -v epart="$empty_part_ms" 'BEGIN {
	printf "MariaDB %d databases x %d tables, %d rows (loaded in %d s), mysql_fdw, batch_size %d, parallelism %d\n", dbs, tables / dbs, rows, loadsec, batch, par
	printf "baseline  COPY row_to_json over the UNION ALL of the %d foreign tables: %7.1f s  %9.0f rows/s\n", tables, copy / 1000, rows / (copy / 1000)
	printf "ecp       %d parts -> esd --discard (ecp.start to finished):        %7.1f s  %9.0f rows/s  ratio ecp/COPY %.2f\n", tables, ecp / 1000, rows / (ecp / 1000), ecp / copy
	printf "launcher  ecp.start to the first part'"'"'s started_at:                    %7.1f ms\n", first
	printf "empty     %d parts of no row: %.1f s in all, %.1f ms per part per worker slot (%d slots), mean part %.1f ms from started_at to finished_at, first part after %.1f ms\n", tables, empty / 1000, empty * par / tables, par, epart, efirst
	s = 1e9 / (rows / (ecp / 1000))
	printf "10^9 rows at %.0f rows/s (assumes time linear in rows: same per-row cost, %d parts): %.0f s = %.1f h (COPY: %.1f h)\n", rows / (ecp / 1000), tables, s, s / 3600, 1e9 / (rows / (copy / 1000)) / 3600
	if (ecp > empty) {
		s2 = 1e9 / (rows / ((ecp - empty) / 1000)) + empty / 1000
		printf "          the same with the %d parts'"'"' fixed cost (the empty task, %.1f s) not scaled: %.0f s = %.1f h\n", tables, empty / 1000, s2, s2 / 3600
	}
}'
