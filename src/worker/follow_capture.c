/*
 * follow_capture.c: mode decoding of a follower, logical decoding with
 * the built-in pgoutput plugin.
 *
 * The capture part (stage 0 of a follow run) creates what the follower
 * reads: a publication of the followed tables, then a logical replication
 * slot, both named ecp_follow_<task id> and owned by ecp, and records the
 * slot's consistent point.  Publication first: a slot whose start
 * predates its publication fails to decode ("publication does not
 * exist").  The slot is created in a transaction without an xid, as
 * PostgreSQL requires.  Then it waits for every transaction that was
 * still running when the slot became consistent, so that the backfill
 * (the load parts of stage 1, which start only now) sees every change
 * committed before the slot's start, and the slot every change after it.
 *
 * The decoder (ecp_decoder_capture, called by the follower before each
 * page, source_follow.c) moves changes from the slot to ecp.follow_queue:
 * it peeks (never gets: a get confirms before anything is stored),
 * turns each insert, update and delete of a followed table into the key
 * it maps by (new and old row), inserts them, waits until the decoded
 * transactions are visible to new snapshots (a commit is decodable a
 * moment before it leaves the proc array), commits, and only then
 * advances the slot to the end of the last transaction stored.  When the
 * peek returned everything up to the flush position it asked for, the
 * slot is advanced to that position, so a follower of quiet tables on a
 * busy server does not retain WAL.  A crash between commit and advance
 * stores some changes twice; they are applied twice, harmlessly.
 */
#include "sync.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "replication/slot.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "json_build.h"
#include "pgoutput.h"

/* How many changes one peek asks for (whole transactions come back). */
#define CHANGES_PER_PEEK 20000
/* Rows fetched from the peek's result at a time. */
#define PEEK_FETCH 1000
/* Keys stored per INSERT into the queue. */
#define KEYS_PER_INSERT 1000

/* A followed table as the decoder maps it. */
typedef struct DecodedTable
{
	Oid			relid;
	char	   *key_column;
	int			key_index;		/* in the Relation message; -1: not seen */
} DecodedTable;

struct EcpDecoder
{
	char	   *slot;
	char	   *publication;
	DecodedTable *tables;
	int			ntables;
	XLogRecPtr	confirmed;		/* where this decoder last moved the slot */
	TimestampTz advanced_at;
};

/*
 * An idle slot is moved on when this much WAL went by, or this long
 * after the last move: each move writes WAL of its own (the follower's
 * row), which must not keep a quiet server busy.
 */
#define IDLE_ADVANCE_BYTES (1024 * 1024)
#define IDLE_ADVANCE_MS 10000

/* The keys of decoded changes, waiting for their INSERT. */
typedef struct KeyBuffer
{
	Oid			relids[KEYS_PER_INSERT];
	char	   *keys[KEYS_PER_INSERT];	/* NULL: a truncate */
	TimestampTz committed_at[KEYS_PER_INSERT];
	int			n;
	int64		stored;
} KeyBuffer;

/* One decoding pass: what was read, up to where. */
typedef struct PeekPass
{
	EcpDecoder *decoder;
	EcpPartConfig *config;
	KeyBuffer	buffer;
	TransactionId xid;			/* of the transaction being read */
	TimestampTz commit_time;
	TransactionId *xids;		/* every transaction read, for the visibility wait */
	int			nxids;
	int			xids_capacity;
	XLogRecPtr	last_end;		/* end of the last whole transaction read */
	int64		rows;
} PeekPass;

static char *
text_column(HeapTuple tuple, TupleDesc desc, int column)
{
	char	   *value = SPI_getvalue(tuple, desc, column);

	return value;
}

/* The follower's row and tables (as ecp); NULL unless it decodes. */
EcpDecoder *
ecp_decoder_open(EcpPartConfig *config, MemoryContext context)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(config->task_id)};
	EcpDecoder *decoder = NULL;
	MemoryContext back_to = ecp_begin_bookkeeping();

	SPI_connect();
	if (SPI_execute_with_args("SELECT f.slot_name, f.publication_name, t.relid, t.key_column "
							  "  FROM ecp.follower f JOIN ecp.follow_table t ON t.task_id = f.task_id "
							  " WHERE f.task_id = $1 AND f.mode = 'decoding' ORDER BY t.relid",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ecp: reading the follower failed");
	if (SPI_processed > 0)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;

		ecp_require_column_type(desc, 1, TEXTOID, "the follower");
		ecp_require_column_type(desc, 2, TEXTOID, "the follower");
		ecp_require_column_type(desc, 3, OIDOID, "the follower");
		ecp_require_column_type(desc, 4, TEXTOID, "the follower");
		decoder = MemoryContextAllocZero(context, sizeof(EcpDecoder));
		decoder->slot = MemoryContextStrdup(context, text_column(SPI_tuptable->vals[0], desc, 1));
		decoder->publication = MemoryContextStrdup(context, text_column(SPI_tuptable->vals[0], desc, 2));
		decoder->ntables = (int) SPI_processed;
		decoder->tables = MemoryContextAllocZero(context, sizeof(DecodedTable) * decoder->ntables);
		for (int i = 0; i < decoder->ntables; i++)
		{
			bool		isnull;

			decoder->tables[i].relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], desc, 3, &isnull));
			decoder->tables[i].key_column =
				MemoryContextStrdup(context, text_column(SPI_tuptable->vals[i], desc, 4));
			decoder->tables[i].key_index = -1;
		}
	}
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	return decoder;
}

static DecodedTable *
decoded_table(EcpDecoder *decoder, Oid relid)
{
	for (int i = 0; i < decoder->ntables; i++)
		if (decoder->tables[i].relid == relid)
			return &decoder->tables[i];
	return NULL;
}

/* Store the buffered keys (inside the pass's transaction). */
static void
flush_keys(PeekPass *pass)
{
	KeyBuffer  *buffer = &pass->buffer;
	Datum	   *relids,
			   *keys,
			   *times;
	bool	   *key_nulls;
	int			dims[1];
	int			lbs[1] = {1};
	Oid			types[4] = {INT8OID, OIDARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		values[4];

	if (buffer->n == 0)
		return;
	relids = palloc(sizeof(Datum) * buffer->n);
	keys = palloc(sizeof(Datum) * buffer->n);
	times = palloc(sizeof(Datum) * buffer->n);
	key_nulls = palloc(sizeof(bool) * buffer->n);
	for (int i = 0; i < buffer->n; i++)
	{
		relids[i] = ObjectIdGetDatum(buffer->relids[i]);
		key_nulls[i] = buffer->keys[i] == NULL;
		keys[i] = key_nulls[i] ? (Datum) 0 : CStringGetTextDatum(buffer->keys[i]);
		times[i] = TimestampTzGetDatum(buffer->committed_at[i]);
	}
	dims[0] = buffer->n;
	values[0] = Int64GetDatum(pass->config->task_id);
	values[1] = PointerGetDatum(construct_array(relids, buffer->n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_md_array(keys, key_nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(times, buffer->n, TIMESTAMPTZOID, sizeof(TimestampTz),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (SPI_execute_with_args("INSERT INTO ecp.follow_queue (task_id, relid, key, committed_at, owner) "
							  "SELECT $1, c.relid, c.key, c.at, f.owner "
							  "  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4)) AS c(relid, key, at), "
							  "       ecp.follower f WHERE f.task_id = $1",
							  4, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "ecp: storing decoded changes failed");
	buffer->stored += buffer->n;
	buffer->n = 0;
}

static void
buffer_key(PeekPass *pass, Oid relid, const char *key)
{
	KeyBuffer  *buffer = &pass->buffer;

	if (buffer->n == KEYS_PER_INSERT)
		flush_keys(pass);
	buffer->relids[buffer->n] = relid;
	buffer->keys[buffer->n] = key ? pstrdup(key) : NULL;
	buffer->committed_at[buffer->n] = pass->commit_time;
	buffer->n++;
}

/* The key column's text in a tuple of the table; NULL when it is NULL. */
static const char *
key_of(PeekPass *pass, DecodedTable *table, const EcpPgoTuple *tuple, const char *which)
{
	const EcpPgoValue *value;

	if (table->key_index < 0 || table->key_index >= tuple->ncolumns)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a decoded change of %s has no column \"%s\" (%s row)",
						get_rel_name(table->relid) ? get_rel_name(table->relid) : "a followed table",
						table->key_column, which),
				 errhint("The table's definition changed: ecp.unfollow and ecp.follow the task again.")));
	value = &tuple->columns[table->key_index];
	if (value->kind == ECP_PGO_NULL)
		return NULL;
	if (value->kind != ECP_PGO_TEXT)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the %s row of a decoded change of table %u carries no value of column \"%s\"",
						which, table->relid, table->key_column),
				 errdetail("The value was sent as '%c' (an unchanged TOAST value, or binary).", value->kind),
				 errhint("Map the table by a short column in option follow_tables.")));
	return pnstrdup((const char *) value->data, value->length);
}

/* A Relation message: where its key column is (relations come per peek). */
static void
read_relation(PeekPass *pass, const EcpPgoRelation *relation)
{
	DecodedTable *table = decoded_table(pass->decoder, relation->relid);

	if (table == NULL)
		return;
	table->key_index = -1;
	for (int i = 0; i < relation->ncolumns; i++)
		if (strcmp(relation->columns[i].name, table->key_column) == 0)
			table->key_index = i;
	if (table->key_index < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("followed table %s.%s has no column \"%s\" any more",
						relation->schema, relation->name, table->key_column),
				 errhint("ecp.unfollow the task, change option follow_tables, and ecp.follow it again.")));
}

static void
read_change(PeekPass *pass, const EcpPgoChange *change)
{
	DecodedTable *table = decoded_table(pass->decoder, change->relid);
	const char *key;

	if (table == NULL)
		return;					/* a table of the publication no more followed */
	if (change->has_new && (key = key_of(pass, table, &change->new_tuple, "new")) != NULL)
		buffer_key(pass, table->relid, key);
	/* a delete, or an update that moved the row: its old key too */
	if (change->old_kind != '\0' && (key = key_of(pass, table, &change->old_tuple, "old")) != NULL)
		buffer_key(pass, table->relid, key);
}

static void
remember_xid(PeekPass *pass, TransactionId xid)
{
	if (pass->nxids == pass->xids_capacity)
	{
		pass->xids_capacity = Max(64, pass->xids_capacity * 2);
		pass->xids = pass->xids ? repalloc(pass->xids, sizeof(TransactionId) * pass->xids_capacity)
			: palloc(sizeof(TransactionId) * pass->xids_capacity);
	}
	pass->xids[pass->nxids++] = xid;
}

/* One message of the peek's result. */
static void
read_message(PeekPass *pass, const unsigned char *data, size_t len, EcpPgoMessage *message)
{
	char		error[ECP_PGO_ERROR_SIZE];

	if (!ecp_pgo_parse(data, len, message, error, sizeof(error)))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("ecp cannot read a message of replication slot \"%s\": %s", pass->decoder->slot, error),
				 errhint("ecp reads pgoutput protocol version 1 of PostgreSQL 15.")));
	switch (message->type)
	{
		case ECP_PGO_BEGIN:
			pass->xid = message->body.begin.xid;
			pass->commit_time = (TimestampTz) message->body.begin.commit_time;
			break;
		case ECP_PGO_COMMIT:
			remember_xid(pass, pass->xid);
			pass->last_end = message->body.commit.end_lsn;
			break;
		case ECP_PGO_RELATION:
			read_relation(pass, &message->body.relation);
			break;
		case ECP_PGO_INSERT:
		case ECP_PGO_UPDATE:
		case ECP_PGO_DELETE:
			read_change(pass, &message->body.change);
			break;
		case ECP_PGO_TRUNCATE:
			for (int i = 0; i < message->body.truncate.nrelations; i++)
			{
				Oid			relid = ecp_pgo_truncate_relid(&message->body.truncate, i);

				if (decoded_table(pass->decoder, relid))
					buffer_key(pass, relid, NULL);
			}
			break;
		default:
			break;				/* origin, type, message: nothing to follow */
	}
}

/*
 * Wait until every decoded transaction has left the proc array: a page
 * read after this sees its rows.
 */
static void
wait_until_visible(PeekPass *pass)
{
	for (int i = 0; i < pass->nxids; i++)
		if (TransactionIdIsValid(pass->xids[i]))
			XactLockTableWait(pass->xids[i], NULL, NULL, XLTW_None);
}

/*
 * Peek up to flush (SPI connected, as ecp) and store the keys; the number
 * of rows the peek returned.
 */
static int64
peek_and_store(PeekPass *pass, XLogRecPtr flush)
{
	Oid			types[3] = {TEXTOID, LSNOID, TEXTOID};
	Datum		values[3];
	Portal		portal;
	SPIPlanPtr	plan;
	EcpPgoMessage *message = palloc(sizeof(EcpPgoMessage));

	values[0] = CStringGetTextDatum(pass->decoder->slot);
	values[1] = LSNGetDatum(flush);
	values[2] = CStringGetTextDatum(pass->decoder->publication);
	plan = SPI_prepare(psprintf("SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes("
								"$1::pg_catalog.name, $2, %d, 'proto_version', '1', "
								"'publication_names', $3)", CHANGES_PER_PEEK),
					   3, types);
	if (plan == NULL)
		elog(ERROR, "ecp: preparing the peek of slot \"%s\" failed", pass->decoder->slot);
	portal = SPI_cursor_open(NULL, plan, values, NULL, true);
	for (;;)
	{
		SPITupleTable *fetched;
		uint64		nfetched;

		SPI_cursor_fetch(portal, true, PEEK_FETCH);
		if (SPI_processed == 0)
			break;
		/* storing keys runs an INSERT, which replaces SPI_tuptable */
		fetched = SPI_tuptable;
		nfetched = SPI_processed;
		ecp_require_column_type(fetched->tupdesc, 1, BYTEAOID, "a peek of the slot");
		for (uint64 i = 0; i < nfetched; i++)
		{
			bool		isnull;
			Datum		value = SPI_getbinval(fetched->vals[i], fetched->tupdesc, 1, &isnull);

			if (!isnull)
			{
				bytea	   *data = DatumGetByteaPP(value);

				read_message(pass, (const unsigned char *) VARDATA_ANY(data),
							 VARSIZE_ANY_EXHDR(data), message);
			}
			pass->rows++;
		}
		SPI_freetuptable(fetched);
	}
	SPI_cursor_close(portal);
	flush_keys(pass);
	pfree(message);
	return pass->rows;
}

/* Move the slot to lsn (never back) and record it (as ecp). */
static void
advance_slot(EcpDecoder *decoder, EcpPartConfig *config, XLogRecPtr lsn)
{
	Oid			types[3] = {TEXTOID, LSNOID, INT8OID};
	Datum		values[3] = {CStringGetTextDatum(decoder->slot), LSNGetDatum(lsn),
	Int64GetDatum(config->task_id)};
	MemoryContext back_to = ecp_begin_bookkeeping();

	SPI_connect();
	/* advancing decodes from restart_lsn: its time grows with the gap */
	SPI_execute("SET LOCAL statement_timeout = 0", false, 0);
	if (SPI_execute_with_args("SELECT pg_catalog.pg_replication_slot_advance($1::pg_catalog.name, $2) "
							  "  FROM pg_catalog.pg_replication_slots "
							  " WHERE slot_name = $1::pg_catalog.name AND confirmed_flush_lsn < $2",
							  2, types, values, NULL, false, 0) < 0 ||
		SPI_execute_with_args("UPDATE ecp.follower SET confirmed_lsn = $2 "
							  " WHERE task_id = $3 AND (confirmed_lsn IS NULL OR confirmed_lsn < $2)",
							  3, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "ecp: advancing replication slot \"%s\" failed", decoder->slot);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}

/*
 * A slot call that fails leaves the slot acquired by this process
 * (PostgreSQL releases it only in a backend's own error path): release
 * it, so a retry, or another process, can take it.
 */
static void
release_slot_on_error(void)
{
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
}

/* Peek, store and wait for visibility, in one transaction (as ecp). */
static XLogRecPtr
store_pass(PeekPass *pass)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext back_to;
	XLogRecPtr	flush;

	PG_TRY();
	{
		back_to = ecp_begin_bookkeeping();
		SPI_connect();
		/* the flush position, not the write position: all before it is decodable */
		flush = GetFlushRecPtr(NULL);
		(void) peek_and_store(pass, flush);
		wait_until_visible(pass);
		SPI_finish();
		ecp_commit_bookkeeping(back_to);
	}
	PG_CATCH();
	{
		release_slot_on_error();
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	return flush;
}

static void
advance_guarded(EcpDecoder *decoder, EcpPartConfig *config, XLogRecPtr target)
{
	PG_TRY();
	{
		advance_slot(decoder, config, target);
	}
	PG_CATCH();
	{
		release_slot_on_error();
		PG_RE_THROW();
	}
	PG_END_TRY();
	decoder->confirmed = target;
	decoder->advanced_at = GetCurrentTimestamp();
}

/*
 * Move what the slot holds into the follow queue; the number of keys
 * stored.  One transaction stores them; the slot moves after it commits.
 */
int64
ecp_decoder_capture(EcpDecoder *decoder, EcpPartConfig *config)
{
	PeekPass	pass;
	XLogRecPtr	flush;
	XLogRecPtr	target;

	memset(&pass, 0, sizeof(pass));
	pass.decoder = decoder;
	pass.config = config;
	pass.last_end = InvalidXLogRecPtr;
	flush = store_pass(&pass);

	/*
	 * Fewer rows than asked for: every transaction committed before flush
	 * was read, and the slot can move to flush even if none of them was
	 * of a followed table.
	 */
	target = pass.rows < CHANGES_PER_PEEK ? Max(flush, pass.last_end) : pass.last_end;
	if (target != InvalidXLogRecPtr && target > decoder->confirmed &&
		(pass.buffer.stored > 0 || target - decoder->confirmed >= IDLE_ADVANCE_BYTES ||
		 TimestampDifferenceExceeds(decoder->advanced_at, GetCurrentTimestamp(), IDLE_ADVANCE_MS)))
		advance_guarded(decoder, config, target);
	return pass.buffer.stored;
}
/* The follower's names and tables for the capture part (as ecp). */
typedef struct CaptureSetup
{
	char	   *slot;
	char	   *publication;
	char	   *tables;			/* "s.a, s.b", quoted */
	bool		has_start;		/* consistent_lsn recorded: a crash after it */
} CaptureSetup;

static CaptureSetup
capture_setup(EcpPartConfig *config)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(config->task_id)};
	CaptureSetup setup = {NULL, NULL, NULL, false};
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext back_to = ecp_begin_bookkeeping();
	StringInfoData tables;

	SPI_connect();
	if (SPI_execute_with_args("SELECT f.slot_name, f.publication_name, f.consistent_lsn IS NOT NULL, t.relid "
							  "  FROM ecp.follower f JOIN ecp.follow_table t ON t.task_id = f.task_id "
							  " WHERE f.task_id = $1 AND f.mode = 'decoding' ORDER BY t.relid",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ecp: reading the follower failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task \"%s\" is not followed in mode decoding any more", config->task_name)));
	ecp_require_column_type(SPI_tuptable->tupdesc, 1, TEXTOID, "the follower");
	ecp_require_column_type(SPI_tuptable->tupdesc, 2, TEXTOID, "the follower");
	ecp_require_column_type(SPI_tuptable->tupdesc, 3, BOOLOID, "the follower");
	ecp_require_column_type(SPI_tuptable->tupdesc, 4, OIDOID, "the follower");
	MemoryContextSwitchTo(caller);
	initStringInfo(&tables);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 4, &isnull));
		char	   *schema = get_namespace_name(get_rel_namespace(relid));
		char	   *name = get_rel_name(relid);

		if (schema == NULL || name == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("a table task \"%s\" follows (oid %u) was dropped", config->task_name, relid),
					 errhint("ecp.unfollow and ecp.follow the task again.")));
		appendStringInfo(&tables, "%s%s", i > 0 ? ", " : "", quote_qualified_identifier(schema, name));
	}
	setup.slot = pstrdup(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	setup.publication = pstrdup(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	setup.has_start = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3), "t") == 0;
	setup.tables = tables.data;
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	return setup;
}

static void
create_publication(const CaptureSetup *setup)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(setup->publication)};
	MemoryContext back_to = ecp_begin_bookkeeping();
	bool		exists;

	SPI_connect();
	SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
						  1, types, values, NULL, true, 1);
	exists = SPI_processed == 1;
	if (!exists &&
		SPI_execute(psprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert, update, delete, truncate', "
							 "publish_via_partition_root = true)",
							 quote_identifier(setup->publication), setup->tables), false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "ecp: creating publication \"%s\" failed", setup->publication);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}

/*
 * The slot, in a transaction that writes nothing (slot creation refuses
 * one with an xid); it waits for the transactions running now, bounded
 * so an idle-in-transaction session cannot hold the part for ever.
 */
static void
create_slot(const CaptureSetup *setup)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(setup->slot)};
	MemoryContext back_to = ecp_begin_bookkeeping();
	bool		exists;

	SPI_connect();
	SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1::pg_catalog.name",
						  1, types, values, NULL, true, 1);
	exists = SPI_processed == 1;
	SPI_execute("SET LOCAL statement_timeout = '10min'", false, 0);
	PG_TRY();
	{
		if (!exists &&
			SPI_execute_with_args("SELECT pg_catalog.pg_create_logical_replication_slot($1::pg_catalog.name, 'pgoutput')",
								  1, types, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "ecp: creating replication slot \"%s\" failed", setup->slot);
	}
	PG_CATCH();
	{
		release_slot_on_error();
		PG_RE_THROW();
	}
	PG_END_TRY();
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}

/*
 * Wait for the transactions running now (they may have committed before
 * the slot's start without being visible yet), then record the start.
 */
static void
record_start(EcpPartConfig *config, const CaptureSetup *setup)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(config->task_id), CStringGetTextDatum(setup->slot)};
	MemoryContext back_to = ecp_begin_bookkeeping();
	StringInfoData event;

	SPI_connect();
	if (SPI_execute("SELECT x::text::pg_catalog.xid FROM pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()) AS x",
					true, 0) == SPI_OK_SELECT)
	{
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			TransactionId xid = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[i],
																	SPI_tuptable->tupdesc, 1, &isnull));

			if (!isnull && TransactionIdIsValid(xid))
				XactLockTableWait(xid, NULL, NULL, XLTW_None);
		}
	}
	if (SPI_execute_with_args("UPDATE ecp.follower f SET consistent_lsn = s.confirmed_flush_lsn, "
							  "       confirmed_lsn = s.confirmed_flush_lsn "
							  "  FROM pg_catalog.pg_replication_slots s "
							  " WHERE f.task_id = $1 AND s.slot_name = $2::pg_catalog.name",
							  2, types, values, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "ecp: recording the start of replication slot \"%s\" failed", setup->slot);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);

	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "slot", setup->slot);
	ecp_json_key_string(&event, "publication", setup->publication);
	ecp_json_key_string(&event, "tables", setup->tables);
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_CAPTURE_READY, event.data);
}

/*
 * The capture part: publication, slot, start recorded; each step is
 * skipped when a worker that died did it already.
 */
void
ecp_follow_capture_part(EcpPartConfig *config)
{
	CaptureSetup setup = capture_setup(config);

	if (!setup.has_start)
	{
		create_publication(&setup);
		create_slot(&setup);
		record_start(config, &setup);
	}
	ecp_store_finish(config, 0);
}
