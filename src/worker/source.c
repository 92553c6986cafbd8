/*
 * source.c: which source a part reads, and cutting a query into key
 * ranges.
 *
 * A query task with parallelism > 1 starts with one part of kind "split".
 * Its first worker reads the smallest and largest key as the owner (the
 * query is the owner's: only a worker acting as the owner may run it) and
 * has the part cut into ranges (ecp_internal._split_part): 4 per allowed worker, so
 * a slow range does not hold the run while the other workers are idle.
 * The ranges are from <= key < to, the first open below and the last
 * open above, so every key is in exactly one of them, also keys added
 * while the run goes on.  A key that is not an integer cannot be cut:
 * the part then reads the whole query (the flow says why).
 */
#include "sync.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "json_build.h"

#define RANGES_PER_WORKER 4

/* For sources that learn nothing of their size while they read. */
int64
ecp_source_no_estimate(void *state, const EcpPartConfig *config)
{
	return -1;
}

/* For sources that read every item they have (no NULL keys to report). */
int64
ecp_source_nothing_unreadable(void *state, EcpPartConfig *config)
{
	return 0;
}

static const EcpSourceOps *
source_of(const EcpPartConfig *config)
{
	switch (config->kind)
	{
		case ECP_PART_IDS:
			return &ecp_ids_source;
		case ECP_PART_FILE:
			return &ecp_file_source;
		case ECP_PART_FOLLOW:
			return &ecp_follow_source;
		case ECP_PART_QUERY:
			if (config->reads_cursor)
				return &ecp_cursor_source;
			break;
		case ECP_PART_RANGE:
		case ECP_PART_SPLIT:
		case ECP_PART_MIGRATE:	/* reads nothing: migrate.c runs it */
		case ECP_PART_INDEX_IDS:	/* verify_extra.c reads the index itself */
			break;
	}
	return &ecp_query_source;
}

/*
 * The smallest and largest key, as the owner; false when there is none.
 * An incremental run cuts the keys of the rows it will read (since.c:
 * the source was opened once before, so the since column's type is
 * known).
 */
static bool
key_bounds(EcpPartConfig *config, int64 *low, int64 *high)
{
	MemoryContext back_to;
	char	   *key = ecp_source_column_ref(config->key_column);
	char	   *from = psprintf("(%s\n) AS " ECP_ROW_ALIAS, config->query);
	const char *fence;
	char	   *since;
	bool		found = false;

	back_to = ecp_begin_as_owner(config);
	SPI_connect();
	since = ecp_since_filter(config);

	/*
	 * Over a foreign table, PostgreSQL's min/max rewrite (ORDER BY key
	 * LIMIT 1) makes mysql_fdw sort the whole table; an unused CTE turns the
	 * rewrite off and the aggregates go to the server, which answers them
	 * from its primary key (source_window.c says more).
	 */
	fence = ecp_source_reads_foreign_table(psprintf("SELECT * FROM %s", from))
		? "WITH ecp_no_minmax AS (SELECT) " : "";
	if (SPI_execute(psprintf("%sSELECT pg_catalog.min(%s)" ECP_AS_INT8 ", pg_catalog.max(%s)" ECP_AS_INT8 " FROM %s WHERE true%s",
							 fence, key, key, from, since ? since : ""), true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		null_low,
					null_high;
		Datum		l,
					h;

		ecp_require_all_columns(SPI_tuptable->tupdesc, INT8OID, "the key range of the source");
		l = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &null_low);
		h = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &null_high);
		if (!null_low && !null_high)
		{
			*low = DatumGetInt64(l);
			*high = DatumGetInt64(h);
			found = true;
		}
	}
	SPI_finish();
	ecp_commit_as_owner(back_to);
	return found;
}

static bool
key_is_integer(EcpPartConfig *config)
{
	MemoryContext back_to;
	Oid			key_type,
				id_type;

	back_to = ecp_begin_as_owner(config);
	if (config->query == NULL)
		config->query = MemoryContextStrdup(config->memory,
											ecp_checked_statement_text(config->raw_query));
	SPI_connect();
	ecp_source_column_types(config, &key_type, &id_type);
	SPI_finish();
	ecp_commit_as_owner(back_to);
	return key_type == INT2OID || key_type == INT4OID || key_type == INT8OID;
}

/*
 * Cut the part into key ranges (it becomes the first of them); true when
 * it was cut, false when it reads the whole query.  The caller reloads
 * the part either way.
 */
static bool
split_into_ranges(EcpPartConfig *config)
{
	int64		low = 0,
				high = 0;
	bool		integer_key;
	bool		has_keys = false;
	int			ranges;
	StringInfoData event;

	integer_key = key_is_integer(config);
	if (integer_key)
		has_keys = key_bounds(config, &low, &high);
	ranges = ecp_store_split(config, has_keys, low, high,
								  integer_key ? config->parallelism * RANGES_PER_WORKER : 1);
	ecp_json_object_new(&event);
	if (!integer_key)
	{
		ecp_json_key_int(&event, "ranges", 1);
		ecp_json_key_string(&event, "why", psprintf("key column \"%s\" is not an integer: one part reads the whole query",
													config->key_column));
	}
	else
	{
		ecp_json_key_int(&event, "ranges", ranges);
		ecp_json_key_int(&event, "min", low);
		ecp_json_key_int(&event, "max", high);
	}
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_SPLIT, event.data);
	return ranges > 1;
}

/* The part's total, once: what the source says (a file: not yet known). */
static void
record_total(EcpPartConfig *config, EcpSource *source)
{
	bool		is_estimate;
	int64		total;

	if (config->progress.has_total)
		return;
	/* two statements: C does not order the evaluation of arguments */
	total = source->ops->total(source->state, config, &is_estimate);
	ecp_store_set_total(config, total, is_estimate);
}

/*
 * Open a source of the part's kind, its state in a memory context of its
 * own (an error on the way frees it: a retried open leaks nothing).
 */
static EcpSource *
open_source(EcpPartConfig *config)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext context = AllocSetContextCreate(TopMemoryContext, "ecp source",
												  ALLOCSET_SMALL_SIZES);
	EcpSource  *source = MemoryContextAllocZero(context, sizeof(EcpSource));

	source->ops = source_of(config);
	source->context = context;
	PG_TRY();
	{
		source->state = source->ops->open(config, context);
	}
	PG_CATCH();
	{
		/* the open may have failed inside its own memory */
		MemoryContextSwitchTo(caller);
		MemoryContextDelete(context);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return source;
}

/* Close what the source holds and free its state (NULL: nothing open). */
void
ecp_source_close(EcpSource *source)
{
	if (source == NULL)
		return;
	if (source->ops->close)
		source->ops->close(source->state);
	MemoryContextDelete(source->context);
}

/* A source of the part's kind, open, with the part's total recorded. */
static EcpSource *
open_with_total(EcpPartConfig *config)
{
	MemoryContext caller = CurrentMemoryContext;
	EcpSource  *source = open_source(config);

	PG_TRY();
	{
		record_total(config, source);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		ecp_source_close(source);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return source;
}

/*
 * Ready the part's source and record its total.  A part to be cut into
 * key ranges first records the whole query's total as the run's (the
 * planner's guess for a range of a table without statistics would be far
 * off), is cut, and then reads the first range.
 */
EcpSource *
ecp_source_open(EcpPartConfig *config)
{
	if (config->kind == ECP_PART_SPLIT && strcmp(config->paging, "cursor") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("task \"%s\" reads its query through one cursor (paging cursor), which cannot be cut into key ranges",
						config->task_name),
				 errhint("Set option parallelism to 1 (a task of paging cursor has one part), then start a new run.")));
	if (config->kind == ECP_PART_SPLIT)
	{
		config->kind = ECP_PART_QUERY;
		ecp_source_close(open_with_total(config));
		config->kind = ECP_PART_SPLIT;
		(void) split_into_ranges(config);
		ecp_store_load(config);
		config->query = NULL;	/* the range's query is built anew */
	}
	return open_with_total(config);
}
