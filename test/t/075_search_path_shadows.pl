# ecp's own SQL never resolves a name through a task's search_path.
#
# An ordinary role creates, in its own schema, shadows of every pg_catalog
# name ecp's generated SQL uses (types text, int8, jsonb, numeric; functions
# row_to_json, to_jsonb, trunc; aggregates count, min, max; operators =, >,
# <, >=, <=, *), and a second transform overload on its own type "jsonb"
# (the review's C1); it puts that schema first in its tasks' search_path
# (allowed: README, Security), and runs every source kind: a query (keyset
# and key windows, with transform, routing and version columns, an exact
# count), a split into key ranges, queries (shards), ids (integer and text
# ids) and an id file.  Nothing crashes (the postmaster's start time and
# the log), and every document is what PostgreSQL's own functions make.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use JSON::PP;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

my $node = EcpTest::new_node('shadows');
my $es = EsdServer->start();
my $url = $es->url;
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my $NROWS = 300;

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
CREATE SCHEMA m AUTHORIZATION mallory;
});

sub as_mallory
{
	my ($sql, $path) = @_;
	$path //= 'm, pg_catalog';
	return $node->safe_psql('postgres', "SET ROLE mallory; SET search_path = $path; $sql");
}

# The data, written with PostgreSQL's own names.
as_mallory(qq{
CREATE TABLE m.orders (id pg_catalog.int4 PRIMARY KEY, price pg_catalog.numeric,
                       placed pg_catalog.timestamptz, customer pg_catalog.text);
INSERT INTO m.orders SELECT g, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 minute', 'c' || (g % 7)
  FROM generate_series(1, $NROWS) g;
CREATE TABLE m.orders_b (LIKE m.orders INCLUDING ALL);
INSERT INTO m.orders_b SELECT g, g * 1.25, '2026-01-01'::timestamptz, 'b' FROM generate_series(1001, 1100) g;
CREATE TABLE m.notes (code pg_catalog.text PRIMARY KEY, body pg_catalog.text);
INSERT INTO m.notes SELECT 'n-' || g, 'note ' || g FROM generate_series(1, 50) g;
CREATE FUNCTION m.shape(d pg_catalog.jsonb) RETURNS pg_catalog.jsonb LANGUAGE sql
    AS \$\$ SELECT d OPERATOR(pg_catalog.||) '{"shaped": true}'::pg_catalog.jsonb \$\$;
}, 'pg_catalog');

# The shadows.
as_mallory(q{
CREATE DOMAIN m.text AS pg_catalog.int8;
CREATE DOMAIN m.int8 AS pg_catalog.text;
CREATE DOMAIN m.jsonb AS pg_catalog.tsvector;
CREATE DOMAIN m.numeric AS pg_catalog.int8;
CREATE FUNCTION m.row_to_json(r record) RETURNS pg_catalog.int8 LANGUAGE plpgsql
    AS $$ BEGIN RETURN 1094795585; END $$;
CREATE FUNCTION m.to_jsonb(r anyelement) RETURNS pg_catalog.int8 LANGUAGE plpgsql
    AS $$ BEGIN RETURN 1094795585; END $$;
CREATE FUNCTION m.trunc(v pg_catalog.numeric) RETURNS pg_catalog.text LANGUAGE sql AS $$ SELECT 'trunc' $$;
CREATE FUNCTION m.text_sf(s pg_catalog.text) RETURNS pg_catalog.text LANGUAGE sql AS $$ SELECT s $$;
CREATE AGGREGATE m.count(*) (sfunc = m.text_sf, stype = pg_catalog.text, initcond = 'hello');
CREATE FUNCTION m.pick4(s pg_catalog.text, v pg_catalog.int4) RETURNS pg_catalog.text LANGUAGE sql AS $$ SELECT s $$;
CREATE FUNCTION m.pick8(s pg_catalog.text, v pg_catalog.int8) RETURNS pg_catalog.text LANGUAGE sql AS $$ SELECT s $$;
CREATE AGGREGATE m.min(pg_catalog.int4) (sfunc = m.pick4, stype = pg_catalog.text, initcond = 'min');
CREATE AGGREGATE m.max(pg_catalog.int4) (sfunc = m.pick4, stype = pg_catalog.text, initcond = 'max');
CREATE AGGREGATE m.min(pg_catalog.int8) (sfunc = m.pick8, stype = pg_catalog.text, initcond = 'min');
CREATE AGGREGATE m.max(pg_catalog.int8) (sfunc = m.pick8, stype = pg_catalog.text, initcond = 'max');
CREATE FUNCTION m.always(a pg_catalog.int4, b pg_catalog.int4) RETURNS pg_catalog.bool LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION m.always48(a pg_catalog.int4, b pg_catalog.int8) RETURNS pg_catalog.bool LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION m.always_t(a pg_catalog.text, b pg_catalog.text) RETURNS pg_catalog.bool LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION m.zero(a pg_catalog.numeric, b pg_catalog.int4) RETURNS pg_catalog.numeric LANGUAGE sql AS $$ SELECT 0::pg_catalog.numeric $$;
CREATE OPERATOR m.= (leftarg = pg_catalog.int4, rightarg = pg_catalog.int4, function = m.always);
CREATE OPERATOR m.> (leftarg = pg_catalog.int4, rightarg = pg_catalog.int4, function = m.always);
CREATE OPERATOR m.< (leftarg = pg_catalog.int4, rightarg = pg_catalog.int4, function = m.always);
CREATE OPERATOR m.>= (leftarg = pg_catalog.int4, rightarg = pg_catalog.int4, function = m.always);
CREATE OPERATOR m.<= (leftarg = pg_catalog.int4, rightarg = pg_catalog.int4, function = m.always);
CREATE OPERATOR m.> (leftarg = pg_catalog.int4, rightarg = pg_catalog.int8, function = m.always48);
CREATE OPERATOR m.<= (leftarg = pg_catalog.int4, rightarg = pg_catalog.int8, function = m.always48);
CREATE OPERATOR m.>= (leftarg = pg_catalog.int4, rightarg = pg_catalog.int8, function = m.always48);
CREATE OPERATOR m.< (leftarg = pg_catalog.int4, rightarg = pg_catalog.int8, function = m.always48);
CREATE OPERATOR m.= (leftarg = pg_catalog.text, rightarg = pg_catalog.text, function = m.always_t);
CREATE OPERATOR m.> (leftarg = pg_catalog.text, rightarg = pg_catalog.text, function = m.always_t);
CREATE OPERATOR m.* (leftarg = pg_catalog.numeric, rightarg = pg_catalog.int4, function = m.zero);
-- C1: an overload of the transform on the role's own "jsonb" (tsvector)
CREATE FUNCTION m.shape(d m.jsonb) RETURNS pg_catalog.jsonb LANGUAGE sql
    AS $$ SELECT pg_catalog.to_jsonb(d::pg_catalog.text) $$;
}, 'pg_catalog');

# Under mallory's path the shadows win: the test's premise.
is(as_mallory(q{SELECT pg_typeof(row_to_json(o))::pg_catalog.text FROM m.orders o LIMIT 1}), 'bigint',
	'under search_path m, pg_catalog, row_to_json is the role\'s');
is(as_mallory(q{SELECT count(*) FROM m.orders}), 'hello', '... and count(*) too');
isnt(as_mallory(q{SELECT pg_catalog.to_regprocedure('m.shape(jsonb)')::pg_catalog.oid}),
	as_mallory(q{SELECT pg_catalog.to_regprocedure('m.shape(jsonb)')::pg_catalog.oid}, 'pg_catalog'),
	'... and m.shape(jsonb) names the other overload');

as_mallory("SELECT ecp.create_consumer('m_es', '$url')");

# Create a task under mallory's path (its search_path is recorded) and run it.
sub run_task
{
	my ($name, $args, $start_args) = @_;
	as_mallory("SELECT ecp.create_task('$name', 'm_es', '$name', $args)");
	# (as the superuser: under mallory's path, = is hers and always true)
	is($node->safe_psql('postgres', "SELECT search_path FROM ecp.task WHERE name = '$name'"), 'm, pg_catalog',
		"$name: the task's search_path puts the role's schema first");
	my $run = as_mallory("SELECT ecp.start('$name'" . ($start_args // '') . ")");
	my $state = EcpTest::wait_for_run($node, $run, 'succeeded', 180);
	is($state, 'succeeded', "$name: run $run succeeds") or
		diag($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"));
	$es->refresh($name);
	return $run;
}

# The documents PostgreSQL's own functions make, by _id.
sub expected_docs
{
	my ($query, $id) = @_;
	my %docs;
	for my $line (split /\n/, $node->safe_psql('postgres',
		"SET search_path = pg_catalog; SELECT ($id)::text || E'\\t' || row_to_json(r)::text FROM ($query) r"))
	{
		my ($key, $json) = split /\t/, $line, 2;
		$docs{$key} = decode_json($json);
	}
	return \%docs;
}

# Every expected document is in the index as it is, and nothing else.
sub docs_right
{
	my ($index, $expected, $what, $extra) = @_;
	is($es->count($index), scalar(keys %$expected), "$what: the index holds every row once");
	my @wrong;
	for my $id (sort keys %$expected)
	{
		my $want = { %{ $expected->{$id} }, %{ $extra // {} } };
		my $got = $es->doc($index, $id);
		push @wrong, $id unless $got && JSON::PP->new->canonical->encode($got) eq JSON::PP->new->canonical->encode($want);
	}
	is(scalar(@wrong), 0, "$what: every document equals PostgreSQL's row_to_json of its row")
		or diag('wrong: ' . join(', ', @wrong[0 .. ($#wrong > 4 ? 4 : $#wrong)]));
}

my $orders = 'SELECT id, price, placed, customer FROM m.orders';
my $expected = expected_docs($orders, 'id');

# --- a query, keyset pages, transform, routing and version columns ----------------
my $run = run_task('sh_query', qq{query => '$orders',
	options => '{"transform": "m.shape", "routing_column": "customer", "version_column": "placed",
	             "exact_total": true, "batch_size": 40}'});
docs_right('sh_query', $expected, 'keyset pages with transform', { shaped => JSON::PP::true });
is($node->safe_psql('postgres', "SELECT total FROM ecp.run WHERE id = $run"), $NROWS,
	'sh_query: the exact total is PostgreSQL\'s count(*), not a pointer');
my ($st, $body) = $es->request('GET', '/sh_query/_doc/7?routing=c0');
is($body->{_version},
	$node->safe_psql('postgres', "SELECT (extract(epoch from placed) * 1000000)::bigint FROM m.orders WHERE id = 7"),
	'sh_query: the external version is the timestamp in microseconds (PostgreSQL\'s *)');
is($body->{_routing}, 'c0', 'sh_query: routing is the customer column');

# --- key windows: count, min and max as int8 -------------------------------------
run_task('sh_window', qq{query => '$orders', options => '{"paging": "window", "batch_size": 50, "exact_total": true}'});
docs_right('sh_window', $expected, 'key windows');

# --- a numeric version (trunc) ----------------------------------------------------
run_task('sh_numeric', qq{query => '$orders', options => '{"version_column": "price"}'});
($st, $body) = $es->request('GET', '/sh_numeric/_doc/9');
is($body->{_version}, 11, 'sh_numeric: the version of price 11.25 is PostgreSQL\'s trunc');

# --- a split into key ranges (min/max, >= and <) -----------------------------------
$run = run_task('sh_split', qq{query => '$orders', options => '{"parallelism": 3, "batch_size": 30}'});
ok($node->safe_psql('postgres', "SELECT count(*) FROM ecp.part WHERE run_id = $run AND source->>'kind' = 'range'") >= 2,
	'sh_split: the split cut key ranges');
docs_right('sh_split', $expected, 'key ranges');

# --- queries (shards) ----------------------------------------------------------------
run_task('sh_shards', q{queries => ARRAY['SELECT id, price, placed, customer FROM m.orders',
                                          'SELECT id, price, placed, customer FROM m.orders_b']});
my %both = (%$expected, %{ expected_docs('SELECT id, price, placed, customer FROM m.orders_b', 'id') });
docs_right('sh_shards', \%both, 'queries');

# --- ids: integer ids and text ids (= ANY), one missing --------------------------------
$run = run_task('sh_ids', qq{query => '$orders'}, q{, ids => ARRAY['5', '17', '250', '99999']});
is($node->safe_psql('postgres', "SELECT processed || ':' || missing FROM ecp.progress WHERE run_id = $run"), '3:1',
	'sh_ids: three ids found, the fourth missing');
docs_right('sh_ids', { map { $_ => $expected->{$_} } qw(5 17 250) }, 'integer ids');
my $notes = 'SELECT code, body FROM m.notes';
run_task('sh_text_ids', qq{query => '$notes', options => '{"id_column": "code"}'}, q{, ids => ARRAY['n-3', 'n-40', 'n-x']});
my $note_docs = expected_docs($notes, 'code');
docs_right('sh_text_ids', { map { $_ => $note_docs->{$_} } qw(n-3 n-40) }, 'text ids');

# --- an id file, looked up through the query ------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir();
chmod 0755, $dir;
open(my $fh, '>', "$dir/ids.txt") or die;
print $fh "$_\n" for (1 .. 120);
close $fh;
chmod 0644, "$dir/ids.txt";
my $port_file = "$dir/port";
my $server = fork();
die "fork: $!" unless defined $server;
if ($server == 0)
{
	exec('perl', "$FindBin::RealBin/../scripts/file-server.pl", '--dir', $dir, '--port-file', $port_file,
		'--log', "$dir/requests.log", '--max-seconds', 300) or die "exec: $!";
}
my $deadline = time + 30;
sleep 0.05 until (-s $port_file || time > $deadline);
my $port = slurp_file($port_file);
chomp $port;
run_task('sh_id_file', qq{query => '$orders', file => 'http://127.0.0.1:$port/ids.txt', options => '{"batch_size": 50}'});
docs_right('sh_id_file', { map { $_ => $expected->{$_} } (1 .. 120) }, 'an id file');
kill 'TERM', $server;
waitpid($server, 0);

# --- the transform is the function bound when the task was written ---------------------
as_mallory('DROP FUNCTION m.shape(pg_catalog.jsonb)', 'pg_catalog');
$run = as_mallory("SELECT ecp.start('sh_query')");
is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed',
	'with the bound transform dropped, the run fails (the overload on the role\'s "jsonb" is never called)');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
	qr/transform function m\.shape\(jsonb\) of task "sh_query" no longer exists/, '... saying so');
my ($rc, $out, $err) = $node->psql('postgres', q{SET ROLE mallory; SET search_path = m, pg_catalog;
	SELECT ecp.create_task('sh_again', 'm_es', 'x', query => 'SELECT 1 AS id', options => '{"transform": "m.shape"}')});
like($err, qr/transform function m\.shape\(jsonb\) does not exist/,
	'create_task resolves the transform under pg_catalog: the overload on the role\'s "jsonb" is not taken');

# --- nothing crashed ------------------------------------------------------------------
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'the postmaster never restarted');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|server process .* was terminated/, 'no process was terminated by a signal');

done_testing();
