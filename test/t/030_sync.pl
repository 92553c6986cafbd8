# The sync engine end to end: every type that matters arrives exactly as
# to_jsonb(row) with _id = key; refused documents go to failed_docs; a
# non-superuser runs its own task as itself.  Uses only the standard ES API,
# so it also runs against a real cluster (ECP_ES_URL).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(sleep);
use EcpTest;
use EsdServer;

my $node = EcpTest::new_node('sync');
my $es = EsdServer->start();
my $url = $es->url;
my $json = JSON::PP->new->utf8->allow_bignum->canonical;

# All documents of an index, re-encoded exactly (allow_bignum keeps every
# digit), as COPY text lines "id\tjson".
sub index_as_copy_lines
{
	my ($index, $sort_field) = @_;
	$es->refresh($index);
	my ($lines, $after) = ('', undef);
	for (;;)
	{
		my $query = { size => 10000, sort => [ { $sort_field => 'asc' } ],
			query => { match_all => {} },
			(defined $after ? (search_after => $after) : ()) };
		my $res = HTTP::Tiny->new->post("$url/$index/_search",
			{ headers => { 'Content-Type' => 'application/json' }, content => encode_json($query) });
		die "search failed: $res->{status} $res->{content}" unless $res->{success};
		my $hits = $json->decode($res->{content})->{hits}{hits};
		last unless @$hits;
		for my $hit (@$hits)
		{
			my $doc = $json->encode($hit->{_source});
			$doc =~ s/\\/\\\\/g;
			$lines .= "$hit->{_id}\t$doc\n";
		}
		$after = $hits->[-1]{sort};
	}
	return $lines;
}

sub load_index_into
{
	my ($table, $index, $sort_field) = @_;
	my $lines = index_as_copy_lines($index, $sort_field);
	$node->safe_psql('postgres',
		"DROP TABLE IF EXISTS $table; CREATE TABLE $table (id text, doc jsonb);\n"
		  . "COPY $table FROM STDIN;\n$lines\\.\n");
}

# --- every type that matters, 100,000 rows ----------------------------------
$node->safe_psql('postgres', q{
CREATE TABLE typed (
    id bigint PRIMARY KEY,
    amount numeric(38,10),
    big numeric,
    ratio double precision,
    created timestamptz,
    day date,
    note text,
    tags text[],
    counts int[],
    attrs jsonb,
    flag boolean,
    uid uuid,
    missing text
);
INSERT INTO typed
SELECT g,
       (g * 1234567.0123456789)::numeric(38,10),
       ('123456789012345678901234567890.' || g)::numeric,
       g / 7.0::float8,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
       date '2020-01-01' + (g % 1000),
       CASE g % 5
         WHEN 0 THEN 'quote " and backslash \ here'
         WHEN 1 THEN E'line one\nline two\ttabbed'
         WHEN 2 THEN 'unicode: Grüße, 東京, emoji 🚀'
         WHEN 3 THEN ''
         ELSE NULL END,
       ARRAY['a' || g, 'b"' || g],
       ARRAY[g, g + 1, NULL],
       jsonb_build_object('k', g, 'nested', jsonb_build_object('deep', ARRAY[1, 2]), 'null', NULL),
       g % 2 = 0,
       md5(g::text)::uuid,
       NULL
  FROM generate_series(1, 100000) g;
ANALYZE typed;
});
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '$url')");
$node->safe_psql('postgres',
	"SELECT ecp.create_task('typed', 'esd', 'typed', query => 'SELECT * FROM typed', "
	  . "options => '{\"batch_size\": 5000}')");
my $run = $node->safe_psql('postgres', "SELECT ecp.start('typed')");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'the typed run succeeds');
is($node->safe_psql('postgres',
		"SELECT processed || ' ' || failed || ' ' || percent FROM ecp.progress WHERE run_id = $run"),
	'100000 0 100.0', 'progress: 100,000 processed, none failed, 100%');
is($node->safe_psql('postgres', "SELECT total > 0 AND finished_at >= started_at FROM ecp.progress WHERE run_id = $run"),
	't', 'progress has a total and timings');
$es->refresh('typed');
is($es->count('typed'), 100000, 'the stand-in holds 100,000 documents');

load_index_into('es_typed', 'typed', 'id');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM typed t FULL JOIN es_typed e ON e.id = t.id::text
	 WHERE e.doc IS DISTINCT FROM to_jsonb(t)}), '0',
	'every document equals to_jsonb(row), with _id = id')
  or diag($node->safe_psql('postgres', q{
	SELECT t.id, e.doc, to_jsonb(t) FROM typed t FULL JOIN es_typed e ON e.id = t.id::text
	 WHERE e.doc IS DISTINCT FROM to_jsonb(t) LIMIT 2}));
is($node->safe_psql('postgres', q{
	SELECT e.doc->>'note' FROM es_typed e WHERE e.id = '2'}),
	'unicode: Grüße, 東京, emoji 🚀', 'unicode survives');
is($node->safe_psql('postgres', q{SELECT e.doc->>'big' FROM es_typed e WHERE e.id = '42'}),
	'123456789012345678901234567890.42', 'numeric precision survives');

# --- the types a document can hold, beyond the table above -------------------
# A document is the JSON value of the row: what row_to_json writes equals
# to_jsonb(row) as JSON for every type (only the text differs).
$node->safe_psql('postgres', q{
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TYPE address AS (street text, zip int, tags text[]);
CREATE TABLE exotic (
    id int PRIMARY KEY,
    j json,
    jb jsonb,
    n numeric,
    f double precision,
    r real,
    raw bytea,
    addr address,
    feeling mood,
    score positive,
    span interval,
    at time,
    net inet,
    grid int[][],
    ts timestamp,
    tstz timestamptz
);
INSERT INTO exotic VALUES
 (1, '{"a": [1, 2.50, "x"], "b": {"c": null}}', '{"z": 1, "a": [true]}', 'NaN', 'Infinity', '-Infinity',
  '\x00ff10', ROW('Main St. "7"', 12345, ARRAY['a', NULL]), 'happy', 7, '1 day 02:03:04.5', '23:59:59.999999',
  '10.1.2.3/8', '{{1,2},{3,4}}', '2024-02-29 12:00:00.123456', '2024-02-29 12:00:00.123456+05:30'),
 (2, '[1, "two", {"three": 3}]', '"just a string"', '-0.000000000000000000001', 'NaN', '1e-45',
  '', NULL, 'sad', 1, '-3 months', '00:00', '::1', '{}', '-infinity', 'infinity'),
 (3, 'null', 'null', '123456789012345678901234567890.123456789', '-Infinity', '3.4e38',
  '\x5c22', ROW(E'tab\there', NULL, '{}'), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT ecp.create_task('exotic', 'esd', 'exotic', query => 'SELECT * FROM exotic');
});
# values of one field change type from row to row (a date, then
# "infinity"), which a dynamic mapping would refuse: the index stores the
# documents without mapping their fields
$es->put('/exotic', { mappings => { dynamic => JSON::PP::false, properties => { id => { type => 'integer' } } } });
$run = $node->safe_psql('postgres', "SELECT ecp.start('exotic')");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'the run over json, NaN, Infinity, bytea, composite, enum, domain, ... succeeds');
is($node->safe_psql('postgres', "SELECT processed || ' ' || failed FROM ecp.progress WHERE run_id = $run"), '3 0',
	'all 3 rows indexed');
is($node->safe_psql('postgres', "SELECT count(*) FROM exotic WHERE row_to_json(exotic)::jsonb IS DISTINCT FROM to_jsonb(exotic)"),
	'0', 'row_to_json and to_jsonb give equal JSON values for every row');
load_index_into('es_exotic', 'exotic', 'id');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM exotic t FULL JOIN es_exotic e ON e.id = t.id::text
	 WHERE e.doc IS DISTINCT FROM to_jsonb(t)}), '0',
	'every document equals to_jsonb(row): NaN and Infinity as strings, bytea as \\x hex, a composite as an object, enum and domain as their values')
  or diag($node->safe_psql('postgres', q{
	SELECT t.id, e.doc, to_jsonb(t) FROM exotic t FULL JOIN es_exotic e ON e.id = t.id::text
	 WHERE e.doc IS DISTINCT FROM to_jsonb(t)}));
is($node->safe_psql('postgres', q{SELECT e.doc->>'f' || ' ' || (e.doc->'addr'->>'zip') || ' ' || (e.doc->>'raw') FROM es_exotic e WHERE e.id = '1'}),
	'Infinity 12345 \x00ff10', 'spot check: Infinity, a composite member, bytea');

# --- documents the sink refuses go to failed_docs; the run goes on ---------
$es->put('/poisoned', { mappings => { properties => { amount => { type => 'long' } } } });
$node->safe_psql('postgres',
	"CREATE TABLE poison_src AS SELECT g AS id, CASE WHEN g % 100 = 0 THEN 'cheap' END AS amount FROM generate_series(1, 1000) g");
$node->safe_psql('postgres',
	"SELECT ecp.create_task('poisoned', 'esd', 'poisoned', query => 'SELECT * FROM poison_src', "
	  . "options => '{\"batch_size\": 300}')");
$run = $node->safe_psql('postgres', "SELECT ecp.start('poisoned')");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'a run with refused documents succeeds');
is($node->safe_psql('postgres', "SELECT processed || ' ' || failed FROM ecp.progress WHERE run_id = $run"),
	'990 10', 'progress counts 990 processed and 10 failed');
is($node->safe_psql('postgres', "SELECT string_agg(doc_id, ',' ORDER BY doc_id::int) FROM ecp.failed_docs WHERE run_id = $run"),
	'100,200,300,400,500,600,700,800,900,1000', 'failed_docs names each refused id');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run AND status = 400 "
		  . "AND error_type ~ '(document|mapper)_parsing_exception' AND reason LIKE '%amount%'"),
	'10', 'with status, error type and a reason naming the field');
$es->refresh('poisoned');
is($es->count('poisoned'), 990, 'every other document is indexed');

# after fixing the data, ecp.retry_failed sends just the failed ids again
$node->safe_psql('postgres', "UPDATE poison_src SET amount = NULL WHERE amount = 'cheap'");
my $retry = $node->safe_psql('postgres', "SELECT ecp.retry_failed($run)");
is(EcpTest::wait_for_run($node, $retry, 'succeeded'), 'succeeded', 'ecp.retry_failed runs over the failed ids');
is($node->safe_psql('postgres', "SELECT processed || ' ' || failed || ' ' || total FROM ecp.progress WHERE run_id = $retry"),
	'10 0 10', 'exactly the 10 failed documents, now accepted');
is($node->safe_psql('postgres', "SELECT content->>'retry_failed_of' FROM ecp.flow WHERE run_id = $retry AND action = 'start'"),
	$run, 'the flow links the retry to its run');
$es->refresh('poisoned');
is($es->count('poisoned'), 1000, 'the index is complete');
my (undef, undef, $retry_err) = $node->psql('postgres', "SELECT ecp.retry_failed($retry)");
like($retry_err, qr/run $retry has no failed documents with an id to retry/, 'nothing to retry is an error');

# --- a non-superuser runs its own task, as itself -----------------------------
$node->safe_psql('postgres', q{
CREATE ROLE bob LOGIN;
CREATE TABLE bob_items (id int PRIMARY KEY, label text);
INSERT INTO bob_items SELECT g, 'b' || g FROM generate_series(1, 500) g;
GRANT SELECT ON bob_items TO bob;
CREATE TABLE secret_items (id int PRIMARY KEY);
});
my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE bob; SELECT ecp.create_consumer('bob_es', '$url');"
	  . " SELECT ecp.create_task('bob', 'bob_es', 'bob', query => 'SELECT id, label, current_user AS synced_by FROM bob_items', options => '{\"exact_total\": true}');"
	  . " SELECT ecp.start('bob');");
is($ret, 0, 'bob creates and starts his task') or diag $err;
my $bob_run = (split /\n/, $out)[-1];
is(EcpTest::wait_for_run($node, $bob_run, 'succeeded'), 'succeeded', "bob's run succeeds");
is($es->doc('bob', '7')->{synced_by}, 'bob', 'the worker read the source as bob, not as a superuser');
is($node->safe_psql('postgres', "SELECT total || ' ' || total_is_estimate FROM ecp.run WHERE id = $bob_run"),
	'500 false', 'exact_total counts the rows exactly');
is($node->safe_psql('postgres', "SET ROLE bob; SELECT count(*) FROM ecp.progress"), '1',
	'bob sees only his own run');
is($node->safe_psql('postgres', "SET ROLE bob; SELECT count(*) FROM ecp.flow WHERE run_id <> $bob_run"), '0',
	"bob sees no flow of others' runs");
is($node->safe_psql('postgres', "SELECT operator FROM ecp.flow WHERE run_id = $bob_run AND action = 'finished'"),
	'bob', 'the flow names bob as operator of his run');
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE bob; SELECT ecp.create_task('bob2', 'bob_es', 'x', query => 'SELECT * FROM secret_items')");
isnt($ret, 0, 'bob cannot sync a table he cannot read');
like($err, qr/permission denied for table secret_items/, '... permission denied');

$es->stop;
$node->stop;
done_testing();
