#!/usr/bin/env bash
# Build and run the unit tests of the plain-C parts of ecp (see Makefile):
# every program prints TAP with its plan last; this merges them into one
# stream, numbered through, with one plan at the end.  Exits non-zero when
# a test fails or a program fails (a crash is never a silent pass).
#
#   test/unit/run.sh              # as any user; builds test/esd/esd if missing
#   VALGRIND=1 test/unit/run.sh   # under valgrind (leaks are errors; no timing check)
#   ESD_BIN=/path/to/esd test/unit/run.sh
#   PROGRAMS="file_reader_test" test/unit/run.sh   # only some of the programs
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
read -r -a programs <<< "${PROGRAMS:-sink_test host_match_test hostile_body_test file_reader_test http_transport_test es_answers_test line_id_test contract_test json_build_test pgoutput_test pgoutput_real_test json_compare_test verify_answers_test}"

# only sink_test talks to the Elasticsearch stand-in
if [[ " ${programs[*]} " == *" sink_test "* ]] && [ -z "${ESD_BIN:-}" ]; then
	ESD_BIN="$root/test/esd/esd"
	if [ ! -x "$ESD_BIN" ]; then
		make -s -C "$root/test/esd" >&2
	fi
fi
export ESD_BIN="${ESD_BIN:-}"
# file_reader_test starts test/scripts/file-server.pl with perl
export FILE_SERVER="${FILE_SERVER:-$root/test/scripts/file-server.pl}"

make -s -C "$here" "${programs[@]}" >&2

run_one() {
	local program=$1
	if [ -n "${VALGRIND:-}" ]; then
		# sink_test and hostile_body_test skip their elapsed-time bounds,
		# file_reader_test its maxrss bound (and reads 5 MB, not 50),
		# es_answers_test and line_id_test both (and scan 4 MiB, not 64),
		# json_compare_test and verify_answers_test both (the latter reads
		# 4 MiB, not 64)
		export UNIT_NO_PERF=1
		valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible \
			--errors-for-leak-kinds=definite,indirect,possible --error-exitcode=9 \
			"$here/$program"
	else
		"$here/$program"
	fi
}

run_all() {
	local status=0 program
	for program in "${programs[@]}"; do
		echo "# ---- $program"
		if ! run_one "$program"; then
			echo "# $program exited with a failure"
			status=1
		fi
	done
	return $status
}

# pipefail: the exit status is run_all's when a program failed
run_all | awk '
	/^(not )?ok [0-9]+/ { n++; sub(/ok [0-9]+/, "ok " n); print; next }
	/^1\.\.[0-9]+/ { next }
	{ print }
	/^# .* exited with a failure$/ { failed = 1 }
	END { if (failed) { n++; print "not ok " n " - a test program failed" } print "1.." n }'
