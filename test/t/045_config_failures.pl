# Configuration failures the cluster reports per document or by its size
# limit stop the run at once, with Elasticsearch's reason and what to
# change, never as failed documents or as retries:
# - a per-item 403 cluster_block_exception (index.blocks.write), also in
#   the middle of a run: the checkpoint is kept and ecp.resume finishes
#   once the block is gone;
# - a per-item 403 security_exception for a user without write privileges
#   on the index (the stand-in's per-index privileges), until granted;
# - a per-item 400 for an alias without a write index;
# - op delete into a missing index (404 index_not_found_exception), while
#   deleting documents of an existing index works;
# - a body over the cluster's http.max_content_length: the 413, or a
#   connection lost twice in a row while sending a body over 1 MiB, says
#   "request too large: lower batch_bytes"; a lost connection under a small
#   body (or once under a large one) stays
#   transient.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('index blocks, per-index privileges, max_content_length and faults');
my $node = EcpTest::new_node('config_failures');
my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my $url = $es->url;
my $password = 'app-s3cret-pass';
$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('esd', '$url');
	SELECT ecp.create_consumer('as_app', '$url', 'elasticsearch',
	                           '{"username": "app", "password": "$password"}');
	CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 2000) g;
	ALTER TABLE items ADD PRIMARY KEY (id);
	CREATE TABLE wide AS SELECT g AS id, repeat('x', 1000) AS pad FROM generate_series(1, 3000) g;
	ALTER TABLE wide ADD PRIMARY KEY (id);
});

sub start_task
{
	my ($name, $consumer, $index, $query, $options) = @_;
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$name', '$consumer', '$index', query => \$q\$$query\$q\$, options => '$options')");
	return $node->safe_psql('postgres', "SELECT ecp.start('$name')");
}

sub value
{
	my ($run, $expr) = @_;
	return $node->safe_psql('postgres', "SELECT $expr FROM ecp.progress WHERE run_id = $run");
}

sub count_of
{
	my ($run, $action) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = '$action'");
}

sub failed_docs
{
	my ($run) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run");
}

sub indexed
{
	my ($index) = @_;
	$es->refresh($index);
	return $es->count($index);
}

# Failed at once: the state, no retry, nothing in failed_docs; returns last_error.
sub failed_at_once
{
	my ($run, $what) = @_;
	is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', "$what: the run fails");
	is(count_of($run, 'retry'), '0', "$what: nothing was retried");
	is(failed_docs($run), '0', "$what: nothing in failed_docs");
	return value($run, 'last_error');
}

# --- index.blocks.write, set in the middle of a run -----------------------------
my ($st) = $es->put('/blocked', {});
is($st, 200, 'index blocked created, writable');
# slow bulk answers keep the run going while the block is set
$es->set_faults({ delay_ms => { ms => 250, match => 'bulk' } });
my $run = start_task('blocked', 'esd', 'blocked', 'SELECT * FROM items', '{"batch_size": 100, "retry_base_ms": 10}');
ok(EcpTest::poll($node, "SELECT processed >= 300 FROM ecp.progress WHERE run_id = $run", 120),
	'the run is under way (300 documents acknowledged)');
($st) = $es->put('/blocked/_settings', { 'index.blocks.write' => JSON::PP::true });
is($st, 200, 'index.blocks.write: true set while it runs');
my $error = failed_at_once($run, 'write block');
like($error, qr/^index "blocked" refused 100 of 100 documents with HTTP 403 cluster_block_exception: index \[blocked\] blocked by: \[FORBIDDEN\/8\/index write \(api\)\];/,
	"last_error names the index and gives ES's reason");
like($error, qr/remove index\.blocks\.write, or the cluster's read-only block after a full disk$/, '... and the hint');
my $kept = value($run, 'processed');
ok($kept >= 300 && $kept < 2000 && $kept % 100 == 0, "the checkpoint is kept ($kept documents acknowledged)");
is(indexed('blocked'), $kept, 'the index holds exactly the acknowledged pages');
$es->clear_faults;
$es->request('DELETE', '/_esd/stats');
($st) = $es->put('/blocked/_settings', { 'index.blocks.write' => JSON::PP::false });
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'block removed: ecp.resume finishes the run');
is(value($run, "processed || ' ' || failed"), '2000 0', 'every row processed once, none failed');
is(indexed('blocked'), 2000, 'every row in the index');
ok($es->stats->{bulk_items} <= 2000 - $kept + 100, 'the resumed run sent only what was not acknowledged (at most one page again)');

# --- a user without write privileges on the index ---------------------------------
# ecp's user may write granted-* only; the test's own requests carry no
# credentials, so the fault is lifted before counting
$es->set_faults({ auth => { basic => "app:$password", indices => ['granted-*'], roles => ['ecp_writer'] } });
$run = start_task('denied', 'as_app', 'secret', 'SELECT * FROM items', '{"batch_size": 500, "retry_base_ms": 10}');
$error = failed_at_once($run, 'no privileges');
like($error, qr/^index "secret" refused 500 of 500 documents with HTTP 403 security_exception: action \[indices:data\/write\/bulk\[s\]\] is unauthorized for user \[app\] with effective roles \[ecp_writer\] on indices \[secret\]/,
	"last_error names the index and gives ES's reason");
like($error, qr/; grant the user write\/index privileges on the index$/, '... and the hint');
unlike($error, qr/\Q$password\E/, 'no password in it');
is(value($run, 'processed'), '0', 'nothing acknowledged');
$es->set_faults({ auth => { basic => "app:$password", indices => ['granted-*', 'secret'], roles => ['ecp_writer'] } });
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'privileges granted: ecp.resume finishes the run');
$es->clear_faults;
is(value($run, "processed || ' ' || failed"), '2000 0', 'every row processed, none failed');
is(indexed('secret'), 2000, 'every row in the index');

# --- an alias without a write index -------------------------------------------------
$es->put("/$_", {}) for qw(al-1 al-2);
($st) = $es->post('/_aliases', { actions => [
	{ add => { index => 'al-1', alias => 'al' } }, { add => { index => 'al-2', alias => 'al' } } ] });
is($st, 200, 'alias al over two indices, neither the write index');
$run = start_task('alias', 'esd', 'al', 'SELECT * FROM items', '{"batch_size": 500, "retry_base_ms": 10}');
$error = failed_at_once($run, 'alias without a write index');
like($error, qr/^index "al" refused 500 of 500 documents with HTTP 400 illegal_argument_exception: no write index is defined for alias \[al\]\. The write index may be explicitly disabled/,
	"last_error gives ES's message");
like($error, qr/is_write_index: true/, '... and says how to give the alias a write index');
is(indexed('al'), 0, 'nothing was written through the alias');

# --- op delete: a missing index fails, existing documents go --------------------
$run = start_task('del_nowhere', 'esd', 'nosuch', 'SELECT g AS id FROM generate_series(1, 50) g', '{"op": "delete", "retry_base_ms": 10}');
$error = failed_at_once($run, 'delete into a missing index');
like($error, qr/^index "nosuch" does not exist \(404 index_not_found_exception: no such index \[nosuch\]\); a delete never creates an index: check the task's index name$/,
	'last_error says the index does not exist and that a delete never creates one');
($st) = $es->get('/nosuch');
is($st, 404, 'and no index was created');

$run = start_task('del_fill', 'esd', 'del', 'SELECT id, label FROM items WHERE id <= 100', '{}');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', '100 documents indexed into del');
is(indexed('del'), 100, 'del holds 100 documents');
# 41..100 exist, 101..120 never did (404 not_found: fine)
$run = start_task('del_some', 'esd', 'del', 'SELECT g AS id FROM generate_series(41, 120) g', '{"op": "delete", "batch_size": 25}');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'op delete of existing and absent ids succeeds');
is(value($run, "processed || ' ' || failed"), '80 0', 'the 80 ids processed, none failed');
is(indexed('del'), 40, 'the index count drops to the 40 not deleted');
ok(defined $es->doc('del', '40') && !defined $es->doc('del', '41'), 'id 40 kept, id 41 gone');

# --- bodies over http.max_content_length -------------------------------------------------
# A body over 1 MiB: whether curl reads the stand-in's 413 or loses the
# connection while sending, the run stops with the same advice.
$es->set_config({ max_content_length => 256 * 1024 });
$es->request('DELETE', '/_esd/requests');
$run = start_task('big', 'esd', 'big', 'SELECT * FROM wide', '{"batch_size": 2000, "batch_bytes": 4194304, "retry_base_ms": 10}');
$error = failed_at_once($run, 'a 2 MiB body over a 256 KiB limit');
like($error, qr/request too large: lower batch_bytes \(the cluster's http\.max_content_length\)/, 'last_error: request too large, lower batch_bytes');
like($error, qr/a body of \d{7} bytes( in flight)? \(2000 documents, batch_bytes 4194304\)/, '... naming the body size and batch_bytes');
my @log = grep { ($_->{url} // '') =~ m{^/big/_bulk} } @{ $es->requests(50) };
is(scalar(@log), 1, 'one request reached the stand-in');
is($log[0]{status}, 413, 'which answered 413');

# Under 1 MiB the stand-in's 413 is read (it drains the body it refused).
$run = start_task('mid', 'esd', 'mid', 'SELECT * FROM wide', '{"batch_size": 400, "retry_base_ms": 10}');
$error = failed_at_once($run, 'a 400 KiB body over a 256 KiB limit');
like($error, qr/answered HTTP 413 to a body of \d+ bytes \(400 documents, batch_bytes 5242880\): request too large: lower batch_bytes \(the cluster's http\.max_content_length\)$/,
	'last_error: HTTP 413, request too large, lower batch_bytes');
$es->set_config({ max_content_length => 104857600 });
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'limit raised: ecp.resume finishes the run');
is(indexed('mid'), 3000, 'every row in the index');

# A connection closed before the answer, twice in a row under a body over
# 1 MiB: the size was refused (one retry, then the run fails) ...
$es->set_faults({ drop => { every => 1 } });
$run = start_task('big_drop', 'esd', 'big_drop', 'SELECT * FROM wide', '{"batch_size": 2000, "batch_bytes": 4194304, "retry_base_ms": 10}');
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', 'a 2 MiB body whose connection is closed twice: the run fails');
is(count_of($run, 'retry'), '1', '... after one retry, not max_retries');
$error = value($run, 'last_error');
like($error, qr/lost its connection \(.*\) twice in a row with a body of \d{7} bytes in flight \(2000 documents, batch_bytes 4194304\): request too large: lower batch_bytes/,
	'last_error: the connection was lost twice under a large body, request too large');
# ... once, the network: one node restart or dropped connection is retried
$es->set_faults({ drop => { first => 1 } });
$run = start_task('big_drop_once', 'esd', 'big_drop_once', 'SELECT * FROM wide', '{"batch_size": 2000, "batch_bytes": 4194304, "retry_base_ms": 10}');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'a large body whose connection is closed once: retried, the run succeeds');
is(indexed('big_drop_once'), 3000, 'every row in the index');
# ... under it, the network: retried, then done
$es->set_faults({ drop => { first => 1 } });
my $dropped_before = $es->stats->{dropped_connections};
$run = start_task('small_drop', 'esd', 'small_drop', 'SELECT * FROM wide', '{"batch_size": 100, "retry_base_ms": 10}');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'a small body whose connection is closed: retried, the run succeeds');
is($es->stats->{dropped_connections} - $dropped_before, 1, 'the stand-in did drop one request');
# The part's first request (GET /) opened the connection the dropped _bulk
# reused; libcurl itself sends a request again on a fresh connection when
# a reused one dies before any answer, so ecp may not see the drop at all.
cmp_ok(count_of($run, 'retry'), '<=', 1, 'at most one retry in the flow');
$es->clear_faults;
is(indexed('small_drop'), 3000, 'every row in the index');

$es->stop;
$node->stop;
done_testing();
