-- ecp 0.7 -> 0.8: verify and repair (issue 23).
--
-- * ecp.verify(task, options): compare the source with the index, page by
--   page (_mget); differences in ecp.drift, ecp.drift_summary; option
--   extra walks the index's ids (point in time) for rows that are gone.
-- * ecp.repair(verify_run): an id run that re-sends and deletes them.
-- * A count check after every full run (flow "count checked"),
--   ecp.index_stats(task); ecp.progress.action.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.8'" to load this file. \quit

-- (the complete script calls it first: CREATE EXTENSION ecp in ecp.database_name only)
CREATE FUNCTION ecp._check_install_database() RETURNS void
AS 'MODULE_PATHNAME', 'ecp_check_install_database' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION ecp._check_install_database() FROM PUBLIC;

ALTER TABLE ecp.run DROP CONSTRAINT run_action_check;
ALTER TABLE ecp.run ADD CONSTRAINT run_action_check CHECK (action IN ('rollback', 'drop_index', 'follow', 'verify'));
ALTER TABLE ecp.run ADD COLUMN verify_with jsonb;
ALTER TABLE ecp.run ADD COLUMN repair_of bigint REFERENCES ecp.run(id) ON DELETE SET NULL;
COMMENT ON COLUMN ecp.run.verify_with IS 'a verify run''s options (ecp.verify): extra, sample';
COMMENT ON COLUMN ecp.run.repair_of IS 'the verify run whose drift this id run repairs (ecp.repair)';

ALTER TABLE ecp.part ADD COLUMN bytes_sent bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN ecp.part.bytes_sent IS 'request body bytes the part sent for its acknowledged pages (retries included; before gzip), added at each checkpoint';

ALTER TABLE ecp.flow_log DROP CONSTRAINT flow_log_action_check;
ALTER TABLE ecp.flow_log ADD CONSTRAINT flow_log_action_check
    CHECK (action IN ('create_consumer', 'create_task', 'start', 'pause', 'resume',
                          'running', 'cancel', 'finished', 'failed', 'set_rate', 'alert',
                          'drop_owned', 'cron skipped',
                          'worker started', 'recovered', 'dual write', 'dual write ended',
                          'retry', 'split', 'file resumed', 'cluster', 'nodes used',
                          'node down', 'refreshed', 'index exists', 'index created',
                          'settings restored', 'count checked', 'alias swapped',
                          'index dropped', 'rollback',
                          'follow', 'unfollow', 'capture ready', 'truncate seen', 'watermark',
                          'duplicate ids', 'walk restarted',
                          'alter_task', 'rename_task', 'drop_task',
                          'alter_consumer', 'rename_consumer', 'drop_consumer')) NOT VALID;
DO $$
BEGIN
    ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check;
EXCEPTION WHEN check_violation THEN
    RAISE WARNING 'ecp.flow_log holds rows with an action ecp never wrote (rows written by roles up to ecp 0.1): its CHECK flow_log_action_check checks new rows only'
          USING HINT = 'SELECT * FROM ecp.flow_log WHERE NOT (action = ANY (ecp._flow_actions())) shows them; '
                       'update or delete them, then ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check.';
END $$;

CREATE OR REPLACE FUNCTION ecp._prepare_run() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    busy bigint;
BEGIN
    -- the task row's lock keeps two starts of one task apart
    SELECT * INTO t FROM ecp.task WHERE id = NEW.task_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % does not exist', coalesce(NEW.task_id::text, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT id, name FROM ecp.tasks lists the tasks you can see.';
    END IF;
    -- a disabled task reads its source no more (a rollback or drop_index may go on)
    IF NEW.action IS NULL OR NEW.action IN ('verify', 'follow') THEN
        PERFORM ecp._refuse_disabled(t);
    END IF;
    -- a follower's run goes on beside the task's other runs
    SELECT id INTO busy FROM ecp.run
     WHERE task_id = t.id AND state IN ('pending', 'running', 'paused')
       AND action IS DISTINCT FROM 'follow' LIMIT 1;
    IF FOUND AND NEW.action IS DISTINCT FROM 'follow' THEN
        RAISE EXCEPTION 'task "%" already has run % in progress', t.name, busy
              USING ERRCODE = 'object_in_use',
                    HINT = 'Wait for it, or ecp.cancel(' || busy || ') first.';
    END IF;
    IF NEW.retry_of IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM ecp.run WHERE id = NEW.retry_of AND task_id = t.id) THEN
        RAISE EXCEPTION 'run % is not a run of task "%"', NEW.retry_of, t.name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- only ecp._start_maintenance (SECURITY DEFINER) inserts a maintenance
    -- run, with the superuser-only ecp.starting_maintenance on around it;
    -- roles have no INSERT on action either
    IF NEW.action IS NOT NULL AND current_setting('ecp.starting_maintenance', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'maintenance runs are started by ecp.rollback and ecp.cancel(run, drop_index => true)'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.only_ids := CASE WHEN NEW.action IS NULL OR NEW.action = 'verify'
                         THEN coalesce(NEW.only_ids, t.ids) END;
    IF NEW.repair_of IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM ecp.run WHERE id = NEW.repair_of AND task_id = t.id AND action = 'verify') THEN
        RAISE EXCEPTION 'run % is not a verify run of task "%"', NEW.repair_of, t.name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- a task of queries looks ids up in each query (or in the one shard_of names)
    IF NEW.only_ids IS NOT NULL AND t.query IS NULL AND t.queries IS NULL
       AND NOT ecp._task_writes_ids(t) THEN
        RAISE EXCEPTION 'task "%" has no query to look ids up with', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Id runs need a task with query => ''SELECT ...'' or queries => ARRAY[...].';
    END IF;
    PERFORM ecp._check_ids(NEW.only_ids, 'ids');
    NEW.owner := t.owner;
    NEW.state := 'pending';
    NEW.operator := ecp._operator();
    NEW.changed_by := NEW.operator;
    NEW.total := CASE WHEN NEW.action = 'follow' THEN NULL
                      WHEN NEW.action IS NULL OR NEW.action = 'verify' THEN cardinality(NEW.only_ids) ELSE 0 END;
    NEW.total_is_estimate := CASE WHEN NEW.action = 'follow' THEN NULL
                                  WHEN NEW.only_ids IS NOT NULL OR NEW.action <> 'verify' THEN false END;
    NEW.created_at := now();
    NEW.started_at := NULL;
    NEW.finished_at := NULL;
    NEW.last_error := NULL;
    NEW.paused_reason := NULL;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ecp._create_parts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    migrating boolean;
    settings record;
    f ecp.follower;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE id = NEW.task_id;
    IF NEW.action = 'follow' THEN
        SELECT * INTO f FROM ecp.follower WHERE task_id = t.id;
        IF f.mode = 'decoding' THEN
            INSERT INTO ecp.part (run_id, part_no, owner, source, stage, total)
            VALUES (NEW.id, -1, NEW.owner, '{"kind": "follow", "step": "capture"}', 0, 0);
        END IF;
        INSERT INTO ecp.part (run_id, part_no, owner, source, stage)
        VALUES (NEW.id, -2, NEW.owner, '{"kind": "follow", "step": "apply"}', 2);
        IF NOT f.backfill THEN
            PERFORM ecp._wake_launcher_at_commit();
            RETURN NEW;
        END IF;
    ELSIF NEW.action IS NOT NULL AND NEW.action <> 'verify' THEN
        INSERT INTO ecp.part (run_id, part_no, owner, source, stage, total)
        VALUES (NEW.id, -1, NEW.owner, jsonb_build_object('kind', 'migrate', 'step', NEW.action), 0, 0);
        PERFORM ecp._wake_launcher_at_commit();
        RETURN NEW;
    END IF;
    migrating := t.options->>'mode' = 'alias_swap' AND NEW.only_ids IS NULL AND NEW.action IS NULL;
    IF NEW.only_ids IS NOT NULL THEN
        INSERT INTO ecp.part (run_id, part_no, owner, source)
        VALUES (NEW.id, 0, NEW.owner, '{"kind": "ids"}');
    ELSIF t.file IS NOT NULL THEN
        INSERT INTO ecp.part (run_id, part_no, owner, source, position, line_no)
        VALUES (NEW.id, 0, NEW.owner, '{"kind": "file"}', 0, 0);
    ELSIF t.queries IS NOT NULL THEN
        INSERT INTO ecp.part (run_id, part_no, owner, source)
        SELECT NEW.id, i - 1, NEW.owner, jsonb_build_object('kind', 'query', 'query', i)
          FROM generate_series(1, cardinality(t.queries)) i;
    ELSIF coalesce((t.options->>'parallelism')::integer, 1) > 1 THEN
        INSERT INTO ecp.part (run_id, part_no, owner, source)
        VALUES (NEW.id, 0, NEW.owner, '{"kind": "split"}');
    ELSE
        INSERT INTO ecp.part (run_id, part_no, owner, source)
        VALUES (NEW.id, 0, NEW.owner, '{"kind": "query", "query": 0}');
    END IF;
    -- a verify run with option extra also walks the index's ids
    IF NEW.action = 'verify' AND coalesce((NEW.verify_with->>'extra')::boolean, false) THEN
        INSERT INTO ecp.part (run_id, part_no, owner, source)
        VALUES (NEW.id, -1, NEW.owner, '{"kind": "index_ids"}');
    END IF;
    IF migrating THEN
        INSERT INTO ecp.part (run_id, part_no, owner, source, stage, total)
        VALUES (NEW.id, -1, NEW.owner, '{"kind": "migrate", "step": "create"}', 0, 0),
               (NEW.id, -2, NEW.owner, '{"kind": "migrate", "step": "swap"}', 2, 0);
        settings := ecp._migration_settings(t.options->'settings');
        INSERT INTO ecp.migration (run_id, task_id, consumer_id, alias, new_index, load_settings,
                                   final_settings, mappings, keep_old, owner)
        VALUES (NEW.id, t.id, t.consumer_id, t.index_name, t.index_name || '-' || NEW.id,
                settings.load_settings, settings.final_settings, t.options->'mappings',
                coalesce((t.options->>'keep_old')::boolean, true), NEW.owner);
    END IF;
    PERFORM ecp._wake_launcher_at_commit();
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ecp._latest_run(task text) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    task_id bigint;
    run bigint;
BEGIN
    SELECT t.id INTO task_id FROM ecp.task t WHERE t.name = task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists the tasks you can see; a run id works too.';
    END IF;
    SELECT max(r.id) INTO run FROM ecp.run r WHERE r.task_id = task_id
       AND (r.action IS NULL OR r.action = 'verify');
    IF run IS NULL THEN
        RAISE EXCEPTION 'task "%" has no run', task
              USING ERRCODE = 'no_data_found',
                    HINT = 'Start one with SELECT ecp.start(' || quote_literal(task) || ').';
    END IF;
    RETURN run;
END $$;

CREATE OR REPLACE FUNCTION ecp._flow_on_run() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    action text;
    content jsonb := '{}';
    counts record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        action := 'start';
        IF NEW.retry_of IS NOT NULL THEN
            content := jsonb_build_object('retry_failed_of', NEW.retry_of,
                                          'ids', cardinality(NEW.only_ids));
        ELSIF NEW.only_ids IS NOT NULL THEN
            content := jsonb_build_object('ids', cardinality(NEW.only_ids));
        END IF;
        content := content || coalesce(ecp._run_endpoint(NEW.task_id), '{}')
                   || jsonb_strip_nulls(jsonb_build_object('at', NEW.not_before, 'action', NEW.action,
                                                           'verify', NEW.verify_with,
                                                           'repair_of', NEW.repair_of));
    ELSIF NEW.state IS NOT DISTINCT FROM OLD.state
          OR (OLD.state = 'pending' AND NEW.state = 'running') THEN
        -- a worker taking up a pending run records "worker started" itself
        RETURN NEW;
    ELSE
        action := CASE
            WHEN NEW.state = 'paused' THEN 'pause'
            WHEN NEW.state = 'running' AND OLD.state IN ('paused', 'failed') THEN 'resume'
            WHEN NEW.state = 'running' THEN 'running'
            WHEN NEW.state = 'cancelled' THEN 'cancel'
            WHEN NEW.state = 'succeeded' THEN 'finished'
            WHEN NEW.state = 'failed' THEN 'failed'
            ELSE NEW.state END;
        SELECT coalesce(sum(p.processed), 0) AS processed, coalesce(sum(p.failed), 0) AS failed,
               coalesce(sum(p.deleted), 0) AS deleted, coalesce(sum(p.missing), 0) AS missing,
               coalesce(sum(p.skipped), 0) AS skipped, coalesce(sum(p.skipped_stale), 0) AS skipped_stale,
               count(*) AS parts
          INTO counts FROM ecp.part p WHERE p.run_id = NEW.id;
        content := jsonb_build_object('from', OLD.state, 'to', NEW.state,
                                      'processed', counts.processed, 'failed', counts.failed);
        IF counts.deleted > 0 OR counts.missing > 0 THEN
            content := content || jsonb_build_object('deleted', counts.deleted, 'missing', counts.missing);
        END IF;
        IF counts.skipped > 0 OR counts.skipped_stale > 0 THEN
            content := content || jsonb_build_object('skipped', counts.skipped, 'skipped_stale', counts.skipped_stale);
        END IF;
        IF counts.parts > 1 THEN
            content := content || jsonb_build_object('parts', counts.parts);
        END IF;
        IF NEW.state = 'paused' AND NEW.paused_reason IS NOT NULL THEN
            content := content || jsonb_build_object('why', NEW.paused_reason);
        ELSIF OLD.state = 'paused' AND OLD.paused_reason IS NOT NULL THEN
            content := content || jsonb_build_object('why', 'inside its window ' ||
                (SELECT t.options->>'window' FROM ecp.task t WHERE t.id = NEW.task_id));
        END IF;
        IF NEW.action IS NOT NULL THEN
            content := content || jsonb_build_object('action', NEW.action);
        END IF;
        IF NEW.state IN ('succeeded', 'failed', 'cancelled') THEN
            content := content || jsonb_build_object('duration',
                (coalesce(NEW.finished_at, now()) - coalesce(NEW.started_at, NEW.created_at))::text);
        END IF;
        IF NEW.state = 'failed' THEN
            content := content || jsonb_build_object('error', left(NEW.last_error, 2000));
        END IF;
        IF NEW.state = 'succeeded' AND counts.failed > 0 THEN
            content := content || jsonb_build_object('partial', true);
        END IF;
    END IF;
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    VALUES (NEW.task_id, NEW.id, action, content, coalesce(NEW.changed_by, NEW.operator), NEW.owner);
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ecp._part_source_text(source jsonb, t ecp.task, r ecp.run) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE source->>'kind'
        WHEN 'query' THEN CASE WHEN (source->>'query')::integer > 0
                               THEN t.queries[(source->>'query')::integer] ELSE t.query END
        WHEN 'split' THEN 'key ranges of the query (not cut yet)'
        WHEN 'range' THEN format('%s in [%s, %s)', coalesce(t.options->>'key_column', t.options->>'id_column'),
                                 coalesce(source->>'from', '-inf'), coalesce(source->>'to', '+inf'))
        WHEN 'ids' THEN format('%s ids', cardinality(r.only_ids))
        WHEN 'file' THEN split_part(t.file, '?', 1)
        WHEN 'migrate' THEN CASE source->>'step'
            WHEN 'create' THEN 'migration: create the new index'
            WHEN 'swap' THEN 'migration: settings, count, swap the alias'
            WHEN 'rollback' THEN 'rollback: the alias back to its old index'
            WHEN 'drop_index' THEN 'drop a cancelled migration''s new index' END
        WHEN 'follow' THEN CASE source->>'step'
            WHEN 'capture' THEN 'follow: create the publication and the replication slot'
            WHEN 'apply' THEN 'follow: apply the changes captured' END
        WHEN 'index_ids' THEN 'verify: every id of the index, looked up in the source'
    END
$$;

CREATE OR REPLACE VIEW ecp.progress WITH (security_invoker = true) AS
SELECT r.id AS run_id,
       t.name AS task,
       CASE WHEN r.state = 'running' AND r.action = 'follow'
                 AND EXISTS (SELECT 1 FROM ecp.part fp WHERE fp.run_id = r.id AND fp.part_no = -2
                                AND fp.state = 'running')
            THEN 'following' ELSE r.state END AS state,
       p.processed,
       p.failed,
       coalesce(p.total, r.total) AS total,
       CASE WHEN r.state = 'succeeded' THEN 100.0
            WHEN coalesce(p.total, r.total) > 0
            THEN round(least(100.0, 100.0 * (p.processed + p.failed + p.deleted + p.missing
                                             + p.skipped + p.skipped_stale)
                                    / coalesce(p.total, r.total)), 1)
       END AS percent,
       -- running: the rate of the last seconds; finished: the run's average
       CASE WHEN r.state = 'running' THEN round(p.docs_per_second::numeric, 1)
            WHEN r.finished_at > r.started_at
            THEN round((p.processed + p.failed)
                       / extract(epoch FROM r.finished_at - r.started_at), 1)
       END AS docs_per_second,
       CASE WHEN r.state = 'running' AND p.docs_per_second > 0 AND coalesce(p.total, r.total) IS NOT NULL
            THEN make_interval(secs => round(greatest(coalesce(p.total, r.total) - p.processed - p.failed
                                                      - p.deleted - p.missing - p.skipped
                                                      - p.skipped_stale, 0) / p.docs_per_second))
       END AS eta,
       r.started_at,
       r.finished_at,
       date_trunc('second', coalesce(r.finished_at, now()) - r.started_at) AS duration,
       p.heartbeat_at,
       r.operator,
       r.last_error,
       p.deleted,
       p.missing,
       p.parts,
       p.parts_done,
       p.skipped,
       p.skipped_stale,
       r.not_before AS starts_at,
       CASE WHEN r.state = 'paused' THEN coalesce(r.paused_reason, 'paused by ' || r.changed_by) END AS paused_why,
       r.recovered_error,
       r.state = 'succeeded' AND p.failed > 0 AS partial,
       w.retry_attempt,
       CASE WHEN w.retry_attempt IS NOT NULL
            THEN coalesce((t.options->>'max_retries')::integer,
                          current_setting('ecp.max_retries')::integer) END AS retry_max,
       w.retry_at,
       w.retry_error,
       w.retry_class,
       coalesce(r.action, CASE WHEN r.repair_of IS NOT NULL THEN 'repair'
                               WHEN r.only_ids IS NOT NULL THEN 'ids' ELSE 'sync' END) AS action,
       p.bytes_sent
  FROM ecp.run r
  JOIN ecp.task t ON t.id = r.task_id
  LEFT JOIN LATERAL (
       SELECT pt.retry_attempt, pt.retry_at, pt.retry_error, pt.retry_class
         FROM ecp.part pt
        WHERE pt.run_id = r.id AND pt.retry_attempt IS NOT NULL AND r.state = 'running'
        ORDER BY pt.retry_attempt DESC LIMIT 1) w ON true
  CROSS JOIN LATERAL (
       SELECT coalesce(sum(pt.processed), 0)::bigint AS processed,
              coalesce(sum(pt.failed), 0)::bigint AS failed,
              coalesce(sum(pt.deleted), 0)::bigint AS deleted,
              coalesce(sum(pt.missing), 0)::bigint AS missing,
              coalesce(sum(pt.skipped), 0)::bigint AS skipped,
              coalesce(sum(pt.skipped_stale), 0)::bigint AS skipped_stale,
              sum(pt.docs_per_second) FILTER (WHERE pt.state = 'running') AS docs_per_second,
              max(pt.heartbeat_at) AS heartbeat_at,
              CASE WHEN count(*) > 1 AND count(pt.total) = count(*) THEN sum(pt.total)::bigint END AS total,
              count(*) AS parts,
              count(*) FILTER (WHERE pt.state = 'done') AS parts_done,
              coalesce(sum(pt.bytes_sent), 0)::bigint AS bytes_sent
         FROM ecp.part pt WHERE pt.run_id = r.id) p;

CREATE OR REPLACE VIEW ecp.parts WITH (security_invoker = true) AS
SELECT p.run_id,
       p.part_no AS part,
       ecp._part_source_text(p.source, t, r) AS source,
       CASE WHEN p.state = 'running' AND p.source->>'kind' = 'follow' AND p.source->>'step' = 'apply'
            THEN 'following' ELSE p.state END AS state,
       p.processed,
       p.failed,
       CASE p.source->>'kind'
            WHEN 'ids' THEN p.position || ' ids done'
            WHEN 'file' THEN format('line %s, byte %s', p.line_no, p.position)
            WHEN 'index_ids' THEN p.position || ' ids walked'
            ELSE p.last_key END AS last_key,
       p.heartbeat_at,
       p.worker_pid,
       p.last_error,
       p.deleted,
       p.missing,
       p.total,
       p.recoveries,
       p.started_at,
       p.finished_at,
       p.skipped,
       p.skipped_stale,
       p.retry_attempt,
       p.retry_at,
       p.retry_error,
       p.retry_class
  FROM ecp.part p
  JOIN ecp.run r ON r.id = p.run_id
  JOIN ecp.task t ON t.id = r.task_id;

-- ===========================================================================
-- Verify and repair (issue 23)
-- ===========================================================================

-- A verify run (ecp.verify) reads the task's source as a full run does and
-- compares each page with what the index holds (_mget); what differs is
-- recorded here, one row per id.  Option extra adds a part (-1, source
-- {"kind": "index_ids"}) that walks every id of the index and records the
-- ids the source no longer returns.  ecp.repair turns the rows into an id
-- run.  A page sent again after a crash finds the same ids again: the key
-- keeps one row per id.
CREATE TABLE ecp.drift (
    run_id   bigint NOT NULL REFERENCES ecp.run(id) ON DELETE CASCADE,
    id       text NOT NULL,
    kind     text NOT NULL CHECK (kind IN ('missing', 'stale', 'extra')),
    detail   text,
    part_no  integer NOT NULL,
    found_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    owner    regrole NOT NULL,
    PRIMARY KEY (run_id, id)
);
COMMENT ON TABLE ecp.drift IS 'documents a verify run found to differ from the source: missing from the index, stale (the index holds another document), extra (the source no longer has the row)';
COMMENT ON COLUMN ecp.drift.detail IS 'stale: the first field that differs, with both values cut short; missing and extra: NULL';
SELECT pg_catalog.pg_extension_config_dump('ecp.drift', '');
ALTER TABLE ecp.drift ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.drift USING (pg_has_role(owner, 'MEMBER'));

-- The options of ecp.verify, checked: extra (boolean), sample (0 < s <= 1).
CREATE FUNCTION ecp._check_verify_options(given jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    key text;
BEGIN
    IF given IS NULL OR jsonb_typeof(given) <> 'object' THEN
        RAISE EXCEPTION 'verify options must be a JSON object, not %', coalesce(given::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'For example ''{"extra": true, "sample": 0.1}''.';
    END IF;
    FOR key IN SELECT jsonb_object_keys(given) LOOP
        IF key NOT IN ('extra', 'sample') THEN
            RAISE EXCEPTION 'unknown verify option "%"', key
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Verify options are extra (true: also find documents whose rows are gone) and sample (check that fraction of the pages).';
        END IF;
    END LOOP;
    IF given ? 'extra' AND jsonb_typeof(given->'extra') <> 'boolean' THEN
        RAISE EXCEPTION 'verify option "extra" must be true or false, not %', given->'extra'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF given ? 'sample' AND (jsonb_typeof(given->'sample') <> 'number'
                               OR (given->>'sample')::numeric <= 0 OR (given->>'sample')::numeric > 1) THEN
        RAISE EXCEPTION 'verify option "sample" must be a number above 0 and at most 1, not %', given->'sample'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'sample 0.1 compares about one page in ten; 1 (the default) compares every page.';
    END IF;
    RETURN given;
END $$;

-- What a verify compares with needs an Elasticsearch that holds exactly
-- what ecp sent: not a write service, not a pipeline's output, not deletes.
CREATE FUNCTION ecp._check_verifiable(t ecp.task) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT c.kind FROM ecp.consumer c WHERE c.id = t.consumer_id) <> 'elasticsearch' THEN
        RAISE EXCEPTION 'task "%" writes to a write service: there is no index to verify', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Verify a task whose consumer is of kind elasticsearch.';
    END IF;
    IF t.options ? 'pipeline' THEN
        RAISE EXCEPTION 'task "%" sends its documents through ingest pipeline "%": the index holds the pipeline''s output, not what ecp sends',
              t.name, t.options->>'pipeline'
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Verify compares documents as ecp sends them; with version_column it compares versions only.';
    END IF;
    IF t.options->>'op' = 'delete' THEN
        RAISE EXCEPTION 'task "%" deletes documents (op delete): there is nothing to compare', t.name
              USING ERRCODE = 'feature_not_supported';
    END IF;
END $$;

-- Start a verify run, as ecp (roles cannot write ecp.run.action): the
-- caller must be a member of the task's owner.
CREATE FUNCTION ecp._start_verify(task_id bigint, options jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    run_id bigint;
    operator text := session_user;
BEGIN
    IF NOT ecp._session_user_acts() THEN
        RAISE EXCEPTION 'verify runs are not started from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE id = task_id;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task % is not yours', task_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM ecp._check_verifiable(t);
    PERFORM set_config('ecp.acting_role', operator, true);
    PERFORM set_config('ecp.starting_maintenance', 'on', true);
    INSERT INTO ecp.run (task_id, action, verify_with)
    VALUES (t.id, 'verify', ecp._check_verify_options(options))
    RETURNING id INTO run_id;
    PERFORM set_config('ecp.starting_maintenance', 'off', true);
    PERFORM set_config('ecp.acting_role', '', true);
    PERFORM ecp._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;

CREATE FUNCTION ecp.verify(task text, options jsonb DEFAULT '{}') RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
BEGIN
    -- the caller's view of the tasks (row-level security: its own)
    SELECT * INTO t FROM ecp.task WHERE name = verify.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists the tasks you can see.';
    END IF;
    PERFORM ecp._refuse_disabled(t);
    PERFORM ecp._check_verify_options(options);
    RETURN ecp._start_verify(t.id, options);
END $$;
COMMENT ON FUNCTION ecp.verify(text, jsonb) IS
  'start a verify run: compare the task''s source with its index, page by page, and record what differs in ecp.drift; options {"extra": true} (also find documents whose rows are gone), {"sample": 0.1}';

-- Start the id run that repairs what a verify run found, as ecp: missing
-- and stale ids are sent again, extra ones are deleted (the run deletes
-- the documents of ids its query does not return, as delete_missing).
CREATE FUNCTION ecp._start_repair(verify_run bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    r ecp.run;
    ids text[];
    run_id bigint;
    operator text := session_user;
BEGIN
    IF NOT ecp._session_user_acts() THEN
        RAISE EXCEPTION 'repair runs are not started from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO r FROM ecp.run WHERE id = verify_run;
    IF NOT FOUND OR NOT pg_has_role(session_user, r.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'run % does not exist', coalesce(verify_run::text, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT run_id FROM ecp.drift_summary lists your verify runs.';
    END IF;
    IF r.action IS DISTINCT FROM 'verify' THEN
        RAISE EXCEPTION 'run % is not a verify run', verify_run
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Start one with ecp.verify(task); ecp.retry_failed(run) re-sends a run''s failed documents.';
    END IF;
    IF r.state NOT IN ('succeeded', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'verify run % is %: repair it once it has ended', verify_run, r.state
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'A cancelled or failed verify can be repaired too: what it found is real.';
    END IF;
    SELECT array_agg(d.id ORDER BY d.id) INTO ids FROM ecp.drift d WHERE d.run_id = verify_run;
    IF ids IS NULL THEN
        RAISE NOTICE 'verify run % found no drift: nothing to repair', verify_run;
        RETURN NULL;
    END IF;
    PERFORM set_config('ecp.acting_role', operator, true);
    INSERT INTO ecp.run (task_id, only_ids, repair_of) VALUES (r.task_id, ids, verify_run)
    RETURNING id INTO run_id;
    PERFORM set_config('ecp.acting_role', '', true);
    PERFORM ecp._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;

CREATE FUNCTION ecp.repair(verify_run bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN ecp._start_repair(verify_run);
END $$;
COMMENT ON FUNCTION ecp.repair(bigint) IS
  'start an id run that repairs what a verify run found: missing and stale documents sent again, extra ones deleted; NULL (and a notice) when it found nothing';

-- A verify run's findings at a glance.
CREATE VIEW ecp.drift_summary WITH (security_invoker = true) AS
SELECT r.id AS run_id,
       t.name AS task,
       r.state,
       coalesce(p.checked, 0) AS checked,
       coalesce(d.missing, 0) AS missing,
       coalesce(d.stale, 0) AS stale,
       coalesce(d.extra, 0) AS extra,
       p.walked AS index_ids_walked,
       coalesce(p.not_sampled, 0) AS not_sampled,
       (r.verify_with->>'sample')::numeric AS sample,
       r.started_at,
       r.finished_at,
       date_trunc('second', coalesce(r.finished_at, now()) - r.started_at) AS duration,
       (SELECT rp.id FROM ecp.run rp WHERE rp.repair_of = r.id ORDER BY rp.id DESC LIMIT 1) AS repair_run
  FROM ecp.run r
  JOIN ecp.task t ON t.id = r.task_id
  LEFT JOIN LATERAL (
       SELECT sum(pt.processed) FILTER (WHERE pt.part_no >= 0)::bigint AS checked,
              sum(pt.processed) FILTER (WHERE pt.part_no = -1)::bigint AS walked,
              sum(pt.skipped) FILTER (WHERE pt.part_no >= 0)::bigint AS not_sampled
         FROM ecp.part pt WHERE pt.run_id = r.id) p ON true
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE dr.kind = 'missing') AS missing,
              count(*) FILTER (WHERE dr.kind = 'stale') AS stale,
              count(*) FILTER (WHERE dr.kind = 'extra') AS extra
         FROM ecp.drift dr WHERE dr.run_id = r.id) d ON true
 WHERE r.action = 'verify';
COMMENT ON VIEW ecp.drift_summary IS 'per verify run: documents checked, missing, stale and extra ones found, how long it took, the repair run';

-- The count check after a full run: the index to count, or NULL when the
-- count would not say whether the run's documents are all there.  A run
-- of the whole source (not ids, not incremental, not a migration, which
-- checks its new index itself) of a task whose index no other task writes
-- (option count_check true says it is the only writer anyway; false
-- turns the check off).
CREATE FUNCTION ecp._count_check_index(run bigint) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.index_name
      FROM ecp.run r
      JOIN ecp.task t ON t.id = r.task_id
      JOIN ecp.consumer c ON c.id = t.consumer_id
     WHERE r.id = run AND r.action IS NULL AND r.only_ids IS NULL AND c.kind = 'elasticsearch'
       AND t.file IS NULL AND NOT t.options ? 'since_column'
       AND coalesce(t.options->>'mode', 'direct') = 'direct'
       AND coalesce(t.options->>'op', 'index') IN ('index', 'create')
       AND NOT t.options ? 'pipeline'
       AND CASE WHEN t.options ? 'count_check' THEN (t.options->>'count_check')::boolean
                ELSE NOT EXISTS (SELECT 1 FROM ecp.task o JOIN ecp.consumer oc ON oc.id = o.consumer_id
                                  WHERE o.id <> t.id AND o.index_name = t.index_name
                                    AND ecp._url_origin(oc.url) = ecp._url_origin(c.url)) END
$$;
REVOKE EXECUTE ON FUNCTION ecp._count_check_index(bigint) FROM PUBLIC;

-- The count check's flow row: the documents the run wrote against the
-- index's _count, and whether they are equal.
CREATE FUNCTION ecp._record_count_check(run bigint, index text, index_count bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    written bigint;
    failed bigint;
    content jsonb;
BEGIN
    SELECT coalesce(sum(p.processed - p.deleted), 0), coalesce(sum(p.failed), 0) INTO written, failed
      FROM ecp.part p WHERE p.run_id = run;
    content := jsonb_build_object('index', index, 'count', index_count, 'indexed', written,
                                  'equal', index_count = written);
    IF index_count > written THEN
        content := content || jsonb_build_object('why',
            format('the index holds %s documents more than the run wrote: documents of rows deleted since they were indexed? ecp.verify(task, ''{"extra": true}'') finds them',
                   index_count - written));
    ELSIF index_count < written THEN
        content := content || jsonb_build_object('why',
            format('the index holds %s documents fewer than the run wrote: ids that repeat in the source, or deletes by another writer? ecp.verify(task) finds the missing ones',
                   written - index_count));
    END IF;
    IF failed > 0 THEN
        content := content || jsonb_build_object('failed', failed);
    END IF;
    PERFORM ecp._flow_event(run, 'count checked', content);
    RETURN index_count = written;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._record_count_check(bigint, text, bigint) FROM PUBLIC;

-- What ecp knows about a task's source and index: the rows of its latest
-- run of the whole source, the index's count from the latest count check,
-- and the latest verify.  Nothing is asked of the cluster or planned here:
-- the numbers are as of the times given.
CREATE FUNCTION ecp.index_stats(task text,
    OUT task_name text, OUT index text, OUT source_rows bigint, OUT source_rows_estimated boolean,
    OUT source_rows_at timestamptz, OUT index_count bigint, OUT counted_at timestamptz,
    OUT count_equal boolean, OUT last_verify bigint, OUT verified_at timestamptz, OUT verify_state text,
    OUT checked bigint, OUT missing bigint, OUT stale bigint, OUT extra bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    r ecp.run;
    f record;
    v record;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE name = index_stats.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists the tasks you can see.';
    END IF;
    task_name := t.name;
    index := t.index_name;
    SELECT * INTO r FROM ecp.run WHERE task_id = t.id AND state = 'succeeded' AND only_ids IS NULL
       AND (action IS NULL OR action = 'verify') ORDER BY finished_at DESC LIMIT 1;
    IF FOUND THEN
        source_rows := (SELECT sum(p.processed + p.failed + p.skipped + p.skipped_stale)
                          FROM ecp.part p WHERE p.run_id = r.id AND p.part_no >= 0);
        source_rows_estimated := coalesce((r.verify_with->>'sample')::numeric < 1, false);
        source_rows_at := r.finished_at;
    END IF;
    SELECT fl.content, fl.at INTO f FROM ecp.flow_log fl JOIN ecp.run fr ON fr.id = fl.run_id
     WHERE fr.task_id = t.id AND fl.action = 'count checked' AND fl.content ? 'equal'
     ORDER BY fl.at DESC LIMIT 1;
    IF FOUND THEN
        index_count := (f.content->>'count')::bigint;
        counted_at := f.at;
        count_equal := (f.content->>'equal')::boolean;
    END IF;
    SELECT * INTO v FROM ecp.drift_summary s WHERE s.task = t.name ORDER BY s.run_id DESC LIMIT 1;
    IF FOUND THEN
        last_verify := v.run_id;
        verified_at := v.finished_at;
        verify_state := v.state;
        checked := v.checked;
        missing := v.missing;
        stale := v.stale;
        extra := v.extra;
    END IF;
    RETURN;
END $$;
COMMENT ON FUNCTION ecp.index_stats(text) IS
  'a task''s source rows (its latest full or verify run), its index''s count (the latest count check) and its latest verify';

GRANT SELECT ON ecp.drift, ecp.drift_summary TO PUBLIC;

-- (verify section end)

-- ===========================================================================
-- Lifecycle of tasks and consumers (issue 24)
-- ===========================================================================
ALTER TABLE ecp.task ADD COLUMN enabled boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN ecp.task.enabled IS
  'false: ecp.start, ecp.verify, ecp.follow and pg_cron firings start no run of the task (ecp.alter_task(task, enabled => ...))';

-- ecp.start takes ids of any text, integer or uuid array
DROP FUNCTION ecp.start(text, text[], timestamptz);

-- ids: an array of text, integers or uuids (ARRAY['a'], ARRAY[1, 2], an
-- untyped '{1,2}', NULL); anycompatiblearray takes each of them without
-- making a call ambiguous, an untyped literal or NULL as text[].
CREATE FUNCTION ecp.start(task text, ids anycompatiblearray DEFAULT NULL::text[],
                          at timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    id_texts text[] := ecp._ids_as_text(ids);
BEGIN
    SELECT * INTO t FROM ecp.task WHERE name = start.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'Create it with ecp.create_task(name, consumer, index, query => ...).';
    END IF;
    PERFORM ecp._refuse_disabled(t);
    IF id_texts IS NOT NULL AND cardinality(id_texts) = 0 THEN
        RAISE EXCEPTION 'ids is empty: nothing to start'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass at least one id, or leave ids out to run the whole task.';
    END IF;
    -- the trigger prepare checks the task (enabled), the ids and decides the rest
    RETURN ecp._create_run(t.id, id_texts, NULL, at, NULL);
END $$;
COMMENT ON FUNCTION ecp.start(text, anycompatiblearray, timestamptz) IS
  'start a run of a task: all of its source, or only the given ids (text, integer or uuid array) looked up through its query; at => a time: the launcher starts it then';

-- a disabled task: no run, no pg_cron start, no follower; names taken
-- by another role's row; drop_consumer's flow row names the caller
CREATE OR REPLACE FUNCTION ecp._note_cron_skip(task_id bigint, busy bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
BEGIN
    -- session_user is who acts only outside security-restricted code: in an
    -- ecp worker it is the superuser the worker connects as
    IF NOT ecp._session_user_acts() THEN
        RAISE EXCEPTION 'ecp._note_cron_skip is called by pg_cron jobs, not from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE id = task_id;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task % is not yours', task_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- what the row says must be true: the task is disabled
    IF busy IS NULL THEN
        IF t.enabled THEN
            RAISE EXCEPTION 'task "%" is enabled', t.name
                  USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
        VALUES (t.id, 'cron skipped',
                jsonb_build_object('task', t.name, 'disabled', true, 'why', 'the task is disabled'),
                session_user, t.owner);
        RETURN;
    END IF;
    -- or has that run in progress
    IF NOT EXISTS (SELECT 1 FROM ecp.run r WHERE r.id = busy AND r.task_id = t.id
                                             AND r.state IN ('pending', 'running', 'paused')) THEN
        RAISE EXCEPTION 'run % of task "%" is not in progress', busy, t.name
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    VALUES (t.id, busy, 'cron skipped',
            jsonb_build_object('task', t.name, 'run_in_progress', busy,
                               'why', 'the task still has run ' || busy || ' in progress'),
            session_user, t.owner);
END $$;

CREATE OR REPLACE FUNCTION ecp._scheduled_start(task text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    busy bigint;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE name = task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', task USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT t.enabled THEN
        PERFORM ecp._note_cron_skip(t.id, NULL);
        RETURN NULL;
    END IF;
    SELECT id INTO busy FROM ecp.run WHERE task_id = t.id AND state IN ('pending', 'running', 'paused')
     ORDER BY id LIMIT 1;
    IF FOUND THEN
        PERFORM ecp._note_cron_skip(t.id, busy);
        RETURN NULL;
    END IF;
    RETURN ecp.start(task);
END $$;

CREATE OR REPLACE FUNCTION ecp.follow(task text, backfill boolean DEFAULT true, mode text DEFAULT NULL,
                           poll_interval interval DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    chosen text := mode;
    tables jsonb;
    run_id bigint;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE name = follow.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists yours.';
    END IF;
    IF EXISTS (SELECT 1 FROM ecp.follower f WHERE f.task_id = t.id) THEN
        RAISE NOTICE 'task "%" is followed already', t.name
              USING HINT = 'SELECT * FROM ecp.followers shows it; ecp.unfollow stops it.';
        RETURN (SELECT f.run_id FROM ecp.follower f WHERE f.task_id = t.id);
    END IF;
    PERFORM ecp._refuse_disabled(t);
    IF t.query IS NULL AND t.queries IS NULL THEN
        RAISE EXCEPTION 'task "%" has no query: only a task of a query or of queries can be followed', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Create a task with query => ''SELECT ...''.';
    END IF;
    IF coalesce(t.options->>'op', 'index') <> 'index' OR t.options->>'mode' = 'alias_swap' THEN
        RAISE EXCEPTION 'task "%": a follower indexes and deletes documents, so it needs op index and mode direct', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'A task of mode alias_swap: follow a task of mode direct on the same alias (it writes to both indices while a migration loads).';
    END IF;
    chosen := ecp._follow_mode(t, mode, poll_interval);
    IF chosen = 'poll' THEN
        RETURN ecp._follow_poll(t, coalesce(backfill, true), poll_interval);
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object('relid', p.relid, 'key_column', p.key_column,
                                                 'ids_query', p.ids_query)), '[]')
      INTO tables FROM ecp._follow_plan(t) p;
    run_id := ecp._follow_create(t.id, chosen, coalesce(backfill, true), tables);
    RAISE NOTICE 'task "%" is followed in mode % (run %)%', t.name, chosen, run_id,
          CASE chosen WHEN 'decoding' THEN ': logical decoding with pgoutput, slot ecp_follow_' || t.id
                      ELSE ': statement triggers on ' || (SELECT string_agg(ft.table_name, ', ' ORDER BY ft.table_name)
                                                          FROM ecp.follow_table ft WHERE ft.task_id = t.id) END
          USING HINT = CASE WHEN chosen = 'trigger' AND current_setting('wal_level') <> 'logical'
                            THEN 'wal_level is ' || current_setting('wal_level') || ': with wal_level logical, ecp follows with logical decoding, at no cost to writes.'
                            ELSE 'SELECT * FROM ecp.followers shows it.' END;
    RETURN run_id;
END $$;

CREATE OR REPLACE FUNCTION ecp.create_task(name text, consumer text, index text,
                                query text DEFAULT NULL, queries text[] DEFAULT NULL,
                                ids text[] DEFAULT NULL, file text DEFAULT NULL,
                                options jsonb DEFAULT '{}')
-- No SET search_path: the task keeps the caller's, to read the query with.
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    consumer_row ecp.consumer;
    task_id bigint;
BEGIN
    IF name IS NULL OR name OPERATOR(pg_catalog.!~) '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'invalid task name "%"', coalesce(name, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use 1 to 63 letters, digits, "_", "." or "-".';
    END IF;
    SELECT * INTO consumer_row FROM ecp.consumer c WHERE c.name OPERATOR(pg_catalog.=) create_task.consumer;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer "%" does not exist', coalesce(consumer, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'Create it with ecp.create_consumer(name, url).';
    END IF;
    IF EXISTS (SELECT 1 FROM ecp.task t WHERE t.name OPERATOR(pg_catalog.=) create_task.name) THEN
        RAISE EXCEPTION 'task "%" already exists', name USING ERRCODE = 'duplicate_object';
    END IF;
    -- the trigger check_row checks the source, the index and the options
    BEGIN
        INSERT INTO ecp.task (name, consumer_id, index_name, query, queries, ids, file, options)
        VALUES (name, consumer_row.id, index, query, queries, ids, file, options)
        RETURNING id INTO task_id;
    EXCEPTION WHEN unique_violation THEN
        PERFORM ecp._name_taken('task', name);
    END;
    RETURN task_id;
END $$;

CREATE OR REPLACE FUNCTION ecp.create_consumer(name text, url text, kind text DEFAULT 'elasticsearch',
                                    options jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ecp.consumer c WHERE c.name = create_consumer.name) THEN
        RAISE EXCEPTION 'consumer "%" already exists', name
              USING ERRCODE = 'duplicate_object';
    END IF;
    -- the trigger check_row checks every field
    BEGIN
        INSERT INTO ecp.consumer (name, kind, url, options) VALUES (name, kind, url, options);
    EXCEPTION WHEN unique_violation THEN
        PERFORM ecp._name_taken('consumer', name);
    END;
END $$;

CREATE OR REPLACE FUNCTION ecp.drop_consumer(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    c ecp.consumer;
    users text;
BEGIN
    IF NOT ecp._session_user_acts() THEN
        RAISE EXCEPTION 'consumers are not dropped from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO c FROM ecp.consumer WHERE consumer.name = drop_consumer.name FOR UPDATE;
    IF NOT FOUND OR NOT pg_has_role(session_user, c.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'consumer "%" does not exist', coalesce(name, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.consumers lists yours.';
    END IF;
    SELECT string_agg(t.name, ', ' ORDER BY t.name) INTO users FROM ecp.task t WHERE t.consumer_id = c.id;
    IF users IS NOT NULL THEN
        RAISE EXCEPTION 'consumer "%" is used by task(s) %', c.name, users
              USING ERRCODE = 'dependent_objects_still_exist',
                    HINT = 'A consumer is dropped when no task uses it: ecp.drop_task them, or ecp.alter_task them to another consumer.';
    END IF;
    -- the flow row (trigger flow_drop) names the caller, not this function's owner
    PERFORM set_config('ecp.acting_role', session_user, true);
    DELETE FROM ecp.consumer WHERE id = c.id;
    PERFORM set_config('ecp.acting_role', '', true);
END $$;

CREATE OR REPLACE VIEW ecp.tasks WITH (security_invoker = true) AS
SELECT t.id, t.name, c.name AS consumer, t.index_name AS index, t.query, t.options,
       t.owner, t.created_at, t.queries, t.ids,
       -- a presigned URL's signature is a credential
       split_part(t.file, '?', 1) AS file,
       -- since_column: the next run reads from it (less since_overlap)
       ecp._task_watermark(t.id, cardinality(t.queries)) AS watermark,
       t.enabled
  FROM ecp.task t JOIN ecp.consumer c ON c.id = t.consumer_id;
COMMENT ON VIEW ecp.tasks IS 'task definitions, the watermark of a task with since_column, and whether it is enabled';

GRANT UPDATE (name) ON ecp.consumer TO PUBLIC;
GRANT UPDATE (query, queries, index_name, consumer_id, name, enabled) ON ecp.task TO PUBLIC;

-- Owners change, rename, disable and drop their own tasks and consumers.
-- alter_task, rename_task, alter_consumer and rename_consumer UPDATE the
-- row as the caller: row-level security picks the rows, check_row checks
-- the new query with the caller's privileges and the options through the
-- contract, check_in_use refuses what a run in progress or a follower
-- depends on.  drop_task deletes as ecp (roles have no DELETE: a
-- table-level DELETE would let any role LOCK the whole table).  The flow
-- rows (before and after, secrets masked) and the pg_cron jobs' names
-- follow from triggers, so a plain UPDATE gets them too.

-- ids of a text, integer or uuid array as text (NULL stays NULL).
CREATE FUNCTION ecp._ids_as_text(ids anycompatiblearray) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    element oid := (SELECT ty.typelem FROM pg_type ty WHERE ty.oid = pg_typeof(ids));
BEGIN
    IF element NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'uuid'::regtype)
       AND (SELECT ty.typcategory FROM pg_type ty WHERE ty.oid = element) <> 'S' THEN
        RAISE EXCEPTION 'ids must be an array of text, integers or uuids, not %', pg_typeof(ids)
              USING ERRCODE = 'datatype_mismatch',
                    HINT = 'Pass the ids as the documents'' _id values are written: ids => ARRAY[...]::text[].';
    END IF;
    RETURN ids::text[];
END $$;

-- A disabled task starts no run that reads its source (ecp.start,
-- ecp.verify, ecp.follow, ecp.retry_failed, ecp.repair: the trigger
-- prepare calls this; pg_cron firings are skipped by _scheduled_start).
CREATE FUNCTION ecp._refuse_disabled(t ecp.task) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT t.enabled THEN
        RAISE EXCEPTION 'task "%" is disabled', t.name
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = format('Enable it first: SELECT ecp.alter_task(%L, enabled => true);', t.name);
    END IF;
END $$;

-- A name that another row holds.  Names are unique across roles (why:
-- doc/lifecycle.md); the error does not say whose the name is.
CREATE FUNCTION ecp._name_taken(kind text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '% name "%" is taken', kind, name
          USING ERRCODE = 'duplicate_object',
                HINT = CASE kind WHEN 'task' THEN 'Task names are unique across all roles (a name identifies a task in the flow, alerts, metrics and pg_cron jobs); choose another.'
                                 ELSE 'Consumer names are unique across all roles, like task names; choose another.' END;
END $$;

-- The task's run that is pending, running or paused (a follower's run
-- among them), NULL when there is none.
CREATE FUNCTION ecp._run_in_progress(task_id bigint) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.id FROM ecp.run r
     WHERE r.task_id = _run_in_progress.task_id AND r.state IN ('pending', 'running', 'paused')
     ORDER BY r.id LIMIT 1
$$;

-- Refuse a change (what: what is refused) that the task's follower or its
-- run in progress depends on.
CREATE FUNCTION ecp._refuse_in_use(t ecp.task, what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    busy bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM ecp.follower f WHERE f.task_id = t.id) THEN
        RAISE EXCEPTION 'task "%" is followed: %', t.name, what
              USING ERRCODE = 'object_in_use',
                    HINT = format('Stop following it first: SELECT ecp.unfollow(%L); follow it again afterwards.', t.name);
    END IF;
    busy := ecp._run_in_progress(t.id);
    IF busy IS NOT NULL THEN
        RAISE EXCEPTION 'task "%" has run % in progress: %', t.name, busy, what
              USING ERRCODE = 'object_in_use',
                    HINT = format('Wait for run %s to end, or SELECT ecp.cancel(%s); first.', busy, busy);
    END IF;
END $$;

-- Options changed by a partial object: its keys replace the current ones,
-- a key given as JSON null is removed.
CREATE FUNCTION ecp._merge_options(base jsonb, changes jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (base || changes)
           - ARRAY(SELECT c.key FROM jsonb_each(changes) c WHERE jsonb_typeof(c.value) = 'null')
$$;

-- The keys two option objects differ in: {"before": {...}, "after": {...}}
-- (null for a key one side lacks), secrets masked.
CREATE FUNCTION ecp._options_change(before_options jsonb, after_options jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
               'before', coalesce(jsonb_object_agg(k, coalesce(ecp._mask_secrets(before_options) -> k, 'null')), '{}'),
               'after', coalesce(jsonb_object_agg(k, coalesce(ecp._mask_secrets(after_options) -> k, 'null')), '{}'))
      FROM jsonb_object_keys(before_options || after_options) k
     WHERE before_options -> k IS DISTINCT FROM after_options -> k
$$;

-- Trigger check_in_use: a task's source, index and consumer stay as they
-- are while a run reads them or a follower watches them; a followed task
-- is not disabled (its follower would go on).  Options may change mid-run
-- (ecp.set_rate, a window: the launcher applies them at once); a rename
-- may too (runs name their task by id).  Before check_row: triggers fire
-- in name order.
CREATE FUNCTION ecp._check_task_in_use() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.query IS DISTINCT FROM OLD.query OR NEW.queries IS DISTINCT FROM OLD.queries
       OR NEW.index_name IS DISTINCT FROM OLD.index_name OR NEW.consumer_id IS DISTINCT FROM OLD.consumer_id
       OR NEW.ids IS DISTINCT FROM OLD.ids OR NEW.file IS DISTINCT FROM OLD.file
       OR NEW.search_path IS DISTINCT FROM OLD.search_path THEN
        PERFORM ecp._refuse_in_use(OLD, 'its source, index and consumer cannot change');
    END IF;
    IF OLD.enabled AND NOT NEW.enabled AND EXISTS (SELECT 1 FROM ecp.follower f WHERE f.task_id = OLD.id) THEN
        RAISE EXCEPTION 'task "%" is followed: it cannot be disabled', OLD.name
              USING ERRCODE = 'object_in_use',
                    HINT = format('Stop following it first: SELECT ecp.unfollow(%L);', OLD.name);
    END IF;
    RETURN NEW;
END $$;

-- Trigger flow_change on task: what changed, before and after (the rate
-- has its own row, set_rate); rename_task when only the name did.
CREATE FUNCTION ecp._flow_on_task_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before jsonb := '{}';
    after jsonb := '{}';
    option_diff jsonb := ecp._options_change(OLD.options - 'rate_limit', NEW.options - 'rate_limit');
    action text;
BEGIN
    IF NEW.name IS DISTINCT FROM OLD.name THEN
        before := before || jsonb_build_object('name', OLD.name);
        after := after || jsonb_build_object('name', NEW.name);
    END IF;
    IF NEW.query IS DISTINCT FROM OLD.query THEN
        before := before || jsonb_build_object('query', OLD.query);
        after := after || jsonb_build_object('query', NEW.query);
    END IF;
    IF NEW.queries IS DISTINCT FROM OLD.queries THEN
        before := before || jsonb_build_object('queries', OLD.queries);
        after := after || jsonb_build_object('queries', NEW.queries);
    END IF;
    IF NEW.index_name IS DISTINCT FROM OLD.index_name THEN
        before := before || jsonb_build_object('index', OLD.index_name);
        after := after || jsonb_build_object('index', NEW.index_name);
    END IF;
    IF NEW.consumer_id IS DISTINCT FROM OLD.consumer_id THEN
        before := before || jsonb_build_object('consumer', (SELECT c.name FROM ecp.consumer c WHERE c.id = OLD.consumer_id));
        after := after || jsonb_build_object('consumer', (SELECT c.name FROM ecp.consumer c WHERE c.id = NEW.consumer_id));
    END IF;
    IF NEW.ids IS DISTINCT FROM OLD.ids THEN
        before := before || jsonb_build_object('ids', cardinality(OLD.ids));
        after := after || jsonb_build_object('ids', cardinality(NEW.ids));
    END IF;
    IF NEW.file IS DISTINCT FROM OLD.file THEN
        -- a presigned URL's signature is a credential
        before := before || jsonb_build_object('file', split_part(OLD.file, '?', 1));
        after := after || jsonb_build_object('file', split_part(NEW.file, '?', 1));
    END IF;
    IF NEW.search_path IS DISTINCT FROM OLD.search_path THEN
        before := before || jsonb_build_object('search_path', OLD.search_path);
        after := after || jsonb_build_object('search_path', NEW.search_path);
    END IF;
    IF option_diff->'before' <> '{}' OR option_diff->'after' <> '{}' THEN
        before := before || jsonb_build_object('options', option_diff->'before');
        after := after || jsonb_build_object('options', option_diff->'after');
    END IF;
    IF NEW.enabled IS DISTINCT FROM OLD.enabled THEN
        before := before || jsonb_build_object('enabled', OLD.enabled);
        after := after || jsonb_build_object('enabled', NEW.enabled);
    END IF;
    IF before = '{}' AND after = '{}' THEN
        RETURN NULL;
    END IF;
    action := CASE WHEN before - 'name' = '{}' AND after - 'name' = '{}' THEN 'rename_task' ELSE 'alter_task' END;
    INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
    VALUES (NEW.id, action, jsonb_build_object('task', NEW.name, 'before', before, 'after', after),
            NEW.changed_by, NEW.owner);
    RETURN NULL;
END $$;

-- Trigger flow_drop on task: its definition, as the flow keeps it (the
-- task's runs go with it; its flow rows stay).
CREATE FUNCTION ecp._flow_on_task_drop() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
    VALUES (OLD.id, 'drop_task',
            jsonb_build_object('task', OLD.name, 'before', jsonb_strip_nulls(jsonb_build_object(
                'index', OLD.index_name,
                'consumer', (SELECT c.name FROM ecp.consumer c WHERE c.id = OLD.consumer_id),
                'query', OLD.query, 'queries', OLD.queries, 'ids', cardinality(OLD.ids),
                'file', split_part(OLD.file, '?', 1), 'options', OLD.options, 'enabled', OLD.enabled))),
            ecp._operator(), OLD.owner);
    RETURN NULL;
END $$;

-- Trigger cron_jobs on task: the pg_cron jobs that ecp.schedule made
-- (ecp:<task>, calling ecp._scheduled_start('<task>')) follow their task:
-- renamed with it, removed with it, whichever role scheduled them (each
-- job runs as its role: only ecp, as a superuser, sees them all).
CREATE FUNCTION ecp._task_cron_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')
       OR (TG_OP = 'UPDATE' AND NEW.name = OLD.name) THEN
        RETURN NULL;
    END IF;
    FOR job IN EXECUTE 'SELECT jobid, schedule, database, username, active FROM cron.job
                         WHERE jobname = $1 AND command = $2'
               USING 'ecp:' || OLD.name, format('SELECT ecp._scheduled_start(%L)', OLD.name)
    LOOP
        IF TG_OP = 'UPDATE' THEN
            EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, $4, $5, $6)'
              USING 'ecp:' || NEW.name, job.schedule, format('SELECT ecp._scheduled_start(%L)', NEW.name),
                    job.database, job.username, job.active;
        END IF;
        EXECUTE 'SELECT cron.unschedule($1)' USING job.jobid;
    END LOOP;
    RETURN NULL;
END $$;

-- Trigger flow_change on consumer: what changed, before and after,
-- secrets masked; rename_consumer when only the name did.
CREATE FUNCTION ecp._flow_on_consumer_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before jsonb := '{}';
    after jsonb := '{}';
    option_diff jsonb := ecp._options_change(OLD.options, NEW.options);
    action text;
BEGIN
    IF NEW.name IS DISTINCT FROM OLD.name THEN
        before := before || jsonb_build_object('name', OLD.name);
        after := after || jsonb_build_object('name', NEW.name);
    END IF;
    IF NEW.kind IS DISTINCT FROM OLD.kind THEN
        before := before || jsonb_build_object('kind', OLD.kind);
        after := after || jsonb_build_object('kind', NEW.kind);
    END IF;
    IF NEW.url IS DISTINCT FROM OLD.url THEN
        -- as create_consumer's row: a URL holds no credentials (_check_url)
        before := before || jsonb_build_object('url', OLD.url);
        after := after || jsonb_build_object('url', NEW.url);
    END IF;
    IF option_diff->'before' <> '{}' OR option_diff->'after' <> '{}' THEN
        before := before || jsonb_build_object('options', option_diff->'before');
        after := after || jsonb_build_object('options', option_diff->'after');
    END IF;
    IF before = '{}' AND after = '{}' THEN
        RETURN NULL;
    END IF;
    action := CASE WHEN before - 'name' = '{}' AND after - 'name' = '{}' THEN 'rename_consumer' ELSE 'alter_consumer' END;
    INSERT INTO ecp.flow_log (action, content, operator, owner)
    VALUES (action, jsonb_build_object('consumer', NEW.name, 'before', before, 'after', after),
            NEW.changed_by, NEW.owner);
    RETURN NULL;
END $$;

-- Trigger flow_drop on consumer (ecp.drop_consumer, ecp.drop_owned).
CREATE FUNCTION ecp._flow_on_consumer_drop() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (action, content, operator, owner)
    VALUES ('drop_consumer',
            jsonb_build_object('consumer', OLD.name, 'before',
                               jsonb_build_object('kind', OLD.kind, 'url', OLD.url,
                                                  'options', ecp._mask_secrets(OLD.options))),
            ecp._operator(), OLD.owner);
    RETURN NULL;
END $$;

CREATE TRIGGER check_in_use BEFORE UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp._check_task_in_use();
CREATE TRIGGER flow_change AFTER UPDATE ON ecp.task
    FOR EACH ROW WHEN ((OLD.name, OLD.query, OLD.queries, OLD.index_name, OLD.consumer_id, OLD.options,
                        OLD.enabled, OLD.ids, OLD.file, OLD.search_path)
                       IS DISTINCT FROM
                       (NEW.name, NEW.query, NEW.queries, NEW.index_name, NEW.consumer_id, NEW.options,
                        NEW.enabled, NEW.ids, NEW.file, NEW.search_path))
    EXECUTE FUNCTION ecp._flow_on_task_change();
CREATE TRIGGER flow_drop AFTER DELETE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp._flow_on_task_drop();
CREATE TRIGGER cron_jobs AFTER DELETE OR UPDATE OF name ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp._task_cron_jobs();
CREATE TRIGGER flow_change AFTER UPDATE ON ecp.consumer
    FOR EACH ROW WHEN ((OLD.name, OLD.kind, OLD.url, OLD.options) IS DISTINCT FROM (NEW.name, NEW.kind, NEW.url, NEW.options))
    EXECUTE FUNCTION ecp._flow_on_consumer_change();
CREATE TRIGGER flow_drop AFTER DELETE ON ecp.consumer
    FOR EACH ROW EXECUTE FUNCTION ecp._flow_on_consumer_drop();

-- Change what is given (NULL: not given) of a task of your own.
CREATE FUNCTION ecp.alter_task(task text, query text DEFAULT NULL, queries text[] DEFAULT NULL,
                               index text DEFAULT NULL, consumer text DEFAULT NULL,
                               options jsonb DEFAULT NULL, enabled boolean DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    new_consumer bigint;
BEGIN
    -- the caller's own tasks (row-level security); locked, as ecp.start locks it
    SELECT * INTO t FROM ecp.task tk WHERE tk.name = alter_task.task FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(alter_task.task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists yours.';
    END IF;
    IF num_nonnulls(alter_task.query, alter_task.queries, alter_task.index, alter_task.consumer,
                    alter_task.options, alter_task.enabled) = 0 THEN
        RAISE NOTICE 'task "%": nothing to change', t.name
              USING HINT = 'Name what changes: query, queries, index, consumer, options or enabled.';
        RETURN;
    END IF;
    IF alter_task.query IS NOT NULL AND alter_task.queries IS NOT NULL THEN
        RAISE EXCEPTION 'task "%": give query or queries, not both', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A task reads one query, or one part per query of queries; either replaces the other.';
    END IF;
    IF jsonb_typeof(alter_task.options) IS DISTINCT FROM 'object' AND alter_task.options IS NOT NULL THEN
        RAISE EXCEPTION 'options must be a JSON object, not %', jsonb_typeof(alter_task.options)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'E.g. options => ''{"batch_size": 500}''; a key given as null is removed: ''{"rate_limit": null}''.';
    END IF;
    -- only enabled changes while a run is in progress (the trigger
    -- check_in_use refuses the source, index and consumer to a plain UPDATE too)
    IF num_nonnulls(alter_task.query, alter_task.queries, alter_task.index, alter_task.consumer,
                    alter_task.options) > 0 THEN
        PERFORM ecp._refuse_in_use(t, 'only enabled can change');
    END IF;
    IF alter_task.consumer IS NOT NULL THEN
        SELECT c.id INTO new_consumer FROM ecp.consumer c WHERE c.name = alter_task.consumer;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'consumer "%" does not exist', alter_task.consumer
                  USING ERRCODE = 'undefined_object',
                        HINT = 'SELECT name FROM ecp.consumers lists yours.';
        END IF;
    END IF;
    -- the triggers check the row as create_task's INSERT is checked, and
    -- write the flow row
    UPDATE ecp.task tk
       SET query = CASE WHEN alter_task.queries IS NOT NULL THEN NULL
                        ELSE coalesce(alter_task.query, t.query) END,
           queries = CASE WHEN alter_task.query IS NOT NULL THEN NULL
                          ELSE coalesce(alter_task.queries, t.queries) END,
           index_name = coalesce(alter_task.index, t.index_name),
           consumer_id = coalesce(new_consumer, t.consumer_id),
           options = CASE WHEN alter_task.options IS NULL THEN t.options
                          ELSE ecp._merge_options(t.options, alter_task.options) END,
           enabled = coalesce(alter_task.enabled, t.enabled)
     WHERE tk.id = t.id;
END $$;
COMMENT ON FUNCTION ecp.alter_task(text, text, text[], text, text, jsonb, boolean) IS
  'change a task of your own: query or queries, index, consumer, options (merged; a key given as null is removed), enabled; checked as create_task checks; refused while a run is in progress, except enabled';

CREATE FUNCTION ecp.rename_task(task text, new_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
BEGIN
    SELECT * INTO t FROM ecp.task tk WHERE tk.name = rename_task.task FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(rename_task.task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists yours.';
    END IF;
    IF new_name IS NULL OR new_name !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'invalid task name "%"', left(coalesce(new_name, 'NULL'), 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use 1 to 63 letters, digits, "_", "." or "-".';
    END IF;
    IF new_name = t.name THEN
        RAISE NOTICE 'task "%" has that name already', t.name;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM ecp.task tk WHERE tk.name = new_name) THEN
        RAISE EXCEPTION 'task "%" already exists', new_name
              USING ERRCODE = 'duplicate_object',
                    HINT = 'SELECT name FROM ecp.tasks lists yours; ecp.drop_task drops one.';
    END IF;
    -- the trigger cron_jobs renames its pg_cron jobs, flow_change writes the flow row
    BEGIN
        UPDATE ecp.task tk SET name = new_name WHERE tk.id = t.id;
    EXCEPTION WHEN unique_violation THEN
        PERFORM ecp._name_taken('task', new_name);
    END;
END $$;
COMMENT ON FUNCTION ecp.rename_task(text, text) IS
  'rename a task of your own (also while it runs); its pg_cron jobs follow; its runs and flow rows keep it by id';

-- A task of your own goes, with its runs (their parts, ids, failed
-- documents, drift, migrations) and watermarks; its flow rows stay.  As
-- ecp: roles have no DELETE on ecp.task (see drop_consumer).
CREATE FUNCTION ecp.drop_task(task text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    runs bigint;
BEGIN
    IF NOT ecp._session_user_acts() THEN
        RAISE EXCEPTION 'tasks are not dropped from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task tk WHERE tk.name = drop_task.task FOR UPDATE;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(drop_task.task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists yours.';
    END IF;
    PERFORM ecp._refuse_in_use(t, 'it cannot be dropped');
    SELECT count(*) INTO runs FROM ecp.run r WHERE r.task_id = t.id;
    -- the flow row (trigger flow_drop) names the caller, not this function's
    -- owner; the trigger cron_jobs removes the task's pg_cron jobs
    PERFORM set_config('ecp.acting_role', session_user, true);
    DELETE FROM ecp.task tk WHERE tk.id = t.id;
    PERFORM set_config('ecp.acting_role', '', true);
    RAISE NOTICE 'task "%" dropped, with % run(s)', t.name, runs
          USING HINT = format('Its flow stays: SELECT * FROM ecp.flow WHERE task_id = %s;', t.id);
END $$;
COMMENT ON FUNCTION ecp.drop_task(text) IS
  'drop a task of your own with its runs, parts, ids, drift, watermarks and pg_cron jobs (refused while a run is in progress); its flow rows stay';

-- Change what is given of a consumer of your own: url, options (merged).
CREATE FUNCTION ecp.alter_consumer(consumer text, url text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c ecp.consumer;
    busy record;
BEGIN
    SELECT * INTO c FROM ecp.consumer cs WHERE cs.name = alter_consumer.consumer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer "%" does not exist', coalesce(alter_consumer.consumer, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.consumers lists yours.';
    END IF;
    IF num_nonnulls(alter_consumer.url, alter_consumer.options) = 0 THEN
        RAISE NOTICE 'consumer "%": nothing to change', c.name
              USING HINT = 'Name what changes: url or options.';
        RETURN;
    END IF;
    IF jsonb_typeof(alter_consumer.options) IS DISTINCT FROM 'object' AND alter_consumer.options IS NOT NULL THEN
        RAISE EXCEPTION 'options must be a JSON object, not %', jsonb_typeof(alter_consumer.options)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'E.g. options => ''{"password": "..."}''; a key given as null is removed: ''{"username": null, "password": null}''.';
    END IF;
    SELECT t.name AS task, r.id AS run INTO busy
      FROM ecp.run r JOIN ecp.task t ON t.id = r.task_id
     WHERE t.consumer_id = c.id AND r.state IN ('pending', 'running', 'paused')
     ORDER BY r.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'consumer "%" is in use: task "%" has run % in progress', c.name, busy.task, busy.run
              USING ERRCODE = 'object_in_use',
                    HINT = format('Wait for run %s to end, or SELECT ecp.cancel(%s); first (a followed task: ecp.unfollow).',
                                  busy.run, busy.run);
    END IF;
    -- the trigger check_row checks the row as create_consumer's INSERT (the
    -- outbound policy included); flow_change writes the flow row
    UPDATE ecp.consumer cs
       SET url = coalesce(alter_consumer.url, c.url),
           options = CASE WHEN alter_consumer.options IS NULL THEN c.options
                          ELSE ecp._merge_options(c.options, alter_consumer.options) END
     WHERE cs.id = c.id;
END $$;
COMMENT ON FUNCTION ecp.alter_consumer(text, text, jsonb) IS
  'change a consumer of your own: url, options (merged; a key given as null is removed); checked as create_consumer checks; refused while a task of it has a run in progress';

CREATE FUNCTION ecp.rename_consumer(consumer text, new_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c ecp.consumer;
BEGIN
    SELECT * INTO c FROM ecp.consumer cs WHERE cs.name = rename_consumer.consumer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer "%" does not exist', coalesce(rename_consumer.consumer, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.consumers lists yours.';
    END IF;
    IF new_name IS NULL OR new_name !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'invalid consumer name "%"', left(coalesce(new_name, 'NULL'), 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use 1 to 63 letters, digits, "_", "." or "-".';
    END IF;
    IF new_name = c.name THEN
        RAISE NOTICE 'consumer "%" has that name already', c.name;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM ecp.consumer cs WHERE cs.name = new_name) THEN
        RAISE EXCEPTION 'consumer "%" already exists', new_name
              USING ERRCODE = 'duplicate_object',
                    HINT = 'SELECT name FROM ecp.consumers lists yours.';
    END IF;
    BEGIN
        UPDATE ecp.consumer cs SET name = new_name WHERE cs.id = c.id;
    EXCEPTION WHEN unique_violation THEN
        PERFORM ecp._name_taken('consumer', new_name);
    END;
END $$;
COMMENT ON FUNCTION ecp.rename_consumer(text, text) IS
  'rename a consumer of your own (its tasks keep it by id)';

-- The version of the action line of a document read by query, as a
-- worker writes it (owner_sql.c): an integer's text, a numeric cut to a
-- bigint, a date or timestamp in microseconds (NULL: no version_column).
CREATE FUNCTION ecp._version_sql(t ecp.task, query text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    version_type regtype;
    expression text;
BEGIN
    IF NOT t.options ? 'version_column' THEN
        RETURN 'NULL::pg_catalog.text';
    END IF;
    version_type := ecp._column_type(query, t.search_path, t.options->>'version_column');
    expression := format(CASE
        WHEN version_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
        THEN '(r.%I)::pg_catalog.text'
        WHEN version_type = 'numeric'::regtype
        THEN 'pg_catalog.trunc(r.%I)::pg_catalog.int8::pg_catalog.text'
        WHEN version_type IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype)
        THEN '(extract(epoch from r.%I) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8::pg_catalog.text'
        END, t.options->>'version_column');
    IF expression IS NULL THEN
        RAISE EXCEPTION 'version_column "%" of task "%" is of type %', t.options->>'version_column', t.name, version_type
              USING ERRCODE = 'datatype_mismatch',
                    HINT = 'A version is an integer, numeric, date or timestamp column that grows with every change of the row, e.g. updated_at.';
    END IF;
    RETURN expression;
END $$;

-- The first n documents of query as a run reads them (key order), each
-- as text[]: id, document, the document after the transform (sent_sql),
-- routing, version.  The query runs as the caller under the task's
-- search_path, which only its own text and the transform see.
CREATE FUNCTION ecp._preview_rows(t ecp.task, query text, sent_sql text, n integer) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    statement text;
    rows text[];
BEGIN
    PERFORM set_config('search_path', t.search_path, true);
    statement := ecp._statement_text(query);
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    statement := format(
        'SELECT pg_catalog.array_agg(ARRAY[x.id, x.body, %1$s, x.routing, x.version] ORDER BY x.n)'
        '  FROM (SELECT (r.%2$I)::pg_catalog.text AS id, pg_catalog.row_to_json(r)::pg_catalog.text AS body,'
        '               %3$s AS routing, %4$s AS version, pg_catalog.row_number() OVER (ORDER BY r.%5$I) AS n'
        '          FROM (%6$s' || E'\n' || ') AS r WHERE r.%5$I IS NOT NULL %7$s ORDER BY r.%5$I LIMIT %8$s) AS x',
        sent_sql, t.options->>'id_column',
        CASE WHEN t.options ? 'routing_column'
             THEN format('(r.%I)::pg_catalog.text', t.options->>'routing_column') ELSE 'NULL::pg_catalog.text' END,
        ecp._version_sql(t, query), coalesce(t.options->>'key_column', t.options->>'id_column'), statement,
        -- a task of ids reads only those
        CASE WHEN t.ids IS NOT NULL
             THEN format('AND (r.%I)::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($1)', t.options->>'id_column')
             ELSE '' END,
        n);
    PERFORM set_config('search_path', t.search_path, true);
    EXECUTE statement INTO rows USING t.ids;
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    RETURN rows;
END $$;

-- A document's action line and source line as sent (batch.c; a write
-- service's entry, sink_http.c); NULL, NULL for a document the transform
-- skipped (sent NULL): nothing is sent.
CREATE FUNCTION ecp._sent_lines(kind text, op text, id text, sent text, routing text, version text,
                                OUT action json, OUT document json)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN sent IS NULL THEN NULL
                WHEN kind = 'http'
                THEN ('{"id":' || to_json(id)::text || CASE WHEN op = 'delete' THEN ',"delete":true' ELSE '' END || '}')::json
                ELSE ('{"' || op || '":{"_id":' || to_json(id)::text
                      || coalesce(',"routing":' || to_json(routing)::text, '')
                      || CASE WHEN version IS NOT NULL AND op <> 'delete'
                              THEN ',"version":' || version || ',"version_type":"external_gte"' ELSE '' END
                      || '}}')::json END,
           CASE WHEN sent IS NULL OR op = 'delete' THEN NULL
                WHEN op = 'update' AND kind <> 'http' THEN ('{"doc":' || sent || ',"doc_as_upsert":true}')::json
                ELSE sent::json END
$$;

-- What a run of the task would send, for its first n documents in key
-- order (the watermark of since_column aside): the _id, the action line
-- of _bulk (of a write service: the document's entry without "doc") and
-- the source line, after the task's transform, as text exactly as sent.
-- The query and the transform run as the caller (a member of the task's
-- owner: row-level security), under the task's search_path, as
-- ecp.preview runs a query.
CREATE FUNCTION ecp.preview_task(task text, n integer DEFAULT 1)
RETURNS TABLE (_id text, action json, document json)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    kind text;
    op text;
    sent_sql text := 'x.body';
    wanted integer := n;
    found_rows text[];      -- [document][id, body, sent, routing, version]
BEGIN
    IF n IS NULL OR n < 0 OR n > 10000 THEN
        RAISE EXCEPTION 'n must be between 0 and 10000, not %', coalesce(n::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO t FROM ecp.task tk WHERE tk.name = preview_task.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(preview_task.task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists yours; ecp.preview(query) previews any query.';
    END IF;
    -- the task's query and transform run with the caller's privileges: only
    -- as the owner itself, logged in as itself, or a member (a superuser
    -- too) would run another role's code with its own rights
    IF session_user::regrole <> t.owner OR current_user::regrole <> t.owner THEN
        RAISE EXCEPTION 'task "%" is previewed by its owner % only, in a session of its own', t.name, t.owner
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'preview_task runs the task''s query and transform with the caller''s privileges: connect as ' || t.owner || ', or preview a query of your own with ecp.preview(query).';
    END IF;
    IF t.query IS NULL AND t.queries IS NULL THEN
        RAISE EXCEPTION 'task "%" has no query: its documents are the lines of its file (or bare ids), sent as they are', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'preview_task shows the documents of a task of query or queries.';
    END IF;
    SELECT c.kind INTO kind FROM ecp.consumer c WHERE c.id = t.consumer_id;
    op := coalesce(t.options->>'op', (SELECT oc.default_value #>> '{}' FROM ecp._option_contract() oc
                                       WHERE oc.kind = 'task' AND oc.name = 'op'));
    IF t.options ? 'transform' THEN
        -- the function the task is bound to (transform_fn), by its OID's name
        SELECT format('%I.%I(x.body::pg_catalog.jsonb)::pg_catalog.text', ns.nspname, p.proname) INTO sent_sql
          FROM pg_proc p JOIN pg_namespace ns ON ns.oid = p.pronamespace WHERE p.oid = t.transform_fn;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'transform function %(jsonb) of task "%" no longer exists', t.options->>'transform', t.name
                  USING ERRCODE = 'undefined_function',
                        HINT = format('A task is bound to its transform when it is written. Create the function, then bind it again: UPDATE ecp.task SET options = options WHERE name = %L.', t.name);
        END IF;
    END IF;
    -- the first query's documents first, as the parts of a task of queries
    FOR i IN 1 .. coalesce(cardinality(t.queries), 1) LOOP
        EXIT WHEN wanted <= 0;
        found_rows := ecp._preview_rows(t, coalesce(t.queries[i], t.query), sent_sql, wanted);
        FOR j IN 1 .. coalesce(array_length(found_rows, 1), 0) LOOP
            _id := found_rows[j][1];
            SELECT l.action, l.document INTO action, document
              FROM ecp._sent_lines(kind, op, _id, found_rows[j][3], found_rows[j][4], found_rows[j][5]) l;
            RETURN NEXT;
        END LOOP;
        wanted := wanted - coalesce(array_length(found_rows, 1), 0);
    END LOOP;
END $$;
COMMENT ON FUNCTION ecp.preview_task(text, integer) IS
  'what a run of the task would send for its first n documents: the _id, the action line and the document after the task''s transform, as sent; for the task''s owner, in a session of its own';

-- (lifecycle section end)

-- ===========================================================================
-- Monitoring: views, retention, metrics (issue 24)
-- ===========================================================================

-- What this section adds (the same in the complete and the upgrade
-- script): the narrow view ecp.status, ecp.task_health (the latest run of
-- each task and a word for its health), per-minute throughput samples
-- (ecp.throughput, written by the workers at each checkpoint, and
-- ecp.throughput_per_minute), ecp.metrics in the shape postgres_exporter
-- reads (doc/postgres_exporter/queries.yaml), and ecp._purge_history,
-- which the launcher calls under ecp.history_days.  The bytes each part
-- sent are ecp.part.bytes_sent (ecp.progress.bytes_sent), above.

-- Documents and request bytes per task and minute: each checkpoint adds
-- its page's to the row of its minute (one upsert, in the checkpoint's
-- transaction).  documents counts what the consumer answered for:
-- written, deleted, refused (dead letters) or already newer; bytes are
-- request bodies as ecp.part.bytes_sent counts them.  No foreign key to
-- ecp.task: its check would lock the task's row (FOR KEY SHARE) inside
-- the checkpoint, and a role that holds its task FOR UPDATE would stall
-- its workers; the rows of a dropped task go with the retention
-- (ecp.history_days) and ecp.throughput_per_minute leaves them out.
CREATE TABLE ecp.throughput (
    minute    timestamptz NOT NULL,
    task_id   bigint NOT NULL,
    documents bigint NOT NULL DEFAULT 0,
    bytes     bigint NOT NULL DEFAULT 0,
    owner     regrole NOT NULL,
    PRIMARY KEY (minute, task_id)
);
COMMENT ON TABLE ecp.throughput IS 'documents and request bytes per task and minute, added by the workers at each checkpoint; purged after ecp.history_days';
SELECT pg_catalog.pg_extension_config_dump('ecp.throughput', '');
ALTER TABLE ecp.throughput ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.throughput USING (pg_has_role(owner, 'MEMBER'));

-- The purge looks for old flow rows whose run is gone by time; the runs
-- that point at a purged one (retry_of, repair_of: ON DELETE SET NULL)
-- are found by index, not by a scan of ecp.run per purged run.
CREATE INDEX flow_log_at_idx ON ecp.flow_log (at);
CREATE INDEX run_retry_of_idx ON ecp.run (retry_of) WHERE retry_of IS NOT NULL;
CREATE INDEX run_repair_of_idx ON ecp.run (repair_of) WHERE repair_of IS NOT NULL;

-- One row per run, narrow enough for psql: what it does, how far it is,
-- and why it is not simply running or done.  Runs that finished more than
-- a day ago are left out (ecp.progress has them all).
CREATE VIEW ecp.status WITH (security_invoker = true) AS
SELECT p.run_id,
       p.task,
       p.action,
       CASE WHEN p.retry_attempt IS NOT NULL THEN 'retrying' ELSE p.state END AS state,
       to_char(p.processed + p.failed + p.deleted + p.missing + p.skipped + p.skipped_stale,
               'FM9,999,999,999,999,999,990')
         || coalesce(' / ' || to_char(p.total, 'FM9,999,999,999,999,999,990'), '') AS done,
       p.percent,
       round(p.docs_per_second) AS docs_s,
       p.eta,
       CASE WHEN p.bytes_sent > 0 THEN pg_size_pretty(p.bytes_sent) END AS sent,
       CASE WHEN p.retry_attempt IS NOT NULL
            THEN format('attempt %s/%s: %s', p.retry_attempt, p.retry_max, p.retry_error)
            WHEN p.state = 'paused' THEN p.paused_why
            WHEN p.state = 'failed' THEN p.last_error
            WHEN p.partial
            THEN format('partial: %s dead letter%s', p.failed, CASE WHEN p.failed = 1 THEN '' ELSE 's' END)
            WHEN p.state = 'pending' AND p.starts_at > now()
            THEN 'starts at ' || to_char(p.starts_at, 'YYYY-MM-DD HH24:MI:SS')
       END AS why
  FROM ecp.progress p
 WHERE p.finished_at IS NULL OR p.finished_at > now() - interval '1 day'
 ORDER BY p.run_id;
COMMENT ON VIEW ecp.status IS
  'one row per run of the last day, narrow: action, state (retrying while a part waits to retry), done / total, percent, docs/s, ETA, bytes sent, why';

-- The latest run of each task (maintenance runs left out) and a word for
-- the task's health; when it last succeeded; what its latest verify found.
CREATE VIEW ecp.task_health WITH (security_invoker = true) AS
SELECT t.name AS task,
       CASE WHEN p.run_id IS NULL THEN 'never run'
            WHEN p.retry_attempt IS NOT NULL THEN 'retrying'
            WHEN p.state IN ('running', 'following') THEN 'running'
            WHEN p.partial THEN 'partial'
            WHEN p.state = 'succeeded' THEN 'ok'
            ELSE p.state END AS health,
       p.run_id,
       p.action,
       p.state,
       p.started_at,
       p.finished_at,
       s.finished_at AS last_success,
       d.missing + d.stale + d.extra AS drift,
       d.finished_at AS verified_at
  FROM ecp.task t
  LEFT JOIN LATERAL (
       SELECT r.id FROM ecp.run r
        WHERE r.task_id = t.id AND r.action IS DISTINCT FROM 'rollback' AND r.action IS DISTINCT FROM 'drop_index'
        ORDER BY r.id DESC LIMIT 1) l ON true
  LEFT JOIN LATERAL (SELECT * FROM ecp.progress pr WHERE pr.run_id = l.id) p ON true
  LEFT JOIN LATERAL (
       SELECT r.finished_at FROM ecp.run r
        WHERE r.task_id = t.id AND r.state = 'succeeded' AND r.action IS NULL
        ORDER BY r.id DESC LIMIT 1) s ON true
  LEFT JOIN LATERAL (
       SELECT ds.missing, ds.stale, ds.extra, ds.finished_at
         FROM ecp.run v JOIN ecp.drift_summary ds ON ds.run_id = v.id
        WHERE v.task_id = t.id AND v.action = 'verify' AND v.state = 'succeeded'
        ORDER BY v.id DESC LIMIT 1) d ON true;
COMMENT ON VIEW ecp.task_health IS
  'one row per task: its latest run (maintenance left out), health (ok, partial, failed, retrying, running, paused, pending, cancelled, never run), last success, drift of its latest verify';

-- Throughput by minute with the task's name: what a chart of documents
-- per second over time reads.  The current minute's rates are over the
-- seconds gone by.
CREATE VIEW ecp.throughput_per_minute WITH (security_invoker = true) AS
SELECT s.minute,
       t.name AS task,
       s.documents,
       s.bytes,
       round(s.documents / e.seconds, 1) AS docs_per_second,
       round(s.bytes / e.seconds) AS bytes_per_second
  FROM ecp.throughput s
  JOIN ecp.task t ON t.id = s.task_id
  CROSS JOIN LATERAL (
       SELECT greatest(1, extract(epoch FROM least(now(), s.minute + interval '1 minute') - s.minute)) AS seconds) e;
COMMENT ON VIEW ecp.throughput_per_minute IS
  'documents and request bytes per task and minute, and their rates (the current minute: over the seconds gone by)';

-- Metrics in the shape postgres_exporter's custom queries read: one row
-- per metric and labels (task, consumer, state; NULL when not one of the
-- metric's), one value.  doc/postgres_exporter/queries.yaml maps them to
-- ecp_* metrics.  Runs by state list every state, 0 included, and the
-- per-task metrics every task, so a series does not vanish at 0.
CREATE VIEW ecp.metrics WITH (security_invoker = true) AS
SELECT 'runs'::text AS metric, NULL::text AS task, NULL::text AS consumer, s.state,
       coalesce(c.runs, 0)::double precision AS value
  FROM unnest(ecp._run_states()) s(state)
  LEFT JOIN (SELECT r.state, count(*) AS runs FROM ecp.run r GROUP BY r.state) c ON c.state = s.state
UNION ALL
SELECT m.metric, t.name, NULL, NULL, m.value
  FROM ecp.task t
  CROSS JOIN LATERAL (
       SELECT coalesce(sum(pt.processed), 0) AS processed,
              coalesce(sum(pt.failed), 0) AS failed,
              coalesce(sum(pt.docs_per_second) FILTER (WHERE r.state = 'running' AND pt.state = 'running'), 0) AS rate,
              count(*) FILTER (WHERE r.state = 'running' AND pt.retry_attempt IS NOT NULL) AS retrying
         FROM ecp.run r JOIN ecp.part pt ON pt.run_id = r.id
        WHERE r.task_id = t.id) a
  CROSS JOIN LATERAL (
       SELECT max(r.finished_at) AS at FROM ecp.run r
        WHERE r.task_id = t.id AND r.state = 'succeeded' AND r.action IS NULL) ls
  CROSS JOIN LATERAL (
       VALUES ('documents_processed', a.processed::double precision),
              ('documents_failed', a.failed::double precision),
              ('documents_per_second', a.rate),
              ('parts_retrying', a.retrying::double precision),
              ('seconds_since_success', extract(epoch FROM now() - ls.at)::double precision)) m(metric, value)
 WHERE m.value IS NOT NULL
UNION ALL
SELECT m.metric, f.task, NULL, NULL, m.value
  FROM ecp.followers f
  CROSS JOIN LATERAL (
       VALUES ('follower_lag_bytes', f.lag_bytes::double precision),
              ('follower_lag_seconds', f.lag_seconds::double precision),
              ('follower_queue_length', f.queue_length::double precision),
              ('follower_retained_wal_bytes', f.retained_wal_bytes::double precision)) m(metric, value)
 WHERE m.value IS NOT NULL
UNION ALL
SELECT m.metric,
       CASE WHEN l.kind = 'task' THEN l.name END,
       CASE WHEN l.kind = 'consumer' THEN l.name END,
       NULL, m.value
  FROM ecp.rate_limits l
  CROSS JOIN LATERAL (
       VALUES ('rate_limit_configured', l.configured_rate::double precision),
              ('rate_limit_effective', l.effective_rate::double precision),
              ('rate_limit_measured', l.measured_rate::double precision),
              ('rate_limit_waiting_workers', l.waiting_workers::double precision)) m(metric, value)
 WHERE m.value IS NOT NULL;
COMMENT ON VIEW ecp.metrics IS
  'metric, labels (task, consumer, state), value: runs by state, documents, retries, follower lag, rate limits, for postgres_exporter (doc/postgres_exporter/queries.yaml)';

-- The retention: removes finished runs (succeeded, failed, cancelled)
-- that finished more than `days` days ago, oldest first, at most max_runs
-- of them, with what cascades from them (parts, run ids, dead letters,
-- drift, migration rows) and their flow rows; then flow rows older than
-- that whose run is gone (or that had none), and throughput samples older
-- than that, each at most 100 x max_runs.  Kept whatever their age, so
-- the views still say what they said: a task's latest run, its latest run
-- other than maintenance (ecp.task_health), its latest successful one, a
-- follower's run, a migration still loading and a task's latest swap (what
-- ecp.rollback and drop_index need).  A run a role holds locked is skipped
-- until a later call.  `more` says a limit was reached (call again).  The
-- launcher calls it (ecp.history_days); roles cannot.
CREATE FUNCTION ecp._purge_history(days integer, max_runs integer,
                                   OUT runs bigint, OUT failed_docs bigint, OUT flow_rows bigint,
                                   OUT throughput_rows bigint, OUT more boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff timestamptz;
    purged bigint[];
    removed bigint;
BEGIN
    IF days IS NULL OR days < 1 THEN
        RAISE EXCEPTION 'days must be 1 or more, not %', coalesce(days::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'ecp.history_days = 0 keeps everything: the launcher then purges nothing.';
    END IF;
    IF max_runs IS NULL OR max_runs < 1 THEN
        RAISE EXCEPTION 'max_runs must be 1 or more, not %', coalesce(max_runs::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'It bounds the work of one call; the launcher passes 1000.';
    END IF;
    cutoff := now() - make_interval(days => days);

    WITH latest AS (
         SELECT max(r.id) AS any_run,
                max(r.id) FILTER (WHERE r.action IS DISTINCT FROM 'rollback'
                                    AND r.action IS DISTINCT FROM 'drop_index') AS not_maintenance,
                max(r.id) FILTER (WHERE r.state = 'succeeded') AS succeeded
           FROM ecp.run r GROUP BY r.task_id),
         kept AS (
         SELECT unnest(ARRAY[l.any_run, l.not_maintenance, l.succeeded]) AS id FROM latest l
         UNION SELECT f.run_id FROM ecp.follower f
         UNION SELECT m.run_id FROM ecp.migration m WHERE m.state = 'loading'
         UNION (SELECT DISTINCT ON (m.task_id) m.run_id FROM ecp.migration m
                 WHERE m.state IN ('swapped', 'rolled back')
                 ORDER BY m.task_id, m.swapped_at DESC NULLS LAST)),
         old AS (
         SELECT r.id FROM ecp.run r
          WHERE r.state IN ('succeeded', 'failed', 'cancelled') AND r.finished_at < cutoff
            AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.id = r.id)
          ORDER BY r.finished_at, r.id
          LIMIT max_runs
            FOR UPDATE OF r SKIP LOCKED)
    SELECT coalesce(array_agg(old.id), '{}') INTO purged FROM old;

    SELECT count(*) INTO failed_docs FROM ecp.failed_doc fd WHERE fd.run_id = ANY (purged);
    DELETE FROM ecp.flow_log fl WHERE fl.run_id = ANY (purged);
    GET DIAGNOSTICS flow_rows = ROW_COUNT;
    DELETE FROM ecp.run r WHERE r.id = ANY (purged);
    GET DIAGNOSTICS runs = ROW_COUNT;
    more := runs >= max_runs;

    DELETE FROM ecp.flow_log fl
     WHERE fl.id IN (SELECT o.id FROM ecp.flow_log o
                      WHERE o.at < cutoff
                        AND (o.run_id IS NULL OR NOT EXISTS (SELECT 1 FROM ecp.run r WHERE r.id = o.run_id))
                      ORDER BY o.at LIMIT 100 * max_runs);
    GET DIAGNOSTICS removed = ROW_COUNT;
    flow_rows := flow_rows + removed;
    more := more OR removed >= 100 * max_runs;

    DELETE FROM ecp.throughput s
     WHERE (s.minute, s.task_id) IN (SELECT o.minute, o.task_id FROM ecp.throughput o
                                      WHERE o.minute < cutoff ORDER BY o.minute LIMIT 100 * max_runs);
    GET DIAGNOSTICS throughput_rows = ROW_COUNT;
    more := more OR throughput_rows >= 100 * max_runs;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._purge_history(integer, integer) FROM PUBLIC;
COMMENT ON FUNCTION ecp._purge_history(integer, integer) IS
  'the retention (ecp.history_days): finished runs older than days, with their parts, dead letters, drift and flow rows, and old flow rows and throughput samples; at most max_runs runs a call; the launcher calls it';

GRANT SELECT ON ecp.throughput, ecp.status, ecp.task_health, ecp.throughput_per_minute, ecp.metrics TO PUBLIC;

-- (monitoring section end)
