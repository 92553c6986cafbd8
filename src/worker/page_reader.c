/*
 * page_reader.c: run a page query of a source and take its rows straight
 * into the page's documents.
 *
 * SPI's own result (a tuple table) would copy every row once more: the
 * executor's slot is formed into a heap tuple in SPI's memory, and ecp
 * then copies each column out of it.  A page holds thousands of
 * documents of hundreds of bytes, and that copy cost about a tenth of a
 * worker's time; this DestReceiver takes each column from the slot into
 * the page's memory, with its length (the NDJSON builder then needs no
 * strlen).
 *
 * A page query returns ecp's own columns first: key and id (text), the
 * routing and version (text) when the task names columns for them, and
 * since_column's value in its own type for an incremental run (since.c);
 * then the row's own columns ("ecp:row".*), which doc_writer.c writes as
 * the document, the JSON object row_to_json would write of the row (the
 * executor never forms the row into a composite).  The caller says how
 * many leading columns are ecp's (EcpPageColumns).  At most capacity rows
 * are kept (the caller asks for one row past the page, to compare keys
 * across its end); more are not expected, as the query has a LIMIT.  An
 * id lookup has no LIMIT: its array grows (ecp_read_all_rows).  A held
 * cursor's rows (paging cursor, source_cursor.c) come through the same
 * receiver, fetched a page at a time (ecp_read_portal_rows).
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
	bool		grows;			/* an id lookup: docs grows, in its own memory */
	int			count;
	MemoryContext context;		/* the documents' */
	EcpPageColumns columns;
	EcpDocWriter *writer;		/* the row's columns (the query's type) */
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
	const EcpPageColumns *columns = &receiver->columns;
	Datum	   *values;
	bool	   *isnull;
	EcpDoc	   *doc;
	int			ignored;

	if (receiver->count >= receiver->capacity)
	{
		if (!receiver->grows)
			return true;
		receiver->capacity *= 2;
		receiver->docs = repalloc(receiver->docs, sizeof(EcpDoc) * receiver->capacity);
	}
	slot_getallattrs(slot);
	values = slot->tts_values;
	isnull = slot->tts_isnull;
	doc = &receiver->docs[receiver->count++];
	memset(doc, 0, sizeof(*doc));
	doc->key = copy_text(values[0], isnull[0], receiver->context, &ignored);
	doc->id = copy_text(values[1], isnull[1], receiver->context, &ignored);
	if (columns->write_columns)
	{
		/* routing_column, version_column (ecp_source_write_columns) */
		doc->routing = copy_text(values[2], isnull[2], receiver->context, &ignored);
		doc->version = copy_text(values[3], isnull[3], receiver->context, &ignored);
	}
	if (OidIsValid(columns->since_type))
	{
		int			since = columns->leading - 1;

		doc->has_since = !isnull[since];
		if (doc->has_since)
			doc->since = ecp_since_datum_value(columns->since_type, values[since]);
	}
	doc->json = ecp_doc_write(receiver->writer, values, isnull, receiver->context, &doc->json_len);
	return true;
}

/*
 * ecp's own columns must be what it asked for before any Datum is read:
 * text, and last of them the since column of exactly its type; the
 * row's columns after them are written by their types (doc_writer.c).
 */
static void
startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	PageReceiver *receiver = (PageReceiver *) self;
	const EcpPageColumns *columns = &receiver->columns;
	int			since = OidIsValid(columns->since_type) ? 1 : 0;

	if (typeinfo->natts < columns->leading)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("a page query of the source returned %d columns, not at least %d",
						typeinfo->natts, columns->leading)));
	for (int attno = 1; attno <= columns->leading - since; attno++)
		ecp_require_column_type(typeinfo, attno, TEXTOID, "a page query of the source");
	if (since)
		ecp_require_column_type(typeinfo, columns->leading, columns->since_type,
								"a page query of the source (since_column)");
	receiver->writer = ecp_doc_writer_for(typeinfo, columns->leading);
}

static void
shutdown_receiver(DestReceiver *self)
{
}

static void
destroy(DestReceiver *self)
{
}

/*
 * A receiver of at most capacity rows into docs, copied into context,
 * whose leading columns are ecp's (columns).
 */
static void
init_receiver(PageReceiver *receiver, const EcpPageColumns *columns, EcpDoc *docs, int capacity,
			  MemoryContext context)
{
	memset(receiver, 0, sizeof(*receiver));
	receiver->docs = docs;
	receiver->capacity = capacity;
	receiver->context = context;
	receiver->columns = *columns;
	receiver->pub.receiveSlot = receive_row;
	receiver->pub.rStartup = startup;
	receiver->pub.rShutdown = shutdown_receiver;
	receiver->pub.rDestroy = destroy;
	receiver->pub.mydest = DestNone;
}

/* Run sql (nargs parameters of types, values) inside SPI into receiver. */
static void
run_page_query(const char *sql, int nargs, Oid *types, Datum *values, PageReceiver *receiver)
{
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
	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = true;
	options.dest = &receiver->pub;
	rc = SPI_execute_plan_extended(plan, &options);
	if (rc < 0)
		elog(ERROR, "ecp: reading a page of the source failed (SPI code %d)", rc);
	SPI_freeplan(plan);
}

/*
 * Run the page query sql (nargs parameters of types, values), whose
 * leading columns are ecp's (columns), inside SPI; its rows into docs (at
 * most capacity), copied into context.  The number of rows.
 */
int
ecp_read_page_rows(const char *sql, int nargs, Oid *types, Datum *values,
				   const EcpPageColumns *columns, EcpDoc *docs, int capacity,
				   MemoryContext context)
{
	PageReceiver receiver;

	init_receiver(&receiver, columns, docs, capacity, context);
	run_page_query(sql, nargs, types, values, &receiver);
	return receiver.count;
}

/*
 * Every row of sql (no parameters; its own bounds, an id lookup's list),
 * into *docs: an array in the caller's current memory that grows with the
 * rows; the documents in context.  The number of rows.
 */
int
ecp_read_all_rows(const char *sql, const EcpPageColumns *columns, EcpDoc **docs,
				  MemoryContext context)
{
	PageReceiver receiver;

	init_receiver(&receiver, columns, palloc(sizeof(EcpDoc) * 64), 64, context);
	receiver.grows = true;
	run_page_query(sql, 0, NULL, NULL, &receiver);
	*docs = receiver.docs;
	return receiver.count;
}

/*
 * The select list of a page query over "ecp:row": key_sql and id_sql
 * (text), the task's routing and version columns when it names either,
 * since_column's value when since_type is valid (since.c), then the row's
 * own columns; which of them are ecp's into columns.  Inside SPI, as the
 * owner (the types are the query's).
 */
char *
ecp_page_select_list(const EcpPartConfig *config, const char *key_sql, const char *id_sql,
					 Oid since_type, EcpPageColumns *columns)
{
	char	   *write_columns = ecp_source_write_columns(config);
	char	   *since_column = OidIsValid(since_type) ? ecp_since_page_column(config) : "";

	columns->write_columns = write_columns[0] != '\0';
	columns->since_type = since_column[0] != '\0' ? since_type : InvalidOid;
	columns->leading = 2 + (columns->write_columns ? 2 : 0) + (OidIsValid(columns->since_type) ? 1 : 0);
	return psprintf("%s, %s%s%s, " ECP_ROW_COLUMNS_SQL, key_sql, id_sql, write_columns, since_column);
}

/*
 * The next count rows of an open cursor (source_cursor.c: a page query's
 * columns, held), into docs through the same receiver: at most capacity,
 * copied into context.  The number of rows (fewer than count: its end).
 */
int
ecp_read_portal_rows(Portal portal, long count, const EcpPageColumns *columns, EcpDoc *docs,
					 int capacity, MemoryContext context)
{
	PageReceiver receiver;

	init_receiver(&receiver, columns, docs, capacity, context);
	(void) PortalRunFetch(portal, FETCH_FORWARD, count, &receiver.pub);
	return receiver.count;
}
