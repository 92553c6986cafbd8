# Scheduling: a start at a time, pg_cron jobs, windows.
#  * ecp.start(task, at => now() + 3 s): pending (ecp.progress shows when it
#    starts) and started then, not before;
#  * ecp.schedule makes a pg_cron job (visible in cron.job) that starts a
#    run; a firing while that run still goes starts no duplicate, the flow
#    says it skipped; ecp.unschedule removes the job; without pg_cron in the
#    database, ecp.schedule is a clear error;
#  * a window that closes mid-run pauses it (ecp.progress says why), one
#    that opens resumes it, and every id arrives once.  The window is moved
#    across the present by changing the task's option: the launcher reads
#    it every second, and waiting for a real clock to pass a minute
#    boundary twice would test nothing more.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('bulk item counts');
my $node = EcpTest::new_node('scheduling',
	conf => [ "shared_preload_libraries = 'ecp,pg_cron'", "cron.database_name = 'postgres'",
		'cron.use_background_workers = on', 'ecp.heartbeat_interval = 1', 'ecp.retry_base_ms = 100' ]);
my $es = EsdServer->start();
my $url = $es->url;

sub sql { return $node->safe_psql('postgres', $_[0]) }

sql(qq{
	CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric);
	INSERT INTO orders SELECT g, g FROM generate_series(1, 20000) g;
	SELECT ecp.create_consumer('es', '$url');
	SELECT ecp.create_task('later', 'es', 'later', query => 'SELECT * FROM orders WHERE id <= 100');
});

# --- a start at a time ------------------------------------------------------------------------
my ($run, $at) = split /\|/, sql("SELECT ecp.start('later', at => now() + interval '3 seconds'), now() + interval '3 seconds'");
is(sql("SELECT state || ' ' || (starts_at IS NOT NULL) FROM ecp.progress WHERE run_id = $run"), 'pending true',
	'the run waits, pending, and ecp.progress shows when it starts');
like(sql("SELECT content->>'at' FROM ecp.flow WHERE run_id = $run AND action = 'start'"), qr/^\d{4}-/,
	'the start row has the time');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 60), 'succeeded', 'it ran');
is(sql("SELECT started_at >= not_before FROM ecp.run WHERE id = $run"), 't', 'not before its time');
cmp_ok(sql("SELECT extract(epoch FROM started_at - not_before) FROM ecp.run WHERE id = $run"), '<', 10,
	'but soon after it (the launcher looks every second)');

# --- pg_cron ---------------------------------------------------------------------------------------
my ($rc, $out, $err) = $node->psql('postgres', "SELECT ecp.schedule('later', '* * * * *')");
like($err, qr/pg_cron is not installed in database "postgres".*CREATE EXTENSION pg_cron/s,
	'without pg_cron in the database, ecp.schedule says so and how');
sql('CREATE EXTENSION pg_cron');
sql(q{SELECT ecp.create_task('nightly', 'es', 'nightly', query => 'SELECT * FROM orders',
	options => '{"batch_size": 100, "rate_limit": 100}')});
my $job = sql("SELECT ecp.schedule('nightly', '* * * * *')");
# an ordinary role's job, in the same minutes: it runs as that role
sql(qq{
	CREATE ROLE nightowl LOGIN;
	GRANT USAGE ON SCHEMA cron TO nightowl;
	GRANT SELECT ON orders TO nightowl;
	SET ROLE nightowl;
	SELECT ecp.create_consumer('es_owl', '$url');
	SELECT ecp.create_task('owl', 'es_owl', 'owl', query => 'SELECT * FROM public.orders',
	       options => '{"batch_size": 100, "rate_limit": 100}');
	SELECT ecp.schedule('owl', '* * * * *');
});
like($job, qr/^\d+$/, "ecp.schedule returns the job id ($job)");
is(sql("SELECT jobname || ' | ' || schedule || ' | ' || command FROM cron.job WHERE jobid = $job"),
	q{ecp:nightly | * * * * * | SELECT ecp_internal._scheduled_start('nightly')}, 'the job is in cron.job');
ok(EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id WHERE t.name = 'nightly'", 75),
	'the job started a run within a minute');
my $cron_run = sql("SELECT r.id FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id WHERE t.name = 'nightly'");
ok(EcpTest::poll($node, "SELECT count(*) >= 1 FROM ecp.flow WHERE action = 'cron skipped' AND run_id = $cron_run", 75),
	'the next firing, while the run still goes, was skipped');
is(sql("SELECT count(*) FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id WHERE t.name = 'nightly'"), '1',
	'and started no duplicate');
is(sql("SELECT state FROM ecp.run WHERE id = $cron_run"), 'running', 'the first run is still going');
like(sql("SELECT content->>'why' FROM ecp.flow WHERE action = 'cron skipped' AND run_id = $cron_run ORDER BY at LIMIT 1"),
	qr/still has run $cron_run in progress/, 'the flow says why');
my $owl_run = sql("SELECT r.id || ' ' || r.owner FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id WHERE t.name = 'owl'");
like($owl_run, qr/^\d+ nightowl$/, 'the ordinary role\'s job started one run, of its own');
($owl_run) = split / /, $owl_run;
ok(EcpTest::poll($node, "SELECT count(*) >= 1 FROM ecp.flow WHERE action = 'cron skipped' AND run_id = $owl_run", 30),
	'and its next firing was skipped too, with a flow row of its own');
is(sql("SELECT username FROM cron.job WHERE jobname = 'ecp:owl'"), 'nightowl', 'its job runs as that role');
$node->safe_psql('postgres', "SET ROLE nightowl; SELECT ecp.unschedule('owl'); SELECT ecp.cancel($owl_run)");
sql("SELECT ecp.unschedule('nightly')");
is(sql("SELECT count(*) FROM cron.job WHERE jobname = 'ecp:nightly'"), '0', 'ecp.unschedule removes the job');
($rc, $out, $err) = $node->psql('postgres', "SELECT ecp.unschedule('nightly')");
like($err, qr/task "nightly" has no schedule of yours/, 'a second unschedule is a clear error');
sql("SELECT ecp.cancel($cron_run)");

# --- windows -------------------------------------------------------------------------------------------
# a window around now, and one that excludes it (server time zone)
my ($open, $closed) = split /\|/, sql(q{
	SELECT to_char(localtime - interval '2 hours', 'HH24:MI') || '-' || to_char(localtime + interval '2 hours', 'HH24:MI'),
	       to_char(localtime + interval '3 hours', 'HH24:MI') || '-' || to_char(localtime + interval '4 hours', 'HH24:MI')});
sql(qq{SELECT ecp.create_task('windowed', 'es', 'windowed', query => 'SELECT * FROM orders',
	options => '{"batch_size": 500, "rate_limit": 4000, "window": "$open"}')});
$run = sql("SELECT ecp.start('windowed')");
ok(EcpTest::poll($node, "SELECT processed >= 4000 FROM ecp.progress WHERE run_id = $run", 60), 'the run goes inside its window');
sql(qq{UPDATE ecp.task SET options = options || '{"window": "$closed"}' WHERE name = 'windowed'});
is(EcpTest::wait_for_run($node, $run, 'paused', 30), 'paused', 'the window closed: the run paused itself');
like(sql("SELECT paused_why FROM ecp.progress WHERE run_id = $run"), qr/^outside its window \Q$closed\E$/,
	'ecp.progress says why');
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 30),
	'its worker stopped');
my $paused_at = sql("SELECT processed FROM ecp.progress WHERE run_id = $run");
cmp_ok($paused_at, '<', 20000, "paused mid-run ($paused_at of 20000)");
sql(qq{UPDATE ecp.task SET options = options || '{"window": "$open"}' WHERE name = 'windowed'});
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'the window opened: the run resumed and finished');
$es->refresh('windowed');
is($es->count('windowed'), 20000, 'every id arrived');
is(sql("SELECT processed FROM ecp.progress WHERE run_id = $run"), '20000', 'each once');
is(sql("SELECT string_agg(action || coalesce(' ' || (content->>'why'), ''), ',' ORDER BY at) FROM ecp.flow "
	  . "WHERE run_id = $run AND action IN ('pause', 'resume')"),
	"pause outside its window $closed,resume inside its window $open",
	'the flow has the pause and the resume, with why');
# a start outside the window waits, paused, until it opens
sql(qq{UPDATE ecp.task SET options = options || '{"window": "$closed"}' WHERE name = 'windowed'});
$run = sql("SELECT ecp.start('windowed')");
is(EcpTest::wait_for_run($node, $run, 'paused', 30), 'paused', 'a run started outside its window waits paused');

$es->stop;
done_testing();
