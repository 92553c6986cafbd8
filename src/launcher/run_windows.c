/*
 * run_windows.c: task option window ('HH:MM-HH:MM', the server's time
 * zone).  At every pass the launcher pauses the runs whose window closed
 * and resumes the runs it paused whose window opened, through
 * ecp_internal._apply_windows (which records why in ecp.run.paused_reason, and the
 * flow rows pause and resume say so).  A worker stops at its next batch
 * as for any pause.
 */
#include "ecp.h"

#include "executor/spi.h"

/*
 * Called by the scheduler's pass, inside its transaction (a failure is
 * the pass's warning, not the launcher's end).  An extension not yet
 * updated to a version with windows has none.
 */
void
ecp_apply_windows(void *arg)
{
	SPI_connect();
	if (SPI_execute("SELECT 1 WHERE pg_catalog.to_regprocedure('ecp_internal._apply_windows()') IS NOT NULL",
					true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		SPI_execute("SELECT ecp_internal._apply_windows()", false, 0);
	SPI_finish();
}
