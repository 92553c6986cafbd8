# Pause, resume and cancel mid-run: nothing more arrives while paused or
# after cancel, resume finishes with no id missing, and the flow records
# every step with its operator.  Needs the stand-in's delay fault to keep a
# run going long enough to be paused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('delay faults and request counts');
my $node = EcpTest::new_node('pause');
my $es = EsdServer->start();
my $url = $es->url;
my $run;
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '$url')");

# --- pause, resume, cancel -------------------------------------------------
$node->safe_psql('postgres', q{
CREATE TABLE slow AS SELECT g AS id, 'item ' || g AS name FROM generate_series(1, 20000) g;
ALTER TABLE slow ADD PRIMARY KEY (id);
});
$node->safe_psql('postgres',
	"SELECT ecp.create_task('slow', 'esd', 'slow', query => 'SELECT * FROM slow', "
	  . "options => '{\"batch_size\": 200}')");
# Each bulk request takes 100 ms: 100 requests, time enough to pause.
$es->set_faults({ delay_ms => 100 });
$run = $node->safe_psql('postgres', "SELECT ecp.start('slow')");
ok(EcpTest::poll($node, "SELECT processed >= 1000 FROM ecp.progress WHERE run_id = $run", 60),
	'the slow run makes progress');
$node->safe_psql('postgres', "SELECT ecp.pause($run)");
is(EcpTest::run_state($node, $run), 'paused', 'pause is immediate in the table');
ok(EcpTest::poll($node,
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 10),
	'the worker stops after pause');
my $items_at_pause = $es->stats->{bulk_items};
my $processed_at_pause = $node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run");
ok($processed_at_pause < 20000, "paused mid-run ($processed_at_pause of 20000)");
# Observe that nothing arrives while paused (an absence: a short window, not a sync).
sleep 2;
is($es->stats->{bulk_items}, $items_at_pause, 'nothing more arrives while paused');
is(EcpTest::run_state($node, $run), 'paused', 'still paused');

$node->safe_psql('postgres', "SELECT ecp.resume($run)");
$es->clear_faults;
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'the resumed run finishes');
$es->refresh('slow');
is($es->count('slow'), 20000, 'no id is missing after pause and resume');
is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"),
	'20000', 'processed counts every document once');
is($node->safe_psql('postgres',
		"SELECT string_agg(action, ',' ORDER BY at) FROM ecp.flow WHERE run_id = $run"),
	'start,worker started,pause,resume,worker started,finished',
	'the flow has every step');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ecp.flow WHERE run_id = $run AND operator <> current_user"),
	'0', 'each flow row names the operator');
is($node->safe_psql('postgres',
		"SELECT (content->>'processed')::int FROM ecp.flow WHERE run_id = $run AND action = 'finished'"),
	'20000', 'the finished row carries the counts');

# cancel: a cancelled run sends nothing more
$es->reset;
$es->set_faults({ delay_ms => 100 });
$node->safe_psql('postgres', "SELECT ecp.create_task('slow2', 'esd', 'slow2', query => 'SELECT * FROM slow', options => '{\"batch_size\": 200}')");
$run = $node->safe_psql('postgres', "SELECT ecp.start('slow2')");
ok(EcpTest::poll($node, "SELECT processed >= 600 FROM ecp.progress WHERE run_id = $run", 60),
	'the run to cancel makes progress');
$node->safe_psql('postgres', "SELECT ecp.cancel($run)");
ok(EcpTest::poll($node,
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 10),
	'the worker stops after cancel');
# Requests are counted when they arrive: one sent before the cancel may
# still be answered (the stand-in delays it) after the worker left.
my $requests_at_cancel = $es->stats->{requests};
my $items_at_cancel = $es->stats->{bulk_items};
sleep 2;
is($es->stats->{requests}, $requests_at_cancel, 'no request arrives after cancel');
is(EcpTest::run_state($node, $run), 'cancelled', 'the run is cancelled');
ok($items_at_cancel < 20000, 'cancelled mid-run');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = 'cancel'"),
	'1', 'the flow records the cancel');
$es->clear_faults;

$es->stop;
$node->stop;
done_testing();
