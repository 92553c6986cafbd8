# Parts: a run is a set of parts that run in parallel, each with its own
# checkpoint.  Over local tables:
#  * a query task with parallelism 2 is cut into key ranges by its first
#    worker; the ranges cover every key exactly once, also sparse and
#    negative keys and the extremes of bigint; at most 2 parts run at once;
#  * a task of queries (one per "shard" table, built with format() and
#    generate_series) runs one part per query; ecp.parts shows them;
#  * two runs waiting for the same 2 worker slots take turns: neither
#    holds both slots while the other has parts waiting;
#  * a part that fails fails the run; the other parts keep their
#    checkpoints and ecp.resume finishes all of them;
#  * the id source: ecp.start(task, ids => ...) looks ids up through the
#    task's query; with delete_missing an id the query does not return
#    (deleted, or never there) is deleted in the index, without it the id
#    is counted as missing; 100,000 ids go in batches.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('bulk item counts');
my $node = EcpTest::new_node('parts',
	# one role's runs here, and the test counts its two workers: no per-role cap
	conf => [ 'ecp.max_workers = 2', 'ecp.heartbeat_interval = 1', 'ecp.max_workers_per_role = 0' ]);
my $es = EsdServer->start();
my $url = $es->url;
$node->safe_psql('postgres', qq{
-- sparse and negative keys: -699993 .. 700000, 7 apart
CREATE TABLE big (id bigint PRIMARY KEY, payload text);
INSERT INTO big SELECT (g - 100000) * 7, 'p' || g FROM generate_series(1, 200000) g;
CREATE TABLE edge (id bigint PRIMARY KEY);
ANALYZE big;
INSERT INTO edge VALUES (-9223372036854775808), (-5), (0), (3), (9223372036854775807);
SELECT ecp.create_consumer('es', '$url');
});

sub bulk_items { return $es->stats->{bulk_items} }

sub run_task
{
	my ($task, $timeout) = @_;
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$task')");
	my $state = EcpTest::wait_for_run($node, $run, 'succeeded', $timeout // 240);
	return ($run, $state);
}

# The most parts of a run that ever ran at once (from their start and end).
sub max_overlap
{
	my ($run) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT max((SELECT count(*) FROM ecp.part y
		             WHERE y.run_id = x.run_id AND y.started_at <= x.started_at
		               AND x.started_at < y.finished_at))
		  FROM ecp.part x WHERE x.run_id = $run});
}

# --- key ranges ----------------------------------------------------------------
$node->safe_psql('postgres', q{
	SELECT ecp.create_task('ranges', 'es', 'ranges', query => 'SELECT * FROM big',
	                       options => '{"parallelism": 2, "batch_size": 1000}')});
my $items_before = bulk_items();
my ($run, $state) = run_task('ranges');
is($state, 'succeeded', 'a query task with parallelism 2 succeeds');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.parts WHERE run_id = $run"), '8',
	'its first worker cut it into 4 ranges per allowed worker: 8 parts');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.parts WHERE run_id = $run AND state = 'done'"), '8',
	'every range is done');
is($node->safe_psql('postgres', "SELECT sum(processed) FROM ecp.parts WHERE run_id = $run"), '200000',
	'the ranges processed 200,000 rows together');
$es->refresh('ranges');
is($es->count('ranges'), 200000, 'every key is in the index');
is(bulk_items() - $items_before, 200000, 'and was sent exactly once: no gap, no overlap at the edges');
like($node->safe_psql('postgres', "SELECT string_agg(source, ' | ' ORDER BY part) FROM ecp.parts WHERE run_id = $run"),
	qr/^id in \[-inf, -?\d+\) \| id in \[-?\d+, -?\d+\) .* \| id in \[-?\d+, \+inf\)$/,
	'ecp.parts shows each range: the first open below, the last open above');
is($node->safe_psql('postgres', "SELECT content->>'ranges' FROM ecp.flow WHERE run_id = $run AND action = 'split'"),
	'8', 'the flow records the split');
cmp_ok(max_overlap($run), '<=', 2, 'at most parallelism (2) parts ran at once');
my ($processed, $total) = split /\|/, $node->safe_psql('postgres', "SELECT processed, total FROM ecp.progress WHERE run_id = $run");
is($processed, 200000, 'ecp.progress sums the parts');
cmp_ok(abs($total - 200000), '<', 20000, "its total (the planner's estimate of the whole query: $total) covers the whole run");

$node->safe_psql('postgres', q{
	SELECT ecp.create_task('edge', 'es', 'edge', query => 'SELECT * FROM edge',
	                       options => '{"parallelism": 3, "batch_size": 2}')});
$items_before = bulk_items();
($run, $state) = run_task('edge');
is($state, 'succeeded', 'keys at both ends of bigint: the run succeeds');
$es->refresh('edge');
is($es->count('edge'), 5, 'all 5 keys, the smallest and largest bigint too');
is(bulk_items() - $items_before, 5, 'each sent once');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.parts WHERE run_id = $run"), '12',
	'4 ranges per allowed worker');

# --- queries: one part per shard table -------------------------------------------
$node->safe_psql('postgres', q{
	DO $$ BEGIN
	  FOR i IN 0 .. 3 LOOP
	    EXECUTE format('CREATE TABLE shard_%s (id bigint PRIMARY KEY, amount numeric)', i);
	    EXECUTE format('INSERT INTO shard_%s SELECT g, g / 10.0 FROM generate_series(1, 20000) g WHERE g %% 4 = %s', i, i);
	  END LOOP;
	END $$;
	SELECT ecp.create_task('shards', 'es', 'shards',
	         queries => (SELECT array_agg(format('SELECT * FROM shard_%s', i) ORDER BY i)
	                       FROM generate_series(0, 3) i),
	         options => '{"parallelism": 2, "batch_size": 500}')});
$items_before = bulk_items();
($run, $state) = run_task('shards');
is($state, 'succeeded', 'a task of 4 queries succeeds');
is($node->safe_psql('postgres', "SELECT string_agg(part || ':' || source || ':' || state || ':' || processed, ',' ORDER BY part) FROM ecp.parts WHERE run_id = $run"),
	join(',', map { "$_:SELECT * FROM shard_$_:done:5000" } 0 .. 3),
	'ecp.parts: one part per query, each done with its table\'s rows');
$es->refresh('shards');
is($es->count('shards'), 20000, 'every row of every shard is in the index');
is(bulk_items() - $items_before, 20000, 'each sent once');
cmp_ok(max_overlap($run), '<=', 2, 'at most 2 of the 4 parts ran at once');

my ($ret, $out, $err) = $node->psql('postgres', q{
	SELECT ecp.create_task('bad', 'es', 'bad',
	         queries => ARRAY['SELECT * FROM shard_0', 'SELECT * FROM shard_1', 'SELECT * FROM nowhere'])});
like($err, qr/queries\[3\] of task "bad": relation "nowhere" does not exist/,
	'a bad query of queries is named by its place in the array');

# ids over a task of queries: looked up in every query (issue 23; 095
# does it over mysql_fdw)
$run = $node->safe_psql('postgres', "SELECT ecp.start('shards', ids => ARRAY['1', '2', '20000', '20001'])");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'an id run over a task of queries succeeds');
is($node->safe_psql('postgres', "SELECT processed || ' ' || missing FROM ecp.progress WHERE run_id = $run"),
	'3 1', 'the ids of 3 shards are sent; the one no shard holds is missing');

# --- two runs share the 2 slots ----------------------------------------------------
$node->safe_psql('postgres', q{
	SELECT ecp.create_task('fair_' || t, 'es', 'fair_' || t,
	         queries => (SELECT array_agg(format('SELECT * FROM shard_%s', i) ORDER BY i) FROM generate_series(0, 3) i),
	         options => '{"parallelism": 4, "batch_size": 250}')
	  FROM unnest(ARRAY['a', 'b']) t});
my $runs = $node->safe_psql('postgres', q{
	BEGIN; SELECT ecp.start('fair_a') || ',' || ecp.start('fair_b'); COMMIT;});
my ($run_a, $run_b) = split /,/, $runs;
is(EcpTest::wait_for_run($node, $run_a, 'succeeded', 240), 'succeeded', 'run A succeeds');
is(EcpTest::wait_for_run($node, $run_b, 'succeeded', 240), 'succeeded', 'run B succeeds');
is($node->safe_psql('postgres', qq{
	WITH p AS (SELECT run_id, started_at, finished_at FROM ecp.part WHERE run_id IN ($run_a, $run_b))
	SELECT count(*) FROM p x
	 WHERE x.started_at < (SELECT max(started_at) FROM p z WHERE z.run_id <> x.run_id)
	   AND EXISTS (SELECT 1 FROM p y WHERE y.run_id = x.run_id AND y.started_at < x.started_at
	                                   AND x.started_at < y.finished_at)}),
	'0', 'while the other run had parts waiting, no run held both slots: their parts alternate');
is($node->safe_psql('postgres', qq{
	SELECT count(DISTINCT run_id) FROM (SELECT run_id FROM ecp.part WHERE run_id IN ($run_a, $run_b)
	                                     ORDER BY started_at LIMIT 2) first_two}),
	'2', 'the first two parts started were one of each run');

# --- a failing part fails the run; resume finishes every part -----------------------
$node->safe_psql('postgres', q{
	CREATE TABLE gate (closed boolean);
	INSERT INTO gate VALUES (true);
	CREATE FUNCTION gate_check(id bigint) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
	BEGIN
	    IF id > 8000 AND (SELECT closed FROM gate) THEN
	        RAISE EXCEPTION 'gate closed at id %', id;
	    END IF;
	    RETURN id;
	END $$;
	SELECT ecp.create_task('gated', 'es', 'gated',
	         queries => ARRAY['SELECT * FROM shard_0', 'SELECT id, gate_check(id) AS checked, amount FROM shard_1',
	                          'SELECT * FROM shard_2', 'SELECT * FROM shard_3'],
	         options => '{"parallelism": 2, "batch_size": 500}')});
$run = $node->safe_psql('postgres', "SELECT ecp.start('gated')");
is(EcpTest::wait_for_run($node, $run, 'failed', 240), 'failed', 'a part whose query fails fails the run');
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM ecp.part WHERE run_id = $run AND state = 'running'", 60),
	'the other parts stop');
is($node->safe_psql('postgres', "SELECT state || ':' || (last_error LIKE '%gate closed at id%') FROM ecp.parts WHERE run_id = $run AND part = 1"),
	'failed:true', 'ecp.parts says which part failed and why');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/gate closed/, 'so does the run');
my $kept = $node->safe_psql('postgres', "SELECT string_agg(part || ':' || coalesce(last_key, '-'), ',' ORDER BY part) FROM ecp.parts WHERE run_id = $run");
like($kept, qr/^0:\d+,1:\d+,/, 'the parts keep their checkpoints: ' . $kept);
$node->safe_psql('postgres', "UPDATE gate SET closed = false; SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 240), 'succeeded', 'ecp.resume finishes the run');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.parts WHERE run_id = $run AND state = 'done'"), '4',
	'every part is done');
$es->refresh('gated');
is($es->count('gated'), 20000, 'every row is in the index');
my @had_checkpoint = map { (split /:/)[0] } grep { /:\d+$/ } split /,/, $kept;
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action IN ('worker started', 'recovered')
	   AND content->>'resume_after_key' IS NULL
	   AND (content->>'part')::int IN (} . join(',', @had_checkpoint) . qq{)
	   AND at > (SELECT max(at) FROM ecp.flow WHERE run_id = $run AND action = 'resume')}),
	'0', 'after the resume, no part that had a checkpoint started over from the beginning');

# --- the id source ------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE items (id int PRIMARY KEY, name text);
	INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 10) g;
	SELECT ecp.create_task('items', 'es', 'items', query => 'SELECT * FROM items',
	                       options => '{"delete_missing": true}');
	SELECT ecp.create_task('items_keep', 'es', 'items', query => 'SELECT * FROM items');});
($run, $state) = run_task('items');
is($state, 'succeeded', 'the whole items task ran');
$es->refresh('items');
is($es->count('items'), 10, 'ten items indexed');
$node->safe_psql('postgres', "UPDATE items SET name = 'renamed' WHERE id = 1; DELETE FROM items WHERE id = 2;");
my $t0 = time;
$run = $node->safe_psql('postgres', "SELECT ecp.start('items', ids => ARRAY['1', '2', '999'])");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 60), 'succeeded', 'a run over 3 ids succeeds');
note(sprintf('the run over 3 ids took %.2f s', time - $t0));
$es->refresh('items');
is($es->doc('items', '1')->{name}, 'renamed', 'id 1 was indexed again from the query');
ok(!defined $es->doc('items', '2'), 'id 2, deleted in the source, was deleted in the index (delete_missing)');
is($es->count('items'), 9, 'nothing else changed');
is($node->safe_psql('postgres', "SELECT processed || ':' || deleted || ':' || missing || ':' || failed || ':' || total FROM ecp.progress WHERE run_id = $run"),
	'1:2:0:0:3', 'counted: 1 indexed, 2 deleted (id 999 never existed: a delete of nothing), 0 failed, total 3');
is($node->safe_psql('postgres', "SELECT content->>'deleted' FROM ecp.flow WHERE run_id = $run AND action = 'finished'"),
	'2', 'the flow says how many were deleted');
is($node->safe_psql('postgres', "SELECT source FROM ecp.parts WHERE run_id = $run"), '3 ids', 'ecp.parts: the run reads 3 ids');

$run = $node->safe_psql('postgres', "SELECT ecp.start('items_keep', ids => ARRAY['3', '998', 'not a number'])");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 60), 'succeeded', 'without delete_missing, a run over ids succeeds');
is($node->safe_psql('postgres', "SELECT processed || ':' || deleted || ':' || missing FROM ecp.progress WHERE run_id = $run"),
	'1:0:2', 'ids the query does not return (or cannot, as the id column is an integer) are counted as missing, not errors');
$es->refresh('items');
is($es->count('items'), 9, 'and nothing is deleted');

$node->safe_psql('postgres', q{
	SELECT ecp.create_task('many_ids', 'es', 'many_ids', query => 'SELECT * FROM big',
	                       options => '{"batch_size": 5000}')});
$run = $node->safe_psql('postgres',
	"SELECT ecp.start('many_ids', ids => (SELECT array_agg(((g - 100000) * 7)::text) FROM generate_series(1, 200000, 2) g))");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 240), 'succeeded', 'a run over 100,000 ids succeeds');
is($node->safe_psql('postgres', "SELECT processed || ':' || missing || ':' || percent FROM ecp.progress WHERE run_id = $run"),
	'100000:0:100.0', 'all 100,000 found, in batches');
is($node->safe_psql('postgres', "SELECT last_key FROM ecp.parts WHERE run_id = $run"), '100000 ids done',
	'the checkpoint of an id part is the number of ids done');
$es->refresh('many_ids');
is($es->count('many_ids'), 100000, 'the index holds the 100,000 documents');

done_testing();
