# Transient failures are retried with a Fibonacci back-off, only the failed
# part of a batch is sent again, configuration failures stop the run at
# once, exhausted retries keep the checkpoint for ecp.resume, and a pause
# ends a back-off wait at once without counting as a failure.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;
use JSON::PP;

EsdServer->require_stand_in('fault injection');
my $node = EcpTest::new_node('retry');
my $es = EsdServer->start();
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 2000) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id)');

sub start_task
{
	my ($name, $options) = @_;
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$name', 'esd', '$name', query => 'SELECT * FROM items', options => '$options')");
	return $node->safe_psql('postgres', "SELECT ecp.start('$name')");
}

sub flow_of
{
	my ($run, $action, $field) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(content->>'$field', ',' ORDER BY at) FROM ecp.flow WHERE run_id = $run AND action = '$action'");
}

sub indexed
{
	my ($index) = @_;
	$es->refresh($index);
	return $es->count($index);
}

# --- 429 on the first 3 bulk requests: waits of 1, 1, 2 x base ----------------
$es->set_faults({ bulk_reject => { status => 429, first => 3 } });
my $run = start_task('r429', '{"batch_size": 500, "retry_base_ms": 40}');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', '429 x3 then success: the run succeeds');
is(flow_of($run, 'retry', 'wait_ms'), '40,40,80', 'the waits grow as 1, 1, 2 x retry_base_ms');
is(flow_of($run, 'retry', 'attempt'), '1,2,3', 'the flow shows each retry');
like($node->safe_psql('postgres', "SELECT content->>'error' FROM ecp.flow WHERE run_id = $run AND action = 'retry' ORDER BY at LIMIT 1"),
	qr/HTTP 429/, 'with the error that caused it');
is(indexed('r429'), 2000, 'every document arrived');
$es->clear_faults;

# --- 10% per-item 429 on every request: only those are sent again -----------
$es->reset;
$es->set_faults({ item_reject => { status => 429, fraction => 0.1, seed => 7 } });
$run = start_task('items429', '{"batch_size": 500, "retry_base_ms": 10, "max_retries": 30}');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', '10% per-item 429: the run succeeds');
is(indexed('items429'), 2000, 'every document is in the index');
my $stats = $es->stats;
my $sent = $stats->{bulk_items};
ok($sent > 2000 && $sent < 2000 * 1.5, "only the rejected documents were sent again ($sent items for 2000)");
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run"), '0',
	'none in failed_docs');
is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"), '2000',
	'each document counted once');
$es->clear_faults;

# --- 401: a configuration failure stops the run at once ------------------------
$es->set_faults({ auth => { basic => 'u:p' } });
$run = start_task('r401', '{"retry_base_ms": 10}');
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', '401: the run fails');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/HTTP 401.*check the consumer's credentials/, 'the error says to check the credentials');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = 'retry'"), '0',
	'and nothing was retried');
$es->clear_faults;

# --- a missing index with auto-creation off is a configuration failure ------
$es->set_config({ auto_create_index => JSON::PP::false });
$run = start_task('noindex', '{"retry_base_ms": 10}');
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', 'missing index, auto-create off: the run fails');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/index "noindex" does not exist .*create the index/, 'saying to create the index');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run"), '0',
	'without filling failed_docs');
$es->set_config({ auto_create_index => JSON::PP::true });

# --- 503 storm longer than max_retries: failed, checkpoint kept, resume -------
$es->set_faults({ bulk_reject => { status => 503, every => 1 } });
$run = start_task('r503', '{"batch_size": 500, "retry_base_ms": 10, "max_retries": 2}');
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', '503 storm: the run fails when retries run out');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/retries exhausted after 3 attempts .*HTTP 503/, 'last_error says retries are exhausted, and why');
is($node->safe_psql('postgres', "SELECT content->>'class' || ':' || (content->>'attempts') FROM ecp.flow WHERE run_id = $run AND action = 'alert' AND content->>'class' <> 'transient'"),
	'retries exhausted:3', 'the alert of the failure has the class "retries exhausted" and the attempts');
$es->clear_faults;
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'ecp.resume after the storm finishes the run');
is(indexed('r503'), 2000, 'with no gap');

# --- dropped connections: the same, mid-run -------------------------------------
$es->reset;
$es->set_faults({ drop => { every => 1 } });
$run = start_task('rdrop', '{"batch_size": 500, "retry_base_ms": 10, "max_retries": 1}');
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', 'dropped connections: the run fails after its retries');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/retries exhausted/, '... saying so');
$es->clear_faults;
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'and resumes when the connection is back');
is(indexed('rdrop'), 2000, 'with every document');

# --- a pause ends a long back-off wait, and is no failure ------------------------
$es->set_faults({ bulk_reject => { status => 503, every => 1 } });
# retry_base_ms of 10 minutes, capped by retry_max_ms (default 30 s): the
# wait is 30 s, far longer than the pause is given to end it.
$run = start_task('rpause', '{"retry_base_ms": 600000, "max_retries": 3}');
ok(EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp.flow WHERE run_id = $run AND action = 'retry'", 60),
	'the worker is in a long back-off');
is($node->safe_psql('postgres',
		"SELECT content->>'wait_ms' FROM ecp.flow WHERE run_id = $run AND action = 'retry'"),
	'30000', 'a back-off of 10 minutes is capped by retry_max_ms (default 30 s)');
$node->safe_psql('postgres', "SELECT ecp.pause($run)");
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 10),
	'pause ends the wait at once');
is(EcpTest::run_state($node, $run), 'paused', 'the run is paused, not failed');
$es->clear_faults;
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'and finishes after resume');

$es->stop;
$node->stop;
done_testing();
