-- ecp 0.1: install script (schema ecp is created by CREATE EXTENSION from ecp.control)
\echo Use "CREATE EXTENSION ecp" to load this file. \quit

CREATE FUNCTION ecp.version() RETURNS text
    AS 'MODULE_PATHNAME', 'ecp_version'
    LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ecp.version() IS 'version of the loaded ecp library';

CREATE FUNCTION ecp.launcher_pid() RETURNS integer
    AS 'MODULE_PATHNAME', 'ecp_launcher_pid_sql'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ecp.launcher_pid() IS 'pid of the running ecp launcher, NULL when none runs';

-- The launcher as pg_stat_activity sees it: one row while it runs.
CREATE VIEW ecp.launcher AS
SELECT a.pid,
       a.datname AS database,
       a.backend_start AS started_at,
       a.state,
       a.wait_event
  FROM pg_catalog.pg_stat_activity a
 WHERE a.backend_type = 'ecp launcher';
COMMENT ON VIEW ecp.launcher IS 'the running ecp launcher (empty when it is not running)';

GRANT USAGE ON SCHEMA ecp TO PUBLIC;
GRANT SELECT ON ecp.launcher TO PUBLIC;

-- ===========================================================================
-- The sync engine: consumers, tasks, runs, parts, flow, failed documents.
-- Users' definitions (consumers, tasks) are dumped by pg_dump; run history
-- too, so an upgrade or restore keeps the audit trail.
-- Row-level security: a role sees and controls only rows it owns (or owns
-- through membership); superusers see everything.
-- ===========================================================================

CREATE TABLE ecp.consumer (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    kind        text NOT NULL CHECK (kind IN ('elasticsearch')),
    url         text NOT NULL,
    options     jsonb NOT NULL DEFAULT '{}',
    owner       regrole NOT NULL DEFAULT current_user::regrole,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ecp.consumer IS 'where documents go; options may hold credentials (never shown in views)';

CREATE TABLE ecp.task (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    consumer_id bigint NOT NULL REFERENCES ecp.consumer(id),
    index_name  text NOT NULL,
    query       text,
    options     jsonb NOT NULL DEFAULT '{}',
    search_path text NOT NULL DEFAULT current_setting('search_path'),
    owner       regrole NOT NULL DEFAULT current_user::regrole,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN ecp.task.search_path IS 'search_path of the creator; the workers read the query with it';
COMMENT ON TABLE ecp.task IS 'a reusable sync definition: consumer + index + source + options';

CREATE TABLE ecp.run (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     bigint NOT NULL REFERENCES ecp.task(id) ON DELETE CASCADE,
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
    owner       regrole NOT NULL,
    operator    text NOT NULL DEFAULT current_user,
    total       bigint,
    total_is_estimate boolean,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    last_error  text,
    only_ids    text[],         -- ecp.retry_failed: sync just these ids
    retry_of    bigint REFERENCES ecp.run(id) ON DELETE SET NULL
);
CREATE INDEX ON ecp.run (task_id);
CREATE INDEX ON ecp.run (state) WHERE state IN ('pending', 'running');
COMMENT ON TABLE ecp.run IS 'one execution of a task';

CREATE TABLE ecp.part (
    run_id      bigint NOT NULL REFERENCES ecp.run(id) ON DELETE CASCADE,
    part_no     integer NOT NULL,
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'failed')),
    owner       regrole NOT NULL,
    last_key    text,            -- checkpoint: key of the last acknowledged row
    processed   bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    batches     bigint NOT NULL DEFAULT 0,
    recoveries  integer NOT NULL DEFAULT 0,  -- restarts since the last acknowledged batch
    docs_per_second double precision,
    heartbeat_at timestamptz,
    worker_pid  integer,
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (run_id, part_no)
);
COMMENT ON TABLE ecp.part IS 'unit of parallel work of a run, with its checkpoint';

CREATE TABLE ecp.flow_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    task_id     bigint,
    run_id      bigint,
    action      text NOT NULL,
    content     jsonb NOT NULL DEFAULT '{}',
    operator    text NOT NULL DEFAULT current_user,
    owner       regrole NOT NULL DEFAULT current_user::regrole
);
CREATE INDEX ON ecp.flow_log (run_id);
COMMENT ON TABLE ecp.flow_log IS 'audit trail: one row per operation or event';

CREATE TABLE ecp.failed_doc (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES ecp.run(id) ON DELETE CASCADE,
    doc_id      text,
    status      integer,
    error_type  text,
    reason      text,
    attempts    integer NOT NULL DEFAULT 1,
    at          timestamptz NOT NULL DEFAULT now(),
    owner       regrole NOT NULL
);
CREATE INDEX ON ecp.failed_doc (run_id);
COMMENT ON TABLE ecp.failed_doc IS 'documents the sink refused (dead letters)';

SELECT pg_catalog.pg_extension_config_dump('ecp.consumer', '');
SELECT pg_catalog.pg_extension_config_dump('ecp.task', '');
SELECT pg_catalog.pg_extension_config_dump('ecp.run', '');
SELECT pg_catalog.pg_extension_config_dump('ecp.part', '');
SELECT pg_catalog.pg_extension_config_dump('ecp.flow_log', '');
SELECT pg_catalog.pg_extension_config_dump('ecp.failed_doc', '');

-- Row-level security: owners (and members of the owning role) only.
ALTER TABLE ecp.consumer ENABLE ROW LEVEL SECURITY;
ALTER TABLE ecp.task ENABLE ROW LEVEL SECURITY;
ALTER TABLE ecp.run ENABLE ROW LEVEL SECURITY;
ALTER TABLE ecp.part ENABLE ROW LEVEL SECURITY;
ALTER TABLE ecp.flow_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE ecp.failed_doc ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.consumer USING (pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_only ON ecp.task USING (pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_only ON ecp.run USING (pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_only ON ecp.part USING (pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_reads ON ecp.flow_log FOR SELECT USING (pg_has_role(owner, 'MEMBER'));
-- Flow rows are written by triggers running as the acting role: a role can
-- add rows only about its own objects and only under its own name.
CREATE POLICY actor_writes ON ecp.flow_log FOR INSERT
    WITH CHECK (pg_has_role(owner, 'MEMBER') AND operator = current_user);
CREATE POLICY owner_only ON ecp.failed_doc USING (pg_has_role(owner, 'MEMBER'));

-- Users change state only through the functions below (which run as the
-- caller, so RLS applies); the worker writes as the run's owner.
GRANT SELECT, INSERT ON ecp.consumer, ecp.task TO PUBLIC;
GRANT SELECT, INSERT, UPDATE ON ecp.run, ecp.part TO PUBLIC;
GRANT SELECT, INSERT ON ecp.failed_doc TO PUBLIC;
GRANT SELECT, INSERT ON ecp.flow_log TO PUBLIC;

-- ---------------------------------------------------------------------------
-- C helpers
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp._check_query(query text) RETURNS text[]
    AS 'MODULE_PATHNAME', 'ecp_check_query'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ecp._check_query(text) IS
  'parses and checks a source query (one plain SELECT, readable by the caller); returns its column names';

CREATE FUNCTION ecp._statement_text(query text) RETURNS text
    AS 'MODULE_PATHNAME', 'ecp_statement_text_sql'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ecp._statement_text(text) IS
  'checks a source query like _check_query and returns the statement without trailing ; or comments';

CREATE FUNCTION ecp._wake_launcher_at_commit() RETURNS void
    AS 'MODULE_PATHNAME', 'ecp_wake_launcher_at_commit'
    LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION ecp._signal_run_at_commit(run bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'ecp_signal_run_at_commit'
    LANGUAGE C STRICT VOLATILE;

-- ---------------------------------------------------------------------------
-- Validation helpers
-- ---------------------------------------------------------------------------

-- Checks an options object against a spec {key: type}; type is one of
-- text, boolean, integer, number.  Unknown keys and wrong types are errors.
CREATE FUNCTION ecp._check_options(options jsonb, spec jsonb, what text)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
    v jsonb;
    want text;
    valid boolean;
BEGIN
    IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'options of a % must be a JSON object, not %', what,
              coalesce(jsonb_typeof(options), 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass options as jsonb, e.g. ''{"batch_size": 1000}''.';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(options) LOOP
        want := spec ->> k;
        IF want IS NULL THEN
            RAISE EXCEPTION 'unknown option "%" for a %', k, what
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Valid options: ' || (SELECT string_agg(key, ', ' ORDER BY key) FROM jsonb_object_keys(spec) key) || '.';
        END IF;
        valid := CASE want
                 WHEN 'text' THEN jsonb_typeof(v) = 'string'
                 WHEN 'boolean' THEN jsonb_typeof(v) = 'boolean'
                 WHEN 'number' THEN jsonb_typeof(v) = 'number' AND (v::text)::numeric >= 0
                 WHEN 'integer' THEN jsonb_typeof(v) = 'number'
                                     AND (v::text)::numeric = trunc((v::text)::numeric)
                                     AND (v::text)::numeric BETWEEN 1 AND 2147483647
                 WHEN 'count' THEN jsonb_typeof(v) = 'number'
                                   AND (v::text)::numeric = trunc((v::text)::numeric)
                                   AND (v::text)::numeric BETWEEN 0 AND 2147483647
               END;
        IF NOT valid THEN
            RAISE EXCEPTION 'option "%" of a % must be %, not %', k, what,
                  CASE want WHEN 'integer' THEN 'a positive integer'
                            WHEN 'count' THEN 'zero or a positive integer'
                            WHEN 'number' THEN 'a non-negative number'
                            WHEN 'boolean' THEN 'true or false'
                            ELSE 'a string' END, v::text
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END $$;

-- Elasticsearch index (or alias) name rules.
CREATE FUNCTION ecp._check_index_name(index text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF index IS NULL OR index = '' OR index IN ('.', '..')
       OR index <> lower(index) OR index ~ '[\\/*?"<>| ,#:]' OR index ~ '^[-_+]'
       OR octet_length(index) > 255 THEN
        RAISE EXCEPTION 'invalid index name "%"', coalesce(index, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Elasticsearch index names are lower case, at most 255 bytes, do not start with -, _ or +, and contain none of \ / * ? " < > | , # : or spaces.';
    END IF;
END $$;

CREATE FUNCTION ecp._check_url(url text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF url IS NULL OR url !~ '^https?://[^/?#@\s]+(/[^?#\s]*)?$' THEN
        RAISE EXCEPTION 'invalid consumer URL "%"',
              regexp_replace(coalesce(url, 'NULL'), '//[^/@]*@', '//***@')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use http://host:port or https://host:port (an optional path prefix is allowed); put credentials in options "username"/"password" or "api_key", never in the URL.';
    END IF;
END $$;

-- Secrets are replaced by "***" wherever options are shown.
CREATE FUNCTION ecp._mask_secrets(options jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(key,
               CASE WHEN key IN ('password', 'api_key') THEN '"***"'::jsonb ELSE value END), '{}')
      FROM jsonb_each(options)
$$;

CREATE FUNCTION ecp._task_option_spec() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT '{"id_column": "text", "key_column": "text", "batch_size": "integer",
             "batch_bytes": "integer", "op": "text", "exact_total": "boolean",
             "max_retries": "count", "retry_base_ms": "integer", "retry_max_ms": "integer",
             "rate_limit": "number", "paging": "text"}'::jsonb
$$;

-- The values of task options that have a range or a set of words; by
-- create_task and by an UPDATE of ecp.task.options.
CREATE FUNCTION ecp._check_task_option_values(options jsonb) RETURNS void
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
    IF (options->>'batch_size')::numeric > 100000 THEN
        RAISE EXCEPTION 'option "batch_size" % is larger than 100000', options->>'batch_size'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Elastic recommends requests of a few MB; 500 to 5000 documents is typical.';
    END IF;
    IF (options->>'batch_bytes')::numeric NOT BETWEEN 1024 AND 104857600 THEN
        RAISE EXCEPTION 'option "batch_bytes" % is not between 1024 and 104857600', options->>'batch_bytes'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Elasticsearch refuses requests over http.max_content_length (100mb by default).';
    END IF;
END $$;

CREATE FUNCTION ecp._consumer_option_spec() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT '{"username": "text", "password": "text", "api_key": "text",
             "ca_file": "text", "insecure": "boolean", "gzip": "boolean",
             "connect_timeout_ms": "integer", "request_timeout_ms": "integer",
             "rate_limit": "number"}'::jsonb
$$;

-- ---------------------------------------------------------------------------
-- The SQL interface
-- ---------------------------------------------------------------------------

CREATE FUNCTION ecp.create_consumer(name text, url text, kind text DEFAULT 'elasticsearch',
                                    options jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'invalid consumer name "%"', coalesce(name, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use 1 to 63 letters, digits, "_", "." or "-".';
    END IF;
    IF kind IS DISTINCT FROM 'elasticsearch' THEN
        RAISE EXCEPTION 'unknown consumer kind "%"', coalesce(kind, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Supported kinds: elasticsearch.';
    END IF;
    PERFORM ecp._check_url(url);
    PERFORM ecp._check_options(options, ecp._consumer_option_spec(), 'consumer');
    IF (options ? 'username') <> (options ? 'password') THEN
        RAISE EXCEPTION 'options "username" and "password" go together'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF options ? 'api_key' AND options ? 'username' THEN
        RAISE EXCEPTION 'a consumer authenticates with "username"/"password" or with "api_key", not both'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM ecp.consumer c WHERE c.name = create_consumer.name) THEN
        RAISE EXCEPTION 'consumer "%" already exists', name
              USING ERRCODE = 'duplicate_object';
    END IF;
    INSERT INTO ecp.consumer (name, kind, url, options)
    VALUES (name, kind, rtrim(url, '/'), options);
END $$;

CREATE FUNCTION ecp.create_task(name text, consumer text, index text,
                                query text DEFAULT NULL, queries text[] DEFAULT NULL,
                                ids text[] DEFAULT NULL, file text DEFAULT NULL,
                                options jsonb DEFAULT '{}')
-- No SET search_path: the query is checked (and later read) with the caller's.
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    consumer_row ecp.consumer;
    columns text[];
    task_id bigint;
    col text;
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
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
    SELECT * INTO consumer_row FROM ecp.consumer c WHERE c.name = create_task.consumer;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer "%" does not exist', coalesce(consumer, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'Create it with ecp.create_consumer(name, url).';
    END IF;
    PERFORM ecp._check_index_name(index);
    PERFORM ecp._check_options(options, ecp._task_option_spec(), 'task');
    PERFORM ecp._check_task_option_values(options);
    columns := ecp._check_query(query);
    FOREACH col IN ARRAY ARRAY[options->>'id_column', options->>'key_column'] LOOP
        IF col IS NOT NULL AND NOT col = ANY (columns) THEN
            RAISE EXCEPTION 'column "%" is not an output column of the query', col
                  USING ERRCODE = 'undefined_column',
                        HINT = 'The query returns: ' || array_to_string(columns, ', ') || '.';
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM ecp.task t WHERE t.name = create_task.name) THEN
        RAISE EXCEPTION 'task "%" already exists', name USING ERRCODE = 'duplicate_object';
    END IF;
    INSERT INTO ecp.task (name, consumer_id, index_name, query, options)
    VALUES (name, consumer_row.id, index, query,
            options || jsonb_build_object('id_column', coalesce(options->>'id_column', columns[1])))
    RETURNING id INTO task_id;
    RETURN task_id;
END $$;

CREATE FUNCTION ecp.preview(query text, n integer DEFAULT 1)
RETURNS SETOF jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF n IS NULL OR n < 0 OR n > 10000 THEN
        RAISE EXCEPTION 'n must be between 0 and 10000, not %', coalesce(n::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY EXECUTE format(E'SELECT to_jsonb("ecp:row") FROM (%s\n) AS "ecp:row" LIMIT %s',
                                ecp._statement_text(query), n);
END $$;

-- Looks a run up for a state change; errors name the run and its state.
CREATE FUNCTION ecp._run_for_update(run bigint, allowed text[], verb text)
RETURNS ecp.run LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    r ecp.run;
BEGIN
    SELECT * INTO r FROM ecp.run WHERE id = run FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', coalesce(run::text, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT run_id, task, state FROM ecp.progress lists the runs you can see.';
    END IF;
    IF NOT r.state = ANY (allowed) THEN
        RAISE EXCEPTION 'run % is %; only % runs can be %', run, r.state,
              array_to_string(allowed, ' or '), verb
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN r;
END $$;

-- Runs are carried out only in the launcher's database: say so at once
-- instead of leaving a run pending without a word.
CREATE FUNCTION ecp._warn_if_not_launcher_database(run bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    launcher_db text := current_setting('ecp.database_name', true);
BEGIN
    IF launcher_db IS DISTINCT FROM current_database() THEN
        RAISE WARNING 'run % will wait: the ecp launcher works in database "%", not in "%"',
              run, coalesce(launcher_db, '(ecp is not preloaded)'), current_database()
              USING HINT = 'Create tasks in the database named by ecp.database_name, or change that setting and restart.';
    END IF;
END $$;

-- A new pending run of a task (all its rows, or only_ids), unless the task
-- already has one in progress: two runs of one task would race on the index.
CREATE FUNCTION ecp._create_run(task_id bigint, only_ids text[], retry_of bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    busy bigint;
    run_id bigint;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE id = task_id;
    -- two concurrent calls for one task must not both pass the check below
    PERFORM pg_advisory_xact_lock(hashtext('ecp.start'), t.id::integer);
    SELECT id INTO busy FROM ecp.run
     WHERE ecp.run.task_id = t.id AND state IN ('pending', 'running', 'paused') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'task "%" already has run % in progress', t.name, busy
              USING ERRCODE = 'object_in_use',
                    HINT = 'Wait for it, or ecp.cancel(' || busy || ') first.';
    END IF;
    INSERT INTO ecp.run (task_id, owner, only_ids, retry_of, total, total_is_estimate)
    VALUES (t.id, t.owner, only_ids, retry_of, cardinality(only_ids),
            CASE WHEN only_ids IS NOT NULL THEN false END)
    RETURNING id INTO run_id;
    INSERT INTO ecp.part (run_id, part_no, owner) VALUES (run_id, 0, t.owner);
    PERFORM ecp._wake_launcher_at_commit();
    PERFORM ecp._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;

CREATE FUNCTION ecp.start(task text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE name = start.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'Create it with ecp.create_task(name, consumer, index, query => ...).';
    END IF;
    RETURN ecp._create_run(t.id, NULL, NULL);
END $$;

-- A new run of the same task over the ids in failed_docs of a finished
-- run (after fixing the data or the mapping).
CREATE FUNCTION ecp.retry_failed(run bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    r ecp.run;
    ids text[];
BEGIN
    r := ecp._run_for_update(run, ARRAY['succeeded', 'failed', 'cancelled'], 'retried');
    SELECT array_agg(DISTINCT f.doc_id ORDER BY f.doc_id) INTO ids
      FROM ecp.failed_doc f WHERE f.run_id = run AND f.doc_id IS NOT NULL;
    IF ids IS NULL THEN
        RAISE EXCEPTION 'run % has no failed documents with an id to retry', run
              USING ERRCODE = 'no_data_found',
                    HINT = 'SELECT * FROM ecp.failed_docs WHERE run_id = ' || run || ' shows what failed.';
    END IF;
    RETURN ecp._create_run(r.task_id, ids, run);
END $$;

-- Change a task's rate limit (documents per second, 0 = unlimited), also
-- while it runs: the launcher pushes it to the workers within a second.
CREATE FUNCTION ecp.set_rate(task text, docs_per_second numeric) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
BEGIN
    IF docs_per_second IS NULL OR docs_per_second < 0 THEN
        RAISE EXCEPTION 'invalid rate % for task "%"', coalesce(docs_per_second::text, 'NULL'), task
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Give documents per second, 0 for unlimited.';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE name = set_rate.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object';
    END IF;
    -- the flow row comes from the trigger on task options, as for an UPDATE
    UPDATE ecp.task SET options = jsonb_set(options, '{rate_limit}', to_jsonb(docs_per_second))
     WHERE id = t.id;
    PERFORM ecp._wake_launcher_at_commit();
END $$;

CREATE FUNCTION ecp.pause(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    PERFORM ecp._run_for_update(run, ARRAY['pending', 'running'], 'paused');
    UPDATE ecp.run SET state = 'paused' WHERE id = run;
    PERFORM ecp._signal_run_at_commit(run);
END $$;

CREATE FUNCTION ecp.resume(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    PERFORM ecp._run_for_update(run, ARRAY['paused', 'failed'], 'resumed');
    -- a failed run kept its checkpoints: its failed parts go on from them
    UPDATE ecp.part SET state = 'pending', recoveries = 0
     WHERE run_id = run AND state IN ('failed', 'running');
    UPDATE ecp.run SET state = 'running', finished_at = NULL WHERE id = run;
    PERFORM ecp._wake_launcher_at_commit();
    PERFORM ecp._warn_if_not_launcher_database(run);
END $$;

CREATE FUNCTION ecp.cancel(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    PERFORM ecp._run_for_update(run, ARRAY['pending', 'running', 'paused'], 'cancelled');
    UPDATE ecp.run SET state = 'cancelled', finished_at = now() WHERE id = run;
    PERFORM ecp._signal_run_at_commit(run);
END $$;

-- ---------------------------------------------------------------------------
-- The flow: recorded by triggers, so no code path can forget it.  They run
-- as the acting role, so operator is who did it (the run's owner for the
-- events of its workers).
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp._flow_on_create() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'consumer' THEN
        INSERT INTO ecp.flow_log (action, content, operator, owner)
        VALUES ('create_consumer',
                jsonb_build_object('consumer', NEW.name, 'kind', NEW.kind, 'url', NEW.url,
                                   'options', ecp._mask_secrets(NEW.options)),
                current_user, NEW.owner);
    ELSE
        INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
        VALUES (NEW.id, 'create_task',
                jsonb_build_object('task', NEW.name, 'index', NEW.index_name,
                                   'query', NEW.query, 'options', NEW.options),
                current_user, NEW.owner);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER flow AFTER INSERT ON ecp.consumer FOR EACH ROW EXECUTE FUNCTION ecp._flow_on_create();
CREATE TRIGGER flow AFTER INSERT ON ecp.task FOR EACH ROW EXECUTE FUNCTION ecp._flow_on_create();

CREATE FUNCTION ecp._flow_on_run() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
            content := content || jsonb_build_object('error', NEW.last_error);
        END IF;
    END IF;
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    VALUES (NEW.task_id, NEW.id, action, content, current_user, NEW.owner);
    RETURN NEW;
END $$;
CREATE TRIGGER flow AFTER INSERT OR UPDATE OF state ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp._flow_on_run();

-- Explicit events of the workers (worker started, ...).
CREATE FUNCTION ecp._flow_event(run bigint, action text, content jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    SELECT r.task_id, r.id, action, content, current_user, r.owner
      FROM ecp.run r WHERE r.id = run AND pg_has_role(r.owner, 'MEMBER');
END $$;

-- Alerts: a flow row 'alert' and NOTIFY ecp_alert with a JSON payload
-- (delivered at commit, like any NOTIFY).  The launcher also POSTs them to
-- ecp.alert_webhook when it is set.
CREATE FUNCTION ecp._alert(run bigint, class text, attempts integer, error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    payload jsonb;
BEGIN
    SELECT ru.id, ru.task_id, t.name AS task, ru.owner INTO r
      FROM ecp.run ru JOIN ecp.task t ON t.id = ru.task_id WHERE ru.id = run;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    payload := jsonb_build_object('run', run, 'task', r.task, 'owner', r.owner::text,
                                  'class', class, 'kind', class, 'attempts', attempts,
                                  'error', left(error, 2000), 'at', now());
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    VALUES (r.task_id, run, 'alert', payload, current_user, r.owner);
    PERFORM pg_notify('ecp_alert', payload::text);
END $$;

-- Every run failure is an alert.
CREATE FUNCTION ecp._alert_on_failure() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp._alert(NEW.id,
                       CASE WHEN NEW.last_error LIKE 'retries exhausted%' THEN 'retries exhausted'
                            ELSE 'failed' END,
                       (regexp_match(NEW.last_error, 'after (\d+) attempts'))[1]::integer,
                       NEW.last_error);
    RETURN NEW;
END $$;
CREATE TRIGGER alert AFTER UPDATE OF state ON ecp.run
    FOR EACH ROW WHEN (NEW.state = 'failed' AND OLD.state IS DISTINCT FROM 'failed')
    EXECUTE FUNCTION ecp._alert_on_failure();

-- Only legal state changes; a finished run stays finished.
CREATE FUNCTION ecp._check_run_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state AND NOT (
         (OLD.state = 'pending'  AND NEW.state IN ('running', 'paused', 'cancelled', 'failed', 'succeeded')) OR
         (OLD.state = 'running'  AND NEW.state IN ('paused', 'cancelled', 'failed', 'succeeded')) OR
         (OLD.state = 'paused'   AND NEW.state IN ('running', 'cancelled')) OR
         (OLD.state = 'failed'   AND NEW.state = 'running')) THEN
        RAISE EXCEPTION 'run % cannot go from % to %', OLD.id, OLD.state, NEW.state
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER check_transition BEFORE UPDATE OF state ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp._check_run_transition();

-- ---------------------------------------------------------------------------
-- Views (security_invoker: row-level security of the caller applies)
-- ---------------------------------------------------------------------------
CREATE VIEW ecp.progress WITH (security_invoker = true) AS
SELECT r.id AS run_id,
       t.name AS task,
       r.state,
       p.processed,
       p.failed,
       r.total,
       CASE WHEN r.state = 'succeeded' THEN 100.0
            WHEN r.total > 0 THEN round(least(100.0, 100.0 * (p.processed + p.failed) / r.total), 2)
       END AS percent,
       CASE WHEN r.state = 'running' THEN round(p.docs_per_second::numeric, 1) END AS docs_per_second,
       CASE WHEN r.state = 'running' AND p.docs_per_second > 0 AND r.total IS NOT NULL
            THEN make_interval(secs => round(greatest(r.total - p.processed - p.failed, 0) / p.docs_per_second))
       END AS eta,
       r.started_at,
       r.finished_at,
       coalesce(r.finished_at, now()) - r.started_at AS duration,
       p.heartbeat_at,
       r.operator,
       r.last_error
  FROM ecp.run r
  JOIN ecp.task t ON t.id = r.task_id
  CROSS JOIN LATERAL (
       SELECT coalesce(sum(pt.processed), 0)::bigint AS processed,
              coalesce(sum(pt.failed), 0)::bigint AS failed,
              sum(pt.docs_per_second) FILTER (WHERE pt.state = 'running') AS docs_per_second,
              max(pt.heartbeat_at) AS heartbeat_at
         FROM ecp.part pt WHERE pt.run_id = r.id) p;
COMMENT ON VIEW ecp.progress IS 'one row per run: state, counts, speed, ETA';

CREATE VIEW ecp.flow WITH (security_invoker = true) AS
SELECT at, task_id, run_id, action, content, operator
  FROM ecp.flow_log;
COMMENT ON VIEW ecp.flow IS 'audit trail of operations and events';

CREATE VIEW ecp.failed_docs WITH (security_invoker = true) AS
SELECT run_id, doc_id, status, error_type, reason, attempts, at
  FROM ecp.failed_doc;
COMMENT ON VIEW ecp.failed_docs IS 'documents the sink refused';

CREATE VIEW ecp.consumers WITH (security_invoker = true) AS
SELECT name, kind, url, ecp._mask_secrets(options) AS options, owner, created_at
  FROM ecp.consumer;
COMMENT ON VIEW ecp.consumers IS 'consumers, with credentials masked';

CREATE VIEW ecp.tasks WITH (security_invoker = true) AS
SELECT t.id, t.name, c.name AS consumer, t.index_name AS index, t.query, t.options,
       t.owner, t.created_at
  FROM ecp.task t JOIN ecp.consumer c ON c.id = t.consumer_id;
COMMENT ON VIEW ecp.tasks IS 'task definitions';

GRANT SELECT ON ecp.progress, ecp.flow, ecp.failed_docs, ecp.consumers, ecp.tasks TO PUBLIC;

-- Fibonacci back-off: 1, 1, 2, 3, 5, ... x base_ms, capped at max_ms.
CREATE FUNCTION ecp._backoff_ms(attempt integer, base_ms integer, max_ms integer)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    WITH RECURSIVE fib(n, a, b) AS (
        SELECT 1, 1::bigint, 1::bigint
        UNION ALL
        SELECT n + 1, b, a + b FROM fib WHERE n < greatest(attempt, 1) AND a * base_ms < max_ms)
    SELECT least((SELECT a FROM fib ORDER BY n DESC LIMIT 1) * base_ms, max_ms::bigint)
$$;

-- The planner's estimate of the rows a query returns (for ecp.progress.total).
CREATE FUNCTION ecp._estimate_rows(query text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    plan jsonb;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || query INTO plan;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric::bigint;
END $$;

-- The rate limiters as they are now (shared memory).
CREATE FUNCTION ecp._rate_buckets(OUT kind text, OUT id bigint, OUT rate float8,
                                  OUT effective float8, OUT tokens float8, OUT waiting integer)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'ecp_rate_buckets' LANGUAGE C STRICT VOLATILE;

CREATE VIEW ecp.rate_limits WITH (security_invoker = true) AS
SELECT b.kind,
       coalesce(t.name, c.name) AS name,
       b.rate AS configured_rate,
       round(b.effective::numeric, 1) AS effective_rate,
       round(coalesce(m.docs_per_second, 0)::numeric, 1) AS measured_rate,
       round(b.tokens::numeric, 1) AS tokens,
       b.waiting AS waiting_workers
  FROM ecp._rate_buckets() b
  LEFT JOIN ecp.task t ON b.kind = 'task' AND t.id = b.id
  LEFT JOIN ecp.consumer c ON b.kind = 'consumer' AND c.id = b.id
  LEFT JOIN LATERAL (
       SELECT sum(p.docs_per_second) AS docs_per_second
         FROM ecp.run r JOIN ecp.part p ON p.run_id = r.id
         JOIN ecp.task tt ON tt.id = r.task_id
        WHERE r.state = 'running' AND p.state = 'running'
          AND ((b.kind = 'task' AND tt.id = b.id) OR (b.kind = 'consumer' AND tt.consumer_id = b.id))) m ON true
 WHERE t.id IS NOT NULL OR c.id IS NOT NULL;
COMMENT ON VIEW ecp.rate_limits IS 'live rate limits: configured, effective and measured documents per second';
GRANT SELECT ON ecp.rate_limits TO PUBLIC;

-- Task options may be changed with a plain UPDATE (rate_limit, say): they
-- are checked like create_task's.
GRANT UPDATE (options) ON ecp.task TO PUBLIC;
CREATE FUNCTION ecp._check_task_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ecp._check_options(NEW.options, ecp._task_option_spec(), 'task');
    PERFORM ecp._check_task_option_values(NEW.options);
    RETURN NEW;
END $$;
CREATE TRIGGER check_options BEFORE UPDATE OF options ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp._check_task_update();

-- Every change of a rate limit is a flow row with operator, old and new.
CREATE FUNCTION ecp._flow_on_rate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
    VALUES (NEW.id, 'set_rate',
            jsonb_build_object('task', NEW.name,
                               'old', coalesce((OLD.options->>'rate_limit')::numeric, 0),
                               'new', coalesce((NEW.options->>'rate_limit')::numeric, 0)),
            current_user, NEW.owner);
    RETURN NEW;
END $$;
CREATE TRIGGER flow_rate AFTER UPDATE OF options ON ecp.task
    FOR EACH ROW WHEN (OLD.options->'rate_limit' IS DISTINCT FROM NEW.options->'rate_limit')
    EXECUTE FUNCTION ecp._flow_on_rate();
