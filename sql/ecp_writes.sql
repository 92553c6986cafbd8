-- Where documents go: consumer kinds and options (nodes, routes,
-- tag_header), task options that decide how a document is written (tag,
-- transform, routing_column, version_column, pipeline, refresh), bare ids
-- for a write service, and where a run says it sends.  Every refusal
-- names the bad value, with a SQLSTATE and a hint.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE TABLE parcels (id bigint PRIMARY KEY, region text, version bigint, note text,
                      changed timestamptz, price numeric);
INSERT INTO parcels SELECT g, 'r' || g % 3, g, 'n' || g, now(), g FROM generate_series(1, 5) g;

-- consumers ----------------------------------------------------------------------
SELECT ecp.create_consumer('cluster', 'http://127.0.0.1:9200',
       options => '{"nodes": ["http://127.0.0.1:9201", "http://127.0.0.1:9202/"],
                    "routes": {"FLUSH": "http://127.0.0.1:9300"}}');
SELECT ecp.create_consumer('ws', 'http://127.0.0.1:8080/ingest', kind => 'http',
       options => '{"tag_header": "X-Env"}');
SELECT name, kind, url, options FROM ecp.consumers WHERE name IN ('cluster', 'ws') ORDER BY name;
-- refused
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', kind => 'kafka');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"nodes": "http://127.0.0.1:9201"}');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"nodes": []}');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"nodes": [9201]}');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"nodes": ["ftp://127.0.0.1"]}');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"nodes": ["http://u:p@127.0.0.1:9201"]}');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"routes": {"FLU SH": "http://127.0.0.1:9300"}}');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"routes": {"FLUSH": 9300}}');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"routes": {"FLUSH": "not a url"}}');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"tag_header": "Authorization"}');
SELECT ecp.create_consumer('c1', 'http://127.0.0.1:9200', options => '{"tag_header": "X-Tag\r\nX-Evil: 1"}');
-- a row written directly is checked the same way
INSERT INTO ecp.consumer (name, kind, url, options)
VALUES ('c1', 'http', 'http://127.0.0.1:9200', '{"routes": {"A": "javascript:alert(1)"}}');
SELECT count(*) AS consumers FROM ecp.consumer;

-- task options --------------------------------------------------------------------
CREATE FUNCTION public.reshape(doc jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT doc - 'note' $$;
CREATE FUNCTION public.as_text(doc jsonb) RETURNS text LANGUAGE sql AS $$ SELECT doc::text $$;
SELECT ecp.create_task('routed', 'cluster', 'parcels', query => 'SELECT * FROM parcels',
       options => '{"tag": "FLUSH", "transform": "public.reshape", "routing_column": "region",
                    "version_column": "version", "pipeline": "parcels-v1", "refresh": true}') > 0 AS created;
SELECT ecp.create_task('plain', 'cluster', 'parcels', query => 'SELECT * FROM parcels',
       options => '{"tag": "NIGHT"}') > 0 AS created;
-- refused
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"tag": "a b"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"tag": ""}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"transform": "reshape"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"transform": "public.nope"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"transform": "public.as_text"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"transform": "public.reshape; DROP TABLE parcels"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"routing_column": "nope"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"version_column": "version", "op": "update"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"pipeline": "a&b=c"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"refresh": "yes"}');
SELECT ecp.create_task('t1', 'ws', 'parcels', query => 'SELECT * FROM parcels', options => '{"pipeline": "p"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', file => 'http://127.0.0.1:8000/p.ndjson', options => '{"routing_column": "region"}');

-- bare ids: only a write service takes them without a query ------------------------
SELECT ecp.create_task('bare', 'ws', 'parcels', ids => ARRAY['a1', 'a2']) > 0 AS created;
SELECT ecp.create_task('t1', 'cluster', 'parcels', ids => ARRAY['a1', 'a2']);
SELECT ecp.create_task('bare_file', 'ws', 'parcels', file => 'http://127.0.0.1:8000/ids.txt',
       options => '{"format": "ids"}') > 0 AS created;
SELECT ecp.create_task('t1', 'cluster', 'parcels', file => 'http://127.0.0.1:8000/ids.txt',
       options => '{"format": "ids"}');

-- where a run sends, and why: the start row of the flow ---------------------------
SELECT ecp.start('routed') > 0 AS started;
SELECT ecp.start('plain') > 0 AS started;
SELECT ecp.start('bare', ids => ARRAY['b7']) > 0 AS started;
SELECT t.name, f.content
  FROM ecp.flow f JOIN ecp.tasks t ON t.id = f.task_id
 WHERE f.action = 'start' AND t.name IN ('routed', 'plain', 'bare') ORDER BY t.name;
SELECT t.name, p.state, p.skipped, p.skipped_stale FROM ecp.progress p JOIN ecp.tasks t ON t.name = p.task
 WHERE t.name IN ('routed', 'plain', 'bare') ORDER BY t.name;
SELECT count(ecp.cancel(run_id)) AS cancelled FROM ecp.progress WHERE task IN ('routed', 'plain', 'bare');

-- migrations, windows, schedules -------------------------------------------------
SELECT ecp.create_task('swap', 'cluster', 'parcels', query => 'SELECT * FROM parcels',
       options => '{"mode": "alias_swap", "settings": {"index": {"number_of_replicas": 2, "refresh_interval": "30s"}, "number_of_shards": 3},
                    "mappings": {"properties": {"region": {"type": "keyword"}}}, "keep_old": false,
                    "window": "22:00-04:00"}') > 0 AS created;
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"mode": "blue_green"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"settings": {}}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"mode": "alias_swap", "mappings": []}');
SELECT ecp.create_task('t1', 'ws', 'parcels', query => 'SELECT * FROM parcels', options => '{"mode": "alias_swap"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"mode": "alias_swap", "op": "update"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"window": "25:00-04:00"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"window": "04:00-04:00"}');
SELECT ecp.create_task('t1', 'cluster', 'parcels', query => 'SELECT * FROM parcels', options => '{"window": "4-5"}');
-- a window may cross midnight
SELECT w, t, ecp_internal._in_window(w, t::time) AS inside
  FROM (VALUES ('22:00-04:00', '23:30'), ('22:00-04:00', '03:59'), ('22:00-04:00', '04:00'),
               ('22:00-04:00', '12:00'), ('01:00-06:00', '01:00'), ('01:00-06:00', '06:00')) v(w, t);
-- the load settings replace the task's replicas and refresh, in every form
SELECT * FROM ecp_internal._migration_settings('{"index": {"number_of_replicas": 2, "refresh_interval": "30s"}, "number_of_shards": 3}');
SELECT * FROM ecp_internal._migration_settings('{"index.number_of_replicas": 1}');
SELECT * FROM ecp_internal._migration_settings(NULL);
-- a migration run: a part that creates the index, the load, a part that swaps
SELECT ecp.start('swap') AS swap_run \gset
SELECT part, source, state FROM ecp.parts WHERE run_id = :swap_run ORDER BY part;
SELECT task, alias, old_index, new_index = 'parcels-' || :swap_run AS named_by_run, step, state
  FROM ecp.migrations WHERE run_id = :swap_run;
SELECT ecp.cancel(:swap_run, drop_index => true);
SELECT action, state FROM ecp.run WHERE task_id = (SELECT id FROM ecp.tasks WHERE name = 'swap') ORDER BY id;
SELECT ecp.cancel(:swap_run + 1);
SELECT ecp.rollback('swap');
SELECT ecp.rollback('plain');
-- a start at a time
SELECT ecp.start('plain', at => '2030-01-01 00:00:00+00') AS later_run \gset
SELECT state, starts_at FROM ecp.progress WHERE run_id = :later_run;
SELECT ecp.cancel(:later_run);
-- schedules need pg_cron in this database
SELECT ecp.schedule('plain', '0 2 * * *');
SELECT ecp.unschedule('plain');
-- maintenance runs come only from ecp.rollback and ecp.cancel
INSERT INTO ecp.run (task_id, action) SELECT id, 'rollback' FROM ecp.tasks WHERE name = 'swap';

-- verbs take a run id or a task's name (its latest run); asking for the ------------
-- state a run is in already is a NOTICE; a consumer URL's port is 1..65535
SET client_min_messages = notice;

SELECT ecp.create_consumer('p0', 'http://127.0.0.1:0');
SELECT ecp.create_consumer('p99999', 'http://127.0.0.1:99999');
SELECT ecp.create_consumer('pabc', 'http://127.0.0.1:9x/');
SELECT ecp.create_consumer('p65535', 'http://127.0.0.1:65535');
SELECT ecp.create_consumer('p6', 'http://[::1]:9200/prefix');
SELECT ecp.create_consumer('p6bad', 'http://[::1]:70000');
SELECT ecp.create_consumer('nop', 'https://127.0.0.1/es');
SELECT name, url FROM ecp.consumers WHERE name IN ('p65535', 'p6', 'nop') ORDER BY name;

CREATE TABLE verb_items AS SELECT g AS id FROM generate_series(1, 10) g;
ALTER TABLE verb_items ADD PRIMARY KEY (id);
SELECT ecp.create_task('verbs', 'p65535', 'verbs', query => 'SELECT * FROM verb_items') > 0 AS created;

-- a task without a run, a task that does not exist
SELECT ecp.pause('verbs');
SELECT ecp.pause('nope');
SELECT ecp.pause(NULL::text);

SELECT ecp.start('verbs') AS run \gset
SELECT ecp.pause('verbs');
SELECT ecp.pause('verbs');
SELECT ecp.pause(:run);
SELECT state FROM ecp.progress WHERE run_id = :run;
SET client_min_messages = error;   -- the launcher works in another database
SELECT ecp.resume('verbs');
SET client_min_messages = notice;
SELECT ecp.resume(:run);
SELECT ecp.cancel('verbs');
SELECT ecp.cancel('verbs');
SELECT ecp.cancel(:run, drop_index => false);
SELECT state FROM ecp.progress WHERE run_id = :run;
-- a cancelled run cannot be paused or resumed: still an error
SELECT ecp.pause('verbs');
SELECT ecp.resume('verbs');
SELECT ecp.retry_failed('verbs');
-- the flow has one row per change, none for the repeats
SELECT action FROM ecp.flow WHERE run_id = :run ORDER BY at, action;

-- every function a user calls has a comment
SELECT p.oid::regprocedure AS uncommented FROM pg_proc p
 WHERE p.pronamespace = 'ecp'::regnamespace AND p.proname !~ '^_'
   AND obj_description(p.oid, 'pg_proc') IS NULL;

-- since_column: incremental runs (issue 22) ----------------------------------------
-- the column is an output column of the query (of each query of queries)
-- of an integer, date or timestamp type; since_overlap goes with it
CREATE TABLE since_rows (id bigint PRIMARY KEY, n integer, small smallint, day date,
                         at timestamp, at_tz timestamptz, label text, amount numeric);
SELECT ecp.create_task('since_int', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": "n", "since_overlap": 5}') > 0 AS created;
SELECT ecp.create_task('since_ts', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": "at"}') > 0 AS created;
SELECT ecp.create_task('since_kinds', 'p65535', 'since',
       queries => ARRAY['SELECT id, small AS v FROM since_rows', 'SELECT id, day AS v FROM since_rows',
                        'SELECT id, at_tz AS v FROM since_rows', 'SELECT id, id AS v FROM since_rows'],
       options => '{"since_column": "v", "since_overlap": 0}') > 0 AS created;
SELECT name, options->'since_column' AS since_column, options->'since_overlap' AS since_overlap, watermark
  FROM ecp.tasks WHERE name LIKE 'since\_%' ORDER BY name;
-- refused, each with its SQLSTATE
\set VERBOSITY verbose
SELECT ecp.create_task('since_bad', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": "changed"}');
SELECT ecp.create_task('since_bad', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": "label"}');
SELECT ecp.create_task('since_bad', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": "amount"}');
SELECT ecp.create_task('since_bad', 'p65535', 'since',
       queries => ARRAY['SELECT id, at FROM since_rows', 'SELECT id, label AS at FROM since_rows'],
       options => '{"since_column": "at"}');
SELECT ecp.create_task('since_bad', 'p65535', 'since',
       queries => ARRAY['SELECT id, at FROM since_rows', 'SELECT id FROM since_rows'],
       options => '{"since_column": "at"}');
SELECT ecp.create_task('since_bad', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": 7}');
SELECT ecp.create_task('since_bad', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": "at", "since_overlap": -1}');
SELECT ecp.create_task('since_bad', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": "at", "since_overlap": 2147483648}');
SELECT ecp.create_task('since_bad', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": "at", "since_overlap": "60"}');
SELECT ecp.create_task('since_bad', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_overlap": 60}');
SELECT ecp.create_task('since_bad', 'p65535', 'since', file => 'http://127.0.0.1:65535/docs.ndjson',
       options => '{"since_column": "at"}');
SELECT ecp.create_task('since_bad', 'p65535', 'since', query => 'SELECT * FROM since_rows',
       options => '{"since_column": "at", "mode": "alias_swap"}');
-- an UPDATE is checked the same way
UPDATE ecp.task SET options = options || '{"since_column": "label"}' WHERE name = 'since_ts';
UPDATE ecp.task SET options = options || '{"mode": "alias_swap"}' WHERE name = 'since_ts';
\set VERBOSITY default
-- the largest overlap is taken
UPDATE ecp.task SET options = options || '{"since_overlap": 2147483647}' WHERE name = 'since_ts';
SELECT options->'since_overlap' FROM ecp.tasks WHERE name = 'since_ts';

-- The watermark.  The launcher works in another database, so ecp's
-- workers are played here by hand (as a superuser): parts record the
-- largest value they acknowledged, then the run ends.
CREATE FUNCTION pg_temp.finish(run bigint, state text, maxima text[], type regtype)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ecp.part (run_id, part_no, owner, source)
    SELECT run, i, r.owner, '{"kind": "range", "query": 0}'
      FROM ecp.run r, generate_series(1, cardinality(maxima) - 1) i WHERE r.id = finish.run;
    UPDATE ecp.part p SET since_max = maxima[p.part_no + 1], since_type = type, state = 'done'
     WHERE p.run_id = finish.run;
    UPDATE ecp.run SET state = finish.state WHERE id = finish.run;
END $$;
SET client_min_messages = error;   -- the launcher works in another database
SELECT ecp.start('since_int') AS run \gset
SET client_min_messages = notice;
-- compared as integers: 10 > 9 (as text, '9' would win); NULL: a part that read nothing
SELECT pg_temp.finish(:run, 'succeeded', ARRAY['9', '10', NULL], 'integer');
SELECT watermark FROM ecp.tasks WHERE name = 'since_int';
SELECT action, content - 'duration' AS content FROM ecp.flow
 WHERE run_id = :run AND action IN ('finished', 'watermark') ORDER BY at;
SELECT query_no, value, value_type, run_id = :run AS set_by_the_run FROM ecp.watermark
 WHERE task_id = (SELECT id FROM ecp.tasks WHERE name = 'since_int');
-- a run that saw less, or nothing, keeps it
SET client_min_messages = error;
SELECT ecp.start('since_int') AS run \gset
SET client_min_messages = notice;
SELECT pg_temp.finish(:run, 'succeeded', ARRAY['8'], 'integer');
SELECT watermark, (SELECT content FROM ecp.flow WHERE run_id = :run AND action = 'watermark') AS flow
  FROM ecp.tasks WHERE name = 'since_int';
SET client_min_messages = error;
SELECT ecp.start('since_int') AS run \gset
SET client_min_messages = notice;
SELECT pg_temp.finish(:run, 'succeeded', ARRAY[NULL], 'integer');
SELECT watermark FROM ecp.tasks WHERE name = 'since_int';
-- a failed run does not move it, and writes no watermark row
SET client_min_messages = error;
SELECT ecp.start('since_int') AS run \gset
SET client_min_messages = notice;
SELECT pg_temp.finish(:run, 'failed', ARRAY['100'], 'integer');
SELECT watermark, (SELECT count(*) FROM ecp.flow WHERE run_id = :run AND action = 'watermark') AS rows
  FROM ecp.tasks WHERE name = 'since_int';
-- neither does an id run
SET client_min_messages = error;
SELECT ecp.start('since_int', ids => ARRAY['1']) AS run \gset
SET client_min_messages = notice;
SELECT pg_temp.finish(:run, 'succeeded', ARRAY['100'], 'integer');
SELECT watermark, (SELECT count(*) FROM ecp.flow WHERE run_id = :run AND action = 'watermark') AS rows
  FROM ecp.tasks WHERE name = 'since_int';
-- timestamps compare as timestamps, whatever DateStyle says
SET client_min_messages = error;
SELECT ecp.start('since_ts') AS run \gset
SET client_min_messages = notice;
SET DateStyle = 'SQL, DMY';
-- (as text, '2026-...' would win over '10000-...')
SELECT pg_temp.finish(:run, 'succeeded', ARRAY['2026-01-10 00:00:00.5', '10000-01-01 00:00:00', '0900-01-01 00:00:00'],
                      'timestamp');
RESET DateStyle;
SELECT watermark FROM ecp.tasks WHERE name = 'since_ts';

-- a task of queries: one watermark per query (each of its own type);
-- ecp.tasks shows the smallest, once every query has one (of one type)
SELECT ecp.create_task('since_shards', 'p65535', 'since',
       queries => ARRAY['SELECT * FROM since_rows WHERE id % 2 = 0', 'SELECT * FROM since_rows WHERE id % 2 = 1'],
       options => '{"since_column": "at_tz"}') > 0 AS created;
CREATE FUNCTION pg_temp.finish_shards(task text, maxima text[], types regtype[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    started bigint;
BEGIN
    SET LOCAL client_min_messages = error;   -- the launcher works in another database
    started := ecp.start(task);
    SET LOCAL client_min_messages = notice;
    UPDATE ecp.part p SET since_max = maxima[p.part_no + 1], since_type = types[p.part_no + 1], state = 'done'
     WHERE p.run_id = started;
    UPDATE ecp.run SET state = 'succeeded' WHERE id = started;
END $$;
SELECT pg_temp.finish_shards('since_kinds', ARRAY['7', '2026-03-01', NULL, '12'],
                             ARRAY['smallint', 'date', NULL, 'bigint']::regtype[]);
SELECT query_no, value, value_type FROM ecp.watermark
 WHERE task_id = (SELECT id FROM ecp.tasks WHERE name = 'since_kinds') ORDER BY query_no;
SELECT pg_temp.finish_shards('since_shards', ARRAY['2026-02-01 00:00:00+00', NULL],
                             ARRAY['timestamptz', NULL]::regtype[]);
SELECT name, watermark FROM ecp.tasks WHERE name IN ('since_kinds', 'since_shards') ORDER BY name;
SELECT pg_temp.finish_shards('since_shards', ARRAY[NULL, '2026-01-15 12:00:00+00'],
                             ARRAY[NULL, 'timestamptz']::regtype[]);
SELECT name, watermark FROM ecp.tasks WHERE name = 'since_shards';
SELECT content FROM ecp.flow
 WHERE action = 'watermark' AND task_id = (SELECT id FROM ecp.tasks WHERE name = 'since_shards') ORDER BY at;

-- ecp.reset_watermark: a NOTICE says what was reset, the flow too
SELECT ecp.reset_watermark('since_int');
SELECT watermark FROM ecp.tasks WHERE name = 'since_int';
SELECT content FROM ecp.flow WHERE action = 'watermark' AND content ? 'reset' ORDER BY at DESC LIMIT 1;
SELECT ecp.reset_watermark('since_int');
SELECT ecp.reset_watermark('since_shards');
SELECT ecp.reset_watermark('nope');
-- another since_column (or query) forgets the watermark
SELECT watermark FROM ecp.tasks WHERE name = 'since_ts';
UPDATE ecp.task SET options = options || '{"since_column": "at_tz"}' WHERE name = 'since_ts';
SELECT watermark FROM ecp.tasks WHERE name = 'since_ts';

-- a role sees only its own watermarks, resets only its own, and writes none
SELECT ecp_internal._advance_watermark(id, 0, 'integer', '5', NULL) FROM ecp.tasks WHERE name = 'since_int';
SELECT id AS since_int_id FROM ecp.tasks WHERE name = 'since_int' \gset
CREATE FUNCTION pg_temp.sqlstate_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
CREATE ROLE ecp_regress_since;
SET SESSION AUTHORIZATION ecp_regress_since;
SELECT count(*) AS watermarks_seen FROM ecp.watermark;
SELECT ecp.reset_watermark('since_int');
SELECT pg_temp.sqlstate_of('SELECT ecp_internal._reset_watermark(' || :since_int_id || ')') AS reset_another_roles;
SELECT pg_temp.sqlstate_of('SELECT ecp_internal._advance_watermark(' || :since_int_id || ', 0, ''integer'', ''9'', NULL)') AS advance;
SELECT pg_temp.sqlstate_of('INSERT INTO ecp.watermark (task_id, query_no, value, value_type, owner) VALUES ('
                           || :since_int_id || ', 1, ''9'', ''integer'', ''ecp_regress_since'')') AS insert;
SELECT pg_temp.sqlstate_of('UPDATE ecp.watermark SET value = ''9''') AS update;
RESET SESSION AUTHORIZATION;
SELECT watermark FROM ecp.tasks WHERE name = 'since_int';
DROP ROLE ecp_regress_since;

-- ecp.follow in mode poll (issue 22) ------------------------------------------------
-- for a task with since_column over a foreign table or of queries; each
-- refusal says why, with its SQLSTATE
CREATE TABLE poll_rows (id bigint PRIMARY KEY, note text, updated_at timestamptz NOT NULL);
SELECT ecp.create_task('poll_plain', 'p65535', 'poll', query => 'SELECT * FROM poll_rows') > 0 AS created;
SELECT ecp.create_task('poll_since', 'p65535', 'poll', query => 'SELECT * FROM poll_rows',
       options => '{"since_column": "updated_at"}') > 0 AS created;
\set VERBOSITY verbose
-- mode poll needs since_column
SELECT ecp.follow('poll_plain', mode => 'poll');
-- poll_interval: from 1 second to 1 day
SELECT ecp.follow('poll_since', mode => 'poll', poll_interval => '0.5 seconds');
SELECT ecp.follow('poll_since', mode => 'poll', poll_interval => '25 hours');
SELECT ecp.follow('poll_since', mode => 'poll', poll_interval => '-1 minute');
-- poll_interval goes with mode poll only; modes are decoding, trigger, poll
SELECT ecp.follow('poll_plain', mode => 'trigger', poll_interval => '1 minute');
SELECT ecp.follow('poll_since', mode => 'polling');
-- a task of queries is followed only by polling
SELECT ecp.follow('since_shards', mode => 'trigger');
-- the internal function checks again, as ecp
SELECT ecp_internal._follow_create(id, 'poll', true, '[]', '2 days') FROM ecp.task WHERE name = 'poll_since';
SELECT ecp_internal._follow_create(id, 'poll', true, '[]') FROM ecp.task WHERE name = 'poll_plain';
\set VERBOSITY terse
SELECT count(*) AS followers FROM ecp.follower;
-- accepted: a task of queries with since_column polls by default; its
-- first poll run is started at once, for the caller (the launcher works
-- in another database: the run waits), and the backfill forgets the
-- watermark so that it reads everything
SET client_min_messages = error;
SELECT ecp.follow('since_shards', poll_interval => '90 seconds') AS poll_run \gset
SET client_min_messages = notice;
SELECT mode, backfill, poll_interval, polled_at, run_id = :poll_run AS first_run FROM ecp.follower;
SELECT task, mode, state, run = :poll_run AS first_run, lag_bytes, lag_seconds, changes_applied, queue_length,
       tables, slot_name, next_poll_at FROM ecp.followers;
SELECT state, action, operator = session_user AS by_caller, only_ids FROM ecp.run WHERE id = :poll_run;
SELECT name, watermark FROM ecp.tasks WHERE name = 'since_shards';
SELECT content - 'since_column' AS follow_flow FROM ecp.flow WHERE run_id = :poll_run AND action = 'follow';
SELECT ecp.follow('since_shards') = :poll_run AS same_run;
-- unfollow cancels the poll run in progress
SELECT ecp.unfollow('since_shards');
SELECT state FROM ecp.run WHERE id = :poll_run;
SELECT count(*) AS followers FROM ecp.follower;

-- ids on sharded tasks (issue 23) -----------------------------------------------------
-- an id run of a task of queries looks its ids up in every query; task
-- option shard_of is an expression over id that names the query (1 for
-- queries[1]) holding it, checked when the task is written
\set VERBOSITY default
CREATE TABLE shard_a (id bigint PRIMARY KEY, v text);
CREATE TABLE shard_b (id bigint PRIMARY KEY, v text);
CREATE TABLE shard_codes (code text PRIMARY KEY, v text);
CREATE FUNCTION pg_temp.refusal(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    message text;
BEGIN
    SET LOCAL client_min_messages = warning;
    EXECUTE sql;
    RETURN 'taken';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
    RETURN SQLSTATE || ': ' || message;
END $$;
CREATE FUNCTION pg_temp.shard_task(shard_of jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.refusal(format(
        'SELECT ecp.create_task(''shard_bad'', ''p65535'', ''sharded'', '
        'queries => ARRAY[''SELECT * FROM shard_a'', ''SELECT * FROM shard_b''], options => %L)',
        jsonb_build_object('shard_of', shard_of)))
$$;
SELECT ecp.create_task('shard_ids', 'p65535', 'sharded',
       queries => ARRAY['SELECT * FROM shard_a', 'SELECT * FROM shard_b'],
       options => '{"shard_of": "(id % 2) + 1"}') > 0 AS created;
SELECT ecp.create_task('shard_all', 'p65535', 'sharded',
       queries => ARRAY['SELECT * FROM shard_a', 'SELECT * FROM shard_b']) > 0 AS created;
-- id is text when the id column is not an integer or a uuid
SELECT ecp.create_task('shard_text', 'p65535', 'sharded',
       queries => ARRAY['SELECT * FROM shard_codes', 'SELECT * FROM shard_codes'],
       options => '{"id_column": "code", "shard_of": "pg_catalog.length(id) % 2 + 1"}') > 0 AS created;
-- refused, each with its SQLSTATE
SELECT e AS shard_of, pg_temp.shard_task(e) AS refused
  FROM unnest(ARRAY['"(id % 2"', '"1), (2"', '"1) FROM pg_class WHERE (true"', '"1) --"',
                    '"1; DROP TABLE shard_a"', '"(SELECT 1)"', '"id IN (SELECT id FROM shard_b)::int"',
                    '"order_id % 16"', '"(random() * 2)::int + 1"', '"count(id)"',
                    '"generate_series(1, 2)"', '"id::text"', '"no_such_function(id)"', '" "',
                    '7']::jsonb[]) e;
SELECT pg_temp.refusal($$SELECT ecp.create_task('shard_bad', 'p65535', 'sharded',
       queries => ARRAY['SELECT * FROM shard_codes'], options => '{"id_column": "code", "shard_of": "id % 2"}')$$) AS text_id;
-- with a task of one query: the query holds every id
SELECT pg_temp.refusal($$SELECT ecp.create_task('shard_bad', 'p65535', 'sharded',
       query => 'SELECT * FROM shard_a', options => '{"shard_of": "1"}')$$) AS one_query;
-- the message and hint, once in full
SELECT ecp.create_task('shard_bad', 'p65535', 'sharded',
       queries => ARRAY['SELECT * FROM shard_a', 'SELECT * FROM shard_b'],
       options => '{"shard_of": "(random() * 2)::int"}');
-- an UPDATE is checked the same way; one that leaves shard_of alone is not
UPDATE ecp.task SET options = options || '{"shard_of": "id"}' WHERE name = 'shard_ids';
UPDATE ecp.task SET options = options || '{"shard_of": "order_id"}' WHERE name = 'shard_ids';
UPDATE ecp.task SET options = options || '{"batch_size": 100}' WHERE name = 'shard_ids';
SELECT name, options->>'shard_of' AS shard_of FROM ecp.tasks WHERE name LIKE 'shard\_%' ORDER BY name;

-- id runs and retry_failed of a task of queries are no longer refused
SET client_min_messages = error;   -- the launcher works in another database
SELECT ecp.start('shard_ids', ids => ARRAY['1', '2', '3']) AS shard_run \gset
RESET client_min_messages;
SELECT part, source, state FROM ecp.parts WHERE run_id = :shard_run;
SELECT ecp.cancel(:shard_run);
INSERT INTO ecp.failed_doc (run_id, doc_id, status, error_type, reason, owner)
VALUES (:shard_run, '2', 400, 'mapper_parsing_exception', 'bad', current_user::regrole),
       (:shard_run, '7', 400, 'mapper_parsing_exception', 'bad', current_user::regrole);
SET client_min_messages = error;
SELECT ecp.retry_failed(:shard_run) AS retry_run \gset
RESET client_min_messages;
SELECT only_ids, retry_of = :shard_run AS retries_it FROM ecp.run WHERE id = :retry_run;
SELECT ecp.cancel(:retry_run);
