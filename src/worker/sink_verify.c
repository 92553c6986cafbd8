/*
 * sink_verify.c: a verify run's pages are compared, never written.
 *
 * A request is an _mget of the page's ids (with their routing) on the
 * task's index, asking only for what the comparison needs: the _version
 * when the task has version_column (its documents are written with
 * external versions, so the version says whether the index is current),
 * else _source.  Each document is judged from its item of the answer:
 * equal (ECP_DOC_OK), or drifted (ECP_DOC_DRIFT) as "missing" (not
 * found) or "stale" (found, but not what ecp would send now; the reason
 * names the first field that differs).  Equality is that of JSON values
 * (json_compare.c: jsonb's), after the task's transform; an op update
 * task sends partial documents, so only the fields it sends are compared.
 *
 * Nothing here writes to the index: GET / and _mget are the only
 * requests a verify part sends.
 */
#include "sink.h"

#include "common/pg_prng.h"
#include "utils/json.h"

#include "json_compare.h"
#include "verify_answers.h"

static char *
verify_path(const EcpPartConfig *config)
{
	return psprintf("/%s/_mget%s", config->index_name,
					config->version_column ? "?_source=false" : "");
}

static void
verify_start_body(StringInfo body, const EcpPartConfig *config)
{
	appendStringInfoString(body, "{\"docs\":[");
}

static void
verify_append(StringInfo body, const EcpPartConfig *config, const EcpDoc *doc, bool first)
{
	if (!first)
		appendStringInfoChar(body, ',');
	appendStringInfoString(body, "{\"_id\":");
	escape_json(body, doc->id);
	if (doc->routing)
	{
		appendStringInfoString(body, ",\"routing\":");
		escape_json(body, doc->routing);
	}
	appendStringInfoChar(body, '}');
}

static void
verify_end_body(StringInfo body)
{
	appendStringInfoString(body, "]}");
}

/* The answer carries the document back (about its size, plus metadata). */
static size_t
verify_answer_weight(const EcpDoc *doc)
{
	if (doc->json == NULL)
		return 128;
	return 128 + (doc->json_len > 0 ? (size_t) doc->json_len : strlen(doc->json));
}

/* Option sample: each page is compared with that probability. */
static bool
verify_checks_page(const EcpPartConfig *config)
{
	return config->verify_sample >= 1.0 || pg_prng_double(&pg_global_prng_state) < config->verify_sample;
}

static void
drifted(EcpDocResult *result, const char *kind, char *detail)
{
	result->outcome = ECP_DOC_DRIFT;
	result->error_type = (char *) kind;
	result->reason = detail;
}

/* version_column: the index's _version against the row's. */
static void
judge_version(const EcpDoc *doc, const EcpMgetDoc *item, EcpDocResult *result)
{
	long long	expected = strtoll(doc->version, NULL, 10);

	if (!item->has_version)
		drifted(result, "stale", pstrdup("the index's answer has no _version"));
	else if (item->version != expected)
		drifted(result, "stale", psprintf("version: %lld in the source, %lld in the index",
										  expected, item->version));
}

/* The document against the index's _source. */
static EcpSendStatus
judge_source(const EcpPartConfig *config, const EcpDoc *doc, const EcpMgetDoc *item,
			  EcpDocResult *result, char **error)
{
	char		why[256];
	EcpJsonCompare same;

	if (item->source == NULL)
	{
		*error = psprintf("index \"%s\" answered document \"%s\" without its _source: verify compares documents, "
						  "and an index that keeps no _source (mappings \"_source\": {\"enabled\": false}) cannot be compared",
						  config->index_name, doc->id);
		return ECP_SEND_FAILED;
	}
	same = ecp_json_compare(doc->json, doc->json_len > 0 ? (size_t) doc->json_len : strlen(doc->json),
							item->source, item->source_len,
							strcmp(config->op, "update") == 0 ? ECP_COMPARE_EXPECTED_FIELDS : ECP_COMPARE_WHOLE,
							why, sizeof(why));
	if (same == ECP_JSON_DIFFERENT)
		drifted(result, "stale", pstrdup(why));
	else if (same == ECP_JSON_INVALID)
		drifted(result, "stale", psprintf("cannot be compared: %s", why));
	return ECP_SEND_DONE;
}

/*
 * One document against its item.  A delete (the row is gone: a verify
 * of a task with ids and delete_missing) is right when the index has no
 * such document.  An item that is an error (a shard not available) is
 * asked for again, like a 5xx item of _bulk.
 */
static EcpSendStatus
judge_one(const EcpPartConfig *config, const EcpDoc *doc, const EcpMgetDoc *item,
		  EcpDocResult *result, char **error)
{
	result->outcome = ECP_DOC_OK;
	if (item->found < 0)
	{
		result->outcome = ECP_DOC_RETRY;
		result->status = 503;
		result->error_type = "mget";
		result->reason = pstrdup(item->error ? item->error : "error");
		return ECP_SEND_DONE;
	}
	if (doc->is_delete)
	{
		if (item->found)
			drifted(result, "extra", NULL);
		return ECP_SEND_DONE;
	}
	if (!item->found)
	{
		drifted(result, "missing", NULL);
		return ECP_SEND_DONE;
	}
	if (config->version_column)
	{
		judge_version(doc, item, result);
		return ECP_SEND_DONE;
	}
	return judge_source(config, doc, item, result, error);
}

static EcpSendStatus
verify_judge(EcpPartConfig *config, const EcpHttpResponse *response, const EcpBatch *batch,
			 const int *members, int nmembers, EcpDocResult *results, char **error)
{
	const char **ids = palloc(sizeof(char *) * Max(nmembers, 1));
	EcpMgetDoc *items = palloc0(sizeof(EcpMgetDoc) * Max(nmembers, 1));
	EcpSendStatus status = ECP_SEND_DONE;
	char		err[512];

	for (int i = 0; i < nmembers; i++)
		ids[i] = batch->docs[members[i]].id;
	if (ecp_answer_mget(response->body, response->body_len, ids, nmembers, items, err, sizeof(err)) != ECP_ANSWER_READ)
	{
		ecp_mget_docs_free(items, nmembers);
		*error = psprintf("the _mget answer of index \"%s\" is not what Elasticsearch answers: %s",
						  config->index_name, err);
		return ECP_SEND_FAILED;
	}
	for (int i = 0; i < nmembers && status == ECP_SEND_DONE; i++)
		status = judge_one(config, &batch->docs[members[i]], &items[i], &results[members[i]], error);
	ecp_mget_docs_free(items, nmembers);
	return status;
}

const EcpSinkFormat ecp_verify_format = {
	.content_type = "application/json",
	.path = verify_path,
	.hello = ecp_es_hello,
	.start_body = verify_start_body,
	.append = verify_append,
	.end_body = verify_end_body,
	.judge = verify_judge,
	.end_part = NULL,			/* no refresh: a verify writes nothing */
	.checks_page = verify_checks_page,
	.answer_weight = verify_answer_weight,
};
