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
                      'index dropped', 'rollback', 'watermark')) NOT VALID;
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
