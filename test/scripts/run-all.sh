#!/usr/bin/env bash
# make test: install what is missing, build, install, then run every suite
# (pg_regress, the real-cluster mode, the extension's TAP tests, the
# stand-in's tests, the unit tests) as an unprivileged user in a copy of
# the tree, with a throwaway MariaDB.  Prints every skipped file or
# assertion with its reason, then "N passed, N failed, N skipped" last;
# exits non-zero on any failure, including a requested suite that never
# reported its counts.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"

bash test/scripts/install-deps.sh || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }
. "$here/common.sh"

# The suites asked for; each one must write its counts line.
suites=${ECP_SUITES:-regress realmode tap esd unit examples}

# The install is the system's (one PostgreSQL, one ecp.so): two runs of
# make test from two trees at once would test each other's build.  One at
# a time; a second one waits here.
exec 9>/tmp/ecp-make-test.lock
if ! flock -n 9; then
	echo "==== waiting for another make test on this machine (/tmp/ecp-make-test.lock) ===="
	flock 9
fi

# ecp itself (the PGXS build), and the stand-in the suites run against:
# plain "make" builds only the extension.
echo "==== build and install ===="
if ! make -s all || ! make -s esd || ! make -s install; then
	echo "build or install failed"
	echo "0 passed, 1 failed, 0 skipped"
	exit 1
fi

work=$(mktemp -d /tmp/ecp-test.XXXXXX)
chmod 755 "$work"
mysql_dir="$work/mariadb"
counts="$work/counts"
status=1

cleanup() {
	if [ -f "$mysql_dir/env" ]; then
		as_test_user bash "$work/tree/test/scripts/mariadb.sh" stop "$mysql_dir" >/dev/null 2>&1
	fi
	if [ "$status" = 0 ] && [ -z "${ECP_KEEP_WORK:-}" ]; then
		rm -rf "$work"
	else
		echo "workspace kept for inspection: $work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A copy the unprivileged user can write (results, tmp_check, logs).
tar -C "$top" --exclude=./tmp_check --exclude=./results --exclude=./.git -cf - . |
	(mkdir -p "$work/tree" && tar -C "$work/tree" -xf -)
mkdir -p "$mysql_dir"
: >"$counts"
: >"$counts.skipped"
if [ "$(id -u)" = 0 ]; then chown -R "$ECP_TEST_USER" "$work"; fi

echo "==== starting a throwaway MariaDB ===="
if as_test_user bash "$work/tree/test/scripts/mariadb.sh" start "$mysql_dir"; then
	set -a; . "$mysql_dir/env"; set +a
else
	echo "mariadb 0 1 0" >>"$counts"
fi

as_test_user env ECP_SUITES="$suites" ${ECP_TAP_FILES:+ECP_TAP_FILES="$ECP_TAP_FILES"} \
	${ECP_MYSQL_PORT:+ECP_MYSQL_HOST="$ECP_MYSQL_HOST" ECP_MYSQL_PORT="$ECP_MYSQL_PORT" \
	ECP_MYSQL_SOCKET="$ECP_MYSQL_SOCKET" ECP_MYSQL_USER="$ECP_MYSQL_USER" \
	ECP_MYSQL_PASSWORD="$ECP_MYSQL_PASSWORD" ECP_MYSQL_DB="$ECP_MYSQL_DB"} \
	bash "$work/tree/test/scripts/run-suites.sh" "$counts"
rc=$?

echo "==== summary ===="
# run-suites.sh exits 0 once it got to the end; anything else (a shell
# error, a signal, the OOM killer) may have cut suites short.
if [ "$rc" != 0 ]; then
	echo "  run-suites.sh exited with status $rc: counted as a failure"
	echo "run-suites 0 1 0" >>"$counts"
fi
# Every requested suite reports, or counts as failed.
for suite in $suites; do
	if ! awk -v s="$suite" '$1 == s { found = 1 } END { exit !found }' "$counts"; then
		echo "  suite $suite was requested but reported no counts: counted as a failure"
		echo "$suite 0 1 0" >>"$counts"
	fi
done

passed=0 failed=0 skipped=0
while read -r suite p f s; do
	p=${p:-0} f=${f:-1} s=${s:-0}
	printf '  %-10s %6d passed, %d failed, %d skipped\n' "$suite" "$p" "$f" "$s"
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done <"$counts"

# What was skipped, and why (also printed by each suite as it ran).
files=$(grep -cv ' #[0-9]*: ' "$counts.skipped")
asserts=$(grep -c ' #[0-9]*: ' "$counts.skipped")
if [ -s "$counts.skipped" ]; then
	echo "  skipped: $files files (whole), $asserts single assertions:"
	sed 's/^/    /' "$counts.skipped"
fi
if [ -n "${ECP_ES_URL:-}" ]; then
	echo "  ECP_ES_URL is set ($ECP_ES_URL): $files files skipped whole (the tests that need the stand-in skip then; listed above)"
fi

[ "$failed" = 0 ] && [ "$passed" -gt 0 ] && status=0
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
