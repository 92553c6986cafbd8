# Edges of the sync engine: requests split by batch_bytes, rows whose key or
# id is NULL (reported, never skipped silently), whole-request failures that
# fail the run with a clear last_error, and the other ops.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('request counts and faults');
my $node = EcpTest::new_node('edges');
my $es = EsdServer->start();
my $url = $es->url;
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '$url')");

sub run_task
{
	my ($name, $query, $options, $want) = @_;
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$name', 'esd', '$name', query => \$q\$$query\$q\$, options => '$options')");
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	is(EcpTest::wait_for_run($node, $run, $want // 'succeeded'), $want // 'succeeded', "run of $name: " . ($want // 'succeeded'));
	return $run;
}

# --- batch_bytes splits a page into several requests --------------------------
my $before = $es->stats->{bulk_requests};
my $run = run_task('split', "SELECT g AS id, repeat('x', 300) AS pad FROM generate_series(1, 1000) g",
	'{"batch_size": 500, "batch_bytes": 4096}');
my $requests = $es->stats->{bulk_requests} - $before;
# ~340 bytes per document and 4096 bytes per request: 12 documents a request
ok($requests >= 80, "1000 documents of ~340 bytes went in $requests requests of at most 4 KiB");
my $max_body = 0;
for my $r (@{ $es->requests(200) })
{
	next unless ($r->{url} // '') =~ m{^/split/_bulk};
	my $bytes = $r->{body_bytes} // 0;
	$max_body = $bytes if $bytes > $max_body;
}
ok($max_body > 0 && $max_body <= 4096, "no request body over batch_bytes (largest $max_body)");
$es->refresh('split');
is($es->count('split'), 1000, 'every document arrived');
is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"), '1000',
	'processed counts them once');

# --- NULL keys and NULL ids are reported, not skipped ---------------------------
$node->safe_psql('postgres', q{
CREATE TABLE holes (id int, k int, label text);
INSERT INTO holes SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE g END, 'l' || g FROM generate_series(1, 100) g;
UPDATE holes SET id = NULL WHERE k IN (5, 15);
});
$run = run_task('holes', 'SELECT * FROM holes', '{"key_column": "k", "batch_size": 7}');
is($node->safe_psql('postgres', "SELECT processed || ' ' || failed FROM ecp.progress WHERE run_id = $run"),
	'88 12', '88 sent; 10 NULL keys and 2 NULL ids counted as failed');
is($node->safe_psql('postgres',
		"SELECT error_type || ':' || coalesce(doc_id, '-') FROM ecp.failed_docs WHERE run_id = $run ORDER BY error_type, doc_id"),
	"null_id:-\nnull_id:-\nnull_key:-", 'failed_docs has the NULL ids and one row for the NULL keys');
like($node->safe_psql('postgres', "SELECT reason FROM ecp.failed_docs WHERE run_id = $run AND error_type = 'null_key'"),
	qr/^10 rows have NULL in key column "k"/, 'the NULL-key row says how many and which column');
like($node->safe_psql('postgres', "SELECT string_agg(reason, '|') FROM ecp.failed_docs WHERE run_id = $run AND error_type = 'null_id'"),
	qr/id column "id" is NULL \(key 5\)/, 'a NULL id names the key of its row');

# --- whole-request failures fail the run with what happened -------------------
$es->set_faults({ auth => { basic => 'sync:right' } });
$run = run_task('denied', 'SELECT g AS id FROM generate_series(1, 10) g', '{}', 'failed');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/HTTP 401.*security_exception/, 'a 401 fails the run and says so');
is($node->safe_psql('postgres',
		"SELECT content->>'error' LIKE '%HTTP 401%' FROM ecp.flow WHERE run_id = $run AND action = 'failed'"),
	't', 'the flow records the failure with its error');
$es->clear_faults;

$node->safe_psql('postgres', "SELECT ecp.create_consumer('nowhere', 'http://127.0.0.1:1')");
$node->safe_psql('postgres',
	"SELECT ecp.create_task('nowhere', 'nowhere', 'x', query => 'SELECT 1 AS id', options => '{\"max_retries\": 1, \"retry_base_ms\": 10}')");
$run = $node->safe_psql('postgres', "SELECT ecp.start('nowhere')");
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', 'a refused connection fails the run');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr{GET http://127\.0\.0\.1:1/ failed: .*(refused|connect)}i,
	'... naming the URL (a part\'s first request asks GET / which product it is) and the cause');

# a source query that fails at run time (the table is gone) fails the run
$node->safe_psql('postgres', 'CREATE TABLE doomed AS SELECT 1 AS id');
$node->safe_psql('postgres', "SELECT ecp.create_task('doomed', 'esd', 'doomed', query => 'SELECT * FROM doomed')");
$node->safe_psql('postgres', 'DROP TABLE doomed');
$run = $node->safe_psql('postgres', "SELECT ecp.start('doomed')");
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', 'a source error fails the run');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/relation "doomed" does not exist/, '... with the error of the query');

# --- the other ops -------------------------------------------------------------
run_task('ops', 'SELECT g AS id, g AS n FROM generate_series(1, 20) g', '{"op": "create"}');
$es->refresh('ops');
is($es->count('ops'), 20, 'op create indexes new documents');
$run = run_task('ops2', 'SELECT g AS id, g * 10 AS n FROM generate_series(1, 20) g', '{"op": "update"}');
is($es->doc('ops2', '3')->{n}, 30, 'op update upserts documents');
# ids the index does not hold: each item is 404 with result not_found and no
# error, which is what a sync wants (a delete into a missing index is a
# configuration failure instead, see 045)
my ($created) = $es->put('/ops3', {});
is($created, 200, 'index ops3 exists, empty');
$run = run_task('ops3', 'SELECT g AS id FROM generate_series(1, 5) g', '{"op": "delete"}');
is($node->safe_psql('postgres', "SELECT processed || ' ' || failed FROM ecp.progress WHERE run_id = $run"),
	'5 0', 'op delete of documents the existing index lacks counts them done (404 not_found)');

# --- retry_failed with text ids (compared as text) and uuid ids (as uuid) -------
for my $case (
	[ 'text_ids', q{SELECT 'order-' || g AS id, g AS n FROM generate_series(1, 50) g},
		[ 'order-7', 'order-42' ] ],
	[ 'uuid_ids', q{SELECT md5(g::text)::uuid AS id, g AS n FROM generate_series(1, 50) g},
		[ map { $node->safe_psql('postgres', "SELECT md5('$_')::uuid") } 3, 9 ] ])
{
	my ($name, $query, $ids) = @$case;
	$run = run_task($name, $query, '{}');
	my $list = join(', ', map { "'$_'" } @$ids);
	$node->safe_psql('postgres', qq{
		INSERT INTO ecp.failed_doc (run_id, doc_id, status, error_type, reason, owner)
		SELECT $run, d, 400, 'made_up', 'made up', current_user::regrole FROM unnest(ARRAY[$list]) d});
	my $retry = $node->safe_psql('postgres', "SELECT ecp.retry_failed($run)");
	is(EcpTest::wait_for_run($node, $retry, 'succeeded'), 'succeeded', "$name: retry_failed succeeds");
	is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $retry"),
		'2', "$name: exactly the 2 failed ids are sent again");
}

$es->stop;
$node->stop;
done_testing();
