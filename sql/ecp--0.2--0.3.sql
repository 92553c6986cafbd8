-- ecp 0.2 -> 0.3: parts that run in parallel, and the id and file sources.
--
--  * a task reads one query, several (queries: one part per query, e.g.
--    one per shard table), a list of ids looked up through its query, or a
--    file (NDJSON documents, or ids looked up through the query);
--  * task option parallelism: how many parts of a run may run at once; a
--    query task with parallelism > 1 and an integer key is cut into key
--    ranges by its first worker;
--  * ecp.start(task, ids): a run of a task's query over just those ids;
--    option delete_missing deletes the documents of ids the query no
--    longer returns;
--  * view ecp.parts: one row per part with its source, state, counters,
--    checkpoint and worker.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.3'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Tasks: the source kinds.
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.task ADD COLUMN queries text[];
ALTER TABLE ecp.task ADD COLUMN ids text[];
ALTER TABLE ecp.task ADD COLUMN file text;
COMMENT ON COLUMN ecp.task.queries IS 'sharded source: one part per query';
COMMENT ON COLUMN ecp.task.ids IS 'id source: the ids a run looks up through query';
COMMENT ON COLUMN ecp.task.file IS 'file source: http(s) URL or server path';
ALTER TABLE ecp.task ALTER COLUMN query DROP NOT NULL;
ALTER TABLE ecp.task DROP CONSTRAINT task_has_id_column;
-- every source but an NDJSON file is read by column: it has an id column
ALTER TABLE ecp.task ADD CONSTRAINT task_has_id_column
    CHECK (jsonb_typeof(options) = 'object'
           AND (jsonb_typeof(options -> 'id_column') = 'string'
                OR (query IS NULL AND queries IS NULL)));

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
             "max_line_bytes": ["integer", 1024, 268435456]}'::jsonb
$$;

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
    IF options ? 'format' AND options->>'format' NOT IN ('ids', 'ndjson') THEN
        RAISE EXCEPTION 'option "format" must be ids or ndjson, not "%"', options->>'format'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'ids: one id per line, looked up through the query; ndjson: one document per line, sent as it is.';
    END IF;
END $$;

-- The longest list of ids a task or a run holds (the whole list is one
-- array value in the row; runs read it in batches).
CREATE FUNCTION ecp._check_ids(ids text[], what text) RETURNS void
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
CREATE FUNCTION ecp._check_file(file text, owner regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF file ~* '^https?://' THEN
        IF file !~* '^https?://[^/?#@\s]+(/[^#\s]*)?$' OR octet_length(file) > 8192 THEN
            RAISE EXCEPTION 'invalid file URL "%"', left(split_part(file, '?', 1), 300)
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Use http(s)://host[:port]/path[?query], without credentials before the host.';
        END IF;
        PERFORM ecp._check_consumer_target(file, '{}');
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

-- The source of a task: exactly one of query, queries, file; ids go with
-- query.  Returns the query whose columns decide the id column.
CREATE FUNCTION ecp._check_task_source(t ecp.task) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    format text := t.options->>'format';
BEGIN
    IF t.ids IS NOT NULL AND t.query IS NULL THEN
        RAISE EXCEPTION 'task "%": ids are looked up through a query', t.name
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass query => ''SELECT id, ... FROM ...'' with ids => ARRAY[...].';
    END IF;
    IF num_nonnulls(t.query, t.queries, t.file) = 0 THEN
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
        IF format = 'ids' AND t.query IS NULL THEN
            RAISE EXCEPTION 'task "%": a file of ids is looked up through a query', t.name
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Pass query => ''SELECT id, ... FROM ...''.';
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
CREATE FUNCTION ecp._check_task_queries(t ecp.task) RETURNS text[]
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
        RETURN ecp._check_query(t.query, t.search_path);
    END IF;
    FOR i IN 1 .. cardinality(t.queries) LOOP
        BEGIN
            columns := ecp._check_query(t.queries[i], t.search_path);
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

CREATE OR REPLACE FUNCTION ecp._check_task_row() RETURNS trigger
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
    PERFORM ecp._check_index_name(NEW.index_name);
    PERFORM ecp._check_options(NEW.options, ecp._task_option_spec(), 'task');
    PERFORM ecp._check_task_option_values(NEW.options);
    IF NEW.file IS NOT NULL AND NOT NEW.options ? 'format' THEN
        NEW.options := NEW.options || jsonb_build_object('format',
                                                         CASE WHEN NEW.query IS NULL THEN 'ndjson' ELSE 'ids' END);
    END IF;
    PERFORM ecp._check_task_source(NEW);
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
            columns := ecp._check_task_queries(NEW);
            FOREACH col IN ARRAY ARRAY[NEW.options->>'id_column', NEW.options->>'key_column'] LOOP
                IF col IS NOT NULL AND NOT col = ANY (columns) THEN
                    RAISE EXCEPTION 'column "%" is not an output column of the query', col
                          USING ERRCODE = 'undefined_column',
                                HINT = 'The query returns: ' || array_to_string(columns, ', ') || '.';
                END IF;
            END LOOP;
            NEW.options := ecp._with_key_columns(NEW.name, coalesce(NEW.query, NEW.queries[1]),
                                                 NEW.search_path, NEW.options, columns);
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.created_at := now();
    END IF;
    NEW.changed_by := ecp._operator();
    RETURN NEW;
END $$;

DROP FUNCTION ecp.create_task(text, text, text, text, text[], text[], text, jsonb);
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
    INSERT INTO ecp.task (name, consumer_id, index_name, query, queries, ids, file, options)
    VALUES (name, consumer_row.id, index, query, queries, ids, file, options)
    RETURNING id INTO task_id;
    RETURN task_id;
END $$;

CREATE OR REPLACE VIEW ecp.tasks WITH (security_invoker = true) AS
SELECT t.id, t.name, c.name AS consumer, t.index_name AS index, t.query, t.options,
       t.owner, t.created_at, t.queries, t.ids,
       -- a presigned URL's signature is a credential
       split_part(t.file, '?', 1) AS file
  FROM ecp.task t JOIN ecp.consumer c ON c.id = t.consumer_id;

-- ---------------------------------------------------------------------------
-- Parts: what each reads, its own checkpoint and counters.
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.part ADD COLUMN source jsonb NOT NULL DEFAULT '{"kind": "query"}';
ALTER TABLE ecp.part ADD COLUMN position bigint;
ALTER TABLE ecp.part ADD COLUMN line_no bigint;
ALTER TABLE ecp.part ADD COLUMN total bigint;
ALTER TABLE ecp.part ADD COLUMN deleted bigint NOT NULL DEFAULT 0;
ALTER TABLE ecp.part ADD COLUMN missing bigint NOT NULL DEFAULT 0;
ALTER TABLE ecp.part ADD COLUMN last_error text;
COMMENT ON COLUMN ecp.part.source IS
  'what the part reads: {"kind": "query", "query": n} (n-th of queries, 0: query), {"kind": "split"} (a query to be cut into key ranges by its first worker), {"kind": "range", "query": 0, "from": k, "to": k} (from <= key < to; null: unbounded), {"kind": "ids"} (the run''s ids), {"kind": "file"}';
COMMENT ON COLUMN ecp.part.position IS 'checkpoint of id and file parts: ids done, or the byte offset after the last acknowledged line';
COMMENT ON COLUMN ecp.part.line_no IS 'checkpoint of file parts: the number of the last acknowledged line';

-- A run's parts: one per query of queries; one to be split into key ranges
-- (a query with parallelism > 1); one for ids or a file; else one.
CREATE OR REPLACE FUNCTION ecp._create_parts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ecp.task;
BEGIN
    SELECT * INTO t FROM ecp.task WHERE id = NEW.task_id;
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
    PERFORM ecp._wake_launcher_at_commit();
    RETURN NEW;
END $$;

-- A task with ids runs over them unless ecp.start names others.
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
    NEW.only_ids := coalesce(NEW.only_ids, t.ids);
    IF NEW.only_ids IS NOT NULL AND t.query IS NULL THEN
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
    NEW.total := cardinality(NEW.only_ids);
    NEW.total_is_estimate := CASE WHEN NEW.only_ids IS NOT NULL THEN false END;
    NEW.created_at := now();
    NEW.started_at := NULL;
    NEW.finished_at := NULL;
    NEW.last_error := NULL;
    RETURN NEW;
END $$;

DROP FUNCTION ecp.start(text);
CREATE FUNCTION ecp.start(task text, ids text[] DEFAULT NULL) RETURNS bigint
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
    RETURN ecp._create_run(t.id, ids, NULL);
END $$;
COMMENT ON FUNCTION ecp.start(text, text[]) IS
  'start a run of a task: all of its source, or only the given ids looked up through its query';

-- Cut a split part into key ranges, from the key's smallest and largest
-- value that its worker read as the owner: n ranges, from <= key < to,
-- the first open below and the last open above, so every key (also one
-- added during the run, or below the minimum) is in exactly one range.
-- Only ecp's workers call it.
CREATE FUNCTION ecp._split_part(run bigint, low bigint, high bigint, n integer) RETURNS integer
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
    PERFORM ecp._wake_launcher_at_commit();
    RETURN n;
END $$;
REVOKE EXECUTE ON FUNCTION ecp._split_part(bigint, bigint, bigint, integer) FROM PUBLIC;

-- What a part reads, for people: the query, the key range, the ids or the
-- file (a URL without its query string: a presigned signature is a
-- credential).
CREATE FUNCTION ecp._part_source_text(source jsonb, t ecp.task, r ecp.run) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE source->>'kind'
        WHEN 'query' THEN CASE WHEN (source->>'query')::integer > 0
                               THEN t.queries[(source->>'query')::integer] ELSE t.query END
        WHEN 'split' THEN 'key ranges of the query (not cut yet)'
        WHEN 'range' THEN format('%s in [%s, %s)', coalesce(t.options->>'key_column', t.options->>'id_column'),
                                 coalesce(source->>'from', '-inf'), coalesce(source->>'to', '+inf'))
        WHEN 'ids' THEN format('%s ids', cardinality(r.only_ids))
        WHEN 'file' THEN split_part(t.file, '?', 1)
    END
$$;

CREATE VIEW ecp.parts WITH (security_invoker = true) AS
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
       p.finished_at
  FROM ecp.part p
  JOIN ecp.run r ON r.id = p.run_id
  JOIN ecp.task t ON t.id = r.task_id;
COMMENT ON VIEW ecp.parts IS 'one row per part of a run: what it reads, state, counters, checkpoint, worker';
GRANT SELECT ON ecp.parts TO PUBLIC;

-- Progress: the sums over the parts, and the run's total as the sum of
-- its parts' totals once every part has one.
CREATE OR REPLACE VIEW ecp.progress WITH (security_invoker = true) AS
SELECT r.id AS run_id,
       t.name AS task,
       r.state,
       p.processed,
       p.failed,
       coalesce(p.total, r.total) AS total,
       CASE WHEN r.state = 'succeeded' THEN 100.0
            WHEN coalesce(p.total, r.total) > 0
            THEN round(least(100.0, 100.0 * (p.processed + p.failed + p.deleted + p.missing)
                                    / coalesce(p.total, r.total)), 2)
       END AS percent,
       CASE WHEN r.state = 'running' THEN round(p.docs_per_second::numeric, 1) END AS docs_per_second,
       CASE WHEN r.state = 'running' AND p.docs_per_second > 0 AND coalesce(p.total, r.total) IS NOT NULL
            THEN make_interval(secs => round(greatest(coalesce(p.total, r.total) - p.processed - p.failed
                                                      - p.deleted - p.missing, 0) / p.docs_per_second))
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
       p.parts_done
  FROM ecp.run r
  JOIN ecp.task t ON t.id = r.task_id
  CROSS JOIN LATERAL (
       SELECT coalesce(sum(pt.processed), 0)::bigint AS processed,
              coalesce(sum(pt.failed), 0)::bigint AS failed,
              coalesce(sum(pt.deleted), 0)::bigint AS deleted,
              coalesce(sum(pt.missing), 0)::bigint AS missing,
              sum(pt.docs_per_second) FILTER (WHERE pt.state = 'running') AS docs_per_second,
              max(pt.heartbeat_at) AS heartbeat_at,
              CASE WHEN count(*) > 1 AND count(pt.total) = count(*) THEN sum(pt.total)::bigint END AS total,
              count(*) AS parts,
              count(*) FILTER (WHERE pt.state = 'done') AS parts_done
         FROM ecp.part pt WHERE pt.run_id = r.id) p;

-- The run's counters in the flow (finished, failed, ...) include deletes.
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
               count(*) AS parts
          INTO counts FROM ecp.part p WHERE p.run_id = NEW.id;
        content := jsonb_build_object('from', OLD.state, 'to', NEW.state,
                                      'processed', counts.processed, 'failed', counts.failed);
        IF counts.deleted > 0 OR counts.missing > 0 THEN
            content := content || jsonb_build_object('deleted', counts.deleted, 'missing', counts.missing);
        END IF;
        IF counts.parts > 1 THEN
            content := content || jsonb_build_object('parts', counts.parts);
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

-- The task's definition in the flow, with every source kind.
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
                jsonb_strip_nulls(jsonb_build_object(
                    'task', NEW.name, 'index', NEW.index_name, 'query', NEW.query,
                    'queries', NEW.queries, 'ids', cardinality(NEW.ids),
                    'file', split_part(NEW.file, '?', 1), 'options', NEW.options)),
                NEW.changed_by, NEW.owner);
    END IF;
    RETURN NEW;
END $$;

-- ---------------------------------------------------------------------------
-- Why a run failed, as the worker knew it: the alert's class is a column,
-- not parsed back out of the error text.
-- ---------------------------------------------------------------------------
ALTER TABLE ecp.run ADD COLUMN failure_class text
    CHECK (failure_class IN ('failed', 'retries exhausted'));
ALTER TABLE ecp.run ADD COLUMN failure_attempts integer;
COMMENT ON COLUMN ecp.run.failure_class IS 'the class of the alert of a failed run: failed, or retries exhausted (failure_attempts attempts)';

CREATE OR REPLACE FUNCTION ecp._alert_on_failure() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ecp._alert(NEW.id, coalesce(NEW.failure_class, 'failed'), NEW.failure_attempts,
                       NEW.last_error);
    RETURN NEW;
END $$;

-- A resumed run has not failed (yet).
CREATE FUNCTION ecp._clear_failure() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.state = 'running' AND OLD.state = 'failed' THEN
        NEW.failure_class := NULL;
        NEW.failure_attempts := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER clear_failure BEFORE UPDATE OF state ON ecp.run
    FOR EACH ROW EXECUTE FUNCTION ecp._clear_failure();

-- The run states the C code knows (checked against ecp.run's CHECK
-- constraint by the regression tests).
CREATE FUNCTION ecp._run_states() RETURNS text[]
    AS 'MODULE_PATHNAME', 'ecp_run_states'
    LANGUAGE C IMMUTABLE STRICT;
