-- ecp 0.5 -> 0.6: the foundation (issue 21).
--
-- * one contract for task and consumer options: their names, types,
--   bounds and defaults live in one table in C (ecp._option_contract()),
--   read by the SQL checks, the worker and the launcher alike.
-- * flow actions are one list in C (ecp._flow_actions()), checked by
--   ecp.flow_log's CHECK like run states.
-- * ecp._backoff_ms is gone: the back-off is one C function.
\echo Use "ALTER EXTENSION ecp UPDATE TO '0.6'" to load this file. \quit
