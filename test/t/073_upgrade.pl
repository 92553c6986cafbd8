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

# One description line per object of schema ecp.
my $catalog = q{
WITH ns AS (SELECT 'ecp'::regnamespace AS oid)
SELECT kind || ' ' || name || ': ' || coalesce(def, '') FROM (
  SELECT 'function' AS kind, p.oid::regprocedure::text AS name,
         pg_get_functiondef(p.oid) || ' acl=' || coalesce(p.proacl::text, '') AS def
    FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
  UNION ALL
  SELECT 'relation', c.relname, c.relkind::text || ' rls=' || c.relrowsecurity || ' acl=' || coalesce(c.relacl::text, '')
         || ' options=' || coalesce(c.reloptions::text, '')
    FROM pg_class c, ns WHERE c.relnamespace = ns.oid
  UNION ALL
  SELECT 'column', c.relname || '.' || a.attnum || '.' || a.attname,
         format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull || ' identity=' || a.attidentity::text
         || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' acl=' || coalesce(a.attacl::text, '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum, ns
   WHERE c.relnamespace = ns.oid AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'constraint', conrelid::regclass || '.' || conname, pg_get_constraintdef(co.oid)
    FROM pg_constraint co, ns WHERE co.connamespace = ns.oid
  UNION ALL
  SELECT 'trigger', tgrelid::regclass || '.' || tgname, pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid, ns
   WHERE c.relnamespace = ns.oid AND NOT t.tgisinternal
  UNION ALL
  SELECT 'policy', tablename || '.' || policyname,
         permissive || ' ' || cmd || ' ' || roles::text || ' using=' || coalesce(qual, '') || ' check=' || coalesce(with_check, '')
    FROM pg_policies WHERE schemaname = 'ecp'
  UNION ALL
  SELECT 'view', c.relname, pg_get_viewdef(c.oid) FROM pg_class c, ns WHERE c.relnamespace = ns.oid AND c.relkind = 'v'
  UNION ALL
  SELECT 'index', c.relname, pg_get_indexdef(c.oid) FROM pg_class c, ns WHERE c.relnamespace = ns.oid AND c.relkind = 'i'
  UNION ALL
  SELECT 'comment', c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c, ns WHERE c.relnamespace = ns.oid
  UNION ALL
  SELECT 'config_dump', e.extconfig::regclass[]::text, e.extcondition::text FROM pg_extension e WHERE e.extname = 'ecp'
) objects ORDER BY 1
};

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
$node->safe_psql('fresh', 'CREATE EXTENSION ecp');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'ecp'"), $current,
	"a fresh install is $current");

my $upgraded = $node->safe_psql('upgraded', $catalog);
my $fresh = $node->safe_psql('fresh', $catalog);
cmp_ok(scalar(split /\n/, $fresh), '>', 100, 'the description covers the whole schema');
if ($upgraded eq $fresh)
{
	pass('the upgraded install equals a fresh one, object by object');
}
else
{
	my %in_fresh = map { $_ => 1 } split /\n/, $fresh;
	my %in_upgraded = map { $_ => 1 } split /\n/, $upgraded;
	diag("only after the upgrade: $_") for grep { !$in_fresh{$_} } split /\n/, $upgraded;
	diag("only in a fresh install: $_") for grep { !$in_upgraded{$_} } split /\n/, $fresh;
	fail('the upgraded install equals a fresh one, object by object');
}

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
