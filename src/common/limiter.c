/*
 * limiter.c: token buckets in shared memory, one per task and one per
 * consumer (documents per second; 0 = unlimited).
 *
 * The launcher pushes the configured rates from the tables every pass
 * (so ecp.set_rate and a plain UPDATE both take effect within a second);
 * workers take tokens before each request.  A request takes as many tokens
 * as it has documents and needs both its task's and its consumer's bucket;
 * the burst is one second's worth.  Only plain data lives here, under the
 * ecp LWLock, held for a few instructions.
 */
#include "ecp.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

/* Rates are clamped to this range (documents per second) before any use. */
#define MIN_RATE 0.001
#define MAX_RATE 1e9

/* Longest single wait handed to a worker; it asks again after it. */
#define MAX_WAIT_MS 60000.0

/* Bits of the overflow membership filter (see EcpRateTable). */
#define OVERFLOW_BITS 4096

typedef struct EcpRateBucket
{
	bool		in_use;
	char		kind;			/* 't' task, 'c' consumer */
	int64		id;
	double		rate;			/* configured documents per second; 0: unlimited */
	double		effective;		/* after 429s (AIMD), never above rate */
	TimestampTz raised_at;		/* last additive increase */
	double		tokens;
	TimestampTz refilled_at;
	int			waiting;		/* workers waiting for tokens now */
	uint64		seen_pass;		/* last launcher pass that wanted it */
} EcpRateBucket;

/*
 * The buckets of the tasks and consumers the launcher's last pass wanted
 * (those of the parts that have or get a worker); the others are freed at
 * each pass.  Should more be wanted than there are buckets, the rest share
 * one overflow bucket at the smallest of their rates (slower, never
 * unlimited); which (kind, id) overflowed is kept as bits of a filter, so
 * a false positive can only slow an unlimited task while the table is
 * full, never speed up a limited one.
 */
typedef struct EcpRateTable
{
	int			nbuckets;
	uint64		pass;
	int			noverflow;		/* wanted but without a bucket, last pass */
	EcpRateBucket overflow;
	uint8		overflow_members[OVERFLOW_BITS / 8];
	EcpRateBucket buckets[FLEXIBLE_ARRAY_MEMBER];
} EcpRateTable;

static EcpRateTable *rate_table = NULL;

/*
 * Process-wide, not part state: this worker process is counted in the
 * waiting of this task's bucket, which the exit callback must undo.
 */
static bool counted_waiting = false;
static int64 counted_task_id = 0;

static int
bucket_count(void)
{
	return 4 * ecp_max_workers + 16;
}

static Size
limiter_shmem_size(void)
{
	return add_size(offsetof(EcpRateTable, buckets),
					mul_size(sizeof(EcpRateBucket), bucket_count()));
}

/* Called under AddinShmemInitLock. */
static void
limiter_shmem_init(void)
{
	bool		found;

	rate_table = ShmemInitStruct("ecp rate buckets", limiter_shmem_size(), &found);
	if (!found)
	{
		memset(rate_table, 0, limiter_shmem_size());
		rate_table->nbuckets = bucket_count();
	}
}

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
limiter_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(limiter_shmem_size()));
}

static void
limiter_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	limiter_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/* The buckets' shared memory, from _PG_init (shared_preload_libraries). */
void
ecp_limiter_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = limiter_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = limiter_shmem_startup;
}

/* 0 (unlimited) for anything not positive, NaN included; else clamped. */
static double
clamp_rate(double rate)
{
	if (!(rate > 0))
		return 0;
	return Min(Max(rate, MIN_RATE), MAX_RATE);
}

static int
overflow_bit(char kind, int64 id)
{
	uint32		h = murmurhash32((uint32) id ^ (uint32) ((uint64) id >> 32));

	return (int) (hash_combine(h, (uint32) kind) % OVERFLOW_BITS);
}

static bool
overflowed(char kind, int64 id)
{
	int			bit = overflow_bit(kind, id);

	return rate_table->noverflow > 0 &&
		(rate_table->overflow_members[bit / 8] & (1 << (bit % 8))) != 0;
}

/* The bucket of (kind, id), the overflow bucket, or NULL. Lock held. */
static EcpRateBucket *
find_bucket(char kind, int64 id)
{
	for (int i = 0; i < rate_table->nbuckets; i++)
	{
		EcpRateBucket *b = &rate_table->buckets[i];

		if (b->in_use && b->kind == kind && b->id == id)
			return b;
	}
	return overflowed(kind, id) ? &rate_table->overflow : NULL;
}

static EcpRateBucket *
find_own_bucket(char kind, int64 id)
{
	EcpRateBucket *b = find_bucket(kind, id);

	return b == &rate_table->overflow ? NULL : b;
}

static void
refill(EcpRateBucket *b, TimestampTz now)
{
	double		elapsed = (now - b->refilled_at) / 1000000.0;

	if (b->effective > 0 && elapsed > 0)
		b->tokens = Min(b->effective, b->tokens + b->effective * elapsed);
	b->refilled_at = now;
}

/* A new configured rate for a bucket (0 = unlimited). Lock held. */
static void
set_rate(EcpRateBucket *b, double rate, TimestampTz now)
{
	rate = clamp_rate(rate);
	if (b->rate == rate)
		return;
	refill(b, now);
	b->rate = rate;
	b->effective = rate;
	b->tokens = Min(b->tokens, rate);	/* the burst follows the rate */
}

static EcpRateBucket *
new_bucket(char kind, int64 id, TimestampTz now)
{
	for (int i = 0; i < rate_table->nbuckets; i++)
	{
		EcpRateBucket *b = &rate_table->buckets[i];

		if (b->in_use)
			continue;
		memset(b, 0, sizeof(*b));
		b->in_use = true;
		b->kind = kind;
		b->id = id;
		b->refilled_at = now;
		return b;
	}
	return NULL;
}

/*
 * The launcher's pass: keep (and update) the buckets of wants, free every
 * other one, create the missing ones while there is room, and put the
 * rest on the overflow bucket.  Returns how many did not get a bucket.
 */
int
ecp_limiter_sync(const EcpRateWant *wants, int n)
{
	EcpSharedState *state = ecp_shared();
	TimestampTz now = GetCurrentTimestamp();
	uint64		pass;
	double		overflow_rate = 0;
	int			noverflow = 0;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	pass = ++rate_table->pass;
	for (int i = 0; i < n; i++)
	{
		EcpRateBucket *b = find_own_bucket(wants[i].kind, wants[i].id);

		if (b)
		{
			b->seen_pass = pass;
			set_rate(b, wants[i].rate, now);
		}
	}
	for (int i = 0; i < rate_table->nbuckets; i++)
		if (rate_table->buckets[i].in_use && rate_table->buckets[i].seen_pass != pass)
			memset(&rate_table->buckets[i], 0, sizeof(EcpRateBucket));

	memset(rate_table->overflow_members, 0, sizeof(rate_table->overflow_members));
	rate_table->noverflow = 0;	/* find_bucket ignores the filter meanwhile */
	for (int i = 0; i < n; i++)
	{
		EcpRateBucket *b = find_own_bucket(wants[i].kind, wants[i].id);
		int			bit;

		if (b == NULL)
			b = new_bucket(wants[i].kind, wants[i].id, now);
		if (b)
		{
			b->seen_pass = pass;
			set_rate(b, wants[i].rate, now);
			continue;
		}
		bit = overflow_bit(wants[i].kind, wants[i].id);
		rate_table->overflow_members[bit / 8] |= (1 << (bit % 8));
		if (overflow_rate == 0 || clamp_rate(wants[i].rate) < overflow_rate)
			overflow_rate = clamp_rate(wants[i].rate);
		noverflow++;
	}
	if (rate_table->overflow.refilled_at == 0)
		rate_table->overflow.refilled_at = now;
	set_rate(&rate_table->overflow, overflow_rate, now);
	rate_table->noverflow = noverflow;
	LWLockRelease(state->lock);
	return noverflow;
}

/* One push of a configured rate, outside a pass (0 = unlimited). */
void
ecp_limiter_set(char kind, int64 id, double rate)
{
	EcpSharedState *state = ecp_shared();
	TimestampTz now = GetCurrentTimestamp();
	EcpRateBucket *b;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	b = find_own_bucket(kind, id);
	if (b == NULL && clamp_rate(rate) > 0)
		b = new_bucket(kind, id, now);
	if (b)
	{
		b->seen_pass = rate_table->pass;
		set_rate(b, rate, now);
	}
	LWLockRelease(state->lock);
}

/* The smallest effective rate of a task and its consumer (0: none). */
double
ecp_limiter_rate(int64 task_id, int64 consumer_id)
{
	EcpSharedState *state = ecp_shared();
	EcpRateBucket *t, *c;
	double		rate = 0;

	LWLockAcquire(state->lock, LW_SHARED);
	t = find_bucket('t', task_id);
	c = find_bucket('c', consumer_id);
	if (t && t->effective > 0)
		rate = t->effective;
	if (c && c->effective > 0 && (rate == 0 || c->effective < rate))
		rate = c->effective;
	LWLockRelease(state->lock);
	return rate;
}

/*
 * Milliseconds until b holds the tokens a request of n documents needs (a
 * request never needs more than a full bucket), 0 if it holds them now.
 * Computed in double and clamped before the conversion: tiny or huge
 * rates must neither overflow a long nor come out negative.
 */
static long
shortfall_ms(EcpRateBucket *b, int n)
{
	double		need;
	double		ms;

	if (b == NULL || !(b->effective > 0))
		return 0;
	need = Min((double) n, ceil(b->effective));
	if (b->tokens >= need)
		return 0;
	ms = ceil((need - b->tokens) / b->effective * 1000.0);
	if (!(ms >= 1))
		return 1;
	return (long) Min(ms, MAX_WAIT_MS);
}

/*
 * Take n tokens from the task's and the consumer's buckets together, or
 * none: returns 0 when taken, else how long to wait before trying again.
 */
long
ecp_limiter_take(int64 task_id, int64 consumer_id, int n, bool waiting)
{
	EcpSharedState *state = ecp_shared();
	TimestampTz now = GetCurrentTimestamp();
	EcpRateBucket *t, *c;
	long		wait_ms;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	t = find_bucket('t', task_id);
	c = find_bucket('c', consumer_id);
	if (c == t)
		c = NULL;				/* both on the overflow bucket: take once */
	if (t)
		refill(t, now);
	if (c)
		refill(c, now);
	wait_ms = Max(shortfall_ms(t, n), shortfall_ms(c, n));
	if (wait_ms == 0)
	{
		if (t && t->effective > 0)
			t->tokens -= n;
		if (c && c->effective > 0)
			c->tokens -= n;
	}
	/* counted once per wait: the caller says done when it got its tokens */
	if (t && waiting && wait_ms > 0 && !counted_waiting)
	{
		t->waiting++;
		counted_waiting = true;
		counted_task_id = task_id;
	}
	LWLockRelease(state->lock);
	return wait_ms;
}

/*
 * Adaptive protection (AIMD) of a consumer with a configured rate: a 429
 * halves its effective rate (down to 5% of the configured one); each
 * second without one adds back a tenth of the configured rate, never
 * more than it.
 */
void
ecp_limiter_feedback(int64 consumer_id, bool throttled)
{
	EcpSharedState *state = ecp_shared();
	TimestampTz now = GetCurrentTimestamp();
	EcpRateBucket *c;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	c = find_bucket('c', consumer_id);
	if (c && c->rate > 0)
	{
		refill(c, now);
		if (throttled)
		{
			c->effective = Max(Max(c->rate * 0.05, MIN_RATE), c->effective * 0.5);
			c->tokens = Min(c->tokens, c->effective);
			c->raised_at = now;
		}
		else if (c->effective < c->rate &&
				 TimestampDifferenceExceeds(c->raised_at, now, 1000))
		{
			c->effective = Min(c->rate, c->effective + c->rate * 0.1);
			c->raised_at = now;
		}
	}
	LWLockRelease(state->lock);
}

static void
uncount_wait(int64 task_id)
{
	EcpSharedState *state = ecp_shared();
	EcpRateBucket *t;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	t = find_bucket('t', task_id);
	if (t && t->waiting > 0)
		t->waiting--;
	LWLockRelease(state->lock);
}

/* A worker stopped waiting on the task's bucket. */
void
ecp_limiter_done_waiting(int64 task_id)
{
	if (!counted_waiting)
		return;
	counted_waiting = false;
	uncount_wait(counted_task_id);
}

/*
 * A worker's exit path (worker_detach): a worker that dies in the middle
 * of a wait must not stay counted in waiting_workers.
 */
void
ecp_limiter_forget_waits(void)
{
	ecp_limiter_done_waiting(counted_task_id);
}

/*
 * Whether the calling role can see the task or consumer a bucket belongs
 * to: the tables' row-level security decides, so ecp_internal._rate_buckets()
 * tells a role about its own limits only, like the view over it.
 */
static bool
caller_sees(char kind, int64 id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};

	if (SPI_execute_with_args(kind == 't' ? "SELECT 1 FROM ecp.task WHERE id = $1"
							  : "SELECT 1 FROM ecp.consumer WHERE id = $1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		return false;
	return SPI_processed == 1;
}

PG_FUNCTION_INFO_V1(ecp_rate_buckets);

/* ecp_internal._rate_buckets(): kind, id, rate, effective, tokens, waiting of every bucket. */
Datum
ecp_rate_buckets(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EcpSharedState *state = ecp_shared();
	EcpRateBucket *copies;
	int			n = 0;
	bool		everything = superuser();

	InitMaterializedSRF(fcinfo, 0);

	/* copied under the lock; checked for visibility without it */
	copies = palloc(sizeof(EcpRateBucket) * Max(rate_table->nbuckets, 1));
	LWLockAcquire(state->lock, LW_SHARED);
	for (int i = 0; i < rate_table->nbuckets; i++)
		if (rate_table->buckets[i].in_use)
			copies[n++] = rate_table->buckets[i];
	LWLockRelease(state->lock);

	if (!everything)
		SPI_connect();
	for (int i = 0; i < n; i++)
	{
		EcpRateBucket *b = &copies[i];
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		if (!everything && !caller_sees(b->kind, b->id))
			continue;
		values[0] = CStringGetTextDatum(b->kind == 't' ? "task" : "consumer");
		values[1] = Int64GetDatum(b->id);
		values[2] = Float8GetDatum(b->rate);
		values[3] = Float8GetDatum(b->effective);
		values[4] = Float8GetDatum(b->tokens);
		values[5] = Int32GetDatum(b->waiting);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (!everything)
		SPI_finish();
	return (Datum) 0;
}
