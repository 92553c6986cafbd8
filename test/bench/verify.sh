#!/usr/bin/env bash
# Benchmark: a verify run against a full sync of the same rows, in the same
# command (issue 23: a verify should cost about what a sync does, not more).
#
# Table items ($rows rows) is synced once into the stand-in (which keeps
# the documents: a verify reads them back), then, for $rounds rounds in
# alternating order: a full run of task items (ecp.start: _bulk of every
# row), a verify (ecp.verify: _mget of every page, every document
# compared) and a verify with extra (plus the walk of every id of the
# index through a point in time, each page looked up in the table).  Each
# time is the run's created_at to finished_at; the ratios are the medians
# of the rounds' ratios (each verify against the sync of its own round).
# Every verify must find no drift (the index equals the table), or the
# benchmark fails.
# Usage: test/bench/verify.sh [rows] [rounds]   (1000000, 3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
rows=${1:-1000000}
rounds=${2:-3}
. "$top/test/scripts/throwaway.sh"
. "$here/bench_lib.sh"
make -s -C "$top" all >/dev/null

fail() { echo "verify benchmark: $*" >&2; exit 1; }
throwaway_init verifybench
trap 'throwaway_cleanup' EXIT
throwaway_start_pg
throwaway_start_esd --no-refresh-timer
tpsql -c "CREATE EXTENSION ecp" >/dev/null
tpsql <<SQL >/dev/null
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric NOT NULL,
                    qty integer NOT NULL, added timestamptz NOT NULL);
INSERT INTO items SELECT g, 'item ' || g, (g % 1000) / 10.0, g % 100, '2026-01-01'::timestamptz + g * interval '1 s'
  FROM generate_series(1, $rows) g;
VACUUM ANALYZE items;
SET client_min_messages = warning;
SELECT ecp.create_consumer('bench', '$es_url');
SELECT ecp.create_task('items', 'bench', 'items', query => 'SELECT * FROM items');
SQL

# Start a run with $1 (SQL returning its id), wait for it; prints
# "milliseconds drift" (drift: missing + stale + extra, 0 for a sync).
run_ms() {
	local out state ms drift
	out=$({ bench_wait_run "$1" 1200
		echo "SELECT r.state, round(extract(epoch FROM r.finished_at - r.created_at) * 1000),
		             coalesce((SELECT missing + stale + extra FROM ecp.drift_summary s WHERE s.run_id = r.id), 0)
		        FROM ecp.run r WHERE r.id = :run;"; } | tpsql -At -F ' ')
	read -r state ms drift <<<"$out"
	[ "$state" = succeeded ] || fail "run of '$1': $state"
	[ "$drift" = 0 ] || fail "run of '$1' found $drift drifted documents in an index equal to its source"
	echo "$ms"
}

sync='ecp.start('"'"'items'"'"')'
verify='ecp.verify('"'"'items'"'"')'
extra='ecp.verify('"'"'items'"'"', '"'"'{"extra": true}'"'"')'
run_ms "$sync" >/dev/null   # the first load (the index is empty before it)
curl -fsS -X POST "$es_url/items/_refresh" >/dev/null

median() { stats | cut -d' ' -f1; }
: >"$work/sync" >"$work/verify" >"$work/extra" >"$work/r_verify" >"$work/r_extra"
for round in $(seq 1 "$rounds"); do
	if [ $((round % 2)) = 1 ]; then
		s=$(run_ms "$sync"); v=$(run_ms "$verify"); e=$(run_ms "$extra")
	else
		e=$(run_ms "$extra"); v=$(run_ms "$verify"); s=$(run_ms "$sync")
	fi
	echo "$s" >>"$work/sync"; echo "$v" >>"$work/verify"; echo "$e" >>"$work/extra"
	awk -v a="$v" -v b="$s" 'BEGIN { printf "%.3f\n", a / b }' >>"$work/r_verify"
	awk -v a="$e" -v b="$s" 'BEGIN { printf "%.3f\n", a / b }' >>"$work/r_extra"
	printf 'verify bench round %d: sync %d ms, verify %d ms, verify with extra %d ms\n' "$round" "$s" "$v" "$e"
done
printf '== verify: %d rows, %d rounds (medians) ==\n' "$rows" "$rounds"
printf 'full sync            %8.0f ms  %9.0f docs/s\n' "$(median <"$work/sync")" "$(awk -v n="$rows" -v ms="$(median <"$work/sync")" 'BEGIN { print n / ms * 1000 }')"
printf 'verify               %8.0f ms  %9.0f docs/s  ratio to sync %.2f (target about 1)\n' \
	"$(median <"$work/verify")" "$(awk -v n="$rows" -v ms="$(median <"$work/verify")" 'BEGIN { print n / ms * 1000 }')" "$(median <"$work/r_verify")"
printf 'verify with extra    %8.0f ms  %9.0f docs/s  ratio to sync %.2f (the walk of every id on top)\n' \
	"$(median <"$work/extra")" "$(awk -v n="$rows" -v ms="$(median <"$work/extra")" 'BEGIN { print n / ms * 1000 }')" "$(median <"$work/r_extra")"
printf 'ratios per round: verify %s; with extra %s\n' "$(paste -sd' ' "$work/r_verify")" "$(paste -sd' ' "$work/r_extra")"
