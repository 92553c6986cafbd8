/*
 * functions.c: SQL-callable functions about ecp itself.
 */
#include "sync.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(ecp_version);
PG_FUNCTION_INFO_V1(ecp_launcher_pid_sql);
PG_FUNCTION_INFO_V1(ecp_run_states);

/* ecp.version(): the version of the loaded library. */
Datum
ecp_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ECP_VERSION));
}

/* ecp.launcher_pid(): pid of the running launcher, or NULL. */
Datum
ecp_launcher_pid_sql(PG_FUNCTION_ARGS)
{
	pid_t		pid = ecp_launcher_pid();

	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32((int32) pid);
}

/*
 * ecp._run_states(): the run states the C code knows, in order (without
 * its own "gone"); pg_regress checks them against ecp.run's CHECK
 * constraint, so the two lists cannot drift apart.
 */
Datum
ecp_run_states(PG_FUNCTION_ARGS)
{
	Datum		names[ECP_RUN_GONE];

	for (int i = 0; i < ECP_RUN_GONE; i++)
		names[i] = CStringGetTextDatum(ecp_run_state_names[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(names, ECP_RUN_GONE, TEXTOID, -1, false, TYPALIGN_INT));
}
