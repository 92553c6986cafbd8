# The ecp launcher: starts with the server, waits quietly before CREATE
# EXTENSION, comes back after pg_terminate_backend and an immediate restart,
# and never blocks DROP EXTENSION or DROP DATABASE.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;

my $node = PostgreSQL::Test::Cluster->new('launcher');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'ecp'\n");
$node->start;

my $launcher_sql =
  "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp launcher' AND datname = 'postgres'";

sub launcher_pid
{
	return $node->safe_psql('postgres', $launcher_sql);
}

sub wait_for_launcher
{
	my ($why, $not_pid) = @_;
	my $cond = defined $not_pid ? " AND pid <> $not_pid" : '';
	ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($launcher_sql$cond) l"),
		"launcher running: $why");
	return launcher_pid();
}

# Wait (with the framework's timeout) for a log line after $offset.
sub log_shows
{
	my ($regexp, $offset, $name) = @_;
	ok(eval { $node->wait_for_log($regexp, $offset); 1 }, $name);
}

sub log_since
{
	my ($offset) = @_;
	return substr(slurp_file($node->logfile), $offset);
}

# --- starts with the server, quiet before CREATE EXTENSION -----------------
my $pid = wait_for_launcher('after start');

# The launcher re-checks for the extension on every wake-up and reports its
# check in pg_stat_activity.state_change: wait for three checks to pass.
my $changes = 0;
my $last = '';
for (my $tries = 0; $changes < 3 && $tries < 600; $tries++)
{
	my $now = $node->safe_psql('postgres',
		"SELECT state_change FROM pg_stat_activity WHERE pid = $pid");
	if ($now ne '' && $now ne $last) { $changes++; $last = $now; }
	select(undef, undef, undef, 0.1) if $changes < 3;
}
is($changes, 3, 'launcher keeps checking for the extension');
is(launcher_pid(), $pid, 'launcher did not restart while waiting for CREATE EXTENSION');
my $log = slurp_file($node->logfile);
like($log, qr/ecp launcher is waiting for CREATE EXTENSION ecp in database "postgres"/,
	'launcher says once what it is waiting for');
my @waits = ($log =~ /waiting for CREATE EXTENSION/g);
is(scalar @waits, 1, 'and says it only once');
unlike($log, qr/(ERROR|FATAL|PANIC):/, 'no errors before CREATE EXTENSION');

# --- CREATE EXTENSION: the launcher notices -----------------------------
my $offset = length(slurp_file($node->logfile));
$node->safe_psql('postgres', 'CREATE EXTENSION ecp');
log_shows(qr/ecp launcher is active/, $offset,
	'launcher notices CREATE EXTENSION');
is($node->safe_psql('postgres', 'SELECT ecp.launcher_pid()'), $pid, 'ecp.launcher_pid() shows it');
my ($control_version) = slurp_file("$FindBin::RealBin/../../ecp.control") =~ /default_version = '([^']+)'/;
is($node->safe_psql('postgres', 'SELECT ecp.version()'), $control_version,
	'ecp.version() is the version of ecp.control');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'ecp'"),
	$control_version, 'CREATE EXTENSION installs that version');

# --- pg_terminate_backend: the postmaster starts it again ------------------
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
my $new_pid = wait_for_launcher('after pg_terminate_backend', $pid);
isnt($new_pid, $pid, 'a new launcher process');
is($node->safe_psql('postgres', 'SELECT ecp.launcher_pid()'), $new_pid,
	'shared memory shows the new launcher');

# --- immediate restart (crash recovery) ----------------------------------
$node->restart(mode => 'immediate');
$pid = wait_for_launcher('after restart(immediate)');
is($node->safe_psql('postgres', 'SELECT ecp.launcher_pid()'), $pid,
	'launcher registered again after crash recovery');

# --- DROP EXTENSION is not blocked; the launcher goes back to waiting ------
$offset = length(slurp_file($node->logfile));
my ($ret, $out, $err) = $node->psql('postgres', 'DROP EXTENSION ecp',
	timeout => 30);
is($ret, 0, 'DROP EXTENSION succeeds while the launcher runs');
log_shows(qr/waiting for CREATE EXTENSION/, $offset,
	'launcher goes back to waiting after DROP EXTENSION');
is(launcher_pid(), $pid, 'launcher survives DROP EXTENSION');

# --- a schema of another version than the library: wait for the update -------
$offset = length(slurp_file($node->logfile));
$node->safe_psql('postgres', q{
CREATE EXTENSION ecp VERSION '0.4';
SELECT ecp.create_consumer('closed', 'http://127.0.0.1:9');
SELECT ecp.create_task('older', 'closed', 'older', query => 'SELECT 1 AS id', options => '{"max_retries": 0}');
});
my $older_run = $node->safe_psql('postgres', "SELECT ecp.start('older')");
log_shows(qr/ecp launcher is waiting: extension ecp in database "postgres" is version 0\.4, the library is version \Q$control_version\E/,
	$offset, 'with schema 0.4 under a newer library the launcher says it waits for the update');
# three more passes of the launcher (its state_change), and the run is still pending
$changes = 0;
$last = '';
for (my $tries = 0; $changes < 3 && $tries < 600; $tries++)
{
	my $now = $node->safe_psql('postgres', "SELECT state_change FROM pg_stat_activity WHERE pid = $pid");
	if ($now ne '' && $now ne $last) { $changes++; $last = $now; }
	select(undef, undef, undef, 0.1) if $changes < 3;
}
is($node->safe_psql('postgres', "SELECT state FROM ecp.run WHERE id = $older_run"), 'pending',
	'no run starts while the schema is older than the library');
my @older = (log_since($offset) =~ /is waiting: extension ecp/g);
is(scalar @older, 1, 'and the launcher says it once');
$offset = length(slurp_file($node->logfile));
$node->safe_psql('postgres', 'ALTER EXTENSION ecp UPDATE');
log_shows(qr/ecp launcher is active in database "postgres" \(version \Q$control_version\E\)/, $offset,
	'after ALTER EXTENSION ecp UPDATE the launcher is active');
ok($node->poll_query_until('postgres', "SELECT state <> 'pending' FROM ecp.run WHERE id = $older_run"),
	'and the waiting run starts');
$node->safe_psql('postgres', 'DROP EXTENSION ecp; CREATE EXTENSION ecp');

# --- DROP DATABASE of another database with ecp in it ---------------------
$node->safe_psql('postgres', 'CREATE DATABASE other');
# CREATE EXTENSION ecp outside ecp.database_name is refused, as pg_cron's is
($ret, $out, $err) = $node->psql('other', "\\set VERBOSITY verbose\nCREATE EXTENSION ecp");
like($err, qr/ERROR:  55000: ecp can only be created in database "postgres", not in "other".*HINT:  Create it in database "postgres", or set ecp.database_name = 'other'/s,
	'CREATE EXTENSION ecp in another database is refused, naming the setting');
unlike($err, qr/CONTEXT/, '... without CONTEXT lines of ecp\'s install script');
# a superuser may install it there anyway (its runs would never start)
$node->safe_psql('other', 'SET ecp.install_in_any_database = on; CREATE EXTENSION ecp');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE other', timeout => 30);
is($ret, 0, 'DROP DATABASE of a database with ecp succeeds');

# --- DROP DATABASE of the launcher's own database ---------------------------
$node->safe_psql('postgres', 'CREATE DATABASE ecpdb');
$node->safe_psql('ecpdb', 'SET ecp.install_in_any_database = on; CREATE EXTENSION ecp');
$node->append_conf('postgresql.conf', "ecp.database_name = 'ecpdb'\n");
$node->restart;
$launcher_sql =~ s/datname = 'postgres'/datname = 'ecpdb'/;
$pid = wait_for_launcher('connected to ecpdb');

# A drop that fails (someone is still connected) lets the launcher come back.
my $holder = $node->background_psql('ecpdb');
$holder->query_safe('SELECT 1');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE ecpdb', timeout => 60);
isnt($ret, 0, 'DROP DATABASE fails while a session is connected');
like($err, qr/being accessed by other users/, '... for the usual reason');
$holder->quit;
$pid = wait_for_launcher('back in ecpdb after the failed drop');

($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE ecpdb', timeout => 60);
is($ret, 0, 'DROP DATABASE of the launcher\'s database succeeds') or diag $err;
# A launcher that is not connected to a database is not in pg_stat_activity,
# but shared memory knows it.
ok($node->poll_query_until('postgres',
		"SELECT ecp.launcher_pid() IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'ecp launcher')"),
	'launcher waits, unconnected, for the database to come back');
log_shows(qr/ecp launcher is waiting for database "ecpdb" to be created/, 0,
	'and says so');
$offset = length(slurp_file($node->logfile));
$node->safe_psql('postgres', 'CREATE DATABASE ecpdb');
wait_for_launcher('reconnected after CREATE DATABASE');
$node->safe_psql('ecpdb', 'CREATE EXTENSION ecp');
log_shows(qr/ecp launcher is active in database "ecpdb"/, $offset,
	'launcher active again in the re-created database');
unlike(log_since(0), qr/(FATAL|PANIC):.*ecp|database "ecpdb" does not exist/,
	'no launcher crash loop at any point');

$node->stop;
done_testing();
