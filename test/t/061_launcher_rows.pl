# The launcher's pass survives any row, and its SQL cannot be hijacked
# through its search_path:
# - a consumer with rate_limit 1e400 and a task with {"max_retries": "x"}
#   (as an older version or a superuser could have left them) do not stop
#   the scheduling of anybody's runs, and the launcher keeps running;
# - the non-superuser owner of the launcher's database plants
#   public.make_interval(secs numeric) and public./(bigint, numeric), which
#   win over pg_catalog's for a caller with the default search_path; the
#   launcher recovers a part (the path that once used both) and never calls
#   them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('a sink for the runs');
my $node = EcpTest::new_node('rows', conf => [ 'ecp.max_workers = 2', 'ecp.recovery_timeout = 2', 'log_min_messages = warning' ]);
my $es = EsdServer->start(discard => 1);
my $url = $es->url;
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '$url')");
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 500) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id); GRANT SELECT ON items TO PUBLIC');
my $launcher = $node->safe_psql('postgres', 'SELECT ecp.launcher_pid()');
ok($launcher, "the launcher runs ($launcher)");

# --- bad rows ------------------------------------------------------------------
# Written past this version's checks (its triggers; session_replication_role
# turns them off), as rows of an older version would be.
$node->safe_psql('postgres', qq{
SET session_replication_role = replica;
INSERT INTO ecp.consumer (name, kind, url, options)
     VALUES ('huge', 'elasticsearch', '$url', '{"rate_limit": 1e400}');
INSERT INTO ecp.task (name, consumer_id, index_name, query, options, owner)
     SELECT 'bad', id, 'bad', 'SELECT id FROM items',
            '{"id_column": "id", "max_retries": "x", "retry_base_ms": "y", "retry_max_ms": 1e400, "rate_limit": "z"}', owner
       FROM ecp.consumer WHERE name = 'huge';
});
is($node->safe_psql('postgres', "SELECT options->>'max_retries' FROM ecp.task WHERE name = 'bad'"), 'x',
	'the bad task row is there');

# Its run is running and its heartbeat is old, as after a crash: the pass
# reads every option of it (recovery back-off, deaths, rates).
my $bad_run = $node->safe_psql('postgres', q{
BEGIN;
CREATE TEMP TABLE r AS SELECT ecp.start('bad') AS id;
UPDATE ecp.run SET state = 'running' WHERE id = (SELECT id FROM r);
UPDATE ecp.part SET state = 'running', heartbeat_at = now() - interval '1 day', recoveries = 3
 WHERE run_id = (SELECT id FROM r);
COMMIT;
SELECT id FROM r;
});
ok($bad_run, "the bad task has a running run ($bad_run)");

$node->safe_psql('postgres',
	"SELECT ecp.create_task('good', 'esd', 'good', query => 'SELECT * FROM items', options => '{\"batch_size\": 100}')");
my $good_run = $node->safe_psql('postgres', "SELECT ecp.start('good')");
is(EcpTest::wait_for_run($node, $good_run, 'succeeded', 90), 'succeeded',
	'a normal run still starts and succeeds next to the bad rows');

# Another role's run, too.
$node->safe_psql('postgres', 'CREATE ROLE alice LOGIN');
$node->safe_psql('postgres', qq{
SET ROLE alice;
SELECT ecp.create_consumer('alice_esd', '$url');
SELECT ecp.create_task('alice_task', 'alice_esd', 'alice', query => 'SELECT * FROM public.items');
});
my $alice_run = $node->safe_psql('postgres', "SET ROLE alice; SELECT ecp.start('alice_task')");
is(EcpTest::wait_for_run($node, $alice_run, 'succeeded', 90), 'succeeded', "another role's run succeeds too");

is($node->safe_psql('postgres', 'SELECT ecp.launcher_pid()'), $launcher, 'the launcher never restarted');
my $log = slurp_file($node->logfile);
like($log, qr/WARNING:  ecp consumer "huge" \(id \d+\) has an invalid option "rate_limit"/,
	'the launcher names the consumer with the bad rate_limit');
like($log, qr/WARNING:  ecp task "bad" \(id \d+\) has an invalid option "max_retries": "x" \(a JSON string\)/,
	'and the task with the bad max_retries');
my @once = ($log =~ /ecp task "bad" \(id \d+\) has an invalid option "max_retries"/g);
is(scalar @once, 1, 'each bad option is logged once, not at every pass');
unlike($log, qr/ERROR:.*(numeric field overflow|out of range for type|invalid input syntax for type)/,
	'no cast of a row value fails in the launcher');

# The bad rows go: the search_path checks below must not depend on them.
$node->safe_psql('postgres', "DELETE FROM ecp.task WHERE name = 'bad'; DELETE FROM ecp.consumer WHERE name = 'huge'");

# --- a planted make_interval and / ------------------------------------------------
# The database's owner is an ordinary role; in PostgreSQL 15 it owns schema
# public through pg_database_owner.
$node->safe_psql('postgres', q{
CREATE ROLE dbo LOGIN;
ALTER DATABASE postgres OWNER TO dbo;
});
$node->safe_psql('postgres', q{
SET ROLE dbo;
CREATE TABLE public.trap (who text, what text, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON public.trap TO PUBLIC;
CREATE FUNCTION public.make_interval(secs numeric) RETURNS interval LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.trap (who, what) VALUES (current_user, 'make_interval');
    BEGIN EXECUTE 'ALTER ROLE dbo SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
    RETURN pg_catalog.make_interval(secs => secs::float8);
END $$;
CREATE FUNCTION public.trap_div(bigint, numeric) RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.trap (who, what) VALUES (current_user, '/');
    BEGIN EXECUTE 'ALTER ROLE dbo SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
    RETURN $1::numeric OPERATOR(pg_catalog./) $2;
END $$;
CREATE OPERATOR public./ (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = public.trap_div);
});
# The traps work: with the default search_path they win over pg_catalog's.
$node->safe_psql('postgres',
	"SET ROLE dbo; SELECT 7::bigint / 1000.0, make_interval(secs => 1.5)");
is($node->safe_psql('postgres', "SELECT string_agg(who || ' ' || what, ', ' ORDER BY at) FROM public.trap"),
	'dbo /, dbo make_interval', 'the traps catch a caller with the default search_path');
$node->safe_psql('postgres', 'DELETE FROM public.trap');

# A part to recover: running, heartbeat a day old, no worker.
$node->safe_psql('postgres',
	"SELECT ecp.create_task('recover', 'esd', 'recover', query => 'SELECT * FROM items', options => '{\"batch_size\": 100}')");
my $recover_run = $node->safe_psql('postgres', q{
BEGIN;
CREATE TEMP TABLE r AS SELECT ecp.start('recover') AS id;
UPDATE ecp.run SET state = 'running' WHERE id = (SELECT id FROM r);
UPDATE ecp.part SET state = 'running', heartbeat_at = now() - interval '1 day'
 WHERE run_id = (SELECT id FROM r);
COMMIT;
SELECT id FROM r;
});
is(EcpTest::wait_for_run($node, $recover_run, 'succeeded', 90), 'succeeded',
	'the launcher recovers the part and the run succeeds');
like($node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow WHERE run_id = $recover_run AND action = 'recovered'"),
	qr/^[1-9]/, 'through recovery');
# More passes over the running bad run (recovery back-off, deaths).
$node->safe_psql('postgres', "SELECT ecp.launcher_pid()");
ok(EcpTest::poll($node, "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'ecp launcher' AND state_change > now() - interval '1 second'", 30),
	'the launcher goes on with its passes');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.trap'), '0',
	'the launcher never called the planted function or operator');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'"), 'f',
	'and the database owner is not a superuser');
is($node->safe_psql('postgres', 'SELECT ecp.launcher_pid()'), $launcher, 'the launcher still runs, never restarted');

# ALTER DATABASE SET cannot move the launcher's search_path either.
$node->safe_psql('postgres', "SET ROLE dbo; ALTER DATABASE postgres SET search_path = public, pg_catalog");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)");
ok(EcpTest::poll($node, "SELECT ecp.launcher_pid() IS NOT NULL AND ecp.launcher_pid() <> $launcher", 30),
	'a new launcher after pg_terminate_backend');
$node->safe_psql('postgres',
	"SELECT ecp.create_task('recover2', 'esd', 'recover2', query => 'SELECT * FROM items', options => '{\"batch_size\": 100}')");
$recover_run = $node->safe_psql('postgres', q{
BEGIN;
CREATE TEMP TABLE r AS SELECT ecp.start('recover2') AS id;
UPDATE ecp.run SET state = 'running' WHERE id = (SELECT id FROM r);
UPDATE ecp.part SET state = 'running', heartbeat_at = now() - interval '1 day'
 WHERE run_id = (SELECT id FROM r);
COMMIT;
SELECT id FROM r;
});
is(EcpTest::wait_for_run($node, $recover_run, 'succeeded', 90), 'succeeded',
	'with ALTER DATABASE SET search_path, a recovery still succeeds');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.trap'), '0',
	'and the launcher still never calls the planted objects');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'"), 'f',
	'dbo is still not a superuser');

$es->stop;
$node->stop;
done_testing();
