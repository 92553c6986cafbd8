#!/usr/bin/env bash
# make bench: every benchmark, each reporting figures against a baseline
# measured in the same run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# the _bulk response scanner against jansson alone (no server needed)
src="$here/../../src/lib"
cc -O2 -I "$src" -o "${TMPDIR:-/tmp}/ecp_bulk_parse" "$here/bulk_parse.c" "$src/bulk_response.c" \
	"$src/bulk_scan.c" "$src/error_summary.c" -ljansson
"${TMPDIR:-/tmp}/ecp_bulk_parse" 5000 200
rm -f "${TMPDIR:-/tmp}/ecp_bulk_parse"
bash "$here/esd_throughput.sh"
bash "$here/sync_throughput.sh"
bash "$here/mysql_paging.sh"
bash "$here/mysql_sharded.sh"
bash "$here/follow.sh"
bash "$here/verify.sh"
