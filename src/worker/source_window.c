/*
 * source_window.c: read a source over foreign tables in key windows.
 *
 * A keyset page (WHERE key > $1 ORDER BY key LIMIT n) is pushed to MySQL
 * by mysql_fdw as ORDER BY key IS NULL, key, which MySQL cannot serve from
 * the primary key ("Using filesort"): every page sorts all remaining rows
 * (on a 2,000,000-row MariaDB table, about 0.5 s for a page of 1,000 at the
 * start; minutes for the whole table instead of seconds).  A
 * window sends range predicates only, which MySQL answers with a range scan
 * of the primary key; the OFFSET 0 fence keeps ORDER BY and LIMIT local:
 *
 *   SELECT key::text, id::text, "ecp:row".*  (all pg_catalog.; the row's
 *          columns become the document: page_reader.c)
 *     FROM (SELECT * FROM (<query>) AS "ecp:row"
 *            WHERE key > $1 AND key <= $2 OFFSET 0) AS "ecp:row"  (the key's operators)
 *    ORDER BY key LIMIT <batch_size + 1>
 *
 * (a range part's bounds and an incremental run's since filter join the
 * WHERE inside the fence: EcpWindowQuery.filter)
 *
 * The window's width follows the density of keys: it widens when windows
 * come back sparse and narrows to the keys a full page spanned; past an
 * empty window the next starts before the next key (a pushed min()).  A
 * wide window is counted first and narrowed if it holds more than a few
 * pages, so a window's rows stay bounded (mysql_fdw buffers a result), and
 * a page holds batch_size rows at most (LIMIT, local top-N sort).  Windows
 * need an integer key; the checkpoint stays the last key sent, so
 * restarts and pauses work as with keyset pages.
 */
#include "sync.h"

#include "access/stratnum.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/plannodes.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/plancache.h"

#define ROW_ALIAS ECP_ROW_ALIAS

/* how fast a window may grow from one page to the next */
#define MAX_GROWTH 8.0

/*
 * A window of more keys than MAX_WINDOW_PAGES pages is counted before it
 * is read (a cheap aggregate on the server) and narrowed if it holds more
 * rows than that: mysql_fdw buffers a whole result, so one window never
 * holds more than MAX_WINDOW_PAGES pages of rows, whatever the keys do
 * (a narrower one cannot: keys are unique integers).
 */
#define MAX_WINDOW_PAGES 4
#define MAX_SPAN ((double) PG_INT64_MAX / 16)

struct EcpKeyWindows
{
	bool		foreign;		/* the query reads a foreign table */
	bool		has_rows;		/* the source had a key at prepare time */
	int64		min_key;
	int64		max_key;		/* raised if rows appear beyond it */
	double		span;			/* keys per window */
	char	   *window_sql;		/* the rows of ($1, $2] */
	char	   *count_sql;		/* how many rows ($1, $2] holds */
	char	   *next_key_sql;	/* the first key after $1 */
	char	   *max_after_sql;	/* the last key after $1 */
	EcpPageColumns columns;		/* ecp's own columns of window_sql */
	/* what this worker has read, for the estimate of the total */
	bool		reading;
	int64		first_lo;		/* where its first window started */
	int64		last_read;		/* the last key it read */
	int64		rows_read;
};

/* Does the (analysed and planned) query read a foreign table? */
bool
ecp_source_reads_foreign_table(const char *sql)
{
	SPIPlanPtr	plan = SPI_prepare(sql, 0, NULL);
	CachedPlan *cplan;
	ListCell   *lc;
	bool		foreign = false;

	if (plan == NULL)
		elog(ERROR, "ecp: could not plan the source query (SPI code %d)", SPI_result);
	cplan = SPI_plan_get_cached_plan(plan);
	if (cplan == NULL)
		return false;
	foreach(lc, cplan->stmt_list)
	{
		PlannedStmt *stmt = lfirst_node(PlannedStmt, lc);
		ListCell   *rc;

		/* the flat range table holds every relation, views' too */
		foreach(rc, stmt->rtable)
		{
			RangeTblEntry *rte = lfirst_node(RangeTblEntry, rc);

			if (rte->rtekind == RTE_RELATION && rte->relkind == RELKIND_FOREIGN_TABLE)
				foreign = true;
		}
	}
	ReleaseCachedPlan(cplan, NULL);
	SPI_freeplan(plan);
	return foreign;
}

static bool
is_integer_type(Oid type)
{
	return type == INT2OID || type == INT4OID || type == INT8OID;
}

/*
 * Should this source be read in windows?  paging 'keyset' never, 'window'
 * always (an integer key is required), 'auto' when the query reads a
 * foreign table and the key is an integer.
 */
static bool
windows_wanted(const EcpPartConfig *config, const char *base_sql, Oid key_type, bool *foreign)
{
	if (strcmp(config->paging, "keyset") == 0)
		return false;
	*foreign = ecp_source_reads_foreign_table(base_sql);
	if (strcmp(config->paging, "window") == 0)
	{
		if (!is_integer_type(key_type))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"paging\" 'window' needs an integer key column, and \"%s\" is %s",
							config->key_column, format_type_be(key_type)),
					 errhint("Set option key_column to an integer column of the query, or paging to 'keyset'.")));
		return true;
	}
	if (!*foreign)
		return false;
	if (!is_integer_type(key_type))
	{
		/* LOG, not WARNING: a background worker's warnings are easy to filter out */
		ereport(LOG,
				(errmsg("ecp task \"%s\" reads a foreign table by keyset pages: its key column \"%s\" is %s, not an integer",
						config->task_name, config->key_column, format_type_be(key_type)),
				 errdetail("A foreign server may sort all remaining rows for every page."),
				 errhint("Set option key_column to an integer column to page by key windows.")));
		return false;
	}
	return true;
}

/*
 * Run sql (one row of int8 columns) with nargs int8 arguments into values;
 * false if a column is NULL.
 */
static bool
int8_row(const char *sql, int nargs, const int64 *arg, int64 *values, int ncolumns)
{
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		args[2];
	int			rc;

	Assert(nargs <= 2);
	for (int i = 0; i < nargs; i++)
		args[i] = Int64GetDatum(arg[i]);
	rc = SPI_execute_with_args(sql, nargs, argtypes, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "ecp: reading the key range of the source failed (SPI code %d)", rc);
	ecp_require_all_columns(SPI_tuptable->tupdesc, INT8OID, "a key bound of the source");
	for (int i = 0; i < ncolumns; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);

		if (isnull)
			return false;
		values[i] = DatumGetInt64(d);
	}
	return true;
}

/*
 * Build the window queries and find the key range (inside SPI, as the
 * owner); the queries in the windows' memory.
 */
static void
prepare_windows(EcpKeyWindows *window, const EcpPartConfig *config, const EcpWindowQuery *query,
				MemoryContext context)
{
	char	   *from = psprintf("(%s\n) AS " ROW_ALIAS, config->query);
	const char *key = query->key;
	const char *filter = query->filter;

	/*
	 * PostgreSQL plans min() and max() as ORDER BY key LIMIT 1, which
	 * mysql_fdw pushes with the filesort of the whole table; an (unused)
	 * CTE turns that rewrite off, and the aggregates go to the foreign
	 * server whole, which answers them from its primary key.  Local tables
	 * keep the rewrite: it uses their index.
	 */
	const char *fence = window->foreign ? "WITH ecp_no_minmax AS (SELECT) " : "";
	int64		bounds[2];
	char	   *gt = ecp_type_operator(query->key_type, BTGreaterStrategyNumber, config->key_column);
	char	   *le = ecp_type_operator(query->key_type, BTLessEqualStrategyNumber, config->key_column);
	MemoryContext old = MemoryContextSwitchTo(context);

	window->window_sql = psprintf("SELECT %s FROM (SELECT * FROM %s WHERE %s %s $1 AND %s %s $2%s OFFSET 0) AS "
								  ROW_ALIAS " ORDER BY %s LIMIT %d",
								  query->select_list, from, key, gt, key, le, filter, key,
								  config->batch_size + 1);
	window->count_sql = psprintf("%sSELECT pg_catalog.count(*)" ECP_AS_INT8 " FROM %s WHERE %s %s $1 AND %s %s $2%s",
								 fence, from, key, gt, key, le, filter);
	window->next_key_sql = psprintf("%sSELECT pg_catalog.min(%s)" ECP_AS_INT8 " FROM %s WHERE %s %s $1%s",
									fence, key, from, key, gt, filter);
	window->columns = query->columns;
	window->max_after_sql = psprintf("%sSELECT pg_catalog.max(%s)" ECP_AS_INT8 " FROM %s WHERE %s %s $1%s",
									 fence, key, from, key, gt, filter);
	MemoryContextSwitchTo(old);

	window->has_rows = int8_row(psprintf("%sSELECT pg_catalog.min(%s)" ECP_AS_INT8 ", pg_catalog.max(%s)" ECP_AS_INT8
										 " FROM %s WHERE %s IS NOT NULL%s",
										 fence, key, key, from, key, filter),
								0, NULL, bounds, 2);
	window->min_key = bounds[0];
	window->max_key = bounds[1];
	/* first guess: keys are dense */
	window->span = config->batch_size;
	if (window->has_rows && window->min_key == PG_INT64_MIN)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("the key column \"%s\" of task \"%s\" holds the smallest bigint, which key windows cannot start below",
						config->key_column, config->task_name),
				 errhint("Set option paging to 'keyset' for this task.")));
	ereport(LOG,
			(errmsg("ecp worker for run " INT64_FORMAT " part %d reads the source in key windows of \"%s\"",
					config->run_id, config->part_no, config->key_column)));
}

/*
 * Key windows over the query, when they should be used (paging 'window',
 * or 'auto' over a foreign table with an integer key): ready to read, in
 * context; NULL when the source is read by keyset pages.  Inside SPI, as
 * the owner.
 */
EcpKeyWindows *
ecp_source_windows_open(const EcpPartConfig *config, const EcpWindowQuery *query,
						MemoryContext context)
{
	bool		foreign = false;
	EcpKeyWindows *windows;

	if (!windows_wanted(config, query->base_sql, query->key_type, &foreign))
		return NULL;
	windows = MemoryContextAllocZero(context, sizeof(EcpKeyWindows));
	windows->foreign = foreign;
	prepare_windows(windows, config, query, context);
	return windows;
}

/* The next width after a window of span keys returned n of batch rows. */
static double
next_span(double span, int n, int batch, int64 lo, int64 last_key)
{
	double		next;

	if (n >= batch)				/* full: as wide as the keys it spanned */
		next = Max(1.0, (double) last_key - (double) lo);
	else if (n == 0)			/* says nothing about density */
		next = span;
	else						/* aim at 90% of a page at this density */
		next = Min(span * MAX_GROWTH, span * batch * 0.9 / n);
	return Min(Max(next, 1.0), MAX_SPAN);
}

/* The key of a page's last row (an integer, read as text). */
static int64
last_key_of_page(const EcpDoc *docs, int n)
{
	const char *key = docs[n - 1].key;

	return key ? DatumGetInt64(DirectFunctionCall1(int8in, CStringGetDatum(key))) : 0;
}

/* The upper end of the window of span keys after lo, at most the last key. */
static int64
window_end(const EcpKeyWindows *window, int64 lo, double span)
{
	int64		width = (int64) span;
	int64		room;

	if (!pg_sub_s64_overflow(window->max_key, lo, &room) && room <= width)
		return window->max_key;
	return lo + width;			/* below max_key: cannot overflow */
}

/* Could the window (lo, hi] hold more than MAX_WINDOW_PAGES pages? */
static bool
needs_count(int64 lo, int64 hi, int batch)
{
	return (double) hi - (double) lo > (double) MAX_WINDOW_PAGES * batch;
}

static int64
count_window(const EcpKeyWindows *window, int64 lo, int64 hi)
{
	int64		bounds[2] = {lo, hi};
	int64		n = 0;

	(void) int8_row(window->count_sql, 2, bounds, &n, 1);
	return n;
}

/*
 * Past an empty window ending at hi: *lo moves to just before the next key
 * (one aggregate the server answers from its index, however wide the gap);
 * false when no key follows.
 */
static bool
skip_gap(const EcpKeyWindows *window, int64 hi, int64 *lo)
{
	int64		next;

	if (!int8_row(window->next_key_sql, 1, &hi, &next, 1))
		return false;
	*lo = next - 1;				/* next > hi >= PG_INT64_MIN: no overflow */
	return true;
}

/*
 * Read the rows after after_key (NULL: from the start) into SPI_tuptable;
 * false when the keys are exhausted.  Inside SPI, as the owner.
 */
int
ecp_source_window_read(EcpKeyWindows *window, const EcpPartConfig *config,
					   const char *after_key, EcpDoc *docs, int capacity, MemoryContext context)
{
	Oid			argtypes[2] = {INT8OID, INT8OID};
	int			batch = config->batch_size;
	int64		lo;

	if (!window->has_rows)
		return 0;
	lo = after_key ? DatumGetInt64(DirectFunctionCall1(int8in, CStringGetDatum(after_key)))
		: window->min_key - 1;
	if (!window->reading)
	{
		window->reading = true;
		window->first_lo = lo;
	}
	for (;;)
	{
		Datum		args[2];
		int64		hi;
		int			rows;

		CHECK_FOR_INTERRUPTS();
		/* past the known end: rows added meanwhile move it */
		if (lo >= window->max_key &&
			!int8_row(window->max_after_sql, 1, &lo, &window->max_key, 1))
			return 0;
		hi = window_end(window, lo, window->span);
		if (needs_count(lo, hi, batch))
		{
			int64		n = count_window(window, lo, hi);

			if (n > (int64) MAX_WINDOW_PAGES * batch)
			{
				/* aim at one page at the density just counted */
				window->span = Max(1.0, window->span * batch / n);
				continue;
			}
			if (n == 0)
			{
				if (!skip_gap(window, hi, &lo))
					return 0;
				continue;
			}
		}
		args[0] = Int64GetDatum(lo);
		args[1] = Int64GetDatum(hi);
		rows = ecp_read_page_rows(window->window_sql, 2, argtypes, args, &window->columns,
								  docs, capacity, context);
		if (rows > 0)
		{
			/* the row past the page, if any, is only there to be compared */
			int			page_rows = Min(rows, batch);

			window->last_read = last_key_of_page(docs, page_rows);
			window->rows_read += page_rows;
			window->span = next_span(window->span, page_rows, batch, lo, window->last_read);
			return rows;
		}
		if (!skip_gap(window, hi, &lo))
			return 0;
	}
}

/*
 * The planner knows nothing of a foreign table's size (mysql_fdw says 1000
 * rows), so the total of a windowed source is estimated from its keys:
 * every key of the range at first, then the keys left after the checkpoint
 * times the density of the keys read so far.  -1 when there is nothing to
 * estimate from.
 */
int64
ecp_source_window_total(const EcpKeyWindows *window, int64 rows_done,
						const char *checkpoint_key)
{
	double		left,
				density;
	int64		after;

	if (!window->has_rows)
		return rows_done;
	if (checkpoint_key == NULL || window->rows_read == 0)
		return rows_done + (int64) Min((double) window->max_key - (double) window->min_key + 1,
									   (double) PG_INT64_MAX / 2);
	after = DatumGetInt64(DirectFunctionCall1(int8in, CStringGetDatum(checkpoint_key)));
	density = window->rows_read / Max(1.0, (double) window->last_read - (double) window->first_lo);
	left = Max(0.0, (double) window->max_key - (double) after) * Min(1.0, density);
	return rows_done + (int64) Min(left, (double) PG_INT64_MAX / 2);
}
