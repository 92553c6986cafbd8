/*
 * sandbox.c: the two kinds of transaction a sync worker runs.
 *
 * The worker is connected as the bootstrap superuser (so it can act for
 * any owner), which makes the line between them the whole of ecp's
 * security:
 *
 *  - The owner's code (the task's query, and whatever it calls) runs in
 *    ecp_begin_as_owner .. ecp_commit_as_owner: as the owner, inside a
 *    security-restricted operation with a GUC nest level of its own, the
 *    recipe PostgreSQL uses for autovacuum and index builds.  The
 *    restriction makes PostgreSQL refuse what would outlive the owner's
 *    statement and run later under someone else: a deferred trigger
 *    ("cannot fire deferred trigger within security-restricted
 *    operation"), a WITH HOLD cursor, a temporary table, SET ROLE.  The
 *    nest level throws away every setting the code changed (set_config,
 *    SET LOCAL) before the transaction ends, and the transaction commits
 *    while the worker is still the owner, so nothing that commit runs can
 *    run as the superuser.
 *
 *  - ecp's own bookkeeping (checkpoints, counters, flow rows) runs in
 *    ecp_begin_bookkeeping .. ecp_commit_bookkeeping: as the worker's own
 *    user, with search_path pinned to pg_catalog, pg_temp for the whole
 *    session, and only ecp's fixed, schema-qualified statements.  No
 *    object a role created can be reached from there.
 *
 * A stop (pause, cancel: a flag in shared memory) or SIGTERM that arrives
 * while the owner's query runs interrupts that query within a fraction of
 * a second, instead of waiting for it to end on its own.
 */
#include "sync.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

/* How often a running owner's query looks at the stop flag. */
#define STOP_POLL_MS 100

static Oid	saved_user;
static int	saved_sec_context;
static int	owner_nest_level = -1;
static int	stop_slot = -1;
static volatile sig_atomic_t in_owner_code = false;

/* ecp.acting_role (see ecp_sandbox_define_gucs) */
static char *acting_role = NULL;

/* ecp.starting_maintenance (see ecp_sandbox_define_gucs) */
static bool starting_maintenance = false;

/* The search_path of every bookkeeping statement. */
#define PINNED_SEARCH_PATH "pg_catalog, pg_temp"

/*
 * Timer handler (signal context): turn a stop request into a query
 * cancel while the owner's code runs.  Only flags are touched here.
 */
static void
stop_poll_timeout(void)
{
	if (in_owner_code && stop_slot >= 0 && ecp_stop_requested(stop_slot))
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);
}

/* An error ended the transaction: the owner's code is no longer running. */
static void
sandbox_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT && in_owner_code)
	{
		in_owner_code = false;
		disable_timeout(USER_TIMEOUT, false);
	}
}

/*
 * ecp.acting_role: whom the flow names as the operator of what a
 * superuser's session does to ecp's tables.  A worker sets it to the run's
 * owner, so "finished" or "failed" is recorded under the owner, although
 * the worker does its bookkeeping as the worker's own user.  Only superusers
 * can set it; for everyone else the flow records current_user.
 */
void
ecp_sandbox_define_gucs(void)
{
	DefineCustomStringVariable("ecp.acting_role",
							   "Operator recorded in the flow for a superuser's changes (set by ecp's workers).",
							   NULL, &acting_role, "",
							   PGC_SUSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	/*
	 * Set (locally) by ecp_internal._start_maintenance, a SECURITY DEFINER function,
	 * around the one INSERT of a maintenance run, which the run trigger
	 * refuses otherwise.  Superuser-only, unlike a placeholder setting
	 * (up to 0.4 the guard was ecp_internal.maintenance_run, which any
	 * role could set).
	 */
	DefineCustomBoolVariable("ecp.starting_maintenance",
							 "Whether ecp_internal._start_maintenance is inserting a maintenance run (set by ecp only).",
							 NULL, &starting_maintenance, false,
							 PGC_SUSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);
}

/*
 * Once per worker, right after connecting: pin the session's search_path,
 * and arm what turns stops into interrupts.
 */
void
ecp_sandbox_init(int slot)
{
	stop_slot = slot;
	SetConfigOption("search_path", PINNED_SEARCH_PATH, PGC_SUSET, PGC_S_SESSION);
	RegisterTimeout(USER_TIMEOUT, stop_poll_timeout);
	RegisterXactCallback(sandbox_xact_callback, NULL);
}

/* The flow names the run's owner as the operator of the worker's changes. */
void
ecp_sandbox_act_for(const char *owner_name)
{
	SetConfigOption("ecp.acting_role", owner_name, PGC_SUSET, PGC_S_SESSION);
}

/*
 * SIGTERM while the owner's query runs: die like a backend does (the
 * checkpoint is durable, the part is recovered).  Elsewhere the loop sees
 * the flag and stops at its next step.  Signal context.
 */
void
ecp_sandbox_sigterm(void)
{
	if (in_owner_code)
	{
		ProcDiePending = true;
		InterruptPending = true;
	}
}

bool
ecp_sandbox_in_owner_code(void)
{
	return in_owner_code;
}

/*
 * ecp_internal._session_user_acts() RETURNS boolean: whether session_user is who
 * is acting, so a SECURITY DEFINER function may trust it.  Not inside a
 * security-restricted operation: there (an ecp worker running an owner's
 * query or transform, autovacuum or a maintenance command running a
 * role's index function) the session belongs to a superuser while the
 * code is the role's.
 */
PG_FUNCTION_INFO_V1(ecp_session_user_acts);
Datum
ecp_session_user_acts(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(!in_owner_code && !InSecurityRestrictedOperation());
}

/*
 * Begin a transaction as the owner (sandboxed).  Returns the caller's
 * memory context, which the caller hands to ecp_commit_as_owner: a commit
 * leaves CurrentMemoryContext at TopMemoryContext, and whatever the caller
 * allocates after it must still go where it did before (a page's context,
 * freed with the page), or every page would leak into TopMemoryContext.
 */
MemoryContext
ecp_begin_as_owner(const EcpPartConfig *config)
{
	MemoryContext caller = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	GetUserIdAndSecContext(&saved_user, &saved_sec_context);
	SetUserIdAndSecContext(config->owner, saved_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	owner_nest_level = NewGUCNestLevel();
	if (config->search_path)
		(void) set_config_option("search_path", config->search_path,
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	PushActiveSnapshot(GetTransactionSnapshot());
	in_owner_code = true;
	enable_timeout_every(USER_TIMEOUT,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STOP_POLL_MS),
						 STOP_POLL_MS);
	return caller;
}

/*
 * Settings the owner's code changed are thrown away, then the transaction
 * commits as the owner, still restricted: whatever commit runs, runs as the
 * owner or not at all.
 */
void
ecp_commit_as_owner(MemoryContext back_to)
{
	disable_timeout(USER_TIMEOUT, false);
	PopActiveSnapshot();
	AtEOXact_GUC(false, owner_nest_level);
	CommitTransactionCommand();
	in_owner_code = false;
	SetUserIdAndSecContext(saved_user, saved_sec_context);
	MemoryContextSwitchTo(back_to);
	pgstat_report_stat(false);
}

MemoryContext
ecp_begin_bookkeeping(void)
{
	MemoryContext caller = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	return caller;
}

void
ecp_commit_bookkeeping(MemoryContext back_to)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(back_to);
	pgstat_report_stat(false);
}
