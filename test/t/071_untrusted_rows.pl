# Nothing a role writes can crash the server or reach past its own runs.
# Written from the reproduced crash loop (a task row inserted directly with
# a NULL query made every worker start kill the whole server) and from
# what plain INSERT/UPDATE on ecp's tables allowed in 0.1: rows are
# checked like the functions check them, the internals are not callable,
# the flow cannot be forged, and a row that still gets through (written by
# a superuser, or left by an older version) fails its run with a readable
# error instead of a signal 11.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

my $node = EcpTest::new_node('rows', conf => ["ecp.allowed_hosts = '127.0.0.1'"]);
my $es = EsdServer->start();
my $url = $es->url;
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
CREATE ROLE victim LOGIN;
CREATE TABLE items AS SELECT g AS id, 'i' || g AS label FROM generate_series(1, 20) g;
GRANT SELECT ON items TO mallory, victim;
});
$node->safe_psql('postgres', "SET ROLE victim; SELECT ecp.create_consumer('v_es', '$url');"
	  . " SELECT ecp.create_task('v', 'v_es', 'v', query => 'SELECT * FROM items')");
$node->safe_psql('postgres', "SET ROLE mallory; SELECT ecp.create_consumer('m_es', '$url');"
	  . " SELECT ecp.create_task('m', 'm_es', 'm', query => 'SELECT * FROM items')");
my $m_consumer = $node->safe_psql('postgres', "SELECT id FROM ecp.consumer WHERE name = 'm_es'");
my $v_consumer = $node->safe_psql('postgres', "SELECT id FROM ecp.consumer WHERE name = 'v_es'");
my $m_task = $node->safe_psql('postgres', "SELECT id FROM ecp.task WHERE name = 'm'");

# A statement as mallory: (ok, stderr).
sub as_mallory
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE mallory; $sql");
	return ($ret == 0, $err, $out);
}

sub refused
{
	my ($sql, $pattern, $name) = @_;
	my ($ok, $err) = as_mallory($sql);
	ok(!$ok, "refused: $name");
	like($err, $pattern, "... $name: says why");
}

# --- task rows are checked like create_task checks them -----------------------
refused("INSERT INTO ecp.task (name, consumer_id, index_name, query) VALUES ('boom', $m_consumer, 'i', NULL)",
	qr/null value in column "query"|has no source/, 'a task with a NULL query');
refused("INSERT INTO ecp.task (name, consumer_id, index_name, query) VALUES ('boom', $m_consumer, 'i', 'SELECT 1; DELETE FROM items')",
	qr/exactly one SELECT statement/, 'a task with two statements');
refused("INSERT INTO ecp.task (name, consumer_id, index_name, query) VALUES ('boom', $m_consumer, 'i', 'DELETE FROM items')",
	qr/not a plain SELECT/, 'a task that deletes');
refused(qq~INSERT INTO ecp.task (name, consumer_id, index_name, query, options) VALUES ('boom', $m_consumer, 'i', 'SELECT * FROM items', '{"op": "index\\"}}"}')~,
	qr/option "op" must be/, 'an op that would inject into the _bulk action line');
refused("INSERT INTO ecp.task (name, consumer_id, index_name, query) VALUES ('boom', $m_consumer, 'i/../_all?x=', 'SELECT * FROM items')",
	qr/invalid index name/, 'an index name that changes the URL');
refused("INSERT INTO ecp.task (name, consumer_id, index_name, query) VALUES ('boom', $v_consumer, 'i', 'SELECT * FROM items')",
	qr/consumer of its own owner|row-level security/, "another role's consumer");
refused(qq{INSERT INTO ecp.task (name, consumer_id, index_name, query, options) VALUES ('boom', $m_consumer, 'i', 'SELECT * FROM items', '{"id_column": "nope"}')},
	qr/column "nope" is not an output column/, 'an id column the query does not return');
refused(qq{UPDATE ecp.task SET options = '{"max_retries": 2147483647, "retry_max_ms": 1}' WHERE name = 'm'},
	qr/option "max_retries" of a task must be an integer between 0 and 1000/, 'an unbounded max_retries');
refused(qq{UPDATE ecp.task SET options = '{"rate_limit": 1e400}' WHERE name = 'm'},
	qr/option "rate_limit" of a task must be a number between 0 and 1000000000/, 'a rate of 1e400');
refused("UPDATE ecp.task SET query = 'DELETE FROM items' WHERE name = 'm'",
	qr/not a plain SELECT/, "changing a task's query in place to a DELETE (checked as create_task checks)");
refused("UPDATE ecp.task SET owner = 'victim' WHERE name = 'm'",
	qr/permission denied/, "changing a task's owner");
refused("UPDATE ecp.task SET search_path = 'public' WHERE name = 'm'",
	qr/permission denied/, "changing a task's search_path");
my ($ok) = as_mallory(qq{UPDATE ecp.task SET options = '{"batch_size": 7}' WHERE name = 'm'});
ok($ok, 'a plain UPDATE of the options is allowed');
is($node->safe_psql('postgres', "SELECT options->>'id_column' || ' ' || (options->>'batch_size') FROM ecp.task WHERE name = 'm'"),
	'id 7', '... and keeps the id column');
my $flow = $node->safe_psql('postgres', "SELECT count(*) FROM ecp.task WHERE name = 'boom'");
is($flow, '0', 'no refused task row was stored');

# --- consumer rows too ---------------------------------------------------------
refused("INSERT INTO ecp.consumer (name, kind, url) VALUES ('c2', 'elasticsearch', 'http://user:secret\@127.0.0.1:1')",
	qr/invalid consumer URL/, 'a URL with credentials');
refused("INSERT INTO ecp.consumer (name, kind, url, options) VALUES ('c2', 'elasticsearch', '$url', '{\"rate_limit\": 1e400}')",
	qr/must be a number between 0 and 1000000000/, 'a consumer rate of 1e400');
refused("INSERT INTO ecp.consumer (name, kind, url, owner) VALUES ('c2', 'elasticsearch', '$url', 'victim')",
	qr/row-level security/, 'a consumer in the name of another role');
refused("INSERT INTO ecp.consumer (name, kind, url) VALUES ('c2', 'elasticsearch', 'http://169.254.169.254')",
	qr/not allowed/, 'a consumer at the metadata address');

# --- runs, parts, failed docs and the flow are ecp's ---------------------------
refused("INSERT INTO ecp.part (run_id, part_no, owner) VALUES (1, 1, 'mallory')",
	qr/permission denied for table part/, 'inserting a part');
refused("INSERT INTO ecp.run (task_id, state) VALUES ($m_task, 'running')",
	qr/permission denied for table run/, 'inserting a run in a chosen state');
refused("INSERT INTO ecp.flow_log (action, content, at, run_id) VALUES ('alert', '{\"error\": \"rotate keys at https://evil\"}', '2020-01-01', 1)",
	qr/permission denied for table flow_log/, 'forging an alert in the flow');
refused("INSERT INTO ecp.failed_doc (run_id, doc_id, owner) VALUES (1, 'x', 'mallory')",
	qr/permission denied for table failed_doc/, 'forging a failed document');
refused("SELECT ecp_internal._signal_run_at_commit(1)", qr/permission denied for function _signal_run_at_commit/,
	"signalling another role's run");
refused("SELECT ecp_internal._flow_event(1, 'finished', '{}')", qr/permission denied for function _flow_event/,
	'writing a flow event');
refused("SELECT ecp_internal._alert(1, 'failed', 1, 'x')", qr/permission denied for function _alert/,
	'raising an alert');

# A plain INSERT of a run is exactly ecp.start, and a role moves its run
# only as pause, resume and cancel do.
my (undef, undef, $out) = as_mallory("INSERT INTO ecp.run (task_id) VALUES ($m_task) RETURNING id");
my ($m_run) = $out =~ /(\d+)\s*$/;
ok($m_run, 'inserting a run of its own task is ecp.start');
is(EcpTest::wait_for_run($node, $m_run, 'succeeded', 120), 'succeeded', '... and it runs');
refused("UPDATE ecp.run SET state = 'running' WHERE id = $m_run", qr/cannot go from succeeded to running/,
	'reviving a finished run');
refused("UPDATE ecp.run SET last_error = 'x', operator = 'victim' WHERE id = $m_run",
	qr/permission denied for table run/, 'rewriting a run\'s operator or error');
refused("UPDATE ecp.part SET state = 'running', heartbeat_at = now() - interval '1 day' WHERE run_id = $m_run",
	qr/permission denied for table part/, 'making a part look dead');
# (the count check, which the run's last worker writes after the finish, is left out: it may come later)
is($node->safe_psql('postgres', "SELECT string_agg(operator, ',') FROM ecp.flow WHERE run_id = $m_run AND action <> 'count checked'"),
	'mallory,mallory,mallory,mallory', 'the flow names mallory for start, worker, cluster and finish');

# --- rows that still get through fail their run, cleanly -----------------------
# A superuser (or a row from an older version) can still store what the
# checks refuse: the worker must not trust it.
sub bad_row_run
{
	my ($name, $setup) = @_;
	$node->safe_psql('postgres', "SET session_replication_role = replica; $setup");
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	my $state = EcpTest::wait_for_run($node, $run, 'failed', 60);
	my $error = $node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run");
	return ($state, $error);
}

my $consumer_su = $node->safe_psql('postgres',
	"SELECT ecp.create_consumer('su_es', '$url'); SELECT id FROM ecp.consumer WHERE name = 'su_es'");
$node->safe_psql('postgres', 'ALTER TABLE ecp.task ALTER COLUMN query DROP NOT NULL');
my ($state, $error) = bad_row_run('null_query',
	"INSERT INTO ecp.task (name, consumer_id, index_name, query, options) VALUES ('null_query', $consumer_su, 'i', NULL, '{\"id_column\": \"id\"}')");
is($state, 'failed', 'a task with a NULL query fails its run');
like($error, qr/the task's query is missing/, '... saying the query is missing');
$node->safe_psql('postgres', "DELETE FROM ecp.run WHERE task_id IN (SELECT id FROM ecp.task WHERE name = 'null_query'); DELETE FROM ecp.task WHERE name = 'null_query'");
$node->safe_psql('postgres', 'ALTER TABLE ecp.task ALTER COLUMN query SET NOT NULL');

$node->safe_psql('postgres', 'ALTER TABLE ecp.task DROP CONSTRAINT task_has_id_column');
($state, $error) = bad_row_run('no_id',
	"INSERT INTO ecp.task (name, consumer_id, index_name, query) VALUES ('no_id', $consumer_su, 'i', 'SELECT * FROM items')");
is($state, 'failed', 'a task without an id column fails its run');
like($error, qr/"id_column" is missing/, '... saying so');

my %bad_options = (
	'"batch_size": "x"' => qr/option "batch_size" is "x"/,
	'"max_retries": 2147483647' => qr/option "max_retries" is "2147483647".*between 0 and 1000/s,
	'"op": "index\\"}}"' => qr/option "op" is "index"}}"/,
	'"rate_limit": 1e400' => undef,
);
my $i = 0;
for my $options (sort keys %bad_options)
{
	$i++;
	($state, $error) = bad_row_run("bad$i",
		"INSERT INTO ecp.task (name, consumer_id, index_name, query, options) VALUES ('bad$i', $consumer_su, 'bad$i', 'SELECT * FROM items', '{\"id_column\": \"id\", $options}')");
	if (defined $bad_options{$options})
	{
		is($state, 'failed', "options {$options}: the run fails");
		like($error, $bad_options{$options}, "... naming the option");
	}
	else
	{
		# the worker does not read rate_limit; the launcher must survive it
		is($state, 'succeeded', "options {$options}: the launcher and the run carry on");
	}
}

($state, $error) = bad_row_run('bad_url',
	"INSERT INTO ecp.consumer (name, kind, url) VALUES ('bad_url_es', 'elasticsearch', 'http://u:p\@127.0.0.1:1/x?y#z');"
	  . " INSERT INTO ecp.task (name, consumer_id, index_name, query, options) SELECT 'bad_url', id, 'i', 'SELECT * FROM items', '{\"id_column\": \"id\"}' FROM ecp.consumer WHERE name = 'bad_url_es'");
is($state, 'failed', 'a consumer URL with credentials fails its run');
unlike($error, qr/u:p/, '... without showing the credentials');

($state, $error) = bad_row_run('borrowed',
	"INSERT INTO ecp.task (name, consumer_id, index_name, query, options, owner) VALUES ('borrowed', $v_consumer, 'i', 'SELECT * FROM items', '{\"id_column\": \"id\"}', 'mallory')");
is($state, 'failed', "a task of mallory's with victim's consumer fails its run");
like($error, qr/do not all belong to the same role/, '... without borrowing the consumer');

($state, $error) = bad_row_run('two_statements',
	"INSERT INTO ecp.task (name, consumer_id, index_name, query, options) VALUES ('two_statements', $consumer_su, 'i', 'SELECT * FROM items; SELECT 1', '{\"id_column\": \"id\"}')");
is($state, 'failed', 'a stored query of two statements fails its run');
like($error, qr/exactly one SELECT statement/, '... checked again by the worker');

is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'the server never restarted');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal/, 'no process died by a signal');

$es->stop;
$node->stop;
done_testing();
