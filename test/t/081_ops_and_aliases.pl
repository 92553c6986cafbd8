# The ops against documents that already exist, and writing through an
# alias:
# - op create: a 409 for each existing document goes to ecp.failed_docs
#   (status 409, version_conflict_engine_exception), the existing ones
#   stay as they were, the others are created, the run succeeds;
# - op update: the row is merged into the existing document (fields not
#   in the row stay), new ids are upserted;
# - op delete: existing documents are deleted, the index count drops by
#   exactly the rows deleted; ids already gone count as done, but a
#   delete into an index that does not exist fails the run;
# - index = an alias with a write index: the documents land in the write
#   index, none in the alias's other index, and no index named like the
#   alias is created.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('documents written before the run through the bulk API, aliases');
my $node = EcpTest::new_node('ops');
my $es = EsdServer->start();
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");

sub run_task
{
	my ($name, $index, $query, $options, $want) = @_;
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$name', 'esd', '$index', query => \$q\$$query\$q\$, options => '$options')");
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	is(EcpTest::wait_for_run($node, $run, $want // 'succeeded'), $want // 'succeeded', "run of $name: " . ($want // 'succeeded'));
	return $run;
}

# Documents written directly, before the run: id => source.
sub seed
{
	my ($index, %docs) = @_;
	my $ndjson = join('', map { encode_json({ index => { _id => "$_" } }) . "\n" . encode_json($docs{$_}) . "\n" }
		sort { $a <=> $b } keys %docs);
	my ($st, $body) = $es->bulk($ndjson, index => $index, refresh => 'true');
	die "seeding $index failed: $st" unless $st == 200 && !$body->{errors};
	is($es->count($index), scalar(keys %docs), "$index holds the " . scalar(keys %docs) . ' seeded documents');
}

sub progress
{
	my ($run) = @_;
	return $node->safe_psql('postgres', "SELECT processed || ' ' || failed FROM ecp.progress WHERE run_id = $run");
}

# --- op create over existing documents -----------------------------------------
seed('conflict', map { ($_ => { id => $_, origin => 'seeded' }) } 1 .. 10);
my $run = run_task('create', 'conflict',
	q{SELECT g AS id, 'ecp' AS origin FROM generate_series(1, 30) g}, '{"op": "create", "batch_size": 7}');
is(progress($run), '20 10', 'op create: 20 created, 10 failed');
is($node->safe_psql('postgres',
		"SELECT string_agg(doc_id, ',' ORDER BY doc_id::int) FROM ecp.failed_docs WHERE run_id = $run"),
	'1,2,3,4,5,6,7,8,9,10', 'failed_docs names exactly the existing ids');
is($node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT status || ' ' || error_type, ',') FROM ecp.failed_docs WHERE run_id = $run"),
	'409 version_conflict_engine_exception', 'each with status 409 and the conflict error type');
like($node->safe_psql('postgres', "SELECT reason FROM ecp.failed_docs WHERE run_id = $run AND doc_id = '4'"),
	qr/\[4\].*(version conflict|document already exists)/, 'and the reason ES gives');
$es->refresh('conflict');
is($es->count('conflict'), 30, 'the index holds 30 documents');
is($es->doc('conflict', '4')->{origin}, 'seeded', 'an existing document is left as it was');
is($es->doc('conflict', '11')->{origin}, 'ecp', 'a new one is created from the row');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = 'retry'"), '0',
	'a 409 is not retried');

# --- op update merges into existing documents ---------------------------------------
seed('merge', map { ($_ => { id => $_, keep => "k$_", n => 0 }) } 1 .. 10);
$run = run_task('update', 'merge',
	q{SELECT g AS id, g * 10 AS n, 'u' || g AS extra FROM generate_series(1, 15) g}, '{"op": "update", "batch_size": 4}');
is(progress($run), '15 0', 'op update: 15 processed, none failed');
$es->refresh('merge');
is($es->count('merge'), 15, '10 updated and 5 upserted: 15 documents');
is_deeply($es->doc('merge', '3'), { id => 3, keep => 'k3', n => 30, extra => 'u3' },
	'an existing document keeps the fields the row does not have, and gets the row\'s');
is_deeply($es->doc('merge', '12'), { id => 12, n => 120, extra => 'u12' }, 'a new id is upserted from the row alone');
is(scalar(grep { ($es->doc('merge', $_)->{keep} // '') eq "k$_" } 1 .. 10), 10, 'every seeded field survived');

# --- op delete of existing documents --------------------------------------------------
seed('gone', map { ($_ => { id => $_ }) } 1 .. 50);
$run = run_task('delete', 'gone', q{SELECT g AS id FROM generate_series(2, 40, 3) g}, '{"op": "delete", "batch_size": 5}');
is(progress($run), '13 0', 'op delete: the 13 rows processed, none failed');
$es->refresh('gone');
is($es->count('gone'), 50 - 13, 'the index count dropped by exactly 13');
is(scalar(grep { defined $es->doc('gone', $_) } map { 2 + 3 * $_ } 0 .. 12), 0, 'every deleted id is gone');
is(scalar(grep { defined $es->doc('gone', $_) } grep { ($_ - 2) % 3 || $_ > 40 } 1 .. 50), 37, 'every other id is still there');

# deleting ids of which some are already gone: 404 not_found counts as done
$run = run_task('delete_again', 'gone', q{SELECT g AS id FROM generate_series(1, 5) g}, '{"op": "delete"}');
is(progress($run), '5 0', 'op delete: ids already gone count as done, not failed');
$es->refresh('gone');
is($es->count('gone'), 37 - 3, 'only the 3 that still existed were deleted (1, 3, 4)');

# deleting from an index that does not exist: Elasticsearch never creates an
# index for a delete, and answers each item 404 index_not_found_exception;
# README ("Failures and recovery") calls a missing index, "for the request
# or its items", a configuration failure that fails the run.
$run = run_task('delete_nowhere', 'nosuch', q{SELECT g AS id FROM generate_series(1, 5) g}, '{"op": "delete"}', 'failed');
like($node->safe_psql('postgres', "SELECT coalesce(last_error, '') FROM ecp.progress WHERE run_id = $run"),
	qr/index "nosuch" does not exist/, 'op delete into a missing index fails the run, naming the index');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run"), '0',
	'... with nothing in failed_docs');

# --- writing through an alias -----------------------------------------------------------
my ($st) = $es->put('/books-v1', {});
is($st, 200, 'index books-v1 created');
($st) = $es->put('/books-v2', {});
is($st, 200, 'index books-v2 created');
($st) = $es->post('/_aliases', { actions => [
	{ add => { index => 'books-v1', alias => 'books', is_write_index => JSON::PP::false } },
	{ add => { index => 'books-v2', alias => 'books', is_write_index => JSON::PP::true } } ] });
is($st, 200, 'alias books over both, books-v2 the write index');
$run = run_task('books', 'books', q{SELECT g AS id, 'title ' || g AS title FROM generate_series(1, 250) g}, '{"batch_size": 100}');
is(progress($run), '250 0', 'alias: 250 processed');
is($node->safe_psql('postgres', "SELECT index FROM ecp.tasks WHERE name = 'books'"), 'books', 'the task names the alias');
$es->refresh('books');
is($es->count('books-v2'), 250, 'every document landed in the write index');
is($es->count('books-v1'), 0, 'none in the other index of the alias');
is($es->count('books'), 250, 'reading through the alias finds them');
my ($gst, $indices) = $es->get('/_alias/books');
is(join(',', sort keys %{ $indices || {} }), 'books-v1,books-v2', 'books is still an alias over the two indices, not a new index');
is(scalar(grep { ($_->{url} // '') =~ m{^/books/_bulk} } @{ $es->requests(200) }), 3,
	'the requests went to /books/_bulk (3 pages of 100)');

$es->stop;
$node->stop;
done_testing();
