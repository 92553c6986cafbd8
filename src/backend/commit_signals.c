/*
 * commit_signals.c: wake the launcher and signal workers when the
 * transaction that asked for it commits (pg_net's pattern).  Before the
 * commit, the launcher would not see the new run, and a worker would find
 * its run unchanged; after an abort nothing must happen at all.
 *
 * A prepared transaction commits later, in another session (COMMIT
 * PREPARED), where nothing of this backend's list is known: an ecp.pause
 * in it would change the run without ever stopping its workers.  So a
 * transaction with signals pending cannot be prepared.
 */
#include "ecp.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(ecp_wake_launcher_at_commit);
PG_FUNCTION_INFO_V1(ecp_signal_run_at_commit);

static bool wake_at_commit = false;
static List *runs_to_signal = NIL;	/* int64 run ids, in TopMemoryContext */

static void
forget_pending(void)
{
	wake_at_commit = false;
	list_free_deep(runs_to_signal);
	runs_to_signal = NIL;
}

static void
commit_signals_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event == XACT_EVENT_PRE_PREPARE && (wake_at_commit || runs_to_signal != NIL))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that changed ecp runs or rates"),
				 errdetail("ecp signals the launcher and the workers when the transaction commits, which COMMIT PREPARED in another session cannot do."),
				 errhint("Call ecp.start, ecp.pause, ecp.resume, ecp.cancel, ecp.retry_failed and ecp.set_rate outside of two-phase transactions.")));
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		forget_pending();
		return;
	}
	if (event != XACT_EVENT_COMMIT)
		return;
	foreach(lc, runs_to_signal)
		ecp_request_stop(*(int64 *) lfirst(lc));
	if (wake_at_commit || runs_to_signal != NIL)
		ecp_wake_launcher();
	forget_pending();
}

void
ecp_commit_signals_install(void)
{
	RegisterXactCallback(commit_signals_callback, NULL);
}

/* ecp_internal._wake_launcher_at_commit() */
Datum
ecp_wake_launcher_at_commit(PG_FUNCTION_ARGS)
{
	(void) ecp_shared();		/* error now, not at commit, if not preloaded */
	wake_at_commit = true;
	PG_RETURN_VOID();
}

/* ecp_internal._signal_run_at_commit(run bigint) */
Datum
ecp_signal_run_at_commit(PG_FUNCTION_ARGS)
{
	MemoryContext old;
	int64	   *run_id;

	(void) ecp_shared();
	old = MemoryContextSwitchTo(TopMemoryContext);
	run_id = palloc(sizeof(int64));
	*run_id = PG_GETARG_INT64(0);
	runs_to_signal = lappend(runs_to_signal, run_id);
	MemoryContextSwitchTo(old);
	PG_RETURN_VOID();
}
