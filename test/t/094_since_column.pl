# Incremental runs with task option since_column, over a real MariaDB
# table through mysql_fdw and over a local PostgreSQL table.
#
# MariaDB: since_db.orders, 20,000 rows whose updated_at is 2020-01-01
# plus id seconds (one row a second, the last at 05:33:20), with an index
# on updated_at; a task over it with since_column updated_at and the
# default since_overlap of 60 seconds.
#   - run 1 (no watermark yet) reads every row; the watermark becomes the
#     largest updated_at, 2020-01-01 05:33:20, and the flow says so;
#   - 100 rows are updated in MariaDB (amount and updated_at) and 50
#     inserted; run 2 reads only rows from 05:32:20 on: those 150 and the
#     61 old rows of the last 60 seconds (ids 19,940 .. 20,000), so its
#     count is between 150 and 211; the index holds the new amounts and
#     the new rows; MariaDB's general log shows the range on updated_at
#     in every statement against the table (with no ORDER BY or LIMIT),
#     and EXPLAIN VERBOSE shows it in mysql_fdw's remote query; the
#     watermark is now MariaDB's MAX(updated_at);
#   - a failed run does not move the watermark: 30 rows move an hour on,
#     the run acknowledges their batch (its part keeps that value) and
#     then fails on a refused _bulk; the watermark stays, and moves when
#     the resumed run succeeds;
#   - ecp.reset_watermark: the next run reads all 20,050 rows;
#   - a task of two queries (orders and orders_b) keeps one watermark per
#     query: a change in orders_b moves only its own.
# PostgreSQL: a local table with a timestamptz since_column and
# parallelism 2 (key ranges): the second run reads only the changed rows
# and the overlap, the watermark is the table's max(updated_at).
#
# Needs the MariaDB of test/scripts/mariadb.sh (make test starts it);
# without it this test FAILS on purpose.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EcpMysql;
use EsdServer;

my $my = EcpMysql->require_env;
EsdServer->require_stand_in('faults, counts');

my $NROWS = 20000;
my $BASE  = '2020-01-01 00:00:00';
# the last old row's updated_at, and where a run after it reads from
my $W1    = '2020-01-01 05:33:20';
my $FROM1 = '2020-01-01 05:32:20';
my $OVERLAP_ROWS = 61;    # ids 19,940 .. 20,000: one a second from $FROM1 to $W1

$my->query(qq{
	DROP DATABASE IF EXISTS since_db;
	CREATE DATABASE since_db CHARACTER SET utf8mb4;
	CREATE TABLE since_db.orders (
		id         BIGINT PRIMARY KEY,
		customer   VARCHAR(64) NOT NULL,
		amount     DECIMAL(12,2) NOT NULL,
		updated_at DATETIME NOT NULL,
		KEY (updated_at)
	) ENGINE=InnoDB;
	INSERT INTO since_db.orders
	SELECT seq, CONCAT('cust-', seq % 97), seq % 1000, TIMESTAMP'$BASE' + INTERVAL seq SECOND
	  FROM seq_1_to_$NROWS;
	CREATE TABLE since_db.orders_b LIKE since_db.orders;
	INSERT INTO since_db.orders_b
	SELECT seq, CONCAT('b-', seq), seq, TIMESTAMP'$BASE' + INTERVAL seq MINUTE FROM seq_1_to_2000;
});
is($my->query('SELECT COUNT(*), MAX(updated_at) FROM since_db.orders'), "$NROWS\t$W1",
	"MariaDB: $NROWS orders, the last updated at $W1");

my $node = EcpTest::new_node('since', conf => ['ecp.max_workers = 4']);
my $es   = EsdServer->start();
my $url  = $es->url;
$my->setup_fdw($node, 'postgres', 'since_db');
$node->safe_psql('postgres', q{
	CREATE SCHEMA since_db;
	IMPORT FOREIGN SCHEMA since_db FROM SERVER since_db INTO since_db;
});
$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('es', '$url');
	SELECT ecp.create_task('orders', 'es', 'orders', query => 'SELECT * FROM since_db.orders',
	                       options => '{"since_column": "updated_at", "batch_size": 1000}');
});

sub run_task
{
	my ($task) = @_;
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$task')");
	my $state = EcpTest::wait_for_run($node, $run, 'succeeded', 180);
	return ($run, $state);
}

sub processed
{
	my ($run) = @_;
	return $node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run");
}

sub watermark
{
	my ($task) = @_;
	return $node->safe_psql('postgres', "SELECT watermark FROM ecp.tasks WHERE name = '$task'");
}

sub flow_watermark
{
	my ($run) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(content->>'used', '') || ' -> ' || (content->>'new') FROM ecp.flow"
		  . " WHERE run_id = $run AND action = 'watermark'");
}

# Statements mysql_fdw sent while the general log was on (over TCP; this
# test's own client uses the socket) that name the table.
sub general_log_on
{
	$my->query(q{
		SET GLOBAL log_output = 'TABLE';
		TRUNCATE mysql.general_log;
		SET GLOBAL general_log = 1;
	});
}

sub general_log_off
{
	my ($table) = @_;
	$my->query('SET GLOBAL general_log = 0');
	my @rows = map { $_->[0] } $my->rows(qq{
		SELECT REPLACE(REPLACE(CONVERT(argument USING utf8mb4), '\\n', ' '), '\\t', ' ')
		  FROM mysql.general_log
		 WHERE command_type IN ('Query', 'Prepare', 'Execute')
		   AND user_host LIKE '%127.0.0.1%'
		   AND CONVERT(argument USING utf8mb4) LIKE '%`$table`%'
		 ORDER BY event_time});
	$my->query('TRUNCATE mysql.general_log');
	# mysql_fdw learns the column types with LIMIT 0: it reads no row
	return grep { !/\bLIMIT 0\s*$/i } @rows;
}

# --- run 1: no watermark yet, the whole table -----------------------------------
my ($run, $state) = run_task('orders');
is($state, 'succeeded', 'run 1 succeeds');
is(processed($run), $NROWS, "run 1 reads all $NROWS rows");
$es->refresh('orders');
is($es->count('orders'), $NROWS, "run 1: the index holds $NROWS documents");
is(watermark('orders'), $W1, "run 1: the watermark is the largest updated_at, $W1");
is(flow_watermark($run), " -> $W1", 'run 1: the flow row "watermark" says none was used, and the new one');
is($node->safe_psql('postgres', "SELECT since_max FROM ecp.part WHERE run_id = $run"), $W1,
	'run 1: the part kept the largest value it acknowledged');

# --- run 2: 100 updated, 50 inserted ---------------------------------------------
$my->query(qq{
	UPDATE since_db.orders SET amount = amount + 5000, updated_at = NOW() WHERE id <= 100;
	INSERT INTO since_db.orders
	SELECT $NROWS + seq, 'new', 7777, NOW() FROM seq_1_to_50;
});
my $max2 = $my->query('SELECT MAX(updated_at) FROM since_db.orders');
general_log_on();
($run, $state) = run_task('orders');
my @remote = general_log_off('orders');
is($state, 'succeeded', 'run 2 succeeds');
my $n2 = processed($run);
ok($n2 >= 150 && $n2 <= 150 + $OVERLAP_ROWS,
	"run 2 reads the 150 changed rows and the overlap's old ones: $n2 (150 .. " . (150 + $OVERLAP_ROWS) . ')');
is($n2, 150 + $OVERLAP_ROWS, "run 2: exactly those (the overlap holds $OVERLAP_ROWS old rows)");
$es->refresh('orders');
is($es->count('orders'), $NROWS + 50, 'run 2: the index holds the 50 new rows too');
is(join(' ', map { my $d = $es->doc('orders', $_); $d ? $d->{amount} + 0 : 'missing' } 1, 50, 100, 101),
	'5001 5050 5100 101', 'run 2: updated rows have their new amount in the index, an untouched row its old one');
is(join(' ', map { my $d = $es->doc('orders', $_); $d ? $d->{customer} : 'missing' } $NROWS + 1, $NROWS + 50),
	'new new', 'run 2: inserted rows are in the index');
my @with_range = grep { /`updated_at` >= '\Q$FROM1\E'/ } @remote;
ok(@remote > 0 && @with_range == @remote,
	'run 2: every statement against orders in the general log has the range on updated_at ('
	  . scalar(@with_range) . ' of ' . scalar(@remote) . ')')
  or diag(join("\n", @remote[ 0 .. ($#remote < 4 ? $#remote : 4) ]));
is(scalar(grep { /ORDER BY|\bLIMIT\b/i } @remote), 0, 'run 2: no ORDER BY and no LIMIT went to MariaDB');
diag('run 2: MariaDB got, e.g.: ' . ((grep { /`id` > / } @with_range)[0] // '(none)'));
like($node->safe_psql('postgres', qq{
		EXPLAIN VERBOSE SELECT * FROM (SELECT * FROM since_db.orders) AS "ecp:row"
		 WHERE "ecp:row".id > 0 AND "ecp:row".id <= 1000
		   AND "ecp:row".updated_at OPERATOR(pg_catalog.>=) '$FROM1'::timestamp without time zone OFFSET 0}),
	qr/Remote query:.*`updated_at` >= '\Q$FROM1\E'/,
	'EXPLAIN VERBOSE: mysql_fdw sends the filter ecp writes in its remote query');
is(watermark('orders'), $max2, "run 2: the watermark is MariaDB's MAX(updated_at), $max2");
is(flow_watermark($run), "$W1 -> $max2", 'run 2: the flow says the watermark used and the new one');

# --- a failed run does not move the watermark -------------------------------------
# ids 1 .. 30 move an hour on: the first batch of 50 (by id) holds them
$my->query('UPDATE since_db.orders SET updated_at = NOW() + INTERVAL 1 HOUR WHERE id <= 30');
my $max3 = $my->query('SELECT MAX(updated_at) FROM since_db.orders');
$node->safe_psql('postgres',
	q{UPDATE ecp.task SET options = options || '{"batch_size": 50, "max_retries": 0}' WHERE name = 'orders'});
$es->set_faults({ bulk_reject => { status => 503, every => 3 } });
$run = $node->safe_psql('postgres', "SELECT ecp.start('orders')");
$state = EcpTest::wait_for_run($node, $run, 'failed', 180);
is($state, 'failed', 'run 3 fails on a refused _bulk');
is($node->safe_psql('postgres', "SELECT since_max FROM ecp.part WHERE run_id = $run"), $max3,
	"run 3: its part acknowledged rows up to $max3 before it failed");
is(watermark('orders'), $max2, 'run 3: the watermark stays where run 2 left it');
is(flow_watermark($run), '', 'run 3: no flow row "watermark"');
$es->clear_faults;
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
$state = EcpTest::wait_for_run($node, $run, 'succeeded', 180);
is($state, 'succeeded', 'run 3, resumed, succeeds');
is(watermark('orders'), $max3, "run 3: now the watermark moves, to $max3");
$node->safe_psql('postgres',
	q{UPDATE ecp.task SET options = options - 'max_retries' || '{"batch_size": 1000}' WHERE name = 'orders'});

# --- reset_watermark: the next run reads everything -------------------------------
my ($rc, $out, $err) = $node->psql('postgres', "SELECT ecp.reset_watermark('orders')");
like($err, qr/NOTICE:.*task "orders": watermark \Q$max3\E of since_column "updated_at" reset/,
	'reset_watermark says what it reset');
is(watermark('orders'), '', 'after the reset the task has no watermark');
($run, $state) = run_task('orders');
is($state, 'succeeded', 'run 4 succeeds');
is(processed($run), $NROWS + 50, 'run 4, after the reset, reads all ' . ($NROWS + 50) . ' rows');
is(watermark('orders'), $max3, 'run 4: the watermark is the largest updated_at again');

# --- a task of two queries: one watermark per query --------------------------------
$node->safe_psql('postgres', q{
	SELECT ecp.create_task('shards', 'es', 'shards',
	       queries => ARRAY['SELECT * FROM since_db.orders', 'SELECT * FROM since_db.orders_b'],
	       options => '{"since_column": "updated_at", "batch_size": 1000, "parallelism": 2}');
});
($run, $state) = run_task('shards');
is($state, 'succeeded', 'shards run 1 succeeds');
is(processed($run), $NROWS + 50 + 2000, 'shards run 1 reads both tables whole');
my $max_b = $my->query('SELECT MAX(updated_at) FROM since_db.orders_b');
my $watermarks = "SELECT string_agg(query_no || ' ' || value, ', ' ORDER BY query_no) FROM ecp.watermark w"
  . " JOIN ecp.task t ON t.id = w.task_id WHERE t.name = 'shards'";
is($node->safe_psql('postgres', $watermarks), "1 $max3, 2 $max_b", 'shards: each query has its own watermark');
is(watermark('shards'), $max_b, 'shards: ecp.tasks shows the smaller one');
$my->query('UPDATE since_db.orders_b SET updated_at = NOW() + INTERVAL 2 HOUR, amount = 1 WHERE id = 7');
my $max_b2 = $my->query('SELECT MAX(updated_at) FROM since_db.orders_b');
($run, $state) = run_task('shards');
is($state, 'succeeded', 'shards run 2 succeeds');
is($node->safe_psql('postgres', $watermarks), "1 $max3, 2 $max_b2",
	'shards run 2: only the watermark of orders_b moved');
is($node->safe_psql('postgres', "SELECT string_agg(part || ':' || processed, ' ' ORDER BY part) FROM ecp.parts WHERE run_id = $run"),
	'0:30 1:3', 'shards run 2: orders re-read its overlap (its 30 rows of the last run\'s last second), '
	  . 'orders_b its changed row and the 2 old ones of its last minute');

# --- a local table ---------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE items (id bigint PRIMARY KEY, note text, updated_at timestamptz NOT NULL);
	INSERT INTO items SELECT g, 'old', timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second'
	  FROM generate_series(1, 2000) g;
	CREATE INDEX ON items (updated_at);
	SELECT ecp.create_task('items', 'es', 'items', query => 'SELECT * FROM items',
	                       options => '{"since_column": "updated_at", "parallelism": 2, "batch_size": 100}');
});
($run, $state) = run_task('items');
is($state, 'succeeded', 'local run 1 succeeds');
is(processed($run), 2000, 'local run 1 reads all 2,000 rows');
is(watermark('items'), '2020-01-01 00:33:20+00', 'local run 1: the watermark, in UTC');
$node->safe_psql('postgres', q{
	UPDATE items SET note = 'changed', updated_at = now() WHERE id <= 10;
	INSERT INTO items SELECT g, 'new', now() FROM generate_series(2001, 2005) g;
});
($run, $state) = run_task('items');
is($state, 'succeeded', 'local run 2 succeeds');
my $local2 = processed($run);
ok($local2 >= 15 && $local2 <= 15 + 61, "local run 2 reads the 15 changed rows and the overlap's: $local2 (15 .. 76)");
is($local2, 76, 'local run 2: exactly those');
ok($node->safe_psql('postgres', "SELECT count(*) > 1 FROM ecp.parts WHERE run_id = $run") eq 't',
	'local run 2 was cut into key ranges');
$es->refresh('items');
is(join(' ', map { my $d = $es->doc('items', $_); $d ? $d->{note} : 'missing' } 1, 10, 11, 2005),
	'changed changed old new', 'local run 2: the index holds the changes');
is($node->safe_psql('postgres',
		"SELECT (SELECT watermark FROM ecp.tasks WHERE name = 'items')::timestamptz = max(updated_at) FROM items"),
	't', "local run 2: the watermark is the table's max(updated_at)");

$node->stop;
$my->query('DROP DATABASE since_db');
done_testing();
