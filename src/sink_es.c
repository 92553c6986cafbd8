/*
 * sink_es.c: send a batch to Elasticsearch with _bulk and judge each
 * document from the response.
 *
 * The page is split into requests of at most batch_bytes (a document
 * larger than that goes alone).  HTTP 200 does not mean success: the
 * items[] of the response are walked in request order (bulk_response.c).
 * filter_path keeps the response small but leaves one entry per item.
 *
 * Unless the run's owner is exempt (superuser, ecp.unrestricted_role),
 * every address curl connects to is checked against the outbound policy
 * (host_policy.c) as it connects, so a name that resolves elsewhere later
 * (DNS rebinding) or a consumer row written some other way still cannot
 * reach a blocked address; insecure TLS and ca_file are checked at open.
 * Messages show the consumer as scheme://host:port only: a URL path may
 * hold a token.
 */
#include "sync.h"

#include "miscadmin.h"
#include "utils/memutils.h"

#include "bulk_response.h"
#include "host_policy.h"
#include "http_client.h"

/*
 * Elasticsearch answers a body over http.max_content_length with an empty
 * 413 and closes the connection, possibly while the client is still
 * sending: libcurl then reports a failed send or a reset instead of the
 * 413.  A connection lost that way under a body of more than this many
 * bytes, twice in a row, is taken for that refusal (a configuration
 * failure: sending the same body again cannot pass); the first time it is
 * retried like any network failure, so a node restart or a load balancer
 * dropping one connection does not fail a run.  Under a smaller body a
 * lost connection is always transient.  1 MiB is far below any sensible
 * http.max_content_length (100 MiB by default) and far above what a reset
 * of an idle or small request needs to be told apart from.
 */
#define LOST_MEANS_TOO_LARGE_BYTES (1024 * 1024)
#define TOO_LARGE_HINT "request too large: lower batch_bytes (the cluster's http.max_content_length)"

/*
 * Largest _bulk answer read: with filter_path an item takes ~25 bytes, a
 * failed one a few hundred; 4 KiB per document of the batch plus 1 MiB
 * (an error page) leaves room for clusters that ignore filter_path, and
 * keeps what a hostile server can make a worker hold bounded by the batch.
 */
#define RESPONSE_BYTES_PER_DOC 4096L
#define RESPONSE_BYTES_SLACK (1024L * 1024)
#define MAX_RESPONSE_BYTES (64L * 1024 * 1024)

static EcpHttpClient *client = NULL;

/*
 * The last request of a page, begun and not yet answered: the worker
 * reads the next page meanwhile.  Everything here lives in the batch's
 * memory, which is kept until ecp_sink_finish.
 */
typedef struct InFlight
{
	bool		active;
	StringInfoData body;
	int		   *members;
	int			nmembers;
	EcpDocResult *results;
} InFlight;

static InFlight in_flight;
static char *bulk_url = NULL;
static char *origin = NULL;		/* "scheme://host:port" of the consumer */
static bool address_refused = false;	/* by filter_address, this request */

static int
abort_transfer(void *arg)
{
	return ecp_worker_should_stop((const EcpPartConfig *) arg);
}

/*
 * EcpHttpConfig.allow_address: the outbound policy for the address curl
 * is about to connect to, with the GUCs' values now (a reload applies to
 * the next connection).  Runs inside curl: no ereport, no palloc.
 */
int
ecp_filter_address(const struct sockaddr *sa, socklen_t len, const char *host, int port,
				   char *why, size_t whylen, void *arg)
{
	const EcpPartConfig *config = arg;
	HmPolicy	policy;
	HmAddr		addr;
	HmVerdict	verdict;
	char		reason[256];
	char		text[HM_ADDR_TEXT];
	char		where[HM_ADDR_TEXT + 16];

	if (hm_addr_from_sockaddr(sa, len, &addr, NULL) != 0)
	{
		address_refused = true;
		snprintf(why, whylen, "consumer address of family %d is not allowed for role \"%s\"",
				 (int) sa->sa_family, config->owner_name);
		return 0;
	}
	ecp_host_policy_current(&policy);
	verdict = hm_check(&policy, host, port, &addr, reason, sizeof(reason));
	if (verdict == HM_ALLOWED)
		return 1;
	address_refused = true;
	hm_addr_format(&addr, text, sizeof(text));
	hm_format_entry(text, port, where, sizeof(where));
	snprintf(why, whylen, "consumer address %s is not allowed for role \"%s\": %s%s",
			 where, config->owner_name, reason,
			 verdict == HM_BLOCKED ? "; an administrator can list it in ecp.allowed_hosts" : "");
	return 0;
}

/*
 * The consumer's TLS options must be ones the policy allows the owner: the
 * check at create time is bypassed by rows written otherwise, and the
 * settings may have changed since.  A forbidden one fails the run (the
 * message is what the run records, so it says what to change).
 */
static void
check_insecure(const EcpPartConfig *config)
{
	if (config->target_unrestricted || !config->insecure || ecp_allow_insecure_tls)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("consumer option \"insecure\" is not allowed for role \"%s\"; "
					"an administrator can allow it with ecp.allow_insecure_tls = on",
					config->owner_name),
			 errhint("Or name the cluster's CA certificate with consumer option \"ca_file\".")));
}

/*
 * The CA file to hand curl, NULL for the system's: for an owner under the
 * policy its real path inside ecp.ca_directory, which no later link swap
 * can redirect.
 */
static const char *
allowed_ca_file(const EcpPartConfig *config)
{
	char	   *resolved;

	if (config->ca_file == NULL || config->ca_file[0] == '\0')
		return NULL;
	if (config->target_unrestricted)
		return config->ca_file;
	if (!ecp_host_policy_ca_file_allowed(config->ca_file, &resolved))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("consumer option \"ca_file\" \"%s\" is not allowed for role \"%s\": "
						"it is not a file in ecp.ca_directory",
						config->ca_file, config->owner_name),
				 errhint("An administrator puts the CA certificate in the directory ecp.ca_directory names.")));
	return MemoryContextStrdup(TopMemoryContext, resolved);
}

/* The largest answer a _bulk request of this task may get (see above). */
static size_t
response_limit(const EcpPartConfig *config)
{
	long		limit = RESPONSE_BYTES_SLACK + RESPONSE_BYTES_PER_DOC * Max(config->batch_size, 1);

	return (size_t) Min(limit, MAX_RESPONSE_BYTES);
}

void
ecp_sink_open(EcpPartConfig *config)
{
	EcpHttpConfig http;
	char		err[256];
	char		where[HM_HOST_MAX + 32];

	if (ecp_http_global_init(err, sizeof(err)) != 0)
		ereport(ERROR, (errmsg("ecp could not initialise libcurl: %s", err)));

	memset(&http, 0, sizeof(http));
	http.connect_timeout_ms = config->connect_timeout_ms;
	http.request_timeout_ms = config->request_timeout_ms;
	http.auth_header = config->auth_header;
	http.user_agent = "ecp/" ECP_VERSION;
	http.max_response_bytes = response_limit(config);
	http.should_abort = abort_transfer;
	http.abort_arg = config;
	http.gzip_requests = config->gzip;
	check_insecure(config);
	http.ca_file = allowed_ca_file(config);
	http.insecure = config->insecure;
	if (!config->target_unrestricted)
	{
		http.allow_address = ecp_filter_address;
		http.address_arg = config;
	}

	client = ecp_http_client_create(&http, err, sizeof(err));
	if (client == NULL)
		ereport(ERROR, (errmsg("ecp could not create an HTTP client: %s", err)));
	bulk_url = MemoryContextStrdup(TopMemoryContext,
								   psprintf("%s/%s/_bulk?filter_path=%s", config->url,
											config->index_name, ECP_BULK_FILTER_PATH));
	hm_url_origin(config->url, where, sizeof(where));
	origin = MemoryContextStrdup(TopMemoryContext, where);
}

/*
 * Why a request failed before an HTTP status came: the policy's refusal as
 * it is, anything else after "POST <origin>/<index>/_bulk failed".
 */
static char *
transfer_error(const EcpPartConfig *config, EcpHttpOutcome outcome, const char *error)
{
	if (outcome == ECP_HTTP_SETUP && address_refused)
		return pstrdup(error);
	return psprintf("POST %s/%s/_bulk failed: %s", origin, config->index_name, error);
}

void
ecp_sink_close(void)
{
	in_flight.active = false;
	if (client)
		ecp_http_client_destroy(client);
	client = NULL;
}

static void
copy_item_results(const EcpBulkResult *parsed, const int *members, EcpDocResult *results)
{
	for (int i = 0; i < parsed->nitems; i++)
	{
		const EcpBulkItem *item = &parsed->items[i];
		EcpDocResult *result = &results[members[i]];

		result->status = item->status;
		result->outcome = item->klass == ECP_ITEM_OK ? ECP_DOC_OK :
			item->klass == ECP_ITEM_RETRY ? ECP_DOC_RETRY : ECP_DOC_FAILED;
		result->error_type = item->error_type ? pstrdup(item->error_type) : NULL;
		result->reason = item->reason ? pstrdup(item->reason) : NULL;
	}
}


/*
 * Take ndocs tokens from the task's and the consumer's rate buckets,
 * waiting (interruptibly) until they are there; false when a pause,
 * cancel or shutdown ended the wait.
 */
static bool
take_tokens(EcpPartConfig *config, int ndocs)
{
	bool		waited = false;
	bool		stopped = false;

	for (;;)
	{
		/* the first shortfall registers this worker as waiting */
		long		wait_ms = ecp_limiter_take(config->task_id, config->consumer_id, ndocs, !waited);

		if (wait_ms == 0)
			break;
		waited = true;
		/* short naps: a rate raised meanwhile is seen at once */
		if (!ecp_worker_wait(config, Min(wait_ms, 100)))
		{
			stopped = true;
			break;
		}
	}
	if (waited)
		ecp_limiter_done_waiting(config->task_id);
	return !stopped;
}

static EcpSendStatus
begin_request(EcpPartConfig *config, StringInfo body, int ndocs, EcpHttpResponse *response,
			  char **error)
{
	EcpHttpOutcome outcome;

	memset(response, 0, sizeof(*response));
	if (!take_tokens(config, ndocs))
		return ECP_SEND_STOPPED;
	address_refused = false;
	outcome = ecp_http_begin(client, "POST", bulk_url, "application/x-ndjson",
							 body->data, body->len, NULL, response);
	if (outcome == ECP_HTTP_OK)
		return ECP_SEND_DONE;
	if (outcome == ECP_HTTP_ABORTED)
		return ECP_SEND_STOPPED;
	*error = transfer_error(config, outcome, response->error);
	ecp_http_response_free(response);
	return outcome == ECP_HTTP_TRANSPORT ? ECP_SEND_TRANSIENT : ECP_SEND_FAILED;
}

/* The failure class of a whole-request HTTP status, and what to tell. */
static EcpSendStatus
classify_status(long status, const char **hint)
{
	*hint = "";
	if (status == 429 || status == 502 || status == 503 || status == 504)
		return ECP_SEND_TRANSIENT;
	if (status == 401 || status == 403)
		*hint = "; check the consumer's credentials (options username/password or api_key) and the role's index privileges";
	else if (status == 413)
		*hint = "; " TOO_LARGE_HINT;
	else if (status == 404)
		*hint = "; the index does not exist and the cluster does not create it: create it, or allow auto-creation";
	else if (status >= 400 && status < 500)
		*hint = "; the cluster refused the whole request: check the URL, index name and task options";
	return ECP_SEND_FAILED;
}

/*
 * A body the cluster refused for its size: an HTTP 413, or (above
 * LOST_MEANS_TOO_LARGE_BYTES) a connection closed before the answer.
 */
static char *
too_large_error(const EcpPartConfig *config, const char *what, int ndocs)
{
	return psprintf("POST %s/%s/_bulk %s (%d document%s, batch_bytes %d): " TOO_LARGE_HINT "%s",
					origin, config->index_name, what, ndocs, ndocs == 1 ? "" : "s",
					config->batch_bytes,
					ndocs == 1 ? "; a single document this large can never be indexed: shrink or exclude it" : "");
}

/* Large bodies whose connection was lost in a row (reset by any answer). */
static int	large_bodies_lost = 0;

/* Why a transfer failed, and its class (see LOST_MEANS_TOO_LARGE_BYTES). */
static EcpSendStatus
transfer_failed(const EcpPartConfig *config, EcpHttpOutcome outcome, const EcpHttpResponse *response,
				size_t body_len, int ndocs, char **error)
{
	bool		large_lost = outcome == ECP_HTTP_TRANSPORT && response->connection_lost &&
		body_len > LOST_MEANS_TOO_LARGE_BYTES;

	large_bodies_lost = large_lost ? large_bodies_lost + 1 : 0;
	if (large_bodies_lost >= 2)
	{
		large_bodies_lost = 0;
		*error = too_large_error(config,
								 psprintf("lost its connection (%s) twice in a row with a body of %zu bytes in flight",
										  response->error, body_len),
								 ndocs);
		return ECP_SEND_FAILED;
	}
	*error = transfer_error(config, outcome, response->error);
	return outcome == ECP_HTTP_TRANSPORT ? ECP_SEND_TRANSIENT : ECP_SEND_FAILED;
}

/* Why a whole request was answered with a non-2xx status, and its class. */
static EcpSendStatus
status_failed(const EcpPartConfig *config, const EcpHttpResponse *response, size_t body_len,
			  int ndocs, char **error)
{
	const char *hint;
	char		err[512];
	EcpSendStatus status = classify_status(response->status, &hint);

	if (response->status == 429)
		ecp_limiter_feedback(config->consumer_id, true);
	if (response->status == 413)
	{
		*error = too_large_error(config, psprintf("answered HTTP 413 to a body of %zu bytes", body_len),
								 ndocs);
		return status;
	}
	ecp_error_summary(response->body, response->body_len, response->status, err, sizeof(err));
	*error = psprintf("POST %s/%s/_bulk answered HTTP %ld: %s%s", origin,
					  config->index_name, response->status, err, hint);
	return status;
}

/*
 * A document refused for the cluster's setup (ECP_ITEM_CONFIG: privileges,
 * a write block, a missing index, an alias without a write index): every
 * other document would be refused alike, so the run stops with ES's
 * reason and what to change, before anything reaches failed_docs.
 */
static char *
config_item_error(const EcpPartConfig *config, const EcpBulkResult *parsed)
{
	const EcpBulkItem *item = &parsed->items[parsed->first_config];
	const char *type = item->error_type ? item->error_type : "error";
	const char *reason = item->reason ? item->reason : "(no reason given)";

	if (item->error_type && strcmp(item->error_type, "index_not_found_exception") == 0)
		return psprintf("index \"%s\" does not exist%s (%d %s: %s); %s", config->index_name,
						config->op && strcmp(config->op, "delete") == 0 ? "" : " and the cluster does not create it",
						item->status, type, reason, ecp_bulk_config_hint(item, config->op));
	return psprintf("index \"%s\" refused %d of %d documents with HTTP %d %s: %s; %s",
					config->index_name, parsed->n_config, parsed->nitems, item->status, type,
					reason, ecp_bulk_config_hint(item, config->op));
}

/*
 * Wait for the answer of the request in flight (body_len bytes, the
 * documents listed in members, indexes into the batch) and fill their
 * results.  Returns ECP_SEND_DONE, or why not (with *error set for
 * failures).
 */
static EcpSendStatus
finish_request(EcpPartConfig *config, size_t body_len, const int *members, int nmembers,
			   EcpDocResult *results, char **error)
{
	EcpHttpResponse response;
	EcpHttpOutcome outcome;
	EcpBulkResult parsed;
	char		err[512];
	EcpSendStatus status = ECP_SEND_DONE;

	memset(&response, 0, sizeof(response));
	outcome = ecp_http_finish(client, &response);
	if (outcome == ECP_HTTP_OK)
		large_bodies_lost = 0;	/* an answer: the body's size was not refused by a reset */
	if (outcome == ECP_HTTP_ABORTED)
		status = ECP_SEND_STOPPED;
	else if (outcome != ECP_HTTP_OK)
		status = transfer_failed(config, outcome, &response, body_len, nmembers, error);
	else if (response.status < 200 || response.status > 299)
		status = status_failed(config, &response, body_len, nmembers, error);
	/*
	 * Each item is judged by its own action (NULL op): a page may mix the
	 * task's op with deletes of ids the query no longer returns.
	 */
	else if (ecp_bulk_parse(response.body, response.body_len, nmembers, NULL, 0,
							&parsed, err, sizeof(err)) != 0)
	{
		*error = psprintf("the _bulk response of %s could not be read: %s", origin, err);
		status = ECP_SEND_FAILED;
	}
	else
	{
		if (parsed.n_config > 0)
		{
			*error = config_item_error(config, &parsed);
			status = ECP_SEND_FAILED;
		}
		else
		{
			copy_item_results(&parsed, members, results);
			/* items answered 429 slow the consumer down; a clean answer lets it climb */
			ecp_limiter_feedback(config->consumer_id, parsed.n_retry > 0);
		}
		ecp_bulk_result_free(&parsed);
	}
	ecp_http_response_free(&response);
	return status;
}

static EcpSendStatus
send_request(EcpPartConfig *config, StringInfo body, const int *members, int nmembers,
			 EcpDocResult *results, char **error)
{
	EcpHttpResponse response;
	EcpSendStatus status = begin_request(config, body, nmembers, &response, error);

	if (status != ECP_SEND_DONE)
		return status;
	return finish_request(config, body->len, members, nmembers, results, error);
}

/*
 * Send the batch (or the documents listed in subset) in requests of at
 * most batch_bytes (a larger document goes alone); the last request is
 * only begun: ecp_sink_finish completes it.  A document without _id is a
 * dead letter, never sent.
 */
EcpSendStatus
ecp_sink_begin(EcpPartConfig *config, EcpBatch *batch, const int *subset, int nsubset,
			   EcpDocResult *results, char **error)
{
	StringInfoData body;
	int		   *members = palloc(sizeof(int) * Max(batch->ndocs, 1));
	int			nmembers = 0;
	int			count = subset ? nsubset : batch->ndocs;
	double		rate = ecp_limiter_rate(config->task_id, config->consumer_id);

	/* under a rate limit, requests of 1/20 s worth keep the flow even */
	int			max_docs = rate > 0 ? (int) Max(1.0, Min(rate / 20, (double) INT_MAX)) : INT_MAX;
	EcpSendStatus status;
	EcpHttpResponse response;

	Assert(!in_flight.active);
	initStringInfo(&body);
	for (int k = 0; k < count; k++)
	{
		int			i = subset ? subset[k] : k;
		int			before = body.len;

		if (batch->docs[i].id == NULL)
		{
			results[i].outcome = ECP_DOC_FAILED;
			results[i].error_type = "null_id";
			results[i].reason = psprintf("id column \"%s\" is NULL (key %s)",
										 config->id_column, batch->docs[i].key);
			continue;
		}
		if (nmembers >= max_docs)
		{
			status = send_request(config, &body, members, nmembers, results, error);
			if (status != ECP_SEND_DONE)
				return status;
			resetStringInfo(&body);
			nmembers = 0;
			before = 0;
		}
		ecp_batch_append_ndjson(&body, config, &batch->docs[i]);
		if (body.len > config->batch_bytes && nmembers > 0)
		{
			/* Over the byte limit: send what came before this document. */
			body.len = before;
			body.data[before] = '\0';
			status = send_request(config, &body, members, nmembers, results, error);
			if (status != ECP_SEND_DONE)
				return status;
			resetStringInfo(&body);
			nmembers = 0;
			ecp_batch_append_ndjson(&body, config, &batch->docs[i]);
		}
		members[nmembers++] = i;
	}
	if (nmembers == 0)
		return ECP_SEND_DONE;
	status = begin_request(config, &body, nmembers, &response, error);
	if (status == ECP_SEND_DONE)
	{
		in_flight.active = true;
		in_flight.body = body;
		in_flight.members = members;
		in_flight.nmembers = nmembers;
		in_flight.results = results;
	}
	return status;
}

/* Complete the page begun by ecp_sink_begin (nothing to do if none). */
EcpSendStatus
ecp_sink_finish(EcpPartConfig *config, char **error)
{
	if (!in_flight.active)
		return ECP_SEND_DONE;
	in_flight.active = false;
	return finish_request(config, in_flight.body.len, in_flight.members, in_flight.nmembers,
						  in_flight.results, error);
}
