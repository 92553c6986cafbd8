/*
 * sink_es.c: the consumer kind elasticsearch: a batch is a _bulk request
 * (batch.c writes its NDJSON) and each document is judged from the items
 * of the answer.
 *
 * HTTP 200 does not mean success: the items[] of the response are walked
 * in request order (bulk_response.c).  filter_path keeps the response
 * small but leaves one entry per item.  Before its first request a part
 * asks GET / which product it talks to: Elasticsearch 7 to 9 or
 * OpenSearch; anything else fails the run (a URL pointing at some other
 * HTTP server would otherwise be found out by a confusing _bulk error).
 */
#include "sink.h"

#include "bulk_response.h"
#include "json_build.h"

#include <jansson.h>

/*
 * /{index}/_bulk?filter_path=...[&pipeline=...]: the index is in the URL;
 * while a migration of the index (an alias) loads, /_bulk, and each
 * action names its index (dual writes).
 */
static char *
es_path(const EcpPartConfig *config)
{
	return psprintf("%s%s/_bulk?filter_path=%s%s%s", config->dual_index ? "" : "/",
					config->dual_index ? "" : config->index_name, ECP_BULK_FILTER_PATH,
					config->pipeline ? "&pipeline=" : "", config->pipeline ? config->pipeline : "");
}

/* What GET / said: product and version, or why it is not a cluster ecp knows. */
typedef struct Product
{
	char		name[32];
	char		version[64];
	bool		known;
} Product;

/*
 * jansson is fine here: the answer was read up to ECP_ANSWER_PRODUCT_CAP
 * (64 KiB) at most, a tree of a few MB at worst.
 */
static void
read_product(const char *body, size_t len, Product *product)
{
	json_error_t jerr;
	json_t	   *root = json_loadb(body, Min(len, ECP_ANSWER_PRODUCT_CAP), 0, &jerr);
	json_t	   *version = root ? json_object_get(root, "version") : NULL;
	const char *number = json_string_value(json_object_get(version, "number"));
	const char *distribution = json_string_value(json_object_get(version, "distribution"));
	const char *tagline = json_string_value(json_object_get(root, "tagline"));
	int			major = number ? atoi(number) : 0;

	memset(product, 0, sizeof(*product));
	snprintf(product->version, sizeof(product->version), "%s", number ? number : "unknown");
	if (distribution && strcmp(distribution, "opensearch") == 0)
	{
		strcpy(product->name, "OpenSearch");
		product->known = major >= 1 && major <= 3;
	}
	else if (tagline && strcmp(tagline, "You Know, for Search") == 0)
	{
		strcpy(product->name, "Elasticsearch");
		product->known = major >= 7 && major <= 9;
	}
	else
		strcpy(product->name, "unknown");
	if (root)
		json_decref(root);
}

/*
 * What a request of the part's own (GET /, a refresh) came to when it
 * got no 2xx: stopped, a transfer failure, or a status and its class.
 * ECP_SEND_DONE for a 2xx.
 */
EcpSendStatus
ecp_es_call_outcome(const EcpSink *sink, const EcpPartConfig *config, EcpHttpOutcome outcome,
			 const EcpHttpResponse *response, const char *method, const char *origin,
			 const char *path, const char **hint, char **error)
{
	char		summary[512];
	EcpSendStatus status;

	if (outcome == ECP_HTTP_ABORTED)
		return ECP_SEND_STOPPED;
	if (outcome != ECP_HTTP_OK)
	{
		*error = ecp_sink_transfer_error(sink, method, origin, path, outcome, response->error);
		return outcome == ECP_HTTP_TRANSPORT ? ECP_SEND_TRANSIENT : ECP_SEND_FAILED;
	}
	if (response->status >= 200 && response->status <= 299)
		return ECP_SEND_DONE;
	status = ecp_sink_status_class(config, response->status, hint);
	ecp_error_summary(response->body, response->body_len, response->status, summary, sizeof(summary));
	*error = psprintf("%s %s%s answered HTTP %ld: %s", method, origin, path, response->status, summary);
	return status;
}

/*
 * The consumer's URL has a path (after scheme://host:port): a path prefix
 * for a cluster behind a reverse proxy works, but an index name there
 * (http://es:9200/products) makes GET / read the index.  The hint for a
 * cluster that does not answer GET / as one: "" when the URL has no path.
 */
static char *
path_hint(const EcpPartConfig *config)
{
	const char *authority = strstr(config->url, "://");
	const char *path = authority ? strchr(authority + 3, '/') : NULL;

	if (path == NULL || strspn(path, "/") == strlen(path))
		return "";
	return psprintf("; the consumer's URL has the path \"%s\": if that is an index name, give the cluster's URL "
					"without it (the index belongs in the task); a path is for a cluster behind a reverse proxy", path);
}

/* The flow's note of the product, from the first part only (once per run). */
static void
note_product(EcpPartConfig *config, const char *origin, const char *name, const char *version,
			 const char *why)
{
	StringInfoData event;

	if (config->part_no != 0)
		return;
	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "node", origin);
	ecp_json_key_string(&event, "product", name);
	ecp_json_key_string(&event, "version", version);
	if (why)
		ecp_json_key_string(&event, "note", why);
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_CLUSTER, event.data);
}

/*
 * GET /: which product and version.  A 403 (a user allowed to write but
 * not to monitor the cluster) is no reason to stop: the product stays
 * unknown and the flow says why.
 */
EcpSendStatus
ecp_es_hello(EcpSink *sink, EcpPartConfig *config, char **error)
{
	EcpHttpResponse response;
	const char *origin;
	const char *hint = "";
	char		summary[512];
	Product		product;
	EcpHttpOutcome outcome = ecp_sink_call(sink, config, ECP_ANSWER_PRODUCT, "GET", "/", NULL, 0, &response, &origin);
	EcpSendStatus status = ecp_es_call_outcome(sink, config, outcome, &response, "GET", origin, "/", &hint, error);

	if (outcome == ECP_HTTP_OK && response.status == 403)
	{
		note_product(config, origin, "unknown", "unknown",
					 "GET / answered HTTP 403: the consumer's user may not read the cluster's version (monitor privilege)");
		status = ECP_SEND_DONE;
	}
	else if (status == ECP_SEND_FAILED && outcome == ECP_HTTP_OK)
		*error = psprintf("%s%s", *error, response.status == 401 ? hint :
						  "; the consumer's URL must point at Elasticsearch 7, 8 or 9 or OpenSearch 1 to 3 (for a write service of your own, create the consumer with kind => 'http')");
	else if (status == ECP_SEND_DONE)
	{
		read_product(response.body, response.body_len, &product);
		if (product.known)
		{
			note_product(config, origin, product.name, product.version, NULL);
			ecp_sink_set_product(sink, product.name);
		}
		else
		{
			ecp_error_summary(response.body, response.body_len, response.status, summary, sizeof(summary));
			*error = psprintf("%s is not Elasticsearch 7, 8 or 9 or OpenSearch 1 to 3: GET / answered product %s, version %s (%s); "
							  "point the consumer at a cluster, or create it with kind => 'http' for a write service of your own%s",
							  origin, product.name, product.version, summary, path_hint(config));
			status = ECP_SEND_FAILED;
		}
	}
	ecp_http_response_free(&response);
	return status;
}

static void
es_start_body(StringInfo body, const EcpPartConfig *config)
{
}

/* Dual writes: each document to the alias, then to the new index. */
static void
es_append(StringInfo body, const EcpPartConfig *config, const EcpDoc *doc, bool first)
{
	if (config->dual_index == NULL)
	{
		ecp_batch_append_ndjson(body, config, doc, NULL);
		return;
	}
	ecp_batch_append_ndjson(body, config, doc, config->index_name);
	ecp_batch_append_ndjson(body, config, doc, config->dual_index);
}

static void
es_end_body(StringInfo body)
{
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

	if (item->error_type && strcmp(item->error_type, "index_not_found_exception") == 0 && config->writes_alias)
		return psprintf("alias \"%s\" of task \"%s\" (mode alias_swap) does not exist yet (%d %s: %s); "
						"a full run (ecp.start(task)) creates the first index and points the alias at it; "
						"until then other runs are refused rather than create an index named like the alias, "
						"which would keep the alias from ever being created",
						config->alias, config->task_name, item->status, type, reason);
	if (item->error_type && strcmp(item->error_type, "index_not_found_exception") == 0)
		return psprintf("index \"%s\" does not exist%s (%d %s: %s); %s", config->index_name,
						config->op && strcmp(config->op, "delete") == 0 ? "" : " and the cluster does not create it",
						item->status, type, reason, ecp_bulk_config_hint(item, config->op));
	return psprintf("index \"%s\" refused %d of %d documents with HTTP %d %s: %s; %s",
					config->index_name, parsed->n_config, parsed->nitems, item->status, type,
					reason, ecp_bulk_config_hint(item, config->op));
}

/*
 * With external versions a 409 means the index holds this version or a
 * newer one: nothing to write, and nothing failed.
 */
static bool
is_stale(const EcpPartConfig *config, const EcpBulkItem *item)
{
	return config->version_column != NULL && item->status == 409;
}

static EcpDocOutcome
item_outcome(const EcpPartConfig *config, const EcpBulkItem *item)
{
	return item->klass == ECP_ITEM_OK ? ECP_DOC_OK :
		item->klass == ECP_ITEM_RETRY ? ECP_DOC_RETRY :
		is_stale(config, item) ? ECP_DOC_STALE : ECP_DOC_FAILED;
}

/* Of the two answers to a dual write, the one that decides: the worse. */
static int
outcome_rank(EcpDocOutcome outcome)
{
	switch (outcome)
	{
		case ECP_DOC_FAILED:
			return 3;
		case ECP_DOC_RETRY:
			return 2;
		case ECP_DOC_STALE:
			return 1;
		default:
			return 0;
	}
}

/*
 * Each member's result from its item, or (dual writes) from the worse of
 * its two items: a document is done only when the alias and the new index
 * both took it.
 */
static void
copy_item_results(const EcpPartConfig *config, const EcpBulkResult *parsed, const int *members,
				  int per_doc, EcpDocResult *results)
{
	for (int i = 0; i < parsed->nitems; i++)
	{
		const EcpBulkItem *item = &parsed->items[i];
		EcpDocResult *result = &results[members[i / per_doc]];
		EcpDocOutcome outcome = item_outcome(config, item);

		if (i % per_doc != 0 && outcome_rank(outcome) <= outcome_rank(result->outcome))
			continue;
		result->status = item->status;
		result->outcome = outcome;
		result->error_type = item->error_type ? pstrdup(item->error_type) : NULL;
		result->reason = item->reason ? pstrdup(item->reason) : NULL;
	}
}

static EcpSendStatus
es_judge(EcpPartConfig *config, const EcpHttpResponse *response, const EcpBatch *batch,
		 const int *members, int nmembers, EcpDocResult *results, char **error)
{
	EcpBulkResult parsed;
	char		err[512];
	EcpSendStatus status = ECP_SEND_DONE;

	/*
	 * Each item is judged by its own action (NULL op): a page may mix the
	 * task's op with deletes of ids the query no longer returns.
	 */
	int			per_doc = config->dual_index ? 2 : 1;

	if (ecp_bulk_parse(response->body, response->body_len, nmembers * per_doc, NULL, 0,
					   &parsed, err, sizeof(err)) != 0)
	{
		*error = psprintf("the _bulk response to %s could not be read: %s", config->index_name, err);
		return ECP_SEND_FAILED;
	}
	if (parsed.n_config > 0)
	{
		*error = config_item_error(config, &parsed);
		status = ECP_SEND_FAILED;
	}
	else
	{
		copy_item_results(config, &parsed, members, per_doc, results);
		/* items answered 429 slow the consumer down; a clean answer lets it climb */
		ecp_limiter_feedback(config->consumer_id, parsed.n_retry > 0);
	}
	ecp_bulk_result_free(&parsed);
	return status;
}

/*
 * Option refresh: the part's documents are searchable when it is done
 * (every part refreshes once at its end, so they all are when the run
 * succeeds).
 */
static EcpSendStatus
es_end_part(EcpSink *sink, EcpPartConfig *config, char **error)
{
	EcpHttpResponse response;
	const char *origin;
	const char *hint = "";
	char	   *path;
	EcpSendStatus status;
	EcpHttpOutcome outcome;

	if (!config->refresh)
		return ECP_SEND_DONE;
	path = psprintf("/%s/_refresh", config->index_name);
	outcome = ecp_sink_call(sink, config, ECP_ANSWER_ACK, "POST", path, NULL, 0, &response, &origin);
	status = ecp_es_call_outcome(sink, config, outcome, &response, "POST", origin, path, &hint, error);
	if (status == ECP_SEND_DONE)
	{
		StringInfoData event;

		ecp_json_object_new(&event);
		ecp_json_key_string(&event, "index", config->index_name);
		ecp_json_end_object(&event);
		ecp_store_event(config, ECP_FLOW_REFRESHED, event.data);
	}
	else if (status == ECP_SEND_FAILED && outcome == ECP_HTTP_OK)
		*error = psprintf("%s%s", *error, hint);
	ecp_http_response_free(&response);
	return status;
}

const EcpSinkFormat ecp_es_format = {
	.content_type = "application/x-ndjson",
	.path = es_path,
	.hello = ecp_es_hello,
	.start_body = es_start_body,
	.append = es_append,
	.end_body = es_end_body,
	.judge = es_judge,
	.end_part = es_end_part,
};
