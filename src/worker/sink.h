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
	/* whether to send this page at all (a verify's sample), or NULL: always */
	bool		(*checks_page) (const EcpPartConfig *config);
	/*
	 * bytes a document adds to the answer, counted with the body against
	 * batch_bytes (a verify's _mget answer carries the documents), or NULL
	 */
	size_t		(*answer_weight) (const EcpDoc *doc);
} EcpSinkFormat;

extern const EcpSinkFormat ecp_es_format;
extern const EcpSinkFormat ecp_http_format;
extern const EcpSinkFormat ecp_verify_format;

/* sink_es.c: GET / (which product; the verify format says hello the same way) */
extern EcpSendStatus ecp_es_hello(EcpSink *sink, EcpPartConfig *config, char **error);
/* sink_es.c: what a request of the part's own came to (ECP_SEND_DONE for a 2xx) */
extern EcpSendStatus ecp_es_call_outcome(const EcpSink *sink, const EcpPartConfig *config,
										 EcpHttpOutcome outcome, const EcpHttpResponse *response,
										 const char *method, const char *origin, const char *path,
										 const char **hint, char **error);

/* sink.c: the first request of a part (GET /), once; the product it found */
extern EcpSendStatus ecp_sink_hello(EcpSink *sink, EcpPartConfig *config, char **error);
extern void ecp_sink_set_product(EcpSink *sink, const char *product);
extern const char *ecp_sink_product(const EcpSink *sink);

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

/* A request's answer: the status, a copy of the body, who answered what. */
typedef struct EcpAnswer
{
	long		code;
	char	   *body;
	size_t		len;
	char	   *request;		/* "GET http://host:port/path", without the query */
} EcpAnswer;

/*
 * sink_answer.c: a request to the cluster (ecp_sink_call), its answer
 * copied: ECP_SEND_DONE when it answered, with any status; else why not.
 */
extern EcpSendStatus ecp_sink_request(EcpSink *sink, EcpPartConfig *config, EcpAnswerKind kind,
									  const char *method, const char *path, const char *body,
									  EcpAnswer *answer, char **error);
extern bool ecp_answer_ok(const EcpAnswer *answer);
extern EcpSendStatus ecp_answer_refused(EcpPartConfig *config, const char *what, const EcpAnswer *answer,
										char **error);
extern void ecp_answer_unreadable(const EcpPartConfig *config, const EcpAnswer *answer, EcpAnswerRead read,
								  const char *why, const char *expected);
extern char **ecp_answer_index_keys(const EcpPartConfig *config, const EcpAnswer *answer, int *nkeys);
extern int64 ecp_answer_count_of(const EcpPartConfig *config, const EcpAnswer *answer);

#endif
