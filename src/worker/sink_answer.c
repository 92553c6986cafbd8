/*
 * sink_answer.c: requests of a part's own besides its batches (a
 * migration's steps, the count check, a verify's walk of the index): the
 * answer kept whole with who answered what, its class when it is not a
 * 2xx, and the readings of answers a step cannot trust (the run fails).
 */
#include "sink.h"

#include "bulk_response.h"
#include "es_answers.h"

/*
 * A request to the cluster (the node in use, another if it is down),
 * whose answer is read up to the cap of its kind (a larger one is an
 * ERROR): ECP_SEND_DONE when it answered, with any status; else why not.
 */
EcpSendStatus
ecp_sink_request(EcpSink *sink, EcpPartConfig *config, EcpAnswerKind kind, const char *method,
				 const char *path, const char *body, EcpAnswer *answer, char **error)
{
	EcpHttpResponse response;
	const char *origin;
	EcpHttpOutcome outcome = ecp_sink_call(sink, config, kind, method, path, body, body ? strlen(body) : 0,
										   &response, &origin);
	EcpSendStatus status = ECP_SEND_DONE;
	const char *query = strchr(path, '?');

	answer->code = response.status;
	answer->body = pnstrdup(response.body ? response.body : "", response.body_len);
	answer->len = response.body_len;
	answer->request = psprintf("%s %s%.*s", method, origin,
							   query ? (int) (query - path) : (int) strlen(path), path);
	if (outcome == ECP_HTTP_ABORTED)
		status = ECP_SEND_STOPPED;
	else if (outcome != ECP_HTTP_OK)
	{
		*error = ecp_sink_transfer_error(sink, method, origin, path, outcome, response.error);
		status = outcome == ECP_HTTP_TRANSPORT ? ECP_SEND_TRANSIENT : ECP_SEND_FAILED;
	}
	ecp_http_response_free(&response);
	return status;
}

/* A status the step cannot take: its class, and Elasticsearch's words. */
EcpSendStatus
ecp_answer_refused(EcpPartConfig *config, const char *what, const EcpAnswer *answer, char **error)
{
	const char *hint;
	char		summary[512];
	EcpSendStatus status = ecp_sink_status_class(config, answer->code, &hint);

	ecp_error_summary(answer->body, answer->len, answer->code, summary, sizeof(summary));
	*error = psprintf("%s: HTTP %ld %s%s", what, answer->code, summary, hint);
	return status;
}

bool
ecp_answer_ok(const EcpAnswer *answer)
{
	return answer->code >= 200 && answer->code <= 299;
}

/*
 * A 2xx answer that is not what Elasticsearch answers: the step cannot
 * trust it (an alias's indices, a count), so the run fails.
 */
void
ecp_answer_unreadable(const EcpPartConfig *config, const EcpAnswer *answer, EcpAnswerRead read,
					  const char *why, const char *expected)
{
	ereport(ERROR,
			(errcode(read == ECP_ANSWER_NOT_JSON ? ERRCODE_INVALID_JSON_TEXT : ERRCODE_DATA_EXCEPTION),
			 errmsg("%s answered HTTP %ld with %s (%s); check that the consumer of task \"%s\" points at an Elasticsearch or OpenSearch cluster",
					answer->request, answer->code,
					read == ECP_ANSWER_NOT_JSON ? "an answer that is not JSON" : "an answer ecp cannot use",
					why, config->task_name),
			 errhint("Elasticsearch answers this request with %s.", expected)));
}

/*
 * The keys of a JSON object answer (GET /<name>, GET /_alias/<name>: the
 * indices), scanned without a tree, palloc'd.
 */
char **
ecp_answer_index_keys(const EcpPartConfig *config, const EcpAnswer *answer, int *nkeys)
{
	char		why[256];
	char	  **found;
	char	  **keys;
	EcpAnswerRead read = ecp_answer_object_keys(answer->body, answer->len, &found, nkeys,
												why, sizeof(why));

	if (read != ECP_ANSWER_READ)
		ecp_answer_unreadable(config, answer, read, why, "a JSON object keyed by index names, each once");
	keys = palloc0(sizeof(char *) * (*nkeys + 1));
	for (int i = 0; i < *nkeys; i++)
		keys[i] = pstrdup(found[i]);
	ecp_answer_keys_free(found, *nkeys);
	return keys;
}

/* The "count" of a _count answer. */
int64
ecp_answer_count_of(const EcpPartConfig *config, const EcpAnswer *answer)
{
	char		why[256];
	long long	count;
	EcpAnswerRead read = ecp_answer_count(answer->body, answer->len, &count, why, sizeof(why));

	if (read != ECP_ANSWER_READ)
		ecp_answer_unreadable(config, answer, read, why, "a JSON object whose \"count\" is a non-negative integer");
	return (int64) count;
}

