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
