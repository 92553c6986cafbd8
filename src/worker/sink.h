/*
 * sink.h: what sink.c (requests, nodes, limits, failure classes) asks of
 * a consumer kind: how a batch becomes a request body and how an answer
 * becomes one result per document.  sink_es.c speaks Elasticsearch's
 * _bulk, sink_http.c the write-service protocol.
 */
#ifndef ECP_SINK_H
#define ECP_SINK_H

#include "sync.h"
#include "es_answers.h"
#include "http_client.h"

typedef struct EcpSinkFormat
{
	const char *content_type;
	/* the path and query a request goes to, after a node's base URL */
	char	   *(*path) (const EcpPartConfig *config);
	/* before the first request of the part (e.g. GET /), or NULL */
	EcpSendStatus (*hello) (EcpSink *sink, EcpPartConfig *config, char **error);
	/* a body: start, documents (first: none before it), end */
	void		(*start_body) (StringInfo body, const EcpPartConfig *config);
	void		(*append) (StringInfo body, const EcpPartConfig *config, const EcpDoc *doc,
						   bool first);
	void		(*end_body) (StringInfo body);
	/* a 2xx answer to the documents members[] of batch: their results */
	EcpSendStatus (*judge) (EcpPartConfig *config, const EcpHttpResponse *response,
							const EcpBatch *batch, const int *members, int nmembers,
							EcpDocResult *results, char **error);
	/* when the part's source is exhausted (e.g. refresh), or NULL */
	EcpSendStatus (*end_part) (EcpSink *sink, EcpPartConfig *config, char **error);
} EcpSinkFormat;

extern const EcpSinkFormat ecp_es_format;
extern const EcpSinkFormat ecp_http_format;

/*
 * sink.c, for the formats and migrations: a request other than a batch to
 * the node in use (another one if it is down), with the run's tag header;
 * *origin is the node's scheme://host:port.  Its answer is read up to the
 * cap of its kind (es_answers.h): a larger one is an ERROR
 * (ERRCODE_PROGRAM_LIMIT_EXCEEDED) naming the request, the cap and the
 * node.  The response must be freed.
 */
extern EcpHttpOutcome ecp_sink_call(EcpSink *sink, EcpPartConfig *config, EcpAnswerKind kind,
									const char *method, const char *path, const char *body,
									size_t body_len, EcpHttpResponse *response,
									const char **origin);
/* the class of a whole-request HTTP status, and a hint (see sink.c) */
extern EcpSendStatus ecp_sink_status_class(const EcpPartConfig *config, long status,
										   const char **hint);
/* "<method> <origin><path> failed: <why>" for a transfer that got no status */
extern char *ecp_sink_transfer_error(const EcpSink *sink, const char *method, const char *origin,
									 const char *path, EcpHttpOutcome outcome, const char *why);

#endif
