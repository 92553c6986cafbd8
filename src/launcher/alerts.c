/*
 * alerts.c: the launcher POSTs alerts to ecp.alert_webhook.
 *
 * Alerts are flow rows (action 'alert', written with a NOTIFY by
 * ecp_internal._alert).  Each launcher pass sends the ones it has not sent yet, one
 * JSON object per POST, with short timeouts: best effort, never retried,
 * and never in a worker, so a dead webhook cannot slow a run.  The
 * webhook URL is never logged (it often carries a token).
 *
 * The POSTs run inside the launcher's pass, so they are bounded: at most
 * PASS_BUDGET_MS of POSTing per pass (a request in flight is abandoned at
 * the deadline, and the alerts left wait for the next pass), and after a
 * failure the webhook is left alone for a back-off that doubles up to
 * MAX_BACKOFF_MS, so a webhook that accepts connections and never answers
 * costs the scheduling at most one budget now and then.  (Not backoff.c's:
 * that one is a task's, set by its options; this one is the webhook's.)  An alert larger
 * than MAX_ALERT_BYTES (ecp writes small ones; only a superuser's direct
 * INSERT can be larger) is not read: a short JSON notice with its id and
 * "truncated": true is sent in its place, pointing at ecp.flow.
 */
#include "ecp.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "http_client.h"
#include "json_build.h"

#define WEBHOOK_BATCH 20

/* Time the launcher spends POSTing alerts per pass, at most. */
#define PASS_BUDGET_MS 2000

/* After a failure the webhook waits this long, doubling up to MAX_BACKOFF_MS. */
#define FIRST_BACKOFF_MS 1000
#define MAX_BACKOFF_MS 60000

/* Larger alerts are not read into memory; a short notice names them instead. */
#define MAX_ALERT_BYTES 65536

static TimestampTz pass_deadline = 0;
static TimestampTz resume_at = 0;	/* no POST before this, after a failure */
static long backoff_ms = 0;

static EcpHttpClient *webhook_client = NULL;
static int64 last_alert_id = -1;	/* -1: not read yet */

typedef struct PendingAlert
{
	int64		id;
	char	   *json;
} PendingAlert;

/* Polled by curl while a POST runs: the pass's budget is spent, or a stop. */
static int
past_deadline(void *arg)
{
	return GetCurrentTimestamp() >= pass_deadline || ecp_launcher_stopping();
}

static bool
ensure_client(void)
{
	EcpHttpConfig cfg;
	char		err[256];

	if (webhook_client)
		return true;
	if (ecp_http_global_init(err, sizeof(err)) != 0)
		return false;
	memset(&cfg, 0, sizeof(cfg));
	cfg.connect_timeout_ms = 1000;
	cfg.request_timeout_ms = 2000;
	cfg.user_agent = "ecp/" ECP_VERSION " alert";
	cfg.max_response_bytes = 65536;
	cfg.should_abort = past_deadline;
	webhook_client = ecp_http_client_create(&cfg, err, sizeof(err));
	if (webhook_client == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("ecp could not create the alert webhook client: %s", err),
				 errhint("Alerts are still written to ecp.flow and sent with NOTIFY ecp_alert.")));
	return webhook_client != NULL;
}

/* What the webhook gets instead of an alert too large to send. */
static char *
truncated_alert(int64 id)
{
	StringInfoData note;

	ecp_json_object_new(&note);
	ecp_json_key_int(&note, "alert", id);
	ecp_json_key_bool(&note, "truncated", true);
	ecp_json_key_string(&note, "error",
						psprintf("the alert is larger than %d bytes: read it in ecp.flow", MAX_ALERT_BYTES));
	ecp_json_end_object(&note);
	return note.data;
}

/* The alerts after last_alert_id, copied out of the transaction. */
static int
read_pending(PendingAlert *alerts)
{
	int			n = 0;
	bool		isnull;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (last_alert_id < 0)
	{
		/* start from now: alerts raised before this launcher are not resent */
		SPI_execute("SELECT COALESCE(pg_catalog.max(id), 0::pg_catalog.int8) FROM ecp.flow_log"
					" WHERE action OPERATOR(pg_catalog.=) 'alert'::pg_catalog.text", true, 1);
		ecp_require_column_type(SPI_tuptable->tupdesc, 1, INT8OID, "the last alert");
		last_alert_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	/*
	 * The content is cast to text only when its stored size is small (the
	 * stored size bounds the text: pglz compresses at most about 90 to 1),
	 * so a huge row is never expanded in the launcher.
	 */
	SPI_execute(psprintf("SELECT id, CASE WHEN pg_catalog.pg_column_size(content) OPERATOR(pg_catalog.<=) %d"
						 "            THEN content::pg_catalog.text END"
						 "  FROM ecp.flow_log"
						 " WHERE action OPERATOR(pg_catalog.=) 'alert'::pg_catalog.text"
						 "   AND id OPERATOR(pg_catalog.>) " INT64_FORMAT "::pg_catalog.int8"
						 " ORDER BY id LIMIT %d", MAX_ALERT_BYTES / 4, last_alert_id, WEBHOOK_BATCH),
				true, 0);
	ecp_require_column_type(SPI_tuptable->tupdesc, 1, INT8OID, "the alerts");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *json = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		alerts[n].id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		if (json == NULL || strlen(json) > MAX_ALERT_BYTES)
			json = truncated_alert(alerts[n].id);
		alerts[n].json = MemoryContextStrdup(TopMemoryContext, json);
		n++;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return n;
}

/* After a failure: leave the webhook alone for a while, longer each time. */
static void
back_off(void)
{
	backoff_ms = backoff_ms == 0 ? FIRST_BACKOFF_MS : Min(backoff_ms * 2, MAX_BACKOFF_MS);
	resume_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_ms);
}

/*
 * POST one alert; true when the webhook took it (2xx).  A failure is a
 * WARNING, and the alert counts as sent all the same (best effort, no
 * retry): a webhook that never answers must not get the same alert again
 * and again.
 */
static bool
post_alert(const PendingAlert *alert)
{
	EcpHttpResponse response;
	EcpHttpOutcome outcome;
	bool		ok = false;

	outcome = ecp_http_request(webhook_client, "POST", ecp_alert_webhook, "application/json",
							   alert->json, strlen(alert->json), NULL, &response);
	if (outcome == ECP_HTTP_ABORTED)
		ereport(WARNING,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("ecp.alert_webhook did not answer alert " INT64_FORMAT " in time; the launcher leaves the webhook alone for a while",
						alert->id),
				 errhint("The launcher spends at most %d ms per pass on the webhook, and waits longer after each failure.",
						 PASS_BUDGET_MS)));
	else if (outcome != ECP_HTTP_OK)
		ereport(WARNING,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("ecp could not POST alert " INT64_FORMAT " to ecp.alert_webhook: %s",
						alert->id, response.error),
				 errhint("The launcher tries the webhook again after a back-off of up to %d s; the alert stays in ecp.flow.",
						 MAX_BACKOFF_MS / 1000)));
	else if (response.status < 200 || response.status > 299)
		ereport(WARNING,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("ecp.alert_webhook answered HTTP %ld to alert " INT64_FORMAT,
						response.status, alert->id),
				 errhint("The webhook should answer 2xx; the alert stays in ecp.flow.")));
	else
		ok = true;
	ecp_http_response_free(&response);
	return ok;
}

void
ecp_post_alerts(void)
{
	PendingAlert alerts[WEBHOOK_BATCH];
	int			n;

	if (ecp_alert_webhook == NULL || ecp_alert_webhook[0] == '\0' ||
		GetCurrentTimestamp() < resume_at)
		return;
	if (!ensure_client())
	{
		back_off();				/* not a WARNING every second */
		return;
	}
	n = read_pending(alerts);
	pass_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PASS_BUDGET_MS);
	for (int i = 0; i < n && !past_deadline(NULL); i++)
	{
		bool		ok = post_alert(&alerts[i]);

		last_alert_id = alerts[i].id;	/* best effort: sent once */
		if (!ok)
		{
			back_off();
			break;
		}
		backoff_ms = 0;
	}
	for (int i = 0; i < n; i++)
		pfree(alerts[i].json);
}
