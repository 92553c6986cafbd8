/*
 * source_ids.c: the id source.  A run over a list of ids (ecp.start(task,
 * ids => ...), a task's ids, ecp.retry_failed, or the lines of an id
 * file) reads them batch_size at a time and looks each batch up through
 * the task's query:
 *
 *   SELECT key::text, id::text, row_to_json(row)::text   (all pg_catalog.)
 *     FROM (<query>) AS "ecp:row"
 *    WHERE id OPERATOR(pg_catalog.=) ANY ('{...}'::<id type>[])
 *
 * The ids are compared in the id column's own type when it is an integer
 * or a uuid, so an index (or, through mysql_fdw, MySQL's primary key:
 * the array constant is sent as IN (...)) finds them at once; other
 * types are compared as text.  An id the query does not return is
 * "missing": counted, or with option delete_missing sent as a delete in
 * the same _bulk request (an id that never existed is then a delete of a
 * document that is not there, which Elasticsearch answers "not_found" and
 * ecp counts as deleted).  An id that cannot be a value of an integer or
 * uuid column cannot be returned either: it is missing too, never an
 * error.  The checkpoint is the number of ids done.
 */
#include "sync.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

/* How a part looks its ids up (in the source's memory). */
struct EcpIdLookup
{
	Oid			id_type;
	char	   *select;			/* SELECT ... FROM (<query>) AS "ecp:row" */
	bool		bare;			/* no query: the ids go to a write service as
								 * they are, and it assembles the documents */
};

static bool
compared_in_own_type(Oid type)
{
	return type == INT2OID || type == INT4OID || type == INT8OID || type == UUIDOID;
}

/*
 * Build the lookup query (as the owner: the column types are the
 * query's), in context.
 */
EcpIdLookup *
ecp_ids_prepare(EcpPartConfig *config, MemoryContext context)
{
	MemoryContext back_to;
	Oid			key_type;
	char	   *write_columns;
	EcpIdLookup *lookup = MemoryContextAllocZero(context, sizeof(EcpIdLookup));

	lookup->bare = config->raw_query == NULL && config->write_service;
	if (lookup->bare)
		return lookup;
	back_to = ecp_begin_as_owner(config);
	if (config->query == NULL)
		config->query = MemoryContextStrdup(TopMemoryContext,
											ecp_checked_statement_text(config->raw_query));
	SPI_connect();
	ecp_source_column_types(config, &key_type, &lookup->id_type);
	write_columns = ecp_source_write_columns(config);
	lookup->select = MemoryContextStrdup(context, psprintf("SELECT (%s)" ECP_AS_TEXT ", (%s)" ECP_AS_TEXT ", " ECP_DOCUMENT_SQL "%s FROM (%s\n) AS " ECP_ROW_ALIAS,
							 ecp_source_column_ref(config->key_column),
							 ecp_source_column_ref(config->id_column),
							 write_columns, config->query));
	SPI_finish();
	ecp_commit_as_owner(back_to);
	return lookup;
}

/*
 * The id as the column's type prints it ("007" is 7), or NULL when it
 * cannot be a value of that type.
 */
static char *
canonical_id(const char *id, Oid type)
{
	char	   *end;
	long long	n;
	int			hex = 0;
	StringInfoData out;

	if (type == UUIDOID)
	{
		initStringInfo(&out);
		for (const char *c = id; *c; c++)
		{
			if (isxdigit((unsigned char) *c))
			{
				appendStringInfoChar(&out, tolower((unsigned char) *c));
				if (++hex == 8 || hex == 12 || hex == 16 || hex == 20)
					appendStringInfoChar(&out, '-');
			}
			else if (*c != '-' && !(c == id && *c == '{') && !(c[1] == '\0' && *c == '}'))
				return NULL;
		}
		return hex == 32 ? out.data : NULL;
	}
	if (!compared_in_own_type(type))
		return pstrdup(id);
	errno = 0;
	n = strtoll(id, &end, 10);
	if (errno != 0 || end == id || *end != '\0' ||
		(type == INT2OID && (n < PG_INT16_MIN || n > PG_INT16_MAX)) ||
		(type == INT4OID && (n < PG_INT32_MIN || n > PG_INT32_MAX)))
		return NULL;
	return psprintf("%lld", n);
}

static int
compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The ids as an array constant of the id column's type. */
static char *
id_array(char **ids, int nids, Oid type)
{
	StringInfoData array;

	initStringInfo(&array);
	appendStringInfoChar(&array, '{');
	for (int i = 0; i < nids; i++)
	{
		if (i > 0)
			appendStringInfoChar(&array, ',');
		appendStringInfoChar(&array, '"');
		for (const char *c = ids[i]; *c; c++)
		{
			if (*c == '"' || *c == '\\')
				appendStringInfoChar(&array, '\\');
			appendStringInfoChar(&array, *c);
		}
		appendStringInfoChar(&array, '"');
	}
	appendStringInfoChar(&array, '}');
	if (compared_in_own_type(type))
		return psprintf("%s::%s[]", quote_literal_cstr(array.data), ecp_qualified_type(type));
	return psprintf("%s::pg_catalog.text[]", quote_literal_cstr(array.data));
}

/* The rows of the ids (canonical, sorted, distinct) into SPI_tuptable. */
static void
select_rows(const EcpIdLookup *lookup, const EcpPartConfig *config, char **ids, int nids)
{
	const char *compare = compared_in_own_type(lookup->id_type)
		? ecp_source_column_ref(config->id_column)
		: psprintf("(%s)" ECP_AS_TEXT, ecp_source_column_ref(config->id_column));
	char	   *sql = psprintf("%s WHERE %s OPERATOR(pg_catalog.=) ANY (%s)", lookup->select, compare,
							   id_array(ids, nids, lookup->id_type));

	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ecp: looking ids up through the query failed");
	ecp_require_all_columns(SPI_tuptable->tupdesc, TEXTOID, "the id lookup of the source");
}

static char *
text_or_null(HeapTuple tuple, TupleDesc desc, int column)
{
	bool		isnull;
	Datum		value = SPI_getbinval(tuple, desc, column, &isnull);

	return isnull ? NULL : TextDatumGetCString(value);
}

/* Distinct canonical ids, sorted; the others are missing. */
static int
canonical_ids(Oid id_type, char **ids, int nids, char **out, int *unusable)
{
	int			n = 0;

	*unusable = 0;
	for (int i = 0; i < nids; i++)
	{
		char	   *id = canonical_id(ids[i], id_type);

		if (id)
			out[n++] = id;
		else
			(*unusable)++;
	}
	if (n == 0)
		return 0;
	qsort(out, n, sizeof(char *), compare_strings);
	{
		int			kept = 1;

		for (int i = 1; i < n; i++)
			if (strcmp(out[i], out[kept - 1]) != 0)
				out[kept++] = out[i];
		return kept;
	}
}

/* Bare ids for a write service: a document of its id alone, for each. */
static void
bare_ids(char **ids, int nids, EcpBatch *batch)
{
	batch->docs = palloc0(sizeof(EcpDoc) * Max(nids, 1));
	for (int i = 0; i < nids; i++)
	{
		batch->docs[i].key = ids[i];
		batch->docs[i].id = ids[i];
	}
	batch->ndocs = nids;
}

/*
 * Look ids up as the owner: a document per row the query returns, then a
 * delete (delete_missing) or a count for each id it does not, all in
 * batch->context.
 */
void
ecp_ids_lookup(const EcpIdLookup *lookup, EcpPartConfig *config, char **ids, int nids,
			   EcpBatch *batch)
{
	MemoryContext back_to;
	MemoryContext old = MemoryContextSwitchTo(batch->context);
	char	  **wanted;
	bool	   *found;
	int			unusable;
	int			nwanted;
	int			ndocs = 0;

	if (lookup->bare)
	{
		bare_ids(ids, nids, batch);
		MemoryContextSwitchTo(old);
		return;
	}
	wanted = palloc(sizeof(char *) * Max(nids, 1));
	nwanted = canonical_ids(lookup->id_type, ids, nids, wanted, &unusable);

	found = palloc0(sizeof(bool) * Max(nwanted, 1));
	batch->docs = palloc0(sizeof(EcpDoc) * Max(nids, 1) * 2);
	if (nwanted > 0)
	{
		back_to = ecp_begin_as_owner(config);
		SPI_connect();
		select_rows(lookup, config, wanted, nwanted);
		MemoryContextSwitchTo(batch->context);
		if (SPI_processed > (uint64) nwanted * 2)
			batch->docs = repalloc(batch->docs, sizeof(EcpDoc) * (SPI_processed + nwanted));
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			EcpDoc	   *doc = &batch->docs[ndocs++];
			char	  **hit;

			memset(doc, 0, sizeof(*doc));	/* repalloc does not zero */

			doc->key = text_or_null(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			doc->id = text_or_null(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
			doc->json = text_or_null(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
			if (SPI_tuptable->tupdesc->natts >= 5)
			{
				doc->routing = text_or_null(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4);
				doc->version = text_or_null(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 5);
			}
			hit = doc->id ? bsearch(&doc->id, wanted, nwanted, sizeof(char *), compare_strings) : NULL;
			if (hit)
				found[hit - wanted] = true;
		}
		SPI_finish();
		ecp_commit_as_owner(back_to);
		MemoryContextSwitchTo(batch->context);
	}
	for (int i = 0; i < nwanted; i++)
	{
		if (found[i])
			continue;
		if (!config->delete_missing)
		{
			batch->missing++;
			continue;
		}
		memset(&batch->docs[ndocs], 0, sizeof(EcpDoc));
		batch->docs[ndocs].key = wanted[i];
		batch->docs[ndocs].id = wanted[i];
		batch->docs[ndocs].is_delete = true;
		ndocs++;
	}
	batch->missing += unusable;
	batch->ndocs = ndocs;
	MemoryContextSwitchTo(old);
}

static void *
ids_open(EcpPartConfig *config, MemoryContext context)
{
	return ecp_ids_prepare(config, context);
}

static bool
ids_read(void *state, EcpPartConfig *config, const EcpPosition *after, EcpBatch *batch)
{
	int			nids;
	char	  **ids;

	MemoryContextSwitchTo(batch->context);
	ids = ecp_store_run_ids(config, after->position, config->batch_size, &nids);
	batch->ndocs = 0;
	batch->missing = 0;
	batch->read_any = nids > 0;
	if (nids == 0)
		return false;
	ecp_ids_lookup((const EcpIdLookup *) state, config, ids, nids, batch);
	batch->end.position = after->position + nids;
	return true;
}

static int64
ids_total(void *state, EcpPartConfig *config, bool *is_estimate)
{
	*is_estimate = false;
	return config->ids_count;
}

const EcpSourceOps ecp_ids_source = {
	.name = "ids",
	.open = ids_open,
	.read = ids_read,
	.total = ids_total,
	.estimated_total = ecp_source_no_estimate,
	.unreadable = ecp_source_nothing_unreadable,
	.close = NULL,				/* nothing but memory */
};
