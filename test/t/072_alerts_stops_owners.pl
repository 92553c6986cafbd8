# Tenants do not see each other's alerts, a failure is always recorded,
# stops are prompt even inside a long source query, a pause that raced the
# last checkpoint does not leave a run running forever, and runs of roles
# that were dropped or lost LOGIN fail with a clear message.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

my $node = EcpTest::new_node('tenants', conf => ["ecp.allowed_hosts = '127.0.0.1'"]);
my $es = EsdServer->start();
my $url = $es->url;

$node->safe_psql('postgres', q{
CREATE ROLE alice LOGIN;
CREATE ROLE eve LOGIN;
CREATE TABLE items AS SELECT g AS id, 'i' || g AS label FROM generate_series(1, 20) g;
GRANT SELECT ON items TO alice;
});
$node->safe_psql('postgres', "SET ROLE alice; SELECT ecp.create_consumer('a_es', '$url')");

sub alice
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', "SET ROLE alice; $sql");
}

# --- M2/M9: an alert tells listeners ids and a class, never the error --------
my $listener = $node->background_psql('postgres');
$listener->query_safe('SET ROLE eve');
$listener->query_safe('LISTEN ecp_alert');

# The cast error quotes the whole value: 3000 four-byte characters, more
# than NOTIFY's 8000 bytes if it were in the payload.
alice(q{SELECT ecp.create_task('emoji', 'a_es', 'emoji',
	query => $q$SELECT g AS id, (repeat(chr(128512), 3000) || g)::int AS x FROM generate_series(1, 1) g$q$)});
my $run = alice("SELECT ecp.start('emoji')");
is(EcpTest::wait_for_run($node, $run, 'failed', 60), 'failed',
	'a run whose error is 12 kB of emoji is marked failed');
my $error = $node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run");
like($error, qr/invalid input syntax for type integer/, '... with the error');
cmp_ok(length($error), '<=', 2000, '... cut to at most 2000 bytes');

my $out = '';
my $deadline = time + 30;
while (time < $deadline)
{
	$out = $listener->query_safe('SELECT 1');
	last if $out =~ /Asynchronous notification "ecp_alert"/;
	sleep 0.1;
}
my ($payload) = $out =~ /Asynchronous notification "ecp_alert" with payload "(.*?)" received/;
ok(defined $payload, 'another role listening gets the alert');
my $alert = eval { decode_json($payload // '') } // {};
is($alert->{run}, $run, '... with the run id');
is($alert->{class}, 'failed', '... and the class');
ok(!exists $alert->{error} && !exists $alert->{owner} && !exists $alert->{task},
	'... but no error text, owner or task name');
unlike($payload // '', qr/\x{1F600}|invalid input|items|a_es|127\.0\.0\.1/,
	'... nor any data value or URL');
is($node->safe_psql('postgres', "SET ROLE eve; SELECT count(*) FROM ecp.flow WHERE run_id = $run"), '0',
	'the details are in the flow, which eve cannot read');
like($node->safe_psql('postgres', "SET ROLE alice; SELECT content->>'error' FROM ecp.flow WHERE run_id = $run AND action = 'alert'"),
	qr/invalid input syntax/, 'alice reads them there');
$listener->quit;

# --- M6: pause, cancel and terminate interrupt a long source query -----------
alice(q{SELECT ecp.create_task('sleepy', 'a_es', 'sleepy',
	query => 'SELECT g AS id, pg_sleep(600) AS s FROM generate_series(1, 1) g',
	options => '{"rate_limit": 100}')});

sub sleeping_worker
{
	my $pid = '';
	my $deadline = time + 60;
	while (time < $deadline)
	{
		$pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp worker' AND wait_event = 'PgSleep'"
			  . " ORDER BY backend_start DESC LIMIT 1");
		return $pid if $pid ne '';
		sleep 0.05;
	}
	return '';
}

# Seconds until $sql (returning t) holds, polled every 20 ms, at most 60.
sub seconds_until
{
	my ($sql) = @_;
	my $start = time;
	while (time - $start < 60)
	{
		return time - $start if $node->safe_psql('postgres', $sql) eq 't';
		sleep 0.02;
	}
	return 999;
}

$run = alice("SELECT ecp.start('sleepy')");
my $pid = sleeping_worker();
ok($pid, 'the worker sits in the 600 s query');
ok(EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp_internal._rate_buckets() WHERE kind = 'task'", 30),
	'its task has a rate bucket');
is($node->safe_psql('postgres', "SET ROLE alice; SELECT count(*) FROM ecp_internal._rate_buckets() WHERE kind = 'task'"),
	'1', 'alice sees her bucket');
is($node->safe_psql('postgres', "SET ROLE eve; SELECT count(*) FROM ecp_internal._rate_buckets()"),
	'0', 'eve sees no bucket of alice\'s');
alice("SELECT ecp.pause($run)");
my $took = seconds_until("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid AND wait_event = 'PgSleep'");
note(sprintf('pause interrupted the query after %.2f s', $took));
cmp_ok($took, '<', 10, 'pause interrupts the query (within a second when the machine is idle)');
is(EcpTest::run_state($node, $run), 'paused', 'the run is paused');
ok(EcpTest::poll($node, "SELECT state = 'pending' AND worker_pid IS NULL FROM ecp.part WHERE run_id = $run", 30),
	'its part waits for resume, not failed');

alice("SELECT ecp.resume($run)");
$pid = sleeping_worker();
ok($pid, 'resumed, the worker reads again');
alice("SELECT ecp.cancel($run)");
$took = seconds_until("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid");
note(sprintf('cancel ended the worker after %.2f s', $took));
cmp_ok($took, '<', 10, 'cancel interrupts the query and the worker exits');
is(EcpTest::run_state($node, $run), 'cancelled', 'the run is cancelled');

$run = alice("SELECT ecp.start('sleepy')");
$pid = sleeping_worker();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$took = seconds_until("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid");
note(sprintf('pg_terminate_backend ended the worker after %.2f s', $took));
cmp_ok($took, '<', 10, 'pg_terminate_backend ends a worker inside the query');
alice("SELECT ecp.cancel($run)");

# --- a worker reloads settings on SIGHUP ----------------------------------------
# A worker in a 60 s back-off renews its heartbeat every
# ecp.heartbeat_interval (5 s here): after a reload to 1 s it renews it
# every second, without a restart.  The back-off comes from a consumer
# nobody listens on (no fault injection: this runs against a real cluster
# too).
my $dead_port = PostgreSQL::Test::Cluster::get_free_port();
alice("SELECT ecp.create_consumer('a_dead', 'http://127.0.0.1:$dead_port')");
alice(q{SELECT ecp.create_task('waiting', 'a_dead', 'waiting', query => 'SELECT * FROM items',
	options => '{"retry_base_ms": 60000, "retry_max_ms": 60000}')});
$run = alice("SELECT ecp.start('waiting')");
ok(EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp.flow WHERE run_id = $run AND action = 'retry'", 60),
	'the worker waits 60 s to retry');
$node->safe_psql('postgres', "ALTER SYSTEM SET ecp.heartbeat_interval = 1; SELECT pg_reload_conf()");
my %beats;
my $watch_until = time + 8;
while (time < $watch_until && keys %beats < 4)
{
	$beats{ $node->safe_psql('postgres', "SELECT heartbeat_at FROM ecp.part WHERE run_id = $run") } = 1;
	sleep 0.2;
}
cmp_ok(scalar(keys %beats), '>=', 4, 'after the reload the heartbeat moves every second');
alice("SELECT ecp.cancel($run)");
$node->safe_psql('postgres', "ALTER SYSTEM RESET ecp.heartbeat_interval; SELECT pg_reload_conf()");

# --- M8: a pause that raced the last checkpoint ------------------------------
# The outcome of the race: the run paused, every part already done.  Made
# deterministic: started and paused in one transaction (no worker sees
# it), then its part marked done as the last checkpoint would have.
alice(q{SELECT ecp.create_task('raced', 'a_es', 'raced', query => 'SELECT * FROM items')});
$run = (split /\n/, alice("BEGIN;\nSELECT ecp.start('raced') AS run \\gset\nSELECT ecp.pause(:run);\nCOMMIT;\nSELECT :run;"))[-1];
is(EcpTest::run_state($node, $run), 'paused', 'a run paused before any worker took it');
$node->safe_psql('postgres', "UPDATE ecp.part SET state = 'done' WHERE run_id = $run");
alice("SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 30), 'succeeded',
	'resuming a paused run whose parts are all done finishes it');

# --- M7: owners that lost LOGIN or were dropped ------------------------------
$node->safe_psql('postgres', 'CREATE ROLE carol LOGIN; GRANT SELECT ON items TO carol');
$node->safe_psql('postgres', "SET ROLE carol; SELECT ecp.create_consumer('c_es', '$url');"
	  . " SELECT ecp.create_task('carol', 'c_es', 'carol', query => 'SELECT * FROM items')");
$node->safe_psql('postgres', 'ALTER ROLE carol NOLOGIN');
$run = $node->safe_psql('postgres', "SET ROLE carol; SELECT ecp.start('carol')");
is(EcpTest::wait_for_run($node, $run, 'failed', 60), 'failed', "a run of a role without LOGIN fails");
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
	qr/role "carol" owns the run but may not log in/, '... saying why');

my $carol = $node->safe_psql('postgres', "SELECT oid FROM pg_roles WHERE rolname = 'carol'");
$node->safe_psql('postgres', 'ALTER ROLE carol LOGIN; REVOKE SELECT ON items FROM carol; DROP ROLE carol');
$node->safe_psql('postgres', "SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'failed', 60), 'failed', 'a run of a dropped role fails');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
	qr/owner \(role oid $carol\) no longer exists/, '... saying why');
$node->safe_psql('postgres', "SELECT ecp.drop_owned('$carol')");
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.consumer WHERE owner = '$carol'::oid"), '0',
	'ecp.drop_owned removes what the dropped role left');
my (undef, undef, $err) = $node->psql('postgres', "SET ROLE alice; SELECT ecp.drop_owned('eve')");
like($err, qr/only a superuser/, 'only a superuser may call ecp.drop_owned');

$es->stop;
$node->stop;
done_testing();
