#!/usr/bin/env bash
# make test: install what is missing, build, install, then run every suite
# (pg_regress, the extension's TAP tests, the stand-in's tests) as an
# unprivileged user in a copy of the tree, with a throwaway MariaDB.
# Prints "N passed, N failed, N skipped" last; exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"

bash test/scripts/install-deps.sh || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }
. "$here/common.sh"

echo "==== build and install ===="
if ! make -s all || ! make -s install; then
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
if [ "$(id -u)" = 0 ]; then chown -R "$ECP_TEST_USER" "$work"; fi

echo "==== starting a throwaway MariaDB ===="
if as_test_user bash "$work/tree/test/scripts/mariadb.sh" start "$mysql_dir"; then
	set -a; . "$mysql_dir/env"; set +a
else
	echo "mariadb 0 1" >>"$counts"
fi

as_test_user env ${ECP_SUITES:+ECP_SUITES="$ECP_SUITES"} ${ECP_TAP_FILES:+ECP_TAP_FILES="$ECP_TAP_FILES"} \
	${ECP_MYSQL_PORT:+ECP_MYSQL_HOST="$ECP_MYSQL_HOST" ECP_MYSQL_PORT="$ECP_MYSQL_PORT" \
	ECP_MYSQL_SOCKET="$ECP_MYSQL_SOCKET" ECP_MYSQL_USER="$ECP_MYSQL_USER" \
	ECP_MYSQL_PASSWORD="$ECP_MYSQL_PASSWORD" ECP_MYSQL_DB="$ECP_MYSQL_DB"} \
	bash "$work/tree/test/scripts/run-suites.sh" "$counts"

echo "==== summary ===="
passed=0 failed=0 skipped=0
while read -r suite p f s; do
	s=${s:-0}
	printf '  %-8s %6d passed, %d failed, %d skipped\n' "$suite" "$p" "$f" "$s"
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done <"$counts"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ] && status=0
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
