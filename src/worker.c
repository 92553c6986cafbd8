/*
 * worker.c: one sync worker runs one part of a run.
 *
 * It connects to the database as the bootstrap superuser only to be able
 * to act for owners that cannot log in, and does every transaction as the
 * run's owner (SECURITY_LOCAL_USERID_CHANGE: the source query cannot SET
 * ROLE back).  The loop: read a keyset page in a short transaction, send
 * it, and commit the checkpoint with the counters only after the sink
 * acknowledged it.  No transaction or snapshot is held across HTTP.
 */
#include "sync.h"

#include "access/xact.h"
#include "portability/instr_time.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker_args.h"

static volatile sig_atomic_t got_sigterm = false;
static int	my_slot = -1;

/* The user context to return to after a transaction as the owner. */
static Oid	saved_user;
static int	saved_sec_context;

/*
 * The memory context the loop works in (the batch's): commit switches to
 * TopMemoryContext, and whatever the loop allocates after it must still be
 * freed with the batch, or every page would leak its NDJSON body.
 */
static MemoryContext loop_context;

#define RATE_SAMPLES 16
#define RATE_WINDOW_MS 10000

/* Documents acknowledged over time, for docs_per_second. */
typedef struct RateWindow
{
	TimestampTz at[RATE_SAMPLES];
	int64		done[RATE_SAMPLES];
	int			next;
	int			count;
} RateWindow;

static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

static void
worker_detach(int code, Datum arg)
{
	if (my_slot >= 0)
		ecp_release_slot(my_slot);
}

void
ecp_begin_as_owner(const EcpPartConfig *config)
{
	loop_context = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	GetUserIdAndSecContext(&saved_user, &saved_sec_context);
	SetUserIdAndSecContext(config->owner, saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	PushActiveSnapshot(GetTransactionSnapshot());
}

void
ecp_commit_as_owner(void)
{
	PopActiveSnapshot();
	SetUserIdAndSecContext(saved_user, saved_sec_context);
	CommitTransactionCommand();
	MemoryContextSwitchTo(loop_context);
	pgstat_report_stat(false);
}

/* Pause, cancel and shutdown all end in "stop and look at the run". */
bool
ecp_worker_should_stop(const EcpPartConfig *config)
{
	return got_sigterm || ecp_stop_requested(config->slot);
}

static double
rate_add(RateWindow *window, int64 done)
{
	TimestampTz now = GetCurrentTimestamp();
	int			oldest;
	long		secs;
	int			usecs;
	double		elapsed;

	window->at[window->next] = now;
	window->done[window->next] = done;
	window->next = (window->next + 1) % RATE_SAMPLES;
	if (window->count < RATE_SAMPLES)
		window->count++;

	/* the oldest sample still inside the window */
	oldest = (window->next - window->count + RATE_SAMPLES) % RATE_SAMPLES;
	while (window->count > 2 &&
		   TimestampDifferenceExceeds(window->at[oldest], now, RATE_WINDOW_MS))
	{
		oldest = (oldest + 1) % RATE_SAMPLES;
		window->count--;
	}
	TimestampDifference(window->at[oldest], now, &secs, &usecs);
	elapsed = secs + usecs / 1e6;
	if (window->count < 2 || elapsed <= 0)
		return 0;
	return (done - window->done[oldest]) / elapsed;
}

static int
count_outcome(const EcpDocResult *results, int n, EcpDocOutcome outcome)
{
	int			count = 0;

	for (int i = 0; i < n; i++)
		count += results[i].outcome == outcome;
	return count;
}

static const EcpDocResult *
first_retry(const EcpDocResult *results, int n)
{
	for (int i = 0; i < n; i++)
		if (results[i].outcome == ECP_DOC_RETRY)
			return &results[i];
	return &results[0];
}

/* After a stop request: go on only if the run is still running. */
static bool
run_still_running(EcpPartConfig *config)
{
	char	   *state;

	if (got_sigterm)
		return false;
	state = ecp_checkpoint_run_state(config);
	if (strcmp(state, "running") == 0)
	{
		ecp_shared()->slots[config->slot].stop_requested = false;
		return true;
	}
	ereport(LOG,
			(errmsg("ecp worker for run " INT64_FORMAT " part %d stops: the run is %s",
					config->run_id, config->part_no, state)));
	return false;
}

/* Where a worker's time went, logged when its part ends. */
typedef struct PhaseTimes
{
	double		read_ms;
	double		send_ms;
	double		checkpoint_ms;
} PhaseTimes;

static double
ms_since(instr_time start)
{
	instr_time	now;

	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, start);
	return INSTR_TIME_GET_MILLISEC(now);
}

/* Read the page after after_key into page, in the page's own memory. */
static bool
read_page(EcpPartConfig *config, const char *after_key, EcpBatch *page, PhaseTimes *times)
{
	instr_time	start;
	bool		found;

	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextReset(page->context);
	MemoryContextSwitchTo(page->context);
	pgstat_report_activity(STATE_RUNNING, "reading a page");
	INSTR_TIME_SET_CURRENT(start);
	found = ecp_source_read_page(config, after_key, page);
	times->read_ms += ms_since(start);
	return found;
}

/*
 * Send page: every request but the last, then (while the last one runs)
 * read the next page into next, then wait for the last answer.  Reading
 * thus overlaps with the sink's work.  *next_found says whether a next
 * page was read.
 */
static EcpSendStatus
send_page(EcpPartConfig *config, EcpBatch *page, EcpDocResult *results, EcpBatch *next,
		  bool *next_found, char **error, PhaseTimes *times)
{
	instr_time	start;
	EcpSendStatus status;

	pgstat_report_activity(STATE_RUNNING, "sending a batch");
	INSTR_TIME_SET_CURRENT(start);
	status = ecp_sink_begin(config, page, results, error);
	times->send_ms += ms_since(start);
	if (status != ECP_SEND_DONE)
		return status;

	*next_found = read_page(config, page->docs[page->ndocs - 1].key, next, times);

	MemoryContextSwitchTo(page->context);
	pgstat_report_activity(STATE_RUNNING, "waiting for the sink");
	INSTR_TIME_SET_CURRENT(start);
	status = ecp_sink_finish(config, error);
	times->send_ms += ms_since(start);
	return status;
}

static void
fail_on_transient(EcpPartConfig *config, EcpDocResult *results, int ndocs)
{
	const EcpDocResult *first = first_retry(results, ndocs);

	/* The checkpoint stays before this page: nothing is skipped. */
	ecp_checkpoint_fail(config,
						psprintf("%d of %d documents were rejected as transient (first: HTTP %d %s); the run stops with its checkpoint before them",
								 count_outcome(results, ndocs, ECP_DOC_RETRY), ndocs,
								 first->status, first->error_type ? first->error_type : ""));
}

static void
sync_part(EcpPartConfig *config)
{
	EcpBatch	pages[2];
	int			current = 0;
	bool		have_page = false;	/* pages[current] is read, not yet sent */
	RateWindow	rate;
	int64		done = config->processed + config->failed;
	PhaseTimes	times = {0, 0, 0};
	instr_time	start;

	memset(&rate, 0, sizeof(rate));
	for (int i = 0; i < 2; i++)
		pages[i].context = AllocSetContextCreate(TopMemoryContext, "ecp page",
												 ALLOCSET_DEFAULT_SIZES);

	if (!ecp_checkpoint_claim(config))
		return;
	ecp_source_prepare(config);
	if (!config->has_total)
	{
		bool		is_estimate;
		int64		total = ecp_source_total(config, &is_estimate);

		ecp_checkpoint_set_total(config, total, is_estimate);
	}
	ecp_sink_open(config);
	(void) rate_add(&rate, done);

	for (;;)
	{
		EcpBatch   *page = &pages[current];
		EcpDocResult *results;
		EcpSendStatus status;
		bool		next_found = false;
		char	   *error = NULL;
		char	   *state;

		CHECK_FOR_INTERRUPTS();
		if (ecp_worker_should_stop(config) && !run_still_running(config))
			break;
		if (!have_page && !read_page(config, config->last_key, page, &times))
		{
			ecp_checkpoint_finish(config, ecp_source_count_null_keys(config));
			break;
		}
		have_page = true;

		MemoryContextSwitchTo(page->context);
		results = palloc0(sizeof(EcpDocResult) * page->ndocs);
		status = send_page(config, page, results, &pages[1 - current], &next_found,
						   &error, &times);
		if (status == ECP_SEND_STOPPED)
		{
			have_page = false;	/* re-read from the checkpoint if we go on */
			continue;
		}
		if (status == ECP_SEND_FAILED)
		{
			ecp_checkpoint_fail(config, error);
			break;
		}
		if (count_outcome(results, page->ndocs, ECP_DOC_RETRY) > 0)
		{
			fail_on_transient(config, results, page->ndocs);
			break;
		}

		done += page->ndocs;
		INSTR_TIME_SET_CURRENT(start);
		state = ecp_checkpoint_save(config, page, results, rate_add(&rate, done));
		times.checkpoint_ms += ms_since(start);
		if (strcmp(state, "running") != 0)
		{
			ereport(LOG,
					(errmsg("ecp worker for run " INT64_FORMAT " part %d stops: the run is %s",
							config->run_id, config->part_no, state)));
			break;
		}
		if (!next_found)
		{
			ecp_checkpoint_finish(config, ecp_source_count_null_keys(config));
			break;
		}
		current = 1 - current;	/* the page read ahead is next */
	}
	MemoryContextSwitchTo(TopMemoryContext);
	ecp_sink_close();
	pgstat_report_activity(STATE_IDLE, NULL);
	ereport(LOG,
			(errmsg("ecp worker for run " INT64_FORMAT " part %d spent %.0f ms reading, %.0f ms sending, %.0f ms checkpointing",
					config->run_id, config->part_no, times.read_ms, times.send_ms, times.checkpoint_ms)));
}

/*
 * An error in the loop (the source query failed, a type cannot be cast,
 * ...) fails the run with the message instead of killing the worker.
 */
static void
sync_part_or_fail(EcpPartConfig *config)
{
	MemoryContext context = CurrentMemoryContext;

	PG_TRY();
	{
		sync_part(config);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(context);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ecp_sink_close();
		ereport(LOG,
				(errmsg("ecp run " INT64_FORMAT " failed: %s", config->run_id, edata->message)));
		ecp_checkpoint_fail(config, edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

void
ecp_worker_main(Datum main_arg)
{
	EcpWorkerArgs args;
	EcpPartConfig config;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	my_slot = DatumGetInt32(main_arg);

	pqsignal(SIGTERM, worker_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	ecp_attach_slot(my_slot);
	before_shmem_exit(worker_detach, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(args.database, InvalidOid, 0);
	pgstat_report_appname("ecp worker");

	memset(&config, 0, sizeof(config));
	config.run_id = args.run_id;
	config.part_no = args.part_no;
	config.owner = args.owner;
	config.slot = my_slot;

	ecp_checkpoint_load(&config);
	if (strcmp(config.run_state, "pending") == 0 || strcmp(config.run_state, "running") == 0)
		sync_part_or_fail(&config);

	proc_exit(0);
}
