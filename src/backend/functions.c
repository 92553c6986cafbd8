/*
 * functions.c: SQL-callable functions about ecp itself.
 */
#include "sync.h"

#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"

/* ecp.install_in_any_database (superuser): see ecp_check_install_database */
static bool install_in_any_database = false;

PG_FUNCTION_INFO_V1(ecp_version);
PG_FUNCTION_INFO_V1(ecp_check_install_database);
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
 * ecp_internal._run_states(): the run states the C code knows, in order (without
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

/*
 * ecp_internal._check_install_database(), the first statement of the install
 * script: ecp is created in the database its launcher connects to
 * (ecp.database_name), as pg_cron is in cron.database_name.  Anywhere
 * else its runs would stay pending for ever.  A superuser may set
 * ecp.install_in_any_database to install it elsewhere anyway (to compare
 * schemas, or to prepare a database before pointing ecp.database_name at
 * it).
 */
Datum
ecp_check_install_database(PG_FUNCTION_ARGS)
{
	char	   *here = get_database_name(MyDatabaseId);

	if (install_in_any_database || here == NULL || strcmp(here, ecp_database_name) == 0)
		PG_RETURN_VOID();
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("ecp can only be created in database \"%s\", not in \"%s\"", ecp_database_name, here),
			 errdetail("ecp's launcher and workers run in the database that ecp.database_name names; "
					   "the runs of an ecp in any other database would never start."),
			 errhint("Create it in database \"%s\", or set ecp.database_name = '%s' in postgresql.conf and restart "
					 "to use this database.", ecp_database_name, here)));
	PG_RETURN_VOID();
}

void
ecp_install_check_define_gucs(void)
{
	DefineCustomBoolVariable("ecp.install_in_any_database",
							 "Let CREATE EXTENSION ecp run in a database other than ecp.database_name.",
							 "Runs of an ecp there never start: for comparing schemas, or preparing a database "
							 "before ecp.database_name points at it.",
							 &install_in_any_database, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}
