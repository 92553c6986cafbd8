# The December review's low findings, each from its repro:
#  L1  a worker reads a run's ids a batch at a time: a long id list does
#      not grow the worker's memory;
#  L2  ecp_internal._note_cron_skip refuses inside an ecp worker, where session_user
#      is the superuser: a role's query cannot forge "cron skipped" rows in
#      another tenant's flow;
#  L3  maintenance runs are started only through ecp.rollback and
#      ecp.cancel(run, drop_index): the old guard (a setting any role could
#      set) is gone, roles have no INSERT on action, and the definer behind
#      both functions checks the owner and the migration's state.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

my $node = EcpTest::new_node('definers');
my $es = EsdServer->start();
my $url = $es->url;
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

$node->safe_psql('postgres', q{
CREATE ROLE alice LOGIN;
CREATE ROLE mallory LOGIN;
CREATE SCHEMA a AUTHORIZATION alice;
CREATE SCHEMA m AUTHORIZATION mallory;
});

sub as
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', "SET ROLE $role; $sql");
}

# Logged in as the role: session_user is the role (SET ROLE would leave
# it the superuser, whom the definers trust).
sub psql_as
{
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql, connstr => $node->connstr('postgres') . " user=$role");
	return $err;
}

as('alice', "SELECT ecp.create_consumer('a_es', '$url')");
as('mallory', "SELECT ecp.create_consumer('m_es', '$url')");
as('alice', q{SELECT ecp.create_task('alice_t', 'a_es', 'alice_t', query => 'SELECT g AS id FROM generate_series(1, 5) g')});
my $alice_task = $node->safe_psql('postgres', "SELECT id FROM ecp.task WHERE name = 'alice_t'");
my $alice_run = as('alice', "SELECT ecp.start('alice_t', at => now() + interval '1 hour')");

# --- L2: a forged cron skip from inside mallory's worker ---------------------------
as('mallory', qq{
CREATE FUNCTION m.forge() RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM ecp_internal._note_cron_skip($alice_task, $alice_run);
    RETURN 'forged';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
END \$\$;
SELECT ecp.create_task('forger', 'm_es', 'forger', query => 'SELECT 1 AS id, m.forge() AS outcome');
});
my $run = as('mallory', "SELECT ecp.start('forger')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'L2: the forger\'s run ends');
$es->refresh('forger');
like($es->doc('forger', '1')->{outcome} // '', qr/is called by pg_cron jobs, not from inside a query ecp/,
	'L2: inside the worker, ecp_internal._note_cron_skip refuses (session_user is the superuser there)');
is(as('alice', "SELECT count(*) FROM ecp.flow WHERE action = 'cron skipped'"), '0',
	'L2: alice\'s flow has no forged cron skipped row');
like(psql_as('mallory', "SELECT ecp_internal._note_cron_skip($alice_task, $alice_run)"), qr/task \d+ is not yours/,
	'L2: called directly, mallory is refused as before');

# --- L3: maintenance runs ---------------------------------------------------------
like(psql_as('mallory', qq{SET ecp_internal.maintenance_run = on;
	INSERT INTO ecp.run (task_id, action) SELECT id, 'drop_index' FROM ecp.task WHERE name = 'forger'}),
	qr/permission denied for table run/, 'L3: the old guard setting no longer lets a role insert a maintenance run');
like(psql_as('mallory', "SELECT ecp_internal._start_maintenance($alice_task, 'rollback')"), qr/task \d+ is not yours/,
	'L3: the definer refuses another owner\'s task');
like(psql_as('mallory', q{SELECT ecp_internal._start_maintenance(id, 'drop_index') FROM ecp.task WHERE name = 'forger'}),
	qr/has no cancelled migration whose index could be dropped/,
	'L3: ... and a drop_index without a cancelled migration of the task');
like(psql_as('mallory', q{SELECT ecp_internal._start_maintenance(id, 'rollback') FROM ecp.task WHERE name = 'forger'}),
	qr/task "forger" has no swap to roll back/, '... and a rollback without a swap');
like(psql_as('mallory', q{SELECT ecp.rollback('forger')}), qr/task "forger" has no swap to roll back/,
	'L3: ecp.rollback says the same through its own checks');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ecp.run WHERE action IS NOT NULL}), '0',
	'L3: no maintenance run was created');

# --- L1: a long id list, read a batch at a time ------------------------------------
# 100,000 ids of 500 bytes (about 50 MB as text, a few MB stored); each page
# of 1,000 ids is looked up through a query that sleeps 50 ms, so the worker
# lives for seconds and its memory can be sampled while it runs.
as('mallory', q{SELECT ecp.create_task('many_ids', 'm_es', 'many_ids',
	query => 'SELECT g::text AS id FROM generate_series(1, 1) g, pg_catalog.pg_sleep(0.05) s',
	options => '{"batch_size": 1000}')});
$run = as('mallory', q{SELECT ecp.start('many_ids', ids => (SELECT array_agg(repeat('x', 500) || g) FROM generate_series(1, 100000) g))});
my ($hwm, $pid) = (0, '');
my $deadline = time + 120;
while (time < $deadline)
{
	last if EcpTest::run_state($node, $run) =~ /^(succeeded|failed|cancelled)$/;
	$pid ||= $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp worker' LIMIT 1");
	if ($pid && open(my $fh, '<', "/proc/$pid/status"))
	{
		while (<$fh>) { $hwm = $1 if /^RssAnon:\s+(\d+) kB/ && $1 > $hwm; }
		close $fh;
	}
	sleep 0.2;
}
is(EcpTest::run_state($node, $run), 'succeeded', 'L1: the run of 100,000 ids succeeds');
is($node->safe_psql('postgres', "SELECT processed || ':' || missing FROM ecp.progress WHERE run_id = $run"), '0:100000',
	'L1: every id was looked up (all missing)');
ok($hwm > 0, "L1: the worker's private memory was sampled (peak RssAnon $hwm kB)");
# Up to 0.4 the worker held the whole list as text, and its copies: about
# +58 MB here (the review: +175 MB for 300,000 ids).
cmp_ok($hwm, '<', 50_000, 'L1: the worker\'s private memory stays far below the list\'s size (50 MB)');

is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started, 'the postmaster never restarted');
done_testing();
