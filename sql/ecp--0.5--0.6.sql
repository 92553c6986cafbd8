-- ecp 0.5 -> 0.6: the foundation (issue 21).
--
-- * one contract for task and consumer options: their names, types,
--   bounds and defaults live in one table in C (ecp._option_contract()),
--   read by the SQL checks, the worker and the launcher alike.
-- * flow actions are one list in C (ecp._flow_actions()), checked by
--   ecp.flow_log's CHECK like run states.
-- * ecp._backoff_ms is gone: the back-off is one C function.
-- * status that tells the truth: ecp.progress and ecp.parts show a part
--   waiting to retry (retry_attempt, retry_at, retry_error, retry_class);
--   last_error is set only while a run is failed (recovered_error keeps
--   what a resumed run recovered from); partial marks a run that
--   succeeded with dead letters.
-- * verbs: repeating pause, resume or cancel is a NOTICE; they and
--   retry_failed take a task's name too; a URL's port is 1..65535.
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

-- ---------------------------------------------------------------------------
-- Status that tells the truth: a part waiting to retry says so (attempt,
-- when, the error and what failed); last_error is a failed run's only (a
-- resumed run keeps the error it recovered from apart); a run that
-- succeeded with dead letters is partial.
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.run ADD COLUMN recovered_error text;
ALTER TABLE ecp.part ADD COLUMN retry_attempt integer,
                     ADD COLUMN retry_at timestamptz,
                     ADD COLUMN retry_error text,
                     ADD COLUMN retry_class text CHECK (retry_class IN ('source', 'consumer'));
COMMENT ON COLUMN ecp.run.last_error IS 'the error the run failed with: set only while it is failed (ecp.resume moves it to recovered_error)';
COMMENT ON COLUMN ecp.run.recovered_error IS 'the error of the last failure the run was resumed from';
COMMENT ON COLUMN ecp.part.retry_attempt IS 'the attempt the part waits to make after a transient error (NULL: not retrying; cleared when it moves on)';
COMMENT ON COLUMN ecp.part.retry_at IS 'when the part tries again';
COMMENT ON COLUMN ecp.part.retry_error IS 'the transient error the part retries after';
COMMENT ON COLUMN ecp.part.retry_class IS 'what failed: source (reading) or consumer (sending)';

-- A run that was resumed keeps its error apart; new ones start clean.
UPDATE ecp.run SET recovered_error = last_error, last_error = NULL
 WHERE state <> 'failed' AND last_error IS NOT NULL;
UPDATE ecp.part p SET last_error = NULL
  FROM ecp.run r WHERE r.id = p.run_id AND r.state <> 'failed' AND p.last_error IS NOT NULL;

CREATE OR REPLACE FUNCTION ecp._clear_failure() RETURNS trigger
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
        ELSIF NEW.only_ids IS NOT NULL THEN
            content := jsonb_build_object('ids', cardinality(NEW.only_ids));
        END IF;
        content := content || coalesce(ecp._run_endpoint(NEW.task_id), '{}')
                   || jsonb_strip_nulls(jsonb_build_object('at', NEW.not_before, 'action', NEW.action));
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

CREATE OR REPLACE VIEW ecp.progress WITH (security_invoker = true) AS
SELECT r.id AS run_id,
       t.name AS task,
       r.state,
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
COMMENT ON VIEW ecp.progress IS 'one row per run: state, counts, speed, ETA; retry_* while a part waits to retry, partial for a run that succeeded with dead letters';

CREATE OR REPLACE VIEW ecp.parts WITH (security_invoker = true) AS
SELECT p.run_id,
       p.part_no AS part,
       ecp._part_source_text(p.source, t, r) AS source,
       p.state,
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
COMMENT ON VIEW ecp.parts IS 'one row per part of a run: what it reads, state, counters, checkpoint, worker';

-- ---------------------------------------------------------------------------
-- Verbs: pause, resume and cancel of a run already in that state are a
-- NOTICE; pause, resume, cancel and retry_failed take a task's name too
-- (its latest run); a consumer URL's port is 1..65535.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION ecp._check_url(url text) RETURNS void
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
        RAISE EXCEPTION 'invalid port "%" in consumer URL "%"', port, ecp._url_origin(url)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A port is a number from 1 to 65535, e.g. http://localhost:9200; leave it out for 80 (http) or 443 (https).';
    END IF;
END $$;

CREATE FUNCTION ecp._already(run bigint, state text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    IF EXISTS (SELECT 1 FROM ecp.run r WHERE r.id = run AND r.state = state) THEN
        RAISE NOTICE 'run % is already %', run, state;
        RETURN true;
    END IF;
    RETURN false;
END $$;

CREATE FUNCTION ecp._latest_run(task text) RETURNS bigint
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
    SELECT max(r.id) INTO run FROM ecp.run r WHERE r.task_id = task_id AND r.action IS NULL;
    IF run IS NULL THEN
        RAISE EXCEPTION 'task "%" has no run', task
              USING ERRCODE = 'no_data_found',
                    HINT = 'Start one with SELECT ecp.start(' || quote_literal(task) || ').';
    END IF;
    RETURN run;
END $$;

CREATE OR REPLACE FUNCTION ecp.pause(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    IF ecp._already(run, 'paused') THEN
        RETURN;
    END IF;
    PERFORM ecp._run_for_update(run, ARRAY['pending', 'running'], 'paused');
    UPDATE ecp.run SET state = 'paused' WHERE id = run;
END $$;

CREATE FUNCTION ecp.pause(task text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp.pause(ecp._latest_run(task));
END $$;
COMMENT ON FUNCTION ecp.pause(text) IS 'pause the latest run of a task';

CREATE OR REPLACE FUNCTION ecp.resume(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    IF ecp._already(run, 'running') THEN
        RETURN;
    END IF;
    PERFORM ecp._run_for_update(run, ARRAY['paused', 'failed'], 'resumed');
    -- the trigger on_state puts the parts back from their checkpoints
    UPDATE ecp.run SET state = 'running' WHERE id = run;
    PERFORM ecp._warn_if_not_launcher_database(run);
END $$;

CREATE FUNCTION ecp.resume(task text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp.resume(ecp._latest_run(task));
END $$;
COMMENT ON FUNCTION ecp.resume(text) IS 'resume the latest run of a task';

CREATE OR REPLACE FUNCTION ecp.cancel(run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    IF ecp._already(run, 'cancelled') THEN
        RETURN;
    END IF;
    PERFORM ecp._run_for_update(run, ARRAY['pending', 'running', 'paused'], 'cancelled');
    UPDATE ecp.run SET state = 'cancelled' WHERE id = run;
END $$;

CREATE FUNCTION ecp.cancel(task text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp.cancel(ecp._latest_run(task));
END $$;
COMMENT ON FUNCTION ecp.cancel(text) IS 'cancel the latest run of a task';

CREATE OR REPLACE FUNCTION ecp.cancel(run bigint, drop_index boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    m ecp.migration;
BEGIN
    IF NOT ecp._already(run, 'cancelled') THEN
        PERFORM ecp._run_for_update(run, ARRAY['pending', 'running', 'paused'], 'cancelled');
        UPDATE ecp.run SET state = 'cancelled' WHERE id = run;
    END IF;
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

CREATE FUNCTION ecp.retry_failed(task text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN ecp.retry_failed(ecp._latest_run(task));
END $$;
COMMENT ON FUNCTION ecp.retry_failed(text) IS 'a new run over the failed documents of the latest run of a task';

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
