/*
 * source_ids.c: the id source.  A run over a list of ids (ecp.start(task,
 * ids => ...), a task's ids, ecp.retry_failed, or the lines of an id
 * file) reads them batch_size at a time and looks each batch up through
 * the task's query, or through each query of a task of queries:
 *
 *   SELECT key::text, id::text, "ecp:row".*   (all pg_catalog.)
 *     FROM (<query>) AS "ecp:row"
 *    WHERE id OPERATOR(pg_catalog.=) ANY ('{...}'::<id type>[])
 *
 * The ids are compared in the id column's own type when it is an integer
 * or a uuid, so an index (or, through mysql_fdw, MySQL's primary key:
 * the array constant is sent as IN (...)) finds them at once; other
 * types are compared as text.  An id the queries do not return is
 * "missing": counted, or with option delete_missing sent as a delete in
 * the same _bulk request (an id that never existed is then a delete of a
 * document that is not there, which Elasticsearch answers "not_found" and
 * ecp counts as deleted).  An id that cannot be a value of an integer or
 * uuid column cannot be returned either: it is missing too, never an
 * error.  The checkpoint is the number of ids done.
 *
 * A task of queries (shards): each batch is looked up in every query, one
 * statement each, in each query's own id type; with task option shard_of
 * (shard_of.c) only in the query that holds each id, and a query that
 * holds none of the batch is not asked.  The ids' own form is that of
 * the first query's id type.  The rows come through the page reader,
 * which writes the row's columns as the document (page_reader.c).  An id
 * that two queries return gets both
 * documents, in the order of the queries (the later one stays in the
 * index), and a flow row "duplicate ids" per batch says which.
 */
#include "sync.h"
#include "json_build.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

/* At most this many ids are named in a flow row "duplicate ids". */
#define DUPLICATES_NAMED 10

/* One query the ids are looked up in (in the source's memory). */
typedef struct IdQuery
{
	Oid			id_type;
	char	   *select;			/* SELECT ... FROM (<query>) AS "ecp:row" */
	EcpPageColumns columns;		/* ecp's own columns of select */
} IdQuery;

/* How a part looks its ids up (in the source's memory). */
struct EcpIdLookup
{
	IdQuery    *queries;		/* the task's query, or each of its queries */
	int			nqueries;
	char	   *shard_of;		/* task option shard_of (queries only), or NULL */
	bool		bare;			/* no query: the ids go to a write service as
								 * they are, and it assembles the documents */
};

/*
 * The statement of one query, as the owner inside SPI (the column types
 * are the query's); the helpers read the query from a part's config.
 */
static void
prepare_query(IdQuery *id_query, const EcpPartConfig *config, char *query, MemoryContext context)
{
	EcpPartConfig as_read = *config;
	Oid			key_type;
	char	   *select_list;

	as_read.query = query;
	ecp_source_column_types(&as_read, &key_type, &id_query->id_type);
	select_list = ecp_page_select_list(&as_read,
									   psprintf("(%s)" ECP_AS_TEXT, ecp_source_column_ref(config->key_column)),
									   psprintf("(%s)" ECP_AS_TEXT, ecp_source_column_ref(config->id_column)),
									   InvalidOid, &id_query->columns);
	id_query->select = MemoryContextStrdup(context, psprintf("SELECT %s FROM (%s\n) AS " ECP_ROW_ALIAS,
															 select_list, query));
}

/*
 * Build the lookup statements (as the owner: the column types are the
 * queries'), in context.  A task of queries has each checked as the
 * task's query is, and its shard_of too.
 */
EcpIdLookup *
ecp_ids_prepare(EcpPartConfig *config, MemoryContext context)
{
	MemoryContext back_to;
	EcpIdLookup *lookup = MemoryContextAllocZero(context, sizeof(EcpIdLookup));

	lookup->bare = config->raw_query == NULL && config->nqueries == 0 && config->write_service;
	if (lookup->bare)
		return lookup;
	back_to = ecp_begin_as_owner(config);
	if (config->nqueries == 0 && config->query == NULL)
		config->query = MemoryContextStrdup(config->memory,
											ecp_checked_statement_text(config->raw_query));
	SPI_connect();
	lookup->nqueries = Max(config->nqueries, 1);
	lookup->queries = MemoryContextAllocZero(context, sizeof(IdQuery) * lookup->nqueries);
	for (int q = 0; q < lookup->nqueries; q++)
		prepare_query(&lookup->queries[q], config,
					  config->nqueries > 0 ? ecp_checked_statement_text(config->queries[q]) : config->query,
					  context);
	if (config->nqueries > 0 && config->shard_of)
	{
		ecp_check_shard_of_expression(config->shard_of, lookup->queries[0].id_type);
		lookup->shard_of = MemoryContextStrdup(context, config->shard_of);
	}
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
	if (!ecp_id_compared_in_own_type(type))
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
	if (ecp_id_compared_in_own_type(type))
		return psprintf("%s::%s[]", quote_literal_cstr(array.data), ecp_qualified_type(type));
	return psprintf("%s::pg_catalog.text[]", quote_literal_cstr(array.data));
}

/*
 * The rows of the ids (distinct, in the query's form): an array in the
 * current memory, their documents in context.  The number of rows.
 */
static int
select_rows(const IdQuery *id_query, const EcpPartConfig *config, char **ids, int nids,
			EcpDoc **rows, MemoryContext context)
{
	const char *compare = ecp_id_compared_in_own_type(id_query->id_type)
		? ecp_source_column_ref(config->id_column)
		: psprintf("(%s)" ECP_AS_TEXT, ecp_source_column_ref(config->id_column));
	char	   *sql = psprintf("%s WHERE %s OPERATOR(pg_catalog.=) ANY (%s)", id_query->select, compare,
							   id_array(ids, nids, id_query->id_type));

	return ecp_read_all_rows(sql, &id_query->columns, rows, context);
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

/* A wanted id as one query writes it: where it is in the batch's list. */
typedef struct AskedId
{
	char	   *form;			/* canonical in the query's id type */
	int			wanted;			/* index into the batch's wanted ids */
} AskedId;

static int
compare_asked(const void *a, const void *b)
{
	return strcmp(((const AskedId *) a)->form, ((const AskedId *) b)->form);
}

/*
 * What a batch's lookup found so far, in batch->context: the documents,
 * and for each wanted id the first query (1..) that returned it (0: none
 * yet); ids two queries returned are counted and the first few named.
 */
typedef struct Found
{
	EcpBatch   *batch;
	int			capacity;		/* of batch->docs */
	int		   *query_of;
	bool	   *repeated;
	int			nrepeated;
	StringInfoData named;		/* a JSON array of {"id", "queries"} */
} Found;

static EcpDoc *
new_doc(Found *found)
{
	EcpBatch   *batch = found->batch;

	if (batch->ndocs == found->capacity)
	{
		found->capacity *= 2;
		batch->docs = repalloc(batch->docs, sizeof(EcpDoc) * found->capacity);
	}
	memset(&batch->docs[batch->ndocs], 0, sizeof(EcpDoc));	/* repalloc does not zero */
	return &batch->docs[batch->ndocs++];
}

/* Query q (1..) returned wanted id i. */
static void
mark_found(Found *found, int i, int q, char **wanted)
{
	if (found->query_of[i] == 0)
		found->query_of[i] = q;
	else if (found->query_of[i] != q && !found->repeated[i])
	{
		found->repeated[i] = true;
		if (found->nrepeated++ < DUPLICATES_NAMED)
		{
			ecp_json_begin_object(&found->named);
			ecp_json_key_string(&found->named, "id", wanted[i]);
			ecp_json_key(&found->named, "queries");
			ecp_json_begin_array(&found->named);
			ecp_json_int(&found->named, found->query_of[i]);
			ecp_json_int(&found->named, q);
			ecp_json_end_array(&found->named);
			ecp_json_end_object(&found->named);
		}
	}
}

/* The first of asked (sorted by form) whose form is form, or -1. */
static int
first_asked(const AskedId *asked, int nasked, const char *form)
{
	int			low = 0,
				high = nasked;

	while (low < high)
	{
		int			mid = low + (high - low) / 2;

		if (strcmp(asked[mid].form, form) < 0)
			low = mid + 1;
		else
			high = mid;
	}
	return low < nasked && strcmp(asked[low].form, form) == 0 ? low : -1;
}

/*
 * The wanted ids query q (from 0) is asked for, in its id type, sorted by
 * that form: all of them, or with shard_of those it holds.
 */
static int
ids_for_query(const EcpIdLookup *lookup, int q, char **wanted, int nwanted,
			  const int *holder, AskedId *asked)
{
	int			nasked = 0;

	for (int i = 0; i < nwanted; i++)
	{
		char	   *form;

		if (holder && holder[i] != q + 1)
			continue;
		form = canonical_id(wanted[i], lookup->queries[q].id_type);
		if (form == NULL)
			continue;
		asked[nasked].form = form;
		asked[nasked].wanted = i;
		nasked++;
	}
	qsort(asked, nasked, sizeof(AskedId), compare_asked);
	return nasked;
}

/*
 * Look the ids up in query q (from 0): its rows become documents (in the
 * batch's memory); what it takes to ask goes to scratch, which the caller
 * resets after each query.
 */
static void
look_up_in_query(const EcpIdLookup *lookup, int q, EcpPartConfig *config, char **wanted,
				 int nwanted, const int *holder, Found *found, MemoryContext scratch)
{
	MemoryContext batch_context = found->batch->context;
	AskedId    *asked;
	char	  **forms;
	int			nforms = 0;
	int			nasked;
	EcpDoc	   *rows;
	int			nrows;

	MemoryContextSwitchTo(scratch);
	asked = palloc(sizeof(AskedId) * Max(nwanted, 1));
	nasked = ids_for_query(lookup, q, wanted, nwanted, holder, asked);
	if (nasked == 0)
		return;					/* none of the batch is in this query */
	forms = palloc(sizeof(char *) * nasked);
	for (int a = 0; a < nasked; a++)
		if (a == 0 || strcmp(asked[a].form, asked[a - 1].form) != 0)
			forms[nforms++] = asked[a].form;
	nrows = select_rows(&lookup->queries[q], config, forms, nforms, &rows, batch_context);
	MemoryContextSwitchTo(batch_context);
	for (int r = 0; r < nrows; r++)
	{
		EcpDoc	   *doc = new_doc(found);
		int			a;

		*doc = rows[r];
		a = doc->id ? first_asked(asked, nasked, doc->id) : -1;
		for (; a >= 0 && a < nasked && strcmp(asked[a].form, doc->id) == 0; a++)
			mark_found(found, asked[a].wanted, q + 1, wanted);
	}
}

/*
 * With shard_of: the query (1..) of each wanted id, evaluated as the
 * owner for the whole batch at once.  A number that is not one of the
 * task's queries fails the run: looking the id up nowhere would make it
 * missing, and delete_missing would delete a document that exists.
 */
static int *
holders_of(const EcpIdLookup *lookup, EcpPartConfig *config, char **wanted, int nwanted,
		   MemoryContext context)
{
	Oid			id_type = lookup->queries[0].id_type;
	int		   *holder = MemoryContextAllocZero(context, sizeof(int) * Max(nwanted, 1));

	if (SPI_execute(ecp_shard_of_sql(lookup->shard_of, id_array(wanted, nwanted, id_type)),
					true, 0) != SPI_OK_SELECT || SPI_processed != (uint64) nwanted)
		elog(ERROR, "ecp: evaluating option \"shard_of\" failed");
	ecp_require_all_columns(SPI_tuptable->tupdesc, INT8OID, "option \"shard_of\"");
	for (int i = 0; i < nwanted; i++)
	{
		bool		isnull;
		int64		q = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

		if (isnull || q < 1 || q > lookup->nqueries)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"shard_of\" of task \"%s\" gives %s for id \"%s\", not the number of one of its %d queries",
							config->task_name, isnull ? "NULL" : psprintf(INT64_FORMAT, q),
							wanted[i], lookup->nqueries),
					 errhint("shard_of gives 1 for an id of queries[1], 2 for queries[2] and so on, e.g. \"(id %% 16) + 1\" when queries[1] reads the ids with id %% 16 = 0; fix it with UPDATE ecp.task SET options = ..., then ecp.resume the run.")));
		holder[i] = (int) q;
	}
	SPI_freetuptable(SPI_tuptable);
	return holder;
}

/* Every query (or each id's, with shard_of), as the owner. */
static void
look_up(const EcpIdLookup *lookup, EcpPartConfig *config, char **wanted, int nwanted, Found *found)
{
	MemoryContext back_to = ecp_begin_as_owner(config);
	MemoryContext scratch = AllocSetContextCreate(found->batch->context, "ecp id lookup",
												  ALLOCSET_DEFAULT_SIZES);
	const int  *holder;

	SPI_connect();
	holder = lookup->shard_of ? holders_of(lookup, config, wanted, nwanted, found->batch->context) : NULL;
	for (int q = 0; q < lookup->nqueries; q++)
	{
		look_up_in_query(lookup, q, config, wanted, nwanted, holder, found, scratch);
		MemoryContextReset(scratch);
	}
	SPI_finish();
	MemoryContextDelete(scratch);
	ecp_commit_as_owner(back_to);
	MemoryContextSwitchTo(found->batch->context);
}

/*
 * Ids that cannot be a value of the id column ("abc" for an integer) are
 * in no row: with delete_missing their documents are deleted as given
 * (a verify's walk of the index finds such documents extra, and the
 * repair removes them).
 */
static void
delete_unusable(const EcpIdLookup *lookup, char **ids, int nids, Found *found)
{
	for (int i = 0; i < nids; i++)
	{
		EcpDoc	   *doc;

		if (canonical_id(ids[i], lookup->queries[0].id_type) != NULL)
			continue;
		doc = new_doc(found);
		doc->key = ids[i];
		doc->id = ids[i];
		doc->is_delete = true;
	}
}

/* A flow row: ids that more than one of the task's queries returned. */
static void
report_duplicates(EcpPartConfig *config, Found *found)
{
	StringInfoData content;

	ecp_json_end_array(&found->named);
	ecp_json_object_new(&content);
	ecp_json_key_int(&content, "ids", found->nrepeated);
	ecp_json_key_raw(&content, "first", found->named.data);
	ecp_json_end_object(&content);
	ecp_store_event(config, ECP_FLOW_DUPLICATE_IDS, content.data);
	MemoryContextSwitchTo(found->batch->context);
}

/*
 * Look ids up as the owner: a document per row the queries return, then
 * a delete (delete_missing) or a count for each id they do not, all in
 * batch->context.
 */
void
ecp_ids_lookup(const EcpIdLookup *lookup, EcpPartConfig *config, char **ids, int nids,
			   EcpBatch *batch)
{
	MemoryContext old = MemoryContextSwitchTo(batch->context);
	char	  **wanted;
	int			unusable;
	int			nwanted;
	Found		found;

	if (lookup->bare)
	{
		bare_ids(ids, nids, batch);
		MemoryContextSwitchTo(old);
		return;
	}
	wanted = palloc(sizeof(char *) * Max(nids, 1));
	nwanted = canonical_ids(lookup->queries[0].id_type, ids, nids, wanted, &unusable);

	memset(&found, 0, sizeof(found));
	found.batch = batch;
	found.capacity = Max(nids, 1) * 2;
	found.query_of = palloc0(sizeof(int) * Max(nwanted, 1));
	found.repeated = palloc0(sizeof(bool) * Max(nwanted, 1));
	initStringInfo(&found.named);
	ecp_json_begin_array(&found.named);
	batch->docs = palloc0(sizeof(EcpDoc) * found.capacity);
	batch->ndocs = 0;
	if (nwanted > 0)
		look_up(lookup, config, wanted, nwanted, &found);
	for (int i = 0; i < nwanted; i++)
	{
		EcpDoc	   *doc;

		if (found.query_of[i] != 0)
			continue;
		if (!config->delete_missing)
		{
			batch->missing++;
			continue;
		}
		doc = new_doc(&found);
		doc->key = wanted[i];
		doc->id = wanted[i];
		doc->is_delete = true;
	}
	if (config->delete_missing && unusable > 0)
		delete_unusable(lookup, ids, nids, &found);
	else
		batch->missing += unusable;
	if (found.nrepeated > 0)
		report_duplicates(config, &found);
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
