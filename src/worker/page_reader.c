/*
 * page_reader.c: run a page query of a source and take its rows straight
 * into the page's documents.
 *
 * SPI's own result (a tuple table) would copy every row once more: the
 * executor's slot is formed into a heap tuple in SPI's memory, and ecp
 * then copies each column out of it.  A page holds thousands of
 * documents of hundreds of bytes, and that copy cost about a tenth of a
 * worker's time; this DestReceiver copies each column once, from the
 * slot into the page's memory, with its length (the NDJSON builder then
 * needs no strlen).
 *
 * A page query returns (key text, id text, document text), the routing
 * and version (text) when the task names columns for them, and, last,
 * since_column's value in its own type for an incremental run (since.c).
 * At most capacity rows are kept (the caller asks for one row past the
 * page, to compare keys across its end); more are not expected, as the
 * query has a LIMIT.  A held cursor's rows (paging cursor, source_cursor.c)
 * come through the same receiver, fetched a page at a time.
 */
#include "sync.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/params.h"
#include "tcop/dest.h"
#include "tcop/pquery.h"
#include "utils/builtins.h"

typedef struct PageReceiver
{
	DestReceiver pub;
	EcpDoc	   *docs;
	int			capacity;
	int			count;
	MemoryContext context;
	Oid			since_type;		/* the last column's, or InvalidOid: none */
} PageReceiver;

/* A text datum as a NUL-terminated copy in context, and its length. */
static char *
copy_text(Datum value, bool isnull, MemoryContext context, int *length)
{
	text	   *t;
	int			len;
	char	   *copy;

	*length = 0;
	if (isnull)
		return NULL;
	t = DatumGetTextPP(value);
	len = VARSIZE_ANY_EXHDR(t);
	copy = MemoryContextAlloc(context, len + 1);
	memcpy(copy, VARDATA_ANY(t), len);
	copy[len] = '\0';
	*length = len;
	return copy;
}

static bool
receive_row(TupleTableSlot *slot, DestReceiver *self)
{
	PageReceiver *receiver = (PageReceiver *) self;
	EcpDoc	   *doc;
	int			ignored;

	if (receiver->count >= receiver->capacity)
		return true;
	slot_getallattrs(slot);
	doc = &receiver->docs[receiver->count++];
	memset(doc, 0, sizeof(*doc));
	doc->key = copy_text(slot->tts_values[0], slot->tts_isnull[0], receiver->context, &ignored);
	doc->id = copy_text(slot->tts_values[1], slot->tts_isnull[1], receiver->context, &ignored);
	doc->json = copy_text(slot->tts_values[2], slot->tts_isnull[2], receiver->context, &doc->json_len);
	if (OidIsValid(receiver->since_type))
	{
		int			last = slot->tts_tupleDescriptor->natts - 1;

		doc->has_since = !slot->tts_isnull[last];
		if (doc->has_since)
			doc->since = ecp_since_datum_value(receiver->since_type, slot->tts_values[last]);
	}
	if (slot->tts_tupleDescriptor->natts - (OidIsValid(receiver->since_type) ? 1 : 0) >= 5)
	{
		/* routing_column, version_column (ecp_source_write_columns) */
		doc->routing = copy_text(slot->tts_values[3], slot->tts_isnull[3], receiver->context, &ignored);
		doc->version = copy_text(slot->tts_values[4], slot->tts_isnull[4], receiver->context, &ignored);
	}
	return true;
}

/*
 * The columns must be the text ecp asked for before any Datum is read as
 * text: 3, or 5 with the routing and version columns; then the since
 * column, of exactly the type asked for, before its Datum is read.
 */
static void
startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	PageReceiver *receiver = (PageReceiver *) self;
	int			since = OidIsValid(receiver->since_type) ? 1 : 0;
	int			text_columns = typeinfo->natts - since;

	if (text_columns != 3 && text_columns != 5)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("a page query of the source returned %d columns, not %d or %d",
						typeinfo->natts, 3 + since, 5 + since)));
	for (int attno = 1; attno <= text_columns; attno++)
		ecp_require_column_type(typeinfo, attno, TEXTOID, "a page query of the source");
	if (since)
		ecp_require_column_type(typeinfo, typeinfo->natts, receiver->since_type,
								"a page query of the source (since_column)");
}

static void
shutdown_receiver(DestReceiver *self)
{
}

static void
destroy(DestReceiver *self)
{
}

/* A receiver that keeps at most capacity rows in docs, copied into context. */
static void
init_receiver(PageReceiver *receiver, Oid since_type, EcpDoc *docs, int capacity,
			  MemoryContext context)
{
	memset(receiver, 0, sizeof(*receiver));
	receiver->pub.receiveSlot = receive_row;
	receiver->pub.rStartup = startup;
	receiver->pub.rShutdown = shutdown_receiver;
	receiver->pub.rDestroy = destroy;
	receiver->pub.mydest = DestNone;
	receiver->docs = docs;
	receiver->capacity = capacity;
	receiver->context = context;
	receiver->since_type = since_type;
}

/*
 * Run sql (nargs parameters of types, values) inside SPI; its rows into
 * docs (at most capacity), copied into context.  The number of rows.
 */
int
ecp_read_page_rows(const char *sql, int nargs, Oid *types, Datum *values,
				   EcpDoc *docs, int capacity, MemoryContext context)
{
	return ecp_read_page_rows_since(sql, nargs, types, values, InvalidOid, docs, capacity, context);
}

/*
 * The same for a page query whose last column is since_column's value,
 * of type since_type (InvalidOid: it has none).
 */
int
ecp_read_page_rows_since(const char *sql, int nargs, Oid *types, Datum *values,
						 Oid since_type, EcpDoc *docs, int capacity, MemoryContext context)
{
	PageReceiver receiver;
	SPIExecuteOptions options;
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);
	ParamListInfo params = nargs > 0 ? makeParamList(nargs) : NULL;
	int			rc;

	if (plan == NULL)
		elog(ERROR, "ecp: could not plan a page of the source (SPI code %d)", SPI_result);
	for (int i = 0; i < nargs; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = false;
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = types[i];
	}
	init_receiver(&receiver, since_type, docs, capacity, context);
	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = true;
	options.dest = &receiver.pub;
	rc = SPI_execute_plan_extended(plan, &options);
	if (rc < 0)
		elog(ERROR, "ecp: reading a page of the source failed (SPI code %d)", rc);
	SPI_freeplan(plan);
	return receiver.count;
}

/*
 * The next count rows of an open cursor (source_cursor.c: a page query's
 * columns, held), into docs through the same receiver: at most capacity,
 * copied into context.  The number of rows (fewer than count: its end).
 */
int
ecp_read_portal_rows(Portal portal, long count, EcpDoc *docs, int capacity,
					 MemoryContext context)
{
	PageReceiver receiver;

	init_receiver(&receiver, InvalidOid, docs, capacity, context);
	(void) PortalRunFetch(portal, FETCH_FORWARD, count, &receiver.pub);
	return receiver.count;
}
