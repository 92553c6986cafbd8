/*
 * scheduler.c: the launcher's pass over the runs.
 *
 * Every wake-up the launcher reconciles the tables with the live workers
 * instead of trusting events (PATTERNS.md): every part of a pending or
 * running run that has no worker slot gets a dynamic worker, up to
 * ecp.max_workers.  Paused, cancelled and finished runs are left alone.
 */
#include "ecp.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker_args.h"

/* A reserved slot whose worker has not attached after this long is free. */
#define SLOT_ATTACH_TIMEOUT_MS 60000

/* Handles of the workers this launcher started, by slot. */
static BackgroundWorkerHandle **worker_handles = NULL;

static void
ensure_handles(void)
{
	if (worker_handles == NULL)
		worker_handles = MemoryContextAllocZero(TopMemoryContext,
												sizeof(BackgroundWorkerHandle *) * ecp_max_workers);
}

/*
 * Free slots whose worker stopped before attaching (fork failure, or a
 * worker that died before its first statement), so their part is retried.
 */
static void
reclaim_slots(void)
{
	EcpSharedState *state = ecp_shared();
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < state->nslots; i++)
	{
		EcpWorkerSlot slot;
		pid_t		pid;
		bool		stale;

		LWLockAcquire(state->lock, LW_SHARED);
		slot = state->slots[i];
		LWLockRelease(state->lock);
		if (!slot.in_use || slot.pid != 0)
			continue;

		if (worker_handles[i] != NULL)
			stale = GetBackgroundWorkerPid(worker_handles[i], &pid) == BGWH_STOPPED;
		else
			stale = TimestampDifferenceExceeds(slot.reserved_at, now, SLOT_ATTACH_TIMEOUT_MS);
		if (stale)
		{
			ereport(LOG,
					(errmsg("ecp worker for run " INT64_FORMAT " part %d stopped before it started; it will be started again",
							slot.run_id, slot.part_no)));
			ecp_release_slot(i);
			if (worker_handles[i])
				pfree(worker_handles[i]);
			worker_handles[i] = NULL;
		}
	}
}

typedef struct RunnablePart
{
	int64		run_id;
	int32		part_no;
	Oid			owner;
	bool		recovering;
	bool		has_heartbeat;
	TimestampTz heartbeat;
} RunnablePart;

/* Register one dynamic worker for a part; false when none could be had. */
static bool
start_worker(const RunnablePart *part)
{
	int64		run_id = part->run_id;
	int32		part_no = part->part_no;
	BackgroundWorker worker;
	EcpWorkerArgs args;
	BackgroundWorkerHandle *handle;
	MemoryContext old_context;
	bool		registered;
	int			slot = ecp_reserve_slot(run_id, part_no);

	if (slot < 0)
		return false;			/* all ecp.max_workers slots busy */

	memset(&args, 0, sizeof(args));
	args.database = MyDatabaseId;
	args.owner = part->owner;
	args.run_id = run_id;
	args.part_no = part_no;
	args.recovering = part->recovering;
	args.has_heartbeat = part->has_heartbeat;
	args.heartbeat_seen = part->heartbeat;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher decides */
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ecp");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ecp_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ecp worker run " INT64_FORMAT " part %d", run_id, part_no);
	snprintf(worker.bgw_type, BGW_MAXLEN, "ecp worker");
	worker.bgw_main_arg = Int32GetDatum(slot);
	worker.bgw_notify_pid = MyProcPid;
	StaticAssertStmt(sizeof(EcpWorkerArgs) <= BGW_EXTRALEN, "worker args too large");
	memcpy(worker.bgw_extra, &args, sizeof(args));

	/* the handle outlives this transaction: it is checked on later passes */
	old_context = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(old_context);
	if (!registered)
	{
		ecp_release_slot(slot);
		ereport(WARNING,
				(errmsg("ecp could not start a worker for run " INT64_FORMAT ": no background worker slot is free",
						run_id),
				 errhint("Raise max_worker_processes (it must exceed ecp.max_workers plus other workers); ecp retries every second.")));
		return false;
	}
	if (worker_handles[slot])
		pfree(worker_handles[slot]);
	worker_handles[slot] = handle;
	return true;
}

/* SQL for a task's integer option with the GUC as default. */
static char *
task_option_or(const char *option, int fallback)
{
	return psprintf("coalesce((t.options->>'%s')::int, %d)", option, fallback);
}

/*
 * A part whose workers died more than max_retries times in a row (without
 * acknowledging a batch in between) fails its run instead of spinning.
 */
static void
fail_dying_parts(void)
{
	char	   *sql = psprintf("SELECT p.run_id, p.part_no, p.recoveries FROM ecp.run r"
							   "  JOIN ecp.part p ON p.run_id = r.id JOIN ecp.task t ON t.id = r.task_id"
							   " WHERE r.state = 'running' AND p.state = 'running' AND p.recoveries > %s"
							   "   AND (p.heartbeat_at < pg_postmaster_start_time()"
							   "        OR p.heartbeat_at < now() - interval '%d seconds')",
							   task_option_or("max_retries", ecp_max_retries), ecp_recovery_timeout);

	SPITupleTable *found;
	uint64		nfound;

	SPI_connect();
	SPI_execute(sql, true, 0);
	found = SPI_tuptable;		/* kept: the UPDATEs below replace SPI_tuptable */
	nfound = SPI_processed;
	for (uint64 i = 0; i < nfound; i++)
	{
		bool		isnull;
		int64		run_id = DatumGetInt64(SPI_getbinval(found->vals[i], found->tupdesc, 1, &isnull));
		int32		part_no = DatumGetInt32(SPI_getbinval(found->vals[i], found->tupdesc, 2, &isnull));
		int32		deaths = DatumGetInt32(SPI_getbinval(found->vals[i], found->tupdesc, 3, &isnull));

		if (ecp_part_has_slot(run_id, part_no))
			continue;			/* a worker is alive after all */
		SPI_execute(psprintf("UPDATE ecp.run SET state = 'failed', finished_at = now(), last_error = "
							 "'the worker of part %d died %d times in a row without finishing a batch; "
							 "the checkpoint is kept: see the server log, then ecp.resume(" INT64_FORMAT ")' "
							 "WHERE id = " INT64_FORMAT " AND state = 'running'",
							 part_no, deaths, run_id, run_id), false, 0);
	}
	SPI_finish();
}

/*
 * Push the configured rates to shared memory, every pass: ecp.set_rate and
 * a plain UPDATE of the option alike take effect within a second.
 */
static void
refresh_rates(void)
{
	SPI_connect();
	SPI_execute("SELECT 't', t.id, coalesce((t.options->>'rate_limit')::float8, 0) FROM ecp.task t"
				" WHERE EXISTS (SELECT 1 FROM ecp.run r WHERE r.task_id = t.id AND r.state IN ('pending', 'running'))"
				" UNION ALL "
				"SELECT 'c', c.id, coalesce((c.options->>'rate_limit')::float8, 0) FROM ecp.consumer c",
				true, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *kind = SPI_getvalue(tuple, desc, 1);

		ecp_limiter_set(kind[0], DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull)),
						DatumGetFloat8(SPI_getbinval(tuple, desc, 3, &isnull)));
	}
	SPI_finish();
}

/* The parts that should have a worker, read in one short transaction. */
static RunnablePart *
runnable_parts(int *count)
{
	RunnablePart *parts = NULL;

	/*
	 * Pending parts start at once.  A part still marked running lost its
	 * worker (crash, kill, shutdown): it is recovered when its heartbeat is
	 * older than ecp.recovery_timeout, or older than this server's start.
	 */
	char	   *sql = psprintf("SELECT p.run_id, p.part_no, r.owner::oid, p.state = 'running', p.heartbeat_at"
							   "  FROM ecp.run r JOIN ecp.part p ON p.run_id = r.id"
							   "  JOIN ecp.task t ON t.id = r.task_id"
							   " WHERE r.state IN ('pending', 'running')"
							   "   AND (p.state = 'pending' OR (p.state = 'running' AND"
							   "        (p.heartbeat_at IS NULL OR p.heartbeat_at < pg_postmaster_start_time()"
							   "         OR p.heartbeat_at < now() - interval '%d seconds')"
							   /* a part that keeps dying waits a Fibonacci back-off */
							   "        AND coalesce(p.heartbeat_at, '-infinity') + make_interval(secs => "
							   "            ecp._backoff_ms(p.recoveries, %s, %s) / 1000.0) < now()))"
							   " ORDER BY r.id, p.part_no", ecp_recovery_timeout,
							   task_option_or("retry_base_ms", ecp_retry_base_ms),
							   task_option_or("retry_max_ms", ecp_retry_max_ms));

	*count = 0;
	SPI_connect();

	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ecp: could not read runnable parts");

	parts = MemoryContextAlloc(CurTransactionContext,
							   sizeof(RunnablePart) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		parts[i].run_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		parts[i].part_no = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));
		parts[i].owner = DatumGetObjectId(SPI_getbinval(tuple, desc, 3, &isnull));
		parts[i].recovering = DatumGetBool(SPI_getbinval(tuple, desc, 4, &isnull));
		parts[i].heartbeat = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 5, &isnull));
		parts[i].has_heartbeat = !isnull;
	}
	*count = (int) SPI_processed;
	SPI_finish();
	return parts;
}

void
ecp_schedule_runs(void)
{
	RunnablePart *parts;
	int			count;

	ensure_handles();
	reclaim_slots();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "scheduling ecp runs");

	refresh_rates();
	fail_dying_parts();
	parts = runnable_parts(&count);
	for (int i = 0; i < count; i++)
	{
		if (ecp_part_has_slot(parts[i].run_id, parts[i].part_no))
			continue;
		if (!start_worker(&parts[i]))
			break;
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}
