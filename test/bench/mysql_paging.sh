#!/usr/bin/env bash
# Benchmark: ecp reading MariaDB through mysql_fdw, by key windows (what
# paging 'auto' does for foreign tables) and by keyset pages (a pushed
# ORDER BY ... LIMIT per page), into the stand-in in discard mode, against
# a baseline in the same run:
#   COPY (SELECT row_to_json(o) FROM orders o) TO '/dev/null'
# over the same foreign table, i.e. one streaming scan with nothing sent.
# Usage: test/bench/mysql_paging.sh [rows] [batch_size]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
rows=${1:-200000}
batch=${2:-5000}
. "$top/test/scripts/throwaway.sh"
. "$here/bench_lib.sh"
make -s -C "$top" all >/dev/null

throwaway_init mysqlbench
bench_mariadb_start
my -e "DROP TABLE IF EXISTS orders;
	CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR(64) NOT NULL,
	  amount DECIMAL(12,2) NOT NULL, created_at DATETIME NOT NULL, note VARCHAR(100) NULL)
	  ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
	INSERT INTO orders SELECT seq, CONCAT('cust-', seq % 997), (seq * 7919 % 1000000) / 100,
	  TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq MINUTE, IF(seq % 3 = 0, NULL, CONCAT('note ', seq))
	  FROM seq_1_to_$rows;"

throwaway_start_pg
throwaway_start_esd --discard
tpsql >/dev/null <<SQL
CREATE EXTENSION ecp;
CREATE EXTENSION mysql_fdw;
CREATE SERVER shard FOREIGN DATA WRAPPER mysql_fdw
  OPTIONS (host '127.0.0.1', port '$ECP_MYSQL_PORT', character_set 'utf8mb4');
CREATE USER MAPPING FOR CURRENT_USER SERVER shard
  OPTIONS (username '$ECP_MYSQL_USER', password '$ECP_MYSQL_PASSWORD');
IMPORT FOREIGN SCHEMA $ECP_MYSQL_DB LIMIT TO (orders) FROM SERVER shard INTO public;
SELECT ecp.create_consumer('bench', '$es_url');
SELECT ecp.create_task('windows', 'bench', 'windows', query => 'SELECT * FROM orders',
                       options => '{"batch_size": $batch}');
SELECT ecp.create_task('keyset', 'bench', 'keyset', query => 'SELECT * FROM orders',
                       options => '{"batch_size": $batch, "paging": "keyset"}');
SQL

run_ms() { # task -> milliseconds of its run
	local r state
	r=$(tpsql -At -c "SELECT ecp.start('$1')")
	tpsql_wait "SELECT state IN ('succeeded', 'failed', 'cancelled') FROM ecp.run WHERE id = $r" 3600 ||
		{ echo "the $1 run did not finish" >&2; exit 1; }
	state=$(tpsql -At -c "SELECT state FROM ecp.run WHERE id = $r")
	[ "$state" = succeeded ] || { echo "the $1 run $state" >&2; exit 1; }
	tpsql -At -c "SELECT round(extract(epoch FROM finished_at - started_at) * 1000) FROM ecp.run WHERE id = $r"
}
ms_of "COPY (SELECT row_to_json(o) FROM orders o) TO '/dev/null'" >/dev/null
base_ms=$(ms_of "COPY (SELECT row_to_json(o) FROM orders o) TO '/dev/null'")
windows_ms=$(run_ms windows)
keyset_ms=$(run_ms keyset)

awk -v rows="$rows" -v batch="$batch" -v base="$base_ms" -v win="$windows_ms" -v key="$keyset_ms" 'BEGIN {
	printf "MariaDB through mysql_fdw: %d rows, batch_size %d\n", rows, batch
	printf "baseline  COPY row_to_json over the foreign table: %8.0f ms\n", base
	printf "ecp, key windows (paging auto):                 %8.0f ms  ratio %.2f\n", win, win / base
	printf "ecp, keyset pages (paging keyset):              %8.0f ms  ratio %.2f\n", key, key / base
}'
