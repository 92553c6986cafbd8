/*
 * sink_http.c: the consumer kind http, a write service of the user's own.
 *
 * ecp keeps reading, batching, limits, retries and progress; the service
 * decides how documents are assembled and written.  Each request is
 *
 *   POST <url>   Content-Type: application/json
 *   {"task": "...", "run": 12, "part": 0, "index": "...",
 *    "indexes": ["...", "<alias>-<run>"], "tag": "..."|null,
 *    "op": "index", "docs": [{"id": "1", "doc": {...}},
 *                            {"id": "2", "delete": true}, {"id": "3"}]}
 *
 * ({"id"} alone: a task without a lookup query sends bare ids; "indexes":
 * every index the documents must reach, the task's index first, then the
 * new index of a migration of that alias while it loads: the dual write
 * that _bulk does with two actions, left to the service), and the
 * answer is any 2xx with {"failed": [{"id", "retryable", "reason"}]}
 * (empty, {} or no "failed": everything was taken).  Retryable documents
 * are sent again after a back-off; the others are dead letters.  Whole
 * requests are classed by status like Elasticsearch's (sink.c).
 */
#include "sink.h"
#include "json_build.h"

#include "mb/pg_wchar.h"
#include "utils/json.h"

#include <jansson.h>

/*
 * A failed entry has 3 members: an answer with more than this many
 * containers, members and elements per document of the request is not a
 * list of failures, and is refused before jansson builds a tree of it
 * (which costs tens of bytes per byte of input).
 */
#define TOKENS_PER_DOC 10
#define TOKENS_SLACK 64

/* Bytes kept of a reason (as the _bulk reader keeps), and of an id quoted in an error. */
#define MAX_REASON_BYTES 1000
#define MAX_QUOTED_ID_BYTES 100

/*
 * A copy of the UTF-8 text s (jansson only hands out valid UTF-8) cut to
 * at most max bytes on a character boundary: a cut inside a character
 * would store bytes that are not text (failed_doc.reason, last_error).
 */
static char *
utf8_capped(const char *s, int max)
{
	int			len = strlen(s);

	return pnstrdup(s, len <= max ? len : pg_encoding_mbcliplen(PG_UTF8, s, len, max));
}

static char *
http_path(const EcpPartConfig *config)
{
	return "";					/* the consumer's URL as it is */
}

/*
 * "indexes": where each document of the batch must be written.  A
 * document the answer does not list in "failed" counts as written to
 * every one of them (doc/writing.md), as a dual write through _bulk
 * counts only when both indices took it.
 */
static void
append_indexes(StringInfo body, const EcpPartConfig *config)
{
	char	   *indexes[2] = {config->index_name, config->dual_index};

	ecp_json_key_string_array(body, "indexes", indexes, config->dual_index ? 2 : 1);
}

static void
http_start_body(StringInfo body, const EcpPartConfig *config)
{
	ecp_json_begin_object(body);
	ecp_json_key_string(body, "task", config->task_name);
	ecp_json_key_int(body, "run", config->run_id);
	ecp_json_key_int(body, "part", config->part_no);
	ecp_json_key_string(body, "index", config->index_name);
	append_indexes(body, config);
	ecp_json_key_string(body, "tag", config->tag);	/* NULL: null */
	ecp_json_key_string(body, "op", config->op);
	ecp_json_key(body, "docs");
	ecp_json_begin_array(body);
}

static void
http_append(StringInfo body, const EcpPartConfig *config, const EcpDoc *doc, bool first)
{
	if (!first)
		appendStringInfoChar(body, ',');
	appendStringInfoString(body, "{\"id\":");
	if (doc->id)
		escape_json(body, doc->id);
	else
		appendStringInfoString(body, "null");	/* no _id: id_column '' */
	if (doc->is_delete || strcmp(config->op, "delete") == 0)
		appendStringInfoString(body, ",\"delete\":true");
	else if (doc->json)
	{
		appendStringInfoString(body, ",\"doc\":");
		if (doc->json_len > 0)
			appendBinaryStringInfo(body, doc->json, doc->json_len);
		else
			appendStringInfoString(body, doc->json);
	}
	appendStringInfoChar(body, '}');
}

static void
http_end_body(StringInfo body)
{
	ecp_json_end_array(body);
	ecp_json_end_object(body);
}

/* Containers, members and elements outside strings (see TOKENS_PER_DOC). */
static size_t
count_tokens(const char *body, size_t len)
{
	size_t		tokens = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = body[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[' || c == ',' || c == ':')
			tokens++;
	}
	return tokens;
}

static bool
is_blank(const char *body, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!isspace((unsigned char) body[i]))
			return false;
	return true;
}

/* One entry of "failed": mark the documents of the request with that id. */
static bool
mark_failed(const EcpBatch *batch, const int *members, int nmembers, json_t *entry,
			EcpDocResult *results, long status, char **why)
{
	json_t	   *id = json_object_get(entry, "id");
	const char *reason = json_string_value(json_object_get(entry, "reason"));
	bool		retryable = json_is_true(json_object_get(entry, "retryable"));
	char	   *id_text;
	bool		found = false;

	if (json_is_string(id))
	{
		id_text = pstrdup(json_string_value(id));
		/* a \u0000 inside (JSON_ALLOW_NUL) would match the id cut there */
		if (strlen(id_text) != json_string_length(id))
		{
			*why = psprintf("\"failed\" names id \"%s\\u0000...\", which the request did not hold",
							utf8_capped(id_text, MAX_QUOTED_ID_BYTES));
			return false;
		}
	}
	else if (json_is_integer(id))
		id_text = psprintf("%" JSON_INTEGER_FORMAT, json_integer_value(id));
	else
	{
		*why = "an entry of \"failed\" has no string \"id\"";
		return false;
	}
	for (int i = 0; i < nmembers; i++)
	{
		EcpDocResult *result = &results[members[i]];

		if (strcmp(batch->docs[members[i]].id, id_text) != 0)
			continue;
		found = true;
		result->outcome = retryable ? ECP_DOC_RETRY : ECP_DOC_FAILED;
		result->status = (int) status;
		result->error_type = "write_service";
		/* a reason quoting a \u0000 is kept up to it */
		result->reason = reason ? utf8_capped(reason, MAX_REASON_BYTES) : "(no reason given)";
	}
	if (!found)
		*why = psprintf("\"failed\" names id \"%s\", which the request did not hold",
						utf8_capped(id_text, MAX_QUOTED_ID_BYTES));
	return found;
}

static EcpSendStatus
http_judge(EcpPartConfig *config, const EcpHttpResponse *response, const EcpBatch *batch,
		   const int *members, int nmembers, EcpDocResult *results, char **error)
{
	json_t	   *root;
	json_t	   *failed;
	json_error_t jerr;
	char	   *why = NULL;
	size_t		i;
	json_t	   *entry;
	int			retries = 0;

	for (int k = 0; k < nmembers; k++)
	{
		results[members[k]].outcome = ECP_DOC_OK;
		results[members[k]].status = (int) response->status;
	}
	if (is_blank(response->body, response->body_len))
		return ECP_SEND_DONE;
	if (count_tokens(response->body, response->body_len) > (size_t) nmembers * TOKENS_PER_DOC + TOKENS_SLACK)
		why = "it is far longer than a list of failures of this request";
	/* JSON_ALLOW_NUL: a \u0000 quoted in a reason must not sink the batch */
	else if ((root = json_loadb(response->body, response->body_len, JSON_ALLOW_NUL, &jerr)) == NULL)
		why = psprintf("it is not JSON (%s at byte %d)", jerr.text, jerr.position);
	else
	{
		failed = json_object_get(root, "failed");
		if (!json_is_object(root))
			why = "it is not a JSON object";
		else if (failed && !json_is_array(failed) && !json_is_null(failed))
			why = "\"failed\" is not an array";
		else
			json_array_foreach(failed, i, entry)
			{
				if (!json_is_object(entry) ||
					!mark_failed(batch, members, nmembers, entry, results, response->status, &why))
				{
					if (why == NULL)
						why = "an entry of \"failed\" is not an object";
					break;
				}
				retries += json_is_true(json_object_get(entry, "retryable"));
			}
		json_decref(root);
	}
	if (why)
	{
		*error = psprintf("the write service answered HTTP %ld with a body ecp cannot read: %s; "
						  "answer {\"failed\": [{\"id\": \"...\", \"retryable\": true|false, \"reason\": \"...\"}]}, or an empty body when every document was taken",
						  response->status, why);
		return ECP_SEND_FAILED;
	}
	ecp_limiter_feedback(config->consumer_id, retries > 0);
	return ECP_SEND_DONE;
}

const EcpSinkFormat ecp_http_format = {
	.content_type = "application/json",
	.path = http_path,
	.hello = NULL,
	.start_body = http_start_body,
	.append = http_append,
	.end_body = http_end_body,
	.judge = http_judge,
	.end_part = NULL,
};
