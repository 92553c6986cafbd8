/*
 * scheduler.c: the launcher's pass over the runs.
 *
 * Every wake-up the launcher reconciles the tables with the live workers
 * instead of trusting events (a worker can fail to register, stop before
 * it starts or die without a word, and only comparing the tables with the
 * worker slots sees all of these): every part of a pending or
 * running run that has no worker slot gets a dynamic worker, up to
 * ecp.max_workers.  Paused, cancelled and finished runs are left alone.
 *
 * The pass must survive any row: options are read as raw JSON and checked
 * here (a bad one is a WARNING naming the row and its default is used),
 * the SQL casts nothing a user wrote, and each write runs in its own
 * subtransaction.  No step waits for a lock a role can hold: roles may
 * lock their own runs (FOR UPDATE) for as long as they like, so a step
 * gives up after a short lock wait and is retried at the next pass.  The
 * pass reads, per run, only the parts that may start, in time linear in
 * the run's parts.  Free slots go round-robin across the runs' owners, and
 * across the runs of an owner, so that no role can keep another's run
 * waiting while its own fill every slot; a cap per role keeps slots for
 * the roles that come later.  A part whose workers keep exiting before it
 * moves waits a back-off between starts.
 */
#include "ecp.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "backoff.h"
#include "launcher_pass.h"
#include "worker_args.h"

/* A reserved slot whose worker has not attached after this long is free. */
#define SLOT_ATTACH_TIMEOUT_MS 60000

/* At most one "rate buckets overflow" warning per this many milliseconds. */
#define OVERFLOW_WARNING_MS 60000

StaticAssertDecl(sizeof(EcpWorkerArgs) <= ECP_SLOT_GENERATION_OFFSET,
				 "worker args overlap the slot generation");
StaticAssertDecl(ECP_SLOT_GENERATION_OFFSET + sizeof(uint64) <= BGW_EXTRALEN,
				 "slot generation outside bgw_extra");

int			ecp_max_workers_per_role = -1;
bool		ecp_test_claim_race = false;

/* Handles of the workers this launcher started, by slot, with the slot's generation. */
static BackgroundWorkerHandle **worker_handles = NULL;
static uint64 *handle_generations = NULL;

/* Everything a pass reads lives here; reset at the start of each pass. */
static MemoryContext pass_context = NULL;
static uint64 pass_number = 0;

/* Starts of parts whose worker may exit before the part moves. */
static HTAB *start_records = NULL;


static TimestampTz overflow_warned_at = 0;

/*
 * ecp.max_workers_per_role, defined here so module.c needs only one call
 * (before MarkGUCPrefixReserved).
 */
void
ecp_scheduler_define_gucs(void)
{
	DefineCustomIntVariable("ecp.max_workers_per_role",
							"Most sync workers one role's runs may have at once; -1 (default): half of ecp.max_workers, at least 1; 0: no cap beyond ecp.max_workers.",
							"Free worker slots go round-robin across roles either way; this cap also keeps slots free for roles that start runs later, "
							"since a worker keeps its slot until its part ends.",
							&ecp_max_workers_per_role,
							-1, -1, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("ecp.test_claim_race",
							 "Developer option for tests: the launcher starts two workers at once for a part whose worker died.",
							 "Both claim the part with the heartbeat the launcher saw; the claim's compare-and-set lets one run it "
							 "and the other stand down (flow row \"claim lost\"). Never useful outside a test.",
							 &ecp_test_claim_race,
							 false,
							 PGC_SIGHUP,
							 GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);
}

/*
 * The cap on one role's workers in force.  A worker keeps its slot until
 * its part ends, so without a cap one role's long parts could hold every
 * slot for hours: the default (-1) is half of ecp.max_workers, at least 1;
 * 0 is no cap.
 */
static int
role_worker_cap(void)
{
	if (ecp_max_workers_per_role < 0)
		return Max(1, ecp_max_workers / 2);
	return ecp_max_workers_per_role;
}

/* A part of a pending or running run, with what the pass decides about it. */
typedef struct ActivePart
{
	int64		run_id;
	int32		part_no;
	Oid			owner;
	bool		run_running;
	bool		part_running;
	bool		has_heartbeat;
	TimestampTz heartbeat;
	int32		recoveries;
	int64		task_id;
	int64		consumer_id;
	TaskSettings settings;
	bool		has_slot;
	int			fruitless;		/* starts in a row after which it did not move */
	int			rank;			/* order among the starts of its owner */
} ActivePart;

typedef struct PartKey
{
	int64		run_id;
	int32		part_no;
	int32		pad;			/* zeroed: the key is hashed as bytes */
} PartKey;

/* What a part looked like when the launcher last started a worker for it. */
typedef struct StartRecord
{
	PartKey		key;
	TimestampTz started_at;
	bool		was_running;
	bool		had_heartbeat;
	TimestampTz heartbeat;
	int			fruitless;
	uint64		seen_pass;
} StartRecord;



static void
ensure_state(void)
{
	HASHCTL		ctl;

	if (worker_handles != NULL)
		return;
	worker_handles = MemoryContextAllocZero(TopMemoryContext,
											sizeof(BackgroundWorkerHandle *) * ecp_max_workers);
	handle_generations = MemoryContextAllocZero(TopMemoryContext,
												sizeof(uint64) * ecp_max_workers);
	pass_context = AllocSetContextCreate(TopMemoryContext, "ecp launcher pass",
										 ALLOCSET_DEFAULT_SIZES);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(PartKey);
	ctl.entrysize = sizeof(StartRecord);
	start_records = hash_create("ecp part starts", 64, &ctl, HASH_ELEM | HASH_BLOBS);
}

/*
 * Free slots whose worker stopped before attaching (fork failure, or a
 * worker that died before its first statement), so their part is retried.
 * Only the reservation seen is freed (generation): a slot given meanwhile
 * to another part, or whose worker attached, is left alone.
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

		if (worker_handles[i] != NULL && handle_generations[i] == slot.generation)
			stale = GetBackgroundWorkerPid(worker_handles[i], &pid) == BGWH_STOPPED;
		else
			stale = TimestampDifferenceExceeds(slot.reserved_at, now, SLOT_ATTACH_TIMEOUT_MS);
		if (stale && ecp_reclaim_slot(i, slot.generation))
		{
			ereport(LOG,
					(errmsg("ecp worker for run " INT64_FORMAT " part %d stopped before it started; it will be started again",
							slot.run_id, slot.part_no)));
			if (worker_handles[i])
				pfree(worker_handles[i]);
			worker_handles[i] = NULL;
		}
	}
}

/* Columns of ACTIVE_PARTS_SQL, from 1. */
enum
{
	COL_RUN = 1, COL_PART, COL_OWNER, COL_RUN_RUNNING, COL_PART_RUNNING,
	COL_HEARTBEAT, COL_RECOVERIES, COL_TASK, COL_CONSUMER, COL_TASK_NAME,
	COL_CONSUMER_NAME, COL_OPTIONS			/* then (type, text) per option */
};

/*
 * The parts of pending and running runs.  Options come as (jsonb_typeof,
 * text) pairs and are checked in C: the SQL casts nothing a user wrote.
 * The search_path is pinned to pg_catalog (launcher.c), and every other
 * object is named with its schema.
 */

static const char *const ACTIVE_PARTS_SQL =
"SELECT r.id, p.part_no, r.owner::pg_catalog.oid,"
"       r.state OPERATOR(pg_catalog.=) 'running'::pg_catalog.text,"
"       p.state OPERATOR(pg_catalog.=) 'running'::pg_catalog.text,"
"       p.heartbeat_at, p.recoveries, t.id, t.consumer_id, t.name, c.name, "
OPTION_COLUMNS("t", "max_retries") ", "
OPTION_COLUMNS("t", "retry_base_ms") ", "
OPTION_COLUMNS("t", "retry_max_ms") ", "
OPTION_COLUMNS("t", "rate_limit") ", "
OPTION_COLUMNS("c", "rate_limit") ", "
OPTION_COLUMNS("t", "parallelism")
"  FROM ecp.run r"
"  JOIN ecp.task t ON t.id OPERATOR(pg_catalog.=) r.task_id"
"  JOIN ecp.consumer c ON c.id OPERATOR(pg_catalog.=) t.consumer_id"
/*
 * A part waits for every part of a lower stage (a migration's steps):
 * only the run's lowest stage with a part not done is read, found once
 * per run (comparing each part with every other is quadratic in parts).
 */
"  CROSS JOIN LATERAL (SELECT pg_catalog.min(q.stage) AS stage FROM ecp.part q"
"                       WHERE q.run_id OPERATOR(pg_catalog.=) r.id"
"                         AND q.state OPERATOR(pg_catalog.<>) 'done'::pg_catalog.text) s"
/* $1, $2: per run, its slots plus its parts' start records (see run_reads) */
"  LEFT JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.int4[]))"
"         AS e(run_id, started) ON e.run_id OPERATOR(pg_catalog.=) r.id"
/*
 * Every running part (a part is running only once a worker claimed it, so
 * there are at most as many as the run's parallelism allowed), and the
 * first pending ones: MAX_PARALLELISM can start, plus as many as may be
 * kept from starting by a slot or a back-off.
 */
"  CROSS JOIN LATERAL ("
"        SELECT w.part_no, w.state, w.heartbeat_at, w.recoveries FROM ecp.part w"
"         WHERE w.run_id OPERATOR(pg_catalog.=) r.id AND w.stage OPERATOR(pg_catalog.=) s.stage"
"           AND w.state OPERATOR(pg_catalog.=) 'running'::pg_catalog.text"
"        UNION ALL"
"        (SELECT a.part_no, a.state, a.heartbeat_at, a.recoveries FROM ecp.part a"
"          WHERE a.run_id OPERATOR(pg_catalog.=) r.id AND a.stage OPERATOR(pg_catalog.=) s.stage"
"            AND a.state OPERATOR(pg_catalog.=) 'pending'::pg_catalog.text"
"          ORDER BY a.part_no"
"          LIMIT " CppAsString2(MAX_PARALLELISM) " OPERATOR(pg_catalog.+) COALESCE(e.started, 0))) p"
" WHERE r.state OPERATOR(pg_catalog.=) ANY ('{pending,running}'::pg_catalog.text[])"
/* ecp.start(task, at => ...): not before its time */
"   AND (r.not_before IS NULL OR r.not_before OPERATOR(pg_catalog.<=) pg_catalog.now())"
" ORDER BY r.id, p.part_no";



/* The slots in use, sorted by (run, part), and how many are free. */
typedef struct SlotView
{
	PartKey    *used;
	int			nused;
	int			nfree;
} SlotView;

typedef struct ActiveParts
{
	const SlotView *slots;		/* in: the slots in use */
	ActivePart *parts;			/* out */
	int			count;
} ActiveParts;

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * ACTIVE_PARTS_SQL's $1 and $2: the runs that have slots or start records
 * (int8[]), and how many of those each has (int4[]).  Each may keep one of
 * the run's first pending parts from starting (a worker still starting, a
 * back-off), so the pass reads that many more pending parts of the run.
 */
static void
started_per_run(const SlotView *slots, Datum *run_ids, Datum *counts)
{
	int			nkeys = slots->nused + (int) hash_get_num_entries(start_records);
	int64	   *keys = palloc(sizeof(int64) * Max(nkeys, 1));
	Datum	   *runs = palloc(sizeof(Datum) * Max(nkeys, 1));
	Datum	   *per_run = palloc(sizeof(Datum) * Max(nkeys, 1));
	int			n = 0;
	int			nruns = 0;
	HASH_SEQ_STATUS seq;
	StartRecord *r;

	for (int i = 0; i < slots->nused; i++)
		keys[n++] = slots->used[i].run_id;
	hash_seq_init(&seq, start_records);
	while ((r = hash_seq_search(&seq)) != NULL)
		keys[n++] = r->key.run_id;
	qsort(keys, n, sizeof(int64), compare_int64);

	for (int i = 0; i < n; i++)
	{
		if (nruns == 0 || DatumGetInt64(runs[nruns - 1]) != keys[i])
		{
			runs[nruns] = Int64GetDatum(keys[i]);
			per_run[nruns++] = Int32GetDatum(0);
		}
		per_run[nruns - 1] = Int32GetDatum(DatumGetInt32(per_run[nruns - 1]) + 1);
	}
	*run_ids = PointerGetDatum(construct_array(runs, nruns, INT8OID, sizeof(int64),
											   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	*counts = PointerGetDatum(construct_array(per_run, nruns, INT4OID, sizeof(int32),
											  true, TYPALIGN_INT));
}

static void
read_active_parts(void *arg)
{
	ActiveParts *out = (ActiveParts *) arg;
	Oid			types[2] = {INT8ARRAYOID, INT4ARRAYOID};
	Datum		values[2];

	started_per_run(out->slots, &values[0], &values[1]);
	SPI_connect();
	if (SPI_execute_with_args(ACTIVE_PARTS_SQL, 2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("ecp launcher could not read the parts of pending and running runs")));
	out->parts = MemoryContextAllocZero(pass_context, sizeof(ActivePart) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		ActivePart *p = &out->parts[i];
		bool		isnull;

		p->run_id = DatumGetInt64(SPI_getbinval(tuple, desc, COL_RUN, &isnull));
		p->part_no = DatumGetInt32(SPI_getbinval(tuple, desc, COL_PART, &isnull));
		p->owner = DatumGetObjectId(SPI_getbinval(tuple, desc, COL_OWNER, &isnull));
		p->run_running = DatumGetBool(SPI_getbinval(tuple, desc, COL_RUN_RUNNING, &isnull));
		p->part_running = DatumGetBool(SPI_getbinval(tuple, desc, COL_PART_RUNNING, &isnull));
		p->heartbeat = DatumGetTimestampTz(SPI_getbinval(tuple, desc, COL_HEARTBEAT, &isnull));
		p->has_heartbeat = !isnull;
		p->recoveries = DatumGetInt32(SPI_getbinval(tuple, desc, COL_RECOVERIES, &isnull));
		p->task_id = DatumGetInt64(SPI_getbinval(tuple, desc, COL_TASK, &isnull));
		p->consumer_id = DatumGetInt64(SPI_getbinval(tuple, desc, COL_CONSUMER, &isnull));
		p->settings = ecp_launcher_settings(tuple, desc, COL_TASK_NAME, COL_CONSUMER_NAME, COL_OPTIONS, p->task_id, p->consumer_id);
	}
	out->count = (int) SPI_processed;
	SPI_finish();
}

/* Older than this server, or than ecp.recovery_timeout. */
static bool
heartbeat_old(TimestampTz heartbeat, TimestampTz now)
{
	return heartbeat < PgStartTime ||
		heartbeat < now - (TimestampTz) ecp_recovery_timeout * USECS_PER_SEC;
}

/*
 * A running part whose worker died again after max_retries restarts
 * (recoveries counts them; no batch was acknowledged in between) fails
 * its run instead of spinning: max_retries 0 fails at the first death.
 */
static bool
dying(const ActivePart *p, TimestampTz now)
{
	return p->run_running && p->part_running && !p->has_slot &&
		p->recoveries >= p->settings.max_retries &&
		p->has_heartbeat && heartbeat_old(p->heartbeat, now);
}

/*
 * Pending parts start at once.  A part still marked running lost its
 * worker (crash, kill, shutdown): it is recovered when its heartbeat is
 * older than ecp.recovery_timeout, or older than this server's start, and
 * a part that keeps dying waits a Fibonacci back-off after its heartbeat.
 */
static bool
runnable(const ActivePart *p, TimestampTz now)
{
	if (p->has_slot)
		return false;
	if (!p->part_running)
		return true;
	if (!p->has_heartbeat)
		return true;
	return heartbeat_old(p->heartbeat, now) &&
		p->heartbeat + (TimestampTz) ecp_backoff_ms(p->recoveries, p->settings.retry_base_ms,
													p->settings.retry_max_ms) * 1000 < now;
}

typedef struct RunFailure
{
	int64		run_id;
	const char *error;
} RunFailure;

/*
 * The run's row is locked NOWAIT: its owner may hold it (FOR UPDATE) for
 * as long as it likes, and the pass must not wait for it.  Other locks
 * (the triggers' rows) are bounded by run_isolated's lock_timeout.
 */
static void
fail_run(void *arg)
{
	RunFailure *f = (RunFailure *) arg;
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2] = {CStringGetTextDatum(f->error), Int64GetDatum(f->run_id)};

	SPI_connect();
	SPI_execute_with_args("UPDATE ecp.run SET state = 'failed'::pg_catalog.text, finished_at = pg_catalog.now(), last_error = $1"
						  " WHERE id OPERATOR(pg_catalog.=) (SELECT l.id FROM ecp.run l"
						  "                                   WHERE l.id OPERATOR(pg_catalog.=) $2"
						  "                                     AND l.state OPERATOR(pg_catalog.=) ANY ('{pending,running}'::pg_catalog.text[])"
						  "                                     FOR UPDATE NOWAIT)"
						  "   AND state OPERATOR(pg_catalog.=) ANY ('{pending,running}'::pg_catalog.text[])",
						  2, types, values, NULL, false, 0);
	SPI_finish();
}

/* Fail the run; false when that must wait for a later pass (its row is locked). */
static bool
fail_run_isolated(int64 run_id, const char *error)
{
	RunFailure	f = {run_id, error};
	char	   *what = psprintf("fail run " INT64_FORMAT, run_id);
	bool		failed = ecp_pass_step(fail_run, &f, what, true);

	pfree(what);
	return failed;
}

static StartRecord *
start_record(const ActivePart *p, bool create)
{
	PartKey		key;

	memset(&key, 0, sizeof(key));
	key.run_id = p->run_id;
	key.part_no = p->part_no;
	return hash_search(start_records, &key, create ? HASH_ENTER : HASH_FIND, NULL);
}

/* Has the part moved (claimed, heartbeat renewed) since its last start? */
static bool
moved_since(const StartRecord *r, const ActivePart *p)
{
	return r->was_running != p->part_running || r->had_heartbeat != p->has_heartbeat ||
		(p->has_heartbeat && r->heartbeat != p->heartbeat);
}

/*
 * Whether a runnable part may start now.  A worker that exits before its
 * part moves (it could not even claim it: a bad row, a fork that failed,
 * a crash at start) would otherwise be started again every second: such
 * starts wait the task's back-off, and after max_retries in a row the run
 * fails, saying so.
 */
static bool
may_start(ActivePart *p, TimestampTz now)
{
	StartRecord *r = start_record(p, false);

	p->fruitless = (r == NULL || moved_since(r, p)) ? 0 : r->fruitless + 1;
	if (p->fruitless == 0)
		return true;
	if (p->fruitless > p->settings.max_retries)
	{
		char	   *error = psprintf("the worker of part %d exited %d times in a row before it could take up the part; "
									 "see the server log, then ecp.resume(" INT64_FORMAT ")",
									 p->part_no, p->fruitless, p->run_id);

		/* a run whose row is locked keeps its record: failing it is retried */
		if (fail_run_isolated(p->run_id, error))
		{
			ereport(LOG, (errmsg("ecp run " INT64_FORMAT " fails: %s", p->run_id, error)));
			hash_search(start_records, &r->key, HASH_REMOVE, NULL);
		}
		return false;
	}
	return now >= r->started_at +
		(TimestampTz) ecp_backoff_ms(p->fruitless, p->settings.retry_base_ms, p->settings.retry_max_ms) * 1000;
}

static void
remember_start(const ActivePart *p, TimestampTz now)
{
	StartRecord *r = start_record(p, true);

	r->started_at = now;
	r->was_running = p->part_running;
	r->had_heartbeat = p->has_heartbeat;
	r->heartbeat = p->heartbeat;
	r->fruitless = p->fruitless;
	r->seen_pass = pass_number;
	if (p->fruitless > 0)
		ereport(LOG,
				(errmsg("ecp worker for run " INT64_FORMAT " part %d exited %d time(s) in a row before the part moved; starting it again",
						p->run_id, p->part_no, p->fruitless)));
}

/* Forget the starts of parts no longer pending or running. */
static void
forget_old_starts(void)
{
	HASH_SEQ_STATUS seq;
	StartRecord *r;

	hash_seq_init(&seq, start_records);
	while ((r = hash_seq_search(&seq)) != NULL)
		if (r->seen_pass != pass_number)
			hash_search(start_records, &r->key, HASH_REMOVE, NULL);
}

static int
compare_part_keys(const void *a, const void *b)
{
	const PartKey *x = a;
	const PartKey *y = b;

	if (x->run_id != y->run_id)
		return x->run_id < y->run_id ? -1 : 1;
	return x->part_no < y->part_no ? -1 : (x->part_no > y->part_no ? 1 : 0);
}

static SlotView
read_slots(void)
{
	EcpSharedState *state = ecp_shared();
	SlotView	view;

	view.used = MemoryContextAllocZero(pass_context, sizeof(PartKey) * state->nslots);
	view.nused = 0;
	LWLockAcquire(state->lock, LW_SHARED);
	for (int i = 0; i < state->nslots; i++)
	{
		if (!state->slots[i].in_use)
			continue;
		view.used[view.nused].run_id = state->slots[i].run_id;
		view.used[view.nused].part_no = state->slots[i].part_no;
		view.nused++;
	}
	view.nfree = state->nslots - view.nused;
	LWLockRelease(state->lock);
	qsort(view.used, view.nused, sizeof(PartKey), compare_part_keys);
	return view;
}

static bool
slot_view_has(const SlotView *view, const ActivePart *p)
{
	PartKey		key;

	memset(&key, 0, sizeof(key));
	key.run_id = p->run_id;
	key.part_no = p->part_no;
	return bsearch(&key, view->used, view->nused, sizeof(PartKey), compare_part_keys) != NULL;
}

/* One owner's share of the pass: its live workers and its parts to start. */
typedef struct OwnerQueue
{
	Oid			owner;
	int			workers;
	int			ncandidates;
	int			next;
	ActivePart **candidates;	/* a slice of the pass's sorted candidates */
} OwnerQueue;

static int
compare_owner_queues(const void *a, const void *b)
{
	Oid			x = ((const OwnerQueue *) a)->owner;
	Oid			y = ((const OwnerQueue *) b)->owner;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/* Within an owner: the runs with the fewest workers first, then the oldest. */
static int
compare_candidates(const void *a, const void *b)
{
	const ActivePart *x = *(ActivePart *const *) a;
	const ActivePart *y = *(ActivePart *const *) b;

	if (x->rank != y->rank)
		return x->rank < y->rank ? -1 : 1;
	if (x->run_id != y->run_id)
		return x->run_id < y->run_id ? -1 : 1;
	return x->part_no < y->part_no ? -1 : (x->part_no > y->part_no ? 1 : 0);
}

/*
 * A part's rank among its owner's starts: its run's live workers plus the
 * parts of the run queued before it, so the owner's runs take turns.
 */
static void
rank_candidates(ActivePart *parts, int count)
{
	int			i = 0;

	while (i < count)
	{
		int			run_end = i;
		int			live = 0;
		int			queued = 0;

		while (run_end < count && parts[run_end].run_id == parts[i].run_id)
			live += parts[run_end++].has_slot ? 1 : 0;
		for (int j = i; j < run_end; j++)
			parts[j].rank = live + (parts[j].has_slot ? 0 : queued++);
		i = run_end;
	}
}

static int
compare_owner_then_candidates(const void *a, const void *b)
{
	Oid			x = (*(ActivePart *const *) a)->owner;
	Oid			y = (*(ActivePart *const *) b)->owner;

	if (x != y)
		return x < y ? -1 : 1;
	return compare_candidates(a, b);
}

/*
 * The owners that have parts to start, each with its parts in the order
 * they should start, and its live workers; sorted by owner.
 */
static OwnerQueue *
owner_queues(ActivePart *parts, int count, const bool *startable, int *nqueues)
{
	ActivePart **candidates = MemoryContextAlloc(pass_context, sizeof(ActivePart *) * Max(count, 1));
	OwnerQueue *queues = MemoryContextAllocZero(pass_context, sizeof(OwnerQueue) * Max(count, 1));
	int			ncandidates = 0;

	rank_candidates(parts, count);
	for (int i = 0; i < count; i++)
		if (startable[i] && !parts[i].has_slot)
			candidates[ncandidates++] = &parts[i];
	qsort(candidates, ncandidates, sizeof(ActivePart *), compare_owner_then_candidates);

	*nqueues = 0;
	for (int i = 0; i < ncandidates; i++)
	{
		if (*nqueues == 0 || queues[*nqueues - 1].owner != candidates[i]->owner)
		{
			queues[*nqueues].owner = candidates[i]->owner;
			queues[*nqueues].candidates = &candidates[i];
			(*nqueues)++;
		}
		queues[*nqueues - 1].ncandidates++;
	}
	for (int i = 0; i < count; i++)
	{
		OwnerQueue	key = {.owner = parts[i].owner};
		OwnerQueue *q;

		if (!parts[i].has_slot)
			continue;
		q = bsearch(&key, queues, *nqueues, sizeof(OwnerQueue), compare_owner_queues);
		if (q)
			q->workers++;
	}
	return queues;
}

/*
 * Choose the parts to start, at most nfree: each free slot goes to the
 * owner with the fewest workers (the live ones and those chosen so far),
 * ties to the oldest waiting run, and never beyond ecp.max_workers_per_role.
 */
static ActivePart **
choose_starts(ActivePart *parts, int count, const bool *startable, int nfree, int *nchosen)
{
	ActivePart **chosen = MemoryContextAlloc(pass_context, sizeof(ActivePart *) * Max(nfree, 1));
	int			nqueues;
	OwnerQueue *queues = owner_queues(parts, count, startable, &nqueues);
	int			cap = role_worker_cap();

	*nchosen = 0;
	while (*nchosen < nfree)
	{
		OwnerQueue *best = NULL;

		for (int i = 0; i < nqueues; i++)
		{
			OwnerQueue *q = &queues[i];

			if (q->next >= q->ncandidates || (cap > 0 && q->workers >= cap))
				continue;
			if (best == NULL || q->workers < best->workers ||
				(q->workers == best->workers &&
				 compare_candidates(&q->candidates[q->next], &best->candidates[best->next]) < 0))
				best = q;
		}
		if (best == NULL)
			break;
		chosen[(*nchosen)++] = best->candidates[best->next++];
		best->workers++;
	}
	return chosen;
}

static void
want_rate(EcpRateWant *wants, int *n, char kind, int64 id, double rate)
{
	if (!(rate > 0))
		return;
	for (int i = 0; i < *n; i++)
		if (wants[i].kind == kind && wants[i].id == id)
			return;
	wants[*n].kind = kind;
	wants[*n].id = id;
	wants[*n].rate = rate;
	(*n)++;
}

/*
 * Push the configured rates of the parts that have a worker, or are about
 * to get one, to shared memory (every pass: ecp.set_rate and a plain
 * UPDATE alike take effect within a second); the limiter frees the
 * buckets nobody needs any more.
 */
static void
sync_rates(ActivePart *parts, int count, ActivePart **chosen, int nchosen)
{
	EcpRateWant *wants = MemoryContextAlloc(pass_context, sizeof(EcpRateWant) * 2 * Max(count, 1));
	int			n = 0;
	int			noverflow;

	for (int i = 0; i < count; i++)
		if (parts[i].has_slot)
		{
			want_rate(wants, &n, 't', parts[i].task_id, parts[i].settings.task_rate);
			want_rate(wants, &n, 'c', parts[i].consumer_id, parts[i].settings.consumer_rate);
		}
	for (int i = 0; i < nchosen; i++)
	{
		want_rate(wants, &n, 't', chosen[i]->task_id, chosen[i]->settings.task_rate);
		want_rate(wants, &n, 'c', chosen[i]->consumer_id, chosen[i]->settings.consumer_rate);
	}
	noverflow = ecp_limiter_sync(wants, n);
	if (noverflow > 0 &&
		TimestampDifferenceExceeds(overflow_warned_at, GetCurrentTimestamp(), OVERFLOW_WARNING_MS))
	{
		overflow_warned_at = GetCurrentTimestamp();
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("ecp has %d rate limits more than its rate buckets; they share one bucket at the smallest of their rates", noverflow),
				 errhint("The number of buckets follows ecp.max_workers (4 per worker plus 16).")));
	}
}

/*
 * Register one dynamic worker for a part; false when none could be had.
 * second: a second worker for a part that has one (ecp.test_claim_race).
 */
static bool
start_worker(const ActivePart *part, bool second)
{
	BackgroundWorker worker;
	EcpWorkerArgs args;
	BackgroundWorkerHandle *handle;
	MemoryContext old_context;
	bool		registered;
	uint64		generation;
	int			slot = ecp_reserve_slot(part->run_id, part->part_no, second);

	if (slot == -2)
		return true;			/* a worker of its run went on with it */
	if (slot < 0)
		return false;			/* all ecp.max_workers slots busy */
	generation = ecp_slot_generation(slot);

	memset(&args, 0, sizeof(args));
	args.database = MyDatabaseId;
	args.owner = part->owner;
	args.run_id = part->run_id;
	args.part_no = part->part_no;
	args.recovering = part->part_running;
	args.has_heartbeat = part->has_heartbeat;
	args.heartbeat_seen = part->heartbeat;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher decides */
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ecp");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ecp_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ecp worker run " INT64_FORMAT " part %d",
			 part->run_id, part->part_no);
	snprintf(worker.bgw_type, BGW_MAXLEN, "ecp worker");
	worker.bgw_main_arg = Int32GetDatum(slot);
	worker.bgw_notify_pid = MyProcPid;
	memcpy(worker.bgw_extra, &args, sizeof(args));
	memcpy(worker.bgw_extra + ECP_SLOT_GENERATION_OFFSET, &generation, sizeof(generation));

	/* the handle outlives this transaction: it is checked on later passes */
	old_context = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(old_context);
	if (!registered)
	{
		(void) ecp_reclaim_slot(slot, generation);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("ecp could not start a worker for run " INT64_FORMAT ": no background worker slot is free",
						part->run_id),
				 errhint("Raise max_worker_processes (it must exceed ecp.max_workers plus other workers); ecp retries every second.")));
		return false;
	}
	if (worker_handles[slot])
		pfree(worker_handles[slot]);
	worker_handles[slot] = handle;
	handle_generations[slot] = generation;
	return true;
}

/*
 * A run has at most its task's parallelism parts running: of its parts
 * without a worker, only the first (parallelism - live workers) may start.
 * parts come ordered by run, then part.
 */
static void
limit_to_parallelism(const ActivePart *parts, int count, bool *startable)
{
	int			i = 0;

	while (i < count)
	{
		int			run_end = i;
		int			room;

		room = parts[i].settings.parallelism;
		while (run_end < count && parts[run_end].run_id == parts[i].run_id)
			room -= parts[run_end++].has_slot ? 1 : 0;
		for (int j = i; j < run_end; j++)
			if (startable[j] && !parts[j].has_slot)
			{
				if (room > 0)
					room--;
				else
					startable[j] = false;
			}
		i = run_end;
	}
}

/*
 * The runs with a part that could start but got no slot, every slot
 * being taken (nchosen -1: a slot is free, none waits): a worker whose part
 * ends leaves its slot to them instead of going on with its own run
 * (ecp_other_run_waits).  parts come ordered by run.
 */
static void
publish_waiting_runs(const ActivePart *parts, int count, const bool *startable,
					 ActivePart **chosen, int nchosen)
{
	int64	   *waiting = palloc(sizeof(int64) * Max(count, 1));
	int			nwaiting = 0;

	for (int i = 0; i < count && nchosen >= 0; i++)
	{
		bool		was_chosen = false;

		if (!startable[i] || parts[i].has_slot ||
			(nwaiting > 0 && waiting[nwaiting - 1] == parts[i].run_id))
			continue;
		for (int j = 0; j < nchosen && !was_chosen; j++)
			was_chosen = chosen[j] == &parts[i];
		if (!was_chosen)
			waiting[nwaiting++] = parts[i].run_id;
	}
	ecp_set_waiting_runs(waiting, nwaiting);
}

/*
 * Decide about every active part: fail the runs whose parts keep dying,
 * choose which runnable parts get the free slots, push the rates they
 * need, and start them.
 */
static void
schedule_parts(ActivePart *parts, int count, const SlotView *slots)
{
	TimestampTz now = GetCurrentTimestamp();
	bool	   *startable = MemoryContextAllocZero(pass_context, sizeof(bool) * Max(count, 1));
	ActivePart **chosen;
	int			nchosen;

	for (int i = 0; i < count; i++)
	{
		ActivePart *p = &parts[i];
		StartRecord *r = start_record(p, false);

		p->has_slot = slot_view_has(slots, p);
		if (r)
			r->seen_pass = pass_number;
	}
	for (int i = 0; i < count; i++)
	{
		ActivePart *p = &parts[i];

		if (dying(p, now))
			(void) fail_run_isolated(p->run_id,
									 psprintf("the worker of part %d died %d times in a row without finishing a batch; "
											  "the checkpoint is kept: see the server log, then ecp.resume(" INT64_FORMAT ")",
											  p->part_no, p->recoveries + 1, p->run_id));
		else if (runnable(p, now))
			startable[i] = may_start(p, now);
	}
	forget_old_starts();
	limit_to_parallelism(parts, count, startable);

	chosen = choose_starts(parts, count, startable, slots->nfree, &nchosen);
	sync_rates(parts, count, chosen, nchosen);
	for (int i = 0; i < nchosen; i++)
	{
		if (!start_worker(chosen[i], false))
			break;
		remember_start(chosen[i], now);
		if (ecp_test_claim_race && chosen[i]->part_running)
			(void) start_worker(chosen[i], true);
	}
	/* with a slot left free, the parts not chosen wait for their role's cap */
	publish_waiting_runs(parts, count, startable, chosen, nchosen >= slots->nfree ? nchosen : -1);
}

void
ecp_schedule_runs(void)
{
	ActiveParts active = {NULL, NULL, 0};
	SlotView	slots;

	ensure_state();
	MemoryContextReset(pass_context);
	pass_number++;
	reclaim_slots();

	/*
	 * The slots are read before the snapshot: a part without a slot now
	 * had its last worker exit before, so the snapshot sees what it did.
	 */
	slots = read_slots();
	active.slots = &slots;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "scheduling ecp runs");

	(void) ecp_pass_step(ecp_apply_windows, NULL, "apply the windows of runs", true);
	(void) ecp_pass_step(ecp_watch_followers, NULL, "watch the followers' slots", true);
	if (ecp_pass_step(read_active_parts, &active, "read the parts of pending and running runs", true))
		schedule_parts(active.parts, active.count, &slots);

	/*
	 * Last: the runs it starts are not in this pass's parts; their commit
	 * wakes the launcher, whose next pass starts them.
	 */
	(void) ecp_pass_step(ecp_poll_followers, NULL, "start the poll runs of followers", true);

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}
