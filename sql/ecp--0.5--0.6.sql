-- ecp 0.5 -> 0.6: the foundation (issue 21).
--
-- * one contract for task and consumer options: their names, types,
--   bounds and defaults live in one table in C (ecp._option_contract()),
--   read by the SQL checks, the worker and the launcher alike.
-- * flow actions are one list in C (ecp._flow_actions()), checked by
--   ecp.flow_log's CHECK like run states.
-- * ecp._backoff_ms is gone: the back-off is one C function.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.6'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Options: the SQL checks read the contract (ecp._option_contract()).
-- ---------------------------------------------------------------------------
-- The option contract, from C (src/option_contract.c).
CREATE FUNCTION ecp._option_contract(OUT kind text, OUT name text, OUT type text,
                                     OUT min numeric, OUT max numeric, OUT default_value jsonb,
                                     OUT default_setting text, OUT words text[], OUT launcher boolean)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'ecp_option_contract' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ecp._option_contract() IS 'the task and consumer options: JSON type, bounds, default (a GUC may set it), words, whether the launcher reads it';

-- A spec maps each option of a kind to [type, min, max].
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
CREATE FUNCTION ecp._option_spec(kind text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_object_agg(c.name, jsonb_build_array(c.type, c.min, c.max))
      FROM ecp._option_contract() c WHERE c.kind = _option_spec.kind
$$;

CREATE OR REPLACE FUNCTION ecp._task_option_spec() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ecp._option_spec('task')
$$;

CREATE OR REPLACE FUNCTION ecp._consumer_option_spec() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ecp._option_spec('consumer')
$$;

-- A word option's value (NULL: not set) is one of its words in the
-- contract.
CREATE FUNCTION ecp._check_option_word(kind text, name text, value text, hint text)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    words text[] := (SELECT c.words FROM ecp._option_contract() c
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
CREATE OR REPLACE FUNCTION ecp._check_task_option_values(options jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp._check_option_word('task', 'op', options->>'op', NULL);
    PERFORM ecp._check_option_word('task', 'paging', options->>'paging',
            'auto pages foreign tables by key windows and everything else by keyset.');
    PERFORM ecp._check_option_word('task', 'format', options->>'format',
            'ids: one id per line, looked up through the query; ndjson: one document per line, sent as it is.');
END $$;

-- Options mode (direct, or alias_swap: load a new index, then point the
-- alias at it), settings, mappings, keep_old and window.
CREATE OR REPLACE FUNCTION ecp._check_migration_options(t ecp.task, kind text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mode text := coalesce(t.options->>'mode',
                          (SELECT c.default_value #>> '{}' FROM ecp._option_contract() c
                            WHERE c.kind = 'task' AND c.name = 'mode'));
    win text := t.options->>'window';
BEGIN
    PERFORM ecp._check_option_word('task', 'mode', left(mode, 100),
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

-- Change a task's rate limit (documents per second, 0 = unlimited), also
-- while it runs.  Option changes (set_rate, or a plain UPDATE) go through
-- check_row too; the flow row and the launcher's wake-up come from the
-- trigger flow_rate.
CREATE OR REPLACE FUNCTION ecp.set_rate(task text, docs_per_second numeric) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    rate record;
BEGIN
    SELECT c.min, c.max INTO rate FROM ecp._option_contract() c WHERE c.kind = 'task' AND c.name = 'rate_limit';
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

-- The back-off is src/backoff.c; nothing called this copy.
DROP FUNCTION ecp._backoff_ms(integer, integer, integer);

-- Flow actions: one list, EcpFlowAction in C (src/flow_actions.c), which
-- ecp._flow_actions() returns and ecp.flow_log's CHECK spells out.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp._flow_actions() RETURNS text[]
    AS 'MODULE_PATHNAME', 'ecp_flow_actions'
    LANGUAGE C IMMUTABLE STRICT;

-- The list holds every action any version of ecp wrote (its SQL and its
-- workers, 0.1 to 0.6).  Up to 0.1, though, roles could INSERT into
-- ecp.flow_log and call ecp._flow_event with an action of their own, so an
-- old install may hold rows no list foresees: the constraint is added NOT
-- VALID (new rows are checked from now on) and validated when every row
-- passes; otherwise it stays NOT VALID, with a WARNING that says what to do.
ALTER TABLE ecp.flow_log ADD CONSTRAINT flow_log_action_check
    CHECK (action IN ('create_consumer', 'create_task', 'start', 'pause', 'resume',
                      'running', 'cancel', 'finished', 'failed', 'set_rate', 'alert',
                      'drop_owned', 'cron skipped',
                      'worker started', 'recovered', 'dual write', 'dual write ended',
                      'retry', 'split', 'file resumed', 'cluster', 'nodes used',
                      'node down', 'refreshed', 'index exists', 'index created',
                      'settings restored', 'count checked', 'alias swapped',
                      'index dropped', 'rollback')) NOT VALID;
DO $$
BEGIN
    ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check;
EXCEPTION WHEN check_violation THEN
    RAISE WARNING 'ecp.flow_log holds rows with an action ecp never wrote (rows written by roles up to ecp 0.1): its CHECK flow_log_action_check checks new rows only'
          USING HINT = 'SELECT action, count(*) FROM ecp.flow_log WHERE action <> ALL (ecp._flow_actions()) GROUP BY 1 lists them; '
                       'update or delete them, then ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check.';
END $$;
