/*
 * count_check.c: when a full run ends, the index's _count against the
 * documents the run wrote, in the run's flow ("count checked", with
 * "equal"), so "is the index complete?" is one query.
 *
 * ecp_internal._count_check_index decides whether the count can say so (a run of
 * the whole source, of a task that is the index's only writer or says it
 * is, through option count_check) and names the index.  The index is
 * refreshed first: documents are counted once they are searchable.  The
 * run has succeeded by then, so nothing here can fail it: a count that
 * cannot be taken is recorded with its error.
 */
#include "sink.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "json_build.h"

/* The index to count, or NULL: no count for this run. */
static char *
index_to_count(EcpPartConfig *config)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext back_to = ecp_begin_bookkeeping();
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(config->run_id)};
	char	   *index = NULL;

	SPI_connect();
	if (SPI_execute_with_args("SELECT ecp_internal._count_check_index($1)", 1, types, values, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		char	   *value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (value)
			index = MemoryContextStrdup(caller, value);
	}
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	MemoryContextSwitchTo(caller);
	return index;
}

static void
record_count(EcpPartConfig *config, const char *index, int64 count)
{
	MemoryContext back_to = ecp_begin_bookkeeping();
	Oid			types[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {Int64GetDatum(config->run_id), CStringGetTextDatum(index), Int64GetDatum(count)};

	SPI_connect();
	if (SPI_execute_with_args("SELECT ecp_internal._record_count_check($1, $2, $3)", 3, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "ecp: could not record the count check of run " INT64_FORMAT, config->run_id);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}

static void
record_failure(EcpPartConfig *config, const char *index, const char *error)
{
	StringInfoData event;

	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "index", index);
	ecp_json_key_string(&event, "error", error);
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_COUNT_CHECKED, event.data);
}

/* Refresh, then count; false with *error when the cluster did not answer so. */
static bool
count_documents(EcpSink *sink, EcpPartConfig *config, const char *index, int64 *count, char **error)
{
	EcpAnswer	answer;

	if (ecp_sink_request(sink, config, ECP_ANSWER_ACK, "POST", psprintf("/%s/_refresh", index), NULL,
						 &answer, error) != ECP_SEND_DONE)
		return false;
	if (!ecp_answer_ok(&answer))
	{
		(void) ecp_answer_refused(config, psprintf("refreshing \"%s\"", index), &answer, error);
		return false;
	}
	if (ecp_sink_request(sink, config, ECP_ANSWER_COUNT, "GET", psprintf("/%s/_count", index), NULL,
						 &answer, error) != ECP_SEND_DONE)
		return false;
	if (!ecp_answer_ok(&answer))
	{
		(void) ecp_answer_refused(config, psprintf("counting \"%s\"", index), &answer, error);
		return false;
	}
	*count = ecp_answer_count_of(config, &answer);
	return true;
}

static void
check_in(EcpSink *sink, EcpPartConfig *config)
{
	char	   *index = index_to_count(config);
	char	   *error = NULL;
	int64		count;

	if (index == NULL)
		return;
	if (count_documents(sink, config, index, &count, &error))
		record_count(config, index, count);
	else
		record_failure(config, index, error ? error : "stopped");
}

/* The count check of a run this worker's part ended (never an ERROR). */
void
ecp_count_check(EcpPartConfig *config, EcpSink *sink)
{
	MemoryContext context = CurrentMemoryContext;

	PG_TRY();
	{
		check_in(sink, config);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(context);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("ecp run " INT64_FORMAT ": the count check failed: %s", config->run_id, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}
