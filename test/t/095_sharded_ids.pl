# Ids on a sharded task (issue 23): id runs and ecp.retry_failed of a task
# of queries, with and without task option shard_of.  16 tables orders_0 ..
# orders_15 in 4 MariaDB databases sid_0 .. sid_3 (table i in database
# i / 4), read through mysql_fdw; order n (1 .. 32,000) lives in table
# n % 16, so each table holds 2,000 orders and shard_of is (id % 16) + 1.
#
# Checks:
#   - a full sync of the 16 queries; then drift: in the stand-in 10
#     documents deleted and 5 changed by hand, in MariaDB 3 rows deleted;
#   - an id run over those 18 ids, without shard_of: 15 documents sent
#     again (each equal to its row), 3 missing; the general log has exactly
#     one `id` IN (...) statement per table, each naming the 18 ids;
#   - the same drift again, now with shard_of and delete_missing: 15 sent,
#     3 deleted, 0 missing, the index equals the source for all 18; the
#     general log has one IN (...) statement against each table that holds
#     some of them, naming just those, and none against the others;
#   - an id that two tables return: both documents are sent, the later
#     query's stays, and a flow row "duplicate ids" names the id and both
#     queries; a shard_of that gives no query's number fails the run and
#     says why;
#   - verify and repair (ecp.verify with extra, ecp.repair) of the task,
#     without and with shard_of: drift in both places found id by id,
#     repaired, and a second verify clean;
#   - retry_failed: a full run of a sharded task whose documents with a
#     "flag" field the stand-in refuses (poison_field) has dead letters in
#     many tables; with the fault cleared, ecp.retry_failed sends exactly
#     those again, and the index holds every order.
#
# Needs the MariaDB of test/scripts/mariadb.sh (make test starts it);
# without it this test FAILS on purpose.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EcpTest;
use EcpMysql;
use EsdServer;

my $my = EcpMysql->require_env;
EsdServer->require_stand_in('poison_field faults');

my $NTABLES = 16;
my $NDBS    = 4;
my $PER     = 2000;
my $NROWS   = $NTABLES * $PER;
sub db_of { my ($i) = @_; return 'sid_' . int($i / ($NTABLES / $NDBS)) }

# --- MariaDB: 4 databases x 4 tables, order n in table n % 16 ------------------
for my $d (0 .. $NDBS - 1)
{
	$my->query("DROP DATABASE IF EXISTS sid_$d; CREATE DATABASE sid_$d CHARACTER SET utf8mb4");
}
for my $i (0 .. $NTABLES - 1)
{
	my $db = db_of($i);
	$my->query(qq{
		CREATE TABLE $db.orders_$i (
			id       BIGINT PRIMARY KEY,
			customer VARCHAR(64) NOT NULL,
			amount   DECIMAL(12,2) NOT NULL
		) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
		INSERT INTO $db.orders_$i
		SELECT seq, CONCAT('cust-', seq % 97), (seq * 7919 % 100000) / 100
		  FROM seq_1_to_$NROWS WHERE seq % $NTABLES = $i;
	});
}
is($my->query(join(' UNION ALL ', map { "SELECT COUNT(*) FROM " . db_of($_) . ".orders_$_" } 0 .. $NTABLES - 1)),
	join("\n", ($PER) x $NTABLES), 'MariaDB: 2,000 orders in each of 16 tables of 4 databases');

# --- PostgreSQL: one foreign server per database ------------------------------
my $node = EcpTest::new_node('sharded_ids', conf => ['ecp.max_workers = 8']);
my $es = EsdServer->start();
my $url = $es->url;
for my $d (0 .. $NDBS - 1)
{
	$my->setup_fdw($node, 'postgres', "sid_$d");
	$node->safe_psql('postgres', qq{
		CREATE SCHEMA sid_$d;
		IMPORT FOREIGN SCHEMA sid_$d FROM SERVER sid_$d INTO sid_$d;
	});
}
# every order, for comparing documents with their rows
$node->safe_psql('postgres', 'CREATE VIEW all_orders AS '
	  . join(' UNION ALL ', map { 'SELECT * FROM ' . db_of($_) . ".orders_$_" } 0 .. $NTABLES - 1));
my $QUERIES = "(SELECT array_agg(format('SELECT * FROM sid_%s.orders_%s', i / 4, i) ORDER BY i)"
  . " FROM generate_series(0, 15) i)";
$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('es', '$url');
	SELECT ecp.create_task('orders', 'es', 'orders', queries => $QUERIES,
	                       options => '{"parallelism": 4, "batch_size": 1000}');
});

# The statements mysql_fdw ran against orders_* tables while $code ran:
# [table number, statement].  mysql_fdw prepares each statement and then
# executes it: the Execute lines are the statements that ran.
sub remote_statements
{
	my ($code) = @_;
	$my->query(q{
		SET GLOBAL log_output = 'TABLE';
		TRUNCATE mysql.general_log;
		SET GLOBAL general_log = 1;
	});
	$code->();
	$my->query('SET GLOBAL general_log = 0');
	my @rows = $my->rows(q{
		SELECT REPLACE(REPLACE(CONVERT(argument USING utf8mb4), '\n', ' '), '\t', ' ')
		  FROM mysql.general_log
		 WHERE command_type IN ('Query', 'Execute')
		   AND user_host LIKE '%127.0.0.1%'
		   AND CONVERT(argument USING utf8mb4) LIKE '%orders\_%'
		 ORDER BY event_time});
	$my->query('TRUNCATE mysql.general_log');
	return map { $_->[0] =~ /`orders_(\d+)`/ ? [ $1, $_->[0] ] : () } @rows;
}

# table number => [ids in its `id` IN (...) statements], and how many
# such statements each table got
sub ids_asked
{
	my (@stmts) = @_;
	my (%ids, %n);
	for (@stmts)
	{
		my ($table, $sql) = @$_;
		next unless $sql =~ /`id`\s+IN\s+\(([^)]*)\)/i;
		$n{$table}++;
		push @{ $ids{$table} }, sort { $a <=> $b } map { s/\D//gr } split /,/, $1;
	}
	return (\%ids, \%n);
}

sub run_ids
{
	my ($task, @ids) = @_;
	my $run = $node->safe_psql('postgres',
		"SELECT ecp.start('$task', ids => ARRAY[" . join(', ', map { "'$_'" } @ids) . '])');
	my $state = EcpTest::wait_for_run($node, $run, 'succeeded', 120);
	return ($run, $state);
}

sub counters
{
	my ($run) = @_;
	return $node->safe_psql('postgres',
		"SELECT processed || ' ' || deleted || ' ' || missing FROM ecp.progress WHERE run_id = $run");
}

# numbers compared as numbers (the stand-in may write 12.30 as 12.3)
sub numeric_values
{
	my ($h) = @_;
	return undef unless ref $h eq 'HASH';
	return { map { my $v = $h->{$_}; ($_ => (defined $v && $v =~ /^-?\d+(?:\.\d+)?$/ ? $v + 0 : $v)) } keys %$h };
}
my $json = JSON::PP->new;

# The ids of @ids whose document differs from its row (or that exist on
# one side only).
sub differing
{
	my ($index, @ids) = @_;
	$es->refresh($index);
	my %row = map { my ($id, $doc) = split /\|/, $_, 2; ($id => numeric_values($json->decode($doc))) }
	  split /\n/, $node->safe_psql('postgres',
		'SELECT id, to_jsonb(o) FROM all_orders o WHERE id = ANY (ARRAY[' . join(', ', @ids) . '])');
	my @bad;
	for my $id (@ids)
	{
		my $doc = numeric_values($es->doc($index, $id));
		push @bad, $id
		  unless (!defined $doc && !defined $row{$id})
		  || (defined $doc && defined $row{$id} && $json->canonical->encode($doc) eq $json->canonical->encode($row{$id}));
	}
	return @bad;
}

# --- a full sync ----------------------------------------------------------------
my $run = $node->safe_psql('postgres', "SELECT ecp.start('orders')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'the full sync of 16 queries succeeds');
$es->refresh('orders');
is($es->count('orders'), $NROWS, 'the index holds 32,000 orders');

# --- drift -----------------------------------------------------------------------
my @gone_in_index = (101 .. 110);    # tables 5 .. 14
my @changed       = (211 .. 215);    # tables 3 .. 7
my @gone_in_db    = (320, 321, 322); # tables 0, 1, 2
my @drift = (@gone_in_index, @changed, @gone_in_db);
sub drift_index
{
	$es->bulk(join('', (map { qq({"delete":{"_index":"orders","_id":"$_"}}\n) } @gone_in_index),
		(map { qq({"index":{"_index":"orders","_id":"$_"}}\n{"id":$_,"customer":"changed by hand"}\n) } @changed)),
		refresh => 'true');
}
drift_index();
$my->query(join(' ', map { 'DELETE FROM ' . db_of($_ % 16) . '.orders_' . ($_ % 16) . " WHERE id = $_;" } @gone_in_db));
is(scalar(differing('orders', @drift)), 18, 'drift: the 18 ids differ between the index and the source');

# --- an id run without shard_of: every query is asked for every id -------------
my $state;
my @remote = remote_statements(sub { ($run, $state) = run_ids('orders', @drift) });
is($state, 'succeeded', 'the id run of the task of queries succeeds');
is(counters($run), '15 0 3', 'it sent 15 documents; the 3 rows deleted in MariaDB are missing');
is_deeply([ differing('orders', @gone_in_index, @changed) ], [],
	'the 15 documents deleted or changed in the index equal their rows again');
is(scalar(grep { defined $es->doc('orders', $_) } @gone_in_db), 3,
	'without delete_missing the documents of the 3 deleted rows stay');
my ($asked, $statements) = ids_asked(@remote);
my @sorted_drift = sort { $a <=> $b } @drift;
is_deeply([ map { $statements->{$_} // 0 } 0 .. $NTABLES - 1 ], [ (1) x $NTABLES ],
	'the general log: one `id` IN (...) statement against each of the 16 tables')
  or diag(join("\n", map { $_->[1] } @remote[ 0 .. ($#remote < 5 ? $#remote : 5) ]));
is(scalar(grep { join(',', @{ $asked->{$_} // [] }) eq join(',', @sorted_drift) } 0 .. $NTABLES - 1), $NTABLES,
	'... each naming the 18 ids');
is($es->count('orders'), $NROWS, 'the index holds 32,000 documents (3 of them of deleted rows)');

# --- with shard_of and delete_missing: only the table of each id --------------
$node->safe_psql('postgres', q{
	UPDATE ecp.task SET options = options || '{"shard_of": "(id % 16) + 1", "delete_missing": true}'
	 WHERE name = 'orders'});
drift_index();
is(scalar(differing('orders', @drift)), 18, 'drift again: the 18 ids differ');
@remote = remote_statements(sub { ($run, $state) = run_ids('orders', @drift) });
is($state, 'succeeded', 'the id run with shard_of succeeds');
is(counters($run), '15 3 0', 'it sent 15 documents and deleted the 3 of the deleted rows; none missing');
is_deeply([ differing('orders', @drift) ], [], 'the index equals the source for the 18 ids');
$es->refresh('orders');
is($es->count('orders'), $NROWS - 3, 'the index holds the 31,997 orders there are');
($asked, $statements) = ids_asked(@remote);
my %holds;
push @{ $holds{ $_ % 16 } }, $_ for @sorted_drift;
is_deeply($asked, \%holds,
	'the general log: the tables that hold some of the ids were asked for just those ('
	  . join(' ', map { "$_:" . join(',', @{ $holds{$_} }) } sort { $a <=> $b } keys %holds) . ')');
is_deeply([ sort { $a <=> $b } grep { $statements->{$_} != 1 } keys %$statements ], [],
	'... one statement each, and no `id` IN (...) against orders_15, which holds none');

# --- an id two queries return; a shard_of that names no query ------------------
$node->safe_psql('postgres', qq{
	SELECT ecp.create_task('every_query', 'es', 'dup', queries => $QUERIES);
});
# 32,001 belongs in orders_1 (queries[2]); a copy in orders_2 (queries[3])
$my->query(q{INSERT INTO sid_0.orders_1 VALUES (32001, 'in its own table', 1.00);
             INSERT INTO sid_0.orders_2 VALUES (32001, 'in another table', 2.00);});
($run, $state) = run_ids('every_query', '32001', '5');
is($state, 'succeeded', 'an id run over an id that two tables hold succeeds');
is(counters($run), '3 0 0', 'both documents of the id are sent, and the other id\'s');
$es->refresh('dup');
is($es->doc('dup', '32001')->{customer}, 'in another table', 'the later query\'s document stays in the index');
is($node->safe_psql('postgres', "SELECT content - 'part' FROM ecp.flow WHERE run_id = $run AND action = 'duplicate ids'"),
	'{"ids": 1, "first": [{"id": "32001", "queries": [2, 3]}]}',
	'a flow row "duplicate ids" names the id and the two queries');
# shard_of, 0-based by mistake: id 16 is in no query's number
$node->safe_psql('postgres', q{
	UPDATE ecp.task SET options = options || '{"shard_of": "id % 16"}' WHERE name = 'every_query'});
$run = $node->safe_psql('postgres', "SELECT ecp.start('every_query', ids => ARRAY['17', '16'])");
is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed', 'a shard_of that gives 0 fails the run');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
	qr/option "shard_of" of task "every_query" gives 0 for id "16", not the number of one of its 16 queries/,
	'... and says which id and what it gave');
$my->query('DELETE FROM sid_0.orders_1 WHERE id = 32001; DELETE FROM sid_0.orders_2 WHERE id = 32001;');

# --- retry_failed: dead letters of a task of queries ---------------------------
# the transform adds "flag" to the orders with id % 997 = 3 (in every
# table), and the stand-in refuses documents with that field
$node->safe_psql('postgres', qq{
	CREATE FUNCTION public.flag(doc jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS \$\$
		SELECT CASE WHEN (doc->>'id')::bigint % 997 = 3 THEN doc || '{"flag": true}' ELSE doc END
	\$\$;
	SELECT ecp.create_task('flagged', 'es', 'flagged', queries => $QUERIES,
	                       options => '{"parallelism": 4, "batch_size": 1000, "transform": "public.flag"}');
});
my $flagged = $node->safe_psql('postgres', 'SELECT count(*) FROM all_orders WHERE id % 997 = 3');
my $flagged_tables = $node->safe_psql('postgres', 'SELECT count(DISTINCT id % 16) FROM all_orders WHERE id % 997 = 3');
$es->set_faults({ poison_field => 'flag' });
$run = $node->safe_psql('postgres', "SELECT ecp.start('flagged')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'the full run with refused documents succeeds');
is($node->safe_psql('postgres', "SELECT count(DISTINCT doc_id) FROM ecp.failed_docs WHERE run_id = $run"),
	$flagged, "its dead letters are the $flagged flagged orders, from $flagged_tables tables");
$es->clear_faults;
my $retry = $node->safe_psql('postgres', "SELECT ecp.retry_failed($run)");
is(EcpTest::wait_for_run($node, $retry, 'succeeded', 120), 'succeeded', 'ecp.retry_failed of the sharded run succeeds');
is(counters($retry), "$flagged 0 0", "it sent the $flagged documents again, none missing");
$es->refresh('flagged');
is($es->count('flagged'), $NROWS - 3, 'the index holds every order');
is($es->doc('flagged', '3')->{flag}, JSON::PP::true, 'a flagged order is there, as the transform made it');

# --- verify and repair of the sharded task, without and with shard_of ----------
# (issue 23) drift in both places; ecp.verify with extra finds exactly the
# drifted ids (the walk of the index looks its ids up in the 16 queries,
# or in the one shard_of names); ecp.repair fixes them; a second verify is
# clean.
my @verify_rounds = (
	[ 'without shard_of', q{UPDATE ecp.task SET options = options - 'shard_of' WHERE name = 'orders'},
	  [ 501 .. 510 ], [ 611 .. 615 ], [ 720, 721, 722 ] ],
	[ 'with shard_of', q{UPDATE ecp.task SET options = options || '{"shard_of": "(id % 16) + 1"}' WHERE name = 'orders'},
	  [ 801 .. 810 ], [ 911 .. 915 ], [ 1020, 1021, 1022 ] ]);
for my $round (@verify_rounds)
{
	my ($how, $set, $index_gone, $index_changed, $db_gone) = @$round;
	$node->safe_psql('postgres', $set);
	$es->bulk(join('', (map { qq({"delete":{"_index":"orders","_id":"$_"}}\n) } @$index_gone),
		(map { qq({"index":{"_index":"orders","_id":"$_"}}\n{"id":$_,"customer":"changed by hand","amount":1.00}\n) } @$index_changed)),
		refresh => 'true');
	$my->query(join(' ', map { 'DELETE FROM ' . db_of($_ % 16) . '.orders_' . ($_ % 16) . " WHERE id = $_;" } @$db_gone));
	my $verify = $node->safe_psql('postgres', q{SELECT ecp.verify('orders', '{"extra": true}')});
	is(EcpTest::wait_for_run($node, $verify, 'succeeded', 240), 'succeeded', "verify $how succeeds");
	is($node->safe_psql('postgres', "SELECT string_agg(id || ' ' || kind, ', ' ORDER BY id::integer) FROM ecp.drift WHERE run_id = $verify"),
		join(', ', (map { "$_ missing" } @$index_gone), (map { "$_ stale" } @$index_changed), (map { "$_ extra" } @$db_gone)),
		"verify $how finds the 18 drifted ids over the shards, each with its kind");
	my $repair = $node->safe_psql('postgres', "SELECT ecp.repair($verify)");
	is(EcpTest::wait_for_run($node, $repair, 'succeeded', 120), 'succeeded', "the repair $how succeeds");
	is(counters($repair), '15 3 0', "the repair $how sent 15 documents again and deleted 3");
	is_deeply([ differing('orders', @$index_gone, @$index_changed, @$db_gone) ], [],
		"after the repair $how the index equals the source for the 18 ids");
	my $again = $node->safe_psql('postgres', q{SELECT ecp.verify('orders', '{"extra": true}')});
	is(EcpTest::wait_for_run($node, $again, 'succeeded', 240), 'succeeded', "a second verify $how succeeds");
	is($node->safe_psql('postgres', "SELECT missing + stale + extra FROM ecp.drift_summary WHERE run_id = $again"),
		'0', "the second verify $how finds nothing");
}

$node->stop;
# the next test files get MariaDB as they would without this one
$my->query(join(' ', map { "DROP DATABASE sid_$_;" } 0 .. $NDBS - 1));
done_testing();
