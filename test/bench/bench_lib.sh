# shellcheck shell=bash
# Sourced by the benchmarks after test/scripts/throwaway.sh: what more than
# one of them measures with.  Everything here reads the running throwaway
# cluster ($work, tpsql): it measures whatever ecp is installed.
#
#   ms_of SQL [timeout_s]      milliseconds psql's \timing gives one statement
#   stats <lines               "median min max" of numbers, one a line
#   verdict NAME VALUE OP T    one figure with its target: PASS or MISS
#   bench_wait_run START_SQL   a psql script: start a run, wait for its end
#   bench_sampled_run TASK S Q a run waited for, its workers' peak RssAnon
#   rss_sampler STOP SECONDS   peak RssAnon of ecp workers until STOP exists
#   bench_sessions_install     bench.sessions(queries): N statements in N
#                              sessions at once (dblink), wall milliseconds
#   part_events_install        bench.part_event: each claim, checkpoint, end
#                              of a part (a trigger on ecp.part)
#   part_overhead RUN_IDS      claim to first checkpoint, checkpoint interval
#   bench_mariadb_start        MariaDB in $work/mariadb (127.0.0.1, stopped
#                              on exit), its $ECP_MYSQL_* and my (its client)

ms_of() { # SQL [timeout_s]: milliseconds psql's \timing reports for one statement
	tpsql -At -c "SET statement_timeout = '${2:-0}s'" -c '\timing on' -c "$1" |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1
}

# "median min max" of the numbers on stdin, one a line (plain awk: no asort).
stats() {
	sort -g | awk 'NF { v[++n] = $1 } END {
		if (n == 0) { print "0 0 0"; exit }
		med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		print med, v[1], v[n] }'
}

# One figure against its target, one line:
#   verdict "ecp p1 / limit" "0.82 0.78 0.85" ">=" 0.9 [unit] [note] [format]
# (value: "median min max" or one number, anything else: nothing measured;
# op: >=, <=, <; format: printf's, %.2f by default)
verdict() {
	local name=$1 value=$2 op=$3 target=$4 unit=${5:-} note=${6:-} fmt=${7:-%.2f}
	awk -v name="$name" -v value="$value" -v op="$op" -v t="$target" -v unit="$unit" -v note="$note" -v fmt="$fmt" 'BEGIN {
		n = split(value, v, " ")
		m = v[1] + 0
		ok = (op == ">=") ? m >= t : (op == "<=") ? m <= t : m < t
		if (v[1] !~ /^[-+]?[0-9.]+$/) {   # nothing measured: never a PASS
			printf "%-46s %8s  target %s %s%s  MISS  (nothing measured)%s\n", name, "n/a", op, t, unit, note != "" ? "  " note : ""
			exit
		}
		spread = n >= 3 ? sprintf(" (" fmt " to " fmt ")", v[2], v[3]) : ""
		printf "%-46s " fmt "%s%-18s target %s %s%s  %s%s\n", name, m, unit, spread, op, t, unit,
			ok ? "PASS" : "MISS", note != "" ? "  " note : ""
	}'
}

# A psql script that starts a run with START_SQL (an expression giving the
# run's id), waits for its end inside the same session (no polling
# processes; bounded by $2 seconds, 7200 by default) and leaves its id in
# the psql variable :run, for the caller's query that follows.
bench_wait_run() {
	cat <<SQL
SELECT $1 AS run \\gset
SELECT set_config('bench.run', :'run', false) \\g /dev/null
DO \$\$ BEGIN
	WHILE NOT EXISTS (SELECT FROM ecp.run WHERE id = current_setting('bench.run')::bigint
	                  AND state IN ('succeeded', 'failed', 'cancelled')) LOOP
		IF clock_timestamp() - now() > interval '${2:-7200} seconds' THEN RAISE EXCEPTION 'the run did not finish'; END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END \$\$;
SQL
}

# Start a run of task $1 and wait for it in one psql session (at most $2
# seconds), its workers' peak RssAnon sampled meanwhile; then query $3
# over :run (the run's id).  Prints "peak_kB processes" and $3's row, or
# "peak_kB processes failed" when psql failed.
bench_sampled_run() {
	local stop="$work/rss.$1" sampler out
	rm -f "$stop" "$stop.out"
	rss_sampler "$stop" "$2" &
	sampler=$!
	out=$({ bench_wait_run "ecp.start('$1')" "$2"; echo "$3"; } | tpsql -At -F ' ') || true
	touch "$stop"
	wait "$sampler" || true
	echo "$(cat "$stop.out" 2>/dev/null || echo "0 0") ${out:-failed}"
}

# Peak RssAnon (kB) of the ecp workers, sampled every 0.2 s until $1 exists
# (or $work is gone, or $2 seconds have passed); writes "peak_kB processes"
# to $1.out.  Workers are the postmaster's children titled "ecp worker ..."
# (bgw_name; their backend_type is 'ecp worker').
rss_sampler() {
	local stop=$1 end=$((SECONDS + $2)) pm pid title k v max=0 seen=" "
	pm=$(head -n 1 "$pgdata/postmaster.pid")
	while [ -d "$work" ] && [ ! -e "$stop" ] && [ $SECONDS -lt "$end" ]; do
		for pid in $(cat "/proc/$pm/task/$pm/children" 2>/dev/null); do
			title=""
			read -r -d '' title 2>/dev/null <"/proc/$pid/cmdline" || true
			case $title in *"ecp worker"*) ;; *) continue ;; esac
			case $seen in *" $pid "*) ;; *) seen="$seen$pid " ;; esac
			while read -r k v _; do
				if [ "$k" = RssAnon: ]; then [ "$v" -gt "$max" ] && max=$v; break; fi
			done 2>/dev/null <"/proc/$pid/status" || true
		done
		sleep 0.2
	done
	set -- $seen
	echo "$max $#" >"$stop.out"
}

# bench.sessions(queries text[]): each statement in a session of its own
# (dblink connections opened beforehand), all sent at once; the wall
# milliseconds from just before the first is sent to the end of the last.
# The sessions stay open between calls (one backend each, warm).
bench_sessions_install() {
	tpsql >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE SCHEMA IF NOT EXISTS bench;
CREATE OR REPLACE FUNCTION bench.sessions(queries text[]) RETURNS double precision
LANGUAGE plpgsql SET search_path = public, pg_catalog AS \$\$
DECLARE
	t0 timestamptz;
	i integer;
BEGIN
	FOR i IN 1 .. cardinality(queries) LOOP
		IF NOT coalesce('s' || i = ANY (dblink_get_connections()), false) THEN
			PERFORM dblink_connect('s' || i, 'host=$work port=$pg_port dbname=postgres');
		END IF;
	END LOOP;
	t0 := clock_timestamp();
	FOR i IN 1 .. cardinality(queries) LOOP
		PERFORM dblink_send_query('s' || i, queries[i]);
	END LOOP;
	FOR i IN 1 .. cardinality(queries) LOOP
		-- the statement's result, then the empty one that ends it
		PERFORM * FROM dblink_get_result('s' || i) AS r(status text);
		PERFORM * FROM dblink_get_result('s' || i) AS r(status text);
	END LOOP;
	RETURN extract(epoch FROM clock_timestamp() - t0) * 1000;
END \$\$;
SQL
}

# bench.part_event: a row for each claim, checkpoint and end of a part, at
# the moment ecp's own UPDATE of ecp.part runs (clock_timestamp() inside
# that statement): the claim sets started_at, each checkpoint adds one to
# batches.  One row a page: nothing next to a page's cost.
part_events_install() {
	tpsql >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS bench;
CREATE UNLOGGED TABLE bench.part_event (run_id bigint, part_no integer, batches bigint,
                                        state text, at timestamptz);
CREATE FUNCTION bench.note_part_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
	INSERT INTO bench.part_event VALUES (NEW.run_id, NEW.part_no, NEW.batches, NEW.state, clock_timestamp());
	RETURN NULL;
END $$;
CREATE TRIGGER bench_part_event AFTER UPDATE ON ecp.part FOR EACH ROW
  WHEN (OLD.batches IS DISTINCT FROM NEW.batches OR OLD.started_at IS DISTINCT FROM NEW.started_at
        OR OLD.state IS DISTINCT FROM NEW.state)
  EXECUTE FUNCTION bench.note_part_event();
SQL
}

# Of the parts of runs $1 (a comma-separated list of ids) that sent at least
# one page: "claim_to_first_ms_median min max parts interval_ms_median":
# from the part's claim (its started_at) to its first checkpoint (the
# first page read, sent, answered and recorded), and the median time
# between two checkpoints of a part after that (one page in steady state).
part_overhead() {
	tpsql -At -F ' ' -c "
	WITH firsts AS (
		SELECT extract(epoch FROM min(e.at) FILTER (WHERE e.batches = 1) - p.started_at) * 1000 AS ms
		  FROM ecp.part p JOIN bench.part_event e USING (run_id, part_no)
		 WHERE p.run_id IN ($1) AND p.batches > 0
		 GROUP BY p.run_id, p.part_no, p.started_at),
	gaps AS (
		SELECT extract(epoch FROM e.at - lag(e.at) OVER w) * 1000 AS ms, e.batches
		  FROM bench.part_event e
		 WHERE e.run_id IN ($1) AND e.batches > 0 AND e.state = 'running'
		WINDOW w AS (PARTITION BY e.run_id, e.part_no ORDER BY e.at))
	SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 1),
	       round(min(ms)::numeric, 1), round(max(ms)::numeric, 1), count(*),
	       (SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 1)
	          FROM gaps WHERE batches > 1 AND ms IS NOT NULL)
	  FROM firsts"
}

# MariaDB in $work/mariadb (test/scripts/mariadb.sh: 127.0.0.1 only), stopped
# with the rest on exit; its settings in $ECP_MYSQL_*, my runs its client.
bench_mariadb_start() {
	mysql_dir="$work/mariadb"
	mkdir -p "$mysql_dir"
	if [ "$(id -u)" = 0 ]; then chown "$ECP_TEST_USER" "$mysql_dir"; fi
	trap 'as_test_user bash "$top/test/scripts/mariadb.sh" stop "$mysql_dir" >/dev/null 2>&1 || true; throwaway_cleanup' EXIT
	as_test_user bash "$top/test/scripts/mariadb.sh" start "$mysql_dir" >/dev/null
	set -a; . "$mysql_dir/env"; set +a
}
my() { as_test_user mariadb --no-defaults --protocol=socket --socket="$ECP_MYSQL_SOCKET" \
	-u"$ECP_MYSQL_USER" -p"$ECP_MYSQL_PASSWORD" "$ECP_MYSQL_DB" "$@"; }
