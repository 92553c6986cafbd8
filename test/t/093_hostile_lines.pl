# Hostile lines in an NDJSON file served over HTTP: a worker checks each
# line and reads its id without building a JSON tree, so what a file
# server can make it hold is about a line (max_line_bytes), never ~75
# times a line (jansson's tree of "[{},{},...]": 773 MB for 10 MB).
#  * three valid objects of ~10 MB of "[{},{},...]" each, the id before
#    or after the array, are documents: sent once and acknowledged;
#  * the same cut short, the same with its id given twice, and a line
#    nested 100,000 levels deep are dead letters with their line numbers;
#  * the small lines around them are indexed;
#  * the worker's private memory (RssAnon, sampled every few ms while the
#    run goes) stays under MAX_RSS_KB: far below one tree of one line.
# The stand-in runs in discard mode, so it keeps no 10 MB documents (and
# builds no tree of them itself).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Cwd ();
use FindBin;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

# The new code holds a line a few times (the reader's buffer, the page's
# copy, the _bulk body, the page read ahead): ~80 MB over a backend's own
# ~20 MB.  The old code's tree of one such line alone was ~770 MB.
use constant MAX_RSS_KB => 256 * 1024;
use constant BIG_LINE_BYTES => 10_000_000;    # under max_line_bytes' default, 10 MiB

EsdServer->require_stand_in('discard mode, bulk item counts');
my $node = EcpTest::new_node('hostile_lines',
	conf => [ 'ecp.heartbeat_interval = 1', 'ecp.retry_base_ms = 100' ]);
my $es = EsdServer->start(discard => 1);
my $dir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
chmod 0755, $dir;

# --- the file --------------------------------------------------------------------
# A line: $head, then "{},{},...,{}" up to BIG_LINE_BYTES, then $tail.
sub big_line
{
	my ($head, $tail) = @_;
	my $n = int((BIG_LINE_BYTES - length($head) - length($tail)) / 3);
	return $head . join(',', ('{}') x $n) . $tail;
}

my $deep = 100_000;
my @lines = (
	qq({"id": "first", "n": 1}),                                     # 1
	big_line('{"id": "big-1", "junk": [', ']}'),                     # 2
	big_line('{"junk": [', '], "id": 2}'),                           # 3: the id after the array
	big_line('{"id": "big-3", "junk": [[', '], {"a": [1, "x"]}]}'),  # 4
	big_line('{"id": "cut", "junk": [', ''),                         # 5: cut short: not JSON
	big_line('{"id": "one", "junk": [', '], "id": "two"}'),          # 6: the id twice
	'{"id": "deep", "d": ' . ('[' x $deep) . (']' x $deep) . '}',    # 7: too deep: not JSON
	qq({"id": "last", "n": 8}),                                      # 8
);
{
	open(my $fh, '>', "$dir/hostile.ndjson") or die $!;
	print $fh "$_\n" for @lines;
	close $fh;
}
note(sprintf('hostile.ndjson: %.1f MB, %d lines', (-s "$dir/hostile.ndjson") / 1e6, scalar @lines));

# --- a file server (see 091_file_source.pl) ----------------------------------------
my $port_file = "$dir/port";
my $server_pid = fork();
die "fork: $!" unless defined $server_pid;
if ($server_pid == 0)
{
	exec('perl', "$FindBin::RealBin/../scripts/file-server.pl", '--dir', $dir,
		'--port-file', $port_file, '--max-seconds', 600) or die "exec: $!";
}
my $deadline = time + 30;
sleep 0.05 until (-s $port_file || time > $deadline);
my $port = slurp_file($port_file);
chomp $port;
ok($port =~ /^\d+$/, 'the file server listens');

# --- the run, and the worker's private memory while it goes ---------------------------
sub rss_anon_kb
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>) { return $1 if /^RssAnon:\s+(\d+) kB/; }
	return undef;
}

sub run_state
{
	my ($run) = @_;
	return $node->safe_psql('postgres', "SELECT state FROM ecp.run WHERE id = $run");
}

$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('es', '${\ $es->url}');
	SELECT ecp.create_task('hostile', 'es', 'hostile', file => 'http://127.0.0.1:$port/hostile.ndjson',
	                       options => '{"id_field": "id", "batch_size": 100, "rate_limit": 2}');
});
my ($items_before, $bytes_before) = @{ $es->stats }{qw(bulk_items bulk_bytes)};
my $run = $node->safe_psql('postgres', "SELECT ecp.start('hostile')");

# The worker's pid, then RssAnon every 5 ms until the run ends (its state
# looked up every 50 samples): the peak of a tree lasts as long as its
# parse, about a second for 10 MB.  rate_limit (2 documents a second)
# keeps the worker alive for a few seconds, so it is found and sampled
# even on a fast machine where reading the file takes less.
my ($worker, $max_rss, $samples) = (undef, 0, 0);
$deadline = time + 300;
while (!$worker && time < $deadline)
{
	$worker = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp worker' LIMIT 1");
	last if run_state($run) =~ /^(succeeded|failed|cancelled)$/;
	sleep 0.02 unless $worker;
}
my $state = run_state($run);
while ($worker && time < $deadline)
{
	my $kb = rss_anon_kb($worker);
	last unless defined $kb;    # the worker has exited
	$samples++;
	$max_rss = $kb if $kb > $max_rss;
	if ($samples % 50 == 0)
	{
		$state = run_state($run);
		last if $state =~ /^(succeeded|failed|cancelled)$/;
	}
	sleep 0.005;
}
$state = EcpTest::wait_for_run($node, $run, 'succeeded', 300);
is($state, 'succeeded', 'the run over hostile lines succeeds');
ok($worker && $samples >= 20, "the worker's memory was sampled while it ran ($samples samples)")
  or diag('no worker seen: the run ended before it could be found');
cmp_ok($max_rss, '<', MAX_RSS_KB,
	sprintf('the worker\'s private memory stays bounded by a few lines: peak RssAnon %.0f MB (under %d MB)',
		$max_rss / 1024, MAX_RSS_KB / 1024));

# --- what became of each line -----------------------------------------------------------
is($node->safe_psql('postgres', "SELECT processed || ':' || failed FROM ecp.progress WHERE run_id = $run"),
	'5:3', 'counted: 5 documents processed (3 of them ~10 MB), 3 dead letters');
my ($items, $bytes) = @{ $es->stats }{qw(bulk_items bulk_bytes)};
is($items - $items_before, 5, 'the 5 documents were sent once each');
cmp_ok($bytes - $bytes_before, '>', 3 * BIG_LINE_BYTES, sprintf('... the 3 big ones whole (%.1f MB of _bulk bodies)',
	($bytes - $bytes_before) / 1e6));
my @reasons = split /\n/, $node->safe_psql('postgres',
	"SELECT reason FROM ecp.failed_docs WHERE run_id = $run ORDER BY reason");
is(scalar @reasons, 3, 'three dead letters');
like($reasons[0] // '', qr/^line 5: not JSON: the line ends /, "line 5, cut short, is not JSON: $reasons[0]");
like($reasons[1] // '', qr/^line 6: field "id" appears more than once$/, "line 6, its id twice: $reasons[1]");
like($reasons[2] // '', qr/^line 7: not JSON: containers nested deeper than 512 levels at byte \d+$/,
	"line 7, $deep levels deep, is not JSON: $reasons[2]");
is($node->safe_psql('postgres', "SELECT line_no FROM ecp.part WHERE run_id = $run"),
	scalar @lines, 'the checkpoint is the last line');

kill 'TERM', $server_pid;
waitpid($server_pid, 0);
done_testing();
