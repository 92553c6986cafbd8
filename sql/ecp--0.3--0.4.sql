-- ecp 0.3 -> 0.4: where documents go.
--
--  * consumer kind 'http': a write service of the user's own that gets
--    each batch as JSON (the protocol is in README);
--  * consumer options nodes (further URLs of the same cluster, used in
--    turn, a dead one skipped for a while), routes ({tag: url}) and
--    tag_header; task option tag picks a route and is sent with every
--    request;
--  * task options transform (a SQL function jsonb -> jsonb applied to each
--    document as the owner), routing_column, version_column (external_gte
--    versions: an older document never overwrites a newer one; such a
--    refusal is counted as skipped_stale), pipeline and refresh;
--  * counters skipped (the transform dropped the document) and
--    skipped_stale on parts, in ecp.parts, ecp.progress and the flow.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.4'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Options of type array and object (nodes, routes).
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
                            ELSE 'a string of at most 8192 bytes' END,
                  -- a secret is never quoted: errors reach the server log
                  CASE WHEN k IN ('password', 'api_key') THEN '***' ELSE left(v::text, 100) END
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END $$;

-- scheme://host:port of a URL: what messages and the flow show of an
-- endpoint (a path may hold a token).
CREATE FUNCTION ecp._url_origin(url text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT substring(url from '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]+')
$$;

-- ---------------------------------------------------------------------------
-- Consumers: kind http; nodes, routes, tag_header.
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.consumer DROP CONSTRAINT consumer_kind_check;
ALTER TABLE ecp.consumer ADD CONSTRAINT consumer_kind_check
    CHECK (kind IN ('elasticsearch', 'http'));

CREATE OR REPLACE FUNCTION ecp._consumer_option_spec() RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT '{"username": "text", "password": "text", "api_key": "text",
             "ca_file": "text", "insecure": "boolean", "gzip": "boolean",
             "connect_timeout_ms": ["integer", 1, 600000],
             "request_timeout_ms": ["integer", 1, 3600000],
             "rate_limit": ["number", 0, 1000000000],
             "nodes": ["array", 1, 32], "routes": ["object", 1, 64],
             "tag_header": "text"}'::jsonb
$$;

-- A tag: sent in a header and used as a key of routes, so a plain token.
CREATE FUNCTION ecp._check_tag(tag text, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tag IS NULL OR tag !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid % "%"', what, left(coalesce(tag, 'NULL'), 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'A tag is 1 to 64 letters, digits, "_", ".", ":" or "-", e.g. FLUSH.';
    END IF;
END $$;

-- Further URLs (nodes, the URLs of routes): each checked as the consumer's
-- own URL is, against the owner's outbound policy.
CREATE FUNCTION ecp._check_consumer_urls(c ecp.consumer) RETURNS void
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
        PERFORM ecp._check_url(node #>> '{}');
        PERFORM ecp._check_consumer_target(node #>> '{}', c.options);
    END LOOP;
    FOR route IN SELECT * FROM jsonb_each(coalesce(c.options->'routes', '{}')) LOOP
        PERFORM ecp._check_tag(route.key, 'tag of option "routes"');
        IF jsonb_typeof(route.value) <> 'string' THEN
            RAISE EXCEPTION 'consumer "%": the route of tag "%" must be a URL string, not %',
                  c.name, route.key, left(route.value::text, 100)
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'E.g. ''{"routes": {"FLUSH": "http://flush-group:9200"}}''.';
        END IF;
        PERFORM ecp._check_url(route.value #>> '{}');
        PERFORM ecp._check_consumer_target(route.value #>> '{}', c.options);
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

CREATE OR REPLACE FUNCTION ecp._check_consumer_row() RETURNS trigger
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
    PERFORM ecp._check_consumer_urls(NEW);
    IF TG_OP = 'INSERT' THEN
        NEW.created_at := now();
    END IF;
    NEW.changed_by := ecp._operator();
    RETURN NEW;
END $$;

-- ---------------------------------------------------------------------------
-- Tasks: tag, transform, routing_column, version_column, pipeline, refresh.
-- ---------------------------------------------------------------------------
-- The function option transform names: schema.name, taking and returning
-- jsonb, which the task's owner may execute.  Qualified, so that what a
-- worker calls does not depend on a search_path.
CREATE FUNCTION ecp._check_transform(transform text, owner regrole) RETURNS void
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

-- Whether the task's consumer is a write service (kind http): one may get
-- bare ids, with no query to look them up.
CREATE FUNCTION ecp._task_writes_ids(t ecp.task) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM ecp.consumer c WHERE c.id = t.consumer_id AND c.kind = 'http')
$$;

-- The source of a task: exactly one of query, queries, file; ids go with
-- query, or alone for a write service.
CREATE OR REPLACE FUNCTION ecp._check_task_source(t ecp.task) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    format text := t.options->>'format';
    bare_ids boolean := ecp._task_writes_ids(t);
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
                    HINT = 'Each element of queries is one part of the task; to look ids up over shards, use one query that unions them.';
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
    PERFORM ecp._check_ids(t.ids, 'ids');
    IF t.file IS NULL THEN
        IF t.options ?| ARRAY['format', 'id_field', 'max_line_bytes'] THEN
            RAISE EXCEPTION 'task "%": options format, id_field and max_line_bytes are for a file source', t.name
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        PERFORM ecp._check_file(t.file, t.owner);
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


-- ---------------------------------------------------------------------------
-- Counters: documents the transform dropped, and documents Elasticsearch
-- refused as older than the one it has (external_gte versions).
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.part ADD COLUMN skipped bigint NOT NULL DEFAULT 0;
ALTER TABLE ecp.part ADD COLUMN skipped_stale bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN ecp.part.skipped IS 'documents the task''s transform returned NULL for: not sent';
COMMENT ON COLUMN ecp.part.skipped_stale IS 'documents Elasticsearch already held in a newer version (version_column, HTTP 409): not written, not failed';
ALTER TABLE ecp.run ADD COLUMN not_before timestamptz;
ALTER TABLE ecp.run ADD COLUMN action text CHECK (action IN ('rollback', 'drop_index'));
ALTER TABLE ecp.run ADD COLUMN paused_reason text;
COMMENT ON COLUMN ecp.run.not_before IS 'ecp.start(task, at => ...): the launcher starts the run at that time';
COMMENT ON COLUMN ecp.run.action IS 'a maintenance run of an alias_swap task: rollback (the alias back), drop_index (a cancelled migration''s new index)';
COMMENT ON COLUMN ecp.run.paused_reason IS 'why ecp paused the run itself (its window closed); NULL when a role paused it';
-- roles start runs as themselves (ecp.start): the new columns they may set
GRANT INSERT (not_before, action) ON ecp.run TO PUBLIC;
ALTER TABLE ecp.part ADD COLUMN stage smallint NOT NULL DEFAULT 1;
COMMENT ON COLUMN ecp.part.stage IS 'a part starts once every part of its run with a lower stage is done: 0 prepares a migration, 1 loads, 2 swaps';

-- The run's new column action would make the parameter of the same name
-- ambiguous here: it is qualified.
CREATE OR REPLACE FUNCTION ecp._flow_event(run bigint, action text, content jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    SELECT r.task_id, r.id, _flow_event.action, _flow_event.content, ecp._operator(), r.owner
      FROM ecp.run r WHERE r.id = _flow_event.run;
END $$;

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
       p.skipped_stale
  FROM ecp.part p
  JOIN ecp.run r ON r.id = p.run_id
  JOIN ecp.task t ON t.id = r.task_id;

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
                                    / coalesce(p.total, r.total)), 2)
       END AS percent,
       CASE WHEN r.state = 'running' THEN round(p.docs_per_second::numeric, 1) END AS docs_per_second,
       CASE WHEN r.state = 'running' AND p.docs_per_second > 0 AND coalesce(p.total, r.total) IS NOT NULL
            THEN make_interval(secs => round(greatest(coalesce(p.total, r.total) - p.processed - p.failed
                                                      - p.deleted - p.missing - p.skipped
                                                      - p.skipped_stale, 0) / p.docs_per_second))
       END AS eta,
       r.started_at,
       r.finished_at,
       coalesce(r.finished_at, now()) - r.started_at AS duration,
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
       CASE WHEN r.state = 'paused' THEN coalesce(r.paused_reason, 'paused by ' || r.changed_by) END AS paused_why
  FROM ecp.run r
  JOIN ecp.task t ON t.id = r.task_id
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

-- What a part reads, for people; a migration's own parts say their step.
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
    END
$$;

-- Where a run of the task sends, and why: the route of its tag, or the
-- consumer's URL (and nodes).  Origins only: a path may hold a token.
CREATE FUNCTION ecp._run_endpoint(task_id bigint) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
               'tag', t.options->>'tag',
               'endpoint', ecp._url_origin(CASE WHEN c.options->'routes' ? (t.options->>'tag')
                                                THEN c.options->'routes'->>(t.options->>'tag')
                                                ELSE c.url END),
               'nodes', CASE WHEN NOT coalesce(c.options->'routes' ? (t.options->>'tag'), false)
                              AND jsonb_typeof(c.options->'nodes') = 'array'
                             THEN (SELECT jsonb_agg(ecp._url_origin(n)) FROM jsonb_array_elements_text(c.options->'nodes') n) END,
               'why', CASE WHEN t.options->>'tag' IS NULL THEN 'no tag: default endpoint'
                           WHEN c.options->'routes' ? (t.options->>'tag') THEN 'route ' || (t.options->>'tag')
                           ELSE 'no route for ' || (t.options->>'tag') || ': default endpoint' END,
               'kind', c.kind))
      FROM ecp.task t JOIN ecp.consumer c ON c.id = t.consumer_id
     WHERE t.id = task_id
$$;

-- The run's counters in the flow include skips; start says where it sends.
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
    END IF;
    INSERT INTO ecp.flow_log (task_id, run_id, action, content, operator, owner)
    VALUES (NEW.task_id, NEW.id, action, content, coalesce(NEW.changed_by, NEW.operator), NEW.owner);
    RETURN NEW;
END $$;

-- ===========================================================================
-- Migrations with no downtime (mode alias_swap), scheduling (start at a
-- time, pg_cron), run windows.
-- ===========================================================================

-- Task options: mode, settings, mappings, keep_old, window.
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
             "paging": "text",
             "parallelism": ["integer", 1, 64],
             "delete_missing": "boolean",
             "format": "text", "id_field": "text",
             "max_line_bytes": ["integer", 1024, 268435456],
             "tag": "text", "transform": "text",
             "routing_column": "text", "version_column": "text",
             "pipeline": "text", "refresh": "boolean",
             "mode": "text", "settings": ["object", 0, 1000], "mappings": ["object", 0, 1000],
             "keep_old": "boolean", "window": "text"}'::jsonb
$$;

-- A window 'HH:MM-HH:MM' (server time zone; may cross midnight): whether
-- time t is inside it.
CREATE FUNCTION ecp._in_window(win text, t time) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN split_part(win, '-', 1)::time < split_part(win, '-', 2)::time
                THEN t >= split_part(win, '-', 1)::time AND t < split_part(win, '-', 2)::time
                ELSE t >= split_part(win, '-', 1)::time OR t < split_part(win, '-', 2)::time END
$$;

CREATE FUNCTION ecp._check_migration_options(t ecp.task, kind text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mode text := coalesce(t.options->>'mode', 'direct');
    win text := t.options->>'window';
BEGIN
    IF mode NOT IN ('direct', 'alias_swap') THEN
        RAISE EXCEPTION 'option "mode" must be direct or alias_swap, not "%"', left(mode, 100)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'alias_swap loads a new index and then points the alias (the task''s index) at it.';
    END IF;
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

-- Options that decide how a batch is written and where: checked against
-- the consumer's kind and the query's columns (after check_row: triggers
-- fire in name order).
CREATE FUNCTION ecp._check_task_writes() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind text;
    columns text[];
    col text;
    es_only text[] := ARRAY['pipeline', 'refresh', 'routing_column', 'version_column'];
BEGIN
    SELECT c.kind INTO kind FROM ecp.consumer c WHERE c.id = NEW.consumer_id;
    IF NEW.options ? 'tag' THEN
        PERFORM ecp._check_tag(NEW.options->>'tag', 'option "tag"');
    END IF;
    IF NEW.options ? 'transform' THEN
        PERFORM ecp._check_transform(NEW.options->>'transform', NEW.owner);
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
    PERFORM ecp._check_migration_options(NEW, kind);
    IF NEW.options ?| ARRAY['routing_column', 'version_column'] THEN
        IF NEW.query IS NULL AND NEW.queries IS NULL THEN
            RAISE EXCEPTION 'task "%": options routing_column and version_column name columns of a query', NEW.name
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'An NDJSON file has no columns.';
        END IF;
        columns := ecp._check_task_queries(NEW);
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
CREATE TRIGGER check_writes BEFORE INSERT OR UPDATE ON ecp.task
    FOR EACH ROW EXECUTE FUNCTION ecp._check_task_writes();

-- ---------------------------------------------------------------------------
-- Runs: a start time, what a maintenance run does, why a run is paused;
-- parts in stages (a part starts when every part of a lower stage is done).
-- ---------------------------------------------------------------------------

-- A paused run that goes on is no longer paused for a reason.
CREATE FUNCTION ecp._clear_paused_reason() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.state <> 'paused' THEN
        NEW.paused_reason := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER clear_paused_reason BEFORE UPDATE OF state ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp._clear_paused_reason();

-- ---------------------------------------------------------------------------
-- Migrations: one row per alias_swap run, written by its workers.
-- ---------------------------------------------------------------------------
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
ALTER TABLE ecp.migration ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ecp.migration USING (pg_has_role(owner, 'MEMBER'));
GRANT SELECT ON ecp.migration TO PUBLIC;

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
GRANT SELECT ON ecp.migrations TO PUBLIC;

-- The settings of a migration's new index: the task's own, with
-- replicas 0 and no refresh while it loads; afterwards what the task asked
-- for, or the defaults (null resets a setting).  Settings may be given
-- flat ("number_of_replicas"), dotted ("index.number_of_replicas") or
-- nested ({"index": {...}}): the load values replace each form.
CREATE FUNCTION ecp._migration_settings(settings jsonb, OUT load_settings jsonb, OUT final_settings jsonb)
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

-- A run's parts.  A migration run (alias_swap, no ids, no action) has a
-- part of stage 0 that creates the new index, its load parts (stage 1)
-- and a part of stage 2 that sets the final settings, checks the count
-- and swaps the alias.  A maintenance run has one part for its action.
CREATE OR REPLACE FUNCTION ecp._create_parts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
    migrating boolean;
    settings record;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE id = NEW.task_id;
    IF NEW.action IS NOT NULL THEN
        INSERT INTO ecp.part (run_id, part_no, owner, source, stage, total)
        VALUES (NEW.id, -1, NEW.owner, jsonb_build_object('kind', 'migrate', 'step', NEW.action), 0, 0);
        PERFORM ecp._wake_launcher_at_commit();
        RETURN NEW;
    END IF;
    migrating := t.options->>'mode' = 'alias_swap' AND NEW.only_ids IS NULL;
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

-- Maintenance runs go with the migration they act on.
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
    IF NEW.action IS NOT NULL AND current_setting('ecp_internal.maintenance_run', true) IS DISTINCT FROM 'on' THEN
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

CREATE FUNCTION ecp._create_run(task_id bigint, only_ids text[], retry_of bigint,
                                not_before timestamptz, action text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    run_id bigint;
BEGIN
    -- the trigger prepare checks the task and decides the rest
    INSERT INTO ecp.run (task_id, only_ids, retry_of, not_before, action)
    VALUES (task_id, only_ids, retry_of, not_before, action)
    RETURNING id INTO run_id;
    PERFORM ecp._warn_if_not_launcher_database(run_id);
    RETURN run_id;
END $$;

DROP FUNCTION ecp.start(text, text[]);
CREATE FUNCTION ecp.start(task text, ids text[] DEFAULT NULL, at timestamptz DEFAULT NULL) RETURNS bigint
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
    IF ids IS NOT NULL AND cardinality(ids) = 0 THEN
        RAISE EXCEPTION 'ids is empty: nothing to start'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass at least one id, or leave ids out to run the whole task.';
    END IF;
    -- the trigger prepare checks the task, the ids and decides the rest
    RETURN ecp._create_run(t.id, ids, NULL, at, NULL);
END $$;
COMMENT ON FUNCTION ecp.start(text, text[], timestamptz) IS
  'start a run of a task: all of its source, or only the given ids looked up through its query; at => a time: the launcher starts it then';

-- ecp.cancel can drop a cancelled migration's half-built index (by a
-- maintenance run: only a worker talks to the cluster).
-- (a second function, so ecp.cancel(bigint) stays what it was)
CREATE FUNCTION ecp.cancel(run bigint, drop_index boolean) RETURNS void
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
        PERFORM set_config('ecp_internal.maintenance_run', 'on', true);
        PERFORM ecp._create_run(m.task_id, NULL, NULL, NULL, 'drop_index');
        PERFORM set_config('ecp_internal.maintenance_run', 'off', true);
    END IF;
END $$;
COMMENT ON FUNCTION ecp.cancel(bigint, boolean) IS
  'stop a run for good; drop_index => true also drops the new index of a migration cancelled before its swap';

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
    PERFORM set_config('ecp_internal.maintenance_run', 'on', true);
    run_id := ecp._create_run(t.id, NULL, NULL, NULL, 'rollback');
    PERFORM set_config('ecp_internal.maintenance_run', 'off', true);
    RETURN run_id;
END $$;
COMMENT ON FUNCTION ecp.rollback(text) IS
  'point the alias of an alias_swap task back at the index it had before the last swap (a run: ecp.progress shows it)';

-- The new index a run must also write to: the migration of the same alias
-- through the same consumer that is loading (its index exists), if any.
CREATE FUNCTION ecp._dual_index(consumer_id bigint, alias text, run bigint) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.new_index FROM ecp.migration m JOIN ecp.run r ON r.id = m.run_id
     WHERE m.consumer_id = _dual_index.consumer_id AND m.alias = _dual_index.alias
       AND m.run_id <> _dual_index.run AND m.state = 'loading'
       AND m.step IN ('load', 'settings', 'count', 'swap')
       AND r.state IN ('running', 'paused', 'failed')
     ORDER BY m.run_id DESC LIMIT 1
$$;
REVOKE EXECUTE ON FUNCTION ecp._dual_index(bigint, text, bigint) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Scheduling with pg_cron.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp._require_pg_cron() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in database "%"', current_database()
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name = ''' || current_database()
                           || ''' (ecp''s database), restart, and CREATE EXTENSION pg_cron here.';
    END IF;
END $$;

-- What a pg_cron job calls: a start, unless the task still has a run in
-- progress (then a flow row says the firing was skipped).
CREATE FUNCTION ecp._note_cron_skip(task_id bigint, busy bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    t ecp.task;
BEGIN
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
-- (EXECUTE stays granted: a role's own pg_cron job calls it through
-- ecp._scheduled_start, and it writes only a true row about the caller's task)

CREATE FUNCTION ecp._scheduled_start(task text) RETURNS bigint
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
    SELECT id INTO busy FROM ecp.run WHERE task_id = t.id AND state IN ('pending', 'running', 'paused')
     ORDER BY id LIMIT 1;
    IF FOUND THEN
        PERFORM ecp._note_cron_skip(t.id, busy);
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
    PERFORM ecp._require_pg_cron();
    -- pg_cron's job runs as the role that scheduled it, in this database
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job
      USING 'ecp:' || task, cron, format('SELECT ecp._scheduled_start(%L)', task);
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
    PERFORM ecp._require_pg_cron();
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = $1 AND username = current_user)'
       INTO found USING 'ecp:' || task;
    IF NOT found THEN
        RAISE EXCEPTION 'task "%" has no schedule of yours', coalesce(task, 'NULL')
              USING ERRCODE = 'undefined_object',
                    HINT = 'SELECT jobname, schedule FROM cron.job lists the jobs.';
    END IF;
    EXECUTE 'SELECT cron.unschedule($1)' USING 'ecp:' || task;
END $$;

-- ---------------------------------------------------------------------------
-- Windows: the launcher pauses a run whose window closed and resumes it
-- when the window opens (as the run's owner in the flow).
-- ---------------------------------------------------------------------------
CREATE FUNCTION ecp._apply_windows() RETURNS integer
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
        IF r.state <> 'paused' AND NOT ecp._in_window(r.win, localtime) THEN
            UPDATE ecp.run SET state = 'paused', paused_reason = 'outside its window ' || r.win
             WHERE id = r.id;
            changed := changed + 1;
        ELSIF r.state = 'paused' AND ecp._in_window(r.win, localtime) THEN
            UPDATE ecp.run SET state = 'running' WHERE id = r.id;
            changed := changed + 1;
        END IF;
    END LOOP;
    PERFORM set_config('ecp.acting_role', '', true);
    RETURN changed;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._apply_windows() FROM PUBLIC;
