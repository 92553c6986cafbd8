# Task option paging 'cursor' (issue 26): any query is read whole through
# one held cursor, in one snapshot, a batch at a time.
#
#  - an aggregate and a join without a unique column are synced exactly
#    (documents equal to the query's rows as jsonb; the join without _id,
#    op create);
#  - 100,000 rows in batches of 500: the worker's own memory stays bounded
#    (its RssAnon, read while it runs), the held result goes to temporary
#    files;
#  - kill -9 of the worker, and pause/resume, mid-run: the part starts its
#    query again from the beginning, the flow says "cursor restarted", the
#    counters count from 0 (never past 100%), the index ends equal;
#  - without _id the documents sent before a restart are created again;
#  - create_task suggests paging 'cursor' for a key that is not unique;
#  - what cannot work is refused with its SQLSTATE;
#  - the query and the functions it calls run only as the owner, inside the
#    sandbox (the task's search_path, not a superuser), every row of them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('delays and request counts');
my $node = EcpTest::new_node('cursor',
	conf => [ 'restart_after_crash = on', 'ecp.recovery_timeout = 2', 'ecp.heartbeat_interval = 1',
		'wal_writer_delay = 200ms', 'work_mem = 4MB' ]);
my $es = EsdServer->start();
my $url = $es->url;
my $json = JSON::PP->new->utf8->allow_bignum->canonical;
$node->safe_psql('postgres', qq{
SELECT ecp.create_consumer('esd', '$url');
CREATE TABLE sales AS
  SELECT g AS id, g % 37 AS region, g % 5 AS product, (g * 7 % 1000)::numeric / 10 AS amount
    FROM generate_series(1, 20000) g;
CREATE TABLE regions AS SELECT r AS region, 'region ' || r AS name FROM generate_series(0, 36) r;
});

# Every document of an index (a point in time, walked in _shard_doc
# order with search_after: bounded pages) into table $table (id text,
# doc jsonb).
sub load_index_into
{
	my ($table, $index) = @_;
	$es->refresh($index);
	my (undef, $pit) = $es->post("/$index/_pit?keep_alive=1m");
	my $pit_id = $pit->{id} // die "no point in time on $index";
	my ($lines, $after) = ('', undef);
	for (1 .. 1000)
	{
		my $query = { size => 10000, sort => [ { _shard_doc => 'asc' } ], query => { match_all => {} },
			pit => { id => $pit_id, keep_alive => '1m' },
			(defined $after ? (search_after => $after) : ()) };
		my $res = HTTP::Tiny->new->post("$url/_search",
			{ headers => { 'Content-Type' => 'application/json' }, content => encode_json($query) });
		die "search failed: $res->{status} $res->{content}" unless $res->{success};
		my $answer = $json->decode($res->{content});
		$pit_id = $answer->{pit_id} // $pit_id;
		my $hits = $answer->{hits}{hits};
		last unless @$hits;
		for my $hit (@$hits)
		{
			my $doc = $json->encode($hit->{_source});
			$doc =~ s/\\/\\\\/g;
			$lines .= "$hit->{_id}\t$doc\n";
		}
		$after = $hits->[-1]{sort};
	}
	$es->request('DELETE', '/_pit', { id => $pit_id });
	$node->safe_psql('postgres',
		"DROP TABLE IF EXISTS $table; CREATE TABLE $table (id text, doc jsonb);\n"
		  . "COPY $table FROM STDIN;\n$lines\\.\n");
	return;
}

# Documents of $index that are not a row of $query, plus rows without a
# document, as multisets of jsonb (a row that repeats is a document that
# repeats); with $id_column, each _id must also be the row's value.
sub differences
{
	my ($index, $query, $id_column) = @_;
	load_index_into('es_docs', $index);
	my $with_id = defined $id_column;
	my $doc = $with_id ? "jsonb_build_object('_id', e.id) || e.doc" : 'e.doc';
	my $row = $with_id ? "jsonb_build_object('_id', (q.\"$id_column\")::text) || to_jsonb(q)" : 'to_jsonb(q)';
	return $node->safe_psql('postgres', qq{
		SELECT (SELECT count(*) FROM (SELECT $doc FROM es_docs e EXCEPT ALL SELECT $row FROM ($query) q) a)
		     + (SELECT count(*) FROM (SELECT $row FROM ($query) q EXCEPT ALL SELECT $doc FROM es_docs e) b)});
}

sub create_task
{
	my ($name, $query, $options) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SELECT ecp.create_task('$name', 'esd', '$name', query => \$q\$$query\$q\$, options => '$options')");
	die "create_task $name failed: $err" if $ret != 0;
	return $err;
}

sub flow_rows
{
	my ($run, $action) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM ecp.flow WHERE run_id = $run AND action = '$action'");
}

# The pid of the live worker of $run, or ''.
sub part_worker_sql
{
	my ($run) = @_;
	return "SELECT a.pid FROM ecp.part p JOIN pg_stat_activity a ON a.pid = p.worker_pid"
	  . " WHERE p.run_id = $run AND a.backend_type = 'ecp worker'";
}

sub poll_value
{
	my ($sql, $timeout) = @_;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		my $v = $node->safe_psql('postgres', $sql);
		return $v if $v ne '';
		sleep 0.05;
	}
	return '';
}

# --- an aggregate: GROUP BY, no unique column the catalog knows -------------
my $aggregate = q{SELECT region || '-' || product AS key, region, product, count(*) AS n, sum(amount) AS total
  FROM sales GROUP BY region, product};
my $notices = create_task('agg', $aggregate, '{"paging": "cursor", "id_column": "key", "batch_size": 50}');
like($notices, qr/task "agg": _id from column "key", the query read whole through one cursor \(paging cursor: no key\)/,
	'create_task says how a cursor task reads');
my $run = $node->safe_psql('postgres', "SELECT ecp.start('agg')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'aggregate: the run succeeds');
is(differences('agg', $aggregate, 'key'), '0', 'aggregate: every document equals its row as jsonb, _id = key');
is($node->safe_psql('postgres', "SELECT processed || ' ' || total || ' ' || percent FROM ecp.progress WHERE run_id = $run"),
	'185 185 100.0', 'aggregate: 185 groups processed, an exact total');

# --- a join whose rows have no unique column: op create, no _id --------------
my $join = q{SELECT s.region, r.name, s.product FROM sales s JOIN regions r USING (region) WHERE s.id <= 3000};
$notices = create_task('joined', $join,
	'{"paging": "cursor", "id_column": "", "op": "create", "batch_size": 200}');
like($notices, qr/task "joined": documents without _id/, 'create_task: documents without _id');
$run = $node->safe_psql('postgres', "SELECT ecp.start('joined')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'join: the run succeeds');
is($es->count('joined'), 3000, 'join: as many documents as rows, created without _id');
is(differences('joined', $join), '0', 'join: the documents are the rows (a multiset: rows repeat)');

# --- 100,000 rows in batches of 500: bounded memory ---------------------------
$es->reset;
$es->set_faults({ delay_ms => 20 });
my $big = q{SELECT g AS id, repeat(md5(g::text), 16) AS payload FROM generate_series(1, 100000) g};
create_task('big', $big, '{"paging": "cursor", "id_column": "id", "batch_size": 500}');
my $temp_before = $node->safe_psql('postgres',
	"SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database()");
$run = $node->safe_psql('postgres', "SELECT ecp.start('big')");
my $pid = poll_value(part_worker_sql($run), 60);
my ($max_anon, $samples) = (0, 0);
# sampled until the run ends (200 requests of 20 ms at least; bounded)
for (1 .. 6000)
{
	last unless $pid =~ /^\d+$/;
	if (open(my $fh, '<', "/proc/$pid/status"))
	{
		while (<$fh>)
		{
			if (/^RssAnon:\s+(\d+) kB/)
			{
				$max_anon = $1 if $1 > $max_anon;
				$samples++;
			}
		}
		close $fh;
	}
	last if EcpTest::run_state($node, $run) ne 'running' && EcpTest::run_state($node, $run) ne 'pending';
	sleep 0.02;
}
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'big: the run succeeds');
$es->clear_faults;
is($es->count('big'), 100000, 'big: every row is a document');
# the result is about 56 MB of JSON text; a worker that held it in memory
# would show it.  Its own memory: work_mem of the held result, two pages.
ok($samples > 10 && $max_anon < 32 * 1024,
	"big: the worker's own memory stays bounded (RssAnon at most $max_anon kB in $samples samples)");
# (the worker reports its temporary files when it drops them, at the part's end)
ok(EcpTest::poll($node,
		"SELECT temp_bytes - $temp_before > 20000000 FROM pg_stat_database WHERE datname = current_database()", 30),
	'big: the held result went to temporary files past work_mem');

# --- kill -9 mid-run: the part starts again -----------------------------------
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 20000) g');
my $items = 'SELECT id, label FROM items';

# A run of $name (options $options) slowed to 100 ms a request, seen while
# between 6,000 and 14,000 of 20,000 rows are done: the run and its worker.
sub start_slow_run
{
	my ($name, $options) = @_;
	$es->reset;
	$es->set_faults({ delay_ms => 100 });
	create_task($name, $items, $options);
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	my $pid = poll_value(part_worker_sql($run)
		  . " AND (SELECT processed BETWEEN 6000 AND 14000 FROM ecp.progress WHERE run_id = $run)", 60);
	ok($pid =~ /^\d+$/, "$name: the run is under way, its worker is $pid");
	return ($run, $pid);
}

sub kill_and_wait_restart
{
	my ($pid) = @_;
	return 0 unless $pid =~ /^\d+$/ && kill('KILL', $pid);
	my $deadline = time + 60;
	sleep 0.05 while kill(0, $pid) && time < $deadline;
	$node->poll_query_until('postgres', 'SELECT true') or return 0;
	return 1;
}

# Percent never past 100 while the restarted part runs again; the part had
# come at least $min_done rows far.
sub check_restarted
{
	my ($name, $run, $why, $min_done) = @_;
	my $over = 0;
	for (1 .. 3000)
	{
		my ($state, $percent) = split /\|/, $node->safe_psql('postgres',
			"SELECT state, coalesce(percent, 0) FROM ecp.progress WHERE run_id = $run");
		$over++ if $percent > 100;
		last if $state =~ /^(succeeded|failed|cancelled)$/;
		sleep 0.05;
	}
	is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', "$name: the run finishes");
	is($over, 0, "$name: ecp.progress never showed more than 100%");
	is(flow_rows($run, 'cursor restarted'), '1', "$name: one flow row 'cursor restarted'");
	my ($why_seen, $done_before) = split /\|/, $node->safe_psql('postgres',
		"SELECT content->>'why', content->>'rows_done_before' FROM ecp.flow WHERE run_id = $run AND action = 'cursor restarted'");
	like($why_seen, $why, "$name: saying why ($why_seen)");
	ok($done_before >= $min_done, "$name: and how far the part had come ($done_before rows, at least $min_done)");
	is($node->safe_psql('postgres', "SELECT processed || ' ' || total FROM ecp.progress WHERE run_id = $run"),
		'20000 20000', "$name: the counters counted again from 0: each row once");
	return $done_before;
}

(my $killed_run, $pid) = start_slow_run('killed', '{"paging": "cursor", "id_column": "id", "batch_size": 500}');
ok(kill_and_wait_restart($pid), 'killed: the worker is killed, the server is back');
$es->clear_faults;
# (a crash loses the checkpoints of the last 600 ms at most: 7 pages here)
check_restarted('killed', $killed_run, qr/worker died/, 6000 - 7 * 500);
is(differences('killed', $items, 'id'), '0', 'killed: the index equals the query');
ok($es->stats->{bulk_items} > 20000, 'killed: documents were sent again (idempotent by _id)');

# --- pause and resume: the part starts again -----------------------------------
my ($paused_run) = start_slow_run('paused', '{"paging": "cursor", "id_column": "id", "batch_size": 500}');
$node->safe_psql('postgres', "SELECT ecp.pause($paused_run)");
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM (" . part_worker_sql($paused_run) . ") w", 30),
	'paused: the worker leaves');
$es->clear_faults;
$node->safe_psql('postgres', "SELECT ecp.resume($paused_run)");
check_restarted('paused', $paused_run, qr/pause/, 6000);
is(differences('paused', $items, 'id'), '0', 'paused: the index equals the query');

# --- without _id, a restart creates the documents sent before again -----------
my ($dup_run) = start_slow_run('dups', '{"paging": "cursor", "id_column": "", "op": "create", "batch_size": 500}');
$node->safe_psql('postgres', "SELECT ecp.pause($dup_run)");
ok(EcpTest::poll($node, "SELECT count(*) = 0 FROM (" . part_worker_sql($dup_run) . ") w", 30),
	'dups: the worker leaves');
$es->clear_faults;
$node->safe_psql('postgres', "SELECT ecp.resume($dup_run)");
my $done_before = check_restarted('dups', $dup_run, qr/pause/, 6000);
$es->refresh('dups');
my $count = $es->count('dups');
# every row once more, plus the pages acknowledged before the pause, plus
# at most the page whose request the pause abandoned
ok($count >= 20000 + $done_before && $count <= 20000 + $done_before + 500,
	"dups: documents sent before the restart are created again ($count = 20000 + $done_before + at most a page)");

# --- create_task suggests paging cursor for a key that is not unique -----------
$node->safe_psql('postgres', 'CREATE TABLE rep AS SELECT g, g / 3 AS grp FROM generate_series(1, 100) g');
$notices = create_task('rep', 'SELECT g, grp FROM rep', '{"id_column": "g", "key_column": "grp"}');
like($notices, qr/column "grp" of table public\.rep has no unique index or primary key/,
	'create_task: the key is not unique');
like($notices, qr/or set option paging to 'cursor' to read the query through one cursor, with no key/,
	'... and it suggests paging cursor');

# --- what cannot work is refused -------------------------------------------------
sub sqlstate_of
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : "no error ($ret)";
}
my %refused = (
	'parallelism 2' => [ q{{"paging": "cursor", "parallelism": 2}}, '22023' ],
	'since_column' => [ q{{"paging": "cursor", "since_column": "id"}}, '0A000' ],
	'a run window' => [ q{{"paging": "cursor", "window": "01:00-02:00"}}, '0A000' ],
	'no _id with keyset' => [ q{{"paging": "keyset", "id_column": "", "op": "create"}}, '22023' ],
	'no _id with op index' => [ q{{"paging": "cursor", "id_column": ""}}, '22023' ],
);
for my $what (sort keys %refused)
{
	my ($options, $state) = @{ $refused{$what} };
	is(sqlstate_of("SELECT ecp.create_task('bad', 'esd', 'bad', query => 'SELECT * FROM items', options => '$options')"),
		$state, "refused: $what ($state)");
}
is(sqlstate_of(q{SELECT ecp.create_task('bad', 'esd', 'bad', queries => ARRAY['SELECT * FROM items'], options => '{"paging": "cursor"}')}),
	'0A000', 'refused: queries with paging cursor (0A000)');
is(sqlstate_of(q{UPDATE ecp.task SET options = options || '{"parallelism": 3}' WHERE name = 'killed'}),
	'22023', 'refused: parallelism raised on a cursor task (22023)');
is(sqlstate_of(q{SELECT ecp.start('joined', ids => ARRAY['1'])}),
	'0A000', 'refused: an id run of a task without _id (0A000)');
like((($node->psql('postgres', q{SELECT ecp.start('joined', ids => ARRAY['1'])}))[2]),
	qr/task "joined" sends documents without _id \(id_column ''\): an id run finds documents by _id/,
	'... saying why');

# --- the query runs only as the owner, inside the sandbox -------------------------
$node->safe_psql('postgres', q{
CREATE ROLE carol LOGIN;
CREATE SCHEMA carol AUTHORIZATION carol;
});
$node->safe_psql('postgres', qq{
SET ROLE carol;
SELECT ecp.create_consumer('carol_es', '$url');
CREATE TABLE carol.seen (g int, who text, session_who text, superuser boolean, path text);
CREATE FUNCTION carol.mark(g int) RETURNS int LANGUAGE plpgsql VOLATILE AS \$f\$
BEGIN
    INSERT INTO carol.seen VALUES (g, current_user, session_user,
        (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
        pg_catalog.current_setting('search_path'));
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'the cursor query ran as superuser %', current_user;
    END IF;
    RETURN g;
END \$f\$;
SET search_path = carol, public;
SELECT ecp.create_task('carol_cursor', 'carol_es', 'carol', query => 'SELECT g AS id, mark(g) AS m FROM generate_series(1, 3000) g',
                       options => '{"paging": "cursor", "id_column": "id", "batch_size": 200}');
});
$run = $node->safe_psql('postgres', "SET ROLE carol; SELECT ecp.start('carol_cursor')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'owner: the run succeeds');
is($es->count('carol'), 3000, 'owner: every row is a document');
is($node->safe_psql('postgres', 'SELECT count(*) || \' \' || count(DISTINCT g) FROM carol.seen'), '3000 3000',
	'owner: the function ran once for each row');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM carol.seen WHERE who <> 'carol' OR superuser OR path <> 'carol, public'}), '0',
	"owner: every row was produced as carol (not a superuser), under the task's search_path: inside the sandbox");

$es->stop;
$node->stop;
done_testing();
