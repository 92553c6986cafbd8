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

#include "funcapi.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

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
} EcpRateBucket;

typedef struct EcpRateTable
{
	int			nbuckets;
	EcpRateBucket buckets[FLEXIBLE_ARRAY_MEMBER];
} EcpRateTable;

static EcpRateTable *rate_table = NULL;

static int
bucket_count(void)
{
	return 4 * ecp_max_workers + 16;
}

Size
ecp_limiter_shmem_size(void)
{
	return add_size(offsetof(EcpRateTable, buckets),
					mul_size(sizeof(EcpRateBucket), bucket_count()));
}

/* Called under AddinShmemInitLock from shmem.c. */
void
ecp_limiter_shmem_init(void)
{
	bool		found;

	rate_table = ShmemInitStruct("ecp rate buckets", ecp_limiter_shmem_size(), &found);
	if (!found)
	{
		memset(rate_table, 0, ecp_limiter_shmem_size());
		rate_table->nbuckets = bucket_count();
	}
}

/* The bucket of (kind, id), creating it if create; NULL if none. Lock held. */
static EcpRateBucket *
find_bucket(char kind, int64 id, bool create)
{
	EcpRateBucket *free_bucket = NULL;

	for (int i = 0; i < rate_table->nbuckets; i++)
	{
		EcpRateBucket *b = &rate_table->buckets[i];

		if (b->in_use && b->kind == kind && b->id == id)
			return b;
		if (!b->in_use && free_bucket == NULL)
			free_bucket = b;
	}
	if (!create || free_bucket == NULL)
		return NULL;
	memset(free_bucket, 0, sizeof(*free_bucket));
	free_bucket->in_use = true;
	free_bucket->kind = kind;
	free_bucket->id = id;
	free_bucket->refilled_at = GetCurrentTimestamp();
	return free_bucket;
}

static void
refill(EcpRateBucket *b, TimestampTz now)
{
	double		elapsed = (now - b->refilled_at) / 1000000.0;

	if (b->effective > 0 && elapsed > 0)
		b->tokens = Min(b->effective, b->tokens + b->effective * elapsed);
	b->refilled_at = now;
}

/* The launcher's push of a configured rate (0 = unlimited). */
void
ecp_limiter_set(char kind, int64 id, double rate)
{
	EcpSharedState *state = ecp_shared();
	EcpRateBucket *b;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	b = find_bucket(kind, id, rate > 0);
	if (b && b->rate != rate)
	{
		refill(b, GetCurrentTimestamp());
		b->rate = rate;
		b->effective = rate;
		b->tokens = Min(b->tokens, rate);	/* the burst follows the rate */
	}
	LWLockRelease(state->lock);
}

/* The smallest configured rate of a task and its consumer (0: none). */
double
ecp_limiter_rate(int64 task_id, int64 consumer_id)
{
	EcpSharedState *state = ecp_shared();
	EcpRateBucket *t, *c;
	double		rate = 0;

	LWLockAcquire(state->lock, LW_SHARED);
	t = find_bucket('t', task_id, false);
	c = find_bucket('c', consumer_id, false);
	if (t && t->effective > 0)
		rate = t->effective;
	if (c && c->effective > 0 && (rate == 0 || c->effective < rate))
		rate = c->effective;
	LWLockRelease(state->lock);
	return rate;
}

static long
shortfall_ms(EcpRateBucket *b, int n)
{
	if (b == NULL || b->effective <= 0 || b->tokens >= n)
		return 0;
	return (long) ceil((n - b->tokens) / b->effective * 1000.0);
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
	t = find_bucket('t', task_id, false);
	c = find_bucket('c', consumer_id, false);
	if (t)
		refill(t, now);
	if (c)
		refill(c, now);
	/* a request never needs more than a full bucket */
	wait_ms = Max(shortfall_ms(t, t ? Min(n, (int) ceil(t->effective)) : n),
				  shortfall_ms(c, c ? Min(n, (int) ceil(c->effective)) : n));
	if (wait_ms == 0)
	{
		if (t && t->effective > 0)
			t->tokens -= n;
		if (c && c->effective > 0)
			c->tokens -= n;
	}
	/* counted once per wait: the caller says done when it got its tokens */
	if (t && waiting && wait_ms > 0)
		t->waiting++;
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
	c = find_bucket('c', consumer_id, false);
	if (c && c->rate > 0)
	{
		refill(c, now);
		if (throttled)
		{
			c->effective = Max(c->rate * 0.05, c->effective * 0.5);
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

/* A worker stopped waiting on the task's bucket. */
void
ecp_limiter_done_waiting(int64 task_id)
{
	EcpSharedState *state = ecp_shared();
	EcpRateBucket *t;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	t = find_bucket('t', task_id, false);
	if (t && t->waiting > 0)
		t->waiting--;
	LWLockRelease(state->lock);
}

PG_FUNCTION_INFO_V1(ecp_rate_buckets);

/* ecp._rate_buckets(): kind, id, rate, effective, tokens, waiting of every bucket. */
Datum
ecp_rate_buckets(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EcpSharedState *state = ecp_shared();

	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(state->lock, LW_SHARED);
	for (int i = 0; i < rate_table->nbuckets; i++)
	{
		EcpRateBucket *b = &rate_table->buckets[i];
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		if (!b->in_use)
			continue;
		values[0] = CStringGetTextDatum(b->kind == 't' ? "task" : "consumer");
		values[1] = Int64GetDatum(b->id);
		values[2] = Float8GetDatum(b->rate);
		values[3] = Float8GetDatum(b->effective);
		values[4] = Float8GetDatum(b->tokens);
		values[5] = Int32GetDatum(b->waiting);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(state->lock);
	return (Datum) 0;
}
