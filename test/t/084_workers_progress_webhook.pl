# Worker slots, live progress and a slow webhook:
# - ecp.max_workers = 1 and two slow runs: while the first runs, the second
#   stays pending (never two workers), and it runs after the first ends;
#   that wait is normal and logs nothing, while a cluster whose
#   max_worker_processes has no slot left logs a WARNING (second cluster).
# - ecp.progress during a run limited to 400 docs/s: docs_per_second
#   within 0.4x to 1.6x of the rate, eta set and decreasing, percent
#   between 0 and 100 and growing, heartbeat_at recent; after the run,
#   100% and no speed or eta.
# - ecp.alert_webhook pointing at a listener that accepts and never
#   answers: a run that raises ten alerts takes no longer than the same run
#   without a webhook (plus a margin), a run that fails ends as quickly,
#   and each unanswered POST is a WARNING in the log.
#
# Margins are generous (2 shared cores): see each bound's comment.  Every
# wait is a poll with a timeout.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('delays and faults');

# log_min_messages = warning: PostgreSQL's default, so WARNINGs are logged
# (EcpTest's 'log' keeps them out); ecp's LOG lines are logged either way.
my $node = EcpTest::new_node('slots',
	conf => [ 'ecp.max_workers = 1', 'log_min_messages = warning', 'ecp.alert_after = 1' ]);
my $es = EsdServer->start();
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 4000) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id); ANALYZE items');

sub create_task
{
	my ($n, $name, $query, $options) = @_;
	$n->safe_psql('postgres',
		"SELECT ecp.create_task('$name', 'esd', '$name', query => \$q\$$query\$q\$, options => '$options')");
}

sub log_since
{
	my ($n, $offset) = @_;
	my $log = slurp_file($n->logfile);
	return substr($log, $offset);
}

# ================ ecp.max_workers = 1: the second run waits ==========================
# 20 requests of 100 documents, each answered after 250 ms: about 5 s a run.
$es->set_faults({ delay_ms => { ms => 250, every => 1, match => 'bulk' } });
create_task($node, "slow$_", 'SELECT * FROM items WHERE id <= 2000', '{"batch_size": 100}') for 1, 2;
my $log_offset = length(slurp_file($node->logfile));
my $run1 = $node->safe_psql('postgres', "SELECT ecp.start('slow1')");
ok(EcpTest::poll($node, "SELECT state = 'running' FROM ecp.run WHERE id = $run1", 60), 'the first slow run is running');
my $run2 = $node->safe_psql('postgres', "SELECT ecp.start('slow2')");

# Sample both runs and the workers until the first run ends (at most 120 s).
my ($samples, $both_running, $max_workers, $second_not_pending) = (0, 0, 0, 0);
my $deadline = time + 120;
while (time < $deadline)
{
	my ($s1, $s2, $workers) = split /\|/, $node->safe_psql('postgres',
		"SELECT (SELECT state FROM ecp.run WHERE id = $run1) || '|' || (SELECT state FROM ecp.run WHERE id = $run2) || '|' || "
		  . "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'ecp worker')");
	last if $s1 ne 'running';
	$samples++;
	$second_not_pending++ if $s2 ne 'pending';
	$max_workers = $workers if $workers > $max_workers;
	sleep 0.1;
}
ok($samples >= 5, "the first run was watched while it ran ($samples samples)");
is($second_not_pending, 0, 'while the first run runs, the second stays pending');
is($max_workers, 1, 'never more than ecp.max_workers = 1 worker');
is(EcpTest::wait_for_run($node, $run1, 'succeeded'), 'succeeded', 'the first run succeeds');
is(EcpTest::wait_for_run($node, $run2, 'succeeded'), 'succeeded', 'then the second runs and succeeds');
is($node->safe_psql('postgres', qq{
	SELECT (SELECT min(at) FROM ecp.flow WHERE run_id = $run2 AND action = 'worker started')
	       >= (SELECT at FROM ecp.flow WHERE run_id = $run1 AND action = 'finished')}),
	't', "the second run's worker started after the first run finished");
$es->clear_faults;
# README: waiting for an ecp.max_workers slot is normal and silent; the
# WARNING is for PostgreSQL's own max_worker_processes (second cluster).
unlike(log_since($node, $log_offset), qr/WARNING: .*slot/i,
	'waiting for an ecp.max_workers slot logs no warning');

# ================ ecp.progress during a rate-limited run ===============================
# 4000 documents at 400 docs/s: about 10 s.  Checkpoints every 200
# documents (0.5 s) update the counters, speed and heartbeat.
create_task($node, 'paced', 'SELECT * FROM items', '{"batch_size": 200, "rate_limit": 400, "exact_total": true}');
my $paced = $node->safe_psql('postgres', "SELECT ecp.start('paced')");
my @seen;
$deadline = time + 120;
while (time < $deadline)
{
	my $row = $node->safe_psql('postgres', qq{
		SELECT state, processed, total, percent, coalesce(docs_per_second::text, ''),
		       coalesce(extract(epoch FROM eta)::text, ''),
		       coalesce(extract(epoch FROM now() - heartbeat_at)::text, '')
		  FROM ecp.progress WHERE run_id = $paced});
	my %s;
	@s{qw(state processed total percent dps eta age)} = split /\|/, $row;
	last if $s{state} =~ /^(succeeded|failed|cancelled)$/;
	# skip the start (a burst of one second's worth of tokens, a speed
	# measured over a short time) and the very end
	push @seen, \%s if $s{state} eq 'running' && $s{processed} >= 1200 && $s{processed} <= 3600;
	sleep 0.4;
}
is(EcpTest::wait_for_run($node, $paced, 'succeeded'), 'succeeded', 'the rate-limited run succeeds');
ok(@seen >= 5, 'progress was sampled during the run (' . scalar(@seen) . ' samples)');
diag(join(' ', map { "$_->{processed}:$_->{dps}/s:eta=$_->{eta}" } @seen));
is(scalar(grep { $_->{total} ne '4000' } @seen), 0, 'total is the exact count');
# the rate is 400 docs/s; 160..640 allows for a shared machine's pauses
is(scalar(grep { $_->{dps} eq '' || $_->{dps} < 160 || $_->{dps} > 640 } @seen), 0,
	'docs_per_second stays within 0.4x..1.6x of the 400 docs/s limit');
is(scalar(grep { $_->{eta} eq '' } @seen), 0, 'eta is set while the run runs');
ok(@seen && $seen[-1]{eta} < $seen[0]{eta},
	'eta decreases (' . (@seen ? sprintf('%.0f s, then %.0f s', $seen[0]{eta}, $seen[-1]{eta}) : '') . ')');
# remaining / rate: (4000 - 1200) / 400 = 7 s at most, with the band above
is(scalar(grep { $_->{eta} ne '' && $_->{eta} > (4000 - $_->{processed}) / 160 + 1 } @seen), 0,
	'eta is never more than the documents left at the lowest allowed speed');
is(scalar(grep { $_->{percent} eq '' || $_->{percent} < 0 || $_->{percent} > 100 } @seen), 0, 'percent stays within 0..100');
ok(@seen && $seen[-1]{percent} > $seen[0]{percent}, 'percent grows');
# a checkpoint every 0.5 s; 10 s allows for a stalled machine
is(scalar(grep { $_->{age} eq '' || $_->{age} > 10 } @seen), 0, 'heartbeat_at is never more than 10 s old');
is($node->safe_psql('postgres',
		"SELECT percent || ' ' || (eta IS NULL) || ' ' || (duration = date_trunc('second', duration)) FROM ecp.progress WHERE run_id = $paced"),
	'100.0 true true', 'after the run: 100%, no eta, a duration in whole seconds');
my $average = $node->safe_psql('postgres', "SELECT docs_per_second FROM ecp.progress WHERE run_id = $paced");
ok($average ne '' && $average >= 400 * 0.4 && $average <= 400 * 1.6,
	"docs_per_second of the finished run is its average ($average), within 0.4x..1.6x of the 400 docs/s limit");

# ================ a webhook that never answers ==========================================
# A webhook that accepts connections and never answers (EcpTest).
my ($hook_url, $connections, $child) = EcpTest::silent_listener();
sub connections { return $connections->() }

# A run whose every other request is answered 503: with ecp.alert_after = 1
# each rejected page is an alert (ten of them), each retried after 20 ms.
sub alerting_run
{
	my ($name) = @_;
	$es->set_faults({ bulk_reject => { status => 503, every => 2 } });
	create_task($node, $name, 'SELECT * FROM items WHERE id <= 2000', '{"batch_size": 100, "retry_base_ms": 20}');
	my $t0 = time;
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	my $state = EcpTest::wait_for_run($node, $run, 'succeeded');
	my $wall = time - $t0;
	$es->clear_faults;
	my ($duration, $alerts) = split /\|/, $node->safe_psql('postgres',
		"SELECT extract(epoch FROM duration) || '|' || (SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = 'alert') "
		  . "FROM ecp.progress WHERE run_id = $run");
	return ($state, $duration, $wall, $alerts);
}

my ($state0, $duration0, $wall0, $alerts0) = alerting_run('alerting_base');
is($state0, 'succeeded', 'without a webhook: the alerting run succeeds');
ok($alerts0 >= 5, "without a webhook: it raised $alerts0 alerts");

$log_offset = length(slurp_file($node->logfile));
$node->append_conf('postgresql.conf', "ecp.alert_webhook = '$hook_url'\n");
$node->reload;
ok(EcpTest::poll($node, "SELECT setting <> '' FROM pg_settings WHERE name = 'ecp.alert_webhook'", 30), 'the webhook is set');

my ($state1, $duration1, $wall1, $alerts1) = alerting_run('alerting_hook');
is($state1, 'succeeded', 'with the silent webhook: the alerting run succeeds');
ok($alerts1 >= 5, "with the silent webhook: it raised $alerts1 alerts");
# Were a run to wait for the webhook (2 s per POST), five or more alerts
# would add 10 s or more; 4 s covers a loaded machine.
ok($duration1 < $duration0 + 4,
	sprintf('the run took %.1f s, against %.1f s without a webhook', $duration1, $duration0));
ok($wall1 < $wall0 + 4, sprintf('from ecp.start to its end: %.1f s, against %.1f s', $wall1, $wall0));
ok(connections() >= 1, 'the launcher did POST to the silent webhook (' . connections() . ' connections)');

# a run that fails (401) is an alert too, and ends as quickly as ever
$es->set_faults({ auth => { basic => 'u:p' } });
create_task($node, 'denied', 'SELECT * FROM items WHERE id <= 10', '{}');
my $t0 = time;
my $denied = $node->safe_psql('postgres', "SELECT ecp.start('denied')");
is(EcpTest::wait_for_run($node, $denied, 'failed'), 'failed', 'a denied run fails');
my $wall = time - $t0;
# start (within a second of the launcher's wake-up, 2 s more if it is in
# the middle of a webhook pass), one request, the failure: 8 s is generous
ok($wall < 8, sprintf('... %.1f s after ecp.start, webhook or not', $wall));
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow WHERE run_id = $denied AND action = 'alert'"), '1',
	'its failure is an alert');
$es->clear_faults;

# the unanswered POSTs are WARNINGs (2 s each, the launcher backs off after)
my $warned = 0;
$deadline = time + 60;
while (time < $deadline)
{
	$warned = () = log_since($node, $log_offset) =~
	  /WARNING: +(ecp\.alert_webhook did not answer alert \d+ in time|ecp could not POST alert \d+ to ecp\.alert_webhook)/g;
	last if $warned;
	sleep 0.2;
}
ok($warned >= 1, "an unanswered POST is a WARNING in the server log ($warned)");
unlike(log_since($node, $log_offset) =~ s/parameter "ecp\.alert_webhook" changed to "[^"]*"//gr, qr/\Q$hook_url\E/,
	'the log names no webhook URL (but for PostgreSQL\'s own line about the reload)');

kill 'TERM', $child;
waitpid($child, 0);
$node->stop;

# ================ no background worker slot left: the WARNING ===========================
# max_worker_processes = 2 without the logical replication launcher: the
# ecp launcher and one ecp worker.  A second run cannot get a worker.
my $tight = EcpTest::new_node('bgw',
	conf => [ 'max_worker_processes = 2', 'max_logical_replication_workers = 0', 'log_min_messages = warning' ]);
$tight->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$es->set_faults({ delay_ms => { ms => 250, every => 1, match => 'bulk' } });
create_task($tight, "busy$_", 'SELECT g AS id FROM generate_series(1, 2000) g', '{"batch_size": 100}') for 1, 2;
$log_offset = length(slurp_file($tight->logfile));
my $busy1 = $tight->safe_psql('postgres', "SELECT ecp.start('busy1')");
ok(EcpTest::poll($tight, "SELECT state = 'running' FROM ecp.run WHERE id = $busy1", 60), 'one run gets the last worker slot');
my $busy2 = $tight->safe_psql('postgres', "SELECT ecp.start('busy2')");
my ($busy_warned, $busy2_state) = (0, '');
$deadline = time + 30;
while (time < $deadline && EcpTest::run_state($tight, $busy1) eq 'running')
{
	if (log_since($tight, $log_offset) =~ /WARNING: +ecp could not start a worker for run $busy2: no background worker slot is free/)
	{
		$busy_warned = 1;
		$busy2_state = EcpTest::run_state($tight, $busy2);
		last;
	}
	sleep 0.2;
}
ok($busy_warned, 'the launcher warns that no background worker slot is free for the second run');
is($busy2_state, 'pending', 'which stays pending meanwhile');
is(EcpTest::wait_for_run($tight, $busy1, 'succeeded'), 'succeeded', 'the first run succeeds');
is(EcpTest::wait_for_run($tight, $busy2, 'succeeded'), 'succeeded', 'then the second gets the slot and succeeds');
$es->clear_faults;

$es->stop;
$tight->stop;
done_testing();
