-- The extension installs into schema ecp, reports its version and shows its
-- launcher (preloaded through test/regress.conf).
CREATE EXTENSION ecp;

SELECT n.nspname AS schema, e.extrelocatable AS relocatable
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'ecp';

SELECT ecp.version() = (SELECT extversion FROM pg_extension WHERE extname = 'ecp')
       AS library_matches_sql;

-- The launcher starts with the server; poll (up to 30 s) until it is connected.
DO $$
BEGIN
  FOR i IN 1..300 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM ecp.launcher WHERE database IS NOT NULL);
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;

SELECT count(*) AS launchers, min(database) AS database FROM ecp.launcher;
SELECT ecp.launcher_pid() = (SELECT pid FROM ecp.launcher) AS pid_matches_view;

SHOW ecp.database_name;

-- Needs a restart, so it cannot be SET.
SET ecp.database_name = 'other';

-- Not relocatable: the schema is part of the contract.
ALTER EXTENSION ecp SET SCHEMA public;

-- Unknown settings in the reserved prefix are refused.
SET ecp.no_such_setting = 1;

-- the run states of the C code are those of ecp.run's CHECK constraint
SELECT ecp_internal._run_states() = (
    SELECT array_agg(r.m[1] ORDER BY r.ord)
      FROM pg_constraint c,
           regexp_matches(pg_get_constraintdef(c.oid), '''([a-z]+)''', 'g') WITH ORDINALITY AS r(m, ord)
     WHERE c.conrelid = 'ecp.run'::regclass AND pg_get_constraintdef(c.oid) LIKE '%pending%'
) AS run_states_agree;
