/*
 * retry.c: the retry policy (its back-off is backoff.c's), and retries of
 * the source.
 *
 * A source can fail for a moment as a sink can: MySQL restarts or fails
 * over, a connection drops, a lock wait or a statement times out, a
 * deadlock or serialization failure rolls the read back.  Such errors are
 * retried like a sink's transient failures (same back-off, max_retries,
 * flow rows and alert); any other error (a missing column, a bad cast, a
 * privilege) still fails the run at once with its message.  A step is
 * retried whole, in a new transaction: reading a page again from the same
 * key is harmless.
 */
#include "sync.h"
#include "backoff.h"
#include "json_build.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

/*
 * The one retry policy of a worker, for the sink's batches and the
 * source's steps alike: after failed attempt number attempt (why: what
 * failed), either the retries are exhausted (the run fails with the
 * message *exhausted, and the store records the class "retries
 * exhausted"), or the back-off is waited out, with an alert at
 * ecp.alert_after attempts, a flow row "retry", and the part shown as
 * retrying in ecp.progress meanwhile.  documents: how many are sent again,
 * or ECP_RETRY_OF_SOURCE for a step of the source.  Pause, cancel or
 * shutdown end the wait: ECP_RETRY_STOPPED.
 */
EcpRetryVerdict
ecp_retry_after(EcpPartConfig *config, int attempt, const char *why, int documents,
				char **exhausted)
{
	long		wait_ms;
	StringInfoData event;

	/*
	 * A follower does not give up: it keeps the index equal for as long as
	 * it follows, so it retries (alerting at ecp.alert_after) until the
	 * consumer is back or a role pauses or cancels it.
	 */
	if (attempt > config->max_retries && config->kind != ECP_PART_FOLLOW)
	{
		config->progress.exhausted_after = attempt;
		*exhausted = psprintf("retries exhausted after %d attempts (max_retries %d): %s; the checkpoint is kept, ecp.resume continues from it",
							  attempt, config->max_retries, why);
		return ECP_RETRY_EXHAUSTED;
	}
	if (attempt == ecp_alert_after)
		ecp_store_alert(config, "transient", attempt, why);
	wait_ms = ecp_backoff_ms(attempt, config->retry_base_ms, config->retry_max_ms);
	ecp_json_object_new(&event);
	ecp_json_key_int(&event, "attempt", attempt);
	ecp_json_key_int(&event, "wait_ms", wait_ms);
	if (documents == ECP_RETRY_OF_SOURCE)
		ecp_json_key_bool(&event, "source", true);
	else
		ecp_json_key_int(&event, "documents", documents);
	ecp_json_key_string(&event, "error", why);
	ecp_json_end_object(&event);
	ecp_store_retrying(config, attempt, wait_ms, why,
					   documents == ECP_RETRY_OF_SOURCE ? "source" : "consumer", event.data);
	pgstat_report_activity(STATE_RUNNING, "waiting to retry");
	if (!ecp_worker_wait(config, wait_ms))
		return ECP_RETRY_STOPPED;
	return ECP_RETRY_AGAIN;
}

/*
 * A request of the part's own to the consumer (a refresh, a step of a
 * migration), retried like a batch: transient failures after the
 * back-off.  ECP_SEND_DONE; ECP_SEND_STOPPED (a stop request came first);
 * or ECP_SEND_FAILED, with the run failed and the failure recorded.
 */
EcpSendStatus
ecp_send_with_retries(EcpPartConfig *config, EcpSendStep step, void *arg)
{
	for (int attempt = 1;; attempt++)
	{
		char	   *error = NULL;
		EcpSendStatus status = step(config, arg, &error);

		if (status == ECP_SEND_DONE || status == ECP_SEND_STOPPED)
			return status;
		if (status == ECP_SEND_FAILED)
		{
			ecp_store_fail(config, error);
			return status;
		}
		switch (ecp_retry_after(config, attempt, error, 0, &error))
		{
			case ECP_RETRY_AGAIN:
				break;
			case ECP_RETRY_STOPPED:
				return ECP_SEND_STOPPED;
			case ECP_RETRY_EXHAUSTED:
				ecp_store_fail(config, error);
				return ECP_SEND_FAILED;
		}
	}
}

/*
 * Errors of a source that may pass by themselves: connections (class 08),
 * transaction rollbacks such as deadlocks and serialization failures (40),
 * insufficient resources (53), operator intervention such as a statement
 * timeout (57), a lock timeout, and the foreign-data wrapper's "could not
 * connect" and "could not execute" (mysql_fdw reports a lost MySQL server
 * with the latter, and reconnects on the next query).
 */
bool
ecp_source_error_is_transient(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	return category == ERRCODE_CONNECTION_EXCEPTION ||
		category == ERRCODE_TRANSACTION_ROLLBACK ||
		category == ERRCODE_INSUFFICIENT_RESOURCES ||
		category == ERRCODE_OPERATOR_INTERVENTION ||
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		sqlerrcode == ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION ||
		sqlerrcode == ERRCODE_FDW_UNABLE_TO_CREATE_EXECUTION;
}

/* A transient error of the source, for flow rows and last_error. */
typedef struct StepError
{
	char		message[1024];
	int			sqlerrcode;
} StepError;

/* How one attempt of a source step ended. */
typedef enum StepOutcome
{
	STEP_RAN,					/* its answer is in *result */
	STEP_TRANSIENT,				/* a transient error, in *error */
	STEP_STOPPED				/* a stop request interrupted its query */
} StepOutcome;

/*
 * Run step once.  A transient error, or the query cancel a stop request
 * causes (sandbox.c), is caught, the transaction aborted; any other error
 * goes on up and fails the run.
 */
static StepOutcome
try_step(EcpPartConfig *config, EcpSourceStep step, void *arg, bool *result, StepError *error)
{
	MemoryContext context = CurrentMemoryContext;
	volatile StepOutcome outcome = STEP_RAN;

	PG_TRY();
	{
		*result = step(config, arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		bool		stopped;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		stopped = edata->sqlerrcode == ERRCODE_QUERY_CANCELED && ecp_worker_should_stop(config);
		if (!stopped && !ecp_source_error_is_transient(edata->sqlerrcode))
		{
			FreeErrorData(edata);
			MemoryContextSwitchTo(context);
			PG_RE_THROW();
		}
		FlushErrorState();
		/* also gives the worker its own user back (AbortTransaction) */
		AbortCurrentTransaction();
		if (!stopped)
		{
			snprintf(error->message, sizeof(error->message), "reading the source failed: %s (SQLSTATE %s)",
					 edata->message, unpack_sql_state(edata->sqlerrcode));
			error->sqlerrcode = edata->sqlerrcode;
		}
		FreeErrorData(edata);
		MemoryContextSwitchTo(context);
		outcome = stopped ? STEP_STOPPED : STEP_TRANSIENT;
	}
	PG_END_TRY();
	return outcome;
}

/*
 * Run step once, with no waiting (a request may be in flight): true when
 * it ran (its answer in *result), false after a transient error, which is
 * logged, or a stop.
 */
bool
ecp_source_try(EcpPartConfig *config, EcpSourceStep step, void *arg, bool *result)
{
	StepError	error;
	StepOutcome outcome = try_step(config, step, arg, result, &error);
	StringInfoData event;

	if (outcome == STEP_RAN)
		return true;
	if (outcome == STEP_STOPPED)
		return false;
	ereport(LOG,
			(errmsg("ecp worker for run " INT64_FORMAT " part %d: %s; trying again after the page in flight",
					config->run_id, config->part_no, error.message)));
	ecp_json_object_new(&event);
	ecp_json_key_int(&event, "attempt", 1);
	ecp_json_key_int(&event, "wait_ms", 0);
	ecp_json_key_bool(&event, "source", true);
	ecp_json_key_bool(&event, "after_page_in_flight", true);
	ecp_json_key_string(&event, "error", error.message);
	ecp_json_end_object(&event);
	ecp_store_retrying(config, 1, 0, error.message, "source", event.data);
	return false;
}

/*
 * Run step until it runs without a transient error, backing off between
 * attempts like the sink's retries: ECP_SOURCE_TRUE or ECP_SOURCE_FALSE
 * (its answer), or ECP_SOURCE_STOPPED when pause, cancel or shutdown ended
 * a wait.  When the retries run out the run fails with the last error and
 * keeps its checkpoint.
 */
EcpSourceOutcome
ecp_source_with_retries(EcpPartConfig *config, EcpSourceStep step, void *arg)
{
	for (int attempt = 1;; attempt++)
	{
		bool		result = false;
		char	   *exhausted = NULL;
		StepError	error;
		StepOutcome outcome = try_step(config, step, arg, &result, &error);

		if (outcome == STEP_RAN)
			return result ? ECP_SOURCE_TRUE : ECP_SOURCE_FALSE;
		if (outcome == STEP_STOPPED)
			return ECP_SOURCE_STOPPED;
		switch (ecp_retry_after(config, attempt, error.message, ECP_RETRY_OF_SOURCE, &exhausted))
		{
			case ECP_RETRY_AGAIN:
				break;
			case ECP_RETRY_STOPPED:
				return ECP_SOURCE_STOPPED;
			case ECP_RETRY_EXHAUSTED:
				ereport(ERROR, (errcode(error.sqlerrcode), errmsg("%s", exhausted)));
		}
	}
}
