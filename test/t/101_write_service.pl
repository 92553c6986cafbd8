# A consumer of kind 'http' (a write service): ecp POSTs each batch as
# JSON to the consumer's URL and reads {"failed": [...]} back
# (src/worker/sink_http.c), against test/scripts/write-service.pl, which validates
# the shape of every batch (a malformed one is answered 400, and a 4xx
# fails the run) and logs every request.
#  * 2,000 orders arrive in 4 batches of 500, each with task, run, part,
#    index, tag, op and docs [{"id": "<string>", "doc": <the row>}], the
#    JSON content type, the tag header and ecp's user agent;
#  * a retryable failure is sent again alone until taken; a non-retryable
#    one is a dead letter (failed_docs, error_type write_service);
#  * 429 and 503 twice: the same batch is sent again after a back-off
#    (flow rows "retry"), every document is taken exactly once;
#  * 401 fails the run at once, saying to check the credentials;
#  * bare ids (a task without a query) are sent as {"id"} alone, and a
#    delete_missing id lookup sends {"id", "delete": true};
#  * every accepted form of "all taken" (empty body, {}, 204, 202) passes,
#    and every unreadable answer (not JSON, not an object, failed not an
#    array, an entry without id or naming an id not sent) fails the run,
#    saying the body cannot be read; a \u0000 or a long multi-byte reason
#    in an entry does not;
#  * a rate limit cuts requests to rate/20 documents and spreads them over
#    time; a pause mid-run and a resume lose no document.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

my $J = JSON::PP->new->utf8->canonical->allow_nonref;
my $dir = PostgreSQL::Test::Utils::tempdir();

# --- the write service -------------------------------------------------------------
my $ws_pid;
END
{
	if ($ws_pid)
	{
		kill 'TERM', $ws_pid;
		waitpid($ws_pid, 0);
	}
}

sub start_write_service
{
	my $port_file = "$dir/ws.port";
	my @cmd = ('perl', "$FindBin::RealBin/../scripts/write-service.pl", '--port-file', $port_file,
		'--max-seconds', 600, '--log', "$dir/ws.log");
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>', "$dir/ws.out") or POSIX::_exit(127);
		open(STDERR, '>', "$dir/ws.err") or POSIX::_exit(127);
		exec(@cmd) or POSIX::_exit(127);
	}
	$ws_pid = $pid;
	my $deadline = time + 30;
	while (time < $deadline)
	{
		if (waitpid($pid, WNOHANG) == $pid)
		{
			$ws_pid = undef;
			die 'the write service exited during start-up: ' . slurp_file("$dir/ws.err");
		}
		if (-s $port_file && slurp_file($port_file) =~ /^(\d+)\n/)
		{
			return "http://127.0.0.1:$1";
		}
		sleep 0.02;
	}
	die 'the write service wrote no port within 30 s';
}

my $ws = start_write_service();
my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 30);

# A control call; dies unless answered 2xx.
sub ws
{
	my ($method, $path, $body) = @_;
	my $r = $http->request($method, "$ws$path",
		defined $body ? { content => $J->encode($body), headers => { 'content-type' => 'application/json' } } : {});
	die "$method $path: $r->{status} $r->{content}" unless $r->{success};
	return $J->decode($r->{content});
}

# Clear documents, log and counters; then the configuration given.
sub ws_setup
{
	my ($config) = @_;
	ws('POST', '/_ws/reset');
	ws('PUT', '/_ws/config', $config // {});
	return;
}

sub ws_requests { return ws('GET', '/_ws/requests')->{requests} }
sub ws_docs { return ws('GET', '/_ws/docs') }
sub ids_of { my ($req) = @_; return [ map { $_->{id} } @{ $req->{body}{docs} || [] } ] }

# --- PostgreSQL ----------------------------------------------------------------------
my $node = EcpTest::new_node('write_service',
	conf => [ 'ecp.retry_base_ms = 100', 'ecp.retry_max_ms = 1000', 'ecp.heartbeat_interval = 1' ]);
note('database encoding: ' . $node->safe_psql('postgres', 'SHOW server_encoding'));

my $NORDERS = 2000;
$node->safe_psql('postgres', qq{
	CREATE TABLE orders (
		id bigint PRIMARY KEY,
		customer text NOT NULL,
		amount numeric(10, 2),
		status text,
		placed_at timestamptz,
		lines jsonb,
		note text);
	INSERT INTO orders
	SELECT g, 'customer ' || (g % 97), round(g * 1.37, 2),
	       CASE WHEN g % 3 = 0 THEN 'shipped' ELSE 'open' END,
	       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
	       jsonb_build_object('sku', 'S-' || g, 'qty', g % 5 + 1, 'tags', jsonb_build_array('a', g)),
	       CASE WHEN g % 100 = 0 THEN E'quote " backslash \\\\ tab \\t line\\n \\u00e9 \\u2713' END
	  FROM generate_series(1, $NORDERS) g;
	SELECT ecp.create_consumer('ws', '$ws/ingest', kind => 'http');
});

sub sql { my ($q) = @_; return $node->safe_psql('postgres', $q) }

sub create_task
{
	my ($name, %a) = @_;
	my @args = ("'$name'", "'ws'", "'$name" . "_idx'");
	push @args, "query => 'SELECT * FROM orders'" if $a{query} // 1;
	push @args, "ids => ARRAY[" . join(', ', map { "'$_'" } @{ $a{ids} }) . ']' if $a{ids};
	push @args, "options => '" . $J->encode($a{options} // {}) . "'";
	sql('SELECT ecp.create_task(' . join(', ', @args) . ')');
	return;
}

sub start_run
{
	my ($task, $ids) = @_;
	return sql("SELECT ecp.start('$task'"
		  . ($ids ? ', ids => ARRAY[' . join(', ', map { "'$_'" } @$ids) . ']' : '') . ')');
}

sub progress
{
	my ($run) = @_;
	return $J->decode(sql("SELECT row_to_json(p) FROM ecp.progress p WHERE run_id = $run"));
}

sub flow
{
	my ($run, $action) = @_;
	my $rows = sql("SELECT coalesce(json_agg(content ORDER BY at), '[]') FROM ecp.flow "
		  . "WHERE run_id = $run AND action = '$action'");
	return $J->decode($rows);
}

# Whether the service's copy of document $id is the row (compared as jsonb).
sub doc_is_row
{
	my ($docs, $id) = @_;
	my $doc = $docs->{docs}{$id} or return 0;
	my $text = $J->encode($doc);
	die 'dollar quote in a document' if $text =~ /\$d\$/;
	return sql("SELECT row_to_json(o)::jsonb = \$d\$$text\$d\$::jsonb FROM orders o WHERE id = $id") eq 't';
}

# id => how many times it was sent in requests answered $status
sub id_counts
{
	my ($requests, $status) = @_;
	my %n;
	for my $r (@$requests)
	{
		next if defined $status && ($r->{status} // 0) != $status;
		$n{$_}++ for @{ ids_of($r) };
	}
	return \%n;
}

sub all_ids_once
{
	my ($counts, $n) = @_;
	return 0 unless keys %$counts == $n;
	return !grep { ($counts->{$_} // 0) != 1 } 1 .. $n;
}

my ($run, $state, $p, $reqs, $docs);

# --- 1, 2: 2,000 orders, the shape of every batch ------------------------------------
ws_setup();
create_task('ws_orders', options => { batch_size => 500, tag => 'FLUSH' });
$run = start_run('ws_orders');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'the run to the write service succeeds');
$p = progress($run);
is("$p->{processed}:$p->{failed}:$p->{state}", "$NORDERS:0:succeeded", 'ecp.progress: 2000 processed, 0 failed, succeeded');

$reqs = ws_requests();
is(scalar @$reqs, 4, '4 requests (2,000 documents in batches of 500)');
is(join(',', map { "$_->{method} $_->{path} $_->{status}" } @$reqs), join(',', ('POST /ingest 200') x 4),
	'each a POST to the consumer URL, answered 200 (the service validated its shape; no GET / product check)');
my $first = $reqs->[0];
is_deeply([ sort keys %{ $first->{body} } ], [qw(docs index indexes op part run tag task)],
	'a batch has exactly task, run, part, index, indexes, tag, op, docs');
my @bad_heads = grep {
	my $b = $_->{body};
	!($b->{task} eq 'ws_orders' && $b->{run} == $run && $b->{part} == 0 && $b->{index} eq 'ws_orders_idx'
		&& $J->encode($b->{indexes}) eq '["ws_orders_idx"]'
		&& defined $b->{tag} && $b->{tag} eq 'FLUSH' && $b->{op} eq 'index')
} @$reqs;
is(scalar @bad_heads, 0,
	"every batch: task ws_orders, run $run, part 0, index ws_orders_idx, indexes [ws_orders_idx] (no migration), tag FLUSH, op index")
  or diag($J->encode({ %{ $bad_heads[0]{body} }, docs => '...' }));
like($first->{body}{run}, qr/^\d+$/, 'run is a number');
is(join(',', map { scalar @{ $_->{body}{docs} } } @$reqs), '500,500,500,500', '500 documents in each');
my @bad_docs = grep { !(join(',', sort keys %$_) eq 'doc,id' && ref $_->{doc} eq 'HASH' && $_->{id} =~ /^\d+$/) }
  map { @{ $_->{body}{docs} } } @$reqs;
is(scalar @bad_docs, 0, 'every document is {"id": "<n>", "doc": {...}} and nothing else')
  or diag($J->encode($bad_docs[0]));
my $raw_head = $J->encode($first->{body}{docs}[0]{id});
is($raw_head, '"' . $first->{body}{docs}[0]{id} . '"', 'the id is a JSON string');
is(scalar(grep { ($_->{headers}{'content-type'} // '') =~ m{^application/json\b} } @$reqs), 4,
	'Content-Type: application/json');
is(scalar(grep { ($_->{headers}{'x-ecp-tag'} // '') eq 'FLUSH' } @$reqs), 4, 'X-Ecp-Tag: FLUSH');
is(scalar(grep { ($_->{headers}{'user-agent'} // '') =~ m{^ecp/} } @$reqs), 4, 'User-Agent: ecp/...');
ok(all_ids_once(id_counts($reqs), $NORDERS), 'ids 1..2000 each sent once');
is(join(',', map { ids_of($_)->[0] . '-' . ids_of($_)->[-1] } @$reqs), '1-500,501-1000,1001-1500,1501-2000',
	'in key order');
$docs = ws_docs();
is($docs->{count}, $NORDERS, '/_ws/docs holds 2000 documents');
ok(doc_is_row($docs, $_), "document $_ is the row (row_to_json)") for (1, 100, 1999, 2000);
is($docs->{docs}{100}{note}, qq{quote " backslash \\ tab \t line\n \x{e9} \x{2713}},
	'escapes and non-ASCII text arrive intact');
my $stats = ws('GET', '/_ws/stats');
is("$stats->{batches}:$stats->{docs}:$stats->{written}:$stats->{failed}", "4:$NORDERS:$NORDERS:0",
	'service stats: 4 batches, 2000 documents written, none failed');

# --- 3: one id retryable twice, one id refused -----------------------------------------
ws_setup({ fail_ids => {
	7 => { retryable => JSON::PP::true, times => 2, reason => 'shard busy' },
	9 => { retryable => JSON::PP::false, reason => 'price missing' } } });
create_task('ws_fail', options => { batch_size => 500, tag => 'FLUSH' });
$run = start_run('ws_fail');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'failed documents: the run succeeds');
$p = progress($run);
is("$p->{processed}:$p->{failed}", ($NORDERS - 1) . ':1', 'processed 1999, failed 1');
$reqs = ws_requests();
my $counts = id_counts($reqs);
is($counts->{7}, 3, 'the retryable id was sent 3 times (2 refusals, then taken)');
is(scalar(grep { join(',', @{ ids_of($_) }) eq '7' } @$reqs), 2, 'sent again alone, twice');
is($counts->{9}, 1, 'the refused id was sent once');
is(scalar @$reqs, 6, '4 batches and 2 retries of the one document');
$docs = ws_docs();
ok(doc_is_row($docs, 7), 'the retryable document is stored, equal to its row');
ok(!exists $docs->{docs}{9}, 'the refused document is not');
is($docs->{count}, $NORDERS - 1, '1999 documents stored');
is(sql("SELECT doc_id || '|' || error_type FROM ecp.failed_docs WHERE run_id = $run"), '9|write_service',
	'failed_docs: id 9, error_type write_service');
like(sql("SELECT reason FROM ecp.failed_docs WHERE run_id = $run"), qr/price missing/,
	'with the service\'s reason');
my $retries = flow($run, 'retry');
is(join(',', map { "$_->{attempt}:$_->{documents}" } @$retries), '1:1,2:1',
	'the flow has 2 retry rows of 1 document each');

# --- 4: 429 and 503 on the first 2 requests ----------------------------------------------
for my $status (429, 503)
{
	ws_setup({ statuses => [ { status => $status, first => 2 } ] });
	create_task("ws_$status", options => { batch_size => 500, tag => 'FLUSH' });
	$run = start_run("ws_$status");
	is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', "$status twice: the run succeeds");
	$p = progress($run);
	is("$p->{processed}:$p->{failed}", "$NORDERS:0", "$status: processed 2000, failed 0");
	$reqs = ws_requests();
	is(join(',', map { $_->{status} } @$reqs[ 0 .. 2 ]), "$status,$status,200",
		"$status: the log shows $status, $status, then 200");
	is(scalar(grep { join(',', @{ ids_of($_) }) eq join(',', @{ ids_of($reqs->[0]) }) } @$reqs[ 0 .. 2 ]), 3,
		"$status: the same batch was sent again (same ids)");
	is(scalar @{ ids_of($reqs->[0]) }, 500, "$status: the whole batch of 500");
	is(scalar @$reqs, 6, "$status: 6 requests in all");
	ok(all_ids_once(id_counts($reqs, 200), $NORDERS), "$status: each id taken exactly once");
	is(ws_docs()->{count}, $NORDERS, "$status: /_ws/docs holds 2000 documents");
	$retries = flow($run, 'retry');
	is(join(',', map { "$_->{attempt}:$_->{documents}" } @$retries), '1:500,2:500',
		"$status: the flow has 2 retry rows of the batch of 500");
	is(scalar(grep { $_->{error} =~ /HTTP $status/ } @$retries), 2, "$status: each with the error (HTTP $status)")
	  or diag($J->encode($retries));
	is(sql("SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run"), '0', "$status: no dead letter");
}

# --- 5: 401 --------------------------------------------------------------------------------
ws_setup({ statuses => [ { status => 401, always => JSON::PP::true } ] });
create_task('ws_401', options => { batch_size => 500 });
$run = start_run('ws_401');
is(EcpTest::wait_for_run($node, $run, 'failed', 180), 'failed', '401: the run fails');
$p = progress($run);
like($p->{last_error}, qr/HTTP 401.*credentials/, 'last_error: HTTP 401, check the credentials')
  or diag($p->{last_error});
is(scalar @{ ws_requests() }, 1, '401: one request, not retried');
is(scalar @{ flow($run, 'retry') }, 0, '401: no retry in the flow');
is($p->{processed}, 0, '401: nothing processed');

# --- 6: bare ids, deletes --------------------------------------------------------------------
ws_setup();
create_task('ws_bare', query => 0, ids => [qw(a1 a2 a3)]);
$run = start_run('ws_bare');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'bare ids: the run succeeds');
$reqs = ws_requests();
is(scalar @$reqs, 1, 'bare ids: one request');
is_deeply([ sort { $a->{id} cmp $b->{id} } @{ $reqs->[0]{body}{docs} } ], [ { id => 'a1' }, { id => 'a2' }, { id => 'a3' } ],
	'bare ids: docs are [{"id": "a1"}, {"id": "a2"}, {"id": "a3"}] without "doc"');
ok(exists $reqs->[0]{body}{tag} && !defined $reqs->[0]{body}{tag}, 'no tag: "tag" is null');
ok(!exists $reqs->[0]{headers}{'x-ecp-tag'}, 'no tag: no X-Ecp-Tag header');
is("$reqs->[0]{body}{task}:$reqs->[0]{body}{index}:$reqs->[0]{body}{run}", "ws_bare:ws_bare_idx:$run",
	'bare ids: task, index and run');
$p = progress($run);
is("$p->{processed}:$p->{failed}", '3:0', 'bare ids: 3 processed');
is($J->encode(ws_docs()->{docs}), '{"a1":{"id_only":true},"a2":{"id_only":true},"a3":{"id_only":true}}',
	'the service took them as ids alone');

ws_setup();
$run = start_run('ws_bare', [qw(b1 b2)]);
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'ecp.start(task, ids => ...) of bare ids');
$reqs = ws_requests();
is_deeply([ map { @{ $_->{body}{docs} } } @$reqs ], [ { id => 'b1' }, { id => 'b2' } ],
	'only the given ids, bare');

ws_setup();
create_task('ws_lookup', options => { delete_missing => JSON::PP::true });
sql(q{INSERT INTO orders VALUES (9000, 'gone soon', 1.00, 'open', now(), '{}', NULL)});
$run = start_run('ws_lookup', [qw(5 9000)]);
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'ids looked up through the query');
ok(exists ws_docs()->{docs}{9000}, 'row 9000 is at the service');
sql('DELETE FROM orders WHERE id = 9000');
my $before = scalar @{ ws_requests() };
$run = start_run('ws_lookup', [qw(5 9000)]);
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'again, row 9000 deleted');
$reqs = ws_requests();
my %sent = map { $_->{id} => $_ } map { @{ $_->{body}{docs} } } @$reqs[ $before .. $#$reqs ];
is_deeply($sent{9000}, { id => '9000', delete => JSON::PP::true }, 'the id no longer found is sent as {"id", "delete": true}');
is(join(',', sort keys %{ $sent{5} // {} }), 'doc,id', 'the one found is sent with its doc');
$docs = ws_docs();
ok(!exists $docs->{docs}{9000} && doc_is_row($docs, 5), 'the service deleted 9000 and holds 5');
$p = progress($run);
is("$p->{processed}:$p->{deleted}:$p->{failed}", '1:1:0', 'counted: 1 processed, 1 deleted');

# --- 8: answers ---------------------------------------------------------------------------------
# Every accepted form of "everything was taken".
for my $case ([ 'an empty body', { ok_body => 'empty' } ], [ '{}', { ok_body => '{}' } ],
	[ 'HTTP 204', { ok_status => 204 } ], [ 'HTTP 202 {"failed": []}', { ok_status => 202 } ])
{
	my ($what, $config) = @$case;
	ws_setup($config);
	$run = start_run('ws_bare', [qw(c1 c2)]);
	is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', "the answer $what: the run succeeds");
	is(progress($run)->{processed}, 2, "$what: 2 processed");
}

# A body ecp cannot read fails the run, saying so.
ws_setup({ statuses => [ { status => 200, first => 1, raw_body => 'not json' } ] });
create_task('ws_garbage', options => { batch_size => 500 });
$run = start_run('ws_garbage');
is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed', '200 "not json": the run fails');
$p = progress($run);
like($p->{last_error}, qr/write service answered HTTP 200 with a body ecp cannot read: it is not JSON/,
	'last_error: the body cannot be read (not JSON)')
  or diag($p->{last_error});
is(scalar @{ ws_requests() }, 1, '"not json": not retried');
is($p->{processed}, 0, '"not json": nothing counted');

for my $case (
	[ 'an array', { body => [] }, qr/it is not a JSON object/ ],
	[ 'failed an object', { body => { failed => { id => 'd1' } } }, qr/"failed" is not an array/ ],
	[ 'an entry without id', { body => { failed => [ { retryable => JSON::PP::false } ] } }, qr/has no string "id"/ ],
	[ 'an entry not an object', { body => { failed => ['d1'] } }, qr/an entry of "failed" is not an object/ ],
	[ 'an id not sent', { body => { failed => [ { id => 'zz', retryable => JSON::PP::false } ] } },
		qr/names id "zz", which the request did not hold/ ],
	[ 'an id with a \u0000 after one sent', { body => { failed => [ { id => "d1\x{0}", retryable => JSON::PP::false } ] } },
		qr/names id "d1\\u0000\.\.\.", which the request did not hold/ ],
	[ 'far too long', { body => { failed => [], padding => [ (0) x 500 ] } }, qr/far longer than a list of failures/ ])
{
	my ($what, $entry, $re) = @$case;
	ws_setup({ statuses => [ { status => 200, first => 1, %$entry } ] });
	$run = start_run('ws_bare', [qw(d1 d2)]);
	is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed', "an answer with $what: the run fails");
	my $error = progress($run)->{last_error} // '';
	ok($error =~ /answered HTTP 200 with a body ecp cannot read/ && $error =~ $re, "$what: last_error says why")
	  or diag($error);
}

# What the worker stores must be valid text whatever the service says:
#  * a \u0000 quoted in a reason (the _bulk reader allows it too) does not
#    make the answer unreadable; the reason is kept up to it;
#  * a reason over the 1000 bytes kept, whose cut falls inside a
#    multi-byte character, is cut on a character boundary;
#  * an unknown id quoted in last_error is cut on a character boundary too.
# convert_from(textsend(x), 'UTF8') checks that the bytes are UTF-8 (an
# error otherwise, hence psql, not safe_psql).
sub valid_utf8
{
	my ($query) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "SELECT convert_from(textsend(x), 'UTF8') = x FROM ($query) q(x)");
	diag($err) if $err;
	return $out eq 't';
}

ws_setup({ fail_ids => { e1 => { retryable => JSON::PP::false, reason => "bad value \x{0}here" } } });
$run = start_run('ws_bare', [qw(e1 e2)]);
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'a reason with \u0000: the run succeeds')
  or diag(progress($run)->{last_error});
is(sql("SELECT doc_id || '|' || (reason = 'bad value ') FROM ecp.failed_docs WHERE run_id = $run"), 'e1|true',
	'e1 is a dead letter, its reason kept up to the \u0000');

ws_setup({ fail_ids => { e1 => { retryable => JSON::PP::false, reason => ('a' x 999) . ("\x{e9}" x 10) } } });
$run = start_run('ws_bare', [qw(e1 e2)]);
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'a reason of 1019 bytes: the run succeeds')
  or diag(progress($run)->{last_error});
is(sql("SELECT reason = repeat('a', 999) FROM ecp.failed_docs WHERE run_id = $run"),
	't', 'the reason is cut to 1000 bytes, on a character boundary');
ok(valid_utf8("SELECT reason FROM ecp.failed_docs WHERE run_id = $run"), 'of valid UTF-8');

# An id the request did not hold is quoted in last_error, cut at 100 bytes.
my $long_id = ('z' x 99) . ("\x{e9}" x 5);
ws_setup({ statuses => [ { status => 200, first => 1,
	body => { failed => [ { id => $long_id, retryable => JSON::PP::false } ] } } ] });
$run = start_run('ws_bare', [qw(f1)]);
is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed', 'an answer naming a long id not sent: the run fails');
like(progress($run)->{last_error}, qr/names id "zzzz/, 'last_error quotes the id');
ok(valid_utf8("SELECT last_error FROM ecp.run WHERE id = $run"), 'cut on a character boundary: valid UTF-8');

# --- 7: rate limit; pause and resume ------------------------------------------------------------
ws_setup();
create_task('ws_rate', options => { batch_size => 500, rate_limit => 400 });
$run = start_run('ws_rate');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'rate 400/s: the run succeeds');
$reqs = ws_requests();
my @sizes = map { scalar @{ ids_of($_) } } @$reqs;
# the first request may leave before the launcher handed the rate over
is(scalar(grep { $_ > 20 } @sizes[ 1 .. $#sizes ]), 0, 'under rate 400/s a request carries at most 20 documents')
  or diag("@sizes");
my $span = ($reqs->[-1]{time_ms} - $reqs->[0]{time_ms}) / 1000;
# 2000 documents, at most one second's worth (400) at once: >= 4 s
cmp_ok($span, '>=', 2, "the 2000 documents took ${span}s (>= 2 s at 400/s)");
ok(all_ids_once(id_counts($reqs, 200), $NORDERS), 'rate: each id once');

ws_setup({ delay_ms => 300 });
create_task('ws_pause', options => { batch_size => 100 });
$run = start_run('ws_pause');
ok(EcpTest::poll($node, "SELECT processed >= 200 FROM ecp.progress WHERE run_id = $run", 120),
	'the slow run (300 ms a batch of 100) makes progress');
sql("SELECT ecp.pause($run)");
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 30),
	'paused: the worker leaves');
my $at_pause = progress($run)->{processed};
ok($at_pause < $NORDERS, "paused mid-run ($at_pause of 2000)");
is(EcpTest::run_state($node, $run), 'paused', 'the run is paused');
ws('PUT', '/_ws/config', {});
sql("SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'the resumed run succeeds');
$docs = ws_docs();
is($docs->{count}, $NORDERS, 'after pause and resume: every document at the service');
is(scalar(grep { exists $docs->{docs}{$_} } 1 .. $NORDERS), $NORDERS, 'ids 1..2000, none missing');
is(progress($run)->{processed}, $NORDERS, 'each counted once');
is(sql("SELECT string_agg(action, ',' ORDER BY at) FROM ecp.flow WHERE run_id = $run AND action IN ('pause', 'resume', 'finished')"),
	'pause,resume,finished', 'the flow records pause, resume, finished');

# --- the index list during a migration of the same alias ------------------------------
# A migration (mode alias_swap, through an elasticsearch consumer) of alias
# "shop" is loading, paused mid-way; a write service's run of the same
# owner writing to "shop" names both indexes in every batch, records the
# dual write in its flow and in ecp.migrations; once the migration is
# cancelled, batches name "shop" alone again.
my $es = EsdServer->start();
sql("SELECT ecp.create_consumer('es', '" . $es->url . "')");
sql(q{SELECT ecp.create_task('shop_migrate', 'es', 'shop', query => 'SELECT * FROM orders',
	options => '{"mode": "alias_swap", "batch_size": 100, "rate_limit": 100}')});
my $migration = start_run('shop_migrate');
ok(EcpTest::poll($node, "SELECT processed >= 20 FROM ecp.progress WHERE run_id = $migration", 120),
	'a slow migration of alias shop is loading');
sql("SELECT ecp.pause($migration)");
is(EcpTest::wait_for_run($node, $migration, 'paused', 60), 'paused', '... and paused mid-load');
is(sql("SELECT state || ' ' || step FROM ecp.migrations WHERE run_id = $migration"), 'paused load',
	'ecp.migrations: paused while loading');
ws_setup();
sql(q{SELECT ecp.create_task('shop_ws', 'ws', 'shop', query => 'SELECT * FROM orders WHERE id <= 300',
	options => '{"batch_size": 100}')});
$run = start_run('shop_ws');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'the write service run of alias shop succeeds');
$reqs = ws_requests();
is(join(' ', map { $J->encode($_->{body}{indexes}) } @$reqs), join(' ', ("[\"shop\",\"shop-$migration\"]") x 3),
	"each of its 3 batches names shop and the new index shop-$migration");
is(ws('GET', '/_ws/docs?index=shop-' . $migration)->{count}, 300, '... which the service wrote (300 documents)');
is(ws('GET', '/_ws/docs?index=shop')->{count}, 300, '... as well as to shop');
is($J->encode([ map { $_->{new_index} } @{ flow($run, 'dual write') } ]), "[\"shop-$migration\"]",
	'the run\'s flow: dual write, naming the new index');
is(sql("SELECT dual_writes FROM ecp.migrations WHERE run_id = $migration"), 300, 'ecp.migrations counts the 300 dual writes');
sql("SELECT ecp.cancel($migration)");
ws_setup();
$run = start_run('shop_ws');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'after the migration is cancelled, a run of shop');
is(join(' ', map { $J->encode($_->{body}{indexes}) } @{ ws_requests() }), join(' ', ('["shop"]') x 3),
	'... names shop alone');
is(scalar @{ flow($run, 'dual write') }, 0, '... with no dual write in its flow');

# bob's run to his own "shop" is not told of the owner's migration (another role's index names)
$node->safe_psql('postgres', q{
	CREATE ROLE bob LOGIN;
	GRANT SELECT ON orders TO bob;
});
$migration = start_run('shop_migrate');
ok(EcpTest::poll($node, "SELECT processed >= 20 FROM ecp.progress WHERE run_id = $migration", 120),
	'a second migration of shop is loading');
sql("SELECT ecp.pause($migration)");
is(EcpTest::wait_for_run($node, $migration, 'paused', 60), 'paused', '... paused');
$node->safe_psql('postgres', qq{
	SET ROLE bob;
	SELECT ecp.create_consumer('bob_ws', '$ws/ingest', kind => 'http');
	SELECT ecp.create_task('bob_shop', 'bob_ws', 'shop', query => 'SELECT * FROM orders WHERE id <= 100');
});
ws_setup();
$run = $node->safe_psql('postgres', "SET ROLE bob; SELECT ecp.start('bob_shop')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'bob\'s run to his own shop succeeds');
is(join(' ', map { $J->encode($_->{body}{indexes}) } @{ ws_requests() }), '["shop"]',
	'... naming shop alone: another owner\'s migration is not his');
sql("SELECT ecp.cancel($migration)");
$es->stop;

$node->stop;
kill 'TERM', $ws_pid;
waitpid($ws_pid, 0);
$ws_pid = undef;
done_testing();
