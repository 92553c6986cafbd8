-- ecp 0.6 -> 0.7: following changes (issue 22).
--
-- * ecp.follow(task) / ecp.unfollow(task): a follower part keeps the
--   task's index equal to its source (logical decoding with pgoutput,
--   statement triggers when wal_level is not logical, polling with
--   since_column); ecp.followers shows them.
-- * task option since_column: incremental runs from a watermark.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.7'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Following changes
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.run DROP CONSTRAINT run_action_check;
ALTER TABLE ecp.run ADD CONSTRAINT run_action_check CHECK (action IN ('rollback', 'drop_index', 'follow'));

-- (the flow's CHECK with the follow actions: see the since_column section,
-- which replaces it once with every new action)

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
    NEW.total := CASE WHEN NEW.action = 'follow' THEN NULL
                      WHEN NEW.action IS NOT NULL THEN 0 ELSE cardinality(NEW.only_ids) END;
    NEW.total_is_estimate := CASE WHEN NEW.action = 'follow' THEN NULL
                                  WHEN NEW.only_ids IS NOT NULL OR NEW.action IS NOT NULL THEN false END;
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
    ELSIF NEW.action IS NOT NULL THEN
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
       w.retry_class
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
              count(*) FILTER (WHERE pt.state = 'done') AS parts_done
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

-- A followed task (ecp.follow): its capture mode, the run whose follower
-- part applies the changes, and for decoding its slot and publication
-- (named ecp_follow_<task id>, owned by the extension's owner); in mode
-- poll, its latest poll run (a full run the launcher starts every
-- poll_interval: section "Following by polling").  Not dumped: a
-- restored follower would have no slot or triggers; follow again.
CREATE TABLE ecp.follower (
    task_id          bigint PRIMARY KEY REFERENCES ecp.task(id) ON DELETE CASCADE,
    run_id           bigint REFERENCES ecp.run(id) ON DELETE SET NULL,
    mode             text NOT NULL CHECK (mode IN ('decoding', 'trigger', 'poll')),
    backfill         boolean NOT NULL,
    slot_name        text,
    publication_name text,
    consistent_lsn   pg_lsn,
    confirmed_lsn    pg_lsn,
    changes_applied  bigint NOT NULL DEFAULT 0,
    last_applied_at  timestamptz,
    wal_alerted_at   timestamptz,
    owner            regrole NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    poll_interval    interval,
    polled_at        timestamptz
);
COMMENT ON TABLE ecp.follower IS 'a followed task: capture mode, its follow run, its slot and publication (decoding)';
COMMENT ON COLUMN ecp.follower.consistent_lsn IS 'decoding: where the slot began (changes committed after it are followed)';
COMMENT ON COLUMN ecp.follower.confirmed_lsn IS 'decoding: the slot position ecp last confirmed (changes before it are in the queue or applied)';
COMMENT ON COLUMN ecp.follower.poll_interval IS 'poll: how long after its last poll run finished the launcher starts the next';
COMMENT ON COLUMN ecp.follower.polled_at IS 'poll: when the last successful poll run before run_id started (a change before it, less since_overlap, is in the index)';
ALTER TABLE ecp.follower ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.follower USING (pg_has_role(owner, 'MEMBER'));

-- The tables a follower watches, and how a changed row becomes document
-- ids: the values of key_column are the ids, or (ids_query) the ids are
-- what that query returns for them ($1, a text[]), run as the owner.
CREATE TABLE ecp.follow_table (
    task_id    bigint NOT NULL REFERENCES ecp.follower(task_id) ON DELETE CASCADE,
    relid      oid NOT NULL,
    table_name text NOT NULL,
    key_column text NOT NULL,
    ids_query  text,
    owner      regrole NOT NULL,
    PRIMARY KEY (task_id, relid)
);
COMMENT ON TABLE ecp.follow_table IS 'a followed table: the column whose values (or ids_query over them) are the document ids to re-sync';
ALTER TABLE ecp.follow_table ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.follow_table USING (pg_has_role(owner, 'MEMBER'));

-- Changes waiting to be applied: a key of a followed table that changed
-- (key NULL: the table was truncated).  The triggers (mode trigger) or
-- the follower itself (mode decoding, from the slot) append; the follower
-- deletes what it applied in the transaction of its checkpoint.  No
-- foreign key: a statement's trigger inserts without checking one.
CREATE TABLE ecp.follow_queue (
    qid          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id      bigint NOT NULL,
    relid        oid NOT NULL,
    key          text,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    owner        regrole NOT NULL
);
CREATE INDEX ON ecp.follow_queue (task_id, qid);
COMMENT ON TABLE ecp.follow_queue IS 'changed keys of followed tables, waiting for the follower';
ALTER TABLE ecp.follow_queue ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.follow_queue USING (pg_has_role(owner, 'MEMBER'));

-- The tables a query reads (views expanded), and the table column its
-- id column comes from when it is a plain column: read under the task's
-- search_path, as the caller.
CREATE FUNCTION ecp._query_tables(query text, search_path text, id_column text,
                                  OUT relid oid, OUT relkind "char", OUT id_source text)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'ecp_query_tables' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION ecp._query_tables(text, text, text) IS
  'the relations a query reads (views expanded), and for the one its id column comes from, that column';

-- Trigger mode: one AFTER ... FOR EACH STATEMENT trigger per event with
-- transition tables appends the changed keys, one INSERT per statement.
-- It runs as the extension's owner (roles cannot write the queue) with
-- the key column it was installed for, read from ecp.follow_table by the
-- table it fires on, never from an argument a role could choose.
CREATE FUNCTION ecp._follow_enqueue() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ft ecp.follow_table;
BEGIN
    SELECT * INTO ft FROM ecp.follow_table
     WHERE task_id = TG_ARGV[0]::bigint AND relid = TG_RELID;
    IF NOT FOUND THEN
        RETURN NULL;    -- unfollowed in this transaction, or not ecp's trigger
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO ecp.follow_queue (task_id, relid, key, owner)
        VALUES (ft.task_id, ft.relid, NULL, ft.owner);
    ELSIF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO ecp.follow_queue (task_id, relid, key, owner) '
                       'SELECT DISTINCT $1, $2, (n.%1$I)::text, $3 FROM ecp_new n WHERE n.%1$I IS NOT NULL',
                       ft.key_column) USING ft.task_id, ft.relid, ft.owner;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO ecp.follow_queue (task_id, relid, key, owner) '
                       'SELECT DISTINCT $1, $2, (o.%1$I)::text, $3 FROM ecp_old o WHERE o.%1$I IS NOT NULL',
                       ft.key_column) USING ft.task_id, ft.relid, ft.owner;
    ELSE
        -- a row that moved (its key changed) re-syncs the old key too
        EXECUTE format('INSERT INTO ecp.follow_queue (task_id, relid, key, owner) '
                       'SELECT $1, $2, k, $3 FROM (SELECT (n.%1$I)::text FROM ecp_new n '
                       '                           UNION SELECT (o.%1$I)::text FROM ecp_old o) AS c(k) '
                       ' WHERE k IS NOT NULL',
                       ft.key_column) USING ft.task_id, ft.relid, ft.owner;
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._follow_enqueue() FROM PUBLIC;

-- The names of a follower's triggers on a table.
CREATE FUNCTION ecp._follow_trigger_names(task_id bigint) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['ecp_follow_' || task_id || '_insert', 'ecp_follow_' || task_id || '_update',
                 'ecp_follow_' || task_id || '_delete', 'ecp_follow_' || task_id || '_truncate']
$$;

CREATE FUNCTION ecp._follow_install_triggers(task_id bigint, relid oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    names text[] := ecp._follow_trigger_names(task_id);
    rel text := relid::regclass::text;
BEGIN
    -- CREATE TRIGGER waits for the table's open writers (SHARE ROW
    -- EXCLUSIVE): every write before it is committed (a backfill page
    -- reads it) or aborted, every write after it fires the trigger
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS ecp_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ecp._follow_enqueue(%L)', names[1], rel, task_id);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS ecp_old NEW TABLE AS ecp_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ecp._follow_enqueue(%L)', names[2], rel, task_id);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS ecp_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ecp._follow_enqueue(%L)', names[3], rel, task_id);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ecp._follow_enqueue(%L)', names[4], rel, task_id);
    -- session_replication_role = replica (pg_restore, some tools) must not silence them
    FOR i IN 1..4 LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', rel, names[i]);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._follow_install_triggers(bigint, oid) FROM PUBLIC;

-- What a follower leaves behind, removed: its triggers, its publication
-- and its slot (a slot retains WAL for ever: none may be left).  Called
-- when a follower row goes (unfollow, the task deleted, drop_owned) and
-- before DROP EXTENSION (utility_hook.c).  The slot is dropped once its
-- follower no longer holds it (it does only for the moment of a read).
CREATE FUNCTION ecp._follow_cleanup(f ecp.follower) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    trg record;
    tries integer := 0;
BEGIN
    FOR trg IN SELECT tg.tgname, tg.tgrelid::regclass AS rel FROM pg_trigger tg
                WHERE tg.tgname = ANY (ecp._follow_trigger_names(f.task_id))
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trg.tgname, trg.rel);
    END LOOP;
    DELETE FROM ecp.follow_queue WHERE task_id = f.task_id;
    IF f.publication_name IS NOT NULL THEN
        EXECUTE format('DROP PUBLICATION IF EXISTS %I', f.publication_name);
    END IF;
    IF f.slot_name IS NOT NULL THEN
        LOOP
            EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_replication_slots
                                   WHERE slot_name = f.slot_name AND active);
            tries := tries + 1;
            IF tries > 300 THEN
                RAISE EXCEPTION 'replication slot "%" of task % stays in use', f.slot_name, f.task_id
                      USING ERRCODE = 'object_in_use',
                            HINT = 'Its follower is reading; try again in a moment.';
            END IF;
            PERFORM pg_sleep(0.05);
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = f.slot_name) THEN
            PERFORM pg_drop_replication_slot(f.slot_name);
        END IF;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._follow_cleanup(ecp.follower) FROM PUBLIC;

CREATE FUNCTION ecp._follower_gone() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp._follow_cleanup(OLD);
    RETURN NULL;
END $$;
CREATE TRIGGER cleanup AFTER DELETE ON ecp.follower
    FOR EACH ROW EXECUTE FUNCTION ecp._follower_gone();

-- Every follower's capture removed (DROP EXTENSION ecp: utility_hook.c).
CREATE FUNCTION ecp._follow_cleanup_all() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f ecp.follower;
BEGIN
    FOR f IN SELECT * FROM ecp.follower LOOP
        PERFORM ecp._follow_cleanup(f);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._follow_cleanup_all() FROM PUBLIC;

-- How each table the task reads maps to document ids: option
-- follow_tables names a column ("schema.table": "column"), a column and a
-- query ({"column": ..., "ids": "SELECT ... = ANY($1)"}), or null (not
-- followed); the table the id column comes from maps by that column;
-- another table by its column named like the id column, unless that is
-- the table's own primary key (its values are that table's ids, not the
-- documents').  Read as the caller, under the task's search_path.
CREATE FUNCTION ecp._follow_plan(t ecp.task)
RETURNS TABLE (relid oid, relkind "char", key_column text, ids_query text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q record;
    mapping jsonb := coalesce(t.options->'follow_tables', '{}');
    entry jsonb;
    name text;
    id_col text := t.options->>'id_column';
    pk text[];
BEGIN
    FOR name IN SELECT jsonb_object_keys(mapping) LOOP
        IF to_regclass(name) IS NULL THEN
            RAISE EXCEPTION 'task "%": option follow_tables names "%", which is not a table', t.name, name
                  USING ERRCODE = 'undefined_table',
                        HINT = 'Name tables as schema.table, as the task''s query reads them.';
        END IF;
    END LOOP;
    FOR q IN SELECT * FROM ecp._query_tables(t.query, t.search_path, id_col) LOOP
        relid := q.relid;
        relkind := q.relkind;
        ids_query := NULL;
        SELECT m.value INTO entry FROM jsonb_each(mapping) m WHERE to_regclass(m.key) = q.relid;
        IF FOUND AND jsonb_typeof(entry) = 'null' THEN
            CONTINUE;
        ELSIF FOUND AND jsonb_typeof(entry) = 'string' THEN
            key_column := entry #>> '{}';
        ELSIF FOUND AND jsonb_typeof(entry) = 'object' AND jsonb_typeof(entry->'column') = 'string'
              AND jsonb_typeof(coalesce(entry->'ids', '""')) = 'string' THEN
            key_column := entry->>'column';
            ids_query := entry->>'ids';
        ELSIF FOUND THEN
            RAISE EXCEPTION 'task "%": option follow_tables: % maps to %, not a column or {"column": ..., "ids": ...}',
                  t.name, q.relid::regclass, entry
                  USING ERRCODE = 'invalid_parameter_value';
        ELSIF q.id_source IS NOT NULL THEN
            key_column := q.id_source;
        ELSE
            SELECT array_agg(a.attname::text) INTO pk FROM pg_index i
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = q.relid AND i.indisprimary;
            IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = q.relid AND a.attname = id_col
                              AND a.attnum > 0 AND NOT a.attisdropped)
               OR pk = ARRAY[id_col] THEN
                RAISE EXCEPTION 'task "%": a change to table % cannot be traced to documents', t.name, q.relid::regclass
                      USING ERRCODE = 'invalid_parameter_value',
                            HINT = format('Say how in option follow_tables, e.g. {"follow_tables": {"%s": {"column": "id", "ids": "SELECT o.%s FROM ... WHERE o.ref = ANY ($1::bigint[])"}}}, or {"%s": null} to not follow it.',
                                          q.relid::regclass, id_col, q.relid::regclass);
            END IF;
            key_column := id_col;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = q.relid AND a.attname = key_column
                          AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'task "%": table % has no column "%"', t.name, q.relid::regclass, key_column
                  USING ERRCODE = 'undefined_column',
                        HINT = 'Option follow_tables maps each table to one of its columns.';
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

-- The follower's tables and mode, created as the extension's owner after
-- ecp.follow checked them as the caller: checked again here for what the
-- caller could have changed (a role may call this directly).
CREATE FUNCTION ecp._follow_create(task_id bigint, mode text, backfill boolean, tables jsonb,
                                   poll_interval interval DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    tb record;
    run_id bigint;
    name text := 'ecp_follow_' || task_id;
    operator text := session_user;
    followed integer;
BEGIN
    IF NOT ecp._session_user_acts() THEN
        RAISE EXCEPTION 'tasks are not followed from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE id = task_id FOR UPDATE;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task % is not yours', task_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF mode NOT IN ('decoding', 'trigger', 'poll') THEN
        RAISE EXCEPTION 'unknown follow mode "%"', mode USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF mode = 'decoding' AND current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'mode decoding needs wal_level logical (it is %)', current_setting('wal_level')
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'ALTER SYSTEM SET wal_level = logical and restart, or follow in mode trigger.';
    END IF;
    SELECT count(*) INTO followed FROM ecp.follower f WHERE f.owner = t.owner;
    IF followed >= current_setting('ecp.max_followers_per_role')::integer THEN
        RAISE EXCEPTION 'role % follows % tasks already, the most ecp.max_followers_per_role allows', t.owner, followed
              USING ERRCODE = 'configuration_limit_exceeded',
                    HINT = 'ecp.unfollow a task first, or ask an administrator to raise ecp.max_followers_per_role.';
    END IF;
    IF mode = 'poll' THEN
        RETURN ecp._follow_poll_create(t, backfill, poll_interval, operator);
    END IF;
    IF mode = 'decoding' AND (SELECT count(*) FROM ecp.follower f WHERE f.mode = 'decoding')
                             >= current_setting('ecp.max_follow_slots')::integer THEN
        RAISE EXCEPTION 'ecp has % replication slots already, the most ecp.max_follow_slots allows',
              current_setting('ecp.max_follow_slots')
              USING ERRCODE = 'configuration_limit_exceeded',
                    HINT = 'Each slot decodes all WAL of the database; follow in mode trigger, or raise ecp.max_follow_slots.';
    END IF;
    INSERT INTO ecp.follower (task_id, mode, backfill, slot_name, publication_name, owner)
    VALUES (t.id, mode, backfill, CASE WHEN mode = 'decoding' THEN name END,
            CASE WHEN mode = 'decoding' THEN name END, t.owner);
    FOR tb IN SELECT (e->>'relid')::oid AS relid, e->>'key_column' AS key_column, e->>'ids_query' AS ids_query
                FROM jsonb_array_elements(tables) e
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = tb.relid AND c.relkind IN ('r', 'p')
                          AND c.relpersistence = 'p') THEN
            RAISE EXCEPTION 'relation % cannot be followed: only permanent tables can', tb.relid::regclass
                  USING ERRCODE = 'wrong_object_type',
                        HINT = 'Views are followed through their tables; unlogged and temporary tables cannot be followed; a foreign table is followed in mode poll (option since_column).';
        END IF;
        IF NOT has_table_privilege(t.owner, tb.relid, 'SELECT') THEN
            RAISE EXCEPTION 'role % may not read table %', t.owner, tb.relid::regclass
                  USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF mode = 'trigger' AND NOT has_table_privilege(t.owner, tb.relid, 'TRIGGER') THEN
            RAISE EXCEPTION 'role % may not create triggers on table %', t.owner, tb.relid::regclass
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = format('Mode trigger installs statement triggers: GRANT TRIGGER ON %s TO %s, or follow in mode decoding (wal_level logical).', tb.relid::regclass, t.owner);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = tb.relid AND a.attname = tb.key_column
                          AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'table % has no column "%"', tb.relid::regclass, tb.key_column
                  USING ERRCODE = 'undefined_column';
        END IF;
        IF mode = 'decoding' AND NOT ecp._in_replica_identity(tb.relid, tb.key_column) THEN
            RAISE EXCEPTION 'the replica identity of table % does not hold column "%"', tb.relid::regclass, tb.key_column
                  USING ERRCODE = 'object_not_in_prerequisite_state',
                        DETAIL = 'A deleted row is decoded with its replica identity columns only, so its documents could not be found.',
                        HINT = format('ALTER TABLE %s REPLICA IDENTITY USING INDEX <a unique index on %s>, or REPLICA IDENTITY FULL, or follow in mode trigger.',
                                      tb.relid::regclass, tb.key_column);
        END IF;
        INSERT INTO ecp.follow_table (task_id, relid, table_name, key_column, ids_query, owner)
        VALUES (t.id, tb.relid, tb.relid::regclass::text, tb.key_column, tb.ids_query, t.owner);
        IF mode = 'trigger' THEN
            PERFORM ecp._follow_install_triggers(t.id, tb.relid);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM ecp.follow_table ft WHERE ft.task_id = t.id) THEN
        RAISE EXCEPTION 'task "%" reads no table that can be followed', t.name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('ecp.acting_role', operator, true);
    PERFORM set_config('ecp.starting_maintenance', 'on', true);
    run_id := ecp._create_run(t.id, NULL, NULL, NULL, 'follow');
    PERFORM set_config('ecp.starting_maintenance', 'off', true);
    UPDATE ecp.follower f SET run_id = run_id WHERE f.task_id = t.id;
    PERFORM ecp._flow_event(run_id, 'follow',
                            jsonb_build_object('mode', mode, 'backfill', backfill,
                                               'tables', (SELECT jsonb_agg(ft.table_name ORDER BY ft.table_name)
                                                            FROM ecp.follow_table ft WHERE ft.task_id = t.id)));
    PERFORM set_config('ecp.acting_role', '', true);
    RETURN run_id;
END $$;

-- Whether a table's replica identity carries a column in deletes and
-- key-changing updates (the primary key by default, an index, or FULL).
CREATE FUNCTION ecp._in_replica_identity(relid oid, col text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE c.relreplident
             WHEN 'f' THEN true
             WHEN 'n' THEN false
             ELSE EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a
                            ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                           WHERE i.indrelid = c.oid AND a.attname = col
                             AND CASE c.relreplident WHEN 'd' THEN i.indisprimary ELSE i.indisreplident END)
           END
      FROM pg_class c WHERE c.oid = relid
$$;

CREATE FUNCTION ecp.follow(task text, backfill boolean DEFAULT true, mode text DEFAULT NULL,
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
COMMENT ON FUNCTION ecp.follow(text, boolean, text, interval) IS
  'keep the task''s index equal to its source: capture changes (decoding, or triggers), or poll with since_column every poll_interval (mode poll: foreign tables, queries), backfill => true loads everything first; returns the follow run (poll: the first poll run)';

CREATE FUNCTION ecp.unfollow(task text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    f ecp.follower;
    operator text := session_user;
BEGIN
    IF NOT ecp._session_user_acts() THEN
        RAISE EXCEPTION 'tasks are not unfollowed from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE name = unfollow.task;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists yours.';
    END IF;
    SELECT * INTO f FROM ecp.follower WHERE task_id = t.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE NOTICE 'task "%" is not followed', t.name;
        RETURN;
    END IF;
    PERFORM set_config('ecp.acting_role', operator, true);
    IF f.run_id IS NOT NULL THEN
        UPDATE ecp.part SET state = 'done', finished_at = now(), worker_pid = NULL
         WHERE run_id = f.run_id AND part_no = -2 AND state <> 'done';
        UPDATE ecp.run SET state = 'cancelled' WHERE id = f.run_id AND state IN ('pending', 'running', 'paused');
        PERFORM ecp._signal_run_at_commit(f.run_id);
        PERFORM ecp._flow_event(f.run_id, 'unfollow', jsonb_build_object('mode', f.mode));
    END IF;
    DELETE FROM ecp.follower WHERE task_id = t.id;     -- trigger cleanup: triggers, publication, slot
    PERFORM set_config('ecp.acting_role', '', true);
END $$;
COMMENT ON FUNCTION ecp.unfollow(text) IS
  'stop following a task: its follow run (poll: a poll run in progress) is cancelled, its triggers, publication and replication slot dropped';

-- One row per followed task.
CREATE VIEW ecp.followers WITH (security_invoker = true) AS
SELECT t.name AS task,
       f.mode,
       CASE WHEN f.mode = 'poll' AND r.state IN ('paused', 'failed') THEN r.state
            WHEN f.mode = 'poll' AND NOT t.options ? 'since_column' THEN 'stopped'
            WHEN f.mode = 'poll' AND r.state IN ('pending', 'running') AND f.backfill AND f.polled_at IS NULL THEN 'backfilling'
            WHEN f.mode = 'poll' THEN 'following'
            WHEN r.state IS NULL THEN 'stopped'
            WHEN r.state IN ('pending', 'running') AND fp.state = 'running' THEN 'following'
            WHEN r.state IN ('pending', 'running') AND EXISTS (SELECT 1 FROM ecp.part lp WHERE lp.run_id = r.id AND lp.stage = 1 AND lp.state <> 'done') THEN 'backfilling'
            WHEN r.state IN ('pending', 'running') THEN 'starting'
            ELSE r.state END AS state,
       f.run_id AS run,
       CASE WHEN f.mode = 'decoding'
            THEN pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint END AS lag_bytes,
       round(extract(epoch FROM now() - CASE WHEN f.mode <> 'poll' THEN q.oldest
                                             WHEN r.state = 'succeeded' THEN r.started_at
                                             ELSE f.polled_at END)::numeric, 1) AS lag_seconds,
       CASE WHEN f.mode = 'poll' THEN f.changes_applied + coalesce(pr.applied, 0)
            ELSE coalesce(fp.processed + fp.deleted, 0) END AS changes_applied,
       coalesce(q.queued, 0) AS queue_length,
       CASE WHEN f.mode = 'poll' AND r.state = 'succeeded' THEN r.finished_at ELSE f.last_applied_at END AS last_applied_at,
       CASE WHEN f.mode = 'decoding' THEN pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint END AS retained_wal_bytes,
       s.wal_status,
       coalesce(r.last_error, fp.retry_error) AS last_error,
       (SELECT string_agg(ft.table_name, ', ' ORDER BY ft.table_name) FROM ecp.follow_table ft WHERE ft.task_id = f.task_id) AS tables,
       f.slot_name,
       CASE WHEN f.mode = 'poll' AND r.id IS NULL THEN now()
            WHEN f.mode = 'poll' AND r.state IN ('succeeded', 'cancelled') THEN r.finished_at + f.poll_interval
       END AS next_poll_at
  FROM ecp.follower f
  JOIN ecp.task t ON t.id = f.task_id
  LEFT JOIN ecp.run r ON r.id = f.run_id
  LEFT JOIN ecp.part fp ON fp.run_id = f.run_id AND fp.part_no = -2
  LEFT JOIN pg_replication_slots s ON s.slot_name = f.slot_name
  LEFT JOIN LATERAL (SELECT count(*) AS queued, min(fq.committed_at) AS oldest
                       FROM ecp.follow_queue fq WHERE fq.task_id = f.task_id) q ON true
  LEFT JOIN LATERAL (SELECT sum(pp.processed + pp.deleted) AS applied
                       FROM ecp.part pp WHERE pp.run_id = f.run_id AND f.mode = 'poll') pr ON true;
COMMENT ON VIEW ecp.followers IS 'followed tasks: mode, state, lag, queue, changes applied (mode poll: documents sent by all of its poll runs, the overlap''s again each time; lag: since its last successful poll run started; next_poll_at)';

GRANT SELECT ON ecp.follower, ecp.follow_table, ecp.follow_queue, ecp.followers TO PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp._follow_cleanup(ecp.follower) FROM PUBLIC;
-- The launcher's look at the followers' slots, at every pass: an alert
-- when a slot retains more WAL than ecp.follow_max_retained_wal (once,
-- until it falls below again), or was invalidated (wal_status lost: the
-- follower cannot go on; unfollow and follow again).
CREATE FUNCTION ecp._watch_followers() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w record;
    limit_bytes bigint := pg_size_bytes(current_setting('ecp.follow_max_retained_wal'));
BEGIN
    FOR w IN SELECT f.task_id, f.run_id, f.slot_name, f.wal_alerted_at, s.wal_status,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained
               FROM ecp.follower f JOIN pg_replication_slots s ON s.slot_name = f.slot_name
              WHERE f.mode = 'decoding' AND f.run_id IS NOT NULL
    LOOP
        IF (w.retained > limit_bytes OR w.wal_status = 'lost') AND w.wal_alerted_at IS NULL THEN
            PERFORM ecp._alert(w.run_id, CASE WHEN w.wal_status = 'lost' THEN 'follow slot lost'
                                              ELSE 'follow retained wal' END, NULL,
                               CASE WHEN w.wal_status = 'lost'
                                    THEN format('replication slot %s was invalidated (max_slot_wal_keep_size): its follower cannot go on; ecp.unfollow and ecp.follow the task again', w.slot_name)
                                    ELSE format('replication slot %s retains %s of WAL, more than ecp.follow_max_retained_wal (%s): its follower is behind (paused, failed, or its consumer is down)',
                                                w.slot_name, pg_size_pretty(w.retained), pg_size_pretty(limit_bytes)) END);
            UPDATE ecp.follower SET wal_alerted_at = now() WHERE task_id = w.task_id;
        ELSIF w.retained <= limit_bytes AND w.wal_status <> 'lost' AND w.wal_alerted_at IS NOT NULL THEN
            UPDATE ecp.follower SET wal_alerted_at = NULL WHERE task_id = w.task_id;
        END IF;
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._watch_followers() FROM PUBLIC;
CREATE OR REPLACE FUNCTION ecp._on_run_state() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.state = 'running' AND OLD.state IN ('paused', 'failed') THEN
        UPDATE ecp.part SET state = 'pending', recoveries = 0, last_error = NULL,
                            retry_attempt = NULL, retry_at = NULL, retry_error = NULL, retry_class = NULL
         WHERE run_id = NEW.id AND state IN ('failed', 'running');
        IF NOT EXISTS (SELECT 1 FROM ecp.part WHERE run_id = NEW.id AND state <> 'done') THEN
            UPDATE ecp.run SET state = 'succeeded', finished_at = now() WHERE id = NEW.id;
        END IF;
        PERFORM ecp._wake_launcher_at_commit();
    ELSIF NEW.state IN ('paused', 'cancelled') THEN
        PERFORM ecp._signal_run_at_commit(NEW.id);
    END IF;
    -- a cancelled follow run cannot go on: its task is unfollowed (slot,
    -- publication, triggers and queue dropped), as ecp.unfollow does
    IF NEW.state = 'cancelled' AND NEW.action = 'follow' THEN
        DELETE FROM ecp.follower WHERE run_id = NEW.id;
    END IF;
    RETURN NEW;
END $$;

-- (follow section end)

-- ---------------------------------------------------------------------------
-- Incremental runs: since_column
-- ---------------------------------------------------------------------------
-- Task options since_column and since_overlap (the option contract, in
-- C); each part keeps the largest since value it acknowledged; a
-- successful full run moves the task's watermark (ecp.watermark) up to
-- the largest, with a flow row "watermark"; ecp.reset_watermark; the
-- watermark in ecp.tasks.
ALTER TABLE ecp.part ADD COLUMN since_max text,
                     ADD COLUMN since_type regtype;

-- The flow action "watermark".  As in 0.6, an install that still holds
-- rows roles wrote up to 0.1 keeps the CHECK NOT VALID, with a WARNING.
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
                          'follow', 'unfollow', 'capture ready', 'truncate seen', 'watermark')) NOT VALID;
DO $$
BEGIN
    ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check;
EXCEPTION WHEN check_violation THEN
    RAISE WARNING 'ecp.flow_log holds rows with an action ecp never wrote (rows written by roles up to ecp 0.1): its CHECK flow_log_action_check checks new rows only'
          USING HINT = 'SELECT action, count(*) FROM ecp.flow_log WHERE action <> ALL (ecp._flow_actions()) GROUP BY 1 lists them; '
                       'update or delete them, then ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check.';
END $$;

-- One watermark per task and query (0: its query; n: queries[n]): the
-- largest value of since_column that the task's last successful full run
-- read.  Written only by ecp (the trigger watermark on ecp.run, a
-- polling follower, ecp.reset_watermark); the value is text in one form
-- whatever DateStyle and TimeZone say (ISO 8601, timestamptz in UTC),
-- compared in value_type.
CREATE TABLE ecp.watermark (
    task_id     bigint NOT NULL REFERENCES ecp.task(id) ON DELETE CASCADE,
    query_no    integer NOT NULL,
    value       text NOT NULL,
    value_type  regtype NOT NULL,
    run_id      bigint REFERENCES ecp.run(id) ON DELETE SET NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    owner       regrole NOT NULL,
    PRIMARY KEY (task_id, query_no)
);
COMMENT ON TABLE ecp.watermark IS 'incremental runs (task option since_column): the largest since_column value the last successful full run read, per task and query';
COMMENT ON COLUMN ecp.watermark.query_no IS '0: the task''s query; n: queries[n]';
COMMENT ON COLUMN ecp.watermark.value IS 'ISO 8601 for dates and timestamps (timestamptz in UTC), decimal for integers; compared as value_type';
COMMENT ON COLUMN ecp.watermark.run_id IS 'the run that set it';
SELECT pg_catalog.pg_extension_config_dump('ecp.watermark', '');
ALTER TABLE ecp.watermark ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.watermark USING (pg_has_role(owner, 'MEMBER'));

COMMENT ON COLUMN ecp.part.since_max IS 'since_column: the largest value the part acknowledged (the form of ecp.watermark.value)';
COMMENT ON COLUMN ecp.part.since_type IS 'since_column''s type, in which since_max compares';

-- The type of a query's output column, read under the task's search_path
-- (NULL: no such column).
CREATE FUNCTION ecp._column_type(query text, search_path text, column_name text) RETURNS regtype
    AS 'MODULE_PATHNAME', 'ecp_column_type'
    LANGUAGE C VOLATILE;

-- Trigger check_since: option since_column names an output column of the
-- query (of every query of queries) that is an integer, a date or a
-- timestamp; since_overlap goes with it; an alias_swap task, which loads
-- the whole source into a new index every run, takes neither.  (After
-- check_row, which checks the options and the query: triggers fire in
-- name order.)
CREATE FUNCTION ecp._check_since_column() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col text := NEW.options->>'since_column';
    sources text[] := coalesce(NEW.queries, ARRAY[NEW.query]);
    place text;
    column_type regtype;
BEGIN
    IF col IS NULL THEN
        IF NEW.options ? 'since_overlap' THEN
            RAISE EXCEPTION 'task "%": option "since_overlap" goes with option "since_column"', NEW.name
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'since_overlap is how far below the watermark of since_column an incremental run starts reading.';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.options->'since_column' IS NOT DISTINCT FROM OLD.options->'since_column'
       AND NEW.options->'mode' IS NOT DISTINCT FROM OLD.options->'mode'
       AND NEW.query IS NOT DISTINCT FROM OLD.query AND NEW.queries IS NOT DISTINCT FROM OLD.queries
       AND NEW.search_path IS NOT DISTINCT FROM OLD.search_path THEN
        RETURN NEW;
    END IF;
    IF NEW.query IS NULL AND NEW.queries IS NULL THEN
        RAISE EXCEPTION 'task "%": option "since_column" names a column of the query', NEW.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'An NDJSON file has no columns.';
    END IF;
    IF NEW.options->>'mode' = 'alias_swap' THEN
        RAISE EXCEPTION 'task "%": option "since_column" does not go with mode alias_swap', NEW.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Each run of an alias_swap task loads the whole source into a new index.';
    END IF;
    FOR i IN 1 .. cardinality(sources) LOOP
        place := CASE WHEN NEW.queries IS NULL THEN 'the query' ELSE format('queries[%s]', i) END;
        column_type := ecp._column_type(sources[i], NEW.search_path, col);
        IF column_type IS NULL THEN
            RAISE EXCEPTION 'column "%" is not an output column of %', col, place
                  USING ERRCODE = 'undefined_column',
                        HINT = 'The query returns: '
                               || array_to_string(ecp._check_query(sources[i], NEW.search_path), ', ') || '.';
        END IF;
        IF column_type NOT IN ('smallint', 'integer', 'bigint', 'date', 'timestamp', 'timestamptz') THEN
            RAISE EXCEPTION 'option "since_column": column "%" of % is of type %', col, place, column_type
                  USING ERRCODE = 'datatype_mismatch',
                        HINT = 'since_column is an integer (smallint, integer, bigint), date, timestamp or timestamptz column that grows with every change of the row, e.g. updated_at.';
        END IF;
    END LOOP;
    RETURN NEW;
END $$;

-- Move a task's watermark of one query up to new_value, compared in the
-- column's type new_type (never down; one of another type, the column's
-- type having changed, is replaced); the watermark after.  Called by the
-- trigger watermark and by ecp's workers, not by roles.
CREATE FUNCTION ecp._advance_watermark(for_task bigint, for_query integer, new_type regtype,
                                       new_value text, run bigint) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w ecp.watermark;
    larger boolean;
BEGIN
    IF new_type NOT IN ('smallint', 'integer', 'bigint', 'date', 'timestamp', 'timestamptz') THEN
        RAISE EXCEPTION 'a watermark is an integer, a date or a timestamp, not %', new_type
              USING ERRCODE = 'datatype_mismatch';
    END IF;
    INSERT INTO ecp.watermark (task_id, query_no, value, value_type, run_id, owner)
    SELECT t.id, for_query, new_value, new_type, run, t.owner FROM ecp.task t WHERE t.id = for_task
    ON CONFLICT (task_id, query_no) DO NOTHING;
    IF FOUND THEN
        RETURN new_value;
    END IF;
    SELECT * INTO w FROM ecp.watermark WHERE task_id = for_task AND query_no = for_query FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;                    -- the task is gone
    END IF;
    IF w.value_type = new_type THEN
        EXECUTE format('SELECT $1::%1$s > $2::%1$s', new_type) INTO larger USING new_value, w.value;
        IF NOT larger THEN
            RETURN w.value;
        END IF;
    END IF;
    UPDATE ecp.watermark SET value = new_value, value_type = new_type, run_id = run, updated_at = now()
     WHERE task_id = for_task AND query_no = for_query;
    RETURN new_value;
END $$;

-- Trigger watermark, as ecp: when a full run of a task with since_column
-- succeeds, each query's watermark moves up to the largest since value
-- its parts acknowledged (a query the run read nothing of keeps its
-- own), and a flow row "watermark" says the watermark the run used and
-- the new one.  (After the trigger flow: the row follows "finished".)
CREATE FUNCTION ecp._run_watermarks() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    q integer;
    seen record;
    largest text;
    used text;
    after text;
    moves jsonb := '[]';
BEGIN
    SELECT * INTO t FROM ecp.task WHERE id = NEW.task_id;
    IF NOT FOUND OR NOT t.options ? 'since_column' OR NEW.only_ids IS NOT NULL OR NEW.action IS NOT NULL
       OR t.file IS NOT NULL OR (t.query IS NULL AND t.queries IS NULL)
       OR t.options->>'mode' = 'alias_swap' THEN
        RETURN NEW;
    END IF;
    FOR q IN SELECT generate_series(CASE WHEN t.queries IS NULL THEN 0 ELSE 1 END,
                                    coalesce(cardinality(t.queries), 0)) LOOP
        SELECT w.value INTO used FROM ecp.watermark w WHERE w.task_id = t.id AND w.query_no = q;
        after := used;
        FOR seen IN SELECT p.since_type::oid AS type_oid, array_agg(p.since_max) AS maxima
                      FROM ecp.part p
                     WHERE p.run_id = NEW.id AND p.since_max IS NOT NULL AND p.since_type IS NOT NULL
                       AND coalesce((p.source->>'query')::integer, 0) = q
                     GROUP BY 1 LOOP
            EXECUTE format('SELECT v FROM pg_catalog.unnest($1) v ORDER BY v::%s DESC LIMIT 1',
                           seen.type_oid::regtype)
               INTO largest USING seen.maxima;
            after := ecp._advance_watermark(t.id, q, seen.type_oid::regtype, largest, NEW.id);
        END LOOP;
        moves := moves || jsonb_build_object('query', q, 'used', used, 'new', after);
    END LOOP;
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    VALUES (t.id, NEW.id, 'watermark',
            jsonb_build_object('since_column', t.options->>'since_column')
            || CASE WHEN t.queries IS NULL THEN (moves->0) - 'query'
                    ELSE jsonb_build_object('queries', moves) END,
            coalesce(NEW.changed_by, NEW.operator), NEW.owner);
    RETURN NEW;
END $$;

-- The watermark ecp.tasks shows: a one-query task's, or the smallest of a
-- task of queries' (in the column's type); NULL while a query has none
-- (its next run reads all of its rows).
CREATE FUNCTION ecp._task_watermark(task bigint, queries integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
    types integer;
    value_type regtype;
    smallest text;
BEGIN
    SELECT count(*), count(DISTINCT w.value_type::oid), min(w.value_type::oid)::regtype
      INTO n, types, value_type
      FROM ecp.watermark w WHERE w.task_id = task;
    IF n = 0 OR n < coalesce(queries, 1) OR types <> 1 THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT w.value FROM ecp.watermark w WHERE w.task_id = $1 ORDER BY w.value::%s LIMIT 1',
                   value_type)
       INTO smallest USING task;
    RETURN smallest;
END $$;

-- Forget a task's watermarks, with a flow row "watermark" that says what
-- they were and why; what they were (NULL: none).  Its callers run as ecp.
CREATE FUNCTION ecp._forget_watermarks(t ecp.task, why text, actor text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    was jsonb;
BEGIN
    WITH gone AS (DELETE FROM ecp.watermark w WHERE w.task_id = t.id RETURNING w.query_no, w.value)
    SELECT jsonb_agg(jsonb_build_object('query', g.query_no, 'value', g.value) ORDER BY g.query_no)
      INTO was FROM gone g;
    IF was IS NOT NULL THEN
        INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
        VALUES (t.id, 'watermark',
                jsonb_build_object('task', t.name, 'reset', why, 'was', was), actor, t.owner);
    END IF;
    RETURN was;
END $$;

-- Trigger forget_watermark, as ecp: a watermark is a value of the column
-- that since_column named in the query that was read: another column or
-- query starts over from the whole source.
CREATE FUNCTION ecp._forget_watermarks_on_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ecp._forget_watermarks(NEW, 'since_column or the query changed', NEW.changed_by) IS NOT NULL THEN
        RAISE NOTICE 'task "%": its watermark is forgotten (since_column or the query changed); the next run reads the whole source', NEW.name;
    END IF;
    RETURN NEW;
END $$;

-- ecp.reset_watermark: the role must see the task (row-level security);
-- the reset itself runs as ecp (roles do not write watermarks), for a
-- caller who is a member of the task's owner.
CREATE FUNCTION ecp._reset_watermark(task_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    was jsonb;
BEGIN
    IF NOT ecp._session_user_acts() THEN
        RAISE EXCEPTION 'watermarks are not reset from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE id = task_id;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task % is not yours', task_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    was := ecp._forget_watermarks(t, 'ecp.reset_watermark', session_user);
    IF was IS NULL THEN
        RAISE NOTICE 'task "%" has no watermark: its next run reads the whole source', t.name;
    ELSIF jsonb_array_length(was) = 1 THEN
        RAISE NOTICE 'task "%": watermark % of since_column "%" reset; the next run reads the whole source',
              t.name, was->0->>'value', t.options->>'since_column';
    ELSE
        RAISE NOTICE 'task "%": the watermarks of % queries reset; the next run reads the whole source',
              t.name, jsonb_array_length(was);
    END IF;
END $$;

CREATE FUNCTION ecp.reset_watermark(task text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    task_id bigint;
BEGIN
    SELECT t.id INTO task_id FROM ecp.task t WHERE t.name = task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists the tasks you can see.';
    END IF;
    PERFORM ecp._reset_watermark(task_id);
END $$;
COMMENT ON FUNCTION ecp.reset_watermark(text) IS
  'forget the watermark of a task with since_column (owner only): its next run reads the whole source';

CREATE TRIGGER check_since BEFORE INSERT OR UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp._check_since_column();
CREATE TRIGGER forget_watermark AFTER UPDATE ON ecp.task
    FOR EACH ROW WHEN (OLD.options->'since_column' IS DISTINCT FROM NEW.options->'since_column'
                       OR OLD.query IS DISTINCT FROM NEW.query OR OLD.queries IS DISTINCT FROM NEW.queries
                       OR OLD.search_path IS DISTINCT FROM NEW.search_path)
    EXECUTE FUNCTION ecp._forget_watermarks_on_change();
CREATE TRIGGER watermark AFTER UPDATE OF state ON ecp.run
    FOR EACH ROW WHEN (NEW.state = 'succeeded' AND OLD.state IS DISTINCT FROM 'succeeded')
    EXECUTE FUNCTION ecp._run_watermarks();

GRANT SELECT ON ecp.watermark TO PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp._advance_watermark(bigint, integer, regtype, text, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp._forget_watermarks(ecp.task, text, text) FROM PUBLIC;

-- ecp.tasks: the watermark, last.
CREATE OR REPLACE VIEW ecp.tasks WITH (security_invoker = true) AS
SELECT t.id, t.name, c.name AS consumer, t.index_name AS index, t.query, t.options,
       t.owner, t.created_at, t.queries, t.ids,
       -- a presigned URL's signature is a credential
       split_part(t.file, '?', 1) AS file,
       -- since_column: the next run reads from it (less since_overlap)
       ecp._task_watermark(t.id, cardinality(t.queries)) AS watermark
  FROM ecp.task t JOIN ecp.consumer c ON c.id = t.consumer_id;
COMMENT ON VIEW ecp.tasks IS 'task definitions, and the watermark of a task with since_column';
-- (since_column section end)

-- ===========================================================================
-- Following by polling (0.7): ecp.follow in mode poll
-- ===========================================================================
-- A task with since_column whose source is a foreign table (mysql_fdw) or
-- a task of queries has no WAL to decode and no table to put triggers on:
-- its follower polls.  The launcher starts an ordinary full run of the
-- task every poll_interval (ecp._poll_followers, at every pass); since_column
-- makes each run read only what changed since the last successful one,
-- and the trigger watermark moves the watermark when it succeeds.  The
-- follower's run_id is its latest poll run; a paused or failed poll run
-- stops the polling until it is resumed and succeeds (never a loop of
-- failing runs).  Deletes in the source are not seen.

-- poll_interval, checked: from 1 second (the launcher's pass) to 1 day;
-- NULL is the default, 1 minute.
CREATE FUNCTION ecp._check_poll_interval(poll_interval interval) RETURNS interval
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF poll_interval IS NULL THEN
        RETURN interval '1 minute';
    END IF;
    IF poll_interval < interval '1 second' OR poll_interval > interval '1 day' THEN
        RAISE EXCEPTION 'poll_interval % is out of range', poll_interval
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A follower polls at most every second and at least once a day: give an interval from ''1 second'' to ''1 day'' (default ''1 minute'').';
    END IF;
    RETURN poll_interval;
END $$;

-- The mode ecp.follow follows a task in: the one asked for, checked, or
-- poll for a task with since_column that reads a foreign table or is a
-- task of queries, else decoding (wal_level logical) or trigger.  The
-- task's tables are read as the caller, under its search_path.
CREATE FUNCTION ecp._follow_mode(t ecp.task, mode text, poll_interval interval) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    chosen text := mode;
    foreign_tables text;
BEGIN
    IF mode IS NOT NULL AND mode NOT IN ('decoding', 'trigger', 'poll') THEN
        RAISE EXCEPTION 'unknown follow mode "%"', mode
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'mode is decoding, trigger or poll; NULL picks one.';
    END IF;
    IF t.queries IS NULL THEN
        SELECT string_agg(q.relid::regclass::text, ', ' ORDER BY q.relid::regclass::text) INTO foreign_tables
          FROM ecp._query_tables(t.query, t.search_path, coalesce(t.options->>'id_column', 'id')) q
         WHERE q.relkind = 'f';
    END IF;
    IF chosen IS NULL THEN
        chosen := CASE WHEN t.options ? 'since_column' AND (t.queries IS NOT NULL OR foreign_tables IS NOT NULL) THEN 'poll'
                       WHEN current_setting('wal_level') = 'logical' THEN 'decoding'
                       ELSE 'trigger' END;
    END IF;
    IF chosen = 'poll' THEN
        PERFORM ecp._check_poll_interval(poll_interval);
        PERFORM ecp._check_pollable(t);
    ELSIF t.queries IS NOT NULL OR foreign_tables IS NOT NULL THEN
        RAISE EXCEPTION 'task "%" reads %: mode % cannot follow it', t.name,
              CASE WHEN t.queries IS NOT NULL THEN 'queries (shards)' ELSE 'foreign table ' || foreign_tables END, chosen
              USING ERRCODE = 'feature_not_supported',
                    HINT = CASE WHEN t.queries IS NOT NULL THEN 'A task of queries is followed in mode poll'
                                ELSE 'Changes of a foreign table are neither decoded nor seen by triggers: it is followed in mode poll' END
                           || CASE WHEN t.options ? 'since_column' THEN ' (mode => NULL or ''poll'').'
                                   ELSE ', which needs option since_column (a column that grows with every change, e.g. updated_at).' END;
    ELSIF poll_interval IS NOT NULL THEN
        RAISE EXCEPTION 'poll_interval goes with mode poll, not with mode %', chosen
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Mode poll is for a task with option since_column (mode => ''poll''); leave poll_interval out otherwise.';
    END IF;
    RETURN chosen;
END $$;

-- What a task needs to be followed in mode poll: since_column (each poll
-- reads what changed) and no option ids (a run over ids ignores it).
CREATE FUNCTION ecp._check_pollable(t ecp.task) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT t.options ? 'since_column' THEN
        RAISE EXCEPTION 'task "%" has no option since_column: mode poll cannot tell what changed', t.name
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = format('Name a column that grows with every change of a row, e.g. UPDATE ecp.task SET options = options || ''{"since_column": "updated_at"}'' WHERE name = %L; a local table is followed in mode decoding or trigger.', t.name);
    END IF;
    IF t.ids IS NOT NULL THEN
        RAISE EXCEPTION 'task "%" runs over its option ids: mode poll cannot follow it', t.name
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Each poll is a full run of the task; follow a task without ids.';
    END IF;
END $$;

-- ecp.follow in mode poll, as the caller: the follower and its first
-- poll run (ecp._follow_create checks again, as ecp), a NOTICE.
CREATE FUNCTION ecp._follow_poll(t ecp.task, backfill boolean, poll_interval interval) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    run_id bigint;
BEGIN
    run_id := ecp._follow_create(t.id, 'poll', backfill, '[]', poll_interval);
    RAISE NOTICE 'task "%" is followed in mode poll (run %): a run every % reads the rows whose "%" moved%', t.name, run_id,
          ecp._check_poll_interval(poll_interval), t.options->>'since_column',
          CASE WHEN backfill THEN '; this first one reads them all' ELSE '' END
          USING HINT = 'Deletes in the source are not seen by polling. SELECT * FROM ecp.followers shows the follower.';
    RETURN run_id;
END $$;

-- The follower of mode poll, as ecp (called by ecp._follow_create once the
-- caller's right to the task and ecp.max_followers_per_role are checked):
-- its row, and its first poll run at once, started for the caller.  With
-- backfill the task's watermark is forgotten, so that run reads the whole
-- source; without, it reads from the watermark (all of it if none).
CREATE FUNCTION ecp._follow_poll_create(t ecp.task, backfill boolean, poll_interval interval, operator text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    run_id bigint;
BEGIN
    PERFORM ecp._check_pollable(t);
    INSERT INTO ecp.follower (task_id, mode, backfill, owner, poll_interval)
    VALUES (t.id, 'poll', backfill, t.owner, ecp._check_poll_interval(poll_interval));
    PERFORM set_config('ecp.acting_role', operator, true);
    IF backfill THEN
        PERFORM ecp._forget_watermarks(t, 'ecp.follow: the backfill reads the whole source', operator);
    END IF;
    run_id := ecp._create_run(t.id, NULL, NULL, NULL, NULL);
    UPDATE ecp.follower f SET run_id = run_id WHERE f.task_id = t.id;
    PERFORM ecp._flow_event(run_id, 'follow',
                            jsonb_build_object('mode', 'poll', 'backfill', backfill,
                                               'poll_seconds', extract(epoch FROM ecp._check_poll_interval(poll_interval))::float8,
                                               'since_column', t.options->>'since_column'));
    PERFORM set_config('ecp.acting_role', '', true);
    RETURN run_id;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._follow_poll_create(ecp.task, boolean, interval, text) FROM PUBLIC;

-- The launcher's step for the followers of mode poll, at every pass
-- (src/launcher/follow_poll.c): a new full run of a follower's task once
-- its latest poll run finished (succeeded, or was cancelled) poll_interval
-- ago, or it has none, and the task has no run in progress.  The run's
-- owner is the task's (the trigger prepare); its operator "ecp follower".
-- A paused or failed poll run keeps it waiting.  The run it replaces adds
-- its documents to changes_applied and, if it succeeded, its start to
-- polled_at.  A follower being unfollowed (locked) is skipped.
CREATE FUNCTION ecp._poll_followers() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    due record;
    new_run bigint;
    started integer := 0;
BEGIN
    FOR due IN SELECT f.task_id, r.id AS last_run, r.state AS last_state,
                      r.started_at AS last_started, r.finished_at AS last_finished
                 FROM ecp.follower f
                 JOIN ecp.task t ON t.id = f.task_id
                 LEFT JOIN ecp.run r ON r.id = f.run_id
                WHERE f.mode = 'poll' AND t.options ? 'since_column' AND t.ids IS NULL
                  AND (r.id IS NULL
                       OR (r.state IN ('succeeded', 'cancelled') AND r.finished_at + f.poll_interval <= now()))
                  AND NOT EXISTS (SELECT 1 FROM ecp.run b WHERE b.task_id = f.task_id
                                                           AND b.state IN ('pending', 'running', 'paused'))
                ORDER BY f.task_id
                  FOR UPDATE OF f SKIP LOCKED
    LOOP
        BEGIN
            PERFORM set_config('ecp.acting_role', 'ecp follower', true);
            new_run := ecp._create_run(due.task_id, NULL, NULL, NULL, NULL);
            PERFORM set_config('ecp.acting_role', '', true);
            UPDATE ecp.follower f
               SET run_id = new_run,
                   changes_applied = f.changes_applied
                                     + coalesce((SELECT sum(p.processed + p.deleted) FROM ecp.part p
                                                  WHERE p.run_id = due.last_run), 0),
                   polled_at = CASE WHEN due.last_state = 'succeeded' THEN due.last_started ELSE f.polled_at END,
                   last_applied_at = CASE WHEN due.last_state = 'succeeded' THEN due.last_finished
                                          ELSE f.last_applied_at END
             WHERE f.task_id = due.task_id;
            started := started + 1;
        EXCEPTION
            WHEN lock_not_available OR object_in_use THEN
                NULL;       -- a role holds the task's row, or just started a run of it: the next pass
            WHEN OTHERS THEN
                RAISE WARNING 'ecp: could not start a poll run of task %: %', due.task_id, SQLERRM
                      USING HINT = 'The launcher tries again at its next pass.';
        END;
    END LOOP;
    RETURN started;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._poll_followers() FROM PUBLIC;
-- (poll section end)
