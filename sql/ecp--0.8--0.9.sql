-- ecp 0.8 -> 0.9: throughput round two (issue 25) and the brief's last rows
-- (issue 26).
--
-- * Workers that stay: a worker takes the next pending part of its run.
-- * Task option paging => 'cursor': any query, through one cursor.
-- * ecp.start(task, ids_from => ...): ids from a relation or a query;
--   write services get the list of indexes a batch must reach.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.9'" to load this file. \quit

-- ===========================================================================
-- Workers that stay (issue 25)
-- ===========================================================================

-- A worker that loses the claim of a part says so in the flow.
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
                          'alter_consumer', 'rename_consumer', 'drop_consumer',
                          'claim lost')) NOT VALID;
DO $$
BEGIN
    ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check;
EXCEPTION WHEN check_violation THEN
    RAISE WARNING 'ecp.flow_log holds rows with an action ecp never wrote (rows written by roles up to ecp 0.1): its CHECK flow_log_action_check checks new rows only'
          USING HINT = 'SELECT * FROM ecp.flow_log WHERE NOT (action = ANY (ecp_internal._flow_actions())) shows them; '
                       'update or delete them, then ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check.';
END $$;

-- (workers section end)

-- ===========================================================================
-- Cursor paging (issue 26)
-- ===========================================================================

-- the flow action 'cursor restarted' (EcpFlowAction, src/common/flow_actions.c)
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
                          'alter_consumer', 'rename_consumer', 'drop_consumer',
                          'claim lost', 'cursor restarted')) NOT VALID;
DO $$
BEGIN
    ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check;
EXCEPTION WHEN check_violation THEN
    RAISE WARNING 'ecp.flow_log holds rows with an action ecp never wrote (rows written by roles up to ecp 0.1): its CHECK flow_log_action_check checks new rows only'
          USING HINT = 'SELECT * FROM ecp.flow_log WHERE NOT (action = ANY (ecp_internal._flow_actions())) shows them; '
                       'update or delete them, then ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check.';
END $$;

-- Task option paging 'cursor' (src/worker/source_cursor.c): the query is
-- read whole through one held cursor, so the task has one part (no key
-- ranges), no since_column filter and no run window (a cursor part
-- starts its query again at every resume).  id_column '' (documents
-- without _id) goes with it and op create only.
CREATE FUNCTION ecp_internal._check_cursor_paging(t ecp.task) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cursor_paging boolean := coalesce(t.options->>'paging' = 'cursor', false);
    no_id boolean := coalesce(t.options->>'id_column' = '', false);
BEGIN
    IF no_id AND NOT (cursor_paging AND coalesce(t.options->>'op' = 'create', false)) THEN
        RAISE EXCEPTION 'task "%": id_column '''' (documents without _id) needs options paging ''cursor'' and op ''create''', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Elasticsearch makes an _id up only for a document it creates: add "paging": "cursor", "op": "create", or name an id column.';
    END IF;
    IF NOT cursor_paging THEN
        RETURN;
    END IF;
    IF t.query IS NULL THEN
        RAISE EXCEPTION 'task "%": paging ''cursor'' reads one query, not queries or a file', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Pass query => ''SELECT ...'', or leave option paging out.';
    END IF;
    IF coalesce((t.options->>'parallelism')::integer, 1) > 1 THEN
        RAISE EXCEPTION 'task "%": paging ''cursor'' reads the query through one cursor, in one part; parallelism must be 1, not %',
              t.name, t.options->>'parallelism'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Leave parallelism out; parallel parts cut the query into ranges of a unique integer key_column (paging keyset).';
    END IF;
    IF t.options ? 'since_column' THEN
        RAISE EXCEPTION 'task "%": paging ''cursor'' has no since_column filter', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Leave since_column out (every run reads the whole query), or page by a unique key_column (paging keyset).';
    END IF;
    IF t.options ? 'window' THEN
        RAISE EXCEPTION 'task "%": paging ''cursor'' cannot run in a window', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'A window pauses the run and resumes it, and a cursor part starts its query again from the beginning at every resume: leave window out, or page by a unique key_column.';
    END IF;
    IF no_id AND t.ids IS NOT NULL THEN
        RAISE EXCEPTION 'task "%": a task of ids finds documents by _id; id_column '''' sends them without one', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Name the id column, or leave ids out.';
    END IF;
END $$;

-- A task whose documents have no _id (id_column '') has full runs only:
-- id runs, verify, repair and follow find documents by _id.
CREATE FUNCTION ecp_internal._check_run_without_id(t ecp.task, r ecp.run) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(t.options->>'id_column' = '', false)
       AND (r.only_ids IS NOT NULL OR r.repair_of IS NOT NULL OR r.action IN ('verify', 'follow')) THEN
        RAISE EXCEPTION 'task "%" sends documents without _id (id_column ''''): % finds documents by _id', t.name,
              CASE WHEN r.action IS NOT NULL THEN 'a ' || r.action || ' run' WHEN r.repair_of IS NOT NULL THEN 'a repair'
                   ELSE 'an id run' END
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Start a full run (ecp.start(task)), or give the task an id column.';
    END IF;
END $$;

-- paging 'cursor' among the words, its checks on every task row, the
-- NOTICE that suggests it, full runs only for a task without _id

CREATE OR REPLACE FUNCTION ecp_internal._check_task_option_values(options jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp_internal._check_option_word('task', 'op', options->>'op', NULL);
    PERFORM ecp_internal._check_option_word('task', 'paging', options->>'paging',
            'auto pages foreign tables by key windows and everything else by keyset; cursor reads any query through one cursor.');
    PERFORM ecp_internal._check_option_word('task', 'format', options->>'format',
            'ids: one id per line, looked up through the query; ndjson: one document per line, sent as it is.');
END $$;

CREATE OR REPLACE FUNCTION ecp_internal._check_task_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    columns text[];
    col text;
BEGIN
    IF NEW.name IS NULL OR NEW.name !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'invalid task name "%"', left(coalesce(NEW.name, 'NULL'), 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use 1 to 63 letters, digits, "_", "." or "-".';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ecp.consumer c WHERE c.id = NEW.consumer_id AND c.owner = NEW.owner) THEN
        RAISE EXCEPTION 'task "%" must use a consumer of its own owner (role %)', NEW.name, NEW.owner
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'A task runs as its owner and sends with that role''s consumer: create one with ecp.create_consumer as that role.';
    END IF;
    PERFORM ecp_internal._check_index_name(NEW.index_name);
    PERFORM ecp_internal._check_options(NEW.options, ecp_internal._task_option_spec(), 'task');
    PERFORM ecp_internal._check_task_option_values(NEW.options);
    IF NEW.file IS NOT NULL AND NOT NEW.options ? 'format' THEN
        NEW.options := NEW.options || jsonb_build_object('format',
                                                         CASE WHEN NEW.query IS NULL THEN 'ndjson' ELSE 'ids' END);
    END IF;
    PERFORM ecp_internal._check_task_source(NEW);
    PERFORM ecp_internal._check_cursor_paging(NEW);
    IF NEW.query IS NULL AND NEW.queries IS NULL THEN
        -- an NDJSON file: documents come whole, their _id from id_field
        NEW.options := NEW.options - 'id_column';
    ELSE
        IF TG_OP = 'UPDATE' AND NOT NEW.options ? 'id_column' THEN
            -- an UPDATE that leaves the id column out keeps the one there was
            NEW.options := NEW.options || jsonb_build_object('id_column', OLD.options -> 'id_column');
        END IF;
        IF TG_OP = 'INSERT' OR NEW.query IS DISTINCT FROM OLD.query
           OR NEW.queries IS DISTINCT FROM OLD.queries
           OR NEW.search_path IS DISTINCT FROM OLD.search_path
           OR NEW.options -> 'id_column' IS DISTINCT FROM OLD.options -> 'id_column'
           OR NEW.options -> 'key_column' IS DISTINCT FROM OLD.options -> 'key_column' THEN
            columns := ecp_internal._check_task_queries(NEW);
            -- id_column '': no _id (_check_cursor_paging)
            FOREACH col IN ARRAY ARRAY[nullif(NEW.options->>'id_column', ''), NEW.options->>'key_column'] LOOP
                IF col IS NOT NULL AND NOT col = ANY (columns) THEN
                    RAISE EXCEPTION 'column "%" is not an output column of the query', col
                          USING ERRCODE = 'undefined_column',
                                HINT = 'The query returns: ' || array_to_string(columns, ', ') || '.';
                END IF;
            END LOOP;
            NEW.options := ecp_internal._with_key_columns(NEW.name, coalesce(NEW.query, NEW.queries[1]),
                                                 NEW.search_path, NEW.options, columns);
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.created_at := now();
    END IF;
    NEW.changed_by := ecp_internal._operator();
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ecp_internal._with_key_columns(task text, query text, search_path text, options jsonb,
                                      columns text[])
RETURNS jsonb LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    facts jsonb := ecp_internal._column_facts(query, search_path);
    key text;
BEGIN
    IF NOT options ? 'id_column' THEN
        options := options || jsonb_build_object('id_column',
                                                 coalesce(facts->>'primary_key', columns[1]));
    END IF;
    key := coalesce(options->>'key_column', options->>'id_column');
    IF options->>'paging' = 'cursor' THEN
        RAISE NOTICE 'task "%": %, the query read whole through one cursor (paging cursor: no key)', task,
              CASE WHEN options->>'id_column' = '' THEN 'documents without _id'
                   ELSE format('_id from column "%s"', options->>'id_column') END
              USING HINT = 'A part that starts again (its worker died, its run was paused or resumed) reads the query again from the beginning.';
        RETURN options;
    END IF;
    RAISE NOTICE 'task "%": _id from column "%", pages ordered by column "%"',
          task, options->>'id_column', key;
    IF facts->'not_unique' ? key THEN
        RAISE NOTICE 'column "%" of table % has no unique index or primary key', key, facts->>'table'
              USING HINT = 'Pages continue after the last key sent, so a run fails at the first value of "'
                           || key || '" that repeats; choose a unique key_column (the primary key) if values can repeat, '
                           || 'or set option paging to ''cursor'' to read the query through one cursor, with no key.';
    END IF;
    RETURN options;
END $$;

-- (ecp_internal._prepare_run, which now also refuses the runs a task
-- without _id cannot do, is re-created once, in the ids_from section below)

-- (cursor section end)

-- ===========================================================================
-- Ids from a relation, write services' index lists (issue 26)
-- ===========================================================================

-- The new index a write service's batch must reach too (its "indexes"):
-- that of a loading migration of the same alias by the same owner, through
-- any consumer (ecp cannot know which cluster a service writes to; the
-- owner's own migration of that alias name is the one it means).
CREATE FUNCTION ecp_internal._service_dual_index(alias text, run bigint) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.new_index FROM ecp.migration m
      JOIN ecp.run r ON r.id = m.run_id
      JOIN ecp.run mine ON mine.id = _service_dual_index.run
     WHERE m.alias = _service_dual_index.alias AND m.owner = mine.owner
       AND m.run_id <> _service_dual_index.run AND m.state = 'loading'
       AND m.step IN ('load', 'settings', 'count', 'swap')
       AND r.state IN ('running', 'paused', 'failed')
     ORDER BY m.run_id DESC LIMIT 1
$$;
REVOKE EXECUTE ON FUNCTION ecp_internal._service_dual_index(text, bigint) FROM PUBLIC;

ALTER TABLE ecp.run ADD COLUMN ids_from text;
COMMENT ON COLUMN ecp.run.ids_from IS
  'ecp.start(task, ids_from => ...): the relation or query the ids were read from, as the owner, when the run was started (only_ids is then empty)';

-- ecp.start(task, ids_from => 'schema.table' | 'SELECT ...'): the ids of an
-- id run read from a relation or a query, as the run's owner, into
-- ecp.run_id (src/backend/ids_from.c); only_ids is then '{}'.
CREATE FUNCTION ecp_internal._check_ids_from(r ecp.run) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF r.ids_from IS NULL THEN
        RETURN;
    END IF;
    IF r.only_ids IS NOT NULL THEN
        RAISE EXCEPTION 'ids and ids_from cannot be combined'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Give the ids (ids => ARRAY[...]) or where to read them (ids_from => ''schema.table'' or a SELECT), not both.';
    END IF;
    IF r.action IS NOT NULL OR r.retry_of IS NOT NULL OR r.repair_of IS NOT NULL THEN
        RAISE EXCEPTION 'ids_from starts an id run of its own, not a % run',
              coalesce(r.action, CASE WHEN r.retry_of IS NOT NULL THEN 'retry' ELSE 'repair' END)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Start it with ecp.start(task, ids_from => ...).';
    END IF;
    IF btrim(r.ids_from, E' \t\r\n') = '' THEN
        RAISE EXCEPTION 'ids_from is empty'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Name a table of ids (ids_from => ''public.my_ids'') or give a query (ids_from => ''SELECT id FROM ...'').';
    END IF;
END $$;

CREATE FUNCTION ecp_internal._copy_ids_from(run bigint, owner regrole, source text, search_path text)
RETURNS bigint AS 'MODULE_PATHNAME', 'ecp_copy_ids_from' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION ecp_internal._copy_ids_from(bigint, regrole, text, text) FROM PUBLIC;
COMMENT ON FUNCTION ecp_internal._copy_ids_from(bigint, regrole, text, text) IS
  'the ids of run from source (a relation or a query), read as owner with search_path, distinct, into ecp.run_id; returns how many';

-- Trigger copy_ids, as ecp (roles cannot write ecp.run_id): the ids of an
-- ids_from run, read in the starting session; an empty result refuses the
-- start, as an empty ids array does.  The run's total says how many; the
-- operator stays who started it (check_transition stamps changed_by).
CREATE FUNCTION ecp_internal._copy_run_ids() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    path text;
    copied bigint;
    acting text := current_setting('ecp.acting_role', true);
BEGIN
    -- EXECUTE is PUBLIC's (triggers need it): only as ecp.run's own trigger
    IF TG_RELID IS DISTINCT FROM 'ecp.run'::regclass THEN
        RAISE EXCEPTION 'ecp_internal._copy_run_ids is the trigger copy_ids of ecp.run only'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT t.search_path INTO path FROM ecp.task t WHERE t.id = NEW.task_id;
    copied := ecp_internal._copy_ids_from(NEW.id, NEW.owner, NEW.ids_from, path);
    IF copied = 0 THEN
        RAISE EXCEPTION 'ids_from => % returns no ids: nothing to start', quote_literal(left(NEW.ids_from, 100))
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Fill the table (\copy my_ids FROM ''ids.csv''), or leave ids_from out to run the whole task.';
    END IF;
    PERFORM set_config('ecp.acting_role', NEW.changed_by, true);
    UPDATE ecp.run SET total = copied WHERE id = NEW.id;
    PERFORM set_config('ecp.acting_role', coalesce(acting, ''), true);
    RETURN NULL;
END $$;
CREATE TRIGGER copy_ids AFTER INSERT ON ecp.run
    FOR EACH ROW WHEN (NEW.ids_from IS NOT NULL) EXECUTE FUNCTION ecp_internal._copy_run_ids();

-- a plain INSERT of a run is exactly ecp.start, ids_from included
GRANT INSERT (ids_from) ON ecp.run TO PUBLIC;

-- The run's triggers and its description know ids_from runs.
CREATE OR REPLACE FUNCTION ecp_internal._prepare_run() RETURNS trigger
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
        PERFORM ecp_internal._refuse_disabled(t);
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
    -- only ecp_internal._start_maintenance (SECURITY DEFINER) inserts a maintenance
    -- run, with the superuser-only ecp.starting_maintenance on around it;
    -- roles have no INSERT on action either
    IF NEW.action IS NOT NULL AND current_setting('ecp.starting_maintenance', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'maintenance runs are started by ecp.rollback and ecp.cancel(run, drop_index => true)'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- ids_from: the trigger copy_ids reads them into ecp.run_id after the insert
    PERFORM ecp_internal._check_ids_from(NEW);
    NEW.only_ids := CASE WHEN NEW.ids_from IS NOT NULL THEN '{}'
                         WHEN NEW.action IS NULL OR NEW.action = 'verify'
                         THEN coalesce(NEW.only_ids, t.ids) END;
    IF NEW.repair_of IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM ecp.run WHERE id = NEW.repair_of AND task_id = t.id AND action = 'verify') THEN
        RAISE EXCEPTION 'run % is not a verify run of task "%"', NEW.repair_of, t.name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- a task of queries looks ids up in each query (or in the one shard_of names)
    IF NEW.only_ids IS NOT NULL AND t.query IS NULL AND t.queries IS NULL
       AND NOT ecp_internal._task_writes_ids(t) THEN
        RAISE EXCEPTION 'task "%" has no query to look ids up with', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Id runs need a task with query => ''SELECT ...'' or queries => ARRAY[...].';
    END IF;
    PERFORM ecp_internal._check_run_without_id(t, NEW);
    PERFORM ecp_internal._check_ids(CASE WHEN NEW.ids_from IS NULL THEN NEW.only_ids END, 'ids');
    NEW.owner := t.owner;
    NEW.state := 'pending';
    NEW.operator := ecp_internal._operator();
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

CREATE OR REPLACE FUNCTION ecp_internal._flow_on_run() RETURNS trigger
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
        ELSIF NEW.ids_from IS NOT NULL THEN
            content := jsonb_build_object('ids', (SELECT max(i.n) FROM ecp.run_id i WHERE i.run_id = NEW.id),
                                          'ids_from', NEW.ids_from);
        ELSIF NEW.only_ids IS NOT NULL THEN
            content := jsonb_build_object('ids', cardinality(NEW.only_ids));
        END IF;
        content := content || coalesce(ecp_internal._run_endpoint(NEW.task_id), '{}')
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

CREATE OR REPLACE FUNCTION ecp_internal._part_source_text(source jsonb, t ecp.task, r ecp.run) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE source->>'kind'
        WHEN 'query' THEN CASE WHEN (source->>'query')::integer > 0
                               THEN t.queries[(source->>'query')::integer] ELSE t.query END
        WHEN 'split' THEN 'key ranges of the query (not cut yet)'
        WHEN 'range' THEN format('%s in [%s, %s)', coalesce(t.options->>'key_column', t.options->>'id_column'),
                                 coalesce(source->>'from', '-inf'), coalesce(source->>'to', '+inf'))
        WHEN 'ids' THEN CASE WHEN r.ids_from IS NULL THEN format('%s ids', cardinality(r.only_ids))
                             ELSE format('%s ids from %s', r.total, r.ids_from) END
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

-- ecp.start takes ids_from: a new signature (calls without it resolve as before)
DROP FUNCTION ecp.start(text, anycompatiblearray, timestamptz);
CREATE FUNCTION ecp.start(task text, ids anycompatiblearray DEFAULT NULL::text[],
                          at timestamptz DEFAULT NULL, ids_from text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    id_texts text[] := ecp_internal._ids_as_text(ids);
    run_id bigint;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE name = start.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'Create it with ecp.create_task(name, consumer, index, query => ...).';
    END IF;
    PERFORM ecp_internal._refuse_disabled(t);
    IF id_texts IS NOT NULL AND cardinality(id_texts) = 0 THEN
        RAISE EXCEPTION 'ids is empty: nothing to start'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass at least one id, or leave ids out to run the whole task.';
    END IF;
    IF ids_from IS NULL THEN
        -- the trigger prepare checks the task (enabled), the ids and decides the rest
        RETURN ecp_internal._create_run(t.id, id_texts, NULL, at, NULL);
    END IF;
    -- the triggers prepare (ids and ids_from not both) and copy_ids
    INSERT INTO ecp.run (task_id, only_ids, not_before, ids_from) VALUES (t.id, id_texts, at, ids_from)
    RETURNING id INTO run_id;
    PERFORM ecp_internal._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;
COMMENT ON FUNCTION ecp.start(text, anycompatiblearray, timestamptz, text) IS
  'start a run of a task: all of its source, or only the given ids (text, integer or uuid array, or ids_from => a table or query read as the owner) looked up through its query; at => a time: the launcher starts it then';

-- (ids_from section end)

-- ===========================================================================
-- Trigger functions: nobody's to attach (closes a class, ecp 0.9)
-- ===========================================================================
-- ecp's trigger functions are SECURITY DEFINER or write ecp's tables: a
-- role that could attach one to a table of its own (CREATE TRIGGER needs
-- EXECUTE on the function) would have it write as ecp, e.g. ids into
-- another role's run.  ecp's own triggers keep firing: PostgreSQL checks
-- EXECUTE when a trigger is created, never when it fires.  Every trigger
-- and event trigger function of both schemas, present and future (this
-- block runs last in every version's scripts).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace IN ('ecp'::regnamespace, 'ecp_internal'::regnamespace)
                AND p.prorettype IN ('pg_catalog.trigger'::regtype, 'pg_catalog.event_trigger'::regtype) LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;
