/*
 * follow_poll.c: the launcher starts the runs of followers of mode poll.
 *
 * A task over a foreign table (mysql_fdw) or of queries has neither WAL
 * to decode nor a table to put triggers on: ecp.follow follows it by
 * polling.  At every pass ecp_internal._poll_followers() starts an ordinary full
 * run of each poll follower's task whose last poll run finished
 * poll_interval ago (its option since_column makes the run read only
 * what changed); the pass after, woken by that run's commit, starts its
 * parts like any other run's.
 */
#include "ecp.h"

#include "executor/spi.h"

/*
 * Called by the scheduler's pass, inside its transaction, after the parts
 * of the pass were scheduled.  An extension not yet updated to a version
 * with followers has none.
 */
void
ecp_poll_followers(void *arg)
{
	SPI_connect();
	if (SPI_execute("SELECT pg_catalog.to_regprocedure('ecp_internal._poll_followers()') IS NOT NULL", true, 1)
		== SPI_OK_SELECT && SPI_processed == 1 &&
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0)
		SPI_execute("SELECT ecp_internal._poll_followers()", false, 0);
	SPI_finish();
}
