#!/usr/bin/env bash
# Runs the suites as the unprivileged user, inside the workspace copy of the
# tree.  Appends one "<suite> <passed> <failed> <skipped>" line per suite to
# the counts file ($1), and "<suite> <file>[ #<n>]: <reason>" lines, one per
# skipped file or assertion, to $1.skipped.  run-all.sh sums them and checks
# that every requested suite wrote its line.  Exits 0 when it got to the
# end (the suites' results are in the counts file, not in the exit status).
# ECP_SUITES selects suites (default: all): regress realmode tap esd unit examples.
# ECP_TAP_FILES (e.g. "test/t/030_sync.pl test/t/060_*.pl") narrows the TAP
# suite, and the realmode suite to those of its files.
set -uo pipefail
counts=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
cd "$here/../.."
suites=${ECP_SUITES:-regress realmode tap esd unit examples}

run_regress() {
	local log=regress.log rc passed failed
	make -s installcheck >"$log" 2>&1
	rc=$?
	cat "$log"
	# PostgreSQL 15's pg_regress prints "test NAME ... ok" (or "... FAILED")
	# per test; another format would count nothing, which is a failure.
	passed=$(grep -cE '\.\.\. ok' "$log")
	failed=$(grep -cE '\.\.\. (FAILED|failed)' "$log")
	# pg_regress itself failing (no instance, bad config) is a failure too.
	if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
		echo "regress: make installcheck exited with status $rc but no test failed: counted as a failure"
		failed=1
	fi
	if [ "$passed" = 0 ] && [ "$failed" = 0 ]; then
		echo "regress: no pg_regress test result found in the output: counted as a failure"
		failed=1
	fi
	if [ "$failed" != 0 ] && [ -f regression.diffs ]; then
		echo "---- regression.diffs ----"
		cat regression.diffs
	fi
	echo "regress $passed $failed 0" >>"$counts"
}

run_tap() {
	local label=$1; shift
	local out rc line
	out=$(mktemp)
	ECP_TAP_LIB="$PG_TEST_PERL:$PWD/test/perl" perl test/scripts/tap-run.pl "$label" "$@" | tee "$out"
	line=$(grep '^TAP_COUNTS ' "$out" | tail -n 1)
	if [ -n "$line" ]; then
		echo "${line#TAP_COUNTS }" >>"$counts"
	else
		echo "$label: the harness printed no counts: counted as a failure"
		echo "$label 0 1 0" >>"$counts"
	fi
	sed -n 's/^TAP_SKIPPED //p' "$out" >>"$counts.skipped"
	rm -f "$out"
}

# The real-cluster list: the TAP files that talk to Elasticsearch
# (EsdServer) and do not skip themselves whole at once for want of the
# stand-in (a top-level EsdServer->require_stand_in line).  These are the
# files that really run when ECP_ES_URL names a cluster.
realmode_files() {
	local f
	for f in "$@"; do
		grep -q 'EsdServer' "$f" || continue
		grep -q '^EsdServer->require_stand_in' "$f" && continue
		echo "$f"
	done
}

# The files the realmode suite ran whole (nothing skipped) in this run:
# the TAP suite, when it comes after, leaves them out, as they would only
# pass the same tests against the same stand-in a second time.
ran_whole="$counts.realmode-whole"
: >"$ran_whole"

# The realmode suite's stand-in, stopped also when this script is cut short.
realmode_esd=
trap '[ -z "$realmode_esd" ] || kill "$realmode_esd" 2>/dev/null' EXIT

# ECP_ES_URL=... make test, once, against a stand-in whose control
# endpoints are off (esd --no-control): it answers /_esd/... as a cluster
# answers an unknown endpoint, so a test that reaches for one without
# EsdServer->require_stand_in fails here, not against a user's cluster.
run_realmode() {
	local dir pid port deadline files f
	if [ -n "${ECP_ES_URL:-}" ]; then
		echo "realmode: ECP_ES_URL is set: the TAP suite runs in real-cluster mode against $ECP_ES_URL"
		echo "realmode 0 0 0" >>"$counts"
		return
	fi
	files=$(realmode_files ${ECP_TAP_FILES:-test/t/*.pl})
	if [ -z "$files" ]; then
		echo "realmode: none of the selected TAP files talks to Elasticsearch"
		echo "realmode 0 0 0" >>"$counts"
		return
	fi
	dir=$(mktemp -d)
	test/esd/esd --port 0 --port-file "$dir/port" --no-control >"$dir/esd.log" 2>&1 &
	pid=$!
	realmode_esd=$pid
	deadline=$((SECONDS + 10))
	while [ ! -s "$dir/port" ] && [ "$SECONDS" -lt "$deadline" ] && kill -0 "$pid" 2>/dev/null; do
		sleep 0.05
	done
	port=$(cat "$dir/port" 2>/dev/null)
	if [ -z "$port" ]; then
		echo "realmode: the stand-in did not come up within 10 s:"
		cat "$dir/esd.log"
		kill "$pid" 2>/dev/null
		wait "$pid"
		realmode_esd=
		echo "realmode 0 1 0" >>"$counts"
		rm -rf "$dir"
		return
	fi
	echo "realmode: ECP_ES_URL=http://127.0.0.1:$port (esd --no-control) for" $files
	# shellcheck disable=SC2086
	ECP_ES_URL=http://127.0.0.1:$port run_tap realmode $files
	for f in $files; do
		awk -v f="$f" '$1 == "realmode" && ($2 == f || $2 == f ":") { found = 1 } END { exit !found }' \
			"$counts.skipped" || echo "$f"
	done >"$ran_whole"
	kill "$pid"
	realmode_esd=
	if ! wait "$pid"; then
		echo "realmode: the stand-in did not exit cleanly:"
		cat "$dir/esd.log"
		echo "realmode 0 1 0" >>"$counts"
	fi
	rm -rf "$dir"
}

# The TAP suite's files, but those the realmode suite ran whole.
run_tap_suite() {
	local f files=() left=()
	for f in ${ECP_TAP_FILES:-test/t/*.pl}; do
		if grep -qxF "$f" "$ran_whole"; then left+=("$f"); else files+=("$f"); fi
	done
	if [ ${#left[@]} -gt 0 ]; then
		echo "tap: ${#left[@]} files left out, the realmode suite ran them whole: ${left[*]}"
	fi
	if [ ${#files[@]} -eq 0 ]; then
		echo "tap 0 0 0" >>"$counts"
		return
	fi
	run_tap tap "${files[@]}"
}

for suite in $suites; do
	echo "==== suite: $suite ===="
	case $suite in
	regress) run_regress ;;
	tap) run_tap_suite ;;
	realmode) run_realmode ;;
	unit) ESD_BIN=$PWD/test/esd/esd run_tap unit test/unit/run.sh ;;
	esd) ECP_ES_URL= ESD_BIN=$PWD/test/esd/esd run_tap esd test/esd/t/*.t ;;
	examples) ECP_ES_URL= ESD_BIN=$PWD/test/esd/esd run_tap examples test/examples/t/*.t ;;
	*) echo "unknown suite $suite"; echo "$suite 0 1 0" >>"$counts" ;;
	esac
done
exit 0
