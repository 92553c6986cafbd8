# Worker slots and rate buckets are shared fairly and never run out:
# - with ecp.max_workers = 2 and no cap per role, role A starts 6 slow
#   runs, then role B one: B's run gets the first slot that frees, not the
#   one after all of A's;
# - ecp.max_workers_per_role = 1 keeps A to one worker;
# - 4 * ecp.max_workers + 17 rate-limited tasks over time: buckets of runs
#   that ended are freed, so the last task is still limited;
# - with the default cap (half of ecp.max_workers) and ecp.max_workers = 4,
#   A's long parts hold at most 2 workers, and B's run starts and succeeds
#   while they run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('a sink for the runs');
my $max_workers = 2;
my $node = EcpTest::new_node('fair', conf => [ "ecp.max_workers = $max_workers" ]);
my $es = EsdServer->start(discard => 1);
my $url = $es->url;
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 2000) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id); GRANT SELECT ON items TO PUBLIC;'
	  . ' CREATE ROLE role_a LOGIN; CREATE ROLE role_b LOGIN');

# The first sections look at round-robin and at an explicit cap: 0 is no cap.
sub set_role_cap
{
	my ($cap) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET ecp.max_workers_per_role = $cap; SELECT pg_reload_conf()");
	ok(EcpTest::poll($node, "SELECT current_setting('ecp.max_workers_per_role') = '$cap'", 30),
		"ecp.max_workers_per_role = $cap is in force");
}
set_role_cap(0);

# Cancel every run still under way; a run that finishes meanwhile (between
# the read and its cancel) is left as it is.
sub cancel_all
{
	$node->safe_psql('postgres', q{
		DO $$
		DECLARE
		    under_way bigint;
		BEGIN
		    FOR under_way IN SELECT id FROM ecp.run WHERE state IN ('pending', 'running') LOOP
		        BEGIN
		            PERFORM ecp.cancel(under_way);
		        EXCEPTION WHEN object_not_in_prerequisite_state THEN
		            NULL;
		        END;
		    END LOOP;
		END $$});
}

sub as_role
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', "SET ROLE $role; $sql");
}

# --- round-robin across owners ------------------------------------------------------
# A's runs take 15 s each (1500 documents at 100 per second).
as_role('role_a', "SELECT ecp.create_consumer('a_esd', '$url')");
as_role('role_b', "SELECT ecp.create_consumer('b_esd', '$url')");
my @a_runs;
for my $i (1 .. 6)
{
	as_role('role_a',
		"SELECT ecp.create_task('a$i', 'a_esd', 'a$i', query => 'SELECT * FROM public.items WHERE id <= 1500', "
		  . "options => '{\"batch_size\": 100, \"rate_limit\": 100}')");
	push @a_runs, as_role('role_a', "SELECT ecp.start('a$i')");
}
as_role('role_b', "SELECT ecp.create_task('b1', 'b_esd', 'b1', query => 'SELECT * FROM public.items WHERE id <= 100')");
ok(EcpTest::poll($node, "SELECT count(*) = $max_workers FROM ecp.run WHERE state = 'running' AND owner = 'role_a'::regrole", 60),
	"A's runs take both slots");
my $b_run = as_role('role_b', "SELECT ecp.start('b1')");
my $started = time;
is(EcpTest::wait_for_run($node, $b_run, 'succeeded', 90), 'succeeded', "B's run succeeds");
my $waited = time - $started;
my $a_before_b = $node->safe_psql('postgres',
	"SELECT count(*) FROM ecp.run a, ecp.run b WHERE b.id = $b_run AND a.owner = 'role_a'::regrole"
	  . " AND a.started_at IS NOT NULL AND a.started_at < b.started_at");
ok($a_before_b <= $max_workers + 1,
	"B's run got one of the first slots that freed ($a_before_b of A's 6 runs started before it)");
ok($waited < 32, sprintf("B's run waited for one of A's runs, not for all of them (%.1f s)", $waited));
cancel_all();
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 30),
	'the cancelled runs stop');

# --- ecp.max_workers_per_role caps one role ------------------------------------------
set_role_cap(1);
my @capped = map { as_role('role_a', "SELECT ecp.start('a$_')") } (1, 2);
ok(EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp.run WHERE state = 'running' AND owner = 'role_a'::regrole", 60),
	"one of A's two runs runs");
my $most = 0;
for (1 .. 15)
{
	my $n = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'ecp worker'");
	$most = $n if $n > $most;
	sleep 0.2;
}
is($most, 1, "with a free slot, A never has more than one worker");
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.run WHERE state = 'pending' AND owner = 'role_a'::regrole"),
	'1', 'its other run waits');
cancel_all();
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 30),
	'the capped runs stop');
set_role_cap(0);

# --- rate buckets are freed when their runs end ---------------------------------------
my $buckets = 4 * $max_workers + 16;
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '$url')");
$node->safe_psql('postgres', qq{
SELECT ecp.create_task('quick' || g, 'esd', 'quick' || g,
                       query => 'SELECT * FROM items WHERE id <= 10',
                       options => '{"rate_limit": 1000}')
  FROM generate_series(1, $buckets) g;
SELECT ecp.start('quick' || g) FROM generate_series(1, $buckets) g;
});
ok(EcpTest::poll($node,
		"SELECT count(*) = $buckets FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id"
		  . " WHERE t.name LIKE 'quick%' AND r.state = 'succeeded'", 120),
	"$buckets rate-limited runs succeed");
ok(EcpTest::poll($node, 'SELECT count(*) = 0 FROM ecp_internal._rate_buckets()', 30),
	'their buckets are freed once they are done');

$node->safe_psql('postgres',
	"SELECT ecp.create_task('last', 'esd', 'last', query => 'SELECT * FROM items WHERE id <= 200', "
	  . "options => '{\"batch_size\": 1000, \"rate_limit\": 20}')");
my $last = $node->safe_psql('postgres', "SELECT ecp.start('last')");
ok(EcpTest::poll($node, "SELECT configured_rate = 20 FROM ecp.rate_limits WHERE kind = 'task' AND name = 'last'", 30),
	'the task number ' . ($buckets + 1) . ' has its bucket (ecp.rate_limits)');
is(EcpTest::wait_for_run($node, $last, 'succeeded', 60), 'succeeded', 'its run succeeds');
my $seconds = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM finished_at - started_at) FROM ecp.run WHERE id = $last");
ok($seconds >= 6, "and it was limited: 200 documents at 20 per second took $seconds s");

# --- the default cap: half of ecp.max_workers -----------------------------------------
$max_workers = 4;
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ecp.max_workers_per_role');
$node->append_conf('postgresql.conf', "ecp.max_workers = $max_workers\n");
$node->restart;
is($node->safe_psql('postgres', "SELECT current_setting('ecp.max_workers') || ' ' || current_setting('ecp.max_workers_per_role')"),
	"$max_workers -1", 'ecp.max_workers = 4, ecp.max_workers_per_role at its default (-1: half)');

# A's four parts each sleep for a bounded while in their query, and could
# all run at once (parallelism 4): they would hold every slot.
my $long_sleep = 90;
as_role('role_a', "SELECT ecp.create_task('a_long', 'a_esd', 'a_long',"
	  . " queries => (SELECT array_agg(format('SELECT %s AS id, pg_sleep($long_sleep) AS z', g)) FROM generate_series(1, 4) g),"
	  . " options => '{\"parallelism\": 4}')");
my $a_long = as_role('role_a', "SELECT ecp.start('a_long')");
ok(EcpTest::poll($node, "SELECT count(*) = 2 FROM ecp.part WHERE run_id = $a_long AND state = 'running'", 60),
	"two of A's long parts run");
$most = 0;
for (1 .. 15)
{
	my $n = $node->safe_psql('postgres', "SELECT count(*) FROM ecp.part WHERE run_id = $a_long AND state = 'running'");
	$most = $n if $n > $most;
	sleep 0.2;
}
is($most, 2, 'with slots free, A never has more than 2 of the 4 workers');
my $b_late = as_role('role_b', "SELECT ecp.start('b1')");
is(EcpTest::wait_for_run($node, $b_late, 'succeeded', 60), 'succeeded', "B's run starts and succeeds");
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.part WHERE run_id = $a_long AND state = 'running'"),
	'2', "while A's two long parts still run");
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.part WHERE run_id = $a_long AND state = 'pending'"),
	'2', 'and its other two wait');
$node->safe_psql('postgres', "SELECT ecp.cancel($a_long)");
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", $long_sleep + 30),
	'the long parts stop once cancelled');

$es->stop;
$node->stop;
done_testing();
