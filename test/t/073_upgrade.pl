# The schema is versioned: 0.1 is released and frozen, every later version
# comes with an upgrade script.  An install upgraded from 0.1 (with rows in
# its tables) must equal a fresh install of the current version, object by
# object: functions with their bodies and privileges, tables, columns,
# constraints, triggers, policies, views, indexes.  And the rows of 0.1
# must still work after the upgrade.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use EcpTest;
use EsdServer;
use IPC::Run;

# Released scripts never change again: each one's checksum is on the list
# (test/released-scripts.sha256), and every script in sql/ is on it (a
# version is released when it lands).  A change is a new version.
use Digest::SHA;
my %released;
for (split /\n/, slurp_file("$FindBin::RealBin/../released-scripts.sha256"))
{
	my ($sum, $file) = split /\s+/;
	$released{$file} = $sum;
}
for my $path (sort glob("$FindBin::RealBin/../../sql/ecp--*.sql"))
{
	(my $file = $path) =~ s{.*/}{};
	ok(exists $released{$file}, "$file is on the list of released scripts");
	is(Digest::SHA->new(256)->addfile($path)->hexdigest, $released{$file} // '', "$file is as released")
		if exists $released{$file};
}

my $node = EcpTest::new_node('upgrade');
my $es = EsdServer->start();
my $url = $es->url;
my ($current) = slurp_file("$FindBin::RealBin/../../ecp.control") =~ /default_version = '([^']+)'/;
isnt($current, '0.1', "the current version ($current) is not the frozen 0.1");

$node->safe_psql('postgres', 'CREATE DATABASE upgraded; CREATE DATABASE fresh');
$node->safe_psql('upgraded', "CREATE EXTENSION ecp VERSION '0.1'");
is($node->safe_psql('upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'ecp'"), '0.1',
	'0.1 installs from its frozen script');

# Rows of 0.1: a consumer, a task, a finished run with its flow.
$node->safe_psql('upgraded', qq{
CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 10) g;
SELECT ecp.create_consumer('es', '$url');
SELECT ecp.create_task('items', 'es', 'items', query => 'SELECT * FROM items', options => '{"batch_size": 5}');
SELECT ecp.start('items');
});

$node->safe_psql('upgraded', "ALTER EXTENSION ecp UPDATE TO '$current'");
# (not in ecp.database_name: a superuser may, to compare the schemas)
$node->safe_psql('fresh', 'SET ecp.install_in_any_database = on; CREATE EXTENSION ecp');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'ecp'"), $current,
	"a fresh install is $current");

# Object by object (test/scripts/schema-diff.sh describes each from the
# catalog and diffs the two sets): exit 0 when equal, the differences otherwise.
my ($diff_out, $diff_err) = ('', '');
my $same = IPC::Run::run(['bash', "$FindBin::RealBin/../scripts/schema-diff.sh",
		$node->connstr('upgraded'), $node->connstr('fresh')], '>', \$diff_out, '2>', \$diff_err);
ok($same, 'the upgraded install equals a fresh one, object by object')
	or diag("$diff_out$diff_err");
like($diff_out, qr/\b[1-9][0-9]{2,} objects\b/, 'the comparison covers the whole schema') or diag($diff_out);

# The rows of 0.1 still work: the task is listed, its run can be cancelled,
# and a new task is checked the 0.2 way.
is($node->safe_psql('upgraded', 'SELECT name FROM ecp.tasks'), 'items', 'the 0.1 task survives');
$node->safe_psql('upgraded', "SELECT ecp.cancel(run_id) FROM ecp.progress WHERE state = 'pending'");
is($node->safe_psql('upgraded', 'SELECT state FROM ecp.progress'), 'cancelled',
	'its pending run can be cancelled after the upgrade');
my (undef, undef, $err) = $node->psql('upgraded',
	"SELECT ecp.create_task('bad', 'es', 'i', query => 'SELECT * FROM items', options => '{\"rate_limit\": 1e400}')");
like($err, qr/between 0 and 1000000000/, 'options are bounded after the upgrade');

$es->stop;
$node->stop;
done_testing();
