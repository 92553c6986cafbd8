-- ecp 0.4 -> 0.5: security, round two (issue 20).
--
-- * ecp's own SQL never resolves a name through a task's search_path:
--   the worker qualifies every name it adds around the query and checks
--   the type of every column it reads (C); ecp.preview qualifies its own.
-- * transform is bound when the task is written: resolved under
--   pg_catalog, pg_temp and stored as an OID (ecp.task.transform_fn);
--   the worker checks that function's signature and calls only it.
-- * SECURITY DEFINER functions trust session_user only where it is who
--   acts (not inside an ecp worker's owner code or another
--   security-restricted operation): ecp._note_cron_skip, and the new
--   ecp._start_maintenance, which alone inserts maintenance runs.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.5'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- transform: bound by OID when the task is written.
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.task ADD COLUMN transform_fn regprocedure;
COMMENT ON COLUMN ecp.task.transform_fn IS
  'the function option transform named when the task was written, resolved under search_path pg_catalog, pg_temp; the worker calls this one';

-- Runs last of the BEFORE triggers (by name), after check_writes checked
-- the function: whatever a role wrote into transform_fn is replaced.
CREATE FUNCTION ecp._bind_transform() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.transform_fn := CASE WHEN NEW.options ? 'transform'
                             THEN pg_catalog.to_regprocedure((NEW.options->>'transform') || '(pg_catalog.jsonb)') END;
    RETURN NEW;
END $$;
CREATE TRIGGER transform_binding BEFORE INSERT OR UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp._bind_transform();

-- Tasks of 0.4 are bound as they are (their other checks are not run again).
SET LOCAL session_replication_role = replica;
UPDATE ecp.task
   SET transform_fn = pg_catalog.to_regprocedure((options->>'transform') || '(pg_catalog.jsonb)')
 WHERE options ? 'transform';
RESET session_replication_role;

-- ---------------------------------------------------------------------------
-- Who acts, for SECURITY DEFINER functions.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp._session_user_acts() RETURNS boolean
AS 'MODULE_PATHNAME', 'ecp_session_user_acts' LANGUAGE C STRICT VOLATILE;

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
    -- what the row says must be true: the task has that run in progress
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

-- ---------------------------------------------------------------------------
-- Maintenance runs (rollback, drop_index): inserted only by
-- ecp._start_maintenance, which checks the caller owns the task and that
-- the migration is in the state the action needs; roles may not INSERT
-- action any more.
-- ---------------------------------------------------------------------------
REVOKE INSERT (action) ON ecp.run FROM PUBLIC;

CREATE OR REPLACE FUNCTION ecp._create_run(task_id bigint, only_ids text[], retry_of bigint,
                                not_before timestamptz, action text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    run_id bigint;
BEGIN
    -- the trigger prepare checks the task and decides the rest; only the
    -- extension's owner may name action (ecp._start_maintenance)
    IF action IS NULL THEN
        INSERT INTO ecp.run (task_id, only_ids, retry_of, not_before)
        VALUES (task_id, only_ids, retry_of, not_before)
        RETURNING id INTO run_id;
    ELSE
        INSERT INTO ecp.run (task_id, only_ids, retry_of, not_before, action)
        VALUES (task_id, only_ids, retry_of, not_before, action)
        RETURNING id INTO run_id;
    END IF;
    PERFORM ecp._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;

CREATE FUNCTION ecp._start_maintenance(task_id bigint, action text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    m ecp.migration;
    run_id bigint;
    operator text := session_user;
BEGIN
    IF NOT ecp._session_user_acts() THEN
        RAISE EXCEPTION 'maintenance runs are not started from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE id = task_id;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task % is not yours', task_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF action = 'rollback' THEN
        SELECT * INTO m FROM ecp.migration WHERE migration.task_id = t.id AND state IN ('swapped', 'rolled back')
         ORDER BY swapped_at DESC LIMIT 1;
        IF NOT FOUND OR m.state <> 'swapped' OR coalesce(cardinality(m.old_indices), 0) = 0 OR m.old_dropped THEN
            RAISE EXCEPTION 'task "%" has no swap to roll back', t.name
                  USING ERRCODE = 'object_not_in_prerequisite_state',
                        HINT = 'Call ecp.rollback(task): it says why.';
        END IF;
    ELSIF action = 'drop_index' THEN
        IF NOT EXISTS (SELECT 1 FROM ecp.migration mg JOIN ecp.run r ON r.id = mg.run_id
                        WHERE mg.task_id = t.id AND mg.state = 'loading' AND r.state = 'cancelled') THEN
            RAISE EXCEPTION 'task "%" has no cancelled migration whose index could be dropped', t.name
                  USING ERRCODE = 'object_not_in_prerequisite_state',
                        HINT = 'Call ecp.cancel(run, drop_index => true).';
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown maintenance action "%"', action USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the flow names the caller, not this function's owner
    PERFORM set_config('ecp.acting_role', operator, true);
    PERFORM set_config('ecp.starting_maintenance', 'on', true);
    run_id := ecp._create_run(t.id, NULL, NULL, NULL, action);
    PERFORM set_config('ecp.starting_maintenance', 'off', true);
    PERFORM set_config('ecp.acting_role', '', true);
    RETURN run_id;
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
    SELECT id INTO busy FROM ecp.run
     WHERE task_id = t.id AND state IN ('pending', 'running', 'paused') LIMIT 1;
    IF FOUND THEN
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
    NEW.only_ids := CASE WHEN NEW.action IS NULL THEN coalesce(NEW.only_ids, t.ids) END;
    IF NEW.only_ids IS NOT NULL AND t.query IS NULL
       AND NOT (ecp._task_writes_ids(t) AND t.queries IS NULL) THEN
        RAISE EXCEPTION 'task "%" has no query to look ids up with', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = CASE WHEN t.queries IS NOT NULL
                                THEN 'A task of queries reads shards; create a task whose one query unions them for id runs.'
                                ELSE 'Id runs need a task with query => ''SELECT ...''.' END;
    END IF;
    PERFORM ecp._check_ids(NEW.only_ids, 'ids');
    NEW.owner := t.owner;
    NEW.state := 'pending';
    NEW.operator := ecp._operator();
    NEW.changed_by := NEW.operator;
    NEW.total := CASE WHEN NEW.action IS NOT NULL THEN 0 ELSE cardinality(NEW.only_ids) END;
    NEW.total_is_estimate := CASE WHEN NEW.only_ids IS NOT NULL OR NEW.action IS NOT NULL THEN false END;
    NEW.created_at := now();
    NEW.started_at := NULL;
    NEW.finished_at := NULL;
    NEW.last_error := NULL;
    NEW.paused_reason := NULL;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ecp.cancel(run bigint, drop_index boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    m ecp.migration;
BEGIN
    PERFORM ecp._run_for_update(run, ARRAY['pending', 'running', 'paused'], 'cancelled');
    UPDATE ecp.run SET state = 'cancelled' WHERE id = run;
    IF drop_index THEN
        SELECT * INTO m FROM ecp.migration WHERE run_id = run;
        IF NOT FOUND OR m.state <> 'loading' THEN
            RAISE EXCEPTION 'run % has no half-built index to drop', run
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'drop_index is for a migration (mode alias_swap) cancelled before its swap.';
        END IF;
        PERFORM ecp._start_maintenance(m.task_id, 'drop_index');
    END IF;
END $$;
COMMENT ON FUNCTION ecp.cancel(bigint, boolean) IS
  'stop a run for good; drop_index => true also drops the new index of a migration cancelled before its swap';

CREATE OR REPLACE FUNCTION ecp.rollback(task text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    m ecp.migration;
    run_id bigint;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE name = rollback.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object';
    END IF;
    SELECT * INTO m FROM ecp.migration WHERE task_id = t.id AND state IN ('swapped', 'rolled back')
     ORDER BY swapped_at DESC LIMIT 1;
    IF NOT FOUND OR m.state <> 'swapped' THEN
        RAISE EXCEPTION 'task "%" has no swap to roll back', task
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'SELECT * FROM ecp.migrations shows its migrations.';
    END IF;
    IF coalesce(cardinality(m.old_indices), 0) = 0 THEN
        RAISE EXCEPTION 'the alias "%" pointed at no index before run % swapped it: nothing to roll back to', m.alias, m.run_id
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF m.old_dropped THEN
        RAISE EXCEPTION 'cannot roll back alias "%": its index before the swap (%) was dropped', m.alias,
              array_to_string(m.old_indices, ', ')
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'keep_old false drops the old index after a swap; run a migration to rebuild one.';
    END IF;
    run_id := ecp._start_maintenance(t.id, 'rollback');
    RETURN run_id;
END $$;
COMMENT ON FUNCTION ecp.rollback(text) IS
  'point the alias of an alias_swap task back at the index it had before the last swap (a run: ecp.progress shows it)';

-- ---------------------------------------------------------------------------
-- ecp.preview runs in the caller's session under the caller's search_path
-- (its query needs it): its own names are qualified.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION ecp.preview(query text, n integer DEFAULT 1)
RETURNS SETOF jsonb LANGUAGE plpgsql AS $$
DECLARE
    columns text[];
    facts jsonb;
BEGIN
    IF n IS NULL OR n OPERATOR(pg_catalog.<) 0 OR n OPERATOR(pg_catalog.>) 10000 THEN
        RAISE EXCEPTION 'n must be between 0 and 10000, not %', coalesce(n::pg_catalog.text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    columns := ecp._check_query(query, pg_catalog.current_setting('search_path'));
    facts := ecp._column_facts(query, pg_catalog.current_setting('search_path'));
    RAISE NOTICE 'a task of this query gets _id from column "%" and pages by it, unless options id_column and key_column say otherwise',
          coalesce(facts OPERATOR(pg_catalog.->>) 'primary_key', columns[1]);
    RETURN QUERY EXECUTE pg_catalog.format(E'SELECT pg_catalog.to_jsonb("ecp:row") FROM (%s\n) AS "ecp:row" LIMIT %s',
                                           ecp._statement_text(query), n);
END $$;

-- ---------------------------------------------------------------------------
-- The ids of an id run as rows, read a batch at a time by the worker.
-- ---------------------------------------------------------------------------
CREATE TABLE ecp.run_id (
    run_id bigint NOT NULL REFERENCES ecp.run(id) ON DELETE CASCADE,
    n      integer NOT NULL,
    id     text NOT NULL,
    PRIMARY KEY (run_id, n)
);
COMMENT ON TABLE ecp.run_id IS 'the ids of an id run (ecp.run.only_ids), one row each in order: workers read them a batch at a time';
SELECT pg_catalog.pg_extension_config_dump('ecp.run_id', '');

CREATE FUNCTION ecp._store_run_ids() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.run_id (run_id, n, id)
    SELECT NEW.id, u.n, u.id FROM unnest(NEW.only_ids) WITH ORDINALITY AS u(id, n);
    RETURN NULL;
END $$;
CREATE TRIGGER store_ids AFTER INSERT ON ecp.run
    FOR EACH ROW WHEN (NEW.only_ids IS NOT NULL) EXECUTE FUNCTION ecp._store_run_ids();

-- Runs of 0.4 get their rows too.
INSERT INTO ecp.run_id (run_id, n, id)
SELECT r.id, u.n, u.id FROM ecp.run r, unnest(r.only_ids) WITH ORDINALITY AS u(id, n)
 WHERE r.only_ids IS NOT NULL;

-- ---------------------------------------------------------------------------
-- No table-level DELETE on ecp.consumer (it allowed LOCK TABLE ... ACCESS
-- EXCLUSIVE by any role); ecp.drop_consumer instead.
-- ---------------------------------------------------------------------------
REVOKE DELETE ON ecp.consumer FROM PUBLIC;

CREATE FUNCTION ecp.drop_consumer(name text) RETURNS void
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
                    HINT = 'A consumer is dropped when no task uses it.';
    END IF;
    DELETE FROM ecp.consumer WHERE id = c.id;
END $$;
COMMENT ON FUNCTION ecp.drop_consumer(text) IS 'drop a consumer of your own that no task uses';
