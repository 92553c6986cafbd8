/*
 * source_query.c: read a query (the task's, one of its queries, or a key
 * range of it) in keyset pages, or over foreign tables in key windows
 * (source_window.c).
 *
 *   SELECT key::pg_catalog.text, id::pg_catalog.text, "ecp:row".*
 *     FROM (<query>) AS "ecp:row"
 *    WHERE key OPERATOR(s.>) $1::<key type>  -- the checkpoint; IS NOT NULL at first
 *      AND key OPERATOR(s.>=) <from> AND key OPERATOR(s.<) <to>  -- a range part
 *      AND since OPERATOR(s.>=) '<watermark less overlap>'::<its type>  -- since.c
 *    ORDER BY key LIMIT <batch_size + 1>
 *
 * (routing and version columns, and in an incremental run the since
 * column, whose largest value since.c keeps, come before the row's own
 * columns: ecp_page_select_list)
 *
 * (every name ecp adds is qualified, s being the schema of the key type's
 * btree operators: owner_sql.c)
 *
 * The next page starts after the last key sent, so the key must be unique:
 * rows sharing the last key of a page would never be read.  Each page is
 * read one row long, and a key that repeats inside a page or across its
 * end fails the run before the page is sent (check_keys_unique), instead
 * of a short success.
 *
 * Each page runs in its own short transaction as the run's owner, so no
 * snapshot is held for the whole run.  The page reader writes each row's
 * columns as the document (page_reader.c, doc_writer.c: the object
 * row_to_json would write; types it has no writer of its own for, FDW
 * types included, through to_json).  The alias "ecp:row" cannot be
 * captured by a user column name by accident.
 */
#include "sync.h"

#include "access/stratnum.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#define ROW_ALIAS ECP_ROW_ALIAS

/* A query source's state (in its own memory, source.c). */
typedef struct QueryReader
{
	char	   *page_sql_first; /* keyset pages: the first page */
	char	   *page_sql_next;	/* ... the page after $1 */
	EcpKeyWindows *windows;		/* or key windows (page_sql_* unset) */
	char	   *part_rows_sql;	/* the part's rows: its total, NULL keys */
	char	   *since_filter;	/* since.c: " AND ..." or "" */
	bool		id_is_key;		/* the id is taken from the key */
	EcpPageColumns columns;		/* ecp's own columns of a page */
} QueryReader;

#define column_ref ecp_source_column_ref

/*
 * The types of the key column (the checkpoint is cast back to it) and of
 * the id column (ecp.retry_failed compares ids in it).
 */
void
ecp_source_column_types(const EcpPartConfig *config, Oid *key_type, Oid *id_type)
{
	char	   *sql = psprintf("SELECT %s, %s FROM (%s\n) AS " ROW_ALIAS " LIMIT 0",
							   column_ref(config->key_column), column_ref(config->id_column),
							   config->query);

	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ecp: could not read the key and id columns of the source query");
	*key_type = SPI_gettypeid(SPI_tuptable->tupdesc, 1);
	*id_type = SPI_gettypeid(SPI_tuptable->tupdesc, 2);
}

/*
 * A range part's bounds: from <= key < to (either may be open), compared
 * with the key type's own operators, by schema.
 */
static char *
range_filter(const EcpPartConfig *config, Oid key_type)
{
	char	   *key = column_ref(config->key_column);
	char	   *filter = "";

	if (config->kind != ECP_PART_RANGE)
		return "";
	if (config->has_from)
		filter = psprintf(" AND %s %s " INT64_FORMAT ECP_AS_INT8, key,
						  ecp_type_operator(key_type, BTGreaterEqualStrategyNumber, config->key_column),
						  config->range_from);
	if (config->has_to)
		filter = psprintf("%s AND %s %s " INT64_FORMAT ECP_AS_INT8, filter, key,
						  ecp_type_operator(key_type, BTLessStrategyNumber, config->key_column),
						  config->range_to);
	return filter;
}

/*
 * The page queries (keyset) or the key windows, built as the owner inside
 * SPI (the column types are the query's); strings in the state's memory.
 */
static void
prepare_pages(QueryReader *qs, EcpPartConfig *config, MemoryContext context)
{
	char	   *key = column_ref(config->key_column);
	char	   *select_list;
	EcpWindowQuery windowed;
	Oid			type;
	Oid			id_type;
	char	   *since;

	ecp_source_column_types(config, &type, &id_type);
	/* an incremental run: the since filter, and the since column last */
	ecp_since_prepare(config);
	since = ecp_since_filter(config);
	qs->since_filter = MemoryContextStrdup(context, since ? since : "");
	windowed.filter = psprintf("%s%s", range_filter(config, type), qs->since_filter);
	qs->part_rows_sql = MemoryContextStrdup(context,
											psprintf("SELECT * FROM (%s\n) AS " ROW_ALIAS " WHERE true%s",
													 config->query, windowed.filter));
	/* a key that is the id is printed once (the id is taken from the key) */
	qs->id_is_key = strcmp(config->key_column, config->id_column) == 0;
	select_list = ecp_page_select_list(config, psprintf("(%s)" ECP_AS_TEXT, key),
									   qs->id_is_key ? "NULL" ECP_AS_TEXT : psprintf("(%s)" ECP_AS_TEXT, column_ref(config->id_column)),
									   config->since_column ? config->since_type : InvalidOid,
									   &qs->columns);
	windowed.base_sql = psprintf("SELECT * FROM (%s\n) AS " ROW_ALIAS, config->query);
	windowed.select_list = select_list;
	windowed.key = key;
	windowed.key_type = type;
	windowed.columns = qs->columns;
	qs->windows = ecp_source_windows_open(config, &windowed, context);
	if (qs->windows == NULL)
	{
		char	   *select = psprintf("SELECT %s FROM (%s\n) AS " ROW_ALIAS, select_list, config->query);

		qs->page_sql_first = MemoryContextStrdup(context,
												 psprintf("%s WHERE %s IS NOT NULL%s ORDER BY %s LIMIT %d",
														  select, key, windowed.filter, key, config->batch_size + 1));
		qs->page_sql_next = MemoryContextStrdup(context,
												psprintf("%s WHERE %s %s $1::%s%s ORDER BY %s LIMIT %d",
														 select, key,
														 ecp_type_operator(type, BTGreaterStrategyNumber, config->key_column),
														 ecp_qualified_type(type), windowed.filter, key,
														 config->batch_size + 1));
	}
}

static void *
query_open(EcpPartConfig *config, MemoryContext context)
{
	MemoryContext back_to;
	QueryReader *qs = MemoryContextAllocZero(context, sizeof(QueryReader));

	back_to = ecp_begin_as_owner(config);
	if (config->query == NULL)
		config->query = MemoryContextStrdup(config->memory,
											ecp_checked_statement_text(config->raw_query));
	SPI_connect();
	prepare_pages(qs, config, context);
	SPI_finish();
	ecp_commit_as_owner(back_to);
	return qs;
}

/* The keyset page after after_key (NULL: the first) into docs. */
static int
read_keyset_page(const QueryReader *qs, const char *after_key, EcpDoc *docs, int capacity,
				 MemoryContext context)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];

	if (after_key == NULL)
		return ecp_read_page_rows(qs->page_sql_first, 0, NULL, NULL, &qs->columns,
								  docs, capacity, context);
	args[0] = CStringGetTextDatum(after_key);
	return ecp_read_page_rows(qs->page_sql_next, 1, argtypes, args, &qs->columns,
							  docs, capacity, context);
}

/*
 * Rows come ordered by key, so a repeated key is two neighbours with the
 * same text (for numeric keys, 1.0 and 1.00 compare equal but print
 * differently: a unique index is the sure way).  docs may hold one row
 * past the page.
 */
static void
check_keys_unique(const EcpPartConfig *config, const EcpDoc *docs, int rows)
{
	for (int i = 1; i < rows; i++)
	{
		const char *previous = docs[i - 1].key;
		const char *key = docs[i].key;

		if (previous && key && strcmp(previous, key) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("key column \"%s\" is not unique: value \"%.100s\" repeats, and ecp pages by key > the last key sent, so rows sharing a key could be skipped",
							config->key_column, key),
					 errhint("Give task \"%s\" a unique, indexed key_column (its primary key, say): UPDATE ecp.task SET options = options || '{\"key_column\": \"id\"}' WHERE name = '%s'; then start a new run (this run's checkpoint is a value of the old key).",
							 config->task_name, config->task_name)));
	}
}

/*
 * Read the page after after_key (NULL: from the start) into batch; false
 * when none is left.  The page is read one row long (the extra row is
 * only compared with the last one).
 */
static bool
query_read(void *state, EcpPartConfig *config, const EcpPosition *after, EcpBatch *batch)
{
	QueryReader *qs = state;
	MemoryContext back_to;
	const char *after_key = after->last_key;
	int			capacity = config->batch_size + 1;
	int			rows;

	batch->docs = MemoryContextAllocZero(batch->context, sizeof(EcpDoc) * capacity);
	back_to = ecp_begin_as_owner(config);
	SPI_connect();
	rows = qs->windows ? ecp_source_window_read(qs->windows, config, after_key, batch->docs,
												capacity, batch->context)
		: read_keyset_page(qs, after_key, batch->docs, capacity, batch->context);
	check_keys_unique(config, batch->docs, rows);
	SPI_finish();
	ecp_commit_as_owner(back_to);
	batch->ndocs = Min(rows, config->batch_size);
	if (qs->id_is_key)
		for (int i = 0; i < batch->ndocs; i++)
			batch->docs[i].id = batch->docs[i].key;
	batch->read_any = batch->ndocs > 0;
	if (batch->read_any)
		batch->end.last_key = batch->docs[batch->ndocs - 1].key;
	return batch->read_any;
}

/* One bigint from a query run as the owner (0 for NULL). */
int64
ecp_owner_int8(EcpPartConfig *config, const char *sql)
{
	MemoryContext back_to;
	bool		isnull;
	int64		value = 0;

	back_to = ecp_begin_as_owner(config);
	SPI_connect();
	if (SPI_execute(sql, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		Datum		d;

		ecp_require_column_type(SPI_tuptable->tupdesc, 1, INT8OID, "a count of the source");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			value = DatumGetInt64(d);
	}
	SPI_finish();
	ecp_commit_as_owner(back_to);
	return value;
}

/*
 * "Plan Rows" of the top plan node in EXPLAIN (FORMAT JSON) output, or 0
 * when it cannot be read.
 */
static int64
plan_rows(const char *explain_json)
{
	const char *at = explain_json ? strstr(explain_json, "\"Plan Rows\":") : NULL;
	double		rows;

	if (at == NULL)
		return 0;
	rows = strtod(at + strlen("\"Plan Rows\":"), NULL);
	return (rows > 0 && rows < 9.2e18) ? (int64) rows : 0;
}

/* The planner's estimate of the query's rows, planned as the owner. */
static int64
planner_rows(EcpPartConfig *config, const char *part_rows_sql)
{
	MemoryContext back_to;
	int64		rows = 0;

	back_to = ecp_begin_as_owner(config);
	SPI_connect();
	/* not read_only: SPI refuses EXPLAIN there (it plans, never executes) */
	if (SPI_execute(psprintf("EXPLAIN (FORMAT JSON) %s", part_rows_sql), false, 0) >= 0 &&
		SPI_tuptable != NULL && SPI_processed >= 1)
		rows = plan_rows(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	SPI_finish();
	ecp_commit_as_owner(back_to);
	return rows;
}

/*
 * The planner's row estimate (cheap), or an exact count when the task asks
 * for it (a full scan: worth it only when the table is not huge).
 */
/*
 * A range's share of the run's total is not estimated: the split counted
 * the whole query once (the planner's guess for a range of a table
 * without statistics would be far off).
 */
static int64
query_total(void *state, EcpPartConfig *config, bool *is_estimate)
{
	QueryReader *qs = state;

	*is_estimate = true;
	if (config->kind == ECP_PART_RANGE)
		return -1;
	*is_estimate = !config->exact_total;
	if (qs->windows && !config->exact_total)
		return ecp_source_window_total(qs->windows, config->progress.processed + config->progress.failed, config->progress.last_key);
	if (config->exact_total)
		return ecp_owner_int8(config,
							  psprintf("SELECT pg_catalog.count(*) FROM (%s\n) AS " ROW_ALIAS, qs->part_rows_sql));
	return planner_rows(config, qs->part_rows_sql);
}

/*
 * Rows whose key is NULL cannot be paged (NULL > x is never true): count
 * them at the end so they are reported, never silently skipped.  Of the
 * ranges of a query, the first counts them (they belong to none); an
 * incremental run, those it would have read.
 */
static int64
query_null_keys(void *state, EcpPartConfig *config)
{
	QueryReader *qs = state;

	if (config->kind == ECP_PART_RANGE && config->has_from)
		return 0;
	return ecp_owner_int8(config,
					   psprintf("SELECT pg_catalog.count(*) FROM (%s\n) AS " ROW_ALIAS " WHERE %s IS NULL%s",
								config->query, column_ref(config->key_column), qs->since_filter));
}

/*
 * A better estimate of the run's total at a checkpoint, or -1 to keep the
 * one there is: windowed sources learn the density of their keys.
 */
static int64
query_estimated_total(void *state, const EcpPartConfig *config)
{
	QueryReader *qs = state;

	if (qs->windows == NULL || config->exact_total || config->kind == ECP_PART_RANGE)
		return -1;
	return ecp_source_window_total(qs->windows, config->progress.processed + config->progress.failed, config->progress.last_key);
}

const EcpSourceOps ecp_query_source = {
	.name = "query",
	.open = query_open,
	.read = query_read,
	.total = query_total,
	.estimated_total = query_estimated_total,
	.unreadable = query_null_keys,
	.close = NULL,				/* nothing but memory */
};
