/*
 * functions.c: SQL-callable functions about ecp itself.
 */
#include "ecp.h"

#include "fmgr.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(ecp_version);
PG_FUNCTION_INFO_V1(ecp_launcher_pid_sql);

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
