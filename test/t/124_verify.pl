# Verify and repair (issue 23) on a local table of 50,000 products.
#
# Checks:
#   - a full run ends with a count check in its flow ("count checked",
#     equal) and ecp.index_stats shows it;
#   - drift: in the stand-in 10 documents deleted and 10 changed, in the
#     source 10 rows deleted and 10 updated; ecp.verify(task, extra) finds
#     exactly those 40 ids with the right kinds (missing, stale with the
#     field that differs, extra), ecp.drift_summary counts them, and the
#     stand-in's request log has no write request during the verify;
#   - ecp.repair(verify) sends 30 again and deletes 10; a second verify is
#     clean; ecp.progress says verify and repair;
#   - the same drift again, the verify run rate-limited, paused, resumed
#     and its worker killed with kill -9: it still finds exactly the 40,
#     once each;
#   - option sample checks a part of the pages; the count check is
#     skipped when another task writes the index, unless count_check says
#     otherwise, and says "not equal" (and why) when rows were deleted;
#   - roles: another role cannot verify, repair, read or write drift;
#   - bad calls: unknown task, bad options, repair of a run that is not a
#     verify or has not ended, a task with a pipeline.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('request log');

my $NROWS = 50_000;
my $node = EcpTest::new_node('verify', conf => ['ecp.max_workers = 8', 'restart_after_crash = on']);
my $es = EsdServer->start();
my $url = $es->url;

$node->safe_psql('postgres', qq{
	CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price numeric(10,2),
	                       tags text[], updated timestamptz);
	INSERT INTO products
	SELECT g, 'product ' || g, (g % 1000) + 0.5, ARRAY['t' || (g % 7), 'x'], '2026-01-01'::timestamptz + g * interval '1 minute'
	  FROM generate_series(1, $NROWS) g;
	SELECT ecp.create_consumer('es', '$url');
	SELECT ecp.create_task('products', 'es', 'products', query => 'SELECT * FROM products',
	                       options => '{"batch_size": 1000, "parallelism": 2}');
});

sub sql { return $node->safe_psql('postgres', $_[0]) }

sub run_to_end
{
	my ($start, $what) = @_;
	my $run = sql($start);
	is(EcpTest::wait_for_run($node, $run, 'succeeded', 240), 'succeeded', "$what succeeds");
	return $run;
}

# The count check of a run: its last worker writes it after the run
# succeeded, so wait for it.
sub count_checked
{
	my ($run) = @_;
	EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp.flow WHERE run_id = $run AND action = 'count checked'", 30);
	return 1;
}

# --- a full run and its count check ----------------------------------------
my $full = run_to_end("SELECT ecp.start('products')", 'the full run');
count_checked($full);
is(sql("SELECT content->>'count' || ' ' || (content->>'indexed') || ' ' || (content->>'equal') FROM ecp.flow "
	  . "WHERE run_id = $full AND action = 'count checked'"),
	"$NROWS $NROWS true", 'the full run ends with a count check: the index holds what it wrote');
is(sql("SELECT index_count || ' ' || count_equal || ' ' || source_rows FROM ecp.index_stats('products')"),
	"$NROWS true $NROWS", 'ecp.index_stats shows the count and the source rows');
is(sql("SELECT action FROM ecp.progress WHERE run_id = $full"), 'sync', 'ecp.progress: a full run is a sync');

# --- drift ---------------------------------------------------------------------
my @deleted_in_index = (101 .. 110);
my @changed_in_index = (201 .. 210);
my @deleted_in_source = (301 .. 310);
my @updated_in_source = (401 .. 410);
sub make_drift
{
	$es->bulk(join('', (map { qq({"delete":{"_index":"products","_id":"$_"}}\n) } @deleted_in_index),
		(map { qq({"index":{"_index":"products","_id":"$_"}}\n{"id":$_,"name":"changed by hand","price":1.5,"tags":["t1","x"],"updated":null}\n) } @changed_in_index)),
		refresh => 'true');
	sql('DELETE FROM products WHERE id BETWEEN 301 AND 310');
	sql('UPDATE products SET price = price + 1 WHERE id BETWEEN 401 AND 410');
}
sub restore_source
{
	sql(q{INSERT INTO products SELECT g, 'product ' || g, (g % 1000) + 0.5, ARRAY['t' || (g % 7), 'x'],
	        '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(301, 310) g});
	sql('UPDATE products SET price = price - 1 WHERE id BETWEEN 401 AND 410');
}
my $expected = join("\n",
	(map { "$_ missing" } @deleted_in_index), (map { "$_ stale" } @changed_in_index),
	(map { "$_ extra" } @deleted_in_source), (map { "$_ stale" } @updated_in_source));
sub found { my ($run) = @_; return sql("SELECT id || ' ' || kind FROM ecp.drift WHERE run_id = $run ORDER BY id::integer") }

make_drift();
$es->request('DELETE', '/_esd/requests');
my $verify = run_to_end(q{SELECT ecp.verify('products', '{"extra": true}')}, 'a verify with extra');
is(found($verify), $expected, 'verify finds exactly the 40 ids, each with its kind');
like(sql("SELECT detail FROM ecp.drift WHERE run_id = $verify AND id = '201'"),
	qr/^name: "product 201" in the source, "changed by hand" in the index$/, 'a stale document names the field that differs');
like(sql("SELECT detail FROM ecp.drift WHERE run_id = $verify AND id = '401'"),
	qr/^price: 402\.50 in the source, 401\.50? in the index$/, 'and for an updated row, its new value');
is(sql("SELECT checked || ' ' || missing || ' ' || stale || ' ' || extra || ' ' || index_ids_walked "
	  . "FROM ecp.drift_summary WHERE run_id = $verify"),
	($NROWS - 10) . ' 10 20 10 ' . ($NROWS - 10), 'ecp.drift_summary: checked, missing, stale, extra, ids walked');
is(sql("SELECT action FROM ecp.progress WHERE run_id = $verify"), 'verify', 'ecp.progress: a verify run');
my @requests = @{ $es->requests(100000) };
my @writes = grep { $_->{method} ne 'GET' && !($_->{method} eq 'POST' && $_->{url} =~ m{/_mget|/_search|/_pit|/_count})
	  && !($_->{method} eq 'DELETE' && $_->{url} =~ m{^/_pit}) } @requests;
ok(scalar(@requests) > 10, 'the stand-in logged the verify\'s requests (' . scalar(@requests) . ')');
is(join(', ', map { "$_->{method} $_->{url}" } @writes[0 .. ($#writes < 4 ? $#writes : 4)]), '',
	'verify never writes: no write request in the stand-in\'s log');
is($es->stats->{open_pits} // 0, 0, 'the walk closed its point in time');

# --- repair --------------------------------------------------------------------
my $repair = run_to_end("SELECT ecp.repair($verify)", 'the repair');
is(sql("SELECT processed || ' ' || deleted || ' ' || action FROM ecp.progress WHERE run_id = $repair"),
	'30 10 repair', 'the repair sent 30 documents again (10 missing, 20 stale) and deleted 10 (extra)');
is(sql("SELECT repair_run FROM ecp.drift_summary WHERE run_id = $verify"), $repair, 'drift_summary names the repair run');
my $clean = run_to_end(q{SELECT ecp.verify('products', '{"extra": true}')}, 'a second verify');
is(sql("SELECT checked || ' ' || missing || ' ' || stale || ' ' || extra FROM ecp.drift_summary WHERE run_id = $clean"),
	($NROWS - 10) . ' 0 0 0', 'the second verify finds nothing');
my ($stdout, $stderr);
$node->psql('postgres', "SELECT ecp.repair($clean)", stdout => \$stdout, stderr => \$stderr);
like($stderr, qr/found no drift: nothing to repair/, 'repairing a clean verify is a notice');

# --- paused, resumed, kill -9: the same 40, once each ----------------------------
restore_source();
run_to_end("SELECT ecp.start('products')", 'a full run that restores the index');
make_drift();
sql("SELECT ecp.set_rate('products', 4000)");
my $slow = sql(q{SELECT ecp.verify('products', '{"extra": true}')});
ok(EcpTest::poll($node, "SELECT coalesce(sum(processed), 0) > 8000 FROM ecp.parts WHERE run_id = $slow AND part >= 0", 120),
	'the rate-limited verify is under way');
sql("SELECT ecp.pause($slow)");
is(EcpTest::wait_for_run($node, $slow, 'paused', 30), 'paused', 'it pauses');
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM ecp.parts WHERE run_id = $slow AND state = 'running'", 60),
	'its workers stopped');
sql("SELECT ecp.resume($slow)");
ok(EcpTest::poll($node, "SELECT coalesce(sum(processed), 0) > 24000 FROM ecp.parts WHERE run_id = $slow AND part >= 0", 120),
	'it goes on after resume');
my $pid = sql("SELECT worker_pid FROM ecp.parts WHERE run_id = $slow AND state = 'running' AND part >= 0 "
	  . "AND worker_pid IS NOT NULL LIMIT 1");
ok($pid =~ /^\d+$/, 'a worker of the verify runs');
kill 'KILL', $pid;
$node->poll_query_until('postgres', 'SELECT true');
sql("SELECT ecp.set_rate('products', 0)");
is(EcpTest::wait_for_run($node, $slow, 'succeeded', 240), 'succeeded', 'the verify ends after the crash');
is(found($slow), $expected, 'paused, resumed and killed, it still finds exactly the 40 ids');
is(sql("SELECT count(*) FROM ecp.drift WHERE run_id = $slow"), 40, 'each once');
run_to_end("SELECT ecp.repair($slow)", 'its repair');

# --- sample ------------------------------------------------------------------------
my $sampled = run_to_end(q{SELECT ecp.verify('products', '{"sample": 0.5}')}, 'a sampled verify');
my ($checked, $skipped) = split / /, sql("SELECT checked || ' ' || not_sampled FROM ecp.drift_summary WHERE run_id = $sampled");
ok($checked > 0 && $checked < $NROWS - 10, "sample 0.5 checked a part of the documents ($checked)");
is($checked + $skipped, $NROWS - 10, 'the others are counted as not sampled');

# --- the count check: other writers, count_check, not equal -----------------------
sql(q{SELECT ecp.create_task('other', 'es', 'products', query => 'SELECT * FROM products WHERE false')});
my $shared = run_to_end("SELECT ecp.start('products')", 'a full run of a task whose index another task writes');
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ecp worker'", 30),
	'the run\'s workers are gone');
is(sql("SELECT count(*) FROM ecp.flow WHERE run_id = $shared AND action = 'count checked'"), 0,
	'no count check: another task writes the index');
sql(q{UPDATE ecp.task SET options = options || '{"count_check": true}' WHERE name = 'products'});
sql('DELETE FROM products WHERE id <= 5');
my $said = run_to_end("SELECT ecp.start('products')", 'a full run with count_check true');
count_checked($said);
is(sql("SELECT (content->>'equal') || ' ' || (content->>'count') || ' ' || (content->>'indexed') FROM ecp.flow "
	  . "WHERE run_id = $said AND action = 'count checked'"),
	'false ' . ($NROWS - 10) . ' ' . ($NROWS - 15), 'count_check true: checked, and not equal after rows were deleted');
like(sql("SELECT content->>'why' FROM ecp.flow WHERE run_id = $said AND action = 'count checked'"),
	qr/5 documents more than the run wrote.*extra/, 'the flow says why and what finds them');

# --- roles: another role's verify, repair and drift ----------------------------------
sql('CREATE ROLE bob LOGIN');
sub as_bob
{
	my ($call) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $call, extra_params => [ '-U', 'bob' ]);
	return ($rc, $out, $err);
}
my (undef, undef, $berr) = as_bob(q{SELECT ecp.verify('products')});
like($berr, qr/task "products" does not exist/, 'bob cannot verify the superuser\'s task');
(undef, undef, $berr) = as_bob("SELECT ecp_internal._start_verify((SELECT id FROM ecp.task WHERE name = 'products'), '{}')");
like($berr, qr/is not yours/, 'nor through the internal function');
(undef, undef, $berr) = as_bob("SELECT ecp.repair($verify)");
like($berr, qr/run $verify does not exist/, 'bob cannot repair another role\'s verify run');
my (undef, $bout) = as_bob("SELECT count(*) FROM ecp.drift");
is($bout, '0', 'bob sees no drift rows of others');
(undef, undef, $berr) = as_bob("INSERT INTO ecp.drift (run_id, id, kind, part_no, owner) VALUES ($verify, 'x', 'extra', 0, 'bob')");
like($berr, qr/permission denied for table drift/, 'bob cannot write drift rows');

# --- bad calls -------------------------------------------------------------------
sub fails
{
	my ($call, $code, $pattern, $what) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$call");
	like($err, qr/ERROR:  $code: .*$pattern/s, $what);
}
fails(q{SELECT ecp.verify('nope')}, '42704', 'task "nope" does not exist', 'verify: an unknown task');
fails(q{SELECT ecp.verify('products', '{"extra": 1}')}, '22023', 'must be true or false', 'verify: extra not a boolean');
fails(q{SELECT ecp.verify('products', '{"sample": 0}')}, '22023', 'above 0 and at most 1', 'verify: sample 0');
fails(q{SELECT ecp.verify('products', '{"fast": true}')}, '22023', 'unknown verify option "fast"', 'verify: an unknown option');
fails("SELECT ecp.repair($full)", '22023', "run $full is not a verify run", 'repair: not a verify run');
sql("SELECT ecp.set_rate('products', 100)");
my $running = sql(q{SELECT ecp.verify('products')});
fails("SELECT ecp.repair($running)", '55000', 'repair it once it has ended', 'repair: a verify still running');
sql("SELECT ecp.cancel($running)");
sql(q{SELECT ecp.create_task('piped', 'es', 'piped', query => 'SELECT * FROM products', options => '{"pipeline": "p"}')});
fails(q{SELECT ecp.verify('piped')}, '0A000', 'ingest pipeline "p"', 'verify: a task with a pipeline');

$es->stop;
$node->stop;
done_testing();
