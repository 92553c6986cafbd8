/*
 * since.c: task option since_column, incremental runs.
 *
 * A full run of a task with since_column reads only the rows whose
 * since_column is at least the watermark less since_overlap; the key
 * paging around it stays as it is:
 *
 *   ... WHERE <page or window of keys>
 *         AND "ecp:row"."updated_at" OPERATOR(pg_catalog.>=)
 *             '2026-01-01 00:00:00'::timestamp without time zone
 *
 * The bound is one literal of the column's type, computed here: the
 * planner hands it to a foreign table as it is, and mysql_fdw sends it to
 * MySQL as a range on the column (which an index there serves).  No
 * watermark yet: no filter, the whole source.
 *
 * The watermark (ecp.watermark, one per task and query of queries) is the
 * largest value of the column that the task's last successful full run
 * read.  Each part keeps the largest value it acknowledged in its row
 * (ecp.part.since_max, with each checkpoint), and when the run succeeds
 * the trigger watermark on ecp.run moves each query's watermark up to the
 * largest of its parts' (ecp_internal._advance_watermark: never down).  A failed
 * or cancelled run moves nothing.  Id runs, files and migrations ignore
 * the option.
 *
 * A value travels as text in one form whatever the session's DateStyle
 * and TimeZone: integers in decimal, dates and timestamps in ISO 8601,
 * timestamptz in UTC with "+00", which PostgreSQL reads back under any
 * setting.  In memory it is an int64: the Datum of each allowed type is
 * an integer in the type's own order (days, microseconds; the infinities
 * at the ends), so the largest value is found without calling a
 * comparison function per row.
 */
#include "sync.h"

#include "access/stratnum.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define SECONDS_PER_DAY 86400

/* The types a since_column may have (ecp_internal._check_since_column says the same). */
bool
ecp_since_type_allowed(Oid type)
{
	switch (type)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return true;
		default:
			return false;
	}
}

/* A Datum of an allowed type as the int64 that orders like it. */
int64
ecp_since_datum_value(Oid type, Datum value)
{
	switch (type)
	{
		case INT2OID:
			return DatumGetInt16(value);
		case INT4OID:
			return DatumGetInt32(value);
		case DATEOID:
			return DatumGetDateADT(value);
		case INT8OID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return DatumGetInt64(value);
	}
	elog(ERROR, "ecp: type %u is not a type of since_column", type);
	return 0;
}

/* The value's text in ecp's one form (see the top of the file). */
static char *
since_text(Oid type, int64 value)
{
	char		buf[MAXDATELEN + 1];
	struct pg_tm tm;
	fsec_t		fsec;

	switch (type)
	{
		case DATEOID:
			if (DATE_NOT_FINITE((DateADT) value))
				EncodeSpecialDate((DateADT) value, buf);
			else
			{
				j2date((int) value + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
				EncodeDateOnly(&tm, USE_ISO_DATES, buf);
			}
			return pstrdup(buf);
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			if (TIMESTAMP_NOT_FINITE(value))
				EncodeSpecialTimestamp(value, buf);
			else if (timestamp2tm(value, NULL, &tm, &fsec, NULL, NULL) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						 errmsg("timestamp out of range")));
			else
			{
				/*
				 * Without a time zone timestamp2tm leaves the fields in
				 * UTC with tm_isdst -1, which EncodeDateTime reads as
				 * "print no offset": a timestamptz must say +00.
				 */
				tm.tm_isdst = 0;
				EncodeDateTime(&tm, fsec, type == TIMESTAMPTZOID, 0, NULL, USE_ISO_DATES, buf);
			}
			return pstrdup(buf);
		default:
			return psprintf(INT64_FORMAT, value);
	}
}

/* A value in ecp's form back into its int64 (its type's input function). */
static int64
since_parse(Oid type, const char *text)
{
	Datum		value;

	switch (type)
	{
		case DATEOID:
			value = DirectFunctionCall1(date_in, CStringGetDatum(text));
			break;
		case TIMESTAMPOID:
			value = DirectFunctionCall3(timestamp_in, CStringGetDatum(text),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
			break;
		case TIMESTAMPTZOID:
			value = DirectFunctionCall3(timestamptz_in, CStringGetDatum(text),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
			break;
		default:
			value = DirectFunctionCall1(int8in, CStringGetDatum(text));
			return DatumGetInt64(value);
	}
	return ecp_since_datum_value(type, value);
}

/* An infinite date or timestamp (integers are always finite). */
static bool
since_is_infinite(Oid type, int64 value)
{
	if (type == DATEOID)
		return DATE_NOT_FINITE((DateADT) value);
	if (type == TIMESTAMPOID || type == TIMESTAMPTZOID)
		return TIMESTAMP_NOT_FINITE(value);
	return false;
}

/*
 * The watermark less the overlap, in the column's type: overlap units of
 * an integer (down to the type's smallest value), seconds of a timestamp,
 * whole days of a date (rounded up).  An infinite watermark stays as it
 * is.  False when a date or timestamp bound falls below what the type
 * holds: the whole source is read.
 */
static bool
lower_bound(Oid type, int64 watermark, int overlap, int64 *bound)
{
	int64		smallest;
	int64		step;

	switch (type)
	{
		case INT2OID:
			smallest = PG_INT16_MIN;
			step = overlap;
			break;
		case INT4OID:
			smallest = PG_INT32_MIN;
			step = overlap;
			break;
		case INT8OID:
			smallest = PG_INT64_MIN;
			step = overlap;
			break;
		case DATEOID:
			smallest = DATETIME_MIN_JULIAN - POSTGRES_EPOCH_JDATE;
			step = (overlap + (int64) SECONDS_PER_DAY - 1) / SECONDS_PER_DAY;
			break;
		default:
			smallest = MIN_TIMESTAMP;
			step = overlap * USECS_PER_SEC;
			break;
	}
	*bound = watermark;
	if (since_is_infinite(type, watermark))
		return true;
	/* smallest + step cannot overflow: step is at most 2^31 seconds */
	if (watermark < smallest + step)
	{
		*bound = smallest;
		return type == INT2OID || type == INT4OID || type == INT8OID;
	}
	*bound = watermark - step;
	return true;
}

/*
 * What the part knows about since_column, read with its row in the
 * store's transaction (SPI connected): the option, the watermark of the
 * part's query, the largest value the part acknowledged before.  Parts
 * that are not a full read of a query (ids, files, a migration's steps
 * and loads) ignore the option: since_column stays NULL.
 */
void
ecp_since_load(EcpPartConfig *config)
{
	Oid			types[3] = {INT8OID, INT4OID, INT4OID};
	Datum		values[3] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no),
	Int32GetDatum(config->query_no)};
	HeapTuple	row;
	TupleDesc	desc;
	char	   *text;

	config->since_column = NULL;
	config->since_type = InvalidOid;	/* the source's open finds it again */
	config->since_watermark = NULL;
	config->since_watermark_type = InvalidOid;
	config->progress.has_since_max = false;
	/* a verify compares the whole source */
	if ((config->kind != ECP_PART_QUERY && config->kind != ECP_PART_RANGE &&
		 config->kind != ECP_PART_SPLIT) || config->new_index != NULL || config->verify)
		return;
	if (SPI_execute_with_args("SELECT t.options->>'since_column', t.options->>'since_overlap', "
							  "       w.value, w.value_type::pg_catalog.oid, "
							  "       p.since_max, p.since_type::pg_catalog.oid "
							  "  FROM ecp.run r JOIN ecp.part p ON p.run_id = r.id "
							  "  JOIN ecp.task t ON t.id = r.task_id "
							  "  LEFT JOIN ecp.watermark w ON w.task_id = t.id AND w.query_no = $3 "
							  " WHERE r.id = $1 AND p.part_no = $2",
							  3, types, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	text = SPI_getvalue(row, desc, 1);
	if (text == NULL)
		return;
	config->since_column = MemoryContextStrdup(config->memory, text);
	config->since_overlap = ecp_option_int("task", "since_overlap", SPI_getvalue(row, desc, 2));
	text = SPI_getvalue(row, desc, 3);
	if (text)
	{
		config->since_watermark = MemoryContextStrdup(config->memory, text);
		config->since_watermark_type = (Oid) strtoul(SPI_getvalue(row, desc, 4), NULL, 10);
	}
	text = SPI_getvalue(row, desc, 5);
	if (text && SPI_getvalue(row, desc, 6))
	{
		config->progress.since_max_type = (Oid) strtoul(SPI_getvalue(row, desc, 6), NULL, 10);
		if (ecp_since_type_allowed(config->progress.since_max_type))
		{
			config->progress.since_max = since_parse(config->progress.since_max_type, text);
			config->progress.has_since_max = true;
		}
	}
}

/*
 * The since column's type, from the query as the owner runs it (inside
 * SPI, as the owner): set in config->since_type.  A type that is not an
 * integer, a date or a timestamp fails the part (create_task refused it;
 * the table may have changed since).  A watermark or an earlier maximum
 * of another type (the column's type changed) is not used: the whole
 * source is read, and the run's watermark replaces the old one.
 */
void
ecp_since_prepare(EcpPartConfig *config)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			type;

	if (config->since_column == NULL)
		return;
	if (SPI_execute(psprintf("SELECT %s FROM (%s\n) AS " ECP_ROW_ALIAS " LIMIT 0",
							 ecp_source_column_ref(config->since_column), config->query),
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ecp: could not read the since column of the source query");
	MemoryContextSwitchTo(caller);
	type = SPI_gettypeid(SPI_tuptable->tupdesc, 1);
	if (!ecp_since_type_allowed(type))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("since_column \"%s\" of task \"%s\" is of type %s",
						config->since_column, config->task_name, format_type_be(type)),
				 errhint("since_column is an integer (smallint, integer, bigint), date, timestamp or timestamptz column that grows with every change of the row, e.g. updated_at.")));
	config->since_type = type;
	if (config->since_watermark && config->since_watermark_type != type)
		ereport(LOG,
				(errmsg("ecp task \"%s\": the watermark of since_column \"%s\" is a %s, the column is now a %s: the run reads the whole source",
						config->task_name, config->since_column,
						format_type_be(config->since_watermark_type), format_type_be(type))));
	if (config->progress.has_since_max && config->progress.since_max_type != type)
		config->progress.has_since_max = false;
}

/*
 * The page query's filter on since_column for the part's query: " AND
 * <column> >= <watermark less the overlap>" in the column's type, with
 * every name qualified (it runs as the owner under the task's
 * search_path); NULL when the part reads the whole source (no since
 * column, no watermark yet, or one of another type).  config->since_type
 * must be known (ecp_since_prepare).  A follower of mode poll starts
 * full runs, so this is its filter too.
 */
char *
ecp_since_filter(const EcpPartConfig *config)
{
	int64		bound;

	if (config->since_column == NULL || !OidIsValid(config->since_type) ||
		config->since_watermark == NULL || config->since_watermark_type != config->since_type)
		return NULL;
	if (!lower_bound(config->since_type, since_parse(config->since_type, config->since_watermark),
					 config->since_overlap, &bound))
		return NULL;
	return psprintf(" AND %s %s %s::%s", ecp_source_column_ref(config->since_column),
					ecp_type_operator(config->since_type, BTGreaterEqualStrategyNumber,
									  config->since_column),
					quote_literal_cstr(since_text(config->since_type, bound)),
					ecp_qualified_type(config->since_type));
}

/*
 * The column a page query adds last so that each row's since value is
 * seen (page_reader.c reads it by its type): ", <column>", or "".
 */
char *
ecp_since_page_column(const EcpPartConfig *config)
{
	if (config->since_column == NULL || !OidIsValid(config->since_type))
		return "";
	return psprintf(", %s", ecp_source_column_ref(config->since_column));
}

/*
 * With the checkpoint of an acknowledged batch (inside the store's SPI
 * connection): the largest since value of the batch's rows, into the
 * part's row when it is larger than the one there.
 */
void
ecp_since_save(EcpPartConfig *config, const EcpBatch *batch)
{
	Oid			types[4] = {INT8OID, INT4OID, TEXTOID, REGTYPEOID};
	Datum		values[4];
	bool		grew = false;
	int64		largest = config->progress.since_max;

	if (config->since_column == NULL || !OidIsValid(config->since_type))
		return;
	for (int i = 0; i < batch->ndocs; i++)
	{
		const EcpDoc *doc = &batch->docs[i];

		if (doc->has_since && ((!config->progress.has_since_max && !grew) || doc->since > largest))
		{
			largest = doc->since;
			grew = true;
		}
	}
	if (!grew)
		return;
	values[0] = Int64GetDatum(config->run_id);
	values[1] = Int32GetDatum(config->part_no);
	values[2] = CStringGetTextDatum(since_text(config->since_type, largest));
	values[3] = ObjectIdGetDatum(config->since_type);
	if (SPI_execute_with_args("UPDATE ecp.part SET since_max = $3, since_type = $4 "
							  " WHERE run_id = $1 AND part_no = $2",
							  4, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "ecp: could not record the largest since value of run " INT64_FORMAT " part %d",
			 config->run_id, config->part_no);
	config->progress.since_max = largest;
	config->progress.since_max_type = config->since_type;
	config->progress.has_since_max = true;
}

/*
 * Move the watermark of the part's query up to the largest value the part
 * acknowledged (ecp_internal._advance_watermark: compared in the column's type,
 * never down), in a bookkeeping transaction of its own; the watermark
 * after goes into config, so the next ecp_since_filter starts there.
 * Nothing to do before the part acknowledged a row.  A full run's
 * watermark moves by itself when the run succeeds (the trigger watermark
 * on ecp.run), also a poll run of a follower of mode poll, which is a
 * full run: nothing calls this yet.
 */
void
ecp_store_advance_watermark(EcpPartConfig *config)
{
	Oid			types[5] = {INT8OID, INT4OID, REGTYPEOID, TEXTOID, INT8OID};
	Datum		values[5];
	MemoryContext back_to;
	char	   *after = NULL;

	if (config->since_column == NULL || !config->progress.has_since_max)
		return;
	values[0] = Int64GetDatum(config->task_id);
	values[1] = Int32GetDatum(config->query_no);
	values[2] = ObjectIdGetDatum(config->progress.since_max_type);
	values[3] = CStringGetTextDatum(since_text(config->progress.since_max_type,
											   config->progress.since_max));
	values[4] = Int64GetDatum(config->run_id);
	back_to = ecp_begin_bookkeeping();
	SPI_connect();
	if (SPI_execute_with_args("SELECT ecp_internal._advance_watermark($1, $2, $3, $4, $5)",
							  5, types, values, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "ecp: could not advance the watermark of task \"%s\"", config->task_name);
	ecp_require_column_type(SPI_tuptable->tupdesc, 1, TEXTOID, "ecp_internal._advance_watermark");
	after = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	config->since_watermark = after ? MemoryContextStrdup(config->memory, after) : NULL;
	config->since_watermark_type = config->progress.since_max_type;
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}
