-- ecp 0.1: install script (schema ecp is created by CREATE EXTENSION from ecp.control)
\echo Use "CREATE EXTENSION ecp" to load this file. \quit

CREATE FUNCTION ecp.version() RETURNS text
    AS 'MODULE_PATHNAME', 'ecp_version'
    LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ecp.version() IS 'version of the loaded ecp library';

CREATE FUNCTION ecp.launcher_pid() RETURNS integer
    AS 'MODULE_PATHNAME', 'ecp_launcher_pid_sql'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ecp.launcher_pid() IS 'pid of the running ecp launcher, NULL when none runs';

-- The launcher as pg_stat_activity sees it: one row while it runs.
CREATE VIEW ecp.launcher AS
SELECT a.pid,
       a.datname AS database,
       a.backend_start AS started_at,
       a.state,
       a.wait_event
  FROM pg_catalog.pg_stat_activity a
 WHERE a.backend_type = 'ecp launcher';
COMMENT ON VIEW ecp.launcher IS 'the running ecp launcher (empty when it is not running)';

GRANT USAGE ON SCHEMA ecp TO PUBLIC;
GRANT SELECT ON ecp.launcher TO PUBLIC;
