/*
 * utility_hook.c: keep the launcher out of the way of DROP DATABASE, and
 * drop followers' slots before DROP EXTENSION ecp (follow_tables.c).
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
 *
 * Only a DROP DATABASE that PostgreSQL would carry out may evict the
 * launcher: the checks DropDatabase makes first (not in a transaction
 * block, owner or superuser, not the current database) are made before
 * the hold, so any other role's attempt fails as usual and the launcher
 * never notices.  The hold names its backend: an error or a cancel
 * releases it at once, an exit (FATAL) from a before_shmem_exit callback,
 * and the launcher drops a hold whose backend is gone.
 */
#include "ecp.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/acl.h"
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

/*
 * This backend's DROP DATABASE returned: the hold becomes permanent when
 * its transaction commits, and is released if it aborts.
 */
static bool keep_hold_at_commit = false;

static bool exit_callback_registered = false;

static void
release_hold_and_wake(void)
{
	ecp_release_database_hold();
	ecp_wake_launcher();
}

static void
ecp_xact_callback(XactEvent event, void *arg)
{
	if (keep_hold_at_commit &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT))
	{
		if (event == XACT_EVENT_COMMIT)
			ecp_keep_database_hold();
		else
			release_hold_and_wake();
		keep_hold_at_commit = false;
	}
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

/* A backend that exits (FATAL, terminate) with the hold gives it back. */
static void
release_hold_at_exit(int code, Datum arg)
{
	release_hold_and_wake();
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

/*
 * Would DropDatabase go ahead?  The checks it makes before it looks for
 * other sessions: not inside a transaction block or a function (this
 * raises the usual error), a database that exists, that we own (or we are
 * superuser), and that is not our own.  Anything else is left to
 * standard_ProcessUtility to refuse, without touching the launcher.
 */
static bool
drop_would_proceed(const DropdbStmt *stmt, ProcessUtilityContext context)
{
	Oid			dboid;

	PreventInTransactionBlock(context == PROCESS_UTILITY_TOPLEVEL, "DROP DATABASE");
	dboid = get_database_oid(stmt->dbname, true);
	return OidIsValid(dboid) && dboid != MyDatabaseId &&
		pg_database_ownercheck(dboid, GetUserId());
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
		names_launcher_database(((DropdbStmt *) parsetree)->dbname) &&
		drop_would_proceed((DropdbStmt *) parsetree, context))
	{
		if (!exit_callback_registered)
		{
			before_shmem_exit(release_hold_at_exit, (Datum) 0);
			exit_callback_registered = true;
		}
		PG_TRY();
		{
			ecp_hold_database();
			ecp_wake_launcher();
			wait_for_launcher_to_leave();
			call_next_utility(pstmt, queryString, readOnlyTree, context, params,
							  queryEnv, dest, qc);
		}
		PG_CATCH();
		{
			/* The database is still there: let the launcher come back. */
			release_hold_and_wake();
			PG_RE_THROW();
		}
		PG_END_TRY();
		keep_hold_at_commit = true;
		return;
	}

	/* a follower's replication slot is not the extension's: drop it first */
	ecp_follow_drop_extension_cleanup(parsetree);
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
