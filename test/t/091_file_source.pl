# The file source: a task reads an NDJSON file (documents sent as they
# are, _id from option id_field) or a file of ids (looked up through the
# task's query), streamed in constant memory, over HTTP (served by
# test/scripts/file-server.pl) or from a server path, gzipped or not.
#  * a 50 MB NDJSON file and a 50 MB id file, served by a server that cuts
#    the connection once mid-file: each run finishes through an HTTP Range
#    resume (the flow says so), every line once, and the worker's private
#    memory does not grow with the file;
#  * a server that ignores Range: the read starts over and skips to the
#    checkpoint, and the flow says that;
#  * 3 malformed lines (not JSON, no id field, over max_line_bytes) are 3
#    dead letters with their line numbers; a line with a key twice (not
#    the id) is sent, and Elasticsearch refuses it (a 4th dead letter);
#    the other lines are indexed;
#  * a gzipped server file is decompressed while it streams;
#  * a missing file (404) fails the run with a clear message.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Cwd ();
use FindBin;
use IO::Compress::Gzip qw(gzip $GzipError);
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('bulk item counts');
my $node = EcpTest::new_node('file_source',
	conf => [ 'ecp.heartbeat_interval = 1', 'ecp.retry_base_ms = 100' ]);
my $es = EsdServer->start();
my $url = $es->url;
my $dir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
chmod 0755, $dir;

# --- files -----------------------------------------------------------------------
my $NDOCS = 100_000;    # ~500 bytes each: 50 MB
{
	open(my $fh, '>', "$dir/orders.ndjson") or die $!;
	my $pad = 'x' x 440;
	printf $fh qq({"order_id": "o-%d", "amount": %d.5, "note": "%s"}\n), $_, $_ % 1000, $pad for 1 .. $NDOCS;
	close $fh;
}
my $NIDS_LINES = 4_500_000;    # ids 1 .. 100,000 exist, the rest are missing: ~50 MB
my $NEXISTING = 100_000;
{
	open(my $fh, '>', "$dir/ids.txt") or die $!;
	printf $fh "%010d\n", $_ for 1 .. $NIDS_LINES;
	close $fh;
}
{
	open(my $fh, '>', "$dir/bad.ndjson") or die $!;
	for my $n (1 .. 1000)
	{
		if ($n == 10) { print $fh "{not json\n" }
		elsif ($n == 500) { print $fh qq({"other": 1}\n) }
		elsif ($n == 900) { print $fh '{"order_id": "long", "pad": "' . ('y' x 5000) . qq("}\n) }
		elsif ($n == 700) { print $fh qq({"order_id": 700, "a": {"b": 1, "b": 2}}\n) }
		else { print $fh qq({"order_id": $n}\n) }
	}
	close $fh;
	my $plain = join('', map { qq({"order_id": "gz-$_"}\n) } 1 .. 5000);
	gzip(\$plain => "$dir/small.ndjson.gz") or die $GzipError;
	chmod 0644, "$dir/small.ndjson.gz";
}
note(sprintf('orders.ndjson %.1f MB, ids.txt %.1f MB', (-s "$dir/orders.ndjson") / 1e6, (-s "$dir/ids.txt") / 1e6));

# A file server; $cut cuts one response mid-file, $ignore_range ignores Range,
# $rate paces every answer (bytes a second).
sub file_server
{
	my (%opt) = @_;
	my $port_file = "$dir/port." . ++$main::servers;
	my $log = "$dir/requests.$main::servers.log";
	my @args = ('perl', "$FindBin::RealBin/../scripts/file-server.pl", '--dir', $dir,
		'--port-file', $port_file, '--log', $log, '--max-seconds', 600);
	push @args, '--cut-once-at', $opt{cut} if $opt{cut};
	push @args, '--ignore-range' if $opt{ignore_range};
	push @args, '--bytes-per-second', $opt{rate} if $opt{rate};
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0) { exec(@args) or die "exec: $!" }
	my $deadline = time + 30;
	sleep 0.05 until (-s $port_file || time > $deadline);
	my $port = slurp_file($port_file);
	chomp $port;
	return { pid => $pid, url => "http://127.0.0.1:$port", log => $log };
}

sub stop_server
{
	my ($server) = @_;
	kill 'TERM', $server->{pid};
	waitpid($server->{pid}, 0);
}

sub bulk_items { return $es->stats->{bulk_items} }

sub worker_rss
{
	my $pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp worker' LIMIT 1");
	return undef unless $pid;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>) { return $1 if /^RssAnon:\s+(\d+) kB/; }
	return undef;
}

# Start a task's run; private memory of its worker at two points; the state.
sub run_and_measure
{
	my ($task, $early_line, $late_line) = @_;
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$task')");
	my @rss;
	for my $line ($early_line, $late_line)
	{
		EcpTest::poll($node, "SELECT coalesce(line_no, 0) >= $line OR state IN ('done', 'failed') FROM ecp.part WHERE run_id = $run", 240);
		push @rss, worker_rss();
	}
	return ($run, EcpTest::wait_for_run($node, $run, 'succeeded', 300), @rss);
}

$node->safe_psql('postgres', qq{
	CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric);
	INSERT INTO orders SELECT g, g % 1000 FROM generate_series(1, $NEXISTING) g;
	SELECT ecp.create_consumer('es', '$url');
});

# --- 50 MB of NDJSON over HTTP, cut once mid-file -----------------------------------
# Paced at 6 MB/s (about 8 s for the file), so the worker is still reading
# when its memory is sampled at line 80,000: a slow reader, not a race.
my $server = file_server(cut => int((-s "$dir/orders.ndjson") * 0.6), rate => 6_000_000);
$node->safe_psql('postgres', qq{
	SELECT ecp.create_task('ndjson', 'es', 'ndjson', file => '$server->{url}/orders.ndjson',
	                       options => '{"id_field": "order_id", "batch_size": 2000}')});
my $items_before = bulk_items();
my ($run, $state, $rss_early, $rss_late) = run_and_measure('ndjson', 20000, 80000);
is($state, 'succeeded', 'the NDJSON run succeeds');
$es->refresh('ndjson');
is($es->count('ndjson'), $NDOCS, 'every document is in the index');
is(bulk_items() - $items_before, $NDOCS, 'each line was sent once');
is($es->doc('ndjson', 'o-77')->{note}, 'x' x 440, 'a document is the line as it was');
like($node->safe_psql('postgres', "SELECT content->>'how' FROM ecp.flow WHERE run_id = $run AND action = 'file resumed'"),
	qr/^range$/, 'the cut connection was resumed with a Range request (flow)');
like(slurp_file($server->{log}), qr/range=bytes=\d+- status=206/, 'the server answered it with 206');
is($node->safe_psql('postgres', "SELECT line_no || ':' || processed || ':' || failed FROM ecp.part WHERE run_id = $run"),
	"$NDOCS:$NDOCS:0", 'the checkpoint is the last line; every line processed');
ok(defined $rss_early && defined $rss_late, "worker private memory measured: $rss_early kB at line 20,000, $rss_late kB at line 80,000")
  or diag('no worker seen');
cmp_ok(($rss_late // 0) - ($rss_early // 0), '<', 8192, 'memory does not grow with the file (< 8 MB over 30 MB of lines)');
like($node->safe_psql('postgres', "SELECT source || ' ' || last_key FROM ecp.parts WHERE run_id = $run"),
	qr{^http://127\.0\.0\.1:\d+/orders\.ndjson line $NDOCS, byte \d+$}, 'ecp.parts shows the file and the line and byte reached');
stop_server($server);

# --- 50 MB of ids over HTTP, cut once, looked up through the query --------------------
$server = file_server(cut => int((-s "$dir/ids.txt") * 0.3), rate => 6_000_000);
$node->safe_psql('postgres', qq{
	SELECT ecp.create_task('id_file', 'es', 'id_file', query => 'SELECT * FROM orders',
	                       file => '$server->{url}/ids.txt', options => '{"batch_size": 10000}')});
$items_before = bulk_items();
($run, $state, $rss_early, $rss_late) = run_and_measure('id_file', 1_000_000, 4_000_000);
is($state, 'succeeded', 'the id file run succeeds');
$es->refresh('id_file');
is($es->count('id_file'), $NEXISTING, 'every id the query returns is in the index');
is(bulk_items() - $items_before, $NEXISTING, 'each sent once');
is($node->safe_psql('postgres', "SELECT processed || ':' || missing FROM ecp.progress WHERE run_id = $run"),
	"$NEXISTING:" . ($NIDS_LINES - $NEXISTING), 'the ids the query does not return are counted as missing');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = 'file resumed' AND content->>'how' = 'range'"),
	'1', 'the cut was resumed with a Range request');
cmp_ok(($rss_late // 0) - ($rss_early // 0), '<', 8192,
	"memory does not grow with the file ($rss_early kB at line 1,000,000, $rss_late kB at line 4,000,000)");
stop_server($server);

# --- a server that ignores Range ----------------------------------------------------------
$server = file_server(cut => 300_000, ignore_range => 1);
$node->safe_psql('postgres', qq{
	SELECT ecp.create_task('no_range', 'es', 'no_range', file => '$server->{url}/orders.ndjson',
	                       options => '{"id_field": "order_id", "batch_size": 200}')});
$run = $node->safe_psql('postgres', "SELECT ecp.start('no_range')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 300), 'succeeded', 'the run succeeds when the server ignores Range');
like($node->safe_psql('postgres', "SELECT content->>'how' FROM ecp.flow WHERE run_id = $run AND action = 'file resumed'"),
	qr/^skipped/, 'the flow says the file was read from the start up to the offset');
$es->refresh('no_range');
is($es->count('no_range'), $NDOCS, 'every document is in the index');
stop_server($server);

# --- bad lines ----------------------------------------------------------------------------
$server = file_server();
$node->safe_psql('postgres', qq{
	SELECT ecp.create_task('bad_lines', 'es', 'bad_lines', file => '$server->{url}/bad.ndjson',
	                       options => '{"id_field": "order_id", "max_line_bytes": 1024, "batch_size": 100}')});
$run = $node->safe_psql('postgres', "SELECT ecp.start('bad_lines')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'a file with bad lines is read to its end');
like($node->safe_psql('postgres', "SELECT string_agg(reason, ' | ' ORDER BY reason) FROM ecp.failed_docs WHERE run_id = $run AND error_type = 'bad_line'"),
	qr/^line 10: not JSON: [^|]+ \| line 500: no field "order_id" \(option id_field\) \| line 900: longer than max_line_bytes \(1024 bytes\)$/,
	'3 bad lines, each with its line number and why');
my $refused = $node->safe_psql('postgres',
	"SELECT doc_id || ' ' || status || ' ' || reason FROM ecp.failed_docs WHERE run_id = $run AND error_type IS DISTINCT FROM 'bad_line'");
like($refused, qr/^700 400 .*duplicate/i,
	"a key twice (not the id) is left to Elasticsearch, which refuses the document: $refused");
$es->refresh('bad_lines');
is($es->count('bad_lines'), 996, 'the other 996 lines are indexed');
is($node->safe_psql('postgres', "SELECT processed || ':' || failed FROM ecp.progress WHERE run_id = $run"),
	'996:4', 'counted: 996 processed, 4 failed');

# --- a missing file --------------------------------------------------------------------------
$node->safe_psql('postgres', qq{
	SELECT ecp.create_task('missing', 'es', 'missing', file => '$server->{url}/nowhere.ndjson?X-Amz-Signature=secret')});
$run = $node->safe_psql('postgres', "SELECT ecp.start('missing')");
is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed', 'a missing file fails the run');
my $error = $node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run");
like($error, qr{nowhere\.ndjson.*not found|404}, "with a message naming the file: $error");
unlike($error, qr/secret/, 'without the presigned signature');
stop_server($server);

# --- a gzipped server file ---------------------------------------------------------------------
$node->safe_psql('postgres', qq{
	SELECT ecp.create_task('gz', 'es', 'gz', file => '$dir/small.ndjson.gz',
	                       options => '{"id_field": "order_id", "batch_size": 1000}')});
$run = $node->safe_psql('postgres', "SELECT ecp.start('gz')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'a gzipped server file (as a superuser\'s task) is read');
$es->refresh('gz');
is($es->count('gz'), 5000, 'every line of it is indexed');

# --- a server file needs pg_read_server_files, also when the run starts -----------
$node->safe_psql('postgres', qq{
	CREATE ROLE reader LOGIN;
	GRANT pg_read_server_files TO reader;
	SET ROLE reader;
	SELECT ecp.create_consumer('reader_es', '$url');
	SELECT ecp.create_task('reader_gz', 'reader_es', 'reader_gz', file => '$dir/small.ndjson.gz',
	                       options => '{"id_field": "order_id"}');
	RESET ROLE;
	REVOKE pg_read_server_files FROM reader;
});
$run = $node->safe_psql('postgres', "SET ROLE reader; SELECT ecp.start('reader_gz')");
is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed',
	'a server file whose owner lost pg_read_server_files after create_task: the run fails');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/role "reader" may not read server file/, 'saying the role may not read the file');
ok(!$es->refresh('reader_gz') || !$es->count('reader_gz'), 'and nothing was sent');

done_testing();
