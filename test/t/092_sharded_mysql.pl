# A miniature of a 16 x 16 MySQL sharding read through mysql_fdw: 200,000
# orders in 16 tables orders_0 .. orders_15 spread over 4 MariaDB databases
# shard_0 .. shard_3 (table i lives in database i / 4: shard_0 holds
# orders_0 .. orders_3), one foreign server per database, IMPORT FOREIGN
# SCHEMA into 4 PostgreSQL schemas of the same names, and one ecp task with
# queries => 16 queries (one part per table) and parallelism 4.
#
# Order n (1 .. 200,000) goes to table CRC32(n) % 16, a hash sharding: each
# table holds about 12,500 orders whose ids are interleaved with the other
# tables' (sparse, gaps of 16 on average), and the tables' sizes differ a
# little, so a part's count is its own table's and no other's.
#
# Checks:
#   - the run succeeds; the index holds every order exactly once (count
#     200,000, and the smallest and largest id of every table are there);
#   - ecp.parts: 16 parts, all done, part n reads orders_n, its processed
#     is COUNT(*) of orders_n in MariaDB, and they sum to 200,000;
#   - at most 4 parts run at once: sampled while the run goes on, and from
#     the parts' started_at .. finished_at afterwards (and more than one
#     did run at once);
#   - MariaDB's general log: no ORDER BY and no LIMIT (other than LIMIT 0,
#     which mysql_fdw uses to learn column types and reads no row) in any
#     statement against an orders_* table;
#   - a second run (another task and index, rate limited to 10,000 docs/s)
#     with kill -9 of one part's worker in the middle: PostgreSQL restarts
#     every backend, so every running part comes back.  The parts done
#     before the kill stay done, are not read again (their counters and
#     finished_at unchanged, no 'recovered' row, no statement against their
#     tables after the kill in the general log); the killed part and the
#     other interrupted ones have a 'recovered' flow row with their part
#     and resume_after_key, and read on from it (no key window below it
#     after the kill); the index ends with every order exactly once.
#
# Needs the MariaDB of test/scripts/mariadb.sh (make test starts it);
# without it this test FAILS on purpose.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use EcpTest;
use EcpMysql;
use EsdServer;

my $my = EcpMysql->require_env;
EsdServer->require_stand_in('bulk_items counts');

my $NROWS   = 200000;
my $NTABLES = 16;
my $NDBS    = 4;
my $PAR     = 4;
sub db_of { my ($i) = @_; return 'shard_' . int($i / ($NTABLES / $NDBS)) }

# --- MariaDB: 4 databases x 4 tables ------------------------------------------
for my $d (0 .. $NDBS - 1)
{
	$my->query("DROP DATABASE IF EXISTS shard_$d; CREATE DATABASE shard_$d CHARACTER SET utf8mb4");
}
for my $i (0 .. $NTABLES - 1)
{
	my $db = db_of($i);
	$my->query(qq{
		CREATE TABLE $db.orders_$i (
			id         BIGINT PRIMARY KEY,
			customer   VARCHAR(64) NOT NULL,
			amount     DECIMAL(12,2) NOT NULL,
			created_at DATETIME NOT NULL
		) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
		INSERT INTO $db.orders_$i
		SELECT seq, CONCAT('cust-', seq % 997), (seq * 7919 % 1000000) / 100,
		       TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq MINUTE
		  FROM seq_1_to_$NROWS WHERE CRC32(seq) % $NTABLES = $i;
	});
}
my %table_count = map { $_->[0] => $_->[1] } $my->rows(join(' UNION ALL ',
	map { "SELECT $_, COUNT(*) FROM " . db_of($_) . ".orders_$_" } 0 .. $NTABLES - 1));
my $loaded = 0;
$loaded += $_ for values %table_count;
is($loaded, $NROWS, 'MariaDB: 200,000 orders in 16 tables of 4 databases');
ok((grep { $table_count{$_} > 11000 && $table_count{$_} < 14000 } keys %table_count) == $NTABLES,
	'MariaDB: every table holds about 12,500 orders ('
	  . join(' ', map { $table_count{$_} } 0 .. $NTABLES - 1) . ')');
# the smallest and largest id of every table: looked up in the index later
my @sample_ids = map { @$_ } $my->rows(join(' UNION ALL ',
	map { "SELECT MIN(id), MAX(id) FROM " . db_of($_) . ".orders_$_" } 0 .. $NTABLES - 1));

# --- PostgreSQL: one foreign server per database ------------------------------
my $node = EcpTest::new_node('sharded',
	conf => [
		'ecp.max_workers = 8',    # more than parallelism: parallelism bounds
		'restart_after_crash = on', 'ecp.recovery_timeout = 2',
		'ecp.heartbeat_interval = 1'
	]);
my $es = EsdServer->start();
my $url = $es->url;
for my $d (0 .. $NDBS - 1)
{
	$my->setup_fdw($node, 'postgres', "shard_$d");
	$node->safe_psql('postgres', qq{
		CREATE SCHEMA shard_$d;
		IMPORT FOREIGN SCHEMA shard_$d FROM SERVER shard_$d INTO shard_$d;
	});
}
is($node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT foreign_server_name)
		  FROM information_schema.foreign_tables WHERE foreign_table_name LIKE 'orders\_%'}),
	'16 4', 'PostgreSQL: 16 foreign tables over 4 foreign servers');

my $QUERIES = "(SELECT array_agg(format('SELECT * FROM shard_%s.orders_%s', i / 4, i) ORDER BY i)"
  . " FROM generate_series(0, 15) i)";
$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('es', '$url');
	SELECT ecp.create_task('sharded', 'es', 'sharded', queries => $QUERIES,
	                       options => '{"parallelism": $PAR, "batch_size": 1000, "rate_limit": 40000}');
});

# Statements mysql_fdw sent (over TCP; this test's own client uses the
# socket) against orders_* tables while the general log was on: [epoch
# seconds, table number, statement].
sub general_log_on
{
	$my->query(q{
		SET GLOBAL log_output = 'TABLE';
		TRUNCATE mysql.general_log;
		SET GLOBAL general_log = 1;
	});
}

sub general_log_off
{
	$my->query('SET GLOBAL general_log = 0');
	my @rows = $my->rows(q{
		SELECT UNIX_TIMESTAMP(event_time),
		       REPLACE(REPLACE(CONVERT(argument USING utf8mb4), '\n', ' '), '\t', ' ')
		  FROM mysql.general_log
		 WHERE command_type IN ('Query', 'Prepare', 'Execute')
		   AND user_host LIKE '%127.0.0.1%'
		   AND CONVERT(argument USING utf8mb4) LIKE '%orders\_%'
		 ORDER BY event_time});
	$my->query('TRUNCATE mysql.general_log');
	return map { $_->[1] =~ /`orders_(\d+)`/ ? [ $_->[0], $1, $_->[1] ] : () } @rows;
}

sub show
{
	my (@stmts) = @_;
	my $n = @stmts < 5 ? scalar(@stmts) : 5;
	return join("\n", map { ref $_ ? $_->[2] : $_ } @stmts[ 0 .. $n - 1 ]);
}

# --- run 1: every order once, 16 parts, at most 4 at once ----------------------
general_log_on();
my $t0 = time;
my $run = $node->safe_psql('postgres', "SELECT ecp.start('sharded')");
my ($samples, $max_running, $over) = (0, 0, 0);
my $state = '';
my $deadline = time + 300;
while (time < $deadline)
{
	my ($st, $running) = split /\|/, $node->safe_psql('postgres', qq{
		SELECT r.state, (SELECT count(*) FROM ecp.parts p WHERE p.run_id = r.id AND p.state = 'running')
		  FROM ecp.run r WHERE r.id = $run});
	$state = $st;
	last if $st =~ /^(succeeded|failed|cancelled)$/;
	$samples++;
	$max_running = $running if $running > $max_running;
	$over++ if $running > $PAR;
	sleep 0.05;
}
my $secs = time - $t0;
my @remote = general_log_off();
is($state, 'succeeded', sprintf('run 1 succeeds (%.1f s)', $secs));
is($over, 0, "run 1: no sample saw more than $PAR parts running ($samples samples, at most $max_running)");
ok($max_running >= 2 && $samples >= 10,
	"run 1: parts did run at once (up to $max_running in $samples samples)");

$es->refresh('sharded');
is($es->count('sharded'), $NROWS, 'run 1: the index holds 200,000 documents');
my @missing = grep { !defined $es->doc('sharded', $_) } @sample_ids;
is(scalar(@missing), 0, 'run 1: the smallest and largest id of every table are in the index')
  or diag("missing: @missing");
# numbers compared as numbers (the stand-in may write 0.10 as 0.1)
sub numeric_values
{
	my ($h) = @_;
	return undef unless ref $h eq 'HASH';
	return { map { my $v = $h->{$_}; ($_ => (defined $v && $v =~ /^-?\d+(?:\.\d+)?$/ ? $v + 0 : $v)) } keys %$h };
}
my $json = JSON::PP->new;
my $t0_id = $sample_ids[0];
is_deeply(numeric_values($es->doc('sharded', $t0_id)),
	numeric_values($json->decode($node->safe_psql('postgres',
		"SELECT to_jsonb(o) FROM shard_0.orders_0 o WHERE id = $t0_id"))),
	"run 1: document $t0_id is to_jsonb of its row");

my @parts = map { [ split /\|/ ] } split /\n/, $node->safe_psql('postgres', qq{
	SELECT part, state, processed, failed, source, recoveries
	  FROM ecp.parts WHERE run_id = $run ORDER BY part});
is(scalar(@parts), $NTABLES, 'run 1: ecp.parts shows 16 parts');
is(scalar(grep { $_->[1] eq 'done' && $_->[3] == 0 && $_->[5] == 0 } @parts), $NTABLES,
	'run 1: every part is done, with no failed document and no recovery');
my $sum = 0;
$sum += $_->[2] for @parts;
is($sum, $NROWS, 'run 1: the parts\' processed counts sum to 200,000');
is_deeply([ map { "$_->[0] $_->[4] $_->[2]" } @parts ],
	[ map { "$_ SELECT * FROM " . db_of($_) . ".orders_$_ $table_count{$_}" } 0 .. $NTABLES - 1 ],
	'run 1: part n read orders_n, and processed the COUNT(*) of that table in MariaDB');
is($node->safe_psql('postgres', "SELECT processed || ' ' || parts || ' ' || parts_done FROM ecp.progress WHERE run_id = $run"),
	"$NROWS 16 16", 'run 1: ecp.progress sums the 16 parts');

# From the parts' own times: a part is claimed only after another released
# its worker, so at no part's start were more than 4 under way.
is($node->safe_psql('postgres', qq{
		SELECT max((SELECT count(*) FROM ecp.part q
		             WHERE q.run_id = p.run_id AND q.started_at <= p.started_at
		               AND q.finished_at > p.started_at))
		  FROM ecp.part p WHERE p.run_id = $run}) <= $PAR ? 'ok' : 'over',
	'ok', "run 1: by started_at and finished_at, never more than $PAR parts at once");

my @sorted  = grep { $_->[2] =~ /ORDER BY/i } @remote;
my @limited = grep { $_->[2] =~ /\bLIMIT\b/i && $_->[2] !~ /\bLIMIT 0\s*$/i } @remote;
my %tables_read = map { $_->[1] => 1 } grep { $_->[2] =~ /`id` > .*`id` <= /i } @remote;
is(scalar(keys %tables_read), $NTABLES,
	'run 1: the general log has key-window statements against all 16 tables (' . scalar(@remote) . ' statements)');
is(scalar(@sorted), 0, 'run 1: no statement against orders_* has an ORDER BY') or diag(show(@sorted));
is(scalar(@limited), 0, 'run 1: no statement against orders_* has a LIMIT (but LIMIT 0)') or diag(show(@limited));

# --- run 2: kill -9 of one part's worker mid-run ------------------------------
# 10,000 docs/s for the task: each of the 4 parts at once reads about 2,500
# orders a second, a part lasts about 5 s, the run 20 s.
my $BATCH = 500;
$node->safe_psql('postgres', qq{
	SELECT ecp.create_task('sharded_kill', 'es', 'sharded_kill', queries => $QUERIES,
	                       options => '{"parallelism": $PAR, "batch_size": $BATCH, "rate_limit": 10000}');
});
my $counts_sql = 'VALUES ' . join(', ', map { "($_, $table_count{$_})" } 0 .. $NTABLES - 1);
my $items_before = $es->stats->{bulk_items};
general_log_on();
$run = $node->safe_psql('postgres', "SELECT ecp.start('sharded_kill')");

# Wait for at least 4 parts done and a running part with a checkpoint and
# at least 3,000 orders still to read; then, in one query, what is done
# and what runs, and kill the worker of that part.
ok(EcpTest::poll($node, qq{
	SELECT count(*) FILTER (WHERE p.state = 'done') >= 4
	   AND count(*) FILTER (WHERE p.state = 'running' AND p.worker_pid IS NOT NULL
	                          AND p.processed >= 1000 AND p.processed <= c.n - 3000) >= 1
	  FROM ecp.parts p JOIN ($counts_sql) c(part, n) USING (part)
	 WHERE p.run_id = $run}, 120),
	'run 2: 4 parts are done and another is under way');
my @snap = map { [ split /\|/, $_, -1 ] } split /\n/, $node->safe_psql('postgres', qq{
	SELECT p.part, p.state, p.processed, coalesce(p.last_key, ''), coalesce(p.worker_pid::text, ''),
	       extract(epoch FROM p.finished_at), p.started_at, p.finished_at,
	       (p.state = 'running' AND p.worker_pid IS NOT NULL
	        AND p.processed >= 1000 AND p.processed <= c.n - 3000)
	  FROM ecp.parts p JOIN ($counts_sql) c(part, n) USING (part)
	 WHERE p.run_id = $run ORDER BY p.part});
# Checkpoints commit asynchronously: what the snapshot saw may not be on
# disk yet, and a crash would take it back.  CHECKPOINT flushes all WAL
# written so far, so every checkpoint seen above becomes durable.
$node->safe_psql('postgres', 'CHECKPOINT');
my @done_before = grep { $_->[1] eq 'done' } @snap;
my @running     = grep { $_->[1] eq 'running' } @snap;
my ($victim)    = sort { $b->[2] <=> $a->[2] } grep { $_->[8] eq 't' } @snap;
ok(@done_before >= 4 && $victim, 'run 2: ' . scalar(@done_before) . ' parts done, '
	  . scalar(@running) . ' running; the worker of part '
	  . ($victim ? "$victim->[0] (pid $victim->[4], $victim->[2] done, after key $victim->[3])" : '?')
	  . ' is the one to kill')
  or do { $node->stop; done_testing(); exit 1 };
my $kill_at = time;
ok(kill('KILL', $victim->[4]), "run 2: kill -9 of worker $victim->[4] of part $victim->[0]");
# the postmaster reaps it, then refuses connections until its crash restart
# is over; poll_query_until rides over those refusals
my $gone_by = time + 60;
sleep 0.05 while kill(0, $victim->[4]) && time < $gone_by;
ok(!kill(0, $victim->[4]), 'run 2: the killed worker is gone');
ok($node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM ecp.flow WHERE run_id = $run AND action = 'recovered'"
		  . " AND (content->>'part')::int = $victim->[0]"),
	'run 2: the server is back and the killed part was recovered');
$state = EcpTest::wait_for_run($node, $run, 'succeeded', 300);
@remote = general_log_off();
is($state, 'succeeded', 'run 2: the run finishes by itself');

$es->refresh('sharded_kill');
is($es->count('sharded_kill'), $NROWS, 'run 2: the index holds every order exactly once (200,000)');
@missing = grep { !defined $es->doc('sharded_kill', $_) } @sample_ids;
is(scalar(@missing), 0, 'run 2: the smallest and largest id of every table are in the index')
  or diag("missing: @missing");

my %after = map { my @r = split /\|/, $_, -1; ($r[0] => \@r) } split /\n/, $node->safe_psql('postgres', qq{
	SELECT part, state, processed, recoveries, started_at, finished_at
	  FROM ecp.parts WHERE run_id = $run});
my %recovered = map { my @r = split /\|/, $_, -1; ($r[0] => [ @r[ 1, 2 ] ]) } split /\n/,
  $node->safe_psql('postgres', qq{
	SELECT content->>'part', count(*), min(content->>'resume_after_key')
	  FROM ecp.flow WHERE run_id = $run AND action = 'recovered' GROUP BY 1});
diag('run 2: recovered parts (part: rows, resume_after_key): '
	  . join(', ', map { "$_: @{ $recovered{$_} }" } sort { $a <=> $b } keys %recovered));

is(scalar(grep { $_->[1] eq 'done' } values %after), $NTABLES, 'run 2: all 16 parts are done');
is_deeply([ map { "$_ $after{$_}[2]" } 0 .. $NTABLES - 1 ],
	[ map { "$_ $table_count{$_}" } 0 .. $NTABLES - 1 ],
	'run 2: every part processed its table\'s COUNT(*), the interrupted ones too');

# the parts done before the kill
is_deeply([ map { "$_->[0] done $_->[2] 0 $_->[6] $_->[7]" } @done_before ],
	[ map { join(' ', $_->[0], @{ $after{ $_->[0] } }[ 1 .. 5 ]) } @done_before ],
	'run 2: the parts done before the kill are unchanged (processed, no recovery, started_at, finished_at)');
my @recovered_done = grep { exists $recovered{ $_->[0] } } @done_before;
is(scalar(@recovered_done), 0, "run 2: no 'recovered' flow row for a part done before the kill")
  or diag('recovered: ' . join(' ', map { $_->[0] } @recovered_done));
my %done_table = map { $_->[0] => 1 } @done_before;
my @reread = grep { $_->[0] > $kill_at && $done_table{ $_->[1] } } @remote;
is(scalar(@reread), 0, 'run 2: MariaDB got no statement against a table done before the kill after it')
  or diag(show(@reread));
ok((grep { $_->[0] > $kill_at } @remote) > 0,
	'run 2: (the general log does hold statements after the kill)');

# the interrupted parts: recovered once, from their own checkpoint
ok(exists $recovered{ $victim->[0] } && $recovered{ $victim->[0] }[1] ne ''
	  && $recovered{ $victim->[0] }[1] >= $victim->[3],
	"run 2: the killed part $victim->[0] was recovered after key "
	  . ($recovered{ $victim->[0] } ? $recovered{ $victim->[0] }[1] : '?')
	  . " (its checkpoint was $victim->[3] at the kill)");
for my $p (@running)
{
	my $n = $p->[0];
	if (!exists $recovered{$n})
	{
		# it can only have finished between the snapshot and the kill
		ok($node->safe_psql('postgres',
				"SELECT extract(epoch FROM finished_at) <= $kill_at FROM ecp.part WHERE run_id = $run AND part_no = $n") eq 't',
			"run 2: running part $n was not recovered: it had finished just before the kill");
		next;
	}
	my ($rows, $key) = @{ $recovered{$n} };
	# (ecp.parts.recoveries counts recoveries since the last checkpoint: 0
	# again once the part acknowledged a batch after it came back)
	is($rows, 1, "run 2: running part $n was recovered once (one 'recovered' flow row)");
	ok($p->[3] eq '' || ($key ne '' && $key >= $p->[3]),
		"run 2: part $n resumed after key " . ($key eq '' ? '(none)' : $key)
		  . ", not before its checkpoint at the snapshot (" . ($p->[3] eq '' ? 'none' : $p->[3]) . ')');
	next if $key eq '';
	my @after_kill = grep { $_->[0] > $kill_at && $_->[1] == $n && $_->[2] =~ /`id` > \(?(-?\d+)/ } @remote;
	my @below = grep { $_->[2] =~ /`id` > \(?(-?\d+)/ && $1 < $key } @after_kill;
	ok(@after_kill > 0 && @below == 0,
		"run 2: after the kill, part $n read orders_$n by " . scalar(@after_kill)
		  . " key windows, none starting below its checkpoint $key")
	  or diag(show(@below));
}
my $sent = $es->stats->{bulk_items} - $items_before;
my $nrec = scalar(keys %recovered);
ok($sent >= $NROWS && $sent <= $NROWS + $nrec * 4 * $BATCH,
	"run 2: $sent documents sent for $NROWS orders ($nrec parts recovered, batch_size $BATCH)");

$node->stop;
# the next test files get MariaDB as they would without this one
$my->query(join(' ', map { "DROP DATABASE shard_$_;" } 0 .. $NDBS - 1));
done_testing();
