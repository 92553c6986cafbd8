# Rate limiting: a run limited to 2,000 docs/s arrives at that pace by the
# sink's own clock; ecp.set_rate and a plain UPDATE change it mid-run.
#
# What the limiter promises (src/common/limiter.c, src/worker/sink_es.c), and so what is
# asserted, by the times the sink logged each bulk request:
#  - a bucket holds at most one second's worth of tokens (its capacity is
#    the rate r; it refills at r per second), and a request takes the
#    tokens of all its documents before it is sent;
#  - under a limit a request carries at most r/20 documents, and a worker
#    has one request in flight at a time: it takes the tokens of its next
#    request only once the last one was answered, and the sink logs a
#    request before it answers it.
# So, for one worker, the requests the sink logged after a request R and at
# most W seconds later had their tokens taken within those W seconds: they
# carry at most r (a full bucket) + r * W documents.  Hence
#  - the average from the first logged request to the last, the first one
#    left out, is at most r * (1 + 1/span): about 1.1 r over a 10 s run;
#  - no second carries more than 2 r plus the request in flight when it
#    began (one per worker): a full bucket after a stall, and one second's
#    refill.  A stall of the machine moves documents from one second to
#    the next, so single seconds are not compared with r (they were, and a
#    100 ms stall of a loaded machine broke the test).
# The averages must also reach 80% of r: the limiter must not throttle
# below its rate.  A stall shorter than a second costs nothing there (the
# bucket keeps the tokens and the worker catches up), so only a machine
# slower than r for seconds on end could miss it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use List::Util qw(min max sum0);
use Time::HiRes qw(time);
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

sub seconds_of_run
{
	my @t = map { $_->{second} } @{ $es->stats->{timeline} };
	return (min(@t), max(@t));
}

# The sink's log of bulk requests, oldest first: [t_ms, items] pairs, those
# logged from $from_ms to $to_ms (epoch milliseconds) when given.
sub bulk_log
{
	my ($from_ms, $to_ms) = @_;
	return grep { (!defined $from_ms || $_->[0] >= $from_ms) && (!defined $to_ms || $_->[0] <= $to_ms) }
	  map { [ $_->{t_ms}, $_->{items} ] } @{ $es->stats->{bulk_log} };
}

# Poll until the sink has logged a request after $t_ms, with a timeout.
sub wait_log_past
{
	my ($t_ms) = @_;
	for (1 .. 600)
	{
		my @log = bulk_log();
		return 1 if @log && $log[-1][0] > $t_ms;
		select(undef, undef, undef, 0.1);
	}
	return 0;
}

# Documents per second from the first request of @log to its last, the
# first one left out (its tokens were taken before); and that span in s.
sub average_rate
{
	my @log = @_;
	return (0, 0) if @log < 2;
	my $span = ($log[-1][0] - $log[0][0]) / 1000;
	return (0, $span) if $span <= 0;
	return (sum0(map { $_->[1] } @log[ 1 .. $#log ]) / $span, $span);
}

# The most documents the sink logged within any one second (a window that
# opens at a logged request, closing 1000 ms after it).
sub busiest_second
{
	my @log = @_;
	my ($best, $j, $in) = (0, 0, 0);
	for my $i (0 .. $#log)
	{
		while ($j <= $#log && $log[$j][0] - $log[$i][0] <= 1000)
		{
			$in += $log[$j][1];
			$j++;
		}
		$best = $in if $in > $best;
		$in -= $log[$i][1];
	}
	return $best;
}

# Check one stretch of the sink's log against a rate $r shared by $workers
# workers: the average (see the top of the file) and the busiest second.
# The bounds get 0.2% and 1 document of slack for the sink's whole
# milliseconds.
sub check_rate
{
	my ($what, $r, $workers, @log) = @_;
	my ($avg, $span) = average_rate(@log);
	my $biggest = max(0, map { $_->[1] } @log);
	# each worker beyond the first may have had a request in flight at the start
	my $avg_bound = ($r * (1 + $span) + ($workers - 1) * $biggest) / ($span || 1) * 1.002 + 1;
	my $second_bound = 2.002 * $r + $workers * $biggest + 1;
	my $busiest = busiest_second(@log);
	ok($avg >= 0.8 * $r && $avg <= $avg_bound,
		sprintf('%s: on average %.0f docs/s over %.1f s (from %.0f, 80%% of %d, to %.0f, the bucket\'s one second more)',
			$what, $avg, $span, 0.8 * $r, $r, $avg_bound));
	ok($busiest <= $second_bound,
		sprintf('%s: the busiest second carried %d documents (at most %.0f: 2 x %d, a full bucket and a second of refill, + %d x %d in flight)',
			$what, $busiest, $second_bound, $r, $workers, $biggest));
	return;
}

# --- 2,000 docs/s over 20,000 documents -----------------------------------
$node->safe_psql('postgres',
	"SELECT ecp.create_task('limited', 'esd', 'limited', query => 'SELECT * FROM items WHERE id <= 20000', "
	  . "options => '{\"batch_size\": 1000, \"rate_limit\": 2000}')");
my $run = $node->safe_psql('postgres', "SELECT ecp.start('limited')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'the limited run succeeds');
my ($first, $last) = seconds_of_run();
my @counts = per_second($first, $last);
my @log = bulk_log();
is(sum0(map { $_->[1] } @log), 20000, 'the sink logged every document (' . scalar(@log) . ' requests)');
diag('documents per second of the sink\'s clock: ' . join(',', @counts));
check_rate('2,000 docs/s', 2000, 1, @log);

# --- set_rate and a plain UPDATE mid-run --------------------------------------
$es->reset;
$node->safe_psql('postgres',
	"SELECT ecp.create_task('changing', 'esd', 'changing', query => 'SELECT * FROM items', "
	  . "options => '{\"batch_size\": 1000, \"rate_limit\": 1000}')");
$run = $node->safe_psql('postgres', "SELECT ecp.start('changing')");
ok(EcpTest::poll($node, "SELECT processed >= 3000 FROM ecp.progress WHERE run_id = $run", 60), 'running at 1,000/s');

# A new rate is checked over the 4 s after the task's bucket shows it (the
# launcher pushes it within a second; the poll only finds out when).
sub check_new_rate
{
	my ($what, $r) = @_;
	ok(EcpTest::poll($node,
			"SELECT configured_rate = $r FROM ecp.rate_limits WHERE kind = 'task' AND name = 'changing'", 30),
		"$what: the task's bucket has the new rate");
	my $from_ms = int(time * 1000);
	ok(wait_log_past($from_ms + 4000), "$what: the run goes on");
	check_rate($what, $r, 1, bulk_log($from_ms, $from_ms + 4000));
	return;
}
$node->safe_psql('postgres', "SELECT ecp.set_rate('changing', 3000)");
check_new_rate('ecp.set_rate to 3,000/s', 3000);
$node->safe_psql('postgres',
	"UPDATE ecp.task SET options = jsonb_set(options, '{rate_limit}', '1500') WHERE name = 'changing'");
check_new_rate('a plain UPDATE of rate_limit to 1,500/s', 1500);
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
@counts = per_second($first, $last);
@log = bulk_log();
is(sum0(map { $_->[1] } @log), 30000, 'the sink logged every document of both runs');
diag('documents per second of the sink\'s clock: ' . join(',', @counts));
check_rate('two runs sharing the consumer limit of 3,000/s', 3000, 2, @log);

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
