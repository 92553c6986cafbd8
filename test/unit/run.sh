#!/usr/bin/env bash
# Build and run the unit tests of src/http_client.c and src/bulk_response.c.
# Prints TAP; exits non-zero when a test fails.
#
#   test/unit/run.sh              # as any user; builds test/esd/esd if missing
#   VALGRIND=1 test/unit/run.sh   # under valgrind (leaks are errors; no timing check)
#   ESD_BIN=/path/to/esd test/unit/run.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ -z "${ESD_BIN:-}" ]; then
	ESD_BIN="$root/test/esd/esd"
	if [ ! -x "$ESD_BIN" ]; then
		make -s -C "$root/test/esd" >&2
	fi
fi
export ESD_BIN

make -s -C "$here" sink_test >&2

if [ -n "${VALGRIND:-}" ]; then
	export UNIT_NO_PERF=1
	exec valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible \
		--errors-for-leak-kinds=definite,indirect,possible --error-exitcode=9 \
		"$here/sink_test"
fi
exec "$here/sink_test"
