# The lifecycle of tasks and consumers by their owner, audited (issue 24).
#
#  * alice, an ordinary role logged in as herself, alters her task (query,
#    index, consumer, options, enabled), renames, disables and drops it,
#    and alters, renames and drops her consumer; each change is a flow row
#    with before and after, and the consumer's password never appears in
#    the flow;
#  * bob can touch none of it (each refusal with its SQLSTATE), a taken
#    name does not tell whose it is, and plain UPDATEs change neither an
#    owner nor what ecp stamps;
#  * while a run is in progress only enabled changes; a followed task keeps
#    its source and cannot be disabled or dropped; a disabled task's start,
#    verify and follow are refused, and its pg_cron firing is skipped with
#    a flow row;
#  * a dropped task leaves no runs, parts, run ids, drift, watermarks or
#    pg_cron jobs behind; its flow rows stay;
#  * ecp.start takes ids of int4[] and int8[] beside text[], an untyped
#    '{...}' and NULL;
#  * ecp.preview_task shows exactly what a run sends: the stand-in's
#    request log of a run of the same rows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('request log');
my $node = EcpTest::new_node('lifecycle',
	conf => [ "shared_preload_libraries = 'ecp,pg_cron'", "cron.database_name = 'postgres'",
		'cron.use_background_workers = on' ]);
my $es = EsdServer->start();
my $url = $es->url;
my $password = 'pw-Alice-7Qz';

sub sql { return $node->safe_psql('postgres', $_[0]) }

# A statement as a role logged in as itself (SET ROLE would leave the
# superuser as session_user, whom ecp's definers trust); errors verbose,
# so they carry their SQLSTATE.
sub as
{
	my ($role, $statement) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$statement",
		extra_params => [ '-U', $role ]);
	return ($rc, $out, $err);
}

sub ok_as
{
	my ($role, $statement, $name) = @_;
	my ($rc, $out, $err) = as($role, $statement);
	is($rc, 0, $name) or diag($err);
	return $out;
}

sub refused_as
{
	my ($role, $statement, $state, $pattern, $name) = @_;
	my ($rc, $out, $err) = as($role, $statement);
	isnt($rc, 0, "refused: $name");
	like($err, qr/ERROR:  $state: [^\n]*$pattern/s, "... $name: $state") or diag($err);
	return $err;
}

# The latest flow row of an action about a task or consumer, as JSON text.
sub last_flow
{
	my ($action) = @_;
	return sql("SELECT content::text FROM ecp.flow WHERE action = '$action' ORDER BY at DESC LIMIT 1");
}

sql(q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE SCHEMA a AUTHORIZATION alice;
	CREATE SCHEMA b AUTHORIZATION bob;
	CREATE EXTENSION pg_cron;
	GRANT USAGE ON SCHEMA cron TO alice;
});
ok_as('alice', qq{
	CREATE TABLE a.items (id bigint PRIMARY KEY, label text, price numeric,
	                      updated_at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00');
	INSERT INTO a.items (id, label, price) SELECT g, 'item ' || g, g % 50 FROM generate_series(1, 200) g;
	CREATE TABLE a.other (id bigint PRIMARY KEY, label text);
	INSERT INTO a.other SELECT g, 'other ' || g FROM generate_series(1, 50) g;
	-- skips every tenth document, marks the others
	CREATE FUNCTION a.shape(d jsonb) RETURNS jsonb LANGUAGE sql AS
	  \$\$ SELECT CASE WHEN (d->>'id')::bigint % 10 = 0 THEN NULL ELSE d || '{"shaped": true}' END \$\$;
	SELECT ecp.create_consumer('a_es', '$url', options => '{"username": "elastic", "password": "$password"}');
	SELECT ecp.create_consumer('a_es2', '$url');
	SELECT ecp.create_task('a_items', 'a_es', 'items', query => 'SELECT id, label FROM a.items',
	                       options => '{"batch_size": 50}');
	SELECT ecp.create_task('a_cron', 'a_es', 'cron', query => 'SELECT id FROM a.items');
	SELECT ecp.schedule('a_cron', '* * * * *');
	SELECT ecp.alter_task('a_cron', enabled => false);
}, 'alice creates her consumers and tasks, and schedules a task she disables at once');
ok_as('bob', qq{
	CREATE TABLE b.secret (id bigint PRIMARY KEY);
	SELECT ecp.create_consumer('b_es', '$url');
	SELECT ecp.create_task('b_t', 'b_es', 'b', query => 'SELECT id FROM b.secret');
}, 'bob creates his own');

# --- a disabled task's pg_cron firing is skipped (polled at the end) -----------------
ok_as('alice', q{SELECT ecp.rename_task('a_cron', 'a_nightly')}, 'alice renames the scheduled task');
is(sql(q{SELECT jobname || ' | ' || command || ' | ' || username FROM cron.job}),
	q{ecp:a_nightly | SELECT ecp_internal._scheduled_start('a_nightly') | alice},
	'its pg_cron job is renamed with it, and calls it by its new name, as alice');

# --- alice alters her task ------------------------------------------------------------
ok_as('alice', q{SELECT ecp.alter_task('a_items', query => 'SELECT id, label, price FROM a.items')},
	'alice changes the query');
is(sql(q{SELECT (content->'before'->>'query') || ' -> ' || (content->'after'->>'query') FROM ecp.flow
          WHERE action = 'alter_task' ORDER BY at DESC LIMIT 1}),
	'SELECT id, label FROM a.items -> SELECT id, label, price FROM a.items', '... the flow has it before and after');
ok_as('alice', q{SELECT ecp.alter_task('a_items', index => 'items_v2')}, 'alice changes the index');
is(last_flow('alter_task'), '{"task": "a_items", "after": {"index": "items_v2"}, "before": {"index": "items"}}',
	'... the flow row holds only what changed');
ok_as('alice', q{SELECT ecp.alter_task('a_items', consumer => 'a_es2')}, 'alice changes the consumer');
is(last_flow('alter_task'), '{"task": "a_items", "after": {"consumer": "a_es2"}, "before": {"consumer": "a_es"}}',
	'... by name in the flow');
ok_as('alice', q{SELECT ecp.alter_task('a_items', options => '{"batch_size": 20, "parallelism": 2}')},
	'alice changes options');
is(last_flow('alter_task'),
	'{"task": "a_items", "after": {"options": {"batch_size": 20, "parallelism": 2}}, "before": {"options": {"batch_size": 50, "parallelism": null}}}',
	'... merged: only the keys given change');
ok_as('alice', q{SELECT ecp.alter_task('a_items', options => '{"parallelism": null}')},
	'alice removes an option with a JSON null');
is(sql(q{SELECT name || ' ' || consumer || ' ' || index || ' ' || options::text || ' ' || enabled FROM ecp.tasks WHERE name = 'a_items'}),
	'a_items a_es2 items_v2 {"id_column": "id", "batch_size": 20} true', 'ecp.tasks shows the task as altered');
ok_as('alice', q{SELECT ecp.alter_task('a_items', enabled => false)}, 'alice disables it');
is(last_flow('alter_task'), '{"task": "a_items", "after": {"enabled": false}, "before": {"enabled": true}}',
	'... in the flow');
is(sql(q{SELECT enabled FROM ecp.tasks WHERE name = 'a_items'}), 'f', '... ecp.tasks says so');
refused_as('alice', q{SELECT ecp.start('a_items')}, '55000', 'task "a_items" is disabled.*HINT:  Enable it first: SELECT ecp.alter_task\(\'a_items\', enabled => true\)',
	'start of a disabled task');
refused_as('alice', q{SELECT ecp.verify('a_items')}, '55000', 'task "a_items" is disabled', 'verify of a disabled task');
refused_as('alice', q{SELECT ecp.follow('a_items', mode => 'trigger')}, '55000', 'task "a_items" is disabled',
	'follow of a disabled task');
is(sql(q{SELECT count(*) FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id WHERE t.name = 'a_items'}), '0',
	'... no run was made');
ok_as('alice', q{SELECT ecp.alter_task('a_items', enabled => true)}, 'alice enables it again');

# the changes are checked as create_task checks them, with alice's privileges
refused_as('alice', q{SELECT ecp.alter_task('a_items', query => 'DELETE FROM a.items')}, '22023',
	'source query is not a plain SELECT', 'a query that deletes');
refused_as('alice', q{SELECT ecp.alter_task('a_items', query => 'SELECT id FROM b.secret')}, '42501',
	'permission denied for schema b', "a query of bob's table");
refused_as('alice', q{SELECT ecp.alter_task('a_items', query => 'SELECT id AS key, label FROM a.items')}, '42703',
	'column "id" is not an output column', 'a query without the id column');
refused_as('alice', q{SELECT ecp.alter_task('a_items', options => '{"batch_size": 0}')}, '22023',
	'option "batch_size" of a task must be', 'an option out of its contract');
refused_as('alice', q{SELECT ecp.alter_task('a_items', options => '[1]')}, '22023',
	'options must be a JSON object', 'options that are not an object');
refused_as('alice', q{SELECT ecp.alter_task('a_items', query => 'SELECT 1 AS id', queries => ARRAY['SELECT 2 AS id'])},
	'22023', 'give query or queries, not both', 'query and queries at once');
refused_as('alice', q{SELECT ecp.alter_task('a_items', index => 'Bad Name')}, '22023', 'invalid index name', 'a bad index name');
refused_as('alice', q{SELECT ecp.alter_task('a_items', consumer => 'b_es')}, '42704', 'consumer "b_es" does not exist',
	"bob's consumer");
refused_as('alice', q{UPDATE ecp.task SET consumer_id = (SELECT max(id) FROM ecp.consumer) + 1000 WHERE name = 'a_items'},
	'42501', 'must use a consumer of its own owner', 'a plain UPDATE to a consumer that is not hers');
is(sql(q{SELECT query || ' ' || index || ' ' || consumer FROM ecp.tasks WHERE name = 'a_items'}),
	'SELECT id, label, price FROM a.items items_v2 a_es2', 'a refused change changed nothing');

# --- plain UPDATEs: what ecp stamps stays ecp's ----------------------------------------
for my $set ("owner = 'bob'", "transform_fn = 'a.shape(jsonb)'", "search_path = 'b'", "changed_by = 'x'",
	"ids = '{1}'", "file = '/etc/passwd'", "created_at = now()")
{
	refused_as('alice', "UPDATE ecp.task SET $set WHERE name = 'a_items'", '42501', 'permission denied for table task',
		"a plain UPDATE SET $set");
}
refused_as('alice', q{UPDATE ecp.consumer SET owner = 'bob' WHERE name = 'a_es'}, '42501',
	'permission denied for table consumer', "a consumer's owner");
ok_as('alice', q{UPDATE ecp.task SET options = options || '{"batch_size": 25}' WHERE name = 'a_items'},
	'a plain UPDATE of the options still works');
is(last_flow('alter_task'), '{"task": "a_items", "after": {"options": {"batch_size": 25}}, "before": {"options": {"batch_size": 20}}}',
	'... and writes its flow row too');

# --- bob cannot touch alice's ---------------------------------------------------------------
for my $call (q{ecp.alter_task('a_items', enabled => false)}, q{ecp.alter_task('a_items', index => 'x')},
	q{ecp.rename_task('a_items', 'mine')}, q{ecp.drop_task('a_items')}, q{ecp.start('a_items')},
	q{ecp.preview_task('a_items')})
{
	refused_as('bob', "SELECT * FROM $call", '42704', 'task "a_items" does not exist', "bob: $call");
}
for my $call (q{ecp.alter_consumer('a_es', url => 'http://127.0.0.1:1')}, q{ecp.rename_consumer('a_es', 'mine')},
	q{ecp.drop_consumer('a_es')})
{
	refused_as('bob', "SELECT $call", '42704', 'consumer "a_es" does not exist', "bob: $call");
}
is(ok_as('bob', q{WITH changed AS (UPDATE ecp.task SET enabled = false, name = 'stolen' WHERE name = 'a_items' RETURNING 1)
                  SELECT count(*) FROM changed}, "bob's plain UPDATE of alice's task"),
	'0', '... finds no row (row-level security)');
is(sql(q{SELECT name || ' ' || enabled FROM ecp.task WHERE name = 'a_items'}), 'a_items true', '... and changes nothing');
my $err = refused_as('bob', q{SELECT ecp.rename_task('b_t', 'a_items')}, '42710', 'task name "a_items" is taken',
	"bob renames to the name of alice's task");
unlike($err, qr/alice/, '... the error does not say whose the name is');
$err = refused_as('bob', q{SELECT ecp.create_task('a_items', 'b_es', 'b', query => 'SELECT id FROM b.secret')}, '42710',
	'task name "a_items" is taken', "bob creates a task of alice's task's name");
unlike($err, qr/alice/, '... nor here');
refused_as('bob', q{SELECT ecp.rename_consumer('b_es', 'a_es')}, '42710', 'consumer name "a_es" is taken',
	"bob renames to the name of alice's consumer");

# --- a run in progress: only enabled changes --------------------------------------------------
my $run = ok_as('alice', q{SELECT ecp.start('a_items', at => now() + interval '1 hour')}, 'alice starts a run for later');
for my $change (q{index => 'items_v3'}, q{query => 'SELECT id, label FROM a.items'}, q{consumer => 'a_es'},
	q{options => '{"batch_size": 10}'})
{
	refused_as('alice', "SELECT ecp.alter_task('a_items', $change)", '55006',
		"task \"a_items\" has run $run in progress: only enabled can change.*HINT:  Wait for run $run to end, or SELECT ecp.cancel\\($run\\); first",
		"alter_task($change) while run $run waits");
}
refused_as('alice', q{UPDATE ecp.task SET index_name = 'items_v3' WHERE name = 'a_items'}, '55006',
	"has run $run in progress: its source, index and consumer cannot change", 'a plain UPDATE of the index meanwhile');
refused_as('alice', q{SELECT ecp.drop_task('a_items')}, '55006', "has run $run in progress: it cannot be dropped",
	'drop_task meanwhile');
refused_as('alice', q{SELECT ecp.alter_consumer('a_es2', options => '{"rate_limit": 10}')}, '55006',
	"consumer \"a_es2\" is in use: task \"a_items\" has run $run in progress", 'alter_consumer of its consumer meanwhile');
ok_as('alice', q{SELECT ecp.set_rate('a_items', 500)}, 'ecp.set_rate still changes a task that runs');
ok_as('alice', q{SELECT ecp.alter_task('a_items', enabled => false)}, 'disabling it is allowed meanwhile');
is(sql("SELECT state FROM ecp.run WHERE id = $run"), 'pending', '... and leaves the run as it is');
ok_as('alice', q{SELECT ecp.alter_task('a_items', enabled => true); SELECT ecp.rename_task('a_items', 'a_books')},
	'enabling and renaming are allowed meanwhile');
is(sql("SELECT task FROM ecp.progress WHERE run_id = $run"), 'a_books', '... the run is of the renamed task');
ok_as('alice', "SELECT ecp.cancel($run)", 'alice cancels the run');
ok_as('alice', q{SELECT ecp.alter_task('a_books', index => 'items_v3', options => '{"rate_limit": null}')},
	'with no run in progress the index changes');

# --- a followed task ---------------------------------------------------------------------------
ok_as('alice', q{SELECT ecp.create_task('a_follow', 'a_es', 'other', query => 'SELECT id, label FROM a.other');
                 SELECT ecp.follow('a_follow', mode => 'trigger')}, 'alice follows a task');
refused_as('alice', q{SELECT ecp.alter_task('a_follow', index => 'other2')}, '55006',
	'task "a_follow" is followed: only enabled can change.*HINT:  Stop following it first: SELECT ecp.unfollow',
	'changing a followed task');
refused_as('alice', q{SELECT ecp.alter_task('a_follow', enabled => false)}, '55006',
	'task "a_follow" is followed: it cannot be disabled.*ecp.unfollow', 'disabling a followed task');
refused_as('alice', q{SELECT ecp.drop_task('a_follow')}, '55006', 'task "a_follow" is followed: it cannot be dropped',
	'dropping a followed task');
ok_as('alice', q{SELECT ecp.unfollow('a_follow'); SELECT ecp.drop_task('a_follow')}, 'unfollowed, it is dropped');

# --- ids of any integer or text array ----------------------------------------------------------
my %forms = (
	q{ARRAY[1, 2]}           => '{1,2}',
	q{ARRAY[3, 4]::bigint[]} => '{3,4}',
	q{ARRAY[5]::smallint[]}  => '{5}',
	q{'{6,7}'}               => '{6,7}',
	q{ARRAY['8']}            => '{8}',
	q{NULL}                  => '',);
for my $form (sort keys %forms)
{
	my $id_run = ok_as('alice', "SELECT ecp.start('a_books', ids => $form, at => now() + interval '1 hour')",
		"ids => $form");
	is(sql("SELECT coalesce(only_ids::text, '') FROM ecp.run WHERE id = $id_run"), $forms{$form}, "... the run's ids");
	ok_as('alice', "SELECT ecp.cancel($id_run)", '... cancelled');
}
refused_as('alice', q{SELECT ecp.start('a_books', ids => ARRAY[1.5])}, '42804',
	'ids must be an array of text, integers or uuids, not numeric\[\]', 'ids of numeric[]');
refused_as('alice', q{SELECT ecp.start('a_books', ids => ARRAY[]::integer[])}, '22023', 'ids is empty', 'an empty int array');
$run = ok_as('alice', q{SELECT ecp.start('a_books', ids => ARRAY[11, 12])}, 'an id run of int4 ids');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', '... succeeds');
$es->refresh('items_v3');
is($es->count('items_v3'), 2, '... and sent those 2 documents');

# --- preview_task: what a run sends ---------------------------------------------------------
ok_as('alice', q{SELECT ecp.create_task('a_pv', 'a_es', 'pv', query => 'SELECT id, label, price, updated_at, ''q"uo\te'' AS odd FROM a.items WHERE id <= 12',
                       options => '{"transform": "a.shape", "routing_column": "label", "version_column": "updated_at", "batch_size": 100}')},
	'a task with a transform, routing and versions');
my $preview = ok_as('alice', q{SELECT coalesce(action::text, 'NULL') || E'\n' || coalesce(document::text, 'NULL')
                               FROM ecp.preview_task('a_pv', 20)}, 'alice previews it');
my @previewed = split /\n/, $preview;
is(scalar(@previewed), 24, '12 documents previewed');
is(scalar(grep { $_ eq 'NULL' } @previewed), 2, '... the 10th skipped by the transform (action and document NULL)');
$run = ok_as('alice', q{SELECT ecp.start('a_pv')}, 'a run of the same rows');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', '... succeeds');
my $sent = join('', map { $_->{body} } grep { ($_->{url} // '') =~ m{^/pv/_bulk} } @{ $es->requests(1000) });
is($sent, join('', map { "$_\n" } grep { $_ ne 'NULL' } @previewed),
	'the stand-in received exactly the lines preview_task showed, byte for byte');
is(ok_as('alice', q{SELECT _id FROM ecp.preview_task('a_pv', 2)}, 'preview of 2'), "1\n2", '... the _id column');
refused_as('alice', q{SELECT * FROM ecp.preview_task('a_pv', -1)}, '22023', 'n must be between 0 and 10000', 'n below 0');
# the owner's code runs with the caller's rights: nobody else previews it, a superuser neither
{
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\nSELECT * FROM ecp.preview_task('a_pv')");
	like($err, qr/ERROR:  42501: task "a_pv" is previewed by its owner alice only/, 'a superuser cannot preview alice\'s task (42501)');
	($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\nSET ROLE alice; SELECT * FROM ecp.preview_task('a_pv')");
	like($err, qr/ERROR:  42501: .*in a session of its own/, '... nor with SET ROLE alice');
}

# --- a dropped task leaves nothing behind ------------------------------------------------------
ok_as('alice', q{SELECT ecp.create_task('a_drop', 'a_es', 'dropme', query => 'SELECT id, label, updated_at FROM a.items',
                                        options => '{"since_column": "updated_at"}');
                 SELECT ecp.schedule('a_drop', '0 3 * * *')}, 'a task with a since_column and a schedule');
my @runs;
for my $start (q{SELECT ecp.start('a_drop')}, q{SELECT ecp.start('a_drop', ids => ARRAY[1, 2])})
{
	$run = ok_as('alice', $start, $start);
	is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', '... succeeds');
	push @runs, $run;
}
$es->bulk(qq({"delete":{"_index":"dropme","_id":"5"}}\n), refresh => 'true');
$run = ok_as('alice', q{SELECT ecp.verify('a_drop')}, 'a verify run, after a document went missing');
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', '... succeeds');
push @runs, $run;
my $task_id = sql(q{SELECT id FROM ecp.task WHERE name = 'a_drop'});
my $runs = join(', ', @runs);
my $left = qq{SELECT (SELECT count(*) FROM ecp.run WHERE task_id = $task_id OR id IN ($runs)) || ' '
	|| (SELECT count(*) FROM ecp.part WHERE run_id IN ($runs)) || ' '
	|| (SELECT count(*) FROM ecp.run_id WHERE run_id IN ($runs)) || ' '
	|| (SELECT count(*) FROM ecp.drift WHERE run_id IN ($runs)) || ' '
	|| (SELECT count(*) FROM ecp.watermark WHERE task_id = $task_id) || ' '
	|| (SELECT count(*) FROM cron.job WHERE jobname = 'ecp:a_drop')};
like(sql($left), qr/^3 [1-9]\d* 2 1 1 1$/, 'before: 3 runs, their parts, 2 run ids, 1 drift row, a watermark, a job');
ok_as('alice', q{SELECT ecp.drop_task('a_drop')}, 'alice drops the task');
is(sql($left), '0 0 0 0 0 0', 'after: no run, part, run id, drift row, watermark or pg_cron job');
cmp_ok(sql("SELECT count(*) FROM ecp.flow_log WHERE task_id = $task_id AND action <> 'drop_task'"), '>=', 6,
	'its flow rows stay');
is(sql("SELECT operator || ' ' || (content->'before'->>'index') FROM ecp.flow_log WHERE task_id = $task_id AND action = 'drop_task'"),
	'alice dropme', 'a drop_task row names alice and keeps the definition');
refused_as('alice', q{SELECT ecp.drop_task('a_drop')}, '42704', 'task "a_drop" does not exist', 'dropping it again');

# --- alice's consumer ------------------------------------------------------------------------------
refused_as('alice', q{SELECT ecp.alter_consumer('a_es', url => 'http://169.254.169.254')}, '42501', 'not allowed',
	'a URL the outbound policy refuses');
ok_as('alice', q{SELECT ecp.alter_consumer('a_es', options => '{"password": "n3w-Alice-pw"}')}, 'alice rotates the password');
is(last_flow('alter_consumer'), '{"after": {"options": {"password": "***"}}, "before": {"options": {"password": "***"}}, "consumer": "a_es"}',
	'... the flow says the password changed, masked');
ok_as('alice', qq{SELECT ecp.alter_consumer('a_es', url => '$url/', options => '{"username": null, "password": null}')},
	'alice drops the credentials');
is(sql(q{SELECT options::text FROM ecp.consumers WHERE name = 'a_es'}), '{}', '... gone from the consumer');
ok_as('alice', q{SELECT ecp.rename_consumer('a_es2', 'a_es_b')}, 'alice renames a consumer');
is(last_flow('rename_consumer'), '{"after": {"name": "a_es_b"}, "before": {"name": "a_es2"}, "consumer": "a_es_b"}',
	'... in the flow');
is(sql(q{SELECT consumer FROM ecp.tasks WHERE name = 'a_books'}), 'a_es_b', '... its task follows it');
refused_as('alice', q{SELECT ecp.drop_consumer('a_es_b')}, '2BP01', 'consumer "a_es_b" is used by task\(s\) a_books',
	'dropping a consumer in use');
ok_as('alice', q{SELECT ecp.drop_task('a_books'); SELECT ecp.drop_consumer('a_es_b')}, 'alice drops the task, then its consumer');
like(last_flow('drop_consumer'), qr/^\{"before": \{"url": "http:.*"consumer": "a_es_b"\}$/, '... in the flow');
is(sql(q{SELECT operator FROM ecp.flow WHERE action = 'drop_consumer'}), 'alice', '... by alice');
is(sql(q{SELECT string_agg(DISTINCT action, ',' ORDER BY action) FROM ecp.flow
          WHERE action IN ('alter_task', 'rename_task', 'drop_task', 'alter_consumer', 'rename_consumer', 'drop_consumer')}),
	'alter_consumer,alter_task,drop_consumer,drop_task,rename_consumer,rename_task', 'each kind of change is in the flow');
is(sql(qq{SELECT count(*) FROM ecp.flow_log WHERE content::text LIKE '%$password%' OR content::text LIKE '%n3w-Alice-pw%'}),
	'0', 'the passwords never appear in the flow');
is(ok_as('bob', q{SELECT count(*) FROM ecp.flow WHERE action IN ('alter_task', 'rename_task', 'drop_task', 'alter_consumer', 'rename_consumer', 'drop_consumer')},
		"bob's view of the flow"), '0', "bob sees none of alice's changes");

# --- the disabled task's pg_cron firing ---------------------------------------------------------
# (pg_cron 1.4 fires by the minute: the first firing after the rename
# comes within two minutes of it)
ok(EcpTest::poll($node, q{SELECT count(*) >= 1 FROM ecp.flow WHERE action = 'cron skipped' AND content->>'task' = 'a_nightly'}, 130),
	'a pg_cron firing of the disabled task was skipped');
is(sql(q{SELECT operator || ' ' || (content->>'task') || ' ' || (content->>'why') || ' ' || (content->>'disabled')
           FROM ecp.flow WHERE action = 'cron skipped' AND content->>'task' = 'a_nightly' LIMIT 1}),
	'alice a_nightly the task is disabled true', '... with a flow row that says why, as alice');
is(sql(q{SELECT count(*) FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id WHERE t.name = 'a_nightly'}), '0',
	'... and started no run');
ok_as('alice', q{SELECT ecp.drop_task('a_nightly')}, 'alice drops the scheduled task');
is(sql(q{SELECT count(*) FROM cron.job}), '0', '... its job is gone');

$es->stop;
done_testing();
