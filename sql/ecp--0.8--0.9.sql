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
                          'cursor restarted')) NOT VALID;
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
    NEW.only_ids := CASE WHEN NEW.action IS NULL OR NEW.action = 'verify'
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
    PERFORM ecp_internal._check_ids(NEW.only_ids, 'ids');
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

-- (cursor section end)

-- ===========================================================================
-- Ids from a relation, write services' index lists (issue 26)
-- ===========================================================================

-- (ids_from section end)
