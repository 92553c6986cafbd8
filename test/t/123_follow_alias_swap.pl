# A follower writes to an alias while a migration of that alias loads a
# new index (mode alias_swap): its batches go to both indices, so the swap
# loses no change.  The follower's task is of mode direct, on the alias;
# another task (mode alias_swap, same query) migrates it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EcpFollow;
use EsdServer;

EsdServer->require_stand_in('aliases of the stand-in');
my $node = EcpTest::new_node('follow_alias', conf => [ 'ecp.heartbeat_interval = 1' ]);
my $es = EsdServer->start();
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
EcpFollow::create_shop($node, 40_000);
$node->safe_psql('postgres',
	"SELECT ecp.create_task('migrate', 'esd', 'shop', query => \$q\$$EcpFollow::QUERY\$q\$, "
	  . "options => '{\"id_column\": \"id\", \"mode\": \"alias_swap\", \"batch_size\": 2000}')");
my $first = $node->safe_psql('postgres', "SELECT ecp.start('migrate')");
is(EcpTest::wait_for_run($node, $first), 'succeeded', 'a first migration creates the alias');

$node->safe_psql('postgres',
	"SELECT ecp.create_task('follow', 'esd', 'shop', query => \$q\$$EcpFollow::QUERY\$q\$, options => '$EcpFollow::OPTIONS')");
$node->safe_psql('postgres', "SELECT ecp.follow('follow', backfill => false)");
ok(EcpFollow::until_true(sub { EcpFollow::follower_state($node, 'follow') eq 'following' }, 60), 'a follower on the alias');

# a second migration, slowed so changes land while it loads
$node->safe_psql('postgres', "SELECT ecp.set_rate('migrate', 8000)");
my $second = $node->safe_psql('postgres', "SELECT ecp.start('migrate')");
ok(EcpFollow::until_true(sub {
	$node->safe_psql('postgres', "SELECT step FROM ecp.migrations WHERE run_id = $second") eq 'load' }, 60),
	'the second migration loads its new index');
EcpFollow::change_shop($node, 1, 200, 200, 20);
ok(EcpFollow::until_true(sub {
	$node->safe_psql('postgres', "SELECT dual_writes > 0 FROM ecp.migrations WHERE run_id = $second") eq 't' }, 60),
	'the follower writes to the new index as well (dual writes)');
ok($node->safe_psql('postgres', "SELECT step FROM ecp.migrations WHERE run_id = $second") ne 'done',
	'while the migration still loads');
$node->safe_psql('postgres', "SELECT ecp.set_rate('migrate', 0)");
is(EcpTest::wait_for_run($node, $second), 'succeeded', 'the second migration swaps the alias');
EcpFollow::change_shop($node, 2, 100, 100, 10);
is(EcpFollow::wait_equal($node, $es, 'shop', 'follow'), '0 0 0',
	'after the swap the alias (the new index) equals the source: no change was lost');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.flow f JOIN ecp.followers w ON w.run = f.run_id "
	. "WHERE w.task = 'follow' AND f.action = 'dual write'"), '1', 'the follower\'s flow says it wrote to both');

$es->stop;
$node->stop;
done_testing();
