# Sourced by demo.sh and the benchmarks: a throwaway PostgreSQL cluster with
# ecp preloaded and the Elasticsearch stand-in, both stopped (and the
# directory removed) when the calling script exits, also on failure.
#
#   throwaway_init demo            # $work, cleanup trap
#   throwaway_start_pg [setting...]  # $pg_port; tpsql runs psql against it
#                                  # (settings: postgresql.conf lines, e.g.
#                                  # "wal_level = logical")
#   throwaway_start_esd [--discard]  # $es_url
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

throwaway_init() {
	work=$(mktemp -d "/tmp/ecp-$1.XXXXXX")
	chmod 755 "$work"
	if [ "$(id -u)" = 0 ]; then chown "$ECP_TEST_USER" "$work"; fi
	pgdata="$work/pgdata"
	esd_pid=""
	trap throwaway_cleanup EXIT
	trap 'exit 130' INT TERM
}

throwaway_cleanup() {
	set +e
	if [ -n "$esd_pid" ]; then kill "$esd_pid" 2>/dev/null; wait "$esd_pid" 2>/dev/null; fi
	if [ -f "$pgdata/postmaster.pid" ]; then as_test_user pg_ctl -D "$pgdata" -m fast -w stop >/dev/null; fi
	rm -rf "$work"
}

free_port() {
	perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1",LocalPort=>0)->sockport'
}

throwaway_start_pg() {
	pg_port=$(free_port)
	as_test_user initdb -D "$pgdata" -A trust -E UTF8 --locale=C >"$work/initdb.log"
	cat >>"$pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
shared_preload_libraries = 'ecp'
CONF
	if [ $# -gt 0 ]; then printf '%s\n' "$@" >>"$pgdata/postgresql.conf"; fi
	as_test_user pg_ctl -D "$pgdata" -l "$work/postgres.log" -w start >/dev/null
}

tpsql() { as_test_user psql -X -q -h "$work" -p "$pg_port" -d postgres -v ON_ERROR_STOP=1 "$@"; }

# Builds the stand-in first when it is missing (plain "make" builds only ecp).
throwaway_start_esd() {
	if [ ! -x "$top/test/esd/esd" ]; then
		make -s -C "$top/test/esd" >&2 || return 1
	fi
	"$top/test/esd/esd" --port 0 --port-file "$work/esd.port" "$@" >"$work/esd.log" 2>&1 &
	esd_pid=$!
	for _ in $(seq 1 100); do [ -s "$work/esd.port" ] && break; sleep 0.1; done
	[ -s "$work/esd.port" ] || { echo "esd did not start: $(cat "$work/esd.log")" >&2; return 1; }
	es_url="http://127.0.0.1:$(cat "$work/esd.port")"
}

# Poll (every 0.1 s, up to $2 seconds) until SQL $1 returns t.
tpsql_wait() {
	local deadline=$((SECONDS + $2))
	while [ "$(tpsql -At -c "$1")" != t ]; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.1
	done
}
