# The claim race: two workers released at the same moment on one part whose
# worker died.  The compare-and-set on the part's heartbeat is what keeps a
# part from running twice; here two claimants hold the same heartbeat and
# reach the claim together: one runs the part, the other stands down with
# its flow row "claim lost", and no document is sent twice beyond the page
# the worker that died had in flight.
#
# How the race is staged, with no sleep: ecp.test_claim_race makes the
# launcher start two workers for a part whose worker died (both with the
# heartbeat it saw); a session holds ecp.run_id locked, which every worker
# reads when it loads its part (the launcher never does), so both wait
# there until the test sees both waiting and commits.  The dead worker is
# staged from a paused run: its part set back to running with an old
# heartbeat, as a worker killed mid-part leaves it (041 kills for real).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('delays and request counts');
my $node = EcpTest::new_node('claim_race',
	conf => [ 'ecp.test_claim_race = on', 'ecp.recovery_timeout = 2', 'ecp.heartbeat_interval = 1' ]);
my $es = EsdServer->start();
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 20000) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id)');
my $batch = 500;

$es->set_faults({ delay_ms => 100 });
$node->safe_psql('postgres',
	"SELECT ecp.create_task('race', 'esd', 'race', query => 'SELECT * FROM items', options => '{\"batch_size\": $batch}')");
my $run = $node->safe_psql('postgres', "SELECT ecp.start('race')");
ok(EcpTest::poll($node, "SELECT processed BETWEEN 3000 AND 14000 FROM ecp.progress WHERE run_id = $run", 60),
	'the run is under way');
$node->safe_psql('postgres', "SELECT ecp.pause($run)");
is(EcpTest::wait_for_run($node, $run, 'paused', 60), 'paused', 'paused mid-run');
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 60),
	'no worker left');
my $sent_before = $es->stats->{bulk_items};
my $processed_before = $node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run");

# Both claimants will wait here, after the launcher started them.
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; LOCK TABLE ecp.run_id IN ACCESS EXCLUSIVE MODE');

# What a worker that died mid-part leaves: its part running, an old heartbeat.
# (one transaction, the run first: a resume sets its parts pending)
$node->safe_psql('postgres',
	"BEGIN; UPDATE ecp.run SET state = 'running' WHERE id = $run;"
	  . " UPDATE ecp.part SET state = 'running', heartbeat_at = now() - interval '1 hour', worker_pid = 1 WHERE run_id = $run;"
	  . " COMMIT");
my $old_heartbeat = $node->safe_psql('postgres', "SELECT heartbeat_at FROM ecp.part WHERE run_id = $run");

ok(EcpTest::poll($node,
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'ecp worker' AND wait_event_type = 'Lock'", 60),
	'the launcher started two workers for the part, both wait at the lock');
$holder->query_safe('COMMIT');
$holder->quit;

is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'the run finishes');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = 'recovered'"),
	'1', 'one worker claimed the part (one "recovered" row)');
ok(EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp.flow WHERE run_id = $run AND action = 'claim lost'", 30),
	'the other stood down with its flow row "claim lost"');
my ($lost_part, $lost_pid, $seen) = split /\|/, $node->safe_psql('postgres',
	"SELECT content->>'part', content->>'pid', (content->>'heartbeat_seen')::timestamptz = '$old_heartbeat'"
	  . "  FROM ecp.flow WHERE run_id = $run AND action = 'claim lost'");
is($lost_part, '0', 'the row names the part');
is($seen, 't', 'and the heartbeat both claimants saw');
isnt($lost_pid, $node->safe_psql('postgres',
		"SELECT content->>'pid' FROM ecp.flow WHERE run_id = $run AND action = 'recovered'"),
	'the loser is not the worker that ran the part');
like(slurp_file($node->logfile), qr/part 0 stands down: another worker claimed the part/,
	'the server log says the loser stood down');

$es->clear_faults;
$es->refresh('race');
is($es->count('race'), 20000, 'every source id is in the index');
my $sent_after = $es->stats->{bulk_items} - $sent_before;
my $remaining = 20000 - $processed_before;
ok($sent_after >= $remaining && $sent_after <= $remaining + $batch,
	"after the race, the documents left are sent once, plus at most one page ($sent_after for $remaining left)");
ok($es->stats->{bulk_items} <= 20000 + 2 * $batch,
	'over the run, at most the page in flight at the pause and none of the race sent twice ('
	  . $es->stats->{bulk_items} . ' documents sent)');
is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"), '20000',
	'processed counts each document once');

$node->stop;
done_testing();
