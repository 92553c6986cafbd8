# ecp reading MySQL through mysql_fdw: a task over a foreign table pages by
# key windows (WHERE key > $a AND key <= $b, ORDER BY and LIMIT kept local),
# never by a pushed ORDER BY ... LIMIT, which MySQL answers with a filesort
# of all remaining rows for every page (020_mysql_fdw.pl shows what
# mysql_fdw pushes down in each case).
#
# What MariaDB was asked is read from its general log.  Also: windows adapt
# to dense, gappy and sparse keys and deliver every row exactly once; the
# paging option forces keyset or windows; a text key over a foreign table
# falls back to keyset and says so in the log; windows over a local table with
# negative keys and a NULL key.
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
EsdServer->require_stand_in('bulk_items counts');

# 40,000 rows in four regions: every third key, a dense block after a gap
# of millions, keys 256 apart (one table of a 16 x 16 sharding), and right
# after those a dense block again (windows sized for sparse keys meet it).
my $NROWS = 40000;
my @keys = ((map { $_ * 3 } 1 .. 10000), (map { 5000000 + $_ } 1 .. 10000),
	(map { 9000000 + $_ * 256 } 1 .. 10000), (map { 11560000 + $_ } 1 .. 10000));
$my->query(q{
	DROP TABLE IF EXISTS win_orders;
	CREATE TABLE win_orders (
		id       BIGINT PRIMARY KEY,
		code     VARCHAR(20) NOT NULL,
		customer VARCHAR(64) NOT NULL,
		amount   DECIMAL(12,2) NOT NULL
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
	INSERT INTO win_orders SELECT seq * 3, CONCAT('a', seq), CONCAT('cust-', seq % 97), seq / 100 FROM seq_1_to_10000;
	INSERT INTO win_orders SELECT 5000000 + seq, CONCAT('b', seq), 'dense', seq / 100 FROM seq_1_to_10000;
	INSERT INTO win_orders SELECT 9000000 + seq * 256, CONCAT('c', seq), 'sparse', seq / 100 FROM seq_1_to_10000;
	INSERT INTO win_orders SELECT 11560000 + seq, CONCAT('d', seq), 'dense again', seq / 100 FROM seq_1_to_10000;
});
is($my->query('SELECT COUNT(*) FROM win_orders'), $NROWS, 'MariaDB: win_orders loaded');

my $node = EcpTest::new_node('windows',
	conf => [ 'restart_after_crash = on', 'ecp.recovery_timeout = 2', 'ecp.heartbeat_interval = 1' ]);
my $es = EsdServer->start();
my $url = $es->url;
$my->setup_fdw($node, 'postgres', 'shard_00');
$node->safe_psql('postgres', qq{
	IMPORT FOREIGN SCHEMA ecp_test LIMIT TO (win_orders) FROM SERVER shard_00 INTO public;
	SELECT ecp.create_consumer('es', '$url');
});

# The statements MariaDB received while $code ran (Query, Prepare, Execute).
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
		 WHERE command_type IN ('Query', 'Prepare', 'Execute')
		   AND CONVERT(argument USING utf8mb4) LIKE '%win_orders%'
		   AND CONVERT(argument USING utf8mb4) NOT LIKE '%general_log%'});
	$my->query('TRUNCATE mysql.general_log');
	return map { $_->[0] } @rows;
}

sub sync_task
{
	my ($task, $expect_state) = @_;
	my $before = $es->stats->{bulk_items};
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$task')");
	my $state = EcpTest::wait_for_run($node, $run, $expect_state // 'succeeded', 180);
	return ($run, $state, $es->stats->{bulk_items} - $before);
}

# --- auto: a foreign table with an integer key pages by windows -------------
$node->safe_psql('postgres', q{
	SELECT ecp.create_task('win', 'es', 'win', query => 'SELECT * FROM win_orders',
	                       options => '{"batch_size": 1000}');
});
my $log_offset = -s $node->logfile;
my ($run, $state, $sent);
my @remote = remote_statements(sub { ($run, $state, $sent) = sync_task('win') });
is($state, 'succeeded', 'a sync of the foreign table succeeds');
is($sent, $NROWS, "every row was sent once ($sent items for $NROWS rows)");
$es->refresh('win');
is($es->count('win'), $NROWS, 'the index holds every id');
is_deeply($es->doc('win', '9002560'),
	{ id => 9002560, code => 'c10', customer => 'sparse', amount => 0.10 },
	'a document is to_jsonb of its row');
like(slurp_file($node->logfile, $log_offset), qr/reads the source in key windows of "id"/,
	'the worker says it reads in key windows');
# mysql_fdw tells the planner 1000 rows; windows estimate from the keys
is($node->safe_psql('postgres',
		"SELECT p.total || ' ' || r.total_is_estimate || ' ' || p.percent FROM ecp.progress p JOIN ecp.run r ON r.id = p.run_id WHERE run_id = $run"),
	"$NROWS true 100.0", 'the estimated total ends at the rows read (not the planner\'s 1000)');

my @windows = grep { /`id` > .*`id` <= /i && !/count\(/i } @remote;
my @sorted = grep { /ORDER BY/i } @remote;
my @limited = grep { /\bLIMIT\b/i && !/\bLIMIT 0\b/i } @remote;
is(scalar(@sorted), 0, 'no statement sent to MariaDB has an ORDER BY')
  or diag(join("\n", @sorted[0 .. ($#sorted < 4 ? $#sorted : 4)]));
is(scalar(@limited), 0, 'no statement sent to MariaDB has a LIMIT')
  or diag(join("\n", @limited[0 .. ($#limited < 4 ? $#limited : 4)]));
ok((grep { /SELECT min\(`id`\), max\(`id`\) FROM/i } @remote),
	'the key range is one min/max aggregate answered by MariaDB (no sort)');
# 40 pages of 1,000 at least; adapting to the density costs a few more
ok(@windows >= 40 && @windows <= 200,
	scalar(@windows) . ' key-window statements for 40,000 rows in pages of 1,000');

# No window fetched more than 4 pages of rows (mysql_fdw buffers a whole
# result), also where keys 256 apart turn dense: wide windows are counted
# by MariaDB first and narrowed.
sub keys_in
{
	my ($lo, $hi) = @_;
	return scalar grep { $_ > $lo && $_ <= $hi } @keys;
}
my $largest = 0;
for (@windows)
{
	next unless /`id` > (-?\d+)\)\) AND \(\(`id` <= (-?\d+)/;
	my $n = keys_in($1, $2);
	$largest = $n if $n > $largest;
}
ok($largest >= 1000 && $largest <= 4000,
	"the largest window held $largest rows (a page is 1,000, the bound 4,000)");
ok((grep { /SELECT count\(\*\) FROM/i } @remote),
	'wide windows were counted by MariaDB before they were read');

# --- ecp.retry_failed over windows: the ids go to MariaDB, no scan ------------
# (the failed documents of the first run are made up: the sink refused none)
$node->safe_psql('postgres', qq{
	INSERT INTO ecp.failed_doc (run_id, doc_id, status, error_type, reason, owner)
	SELECT $run, d, 400, 'mapper_parsing_exception', 'made up', current_user::regrole
	  FROM unnest(ARRAY['6', '5000001', '9002560', '11570000']) d;
});
my $retry;
@remote = remote_statements(sub {
	$retry = $node->safe_psql('postgres', "SELECT ecp.retry_failed($run)");
	EcpTest::wait_for_run($node, $retry, 'succeeded', 60);
});
is($node->safe_psql('postgres', "SELECT state || ' ' || processed FROM ecp.progress WHERE run_id = $retry"),
	'succeeded 4', 'retry_failed over windows sends the 4 failed ids');
# (LIMIT 0: the column types, no row; ?: a statement prepared, then executed)
my @by_ids = grep { /`id`\s+IN \(/i } @remote;
my @ids_asked = grep { my $id = $_; grep { /\b$id\b/ } @by_ids } ('6', '5000001', '9002560', '11570000');
is(scalar(@ids_asked), 4, 'MariaDB was asked for the 4 failed ids by `id` IN (...) ('
	  . scalar(@by_ids) . ' statements; without them the next check would pass on an empty log)')
  or diag(join("\n", @remote[0 .. ($#remote < 9 ? $#remote : 9)]));
my @unfiltered = grep { !/`id`\s+IN \(/i && !/\bLIMIT 0$/ && !/\?/ } @remote;
is(scalar(@unfiltered), 0, 'every statement that reads rows names the ids (`id` IN (...))')
  or diag(join("\n", @unfiltered[0 .. ($#unfiltered < 4 ? $#unfiltered : 4)]));

# --- pause, resume and a killed worker, in the middle of windows --------------
# Each bulk request takes 100 ms (40 pages): time enough to pause and to kill.
$node->safe_psql('postgres', q{
	SELECT ecp.create_task('win2', 'es', 'win2', query => 'SELECT * FROM win_orders',
	                       options => '{"batch_size": 1000}');
});
$es->set_faults({ delay_ms => 100 });
my $items_before = $es->stats->{bulk_items};
$run = $node->safe_psql('postgres', "SELECT ecp.start('win2')");
ok(EcpTest::poll($node, "SELECT processed >= 5000 FROM ecp.progress WHERE run_id = $run", 60),
	'windows, interrupted run: progress');
$node->safe_psql('postgres', "SELECT ecp.pause($run)");
ok(EcpTest::poll($node,
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 10),
	'windows: the worker stops after pause');
my ($done_at_pause, $total_at_pause) = split /\|/, $node->safe_psql('postgres',
	"SELECT processed, total FROM ecp.progress WHERE run_id = $run");
ok($total_at_pause > $done_at_pause,
	"windows: mid-run the estimated total ($total_at_pause) exceeds what is done ($done_at_pause)");
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
ok(EcpTest::poll($node, "SELECT processed >= 15000 FROM ecp.progress WHERE run_id = $run", 60),
	'windows: the resumed run goes on');
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp worker'");
ok($pid =~ /^\d+$/ && kill('KILL', $pid), "windows: worker $pid killed with SIGKILL");
$es->clear_faults;
ok($node->poll_query_until('postgres', 'SELECT true'), 'the server is back after the crash');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded',
	'windows: the run recovers and finishes');
is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"),
	$NROWS, 'windows: processed counts every row once');
$es->refresh('win2');
is($es->count('win2'), $NROWS, 'windows: no id is missing after pause, resume and a crash');
$sent = $es->stats->{bulk_items} - $items_before;
# After the pause, at most the page in flight is sent again.  After the
# kill, the pages whose checkpoints had not reached the disk too: a
# checkpoint's commit is asynchronous, flushed within 3 x wal_writer_delay
# (200 ms by default): at 100 ms a request, at most 6 pages, plus the one
# in flight (as in 041).
ok($sent >= $NROWS && $sent <= $NROWS + 9 * 1000,
	"windows: every row arrived, at most a page each time again ($sent items)");

# --- MariaDB drops the connection mid-run: the read is retried -----------------
# KILL CONNECTION makes mysql_fdw's next query fail ("server has gone away",
# SQLSTATE HV00L); mysql_fdw forgets the connection and makes a new one.
$node->safe_psql('postgres', q{
	SELECT ecp.create_task('win3', 'es', 'win3', query => 'SELECT * FROM win_orders',
	                       options => '{"batch_size": 1000, "retry_base_ms": 100}');
});
$es->set_faults({ delay_ms => 100 });
$run = $node->safe_psql('postgres', "SELECT ecp.start('win3')");
ok(EcpTest::poll($node, "SELECT processed >= 5000 FROM ecp.progress WHERE run_id = $run", 60),
	'connection killed: the run makes progress');
my $killed = 0;
for my $attempt (1 .. 2)
{
	for my $row ($my->rows(q{
		SELECT ID FROM information_schema.PROCESSLIST
		 WHERE USER = 'ecp' AND ID <> CONNECTION_ID() AND COMMAND <> 'Daemon'}))
	{
		$my->query("KILL CONNECTION $row->[0]");
		$killed++;
	}
	last if EcpTest::poll($node,
		"SELECT count(*) >= 1 FROM ecp.flow WHERE run_id = $run AND action = 'retry' AND content->>'source' = 'true'", 5);
}
ok($killed >= 1, "MariaDB killed $killed connection(s) of mysql_fdw");
like($node->safe_psql('postgres',
		"SELECT content->>'error' FROM ecp.flow WHERE run_id = $run AND action = 'retry' AND content->>'source' = 'true' LIMIT 1"),
	qr/MySQL.*\(SQLSTATE HV00L\)/s, 'the lost connection is a retry of the source');
$es->clear_faults;
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'connection killed: the run finishes');
$es->refresh('win3');
is($es->count('win3'), $NROWS, 'connection killed: no id is missing');

# --- paging keyset: the same source by pushed keyset pages ------------------
$node->safe_psql('postgres', q{
	SELECT ecp.create_task('keyset', 'es', 'keyset', query => 'SELECT * FROM win_orders',
	                       options => '{"batch_size": 5000, "paging": "keyset"}');
});
@remote = remote_statements(sub { ($run, $state, $sent) = sync_task('keyset') });
is($state, 'succeeded', 'paging keyset: the sync succeeds');
is($sent, $NROWS, 'paging keyset: every row sent once');
ok((grep { /ORDER BY/i && /LIMIT 5001/i } @remote) >= 6,
	'paging keyset: MariaDB gets ORDER BY ... LIMIT pages (what windows avoid)');

# --- a text key over a foreign table: keyset, with a warning ----------------
$node->safe_psql('postgres', q{
	SELECT ecp.create_task('textkey', 'es', 'textkey',
	                       query => 'SELECT code, id FROM win_orders WHERE id < 3000',
	                       options => '{"batch_size": 300}');
});
$log_offset = -s $node->logfile;
($run, $state, $sent) = sync_task('textkey');
is($state, 'succeeded', 'a text key over a foreign table: the sync succeeds');
is($sent, 999, 'a text key over a foreign table: every row sent once');
like(slurp_file($node->logfile, $log_offset),
	qr/LOG:.*task "textkey" reads a foreign table by keyset pages: its key column "code" is character varying/,
	'a text key over a foreign table: the log says why windows are not used');

# --- paging window needs an integer key ---------------------------------------
$node->safe_psql('postgres', q{
	SELECT ecp.create_task('badwin', 'es', 'badwin', query => 'SELECT code, id FROM win_orders',
	                       options => '{"paging": "window"}');
});
($run, $state) = sync_task('badwin', 'failed');
is($state, 'failed', 'paging window with a text key: the run fails');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/option "paging" 'window' needs an integer key column, and "code" is character varying/,
	'paging window with a text key: last_error says what to change');

my ($rc, $out, $err) = $node->psql('postgres', q{
	UPDATE ecp.task SET options = options || '{"paging": "windows"}' WHERE name = 'win'});
like($err, qr/option "paging" must be auto, keyset, window or cursor, not "windows"/,
	'an UPDATE to an unknown paging value is refused');

# --- windows over a local table: negative keys, gaps, a NULL key ------------
$node->safe_psql('postgres', q{
	CREATE TABLE local_sparse (k int, v text);
	INSERT INTO local_sparse SELECT g * 7919 - 40000000, 'v' || g FROM generate_series(1, 5000) g;
	INSERT INTO local_sparse SELECT g, 'dense' FROM generate_series(100000, 102999) g;
	INSERT INTO local_sparse VALUES (NULL, 'no key'), (2147483647, 'int max');
	SELECT ecp.create_task('local', 'es', 'local', query => 'SELECT * FROM local_sparse',
	                       options => '{"batch_size": 700, "paging": "window"}');
});
($run, $state, $sent) = sync_task('local');
is($state, 'succeeded', 'paging window over a local table: the sync succeeds');
is($sent, 8001, 'paging window over a local table: every keyed row sent once (8001)');
$es->refresh('local');
is($es->count('local'), 8001, 'paging window over a local table: the index holds every keyed row');
like($node->safe_psql('postgres', "SELECT reason FROM ecp.failed_docs WHERE run_id = $run AND error_type = 'null_key'"),
	qr/^1 rows have NULL in key column "k"/, 'paging window over a local table: the NULL key is reported, not skipped');

$node->stop;
done_testing();
