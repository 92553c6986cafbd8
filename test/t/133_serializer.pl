# The worker's own serialiser (src/worker/doc_writer.c): every document it
# sends is the JSON object row_to_json writes of the same row, with
# row_to_json as the oracle, row by row, over the documents as they left
# ecp (the stand-in's request log, byte for byte):
#   - every type with a writer of its own (int2/4/8, bool, text, varchar,
#     numeric, float4/8, date, timestamp, timestamptz, json, jsonb, uuid)
#     and the types that go through to_json (arrays, a composite, domains,
#     an enum, an enum with a cast to json, bpchar, hstore when it can be
#     installed, interval, bytea, inet), at their edges: NaN and Infinity
#     numerics and floats, -0, huge and tiny numerics, timestamps in other
#     time zones, infinity timestamps, text with every control character,
#     quotes, backslashes and unicode, NULL in every column;
#   - equal as jsonb for every row, and the same text except where a json
#     value holds a raw newline (which cannot go into an NDJSON line: it is
#     sent as a space, the same JSON value);
#   - extra_float_digits counts as it does for row_to_json (the owner's
#     setting);
#   - the same rows through the id source (ecp.start with ids), with
#     routing and version columns, and with since_column;
#   - duplicate column names (a table that gained a column after the task
#     was written) are written twice, as row_to_json does.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Encode qw(encode_utf8);
use JSON::PP;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('request log');

my $node = EcpTest::new_node('serializer');
my $es = EsdServer->start();
my $url = $es->url;
$es->set_config({ request_log_body_max => 16 * 1024 * 1024 });
my $json = JSON::PP->new;

sub sql { return $node->safe_psql('postgres', $_[0]) }

my $hstore = eval { sql('CREATE EXTENSION hstore'); 1 } ? 1 : 0;
note($hstore ? 'hstore installed' : 'hstore not installable: the enum with a cast to json stands for it');

sql(q{
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'quo"ted');
CREATE TYPE graded AS ENUM ('low', 'high');
CREATE FUNCTION graded_json(graded) RETURNS json LANGUAGE sql IMMUTABLE
	AS $$ SELECT pg_catalog.json_build_object('grade', $1::text, 'rank', CASE $1 WHEN 'low' THEN 1 ELSE 2 END) $$;
CREATE CAST (graded AS json) WITH FUNCTION graded_json(graded);
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE DOMAIN label AS text;
CREATE TYPE address AS (street text, zip int, tags text[], at timestamptz);
});
my $hstore_column = $hstore ? ', hs hstore' : '';
sql(qq{
CREATE TABLE ser (
    id bigint PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint, b boolean,
    t text, vc varchar(40), n numeric, f4 real, f8 double precision,
    d date, ts timestamp, tstz timestamptz, j json, jb jsonb, u uuid,
    ia int[], ta text[], tsa timestamptz[], addr address, pos positive, lbl label,
    feeling mood, grade graded, bp char(5), iv interval, by bytea, net inet,
    nothing text $hstore_column
);
});
# 2,000 rows that walk through the values below, each column on its own
# period so that values meet in many combinations; row 1 is all NULL.
my @periods = (7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103);
sql(qq{
CREATE FUNCTION pick(anyarray, bigint) RETURNS anyelement LANGUAGE sql IMMUTABLE
	AS 'SELECT \$1[1 + \$2 % pg_catalog.array_length(\$1, 1)]';
INSERT INTO ser (id) VALUES (1);
INSERT INTO ser
SELECT g,
  pick(ARRAY[0, 1, -1, 32767, -32768]::smallint[], g),
  pick(ARRAY[0, 7, -2147483648, 2147483647, 42]::int[], g),
  pick(ARRAY[0, -9223372036854775808, 9223372036854775807, 1234567890123]::bigint[], g),
  g % 3 = 0,
  pick(ARRAY['', 'plain', 'quote " and backslash \\ here', E'line one\\nline two\\ttabbed\\r\\f\\b',
             'Grüße, 東京, emoji 🚀', 'nul-free \x01\x02\x1f\x7f end', '</script> & <b>', 'ünïcödé ∑ 𝄞'], g)
    || CASE WHEN g % 101 = 0 THEN (SELECT string_agg(chr(c), '') FROM generate_series(1, 31) c) ELSE '' END,
  pick(ARRAY['v', 'with "quotes"', E'tab\\there', 'café'], g),
  pick(ARRAY['0', '-0', '1.50', '-1.0e-30', 'NaN', 'Infinity', '-Infinity',
             '123456789012345678901234567890.123456789012345678901234567890',
             '1e1000', '-1e-1000', '0.000000000000000000001']::numeric[], g),
  pick(ARRAY['0', '-0', '1.5', '3.4e38', '1e-45', 'NaN', 'Infinity', '-Infinity', '0.1']::real[], g),
  pick(ARRAY['0', '-0', '0.1', '1e308', '4.9e-324', 'NaN', 'Infinity', '-Infinity', '2.718281828459045', '-1e-300']::float8[], g),
  pick(ARRAY['2024-02-29', 'infinity', '-infinity', '0001-01-01', '4713-01-01 BC', '5874897-12-31']::date[], g),
  pick(ARRAY['2024-02-29 12:00:00.123456', 'infinity', '-infinity', '1999-12-31 23:59:59', '0044-03-15 12:00 BC']::timestamp[], g),
  pick(ARRAY['2024-02-29 12:00:00.123456+05:30', 'infinity', '-infinity', '2000-01-01 00:00:00-08',
             '1900-06-30 23:59:59.999999+00', '0001-01-01 00:00:00+00 BC']::timestamptz[], g),
  pick(ARRAY['{"a": [1, 2.50, "x"], "b": {"c": null}}', '[1, "two"]', '"s"', 'null', '123.4500',
             '{"dup": 1, "dup": 2}', E'{"spaced" :\\n [ 1 ,\\t2 ]\\r\\n}', '{"esc": "\\u00e9\\n"}']::json[], g),
  pick(ARRAY['{"z": 1, "a": [true, null]}', '"just a string"', '1.0e2', '[]', '{}', '{"u": "\\u0001 é"}']::jsonb[], g),
  md5(g::text)::uuid,
  (CASE g % 3 WHEN 0 THEN '{}' WHEN 1 THEN '{1,NULL,3}' ELSE '{{1,2},{3,4}}' END)::int[],
  (CASE g % 4 WHEN 0 THEN '{}' WHEN 1 THEN '{"a","b\\"c",NULL}' WHEN 2 THEN '{"",""}' ELSE '[0:1]={x,y}' END)::text[],
  ARRAY[timestamptz '2020-01-01 00:00+02', NULL, 'infinity'],
  CASE WHEN g % 5 = 0 THEN NULL ELSE ROW(E'Main St. "7"\\n', g::int, ARRAY['x', NULL], timestamptz '2021-05-05 05:05+01')::address END,
  1 + g % 1000,
  'label ' || g,
  pick(ARRAY['sad', 'ok', 'happy', 'quo"ted']::mood[], g),
  pick(ARRAY['low', 'high']::graded[], g),
  pick(ARRAY['ab', 'abcde', '', 'é']::bpchar[], g),
  pick(ARRAY['1 day 02:03:04.5', '-3 months', '0', '178000000 years']::interval[], g),
  pick(ARRAY['\\x00ff10', '\\x', '\\x5c22']::bytea[], g),
  pick(ARRAY['10.1.2.3/8', '::1', '192.168.0.1']::inet[], g),
  NULL
  @{[ $hstore ? q{, pick(ARRAY['a=>1, b=>NULL', '', '"q\\"x"=>"y\\\\z"']::hstore[], g)} : '' ]}
FROM generate_series(2, 2000) g;
});
is(sql('SELECT count(*) FROM ser WHERE row_to_json(ser)::jsonb IS DISTINCT FROM to_jsonb(ser)'), '0',
	'row_to_json(r)::jsonb = to_jsonb(r) for every row (the oracle agrees with itself)');
sql("SELECT ecp.create_consumer('esd', '$url')");
# documents of these values need no mapping: the stand-in stores them as they are
$es->put("/$_", { mappings => { dynamic => JSON::PP::false } }) for qw(ser ser_meta ser_float);

# The documents of the bulk requests the stand-in logged since the last
# call, into table $table (id text, doc text, action text).
sub sent_documents
{
	my ($table) = @_;
	my $requests = $es->requests(1000);
	$es->_ctl('DELETE', '/_esd/requests');
	my $copy = '';
	for my $request (@$requests)
	{
		next unless $request->{url} =~ m{/_bulk};
		die "a bulk body was cut in the log" if $request->{body_truncated};
		my @lines = split /\n/, $request->{body};
		while (@lines)
		{
			my ($action_line, $doc) = (shift @lines, shift @lines);
			my $action = $json->decode($action_line);
			my ($op) = keys %$action;
			for my $field ($action->{$op}{_id}, $doc, $action_line)
			{
				die "no document after $action_line" unless defined $field;
			}
			$copy .= join("\t", map { my $v = $_; $v =~ s/\\/\\\\/g; $v =~ s/\t/\\t/g; $v =~ s/\r/\\r/g; $v }
					  ($action->{$op}{_id}, $doc, $action_line)) . "\n";
		}
	}
	sql("DROP TABLE IF EXISTS $table; CREATE TABLE $table (id text, doc text, action text);\n"
		  . "COPY $table FROM STDIN;\n" . encode_utf8($copy) . "\\.\n");
}

sub run_task
{
	my ($start, $what) = @_;
	$es->_ctl('DELETE', '/_esd/requests');
	my $run = sql($start);
	is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', "$what: the run succeeds");
	return $run;
}

# Every document against row_to_json of its row: as jsonb, and as text
# (but for the raw newlines of json values, sent as spaces).
sub compare_with_oracle
{
	my ($sent, $rows, $count, $what) = @_;
	is(sql("SELECT count(*) FROM $sent"), $count, "$what: $count documents sent");
	is(sql("SELECT count(DISTINCT id) FROM $sent"), $count, "$what: each row once");
	is(sql(qq{SELECT count(*) FROM $rows r FULL JOIN $sent s ON s.id = r.id::text
	           WHERE s.doc::jsonb IS DISTINCT FROM row_to_json(r)::jsonb}), '0',
		"$what: every document equals row_to_json(row) as jsonb")
	  or diag(sql(qq{SELECT r.id, s.doc, row_to_json(r) FROM $rows r FULL JOIN $sent s ON s.id = r.id::text
	           WHERE s.doc::jsonb IS DISTINCT FROM row_to_json(r)::jsonb LIMIT 3}));
	is(sql(qq{SELECT count(*) FROM $rows r JOIN $sent s ON s.id = r.id::text
	           WHERE s.doc IS DISTINCT FROM translate(row_to_json(r)::text, E'\\n', ' ')}), '0',
		"$what: and as text, byte for byte (raw newlines of json values as spaces)")
	  or diag(sql(qq{SELECT r.id, s.doc, row_to_json(r) FROM $rows r JOIN $sent s ON s.id = r.id::text
	           WHERE s.doc IS DISTINCT FROM translate(row_to_json(r)::text, E'\\n', ' ') LIMIT 3}));
}

# --- keyset pages over every type --------------------------------------------
sql(q{SELECT ecp.create_task('ser', 'esd', 'ser', query => 'SELECT * FROM ser', options => '{"batch_size": 150}')});
run_task("SELECT ecp.start('ser')", 'all types');
sent_documents('sent_ser');
compare_with_oracle('sent_ser', 'ser', 2000, 'all types');
is(sql(q{SELECT count(*) FROM sent_ser WHERE strpos(doc, E'\n') > 0}), '0', 'no document holds a raw newline');
is(sql(q{SELECT count(*) FROM ser WHERE strpos(j::text, E'\n') > 0}) > 0 ? 1 : 0, 1,
	'(some json values do hold one)');
is(sql(q{SELECT doc FROM sent_ser WHERE id = '1'}),
	'{' . join(',', map { "\"$_\":null" } qw(id i2 i4 i8 b t vc n f4 f8 d ts tstz j jb u ia ta tsa addr pos lbl
		feeling grade bp iv by net nothing), ($hstore ? ('hs') : ()))
	  =~ s/"id":null/"id":1/r . '}',
	'a row of NULLs: every key, in the query\'s order, null');
is(sql(q{SELECT doc::jsonb->'grade' = '{"grade": "low", "rank": 1}' FROM sent_ser WHERE id = '2'}), 't',
	'an enum with a cast to json is written by its cast (the owner\'s function)')
  or diag(sql(q{SELECT doc FROM sent_ser WHERE id = '2'}));
is(sql(q{SELECT count(*) FROM sent_ser WHERE doc LIKE '%"n":"NaN"%' OR doc LIKE '%"f8":"-Infinity"%'}) > 0 ? 1 : 0, 1,
	'NaN and Infinity are quoted');

# --- the owner's extra_float_digits counts, as it does for row_to_json ---------
sql(q{CREATE VIEW ser_float AS SELECT id, f4, f8, n FROM ser});
sql(q{SELECT ecp.create_task('ser_float', 'esd', 'ser_float', query => 'SELECT * FROM ser_float', options => '{"batch_size": 500}')});
sql('ALTER SYSTEM SET extra_float_digits = -2');
sql('SELECT pg_reload_conf()');
ok(EcpTest::poll($node, q{SELECT current_setting('extra_float_digits') = '-2'}), 'extra_float_digits is -2 now');
run_task("SELECT ecp.start('ser_float')", 'floats at extra_float_digits -2');
sent_documents('sent_float');
is(sql(q{SELECT count(*) FROM sent_float s JOIN ser_float r ON s.id = r.id::text
          WHERE s.doc IS DISTINCT FROM row_to_json(r)::text}), '0',
	'floats at extra_float_digits -2: the same text as row_to_json writes there');
is(sql(q{SELECT count(*) FROM sent_float WHERE doc LIKE '%"f8":2.718281828459,%'}) > 0 ? 1 : 0, 1,
	'(13 digits, not the shortest exact form)');
sql('ALTER SYSTEM RESET extra_float_digits');
sql('SELECT pg_reload_conf()');

# --- ids, routing and version, since_column -------------------------------------
sql(q{SELECT ecp.create_task('ser_meta', 'esd', 'ser_meta', query => 'SELECT * FROM ser',
      options => '{"batch_size": 100, "routing_column": "lbl", "version_column": "id"}')});
run_task(q{SELECT ecp.start('ser_meta', ids => ARRAY(SELECT g::text FROM generate_series(1, 2000, 3) g))},
	'ids, with routing and version');
sent_documents('sent_meta');
sql('CREATE VIEW ser_by_ids AS SELECT * FROM ser WHERE id % 3 = 1');
compare_with_oracle('sent_meta', 'ser_by_ids', 667, 'ids, with routing and version');
is(sql(q{SELECT count(*) FROM sent_meta s JOIN ser r ON s.id = r.id::text
          WHERE (s.action::jsonb->'index'->>'routing') IS DISTINCT FROM r.lbl::text
             OR (s.action::jsonb->'index'->>'version') IS DISTINCT FROM r.id::text}), '0',
	'each action line has its row\'s routing and version');
sql(q{SELECT ecp.create_task('ser_since', 'esd', 'ser_meta', query => 'SELECT * FROM ser',
      options => '{"batch_size": 100, "since_column": "i8", "routing_column": "lbl"}')});
run_task("SELECT ecp.start('ser_since')", 'since_column');
sent_documents('sent_since');
compare_with_oracle('sent_since', 'ser', 2000, 'since_column (a first run reads every row)');

# --- duplicate column names, written twice as row_to_json writes them -----------
# ecp.create_task refuses a query that returns a name twice (and one with
# no columns); a table that gains a column later can still make it return
# one twice at run time: each document then has the key twice, as
# row_to_json writes it (and the stand-in, like Elasticsearch, refuses it).
sql(q{CREATE TABLE dup_a (id int PRIMARY KEY, t text);
      CREATE TABLE dup_b (id int PRIMARY KEY, note text);
      INSERT INTO dup_a SELECT g, 'a' || g FROM generate_series(1, 40) g;
      INSERT INTO dup_b SELECT g, E'b\n' || g FROM generate_series(1, 40) g;
      SELECT ecp.create_task('ser_dup', 'esd', 'ser_dup',
             query => 'SELECT a.*, b.note FROM dup_a a JOIN dup_b b ON b.id = a.id');
      ALTER TABLE dup_a ADD COLUMN note numeric DEFAULT 1.50});
$es->_ctl('DELETE', '/_esd/requests');
my $dup_run = sql("SELECT ecp.start('ser_dup')");
like(EcpTest::wait_for_run($node, $dup_run, 'succeeded'), qr/^(succeeded|failed)$/, 'duplicate names: the run ends');
sent_documents('sent_dup');
is(sql(q{SELECT count(*) FROM sent_dup s
           JOIN (SELECT a.*, b.note FROM dup_a a JOIN dup_b b ON b.id = a.id) r ON s.id = r.id::text
          WHERE s.doc IS DISTINCT FROM row_to_json(r)::text}), '0',
	'duplicate names: each document is row_to_json\'s text, every key written');
is(sql(q{SELECT count(DISTINCT id) FROM sent_dup}), '40', 'duplicate names: 40 documents sent');
is(sql(q{SELECT doc FROM sent_dup WHERE id = '3'}), '{"id":3,"t":"a3","note":1.50,"note":"b\\n3"}',
	'the key twice, in the query\'s order');

done_testing();
