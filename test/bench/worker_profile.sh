#!/usr/bin/env bash
# Profile of one ecp worker: N sample orders (as sync_throughput.sh builds
# them) synced with parallelism 1 into the stand-in in discard mode, runs
# times; each run's docs/s, and `perf record -g` of the worker's process
# for the last run, whose top entries (self time) are printed.
# Needs root (perf on another user's process) and ecp installed.
# Usage: test/bench/worker_profile.sh [rows] [runs] [perf_top_lines]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
rows=${1:-1000000}
runs=${2:-3}
lines=${3:-25}
. "$top/test/scripts/throwaway.sh"

throwaway_init profile
# the library the workers map, kept for perf report (another install may
# replace the file before the report reads it)
perf buildid-cache -a "$(pg_config --pkglibdir)/ecp.so" 2>/dev/null || true
throwaway_start_pg
throwaway_start_esd --discard
tpsql -c "CREATE EXTENSION ecp" >/dev/null
tpsql -v rows="$rows" -f "$top/test/scripts/sample_orders.sql" >/dev/null
tpsql -c "VACUUM ANALYZE orders" -c "CHECKPOINT" >/dev/null
tpsql -At -c "SET client_min_messages = warning" -c "SELECT ecp.create_consumer('bench', '$es_url')" >/dev/null
tpsql -At -c "SET client_min_messages = warning" \
	-c "SELECT ecp.create_task('orders', 'bench', 'orders', query => 'SELECT * FROM orders')" >/dev/null
pm=$(head -n 1 "$pgdata/postmaster.pid")

# The pid of the postmaster's child titled "ecp worker", waited for (10 s).
worker_pid() {
	local pid title
	for _ in $(seq 1 200); do
		for pid in $(cat "/proc/$pm/task/$pm/children" 2>/dev/null); do
			title=""
			read -r -d '' title 2>/dev/null <"/proc/$pid/cmdline" || true
			case $title in *"ecp worker"*) echo "$pid"; return 0 ;; esac
		done
		sleep 0.05
	done
	return 1
}

for run in $(seq 1 "$runs"); do
	id=$(tpsql -At -c "SELECT ecp.start('orders')")
	perf_pid=""
	if [ "$run" = "$runs" ] && pid=$(worker_pid); then
		perf record -q -g -o "$work/perf.data" -p "$pid" >/dev/null 2>&1 &
		perf_pid=$!
	fi
	tpsql_wait "SELECT state IN ('succeeded', 'failed', 'cancelled') FROM ecp.run WHERE id = $id" 7200
	tpsql -At -F ' ' -c "SELECT 'run $run:', r.state, p.processed, 'docs,',
	       round(p.processed / extract(epoch FROM r.finished_at - r.started_at)), 'docs/s'
	  FROM ecp.run r JOIN ecp.progress p ON p.run_id = r.id WHERE r.id = $id"
	if [ -n "$perf_pid" ]; then
		tpsql_wait "SELECT pg_catalog.count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'" 60 || true
		kill -INT "$perf_pid" 2>/dev/null || true
		wait "$perf_pid" || true
	fi
done
[ -s "$work/perf.data" ] || { echo "no profile recorded" >&2; exit 1; }
if [ -n "${ECP_PROFILE_OUT:-}" ]; then cp "$work/perf.data" "$ECP_PROFILE_OUT"; fi
echo "self time, top $lines:"
perf report -i "$work/perf.data" --no-children --stdio --sort dso,symbol -g none 2>/dev/null |
	grep -v '^#' | grep -v '^$' | head -n "$lines"
echo "with callees (inclusive), the worker's parts:"
perf report -i "$work/perf.data" --children --stdio --sort symbol -g none 2>/dev/null |
	grep -E '\] (SPI_execute_plan_extended|ExecScan|index_getnext_slot|mdread|row_to_json|ecp_doc_write|to_json|OidOutputFunctionCall|ecp_sink_[a-z_]*|ecp_batch_[a-z_]*|curl_multi_perform|ecp_bulk_[a-z_]*) ' |
	sed 's/  *- *- *$//' | head -n 20
