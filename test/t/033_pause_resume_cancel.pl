# Pause, resume and cancel mid-run: once the worker has left, no new
# request arrives while paused or after cancel; resume finishes with no id
# missing, and the flow records every step with its operator.  Needs the
# stand-in's delay fault to keep a run going long enough to be paused.
#
# ecp's contract (README, ecp.pause): a request in flight is abandoned, and
# its page sent again on resume.  The stand-in does not know that the
# client went away: a request whose body had arrived still runs (after its
# delay_ms, which is not cut short), and one whose body was still in the
# kernel's buffers when the worker exited is read and counted a moment
# later.  So the checks count requests as they arrive (the stand-in's
# "requests", counted before the delay), allow that one abandoned request
# after the worker left, and then require silence.
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

# After the worker left: at most the one request it abandoned arrives (in
# the first 2 s), then nothing (in the next second).
sub quiet_after_worker_left
{
	my ($what) = @_;
	my $at_exit = $es->stats->{requests};
	sleep 2;
	my $late = $es->stats->{requests} - $at_exit;
	ok($late <= 1, "$what: at most the abandoned request arrives after the worker left ($late)");
	sleep 1;
	is($es->stats->{requests}, $at_exit + $late, "$what: then no request arrives");
	return;
}

$run = $node->safe_psql('postgres', "SELECT ecp.start('slow')");
ok(EcpTest::poll($node, "SELECT processed >= 1000 FROM ecp.progress WHERE run_id = $run", 60),
	'the slow run makes progress');
$node->safe_psql('postgres', "SELECT ecp.pause($run)");
is(EcpTest::run_state($node, $run), 'paused', 'pause is immediate in the table');
ok(EcpTest::poll($node,
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 10),
	'the worker stops after pause');
my $processed_at_pause = $node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run");
ok($processed_at_pause < 20000, "paused mid-run ($processed_at_pause of 20000)");
# an absence: short windows, not a sync
quiet_after_worker_left('paused');
is(EcpTest::run_state($node, $run), 'paused', 'still paused');

$node->safe_psql('postgres', "SELECT ecp.resume($run)");
$es->clear_faults;
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'the resumed run finishes');
$es->refresh('slow');
is($es->count('slow'), 20000, 'no id is missing after pause and resume');
is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"),
	'20000', 'processed counts every document once');
# the count check comes after the run has finished (its last worker does it)
ok(EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp.flow WHERE run_id = $run AND action = 'count checked'", 30),
	'the run\'s count check is in the flow');
is($node->safe_psql('postgres',
		"SELECT string_agg(action, ',' ORDER BY at) FROM ecp.flow WHERE run_id = $run"),
	'start,worker started,cluster,pause,resume,worker started,cluster,finished,count checked',
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
quiet_after_worker_left('cancelled');
my $items_at_cancel = $es->stats->{bulk_items};
is(EcpTest::run_state($node, $run), 'cancelled', 'the run is cancelled');
ok($items_at_cancel < 20000, 'cancelled mid-run');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = 'cancel'"),
	'1', 'the flow records the cancel');
$es->clear_faults;

$es->stop;
$node->stop;
done_testing();
