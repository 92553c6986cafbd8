# Following a MariaDB table through mysql_fdw by polling (mode poll).
#
# MariaDB: poll_db.items, 5,000 rows whose updated_at is 2020-01-01 plus
# id seconds, with an index on updated_at; a task over it with
# since_column updated_at.
#   - modes decoding and trigger refuse the foreign table, pointing at
#     mode poll;
#   - ecp.follow picks mode poll and says so; its first poll run (started
#     at once) loads all 5,000 rows; the launcher then starts a run every
#     poll_interval (1 second), as the task's owner, operator "ecp follower";
#     ecp.followers shows mode poll, state following, next_poll_at;
#   - 100 updates and 50 inserts in MariaDB (bumping updated_at) reach the
#     index; every statement of the poll runs in MariaDB's general log
#     has the range on updated_at;
#   - a failed poll run stops the polling (state failed, no new run over
#     3 intervals) until it is resumed and succeeds;
#   - a paused poll run stops it too, until ecp.resume;
#   - ecp.unfollow cancels the poll run in progress; no run starts after;
#   - roles: bob cannot follow, unfollow or see alice's follower; alice
#     follows her own local table with mode => 'poll', and the launcher's
#     runs of it are hers.
#
# Needs the MariaDB of test/scripts/mariadb.sh (make test starts it);
# without it this test FAILS on purpose.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EcpFollow;
use EcpMysql;
use EsdServer;

my $my = EcpMysql->require_env;
EsdServer->require_stand_in('faults: a refused _bulk keeps a poll run retrying, or fails it');

my $NROWS = 5000;
my $BASE  = '2020-01-01 00:00:00';
my $INTERVAL = 1;    # poll_interval, seconds

$my->query(qq{
	DROP DATABASE IF EXISTS poll_db;
	CREATE DATABASE poll_db CHARACTER SET utf8mb4;
	CREATE TABLE poll_db.items (
		id         BIGINT PRIMARY KEY,
		name       VARCHAR(64) NOT NULL,
		amount     INT NOT NULL,
		updated_at DATETIME NOT NULL,
		KEY (updated_at)
	) ENGINE=InnoDB;
	INSERT INTO poll_db.items
	SELECT seq, CONCAT('item-', seq), seq, TIMESTAMP'$BASE' + INTERVAL seq SECOND FROM seq_1_to_$NROWS;
});

my $node = EcpTest::new_node('follow_poll', conf => ['ecp.max_workers = 4']);
my $es   = EsdServer->start();
my $url  = $es->url;
$my->setup_fdw($node, 'postgres', 'poll_db');
$node->safe_psql('postgres', q{
	CREATE SCHEMA poll_db;
	IMPORT FOREIGN SCHEMA poll_db FROM SERVER poll_db INTO poll_db;
});
$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('es', '$url');
	SELECT ecp.create_task('items', 'es', 'items', query => 'SELECT * FROM poll_db.items',
	       options => '{"since_column": "updated_at", "batch_size": 1000,
	                    "retry_base_ms": 100, "retry_max_ms": 300}');
});
my $task_id = $node->safe_psql('postgres', "SELECT id FROM ecp.task WHERE name = 'items'");

sub q1 { return $node->safe_psql('postgres', $_[0]) }

sub runs
{
	my ($task) = @_;
	return q1("SELECT count(*) FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id WHERE t.name = '$task'");
}

sub follower_run { return q1("SELECT run FROM ecp.followers WHERE task = '$_[0]'") }

# The index's document $id, refreshed first; undef when missing.
sub doc
{
	my ($id) = @_;
	$es->refresh('items');
	return $es->doc('items', $id);
}

# True when no run of $task starts until the database's clock is
# $intervals poll intervals past $since (a timestamptz expression, read
# once): the run count is read again and again meanwhile.  Bounded by 60 s.
sub no_new_run_until
{
	my ($task, $since, $intervals) = @_;
	my $before = runs($task);
	my $until = q1("SELECT ($since) + interval '1 second' * $INTERVAL * $intervals");
	my $changed = 0;
	my $over = EcpFollow::until_true(sub {
		$changed = 1 if runs($task) ne $before;
		return $changed || q1("SELECT clock_timestamp() > '$until'::timestamptz") eq 't';
	}, 60);
	$changed = 1 if runs($task) ne $before;
	diag("runs of $task: $before, then " . runs($task)) if $changed;
	return $over && !$changed;
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
	$my->query('SET GLOBAL general_log = 0');
	my @rows = map { $_->[0] } $my->rows(q{
		SELECT REPLACE(REPLACE(CONVERT(argument USING utf8mb4), '\\n', ' '), '\\t', ' ')
		  FROM mysql.general_log
		 WHERE command_type IN ('Query', 'Prepare', 'Execute')
		   AND user_host LIKE '%127.0.0.1%'
		   AND CONVERT(argument USING utf8mb4) LIKE '%`items`%'
		 ORDER BY event_time});
	$my->query('TRUNCATE mysql.general_log');
	# mysql_fdw learns the column types with LIMIT 0: it reads no row
	return grep { !/\bLIMIT 0\s*$/i } @rows;
}

# --- decoding and trigger cannot follow a foreign table -----------------------------
my ($rc, $out, $err) = $node->psql('postgres', "SELECT ecp.follow('items', mode => 'trigger')");
like($err, qr/task "items" reads foreign table poll_db\.items: mode trigger cannot follow it/,
	'mode trigger refuses a foreign table');
like($err, qr/HINT:.*followed in mode poll/, 'and points at mode poll');

# --- follow: mode poll, the first poll loads everything ----------------------------
($rc, $out, $err) = $node->psql('postgres', "SELECT ecp.follow('items', poll_interval => '$INTERVAL second')");
is($rc, 0, 'ecp.follow succeeds');
like($err, qr/task "items" is followed in mode poll \(run \d+\): a run every .* reads the rows whose "updated_at" moved; this first one reads them all/,
	'the NOTICE names mode poll and since_column');
like($err, qr/HINT:.*Deletes in the source are not seen/, 'and says deletes are not seen');
my $first = $out;
is(EcpTest::wait_for_run($node, $first, 'succeeded', 120), 'succeeded', 'the first poll run succeeds');
is(q1("SELECT processed FROM ecp.progress WHERE run_id = $first"), $NROWS, "it read all $NROWS rows");
$es->refresh('items');
is($es->count('items'), $NROWS, "the index holds $NROWS documents");

ok(EcpTest::poll($node, "SELECT count(*) >= 2 FROM ecp.run WHERE task_id = $task_id AND id > $first"
	  . " AND state = 'succeeded'", 60),
	'the launcher starts poll runs, which succeed');
is(q1("SELECT count(*) FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id WHERE r.task_id = $task_id AND r.id > $first"
	  . " AND (r.owner <> t.owner OR r.operator <> 'ecp follower' OR r.action IS NOT NULL OR r.only_ids IS NOT NULL)"),
	'0', 'every poll run after the first is a full run of the task\'s owner, operator "ecp follower"');
ok(EcpTest::poll($node, q{SELECT mode = 'poll' AND state = 'following' AND run > } . $first
	  . q{ AND next_poll_at = (SELECT finished_at + interval '1 second' FROM ecp.run WHERE id = run)
	       AND lag_seconds IS NOT NULL AND changes_applied >= } . $NROWS
	  . q{ AND queue_length = 0 FROM ecp.followers WHERE task = 'items'}, 30),
	'ecp.followers: mode poll, following, next_poll_at one interval after the last poll run, lag and changes applied')
  or diag(q1("SELECT row_to_json(f) FROM ecp.followers f"));
is(q1("SELECT count(*) FROM ecp.follow_table WHERE task_id = $task_id") . ' '
	  . q1("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ecp_follow_%'"),
	'0 0', 'a poll follower has no followed tables and no triggers');

# --- updates and inserts in MariaDB reach the index --------------------------------
general_log_on();
$my->query(qq{
	UPDATE poll_db.items SET amount = amount + 100000, updated_at = NOW() WHERE id <= 100;
	INSERT INTO poll_db.items SELECT $NROWS + seq, 'new', 7777, NOW() FROM seq_1_to_50;
});
my $arrived = EcpFollow::until_true(sub {
	$es->refresh('items');
	return $es->count('items') == $NROWS + 50
	  && join(' ', map { my $d = $es->doc('items', $_); $d ? $d->{amount} : 'missing' } 1, 100, 101, $NROWS + 50)
		eq '100001 100100 101 7777';
}, 60);
ok($arrived, '100 updates and 50 inserts in MariaDB reach the index within a minute');
my @remote = general_log_off();
my @with_range = grep { /`updated_at` >= '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d'/ } @remote;
ok(@remote > 0 && @with_range == @remote,
	'every statement of the poll runs in the general log has the range on updated_at ('
	  . scalar(@with_range) . ' of ' . scalar(@remote) . ')')
  or diag(join("\n", @remote[ 0 .. ($#remote < 4 ? $#remote : 4) ]));
diag('a poll run sent, e.g.: ' . ($with_range[0] // '(none)'));
ok(EcpTest::poll($node, q{SELECT lag_seconds < 30 AND changes_applied >= } . ($NROWS + 150)
	  . q{ FROM ecp.followers WHERE task = 'items'}, 30),
	'the lag is a few seconds, changes_applied counts the changed rows');

# --- a failed poll run stops the polling until it is resumed -------------------------
$node->safe_psql('postgres',
	q{UPDATE ecp.task SET options = options || '{"max_retries": 0}' WHERE name = 'items'});
$es->set_faults({ bulk_reject => { status => 503 } });
$my->query('UPDATE poll_db.items SET amount = 7, updated_at = NOW() WHERE id = 7');
ok(EcpTest::poll($node, q{SELECT state = 'failed' AND last_error IS NOT NULL FROM ecp.followers WHERE task = 'items'}, 60),
	'a poll run that fails: the follower is failed, with the error');
my $failed = follower_run('items');
$es->clear_faults;
ok(no_new_run_until('items', "(SELECT finished_at FROM ecp.run WHERE id = $failed)", 3),
	'no new poll run while the last one is failed (3 intervals after it failed)');
$node->safe_psql('postgres', "SELECT ecp.resume($failed)");
is(EcpTest::wait_for_run($node, $failed, 'succeeded', 60), 'succeeded', 'the resumed run succeeds');
ok(EcpFollow::until_true(sub { my $d = doc(7); $d && $d->{amount} == 7 }, 30), 'its change reached the index');
ok(EcpTest::poll($node, "SELECT count(*) > 0 FROM ecp.run WHERE task_id = $task_id AND id > $failed", 30),
	'and the launcher polls again');
# from here on a refused _bulk is retried, not failed
$node->safe_psql('postgres',
	q{UPDATE ecp.task SET options = options || '{"max_retries": 1000}' WHERE name = 'items'});

# --- pausing the poll run in progress pauses the follower ----------------------------
$es->set_faults({ bulk_reject => { status => 503 } });
$my->query('UPDATE poll_db.items SET amount = 8, updated_at = NOW() WHERE id = 8');
ok(EcpTest::poll($node, q{SELECT EXISTS (SELECT 1 FROM ecp.part p JOIN ecp.follower f ON f.run_id = p.run_id
                                          WHERE f.task_id = } . $task_id . q{ AND p.retry_attempt IS NOT NULL)}, 60),
	'a poll run retries a refused _bulk');
$node->safe_psql('postgres', "SELECT ecp.pause('items')");
my $paused = follower_run('items');
is(q1("SELECT state FROM ecp.followers WHERE task = 'items'"), 'paused', 'ecp.pause(task) pauses it: the follower is paused');
is(q1("SELECT next_poll_at FROM ecp.followers WHERE task = 'items'"), '', 'no next poll while paused');
$es->clear_faults;
ok(no_new_run_until('items', 'now()', 3), 'no new poll run while paused (3 intervals)');
$node->safe_psql('postgres', "SELECT ecp.resume('items')");
is(EcpTest::wait_for_run($node, $paused, 'succeeded', 60), 'succeeded', 'resumed, the poll run succeeds');
ok(EcpFollow::until_true(sub { my $d = doc(8); $d && $d->{amount} == 8 }, 30), 'its change reached the index');
ok(EcpTest::poll($node, "SELECT count(*) > 0 FROM ecp.run WHERE task_id = $task_id AND id > $paused", 30),
	'and the launcher polls again');

# --- roles ---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE public.notes (id bigint PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL);
	INSERT INTO public.notes SELECT g, 'note ' || g, now() FROM generate_series(1, 100) g;
	CREATE ROLE alice LOGIN; GRANT SELECT ON public.notes TO alice;
	CREATE ROLE bob LOGIN;
});
$node->safe_psql('postgres', "SET SESSION AUTHORIZATION alice; SELECT ecp.create_consumer('es_a', '$url');"
	  . q{ SELECT ecp.create_task('notes', 'es_a', 'notes', query => 'SELECT * FROM public.notes',
	                              options => '{"since_column": "updated_at"}')});
my $notes_id = q1("SELECT id FROM ecp.task WHERE name = 'notes'");
($rc, undef, $err) = $node->psql('postgres', "SET SESSION AUTHORIZATION bob; SELECT ecp.follow('notes', mode => 'poll')");
like($err, qr/task "notes" does not exist/, 'bob cannot follow alice\'s task');
($rc, undef, $err) = $node->psql('postgres',
	"SET SESSION AUTHORIZATION bob; SELECT ecp_internal._follow_create($notes_id, 'poll', true, '[]', '1 second')");
like($err, qr/task $notes_id is not yours/, 'nor through the internal function');
($rc, $out, $err) = $node->psql('postgres', "SET SESSION AUTHORIZATION alice; SELECT ecp.follow('notes', mode => 'poll', poll_interval => '1 second')");
like($err, qr/task "notes" is followed in mode poll/, 'alice follows her local table in mode poll');
is(q1("SELECT mode FROM ecp.follower WHERE task_id = $notes_id"), 'poll', 'in mode poll');
is(q1('SET SESSION AUTHORIZATION bob; SELECT count(*) FROM ecp.followers'), '0', 'bob does not see her follower');
($rc, undef, $err) = $node->psql('postgres', "SET SESSION AUTHORIZATION bob; SELECT ecp.unfollow('notes')");
like($err, qr/task "notes" does not exist/, 'bob cannot unfollow it');
ok(EcpTest::poll($node, "SELECT count(*) >= 2 FROM ecp.run WHERE task_id = $notes_id AND state = 'succeeded'", 60),
	'her follower polls');
is(q1("SELECT string_agg(DISTINCT owner::text, ', ') FROM ecp.run WHERE task_id = $notes_id"), 'alice',
	'every poll run, also those the launcher started, is alice\'s');
$node->safe_psql('postgres', "SET SESSION AUTHORIZATION alice; SELECT ecp.unfollow('notes')");
$es->refresh('notes');
is($es->count('notes'), 100, 'her index holds her 100 rows');

# --- unfollow cancels the poll run in progress; no run after it -----------------------
$es->set_faults({ bulk_reject => { status => 503 } });
$my->query('UPDATE poll_db.items SET amount = 9, updated_at = NOW() WHERE id = 9');
ok(EcpTest::poll($node, q{SELECT EXISTS (SELECT 1 FROM ecp.part p JOIN ecp.follower f ON f.run_id = p.run_id
                                          WHERE f.task_id = } . $task_id . q{ AND p.retry_attempt IS NOT NULL)}, 60),
	'a poll run is in progress');
my $last = follower_run('items');
($rc, $out, $err) = $node->psql('postgres', "SELECT ecp.unfollow('items')");
is($rc, 0, 'ecp.unfollow succeeds');
is(EcpTest::run_state($node, $last), 'cancelled', 'the poll run in progress is cancelled');
is(q1("SELECT count(*) FROM ecp.followers"), '0', 'no follower is left');
$es->clear_faults;
ok(no_new_run_until('items', 'now()', 3), 'no poll run starts after unfollow (3 intervals)');
is(q1("SELECT count(*) FROM ecp.run WHERE task_id = $task_id AND state IN ('pending', 'running', 'paused')"), '0',
	'the task has no run in progress');

$node->stop;
$my->query('DROP DATABASE poll_db');
done_testing();
