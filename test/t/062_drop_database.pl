# DROP DATABASE of the launcher's database evicts the launcher only when
# PostgreSQL would carry it out: a role that does not own the database, or
# a DROP inside a transaction block, fails as usual and the launcher never
# notices; a drop cancelled while it waits for the launcher releases the
# hold, and the owner's own drop works as before.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('a sink for the runs');
my $node = EcpTest::new_node('dropdb', conf => [ 'ecp.max_workers = 2', 'log_min_messages = warning' ]);
my $es = EsdServer->start(discard => 1);
my $url = $es->url;
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '$url')");
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');
my $launcher = $node->safe_psql('postgres', 'SELECT ecp.launcher_pid()');
ok($launcher, "the launcher runs ($launcher)");

# --- a role that does not own the database ------------------------------------
for my $i (1 .. 4)
{
	my ($rc, $out, $err) = $node->psql('postgres', "SET statement_timeout = '20ms'; DROP DATABASE postgres;",
		extra_params => [ '-U', 'mallory' ], timeout => 30);
	isnt($rc, 0, "mallory's DROP DATABASE $i fails");
	like($err, qr/must be owner of database postgres|canceling statement due to statement timeout/,
		"... as PostgreSQL says ($i)");
}
for my $i (1 .. 2)
{
	my ($rc, $out, $err) = $node->psql('postgres', 'BEGIN; DROP DATABASE postgres;',
		extra_params => [ '-U', 'mallory' ], timeout => 30);
	like($err, qr/DROP DATABASE cannot run inside a transaction block/, "DROP DATABASE in a transaction block fails ($i)");
}
# ... also as a superuser: the check comes before the hold
my ($rc, $out, $err) = $node->psql('postgres', 'BEGIN; DROP DATABASE postgres;', timeout => 30);
like($err, qr/DROP DATABASE cannot run inside a transaction block/, "a superuser's DROP DATABASE in a transaction block fails");

# Ten seconds: a launcher that had been evicted would have been restarted
# (5 s) and be waiting, unconnected, for the database to be created.
my $deadline = time + 10;
my $moved = 0;
while (time < $deadline)
{
	my $pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp launcher' AND datname = 'postgres'");
	$moved = 1 if $pid ne $launcher;
	sleep 0.2;
}
is($moved, 0, 'the launcher stayed connected all along (10 s)');
is($node->safe_psql('postgres', 'SELECT ecp.launcher_pid()'), $launcher, 'the same launcher');
$node->safe_psql('postgres',
	"SELECT ecp.create_task('after', 'esd', 'after', query => 'SELECT g AS id FROM generate_series(1, 100) g')");
my $run = $node->safe_psql('postgres', "SELECT ecp.start('after')");
ok(EcpTest::poll($node, "SELECT started_at IS NOT NULL OR state <> 'pending' FROM ecp.run WHERE id = $run", 30),
	'runs still start');
unlike(slurp_file($node->logfile), qr/ecp launcher is leaving database "postgres"/,
	'the launcher was never asked to leave');

# --- the owner's own drop of a throwaway launcher database ------------------------
$node->safe_psql('postgres', 'CREATE ROLE dbo2 LOGIN');
$node->safe_psql('postgres', 'CREATE DATABASE throwaway OWNER dbo2');
$node->safe_psql('throwaway', 'SET ecp.install_in_any_database = on; CREATE EXTENSION ecp');
$node->append_conf('postgresql.conf', "ecp.database_name = 'throwaway'\n");
$node->restart;
my $in_throwaway =
  "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp launcher' AND datname = 'throwaway'";
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($in_throwaway) l"), 'the launcher is in throwaway');
$launcher = $node->safe_psql('postgres', $in_throwaway);

# The owner's drops that fail or are cancelled, while the launcher is held
# out, release the hold: another session keeps the database busy.
my $holder = $node->background_psql('throwaway');
$holder->query_safe('SELECT 1');
for my $i (1 .. 3)
{
	($rc, $out, $err) = $node->psql('postgres', "SET statement_timeout = '300ms'; DROP DATABASE throwaway;",
		extra_params => [ '-U', 'dbo2' ], timeout => 60);
	isnt($rc, 0, "the owner's drop $i fails (cancelled or busy)");
}
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($in_throwaway) l"),
	'after cancelled drops the launcher comes back to throwaway');
my $offset = length(slurp_file($node->logfile));
$holder->quit;

($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE throwaway', extra_params => [ '-U', 'dbo2' ], timeout => 60);
is($rc, 0, "the owner's DROP DATABASE of the launcher's database succeeds") or diag $err;
ok($node->poll_query_until('postgres',
		"SELECT ecp.launcher_pid() IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'ecp launcher')"),
	'the launcher waits, unconnected, for the database to come back');
ok(eval { $node->wait_for_log(qr/ecp launcher is waiting for database "throwaway" to be created/, $offset); 1 },
	'and says so');
# The dropping session has ended: the hold stays (the drop committed).
sleep 2;
ok(!$node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'ecp launcher'"),
	'the hold outlives the session that dropped the database');
$node->safe_psql('postgres', 'CREATE DATABASE throwaway OWNER dbo2');
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($in_throwaway) l"),
	'the launcher comes back after CREATE DATABASE');

$es->stop;
$node->stop;
done_testing();
