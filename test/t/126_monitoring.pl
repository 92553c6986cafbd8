# Monitoring and retention (issue 24, doc/monitoring.md):
#  * ecp.status (narrow, one row per run of the last day) and
#    ecp.task_health (the latest run of each task, a health word) for runs
#    in each state: retrying against a dead port (within 2 s, with the
#    attempt and the error), pending, paused, failed, partial, cancelled,
#    succeeded, and a task never run;
#  * ecp.part.bytes_sent: the request bodies of a run's _bulk requests,
#    retries included, exactly as the stand-in received them;
#  * ecp.throughput: rows for the minutes of a run, summing to its
#    documents and bytes;
#  * ecp.metrics: runs by state, documents, retries, rate limits; the
#    shipped queries.yaml parses and every query in it runs; the Grafana
#    dashboard is JSON in Grafana's format and every query of it runs;
#  * the retention (ecp.history_days): the launcher purges exactly what is
#    older than the setting, keeps a task's latest run and newer rows, and
#    says so in one LOG line.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use JSON::PP;
use CPAN::Meta::YAML;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('request log and fault injection');
# no purge until the test sets ecp.history_days
my $node = EcpTest::new_node('monitoring', conf => ['ecp.history_days = 0']);
my $es = EsdServer->start();
my $root = "$FindBin::RealBin/../..";

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub start_task
{
	my ($name, $consumer, $query, $options) = @_;
	sql("SELECT ecp.create_task('$name', '$consumer', '$name', query => '$query', options => '$options')");
	return sql("SELECT ecp.start('$name')");
}

sub status_of { return sql("SELECT format('%s|%s|%s|%s', state, done, percent, why) FROM ecp.status WHERE run_id = $_[0]"); }
sub health_of { return sql("SELECT health FROM ecp.task_health WHERE task = '$_[0]'"); }

sql("SELECT ecp.create_consumer('esd', '" . $es->url . "')");
sql('CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 3000) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id)');

# --- a task never run --------------------------------------------------------
sql(q{SELECT ecp.create_task('idle', 'esd', 'idle', query => 'SELECT * FROM items')});
is(sql(q{SELECT format('%s|%s|%s|%s', health, run_id, last_success, drift) FROM ecp.task_health WHERE task = 'idle'}),
	'never run|||', 'a task never run: health "never run", no run');

# --- a dead port: retrying, with the attempt and the error, within 2 s -------
my $dead_port = PostgreSQL::Test::Cluster::get_free_port();
sql("SELECT ecp.create_consumer('dead', 'http://127.0.0.1:$dead_port')");
my $started = time;
my $dead = start_task('dead', 'dead', 'SELECT * FROM items', '{"retry_base_ms": 200, "retry_max_ms": 400, "max_retries": 50, "exact_total": true}');
ok(EcpTest::poll($node, "SELECT state = 'retrying' FROM ecp.status WHERE run_id = $dead", 30),
	'ecp.status says retrying');
my $shown_after = time - $started;
diag(sprintf('retrying shown %.2f s after ecp.start', $shown_after));
ok($shown_after <= 2, 'within 2 s of ecp.start');
like(sql("SELECT why FROM ecp.status WHERE run_id = $dead"),
	qr{^attempt \d+/50: .*127\.0\.0\.1:$dead_port.*(refused|connect)}i, 'why: the attempt, of max_retries, and the error');
is(health_of('dead'), 'retrying', 'ecp.task_health: retrying');
is(sql("SELECT value FROM ecp.metrics WHERE metric = 'parts_retrying' AND task = 'dead'"), '1',
	'ecp.metrics: one part retrying');
sql("SELECT ecp.cancel($dead)");
is(EcpTest::wait_for_run($node, $dead, 'cancelled'), 'cancelled', 'cancelled');
like(status_of($dead), qr{^cancelled\|0(\|| / 3,000\|0\.0)\|$}, 'ecp.status: cancelled, nothing done, no why');
is(health_of('dead'), 'cancelled', 'ecp.task_health: cancelled');

# --- a run that succeeds after two 429s: bytes sent and throughput ----------
$es->request('DELETE', '/_esd/requests');
$es->set_faults({ bulk_reject => { status => 429, first => 2 } });
my $clean = start_task('clean', 'esd', 'SELECT * FROM items', '{"batch_size": 500, "retry_base_ms": 20, "exact_total": true}');
is(EcpTest::wait_for_run($node, $clean, 'succeeded'), 'succeeded', 'a run with two 429s succeeds');
$es->clear_faults;
my ($bulk_requests, $bulk_bytes) = (0, 0);
for my $r (@{ $es->requests(1000) })
{
	next unless ($r->{method} // '') eq 'POST' && ($r->{url} // '') =~ m{^/clean/_bulk};
	$bulk_requests++;
	$bulk_bytes += $r->{body_bytes};
}
is($bulk_requests, 8, 'six pages of 500, two of them sent twice');
is(sql("SELECT bytes_sent FROM ecp.progress WHERE run_id = $clean"), $bulk_bytes,
	"ecp.progress.bytes_sent is what the stand-in received in _bulk bodies, retries included ($bulk_bytes)");
is(sql("SELECT sum(bytes_sent) = $bulk_bytes AND bool_and(bytes_sent > 0) FROM ecp.part WHERE run_id = $clean"), 't',
	'counted by the part');
is(sql("SELECT sent = pg_size_pretty(${bulk_bytes}::bigint) FROM ecp.status WHERE run_id = $clean"), 't',
	'ecp.status shows it as a size');
is(status_of($clean), 'succeeded|3,000 / 3,000|100.0|', 'ecp.status: succeeded, 3,000 / 3,000, no why');
is(health_of('clean'), 'ok', 'ecp.task_health: ok');
is(sql(q{SELECT last_success = finished_at FROM ecp.task_health WHERE task = 'clean'}), 't',
	'last_success: when that run finished');
is(sql("SELECT sum(s.documents) || ' ' || sum(s.bytes) || ' ' || bool_and(s.minute BETWEEN date_trunc('minute', r.started_at) AND r.finished_at) "
	  . "FROM ecp.throughput s, ecp.run r WHERE r.id = $clean AND s.task_id = r.task_id"),
	"3000 $bulk_bytes true", 'ecp.throughput: the minutes of the run, its documents and bytes');
is(sql(q{SELECT sum(documents) FROM ecp.throughput_per_minute WHERE task = 'clean' AND docs_per_second > 0}), '3000',
	'ecp.throughput_per_minute names the task');

# --- dead letters: partial ---------------------------------------------------
$es->put('/poisoned', { mappings => { properties => { amount => { type => 'long' } } } });
sql("CREATE TABLE poison_src AS SELECT g AS id, CASE WHEN g % 100 = 0 THEN 'cheap' END AS amount FROM generate_series(1, 1000) g");
my $poisoned = start_task('poisoned', 'esd', 'SELECT * FROM poison_src', '{"exact_total": true}');
is(EcpTest::wait_for_run($node, $poisoned, 'succeeded'), 'succeeded', 'a run with 10 refused documents succeeds');
is(status_of($poisoned), 'succeeded|1,000 / 1,000|100.0|partial: 10 dead letters', 'ecp.status: why partial');
is(health_of('poisoned'), 'partial', 'ecp.task_health: partial');

# --- a failure: failed, with its error ---------------------------------------
$es->set_faults({ auth => { basic => 'u:p' } });
my $failed = start_task('denied', 'esd', 'SELECT * FROM items', '{"retry_base_ms": 10, "exact_total": true}');
is(EcpTest::wait_for_run($node, $failed, 'failed'), 'failed', '401: the run fails');
$es->clear_faults;
like(status_of($failed), qr{^failed\|0(\|| / 3,000\|0\.0)\|.*HTTP 401}, 'ecp.status: failed, why: the error');
is(health_of('denied'), 'failed', 'ecp.task_health: failed');

# --- pending until later, paused ---------------------------------------------
sql(q{SELECT ecp.create_task('later', 'esd', 'later', query => 'SELECT * FROM items')});
my $later = sql(q{SELECT ecp.start('later', at => now() + interval '1 hour')});
like(status_of($later), qr/^pending\|0\|\|starts at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/,
	'ecp.status: pending, why: when it starts');
is(health_of('later'), 'pending', 'ecp.task_health: pending');
my $slow = start_task('slow', 'esd', 'SELECT * FROM items', '{"batch_size": 50, "rate_limit": 100, "exact_total": true}');
ok(EcpTest::poll($node, "SELECT processed > 0 FROM ecp.progress WHERE run_id = $slow"), 'a slow run moves');
ok(EcpTest::poll($node, q{SELECT value = 100 FROM ecp.metrics WHERE metric = 'rate_limit_configured' AND task = 'slow'}),
	'ecp.metrics: its rate limit');
sql("SELECT ecp.pause($slow)");
is(EcpTest::wait_for_run($node, $slow, 'paused'), 'paused', 'paused');
like(status_of($slow), qr{^paused\|[\d,]+ / 3,000\|[\d.]+\|paused by }, 'ecp.status: paused, why: by whom');
is(health_of('slow'), 'paused', 'ecp.task_health: paused');

# --- ecp.metrics ---------------------------------------------------------------
is(sql(q{SELECT string_agg(m.state || '=' || m.value, ' ' ORDER BY m.state) FROM ecp.metrics m WHERE metric = 'runs'}),
	sql(q{SELECT string_agg(s || '=' || (SELECT count(*) FROM ecp.run r WHERE r.state = s), ' ' ORDER BY s)
	        FROM unnest(ecp_internal._run_states()) s}),
	'ecp.metrics: runs by state, every state');
is(sql(q{SELECT string_agg(state, ',' ORDER BY state) FROM ecp.metrics WHERE metric = 'runs' AND value > 0}),
	'cancelled,failed,paused,pending,succeeded', 'the states present here');
is(sql(q{SELECT value FROM ecp.metrics WHERE metric = 'documents_processed' AND task = 'clean'}), '3000',
	'documents processed, by task');
is(sql(q{SELECT value FROM ecp.metrics WHERE metric = 'documents_failed' AND task = 'poisoned'}), '10',
	'documents failed, by task');
ok(sql(q{SELECT value BETWEEN 0 AND 600 FROM ecp.metrics WHERE metric = 'seconds_since_success' AND task = 'clean'}) eq 't',
	'seconds since the task last succeeded');

# --- queries.yaml parses and every query runs --------------------------------
my $yaml_file = "$root/doc/postgres_exporter/queries.yaml";
my $yaml = CPAN::Meta::YAML->read($yaml_file);
ok($yaml, 'queries.yaml parses') or diag(CPAN::Meta::YAML->errstr);
my $queries = $yaml ? $yaml->[0] : {};
if (system('python3 -c "import yaml" 2>/dev/null') == 0)
{
	# a full YAML parser reads the same (values compared as text)
	my $full = `python3 -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))' '$yaml_file'`;
	my $as_text = sub { my $j = JSON::PP->new->canonical; my $t = $j->encode($_[0]); $t =~ s/"?(true|false|\d+)"?/"$1"/g; $t };
	is($as_text->(decode_json($full)), $as_text->($queries), 'python3 yaml reads the same');
}
ok(scalar(keys %$queries) >= 6, 'queries.yaml has the queries: ' . join(', ', sort keys %$queries));
for my $name (sort keys %$queries)
{
	my $q = $queries->{$name};
	like($name, qr/^ecp_[a-z_]+$/, "$name: an ecp_ name");
	my @columns = map { (keys %$_)[0] } @{ $q->{metrics} // [] };
	my @bad = grep {
		my $m = $queries->{$name}{metrics}[$_]{ $columns[$_] };
		!(ref $m eq 'HASH' && ($m->{usage} // '') =~ /^(LABEL|COUNTER|GAUGE)$/ && length($m->{description} // ''))
	} 0 .. $#columns;
	ok(@columns >= 2 && !@bad, "$name: columns with usage LABEL/COUNTER/GAUGE and a description");
	my ($rc, $out, $err) = $node->psql('postgres', "SELECT * FROM ($q->{query}) q");
	is($rc, 0, "$name: the query runs") or diag($err);
	($rc, $out, $err) = $node->psql('postgres', "CREATE TEMP VIEW v AS $q->{query}; "
		  . "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'v'::regclass AND attnum > 0");
	is($out, join(',', @columns), "$name: its columns are the metrics' ($out)");
}
is(sql(q{SELECT count(*) FROM (SELECT state, value AS count FROM ecp.metrics WHERE metric = 'runs') q WHERE count > 0}), '5',
	'ecp_runs_count has a sample for each state present');

# --- the Grafana dashboard is JSON in Grafana's format; its queries run -----
my $dashboard = eval { decode_json(slurp_file("$root/doc/grafana/ecp-dashboard.json")) };
ok($dashboard, 'the dashboard is JSON') or diag($@);
$dashboard //= {};
ok(($dashboard->{uid} // '') ne '' && ($dashboard->{title} // '') ne '' && ($dashboard->{schemaVersion} // 0) >= 30,
	'with uid, title and schemaVersion');
my @panels = @{ $dashboard->{panels} // [] };
ok(@panels >= 4, scalar(@panels) . ' panels');
my %titles = map { $_->{title} => 1 } @panels;
ok($titles{'Documents per second, by task'} && $titles{'Runs by state'} && $titles{'Failed and partial runs'},
	'documents per second per task, runs by state, failures');
for my $panel (@panels)
{
	ok(ref $panel->{gridPos} eq 'HASH' && $panel->{type} && $panel->{id}, "panel \"$panel->{title}\": type, id, gridPos");
	for my $target (@{ $panel->{targets} // [] })
	{
		is($target->{datasource}{type}, 'grafana-postgresql-datasource', "panel \"$panel->{title}\": the PostgreSQL data source");
		# Grafana's macros and the $task variable, as Grafana expands them
		(my $query = $target->{rawSql}) =~ s/\$__timeFilter\(([^)]*)\)/$1 BETWEEN now() - interval '6 hours' AND now()/g;
		$query =~ s/\$__timeGroupAlias\(([^,]*), '1m'\)/date_trunc('minute', $1) AS time/g;
		$query =~ s/\$task/SELECT name FROM ecp.tasks/g;
		my ($rc, $out, $err) = $node->psql('postgres', $query);
		is($rc, 0, "panel \"$panel->{title}\": its query runs") or diag($err);
	}
}

# --- row-level security: a role sees its own rows only -----------------------
sql('CREATE ROLE bob LOGIN');
is(sql(q{SET ROLE bob; SELECT (SELECT count(*) FROM ecp.status) + (SELECT count(*) FROM ecp.task_health)
          + (SELECT count(*) FROM ecp.throughput) + (SELECT count(*) FROM ecp.throughput_per_minute)
          + (SELECT count(*) FROM ecp.metrics WHERE task IS NOT NULL)}), '0',
	'a role that owns nothing sees no runs, tasks or samples');
my ($rc, $out, $err) = $node->psql('postgres', 'SET ROLE bob; SELECT * FROM ecp_internal._purge_history(1, 1)');
like($err, qr/permission denied for function _purge_history/, 'roles cannot purge');
($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM ecp_internal._purge_history(0, 1000)');
like($err, qr/days must be 1 or more, not 0.*HINT:  ecp.history_days = 0 keeps everything/s,
	'days 0 is refused, with a hint');

# --- the retention -----------------------------------------------------------
sql("SELECT ecp.cancel($slow)");
sql("SELECT ecp.cancel($later)");
is(EcpTest::wait_for_run($node, $slow, 'cancelled'), 'cancelled', 'the slow run is cancelled');
# clean: three runs; the first finished 40 days ago, the second 20 (newer
# than the setting), the third now (the latest)
my $clean2 = sql(q{SELECT ecp.start('clean')});
is(EcpTest::wait_for_run($node, $clean2, 'succeeded'), 'succeeded', 'a second run of clean');
my $clean3 = sql(q{SELECT ecp.start('clean')});
is(EcpTest::wait_for_run($node, $clean3, 'succeeded'), 'succeeded', 'a third');
# poisoned: a second run; the first (10 dead letters) finished 40 days ago
my $poisoned2 = sql(q{SELECT ecp.start('poisoned')});
is(EcpTest::wait_for_run($node, $poisoned2, 'succeeded'), 'succeeded', 'a second run of poisoned');
my $clean_task = sql(q{SELECT id FROM ecp.task WHERE name = 'clean'});
sql(qq{
UPDATE ecp.run SET finished_at = now() - interval '40 days', started_at = now() - interval '40 days 1 minute'
 WHERE id IN ($clean, $poisoned, $dead);
UPDATE ecp.run SET finished_at = now() - interval '20 days', started_at = now() - interval '20 days 1 minute'
 WHERE id = $clean2;
UPDATE ecp.flow_log SET at = now() - interval '40 days' WHERE run_id IS NULL AND action = 'create_consumer';
UPDATE ecp.flow_log SET at = now() - interval '20 days' WHERE run_id IS NULL AND action = 'create_task' AND content->>'task' = 'idle';
INSERT INTO ecp.throughput (minute, task_id, documents, bytes, owner) VALUES
  (date_trunc('minute', now() - interval '40 days'), $clean_task, 5, 50, current_user::regrole),
  (date_trunc('minute', now() - interval '20 days'), $clean_task, 7, 70, current_user::regrole);
});
is(sql(q{SELECT count(*) FROM ecp.flow WHERE task_id IS NULL AND run_id IS NULL AND action = 'create_consumer'}), '2',
	'two flow rows without a run backdated (the consumers)');
my $flow_of = sub { sql("SELECT count(*) FROM ecp.flow WHERE run_id = $_[0]") };
ok($flow_of->($clean) > 0 && $flow_of->($poisoned) > 0, 'the old runs have flow rows');
my $snapshot = sub {
	return sql(q{SELECT (SELECT string_agg(id::text, ',' ORDER BY id) FROM ecp.run) || ' | '
	                 || (SELECT count(*) FROM ecp.failed_doc) || ' | ' || (SELECT count(*) FROM ecp.flow_log) || ' | '
	                 || (SELECT count(*) FROM ecp.throughput) || ' | ' || (SELECT count(*) FROM ecp.part)});
};
my $before = $snapshot->();
# with ecp.history_days = 0 the launcher keeps everything, over many passes
my $extra = sql(q{SELECT ecp.start('idle')});
is(EcpTest::wait_for_run($node, $extra, 'succeeded'), 'succeeded', 'a run while the retention is off');
my $idle_run_rows = sql("SELECT count(*) FROM ecp.part WHERE run_id = $extra");
ok(sql("SELECT count(*) = 3 FROM ecp.run WHERE id IN ($clean, $poisoned, $dead)") eq 't',
	'ecp.history_days = 0: nothing purged');

my $log_offset = -s $node->logfile;
sql(q{ALTER SYSTEM SET ecp.history_days = 30; SELECT pg_reload_conf()});
ok(EcpTest::poll($node, "SELECT NOT EXISTS (SELECT 1 FROM ecp.run WHERE id IN ($clean, $poisoned))", 30),
	'ecp.history_days = 30: the launcher purged the runs that finished 40 days ago');
is(sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM ecp.run WHERE id IN ($clean, $clean2, $clean3, $poisoned, $poisoned2, $dead)"),
	join(',', sort { $a <=> $b } ($dead, $clean2, $clean3, $poisoned2)),
	"kept: runs newer than 30 days, and a task's latest run however old (dead's only run)");
is(sql("SELECT count(*) FROM ecp.failed_doc WHERE run_id = $poisoned") . ' '
	  . sql("SELECT count(*) FROM ecp.failed_doc WHERE run_id = $poisoned2"), '0 10',
	'dead letters went with their run');
is(sql("SELECT count(*) FROM ecp.part WHERE run_id IN ($clean, $poisoned)"), '0', 'so did parts');
is($flow_of->($clean) + $flow_of->($poisoned), 0, "and the runs' flow rows");
ok($flow_of->($clean2) > 0 && $flow_of->($dead) > 0, 'the flow rows of kept runs stay');
is(sql(q{SELECT count(*) FROM ecp.flow WHERE run_id IS NULL AND action = 'create_consumer'}), '0',
	'flow rows without a run, 40 days old: purged');
is(sql(q{SELECT count(*) FROM ecp.flow WHERE run_id IS NULL AND action = 'create_task'}), '7',
	'those of 20 days and newer stay (every create_task)');
is(sql("SELECT string_agg(documents::text, ',' ORDER BY minute) FROM ecp.throughput WHERE task_id = $clean_task AND minute < now() - interval '1 day'"),
	'7', 'throughput samples: the 40-day one purged, the 20-day one kept');
ok(sql("SELECT sum(documents) >= 6000 FROM ecp.throughput WHERE task_id = $clean_task AND minute > now() - interval '1 day'") eq 't',
	"today's samples stay");
is(health_of('clean') . ' ' . health_of('poisoned') . ' ' . health_of('dead'), 'ok partial cancelled',
	'ecp.task_health still tells the latest runs');
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/LOG:  ecp launcher purged the history older than 30 days \(ecp.history_days\): 2 runs with 10 dead letters, \d+ flow rows, 1 throughput samples/,
	'one LOG line says what the purge removed');
ok(sql("SELECT count(*) = $idle_run_rows FROM ecp.part WHERE run_id = $extra") eq 't', 'a recent run untouched');
diag('before the purge: ' . $before . '; after: ' . $snapshot->());

done_testing();
