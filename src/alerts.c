/*
 * alerts.c: the launcher POSTs alerts to ecp.alert_webhook.
 *
 * Alerts are flow rows (action 'alert', written with a NOTIFY by
 * ecp._alert).  Each launcher pass sends the ones it has not sent yet, one
 * JSON object per POST, with short timeouts: best effort, never retried,
 * and never in a worker, so a dead webhook cannot slow a run.  The
 * webhook URL is never logged (it often carries a token).
 */
#include "ecp.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "http_client.h"

#define WEBHOOK_BATCH 20

static EcpHttpClient *webhook_client = NULL;
static int64 last_alert_id = -1;	/* -1: not read yet */

typedef struct PendingAlert
{
	int64		id;
	char	   *json;
} PendingAlert;

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
	webhook_client = ecp_http_client_create(&cfg, err, sizeof(err));
	if (webhook_client == NULL)
		ereport(WARNING, (errmsg("ecp could not create the alert webhook client: %s", err)));
	return webhook_client != NULL;
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
		SPI_execute("SELECT coalesce(max(id), 0) FROM ecp.flow_log WHERE action = 'alert'", true, 1);
		last_alert_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_execute(psprintf("SELECT id, content::text FROM ecp.flow_log"
						 " WHERE action = 'alert' AND id > " INT64_FORMAT
						 " ORDER BY id LIMIT %d", last_alert_id, WEBHOOK_BATCH), true, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		alerts[n].id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		alerts[n].json = MemoryContextStrdup(TopMemoryContext,
											 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
		n++;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return n;
}

static void
post_alert(const PendingAlert *alert)
{
	EcpHttpResponse response;
	EcpHttpOutcome outcome;

	outcome = ecp_http_request(webhook_client, "POST", ecp_alert_webhook, "application/json",
							   alert->json, strlen(alert->json), NULL, &response);
	if (outcome != ECP_HTTP_OK)
		ereport(WARNING,
				(errmsg("ecp could not POST alert " INT64_FORMAT " to ecp.alert_webhook: %s",
						alert->id, response.error)));
	else if (response.status < 200 || response.status > 299)
		ereport(WARNING,
				(errmsg("ecp.alert_webhook answered HTTP %ld to alert " INT64_FORMAT,
						response.status, alert->id)));
	ecp_http_response_free(&response);
}

void
ecp_post_alerts(void)
{
	PendingAlert alerts[WEBHOOK_BATCH];
	int			n;

	if (ecp_alert_webhook == NULL || ecp_alert_webhook[0] == '\0' || !ensure_client())
		return;
	n = read_pending(alerts);
	for (int i = 0; i < n; i++)
	{
		post_alert(&alerts[i]);
		last_alert_id = alerts[i].id;	/* best effort: sent once */
		pfree(alerts[i].json);
	}
}
