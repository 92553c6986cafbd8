-- ecp 0.8 -> 0.9: throughput round two (issue 25) and the brief's last rows
-- (issue 26).
--
-- * Workers that stay: a worker takes the next pending part of its run.
-- * Task option paging => 'cursor': any query, through one cursor.
-- * ecp.start(task, ids_from => ...): ids from a relation or a query;
--   write services get the list of indexes a batch must reach.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.9'" to load this file. \quit

-- ===========================================================================
-- Workers that stay (issue 25)
-- ===========================================================================

-- A worker that loses the claim of a part says so in the flow.
ALTER TABLE ecp.flow_log DROP CONSTRAINT flow_log_action_check;
ALTER TABLE ecp.flow_log ADD CONSTRAINT flow_log_action_check
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
                          'claim lost')) NOT VALID;
DO $$
BEGIN
    ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check;
EXCEPTION WHEN check_violation THEN
    RAISE WARNING 'ecp.flow_log holds rows with an action ecp never wrote (rows written by roles up to ecp 0.1): its CHECK flow_log_action_check checks new rows only'
          USING HINT = 'SELECT * FROM ecp.flow_log WHERE NOT (action = ANY (ecp_internal._flow_actions())) shows them; '
                       'update or delete them, then ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check.';
END $$;

-- (workers section end)

-- ===========================================================================
-- Cursor paging (issue 26)
-- ===========================================================================

-- (cursor section end)

-- ===========================================================================
-- Ids from a relation, write services' index lists (issue 26)
-- ===========================================================================

-- (ids_from section end)
