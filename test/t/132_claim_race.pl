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
use Time::HiRes qw(time);
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

# --- workers that stay: kill -9 between parts and mid-part ----------------
# 8 queries of 2,500 rows, parallelism 1: one worker runs part after part
# in one process.  It is killed once right after a part ended (the next
# not yet claimed, or just claimed), and once mid-part; the run finishes,
# every id is in the index once, and at most the pages whose asynchronous
# checkpoints the crash lost are sent twice.
$node->append_conf('postgresql.conf', "restart_after_crash = on\nwal_writer_delay = 200ms\necp.test_claim_race = off");
$node->restart;
$node->safe_psql('postgres',
	'CREATE TABLE shard_rows AS SELECT g AS id, (g - 1) / 2500 AS shard, md5(g::text) AS label FROM generate_series(1, 20000) g');
$es->reset;
$es->set_faults({ delay_ms => 100 });
$node->safe_psql('postgres',
	"SELECT ecp.create_task('stay', 'esd', 'stay', queries => (SELECT array_agg(format("
	  . "'SELECT id, label FROM shard_rows WHERE shard = %s', s)) FROM generate_series(0, 7) s),"
	  . " options => '{\"batch_size\": $batch, \"key_column\": \"id\", \"parallelism\": 1}')");
$run = $node->safe_psql('postgres', "SELECT ecp.start('stay')");

# kill -9 of a worker; true once the server is back after its crash restart
sub kill_and_wait_restart
{
	my ($pid) = @_;
	return 0 unless $pid =~ /^\d+$/ && kill('KILL', $pid);
	my $deadline = time + 60;
	select(undef, undef, undef, 0.05) while kill(0, $pid) && time < $deadline;
	return $node->poll_query_until('postgres', 'SELECT true');
}

my $worker_sql = "SELECT a.pid FROM pg_stat_activity a WHERE a.backend_type = 'ecp worker'";
ok(EcpTest::poll($node,
		"SELECT count(*) FILTER (WHERE state = 'done') >= 2 AND count(*) FILTER (WHERE state = 'running') = 1"
		  . "  AND (SELECT count(DISTINCT (content->>'pid')) FROM ecp.flow WHERE run_id = $run AND action = 'worker started') = 1"
		  . "  FROM ecp.part WHERE run_id = $run", 120),
	'stay: one worker process ran two parts and went on with a third');
# between parts: the worker that ends a part loads the next one, reading
# ecp.run_id, which a session holds locked: it waits there, no part running
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE ecp.run_id IN ACCESS EXCLUSIVE MODE');
ok(EcpTest::poll($node,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ecp worker' AND wait_event_type = 'Lock'", 120),
	'stay: the worker ended its part and waits to load the next');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.part WHERE run_id = $run AND state = 'running'"), '0',
	'stay: between parts (none running)');
my $pid = $node->safe_psql('postgres', $worker_sql);
ok(kill_and_wait_restart($pid), "stay: the worker ($pid) is killed between parts, the server is back");
eval { $locker->quit };		# the crash restart ended its session
ok(EcpTest::poll($node,
		"SELECT count(*) FILTER (WHERE state = 'done') >= 4 FROM ecp.part WHERE run_id = $run", 120),
	'stay: the run goes on after the crash');
# mid-part: a part with some pages acknowledged
ok(EcpTest::poll($node,
		"SELECT bool_or(state = 'running' AND processed >= $batch) FROM ecp.parts WHERE run_id = $run", 120),
	'stay: a part is under way');
$pid = $node->safe_psql('postgres', $worker_sql);
ok(kill_and_wait_restart($pid), "stay: the worker ($pid) is killed mid-part, the server is back");
$es->clear_faults;
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'stay: the run finishes by itself');
$es->refresh('stay');
is($es->count('stay'), 20000, 'stay: every source id is in the index');
my $resent = $es->stats->{bulk_items} - 20000;
# per crash, the pages of the last 600 ms (3 x wal_writer_delay, 100 ms a
# request: 6) plus the one in flight, as in 041
ok($resent >= 0 && $resent <= 2 * 7 * $batch, "stay: at most the pages of the crash windows sent twice ($resent documents)");
is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"), '20000',
	'stay: processed counts each document once');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.part WHERE run_id = $run AND state = 'done'"), '8',
	'stay: every part done');

$node->stop;
done_testing();
