/*
 * source_follow.c: a follower's changes, applied through the task's query.
 *
 * A followed task's changes wait in ecp.follow_queue as keys of the
 * tables it reads: the triggers of mode trigger put them there in the
 * writing transaction, the decoder of mode decoding (follow_capture.c)
 * from the replication slot.  A page of the follower is a page of the
 * queue (batch_size entries, oldest first): its keys become document ids
 * (the key itself, or what the table's ids query returns for it, as the
 * owner), the ids are looked up through the task's query like an id run
 * (source_ids.c), rows found are indexed and ids no longer found deleted.
 * A document is thus always rebuilt from its row as it is when the page
 * is read, so the last state wins, and an id changed ten times between
 * two pages is read once.  The page's queue entries are deleted in the
 * transaction of its checkpoint, after the sink acknowledged it
 * (acknowledge below): a crash before that sends them again, never loses
 * them.
 *
 * The source never ends: with nothing queued it waits ecp.follow_interval
 * (renewing the heartbeat) until changes come or the run is stopped.
 */
#include "sync.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "json_build.h"

/* A followed table, and how its keys become document ids. */
typedef struct FollowTable
{
	Oid			relid;
	char	   *name;
	char	   *ids_query;		/* SELECT ... $1 ..., or NULL: keys are ids */
} FollowTable;

typedef struct FollowState
{
	EcpIdLookup *lookup;
	FollowTable *tables;
	int			ntables;
	EcpDecoder *decoder;		/* mode decoding, else NULL */
	Datum		inflight;		/* int8[] of the queue entries of the page
								 * read last: a read ahead skips them */
	int			inflight_count; /* its entries, 0 once acknowledged */
	int64		pages_read;
	MemoryContext context;		/* the source's memory */
	TimestampTz next_beat;
} FollowState;

/* What a page consumed: its queue entries. */
typedef struct FollowAck
{
	int64		page;			/* which page read (FollowState.pages_read) */
	Datum		qids;			/* int8[] */
	int			nqids;
} FollowAck;

/* A page of the queue, as read. */
typedef struct QueuePage
{
	int64	   *qids;
	Oid		   *relids;
	char	  **keys;			/* NULL: the table was truncated */
	int			n;
} QueuePage;

static Datum
int8_array(const int64 *values, int n, MemoryContext context)
{
	MemoryContext old = MemoryContextSwitchTo(context);
	Datum	   *datums = palloc(sizeof(Datum) * Max(n, 1));
	ArrayType  *array;

	for (int i = 0; i < n; i++)
		datums[i] = Int64GetDatum(values[i]);
	array = construct_array(datums, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	MemoryContextSwitchTo(old);
	return PointerGetDatum(array);
}

static Datum
text_array(char **values, int n)
{
	Datum	   *datums = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		datums[i] = CStringGetTextDatum(values[i]);
	return PointerGetDatum(construct_array(datums, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* The follower's tables (as ecp), into the source's memory. */
static void
load_tables(FollowState *state, EcpPartConfig *config, MemoryContext context)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(config->task_id)};
	MemoryContext back_to = ecp_begin_bookkeeping();

	SPI_connect();
	if (SPI_execute_with_args("SELECT relid, table_name, ids_query FROM ecp.follow_table "
							  " WHERE task_id = $1 ORDER BY relid", 1, types, values, NULL, true, 0)
		!= SPI_OK_SELECT)
		elog(ERROR, "ecp: reading the follower's tables failed");
	ecp_require_column_type(SPI_tuptable->tupdesc, 1, OIDOID, "the follower's tables");
	ecp_require_column_type(SPI_tuptable->tupdesc, 2, TEXTOID, "the follower's tables");
	ecp_require_column_type(SPI_tuptable->tupdesc, 3, TEXTOID, "the follower's tables");
	state->ntables = (int) SPI_processed;
	state->tables = MemoryContextAllocZero(context, sizeof(FollowTable) * Max(state->ntables, 1));
	for (int i = 0; i < state->ntables; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *ids_query = SPI_getvalue(tuple, desc, 3);

		state->tables[i].relid = DatumGetObjectId(SPI_getbinval(tuple, desc, 1, &isnull));
		state->tables[i].name = MemoryContextStrdup(context, SPI_getvalue(tuple, desc, 2));
		state->tables[i].ids_query = ids_query ? MemoryContextStrdup(context, ids_query) : NULL;
	}
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	if (state->ntables == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task \"%s\" is not followed any more", config->task_name),
				 errhint("ecp.follow(task) follows it again.")));
}

static void *
follow_open(EcpPartConfig *config, MemoryContext context)
{
	FollowState *state = MemoryContextAllocZero(context, sizeof(FollowState));

	load_tables(state, config, context);
	state->lookup = ecp_ids_prepare(config, context);
	state->decoder = ecp_decoder_open(config, context);
	state->context = context;
	state->inflight = int8_array(NULL, 0, context);
	state->next_beat = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ecp_heartbeat_interval * 1000L);
	return state;
}

/* The oldest queue entries but those of the page in flight (as ecp). */
static void
read_queue(FollowState *state, EcpPartConfig *config, QueuePage *page)
{
	Oid			types[3] = {INT8OID, INT8ARRAYOID, INT4OID};
	Datum		values[3] = {Int64GetDatum(config->task_id), state->inflight,
	Int32GetDatum(config->batch_size)};
	MemoryContext page_context = CurrentMemoryContext;
	MemoryContext back_to = ecp_begin_bookkeeping();

	SPI_connect();
	if (SPI_execute_with_args("SELECT qid, relid, key FROM ecp.follow_queue "
							  " WHERE task_id = $1 AND qid <> ALL ($2) ORDER BY qid LIMIT $3",
							  3, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ecp: reading the follow queue failed");
	ecp_require_column_type(SPI_tuptable->tupdesc, 1, INT8OID, "the follow queue");
	ecp_require_column_type(SPI_tuptable->tupdesc, 2, OIDOID, "the follow queue");
	ecp_require_column_type(SPI_tuptable->tupdesc, 3, TEXTOID, "the follow queue");
	MemoryContextSwitchTo(page_context);
	page->n = (int) SPI_processed;
	page->qids = palloc(sizeof(int64) * Max(page->n, 1));
	page->relids = palloc(sizeof(Oid) * Max(page->n, 1));
	page->keys = palloc(sizeof(char *) * Max(page->n, 1));
	for (int i = 0; i < page->n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		page->qids[i] = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		page->relids[i] = DatumGetObjectId(SPI_getbinval(tuple, desc, 2, &isnull));
		page->keys[i] = SPI_getvalue(tuple, desc, 3);
	}
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}

static const FollowTable *
table_of(const FollowState *state, Oid relid)
{
	for (int i = 0; i < state->ntables; i++)
		if (state->tables[i].relid == relid)
			return &state->tables[i];
	return NULL;
}

/* A truncated table: its documents cannot be found from the queue. */
static void
report_truncate(EcpPartConfig *config, const FollowTable *table)
{
	StringInfoData event;
	char	   *why = psprintf("table %s of followed task \"%s\" was truncated: documents of its removed rows stay in the index",
							   table->name, config->task_name);

	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "table", table->name);
	ecp_json_key_string(&event, "why", why);
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_TRUNCATE_SEEN, event.data);
	ecp_store_alert(config, "follow truncate", 0, why);
}

/*
 * The document ids of a table's keys through its ids query, as the owner
 * ($1: the keys as text[]), in the page's memory; *nids their number.
 */
static char **
map_keys(EcpPartConfig *config, const FollowTable *table, char **keys, int nkeys, int *nids)
{
	MemoryContext page_context = CurrentMemoryContext;
	MemoryContext back_to;
	Oid			types[1] = {TEXTARRAYOID};
	Datum		values[1];
	char	  **ids;
	int			n = 0;

	values[0] = text_array(keys, nkeys);
	back_to = ecp_begin_as_owner(config);
	SPI_connect();
	if (SPI_execute_with_args(psprintf("SELECT (m.id)" ECP_AS_TEXT " FROM (%s\n) AS m(id)", table->ids_query),
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ecp: the ids query of table %s failed", table->name);
	MemoryContextSwitchTo(page_context);
	ids = palloc(sizeof(char *) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *id = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (id)
			ids[n++] = id;
	}
	SPI_finish();
	ecp_commit_as_owner(back_to);
	MemoryContextSwitchTo(page_context);
	*nids = n;
	return ids;
}

/* Append src[0..n) to the growing array *ids of *nids (capacity *cap). */
static void
append_ids(char ***ids, int *nids, int *cap, char **src, int n)
{
	if (*nids + n > *cap)
	{
		*cap = Max(*cap * 2, *nids + n);
		*ids = repalloc(*ids, sizeof(char *) * *cap);
	}
	memcpy(*ids + *nids, src, sizeof(char *) * n);
	*nids += n;
}

/* The document ids of a queue page (in the page's memory). */
static char **
ids_of_page(FollowState *state, EcpPartConfig *config, const QueuePage *page, int *nids)
{
	int			cap = Max(page->n, 1);
	char	  **ids = palloc(sizeof(char *) * cap);
	char	  **keys = palloc(sizeof(char *) * Max(page->n, 1));

	*nids = 0;
	for (int i = 0; i < page->n; i++)
		if (table_of(state, page->relids[i]) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("the follow queue of task \"%s\" holds a change of relation %u, which the task does not follow",
							config->task_name, page->relids[i]),
					 errhint("ecp.unfollow and ecp.follow the task again.")));
	for (int t = 0; t < state->ntables; t++)
	{
		const FollowTable *table = &state->tables[t];
		int			nkeys = 0;

		for (int i = 0; i < page->n; i++)
		{
			if (page->relids[i] != table->relid)
				continue;
			if (page->keys[i] == NULL)
				report_truncate(config, table);
			else
				keys[nkeys++] = page->keys[i];
		}
		if (nkeys == 0)
			continue;
		if (table->ids_query == NULL)
			append_ids(&ids, nids, &cap, keys, nkeys);
		else
		{
			/* a fan-out table: a key may stand for many documents */
			int			nmapped;
			char	  **mapped = map_keys(config, table, keys, nkeys, &nmapped);

			append_ids(&ids, nids, &cap, mapped, nmapped);
		}
	}
	return ids;
}

/*
 * Wait for changes (false: a stop request ended the wait), renewing the
 * heartbeat while the follower idles.
 */
static bool
wait_for_changes(FollowState *state, EcpPartConfig *config)
{
	TimestampTz now = GetCurrentTimestamp();

	if (now >= state->next_beat)
	{
		ecp_store_heartbeat(config);
		state->next_beat = TimestampTzPlusMilliseconds(now, ecp_heartbeat_interval * 1000L);
	}
	return ecp_worker_wait(config, ecp_follow_interval_ms);
}

/* The page read last is in flight until its checkpoint acknowledges it. */
static void
set_in_flight(FollowState *state, const int64 *qids, int n, MemoryContext context)
{
	if (state->inflight != (Datum) 0)
		pfree(DatumGetPointer(state->inflight));
	state->inflight = int8_array(qids, n, context);
	state->inflight_count = n;
	state->pages_read++;
}

/*
 * The next page of changes.  With none queued it waits for some, except
 * while a page is in flight (this is a read ahead): then it returns an
 * empty page at once, so the page in flight is acknowledged without
 * delay.  A stop request also ends the wait with an empty page.
 */
static bool
follow_read(void *arg, EcpPartConfig *config, const EcpPosition *after, EcpBatch *batch)
{
	FollowState *state = (FollowState *) arg;
	QueuePage	page;
	FollowAck  *ack;
	char	  **ids;
	int			nids;

	for (;;)
	{
		MemoryContextSwitchTo(batch->context);
		read_queue(state, config, &page);

		/*
		 * Decode only when the queue runs short: every peek decodes from
		 * the slot's restart point, so peeking before each page of a
		 * backlog would decode a big transaction again for every page.
		 */
		if (state->decoder && page.n < config->batch_size &&
			ecp_decoder_capture(state->decoder, config) > 0)
		{
			MemoryContextSwitchTo(batch->context);
			read_queue(state, config, &page);
		}
		if (page.n > 0)
			break;
		if (state->inflight_count > 0 || !wait_for_changes(state, config))
		{
			MemoryContextSwitchTo(batch->context);
			return true;
		}
	}
	MemoryContextSwitchTo(batch->context);
	ids = ids_of_page(state, config, &page, &nids);
	if (nids > 0)
		ecp_ids_lookup(state->lookup, config, ids, nids, batch);
	/* a migration of the alias that began before the rows were read gets them too */
	ecp_store_refresh_dual_index(config);
	MemoryContextSwitchTo(batch->context);
	batch->read_any = true;
	batch->end.position = after->position + page.n;
	ack = palloc(sizeof(FollowAck));
	ack->page = state->pages_read + 1;
	ack->nqids = page.n;
	ack->qids = int8_array(page.qids, page.n, batch->context);
	batch->ack = ack;
	set_in_flight(state, page.qids, page.n, state->context);
	return true;
}

/*
 * In the checkpoint's transaction: the page's queue entries go, the
 * follower's counters move.
 */
static void
follow_acknowledge(void *arg, EcpPartConfig *config, const EcpBatch *batch)
{
	FollowState *state = (FollowState *) arg;
	const FollowAck *ack = (const FollowAck *) batch->ack;
	Oid			types[3] = {INT8ARRAYOID, INT8OID, INT8OID};
	Datum		values[3];

	if (ack == NULL)
		return;
	values[0] = ack->qids;
	values[1] = Int64GetDatum(config->task_id);
	values[2] = Int64GetDatum(batch->ndocs);
	if (SPI_execute_with_args("DELETE FROM ecp.follow_queue WHERE qid = ANY ($1)",
							  1, types, values, NULL, false, 0) != SPI_OK_DELETE ||
		SPI_execute_with_args("UPDATE ecp.follower SET last_applied_at = pg_catalog.now(), "
							  "       changes_applied = changes_applied + $3 WHERE task_id = $2",
							  3, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "ecp: acknowledging the follower's page failed");
	if (ack->page == state->pages_read)
		state->inflight_count = 0;	/* nothing in flight: the next read may wait */
}

static int64
follow_total(void *state, EcpPartConfig *config, bool *is_estimate)
{
	*is_estimate = true;
	return -1;					/* changes keep coming */
}

static void
follow_close(void *arg)
{
	/* memory only; the slot is released by every call that takes it */
}

const EcpSourceOps ecp_follow_source = {
	.name = "follow",
	.open = follow_open,
	.read = follow_read,
	.total = follow_total,
	.estimated_total = ecp_source_no_estimate,
	.unreadable = ecp_source_nothing_unreadable,
	.close = follow_close,
	.acknowledge = follow_acknowledge,
};
