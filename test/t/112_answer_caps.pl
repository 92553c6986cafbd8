# Answers other than _bulk's are read up to a small cap of their kind and
# scanned without a JSON tree (finding H1).  An ordinary role's own
# "Elasticsearch" (the stand-in, fault huge_answer) answers a migration's
# requests with 20 MB of {"a":[{},{},...]}, which jansson used to turn
# into about 1.5 GB per worker:
#  * GET /<alias> (the create step), GET /<new index>/_count and
#    GET /_alias/<alias> (the swap) each fail the run at once with a
#    message naming the request, its cap and the node; the alias is not
#    touched, and ecp.resume completes the migration once the answers are
#    sane again;
#  * a small _count answer without a count fails the run (never a count of -1);
#  * GET / of an ordinary task, answered 20 MB with HTTP 500, is capped too;
#  * the peak RSS (VmHWM) of every ecp worker, sampled from /proc while the
#    test runs, stays small, and the cluster never restarts.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('the huge_answer fault of the stand-in');
my $node = EcpTest::new_node('answer_caps', conf => [ 'ecp.heartbeat_interval = 1', 'ecp.retry_base_ms = 100' ]);
my $es = EsdServer->start();
my $url = $es->url;
my $dir = PostgreSQL::Test::Utils::tempdir();

# what the hostile server answers: 20 MB, as in the finding's repro
my $HUGE = 20_000_000;
# An ecp worker of this cluster peaks at about 25 MB, and reading a capped
# answer adds a few MB.  Reading 20 MB whole would add 60 MB or more (the
# buffer, its copies); jansson's tree of it took ~1.5 GB.
my $MAX_WORKER_HWM_KB = 64 * 1024;

sub sql { return $node->safe_psql('postgres', $_[0]) }
sub as_mallory { return $node->safe_psql('postgres', "SET ROLE mallory; $_[0]") }

sub run_field { return sql("SELECT $_[1] FROM ecp.run WHERE id = $_[0]") }

# ---- a sampler of the workers' VmHWM --------------------------------------------------------
# A child reads /proc every 20 ms: for each child of the postmaster
# whose title says "ecp worker", its VmHWM (peak RSS).  It writes
# "pid kB" lines of the peaks so far, until the stop file appears (or
# 10 minutes pass, or the test ends: END stops it).
sub postmaster_pid
{
	open(my $fh, '<', $node->data_dir . '/postmaster.pid') or die "postmaster.pid: $!";
	my $pid = <$fh>;
	chomp $pid;
	return $pid;
}

sub worker_peaks
{
	my ($postmaster, $peak) = @_;
	opendir(my $proc, '/proc') or return;
	for my $pid (grep { /^\d+$/ } readdir $proc)
	{
		open(my $st, '<', "/proc/$pid/status") or next;
		my ($ppid, $hwm);
		while (<$st>)
		{
			$ppid = $1 if /^PPid:\s+(\d+)/;
			$hwm = $1 if /^VmHWM:\s+(\d+) kB/;
		}
		close $st;
		next unless defined $ppid && $ppid == $postmaster && defined $hwm;
		open(my $cl, '<', "/proc/$pid/cmdline") or next;
		my $title = do { local $/; <$cl> } // '';
		close $cl;
		next unless $title =~ /ecp worker/;
		$peak->{$pid} = $hwm if ($peak->{$pid} // 0) < $hwm;
	}
	closedir $proc;
}

sub start_sampler
{
	my ($postmaster, $out, $stop) = @_;
	my $child = fork();
	die "fork: $!" unless defined $child;
	return $child if $child;
	# the TAP stream is the test's: a child left behind must not hold it open
	open(STDOUT, '>', '/dev/null');
	open(STDERR, '>', '/dev/null');
	my %peak;
	my $deadline = time + 600;
	while (!-e $stop && time < $deadline)
	{
		worker_peaks($postmaster, \%peak);
		open(my $fh, '>', "$out.tmp") or POSIX::_exit(1);
		print $fh "$_ $peak{$_}\n" for sort keys %peak;
		close $fh;
		rename("$out.tmp", $out) or POSIX::_exit(1);
		sleep 0.02;
	}
	POSIX::_exit(0);
}

# ---- the role, its table, its "cluster" -------------------------------------------------------
sql(q{
	CREATE ROLE mallory LOGIN;
	CREATE SCHEMA m AUTHORIZATION mallory;
});
as_mallory(q{
	CREATE TABLE m.t (id bigint PRIMARY KEY, name text);
	INSERT INTO m.t SELECT g, 'row ' || g FROM generate_series(1, 2000) g;
});
as_mallory("SELECT ecp.create_consumer('m_hostile', '$url')");
# batch_size 10000 lets a _bulk answer take 1 MiB + 4 KiB x 10000 = 40 MiB:
# 20 MB passes that, so only the caps of the other answers stop it.
as_mallory(q{SELECT ecp.create_task('m_bomb', 'm_hostile', 'bomb', query => 'SELECT * FROM m.t',
	options => '{"mode": "alias_swap", "max_retries": 0, "batch_size": 10000}')});
as_mallory(q{SELECT ecp.create_task('m_plain', 'm_hostile', 'plain', query => 'SELECT * FROM m.t',
	options => '{"max_retries": 0, "batch_size": 10000}')});

my $started = sql('SELECT pg_postmaster_start_time()');
my $samples = "$dir/hwm";
my $stop = "$dir/stop-sampler";
my $sampler = start_sampler(postmaster_pid(), $samples, $stop);
END
{
	# a test that dies on the way does not leave the sampler running
	if ($sampler)
	{
		kill('TERM', $sampler);
		waitpid($sampler, 0);
	}
}

# Start (or resume) a run of the migration against a fault; wait until it
# fails; returns the run, its error and how long it took.
sub fails_with_fault
{
	my ($fault, $run) = @_;
	$es->set_faults({ huge_answer => $fault });
	my $t0 = time;
	if (defined $run) { as_mallory("SELECT ecp.resume($run)") }
	else { $run = as_mallory("SELECT ecp.start('m_bomb')") }
	my $state = EcpTest::wait_for_run($node, $run, 'failed', 120);
	my $seconds = time - $t0;
	return ($run, $state, run_field($run, 'last_error'), $seconds);
}

sub migration_step { return sql("SELECT state || ' ' || step FROM ecp.migrations WHERE run_id = $_[0]") }

sub alias_status { my ($st) = $es->get('/_alias/bomb'); return $st }

# ---- GET /<alias>: the create step ------------------------------------------------------------
my ($run, $state, $error, $seconds) = fails_with_fault({ path => '/bomb', method => 'GET', bytes => $HUGE });
is($state, 'failed', "a 20 MB answer to GET /bomb fails the migration (in ${\ sprintf('%.1f', $seconds)} s)");
like($error, qr{^GET http://127\.0\.0\.1:\d+/bomb answered more than 1 MiB \(1048576 bytes\), ecp's limit for answers to GET /<index or alias> and GET /_alias/<alias>, and the rest was not read; check that the consumer of task "m_bomb" points at an Elasticsearch or OpenSearch cluster; hint: ecp asks for the index names only.* \(SQLSTATE 54000\)$},
	'the error names the request, its cap and the node');
my @asked = grep { $_->{method} eq 'GET' && $_->{url} =~ m{^/bomb\b} } @{ $es->requests(1000) // [] };
like($asked[-1]{url} // '', qr{^/bomb\?filter_path=\*\.settings\.index\.uuid$},
	'GET /<alias> asks for the index names only (filter_path)');
is(run_field($run, 'failure_class'), 'failed', 'a failure, not retried');
my ($st) = $es->head("/bomb-$run");
is($st, 404, 'the new index was not created');
is(alias_status(), 404, 'no alias bomb');

# ---- _count: a small answer without a count, then a huge one ----------------------------------------
($run, $state, $error) = fails_with_fault({ path => '/bomb-*/_count', bytes => 1000 }, $run);
is($state, 'failed', 'a _count answer without a count fails the swap');
like($error, qr{^GET http://127\.0\.0\.1:\d+/bomb-$run/_count answered HTTP 200 with an answer ecp cannot use \(the answer has no "count"\)},
	'... naming the request and what is wrong, never a count of -1');
is(migration_step($run), 'failed count', 'ecp.migrations: failed at the count');
($run, $state, $error) = fails_with_fault({ path => '/bomb-*/_count', bytes => $HUGE }, $run);
is($state, 'failed', 'a 20 MB _count answer fails the swap');
like($error, qr{^GET http://127\.0\.0\.1:\d+/bomb-$run/_count answered more than 64 KiB \(65536 bytes\), ecp's limit for answers to GET /<index>/_count\b},
	'... with the cap of _count');
is(alias_status(), 404, 'the alias is still not there');

# ---- GET /_alias/<alias>: the swap itself ---------------------------------------------------------------
($run, $state, $error) = fails_with_fault({ path => '/_alias/bomb', method => 'GET', bytes => $HUGE }, $run);
is($state, 'failed', 'a 20 MB answer to GET /_alias/bomb fails the swap');
like($error, qr{^GET http://127\.0\.0\.1:\d+/_alias/bomb answered more than 1 MiB \(1048576 bytes\)},
	'... with the cap of index lists');
is(sql("SELECT old_index IS NULL FROM ecp.migrations WHERE run_id = $run"), 't', 'no old indices were recorded');
$es->clear_faults;
is(alias_status(), 404, 'the alias was not moved');

# ---- sane answers again: ecp.resume completes the migration ----------------------------------------------
as_mallory("SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'ecp.resume completes the migration');
my (undef, $aliases) = $es->get('/_alias/bomb');
is(join(',', sort keys %{ $aliases // {} }), "bomb-$run", 'the alias points at the new index');

# ---- GET / of an ordinary task, a 20 MB error page -----------------------------------------------------------
$es->set_faults({ huge_answer => { path => '/', method => 'GET', status => 500, bytes => $HUGE } });
my $plain = as_mallory("SELECT ecp.start('m_plain')");
is(EcpTest::wait_for_run($node, $plain, 'failed', 120), 'failed', 'a 20 MB HTTP 500 to GET / fails the run');
like(run_field($plain, 'last_error'),
	qr{^GET http://127\.0\.0\.1:\d+/ answered more than 64 KiB \(65536 bytes\), ecp's limit for answers to GET /,},
	'... with the cap of GET /, whatever the status');
$es->clear_faults;

# ---- memory, and the cluster ----------------------------------------------------------------------------------
open(my $done, '>', $stop) or die $!;
close $done;
waitpid($sampler, 0);
$sampler = 0;
my %peak = map { split ' ' } do { open(my $fh, '<', $samples) or die "$samples: $!"; <$fh> };
my ($max) = sort { $b <=> $a } values %peak;
note('peak RSS of each worker: ' . join(', ', map { "$_ $peak{$_} kB" } sort keys %peak));
cmp_ok(scalar(keys %peak), '>=', 3, scalar(keys %peak) . ' ecp workers were sampled');
cmp_ok($max // 0, '<', $MAX_WORKER_HWM_KB, "the largest peak RSS of a worker was ${\ int(($max // 0) / 1024)} MB");
is(sql('SELECT pg_postmaster_start_time()'), $started, 'the cluster never restarted');
unlike(slurp_file($node->logfile), qr/terminated by signal|out of memory/i, 'no worker died, no allocation failed');

$es->stop;
$node->stop;
done_testing();
