-- The SQL surface of the sync engine: good and bad arguments, clear errors
-- with SQLSTATEs, and nothing changed by a refused call.  The launcher runs
-- in database "postgres", so runs created here stay where the calls put
-- them (the TAP suite covers real runs).
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2));
INSERT INTO orders SELECT g, 'c' || g, g * 1.5 FROM generate_series(1, 5) g;

-- consumers -----------------------------------------------------------------
SELECT ecp.create_consumer('es', 'http://127.0.0.1:9200/');
SELECT ecp.create_consumer('es_auth', 'https://es.example:9200',
                           options => '{"username": "sync", "password": "s3cret", "request_timeout_ms": 30000}');
SELECT ecp.create_consumer('es', 'http://127.0.0.1:9200');
SELECT ecp.create_consumer('bad name!', 'http://127.0.0.1:9200');
SELECT ecp.create_consumer('es2', 'ftp://127.0.0.1');
SELECT ecp.create_consumer('es2', 'http://sync:s3cret@127.0.0.1:9200');
SELECT ecp.create_consumer('es2', 'http://127.0.0.1:9200', 'kafka');
SELECT ecp.create_consumer('es2', 'http://127.0.0.1:9200', options => '{"colour": "blue"}');
SELECT ecp.create_consumer('es2', 'http://127.0.0.1:9200', options => '{"username": "sync"}');
SELECT ecp.create_consumer('es2', 'http://127.0.0.1:9200', options => '{"request_timeout_ms": -5}');
SELECT ecp.create_consumer('es2', 'http://127.0.0.1:9200', options => '[1]');
SELECT ecp.create_consumer('es2', 'http://127.0.0.1:9200',
                           options => '{"api_key": "k", "username": "u", "password": "p"}');
-- credentials never show in the views
SELECT name, kind, url, options FROM ecp.consumers ORDER BY name;
SELECT action, content FROM ecp.flow WHERE action = 'create_consumer' ORDER BY at;

-- tasks ---------------------------------------------------------------------
SELECT ecp.create_task('orders', 'es', 'orders', query => 'SELECT * FROM orders;') AS task_id;
SELECT name, consumer, index, query, options FROM ecp.tasks;
SELECT ecp.create_task('orders', 'es', 'orders', query => 'SELECT * FROM orders');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT 1; SELECT 2');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'DELETE FROM orders');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * FROM orders FOR UPDATE');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * INTO copy FROM orders');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELEC * FROM orders');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * FROM no_such_table');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT id, customer AS id FROM orders');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'VACUUM orders');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * FROM orders', options => '{"batch_size": 0}');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * FROM orders', options => '{"batch_size": 1e6}');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * FROM orders', options => '{"nope": 1}');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * FROM orders', options => '{"paging": "sideways"}');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * FROM orders', options => '{"id_column": "sku"}');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * FROM orders', options => '{"op": "upsert"}');
SELECT ecp.create_task('t2', 'es', 'orders', query => 'SELECT * FROM orders', options => '{"batch_bytes": 10}');
SELECT ecp.create_task('t2', 'es', 'Orders', query => 'SELECT * FROM orders');
SELECT ecp.create_task('t2', 'es', '_orders', query => 'SELECT * FROM orders');
SELECT ecp.create_task('t2', 'nope', 'orders', query => 'SELECT * FROM orders');
SELECT ecp.create_task('t2', 'es', 'orders', ids => ARRAY['1']);
SELECT ecp.create_task('t2', 'es', 'orders');
-- none of the refused calls left anything behind
SELECT count(*) AS tasks FROM ecp.task;
SELECT count(*) AS consumers FROM ecp.consumer;

-- preview -------------------------------------------------------------------
SELECT * FROM ecp.preview('SELECT * FROM orders ORDER BY id', 2);
SELECT * FROM ecp.preview('SELECT 1 AS one; -- trailing comment');
SELECT * FROM ecp.preview('SELECT * FROM orders', 0);
SELECT * FROM ecp.preview('DELETE FROM orders RETURNING *');
SELECT * FROM ecp.preview('SELECT * FROM orders', -1);
SELECT count(*) AS orders_left FROM orders;

-- runs ----------------------------------------------------------------------
SELECT ecp.start('orders') AS run \gset
SELECT run_id = :run AS same_run, task, state, processed, failed, operator FROM ecp.progress;
SELECT ecp.start('orders');
SELECT ecp.start('nope');
SELECT ecp.resume(:run);
SELECT ecp.pause(:run);
SELECT ecp.pause(:run);
SELECT ecp.resume(:run);
SELECT state FROM ecp.progress WHERE run_id = :run;
SELECT ecp.cancel(:run);
SELECT ecp.cancel(:run);
SELECT ecp.pause(NULL);
SELECT ecp.pause(987654321);
SELECT state, finished_at IS NOT NULL AS finished FROM ecp.progress WHERE run_id = :run;
-- a finished run cannot be brought back by hand either
UPDATE ecp.run SET state = 'running' WHERE id = :run;
SELECT action, operator = current_user AS by_me, content - 'duration' AS content
  FROM ecp.flow WHERE run_id = :run ORDER BY at;

-- privileges ----------------------------------------------------------------
CREATE ROLE ecp_regress_alice;
GRANT USAGE ON SCHEMA public TO ecp_regress_alice;
SET ROLE ecp_regress_alice;
SELECT count(*) AS runs_alice_sees FROM ecp.progress;
SELECT count(*) AS consumers_alice_sees FROM ecp.consumer;
SELECT count(*) AS flow_alice_sees FROM ecp.flow;
SELECT ecp.pause(:run);
SELECT ecp.create_task('alice', 'es', 'orders', query => 'SELECT * FROM orders');
SELECT ecp.create_consumer('alice_es', 'http://127.0.0.1:9200');
SELECT ecp.create_task('alice', 'alice_es', 'orders', query => 'SELECT * FROM orders');
SELECT ecp.create_task('alice', 'alice_es', 'numbers', query => 'SELECT g AS id FROM generate_series(1, 3) g');
-- a server file needs pg_read_server_files
SELECT ecp.create_task('alice_file', 'alice_es', 'numbers', file => '/etc/hostname');
INSERT INTO ecp.flow_log (action, operator, owner) VALUES ('forged', 'postgres', 'ecp_regress_alice');
RESET ROLE;
SELECT name, owner::text = current_user AS mine FROM ecp.consumers ORDER BY name;
SELECT name, owner::text = current_user AS mine FROM ecp.tasks ORDER BY name;

-- SQLSTATEs of refused calls ------------------------------------------------
CREATE FUNCTION pg_temp.sqlstate_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT call, pg_temp.sqlstate_of(call) AS sqlstate FROM (VALUES
    ($$SELECT ecp.create_consumer('es', 'http://127.0.0.1:9200')$$),
    ($$SELECT ecp.create_consumer('x', 'ftp://h')$$),
    ($$SELECT ecp.create_consumer('x', 'http://h:1', options => '{"bad": 1}')$$),
    ($$SELECT ecp.create_task('x', 'nope', 'i', query => 'SELECT 1')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1; SELECT 2')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'DELETE FROM orders')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELEC 1')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT * FROM nowhere')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1 AS a, 2 AS a')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1 AS a', options => '{"id_column": "b"}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', ids => '{1}')$$),
    ($$SELECT ecp.start('nope')$$),
    ($$SELECT ecp.pause(424242)$$),
    ($$SELECT ecp.resume(1)$$),
    ($$SELECT ecp.retry_failed(424242)$$),
    ($$SELECT ecp.retry_failed(1)$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1 AS a', options => '{"max_retries": -1}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1 AS a', options => '{"retry_base_ms": 0}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', queries => ARRAY['SELECT 1 AS id', 'SELECT 1 AS a'])$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', queries => ARRAY['SELECT 1 AS id', 'DELETE FROM orders'])$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', queries => ARRAY['SELECT 1 AS id'], query => 'SELECT 1 AS id')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', queries => '{}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1 AS id', ids => '{1,NULL}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1 AS id', ids => '{1}', options => '{"parallelism": 2}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1 AS id', options => '{"parallelism": 65}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', file => 'ftp://h/f')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', file => 'relative/path')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', file => '/tmp/f', options => '{"format": "csv"}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', file => '/tmp/f', options => '{"format": "ids"}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1 AS id', file => '/tmp/f', options => '{"format": "ndjson"}')$$),
    ($$SELECT ecp.create_task('x', 'es', 'i', query => 'SELECT 1 AS id', options => '{"id_field": "id"}')$$),
    ($$SELECT ecp.start('orders', ids => '{}')$$)
) AS calls(call);
-- retry_failed of a run that is still going
SELECT ecp.start('orders') AS run2 \gset
SELECT ecp.retry_failed(:run2);
SELECT ecp.cancel(:run2);
-- max_retries 0 is allowed (fail at the first transient error)
SELECT ecp.create_task('no_retries', 'es', 'orders', query => 'SELECT * FROM orders',
                       options => '{"max_retries": 0}') > 0 AS created;

-- no trigger function of ecp's may be attached by a role: none is
-- executable by PUBLIC, and CREATE TRIGGER with one is refused
SELECT p.oid::regprocedure AS trigger_function_public_may_attach
  FROM pg_proc p
 WHERE p.pronamespace IN ('ecp'::regnamespace, 'ecp_internal'::regnamespace)
   AND p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)
   AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                     WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'));
CREATE TABLE public.alice_runs (LIKE ecp.run);
ALTER TABLE public.alice_runs OWNER TO ecp_regress_alice;
SET ROLE ecp_regress_alice;
CREATE TRIGGER steal AFTER INSERT ON public.alice_runs
    FOR EACH ROW EXECUTE FUNCTION ecp_internal._store_run_ids();
RESET ROLE;
DROP TABLE public.alice_runs;

REVOKE USAGE ON SCHEMA public FROM ecp_regress_alice;
DROP ROLE ecp_regress_alice;
