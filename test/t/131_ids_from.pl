# Ids from a table (issue 26): ecp.start(task, ids_from => 'schema.table'
# or a query) reads the ids of an id run as the task's owner, in batches,
# into ecp.run_id, in the starting session.
#  * the workflow: CREATE TABLE my_ids(id bigint); \copy my_ids FROM
#    'ids.csv' (200,000 ids, 500 of them twice), 20,000 of them deleted
#    from the source and 1,000 changed since the index was loaded; a task
#    with delete_missing: total 200,000 (each id once), 180,000 processed,
#    20,000 deleted; a verify with extra then finds the index equal to the
#    source; the run row, its part and its flow say where the ids came from;
#  * the query form, in a task without delete_missing: missing counted;
#    unqualified names resolve with the task's search_path;
#  * rolled back with the caller's transaction: no run, no ids;
#  * privileges: the owner reads, never the caller: a role without SELECT
#    gets 42501 naming the table (relation and query forms); bob cannot
#    read alice's table, and neither can a superuser starting bob's run;
#    the owner's function runs as the owner and cannot SET ROLE;
#    ecp_internal._copy_ids_from cannot be called by a role;
#  * memory and time: 1,000,000 ids read while the starting backend's
#    private memory (RssAnon) is sampled: it grows by less than 24 MB
#    (the ids as text alone are ~30 MB), and by less than 12 MB more than
#    for 100,000 ids; the seconds it takes are printed;
#  * bad calls, each with its SQLSTATE; the old call forms of ecp.start.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('a verify of 180,000 documents in reasonable time');
my $node = EcpTest::new_node('ids_from', conf => ['ecp.heartbeat_interval = 1']);
my $es = EsdServer->start();
my $dir = PostgreSQL::Test::Utils::tempdir();

sub sql { return $node->safe_psql('postgres', $_[0]) }

# [sqlstate, message] of a statement expected to fail ('' when it did not)
sub fails
{
	my ($statement, $role) = @_;
	my ($rc, $out, $err) = $node->psql('postgres',
		($role ? "SET ROLE $role;\n" : '') . "\\set VERBOSITY verbose\n$statement",
		on_error_stop => 1);
	return ['', $out] if $rc == 0;
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return [$state // '?', $err];
}

sub run_to_end
{
	my ($run, $what) = @_;
	is(EcpTest::wait_for_run($node, $run, 'succeeded', 300), 'succeeded', $what);
	return $run;
}

sub progress
{
	my ($run, $columns) = @_;
	return sql("SELECT concat_ws(':', $columns) FROM ecp.progress WHERE run_id = $run");
}

# --- the index loaded, then the source changed -----------------------------------------------------
sql(q{
	CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, n integer);
	INSERT INTO items SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 200000) g;
});
sql("SELECT ecp.create_consumer('es', '" . $es->url . "')");
sql(q{SELECT ecp.create_task('items_full', 'es', 'items', query => 'SELECT * FROM items')});
run_to_end(sql("SELECT ecp.start('items_full')"), 'the index items is loaded (200,000 documents)');
sql(q{
	DELETE FROM items WHERE id % 10 = 0;
	UPDATE items SET name = 'changed ' || id WHERE id % 10 = 5 AND id <= 10000;
});

# --- the workflow: \copy into a table, then ids_from ------------------------------------------------
open(my $csv, '>', "$dir/ids.csv") or die "ids.csv: $!";
print $csv "$_\n" for 1 .. 200000, 1 .. 500;
close($csv);
sql("CREATE TABLE my_ids(id bigint);\n\\copy my_ids FROM '$dir/ids.csv'");
is(sql('SELECT count(*) FROM my_ids'), 200500, '\copy loaded 200,500 lines (500 ids twice)');
sql(q{SELECT ecp.create_task('items_fix', 'es', 'items', query => 'SELECT * FROM items',
	options => '{"delete_missing": true}')});
my $t0 = time;
my $run = sql(q{SELECT ecp.start('items_fix', ids_from => 'public.my_ids')});
my $seconds = time - $t0;
diag(sprintf('ecp.start(ids_from) of 200,500 ids took %.2f s', $seconds));
is(sql("SELECT total || ' ' || ids_from || ' ' || only_ids::text FROM ecp.run WHERE id = $run"),
	'200000 public.my_ids {}', 'the run: total 200,000 (each id once), ids_from kept, only_ids empty');
is(sql("SELECT content->>'ids' || ' ' || (content->>'ids_from') FROM ecp.flow WHERE run_id = $run AND action = 'start'"),
	'200000 public.my_ids', 'its start row in the flow says how many and from where');
is(sql("SELECT source FROM ecp.parts WHERE run_id = $run"), '200000 ids from public.my_ids', 'ecp.parts says so too');
run_to_end($run, 'the ids_from run succeeds');
is(progress($run, 'processed, deleted, missing, failed'), '180000:20000:0:0',
	'180,000 processed, the 20,000 the source no longer has deleted (delete_missing)');
$es->refresh('items');
is($es->count('items'), 180000, 'the index holds 180,000 documents');
is($es->doc('items', '5')->{name}, 'changed 5', 'a changed row is there as it is now');
ok(!defined $es->doc('items', '10'), 'a deleted row is gone');
my $verify = run_to_end(sql(q{SELECT ecp.verify('items_fix', '{"extra": true}')}), 'a verify with extra');
is(sql("SELECT count(*) FROM ecp.drift WHERE run_id = $verify"), 0, '... finds the index equal to the source');
is(sql("SELECT action FROM ecp.progress WHERE run_id = $run"), 'ids', 'ecp.progress calls it an id run');

# --- the query form; no delete_missing: missing counted --------------------------------------------
sql(q{SELECT ecp.create_task('items_count', 'es', 'items', query => 'SELECT * FROM items')});
$run = sql(q{SELECT ecp.start('items_count', ids_from => 'SELECT id FROM my_ids WHERE id <= 20000')});
is(sql("SELECT total FROM ecp.run WHERE id = $run"), 20000, 'a query (unqualified, the task\'s search_path): 20,000 ids');
run_to_end($run, 'the run succeeds');
is(progress($run, 'processed, deleted, missing'), '18000:0:2000', '18,000 processed, 2,000 missing counted');

# --- the caller's transaction ------------------------------------------------------------------------
my $runs_before = sql('SELECT count(*) FROM ecp.run');
my $ids_before = sql('SELECT count(*) FROM ecp.run_id');
sql(q{BEGIN; SELECT ecp.start('items_count', ids_from => 'public.my_ids'); ROLLBACK;});
is(sql('SELECT count(*) FROM ecp.run') . ' ' . sql('SELECT count(*) FROM ecp.run_id'), "$runs_before $ids_before",
	'rolled back with the caller\'s transaction: no run, no ids');

# --- privileges ---------------------------------------------------------------------------------------------
sql(q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	GRANT SELECT ON items TO alice, bob;
	CREATE SCHEMA a AUTHORIZATION alice;
	CREATE SCHEMA b AUTHORIZATION bob;
	CREATE TABLE public.secret_ids AS SELECT g::bigint AS id FROM generate_series(1, 10) g;
});
sql(qq{
	SET ROLE alice;
	SELECT ecp.create_consumer('es_a', '${\ $es->url}');
	SELECT ecp.create_task('a_fix', 'es_a', 'a_items', query => 'SELECT * FROM public.items');
	CREATE TABLE a.alice_ids AS SELECT g::bigint AS id FROM generate_series(1, 100) g;
	GRANT USAGE ON SCHEMA a TO bob;
});
sql(qq{
	SET ROLE bob;
	SELECT ecp.create_consumer('es_b', '${\ $es->url}');
	SELECT ecp.create_task('b_fix', 'es_b', 'b_items', query => 'SELECT * FROM public.items');
	CREATE FUNCTION b.who() RETURNS SETOF text LANGUAGE sql AS 'SELECT current_user::text';
	CREATE FUNCTION b.escape() RETURNS SETOF text LANGUAGE plpgsql AS 'BEGIN RESET ROLE; RETURN NEXT current_user::text; END';
});
my $r = fails(q{SELECT ecp.start('a_fix', ids_from => 'public.secret_ids')}, 'alice');
is($r->[0], '42501', 'alice without SELECT on public.secret_ids: 42501');
like($r->[1], qr/role "alice" may not read public\.secret_ids/, '... naming the table and the role') or diag($r->[1]);
$r = fails(q{SELECT ecp.start('a_fix', ids_from => 'SELECT id FROM public.secret_ids')}, 'alice');
is($r->[0], '42501', 'the query form: 42501 too');
like($r->[1], qr/permission denied for table secret_ids/, '... naming the table') or diag($r->[1]);
$run = $node->safe_psql('postgres', q{SET ROLE alice; SELECT ecp.start('a_fix', ids_from => 'a.alice_ids')});
run_to_end($run, 'alice\'s run over her own table succeeds');
is(progress($run, 'processed, missing'), '90:10', '... 90 processed, 10 missing');
$r = fails(q{SELECT ecp.start('b_fix', ids_from => 'a.alice_ids')}, 'bob');
is($r->[0], '42501', 'bob cannot read alice\'s table through ids_from: 42501');
like($r->[1], qr/role "bob" may not read a\.alice_ids/, '... naming it') or diag($r->[1]);
$r = fails(q{SELECT ecp.start('b_fix', ids_from => 'a.alice_ids')});
is($r->[0], '42501', 'a superuser starting bob\'s run does not read alice\'s table for him: 42501');
like($r->[1], qr/role "bob" may not read/, '... it is read as bob') or diag($r->[1]);
$r = fails(q{SELECT ecp.start('b_fix', ids_from => 'SELECT id FROM a.alice_ids')});
is($r->[0], '42501', '... nor through a query');
$run = sql(q{SELECT ecp.start('b_fix', ids_from => 'SELECT * FROM b.who()')});
is(sql("SELECT string_agg(id, ',') FROM ecp.run_id WHERE run_id = $run"), 'bob',
	'bob\'s function, started by a superuser, ran as bob');
run_to_end($run, '... (the id "bob" is missing, counted)');
$r = fails(q{SELECT ecp.start('b_fix', ids_from => 'SELECT * FROM b.escape()')});
is($r->[0], '42501', 'the owner\'s code cannot RESET ROLE to the caller (a security-restricted operation)');
like($r->[1], qr/cannot set parameter "role" within security-(definer function|restricted operation)/, '... says PostgreSQL')
  or diag($r->[1]);
$r = fails(q{SELECT ecp_internal._copy_ids_from(1, 'alice', 'public.secret_ids', 'public')}, 'alice');
is($r->[0], '42501', 'ecp_internal._copy_ids_from is not for roles');
$r = fails(q{CREATE TABLE b.fake (id bigint, task_id bigint, owner regrole, ids_from text, changed_by text);
	CREATE TRIGGER steal AFTER INSERT ON b.fake FOR EACH ROW EXECUTE FUNCTION ecp_internal._copy_run_ids();
	INSERT INTO b.fake SELECT r.id, r.task_id, 'alice', 'a.alice_ids', 'bob' FROM ecp.run r LIMIT 1}, 'bob');
is($r->[0], '42501', 'the trigger function copy_ids on a table of bob\'s own: 42501');
$r = fails(q{INSERT INTO ecp.run (task_id, only_ids, ids_from)
	SELECT id, '{1}', 'a.alice_ids' FROM ecp.task WHERE name = 'a_fix'}, 'alice');
is($r->[0], '22023', 'a plain INSERT of a run with ids and ids_from: 22023');
$run = $node->safe_psql('postgres', q{SET ROLE alice;
	INSERT INTO ecp.run (task_id, ids_from) SELECT id, 'a.alice_ids' FROM ecp.task WHERE name = 'a_fix' RETURNING id});
is(sql("SELECT total FROM ecp.run WHERE id = $run"), 100, 'a plain INSERT with ids_from is ecp.start(ids_from => ...)');
run_to_end($run, '... and runs');

# --- memory and time: 1,000,000 ids ----------------------------------------------------------------
sql(q{
	CREATE TABLE big_ids AS SELECT g::bigint AS id FROM generate_series(1, 1000000) g;
	SELECT ecp.create_task('big', 'es', 'items', query => 'SELECT * FROM items');
});

sub rss_anon_kb
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>) { return $1 if /^RssAnon:\s+(\d+) kB/; }
	return undef;
}

my $bg = $node->background_psql('postgres');
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
chomp $pid;
# the first call loads catalogs and compiles ecp's functions: not what is measured
$bg->query_safe(q{SELECT ecp.cancel(ecp.start('big', ids_from => 'SELECT id FROM big_ids WHERE id <= 10'))});
my $base = rss_anon_kb($pid);

# ecp.start('big', ids_from => $source) in the background session, the
# backend's RssAnon sampled until it returns: (run, seconds, peak kB)
sub start_sampled
{
	my ($source) = @_;
	$bg->{stdout} = '';
	$bg->{stdin} .= "SELECT 'started ' || ecp.start('big', ids_from => '$source');\n";
	my $start = time;
	my $peak = 0;
	while (time < $start + 600)
	{
		$bg->{run}->pump_nb;
		last if $bg->{stdout} =~ /started \d+/;
		my $now = rss_anon_kb($pid) // last;
		$peak = $now if $now > $peak;
		sleep 0.02;    # a sampling interval, not a wait for something
	}
	my ($run) = $bg->{stdout} =~ /started (\d+)/;
	return ($run, time - $start, $peak);
}

SKIP:
{
	skip 'no /proc/<pid>/status RssAnon here', 5 unless defined $base;
	my ($small, $small_took, $small_peak) = start_sampled('SELECT id FROM big_ids WHERE id <= 100000');
	ok($small, sprintf('100,000 ids read in %.2f s', $small_took));
	sql("SELECT ecp.cancel($small)") if $small;
	my ($big, $took, $peak) = start_sampled('public.big_ids');
	ok($big, sprintf('1,000,000 ids read in %.2f s', $took));
	diag(sprintf('ecp.start(ids_from): 100,000 ids %.2f s, 1,000,000 ids %.2f s; RssAnon %d kB before, '
		  . 'peaks %d kB and %d kB', $small_took, $took, $base, $small_peak, $peak));
	# 1,000,000 ids as text alone are ~30 MB in memory (varlena and chunk headers)
	cmp_ok($peak - $base, '<', 24 * 1024, "the starting backend's private memory grew by less than 24 MB ("
		  . ($peak - $base) . ' kB)');
	cmp_ok($peak - $small_peak, '<', 12 * 1024,
		'ten times the ids took less than 12 MB more than 100,000 (' . ($peak - $small_peak) . ' kB): bounded by the batch');
	is(sql("SELECT total FROM ecp.run WHERE id = " . ($big // 0)), 1000000, 'the run has the 1,000,000 ids');
	sql("SELECT ecp.cancel($big)") if $big;
}
$bg->quit;

# --- bad calls -------------------------------------------------------------------------------------------------------
sql(q{
	CREATE TABLE null_ids (id bigint);
	INSERT INTO null_ids VALUES (1), (NULL);
	CREATE TABLE no_ids (id bigint);
	CREATE TABLE long_ids AS SELECT repeat('x', 600) AS id;
});
for my $case (
	[ q{ecp.start('items_count', ids => ARRAY[1], ids_from => 'public.my_ids')}, '22023', qr/ids and ids_from cannot be combined/ ],
	[ q{ecp.start('items_count', ids_from => '')}, '22023', qr/ids_from is empty/ ],
	[ q{ecp.start('items_count', ids_from => '  ')}, '22023', qr/ids_from is empty/ ],
	[ q{ecp.start('items_count', ids_from => 'public.nope')}, '42P01', qr/relation "public.nope" does not exist/ ],
	[ q{ecp.start('items_count', ids_from => 'public.items')}, '22023', qr/returns 3 columns \(id, name, n\), not one/ ],
	[ q{ecp.start('items_count', ids_from => 'public.')}, '42602', qr/invalid name syntax/ ],
	[ q{ecp.start('items_count', ids_from => 'SELECT 1; SELECT 2')}, '22023', qr/exactly one SELECT/ ],
	[ q{ecp.start('items_count', ids_from => 'WITH d AS (DELETE FROM my_ids RETURNING id) SELECT id FROM d')}, '22023', qr/data-modifying WITH/ ],
	[ q{ecp.start('items_count', ids_from => 'public.null_ids')}, '22004', qr/returns a NULL id/ ],
	[ q{ecp.start('items_count', ids_from => 'public.no_ids')}, '22023', qr/returns no ids: nothing to start/ ],
	[ q{ecp.start('items_count', ids_from => 'public.long_ids')}, '22023', qr/an id of 600 bytes/ ],
	[ q{ecp.start('nope', ids_from => 'public.my_ids')}, '42704', qr/task "nope" does not exist/ ])
{
	my ($call, $state, $re) = @$case;
	$r = fails("SELECT $call");
	is($r->[0], $state, "$call: $state");
	like($r->[1], $re, '... saying why') or diag($r->[1]);
}
is(sql('SELECT count(*) FROM my_ids'), 200500, 'the data-modifying WITH deleted nothing');

# --- the old call forms of ecp.start still resolve ------------------------------------------------------
for my $call (q{ecp.start('items_count', ARRAY[1, 2])}, q{ecp.start('items_count', '{3}')},
	q{ecp.start('items_count', ids => ARRAY['4'], at => now())}, q{ecp.start('items_count', ARRAY[5], NULL)})
{
	run_to_end(sql("SELECT $call"), "$call still works");
}

$es->stop;
$node->stop;
done_testing();
