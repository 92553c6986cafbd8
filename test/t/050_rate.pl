# Rate limiting: a run limited to 2,000 docs/s arrives at that pace by the
# sink's own clock; ecp.set_rate and a plain UPDATE change it mid-run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use List::Util qw(min max);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('the per-second timeline of the sink');
my $node = EcpTest::new_node('rate');
my $es = EsdServer->start(discard => 1);
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 40000) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id)');

# items per whole second of the sink's clock, between two epoch seconds
sub per_second
{
	my ($from, $to) = @_;
	my %items = map { $_->{second} => $_->{items} } @{ $es->stats->{timeline} };
	return map { $items{$_} // 0 } ($from .. $to);
}

# Poll the sink until its timeline has gone past second $sec (so that second
# is complete), with a timeout.
sub wait_timeline_past
{
	my ($sec) = @_;
	for (1 .. 600)
	{
		my ($first, $last) = seconds_of_run();
		return 1 if defined $last && $last > $sec;
		select(undef, undef, undef, 0.1);
	}
	return 0;
}

sub seconds_of_run
{
	my @t = map { $_->{second} } @{ $es->stats->{timeline} };
	return (min(@t), max(@t));
}

# --- 2,000 docs/s over 20,000 documents -----------------------------------
$node->safe_psql('postgres',
	"SELECT ecp.create_task('limited', 'esd', 'limited', query => 'SELECT * FROM items WHERE id <= 20000', "
	  . "options => '{\"batch_size\": 1000, \"rate_limit\": 2000}')");
my $run = $node->safe_psql('postgres', "SELECT ecp.start('limited')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'the limited run succeeds');
my ($first, $last) = seconds_of_run();
my @counts = per_second($first + 1, $last - 1);    # whole seconds only
ok(@counts >= 6, 'the run took about 10 s (' . scalar(@counts) . ' whole seconds)');
my @off = grep { $_ < 1800 || $_ > 2200 } @counts;
is(scalar @off, 0, 'every whole second within 10% of 2,000 (' . join(',', @counts) . ')');

# --- set_rate and a plain UPDATE mid-run --------------------------------------
$es->reset;
$node->safe_psql('postgres',
	"SELECT ecp.create_task('changing', 'esd', 'changing', query => 'SELECT * FROM items', "
	  . "options => '{\"batch_size\": 1000, \"rate_limit\": 1000}')");
$run = $node->safe_psql('postgres', "SELECT ecp.start('changing')");
ok(EcpTest::poll($node, "SELECT processed >= 3000 FROM ecp.progress WHERE run_id = $run", 60), 'running at 1,000/s');
$node->safe_psql('postgres', "SELECT ecp.set_rate('changing', 3000)");
my $changed = time;
ok(wait_timeline_past($changed + 4), 'running at 3,000/s');
my @fast = per_second($changed + 2, $changed + 4);
is(scalar(grep { $_ < 2700 || $_ > 3300 } @fast), 0, 'the new rate holds within a second of ecp.set_rate (' . join(',', @fast) . ')');
$node->safe_psql('postgres',
	"UPDATE ecp.task SET options = jsonb_set(options, '{rate_limit}', '1500') WHERE name = 'changing'");
$changed = time;
ok(wait_timeline_past($changed + 4), 'running at 1,500/s');
my @slow = per_second($changed + 2, $changed + 4);
is(scalar(grep { $_ < 1350 || $_ > 1650 } @slow), 0, 'a plain UPDATE of rate_limit holds within a second (' . join(',', @slow) . ')');
is($node->safe_psql('postgres',
		"SELECT string_agg(content->>'old' || '->' || (content->>'new') || ' by ' || operator, ', ' ORDER BY at) FROM ecp.flow WHERE action = 'set_rate'"),
	'1000->3000 by postgres, 3000->1500 by postgres',
	'the flow records each change, by set_rate or UPDATE, with operator, old and new values');
like($node->safe_psql('postgres', "SELECT configured_rate FROM ecp.rate_limits WHERE kind = 'task' AND name = 'changing'"),
	qr/^1500$/, 'ecp.rate_limits shows the configured rate');
$node->safe_psql('postgres', "SELECT ecp.set_rate('changing', 0)");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'unlimited again, the run finishes');
my ($rc, $o, $e) = $node->psql('postgres', "UPDATE ecp.task SET options = options || '{\"rate_limit\": -1}' WHERE name = 'changing'");
like($e, qr/option "rate_limit" of a task must be a number between 0 and 1000000000, not -1/, 'a bad rate in a plain UPDATE is refused');

# --- two runs on one consumer share its limit ----------------------------------
$es->reset;
$node->safe_psql('postgres', "SELECT ecp.create_consumer('shared', '" . $es->url . "', options => '{\"rate_limit\": 3000}')");
for my $name ('left', 'right')
{
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$name', 'shared', '$name', query => 'SELECT * FROM items WHERE id <= 15000', "
		  . "options => '{\"batch_size\": 1000}')");
}
my @runs = map { $node->safe_psql('postgres', "SELECT ecp.start('$_')") } ('left', 'right');
is(EcpTest::wait_for_run($node, $_, 'succeeded', 120), 'succeeded', "run $_ on the shared consumer succeeds") for @runs;
($first, $last) = seconds_of_run();
@counts = per_second($first + 1, $last - 1);
ok(@counts >= 6, 'both runs took about 10 s together (' . scalar(@counts) . ' whole seconds)');
is(scalar(grep { $_ > 3300 } @counts), 0, 'together they never exceed the consumer limit of 3,000/s (' . join(',', @counts) . ')');

# --- a pause during a long rate-limit wait --------------------------------------
$node->safe_psql('postgres',
	"SELECT ecp.create_task('trickle', 'esd', 'trickle', query => 'SELECT * FROM items', "
	  . "options => '{\"batch_size\": 1000, \"rate_limit\": 20}')");
$run = $node->safe_psql('postgres', "SELECT ecp.start('trickle')");
ok(EcpTest::poll($node, "SELECT waiting_workers = 1 FROM ecp.rate_limits WHERE kind = 'task' AND name = 'trickle'", 60),
	'the worker waits for tokens (ecp.rate_limits shows it)');
$node->safe_psql('postgres', "SELECT ecp.pause($run)");
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 5),
	'pause ends the wait at once');
is(EcpTest::run_state($node, $run), 'paused', 'the run is paused');
$node->safe_psql('postgres', "SELECT ecp.cancel($run)");

# --- a 429 storm lowers the consumer's effective rate, which climbs back -----
$es->reset;
$node->safe_psql('postgres', "SELECT ecp.create_consumer('guarded', '" . $es->url . "', options => '{\"rate_limit\": 2000}')");
$node->safe_psql('postgres',
	"SELECT ecp.create_task('stormy', 'guarded', 'stormy', query => 'SELECT * FROM items', "
	  . "options => '{\"batch_size\": 1000, \"retry_base_ms\": 20, \"max_retries\": 50}')");
$es->set_faults({ item_reject => { status => 429, fraction => 0.3, seed => 3 } });
$run = $node->safe_psql('postgres', "SELECT ecp.start('stormy')");
ok(EcpTest::poll($node, "SELECT effective_rate < 1000 FROM ecp.rate_limits WHERE kind = 'consumer' AND name = 'guarded'", 60),
	'429s cut the effective rate of the consumer (multiplicative decrease)');
$es->clear_faults;
ok(EcpTest::poll($node, "SELECT effective_rate = 2000 FROM ecp.rate_limits WHERE kind = 'consumer' AND name = 'guarded'", 60),
	'after the storm it climbs back to the configured limit, and no higher (additive increase)');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'the run completes');

$es->stop;
$node->stop;
done_testing();
