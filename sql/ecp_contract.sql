-- The option contract: one table in C (src/option_contract.c), which the
-- worker and the launcher read, and which SQL reads through
-- ecp_internal._option_contract().  Here: the table as SQL sees it, then, for
-- every option, that ecp's SQL checks take each bound and refuse what lies
-- past it and a value of the wrong JSON type, and that every option key
-- ecp's SQL functions read is in the contract.
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT kind, name, type, min, max, default_value, default_setting, words, launcher
  FROM ecp_internal._option_contract() ORDER BY kind, name;

-- The values to try for an option: (value, whether SQL must take it).
CREATE FUNCTION pg_temp.cases(type text, min numeric, max numeric, words text[])
RETURNS TABLE (value jsonb, valid boolean) LANGUAGE sql AS $$
    SELECT v, ok FROM (VALUES
        -- numbers: both bounds, one past each, a fraction, a string
        (CASE WHEN cases.type IN ('integer', 'number') THEN to_jsonb(cases.min) END, true),
        (CASE WHEN cases.type IN ('integer', 'number') THEN to_jsonb(cases.max) END, true),
        (CASE WHEN cases.type IN ('integer', 'number') THEN to_jsonb(cases.min - 1) END, false),
        (CASE WHEN cases.type IN ('integer', 'number') THEN to_jsonb(cases.max + 1) END, false),
        (CASE WHEN cases.type = 'integer' THEN to_jsonb(cases.min + 0.5) END, false),
        (CASE WHEN cases.type IN ('integer', 'number') THEN to_jsonb(cases.min::text) END, false),
        -- booleans
        (CASE WHEN cases.type = 'boolean' THEN 'true'::jsonb END, true),
        (CASE WHEN cases.type = 'boolean' THEN 'false'::jsonb END, true),
        (CASE WHEN cases.type = 'boolean' THEN '"yes"'::jsonb END, false),
        (CASE WHEN cases.type = 'boolean' THEN '1'::jsonb END, false),
        -- text: max bytes, one more, a number
        (CASE WHEN cases.type = 'text' THEN to_jsonb(repeat('x', cases.max::integer)) END, true),
        (CASE WHEN cases.type IN ('text', 'word') THEN to_jsonb(repeat('x', cases.max::integer + 1)) END, false),
        (CASE WHEN cases.type IN ('text', 'word') THEN '1'::jsonb END, false),
        -- words: not a word
        (CASE WHEN cases.type = 'word' THEN '"not_a_word"'::jsonb END, false),
        -- arrays and objects: min and max members, one fewer, one more, the other kind
        (CASE WHEN cases.type = 'array' THEN (SELECT coalesce(jsonb_agg(i), '[]') FROM generate_series(1, cases.min::integer) i) END, true),
        (CASE WHEN cases.type = 'array' THEN (SELECT jsonb_agg(i) FROM generate_series(1, cases.max::integer) i) END, true),
        (CASE WHEN cases.type = 'array' AND cases.min > 0 THEN (SELECT coalesce(jsonb_agg(i), '[]') FROM generate_series(1, cases.min::integer - 1) i) END, false),
        (CASE WHEN cases.type = 'array' THEN (SELECT jsonb_agg(i) FROM generate_series(1, cases.max::integer + 1) i) END, false),
        (CASE WHEN cases.type = 'array' THEN '{}'::jsonb END, false),
        (CASE WHEN cases.type = 'object' THEN (SELECT coalesce(jsonb_object_agg('k' || i, i), '{}') FROM generate_series(1, cases.min::integer) i) END, true),
        (CASE WHEN cases.type = 'object' THEN (SELECT jsonb_object_agg('k' || i, i) FROM generate_series(1, cases.max::integer) i) END, true),
        (CASE WHEN cases.type = 'object' AND cases.min > 0 THEN (SELECT coalesce(jsonb_object_agg('k' || i, i), '{}') FROM generate_series(1, cases.min::integer - 1) i) END, false),
        (CASE WHEN cases.type = 'object' THEN (SELECT jsonb_object_agg('k' || i, i) FROM generate_series(1, cases.max::integer + 1) i) END, false),
        (CASE WHEN cases.type = 'object' THEN '[]'::jsonb END, false)
    ) AS t(v, ok) WHERE v IS NOT NULL
    UNION ALL
    SELECT to_jsonb(w), true FROM unnest(cases.words) w
$$;

-- Whether ecp's SQL checks take an option's value: the type and bounds
-- (check_row's ecp_internal._check_options with the kind's spec), then a word's
-- words.
CREATE FUNCTION pg_temp.sql_takes(kind text, name text, value jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ecp_internal._check_options(jsonb_build_object(name, value),
                               CASE kind WHEN 'task' THEN ecp_internal._task_option_spec()
                                         ELSE ecp_internal._consumer_option_spec() END, kind);
    PERFORM ecp_internal._check_option_word(c.kind, c.name, sql_takes.value #>> '{}', NULL)
       FROM ecp_internal._option_contract() c WHERE c.kind = sql_takes.kind AND c.name = sql_takes.name
                                       AND c.type = 'word';
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END $$;

CREATE TEMP TABLE tried AS
SELECT c.kind, c.name, c.type, x.value, x.valid, pg_temp.sql_takes(c.kind, c.name, x.value) AS taken
  FROM ecp_internal._option_contract() c, LATERAL pg_temp.cases(c.type, c.min, c.max, c.words) x;

-- Every option was tried, and SQL agreed with the contract every time.
SELECT kind, count(DISTINCT name) AS options, count(*) AS cases,
       count(*) FILTER (WHERE valid) AS valid_cases,
       count(*) FILTER (WHERE taken IS DISTINCT FROM valid) AS disagreements
  FROM tried GROUP BY kind ORDER BY kind;
SELECT kind, name, left(value::text, 40) AS value, valid, taken
  FROM tried WHERE taken IS DISTINCT FROM valid ORDER BY kind, name;
SELECT c.kind, c.name FROM ecp_internal._option_contract() c
 WHERE NOT EXISTS (SELECT 1 FROM tried t WHERE t.kind = c.kind AND t.name = c.name AND t.valid)
    OR NOT EXISTS (SELECT 1 FROM tried t WHERE t.kind = c.kind AND t.name = c.name AND NOT t.valid);

-- The keys SQL accepts are the contract's, for both kinds.
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(ecp_internal._task_option_spec()) k)
     = (SELECT array_agg(name ORDER BY name) FROM ecp_internal._option_contract() WHERE kind = 'task') AS task_keys_agree,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(ecp_internal._consumer_option_spec()) k)
     = (SELECT array_agg(name ORDER BY name) FROM ecp_internal._option_contract() WHERE kind = 'consumer') AS consumer_keys_agree;

-- Every option key ecp's own SQL functions read (options->'k', ->>'k',
-- ? 'k', ?| ARRAY['k', ...]) is in the contract: no option lives outside it.
WITH bodies AS (
    SELECT p.prosrc FROM pg_proc p WHERE p.pronamespace IN ('ecp'::regnamespace, 'ecp_internal'::regnamespace) AND p.prolang <> 13
), keys AS (
    SELECT m[1] AS k FROM bodies, regexp_matches(prosrc, 'options\s*(?:->>|->|\?)\s*''([a-z_]+)''', 'g') m
    UNION
    SELECT trim(both ''' ' from e)
      FROM bodies, regexp_matches(prosrc, 'options\s*\?\|\s*ARRAY\[([^]]*)\]', 'g') m,
           regexp_split_to_table(m[1], ',') e
)
SELECT count(*) > 20 AS many_keys_read,
       array_agg(k ORDER BY k) FILTER (WHERE k NOT IN (SELECT name FROM ecp_internal._option_contract())) AS outside_contract
  FROM keys;

-- ecp.set_rate takes the bounds of task option rate_limit (a task that
-- does not exist: the rate is checked first).
SELECT ecp.set_rate('no_such_task', (SELECT max FROM ecp_internal._option_contract() WHERE kind = 'task' AND name = 'rate_limit'));
SELECT ecp.set_rate('no_such_task', (SELECT max + 1 FROM ecp_internal._option_contract() WHERE kind = 'task' AND name = 'rate_limit'));
SELECT ecp.set_rate('no_such_task', (SELECT min - 1 FROM ecp_internal._option_contract() WHERE kind = 'task' AND name = 'rate_limit'));

-- The GUCs that hold a default have the option's bounds and default.
SELECT c.name, s.min_val::numeric = c.min AND s.max_val::numeric = c.max
               AND s.boot_val = c.default_value #>> '{}' AS setting_agrees
  FROM ecp_internal._option_contract() c JOIN pg_settings s ON s.name = c.default_setting
 ORDER BY c.name;
