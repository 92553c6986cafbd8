# Status that tells the truth (issue 24, its status items):
#  * while a part waits to retry, ecp.progress and ecp.parts say so: the
#    attempt, of how many, when it tries again, the error and what failed;
#    a part that moves on stops saying so;
#  * last_error is a failed run's only: a resumed run that succeeds keeps
#    the error it recovered from in recovered_error;
#  * a run that succeeded with dead letters is partial (view and flow);
#  * a run that failed on an error of the worker keeps its hint and SQLSTATE.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('fault injection');
my $node = EcpTest::new_node('status');
my $es = EsdServer->start();
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 2000) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id)');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub start_task
{
	my ($name, $consumer, $options) = @_;
	sql("SELECT ecp.create_task('$name', '$consumer', '$name', query => 'SELECT * FROM items', options => '$options')");
	return sql("SELECT ecp.start('$name')");
}

# --- a consumer nobody listens on: the run says it is retrying --------------
my $dead_port = PostgreSQL::Test::Cluster::get_free_port();
sql("SELECT ecp.create_consumer('dead', 'http://127.0.0.1:$dead_port')");
my $started = time;
my $run = start_task('dead', 'dead', '{"retry_base_ms": 200, "retry_max_ms": 400, "max_retries": 50}');
ok(EcpTest::poll($node, "SELECT retry_attempt >= 2 FROM ecp.progress WHERE run_id = $run"),
	'ecp.progress shows the run retrying');
diag(sprintf('retrying shown (attempt 2) %.1f s after ecp.start', time - $started));
is(sql("SELECT state || ' ' || (retry_max = 50) || ' ' || retry_class || ' ' || (retry_at IS NOT NULL) "
	  . "|| ' ' || (last_error IS NULL) FROM ecp.progress WHERE run_id = $run"),
	'running true consumer true true', 'running, attempt n of max_retries, what failed, when next; last_error stays NULL');
like(sql("SELECT retry_error FROM ecp.progress WHERE run_id = $run"),
	qr/127\.0\.0\.1:$dead_port.*(refused|connect)/i, 'with the error it retries after');
is(sql("SELECT retry_attempt IS NOT NULL AND retry_class = 'consumer' FROM ecp.parts WHERE run_id = $run"),
	't', 'ecp.parts shows the part retrying');
ok(EcpTest::poll($node, "SELECT retry_attempt >= 3 FROM ecp.progress WHERE run_id = $run"),
	'the attempt count moves on');
sql("SELECT ecp.cancel($run)");
is(EcpTest::wait_for_run($node, $run, 'cancelled'), 'cancelled', 'the run is cancelled');
ok(EcpTest::poll($node, "SELECT retry_attempt IS NULL FROM ecp.parts WHERE run_id = $run"),
	'a part released by a cancel no longer says it is retrying');
is(sql("SELECT count(*) FROM ecp.progress WHERE run_id = $run AND retry_attempt IS NOT NULL"), '0',
	'nor does the cancelled run');

# --- retries that pass: no trace in the status once the part moved on ------
$es->set_faults({ bulk_reject => { status => 429, first => 3 } });
$run = start_task('r429', 'esd', '{"batch_size": 500, "retry_base_ms": 40}');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', '429 x3, then the run succeeds');
is(sql("SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = 'retry'"), '3', 'three retries in the flow');
is(sql("SELECT (retry_attempt IS NULL) || ' ' || (last_error IS NULL) || ' ' || partial FROM ecp.progress WHERE run_id = $run"),
	'true true false', 'the succeeded run is clean: not retrying, no last_error, not partial');
is(sql("SELECT count(*) FROM ecp.parts WHERE run_id = $run AND retry_attempt IS NOT NULL"), '0',
	'no part says it is retrying');
$es->clear_faults;

# --- a failure recovered by ecp.resume is not the run's last_error ----------
$es->set_faults({ auth => { basic => 'u:p' } });
$run = start_task('r401', 'esd', '{"retry_base_ms": 10}');
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', '401: the run fails');
like(sql("SELECT last_error FROM ecp.progress WHERE run_id = $run"), qr/HTTP 401/, 'a failed run has its last_error');
$es->clear_faults;
sql("SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'resumed, the run succeeds');
is(sql("SELECT last_error IS NULL FROM ecp.progress WHERE run_id = $run"), 't',
	'a run that succeeded has no last_error');
like(sql("SELECT recovered_error FROM ecp.progress WHERE run_id = $run"), qr/HTTP 401/,
	'the error it recovered from is in recovered_error');
is(sql("SELECT count(*) FROM ecp.parts WHERE run_id = $run AND last_error IS NOT NULL"), '0',
	'nor do its parts keep the error');
like(sql("SELECT content->>'error' FROM ecp.flow WHERE run_id = $run AND action = 'failed'"), qr/HTTP 401/,
	'the flow keeps the failure');
is(sql("SELECT count(*) FROM ecp.progress WHERE last_error IS NOT NULL AND state <> 'failed'"), '0',
	'an alert on last_error IS NOT NULL finds failed runs only');

# --- dead letters: the run succeeds, partial --------------------------------
$es->put('/poisoned', { mappings => { properties => { amount => { type => 'long' } } } });
sql("CREATE TABLE poison_src AS SELECT g AS id, CASE WHEN g % 100 = 0 THEN 'cheap' END AS amount FROM generate_series(1, 1000) g");
sql("SELECT ecp.create_task('poisoned', 'esd', 'poisoned', query => 'SELECT * FROM poison_src')");
$run = sql("SELECT ecp.start('poisoned')");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'a run with refused documents succeeds');
is(sql("SELECT failed || ' ' || partial FROM ecp.progress WHERE run_id = $run"), '10 true',
	'10 dead letters: partial');
is(sql("SELECT content->>'partial' FROM ecp.flow WHERE run_id = $run AND action = 'finished'"), 'true',
	'the flow says partial too');
is(sql("SELECT count(*) FROM ecp.flow f JOIN ecp.progress p USING (run_id) "
	  . "WHERE f.action = 'finished' AND f.content ? 'partial' AND NOT p.partial"), '0',
	'only partial runs are flagged partial');
is(sql(q{SELECT string_agg(task, ',' ORDER BY task) FROM ecp.progress WHERE state = 'succeeded' AND partial}),
	'poisoned', 'one line tells clean from partial');

# --- an error raised in the worker: its hint and SQLSTATE reach last_error --
sql("CREATE TABLE rep AS SELECT g, g % 7 AS grp FROM generate_series(1, 100) g");
sql(q{SELECT ecp.create_task('rep', 'esd', 'rep', query => 'SELECT g, grp FROM rep', options => '{"key_column": "grp", "id_column": "g"}')});
$run = sql("SELECT ecp.start('rep')");
is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', 'a key that repeats fails the run');
like(sql("SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/key column "grp" is not unique.*; hint: Give task "rep" a unique, indexed key_column.*\(SQLSTATE 23505\)$/s,
	'last_error has the message, the hint and the SQLSTATE');
like(sql("SELECT content->>'error' FROM ecp.flow WHERE run_id = $run AND action = 'failed'"),
	qr/hint: Give task "rep"/, 'and so has the flow');

done_testing();
