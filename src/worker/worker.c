/*
 * worker.c: one sync worker runs one part of a run.
 *
 * It connects to the database as the bootstrap superuser, to be able to act
 * for any owner, and runs the owner's query only inside the sandbox of
 * sandbox.c (as the owner, security-restricted); its own bookkeeping runs
 * with a pinned search_path.  The loop: read a page in a short transaction, send it, and
 * commit the checkpoint with the counters only after the sink acknowledged
 * it.  No transaction or snapshot is held across HTTP.  Transient errors
 * of the source and of the sink are retried with back-off (retry.c).
 */
#include "sync.h"

#include "access/xact.h"
#include "portability/instr_time.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"

#include "worker_args.h"

/*
 * Process-wide, not part state: the shared-memory slot this worker process
 * holds, released by the exit callback (which no handle reaches).
 */
static int	my_slot = -1;

/*
 * A worker goes on with its run's next pending part (take_next_part) at
 * most this many times, then exits and the launcher starts another: a
 * bound on whatever parts leave behind in a process (the owner's plans
 * and types in the caches, the FDW's connections).
 */
#define MAX_PARTS_PER_WORKER 1000

/* How many pending parts a worker reads to find one to go on with. */
#define NEXT_PARTS_READ 8

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
worker_detach(int code, Datum arg)
{
	/* a worker that dies in a rate-limit wait must not stay counted */
	ecp_limiter_forget_waits();
	if (my_slot >= 0)
		ecp_release_slot(my_slot);
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

/* Where a worker's time went, logged when its part ends. */
typedef struct PhaseTimes
{
	double		read_ms;
	double		send_ms;
	double		checkpoint_ms;
} PhaseTimes;

/*
 * Everything one part's loop holds, from the claim to the end of the
 * part: no file-scope variable holds any of it.
 */
typedef struct PartLoop
{
	EcpPartConfig *config;
	EcpSource  *source;			/* NULL until the source is ready */
	EcpSink    *sink;			/* NULL until the part is claimed */
	EcpSink    *kept_sink;		/* the worker's part before's, until then */
	EcpBatch	pages[2];		/* the page sent, and the one read ahead */
	int			current;		/* pages[current] is the page to send */
	bool		have_page;		/* pages[current] is read, not yet sent */
	RateWindow	rate;
	int64		done;			/* documents acknowledged, for the rate */
	bool		ended_run;		/* this part's end was its run's */
	PhaseTimes	times;
} PartLoop;

/* Whether the page after the one being sent was read, while it was sent. */
typedef enum NextPage
{
	NEXT_UNKNOWN,				/* not read (yet, or a transient error) */
	NEXT_READ,
	NEXT_NONE					/* read: the source is exhausted */
} NextPage;

/* One page on its way to the sink, and what was read ahead meanwhile. */
typedef struct PageSend
{
	EcpBatch   *page;
	EcpDocResult *results;		/* one per document of the page */
	NextPage	next_state;		/* the other page of the loop */
	bool		read_ahead;		/* the read ahead was tried (once per page) */
} PageSend;

static double
ms_since(instr_time start)
{
	instr_time	now;

	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, start);
	return INSTR_TIME_GET_MILLISEC(now);
}

/* Read the page after *after into page, in the page's own memory. */
static bool
read_page(PartLoop *loop, const EcpPosition *after, EcpBatch *page)
{
	instr_time	start;
	bool		found;

	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextReset(page->context);
	MemoryContextSwitchTo(page->context);
	page->docs = NULL;
	page->ndocs = 0;
	page->read_any = false;
	page->end = *after;
	page->missing = 0;
	page->bad_lines = NULL;
	page->nbad_lines = 0;
	page->ack = NULL;
	page->bytes_sent = 0;
	pgstat_report_activity(STATE_RUNNING, "reading a page");
	INSTR_TIME_SET_CURRENT(start);
	found = loop->source->ops->read(loop->source->state, loop->config, after, page);
	if (found)
		ecp_transform_page(loop->config, page);
	loop->times.read_ms += ms_since(start);
	return found;
}

/* What a page read needs, as one argument of a retried source step. */
typedef struct PageRead
{
	PartLoop   *loop;
	EcpPosition after;
	EcpBatch   *page;
} PageRead;

static bool
read_page_step(EcpPartConfig *config, void *arg)
{
	PageRead   *read = (PageRead *) arg;

	return read_page(read->loop, &read->after, read->page);
}

/* The checkpoint the part starts from. */
static EcpPosition
checkpoint_of(const EcpPartConfig *config)
{
	EcpPosition at = {config->progress.last_key, config->progress.position, config->progress.line_no};

	return at;
}

/*
 * While the last request of the page runs, read the next page into the
 * loop's other page (once per page: a retry does not read it again).  No
 * back-off while a request is in flight: a failed read is tried again
 * from the checkpoint after this page.
 */
static void
read_ahead(PartLoop *loop, PageSend *send)
{
	PageRead	read = {loop, send->page->end, &loop->pages[1 - loop->current]};
	bool		found;

	if (send->read_ahead)
		return;
	if (ecp_source_try(loop->config, read_page_step, &read, &found))
	{
		send->next_state = found ? NEXT_READ : NEXT_NONE;
		send->read_ahead = true;
	}
}

/*
 * Send the page (or the documents listed in subset): every request but
 * the last, then (while the last one runs) read the next page, then wait
 * for the last answer.  Reading thus overlaps with the sink's work.
 */
static EcpSendStatus
send_page(PartLoop *loop, PageSend *send, const int *subset, int nsubset, char **error)
{
	EcpBatch   *page = send->page;
	instr_time	start;
	EcpSendStatus status;

	pgstat_report_activity(STATE_RUNNING, "sending a batch");
	INSTR_TIME_SET_CURRENT(start);
	status = page->ndocs > 0
		? ecp_sink_begin(loop->sink, loop->config, page, subset, nsubset, send->results, error)
		: ECP_SEND_DONE;
	loop->times.send_ms += ms_since(start);
	if (status != ECP_SEND_DONE)
		return status;

	read_ahead(loop, send);

	MemoryContextSwitchTo(page->context);
	if (page->ndocs == 0)
		return ECP_SEND_DONE;	/* every id missing, every line bad */
	pgstat_report_activity(STATE_RUNNING, "waiting for the sink");
	INSTR_TIME_SET_CURRENT(start);
	status = ecp_sink_finish(loop->sink, loop->config, error);
	loop->times.send_ms += ms_since(start);
	return status;
}

/* The documents to send again: those the sink answered 429/5xx for. */
static int
collect_retries(const EcpDocResult *results, int ndocs, int *subset, char **why)
{
	int			n = 0;

	for (int i = 0; i < ndocs; i++)
		if (results[i].outcome == ECP_DOC_RETRY)
			subset[n++] = i;
	if (n > 0)
	{
		const EcpDocResult *first = &results[subset[0]];
		const char *reason = first->reason ? first->reason : "";
		int			cut = pg_mbcliplen(reason, strlen(reason), 200);

		*why = psprintf("%d of %d documents rejected with HTTP %d %s%s%.*s", n, ndocs, first->status,
						first->error_type ? first->error_type : "", cut > 0 ? ": " : "", cut, reason);
	}
	return n;
}

/*
 * Send a page until every document has a final answer: transient failures
 * (the whole request, or single documents answered 429/5xx) are sent again,
 * only the failed part, after a Fibonacci back-off, at most max_retries
 * times.  The first attempt reads the next page while the sink works.
 */
static EcpSendStatus
send_page_with_retries(PartLoop *loop, PageSend *send, char **error)
{
	EcpBatch   *page = send->page;
	int		   *subset = palloc(sizeof(int) * Max(page->ndocs, 1));
	int			nsubset = 0;
	bool		all = true;

	for (int attempt = 1;; attempt++)
	{
		EcpSendStatus status;
		char	   *why = NULL;

		status = send_page(loop, send, all ? NULL : subset, nsubset, &why);
		if (status == ECP_SEND_STOPPED || status == ECP_SEND_FAILED)
		{
			*error = why;
			return status;
		}
		/*
		 * ECP_SEND_FAILED above also covers documents refused for the
		 * cluster's setup (a missing index, privileges, a write block, an
		 * alias without a write index): the sink decides that from the
		 * items of the first request that shows it and says what to
		 * change, so nothing of this page reaches failed_docs.
		 */
		if (status == ECP_SEND_DONE)
		{
			int			n = collect_retries(send->results, page->ndocs, subset, &why);

			if (n == 0)
				break;
			nsubset = n;
			all = false;
		}
		switch (ecp_retry_after(loop->config, attempt, why, all ? page->ndocs : nsubset, error))
		{
			case ECP_RETRY_AGAIN:
				break;
			case ECP_RETRY_STOPPED:
				return ECP_SEND_STOPPED;
			case ECP_RETRY_EXHAUSTED:
				return ECP_SEND_FAILED;
		}
	}
	MemoryContextSwitchTo(page->context);
	return ECP_SEND_DONE;
}

/* Ready the part's source (source.c), as a retried source step. */
static bool
prepare_step(EcpPartConfig *config, void *arg)
{
	PartLoop   *loop = (PartLoop *) arg;

	loop->source = ecp_source_open(config);
	return true;
}

/* The source is exhausted: count the rows it could not page, and finish. */
static bool
finish_step(EcpPartConfig *config, void *arg)
{
	PartLoop   *loop = (PartLoop *) arg;
	EcpSource  *source = loop->source;

	loop->ended_run = ecp_store_finish(config, source->ops->unreadable(source->state, config));
	return true;
}

static EcpSendStatus
end_part_step(EcpPartConfig *config, void *arg, char **error)
{
	return ecp_sink_end_part((EcpSink *) arg, config, error);
}

/*
 * The source is exhausted: the consumer's last step (a refresh, retried
 * like a batch), the nodes it used into the flow, then the part is done.
 * True when a stop request came first (the loop goes on, and sees it);
 * false when the part ended, done or failed (recorded).
 */
static bool
stopped_before_end(PartLoop *loop)
{
	EcpSendStatus ended = ecp_send_with_retries(loop->config, end_part_step, loop->sink);

	if (ended == ECP_SEND_STOPPED)
		return true;
	if (ended != ECP_SEND_DONE)
		return false;
	ecp_sink_report_nodes(loop->sink, loop->config);
	if (ecp_source_with_retries(loop->config, finish_step, loop) == ECP_SOURCE_STOPPED)
		return true;
	if (loop->ended_run)
		ecp_count_check(loop->config, loop->sink);
	return false;
}

/* The checkpoint after an acknowledged page; false when the run is no longer running. */
static bool
checkpoint(PartLoop *loop, PageSend *send)
{
	EcpPartConfig *config = loop->config;
	instr_time	start;
	EcpRunState state;

	loop->done += send->page->ndocs;
	send->page->bytes_sent = ecp_sink_take_bytes_sent(loop->sink);
	INSTR_TIME_SET_CURRENT(start);
	state = ecp_store_save(config, send->page, send->results, rate_add(&loop->rate, loop->done),
						   loop->source);
	loop->times.checkpoint_ms += ms_since(start);
	if (state == ECP_RUN_RUNNING)
		return true;
	ecp_part_release_for(config, state);
	return false;
}

/* What one step of the loop came to. */
typedef enum LoopStep
{
	LOOP_AGAIN,					/* go on (a stop request is seen at the top) */
	LOOP_END					/* the part ended: done, failed or stopped */
} LoopStep;

/* The page to send: read from the checkpoint unless read ahead. */
static LoopStep
have_a_page(PartLoop *loop, bool *got_one)
{
	PageRead	read = {loop, checkpoint_of(loop->config), &loop->pages[loop->current]};
	EcpSourceOutcome outcome;

	*got_one = false;
	if (loop->have_page)
	{
		*got_one = true;
		return LOOP_AGAIN;
	}
	outcome = ecp_source_with_retries(loop->config, read_page_step, &read);
	if (outcome == ECP_SOURCE_STOPPED)
		return LOOP_AGAIN;
	if (outcome == ECP_SOURCE_FALSE)
		return stopped_before_end(loop) ? LOOP_AGAIN : LOOP_END;
	loop->have_page = *got_one = true;
	return LOOP_AGAIN;
}

/* Send the page in hand, checkpoint it, and move on to the next one. */
static LoopStep
send_and_checkpoint(PartLoop *loop)
{
	PageSend	send = {&loop->pages[loop->current], NULL, NEXT_UNKNOWN, false};
	EcpSendStatus status;
	char	   *error = NULL;

	MemoryContextSwitchTo(send.page->context);
	send.results = palloc0(sizeof(EcpDocResult) * Max(send.page->ndocs, 1));
	status = send_page_with_retries(loop, &send, &error);
	if (status == ECP_SEND_STOPPED)
	{
		loop->have_page = false;	/* re-read from the checkpoint if we go on */
		return LOOP_AGAIN;
	}
	if (status != ECP_SEND_DONE)
	{
		ecp_store_fail(loop->config, error);
		return LOOP_END;
	}
	if (!checkpoint(loop, &send))
		return LOOP_END;
	if (send.next_state == NEXT_READ)
	{
		loop->current = 1 - loop->current;	/* the page read ahead is next */
		return LOOP_AGAIN;
	}
	/* the source ended, or its read-ahead failed: read from the checkpoint */
	loop->have_page = false;
	if (send.next_state == NEXT_NONE)
		return stopped_before_end(loop) ? LOOP_AGAIN : LOOP_END;
	return LOOP_AGAIN;
}

/* Read, send and checkpoint pages until the part ends. */
static void
page_loop(PartLoop *loop)
{
	EcpPartConfig *config = loop->config;

	(void) rate_add(&loop->rate, loop->done);
	/* every stop (a wait ended by pause, cancel, shutdown) comes back here */
	for (;;)
	{
		bool		got_page;

		CHECK_FOR_INTERRUPTS();
		ecp_reload_settings_if_asked();
		if (ecp_worker_should_stop(config) && !ecp_part_still_running(config))
			break;
		if (loop->source == NULL &&
			ecp_source_with_retries(config, prepare_step, loop) == ECP_SOURCE_STOPPED)
			continue;
		if (have_a_page(loop, &got_page) == LOOP_END)
			break;
		if (!got_page)
			continue;
		if (send_and_checkpoint(loop) == LOOP_END)
			break;
	}
}

/*
 * A loop for the loaded part, its pages in memory of their own; kept_sink:
 * the sink of the worker's part before (or NULL), which the part reuses
 * if it can (ecp_sink_reopen).
 */
static PartLoop *
part_loop_create(EcpPartConfig *config, EcpSink *kept_sink)
{
	PartLoop   *loop = MemoryContextAllocZero(TopMemoryContext, sizeof(PartLoop));

	loop->config = config;
	loop->kept_sink = kept_sink;
	loop->done = config->progress.processed + config->progress.failed;
	for (int i = 0; i < 2; i++)
		loop->pages[i].context = AllocSetContextCreate(TopMemoryContext, "ecp page",
													   ALLOCSET_DEFAULT_SIZES);
	return loop;
}

/*
 * Close the loop's source and free its pages; its sink is returned for
 * the worker's next part, or closed (NULL returned) after an error, when
 * a request may still be in flight.
 */
static EcpSink *
part_loop_close(PartLoop *loop, bool keep_sink)
{
	EcpSink    *sink = loop->sink ? loop->sink : loop->kept_sink;

	MemoryContextSwitchTo(TopMemoryContext);
	if (!keep_sink)
	{
		ecp_sink_close(sink);
		sink = NULL;
	}
	loop->sink = NULL;
	ecp_source_close(loop->source);
	loop->source = NULL;
	for (int i = 0; i < 2; i++)
		if (loop->pages[i].context)
			MemoryContextDelete(loop->pages[i].context);
	pfree(loop);
	return sink;
}

static void
sync_part(PartLoop *loop)
{
	EcpPartConfig *config = loop->config;

	if (!ecp_store_claim(config))
		return;
	if (config->kind == ECP_PART_FOLLOW && strcmp(config->follow_step, "capture") == 0)
	{
		ecp_follow_capture_part(config);	/* sends nothing */
		return;
	}
	loop->sink = ecp_sink_reopen(loop->kept_sink, config);
	loop->kept_sink = NULL;
	if (config->kind == ECP_PART_MIGRATE)
	{
		ecp_migrate_part(config, loop->sink);
		return;
	}
	if (config->kind == ECP_PART_INDEX_IDS)
	{
		ecp_verify_extra_part(config, loop->sink);
		return;
	}
	page_loop(loop);
	pgstat_report_activity(STATE_IDLE, NULL);
	ereport(LOG,
			(errmsg("ecp worker for run " INT64_FORMAT " part %d spent %.0f ms reading, %.0f ms sending, %.0f ms checkpointing",
					config->run_id, config->part_no, loop->times.read_ms, loop->times.send_ms,
					loop->times.checkpoint_ms)));
}

/*
 * An error as the run records it (last_error, the flow, the alert): its
 * message, detail and hint, and its SQLSTATE unless the message names one
 * already, so what to change reaches the owner, not only the server log.
 */
static char *
error_as_recorded(const ErrorData *edata)
{
	StringInfoData text;

	initStringInfo(&text);
	appendStringInfoString(&text, edata->message ? edata->message : "unknown error");
	if (edata->detail)
		appendStringInfo(&text, "; detail: %s", edata->detail);
	if (edata->hint)
		appendStringInfo(&text, "; hint: %s", edata->hint);
	if (edata->message == NULL || strstr(edata->message, "SQLSTATE") == NULL)
		appendStringInfo(&text, " (SQLSTATE %s)", unpack_sql_state(edata->sqlerrcode));
	return text.data;
}

/*
 * Load, check, claim and sync the part.  Any error (a bad field of a row,
 * the source query failed, a type cannot be cast, ...) fails the run with
 * its message instead of killing the worker: a worker that died would be
 * started again and die again.
 */
static EcpSink *
run_part_or_fail(EcpPartConfig *config, EcpSink *kept_sink)
{
	MemoryContext context = CurrentMemoryContext;
	PartLoop   *volatile loop = NULL;
	EcpSink    *volatile sink = kept_sink;

	PG_TRY();
	{
		ecp_store_load(config);
		if (config->progress.run_state == ECP_RUN_PENDING || config->progress.run_state == ECP_RUN_RUNNING)
		{
			ecp_sandbox_act_for(config->owner_name);
			loop = part_loop_create(config, sink);
			sink = NULL;		/* the loop's now */
			sync_part(loop);
			sink = part_loop_close(loop, true);
			loop = NULL;
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(context);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		if (loop)
			(void) part_loop_close(loop, false);
		else
			ecp_sink_close(sink);
		sink = NULL;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED && ecp_worker_should_stop(config))
		{
			ereport(LOG,
					(errmsg("ecp worker for run " INT64_FORMAT " part %d stops: its query was interrupted by a stop request",
							config->run_id, config->part_no)));
			ecp_store_release(config);
		}
		else
		{
			char	   *error = error_as_recorded(edata);

			ereport(LOG,
					(errmsg("ecp run " INT64_FORMAT " failed: %s", config->run_id, error)));
			ecp_store_fail(config, error);
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return sink;
}

/*
 * Go on with the next pending part of the run, in this process: its
 * connections (Elasticsearch's, the FDW's), its caches and its slot stay,
 * and a part costs a claim instead of a worker start.  Not when a stop
 * was asked for, when another run waits for a slot (slots go round as
 * they did with a worker per part), nor past MAX_PARTS_PER_WORKER.  The
 * slot moves to the part first, so the launcher starts no worker for it;
 * the claim (a compare-and-set on the heartbeat read here) settles a race
 * with a worker started before the move all the same.
 */
static bool
take_next_part(EcpPartConfig *config, int parts_taken)
{
	EcpNextPart next[NEXT_PARTS_READ];
	int			n;

	if (parts_taken >= MAX_PARTS_PER_WORKER || ecp_worker_should_stop(config) ||
		ecp_other_run_waits(config->run_id))
		return false;
	n = ecp_store_next_parts(config, next, NEXT_PARTS_READ);
	for (int i = 0; i < n; i++)
	{
		if (!ecp_move_slot(config->slot, config->run_id, next[i].part_no))
			continue;
		config->part_no = next[i].part_no;
		config->recovering = false;
		config->has_heartbeat = next[i].has_heartbeat;
		config->heartbeat_seen = next[i].heartbeat;
		return true;
	}
	return false;
}

/* A config for a part of the run: its identity, nothing of a part before. */
static void
config_for_part(EcpPartConfig *config, const EcpPartConfig *identity)
{
	EcpPartConfig fresh;

	memset(&fresh, 0, sizeof(fresh));
	fresh.run_id = identity->run_id;
	fresh.part_no = identity->part_no;
	fresh.owner = identity->owner;
	fresh.slot = identity->slot;
	fresh.recovering = identity->recovering;
	fresh.has_heartbeat = identity->has_heartbeat;
	fresh.heartbeat_seen = identity->heartbeat_seen;
	fresh.memory = AllocSetContextCreate(TopMemoryContext, "ecp part", ALLOCSET_DEFAULT_SIZES);
	*config = fresh;
}

void
ecp_worker_main(Datum main_arg)
{
	EcpWorkerArgs args;
	EcpPartConfig config;
	EcpPartConfig next;			/* the identity of the part to take next */
	EcpSink    *sink = NULL;	/* kept from part to part */

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	my_slot = DatumGetInt32(main_arg);

	pqsignal(SIGTERM, ecp_worker_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	ecp_attach_slot(my_slot);
	before_shmem_exit(worker_detach, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(args.database, InvalidOid, 0);
	pgstat_report_appname("ecp worker");
	ecp_sandbox_init(my_slot);

	memset(&next, 0, sizeof(next));
	next.run_id = args.run_id;
	next.part_no = args.part_no;
	next.owner = args.owner;
	next.slot = my_slot;
	next.recovering = args.recovering;
	next.has_heartbeat = args.has_heartbeat;
	next.heartbeat_seen = args.heartbeat_seen;

	/*
	 * One config object for every part: the sink kept from part to part
	 * points at it (its transfers ask it whether to stop).
	 */
	for (int parts_taken = 1;; parts_taken++)
	{
		config_for_part(&config, &next);
		sink = run_part_or_fail(&config, sink);
		next = config;
		MemoryContextDelete(config.memory);
		config.memory = NULL;
		if (!take_next_part(&next, parts_taken))
			break;
	}
	ecp_sink_close(sink);
	proc_exit(0);
}
