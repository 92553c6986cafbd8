# Migrating an index with no downtime (task option mode alias_swap).
#  * 100,000 rows into a new index while a reader polls _count through the
#    alias every 100 ms: it never sees the alias missing nor a smaller count
#    than before; afterwards the alias points at the new index only, which
#    has the task's mappings, its replicas and refresh interval restored,
#    and the old index is kept;
#  * a fault during the load fails the run: the alias and the old index are
#    untouched; ecp.resume completes the migration;
#  * an id repair during a load writes to the alias and to the new index
#    (dual writes), so the update is not lost at the swap;
#  * before its first migration, an alias_swap task's id run fails with a
#    hint instead of creating an index named like the alias;
#  * ecp.rollback points the alias back; after keep_old false dropped the
#    old index it is refused; ecp.cancel(run, drop_index => true) drops a
#    half-built index, a plain cancel keeps it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('aliases, settings and faults of the stand-in');
my $node = EcpTest::new_node('migration', conf => [ 'ecp.heartbeat_interval = 1', 'ecp.retry_base_ms = 100' ]);
my $es = EsdServer->start();
my $url = $es->url;
my $json = JSON::PP->new->utf8->canonical;
my $dir = PostgreSQL::Test::Utils::tempdir();

sub sql { return $node->safe_psql('postgres', $_[0]) }

sub flow_actions
{
	my ($run) = @_;
	return sql("SELECT string_agg(action, ',' ORDER BY at) FROM ecp.flow WHERE run_id = $run");
}

sub alias_targets
{
	my ($st, $b) = $es->get('/_alias/products');
	return $st == 200 ? join(',', sort keys %$b) : "HTTP $st";
}

sub migration { return sql("SELECT $_[1] FROM ecp.migrations WHERE run_id = $_[0]") }

sql(q{
	CREATE TABLE products (id bigint PRIMARY KEY, sku text, name text, price numeric);
	INSERT INTO products SELECT g, 'sku-' || g, 'product ' || g, g % 100 FROM generate_series(1, 90000) g;
});
sql("SELECT ecp.create_consumer('es', '$url')");

# --- the alias-swap trap: before its first migration, an alias_swap task's --------------
# other runs must not auto-create an index named like the alias (which would
# keep the alias from ever being created)
sql(q{SELECT ecp.create_task('early', 'es', 'early-alias', query => 'SELECT * FROM products',
      options => '{"mode": "alias_swap"}')});
my $early = sql("SELECT ecp.start('early', ids => ARRAY['1', '2'])");
is(EcpTest::wait_for_run($node, $early, 'failed', 60), 'failed', 'an id run before the first migration fails');
like(sql("SELECT last_error FROM ecp.run WHERE id = $early"),
	qr/alias "early-alias" of task "early" \(mode alias_swap\) does not exist yet.*a full run \(ecp.start\(task\)\) creates the first index/,
	'... saying the alias does not exist yet and what creates it');
my ($early_st) = $es->head('/early-alias');
is($early_st, 404, 'and no index named like the alias was created');
my $first = sql("SELECT ecp.start('early')");
is(EcpTest::wait_for_run($node, $first, 'succeeded', 180), 'succeeded', 'the first migration then creates index and alias');
my ($alias_st, $alias_body) = $es->get('/_alias/early-alias');
is(join(',', keys %{ $alias_body // {} }), "early-alias-$first", 'the alias points at the new index');
$early = sql("SELECT ecp.start('early', ids => ARRAY['1', '2'])");
is(EcpTest::wait_for_run($node, $early, 'succeeded', 60), 'succeeded', 'now an id run through the alias succeeds');

# --- the index the alias points at today ---------------------------------------------
sql(q{SELECT ecp.create_task('v1', 'es', 'products-v1', query => 'SELECT * FROM products')});
my $run = sql("SELECT ecp.start('v1')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'the first index is loaded');
$es->post('/_aliases', { actions => [ { add => { index => 'products-v1', alias => 'products' } } ] });
$es->refresh('products-v1');
is($es->count('products'), 90000, 'the alias shows 90,000 documents');
sql(q{INSERT INTO products SELECT g, 'sku-' || g, 'product ' || g, g % 100 FROM generate_series(90001, 100000) g});

# --- a reader through the alias, every 100 ms ----------------------------------------------
my $stop_file = "$dir/stop-reader";
my $reads_file = "$dir/reads";
my $reader = fork();
die "fork: $!" unless defined $reader;
if ($reader == 0)
{
	my $http = HTTP::Tiny->new(timeout => 5);
	open(my $out, '>', $reads_file) or POSIX::_exit(1);
	$out->autoflush(1);
	my $deadline = time + 300;
	while (!-e $stop_file && time < $deadline)
	{
		my $r = $http->get("$url/products/_count");
		my $count = $r->{status} == 200 ? eval { JSON::PP::decode_json($r->{content})->{count} } : undef;
		print $out defined $count ? "$count\n" : "ERROR $r->{status}\n";
		sleep 0.1;
	}
	close $out;
	POSIX::_exit(0);
}

# --- the migration ---------------------------------------------------------------------------
sql(q{SELECT ecp.create_task('migrate', 'es', 'products', query => 'SELECT * FROM products',
	options => '{"mode": "alias_swap", "batch_size": 2000, "rate_limit": 40000,
	             "settings": {"number_of_shards": 1, "number_of_replicas": 1},
	             "mappings": {"properties": {"sku": {"type": "keyword"}}}}')});
$run = sql("SELECT ecp.start('migrate')");
my $new = "products-$run";
ok(EcpTest::poll($node, "SELECT step = 'load' AND state = 'loading' FROM ecp.migrations WHERE run_id = $run", 60),
	'the migration is loading its new index');
my ($st, $settings) = $es->get("/$new/_settings");
is($settings->{$new}{settings}{index}{refresh_interval}, '-1', 'while it loads the new index does not refresh');
is($settings->{$new}{settings}{index}{number_of_replicas}, '0', '... and has no replicas');
is(alias_targets(), 'products-v1', 'during the load the alias still points at the old index');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'the migration succeeded');
# the reader goes on until it has read through the swapped alias
my $deadline = time + 30;
sleep 0.05 until (time > $deadline || (slurp_file($reads_file) =~ /^100000$/m));
open(my $stop, '>', $stop_file) or die $!;
close $stop;
waitpid($reader, 0);
my @reads = do { open(my $fh, '<', $reads_file) or die $!; map { chomp; $_ } <$fh> };
cmp_ok(scalar(@reads), '>', 10, scalar(@reads) . ' reads through the alias during the migration');
is(scalar(grep { /^ERROR/ } @reads), 0, 'the reader never saw the alias missing (no error)');
my $smaller = 0;
for my $i (1 .. $#reads) { $smaller++ if $reads[$i] < $reads[ $i - 1 ] }
is($smaller, 0, 'the reader never saw a smaller count than before');
is($reads[-1], 100000, 'the last reads see the new index: 100,000');
is(alias_targets(), $new, 'the alias points at the new index only');
my ($wst, $aliases) = $es->get('/_alias/products');
ok($aliases->{$new}{aliases}{products}{is_write_index}, 'as its write index');
my (undef, $mapping) = $es->get("/$new/_mapping");
is($mapping->{$new}{mappings}{properties}{sku}{type}, 'keyword', 'the new index has the task\'s mappings');
(undef, $settings) = $es->get("/$new/_settings");
is($settings->{$new}{settings}{index}{number_of_replicas}, '1', 'the task\'s replicas are restored');
isnt($settings->{$new}{settings}{index}{refresh_interval} // '', '-1', 'the refresh interval is back to the default');
$es->refresh('products-v1');
is($es->count('products-v1'), 90000, 'the old index is kept');
is(migration($run, "state || ' ' || step || ' ' || old_index || ' ' || new_index || ' ' || (swapped_at IS NOT NULL)"),
	"swapped done products-v1 $new true", 'ecp.migrations: swapped, from products-v1 to the new index');
like(flow_actions($run), qr/index created.*settings restored,count checked,alias swapped/,
	'the flow has every step');
my $v2 = $new;

# --- a fault during the load ----------------------------------------------------------------------
$es->set_faults({ bulk_reject => { status => 500, every => 20 } });
$run = sql("SELECT ecp.start('migrate')");
$new = "products-$run";
is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed', 'a 500 during the load fails the migration');
is(alias_targets(), $v2, 'the alias is unchanged');
$es->refresh($v2);
is($es->count($v2), 100000, 'the old index is intact');
is(migration($run, "state || ' ' || step"), 'failed load', 'ecp.migrations: failed while loading');
$es->clear_faults;
sql("SELECT ecp.resume($run)");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'ecp.resume completes the migration');
is(alias_targets(), $new, 'the alias points at the resumed migration\'s index');
$es->refresh($new);
is($es->count($new), 100000, 'which holds every row');
my $v3 = $new;

# --- dual writes: an id repair during a load ---------------------------------------------------------
sql(q{SELECT ecp.create_task('repair', 'es', 'products', query => 'SELECT * FROM products')});
sql(q{UPDATE ecp.task SET options = options || '{"rate_limit": 10000}' WHERE name = 'migrate'});
$run = sql("SELECT ecp.start('migrate')");
$new = "products-$run";
ok(EcpTest::poll($node, "SELECT processed > 5000 FROM ecp.progress WHERE run_id = $run", 120),
	'a slow migration has loaded id 7 already');
sql(q{UPDATE products SET name = 'renamed during the load' WHERE id = 7});
my $repair = sql(q{SELECT ecp.start('repair', ids => ARRAY['7'])});
is(EcpTest::wait_for_run($node, $repair, 'succeeded', 60), 'succeeded', 'the repair of id 7 succeeded');
is(migration($run, 'state'), 'loading', 'while the migration was still loading');
is($es->doc('products', '7')->{name}, 'renamed during the load', 'the repair reached the alias (the old index)');
is($es->doc($new, '7')->{name}, 'renamed during the load', '... and the new index');
like(flow_actions($repair), qr/dual write/, 'the repair\'s flow says it wrote to both');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'the migration succeeded');
is($es->doc('products', '7')->{name}, 'renamed during the load', 'after the swap the update is there');
cmp_ok(migration($run, 'dual_writes'), '>=', 1, 'ecp.migrations counts the dual writes');
my $v4 = $new;

# --- rollback --------------------------------------------------------------------------------------------------
my $rollback = sql("SELECT ecp.rollback('migrate')");
is(EcpTest::wait_for_run($node, $rollback, 'succeeded', 60), 'succeeded', 'ecp.rollback ran');
is(alias_targets(), $v3, 'the alias points at the index it had before the last swap');
is(migration($run, 'state'), 'rolled back', 'ecp.migrations: rolled back');
like(flow_actions($rollback), qr/rollback/, 'the flow has the rollback');
my ($rc, $out, $err) = $node->psql('postgres', "SELECT ecp.rollback('migrate')");
like($err, qr/has no swap to roll back/, 'a second rollback is refused');

sql(q{UPDATE ecp.task SET options = options || '{"keep_old": false, "rate_limit": 1000000}' WHERE name = 'migrate'});
$run = sql("SELECT ecp.start('migrate')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'a migration with keep_old false');
($st) = $es->head("/$v3");
is($st, 404, 'dropped the old index');
($rc, $out, $err) = $node->psql('postgres', "SELECT ecp.rollback('migrate')");
like($err, qr/cannot roll back alias "products": its index before the swap \(\Q$v3\E\) was dropped/,
	'rollback after the old index was dropped is a clear error');

# --- cancel: keep the half-built index, or drop it --------------------------------------------------------
sql(q{UPDATE ecp.task SET options = options || '{"rate_limit": 5000, "keep_old": true}' WHERE name = 'migrate'});
my $current = alias_targets();
for my $drop (0, 1)
{
	$run = sql("SELECT ecp.start('migrate')");
	ok(EcpTest::poll($node, "SELECT processed > 2000 FROM ecp.progress WHERE run_id = $run", 120),
		'a migration is loading');
	sql("SELECT ecp.cancel($run" . ($drop ? ', drop_index => true' : '') . ')');
	if ($drop)
	{
		my $cleanup = sql("SELECT max(id) FROM ecp.run WHERE action = 'drop_index'");
		is(EcpTest::wait_for_run($node, $cleanup, 'succeeded', 60), 'succeeded', 'cancel with drop_index runs a cleanup');
		($st) = $es->head("/products-$run");
		is($st, 404, 'which dropped the half-built index');
		is(migration($run, 'state'), 'dropped', 'ecp.migrations: dropped');
	}
	else
	{
		($st) = $es->head("/products-$run");
		is($st, 200, 'a plain cancel keeps the half-built index');
	}
	is(alias_targets(), $current, 'the alias is unchanged by the cancelled migration');
}

$es->stop;
done_testing();
