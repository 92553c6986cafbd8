# How documents are written: transform, external versions, routing,
# pipeline, refresh, aliases.  Tasks belong to an ordinary role.
#  * transform: documents reshaped by a SQL function that runs as the
#    task's owner; NULL skips a document (counted as skipped), an error in
#    the function is that document's dead letter with its message;
#  * version_column: a full run that read its rows before an id repair of
#    newer versions does not overwrite them: Elasticsearch answers 409
#    (external_gte), counted as skipped_stale, never as failed;
#  * routing_column reaches the action lines, pipeline the URL, and the
#    stand-in's ingest pipeline ran; an unknown pipeline fails the run;
#  * refresh: the documents are searchable when the run is done (the
#    stand-in has no periodic refresh; without the option they are not);
#  * an alias with one index, or with a write index, works; one without a
#    write index fails the run with Elasticsearch's message and a hint.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('request logs, pipelines, no periodic refresh');
my $node = EcpTest::new_node('writes', conf => [ 'ecp.heartbeat_interval = 1', 'ecp.retry_base_ms = 100' ]);
my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my $url = $es->url;
my $json = JSON::PP->new->utf8->canonical;

sub as_shop { return $node->safe_psql('postgres', "SET ROLE shop; $_[0]") }

sub shop_fails
{
	my ($sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "SET ROLE shop; $sql");
	return $rc != 0 ? $err : '';
}

sub run_task
{
	my ($task, $want) = @_;
	my $run = as_shop("SELECT ecp.start('$task')");
	is(EcpTest::wait_for_run($node, $run, $want, 120), $want, "$task: run $want");
	return $run;
}

sub progress
{
	my ($run, $columns) = @_;
	return as_shop("SELECT $columns FROM ecp.progress WHERE run_id = $run");
}

$node->safe_psql('postgres', q{
	CREATE ROLE shop LOGIN;
	GRANT CREATE ON SCHEMA public TO shop;
});
as_shop(qq{
	CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric, status text,
	                     updated_at timestamptz);
	INSERT INTO orders
	SELECT g, 'c' || g % 10, g * 1.5,
	       CASE WHEN g % 100 = 0 THEN 'skip' WHEN g % 250 = 7 THEN 'bad' ELSE 'ok' END,
	       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'
	  FROM generate_series(1, 5000) g;
	CREATE FUNCTION public.shape(doc jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
	BEGIN
	    IF doc->>'status' = 'skip' THEN
	        RETURN NULL;
	    END IF;
	    IF doc->>'status' = 'bad' THEN
	        RAISE EXCEPTION 'cannot shape order %', doc->>'id';
	    END IF;
	    RETURN jsonb_build_object('order', doc->'id', 'cents', ((doc->>'amount')::numeric * 100)::bigint,
	                              'by', current_user);
	END \$\$;
	CREATE FUNCTION public.not_jsonb(doc jsonb) RETURNS text LANGUAGE sql AS 'SELECT 1::text';
	SELECT ecp.create_consumer('es', '$url');
});

# --- transform ------------------------------------------------------------------------
like(shop_fails(q{SELECT ecp.create_task('t1', 'es', 't1', query => 'SELECT * FROM orders',
	options => '{"transform": "shape"}')}), qr/must name a function with its schema/, 'an unqualified transform is refused');
like(shop_fails(q{SELECT ecp.create_task('t1', 'es', 't1', query => 'SELECT * FROM orders',
	options => '{"transform": "public.nope"}')}), qr/transform function public\.nope\(jsonb\) does not exist/,
	'a missing transform function is refused');
like(shop_fails(q{SELECT ecp.create_task('t1', 'es', 't1', query => 'SELECT * FROM orders',
	options => '{"transform": "public.not_jsonb"}')}), qr/must return jsonb/, 'a transform must return jsonb');
as_shop(q{SELECT ecp.create_task('shaped', 'es', 'shaped', query => 'SELECT * FROM orders WHERE id <= 1000',
	options => '{"transform": "public.shape", "batch_size": 300}')});
my $run = run_task('shaped', 'succeeded');
is(progress($run, "processed || '/' || failed || '/' || skipped"), '986/4/10',
	'progress: 986 processed, 4 failed (the function raised), 10 skipped (NULL)');
$es->refresh('shaped');
is($es->count('shaped'), 986, 'the index holds the 986 transformed documents');
is_deeply($es->doc('shaped', '1'), { order => 1, cents => 150, by => 'shop' },
	'a document is what the function returned, computed as the task\'s owner');
is($es->doc('shaped', '100'), undef, 'a skipped document was not sent');
is(as_shop("SELECT error_type || ': ' || reason FROM ecp.failed_docs WHERE run_id = $run AND doc_id = '257'"),
	'transform: transform public.shape failed: cannot shape order 257',
	'an error in the function is that document\'s dead letter, with its message');
like(as_shop("SELECT content::text FROM ecp.flow WHERE run_id = $run AND action = 'finished'"),
	qr/"skipped": 10/, 'the finished row counts the skipped documents');

# --- external versions ------------------------------------------------------------------
# The full task reads a snapshot of the rows taken when it starts (what a
# long full run has read before a repair changed the rows); the repair
# task reads the live table.  Both write the same index.
as_shop(q{
	CREATE TABLE orders_seen AS SELECT * FROM orders;
	ALTER TABLE orders_seen ADD PRIMARY KEY (id);
	UPDATE orders SET amount = -1, updated_at = updated_at + interval '1 hour' WHERE id > 4980;
	SELECT ecp.create_task('full', 'es', 'versions', query => 'SELECT * FROM orders_seen',
	       options => '{"version_column": "updated_at", "batch_size": 200, "rate_limit": 1000}');
	SELECT ecp.create_task('repair', 'es', 'versions', query => 'SELECT * FROM orders',
	       options => '{"version_column": "updated_at"}');
});
like(shop_fails(q{SELECT ecp.create_task('v_update', 'es', 'versions', query => 'SELECT * FROM orders',
	options => '{"version_column": "updated_at", "op": "update"}')}), qr/needs op index or delete/,
	'external versions with op update are refused');
like(shop_fails(q{SELECT ecp.create_task('v_col', 'es', 'versions', query => 'SELECT * FROM orders',
	options => '{"version_column": "nope"}')}), qr/column "nope" is not an output column/,
	'a version column must be a column of the query');
my $full = as_shop("SELECT ecp.start('full')");
ok(EcpTest::poll($node, "SELECT processed >= 400 FROM ecp.progress WHERE run_id = $full", 120),
	'the full run is under way');
my $repair = as_shop(q{SELECT ecp.start('repair', ids => ARRAY(SELECT g::text FROM generate_series(4981, 5000) g))});
is(EcpTest::wait_for_run($node, $repair, 'succeeded', 120), 'succeeded', 'the repair of 20 newer rows succeeded');
# the full run may have up to two pages (400 rows) in flight past its checkpoint
cmp_ok(as_shop("SELECT max(last_key::bigint) FROM ecp.part WHERE run_id = $full"), '<', 4500,
	'the repair landed before the full run reached those ids');
is(EcpTest::wait_for_run($node, $full, 'succeeded', 180), 'succeeded', 'the full run succeeded');
is(progress($full, "processed || '/' || failed || '/' || skipped_stale"), '4980/0/20',
	'the full run counts 20 stale skips, no failure');
cmp_ok($es->doc('versions', '4990')->{amount}, '==', -1, 'the repaired document was not overwritten by the older row');
cmp_ok($es->doc('versions', '10')->{amount}, '==', 15, 'the other documents came from the full run');
like(as_shop("SELECT content::text FROM ecp.flow WHERE run_id = $full AND action = 'finished'"),
	qr/"skipped_stale": 20/, 'the finished row counts the stale skips');

# --- routing and pipeline ------------------------------------------------------------------
my ($st) = $es->request('PUT', '/_ingest/pipeline/tagit',
	{ processors => [ { set => { field => 'via', value => 'pipeline' } } ] });
is($st, 200, 'an ingest pipeline was created in the stand-in');
as_shop(q{SELECT ecp.create_task('routed', 'es', 'routed', query => 'SELECT * FROM orders WHERE id <= 50',
	options => '{"routing_column": "customer", "pipeline": "tagit"}')});
run_task('routed', 'succeeded');
my @bulk = grep { $_->{url} =~ m{^/routed/_bulk} } @{ $es->requests(1000) };
is(scalar(@bulk), 1, 'one bulk request');
like($bulk[0]{url}, qr/[?&]pipeline=tagit(&|$)/, 'the pipeline is in the URL');
like($bulk[0]{body}, qr/\{"index":\{"_id":"7","routing":"c7"\}\}/, 'the routing is in the action line');
my ($gst, $got) = $es->request('GET', '/routed/_doc/7?routing=c7');
is($got->{_routing}, 'c7', 'the document is stored with its routing');
is($got->{_source}{via}, 'pipeline', 'the pipeline ran');
as_shop(q{SELECT ecp.create_task('nopipe', 'es', 'nopipe', query => 'SELECT * FROM orders WHERE id <= 50',
	options => '{"pipeline": "missing"}')});
$run = run_task('nopipe', 'failed');
like(progress($run, 'last_error'), qr/pipeline with id \[missing\] does not exist.*create the ingest pipeline/,
	'an unknown pipeline fails the run with Elasticsearch\'s message and a hint');
is(as_shop("SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run"), 0, 'instead of 50 dead letters');

# --- refresh -------------------------------------------------------------------------------------
as_shop(q{
	SELECT ecp.create_task('fresh', 'es', 'fresh', query => 'SELECT * FROM orders WHERE id <= 500',
	       options => '{"refresh": true}');
	SELECT ecp.create_task('unrefreshed', 'es', 'unrefreshed', query => 'SELECT * FROM orders WHERE id <= 500',
	       options => '{"count_check": false}');
});
$run = run_task('fresh', 'succeeded');
is($es->count('fresh'), 500, 'refresh: all 500 documents are searchable when the run is done');
ok(as_shop("SELECT count(*) = 1 FROM ecp.flow WHERE run_id = $run AND action = 'refreshed'"), 'the flow says so');
run_task('unrefreshed', 'succeeded');
is($es->count('unrefreshed'), 0, 'without it (and without the count check, which refreshes) they are not (this stand-in has no periodic refresh)');

# --- aliases ---------------------------------------------------------------------------------------
$es->request('PUT', "/$_") for qw(shop-v1 multi-a multi-b both-a both-b);
$es->request('POST', '/_aliases', { actions => [
	{ add => { index => 'shop-v1', alias => 'shop' } },
	{ add => { index => 'multi-a', alias => 'multi' } },
	{ add => { index => 'multi-b', alias => 'multi' } },
	{ add => { index => 'both-a', alias => 'both' } },
	{ add => { index => 'both-b', alias => 'both', is_write_index => JSON::PP::true } } ] });
as_shop(q{
	SELECT ecp.create_task('via_alias', 'es', 'shop', query => 'SELECT * FROM orders WHERE id <= 100');
	SELECT ecp.create_task('via_write', 'es', 'both', query => 'SELECT * FROM orders WHERE id <= 100');
	SELECT ecp.create_task('via_multi', 'es', 'multi', query => 'SELECT * FROM orders WHERE id <= 100');
});
run_task('via_alias', 'succeeded');
$es->refresh('shop-v1');
is($es->count('shop-v1'), 100, 'an alias of one index: the documents are in that index');
run_task('via_write', 'succeeded');
$es->refresh('both-b');
is($es->count('both-b'), 100, 'an alias with a write index: the documents are in the write index');
$run = run_task('via_multi', 'failed');
like(progress($run, 'last_error'), qr/no write index is defined for alias \[multi\].*give the alias a write index/,
	'an alias without a write index fails the run with Elasticsearch\'s message and a hint');

$es->stop;
done_testing();
