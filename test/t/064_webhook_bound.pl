# A webhook that accepts connections and never answers does not hold up
# the launcher: with 20 alerts waiting for it, a new run still starts
# within a few seconds (the launcher spends at most 2 s per pass on the
# webhook, and leaves it alone for a while after a failure).
# Also: a transaction that started a run cannot be PREPAREd (COMMIT
# PREPARED could not wake the launcher or stop workers).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('a sink for the runs');

# A webhook that accepts connections and never answers (EcpTest).
my ($hook_url, $connections, $child) = EcpTest::silent_listener();
sub connections { return $connections->() }

# Poll until the webhook got more than $n connections: the launcher is in
# the middle of a POST.
sub wait_for_post
{
	my ($n, $timeout) = @_;
	my $deadline = time + ($timeout // 40);
	while (time < $deadline)
	{
		return 1 if connections() > $n;
		sleep 0.05;
	}
	return 0;
}

my $node = EcpTest::new_node('webhook', conf => [ "ecp.alert_webhook = '$hook_url'", 'log_min_messages = warning', 'max_prepared_transactions = 2' ]);
my $es = EsdServer->start(discard => 1);
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres',
	"SELECT ecp.create_task('seed', 'esd', 'seed', query => 'SELECT g AS id FROM generate_series(1, 10) g')");
my $seed = $node->safe_psql('postgres', "SELECT ecp.start('seed')");
ok(EcpTest::poll($node, "SELECT state <> 'pending' FROM ecp.run WHERE id = $seed", 30), 'a first run starts');

# Alerts are flow rows that ecp writes; the superuser writes them here.
sub alerts
{
	my ($n) = @_;
	$node->safe_psql('postgres', qq{
INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
SELECT r.task_id, r.id, 'alert',
       jsonb_build_object('run', r.id, 'class', 'failed', 'error', 'test alert ' || g), 'postgres', r.owner
  FROM ecp.run r, generate_series(1, $n) g WHERE r.id = $seed});
}

# The launcher sends alerts raised after it first looked: raise one until
# the webhook sees a POST.
my $tried = 0;
for (1 .. 30)
{
	alerts(1);
	if (wait_for_post(0, 2))
	{
		$tried = 1;
		last;
	}
}
ok($tried, 'the launcher POSTs to the silent webhook');

# Twenty alerts; once the launcher is in the middle of POSTing them, a run
# starts: it must not wait for twenty unanswered POSTs.
for my $name ('next', 'later')
{
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$name', 'esd', '$name', query => 'SELECT g AS id FROM generate_series(1, 10) g')");
	my $before = connections();
	alerts(20);
	ok(wait_for_post($before), "$name: the launcher is POSTing the new alerts");
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	my $t0 = time;
	ok(EcpTest::poll($node, "SELECT state <> 'pending' FROM ecp.run WHERE id = $run", 60), "$name: the run starts");
	my $delay = time - $t0;
	ok($delay < 6, sprintf('%s: within a few seconds (%.1f s), not after twenty unanswered POSTs', $name, $delay));
}
like(slurp_file($node->logfile), qr/ecp.alert_webhook did not answer alert \d+ in time|could not POST alert \d+/,
	'each unanswered POST is a WARNING');

# --- PREPARE TRANSACTION with signals pending -------------------------------
$node->safe_psql('postgres',
	"SELECT ecp.create_task('prep', 'esd', 'prep', query => 'SELECT g AS id FROM generate_series(1, 10) g')");
my ($rc, $out, $err) = $node->psql('postgres', "BEGIN; SELECT ecp.start('prep'); PREPARE TRANSACTION 'p1';");
like($err, qr/cannot PREPARE a transaction that changed ecp runs or rates/, 'PREPARE TRANSACTION after ecp.start is refused');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id WHERE t.name = 'prep'")
	  . $node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'),
	'00', 'nothing was created and nothing stays prepared');

kill 'TERM', $child;
waitpid($child, 0);
$es->stop;
$node->stop;
done_testing();
