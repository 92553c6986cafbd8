/*
 * source_cursor.c: task option paging 'cursor': a part reads its query
 * whole through one server-side cursor, in one snapshot, a page at a time.
 *
 *   SELECT NULL::pg_catalog.text,                        -- no key
 *          (id)::pg_catalog.text | NULL::pg_catalog.text, -- no _id (id_column '')
 *          [routing, version,] "ecp:row".*               -- the document's columns
 *     FROM (<query>) AS "ecp:row"
 *
 * Nothing is asked of the query's columns, so any query can be read: an
 * aggregate, a join whose rows have no unique column.
 *
 * ecp commits a checkpoint after every acknowledged page and holds no
 * transaction across HTTP, so the cursor must outlive commits: it is
 * holdable.  PostgreSQL makes a holdable cursor outlive its transaction
 * by running the rest of its query into a tuplestore when the transaction
 * commits (PreCommit_Portals -> PersistHoldablePortal).  By then the
 * sandbox's settings are gone (sandbox.c pops them before the commit), so
 * the commit must find nothing left to run: the cursor is pinned and held
 * here, explicitly, inside the sandbox (HoldPinnedPortals, what a
 * procedure's COMMIT does for its cursor loops), before its transaction
 * commits.  The whole query, and every function it calls, thus runs as
 * the owner, security-restricted, with the stop poll armed (a pause
 * interrupts it); later transactions only read stored rows, text columns
 * detoasted when they were stored, which runs nobody's code.
 *
 * The held result lives in a tuplestore: work_mem in memory, the rest in
 * temporary files (temp_file_limit applies), until the part ends, is
 * stopped or fails.  Pages are fetched from it batch_size rows at a time
 * through page_reader.c's receiver, so the worker's memory stays bounded
 * by the batch.  The store is random access: a page read again from the
 * checkpoint (a stop the run outlived, a read-ahead that failed) is
 * fetched from the checkpoint's row number, the part's position.
 *
 * The result dies with the worker, and with a pause: a part that starts
 * with a checkpoint (its worker died, its run was paused or failed and
 * resumed) runs the query again from the beginning, in a new snapshot;
 * its counters count again from 0 and the flow says "cursor restarted"
 * (ecp_store_restart_part).  Documents are sent again: with an _id they
 * are written again (at-least-once, idempotent by _id); without one they
 * are created again (duplicates).
 */
#include "sync.h"

#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "tcop/dest.h"
#include "tcop/pquery.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/tuplestore.h"

/* A cursor source's state (in its own memory, source.c). */
typedef struct CursorReader
{
	MemoryContext context;		/* the state's memory */
	char	   *portal_name;	/* the held cursor, or NULL: none */
	int64		fetched;		/* rows read from it so far: its position */
	int64		rows;			/* rows of the held result */
	EcpPageColumns columns;		/* which of its columns are ecp's */
} CursorReader;

/*
 * The cursor's query: the page's columns over the owner's query (no key;
 * which columns are ecp's into columns).
 */
static char *
cursor_sql(const EcpPartConfig *config, EcpPageColumns *columns)
{
	const char *id = config->no_id ? "NULL" ECP_AS_TEXT
		: psprintf("(%s)" ECP_AS_TEXT, ecp_source_column_ref(config->id_column));

	return psprintf("SELECT %s FROM (%s\n) AS " ECP_ROW_ALIAS,
					ecp_page_select_list(config, "NULL" ECP_AS_TEXT, id, InvalidOid, columns),
					config->query);
}

/*
 * Open the cursor and hold it, inside SPI as the owner (sandboxed): the
 * whole query runs here, into the held result.
 */
static Portal
open_held_cursor(const EcpPartConfig *config, EcpPageColumns *columns)
{
	SPIPlanPtr	plan;
	Portal		portal;

	/* planned for reading forwards: no Material node on top of the plan */
	plan = SPI_prepare_cursor(cursor_sql(config, columns), 0, NULL, CURSOR_OPT_HOLD | CURSOR_OPT_NO_SCROLL);
	if (plan == NULL)
		elog(ERROR, "ecp: could not plan the cursor of the source (SPI code %d)", SPI_result);
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	if (portal == NULL)
		elog(ERROR, "ecp: could not open the cursor of the source");

	/*
	 * Nothing was fetched yet, so holding stores every row; marked
	 * scrollable now, the store is random access (a page is read again
	 * from any row), which reads only the store: once held, the plan is
	 * gone.
	 */
	portal->cursorOptions = (portal->cursorOptions & ~CURSOR_OPT_NO_SCROLL) | CURSOR_OPT_SCROLL;
	PinPortal(portal);
	HoldPinnedPortals();
	if (!portal->autoHeld || portal->createSubid != InvalidSubTransactionId ||
		portal->holdStore == NULL)
		elog(ERROR, "ecp: the cursor of the source was not held inside the sandbox");
	return portal;
}

/* The held cursor, or NULL when there is none or a fetch broke it. */
static Portal
held_cursor(const CursorReader *reader)
{
	Portal		portal = reader->portal_name ? GetPortalByName(reader->portal_name) : NULL;

	if (portal == NULL || portal->status != PORTAL_READY || portal->holdStore == NULL)
		return NULL;
	return portal;
}

/*
 * Drop the held cursor and its stored rows (temporary files too), in any
 * state: at the part's end, a stop, an error, a restart.  A held portal
 * belongs to no transaction: dropping it runs no code but freeing.
 */
static void
drop_held_cursor(CursorReader *reader)
{
	Portal		portal;

	if (reader->portal_name == NULL)
		return;
	portal = GetPortalByName(reader->portal_name);
	pfree(reader->portal_name);
	reader->portal_name = NULL;
	if (portal == NULL)
		return;
	if (portal->portalPinned)
		UnpinPortal(portal);
	if (portal->status != PORTAL_ACTIVE)
		PortalDrop(portal, false);
}

/* Run the query into a new held cursor, in a sandboxed transaction. */
static void
hold_query(CursorReader *reader, EcpPartConfig *config)
{
	MemoryContext back_to;
	Portal		portal;

	drop_held_cursor(reader);
	back_to = ecp_begin_as_owner(config);
	if (config->query == NULL)
		config->query = MemoryContextStrdup(TopMemoryContext,
											ecp_checked_statement_text(config->raw_query));
	SPI_connect();
	portal = open_held_cursor(config, &reader->columns);
	reader->portal_name = MemoryContextStrdup(reader->context, portal->name);
	reader->rows = tuplestore_tuple_count(portal->holdStore);
	reader->fetched = 0;
	SPI_finish();
	ecp_commit_as_owner(back_to);
}

/*
 * The query again from the beginning: a new held result, the part's
 * counters from 0 and the flow row (why: what lost the old one).
 */
static void
restart_query(CursorReader *reader, EcpPartConfig *config, const char *why)
{
	hold_query(reader, config);
	ecp_store_restart_part(config, reader->rows, why);
}

/* What paging cursor cannot do (the task's checks refuse it first). */
static void
refuse_what_cannot_work(const EcpPartConfig *config)
{
	if (config->since_column)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("task \"%s\" reads its query through one cursor (paging cursor), which has no since_column filter",
						config->task_name),
				 errhint("Remove option since_column, or page by a unique key (paging 'keyset').")));
}

static void *
cursor_open(EcpPartConfig *config, MemoryContext context)
{
	CursorReader *reader = MemoryContextAllocZero(context, sizeof(CursorReader));

	reader->context = context;
	refuse_what_cannot_work(config);
	PG_TRY();
	{
		if (config->progress.position > 0)
			restart_query(reader, config,
						  config->recovering ? "the part's worker died"
						  : "the part went on after a pause, a failure or a stop");
		else
			hold_query(reader, config);
	}
	PG_CATCH();
	{
		/* held cursors outlive the abort: nothing else would drop it */
		drop_held_cursor(reader);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return reader;
}

/*
 * Leave the cursor after its first `rows` rows: FETCH ABSOLUTE n stops on
 * row n (0: before the first).  Rows come from the random-access store.
 */
static void
move_to(Portal portal, int64 rows)
{
	(void) PortalRunFetch(portal, FETCH_ABSOLUTE, (long) rows, None_Receiver);
}

/* The page of the rows after the first `from`, as the owner. */
static int
fetch_page(CursorReader *reader, EcpPartConfig *config, int64 from, EcpBatch *batch)
{
	MemoryContext back_to = ecp_begin_as_owner(config);
	Portal		portal = held_cursor(reader);
	int			rows;

	if (portal == NULL)
		elog(ERROR, "ecp: the held cursor of the source is gone");
	if (reader->fetched != from)
		move_to(portal, from);
	reader->fetched = from;
	rows = ecp_read_portal_rows(portal, config->batch_size, &reader->columns, batch->docs,
								config->batch_size, batch->context);
	reader->fetched += rows;
	ecp_commit_as_owner(back_to);
	return rows;
}

/*
 * The page after after->position rows (the checkpoint, or the page in
 * flight's end when read ahead) into batch; false at the end.  A cursor
 * that a failed fetch broke is run again from the beginning, but only
 * from the checkpoint: a page in flight would be counted into the new
 * run's counters.  (Every failed read is followed by a read from the
 * checkpoint, so a read ahead never meets a broken cursor.)
 */
static bool
cursor_read(void *state, EcpPartConfig *config, const EcpPosition *after, EcpBatch *batch)
{
	CursorReader *reader = state;
	int64		from = after->position;
	int			rows;
	MemoryContext caller;

	if (held_cursor(reader) == NULL)
	{
		if (after->position != config->progress.position)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("ecp: the held cursor of run " INT64_FORMAT " part %d broke while a page was in flight",
							config->run_id, config->part_no)));
		restart_query(reader, config, "a fetch from the held result failed");
		from = 0;
	}
	batch->docs = MemoryContextAllocZero(batch->context, sizeof(EcpDoc) * config->batch_size);
	rows = fetch_page(reader, config, from, batch);
	/* a row's number stands in for its key in messages (a NULL id's dead letter) */
	caller = MemoryContextSwitchTo(batch->context);
	for (int i = 0; i < rows; i++)
		batch->docs[i].key = psprintf("row " INT64_FORMAT, from + i + 1);
	MemoryContextSwitchTo(caller);
	batch->ndocs = rows;
	batch->read_any = rows > 0;
	batch->end.last_key = NULL;
	batch->end.position = from + rows;
	return batch->read_any;
}

/* The held result's rows: exact, counted when the query ran. */
static int64
cursor_total(void *state, EcpPartConfig *config, bool *is_estimate)
{
	CursorReader *reader = state;

	*is_estimate = false;
	return reader->rows;
}

static void
cursor_close(void *state)
{
	drop_held_cursor((CursorReader *) state);
}

const EcpSourceOps ecp_cursor_source = {
	.name = "cursor",
	.open = cursor_open,
	.read = cursor_read,
	.total = cursor_total,
	.estimated_total = ecp_source_no_estimate,
	.unreadable = ecp_source_nothing_unreadable,
	.close = cursor_close,
};
