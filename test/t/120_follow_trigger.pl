# Following changes in mode trigger (wal_level is not logical: the test
# cluster runs with wal_level minimal).
# - ecp.follow picks mode trigger and says so; the backfill loads every
#   row, and writes made while it runs all arrive;
# - rounds of inserts, updates (also of the joined table whose name the
#   documents embed) and deletes reach the index: afterwards the index
#   equals the query, document for document (missing, stale, extra: 0);
# - a bulk UPDATE of 100,000 rows: one trigger call per statement;
# - a 10 s Elasticsearch outage, a kill -9 of the follower and a server
#   restart lose nothing;
# - pause and resume; unfollow drops the triggers and empties the queue.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EcpTest;
use EcpFollow;
use EsdServer;

EsdServer->require_stand_in('faults: an outage of the bulk API');
my $node = EcpTest::new_node('follow_trigger',
	conf => [ 'track_functions = all', 'restart_after_crash = on', 'ecp.recovery_timeout = 2', 'ecp.heartbeat_interval = 1' ]);
my $es = EsdServer->start();
is($node->safe_psql('postgres', 'SHOW wal_level'), 'minimal', 'the cluster does not decode');
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
EcpFollow::create_shop($node, 100_000);
$node->safe_psql('postgres',
	"SELECT ecp.create_task('shop', 'esd', 'shop', query => \$q\$$EcpFollow::QUERY\$q\$, options => '$EcpFollow::OPTIONS')");

# --- follow with a backfill, writes during it ----------------------------------
# a rate limit keeps the backfill busy for seconds, so writes land during it
$node->safe_psql('postgres', "SELECT ecp.set_rate('shop', 10000)");
my ($rc, $out, $err) = $node->psql('postgres', "SELECT ecp.follow('shop')");
is($rc, 0, 'ecp.follow succeeds');
like($err, qr/task "shop" is followed in mode trigger .*statement triggers on public\.categories, public\.products/,
	'the NOTICE names the mode and the tables');
like($err, qr/wal_level is minimal/, 'and hints at wal_level logical');
my $run = $out;
is($node->safe_psql('postgres', "SELECT mode FROM ecp.followers WHERE task = 'shop'"), 'trigger',
	'ecp.followers shows mode trigger');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ecp_follow_%' AND tgenabled = 'A'}),
	'8', 'four statement triggers on each table, enabled always');

# writes while the backfill runs
for my $round (1 .. 3)
{
	EcpFollow::change_shop($node, $round, 300, 300, 30);
}
is(EcpFollow::follower_state($node, 'shop'), 'backfilling', 'the writes landed while the backfill ran');
$node->safe_psql('postgres', "SELECT ecp.set_rate('shop', 0)");
ok(EcpFollow::until_true(sub { EcpFollow::follower_state($node, 'shop') eq 'following' }, 120),
	'the follower follows once the backfill is done');
is(EcpFollow::wait_equal($node, $es, 'shop', 'shop'), '0 0 0',
	'after the backfill and the writes during it, the index equals the source');
is($node->safe_psql('postgres', "SELECT state FROM ecp.progress WHERE run_id = $run"), 'following',
	'ecp.progress says following');
is($node->safe_psql('postgres', "SELECT state FROM ecp.parts WHERE run_id = $run AND part = -2"), 'following',
	'ecp.parts says following for the follower part');

# --- rounds of changes ----------------------------------------------------------
EcpFollow::change_shop($node, 4, 1000, 1000, 100);
is(EcpFollow::wait_equal($node, $es, 'shop', 'shop'), '0 0 0',
	'1,000 inserts, 1,000 updates (and two category renames), 100 deletes: the index equals the source');

# --- a bulk UPDATE: one trigger call per statement -------------------------------
$node->safe_psql('postgres', 'SELECT pg_stat_reset()');
$node->safe_psql('postgres', 'UPDATE public.products SET price = price + 1 WHERE id <= 100000');
$node->poll_query_until('postgres',
	q{SELECT coalesce((SELECT calls FROM pg_stat_user_functions WHERE funcname = '_follow_enqueue'), 0) > 0})
  or die 'function statistics never arrived';
is($node->safe_psql('postgres', q{SELECT calls FROM pg_stat_user_functions WHERE funcname = '_follow_enqueue'}),
	'1', 'a bulk UPDATE of ~100,000 rows: one trigger call');
is(EcpFollow::wait_equal($node, $es, 'shop', 'shop', 180), '0 0 0', 'the bulk UPDATE reaches the index');

# --- an outage of Elasticsearch --------------------------------------------------
$es->set_faults({ bulk_reject => { status => 503 } });
my $outage_start = time;
EcpFollow::change_shop($node, 5, 200, 200, 20);
ok(EcpFollow::until_true(sub {
	$node->safe_psql('postgres', "SELECT count(*) > 0 FROM ecp.flow WHERE run_id = $run AND action = 'retry'") eq 't' }, 30),
	'the follower retries while the bulk API answers 503');
EcpFollow::until_true(sub { time - $outage_start >= 10 }, 15);
$es->clear_faults;
is(EcpFollow::wait_equal($node, $es, 'shop', 'shop'), '0 0 0', 'after a 10 s outage nothing is lost');

# --- kill -9 of the follower -----------------------------------------------------
my $pid = $node->safe_psql('postgres', "SELECT worker_pid FROM ecp.parts WHERE run_id = $run AND part = -2");
ok($pid > 0, 'the follower has a worker');
EcpFollow::change_shop($node, 6, 200, 200, 20);
kill 'KILL', $pid;
# a killed backend restarts the cluster (restart_after_crash): wait for it
$node->poll_query_until('postgres', 'SELECT true') or die 'the cluster did not come back';
EcpFollow::change_shop($node, 7, 200, 200, 20);
ok(EcpFollow::until_true(sub {
	my $now = $node->safe_psql('postgres', "SELECT coalesce(worker_pid, 0) FROM ecp.parts WHERE run_id = $run AND part = -2");
	return $now != 0 && $now != $pid }, 120), 'a new follower takes over after kill -9');
is(EcpFollow::wait_equal($node, $es, 'shop', 'shop'), '0 0 0', 'after kill -9 nothing is lost');

# --- a server restart --------------------------------------------------------------
EcpFollow::change_shop($node, 8, 200, 200, 20);
$node->restart;
EcpFollow::change_shop($node, 9, 200, 200, 20);
is(EcpFollow::wait_equal($node, $es, 'shop', 'shop', 150), '0 0 0', 'after a restart nothing is lost');

# --- pause and resume ----------------------------------------------------------------
$node->safe_psql('postgres', "SELECT ecp.pause($run)");
ok(EcpFollow::until_true(sub { EcpFollow::follower_state($node, 'shop') eq 'paused' }, 30), 'a paused follower says so');
EcpFollow::change_shop($node, 10, 100, 100, 10);
ok($node->safe_psql('postgres', "SELECT queue_length FROM ecp.followers WHERE task = 'shop'") > 0,
	'while paused the changes wait in the queue');
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpFollow::wait_equal($node, $es, 'shop', 'shop'), '0 0 0', 'resumed, the follower catches up');

# --- unfollow ---------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT ecp.unfollow('shop')");
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ecp_follow_%'}), '0',
	'unfollow drops the triggers');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ecp.follow_queue'), '0', 'and empties the queue');
is($node->safe_psql('postgres', "SELECT state FROM ecp.run WHERE id = $run"), 'cancelled', 'its run is cancelled');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ecp.followers}), '0', 'ecp.followers is empty');
$node->safe_psql('postgres', 'UPDATE public.products SET price = price + 1 WHERE id < 100');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ecp.follow_queue'), '0', 'writes are no longer queued');

# --- cancelling the follow run unfollows ---------------------------------------------
my $again = $node->safe_psql('postgres', "SELECT ecp.follow('shop', backfill => false)");
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ecp_follow_%'}), '8', 'followed again');
$node->safe_psql('postgres', "SELECT ecp.cancel($again)");
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ecp_follow_%'}) . ' '
	. $node->safe_psql('postgres', 'SELECT count(*) FROM ecp.followers'), '0 0',
	'ecp.cancel of the follow run unfollows: triggers dropped, no follower');

$es->stop;
$node->stop;
done_testing();
