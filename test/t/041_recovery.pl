# Recovery: a worker killed with -9 (the server restarts after the crash),
# an immediate restart of the server, and a terminated worker: the run
# finishes by itself, every source id is in the index, at most the batches
# whose (asynchronous) checkpoints a crash lost are sent twice, and the flow
# says "recovered" with when it was interrupted.
# A part whose workers keep dying fails its run after max_retries
# recoveries, saying so.
#
# The worker to interrupt is found with one query that also checks that the
# run is still under way (never an empty pid), and after a kill -9 the test
# waits for the server to have reaped it (it then refuses connections until
# its crash restart is over) before it asks anything again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('delays and request counts');
my $node = EcpTest::new_node('recovery',
	conf => [ 'restart_after_crash = on', 'ecp.recovery_timeout = 2', 'ecp.heartbeat_interval = 1', 'wal_writer_delay = 200ms' ]);
my $es = EsdServer->start();
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 20000) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id)');
my $batch = 500;

# Poll until $sql returns a non-empty value (a single row, a single
# column), with a timeout; returns it, or '' when the time ran out.
sub poll_value
{
	my ($sql, $timeout) = @_;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		my $v = $node->safe_psql('postgres', $sql);
		return $v if $v ne '';
		sleep 0.05;
	}
	return '';
}

# The pid of the live worker that claimed a part of $run, or ''.
sub part_worker_sql
{
	my ($run) = @_;
	return "SELECT a.pid FROM ecp.part p JOIN pg_stat_activity a ON a.pid = p.worker_pid"
	  . " WHERE p.run_id = $run AND a.backend_type = 'ecp worker'";
}

# 40 requests x 100 ms: seconds to interrupt the run in.  Returns the run
# and the pid of its worker, seen while at least 3,000 and at most 14,000
# documents were done (12 requests, 1.2 s at least, still to go), or ''
# when the test could not catch the run in that stretch.
sub start_slow_run
{
	my ($name) = @_;
	$es->reset;
	$es->set_faults({ delay_ms => 100 });
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$name', 'esd', '$name', query => 'SELECT * FROM items', options => '{\"batch_size\": $batch}')");
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	my $pid = poll_value(part_worker_sql($run)
		  . " AND (SELECT processed BETWEEN 3000 AND 14000 FROM ecp.progress WHERE run_id = $run)", 60);
	ok($pid =~ /^\d+$/, "$name: the run is under way, its worker is $pid");
	return ($run, $pid);
}

# kill -9 of a backend: wait until the postmaster has reaped it (from then
# on it refuses connections until the crash restart is done), then until
# the server answers again.  False when there was nothing to kill.
sub kill_and_wait_restart
{
	my ($pid) = @_;
	return 0 unless $pid =~ /^\d+$/ && kill('KILL', $pid);
	my $deadline = time + 60;
	sleep 0.05 while kill(0, $pid) && time < $deadline;
	$node->poll_query_until('postgres', 'SELECT true') or return 0;
	return 1;
}

# A checkpoint commits asynchronously: PostgreSQL flushes it to disk
# within 3 x wal_writer_delay (200 ms here).  A crash may lose the
# checkpoints of the pages acknowledged in the last 600 ms, which are then
# sent again: at 100 ms a request, at most 6 pages, plus the one in flight.
# Without a crash (a terminated worker) nothing is lost: one page at most.
my $after_crash = 7;

sub check_finished
{
	my ($name, $run, $pages) = @_;
	$pages //= 1;
	is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', "$name: the run finishes by itself");
	$es->refresh($name);
	is($es->count($name), 20000, "$name: every source id is in the index");
	my $resent = $es->stats->{bulk_items} - 20000;
	ok($resent >= 0 && $resent <= $pages * $batch,
		"$name: at most $pages batch(es) sent twice ($resent documents)");
	is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"), '20000',
		"$name: processed counts each document once");
	like($node->safe_psql('postgres',
			"SELECT content->>'interrupted_at' FROM ecp.flow WHERE run_id = $run AND action = 'recovered'"),
		qr/^\d{4}-\d\d-\d\d/, "$name: the flow says recovered, with the time it was interrupted");
}

# --- kill -9 of a worker: the server restarts after the crash ------------------
my ($run, $pid) = start_slow_run('killed');
ok(kill_and_wait_restart($pid), 'killed: the worker is killed, the server is back after the crash');
$es->clear_faults;
check_finished('killed', $run, $after_crash);

# --- immediate restart of the server mid-run --------------------------------
($run, $pid) = start_slow_run('restarted');
$node->restart(mode => 'immediate');
$es->clear_faults;
check_finished('restarted', $run, $after_crash);

# --- a terminated worker: recovered after ecp.recovery_timeout ---------------
($run, $pid) = start_slow_run('terminated');
is($pid =~ /^\d+$/ ? $node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)") : 'no worker', 't',
	'terminated: pg_terminate_backend of the worker');
$es->clear_faults;
check_finished('terminated', $run);

# --- a part that keeps dying: back-off, then the run fails --------------------
$es->reset;
$es->set_faults({ delay_ms => 20000 });    # no batch is ever acknowledged
my $max_retries = 2;
$node->safe_psql('postgres',
	"SELECT ecp.create_task('dying', 'esd', 'dying', query => 'SELECT * FROM items', "
	  . "options => '{\"batch_size\": $batch, \"max_retries\": $max_retries, \"retry_base_ms\": 100}')");
$run = $node->safe_psql('postgres', "SELECT ecp.start('dying')");
# Kill each worker once it has claimed the part (its pid in the part), until
# the run fails; bounded: ecp fails it at the max_retries + 1st death.
my $kills = 0;
for (1 .. 2 * ($max_retries + 2))
{
	my $next = poll_value("SELECT CASE WHEN state = 'failed' THEN 'failed' ELSE ("
		  . part_worker_sql($run) . ")::text END FROM ecp.run WHERE id = $run", 60);
	last if $next eq 'failed' || $next eq '';
	$kills++ if kill_and_wait_restart($next);
}
is(EcpTest::wait_for_run($node, $run, 'failed', 60), 'failed', "a part whose workers keep dying fails its run ($kills killed)");
my $error = $node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run");
like($error, qr/^the worker of part 0 died \d+ times in a row without finishing a batch; .*ecp\.resume\($run\)/,
	'saying the worker keeps dying, and how to go on');
my ($died) = $error =~ /died (\d+) times/;
$died //= 0;
is($died, $max_retries + 1, "at the death after max_retries ($max_retries) restarts");
ok($kills >= $died, "each death it counts was one of the test's kills ($kills killed, $died counted)");
$es->clear_faults;
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'ecp.resume finishes it once the cause is gone');

$es->stop;
$node->stop;
done_testing();
