/*
 * follow_watch.c: the launcher's look at followers' replication slots.
 *
 * A slot retains WAL until its follower confirms it: a follower that
 * cannot write (Elasticsearch down, the run paused or failed) makes it
 * grow.  At every pass ecp_internal._watch_followers() alerts once when a slot
 * retains more than ecp.follow_max_retained_wal (and again when it grew
 * back after falling below), or when PostgreSQL invalidated it
 * (max_slot_wal_keep_size); the alert is a flow row and NOTIFY ecp_alert
 * like every alert, and the launcher's webhook posts it.
 */
#include "ecp.h"

#include "executor/spi.h"

/*
 * Called by the scheduler's pass, inside its transaction.  An extension
 * not yet updated to a version with followers has none.
 */
void
ecp_watch_followers(void *arg)
{
	SPI_connect();
	if (SPI_execute("SELECT pg_catalog.to_regprocedure('ecp_internal._watch_followers()') IS NOT NULL", true, 1)
		== SPI_OK_SELECT && SPI_processed == 1 &&
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0)
		SPI_execute("SELECT ecp_internal._watch_followers()", false, 0);
	SPI_finish();
}
