/*
 * sink.c: send a batch to the consumer and get one result per document.
 *
 * The page is split into requests of at most batch_bytes (a document
 * larger than that goes alone); the consumer's kind (sink_es.c: _bulk,
 * sink_http.c: a write service) decides how a body is written and how an
 * answer is judged.  Everything else is the same for both: rate limits,
 * the request in flight while the next page is read, failure classes of
 * whole requests, and nodes: the consumer's URL and its further nodes
 * (option nodes) take requests in turn; one that refuses connections or
 * times out is left out for NODE_DOWN_MS, and the request goes to the
 * next one at once.  When every node is down the request fails as
 * transient and the worker's back-off applies.  A run whose tag has a
 * route sends to the route's URL only.
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
#include "json_build.h"
#include "sink.h"

#include "utils/timestamp.h"

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
 * Every other request (ecp_sink_call) has the smaller cap of its kind
 * (es_answers.h) for the time it runs.
 */
#define RESPONSE_BYTES_PER_DOC 4096L
#define RESPONSE_BYTES_SLACK (1024L * 1024)
#define MAX_RESPONSE_BYTES (64L * 1024 * 1024)


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
	const EcpBatch *batch;
} InFlight;


/*
 * How long a node that refused a connection or timed out is left out.
 * Long enough that a dead node costs one failed connect per half minute,
 * not one per request; short enough that a restarted node is back in use
 * within a minute.
 */
#define NODE_DOWN_MS 30000

typedef struct SinkNode
{
	char	   *base;			/* URL without trailing '/' */
	char	   *origin;			/* scheme://host:port, for messages */
	TimestampTz down_until;		/* 0: up */
	int64		requests;
	int64		failures;
} SinkNode;

/*
 * An open sink: everything a part's requests share, from ecp_sink_open
 * to ecp_sink_close, in the sink's own memory.
 */
struct EcpSink
{
	MemoryContext context;
	EcpHttpClient *client;
	const EcpSinkFormat *format;
	char	   *request_path;	/* of the batches (changes with dual writes) */
	const char *tag_headers[2];
	bool		said_hello;
	char	   *product;		/* what GET / said: "Elasticsearch", "OpenSearch", ... */
	SinkNode   *nodes;
	int			nnodes;
	int			current_node;	/* the node of the request in flight */
	InFlight	in_flight;
	EcpAddressCheck filter;	/* its refused: the last request's */
	int			large_bodies_lost;	/* in a row (reset by any answer) */
	int64		bytes_sent;		/* batch request bodies sent since the last
								 * ecp_sink_take_bytes_sent */
	char	   *settings;		/* what it was opened with (settings_of):
								 * a part with the same may reuse it */
};


static int
abort_transfer(void *arg)
{
	return ecp_worker_should_stop((const EcpPartConfig *) arg);
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
	return pstrdup(resolved);
}


/*
 * A verify's _mget answers carry the documents: its requests hold at most
 * batch_bytes of the documents compared (answer_weight), and the index's
 * may be larger than ecp's (a stale document), so four times that, plus
 * the metadata of each, up to 1 GiB.
 */
#define MAX_VERIFY_RESPONSE_BYTES (1024L * 1024 * 1024)

/* The largest answer a request of this task may get (see above). */
static size_t
response_limit(const EcpPartConfig *config)
{
	long		limit = RESPONSE_BYTES_SLACK + RESPONSE_BYTES_PER_DOC * Max(config->batch_size, 1);

	if (config->verify)
		return (size_t) Min(limit + 4L * config->batch_bytes, MAX_VERIFY_RESPONSE_BYTES);
	return (size_t) Min(limit, MAX_RESPONSE_BYTES);
}

static void
add_node(EcpSink *sink, const char *url)
{
	char		where[HM_HOST_MAX + 32];
	char	   *base = pstrdup(url);
	size_t		len = strlen(base);

	ecp_config_check_url(base);
	while (len > 0 && base[len - 1] == '/')
		base[--len] = '\0';	/* paths are appended with their own '/' */
	hm_url_origin(base, where, sizeof(where));
	sink->nodes[sink->nnodes].base = base;
	sink->nodes[sink->nnodes].origin = pstrdup(where);
	sink->nodes[sink->nnodes].down_until = 0;
	sink->nodes[sink->nnodes].requests = 0;
	sink->nodes[sink->nnodes].failures = 0;
	sink->nnodes++;
}

/* The URL (the route's, or the consumer's) and the further nodes. */
static void
open_nodes(EcpSink *sink, const EcpPartConfig *config)
{
	sink->nodes = palloc0(sizeof(SinkNode) * (config->nnodes + 1));
	sink->nnodes = 0;
	add_node(sink, config->url);
	for (int i = 0; i < config->nnodes; i++)
		add_node(sink, config->nodes[i]);
	sink->current_node = (int) (config->part_no % sink->nnodes);	/* parts spread over the nodes */
}

/* The tag header line, checked again: a row written otherwise must not inject headers. */
static void
open_tag_header(EcpSink *sink, const EcpPartConfig *config)
{
	const char *name = config->tag_header ? config->tag_header : "X-Ecp-Tag";

	sink->tag_headers[0] = NULL;
	if (config->tag == NULL)
		return;
	for (const char *c = config->tag; *c; c++)
		if (!isalnum((unsigned char) *c) && !strchr("_.:-", *c))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid option \"tag\" \"%s\" of task \"%s\"", config->tag, config->task_name),
					 errhint("A tag is 1 to 64 letters, digits, \"_\", \".\", \":\" or \"-\".")));
	for (const char *c = name; *c; c++)
		if (!isalnum((unsigned char) *c) && *c != '-')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid consumer option \"tag_header\" \"%s\"", name)));
	sink->tag_headers[0] = psprintf("%s: %s", name, config->tag);
}

/* The curl options of the part's consumer (the client is made from them). */
static void
http_options(EcpSink *sink, EcpPartConfig *config, EcpHttpConfig *http)
{
	memset(http, 0, sizeof(*http));
	http->connect_timeout_ms = config->connect_timeout_ms;
	http->request_timeout_ms = config->request_timeout_ms;
	http->auth_header = config->auth_header;
	http->user_agent = "ecp/" ECP_VERSION;
	http->max_response_bytes = response_limit(config);
	http->should_abort = abort_transfer;
	http->abort_arg = config;
	http->gzip_requests = config->gzip;
	check_insecure(config);
	http->ca_file = allowed_ca_file(config);
	http->insecure = config->insecure;
	if (!config->target_unrestricted)
	{
		/* the sink outlives the part whose memory holds the config */
		sink->filter.owner_name = pstrdup(config->owner_name);
		http->allow_address = ecp_filter_address;
		http->address_arg = &sink->filter;
	}
}

/* How the part's batches are written. */
static const EcpSinkFormat *
sink_format_of(const EcpPartConfig *config)
{
	return config->write_service ? &ecp_http_format :
		config->verify ? &ecp_verify_format : &ecp_es_format;
}

/*
 * Everything of the config that open_in_context reads, as one string: a
 * worker that goes on with another part of its run keeps its sink (its
 * connections, what GET / said) only when the part's is the same.  Among
 * them the URL of the part's route, the consumer's credentials, the
 * request path (the index, a dual write) and the batch size (the answer
 * cap); the run's owner is the same by construction.
 */
static char *
settings_of(EcpPartConfig *config)
{
	StringInfoData settings;

	initStringInfo(&settings);
	appendStringInfo(&settings, "%s\n%s\n%s\n%s\n%s\n%s\n%s\n%ld %ld %d %d %d %d %d %d %d %d",
					 config->url, config->tag ? config->tag : "", config->tag_header ? config->tag_header : "",
					 config->auth_header ? config->auth_header : "", config->ca_file ? config->ca_file : "",
					 config->owner_name, sink_format_of(config)->path(config),
					 config->connect_timeout_ms, config->request_timeout_ms, config->gzip, config->insecure,
					 config->target_unrestricted, config->write_service, config->verify,
					 config->batch_size, config->batch_bytes, config->nnodes);
	for (int i = 0; i < config->nnodes; i++)
		appendStringInfo(&settings, "\n%s", config->nodes[i]);
	return settings.data;
}

/* Fill a new sink (in its own memory, the current context). */
static void
open_in_context(EcpSink *sink, EcpPartConfig *config)
{
	EcpHttpConfig http;
	char		err[256];

	if (ecp_http_global_init(err, sizeof(err)) != 0)
		ereport(ERROR, (errmsg("ecp could not initialise libcurl: %s", err)));
	http_options(sink, config, &http);
	open_nodes(sink, config);
	open_tag_header(sink, config);
	sink->format = sink_format_of(config);
	sink->request_path = pstrdup(sink->format->path(config));
	sink->settings = settings_of(config);
	/* last: nothing after it may fail, so an error leaks no connection */
	sink->client = ecp_http_client_create(&http, err, sizeof(err));
	if (sink->client == NULL)
		ereport(ERROR, (errmsg("ecp could not create an HTTP client: %s", err)));
}

/*
 * The part's sink, ready to send: its nodes, tag header and HTTP client,
 * all in its own memory, which ecp_sink_close frees.
 */
EcpSink *
ecp_sink_open(EcpPartConfig *config)
{
	MemoryContext context = AllocSetContextCreate(TopMemoryContext, "ecp sink",
												  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(context);
	EcpSink    *sink = palloc0(sizeof(EcpSink));

	sink->context = context;
	PG_TRY();
	{
		open_in_context(sink, config);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(context);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return sink;
}

/*
 * "<method> <origin><path> failed: <why>" (the policy's refusal as it
 * is).  The path is cut at its query: filter_path says nothing to people.
 */
char *
ecp_sink_transfer_error(const EcpSink *sink, const char *method, const char *origin,
						const char *path, EcpHttpOutcome outcome, const char *why)
{
	const char *query = strchr(path, '?');

	if (outcome == ECP_HTTP_SETUP && sink->filter.refused)
		return pstrdup(why);
	return psprintf("%s %s%.*s failed: %s", method, origin,
					query ? (int) (query - path) : (int) strlen(path), path, why);
}

/*
 * The sink of the part before, if this part may go on with it (the same
 * settings: settings_of), its counters of the part before reset; else
 * that one closed and a new one opened.  NULL kept: a new one.
 */
EcpSink *
ecp_sink_reopen(EcpSink *kept, EcpPartConfig *config)
{
	char	   *settings;
	bool		same;

	if (kept == NULL)
		return ecp_sink_open(config);
	settings = settings_of(config);
	same = strcmp(settings, kept->settings) == 0;
	pfree(settings);
	if (!same)
	{
		ecp_sink_close(kept);
		return ecp_sink_open(config);
	}
	check_insecure(config);		/* the policy may have changed since */
	for (int i = 0; i < kept->nnodes; i++)
	{
		kept->nodes[i].requests = 0;
		kept->nodes[i].failures = 0;
	}
	kept->current_node = (int) (config->part_no % kept->nnodes);
	kept->large_bodies_lost = 0;
	kept->bytes_sent = 0;
	return kept;
}

/* Close the connections and free the sink (NULL: nothing to close). */
void
ecp_sink_close(EcpSink *sink)
{
	if (sink == NULL)
		return;
	if (sink->client)
		ecp_http_client_destroy(sink->client);
	MemoryContextDelete(sink->context);
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

/*
 * The next node in turn that is up; when every node is down, the one
 * that comes back first (the request is tried; the worker backs off).
 */
static int
pick_node(const EcpSink *sink)
{
	TimestampTz now = GetCurrentTimestamp();
	int			soonest = 0;

	for (int k = 1; k <= sink->nnodes; k++)
	{
		int			i = (sink->current_node + k) % sink->nnodes;

		if (sink->nodes[i].down_until <= now)
			return i;
		if (sink->nodes[i].down_until < sink->nodes[soonest].down_until)
			soonest = i;
	}
	return soonest;
}

/* Whether a node other than `node` is up. */
static bool
another_node_up(const EcpSink *sink, int node)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < sink->nnodes; i++)
		if (i != node && sink->nodes[i].down_until <= now)
			return true;
	return false;
}

/* A node refused a connection or timed out: leave it out for a while. */
static void
mark_down(EcpSink *sink, EcpPartConfig *config, int node, const char *why)
{
	StringInfoData event;

	sink->nodes[node].failures++;
	if (sink->nnodes < 2)
		return;
	sink->nodes[node].down_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), NODE_DOWN_MS);
	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "node", sink->nodes[node].origin);
	ecp_json_key_string(&event, "error", why);
	ecp_json_key_int(&event, "retry_after_ms", NODE_DOWN_MS);
	ecp_json_key_bool(&event, "other_node_up", another_node_up(sink, node));
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_NODE_DOWN, event.data);
}

static char *
url_of(const EcpSink *sink, int node, const char *path)
{
	return psprintf("%s%s", sink->nodes[node].base, path);
}

/*
 * A transfer to `node` failed without an answer: if the node is down
 * (refused, reset, timed out) and another is up, send the same request
 * there at once, until one answers or none is left.  Returns the last
 * outcome; *node is the node that gave it.  A batch's body sent again
 * counts in the bytes sent (count_bytes).
 */
static EcpHttpOutcome
fail_over(EcpSink *sink, EcpPartConfig *config, EcpHttpOutcome outcome, int *node, const char *method,
		  const char *path, const char *body, size_t body_len, EcpHttpResponse *response,
		  bool count_bytes)
{
	while (outcome == ECP_HTTP_TRANSPORT)
	{
		mark_down(sink, config, *node, response->error);
		if (!another_node_up(sink, *node))
			break;
		*node = pick_node(sink);
		ecp_http_response_free(response);
		memset(response, 0, sizeof(*response));
		sink->nodes[*node].requests++;
		sink->filter.refused = false;
		if (count_bytes)
			sink->bytes_sent += (int64) body_len;
		outcome = ecp_http_request(sink->client, method, url_of(sink, *node, path), sink->format->content_type,
								   body, body_len, sink->tag_headers, response);
	}
	return outcome;
}

/* "1 MiB" for a cap that is a whole number of KiB or MiB, else "N bytes". */
static char *
cap_text(size_t cap)
{
	if (cap >= 1024 * 1024 && cap % (1024 * 1024) == 0)
		return psprintf("%zu MiB", cap / (1024 * 1024));
	if (cap >= 1024 && cap % 1024 == 0)
		return psprintf("%zu KiB", cap / 1024);
	return psprintf("%zu bytes", cap);
}

/*
 * An answer over its kind's cap: the request fails here, without reading
 * the rest, and the run fails with what was asked of whom.  It is never
 * retried: a cluster does not answer these requests with that much, so
 * whatever answers would do it again.
 */
static void
answer_too_large(const EcpPartConfig *config, EcpAnswerKind kind, const char *method,
				 const char *origin, const char *path, EcpHttpResponse *response)
{
	const char *query = strchr(path, '?');
	size_t		cap = ecp_answer_cap(kind);

	ecp_http_response_free(response);
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s %s%.*s answered more than %s (%zu bytes), ecp's limit for answers to %s, and the rest was not read; "
					"check that the consumer of task \"%s\" points at an Elasticsearch or OpenSearch cluster",
					method, origin, query ? (int) (query - path) : (int) strlen(path), path,
					cap_text(cap), cap, ecp_answer_requests(kind), config->task_name),
			 errhint("%s", ecp_answer_hint(kind))));
}

EcpHttpOutcome
ecp_sink_call(EcpSink *sink, EcpPartConfig *config, EcpAnswerKind kind, const char *method,
			  const char *path, const char *body, size_t body_len, EcpHttpResponse *response,
			  const char **origin)
{
	EcpHttpOutcome outcome;
	int			node = pick_node(sink);

	memset(response, 0, sizeof(*response));
	sink->nodes[node].requests++;
	sink->filter.refused = false;
	ecp_http_set_max_response(sink->client, ecp_answer_cap(kind));
	outcome = ecp_http_request(sink->client, method, url_of(sink, node, path), sink->format->content_type,
							   body, body_len, sink->tag_headers, response);
	if (outcome == ECP_HTTP_TRANSPORT && sink->nnodes > 1)
		outcome = fail_over(sink, config, outcome, &node, method, path, body, body_len, response, false);
	/* back to the batches' limit (response_limit) */
	ecp_http_set_max_response(sink->client, 0);
	sink->current_node = node;
	*origin = sink->nodes[node].origin;
	if (outcome == ECP_HTTP_TOO_LARGE)
		answer_too_large(config, kind, method, *origin, path, response);
	return outcome;
}

static EcpSendStatus
begin_request(EcpSink *sink, EcpPartConfig *config, StringInfo body, int ndocs,
			  EcpHttpResponse *response, char **error)
{
	EcpHttpOutcome outcome;

	memset(response, 0, sizeof(*response));
	if (!take_tokens(config, ndocs))
		return ECP_SEND_STOPPED;
	sink->current_node = pick_node(sink);
	sink->nodes[sink->current_node].requests++;
	sink->filter.refused = false;
	outcome = ecp_http_begin(sink->client, "POST", url_of(sink, sink->current_node, sink->request_path), sink->format->content_type,
							 body->data, body->len, sink->tag_headers, response);
	if (outcome == ECP_HTTP_OK)
	{
		sink->bytes_sent += body->len;
		return ECP_SEND_DONE;
	}
	if (outcome == ECP_HTTP_ABORTED)
		return ECP_SEND_STOPPED;
	*error = ecp_sink_transfer_error(sink, "POST", sink->nodes[sink->current_node].origin, sink->request_path, outcome,
									 response->error);
	ecp_http_response_free(response);
	return outcome == ECP_HTTP_TRANSPORT ? ECP_SEND_TRANSIENT : ECP_SEND_FAILED;
}

/*
 * The failure class of a whole-request HTTP status, and what to tell.
 * 429, 502, 503 and 504 are transient for both kinds.  Elasticsearch
 * answers other 5xx for errors of the request itself (a 500 from a bad
 * body or a failed shard is not cured by sending the same body again), so
 * they fail the run; a write service's other 5xx are taken as its own
 * passing trouble (a backend it writes to is down) and retried, as its
 * protocol says.
 */
EcpSendStatus
ecp_sink_status_class(const EcpPartConfig *config, long status, const char **hint)
{
	bool		service = config->write_service;

	*hint = "";
	if (status == 429 || status == 502 || status == 503 || status == 504)
		return ECP_SEND_TRANSIENT;
	if (service && status >= 500)
		return ECP_SEND_TRANSIENT;
	if (status == 401 || status == 403)
		*hint = service ? "; check the consumer's credentials (options username/password or api_key)" :
			"; check the consumer's credentials (options username/password or api_key) and the role's index privileges";
	else if (status == 413)
		*hint = service ? "; request too large: lower batch_bytes (the write service's body limit)" : "; " TOO_LARGE_HINT;
	else if (status == 404)
		*hint = service ? "; the write service has no such URL: check the consumer's url" :
			"; the index does not exist and the cluster does not create it: create it, or allow auto-creation";
	else if (status >= 400 && status < 500)
		*hint = service ? "; the write service refused the whole request: check its URL and what it expects" :
			"; the cluster refused the whole request: check the URL, index name and task options";
	return ECP_SEND_FAILED;
}

/*
 * A body the cluster refused for its size: an HTTP 413, or (above
 * LOST_MEANS_TOO_LARGE_BYTES) a connection closed before the answer.
 */
static char *
too_large_error(const EcpSink *sink, const EcpPartConfig *config, const char *what, int ndocs)
{
	const char *query = strchr(sink->request_path, '?');

	return psprintf("POST %s%.*s %s (%d document%s, batch_bytes %d): " TOO_LARGE_HINT "%s",
					sink->nodes[sink->current_node].origin,
					query ? (int) (query - sink->request_path) : (int) strlen(sink->request_path), sink->request_path,
					what, ndocs, ndocs == 1 ? "" : "s", config->batch_bytes,
					ndocs == 1 ? "; a single document this large can never be indexed: shrink or exclude it" : "");
}

/* Why a transfer failed, and its class (see LOST_MEANS_TOO_LARGE_BYTES). */
static EcpSendStatus
transfer_failed(EcpSink *sink, const EcpPartConfig *config, EcpHttpOutcome outcome,
				const EcpHttpResponse *response, size_t body_len, int ndocs, char **error)
{
	bool		large_lost = outcome == ECP_HTTP_TRANSPORT && response->connection_lost &&
		body_len > LOST_MEANS_TOO_LARGE_BYTES;

	sink->large_bodies_lost = large_lost ? sink->large_bodies_lost + 1 : 0;
	if (sink->large_bodies_lost >= 2)
	{
		sink->large_bodies_lost = 0;
		*error = too_large_error(sink, config,
								 psprintf("lost its connection (%s) twice in a row with a body of %zu bytes in flight",
										  response->error, body_len),
								 ndocs);
		return ECP_SEND_FAILED;
	}
	*error = ecp_sink_transfer_error(sink, "POST", sink->nodes[sink->current_node].origin, sink->request_path, outcome,
									 response->error);
	return outcome == ECP_HTTP_TRANSPORT ? ECP_SEND_TRANSIENT : ECP_SEND_FAILED;
}

/* Why a whole request was answered with a non-2xx status, and its class. */
static EcpSendStatus
status_failed(const EcpSink *sink, const EcpPartConfig *config, const EcpHttpResponse *response,
			  size_t body_len, int ndocs, char **error)
{
	const char *hint;
	char		err[512];
	const char *query = strchr(sink->request_path, '?');
	EcpSendStatus status = ecp_sink_status_class(config, response->status, &hint);

	if (response->status == 429)
		ecp_limiter_feedback(config->consumer_id, true);
	if (response->status == 413)
	{
		*error = too_large_error(sink, config, psprintf("answered HTTP 413 to a body of %zu bytes", body_len),
								 ndocs);
		return status;
	}
	ecp_error_summary(response->body, response->body_len, response->status, err, sizeof(err));
	*error = psprintf("POST %s%.*s answered HTTP %ld: %s%s", sink->nodes[sink->current_node].origin,
					  query ? (int) (query - sink->request_path) : (int) strlen(sink->request_path), sink->request_path,
					  response->status, err, hint);
	return status;
}

/*
 * Wait for the answer of the request in flight (body, the documents
 * listed in members, indexes into the batch) and fill their results.  A
 * node that is down hands the request to the next one.  Returns
 * ECP_SEND_DONE, or why not (with *error set for failures).
 */
static EcpSendStatus
finish_request(EcpSink *sink, EcpPartConfig *config, StringInfo body, const EcpBatch *batch,
			   const int *members, int nmembers, EcpDocResult *results, char **error)
{
	EcpHttpResponse response;
	EcpHttpOutcome outcome;
	EcpSendStatus status;

	memset(&response, 0, sizeof(response));
	outcome = ecp_http_finish(sink->client, &response);
	if (outcome == ECP_HTTP_TRANSPORT && sink->nnodes > 1 &&
		!(response.connection_lost && (size_t) body->len > LOST_MEANS_TOO_LARGE_BYTES))
		outcome = fail_over(sink, config, outcome, &sink->current_node, "POST", sink->request_path, body->data,
							body->len, &response, true);
	if (outcome == ECP_HTTP_OK)
		sink->large_bodies_lost = 0;	/* an answer: the body's size was not refused by a reset */
	if (outcome == ECP_HTTP_ABORTED)
		status = ECP_SEND_STOPPED;
	else if (outcome != ECP_HTTP_OK)
	{
		if (outcome == ECP_HTTP_TRANSPORT && sink->nnodes == 1)
			sink->nodes[sink->current_node].failures++;
		status = transfer_failed(sink, config, outcome, &response, body->len, nmembers, error);
	}
	else if (response.status < 200 || response.status > 299)
		status = status_failed(sink, config, &response, body->len, nmembers, error);
	else
		status = sink->format->judge(config, &response, batch, members, nmembers, results, error);
	ecp_http_response_free(&response);
	return status;
}

static EcpSendStatus
send_request(EcpSink *sink, EcpPartConfig *config, StringInfo body, const EcpBatch *batch,
			 const int *members, int nmembers, EcpDocResult *results, char **error)
{
	EcpHttpResponse response;
	EcpSendStatus status = begin_request(sink, config, body, nmembers, &response, error);

	if (status != ECP_SEND_DONE)
		return status;
	return finish_request(sink, config, body, batch, members, nmembers, results, error);
}

/*
 * A document that is not sent: a NULL id, a failed transform (dead
 * letters), or one the transform dropped.  True when it was judged here.
 */
static bool
judged_before_sending(const EcpPartConfig *config, const EcpDoc *doc, EcpDocResult *result)
{
	if (doc->skipped)
		result->outcome = ECP_DOC_SKIPPED;
	else if (doc->refused)
	{
		result->outcome = ECP_DOC_FAILED;
		result->error_type = "transform";
		result->reason = doc->refused;
	}
	else if (doc->id == NULL && !config->no_id)
	{
		result->outcome = ECP_DOC_FAILED;
		result->error_type = "null_id";
		result->reason = psprintf("id column \"%s\" is NULL (key %s)", config->id_column, doc->key);
	}
	else if (config->version_column && doc->version == NULL && !doc->is_delete)
	{
		result->outcome = ECP_DOC_FAILED;
		result->error_type = "null_version";
		result->reason = psprintf("version column \"%s\" is NULL (id %s): without a version the document could overwrite a newer one",
								  config->version_column, doc->id);
	}
	else
		return false;
	return true;
}

/*
 * Send the body's first `length` bytes (the documents members[] of the
 * batch), then start a new, empty body.
 */
static EcpSendStatus
send_and_restart(EcpSink *sink, EcpPartConfig *config, StringInfo body, int length,
				 const EcpBatch *batch, const int *members, int *nmembers, EcpDocResult *results,
				 char **error)
{
	EcpSendStatus status;

	body->len = length;
	body->data[length] = '\0';
	sink->format->end_body(body);
	status = send_request(sink, config, body, batch, members, *nmembers, results, error);
	if (status != ECP_SEND_DONE)
		return status;
	resetStringInfo(body);
	sink->format->start_body(body, config);
	*nmembers = 0;
	return ECP_SEND_DONE;
}

/* The product the first request's GET / found (NULL: not asked yet, or unknown). */
void
ecp_sink_set_product(EcpSink *sink, const char *product)
{
	sink->product = MemoryContextStrdup(sink->context, product);
}

const char *
ecp_sink_product(const EcpSink *sink)
{
	return sink->product;
}

/* The first request of a part says hello (ES: GET /, which product). */
EcpSendStatus
ecp_sink_hello(EcpSink *sink, EcpPartConfig *config, char **error)
{
	EcpSendStatus status;

	if (sink->said_hello || sink->format->hello == NULL)
		return ECP_SEND_DONE;
	status = sink->format->hello(sink, config, error);
	if (status == ECP_SEND_DONE)
		sink->said_hello = true;
	return status;
}

/*
 * Send the batch (or the documents listed in subset) in requests of at
 * most batch_bytes (a larger document goes alone); the last request is
 * only begun: ecp_sink_finish completes it.  A document without _id is a
 * dead letter, never sent.
 */
EcpSendStatus
ecp_sink_begin(EcpSink *sink, EcpPartConfig *config, EcpBatch *batch, const int *subset,
			   int nsubset, EcpDocResult *results, char **error)
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
	size_t		weight = 0;		/* of the documents in the body (answer_weight) */

	Assert(!sink->in_flight.active);
	status = ecp_sink_hello(sink, config, error);
	if (status != ECP_SEND_DONE)
		return status;
	if (subset == NULL && sink->format->checks_page && !sink->format->checks_page(config))
	{
		/* not in a sample: the page's documents are counted as skipped */
		for (int i = 0; i < batch->ndocs; i++)
			results[i].outcome = ECP_DOC_SKIPPED;
		return ECP_SEND_DONE;
	}
	/* the path may change from page to page (dual writes begin and end) */
	if (sink->request_path)
		pfree(sink->request_path);
	sink->request_path = MemoryContextStrdup(sink->context, sink->format->path(config));
	initStringInfo(&body);
	sink->format->start_body(&body, config);
	for (int k = 0; k < count; k++)
	{
		int			i = subset ? subset[k] : k;
		int			before = body.len;
		size_t		doc_weight;

		if (judged_before_sending(config, &batch->docs[i], &results[i]))
			continue;
		doc_weight = sink->format->answer_weight ? sink->format->answer_weight(&batch->docs[i]) : 0;

		if (nmembers >= max_docs)
		{
			status = send_and_restart(sink, config, &body, body.len, batch, members, &nmembers, results, error);
			if (status != ECP_SEND_DONE)
				return status;
			before = body.len;
			weight = 0;
		}
		sink->format->append(&body, config, &batch->docs[i], nmembers == 0);
		if (body.len + weight + doc_weight > (size_t) config->batch_bytes && nmembers > 0)
		{
			/* Over the byte limit: send what came before this document. */
			status = send_and_restart(sink, config, &body, before, batch, members, &nmembers, results, error);
			if (status != ECP_SEND_DONE)
				return status;
			sink->format->append(&body, config, &batch->docs[i], true);
			weight = 0;
		}
		weight += doc_weight;
		members[nmembers++] = i;
	}
	if (nmembers == 0)
		return ECP_SEND_DONE;
	sink->format->end_body(&body);
	status = begin_request(sink, config, &body, nmembers, &response, error);
	if (status == ECP_SEND_DONE)
	{
		sink->in_flight.active = true;
		sink->in_flight.body = body;
		sink->in_flight.members = members;
		sink->in_flight.nmembers = nmembers;
		sink->in_flight.results = results;
		sink->in_flight.batch = batch;
	}
	return status;
}

/* Complete the page begun by ecp_sink_begin (nothing to do if none). */
EcpSendStatus
ecp_sink_finish(EcpSink *sink, EcpPartConfig *config, char **error)
{
	if (!sink->in_flight.active)
		return ECP_SEND_DONE;
	sink->in_flight.active = false;
	return finish_request(sink, config, &sink->in_flight.body, sink->in_flight.batch, sink->in_flight.members,
						  sink->in_flight.nmembers, sink->in_flight.results, error);
}

/* The part's source is exhausted: the kind's last step (ES: refresh). */
EcpSendStatus
ecp_sink_end_part(EcpSink *sink, EcpPartConfig *config, char **error)
{
	EcpSendStatus status = ecp_sink_hello(sink, config, error);

	if (status != ECP_SEND_DONE || sink->format->end_part == NULL)
		return status;
	return sink->format->end_part(sink, config, error);
}

/* Which nodes the part used, in the flow (when there was a choice). */
void
ecp_sink_report_nodes(EcpSink *sink, EcpPartConfig *config)
{
	StringInfoData list;

	if (sink->nnodes < 2)
		return;
	ecp_json_object_new(&list);
	ecp_json_key(&list, "nodes");
	ecp_json_begin_array(&list);
	for (int i = 0; i < sink->nnodes; i++)
	{
		ecp_json_begin_object(&list);
		ecp_json_key_string(&list, "node", sink->nodes[i].origin);
		ecp_json_key_int(&list, "requests", sink->nodes[i].requests);
		ecp_json_key_int(&list, "failures", sink->nodes[i].failures);
		ecp_json_end_object(&list);
	}
	ecp_json_end_array(&list);
	ecp_json_end_object(&list);
	ecp_store_event(config, ECP_FLOW_NODES_USED, list.data);
}

/*
 * The batch request bodies sent since the last call (every attempt,
 * before gzip), and start counting again: the worker takes them at each
 * page's checkpoint, whose requests are the only ones sent since.
 */
int64
ecp_sink_take_bytes_sent(EcpSink *sink)
{
	int64		sent = sink->bytes_sent;

	sink->bytes_sent = 0;
	return sent;
}
