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

-- (ecp_internal._prepare_run, which refuses runs a task without _id cannot do,
-- is re-created once, in the ids_from section below)
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

-- Trigger create_parts, as ecp (roles cannot write parts): one part per
-- query of queries; one to be split into key ranges (a query with
-- parallelism > 1); one for ids or a file; else one.  A migration run
-- (alias_swap, no ids, no action) also has a part of stage 0 that creates
-- the new index and a part of stage 2 that sets the final settings,
-- checks the count and swaps the alias.  A maintenance run has one part
-- for its action.  A follow run (ecp.follow): in mode decoding a part of
-- stage 0 that creates the publication and the slot, the load parts
-- (backfill), and the follower (stage 2: it applies what was captured
-- since capture began, once the load is done).
CREATE FUNCTION ecp_internal._create_parts() RETURNS trigger
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
            PERFORM ecp_internal._wake_launcher_at_commit();
            RETURN NEW;
        END IF;
    ELSIF NEW.action IS NOT NULL AND NEW.action <> 'verify' THEN
        INSERT INTO ecp.part (run_id, part_no, owner, source, stage, total)
        VALUES (NEW.id, -1, NEW.owner, jsonb_build_object('kind', 'migrate', 'step', NEW.action), 0, 0);
        PERFORM ecp_internal._wake_launcher_at_commit();
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
        settings := ecp_internal._migration_settings(t.options->'settings');
        INSERT INTO ecp.migration (run_id, task_id, consumer_id, alias, new_index, load_settings,
                                   final_settings, mappings, keep_old, owner)
        VALUES (NEW.id, t.id, t.consumer_id, t.index_name, t.index_name || '-' || NEW.id,
                settings.load_settings, settings.final_settings, t.options->'mappings',
                coalesce((t.options->>'keep_old')::boolean, true), NEW.owner);
    END IF;
    PERFORM ecp_internal._wake_launcher_at_commit();
    RETURN NEW;
END $$;

-- Trigger store_ids: the ids of an id run as rows (ecp.run_id).
CREATE FUNCTION ecp_internal._store_run_ids() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.run_id (run_id, n, id)
    SELECT NEW.id, u.n, u.id FROM unnest(NEW.only_ids) WITH ORDINALITY AS u(id, n);
    RETURN NULL;
END $$;

-- Trigger check_transition: legal state changes only (a finished run stays
-- finished); a role (not ecp) may only pause, resume and cancel.  Sets
-- finished_at of a cancelled run, clears it on resume; stamps changed_by.
CREATE FUNCTION ecp_internal._check_run_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        IF NOT (
             (OLD.state = 'pending'  AND NEW.state IN ('running', 'paused', 'cancelled', 'failed', 'succeeded')) OR
             (OLD.state = 'running'  AND NEW.state IN ('paused', 'cancelled', 'failed', 'succeeded')) OR
             (OLD.state = 'paused'   AND NEW.state IN ('running', 'cancelled')) OR
             (OLD.state = 'failed'   AND NEW.state = 'running')) THEN
            RAISE EXCEPTION 'run % cannot go from % to %', OLD.id, OLD.state, NEW.state
                  USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        IF NOT ecp_internal._is_superuser() AND NOT (
             NEW.state = 'paused' OR NEW.state = 'cancelled' OR
             (NEW.state = 'running' AND OLD.state IN ('paused', 'failed'))) THEN
            RAISE EXCEPTION 'run % cannot be set % by a role: only ecp''s workers do that', OLD.id, NEW.state
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = 'Use ecp.pause, ecp.resume and ecp.cancel.';
        END IF;
        IF NEW.state = 'cancelled' THEN
            NEW.finished_at := now();
        ELSIF NEW.state = 'running' AND OLD.state IN ('paused', 'failed') THEN
            NEW.finished_at := NULL;
        END IF;
    END IF;
    NEW.changed_by := ecp_internal._operator();
    RETURN NEW;
END $$;

-- Trigger on_state, as ecp: a resumed run's parts go on from their
-- checkpoints (a run whose parts are all done is finished: a pause that
-- raced its last checkpoint), a paused or cancelled run's workers are told
-- to stop, a cancelled follow run unfollows its task.
CREATE FUNCTION ecp_internal._on_run_state() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.state = 'running' AND OLD.state IN ('paused', 'failed') THEN
        UPDATE ecp.part SET state = 'pending', recoveries = 0, last_error = NULL,
                            retry_attempt = NULL, retry_at = NULL, retry_error = NULL, retry_class = NULL
         WHERE run_id = NEW.id AND state IN ('failed', 'running');
        IF NOT EXISTS (SELECT 1 FROM ecp.part WHERE run_id = NEW.id AND state <> 'done') THEN
            UPDATE ecp.run SET state = 'succeeded', finished_at = now() WHERE id = NEW.id;
        END IF;
        PERFORM ecp_internal._wake_launcher_at_commit();
    ELSIF NEW.state IN ('paused', 'cancelled') THEN
        PERFORM ecp_internal._signal_run_at_commit(NEW.id);
    END IF;
    -- a cancelled follow run cannot go on: its task is unfollowed (slot,
    -- publication, triggers and queue dropped), as ecp.unfollow does
    IF NEW.state = 'cancelled' AND NEW.action = 'follow' THEN
        DELETE FROM ecp.follower WHERE run_id = NEW.id;
    END IF;
    RETURN NEW;
END $$;

-- Trigger clear_failure: a resumed run has not failed (yet); the error it
-- recovered from is kept apart, so last_error IS NOT NULL means failed.
CREATE FUNCTION ecp_internal._clear_failure() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.state = 'running' AND OLD.state = 'failed' THEN
        NEW.failure_class := NULL;
        NEW.failure_attempts := NULL;
        NEW.recovered_error := OLD.last_error;
        NEW.last_error := NULL;
    END IF;
    RETURN NEW;
END $$;

-- Trigger clear_paused_reason: a paused run that goes on is no longer
-- paused for a reason.
CREATE FUNCTION ecp_internal._clear_paused_reason() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.state <> 'paused' THEN
        NEW.paused_reason := NULL;
    END IF;
    RETURN NEW;
END $$;

-- A new pending run (the trigger prepare checks the task and decides the
-- rest): of all the task's rows or of only_ids, maybe the retry of a run.
CREATE FUNCTION ecp_internal._create_run(task_id bigint, only_ids text[], retry_of bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    run_id bigint;
BEGIN
    -- the trigger prepare checks the task and decides the rest
    INSERT INTO ecp.run (task_id, only_ids, retry_of) VALUES (task_id, only_ids, retry_of)
    RETURNING id INTO run_id;
    PERFORM ecp_internal._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;

-- The same, with a start time and a maintenance action.
CREATE FUNCTION ecp_internal._create_run(task_id bigint, only_ids text[], retry_of bigint,
                                not_before timestamptz, action text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    run_id bigint;
BEGIN
    -- the trigger prepare checks the task and decides the rest; only the
    -- extension's owner may name action (ecp_internal._start_maintenance)
    IF action IS NULL THEN
        INSERT INTO ecp.run (task_id, only_ids, retry_of, not_before)
        VALUES (task_id, only_ids, retry_of, not_before)
        RETURNING id INTO run_id;
    ELSE
        INSERT INTO ecp.run (task_id, only_ids, retry_of, not_before, action)
        VALUES (task_id, only_ids, retry_of, not_before, action)
        RETURNING id INTO run_id;
    END IF;
    PERFORM ecp_internal._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;

-- ids: an array of text, integers or uuids (ARRAY['a'], ARRAY[1, 2], an
-- untyped '{1,2}', NULL); anycompatiblearray takes each of them without
-- making a call ambiguous, an untyped literal or NULL as text[].  ids_from:
-- a relation or a query to read them from (the trigger copy_ids).
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

-- A new run of the same task over the ids in failed_docs of a finished
-- run (after fixing the data or the mapping).
CREATE FUNCTION ecp.retry_failed(run bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    r ecp.run;
    ids text[];
BEGIN
    r := ecp_internal._run_for_update(run, ARRAY['succeeded', 'failed', 'cancelled'], 'retried');
    SELECT array_agg(DISTINCT f.doc_id ORDER BY f.doc_id) INTO ids
      FROM ecp.failed_doc f WHERE f.run_id = run AND f.doc_id IS NOT NULL;
    IF ids IS NULL THEN
        RAISE EXCEPTION 'run % has no failed documents with an id to retry', run
              USING ERRCODE = 'no_data_found',
                    HINT = 'SELECT * FROM ecp.failed_docs WHERE run_id = ' || run || ' shows what failed.';
    END IF;
    RETURN ecp_internal._create_run(r.task_id, ids, run);
END $$;

CREATE FUNCTION ecp.retry_failed(task text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN ecp.retry_failed(ecp_internal._latest_run(task));
END $$;
COMMENT ON FUNCTION ecp.retry_failed(text) IS 'a new run over the failed documents of the latest run of a task';

-- A run that is in the state a verb asks for already: a NOTICE, and the
-- verb does nothing (as pg_cron's are, so a script may repeat them).
CREATE FUNCTION ecp_internal._already(run bigint, state text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    IF EXISTS (SELECT 1 FROM ecp.run r WHERE r.id = run AND r.state = state) THEN
        RAISE NOTICE 'run % is already %', run, state;
        RETURN true;
    END IF;
    RETURN false;
END $$;

-- The run a verb given a task's name acts on: the task's latest run
-- (maintenance runs aside).
CREATE FUNCTION ecp_internal._latest_run(task text) RETURNS bigint
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

-- The state changes a role may make; the triggers check_transition and
-- on_state do the rest.  Each takes a run id or a task's name (its latest
-- run).
CREATE FUNCTION ecp.pause(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    IF ecp_internal._already(run, 'paused') THEN
        RETURN;
    END IF;
    PERFORM ecp_internal._run_for_update(run, ARRAY['pending', 'running'], 'paused');
    UPDATE ecp.run SET state = 'paused' WHERE id = run;
END $$;

CREATE FUNCTION ecp.pause(task text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp.pause(ecp_internal._latest_run(task));
END $$;
COMMENT ON FUNCTION ecp.pause(text) IS 'pause the latest run of a task';

CREATE FUNCTION ecp.resume(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    IF ecp_internal._already(run, 'running') THEN
        RETURN;
    END IF;
    PERFORM ecp_internal._run_for_update(run, ARRAY['paused', 'failed'], 'resumed');
    -- the trigger on_state puts the parts back from their checkpoints
    UPDATE ecp.run SET state = 'running' WHERE id = run;
    PERFORM ecp_internal._warn_if_not_launcher_database(run);
END $$;

CREATE FUNCTION ecp.resume(task text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp.resume(ecp_internal._latest_run(task));
END $$;
COMMENT ON FUNCTION ecp.resume(text) IS 'resume the latest run of a task';

CREATE FUNCTION ecp.cancel(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    IF ecp_internal._already(run, 'cancelled') THEN
        RETURN;
    END IF;
    PERFORM ecp_internal._run_for_update(run, ARRAY['pending', 'running', 'paused'], 'cancelled');
    UPDATE ecp.run SET state = 'cancelled' WHERE id = run;
END $$;

CREATE FUNCTION ecp.cancel(task text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp.cancel(ecp_internal._latest_run(task));
END $$;
COMMENT ON FUNCTION ecp.cancel(text) IS 'cancel the latest run of a task';

-- ecp.cancel can drop a cancelled migration's half-built index (by a
-- maintenance run: only a worker talks to the cluster).
CREATE FUNCTION ecp.cancel(run bigint, drop_index boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    m ecp.migration;
BEGIN
    IF NOT ecp_internal._already(run, 'cancelled') THEN
        PERFORM ecp_internal._run_for_update(run, ARRAY['pending', 'running', 'paused'], 'cancelled');
        UPDATE ecp.run SET state = 'cancelled' WHERE id = run;
    END IF;
    IF drop_index THEN
        SELECT * INTO m FROM ecp.migration WHERE run_id = run;
        IF NOT FOUND OR m.state <> 'loading' THEN
            RAISE EXCEPTION 'run % has no half-built index to drop', run
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'drop_index is for a migration (mode alias_swap) cancelled before its swap.';
        END IF;
        PERFORM ecp_internal._start_maintenance(m.task_id, 'drop_index');
    END IF;
END $$;
COMMENT ON FUNCTION ecp.cancel(bigint, boolean) IS
  'stop a run for good; drop_index => true also drops the new index of a migration cancelled before its swap';

-- Cut a split part into key ranges, from the key's smallest and largest
-- value that its worker read as the owner: n ranges, from <= key < to,
-- the first open below and the last open above, so every key (also one
-- added during the run, or below the minimum) is in exactly one range.
-- Only ecp's workers call it.
CREATE FUNCTION ecp_internal._split_part(run bigint, low bigint, high bigint, n integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bounds numeric[];
    width numeric;
    owner regrole;
BEGIN
    SELECT p.owner INTO owner FROM ecp.part p
     WHERE p.run_id = run AND p.part_no = 0 AND p.source->>'kind' = 'split' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;                       -- split already (a worker that came back)
    END IF;
    IF low IS NOT NULL THEN
        n := least(n::numeric, high::numeric - low::numeric + 1)::integer;
    END IF;
    IF low IS NULL OR n <= 1 THEN
        UPDATE ecp.part SET source = '{"kind": "query", "query": 0}'
         WHERE run_id = run AND part_no = 0;
        RETURN 1;
    END IF;
    width := (high::numeric - low::numeric + 1) / n;
    SELECT array_agg(floor(low + width * i) ORDER BY i) INTO bounds
      FROM generate_series(1, n - 1) i;
    UPDATE ecp.part
       SET source = jsonb_build_object('kind', 'range', 'query', 0, 'from', NULL, 'to', bounds[1]::bigint)
     WHERE run_id = run AND part_no = 0;
    INSERT INTO ecp.part (run_id, part_no, owner, source)
    SELECT run, i, owner,
           jsonb_build_object('kind', 'range', 'query', 0, 'from', bounds[i]::bigint,
                              'to', CASE WHEN i < n - 1 THEN bounds[i + 1]::bigint END)
      FROM generate_series(1, n - 1) i;
    PERFORM ecp_internal._wake_launcher_at_commit();
    RETURN n;
END $$;

-- What a part reads, for people: the query, the key range, the ids or the
-- file (a URL without its query string: a presigned signature is a
-- credential); a migration's own parts say their step.
CREATE FUNCTION ecp_internal._part_source_text(source jsonb, t ecp.task, r ecp.run) RETURNS text
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
