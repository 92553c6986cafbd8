/*
 * part_control.c: what every module of a worker uses to behave: whether
 * to stop (pause, cancel, shutdown), waiting without missing a stop or a
 * heartbeat, settings reloads.  It sits
 * below the worker loop, the sources, the sink and the retry logic, so
 * their dependencies point one way: worker -> source/sink/checkpoint ->
 * part_control.
 */
#include "sync.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

static volatile sig_atomic_t got_sigterm = false;

void
ecp_worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	ecp_sandbox_sigterm();
	SetLatch(MyLatch);
	errno = save_errno;
}

bool
ecp_worker_got_sigterm(void)
{
	return got_sigterm;
}

/*
 * SIGHUP: the GUCs (heartbeat interval, alert threshold, retry defaults,
 * the outbound host policy) take effect at the next step, also in a
 * worker that runs for hours.
 */
void
ecp_reload_settings_if_asked(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/* Pause, cancel and shutdown all end in "stop and look at the run". */
bool
ecp_worker_should_stop(const EcpPartConfig *config)
{
	return got_sigterm || ecp_stop_requested(config->slot);
}

/*
 * Wait wait_ms on the latch, renewing the heartbeat every
 * ecp.heartbeat_interval; false as soon as pause, cancel or shutdown asks
 * the worker to stop (so a back-off never delays them, and is never
 * counted as a failure).
 */
bool
ecp_worker_wait(EcpPartConfig *config, long wait_ms)
{
	TimestampTz end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
	TimestampTz next_beat = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														ecp_heartbeat_interval * 1000L);

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		long		timeout;

		if (ecp_worker_should_stop(config))
			return false;
		if (now >= end)
			return true;
		if (now >= next_beat)
		{
			ecp_store_heartbeat(config);
			next_beat = TimestampTzPlusMilliseconds(now, ecp_heartbeat_interval * 1000L);
		}
		timeout = TimestampDifferenceMilliseconds(now, Min(end, next_beat));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		ecp_reload_settings_if_asked();
	}
}

/* The run is no longer running: leave the part to the run's state. */
void
ecp_part_release_for(EcpPartConfig *config, EcpRunState state)
{
	ereport(LOG,
			(errmsg("ecp worker for run " INT64_FORMAT " part %d stops: the run is %s",
					config->run_id, config->part_no, ecp_run_state_names[state])));
	ecp_store_release(config);
}

/* After a stop request: go on only if the run is still running. */
bool
ecp_part_still_running(EcpPartConfig *config)
{
	EcpRunState state;

	if (ecp_worker_got_sigterm())
		return false;

	/*
	 * Clear the request before reading the state: a pause committed after
	 * the read then sets it again and is seen at the next step, instead of
	 * being cleared unseen.
	 */
	ecp_clear_stop_request(config->slot);
	state = ecp_store_run_state(config);
	if (state == ECP_RUN_RUNNING)
		return true;
	ecp_part_release_for(config, state);
	return false;
}
