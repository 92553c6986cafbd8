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

-- (workers section end)

-- ===========================================================================
-- Cursor paging (issue 26)
-- ===========================================================================

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

-- (ids_from section end)
