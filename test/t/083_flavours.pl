# ecp against the stand-in's es7 and opensearch flavours (esd --flavor),
# a compact version of 030's core (GET / tells ecp which product it is,
# and the flow names it): 5,000 rows of varied types arrive as
# to_jsonb(row) with _id = id, every one and nothing else; requests are
# application/x-ndjson with _id in the action line and no _type (which
# OpenSearch and ES 8 refuse); a document the mapping refuses goes to
# failed_docs with that flavour's error type (mapper_parsing_exception).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('the es7 and opensearch flavours');
my $node = EcpTest::new_node('flavours');
my $json = JSON::PP->new->utf8->allow_bignum->canonical;

$node->safe_psql('postgres', q{
CREATE TABLE typed (
    id bigint PRIMARY KEY,
    amount numeric(38,10),
    big numeric,
    ratio double precision,
    created timestamptz,
    note text,
    tags text[],
    attrs jsonb,
    flag boolean,
    missing text
);
INSERT INTO typed
SELECT g,
       (g * 1234567.0123456789)::numeric(38,10),
       ('123456789012345678901234567890.' || g)::numeric,
       g / 7.0::float8,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
       CASE g % 4
         WHEN 0 THEN 'quote " and backslash \ here'
         WHEN 1 THEN E'line one\nline two\ttabbed'
         WHEN 2 THEN 'unicode: Grüße, 東京, emoji 🚀'
         ELSE NULL END,
       ARRAY['a' || g, 'b"' || g],
       jsonb_build_object('k', g, 'nested', jsonb_build_object('deep', ARRAY[1, 2])),
       g % 2 = 0,
       NULL
  FROM generate_series(1, 5000) g;
ANALYZE typed;
CREATE TABLE poison_src AS SELECT g AS id, CASE WHEN g % 50 = 0 THEN 'cheap' END AS amount FROM generate_series(1, 500) g;
ALTER TABLE poison_src ADD PRIMARY KEY (id);
});

for my $case ([ 'es7', sub { $_[0]->{version}{number} eq '7.17.29' }, 'Elasticsearch 7.17.29' ],
	[ 'opensearch', sub { ($_[0]->{version}{distribution} // '') eq 'opensearch' }, 'OpenSearch 2.11.0' ])
{
	my ($flavor, $is_flavor, $product) = @$case;
	my $es = EsdServer->start(flavor => $flavor);
	my $url = $es->url;
	my (undef, $root) = $es->get('/');
	ok($is_flavor->($root), "$flavor: the stand-in answers as $flavor");
	$node->safe_psql('postgres', "SELECT ecp.create_consumer('$flavor', '$url')");

	# --- every row arrives as to_jsonb(row) with _id = id ---------------------------
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('typed_$flavor', '$flavor', 'typed', query => 'SELECT * FROM typed', "
		  . "options => '{\"batch_size\": 1000}')");
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('typed_$flavor')");
	is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', "$flavor: the run succeeds");
	is($node->safe_psql('postgres', "SELECT processed || ' ' || failed || ' ' || percent FROM ecp.progress WHERE run_id = $run"),
		'5000 0 100.0', "$flavor: 5000 processed, none failed, 100%");
	is($node->safe_psql('postgres', "SELECT (content->>'product') || ' ' || (content->>'version') FROM ecp.flow "
		  . "WHERE run_id = $run AND action = 'cluster'"), $product, "$flavor: the flow names the product: $product");
	$es->refresh('typed');
	is($es->count('typed'), 5000, "$flavor: the index holds 5000 documents");

	# decoded with allow_bignum, which keeps every digit
	my $res = HTTP::Tiny->new->post("$url/typed/_search", { headers => { 'Content-Type' => 'application/json' },
		content => encode_json({ size => 10000, sort => [ { id => 'asc' } ], query => { match_all => {} } }) });
	my $hits = $res->{success} ? $json->decode($res->{content})->{hits}{hits} : [];
	is(scalar @$hits, 5000, "$flavor: a search returns them all");
	# COPY text lines "id\tjson"
	my $lines = '';
	for my $hit (@$hits)
	{
		my $doc = $json->encode($hit->{_source});
		$doc =~ s/\\/\\\\/g;
		$lines .= "$hit->{_id}\t$doc\n";
	}
	$node->safe_psql('postgres',
		"DROP TABLE IF EXISTS es_typed; CREATE TABLE es_typed (id text, doc jsonb);\nCOPY es_typed FROM STDIN;\n$lines\\.\n");
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM typed t FULL JOIN es_typed e ON e.id = t.id::text
		 WHERE e.doc IS DISTINCT FROM to_jsonb(t)}), '0',
		"$flavor: every document equals to_jsonb(row), with _id = id")
	  or diag($node->safe_psql('postgres', q{
		SELECT t.id, e.doc, to_jsonb(t) FROM typed t FULL JOIN es_typed e ON e.id = t.id::text
		 WHERE e.doc IS DISTINCT FROM to_jsonb(t) LIMIT 2}));
	is($node->safe_psql('postgres', "SELECT doc->>'note' FROM es_typed WHERE id = '2'"),
		'unicode: Grüße, 東京, emoji 🚀', "$flavor: unicode survives");
	is($node->safe_psql('postgres', "SELECT doc->>'big' FROM es_typed WHERE id = '42'"),
		'123456789012345678901234567890.42', "$flavor: numeric precision survives");

	# --- what the requests looked like ------------------------------------------------
	my @bulk = grep { ($_->{url} // '') =~ m{^/typed/_bulk} } @{ $es->requests(1000) };
	is(scalar @bulk, 5, "$flavor: 5 requests of 1000 documents");
	is(scalar(grep { ($_->{headers}{'Content-Type'} // $_->{headers}{'content-type'} // '') eq 'application/x-ndjson' } @bulk),
		5, "$flavor: each application/x-ndjson");
	is(scalar(grep { ($_->{body} // '') =~ /"_type"/ } @bulk), 0, "$flavor: no _type in any action line");
	like((split /\n/, $bulk[0]{body} // '')[0], qr/^\{"index":\s*\{"_id":\s*"1"\}\}$/,
		"$flavor: the first action line is {\"index\":{\"_id\":\"1\"}}");

	# --- a document the mapping refuses -------------------------------------------------
	my ($st) = $es->put('/poisoned', { mappings => { properties => { amount => { type => 'long' } } } });
	is($st, 200, "$flavor: index with a long field created");
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('poisoned_$flavor', '$flavor', 'poisoned', query => 'SELECT * FROM poison_src', "
		  . "options => '{\"batch_size\": 200}')");
	$run = $node->safe_psql('postgres', "SELECT ecp.start('poisoned_$flavor')");
	is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', "$flavor: a run with refused documents succeeds");
	is($node->safe_psql('postgres', "SELECT processed || ' ' || failed FROM ecp.progress WHERE run_id = $run"),
		'490 10', "$flavor: 490 processed, 10 failed");
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run AND status = 400 "
			  . "AND error_type = 'mapper_parsing_exception' AND reason LIKE '%amount%'"),
		'10', "$flavor: each in failed_docs as 400 mapper_parsing_exception naming the field");
	$es->refresh('poisoned');
	is($es->count('poisoned'), 490, "$flavor: the others are indexed");

	$es->stop;
}

$node->stop;
done_testing();
