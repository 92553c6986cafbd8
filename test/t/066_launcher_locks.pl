# The launcher never waits for a lock that a role can hold (security review
# M1).  A role keeps its own run locked (SELECT ... FOR UPDATE in a
# transaction it leaves open) just when the launcher must fail that run:
# its part lost its worker and max_retries is 0.
# - The launcher does not wait: another role's new run starts and succeeds
#   meanwhile, and the locked run stays as it was.
# - It logs the lock once a minute at most, not at every pass.
# - Once the lock is released, the next pass fails the run, saying why.
# A role may not lock a whole table of ecp's (up to 0.4 its DELETE on
# ecp.consumer allowed LOCK TABLE ... ACCESS EXCLUSIVE); when an
# administrator does, the pass cannot read the runs, but it gives up after
# a bounded wait, says so once, and schedules again as soon as the lock
# goes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('a sink for the runs');
my $node = EcpTest::new_node('locks');
my $es = EsdServer->start(discard => 1);
my $url = $es->url;
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 200) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id); GRANT SELECT ON items TO PUBLIC;'
	  . ' CREATE ROLE mallory LOGIN; CREATE ROLE alice LOGIN');
for my $role ('mallory', 'alice')
{
	$node->safe_psql('postgres', qq{
		SET ROLE $role;
		SELECT ecp.create_consumer('${role}_esd', '$url');
		SELECT ecp.create_task('${role}_task', '${role}_esd', '$role', query => 'SELECT * FROM public.items',
		                       options => '{"max_retries": 0}')});
}

# mallory's run is running and its part lost its worker, as after a crash;
# its heartbeat is still in the future, so the launcher leaves it alone
# until the test ages it.
my $locked_run = $node->safe_psql('postgres', q{
BEGIN;
SET LOCAL ROLE mallory;
CREATE TEMP TABLE r AS SELECT ecp.start('mallory_task') AS id;
RESET ROLE;
UPDATE ecp.run SET state = 'running' WHERE id = (SELECT id FROM r);
UPDATE ecp.part SET state = 'running', heartbeat_at = now() + interval '1 hour'
 WHERE run_id = (SELECT id FROM r);
COMMIT;
SELECT id FROM r;
});
ok($locked_run =~ /^\d+$/, "mallory's run $locked_run is running, its part without a worker");

# mallory locks its run, as it may (UPDATE (state) on ecp.run), and keeps
# its transaction open.
my $holder = $node->background_psql('postgres');
$holder->query_safe('SET ROLE mallory');
$holder->query_safe('BEGIN');
is($holder->query_safe("SELECT id || '|' || state FROM ecp.run WHERE id = $locked_run FOR UPDATE"),
	"$locked_run|running", 'mallory holds its run FOR UPDATE');

# Now the part's heartbeat is a day old: max_retries 0, so the next pass
# must fail the run.
my $log_offset = -s $node->logfile;
my $aged_at = time;
$node->safe_psql('postgres',
	"UPDATE ecp.part SET heartbeat_at = now() - interval '1 day' WHERE run_id = $locked_run");
my $lock_logged = qr/LOG:  ecp launcher could not fail run $locked_run yet: a lock it needs is held by another transaction/;
my $seen = 0;
my $deadline = time + 30;
while (time < $deadline)
{
	last if $seen = (slurp_file($node->logfile, $log_offset) =~ $lock_logged);
	sleep 0.1;
}
ok($seen, 'the launcher tried to fail the run, found it locked, and said so');

# The launcher is not stuck behind mallory's lock: alice's new run starts
# and succeeds.
my $alice_run = $node->safe_psql('postgres', "SET ROLE alice; SELECT ecp.start('alice_task')");
is(EcpTest::wait_for_run($node, $alice_run, 'succeeded', 60), 'succeeded',
	"another role's run starts and succeeds while the lock is held");
is($holder->query_safe("SELECT state FROM ecp.run WHERE id = $locked_run"), 'running',
	'the locked run is still running: nothing was changed behind the lock');

my @logged = (slurp_file($node->logfile, $log_offset) =~ /$lock_logged/g);
my $minutes = int((time - $aged_at) / 60);
cmp_ok(scalar @logged, '<=', 1 + $minutes,
	'the lock was logged at most once a minute (' . scalar(@logged) . " time(s) in $minutes full minute(s)), not at every pass");
unlike(slurp_file($node->logfile, $log_offset), qr/WARNING:  ecp launcher could not fail run $locked_run/,
	'and never as a WARNING');

# The lock goes: the next pass fails the run, saying why.
$holder->query_safe('ROLLBACK');
$holder->quit;
is(EcpTest::wait_for_run($node, $locked_run, 'failed', 30), 'failed', 'once the lock is released the run fails');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $locked_run"),
	qr/^the worker of part 0 died 1 times in a row without finishing a batch/,
	'with the reason');

# --- a whole table locked --------------------------------------------------------
$log_offset = -s $node->logfile;
for my $table ('consumer', 'task', 'run', 'part', 'flow_log', 'failed_doc', 'migration', 'run_id')
{
	my ($rc, $out, $err) = $node->psql('postgres',
		"SET ROLE mallory; BEGIN; LOCK TABLE ecp.$table IN ACCESS EXCLUSIVE MODE; ROLLBACK");
	like($err, qr/permission denied for table $table/, "a role may not lock ecp.$table");
}
# (an administrator's lock: the superuser's session)
$holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe('LOCK TABLE ecp.consumer IN ACCESS EXCLUSIVE MODE');
my $read_logged = qr/LOG:  ecp launcher could not read the parts of pending and running runs yet: a lock it needs is held by another transaction/;
$seen = 0;
$deadline = time + 30;
while (time < $deadline)
{
	last if $seen = (slurp_file($node->logfile, $log_offset) =~ $read_logged);
	sleep 0.1;
}
ok($seen, 'with ecp.consumer locked, the pass gives up reading the runs after a bounded wait, and says so');
$holder->query_safe('ROLLBACK');
$holder->quit;
$alice_run = $node->safe_psql('postgres', "SET ROLE alice; SELECT ecp.start('alice_task')");
is(EcpTest::wait_for_run($node, $alice_run, 'succeeded', 60), 'succeeded', 'once the lock goes, runs start again');

$es->stop;
$node->stop;
done_testing();
