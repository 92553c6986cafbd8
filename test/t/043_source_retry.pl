# Transient errors of the source are retried like the sink's: a lock that
# makes reads time out (SQLSTATE 55P03), at the start and in the middle of
# a run, costs retries with back-off (flow rows with "source": true), not
# the run; when retries run out the run fails with the error and resume
# finishes it; an error that cannot pass (a dropped column) fails at once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('delay faults');
my $node = EcpTest::new_node('srcretry');
my $es = EsdServer->start();
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres', q{
	CREATE TABLE src AS SELECT g AS id, 'v' || g AS v FROM generate_series(1, 3000) g;
	ALTER TABLE src ADD PRIMARY KEY (id);
	-- every new session, the workers' too, gives up a lock wait after 200 ms
	ALTER DATABASE postgres SET lock_timeout = '200ms';
});

# tasks are created before any lock: create_task reads the query too
my %options = (
	locked    => '{"batch_size": 500, "retry_base_ms": 100, "max_retries": 50}',
	midway    => '{"batch_size": 200, "retry_base_ms": 100, "max_retries": 50}',
	exhausted => '{"batch_size": 500, "retry_base_ms": 50, "max_retries": 2}');
for my $name (sort keys %options)
{
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$name', 'esd', '$name', query => 'SELECT * FROM src', options => '$options{$name}')");
}

sub start_task
{
	my ($name) = @_;
	return $node->safe_psql('postgres', "SELECT ecp.start('$name')");
}

sub source_retries
{
	my ($run) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = 'retry' AND content->>'source' = 'true'");
}

sub indexed
{
	my ($index) = @_;
	$es->refresh($index);
	return $es->count($index);
}

my $locker = $node->background_psql('postgres');

# --- locked from the start: the first reads time out, then succeed -----------
$locker->query_safe('BEGIN; LOCK TABLE src IN ACCESS EXCLUSIVE MODE');
my $run = start_task('locked');
ok(EcpTest::poll($node, "SELECT count(*) >= 2 FROM ecp.flow WHERE run_id = $run AND action = 'retry' AND content->>'source' = 'true'", 60),
	'reads that time out on a lock are retried');
like($node->safe_psql('postgres',
		"SELECT content->>'error' FROM ecp.flow WHERE run_id = $run AND action = 'retry' ORDER BY at LIMIT 1"),
	qr/^reading the source failed: canceling statement due to lock timeout \(SQLSTATE 55P03\)$/,
	'the retry row says what failed');
is(EcpTest::run_state($node, $run), 'running', 'the run is still running');
$locker->query_safe('COMMIT');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'the run finishes once the lock is gone');
is(indexed('locked'), 3000, 'with every row');

# --- locked in the middle of a run ---------------------------------------------
# 100 ms per bulk request and pages of 200: 15 pages, time enough to lock.
$es->set_faults({ delay_ms => 100 });
$run = start_task('midway');
ok(EcpTest::poll($node, "SELECT processed >= 400 FROM ecp.progress WHERE run_id = $run", 60),
	'the run makes progress');
$locker->query_safe('BEGIN; LOCK TABLE src IN ACCESS EXCLUSIVE MODE');
ok(EcpTest::poll($node, "SELECT count(*) >= 1 FROM ecp.flow WHERE run_id = $run AND action = 'retry' AND content->>'source' = 'true'", 60),
	'a lock in the middle of the run: reads are retried');
my $processed = $node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run");
ok($processed < 3000, "the run waits for the source ($processed of 3000)");
$locker->query_safe('COMMIT');
$es->clear_faults;
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'and finishes after it');
is(indexed('midway'), 3000, 'with every row');
is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"),
	'3000', 'each row counted once');

# --- retries run out: the run fails, keeps its checkpoint, resume finishes -----
$locker->query_safe('BEGIN; LOCK TABLE src IN ACCESS EXCLUSIVE MODE');
$run = start_task('exhausted');
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', 'the run fails when retries run out');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/^retries exhausted after 3 attempts \(max_retries 2\): reading the source failed: canceling statement due to lock timeout \(SQLSTATE 55P03\); the checkpoint is kept/,
	'last_error says why, and that resume continues');
is(source_retries($run), 2, 'after 2 retries');
is($node->safe_psql('postgres', "SELECT content->>'class' || ':' || (content->>'attempts') FROM ecp.flow WHERE run_id = $run AND action = 'alert' AND content->>'class' <> 'transient'"),
	'retries exhausted:3', 'the alert of a source that ran out of retries says so, with the attempts');
$locker->query_safe('COMMIT');
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'resume finishes it');
is(indexed('exhausted'), 3000, 'with every row');

# --- an error that cannot pass fails the run at once ----------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE gone AS SELECT g AS id, 'x' AS doomed FROM generate_series(1, 10) g;
	SELECT ecp.create_task('gone', 'esd', 'gone', query => 'SELECT id, doomed FROM gone',
	                       options => '{"retry_base_ms": 60000}');
	ALTER TABLE gone DROP COLUMN doomed;
});
$run = $node->safe_psql('postgres', "SELECT ecp.start('gone')");
is(EcpTest::wait_for_run($node, $run, 'failed', 30), 'failed', 'a dropped column fails the run');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/column "doomed" does not exist/, 'with the error');
is(source_retries($run), 0, 'without retries');

$locker->quit;
$node->stop;
done_testing();
