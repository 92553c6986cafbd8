/*
 * retention.c: the launcher purges the history older than
 * ecp.history_days (days; 0 keeps everything): finished runs with their
 * parts, dead letters, drift and flow rows, flow rows whose run is gone,
 * and throughput samples, through ecp_internal._purge_history (which says what it
 * keeps whatever its age).
 *
 * A pass removes at most PURGE_MAX_RUNS runs in one short transaction of
 * its own, so a large backlog never holds locks or grows one transaction
 * for long.  Passes come once a minute; sooner when the last one reached
 * its bound (a backlog: the next wake-up goes on with it) or the setting
 * changed (a new retention applies at once).  The purge's lock waits are
 * bounded like every step of the launcher (pass_steps.c), and runs a role
 * holds locked are skipped until a later pass.  A pass that removed
 * something says so in one LOG line.
 */
#include "ecp.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "launcher_pass.h"

/* Runs one pass removes at most (flow rows and samples: 100 times that). */
#define PURGE_MAX_RUNS 1000

/* A pass at most this often, unless a backlog or a new setting asks for one. */
#define PURGE_INTERVAL_MS 60000

int			ecp_history_days = 30;

/* The launcher's own: when and with what setting it last purged. */
static TimestampTz last_purge_at = 0;
static int	last_purge_days = -1;
static bool last_purge_had_more = false;

/* What one pass removed (ecp_internal._purge_history's columns). */
typedef struct PurgeCounts
{
	int64		runs;
	int64		failed_docs;
	int64		flow_rows;
	int64		throughput_rows;
	bool		more;
} PurgeCounts;

void
ecp_retention_define_gucs(void)
{
	DefineCustomIntVariable("ecp.history_days",
							"Days of history ecp keeps: the launcher purges finished runs, their flow rows and dead letters, and throughput samples older than this; 0 keeps everything.",
							"A task's latest run and its latest successful one are kept whatever their age.",
							&ecp_history_days,
							30, 0, 36500,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
}

static int64
column_int64(int column, bool *isnull)
{
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column, isnull));
}

/* The purge itself, a step of its own (pass_steps.c). */
static void
purge_step(void *arg)
{
	PurgeCounts *counts = (PurgeCounts *) arg;
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(ecp_history_days), Int32GetDatum(PURGE_MAX_RUNS)};
	bool		isnull;

	SPI_connect();
	if (SPI_execute_with_args("SELECT runs, failed_docs, flow_rows, throughput_rows, more"
							  "  FROM ecp_internal._purge_history($1, $2)",
							  2, types, values, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "ecp_internal._purge_history returned no row");
	for (int column = 1; column <= 4; column++)
		ecp_require_column_type(SPI_tuptable->tupdesc, column, INT8OID, "ecp_internal._purge_history");
	ecp_require_column_type(SPI_tuptable->tupdesc, 5, BOOLOID, "ecp_internal._purge_history");
	counts->runs = column_int64(1, &isnull);
	counts->failed_docs = column_int64(2, &isnull);
	counts->flow_rows = column_int64(3, &isnull);
	counts->throughput_rows = column_int64(4, &isnull);
	counts->more = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	SPI_finish();
}

static bool
purge_due(TimestampTz now)
{
	if (ecp_history_days == 0)
		return false;
	return last_purge_at == 0 || last_purge_had_more || ecp_history_days != last_purge_days ||
		TimestampDifferenceExceeds(last_purge_at, now, PURGE_INTERVAL_MS);
}

/*
 * Called by the launcher after each pass over the runs, in no transaction:
 * one bounded purge in a transaction of its own, when one is due.
 */
void
ecp_purge_history(void)
{
	TimestampTz now = GetCurrentTimestamp();
	PurgeCounts counts;
	bool		purged;

	if (!purge_due(now))
		return;
	memset(&counts, 0, sizeof(counts));
	last_purge_at = now;
	last_purge_days = ecp_history_days;
	last_purge_had_more = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "purging ecp's history");
	purged = ecp_pass_step(purge_step, &counts, "purge the history older than ecp.history_days", true);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	if (!purged)
		return;
	last_purge_had_more = counts.more;
	if (counts.runs > 0 || counts.flow_rows > 0 || counts.throughput_rows > 0)
		ereport(LOG,
				(errmsg("ecp launcher purged the history older than %d days (ecp.history_days): "
						INT64_FORMAT " runs with " INT64_FORMAT " dead letters, " INT64_FORMAT " flow rows, "
						INT64_FORMAT " throughput samples%s",
						last_purge_days, counts.runs, counts.failed_docs, counts.flow_rows,
						counts.throughput_rows, counts.more ? "; more to purge at the next pass" : "")));
}
