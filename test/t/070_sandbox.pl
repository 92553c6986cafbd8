# The owner's code runs only as the owner, inside a security-restricted
# operation: what a task's query queues for later (a deferred trigger, a
# WITH HOLD cursor) is refused instead of running as the superuser the
# worker is connected as, and settings the query changes do not outlive
# it.  Written from the reproduced escalation: an ordinary role became
# superuser through a deferred constraint trigger armed by its query.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

my $node = EcpTest::new_node('sandbox', conf => ["ecp.allowed_hosts = '127.0.0.1'"]);
my $es = EsdServer->start();
my $url = $es->url;

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
CREATE SCHEMA m AUTHORIZATION mallory;
});

sub as_mallory
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', "SET ROLE mallory; $sql");
}

# What the trap saw: every current_user its code ran as.
as_mallory(q{
CREATE TABLE m.seen (who text, what text);
CREATE TABLE m.trap (x int);
CREATE FUNCTION m.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO m.seen VALUES (current_user, 'deferred trigger');
    IF current_user <> 'mallory' THEN EXECUTE 'ALTER ROLE mallory SUPERUSER'; END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER t AFTER INSERT ON m.trap DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION m.escalate();
CREATE FUNCTION m.arm() RETURNS int VOLATILE LANGUAGE plpgsql AS $$
BEGIN INSERT INTO m.trap VALUES (1); RETURN 1; END $$;
CREATE FUNCTION m.spy() RETURNS int VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO m.seen VALUES (current_user, 'cursor');
    IF current_user <> 'mallory' THEN EXECUTE 'ALTER ROLE mallory SUPERUSER'; END IF;
    RETURN 1;
END $$;
CREATE FUNCTION m.hold() RETURNS int VOLATILE LANGUAGE plpgsql AS $$
BEGIN EXECUTE 'DECLARE c CURSOR WITH HOLD FOR SELECT m.spy() FROM generate_series(1, 3)'; RETURN 1; END $$;
CREATE FUNCTION m.read_only() RETURNS int VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('default_transaction_read_only', 'on', false);
    PERFORM set_config('statement_timeout', '1', false);
    RETURN 1;
END $$;
});
as_mallory("SELECT ecp.create_consumer('m_es', '$url')");

sub run_of
{
	my ($name, $query, $options) = @_;
	$options //= '{}';
	as_mallory("SELECT ecp.create_task('$name', 'm_es', '$name', query => \$q\$$query\$q\$, options => '$options')");
	my $run = as_mallory("SELECT ecp.start('$name')");
	my $state = EcpTest::wait_for_run($node, $run, 'failed', 120);
	return ($run, $state);
}

my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

# --- a deferred trigger armed by the query ------------------------------------
my ($run, $state) = run_of('deferred', 'SELECT g AS id, m.arm() AS a FROM generate_series(1, 3) g');
is($state, 'failed', 'a query that queues a deferred trigger fails its run');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
	qr/cannot fire deferred trigger within security-restricted operation/,
	'... with PostgreSQL\'s own reason');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"), 'f',
	'mallory is not a superuser');
is($node->safe_psql('postgres', "SELECT count(*) FROM m.seen WHERE who <> 'mallory'"), '0',
	'the trigger never ran as anyone but mallory');
is($node->safe_psql('postgres', "SELECT count(*) FROM m.trap"), '0',
	'the insert that armed it was rolled back');

# --- a WITH HOLD cursor opened by the query -----------------------------------
($run, $state) = run_of('holdable', 'SELECT g AS id, m.hold() AS h FROM generate_series(1, 2) g');
is($state, 'failed', 'a query that opens a WITH HOLD cursor fails its run');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
	qr/cannot create a cursor WITH HOLD within security-restricted operation/,
	'... with PostgreSQL\'s own reason');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"), 'f',
	'mallory is still not a superuser');
is($node->safe_psql('postgres', "SELECT count(*) FROM m.seen WHERE who <> 'mallory'"), '0',
	'the cursor\'s function never ran as anyone but mallory');

# --- settings changed by the query do not outlive it -----------------------
# If they leaked into the worker's own transactions, its checkpoint (an
# UPDATE) would fail in a read-only transaction or time out.
as_mallory(q{CREATE TABLE m.items AS SELECT g AS id, 'x' || g AS label FROM generate_series(1, 50) g});
as_mallory(q{SELECT ecp.create_task('settings', 'm_es', 'settings',
	query => 'SELECT id, label, m.read_only() AS r, current_user AS who FROM m.items',
	options => '{"batch_size": 10}')});
$run = as_mallory("SELECT ecp.start('settings')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded',
	'a query that sets session settings runs to the end') or
	diag($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"));
is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"), '50',
	'every row was sent, over five checkpoints');
$es->refresh('settings');
is($es->doc('settings', '7')->{who}, 'mallory', 'the query ran as mallory');
is($node->safe_psql('postgres', "SELECT operator FROM ecp.flow WHERE run_id = $run AND action = 'finished'"),
	'mallory', 'the flow names mallory as operator of the worker\'s events');

is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'the server never restarted');

$es->stop;
$node->stop;
done_testing();
