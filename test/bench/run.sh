#!/usr/bin/env bash
# make bench: every benchmark, each reporting figures against a baseline
# measured in the same run; at the end, every figure that has a target,
# with PASS or MISS, and how long each benchmark took.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp "${TMPDIR:-/tmp}/ecp-bench.XXXXXX")
trap 'rm -f "$log"' EXIT
times=""
step() { # command...: run it, its output also into $log, its time into $times
	local start=$SECONDS
	"$@" 2>&1 | tee -a "$log"
	times="$times${times:+, }$(basename "${@: -1}" .sh) $((SECONDS - start)) s"
}
# the _bulk response scanner against jansson alone (no server needed)
src="$here/../../src/lib"
cc -O2 -I "$src" -o "${TMPDIR:-/tmp}/ecp_bulk_parse" "$here/bulk_parse.c" "$src/bulk_response.c" \
	"$src/bulk_scan.c" "$src/error_summary.c" -ljansson
"${TMPDIR:-/tmp}/ecp_bulk_parse" 5000 200
rm -f "${TMPDIR:-/tmp}/ecp_bulk_parse"
# what is measured: the ecp that is installed (make test installs it)
so="$(pg_config --pkglibdir)/ecp.so"
echo "ecp.so installed $(stat -c %y "$so" | cut -c 1-19), sha256 $(sha256sum "$so" | cut -c 1-12); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
step bash "$here/esd_throughput.sh"
step bash "$here/sync_throughput.sh"
step bash "$here/mysql_paging.sh"
step bash "$here/mysql_sharded.sh"
step bash "$here/follow.sh"
step bash "$here/verify.sh"
echo "== targets =="
grep -E '  target .*  (PASS|MISS)' "$log" || true
echo "$(grep -cE '  target .*  PASS' "$log" || true) PASS, $(grep -cE '  target .*  MISS' "$log" || true) MISS; $times; $SECONDS s in all; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
