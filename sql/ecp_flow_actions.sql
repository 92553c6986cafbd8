-- The flow actions are one list: EcpFlowAction in C (ecp_internal._flow_actions()),
-- ecp.flow_log's CHECK constraint, and every action ecp's SQL writes.
\set VERBOSITY terse

-- the C list is the CHECK's, name for name and in order
SELECT ecp_internal._flow_actions() = (
    SELECT array_agg(r.m[1] ORDER BY r.ord)
      FROM pg_constraint c,
           regexp_matches(pg_get_constraintdef(c.oid), '''([^'']+)''', 'g') WITH ORDINALITY AS r(m, ord)
     WHERE c.conrelid = 'ecp.flow_log'::regclass AND c.conname = 'flow_log_action_check'
) AS flow_actions_agree,
       cardinality(ecp_internal._flow_actions()) AS actions;

-- the CHECK is validated (a fresh install holds no row it would refuse)
SELECT convalidated FROM pg_constraint
 WHERE conrelid = 'ecp.flow_log'::regclass AND conname = 'flow_log_action_check';

-- it refuses an action the C code does not know (terse: the DETAIL would
-- show the row's timestamp)
INSERT INTO ecp.flow_log (action) VALUES ('no such action');

-- Every action ecp's SQL functions insert into ecp.flow_log, read from
-- their source: the action column of each INSERT is a literal, or a
-- variable whose assignments are read for their literals (a CASE's THEN
-- and ELSE branches).  ecp_internal._flow_event passes on its parameter: the C
-- code's EcpFlowAction.  An INSERT whose action is none of these is listed
-- as unresolved, so a new way of writing one cannot slip past.
CREATE TEMP VIEW sql_flow_actions AS
WITH fn AS (
    SELECT p.oid::regprocedure::text AS fn, p.prosrc
      FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ecp')
), ins AS (
    SELECT fn, prosrc,
           regexp_split_to_array(btrim(m[1]), '\s*,\s*') AS cols, m[2] AS rest
      FROM fn, regexp_matches(prosrc, 'INSERT\s+INTO\s+ecp\.flow_log\s*\(([^)]*)\)\s*(?:VALUES\s*\(|SELECT\s)([^;]*)', 'gi') AS m
), expr AS (
    SELECT fn, prosrc, btrim(split_part(rest, ',', array_position(cols, 'action'))) AS e
      FROM ins
), literal AS (
    SELECT fn, e, a[1] AS action
      FROM expr, regexp_matches(e, '^''([^'']*)''$') AS a
    UNION ALL
    SELECT fn, e, l[1]
      FROM expr,
           regexp_matches(prosrc, '\m' || e || '\s*:=\s*([^;]*);', 'g') AS v,
           regexp_matches(v[1], '(?:^|THEN|ELSE)\s*''([^'']*)''', 'g') AS l
     WHERE e ~ '^[a-z_]+$'
)
SELECT fn, e, action FROM literal
UNION ALL
SELECT fn, e, NULL FROM expr
 WHERE NOT EXISTS (SELECT 1 FROM literal l WHERE l.fn = expr.fn AND l.e = expr.e)
   AND NOT (fn = 'ecp_internal._flow_event(bigint,text,jsonb)' AND e = '_flow_event.action');

SELECT array_agg(DISTINCT action ORDER BY action) AS written_by_sql FROM sql_flow_actions;
-- none of them is missing from the C list
SELECT coalesce(array_agg(DISTINCT action), '{}') AS not_in_c_list
  FROM sql_flow_actions WHERE action <> ALL (ecp_internal._flow_actions());
-- and no INSERT's action went unread
SELECT fn, e AS unresolved FROM sql_flow_actions WHERE action IS NULL;
