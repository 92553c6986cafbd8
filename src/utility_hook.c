/*
 * utility_hook.c: keep the launcher out of the way of DROP DATABASE.
 *
 * DROP DATABASE refuses to run while any process is connected to the
 * database, and background workers are not asked to leave.  When the
 * launcher's own database is dropped we hold the launcher out of it first
 * and wait until it has gone; if the drop fails the hold is released so
 * the launcher comes back, and a later CREATE DATABASE of the same name
 * releases it too.  Until then the launcher waits without connecting (see
 * launcher.c).  After a server restart the hold is gone: a launcher whose
 * database does not exist then fails to connect and is restarted every
 * ECP_LAUNCHER_RESTART_SECONDS, logging why, like any misconfiguration.
 */
#include "ecp.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/timestamp.h"

/* How long DROP DATABASE waits for the launcher to leave. */
#define LAUNCHER_LEAVE_TIMEOUT_MS 10000L
#define LAUNCHER_LEAVE_POLL_MS 50L

static ProcessUtility_hook_type prev_utility_hook = NULL;

/*
 * CREATE DATABASE of the launcher's database releases the hold only when
 * it commits: before that, connecting to the new database would fail.
 */
static bool release_hold_at_commit = false;

static void
ecp_xact_callback(XactEvent event, void *arg)
{
	if (!release_hold_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT)
	{
		ecp_set_database_held(false);
		ecp_wake_launcher();
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		release_hold_at_commit = false;
}

static bool
names_launcher_database(const char *dbname)
{
	return dbname != NULL && ecp_database_name != NULL &&
		strcmp(dbname, ecp_database_name) == 0;
}

/* Poll until the launcher is no longer connected, up to a timeout. */
static void
wait_for_launcher_to_leave(void)
{
	EcpSharedState *state = ecp_shared();
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   LAUNCHER_LEAVE_TIMEOUT_MS);

	for (;;)
	{
		bool		connected;

		LWLockAcquire(state->lock, LW_SHARED);
		connected = state->launcher_pid != 0 && state->launcher_connected;
		LWLockRelease(state->lock);
		if (!connected || GetCurrentTimestamp() >= deadline)
			return;

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_LEAVE_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
call_next_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				  ProcessUtilityContext context, ParamListInfo params,
				  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

static void
ecp_utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				 ProcessUtilityContext context, ParamListInfo params,
				 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (IsA(parsetree, DropdbStmt) &&
		names_launcher_database(((DropdbStmt *) parsetree)->dbname))
	{
		ecp_set_database_held(true);
		ecp_wake_launcher();
		wait_for_launcher_to_leave();
		PG_TRY();
		{
			call_next_utility(pstmt, queryString, readOnlyTree, context, params,
							  queryEnv, dest, qc);
		}
		PG_CATCH();
		{
			/* The database is still there: let the launcher come back. */
			ecp_set_database_held(false);
			ecp_wake_launcher();
			PG_RE_THROW();
		}
		PG_END_TRY();
		return;
	}

	call_next_utility(pstmt, queryString, readOnlyTree, context, params,
					  queryEnv, dest, qc);

	if (IsA(parsetree, CreatedbStmt) &&
		names_launcher_database(((CreatedbStmt *) parsetree)->dbname))
		release_hold_at_commit = true;
}

void
ecp_utility_hook_install(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = ecp_utility_hook;
	RegisterXactCallback(ecp_xact_callback, NULL);
}
