-- ecp 0.1 -> 0.2: only ecp writes ecp's tables.
--
-- In 0.1 every role could INSERT and UPDATE ecp's tables directly, so the
-- checks of create_task and friends could be skipped, and the workers
-- trusted the rows.  From 0.2:
--  * consumers and tasks may still be inserted (and options updated) with
--    plain SQL, but triggers check every row exactly as the functions do
--    (the functions are thin wrappers around those triggers), and row-level
--    security ties a task to a consumer of the same owner;
--  * a role may insert a run of a task it owns (what ecp.start does) and
--    change a run's state only as pause, resume and cancel do; everything
--    else about runs and parts, the flow and the failed documents is
--    written by ecp's workers and by triggers that run as the extension's
--    owner (SECURITY DEFINER, search_path pinned);
--  * the flow records who did what from columns the roles cannot forge;
--  * NOTIFY ecp_alert carries ids and a class only, never error text;
--  * numeric options have upper bounds (a rate of 1e400 stopped every
--    role's scheduling in 0.1).
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.2'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Who acted: stamped by triggers, never taken from the statement.
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.consumer ADD COLUMN changed_by text;
ALTER TABLE ecp.task ADD COLUMN changed_by text;
ALTER TABLE ecp.run ADD COLUMN changed_by text;
COMMENT ON COLUMN ecp.run.changed_by IS 'the role that made the last state change (the flow''s operator)';

CREATE FUNCTION ecp._is_superuser() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false)
$$;

-- The operator of a change: the current role; for a superuser's session
-- (ecp's workers and launcher) the role it acts for, when it says so in
-- ecp.acting_role, a setting only superusers can change.
CREATE FUNCTION ecp._operator() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN ecp._is_superuser()
                THEN coalesce(nullif(current_setting('ecp.acting_role', true), ''), current_user::text)
                ELSE current_user::text END
$$;

-- ---------------------------------------------------------------------------
-- Options: every number has a range.
-- A spec maps each option to a type, or to [type, min, max].
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION ecp._check_options(options jsonb, spec jsonb, what text)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    v jsonb;
    rule jsonb;
    want text;
    low numeric;
    high numeric;
    valid boolean;
BEGIN
    IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'options of a % must be a JSON object, not %', what,
              coalesce(jsonb_typeof(options), 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass options as jsonb, e.g. ''{"batch_size": 1000}''.';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(options) LOOP
        rule := spec -> k;
        IF rule IS NULL THEN
            RAISE EXCEPTION 'unknown option "%" for a %', k, what
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Valid options: ' || (SELECT string_agg(key, ', ' ORDER BY key) FROM jsonb_object_keys(spec) key) || '.';
        END IF;
        IF jsonb_typeof(rule) = 'array' THEN
            want := rule ->> 0;
            low := (rule ->> 1)::numeric;
            high := (rule ->> 2)::numeric;
        ELSE
            want := rule #>> '{}';
        END IF;
        valid := CASE want
                 WHEN 'text' THEN jsonb_typeof(v) = 'string' AND octet_length(v #>> '{}') <= 8192
                 WHEN 'boolean' THEN jsonb_typeof(v) = 'boolean'
                 WHEN 'number' THEN jsonb_typeof(v) = 'number'
                                    AND (v::text)::numeric BETWEEN low AND high
                 WHEN 'integer' THEN jsonb_typeof(v) = 'number'
                                     AND (v::text)::numeric = trunc((v::text)::numeric)
                                     AND (v::text)::numeric BETWEEN low AND high
               END;
        IF NOT valid THEN
            RAISE EXCEPTION 'option "%" of a % must be %, not %', k, what,
                  CASE want WHEN 'integer' THEN format('an integer between %s and %s', low, high)
                            WHEN 'number' THEN format('a number between %s and %s', low, high)
                            WHEN 'boolean' THEN 'true or false'
                            ELSE 'a string of at most 8192 bytes' END,
                  -- a secret is never quoted: errors reach the server log
                  CASE WHEN k IN ('password', 'api_key') THEN '***' ELSE left(v::text, 100) END
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION ecp._task_option_spec() RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT '{"id_column": "text", "key_column": "text",
             "batch_size": ["integer", 1, 100000],
             "batch_bytes": ["integer", 1024, 104857600],
             "op": "text", "exact_total": "boolean",
             "max_retries": ["integer", 0, 1000],
             "retry_base_ms": ["integer", 1, 3600000],
             "retry_max_ms": ["integer", 1, 3600000],
             "rate_limit": ["number", 0, 1000000000],
             "paging": "text"}'::jsonb
$$;

CREATE OR REPLACE FUNCTION ecp._consumer_option_spec() RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT '{"username": "text", "password": "text", "api_key": "text",
             "ca_file": "text", "insecure": "boolean", "gzip": "boolean",
             "connect_timeout_ms": ["integer", 1, 600000],
             "request_timeout_ms": ["integer", 1, 3600000],
             "rate_limit": ["number", 0, 1000000000]}'::jsonb
$$;

-- The words of op and paging (the ranges are in the spec now).
CREATE OR REPLACE FUNCTION ecp._check_task_option_values(options jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF options ? 'op' AND options->>'op' NOT IN ('index', 'create', 'update', 'delete') THEN
        RAISE EXCEPTION 'option "op" must be index, create, update or delete, not "%"', options->>'op'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF options ? 'paging' AND options->>'paging' NOT IN ('auto', 'keyset', 'window') THEN
        RAISE EXCEPTION 'option "paging" must be auto, keyset or window, not "%"', options->>'paging'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'auto pages foreign tables by key windows and everything else by keyset.';
    END IF;
END $$;

-- Index names also go into the request path: % is refused as well.
CREATE OR REPLACE FUNCTION ecp._check_index_name(index text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF index IS NULL OR index = '' OR index IN ('.', '..')
       OR index <> lower(index) OR index ~ '[\\/*?"<>| ,#:%[:cntrl:]]' OR index ~ '^[-_+]'
       OR octet_length(index) > 255 THEN
        RAISE EXCEPTION 'invalid index name "%"', left(coalesce(index, 'NULL'), 300)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Elasticsearch index names are lower case, at most 255 bytes, do not start with -, _ or +, and contain none of \ / * ? " < > | , # : % or spaces.';
    END IF;
END $$;

ALTER FUNCTION ecp._check_url(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ecp._mask_secrets(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ecp._backoff_ms(integer, integer, integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ecp._run_for_update(bigint, text[], text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ecp._warn_if_not_launcher_database(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ecp._estimate_rows(text) SET search_path = pg_catalog, pg_temp;

-- The outbound policy (ecp.allowed_hosts, ecp.block_private_networks, TLS
-- options) for the current role.
CREATE FUNCTION ecp._check_consumer_target(url text, options jsonb) RETURNS void
    AS 'MODULE_PATHNAME', 'ecp_check_consumer_target'
    LANGUAGE C VOLATILE;

-- The query check with the search_path the task will be read with.
CREATE FUNCTION ecp._check_query(query text, search_path text) RETURNS text[]
    AS 'MODULE_PATHNAME', 'ecp_check_query_with_path'
    LANGUAGE C VOLATILE;

-- What the catalog tells about the uniqueness of the query's columns:
-- {"table", "primary_key", "unique": [...], "not_unique": [...]} when the
-- query reads one table, {} when it cannot tell.
CREATE FUNCTION ecp._column_facts(query text, search_path text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'ecp_column_facts'
    LANGUAGE C VOLATILE;

-- A preview says which column would be the id (and the key) by default.
CREATE OR REPLACE FUNCTION ecp.preview(query text, n integer DEFAULT 1)
RETURNS SETOF jsonb LANGUAGE plpgsql AS $$
DECLARE
    columns text[];
    facts jsonb;
BEGIN
    IF n IS NULL OR n < 0 OR n > 10000 THEN
        RAISE EXCEPTION 'n must be between 0 and 10000, not %', coalesce(n::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    columns := ecp._check_query(query, current_setting('search_path'));
    facts := ecp._column_facts(query, current_setting('search_path'));
    RAISE NOTICE 'a task of this query gets _id from column "%" and pages by it, unless options id_column and key_column say otherwise',
          coalesce(facts->>'primary_key', columns[1]);
    RETURN QUERY EXECUTE format(E'SELECT to_jsonb("ecp:row") FROM (%s\n) AS "ecp:row" LIMIT %s',
                                ecp._statement_text(query), n);
END $$;

-- ---------------------------------------------------------------------------
-- Consumers: every row checked like create_consumer checks it.
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.consumer ADD CONSTRAINT consumer_options_object
    CHECK (jsonb_typeof(options) = 'object');

CREATE FUNCTION ecp._check_consumer_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.name IS NULL OR NEW.name !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'invalid consumer name "%"', left(coalesce(NEW.name, 'NULL'), 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use 1 to 63 letters, digits, "_", "." or "-".';
    END IF;
    IF NEW.kind IS DISTINCT FROM 'elasticsearch' THEN
        RAISE EXCEPTION 'unknown consumer kind "%"', left(coalesce(NEW.kind, 'NULL'), 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Supported kinds: elasticsearch.';
    END IF;
    PERFORM ecp._check_url(NEW.url);
    NEW.url := rtrim(NEW.url, '/');
    PERFORM ecp._check_options(NEW.options, ecp._consumer_option_spec(), 'consumer');
    IF (NEW.options ? 'username') <> (NEW.options ? 'password') THEN
        RAISE EXCEPTION 'options "username" and "password" go together'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.options ? 'api_key' AND NEW.options ? 'username' THEN
        RAISE EXCEPTION 'a consumer authenticates with "username"/"password" or with "api_key", not both'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ecp._check_consumer_target(NEW.url, NEW.options);
    IF TG_OP = 'INSERT' THEN
        NEW.created_at := now();
    END IF;
    NEW.changed_by := ecp._operator();
    RETURN NEW;
END $$;
CREATE TRIGGER check_row BEFORE INSERT OR UPDATE ON ecp.consumer
    FOR EACH ROW EXECUTE FUNCTION ecp._check_consumer_row();

CREATE OR REPLACE FUNCTION ecp.create_consumer(name text, url text, kind text DEFAULT 'elasticsearch',
                                               options jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ecp.consumer c WHERE c.name = create_consumer.name) THEN
        RAISE EXCEPTION 'consumer "%" already exists', name
              USING ERRCODE = 'duplicate_object';
    END IF;
    -- the trigger check_row checks every field
    INSERT INTO ecp.consumer (name, kind, url, options) VALUES (name, kind, url, options);
END $$;

-- ---------------------------------------------------------------------------
-- Tasks: every row checked like create_task checks it, with the query
-- read as the inserting role under the task's search_path.
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.task ALTER COLUMN query SET NOT NULL;
ALTER TABLE ecp.task ADD CONSTRAINT task_has_id_column
    CHECK (jsonb_typeof(options) = 'object' AND jsonb_typeof(options -> 'id_column') = 'string');

CREATE FUNCTION ecp._check_task_row() RETURNS trigger
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
    IF NEW.query IS NULL THEN
        RAISE EXCEPTION 'task "%" has no source', NEW.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass query => ''SELECT id, ... FROM ...''.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ecp.consumer c WHERE c.id = NEW.consumer_id AND c.owner = NEW.owner) THEN
        RAISE EXCEPTION 'task "%" must use a consumer of its own owner (role %)', NEW.name, NEW.owner
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'A task runs as its owner and sends with that role''s consumer: create one with ecp.create_consumer as that role.';
    END IF;
    PERFORM ecp._check_index_name(NEW.index_name);
    PERFORM ecp._check_options(NEW.options, ecp._task_option_spec(), 'task');
    PERFORM ecp._check_task_option_values(NEW.options);
    IF TG_OP = 'UPDATE' AND NOT NEW.options ? 'id_column' THEN
        -- an UPDATE that leaves the id column out keeps the one there was
        NEW.options := NEW.options || jsonb_build_object('id_column', OLD.options -> 'id_column');
    END IF;
    IF TG_OP = 'INSERT' OR NEW.query IS DISTINCT FROM OLD.query
       OR NEW.search_path IS DISTINCT FROM OLD.search_path
       OR NEW.options -> 'id_column' IS DISTINCT FROM OLD.options -> 'id_column'
       OR NEW.options -> 'key_column' IS DISTINCT FROM OLD.options -> 'key_column' THEN
        columns := ecp._check_query(NEW.query, NEW.search_path);
        FOREACH col IN ARRAY ARRAY[NEW.options->>'id_column', NEW.options->>'key_column'] LOOP
            IF col IS NOT NULL AND NOT col = ANY (columns) THEN
                RAISE EXCEPTION 'column "%" is not an output column of the query', col
                      USING ERRCODE = 'undefined_column',
                            HINT = 'The query returns: ' || array_to_string(columns, ', ') || '.';
            END IF;
        END LOOP;
        NEW.options := ecp._with_key_columns(NEW.name, NEW.query, NEW.search_path, NEW.options, columns);
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.created_at := now();
    END IF;
    NEW.changed_by := ecp._operator();
    RETURN NEW;
END $$;

-- The id column by default: the primary key of the one table the query
-- reads, when it returns it; else the first column.  Says which columns
-- are the id and the key, and when the catalog shows that the key is not
-- unique (runs fail at the first value that repeats: pages continue after
-- the last key sent).
CREATE FUNCTION ecp._with_key_columns(task text, query text, search_path text, options jsonb,
                                      columns text[])
RETURNS jsonb LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    facts jsonb := ecp._column_facts(query, search_path);
    key text;
BEGIN
    IF NOT options ? 'id_column' THEN
        options := options || jsonb_build_object('id_column',
                                                 coalesce(facts->>'primary_key', columns[1]));
    END IF;
    key := coalesce(options->>'key_column', options->>'id_column');
    RAISE NOTICE 'task "%": _id from column "%", pages ordered by column "%"',
          task, options->>'id_column', key;
    IF facts->'not_unique' ? key THEN
        RAISE NOTICE 'column "%" of table % has no unique index or primary key', key, facts->>'table'
              USING HINT = 'Pages continue after the last key sent, so a run fails at the first value of "'
                           || key || '" that repeats; choose a unique key_column (the primary key) if values can repeat.';
    END IF;
    RETURN options;
END $$;
DROP TRIGGER check_options ON ecp.task;
DROP FUNCTION ecp._check_task_update();
CREATE TRIGGER check_row BEFORE INSERT OR UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp._check_task_row();

-- A task sends with a consumer of its own owner, never another role's.
CREATE POLICY same_owner ON ecp.task AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM ecp.consumer c
                         WHERE c.id = consumer_id AND c.owner = task.owner));

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
    IF queries IS NOT NULL OR ids IS NOT NULL OR file IS NOT NULL THEN
        RAISE EXCEPTION 'only the query source is available in ecp %', ecp.version()
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Pass the source as query => ''SELECT ...''.';
    END IF;
    IF query IS NULL THEN
        RAISE EXCEPTION 'task "%" has no source', name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass query => ''SELECT id, ... FROM ...''.';
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
    -- the trigger check_row checks the index, the options and the query
    INSERT INTO ecp.task (name, consumer_id, index_name, query, options)
    VALUES (name, consumer_row.id, index, query, options)
    RETURNING id INTO task_id;
    RETURN task_id;
END $$;

-- Option changes (set_rate, or a plain UPDATE) go through check_row too.
CREATE OR REPLACE FUNCTION ecp.set_rate(task text, docs_per_second numeric) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
BEGIN
    IF docs_per_second IS NULL OR docs_per_second < 0 OR docs_per_second > 1000000000 THEN
        RAISE EXCEPTION 'invalid rate % for task "%"', coalesce(docs_per_second::text, 'NULL'), task
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Give documents per second between 0 (unlimited) and 1000000000.';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE name = set_rate.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object';
    END IF;
    -- the flow row and the launcher's wake-up come from the trigger flow_rate
    UPDATE ecp.task SET options = jsonb_set(options, '{rate_limit}', to_jsonb(docs_per_second))
     WHERE id = t.id;
END $$;

-- ---------------------------------------------------------------------------
-- Runs: a role inserts a run of its own task (ecp.start) and moves it only
-- as pause, resume and cancel do; parts, counters, checkpoints, the flow
-- and the failed documents are ecp's.
-- ---------------------------------------------------------------------------
REVOKE INSERT, UPDATE ON ecp.run, ecp.part FROM PUBLIC;
REVOKE INSERT ON ecp.failed_doc, ecp.flow_log FROM PUBLIC;
GRANT INSERT (task_id, only_ids, retry_of) ON ecp.run TO PUBLIC;
GRANT UPDATE (state) ON ecp.run TO PUBLIC;
-- owners may rotate credentials and drop a consumer no task uses
GRANT UPDATE (url, options), DELETE ON ecp.consumer TO PUBLIC;

CREATE POLICY same_owner ON ecp.run AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM ecp.task t WHERE t.id = task_id AND t.owner = run.owner));

-- Everything about a new run but its task and ids is decided here, so a
-- plain INSERT is exactly ecp.start.
CREATE FUNCTION ecp._prepare_run() RETURNS trigger
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
    NEW.owner := t.owner;
    NEW.state := 'pending';
    NEW.operator := ecp._operator();
    NEW.changed_by := NEW.operator;
    NEW.total := cardinality(NEW.only_ids);
    NEW.total_is_estimate := CASE WHEN NEW.only_ids IS NOT NULL THEN false END;
    NEW.created_at := now();
    NEW.started_at := NULL;
    NEW.finished_at := NULL;
    NEW.last_error := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER prepare BEFORE INSERT ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp._prepare_run();

-- A new run gets its part and wakes the launcher (as ecp: roles cannot
-- write parts).
CREATE FUNCTION ecp._create_parts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.part (run_id, part_no, owner) VALUES (NEW.id, 0, NEW.owner);
    PERFORM ecp._wake_launcher_at_commit();
    RETURN NEW;
END $$;
CREATE TRIGGER create_parts AFTER INSERT ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp._create_parts();

-- Legal state changes; a role (not ecp) may only pause, resume and cancel.
CREATE OR REPLACE FUNCTION ecp._check_run_transition() RETURNS trigger
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
        IF NOT ecp._is_superuser() AND NOT (
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
    NEW.changed_by := ecp._operator();
    RETURN NEW;
END $$;
DROP TRIGGER check_transition ON ecp.run;
CREATE TRIGGER check_transition BEFORE UPDATE ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp._check_run_transition();

-- What a state change sets off, as ecp: a resumed run's parts go on from
-- their checkpoints (a run whose parts are all done is finished: a pause
-- that raced its last checkpoint), a paused or cancelled run's workers
-- are told to stop.
CREATE FUNCTION ecp._on_run_state() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.state = 'running' AND OLD.state IN ('paused', 'failed') THEN
        UPDATE ecp.part SET state = 'pending', recoveries = 0
         WHERE run_id = NEW.id AND state IN ('failed', 'running');
        IF NOT EXISTS (SELECT 1 FROM ecp.part WHERE run_id = NEW.id AND state <> 'done') THEN
            UPDATE ecp.run SET state = 'succeeded', finished_at = now() WHERE id = NEW.id;
        END IF;
        PERFORM ecp._wake_launcher_at_commit();
    ELSIF NEW.state IN ('paused', 'cancelled') THEN
        PERFORM ecp._signal_run_at_commit(NEW.id);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER on_state AFTER UPDATE OF state ON ecp.run
    FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state)
    EXECUTE FUNCTION ecp._on_run_state();

CREATE OR REPLACE FUNCTION ecp._create_run(task_id bigint, only_ids text[], retry_of bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    run_id bigint;
BEGIN
    -- the trigger prepare checks the task and decides the rest
    INSERT INTO ecp.run (task_id, only_ids, retry_of) VALUES (task_id, only_ids, retry_of)
    RETURNING id INTO run_id;
    PERFORM ecp._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;

CREATE OR REPLACE FUNCTION ecp.pause(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    PERFORM ecp._run_for_update(run, ARRAY['pending', 'running'], 'paused');
    UPDATE ecp.run SET state = 'paused' WHERE id = run;
END $$;

CREATE OR REPLACE FUNCTION ecp.resume(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    PERFORM ecp._run_for_update(run, ARRAY['paused', 'failed'], 'resumed');
    -- the trigger on_state puts the parts back from their checkpoints
    UPDATE ecp.run SET state = 'running' WHERE id = run;
    PERFORM ecp._warn_if_not_launcher_database(run);
END $$;

CREATE OR REPLACE FUNCTION ecp.cancel(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    PERFORM ecp._run_for_update(run, ARRAY['pending', 'running', 'paused'], 'cancelled');
    UPDATE ecp.run SET state = 'cancelled' WHERE id = run;
END $$;

-- ---------------------------------------------------------------------------
-- The flow: written as ecp, with the operator the BEFORE triggers stamped.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION ecp._flow_on_create() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'consumer' THEN
        INSERT INTO ecp.flow_log (action, content, operator, owner)
        VALUES ('create_consumer',
                jsonb_build_object('consumer', NEW.name, 'kind', NEW.kind, 'url', NEW.url,
                                   'options', ecp._mask_secrets(NEW.options)),
                NEW.changed_by, NEW.owner);
    ELSE
        INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
        VALUES (NEW.id, 'create_task',
                jsonb_build_object('task', NEW.name, 'index', NEW.index_name,
                                   'query', NEW.query, 'options', NEW.options),
                NEW.changed_by, NEW.owner);
    END IF;
    RETURN NEW;
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
        END IF;
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
        SELECT coalesce(sum(p.processed), 0) AS processed, coalesce(sum(p.failed), 0) AS failed
          INTO counts FROM ecp.part p WHERE p.run_id = NEW.id;
        content := jsonb_build_object('from', OLD.state, 'to', NEW.state,
                                      'processed', counts.processed, 'failed', counts.failed);
        IF NEW.state IN ('succeeded', 'failed', 'cancelled') THEN
            content := content || jsonb_build_object('duration',
                (coalesce(NEW.finished_at, now()) - coalesce(NEW.started_at, NEW.created_at))::text);
        END IF;
        IF NEW.state = 'failed' THEN
            content := content || jsonb_build_object('error', left(NEW.last_error, 2000));
        END IF;
    END IF;
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    VALUES (NEW.task_id, NEW.id, action, content, coalesce(NEW.changed_by, NEW.operator), NEW.owner);
    RETURN NEW;
END $$;

-- Task option changes: a flow row for a new rate, and the launcher pushes
-- the rate to the workers within a second.
CREATE OR REPLACE FUNCTION ecp._flow_on_rate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
    VALUES (NEW.id, 'set_rate',
            jsonb_build_object('task', NEW.name,
                               'old', coalesce((OLD.options->>'rate_limit')::numeric, 0),
                               'new', coalesce((NEW.options->>'rate_limit')::numeric, 0)),
            NEW.changed_by, NEW.owner);
    PERFORM ecp._wake_launcher_at_commit();
    RETURN NEW;
END $$;

-- Explicit events of the workers (worker started, retry, ...).  Only ecp
-- calls it: EXECUTE is not granted to PUBLIC.
CREATE OR REPLACE FUNCTION ecp._flow_event(run bigint, action text, content jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    SELECT r.task_id, r.id, action, content, ecp._operator(), r.owner
      FROM ecp.run r WHERE r.id = run;
END $$;

-- Alerts: a flow row 'alert' with the details (readable by the run's owner
-- only), and NOTIFY ecp_alert with ids and a class only: any role can
-- LISTEN, so the payload holds no error text, URL or data value, and its
-- size is fixed, far below NOTIFY's 8000 bytes.
CREATE OR REPLACE FUNCTION ecp._alert(run bigint, class text, attempts integer, error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    details jsonb;
BEGIN
    SELECT ru.id, ru.task_id, t.name AS task, ru.owner INTO r
      FROM ecp.run ru JOIN ecp.task t ON t.id = ru.task_id WHERE ru.id = run;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    details := jsonb_build_object('run', run, 'task_id', r.task_id, 'task', r.task,
                                  'owner', r.owner::text, 'class', class, 'kind', class,
                                  'attempts', attempts, 'error', left(error, 2000), 'at', now());
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    VALUES (r.task_id, run, 'alert', details, ecp._operator(), r.owner);
    PERFORM pg_notify('ecp_alert',
                      jsonb_build_object('run', run, 'task_id', r.task_id, 'class', left(class, 40),
                                         'attempts', attempts, 'at', now())::text);
END $$;

CREATE OR REPLACE FUNCTION ecp._alert_on_failure() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp._alert(NEW.id,
                       CASE WHEN NEW.last_error LIKE 'retries exhausted%' THEN 'retries exhausted'
                            ELSE 'failed' END,
                       (regexp_match(NEW.last_error, 'after (\d{1,9}) attempts'))[1]::integer,
                       NEW.last_error);
    RETURN NEW;
END $$;

-- ---------------------------------------------------------------------------
-- Internals: not for roles.
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION ecp._signal_run_at_commit(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp._wake_launcher_at_commit() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp._flow_event(bigint, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp._alert(bigint, text, integer, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp._estimate_rows(text) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Roles that go away.  ecp's owner columns are regrole values, which
-- PostgreSQL does not track as dependencies: DROP ROLE succeeds and DROP
-- OWNED / REASSIGN OWNED do not touch ecp's rows.  A run whose owner is
-- gone (or may no longer log in) fails at its next start; this removes
-- what such a role left.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp.drop_owned(role regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT ecp._is_superuser() THEN
        RAISE EXCEPTION 'only a superuser may drop what a role owns in ecp'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE ecp.run SET state = 'cancelled'
     WHERE owner = role AND state IN ('pending', 'running', 'paused');
    DELETE FROM ecp.run WHERE owner = role;
    DELETE FROM ecp.task WHERE owner = role;
    DELETE FROM ecp.consumer WHERE owner = role;
    INSERT INTO ecp.flow_log (action, content, operator, owner)
    VALUES ('drop_owned', jsonb_build_object('role', role::text), ecp._operator(), role);
END $$;
COMMENT ON FUNCTION ecp.drop_owned(regrole) IS
  'superuser only: cancel and delete the runs, tasks and consumers of a role (run it before or after DROP ROLE)';
