# Retry details that 040 leaves out:
# - retry_max_ms caps the Fibonacci back-off: with retry_base_ms 20 and
#   retry_max_ms 70 the waits in the flow are 20, 20, 40, 60, 70, 70, ...
#   (never above 70, and 70 is reached); the same from the GUCs
#   ecp.retry_base_ms / ecp.retry_max_ms changed by a reload;
# - per-item 503 and 500 are retried like per-item 429: only the rejected
#   documents are sent again, every document arrives, none in failed_docs;
# - a whole-request 500: the run fails at once (one request, no retry,
#   nothing in failed_docs), and ecp.resume finishes it.  README's
#   "Failures and recovery" lists 429/502/503/504 for the request as
#   transient and "any other 4xx" as configuration; a 500 for the whole
#   request is in neither list, and ecp treats it as a failure of the run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use List::Util qw(max sum0);
use JSON::PP;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('fault injection');
my $node = EcpTest::new_node('errors');
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

sub retry_field
{
	my ($run, $field) = @_;
	return [ split /,/, $node->safe_psql('postgres',
		"SELECT string_agg(content->>'$field', ',' ORDER BY at) FROM ecp.flow WHERE run_id = $run AND action = 'retry'") ];
}

sub indexed
{
	my ($index) = @_;
	$es->refresh($index);
	return $es->count($index);
}

sub bulk_requests_to
{
	my ($index) = @_;
	return scalar grep { ($_->{url} // '') =~ m{^/\Q$index\E/_bulk} } @{ $es->requests(1000) };
}

# --- retry_max_ms caps the back-off (task options) ---------------------------------
$es->set_faults({ bulk_reject => { status => 503, first => 8 } });
my $run = start_task('capped', '{"batch_size": 500, "retry_base_ms": 20, "retry_max_ms": 70, "max_retries": 12}');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', '503 x8 then success: the run succeeds');
my $waits = retry_field($run, 'wait_ms');
is(join(',', @$waits), '20,20,40,60,70,70,70,70', 'the waits follow Fibonacci x 20 ms, capped at retry_max_ms 70');
is(max(@$waits), 70, 'no wait exceeds retry_max_ms, and the cap is reached');
is(join(',', @{ retry_field($run, 'attempt') }), '1,2,3,4,5,6,7,8', 'eight retries, one flow row each');
is(indexed('capped'), 2000, 'every document arrived');

# --- the same cap from the GUCs, changed by a reload ---------------------------------
$node->append_conf('postgresql.conf', "ecp.retry_base_ms = 15\necp.retry_max_ms = 50\n");
$node->reload;
ok(EcpTest::poll($node, "SELECT setting = '50' FROM pg_settings WHERE name = 'ecp.retry_max_ms'", 30), 'the reload is in effect');
$es->set_faults({ bulk_reject => { status => 503, first => 6 } });
$run = start_task('capped_guc', '{"batch_size": 500, "max_retries": 12}');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'GUC defaults: the run succeeds');
is(join(',', @{ retry_field($run, 'wait_ms') }), '15,15,30,45,50,50',
	'the waits follow ecp.retry_base_ms 15, capped at ecp.retry_max_ms 50');
is(indexed('capped_guc'), 2000, 'every document arrived');
$es->clear_faults;

# --- per-item 503 and 500: retried like per-item 429 ----------------------------------
for my $status (503, 500)
{
	my $name = "items$status";
	$es->reset;
	$es->set_faults({ item_reject => { status => $status, fraction => 0.1, seed => 11 } });
	$run = start_task($name, '{"batch_size": 500, "retry_base_ms": 10, "max_retries": 30}');
	is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', "10% per-item $status: the run succeeds");
	is(indexed($name), 2000, "per-item $status: every document is in the index");
	is($node->safe_psql('postgres', "SELECT processed || ' ' || failed FROM ecp.progress WHERE run_id = $run"),
		'2000 0', "per-item $status: 2000 processed, none failed");
	is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run"), '0',
		"per-item $status: nothing in failed_docs");
	my $resent = retry_field($run, 'documents');
	ok(@$resent >= 4, "per-item $status: retries in the flow (" . scalar(@$resent) . ')');
	like($node->safe_psql('postgres',
			"SELECT content->>'error' FROM ecp.flow WHERE run_id = $run AND action = 'retry' ORDER BY at LIMIT 1"),
		qr/documents rejected with HTTP $status/, "per-item $status: the retry names the per-item status");
	my $sent = $es->stats->{bulk_items};
	is($sent, 2000 + sum0(@$resent),
		"per-item $status: only the rejected documents were sent again ($sent items = 2000 + the retried ones)");
	ok($sent < 2000 * 1.5, "per-item $status: far fewer than the pages again");
	$es->clear_faults;
}

# --- a whole-request 500 ----------------------------------------------------------------
$es->reset;
$es->set_faults({ bulk_reject => { status => 500, first => 1 } });
$run = start_task('whole500', '{"batch_size": 500, "retry_base_ms": 10, "max_retries": 5}');
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', 'a whole-request 500 fails the run');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr{POST http://127\.0\.0\.1:\d+/whole500/_bulk answered HTTP 500}, 'last_error names the request and the 500');
is($node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE action = 'retry') || ' ' || count(*) FILTER (WHERE action = 'failed') FROM ecp.flow WHERE run_id = $run"),
	'0 1', 'at once: no retry row, one failed row');
is(bulk_requests_to('whole500'), 1, 'exactly one request was sent');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run"), '0', 'nothing in failed_docs');
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'ecp.resume finishes the run');
is(indexed('whole500'), 2000, 'with every document');

$es->stop;
$node->stop;
done_testing();
