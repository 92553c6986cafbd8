-- ecp 0.9: the complete schema (CREATE EXTENSION ecp VERSION '0.9'; schema
-- ecp itself is created by CREATE EXTENSION, from ecp.control).
--
-- This file is the schema as it is: every object once, in its final form.
-- An install of an earlier version reaches the same schema through the
-- upgrade scripts (ecp--0.1.sql, then ecp--0.1--0.2.sql and on), which
-- never change once released; test/scripts/schema-diff.sh compares the two
-- object by object.  A change edits this file and adds an upgrade script
-- that makes just that change.
--
-- Order: tables (each with its indexes, comments, row-level security and
-- policies), functions grouped by concern, triggers, views, privileges.
--
--  * Consumers (where documents go) and tasks (what to sync, with options)
--    are the users' definitions; runs, their parts, the flow (the audit
--    trail), failed documents and migrations are ecp's record of the work.
--    pg_dump dumps all of them, so an upgrade or a restore keeps the
--    history.
--  * Every row has an owner role.  Row-level security: a role sees and
--    controls only rows it owns (or owns through membership); superusers
--    see everything.
--  * A role may insert consumers and tasks with plain SQL (triggers check
--    every row exactly as create_consumer and create_task do: those are
--    thin wrappers), insert a run of a task it owns (what start does) and
--    change a run's state only as pause, resume and cancel do.  Everything
--    else about runs and parts, the flow and the failed documents is
--    written by ecp's workers and by triggers that run as the extension's
--    owner (SECURITY DEFINER, search_path pinned).
--  * The flow records who did what from columns the roles cannot forge.
--  * ecp's SQL and plpgsql functions pin search_path = pg_catalog, pg_temp,
--    except the two that read a role's query with that role's search_path
--    (create_task, preview).
--  * Columns that upgrades added stand after the columns of 0.1, in the
--    order they were added: a fresh install and an upgraded one have the
--    same row types (functions take ecp.task and ecp.run rows).
\echo Use "CREATE EXTENSION ecp" to load this file. \quit

-- ecp's internal helpers live in a schema of their own, so that \df ecp.*
-- lists what a user calls.  Roles need USAGE: functions they call run
-- helpers as the caller; which helpers they may EXECUTE is granted per
-- function as before.
CREATE SCHEMA ecp_internal;
GRANT USAGE ON SCHEMA ecp_internal TO PUBLIC;

-- ecp is created in the database its launcher connects to (see
-- ecp_check_install_database in src/backend/functions.c).
CREATE FUNCTION ecp_internal._check_install_database() RETURNS void
AS 'MODULE_PATHNAME', 'ecp_check_install_database' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION ecp_internal._check_install_database() FROM PUBLIC;
SELECT ecp_internal._check_install_database();

-- ===========================================================================
-- Tables
-- ===========================================================================

CREATE TABLE ecp.consumer (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    kind        text NOT NULL CHECK (kind IN ('elasticsearch', 'http')),
    url         text NOT NULL,
    options     jsonb NOT NULL DEFAULT '{}',
    owner       regrole NOT NULL DEFAULT current_user::regrole,
    created_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  text,
    CONSTRAINT consumer_options_object CHECK (jsonb_typeof(options) = 'object')
);
COMMENT ON TABLE ecp.consumer IS 'where documents go; options may hold credentials (never shown in views)';
SELECT pg_catalog.pg_extension_config_dump('ecp.consumer', '');
ALTER TABLE ecp.consumer ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.consumer USING (pg_has_role(owner, 'MEMBER'));

CREATE TABLE ecp.task (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    consumer_id bigint NOT NULL REFERENCES ecp.consumer(id),
    index_name  text NOT NULL,
    query       text,
    options     jsonb NOT NULL DEFAULT '{}',
    search_path text NOT NULL DEFAULT current_setting('search_path'),
    owner       regrole NOT NULL DEFAULT current_user::regrole,
    created_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  text,
    queries     text[],
    ids         text[],
    file        text,
    transform_fn regprocedure,
    enabled     boolean NOT NULL DEFAULT true,
    -- every source but an NDJSON file is read by column: it has an id column
    CONSTRAINT task_has_id_column
        CHECK (jsonb_typeof(options) = 'object'
               AND (jsonb_typeof(options -> 'id_column') = 'string'
                    OR (query IS NULL AND queries IS NULL)))
);
COMMENT ON TABLE ecp.task IS 'a reusable sync definition: consumer + index + source + options';
COMMENT ON COLUMN ecp.task.search_path IS 'search_path of the creator; the workers read the query with it';
COMMENT ON COLUMN ecp.task.queries IS 'sharded source: one part per query';
COMMENT ON COLUMN ecp.task.ids IS 'id source: the ids a run looks up through query';
COMMENT ON COLUMN ecp.task.file IS 'file source: http(s) URL or server path';
COMMENT ON COLUMN ecp.task.transform_fn IS
  'the function option transform named when the task was written, resolved under search_path pg_catalog, pg_temp; the worker calls this one';
COMMENT ON COLUMN ecp.task.enabled IS
  'false: ecp.start, ecp.verify, ecp.follow and pg_cron firings start no run of the task (ecp.alter_task(task, enabled => ...))';
SELECT pg_catalog.pg_extension_config_dump('ecp.task', '');
ALTER TABLE ecp.task ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.task USING (pg_has_role(owner, 'MEMBER'));
-- A task sends with a consumer of its own owner, never another role's.
CREATE POLICY same_owner ON ecp.task AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM ecp.consumer c
                         WHERE c.id = consumer_id AND c.owner = task.owner));

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
    only_ids    text[],         -- ecp.start(task, ids), ecp.retry_failed: sync just these ids
    retry_of    bigint REFERENCES ecp.run(id) ON DELETE SET NULL,
    changed_by  text,
    failure_class text CHECK (failure_class IN ('failed', 'retries exhausted')),
    failure_attempts integer,
    not_before  timestamptz,
    action      text CHECK (action IN ('rollback', 'drop_index', 'follow', 'verify')),
    paused_reason text,
    recovered_error text,
    verify_with jsonb,
    repair_of   bigint REFERENCES ecp.run(id) ON DELETE SET NULL,
    ids_from    text            -- ecp.start(task, ids_from => ...): only_ids is '{}', ecp.run_id holds them
);
CREATE INDEX ON ecp.run (task_id);
CREATE INDEX ON ecp.run (state) WHERE state IN ('pending', 'running');
COMMENT ON TABLE ecp.run IS 'one execution of a task';
COMMENT ON COLUMN ecp.run.changed_by IS 'the role that made the last state change (the flow''s operator)';
COMMENT ON COLUMN ecp.run.failure_class IS 'the class of the alert of a failed run: failed, or retries exhausted (failure_attempts attempts)';
COMMENT ON COLUMN ecp.run.not_before IS 'ecp.start(task, at => ...): the launcher starts the run at that time';
COMMENT ON COLUMN ecp.run.action IS 'a maintenance run of an alias_swap task: rollback (the alias back), drop_index (a cancelled migration''s new index)';
COMMENT ON COLUMN ecp.run.paused_reason IS 'why ecp paused the run itself (its window closed); NULL when a role paused it';
COMMENT ON COLUMN ecp.run.last_error IS 'the error the run failed with: set only while it is failed (ecp.resume moves it to recovered_error)';
COMMENT ON COLUMN ecp.run.recovered_error IS 'the error of the last failure the run was resumed from';
COMMENT ON COLUMN ecp.run.verify_with IS 'a verify run''s options (ecp.verify): extra, sample';
COMMENT ON COLUMN ecp.run.repair_of IS 'the verify run whose drift this id run repairs (ecp.repair)';
COMMENT ON COLUMN ecp.run.ids_from IS
  'ecp.start(task, ids_from => ...): the relation or query the ids were read from, as the owner, when the run was started (only_ids is then empty)';
SELECT pg_catalog.pg_extension_config_dump('ecp.run', '');
ALTER TABLE ecp.run ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.run USING (pg_has_role(owner, 'MEMBER'));
-- A role starts runs of its own tasks only.
CREATE POLICY same_owner ON ecp.run AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM ecp.task t WHERE t.id = task_id AND t.owner = run.owner));

-- The ids of an id run, one row each in their order, so a worker reads a
-- batch of them at a time (a slice of ecp.run.only_ids would detoast the
-- whole array for every batch).  Roles have no access: they read only_ids.
CREATE TABLE ecp.run_id (
    run_id bigint NOT NULL REFERENCES ecp.run(id) ON DELETE CASCADE,
    n      integer NOT NULL,
    id     text NOT NULL,
    PRIMARY KEY (run_id, n)
);
COMMENT ON TABLE ecp.run_id IS 'the ids of an id run (ecp.run.only_ids), one row each in order: workers read them a batch at a time';

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
    source      jsonb NOT NULL DEFAULT '{"kind": "query"}',
    position    bigint,
    line_no     bigint,
    total       bigint,
    deleted     bigint NOT NULL DEFAULT 0,
    missing     bigint NOT NULL DEFAULT 0,
    last_error  text,
    skipped     bigint NOT NULL DEFAULT 0,
    skipped_stale bigint NOT NULL DEFAULT 0,
    stage       smallint NOT NULL DEFAULT 1,
    retry_attempt integer,
    retry_at    timestamptz,
    retry_error text,
    retry_class text CHECK (retry_class IN ('source', 'consumer')),
    since_max   text,
    since_type  regtype,
    bytes_sent  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, part_no)
);
COMMENT ON TABLE ecp.part IS 'unit of parallel work of a run, with its checkpoint';
COMMENT ON COLUMN ecp.part.source IS
  'what the part reads: {"kind": "query", "query": n} (n-th of queries, 0: query), {"kind": "split"} (a query to be cut into key ranges by its first worker), {"kind": "range", "query": 0, "from": k, "to": k} (from <= key < to; null: unbounded), {"kind": "ids"} (the run''s ids), {"kind": "file"}';
COMMENT ON COLUMN ecp.part.position IS 'checkpoint of id and file parts: ids done, or the byte offset after the last acknowledged line';
COMMENT ON COLUMN ecp.part.line_no IS 'checkpoint of file parts: the number of the last acknowledged line';
COMMENT ON COLUMN ecp.part.skipped IS 'documents the task''s transform returned NULL for: not sent';
COMMENT ON COLUMN ecp.part.skipped_stale IS 'documents Elasticsearch already held in a newer version (version_column, HTTP 409): not written, not failed';
COMMENT ON COLUMN ecp.part.retry_attempt IS 'the attempt the part waits to make after a transient error (NULL: not retrying; cleared when it moves on)';
COMMENT ON COLUMN ecp.part.retry_at IS 'when the part tries again';
COMMENT ON COLUMN ecp.part.retry_error IS 'the transient error the part retries after';
COMMENT ON COLUMN ecp.part.retry_class IS 'what failed: source (reading) or consumer (sending)';
COMMENT ON COLUMN ecp.part.bytes_sent IS 'request body bytes the part sent for its acknowledged pages (retries included; before gzip), added at each checkpoint';
COMMENT ON COLUMN ecp.part.stage IS 'a part starts once every part of its run with a lower stage is done: 0 prepares a migration, 1 loads, 2 swaps';
SELECT pg_catalog.pg_extension_config_dump('ecp.part', '');
ALTER TABLE ecp.part ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.part USING (pg_has_role(owner, 'MEMBER'));

CREATE TABLE ecp.flow_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    task_id     bigint,
    run_id      bigint,
    action      text NOT NULL,
    content     jsonb NOT NULL DEFAULT '{}',
    operator    text NOT NULL DEFAULT current_user,
    owner       regrole NOT NULL DEFAULT current_user::regrole,
    -- EcpFlowAction's names (src/flow_actions.c), in its order: the
    -- regression tests compare this list with ecp_internal._flow_actions()
    CONSTRAINT flow_log_action_check
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
                          'claim lost', 'cursor restarted'))
);
CREATE INDEX ON ecp.flow_log (run_id);
COMMENT ON TABLE ecp.flow_log IS 'audit trail: one row per operation or event';
SELECT pg_catalog.pg_extension_config_dump('ecp.flow_log', '');
ALTER TABLE ecp.flow_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_reads ON ecp.flow_log FOR SELECT USING (pg_has_role(owner, 'MEMBER'));
-- From 0.1, when roles wrote flow rows themselves: a row only about their
-- own objects and under their own name.  Roles have no INSERT on flow_log
-- any more (ecp writes the flow, as a superuser), so nothing relies on it.
CREATE POLICY actor_writes ON ecp.flow_log FOR INSERT
    WITH CHECK (pg_has_role(owner, 'MEMBER') AND operator = current_user);

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
SELECT pg_catalog.pg_extension_config_dump('ecp.failed_doc', '');
ALTER TABLE ecp.failed_doc ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.failed_doc USING (pg_has_role(owner, 'MEMBER'));

-- One row per alias_swap run, written by its workers.
CREATE TABLE ecp.migration (
    run_id        bigint PRIMARY KEY REFERENCES ecp.run(id) ON DELETE CASCADE,
    task_id       bigint NOT NULL REFERENCES ecp.task(id) ON DELETE CASCADE,
    consumer_id   bigint NOT NULL,
    alias         text NOT NULL,
    new_index     text NOT NULL,
    load_settings jsonb NOT NULL,   -- the new index's settings while it loads
    final_settings jsonb NOT NULL,  -- what the task asked for afterwards (null: the default)
    mappings      jsonb,
    keep_old      boolean NOT NULL DEFAULT true,
    old_indices   text[],           -- what the alias pointed at before the swap
    step          text NOT NULL DEFAULT 'waiting'
                  CHECK (step IN ('waiting', 'load', 'settings', 'count', 'swap', 'drop old', 'done')),
    state         text NOT NULL DEFAULT 'loading'
                  CHECK (state IN ('loading', 'swapped', 'rolled back', 'dropped')),
    dual_writes   bigint NOT NULL DEFAULT 0,
    old_dropped   boolean NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL DEFAULT now(),
    swapped_at    timestamptz,
    rolled_back_at timestamptz,
    owner         regrole NOT NULL
);
CREATE INDEX ON ecp.migration (consumer_id, alias) WHERE state = 'loading';
COMMENT ON TABLE ecp.migration IS 'one alias swap: the new index, what the alias pointed at, its step';
SELECT pg_catalog.pg_extension_config_dump('ecp.migration', '');
-- (listed last: config dumps keep the order they were added in)
SELECT pg_catalog.pg_extension_config_dump('ecp.run_id', '');
ALTER TABLE ecp.migration ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.migration USING (pg_has_role(owner, 'MEMBER'));

-- ===========================================================================
-- Functions
-- ===========================================================================

-- ---------------------------------------------------------------------------
-- The library and its launcher (C, in ecp.so).
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp.version() RETURNS text
    AS 'MODULE_PATHNAME', 'ecp_version'
    LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ecp.version() IS 'version of the loaded ecp library';

CREATE FUNCTION ecp.launcher_pid() RETURNS integer
    AS 'MODULE_PATHNAME', 'ecp_launcher_pid_sql'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ecp.launcher_pid() IS 'pid of the running ecp launcher, NULL when none runs';

-- The run states the C code knows (checked against ecp.run's CHECK
-- constraint by the regression tests).
CREATE FUNCTION ecp_internal._run_states() RETURNS text[]
    AS 'MODULE_PATHNAME', 'ecp_run_states'
    LANGUAGE C IMMUTABLE STRICT;

-- The flow actions the C code knows (checked against ecp.flow_log's CHECK
-- constraint by the regression tests).
CREATE FUNCTION ecp_internal._flow_actions() RETURNS text[]
    AS 'MODULE_PATHNAME', 'ecp_flow_actions'
    LANGUAGE C IMMUTABLE STRICT;

-- Wake the launcher, or tell a run's workers to look at its state, when
-- the transaction commits.  Only ecp calls them.
CREATE FUNCTION ecp_internal._wake_launcher_at_commit() RETURNS void
    AS 'MODULE_PATHNAME', 'ecp_wake_launcher_at_commit'
    LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION ecp_internal._signal_run_at_commit(run bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'ecp_signal_run_at_commit'
    LANGUAGE C STRICT VOLATILE;

-- The rate limiters as they are now (shared memory).
CREATE FUNCTION ecp_internal._rate_buckets(OUT kind text, OUT id bigint, OUT rate float8,
                                  OUT effective float8, OUT tokens float8, OUT waiting integer)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'ecp_rate_buckets' LANGUAGE C STRICT VOLATILE;

-- Runs are carried out only in the launcher's database: say so at once
-- instead of leaving a run pending without a word.
CREATE FUNCTION ecp_internal._warn_if_not_launcher_database(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    launcher_db text := current_setting('ecp.database_name', true);
BEGIN
    IF launcher_db IS DISTINCT FROM current_database() THEN
        RAISE WARNING 'run % will wait: the ecp launcher works in database "%", not in "%"',
              run, coalesce(launcher_db, '(ecp is not preloaded)'), current_database()
              USING HINT = 'Create tasks in the database named by ecp.database_name, or change that setting and restart.';
    END IF;
END $$;

-- ---------------------------------------------------------------------------
-- Who acts: stamped by triggers, never taken from the statement.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp_internal._is_superuser() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false)
$$;

-- The operator of a change: the current role; for a superuser's session
-- (ecp's workers and launcher) the role it acts for, when it says so in
-- ecp.acting_role, a setting only superusers can change.
CREATE FUNCTION ecp_internal._operator() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN ecp_internal._is_superuser()
                THEN coalesce(nullif(current_setting('ecp.acting_role', true), ''), current_user::text)
                ELSE current_user::text END
$$;

-- ---------------------------------------------------------------------------
-- Options.  Their contract (name, JSON type, bounds, default) is one table
-- in C, src/option_contract.c, which the worker and the launcher read as
-- well: SELECT * FROM ecp_internal._option_contract().  min and max bound an
-- integer or number's value, a text or word's bytes (max), an array's
-- elements, an object's keys; a word is one of words.  Unknown keys, wrong
-- types and values out of range are errors.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp_internal._option_contract(OUT kind text, OUT name text, OUT type text,
                                     OUT min numeric, OUT max numeric, OUT default_value jsonb,
                                     OUT default_setting text, OUT words text[], OUT launcher boolean)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'ecp_option_contract' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ecp_internal._option_contract() IS 'the task and consumer options: JSON type, bounds, default (a GUC may set it), words, whether the launcher reads it';

-- A spec maps each option of a kind to [type, min, max].
CREATE FUNCTION ecp_internal._check_options(options jsonb, spec jsonb, what text)
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
        want := rule ->> 0;
        low := (rule ->> 1)::numeric;
        high := (rule ->> 2)::numeric;
        -- a word's words are checked after every key's type
        valid := CASE want
                 WHEN 'text' THEN jsonb_typeof(v) = 'string' AND octet_length(v #>> '{}') <= high
                 WHEN 'word' THEN jsonb_typeof(v) = 'string' AND octet_length(v #>> '{}') <= high
                 WHEN 'boolean' THEN jsonb_typeof(v) = 'boolean'
                 WHEN 'number' THEN jsonb_typeof(v) = 'number'
                                    AND (v::text)::numeric BETWEEN low AND high
                 WHEN 'integer' THEN jsonb_typeof(v) = 'number'
                                     AND (v::text)::numeric = trunc((v::text)::numeric)
                                     AND (v::text)::numeric BETWEEN low AND high
                 WHEN 'array' THEN jsonb_typeof(v) = 'array'
                                   AND jsonb_array_length(v) BETWEEN low AND high
                 WHEN 'object' THEN jsonb_typeof(v) = 'object'
                                    AND (SELECT count(*) FROM jsonb_object_keys(v)) BETWEEN low AND high
               END;
        IF NOT valid THEN
            RAISE EXCEPTION 'option "%" of a % must be %, not %', k, what,
                  CASE want WHEN 'integer' THEN format('an integer between %s and %s', low, high)
                            WHEN 'number' THEN format('a number between %s and %s', low, high)
                            WHEN 'boolean' THEN 'true or false'
                            WHEN 'array' THEN format('a JSON array of %s to %s elements', low, high)
                            WHEN 'object' THEN format('a JSON object of %s to %s keys', low, high)
                            ELSE format('a string of at most %s bytes', high) END,
                  -- a secret is never quoted: errors reach the server log
                  CASE WHEN k IN ('password', 'api_key') THEN '***' ELSE left(v::text, 100) END
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END $$;

-- The options of a kind (task, consumer) as a spec, from the contract.
CREATE FUNCTION ecp_internal._option_spec(kind text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_object_agg(c.name, jsonb_build_array(c.type, c.min, c.max))
      FROM ecp_internal._option_contract() c WHERE c.kind = _option_spec.kind
$$;

CREATE FUNCTION ecp_internal._task_option_spec() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ecp_internal._option_spec('task')
$$;

CREATE FUNCTION ecp_internal._consumer_option_spec() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ecp_internal._option_spec('consumer')
$$;

-- A word option's value (NULL: not set) is one of its words in the
-- contract.
CREATE FUNCTION ecp_internal._check_option_word(kind text, name text, value text, hint text)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    words text[] := (SELECT c.words FROM ecp_internal._option_contract() c
                      WHERE c.kind = _check_option_word.kind AND c.name = _check_option_word.name);
    wanted text := array_to_string(words[1:cardinality(words) - 1], ', ') || ' or ' || words[cardinality(words)];
BEGIN
    IF value IS NULL OR value = ANY (words) THEN
        RETURN;
    END IF;
    IF hint IS NULL THEN
        RAISE EXCEPTION 'option "%" must be %, not "%"', name, wanted, value
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RAISE EXCEPTION 'option "%" must be %, not "%"', name, wanted, value
          USING ERRCODE = 'invalid_parameter_value', HINT = hint;
END $$;

-- The task options that take one of a set of words (mode is checked with
-- the other options of a migration).
CREATE FUNCTION ecp_internal._check_task_option_values(options jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp_internal._check_option_word('task', 'op', options->>'op', NULL);
    PERFORM ecp_internal._check_option_word('task', 'paging', options->>'paging',
            'auto pages foreign tables by key windows and everything else by keyset; cursor reads any query through one cursor.');
    PERFORM ecp_internal._check_option_word('task', 'format', options->>'format',
            'ids: one id per line, looked up through the query; ndjson: one document per line, sent as it is.');
END $$;

-- Secrets are replaced by "***" wherever options are shown.
CREATE FUNCTION ecp_internal._mask_secrets(options jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(key,
               CASE WHEN key IN ('password', 'api_key') THEN '"***"'::jsonb ELSE value END), '{}')
      FROM jsonb_each(options)
$$;

-- ---------------------------------------------------------------------------
-- Names, URLs, ids, files, queries.
-- ---------------------------------------------------------------------------

-- Elasticsearch index (or alias) name rules; index names also go into the
-- request path, so % is refused as well.
CREATE FUNCTION ecp_internal._check_index_name(index text) RETURNS void
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

-- A consumer URL: http(s)://host:port with an optional path prefix, and no
-- credentials (those go in options).
CREATE FUNCTION ecp_internal._check_url(url text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    port text;
BEGIN
    IF url IS NULL OR url !~ '^https?://[^/?#@\s]+(/[^?#\s]*)?$' THEN
        RAISE EXCEPTION 'invalid consumer URL "%"',
              regexp_replace(coalesce(url, 'NULL'), '//[^/@]*@', '//***@')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use http://host:port or https://host:port (an optional path prefix is allowed); put credentials in options "username"/"password" or "api_key", never in the URL.';
    END IF;
    -- the port after the host (an IPv6 address is in brackets)
    port := substring(url from '^https?://(?:\[[^]/]*\]|[^/:\[]*):([^/]*)');
    IF port IS NOT NULL AND (port !~ '^[0-9]{1,5}$' OR port::integer NOT BETWEEN 1 AND 65535) THEN
        RAISE EXCEPTION 'invalid port "%" in consumer URL "%"', port, ecp_internal._url_origin(url)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A port is a number from 1 to 65535, e.g. http://localhost:9200; leave it out for 80 (http) or 443 (https).';
    END IF;
END $$;

-- scheme://host:port of a URL: what messages and the flow show of an
-- endpoint (a path may hold a token).
CREATE FUNCTION ecp_internal._url_origin(url text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT substring(url from '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]+')
$$;

-- The outbound policy (ecp.allowed_hosts, ecp.block_private_networks, TLS
-- options) for the current role.
CREATE FUNCTION ecp_internal._check_consumer_target(url text, options jsonb) RETURNS void
    AS 'MODULE_PATHNAME', 'ecp_check_consumer_target'
    LANGUAGE C VOLATILE;

-- A tag: sent in a header and used as a key of routes, so a plain token.
CREATE FUNCTION ecp_internal._check_tag(tag text, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tag IS NULL OR tag !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid % "%"', what, left(coalesce(tag, 'NULL'), 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A tag is 1 to 64 letters, digits, "_", ".", ":" or "-", e.g. FLUSH.';
    END IF;
END $$;

-- The longest list of ids a task or a run holds (the whole list is one
-- array value in the row; runs read it in batches).
CREATE FUNCTION ecp_internal._check_ids(ids text[], what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ids IS NULL THEN
        RETURN;
    END IF;
    IF cardinality(ids) = 0 OR cardinality(ids) > 1000000 THEN
        RAISE EXCEPTION '% must hold 1 to 1000000 ids, not %', what, cardinality(ids)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'For more ids, put them in a file (one per line) and use file => with option format ''ids''.';
    END IF;
    IF array_position(ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '% must not hold NULL (element %)', what, array_position(ids, NULL)
              USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(ids) i WHERE octet_length(i) NOT BETWEEN 1 AND 512) THEN
        RAISE EXCEPTION '% holds an id of % bytes', what,
              (SELECT octet_length(i) FROM unnest(ids) i WHERE octet_length(i) NOT BETWEEN 1 AND 512 LIMIT 1)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'An Elasticsearch _id is 1 to 512 bytes.';
    END IF;
END $$;

-- A file source: an http(s) URL (a query string is allowed: presigned
-- object-storage URLs carry their signature there) that the owner's
-- outbound policy allows, or an absolute server path, which needs
-- pg_read_server_files (as COPY FROM a file does).
CREATE FUNCTION ecp_internal._check_file(file text, owner regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF file ~* '^https?://' THEN
        IF file !~* '^https?://[^/?#@\s]+(/[^#\s]*)?$' OR octet_length(file) > 8192 THEN
            RAISE EXCEPTION 'invalid file URL "%"', left(split_part(file, '?', 1), 300)
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Use http(s)://host[:port]/path[?query], without credentials before the host.';
        END IF;
        PERFORM ecp_internal._check_consumer_target(file, '{}');
    ELSIF file LIKE '/%' THEN
        IF octet_length(file) > 4096 OR file ~ '[[:cntrl:]]' THEN
            RAISE EXCEPTION 'invalid file path "%"', left(file, 300)
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT pg_has_role(owner, 'pg_read_server_files', 'MEMBER') THEN
            RAISE EXCEPTION 'role % may not read server file "%"', owner, left(file, 300)
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = 'Reading files on the server needs membership in pg_read_server_files (GRANT pg_read_server_files TO ...), or serve the file over http(s).';
        END IF;
    ELSE
        RAISE EXCEPTION 'invalid file "%"', left(coalesce(file, 'NULL'), 300)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Give an http:// or https:// URL, or an absolute path on the database server.';
    END IF;
END $$;

-- A source query: one plain SELECT that the caller may read.
CREATE FUNCTION ecp_internal._check_query(query text) RETURNS text[]
    AS 'MODULE_PATHNAME', 'ecp_check_query'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ecp_internal._check_query(text) IS
  'parses and checks a source query (one plain SELECT, readable by the caller); returns its column names';

-- The query check with the search_path the task will be read with.
CREATE FUNCTION ecp_internal._check_query(query text, search_path text) RETURNS text[]
    AS 'MODULE_PATHNAME', 'ecp_check_query_with_path'
    LANGUAGE C VOLATILE;

CREATE FUNCTION ecp_internal._statement_text(query text) RETURNS text
    AS 'MODULE_PATHNAME', 'ecp_statement_text_sql'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ecp_internal._statement_text(text) IS
  'checks a source query like _check_query and returns the statement without trailing ; or comments';

-- What the catalog tells about the uniqueness of the query's columns:
-- {"table", "primary_key", "unique": [...], "not_unique": [...]} when the
-- query reads one table, {} when it cannot tell.
CREATE FUNCTION ecp_internal._column_facts(query text, search_path text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'ecp_column_facts'
    LANGUAGE C VOLATILE;

-- ---------------------------------------------------------------------------
-- Consumers: every row checked like create_consumer checks it.
-- ---------------------------------------------------------------------------

-- Further URLs (nodes, the URLs of routes): each checked as the consumer's
-- own URL is, against the owner's outbound policy.
CREATE FUNCTION ecp_internal._check_consumer_urls(c ecp.consumer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    node jsonb;
    route record;
    header text := c.options->>'tag_header';
BEGIN
    FOR node IN SELECT * FROM jsonb_array_elements(coalesce(c.options->'nodes', '[]')) LOOP
        IF jsonb_typeof(node) <> 'string' THEN
            RAISE EXCEPTION 'consumer "%": every element of option "nodes" must be a URL string, not %',
                  c.name, left(node::text, 100)
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'E.g. ''{"nodes": ["http://es2:9200", "http://es3:9200"]}''.';
        END IF;
        PERFORM ecp_internal._check_url(node #>> '{}');
        PERFORM ecp_internal._check_consumer_target(node #>> '{}', c.options);
    END LOOP;
    FOR route IN SELECT * FROM jsonb_each(coalesce(c.options->'routes', '{}')) LOOP
        PERFORM ecp_internal._check_tag(route.key, 'tag of option "routes"');
        IF jsonb_typeof(route.value) <> 'string' THEN
            RAISE EXCEPTION 'consumer "%": the route of tag "%" must be a URL string, not %',
                  c.name, route.key, left(route.value::text, 100)
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'E.g. ''{"routes": {"FLUSH": "http://flush-group:9200"}}''.';
        END IF;
        PERFORM ecp_internal._check_url(route.value #>> '{}');
        PERFORM ecp_internal._check_consumer_target(route.value #>> '{}', c.options);
    END LOOP;
    IF header IS NOT NULL AND (header !~ '^[A-Za-z0-9-]{1,64}$'
        OR lower(header) IN ('authorization', 'content-type', 'content-length', 'content-encoding',
                             'transfer-encoding', 'host', 'connection', 'accept', 'accept-encoding',
                             'expect', 'user-agent', 'te', 'upgrade', 'cookie', 'proxy-authorization')) THEN
        RAISE EXCEPTION 'consumer "%": invalid tag_header "%"', c.name, left(header, 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A header name of 1 to 64 letters, digits or "-" that HTTP itself does not use, e.g. X-Ecp-Tag (the default).';
    END IF;
END $$;

-- Trigger check_row: name, kind, URL, options, credentials, outbound
-- policy; stamps created_at and changed_by.
CREATE FUNCTION ecp_internal._check_consumer_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.name IS NULL OR NEW.name !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'invalid consumer name "%"', left(coalesce(NEW.name, 'NULL'), 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use 1 to 63 letters, digits, "_", "." or "-".';
    END IF;
    IF NEW.kind IS NULL OR NEW.kind NOT IN ('elasticsearch', 'http') THEN
        RAISE EXCEPTION 'unknown consumer kind "%"', left(coalesce(NEW.kind, 'NULL'), 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Supported kinds: elasticsearch (the _bulk API), http (a write service that takes batches as JSON).';
    END IF;
    PERFORM ecp_internal._check_url(NEW.url);
    NEW.url := rtrim(NEW.url, '/');
    PERFORM ecp_internal._check_options(NEW.options, ecp_internal._consumer_option_spec(), 'consumer');
    IF (NEW.options ? 'username') <> (NEW.options ? 'password') THEN
        RAISE EXCEPTION 'options "username" and "password" go together'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.options ? 'api_key' AND NEW.options ? 'username' THEN
        RAISE EXCEPTION 'a consumer authenticates with "username"/"password" or with "api_key", not both'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ecp_internal._check_consumer_target(NEW.url, NEW.options);
    PERFORM ecp_internal._check_consumer_urls(NEW);
    IF TG_OP = 'INSERT' THEN
        NEW.created_at := now();
    END IF;
    NEW.changed_by := ecp_internal._operator();
    RETURN NEW;
END $$;

CREATE FUNCTION ecp.create_consumer(name text, url text, kind text DEFAULT 'elasticsearch',
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
        PERFORM ecp_internal._name_taken('consumer', name);
    END;
END $$;

-- A role drops a consumer of its own that no task uses.  Roles have no
-- DELETE on ecp.consumer: a table-level DELETE would let any role LOCK the
-- whole table and stall every other role's consumers, tasks and runs.
CREATE FUNCTION ecp.drop_consumer(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    c ecp.consumer;
    users text;
BEGIN
    IF NOT ecp_internal._session_user_acts() THEN
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
COMMENT ON FUNCTION ecp.drop_consumer(text) IS 'drop a consumer of your own that no task uses';

-- ---------------------------------------------------------------------------
-- Tasks: every row checked like create_task checks it, with the query
-- read as the inserting role under the task's search_path.
-- ---------------------------------------------------------------------------

-- Whether the task's consumer is a write service (kind http): one may get
-- bare ids, with no query to look them up.
CREATE FUNCTION ecp_internal._task_writes_ids(t ecp.task) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM ecp.consumer c WHERE c.id = t.consumer_id AND c.kind = 'http')
$$;

-- The source of a task: exactly one of query, queries, file; ids go with
-- query, or alone for a write service.
CREATE FUNCTION ecp_internal._check_task_source(t ecp.task) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    format text := t.options->>'format';
    bare_ids boolean := ecp_internal._task_writes_ids(t);
BEGIN
    IF t.ids IS NOT NULL AND t.query IS NULL AND NOT bare_ids THEN
        RAISE EXCEPTION 'task "%": ids are looked up through a query', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass query => ''SELECT id, ... FROM ...'' with ids => ARRAY[...] (only a write service, consumer kind http, takes bare ids).';
    END IF;
    IF num_nonnulls(t.query, t.queries, t.file) = 0 AND NOT (bare_ids AND t.ids IS NOT NULL) THEN
        RAISE EXCEPTION 'task "%" has no source', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass query => ''SELECT id, ... FROM ...'', queries => ARRAY[...], or file => ''https://...''.';
    END IF;
    IF t.queries IS NOT NULL AND (t.query IS NOT NULL OR t.file IS NOT NULL OR t.ids IS NOT NULL) THEN
        RAISE EXCEPTION 'task "%": queries cannot be combined with query, ids or file', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Each element of queries is one part of the task; ecp.start(task, ids => ...) looks ids up in every query (or in the one option shard_of names).';
    END IF;
    IF t.queries IS NOT NULL AND (cardinality(t.queries) NOT BETWEEN 1 AND 4096
                                  OR array_position(t.queries, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'task "%": queries must hold 1 to 4096 queries, none NULL', t.name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF t.ids IS NOT NULL AND t.file IS NOT NULL THEN
        RAISE EXCEPTION 'task "%": ids and file cannot be combined', t.name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ecp_internal._check_ids(t.ids, 'ids');
    IF t.file IS NULL THEN
        IF t.options ?| ARRAY['format', 'id_field', 'max_line_bytes'] THEN
            RAISE EXCEPTION 'task "%": options format, id_field and max_line_bytes are for a file source', t.name
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        PERFORM ecp_internal._check_file(t.file, t.owner);
        IF format = 'ndjson' AND t.query IS NOT NULL THEN
            RAISE EXCEPTION 'task "%": an NDJSON file holds the documents; it has no query', t.name
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Leave query out, or use option format ''ids'' to look the file''s ids up through the query.';
        END IF;
        IF format = 'ids' AND t.query IS NULL AND NOT bare_ids THEN
            RAISE EXCEPTION 'task "%": a file of ids is looked up through a query', t.name
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Pass query => ''SELECT id, ... FROM ...'' (only a write service, consumer kind http, takes bare ids).';
        END IF;
        IF t.query IS NULL AND t.options ?| ARRAY['id_column', 'key_column', 'paging', 'exact_total'] THEN
            RAISE EXCEPTION 'task "%": an NDJSON file has no columns; its _id is the field named by option id_field', t.name
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF coalesce((t.options->>'parallelism')::integer, 1) > 1
       AND (t.file IS NOT NULL OR t.ids IS NOT NULL) THEN
        RAISE EXCEPTION 'task "%": a file or a list of ids is read by one part; parallelism must be 1', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'parallelism runs the parts of queries, or key ranges of one query, at once.';
    END IF;
END $$;

-- The output columns of the query (or of every query of queries, which
-- must each return the id and key columns); an error names the query's
-- place in the array.
CREATE FUNCTION ecp_internal._check_task_queries(t ecp.task) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    columns text[];
    first_columns text[];
    col text;
    i integer;
    message text;
    state text;
    hint text;
BEGIN
    IF t.queries IS NULL THEN
        RETURN ecp_internal._check_query(t.query, t.search_path);
    END IF;
    FOR i IN 1 .. cardinality(t.queries) LOOP
        BEGIN
            columns := ecp_internal._check_query(t.queries[i], t.search_path);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, state = RETURNED_SQLSTATE, hint = PG_EXCEPTION_HINT;
            RAISE EXCEPTION 'queries[%] of task "%": %', i, t.name, message
                  USING ERRCODE = state, HINT = coalesce(hint, '');
        END;
        IF i = 1 THEN
            first_columns := columns;
        END IF;
        FOREACH col IN ARRAY ARRAY[coalesce(t.options->>'id_column', first_columns[1]),
                                   t.options->>'key_column'] LOOP
            IF col IS NOT NULL AND NOT col = ANY (columns) THEN
                RAISE EXCEPTION 'queries[%] of task "%" does not return column "%"', i, t.name, col
                      USING ERRCODE = 'undefined_column',
                            HINT = 'Every query of queries returns the id and key columns; queries[' || i || '] returns: '
                                   || array_to_string(columns, ', ') || '.';
            END IF;
        END LOOP;
    END LOOP;
    RETURN first_columns;
END $$;

-- The id column by default: the primary key of the one table the query
-- reads, when it returns it; else the first column.  Says which columns
-- are the id and the key, and when the catalog shows that the key is not
-- unique (runs fail at the first value that repeats: pages continue after
-- the last key sent).
CREATE FUNCTION ecp_internal._with_key_columns(task text, query text, search_path text, options jsonb,
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

-- Trigger check_row: name, consumer of the same owner, index, options,
-- source (a file's format by default: ids with a query, else ndjson), and
-- the id and key columns (an NDJSON file has none: its _id is the field
-- id_field names); stamps created_at and changed_by.
CREATE FUNCTION ecp_internal._check_task_row() RETURNS trigger
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

-- The function option transform names: schema.name, taking and returning
-- jsonb, which the task's owner may execute.  Qualified, so that what a
-- worker calls does not depend on a search_path.
CREATE FUNCTION ecp_internal._check_transform(transform text, owner regrole) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn regprocedure;
    proc record;
BEGIN
    IF transform !~ '^("[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)\.("[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)$' THEN
        RAISE EXCEPTION 'option "transform" must name a function with its schema, not "%"', left(transform, 200)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'E.g. "transform": "public.shape_order" for a function public.shape_order(jsonb) RETURNS jsonb.';
    END IF;
    fn := to_regprocedure(transform || '(jsonb)');
    IF fn IS NULL THEN
        RAISE EXCEPTION 'transform function %(jsonb) does not exist', transform
              USING ERRCODE = 'undefined_function',
                    HINT = 'Create it: CREATE FUNCTION ' || transform || '(doc jsonb) RETURNS jsonb ...';
    END IF;
    SELECT p.prokind, p.prorettype, p.proretset INTO proc FROM pg_proc p WHERE p.oid = fn;
    IF proc.prokind <> 'f' OR proc.prorettype <> 'jsonb'::regtype OR proc.proretset THEN
        RAISE EXCEPTION 'transform function % must return jsonb (one value)', fn
              USING ERRCODE = 'wrong_object_type',
                    HINT = 'A transform takes a document and returns it reshaped, or NULL to skip it.';
    END IF;
    IF NOT has_function_privilege(owner::oid, fn, 'EXECUTE') THEN
        RAISE EXCEPTION 'role % may not execute transform function %', owner, fn
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'The transform runs as the task''s owner: GRANT EXECUTE ON FUNCTION ' || fn || ' TO ' || owner || '.';
    END IF;
END $$;

-- Options mode (direct, or alias_swap: load a new index, then point the
-- alias at it), settings, mappings, keep_old and window.
CREATE FUNCTION ecp_internal._check_migration_options(t ecp.task, kind text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mode text := coalesce(t.options->>'mode',
                          (SELECT c.default_value #>> '{}' FROM ecp_internal._option_contract() c
                            WHERE c.kind = 'task' AND c.name = 'mode'));
    win text := t.options->>'window';
BEGIN
    PERFORM ecp_internal._check_option_word('task', 'mode', left(mode, 100),
            'alias_swap loads a new index and then points the alias (the task''s index) at it.');
    IF mode = 'direct' AND t.options ?| ARRAY['settings', 'mappings', 'keep_old'] THEN
        RAISE EXCEPTION 'task "%": options settings, mappings and keep_old go with mode alias_swap', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Add "mode": "alias_swap", or create the index yourself.';
    END IF;
    IF mode = 'alias_swap' AND kind IS DISTINCT FROM 'elasticsearch' THEN
        RAISE EXCEPTION 'task "%": mode alias_swap needs an elasticsearch consumer', t.name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF mode = 'alias_swap' AND (t.ids IS NOT NULL OR t.options->>'op' IN ('update', 'delete')) THEN
        RAISE EXCEPTION 'task "%": mode alias_swap loads the whole source into a new index (no ids, op index or create)', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Repair ids with ecp.start(task, ids => ...): such a run writes through the alias.';
    END IF;
    IF mode = 'alias_swap' AND octet_length(t.index_name) > 230 THEN
        RAISE EXCEPTION 'task "%": an alias of at most 230 bytes leaves room for the new index''s name (<alias>-<run id>)', t.name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF win IS NOT NULL AND (win !~ '^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$'
                            OR split_part(win, '-', 1) = split_part(win, '-', 2)) THEN
        RAISE EXCEPTION 'invalid option "window" "%"', left(win, 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'HH:MM-HH:MM in the server''s time zone, e.g. ''01:00-06:00''; it may cross midnight (''22:00-04:00'').';
    END IF;
END $$;

-- Trigger check_writes: options that decide how a batch is written and
-- where, checked against the consumer's kind and the query's columns
-- (after check_row: triggers fire in name order).
CREATE FUNCTION ecp_internal._check_task_writes() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind text;
    columns text[];
    col text;
    es_only text[] := ARRAY['pipeline', 'refresh', 'routing_column', 'version_column'];
BEGIN
    SELECT c.kind INTO kind FROM ecp.consumer c WHERE c.id = NEW.consumer_id;
    IF NEW.options ? 'tag' THEN
        PERFORM ecp_internal._check_tag(NEW.options->>'tag', 'option "tag"');
    END IF;
    IF NEW.options ? 'transform' THEN
        PERFORM ecp_internal._check_transform(NEW.options->>'transform', NEW.owner);
    END IF;
    IF kind = 'http' AND NEW.options ?| es_only THEN
        RAISE EXCEPTION 'task "%": options pipeline, refresh, routing_column and version_column are for an elasticsearch consumer', NEW.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A write service (kind http) decides how documents are written.';
    END IF;
    IF NEW.options ? 'pipeline' AND NEW.options->>'pipeline' !~ '^[A-Za-z0-9_.-]{1,255}$' THEN
        RAISE EXCEPTION 'invalid option "pipeline" "%"', left(NEW.options->>'pipeline', 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'An ingest pipeline id of 1 to 255 letters, digits, "_", "." or "-".';
    END IF;
    IF NEW.options ? 'version_column' AND coalesce(NEW.options->>'op', 'index') NOT IN ('index', 'delete') THEN
        RAISE EXCEPTION 'task "%": option "version_column" needs op index or delete, not %', NEW.name, NEW.options->>'op'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Elasticsearch refuses external versions on update and create.';
    END IF;
    PERFORM ecp_internal._check_migration_options(NEW, kind);
    IF NEW.options ?| ARRAY['routing_column', 'version_column'] THEN
        IF NEW.query IS NULL AND NEW.queries IS NULL THEN
            RAISE EXCEPTION 'task "%": options routing_column and version_column name columns of a query', NEW.name
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'An NDJSON file has no columns.';
        END IF;
        columns := ecp_internal._check_task_queries(NEW);
        FOREACH col IN ARRAY ARRAY[NEW.options->>'routing_column', NEW.options->>'version_column'] LOOP
            IF col IS NOT NULL AND NOT col = ANY (columns) THEN
                RAISE EXCEPTION 'column "%" is not an output column of the query', col
                      USING ERRCODE = 'undefined_column',
                            HINT = 'The query returns: ' || array_to_string(columns, ', ') || '.';
            END IF;
        END LOOP;
    END IF;
    RETURN NEW;
END $$;

-- transform is bound when the task is written: resolved under
-- pg_catalog, pg_temp and stored as an OID, which the worker calls.  The
-- trigger runs last of the BEFORE triggers (by name), so whatever a role
-- wrote into transform_fn is replaced.
CREATE FUNCTION ecp_internal._bind_transform() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.transform_fn := CASE WHEN NEW.options ? 'transform'
                             THEN pg_catalog.to_regprocedure((NEW.options->>'transform') || '(pg_catalog.jsonb)') END;
    RETURN NEW;
END $$;

-- No SET search_path: the task keeps the caller's, to read the query with.
CREATE FUNCTION ecp.create_task(name text, consumer text, index text,
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
        PERFORM ecp_internal._name_taken('task', name);
    END;
    RETURN task_id;
END $$;

-- The first rows of a query as JSON, and which column would be the id (and
-- the key) by default.  Read with the caller's search_path.
CREATE FUNCTION ecp.preview(query text, n integer DEFAULT 1)
RETURNS SETOF jsonb LANGUAGE plpgsql AS $$
DECLARE
    columns text[];
    facts jsonb;
BEGIN
    IF n IS NULL OR n OPERATOR(pg_catalog.<) 0 OR n OPERATOR(pg_catalog.>) 10000 THEN
        RAISE EXCEPTION 'n must be between 0 and 10000, not %', coalesce(n::pg_catalog.text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    columns := ecp_internal._check_query(query, pg_catalog.current_setting('search_path'));
    facts := ecp_internal._column_facts(query, pg_catalog.current_setting('search_path'));
    RAISE NOTICE 'a task of this query gets _id from column "%" and pages by it, unless options id_column and key_column say otherwise',
          coalesce(facts OPERATOR(pg_catalog.->>) 'primary_key', columns[1]);
    RETURN QUERY EXECUTE pg_catalog.format(E'SELECT pg_catalog.to_jsonb("ecp:row") FROM (%s\n) AS "ecp:row" LIMIT %s',
                                           ecp_internal._statement_text(query), n);
END $$;

-- Change a task's rate limit (documents per second, 0 = unlimited), also
-- while it runs.  Option changes (set_rate, or a plain UPDATE) go through
-- check_row too; the flow row and the launcher's wake-up come from the
-- trigger flow_rate.
CREATE FUNCTION ecp.set_rate(task text, docs_per_second numeric) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    rate record;
BEGIN
    SELECT c.min, c.max INTO rate FROM ecp_internal._option_contract() c WHERE c.kind = 'task' AND c.name = 'rate_limit';
    IF docs_per_second IS NULL OR docs_per_second < rate.min OR docs_per_second > rate.max THEN
        RAISE EXCEPTION 'invalid rate % for task "%"', coalesce(docs_per_second::text, 'NULL'), task
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = format('Give documents per second between %s (unlimited) and %s.', rate.min, rate.max);
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

-- Looks a run up for a state change; errors name the run and its state.
CREATE FUNCTION ecp_internal._run_for_update(run bigint, allowed text[], verb text)
RETURNS ecp.run LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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

-- Trigger prepare: everything about a new run but its task and ids is
-- decided here, so a plain INSERT is exactly ecp.start.  A task with ids
-- runs over them unless ecp.start names others; maintenance runs
-- (rollback, drop_index) are started only by ecp.rollback and
-- ecp.cancel(run, drop_index => true).
CREATE FUNCTION ecp_internal._prepare_run() RETURNS trigger
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

-- The planner's estimate of the rows a query returns (for ecp.progress.total).
CREATE FUNCTION ecp_internal._estimate_rows(query text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    plan jsonb;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || query INTO plan;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric::bigint;
END $$;

-- ---------------------------------------------------------------------------
-- Migrations with no downtime (task option mode alias_swap).
-- ---------------------------------------------------------------------------

-- The settings of a migration's new index: the task's own, with
-- replicas 0 and no refresh while it loads; afterwards what the task asked
-- for, or the defaults (null resets a setting).  Settings may be given
-- flat ("number_of_replicas"), dotted ("index.number_of_replicas") or
-- nested ({"index": {...}}): the load values replace each form.
CREATE FUNCTION ecp_internal._migration_settings(settings jsonb, OUT load_settings jsonb, OUT final_settings jsonb)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s jsonb := coalesce(settings, '{}');
    nested jsonb := CASE WHEN jsonb_typeof(s->'index') = 'object' THEN s->'index' ELSE '{}' END;
    replicas jsonb := coalesce(s->'number_of_replicas', s->'index.number_of_replicas',
                               nested->'number_of_replicas', 'null');
    refresh jsonb := coalesce(s->'refresh_interval', s->'index.refresh_interval',
                              nested->'refresh_interval', 'null');
BEGIN
    s := s - ARRAY['number_of_replicas', 'index.number_of_replicas', 'refresh_interval', 'index.refresh_interval'];
    IF s ? 'index' AND jsonb_typeof(s->'index') = 'object' THEN
        s := jsonb_set(s, '{index}', (s->'index') - ARRAY['number_of_replicas', 'refresh_interval']);
        IF s->'index' = '{}' THEN
            s := s - 'index';
        END IF;
    END IF;
    load_settings := s || '{"index.number_of_replicas": 0, "index.refresh_interval": "-1"}';
    final_settings := jsonb_build_object('index', jsonb_build_object('number_of_replicas', replicas,
                                                                     'refresh_interval', refresh));
END $$;

-- Maintenance runs (rollback, drop_index) are inserted only here, as the
-- extension's owner: the caller must be a member of the task's owner, and
-- the migration in the state the action needs.  Roles have no INSERT on
-- ecp.run.action; ecp.rollback and ecp.cancel(run, drop_index) call this.
CREATE FUNCTION ecp_internal._start_maintenance(task_id bigint, action text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    m ecp.migration;
    run_id bigint;
    operator text := session_user;
BEGIN
    IF NOT ecp_internal._session_user_acts() THEN
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
    run_id := ecp_internal._create_run(t.id, NULL, NULL, NULL, action);
    PERFORM set_config('ecp.starting_maintenance', 'off', true);
    PERFORM set_config('ecp.acting_role', '', true);
    RETURN run_id;
END $$;

-- Point the alias back at the index it had before the last swap.
CREATE FUNCTION ecp.rollback(task text) RETURNS bigint
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
    run_id := ecp_internal._start_maintenance(t.id, 'rollback');
    RETURN run_id;
END $$;
COMMENT ON FUNCTION ecp.rollback(text) IS
  'point the alias of an alias_swap task back at the index it had before the last swap (a run: ecp.progress shows it)';

-- The new index a run must also write to: the migration of the same alias
-- through the same consumer that is loading (its index exists), if any.
CREATE FUNCTION ecp_internal._dual_index(consumer_id bigint, alias text, run bigint) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.new_index FROM ecp.migration m JOIN ecp.run r ON r.id = m.run_id
     WHERE m.consumer_id = _dual_index.consumer_id AND m.alias = _dual_index.alias
       AND m.run_id <> _dual_index.run AND m.state = 'loading'
       AND m.step IN ('load', 'settings', 'count', 'swap')
       AND r.state IN ('running', 'paused', 'failed')
     ORDER BY m.run_id DESC LIMIT 1
$$;

-- ---------------------------------------------------------------------------
-- Scheduling with pg_cron, and run windows.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp_internal._require_pg_cron() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in database "%"', current_database()
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name = ''' || current_database()
                           || ''' (ecp''s database), restart, and CREATE EXTENSION pg_cron here.';
    END IF;
END $$;

-- Whether session_user is who acts, so a SECURITY DEFINER function may
-- trust it: not inside a security-restricted operation (an ecp worker
-- running an owner's query, autovacuum running a role's index function).
CREATE FUNCTION ecp_internal._session_user_acts() RETURNS boolean
AS 'MODULE_PATHNAME', 'ecp_session_user_acts' LANGUAGE C STRICT VOLATILE;

-- A flow row saying a pg_cron firing was skipped because the task still
-- has a run in progress (busy), or is disabled (busy NULL).  EXECUTE stays
-- granted: a role's own pg_cron job calls it through ecp_internal._scheduled_start,
-- and it writes only a true row about the caller's task.
CREATE FUNCTION ecp_internal._note_cron_skip(task_id bigint, busy bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
BEGIN
    -- session_user is who acts only outside security-restricted code: in an
    -- ecp worker it is the superuser the worker connects as
    IF NOT ecp_internal._session_user_acts() THEN
        RAISE EXCEPTION 'ecp_internal._note_cron_skip is called by pg_cron jobs, not from inside a query ecp or a maintenance command runs'
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

-- What a pg_cron job calls: a start, unless the task is disabled or still
-- has a run in progress (then a flow row says the firing was skipped).
CREATE FUNCTION ecp_internal._scheduled_start(task text) RETURNS bigint
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
        PERFORM ecp_internal._note_cron_skip(t.id, NULL);
        RETURN NULL;
    END IF;
    SELECT id INTO busy FROM ecp.run WHERE task_id = t.id AND state IN ('pending', 'running', 'paused')
     ORDER BY id LIMIT 1;
    IF FOUND THEN
        PERFORM ecp_internal._note_cron_skip(t.id, busy);
        RETURN NULL;
    END IF;
    RETURN ecp.start(task);
END $$;

CREATE FUNCTION ecp.schedule(task text, cron text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    job bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ecp.task t WHERE t.name = task) THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM ecp_internal._require_pg_cron();
    -- pg_cron's job runs as the role that scheduled it, in this database
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job
      USING 'ecp:' || task, cron, format('SELECT ecp_internal._scheduled_start(%L)', task);
    RETURN job;
END $$;
COMMENT ON FUNCTION ecp.schedule(text, text) IS
  'a pg_cron job (named ecp:<task>) that starts the task on the cron schedule, skipping a firing while a run is in progress';

CREATE FUNCTION ecp.unschedule(task text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    found boolean;
BEGIN
    PERFORM ecp_internal._require_pg_cron();
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = $1 AND username = current_user)'
       INTO found USING 'ecp:' || task;
    IF NOT found THEN
        RAISE EXCEPTION 'task "%" has no schedule of yours', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT jobname, schedule FROM cron.job lists the jobs.';
    END IF;
    EXECUTE 'SELECT cron.unschedule($1)' USING 'ecp:' || task;
END $$;

-- A window 'HH:MM-HH:MM' (server time zone; may cross midnight): whether
-- time t is inside it.
CREATE FUNCTION ecp_internal._in_window(win text, t time) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN split_part(win, '-', 1)::time < split_part(win, '-', 2)::time
                THEN t >= split_part(win, '-', 1)::time AND t < split_part(win, '-', 2)::time
                ELSE t >= split_part(win, '-', 1)::time OR t < split_part(win, '-', 2)::time END
$$;

-- The launcher pauses a run whose window closed and resumes it when the
-- window opens (as the run's owner in the flow).
CREATE FUNCTION ecp_internal._apply_windows() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    changed integer := 0;
BEGIN
    FOR r IN SELECT run.id, run.state, run.paused_reason, run.owner, t.options->>'window' AS win
               FROM ecp.run run JOIN ecp.task t ON t.id = run.task_id
              WHERE t.options ? 'window' AND run.action IS NULL
                AND (run.state IN ('pending', 'running')
                     OR (run.state = 'paused' AND run.paused_reason IS NOT NULL))
              FOR UPDATE OF run SKIP LOCKED LOOP
        PERFORM set_config('ecp.acting_role', r.owner::text, true);
        IF r.state <> 'paused' AND NOT ecp_internal._in_window(r.win, localtime) THEN
            UPDATE ecp.run SET state = 'paused', paused_reason = 'outside its window ' || r.win
             WHERE id = r.id;
            changed := changed + 1;
        ELSIF r.state = 'paused' AND ecp_internal._in_window(r.win, localtime) THEN
            UPDATE ecp.run SET state = 'running' WHERE id = r.id;
            changed := changed + 1;
        END IF;
    END LOOP;
    PERFORM set_config('ecp.acting_role', '', true);
    RETURN changed;
END $$;

-- ---------------------------------------------------------------------------
-- The flow and alerts: recorded by triggers, so no code path can forget
-- them; written as ecp, with the operator the BEFORE triggers stamped.
-- ---------------------------------------------------------------------------

-- Where a run of the task sends, and why: the route of its tag, or the
-- consumer's URL (and nodes).  Origins only: a path may hold a token.
CREATE FUNCTION ecp_internal._run_endpoint(task_id bigint) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
               'tag', t.options->>'tag',
               'endpoint', ecp_internal._url_origin(CASE WHEN c.options->'routes' ? (t.options->>'tag')
                                                THEN c.options->'routes'->>(t.options->>'tag')
                                                ELSE c.url END),
               'nodes', CASE WHEN NOT coalesce(c.options->'routes' ? (t.options->>'tag'), false)
                              AND jsonb_typeof(c.options->'nodes') = 'array'
                             THEN (SELECT jsonb_agg(ecp_internal._url_origin(n)) FROM jsonb_array_elements_text(c.options->'nodes') n) END,
               'why', CASE WHEN t.options->>'tag' IS NULL THEN 'no tag: default endpoint'
                           WHEN c.options->'routes' ? (t.options->>'tag') THEN 'route ' || (t.options->>'tag')
                           ELSE 'no route for ' || (t.options->>'tag') || ': default endpoint' END,
               'kind', c.kind))
      FROM ecp.task t JOIN ecp.consumer c ON c.id = t.consumer_id
     WHERE t.id = task_id
$$;

-- Trigger flow on consumer and task: the definition, with every source
-- kind and credentials masked.
CREATE FUNCTION ecp_internal._flow_on_create() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'consumer' THEN
        INSERT INTO ecp.flow_log (action, content, operator, owner)
        VALUES ('create_consumer',
                jsonb_build_object('consumer', NEW.name, 'kind', NEW.kind, 'url', NEW.url,
                                   'options', ecp_internal._mask_secrets(NEW.options)),
                NEW.changed_by, NEW.owner);
    ELSE
        INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
        VALUES (NEW.id, 'create_task',
                jsonb_strip_nulls(jsonb_build_object(
                    'task', NEW.name, 'index', NEW.index_name, 'query', NEW.query,
                    'queries', NEW.queries, 'ids', cardinality(NEW.ids),
                    'file', split_part(NEW.file, '?', 1), 'options', NEW.options)),
                NEW.changed_by, NEW.owner);
    END IF;
    RETURN NEW;
END $$;

-- Trigger flow on run: start (with where it sends), and each state change
-- with the run's counters.
CREATE FUNCTION ecp_internal._flow_on_run() RETURNS trigger
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

-- Trigger flow_rate: a flow row for a new rate, and the launcher pushes
-- the rate to the workers within a second.
CREATE FUNCTION ecp_internal._flow_on_rate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
    VALUES (NEW.id, 'set_rate',
            jsonb_build_object('task', NEW.name,
                               'old', coalesce((OLD.options->>'rate_limit')::numeric, 0),
                               'new', coalesce((NEW.options->>'rate_limit')::numeric, 0)),
            NEW.changed_by, NEW.owner);
    PERFORM ecp_internal._wake_launcher_at_commit();
    RETURN NEW;
END $$;

-- Explicit events of the workers (worker started, retry, ...).  Only ecp
-- calls it.  The run's column action would make the parameter of the same
-- name ambiguous: the parameters are qualified.
CREATE FUNCTION ecp_internal._flow_event(run bigint, action text, content jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    SELECT r.task_id, r.id, _flow_event.action, _flow_event.content, ecp_internal._operator(), r.owner
      FROM ecp.run r WHERE r.id = _flow_event.run;
END $$;

-- Alerts: a flow row 'alert' with the details (readable by the run's owner
-- only), and NOTIFY ecp_alert with ids and a class only: any role can
-- LISTEN, so the payload holds no error text, URL or data value, and its
-- size is fixed, far below NOTIFY's 8000 bytes.  The launcher also POSTs
-- alerts to ecp.alert_webhook when it is set.
CREATE FUNCTION ecp_internal._alert(run bigint, class text, attempts integer, error text)
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
    VALUES (r.task_id, run, 'alert', details, ecp_internal._operator(), r.owner);
    PERFORM pg_notify('ecp_alert',
                      jsonb_build_object('run', run, 'task_id', r.task_id, 'class', left(class, 40),
                                         'attempts', attempts, 'at', now())::text);
END $$;

-- Trigger alert: every run failure is an alert, of the class the worker
-- recorded.
CREATE FUNCTION ecp_internal._alert_on_failure() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp_internal._alert(NEW.id, coalesce(NEW.failure_class, 'failed'), NEW.failure_attempts,
                       NEW.last_error);
    RETURN NEW;
END $$;

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
    IF NOT ecp_internal._is_superuser() THEN
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
    VALUES ('drop_owned', jsonb_build_object('role', role::text), ecp_internal._operator(), role);
END $$;
COMMENT ON FUNCTION ecp.drop_owned(regrole) IS
  'superuser only: cancel and delete the runs, tasks and consumers of a role (run it before or after DROP ROLE)';

-- ===========================================================================
-- Triggers.  Triggers of one event fire in name order.
-- ===========================================================================
CREATE TRIGGER check_row BEFORE INSERT OR UPDATE ON ecp.consumer
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._check_consumer_row();
CREATE TRIGGER flow AFTER INSERT ON ecp.consumer FOR EACH ROW EXECUTE FUNCTION ecp_internal._flow_on_create();

CREATE TRIGGER check_row BEFORE INSERT OR UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._check_task_row();
CREATE TRIGGER check_writes BEFORE INSERT OR UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._check_task_writes();
CREATE TRIGGER transform_binding BEFORE INSERT OR UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._bind_transform();
CREATE TRIGGER flow AFTER INSERT ON ecp.task FOR EACH ROW EXECUTE FUNCTION ecp_internal._flow_on_create();
CREATE TRIGGER flow_rate AFTER UPDATE OF options ON ecp.task
    FOR EACH ROW WHEN (OLD.options->'rate_limit' IS DISTINCT FROM NEW.options->'rate_limit')
    EXECUTE FUNCTION ecp_internal._flow_on_rate();

CREATE TRIGGER prepare BEFORE INSERT ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._prepare_run();
CREATE TRIGGER check_transition BEFORE UPDATE ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._check_run_transition();
CREATE TRIGGER clear_failure BEFORE UPDATE OF state ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._clear_failure();
CREATE TRIGGER clear_paused_reason BEFORE UPDATE OF state ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._clear_paused_reason();
CREATE TRIGGER alert AFTER UPDATE OF state ON ecp.run
    FOR EACH ROW WHEN (NEW.state = 'failed' AND OLD.state IS DISTINCT FROM 'failed')
    EXECUTE FUNCTION ecp_internal._alert_on_failure();
CREATE TRIGGER create_parts AFTER INSERT ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._create_parts();
CREATE TRIGGER store_ids AFTER INSERT ON ecp.run
    FOR EACH ROW WHEN (NEW.only_ids IS NOT NULL) EXECUTE FUNCTION ecp_internal._store_run_ids();
CREATE TRIGGER flow AFTER INSERT OR UPDATE OF state ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._flow_on_run();
CREATE TRIGGER on_state AFTER UPDATE OF state ON ecp.run
    FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state)
    EXECUTE FUNCTION ecp_internal._on_run_state();

-- ===========================================================================
-- Views.  All but launcher are security_invoker: the caller's row-level
-- security applies.
-- ===========================================================================

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

-- Progress: the sums over the parts, and the run's total as the sum of
-- its parts' totals once every part has one.
CREATE VIEW ecp.progress WITH (security_invoker = true) AS
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
COMMENT ON VIEW ecp.progress IS 'one row per run: state, counts, speed, ETA; retry_* while a part waits to retry, partial for a run that succeeded with dead letters';

CREATE VIEW ecp.parts WITH (security_invoker = true) AS
SELECT p.run_id,
       p.part_no AS part,
       ecp_internal._part_source_text(p.source, t, r) AS source,
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
COMMENT ON VIEW ecp.parts IS 'one row per part of a run: what it reads, state, counters, checkpoint, worker';

CREATE VIEW ecp.flow WITH (security_invoker = true) AS
SELECT at, task_id, run_id, action, content, operator
  FROM ecp.flow_log;
COMMENT ON VIEW ecp.flow IS 'audit trail of operations and events';

CREATE VIEW ecp.failed_docs WITH (security_invoker = true) AS
SELECT run_id, doc_id, status, error_type, reason, attempts, at
  FROM ecp.failed_doc;
COMMENT ON VIEW ecp.failed_docs IS 'documents the sink refused';

CREATE VIEW ecp.consumers WITH (security_invoker = true) AS
SELECT name, kind, url, ecp_internal._mask_secrets(options) AS options, owner, created_at
  FROM ecp.consumer;
COMMENT ON VIEW ecp.consumers IS 'consumers, with credentials masked';

-- ecp.tasks shows the watermarks of incremental runs: it is defined with
-- them (section "Incremental runs" at the end).

CREATE VIEW ecp.rate_limits WITH (security_invoker = true) AS
SELECT b.kind,
       coalesce(t.name, c.name) AS name,
       b.rate AS configured_rate,
       round(b.effective::numeric, 1) AS effective_rate,
       round(coalesce(m.docs_per_second, 0)::numeric, 1) AS measured_rate,
       round(b.tokens::numeric, 1) AS tokens,
       b.waiting AS waiting_workers
  FROM ecp_internal._rate_buckets() b
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

CREATE VIEW ecp.migrations WITH (security_invoker = true) AS
SELECT t.name AS task,
       m.alias,
       array_to_string(m.old_indices, ',') AS old_index,
       m.new_index,
       m.step,
       CASE WHEN m.state = 'loading' AND r.state IN ('failed', 'cancelled', 'paused') THEN r.state
            ELSE m.state END AS state,
       m.started_at AS started,
       m.swapped_at,
       m.run_id,
       m.dual_writes,
       m.old_dropped,
       m.rolled_back_at
  FROM ecp.migration m
  JOIN ecp.run r ON r.id = m.run_id
  JOIN ecp.task t ON t.id = m.task_id;
COMMENT ON VIEW ecp.migrations IS 'alias swaps: the alias, the index before and after, the step and state';

-- ===========================================================================
-- Privileges.  Roles read through RLS; they write only what the header
-- says (functions run as the caller, so RLS applies to them too).
-- ===========================================================================
GRANT USAGE ON SCHEMA ecp TO PUBLIC;

-- owners may rotate credentials, rename (ecp.alter_consumer,
-- ecp.rename_consumer) and drop a consumer no task uses
GRANT SELECT, INSERT ON ecp.consumer TO PUBLIC;
GRANT UPDATE (url, options, name) ON ecp.consumer TO PUBLIC;
-- a task's definition may be changed with a plain UPDATE (ecp.alter_task,
-- ecp.rename_task do just that; checked by check_row and check_in_use),
-- never its owner, search_path, ids, file or what ecp stamps
GRANT SELECT, INSERT ON ecp.task TO PUBLIC;
GRANT UPDATE (options, query, queries, index_name, consumer_id, name, enabled) ON ecp.task TO PUBLIC;
-- roles start runs as themselves (ecp.start) and move them as pause,
-- resume and cancel do
GRANT SELECT ON ecp.run TO PUBLIC;
GRANT INSERT (task_id, only_ids, retry_of, not_before) ON ecp.run TO PUBLIC;
GRANT UPDATE (state) ON ecp.run TO PUBLIC;
GRANT SELECT ON ecp.part, ecp.flow_log, ecp.failed_doc, ecp.migration TO PUBLIC;

GRANT SELECT ON ecp.launcher, ecp.progress, ecp.parts, ecp.flow, ecp.failed_docs,
                ecp.consumers, ecp.rate_limits, ecp.migrations TO PUBLIC;

-- Internals that only ecp's workers, launcher and triggers call.
REVOKE EXECUTE ON FUNCTION ecp_internal._signal_run_at_commit(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp_internal._wake_launcher_at_commit() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp_internal._flow_event(bigint, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp_internal._alert(bigint, text, integer, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp_internal._estimate_rows(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp_internal._split_part(bigint, bigint, bigint, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp_internal._dual_index(bigint, text, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp_internal._apply_windows() FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Every function a user calls says what it does (\df+ ecp.*, \dd ecp.*).
-- ---------------------------------------------------------------------------
COMMENT ON FUNCTION ecp.create_consumer(text, text, text, jsonb) IS
  'register where documents go: an Elasticsearch or OpenSearch cluster (kind elasticsearch) or a write service (kind http)';
COMMENT ON FUNCTION ecp.create_task(text, text, text, text, text[], text[], text, jsonb) IS
  'define what to sync: a query (or queries, ids, a file), the consumer and the index, with options';
COMMENT ON FUNCTION ecp.preview(text, integer) IS
  'the first n documents a query would send, as jsonb, without sending anything';
COMMENT ON FUNCTION ecp.set_rate(text, numeric) IS
  'set a task''s rate limit in documents per second; its running workers take it within a second';
COMMENT ON FUNCTION ecp.retry_failed(bigint) IS
  'a new run over the ids in failed_docs of a finished run';
COMMENT ON FUNCTION ecp.pause(bigint) IS
  'pause a run: its workers stop within a second and keep their checkpoints (a paused run: a NOTICE)';
COMMENT ON FUNCTION ecp.resume(bigint) IS
  'continue a paused or failed run from its checkpoints (a running run: a NOTICE)';
COMMENT ON FUNCTION ecp.cancel(bigint) IS
  'stop a run for good (a cancelled run: a NOTICE)';
COMMENT ON FUNCTION ecp.unschedule(text) IS
  'remove the pg_cron job of a task that ecp.schedule made';

-- ===========================================================================
-- Following changes (0.7): ecp.follow, ecp.unfollow, ecp.followers
-- ===========================================================================
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
CREATE FUNCTION ecp_internal._query_tables(query text, search_path text, id_column text,
                                  OUT relid oid, OUT relkind "char", OUT id_source text)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'ecp_query_tables' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION ecp_internal._query_tables(text, text, text) IS
  'the relations a query reads (views expanded), and for the one its id column comes from, that column';

-- Trigger mode: one AFTER ... FOR EACH STATEMENT trigger per event with
-- transition tables appends the changed keys, one INSERT per statement.
-- It runs as the extension's owner (roles cannot write the queue) with
-- the key column it was installed for, read from ecp.follow_table by the
-- table it fires on, never from an argument a role could choose.
CREATE FUNCTION ecp_internal._follow_enqueue() RETURNS trigger
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
REVOKE EXECUTE ON FUNCTION ecp_internal._follow_enqueue() FROM PUBLIC;

-- The names of a follower's triggers on a table.
CREATE FUNCTION ecp_internal._follow_trigger_names(task_id bigint) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['ecp_follow_' || task_id || '_insert', 'ecp_follow_' || task_id || '_update',
                 'ecp_follow_' || task_id || '_delete', 'ecp_follow_' || task_id || '_truncate']
$$;

CREATE FUNCTION ecp_internal._follow_install_triggers(task_id bigint, relid oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    names text[] := ecp_internal._follow_trigger_names(task_id);
    rel text := relid::regclass::text;
BEGIN
    -- CREATE TRIGGER waits for the table's open writers (SHARE ROW
    -- EXCLUSIVE): every write before it is committed (a backfill page
    -- reads it) or aborted, every write after it fires the trigger
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS ecp_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ecp_internal._follow_enqueue(%L)', names[1], rel, task_id);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS ecp_old NEW TABLE AS ecp_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ecp_internal._follow_enqueue(%L)', names[2], rel, task_id);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS ecp_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ecp_internal._follow_enqueue(%L)', names[3], rel, task_id);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ecp_internal._follow_enqueue(%L)', names[4], rel, task_id);
    -- session_replication_role = replica (pg_restore, some tools) must not silence them
    FOR i IN 1..4 LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', rel, names[i]);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION ecp_internal._follow_install_triggers(bigint, oid) FROM PUBLIC;

-- What a follower leaves behind, removed: its triggers, its publication
-- and its slot (a slot retains WAL for ever: none may be left).  Called
-- when a follower row goes (unfollow, the task deleted, drop_owned) and
-- before DROP EXTENSION (utility_hook.c).  The slot is dropped once its
-- follower no longer holds it (it does only for the moment of a read).
CREATE FUNCTION ecp_internal._follow_cleanup(f ecp.follower) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    trg record;
    tries integer := 0;
BEGIN
    FOR trg IN SELECT tg.tgname, tg.tgrelid::regclass AS rel FROM pg_trigger tg
                WHERE tg.tgname = ANY (ecp_internal._follow_trigger_names(f.task_id))
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
REVOKE EXECUTE ON FUNCTION ecp_internal._follow_cleanup(ecp.follower) FROM PUBLIC;

CREATE FUNCTION ecp_internal._follower_gone() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp_internal._follow_cleanup(OLD);
    RETURN NULL;
END $$;
CREATE TRIGGER cleanup AFTER DELETE ON ecp.follower
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._follower_gone();

-- Every follower's capture removed (DROP EXTENSION ecp: utility_hook.c).
CREATE FUNCTION ecp_internal._follow_cleanup_all() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f ecp.follower;
BEGIN
    FOR f IN SELECT * FROM ecp.follower LOOP
        PERFORM ecp_internal._follow_cleanup(f);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION ecp_internal._follow_cleanup_all() FROM PUBLIC;

-- How each table the task reads maps to document ids: option
-- follow_tables names a column ("schema.table": "column"), a column and a
-- query ({"column": ..., "ids": "SELECT ... = ANY($1)"}), or null (not
-- followed); the table the id column comes from maps by that column;
-- another table by its column named like the id column, unless that is
-- the table's own primary key (its values are that table's ids, not the
-- documents').  Read as the caller, under the task's search_path.
CREATE FUNCTION ecp_internal._follow_plan(t ecp.task)
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
    FOR q IN SELECT * FROM ecp_internal._query_tables(t.query, t.search_path, id_col) LOOP
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
CREATE FUNCTION ecp_internal._follow_create(task_id bigint, mode text, backfill boolean, tables jsonb,
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
    IF NOT ecp_internal._session_user_acts() THEN
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
        RETURN ecp_internal._follow_poll_create(t, backfill, poll_interval, operator);
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
        IF mode = 'decoding' AND NOT ecp_internal._in_replica_identity(tb.relid, tb.key_column) THEN
            RAISE EXCEPTION 'the replica identity of table % does not hold column "%"', tb.relid::regclass, tb.key_column
                  USING ERRCODE = 'object_not_in_prerequisite_state',
                        DETAIL = 'A deleted row is decoded with its replica identity columns only, so its documents could not be found.',
                        HINT = format('ALTER TABLE %s REPLICA IDENTITY USING INDEX <a unique index on %s>, or REPLICA IDENTITY FULL, or follow in mode trigger.',
                                      tb.relid::regclass, tb.key_column);
        END IF;
        INSERT INTO ecp.follow_table (task_id, relid, table_name, key_column, ids_query, owner)
        VALUES (t.id, tb.relid, tb.relid::regclass::text, tb.key_column, tb.ids_query, t.owner);
        IF mode = 'trigger' THEN
            PERFORM ecp_internal._follow_install_triggers(t.id, tb.relid);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM ecp.follow_table ft WHERE ft.task_id = t.id) THEN
        RAISE EXCEPTION 'task "%" reads no table that can be followed', t.name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('ecp.acting_role', operator, true);
    PERFORM set_config('ecp.starting_maintenance', 'on', true);
    run_id := ecp_internal._create_run(t.id, NULL, NULL, NULL, 'follow');
    PERFORM set_config('ecp.starting_maintenance', 'off', true);
    UPDATE ecp.follower f SET run_id = run_id WHERE f.task_id = t.id;
    PERFORM ecp_internal._flow_event(run_id, 'follow',
                            jsonb_build_object('mode', mode, 'backfill', backfill,
                                               'tables', (SELECT jsonb_agg(ft.table_name ORDER BY ft.table_name)
                                                            FROM ecp.follow_table ft WHERE ft.task_id = t.id)));
    PERFORM set_config('ecp.acting_role', '', true);
    RETURN run_id;
END $$;

-- Whether a table's replica identity carries a column in deletes and
-- key-changing updates (the primary key by default, an index, or FULL).
CREATE FUNCTION ecp_internal._in_replica_identity(relid oid, col text) RETURNS boolean
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
    PERFORM ecp_internal._refuse_disabled(t);
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
    chosen := ecp_internal._follow_mode(t, mode, poll_interval);
    IF chosen = 'poll' THEN
        RETURN ecp_internal._follow_poll(t, coalesce(backfill, true), poll_interval);
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object('relid', p.relid, 'key_column', p.key_column,
                                                 'ids_query', p.ids_query)), '[]')
      INTO tables FROM ecp_internal._follow_plan(t) p;
    run_id := ecp_internal._follow_create(t.id, chosen, coalesce(backfill, true), tables);
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
    IF NOT ecp_internal._session_user_acts() THEN
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
        PERFORM ecp_internal._signal_run_at_commit(f.run_id);
        PERFORM ecp_internal._flow_event(f.run_id, 'unfollow', jsonb_build_object('mode', f.mode));
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
REVOKE EXECUTE ON FUNCTION ecp_internal._follow_cleanup(ecp.follower) FROM PUBLIC;
-- The launcher's look at the followers' slots, at every pass: an alert
-- when a slot retains more WAL than ecp.follow_max_retained_wal (once,
-- until it falls below again), or was invalidated (wal_status lost: the
-- follower cannot go on; unfollow and follow again).
CREATE FUNCTION ecp_internal._watch_followers() RETURNS void
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
            PERFORM ecp_internal._alert(w.run_id, CASE WHEN w.wal_status = 'lost' THEN 'follow slot lost'
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
REVOKE EXECUTE ON FUNCTION ecp_internal._watch_followers() FROM PUBLIC;
-- (follow section end)

-- ===========================================================================
-- Incremental runs (0.7): task option since_column, its watermark
-- ===========================================================================
-- A task with since_column reads, in a full run, only the rows whose
-- since_column is at least its watermark less since_overlap (the worker's
-- since.c adds the filter to every page query, so it reaches a foreign
-- server); the watermark is the largest value the last successful full
-- run read.  Columns since_max and since_type of ecp.part keep each
-- part's largest value.

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
CREATE FUNCTION ecp_internal._column_type(query text, search_path text, column_name text) RETURNS regtype
    AS 'MODULE_PATHNAME', 'ecp_column_type'
    LANGUAGE C VOLATILE;

-- Trigger check_since: option since_column names an output column of the
-- query (of every query of queries) that is an integer, a date or a
-- timestamp; since_overlap goes with it; an alias_swap task, which loads
-- the whole source into a new index every run, takes neither.  (After
-- check_row, which checks the options and the query: triggers fire in
-- name order.)
CREATE FUNCTION ecp_internal._check_since_column() RETURNS trigger
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
        column_type := ecp_internal._column_type(sources[i], NEW.search_path, col);
        IF column_type IS NULL THEN
            RAISE EXCEPTION 'column "%" is not an output column of %', col, place
                  USING ERRCODE = 'undefined_column',
                        HINT = 'The query returns: '
                               || array_to_string(ecp_internal._check_query(sources[i], NEW.search_path), ', ') || '.';
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
CREATE FUNCTION ecp_internal._advance_watermark(for_task bigint, for_query integer, new_type regtype,
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
CREATE FUNCTION ecp_internal._run_watermarks() RETURNS trigger
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
            after := ecp_internal._advance_watermark(t.id, q, seen.type_oid::regtype, largest, NEW.id);
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
CREATE FUNCTION ecp_internal._task_watermark(task bigint, queries integer) RETURNS text
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
CREATE FUNCTION ecp_internal._forget_watermarks(t ecp.task, why text, actor text) RETURNS jsonb
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
CREATE FUNCTION ecp_internal._forget_watermarks_on_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ecp_internal._forget_watermarks(NEW, 'since_column or the query changed', NEW.changed_by) IS NOT NULL THEN
        RAISE NOTICE 'task "%": its watermark is forgotten (since_column or the query changed); the next run reads the whole source', NEW.name;
    END IF;
    RETURN NEW;
END $$;

-- ecp.reset_watermark: the role must see the task (row-level security);
-- the reset itself runs as ecp (roles do not write watermarks), for a
-- caller who is a member of the task's owner.
CREATE FUNCTION ecp_internal._reset_watermark(task_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    was jsonb;
BEGIN
    IF NOT ecp_internal._session_user_acts() THEN
        RAISE EXCEPTION 'watermarks are not reset from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE id = task_id;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task % is not yours', task_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    was := ecp_internal._forget_watermarks(t, 'ecp.reset_watermark', session_user);
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
    PERFORM ecp_internal._reset_watermark(task_id);
END $$;
COMMENT ON FUNCTION ecp.reset_watermark(text) IS
  'forget the watermark of a task with since_column (owner only): its next run reads the whole source';

CREATE TRIGGER check_since BEFORE INSERT OR UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._check_since_column();
CREATE TRIGGER forget_watermark AFTER UPDATE ON ecp.task
    FOR EACH ROW WHEN (OLD.options->'since_column' IS DISTINCT FROM NEW.options->'since_column'
                       OR OLD.query IS DISTINCT FROM NEW.query OR OLD.queries IS DISTINCT FROM NEW.queries
                       OR OLD.search_path IS DISTINCT FROM NEW.search_path)
    EXECUTE FUNCTION ecp_internal._forget_watermarks_on_change();
CREATE TRIGGER watermark AFTER UPDATE OF state ON ecp.run
    FOR EACH ROW WHEN (NEW.state = 'succeeded' AND OLD.state IS DISTINCT FROM 'succeeded')
    EXECUTE FUNCTION ecp_internal._run_watermarks();

GRANT SELECT ON ecp.watermark TO PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp_internal._advance_watermark(bigint, integer, regtype, text, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ecp_internal._forget_watermarks(ecp.task, text, text) FROM PUBLIC;

-- ecp.tasks shows each task's watermark, so it is defined here, after
-- ecp.watermark and ecp_internal._task_watermark.
CREATE VIEW ecp.tasks WITH (security_invoker = true) AS
SELECT t.id, t.name, c.name AS consumer, t.index_name AS index, t.query, t.options,
       t.owner, t.created_at, t.queries, t.ids,
       -- a presigned URL's signature is a credential
       split_part(t.file, '?', 1) AS file,
       -- since_column: the next run reads from it (less since_overlap)
       ecp_internal._task_watermark(t.id, cardinality(t.queries)) AS watermark,
       t.enabled
  FROM ecp.task t JOIN ecp.consumer c ON c.id = t.consumer_id;
COMMENT ON VIEW ecp.tasks IS 'task definitions, the watermark of a task with since_column, and whether it is enabled';
GRANT SELECT ON ecp.tasks TO PUBLIC;
-- (since_column section end)

-- ===========================================================================
-- Following by polling (0.7): ecp.follow in mode poll
-- ===========================================================================
-- A task with since_column whose source is a foreign table (mysql_fdw) or
-- a task of queries has no WAL to decode and no table to put triggers on:
-- its follower polls.  The launcher starts an ordinary full run of the
-- task every poll_interval (ecp_internal._poll_followers, at every pass); since_column
-- makes each run read only what changed since the last successful one,
-- and the trigger watermark moves the watermark when it succeeds.  The
-- follower's run_id is its latest poll run; a paused or failed poll run
-- stops the polling until it is resumed and succeeds (never a loop of
-- failing runs).  Deletes in the source are not seen.

-- poll_interval, checked: from 1 second (the launcher's pass) to 1 day;
-- NULL is the default, 1 minute.
CREATE FUNCTION ecp_internal._check_poll_interval(poll_interval interval) RETURNS interval
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
CREATE FUNCTION ecp_internal._follow_mode(t ecp.task, mode text, poll_interval interval) RETURNS text
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
          FROM ecp_internal._query_tables(t.query, t.search_path, coalesce(t.options->>'id_column', 'id')) q
         WHERE q.relkind = 'f';
    END IF;
    IF chosen IS NULL THEN
        chosen := CASE WHEN t.options ? 'since_column' AND (t.queries IS NOT NULL OR foreign_tables IS NOT NULL) THEN 'poll'
                       WHEN current_setting('wal_level') = 'logical' THEN 'decoding'
                       ELSE 'trigger' END;
    END IF;
    IF chosen = 'poll' THEN
        PERFORM ecp_internal._check_poll_interval(poll_interval);
        PERFORM ecp_internal._check_pollable(t);
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
CREATE FUNCTION ecp_internal._check_pollable(t ecp.task) RETURNS void
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
-- poll run (ecp_internal._follow_create checks again, as ecp), a NOTICE.
CREATE FUNCTION ecp_internal._follow_poll(t ecp.task, backfill boolean, poll_interval interval) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    run_id bigint;
BEGIN
    run_id := ecp_internal._follow_create(t.id, 'poll', backfill, '[]', poll_interval);
    RAISE NOTICE 'task "%" is followed in mode poll (run %): a run every % reads the rows whose "%" moved%', t.name, run_id,
          ecp_internal._check_poll_interval(poll_interval), t.options->>'since_column',
          CASE WHEN backfill THEN '; this first one reads them all' ELSE '' END
          USING HINT = 'Deletes in the source are not seen by polling. SELECT * FROM ecp.followers shows the follower.';
    RETURN run_id;
END $$;

-- The follower of mode poll, as ecp (called by ecp_internal._follow_create once the
-- caller's right to the task and ecp.max_followers_per_role are checked):
-- its row, and its first poll run at once, started for the caller.  With
-- backfill the task's watermark is forgotten, so that run reads the whole
-- source; without, it reads from the watermark (all of it if none).
CREATE FUNCTION ecp_internal._follow_poll_create(t ecp.task, backfill boolean, poll_interval interval, operator text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    run_id bigint;
BEGIN
    PERFORM ecp_internal._check_pollable(t);
    INSERT INTO ecp.follower (task_id, mode, backfill, owner, poll_interval)
    VALUES (t.id, 'poll', backfill, t.owner, ecp_internal._check_poll_interval(poll_interval));
    PERFORM set_config('ecp.acting_role', operator, true);
    IF backfill THEN
        PERFORM ecp_internal._forget_watermarks(t, 'ecp.follow: the backfill reads the whole source', operator);
    END IF;
    run_id := ecp_internal._create_run(t.id, NULL, NULL, NULL, NULL);
    UPDATE ecp.follower f SET run_id = run_id WHERE f.task_id = t.id;
    PERFORM ecp_internal._flow_event(run_id, 'follow',
                            jsonb_build_object('mode', 'poll', 'backfill', backfill,
                                               'poll_seconds', extract(epoch FROM ecp_internal._check_poll_interval(poll_interval))::float8,
                                               'since_column', t.options->>'since_column'));
    PERFORM set_config('ecp.acting_role', '', true);
    RETURN run_id;
END $$;
REVOKE EXECUTE ON FUNCTION ecp_internal._follow_poll_create(ecp.task, boolean, interval, text) FROM PUBLIC;

-- The launcher's step for the followers of mode poll, at every pass
-- (src/launcher/follow_poll.c): a new full run of a follower's task once
-- its latest poll run finished (succeeded, or was cancelled) poll_interval
-- ago, or it has none, and the task has no run in progress.  The run's
-- owner is the task's (the trigger prepare); its operator "ecp follower".
-- A paused or failed poll run keeps it waiting.  The run it replaces adds
-- its documents to changes_applied and, if it succeeded, its start to
-- polled_at.  A follower being unfollowed (locked) is skipped.
CREATE FUNCTION ecp_internal._poll_followers() RETURNS integer
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
            new_run := ecp_internal._create_run(due.task_id, NULL, NULL, NULL, NULL);
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
REVOKE EXECUTE ON FUNCTION ecp_internal._poll_followers() FROM PUBLIC;
-- (poll section end)

-- ===========================================================================
-- Ids on sharded tasks (0.7): id runs of a task of queries, option shard_of
-- ===========================================================================
-- An id run (ecp.start(task, ids => ...), ecp.retry_failed) of a task of
-- queries looks each batch of ids up in every query, or with task option
-- shard_of only in the query that holds each id (the worker's
-- source_ids.c); an id two queries return is a flow row "duplicate ids".

-- shard_of checked (src/common/shard_of.c): one expression over id, of
-- id_type when ids compare in it (an integer or a uuid) and else text,
-- without subqueries, aggregates or volatile functions, of an integer
-- type, read under search_path.
CREATE FUNCTION ecp_internal._check_shard_of(expression text, id_type regtype, search_path text) RETURNS void
    AS 'MODULE_PATHNAME', 'ecp_check_shard_of'
    LANGUAGE C VOLATILE;

-- Trigger check_shard_of: option shard_of goes with queries, and is an
-- expression over the id column of queries[1].  (After check_row, which
-- checks the options and the queries: triggers fire in name order.)
CREATE FUNCTION ecp_internal._check_shard_of_option() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    expression text := NEW.options->>'shard_of';
BEGIN
    IF expression IS NULL THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.options->'shard_of' IS NOT DISTINCT FROM OLD.options->'shard_of'
       AND NEW.options->'id_column' IS NOT DISTINCT FROM OLD.options->'id_column'
       AND NEW.queries IS NOT DISTINCT FROM OLD.queries
       AND NEW.search_path IS NOT DISTINCT FROM OLD.search_path THEN
        RETURN NEW;
    END IF;
    IF NEW.queries IS NULL THEN
        RAISE EXCEPTION 'task "%": option "shard_of" goes with queries', NEW.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'shard_of names the query of queries that holds an id; a task of one query looks every id up in it.';
    END IF;
    PERFORM ecp_internal._check_shard_of(expression,
                                ecp_internal._column_type(NEW.queries[1], NEW.search_path, NEW.options->>'id_column'),
                                NEW.search_path);
    RETURN NEW;
END $$;

CREATE TRIGGER check_shard_of BEFORE INSERT OR UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._check_shard_of_option();
-- (ids on sharded tasks section end)

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
CREATE FUNCTION ecp_internal._check_verify_options(given jsonb) RETURNS jsonb
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
CREATE FUNCTION ecp_internal._check_verifiable(t ecp.task) RETURNS void
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
CREATE FUNCTION ecp_internal._start_verify(task_id bigint, options jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
    run_id bigint;
    operator text := session_user;
BEGIN
    IF NOT ecp_internal._session_user_acts() THEN
        RAISE EXCEPTION 'verify runs are not started from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task WHERE id = task_id;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task % is not yours', task_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM ecp_internal._check_verifiable(t);
    PERFORM set_config('ecp.acting_role', operator, true);
    PERFORM set_config('ecp.starting_maintenance', 'on', true);
    INSERT INTO ecp.run (task_id, action, verify_with)
    VALUES (t.id, 'verify', ecp_internal._check_verify_options(options))
    RETURNING id INTO run_id;
    PERFORM set_config('ecp.starting_maintenance', 'off', true);
    PERFORM set_config('ecp.acting_role', '', true);
    PERFORM ecp_internal._warn_if_not_launcher_database(run_id);
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
    PERFORM ecp_internal._refuse_disabled(t);
    PERFORM ecp_internal._check_verify_options(options);
    RETURN ecp_internal._start_verify(t.id, options);
END $$;
COMMENT ON FUNCTION ecp.verify(text, jsonb) IS
  'start a verify run: compare the task''s source with its index, page by page, and record what differs in ecp.drift; options {"extra": true} (also find documents whose rows are gone), {"sample": 0.1}';

-- Start the id run that repairs what a verify run found, as ecp: missing
-- and stale ids are sent again, extra ones are deleted (the run deletes
-- the documents of ids its query does not return, as delete_missing).
CREATE FUNCTION ecp_internal._start_repair(verify_run bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    r ecp.run;
    ids text[];
    run_id bigint;
    operator text := session_user;
BEGIN
    IF NOT ecp_internal._session_user_acts() THEN
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
    PERFORM ecp_internal._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;

CREATE FUNCTION ecp.repair(verify_run bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN ecp_internal._start_repair(verify_run);
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
CREATE FUNCTION ecp_internal._count_check_index(run bigint) RETURNS text
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
                                    AND ecp_internal._url_origin(oc.url) = ecp_internal._url_origin(c.url)) END
$$;
REVOKE EXECUTE ON FUNCTION ecp_internal._count_check_index(bigint) FROM PUBLIC;

-- The count check's flow row: the documents the run wrote against the
-- index's _count, and whether they are equal.
CREATE FUNCTION ecp_internal._record_count_check(run bigint, index text, index_count bigint) RETURNS boolean
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
    PERFORM ecp_internal._flow_event(run, 'count checked', content);
    RETURN index_count = written;
END $$;
REVOKE EXECUTE ON FUNCTION ecp_internal._record_count_check(bigint, text, bigint) FROM PUBLIC;

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
CREATE FUNCTION ecp_internal._ids_as_text(ids anycompatiblearray) RETURNS text[]
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
CREATE FUNCTION ecp_internal._refuse_disabled(t ecp.task) RETURNS void
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
CREATE FUNCTION ecp_internal._name_taken(kind text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '% name "%" is taken', kind, name
          USING ERRCODE = 'duplicate_object',
                HINT = CASE kind WHEN 'task' THEN 'Task names are unique across all roles (a name identifies a task in the flow, alerts, metrics and pg_cron jobs); choose another.'
                                 ELSE 'Consumer names are unique across all roles, like task names; choose another.' END;
END $$;

-- The task's run that is pending, running or paused (a follower's run
-- among them), NULL when there is none.
CREATE FUNCTION ecp_internal._run_in_progress(task_id bigint) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.id FROM ecp.run r
     WHERE r.task_id = _run_in_progress.task_id AND r.state IN ('pending', 'running', 'paused')
     ORDER BY r.id LIMIT 1
$$;

-- Refuse a change (what: what is refused) that the task's follower or its
-- run in progress depends on.
CREATE FUNCTION ecp_internal._refuse_in_use(t ecp.task, what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    busy bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM ecp.follower f WHERE f.task_id = t.id) THEN
        RAISE EXCEPTION 'task "%" is followed: %', t.name, what
              USING ERRCODE = 'object_in_use',
                    HINT = format('Stop following it first: SELECT ecp.unfollow(%L); follow it again afterwards.', t.name);
    END IF;
    busy := ecp_internal._run_in_progress(t.id);
    IF busy IS NOT NULL THEN
        RAISE EXCEPTION 'task "%" has run % in progress: %', t.name, busy, what
              USING ERRCODE = 'object_in_use',
                    HINT = format('Wait for run %s to end, or SELECT ecp.cancel(%s); first.', busy, busy);
    END IF;
END $$;

-- Options changed by a partial object: its keys replace the current ones,
-- a key given as JSON null is removed.
CREATE FUNCTION ecp_internal._merge_options(base jsonb, changes jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (base || changes)
           - ARRAY(SELECT c.key FROM jsonb_each(changes) c WHERE jsonb_typeof(c.value) = 'null')
$$;

-- The keys two option objects differ in: {"before": {...}, "after": {...}}
-- (null for a key one side lacks), secrets masked.
CREATE FUNCTION ecp_internal._options_change(before_options jsonb, after_options jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
               'before', coalesce(jsonb_object_agg(k, coalesce(ecp_internal._mask_secrets(before_options) -> k, 'null')), '{}'),
               'after', coalesce(jsonb_object_agg(k, coalesce(ecp_internal._mask_secrets(after_options) -> k, 'null')), '{}'))
      FROM jsonb_object_keys(before_options || after_options) k
     WHERE before_options -> k IS DISTINCT FROM after_options -> k
$$;

-- Trigger check_in_use: a task's source, index and consumer stay as they
-- are while a run reads them or a follower watches them; a followed task
-- is not disabled (its follower would go on).  Options may change mid-run
-- (ecp.set_rate, a window: the launcher applies them at once); a rename
-- may too (runs name their task by id).  Before check_row: triggers fire
-- in name order.
CREATE FUNCTION ecp_internal._check_task_in_use() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.query IS DISTINCT FROM OLD.query OR NEW.queries IS DISTINCT FROM OLD.queries
       OR NEW.index_name IS DISTINCT FROM OLD.index_name OR NEW.consumer_id IS DISTINCT FROM OLD.consumer_id
       OR NEW.ids IS DISTINCT FROM OLD.ids OR NEW.file IS DISTINCT FROM OLD.file
       OR NEW.search_path IS DISTINCT FROM OLD.search_path THEN
        PERFORM ecp_internal._refuse_in_use(OLD, 'its source, index and consumer cannot change');
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
CREATE FUNCTION ecp_internal._flow_on_task_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before jsonb := '{}';
    after jsonb := '{}';
    option_diff jsonb := ecp_internal._options_change(OLD.options - 'rate_limit', NEW.options - 'rate_limit');
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
CREATE FUNCTION ecp_internal._flow_on_task_drop() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (task_id, action, content, operator, owner)
    VALUES (OLD.id, 'drop_task',
            jsonb_build_object('task', OLD.name, 'before', jsonb_strip_nulls(jsonb_build_object(
                'index', OLD.index_name,
                'consumer', (SELECT c.name FROM ecp.consumer c WHERE c.id = OLD.consumer_id),
                'query', OLD.query, 'queries', OLD.queries, 'ids', cardinality(OLD.ids),
                'file', split_part(OLD.file, '?', 1), 'options', OLD.options, 'enabled', OLD.enabled))),
            ecp_internal._operator(), OLD.owner);
    RETURN NULL;
END $$;

-- Trigger cron_jobs on task: the pg_cron jobs that ecp.schedule made
-- (ecp:<task>, calling ecp_internal._scheduled_start('<task>')) follow their task:
-- renamed with it, removed with it, whichever role scheduled them (each
-- job runs as its role: only ecp, as a superuser, sees them all).
CREATE FUNCTION ecp_internal._task_cron_jobs() RETURNS trigger
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
               USING 'ecp:' || OLD.name, format('SELECT ecp_internal._scheduled_start(%L)', OLD.name)
    LOOP
        IF TG_OP = 'UPDATE' THEN
            EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, $4, $5, $6)'
              USING 'ecp:' || NEW.name, job.schedule, format('SELECT ecp_internal._scheduled_start(%L)', NEW.name),
                    job.database, job.username, job.active;
        END IF;
        EXECUTE 'SELECT cron.unschedule($1)' USING job.jobid;
    END LOOP;
    RETURN NULL;
END $$;

-- Trigger flow_change on consumer: what changed, before and after,
-- secrets masked; rename_consumer when only the name did.
CREATE FUNCTION ecp_internal._flow_on_consumer_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before jsonb := '{}';
    after jsonb := '{}';
    option_diff jsonb := ecp_internal._options_change(OLD.options, NEW.options);
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
CREATE FUNCTION ecp_internal._flow_on_consumer_drop() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (action, content, operator, owner)
    VALUES ('drop_consumer',
            jsonb_build_object('consumer', OLD.name, 'before',
                               jsonb_build_object('kind', OLD.kind, 'url', OLD.url,
                                                  'options', ecp_internal._mask_secrets(OLD.options))),
            ecp_internal._operator(), OLD.owner);
    RETURN NULL;
END $$;

CREATE TRIGGER check_in_use BEFORE UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._check_task_in_use();
CREATE TRIGGER flow_change AFTER UPDATE ON ecp.task
    FOR EACH ROW WHEN ((OLD.name, OLD.query, OLD.queries, OLD.index_name, OLD.consumer_id, OLD.options,
                        OLD.enabled, OLD.ids, OLD.file, OLD.search_path)
                       IS DISTINCT FROM
                       (NEW.name, NEW.query, NEW.queries, NEW.index_name, NEW.consumer_id, NEW.options,
                        NEW.enabled, NEW.ids, NEW.file, NEW.search_path))
    EXECUTE FUNCTION ecp_internal._flow_on_task_change();
CREATE TRIGGER flow_drop AFTER DELETE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._flow_on_task_drop();
CREATE TRIGGER cron_jobs AFTER DELETE OR UPDATE OF name ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._task_cron_jobs();
CREATE TRIGGER flow_change AFTER UPDATE ON ecp.consumer
    FOR EACH ROW WHEN ((OLD.name, OLD.kind, OLD.url, OLD.options) IS DISTINCT FROM (NEW.name, NEW.kind, NEW.url, NEW.options))
    EXECUTE FUNCTION ecp_internal._flow_on_consumer_change();
CREATE TRIGGER flow_drop AFTER DELETE ON ecp.consumer
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._flow_on_consumer_drop();

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
        PERFORM ecp_internal._refuse_in_use(t, 'only enabled can change');
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
                          ELSE ecp_internal._merge_options(t.options, alter_task.options) END,
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
        PERFORM ecp_internal._name_taken('task', new_name);
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
    IF NOT ecp_internal._session_user_acts() THEN
        RAISE EXCEPTION 'tasks are not dropped from inside a query ecp or a maintenance command runs'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ecp.task tk WHERE tk.name = drop_task.task FOR UPDATE;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'task "%" does not exist', coalesce(drop_task.task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT name FROM ecp.tasks lists yours.';
    END IF;
    PERFORM ecp_internal._refuse_in_use(t, 'it cannot be dropped');
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
                          ELSE ecp_internal._merge_options(c.options, alter_consumer.options) END
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
        PERFORM ecp_internal._name_taken('consumer', new_name);
    END;
END $$;
COMMENT ON FUNCTION ecp.rename_consumer(text, text) IS
  'rename a consumer of your own (its tasks keep it by id)';

-- The version of the action line of a document read by query, as a
-- worker writes it (owner_sql.c): an integer's text, a numeric cut to a
-- bigint, a date or timestamp in microseconds (NULL: no version_column).
CREATE FUNCTION ecp_internal._version_sql(t ecp.task, query text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    version_type regtype;
    expression text;
BEGIN
    IF NOT t.options ? 'version_column' THEN
        RETURN 'NULL::pg_catalog.text';
    END IF;
    version_type := ecp_internal._column_type(query, t.search_path, t.options->>'version_column');
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
CREATE FUNCTION ecp_internal._preview_rows(t ecp.task, query text, sent_sql text, n integer) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    statement text;
    rows text[];
BEGIN
    PERFORM set_config('search_path', t.search_path, true);
    statement := ecp_internal._statement_text(query);
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    statement := format(
        'SELECT pg_catalog.array_agg(ARRAY[x.id, x.body, %1$s, x.routing, x.version] ORDER BY x.n)'
        '  FROM (SELECT (r.%2$I)::pg_catalog.text AS id, pg_catalog.row_to_json(r)::pg_catalog.text AS body,'
        '               %3$s AS routing, %4$s AS version, pg_catalog.row_number() OVER (ORDER BY r.%5$I) AS n'
        '          FROM (%6$s' || E'\n' || ') AS r WHERE r.%5$I IS NOT NULL %7$s ORDER BY r.%5$I LIMIT %8$s) AS x',
        sent_sql, t.options->>'id_column',
        CASE WHEN t.options ? 'routing_column'
             THEN format('(r.%I)::pg_catalog.text', t.options->>'routing_column') ELSE 'NULL::pg_catalog.text' END,
        ecp_internal._version_sql(t, query), coalesce(t.options->>'key_column', t.options->>'id_column'), statement,
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
CREATE FUNCTION ecp_internal._sent_lines(kind text, op text, id text, sent text, routing text, version text,
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
    op := coalesce(t.options->>'op', (SELECT oc.default_value #>> '{}' FROM ecp_internal._option_contract() oc
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
        found_rows := ecp_internal._preview_rows(t, coalesce(t.queries[i], t.query), sent_sql, wanted);
        FOR j IN 1 .. coalesce(array_length(found_rows, 1), 0) LOOP
            _id := found_rows[j][1];
            SELECT l.action, l.document INTO action, document
              FROM ecp_internal._sent_lines(kind, op, _id, found_rows[j][3], found_rows[j][4], found_rows[j][5]) l;
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
-- reads (doc/postgres_exporter/queries.yaml), and ecp_internal._purge_history,
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
  FROM unnest(ecp_internal._run_states()) s(state)
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
CREATE FUNCTION ecp_internal._purge_history(days integer, max_runs integer,
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
REVOKE EXECUTE ON FUNCTION ecp_internal._purge_history(integer, integer) FROM PUBLIC;
COMMENT ON FUNCTION ecp_internal._purge_history(integer, integer) IS
  'the retention (ecp.history_days): finished runs older than days, with their parts, dead letters, drift and flow rows, and old flow rows and throughput samples; at most max_runs runs a call; the launcher calls it';

GRANT SELECT ON ecp.throughput, ecp.status, ecp.task_health, ecp.throughput_per_minute, ecp.metrics TO PUBLIC;

-- (monitoring section end)

-- ===========================================================================
-- Workers that stay (issue 25)
-- ===========================================================================

-- (workers section end)

-- ===========================================================================
-- Cursor paging (issue 26)
-- ===========================================================================

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
