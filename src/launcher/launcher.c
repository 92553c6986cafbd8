/*
 * launcher.c: the ecp launcher, one static background worker per cluster.
 *
 * It connects to ecp.database_name, wakes on its latch or once a second,
 * and starts the workers of due runs.  Until CREATE EXTENSION ecp has run
 * in its database, and while the installed schema is of another version
 * than the library, it waits quietly, checking again on every wake-up,
 * instead of failing and being restarted in a loop.
 *
 * Signals only set flags and the latch: the default SIGTERM handler would
 * raise FATAL wherever the process happens to be (in a transaction, in an
 * HTTP call), so the loop checks the flags between steps instead.
 */
#include "ecp.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

static volatile sig_atomic_t got_sigterm = false;

static void
launcher_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * True once the launcher was asked to stop: long steps of a pass (the
 * webhook's POSTs) poll it and give up.
 */
bool
ecp_launcher_stopping(void)
{
	return got_sigterm;
}

void
ecp_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* Never BGW_NEVER_RESTART: the launcher must come back after a crash. */
	worker.bgw_restart_time = ECP_LAUNCHER_RESTART_SECONDS;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ecp");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ecp_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, ECP_LAUNCHER_TYPE);
	snprintf(worker.bgw_type, BGW_MAXLEN, ECP_LAUNCHER_TYPE);
	RegisterBackgroundWorker(&worker);
}

/* before_shmem_exit callback: leave no stale pid or latch behind. */
static void
launcher_detach(int code, Datum arg)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (state->launcher_pid == MyProcPid)
	{
		state->launcher_pid = 0;
		state->launcher_latch = NULL;
		state->launcher_connected = false;
	}
	LWLockRelease(state->lock);
}

static void
launcher_attach(void)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->launcher_pid = MyProcPid;
	state->launcher_latch = MyLatch;
	state->launcher_connected = false;
	LWLockRelease(state->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);
}

/*
 * Wait on the latch for up to one nap; true when the launcher should go on.
 * WL_EXIT_ON_PM_DEATH ends the process if the postmaster dies.
 */
static bool
launcher_nap(void)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ECP_LAUNCHER_NAPTIME_MS, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	return !got_sigterm;
}

/*
 * While our database is being dropped (or was dropped), stay unconnected:
 * connecting to it would block DROP DATABASE, or fail with FATAL and make
 * the postmaster restart us in a loop.  CREATE DATABASE of the same name
 * clears the hold (utility_hook.c) and sets our latch.
 */
static void
wait_while_database_held(void)
{
	bool		logged = false;

	while (ecp_database_is_held())
	{
		if (ecp_drop_stale_database_hold())
		{
			ereport(LOG,
					(errmsg("ecp launcher goes back to database \"%s\": the DROP DATABASE that held it out ended without dropping it",
							ecp_database_name)));
			break;
		}
		if (!logged)
		{
			ereport(LOG,
					(errmsg("ecp launcher is waiting for database \"%s\" to be created",
							ecp_database_name)));
			logged = true;
		}
		if (!launcher_nap())
			proc_exit(1);
	}
}

/*
 * The version of the extension created in our database (in
 * TopMemoryContext), or NULL when there is none.  One short transaction.
 */
static char *
installed_version(void)
{
	char	   *version = NULL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "checking for extension ecp");
	SPI_connect();
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'ecp'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		char	   *text = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (text)
			version = MemoryContextStrdup(TopMemoryContext, text);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return version;
}

/*
 * What the launcher does with what it found, said once per change: wait
 * for CREATE EXTENSION, wait for ALTER EXTENSION ... UPDATE (a library of
 * another version would run SQL the schema does not have, every second,
 * and start workers that fail), or work.
 */
static bool
schema_is_usable(const char *version, char **reported)
{
	const char *now = version ? version : "";

	if (*reported == NULL || strcmp(*reported, now) != 0)
	{
		if (version == NULL)
			ereport(LOG,
					(errmsg("ecp launcher is waiting for CREATE EXTENSION ecp in database \"%s\"",
							ecp_database_name)));
		else if (strcmp(version, ECP_VERSION) != 0)
			ereport(LOG,
					(errmsg("ecp launcher is waiting: extension ecp in database \"%s\" is version %s, the library is version %s",
							ecp_database_name, version, ECP_VERSION),
					 errhint("Run ALTER EXTENSION ecp UPDATE in database \"%s\"; no run starts until then.",
							 ecp_database_name)));
		else
			ereport(LOG,
					(errmsg("ecp launcher is active in database \"%s\" (version %s)", ecp_database_name, version)));
		if (*reported)
			pfree(*reported);
		*reported = MemoryContextStrdup(TopMemoryContext, now);
	}
	return version != NULL && strcmp(version, ECP_VERSION) == 0;
}

/*
 * One step of a pass.  An error (say, the extension dropped between the
 * check and the pass) is logged and the step retried on the next wake-up,
 * instead of restarting the launcher; the other steps go on, so alerts are
 * still delivered when scheduling fails, and the other way round.
 */
static void
run_step_safely(void (*step) (void))
{
	MemoryContext pass_context = CurrentMemoryContext;

	PG_TRY();
	{
		step();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(pass_context);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_END_TRY();
}

static void
schedule_runs_safely(void)
{
	run_step_safely(ecp_schedule_runs);
	run_step_safely(ecp_post_alerts);
	run_step_safely(ecp_purge_history);
}

/*
 * The launcher runs as the bootstrap superuser in a database that another
 * role may own.  That owner may create functions and operators in schemas
 * on the default search_path (public), where an exact match of argument
 * types beats pg_catalog's (CVE-2018-1058), or ALTER DATABASE SET a
 * search_path or timeouts for every session.  Pin what the launcher's SQL
 * depends on; PGC_S_OVERRIDE wins over any per-database or per-role
 * setting.  Every object the launcher uses is in pg_catalog or named
 * with its schema (ecp.).
 *
 * lock_timeout = 0 is only the session's: each step of a pass (reading
 * the runs, applying windows, failing a run) sets its own bound
 * (scheduler.c, run_isolated), since roles may lock the rows of their own
 * runs and tasks for as long as they like and the launcher serves every
 * role.
 */
static void
pin_launcher_settings(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
}

static void
connect_to_database(void)
{
	EcpSharedState *state = ecp_shared();

	BackgroundWorkerInitializeConnection(ecp_database_name, NULL, 0);
	pin_launcher_settings();
	pgstat_report_appname(ECP_LAUNCHER_TYPE);

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->launcher_connected = true;
	LWLockRelease(state->lock);

	ereport(LOG,
			(errmsg("ecp launcher started (version %s), connected to database \"%s\"",
					ECP_VERSION, ecp_database_name)));
}

void
ecp_launcher_main(Datum main_arg)
{
	char	   *reported = NULL;	/* the version last said, "" for none */

	pqsignal(SIGTERM, launcher_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	launcher_attach();
	wait_while_database_held();
	connect_to_database();

	while (!got_sigterm)
	{
		char	   *version;

		/*
		 * Our database is about to be dropped: get out of its way (unless
		 * the backend that asked is gone already).
		 */
		if (ecp_database_is_held() && !ecp_drop_stale_database_hold())
		{
			ereport(LOG,
					(errmsg("ecp launcher is leaving database \"%s\" so that it can be dropped",
							ecp_database_name)));
			break;
		}

		version = installed_version();
		if (schema_is_usable(version, &reported))
			schedule_runs_safely();
		if (version)
			pfree(version);

		if (!launcher_nap())
			break;
	}

	/*
	 * Exit code 1 makes the postmaster start us again after
	 * ECP_LAUNCHER_RESTART_SECONDS (exit 0 would unregister the launcher for
	 * good).  During a shutdown the postmaster does not restart anything.
	 */
	proc_exit(1);
}
