-- ecp 0.6 -> 0.7: following changes (issue 22).
--
-- * ecp.follow(task) / ecp.unfollow(task): a follower part keeps the
--   task's index equal to its source (logical decoding with pgoutput,
--   statement triggers when wal_level is not logical, polling with
--   since_column); ecp.followers shows them.
-- * task option since_column: incremental runs from a watermark.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.7'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Following changes
-- ---------------------------------------------------------------------------
-- (follow section end)

-- ---------------------------------------------------------------------------
-- Incremental runs: since_column
-- ---------------------------------------------------------------------------
-- (since_column section end)
