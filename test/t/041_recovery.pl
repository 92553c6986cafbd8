# Recovery: a worker killed with -9 (the server restarts after the crash),
# an immediate restart of the server, and a terminated worker: the run
# finishes by itself, every source id is in the index, at most one batch is
# sent twice, and the flow says "recovered" with when it was interrupted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('delays and request counts');
my $node = EcpTest::new_node('recovery',
	conf => [ 'restart_after_crash = on', 'ecp.recovery_timeout = 2', 'ecp.heartbeat_interval = 1' ]);
my $es = EsdServer->start();
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 20000) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id)');
my $batch = 500;

sub start_slow_run
{
	my ($name) = @_;
	$es->reset;
	$es->set_faults({ delay_ms => 40 });    # 40 requests x 40 ms: time to interrupt
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$name', 'esd', '$name', query => 'SELECT * FROM items', options => '{\"batch_size\": $batch}')");
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	ok(EcpTest::poll($node, "SELECT processed >= 3000 FROM ecp.progress WHERE run_id = $run", 60),
		"$name: the run is under way");
	return $run;
}

sub check_finished
{
	my ($name, $run) = @_;
	is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', "$name: the run finishes by itself");
	$es->refresh($name);
	is($es->count($name), 20000, "$name: every source id is in the index");
	my $resent = $es->stats->{bulk_items} - 20000;
	ok($resent >= 0 && $resent <= $batch, "$name: at most one batch sent twice ($resent documents)");
	is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"), '20000',
		"$name: processed counts each document once");
	like($node->safe_psql('postgres',
			"SELECT content->>'interrupted_at' FROM ecp.flow WHERE run_id = $run AND action = 'recovered'"),
		qr/^\d{4}-\d\d-\d\d/, "$name: the flow says recovered, with the time it was interrupted");
}

sub worker_pid
{
	return $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp worker'");
}

# --- kill -9 of a worker: the server restarts after the crash ------------------
my $run = start_slow_run('killed');
my $pid = worker_pid();
ok($pid, "a worker runs ($pid)");
kill 'KILL', $pid;
$es->clear_faults;
ok($node->poll_query_until('postgres', 'SELECT true'), 'the server is back after the crash');
check_finished('killed', $run);

# --- immediate restart of the server mid-run --------------------------------
$run = start_slow_run('restarted');
$node->restart(mode => 'immediate');
$es->clear_faults;
check_finished('restarted', $run);

# --- a terminated worker: recovered after ecp.recovery_timeout ---------------
$run = start_slow_run('terminated');
$pid = worker_pid();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$es->clear_faults;
check_finished('terminated', $run);

# --- a part that keeps dying: back-off, then the run fails --------------------
$es->reset;
$es->set_faults({ delay_ms => 20000 });    # no batch is ever acknowledged
$node->safe_psql('postgres',
	"SELECT ecp.create_task('dying', 'esd', 'dying', query => 'SELECT * FROM items', "
	  . "options => '{\"batch_size\": $batch, \"max_retries\": 2, \"retry_base_ms\": 100}')");
$run = $node->safe_psql('postgres', "SELECT ecp.start('dying')");
my $kills = 0;
for (1 .. 6)
{
	last unless EcpTest::poll($node,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ecp worker' OR "
		  . "(SELECT state FROM ecp.run WHERE id = $run) = 'failed'", 60);
	last if EcpTest::run_state($node, $run) eq 'failed';
	# kill it once it has claimed its part (its own pid in the part)
	EcpTest::poll($node, "SELECT worker_pid IS NOT NULL AND worker_pid IN (SELECT pid FROM pg_stat_activity) FROM ecp.part WHERE run_id = $run", 30);
	kill 'KILL', worker_pid();
	$kills++;
	$node->poll_query_until('postgres', 'SELECT true');
}
is(EcpTest::wait_for_run($node, $run, 'failed', 60), 'failed', "a part killed $kills times fails its run");
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/the worker of part 0 died 3 times in a row .*ecp\.resume/, 'saying the worker keeps dying');
is($kills, 4, 'after max_retries (2) recoveries and one more death');
$es->clear_faults;
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'ecp.resume finishes it once the cause is gone');

$es->stop;
$node->stop;
done_testing();
