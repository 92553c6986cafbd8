/*
 * es_answers.h: Elasticsearch's answers other than _bulk's: how large
 * each may be, and the few things ecp reads out of them (the keys of an
 * object, _count's count) with a streaming scanner that builds no tree.
 *
 * Plain C99, no PostgreSQL headers (the unit tests build it alone):
 * nothing here ereports, exits or longjmps; errors come back in err.
 */
#ifndef ECP_ES_ANSWERS_H
#define ECP_ES_ANSWERS_H

#include <stddef.h>

/*
 * The kinds of request a part sends besides its batches, by the size of
 * their answers.  Each has a cap, enforced while the answer is read: a
 * larger one fails the request (the rest is never read), so what a
 * hostile server can make a worker hold is the cap, not the batch's
 * _bulk limit (up to 64 MiB).
 */
typedef enum EcpAnswerKind
{
	ECP_ANSWER_PRODUCT,			/* GET /: name, version, tagline */
	ECP_ANSWER_INDICES,			/* GET /<name>?filter_path=*.settings.index.uuid,
								 * GET /_alias/<name>: one entry per index */
	ECP_ANSWER_COUNT,			/* GET /<index>/_count */
	ECP_ANSWER_ACK				/* PUT /<index>, PUT /<index>/_settings,
								 * POST /<index>/_refresh, POST /_aliases,
								 * DELETE /<index>, HEAD /<index>: an
								 * acknowledgement or an error */
} EcpAnswerKind;

#define ECP_ANSWER_PRODUCT_CAP ((size_t) 64 << 10)
#define ECP_ANSWER_INDICES_CAP ((size_t) 1 << 20)
#define ECP_ANSWER_COUNT_CAP ((size_t) 64 << 10)
#define ECP_ANSWER_ACK_CAP ((size_t) 256 << 10)

/* The largest answer a request of this kind may get, in bytes. */
extern size_t ecp_answer_cap(EcpAnswerKind kind);

/* The requests of this kind, for messages ("GET /<index or alias>"). */
extern const char *ecp_answer_requests(EcpAnswerKind kind);

/* What a cluster's answer of this kind holds, and so what a larger one means. */
extern const char *ecp_answer_hint(EcpAnswerKind kind);

/* How reading an answer went. */
typedef enum EcpAnswerRead
{
	ECP_ANSWER_READ = 0,
	ECP_ANSWER_NOT_JSON = -1,	/* not well-formed JSON (err says where) */
	ECP_ANSWER_UNEXPECTED = -2	/* JSON, but not what the request answers */
} EcpAnswerRead;

/*
 * The keys of the JSON object body holds (GET /<name>, GET /_alias/<name>:
 * its indices), in the answer's order, unescaped (UTF-8, no NUL): *keys
 * is a malloc'd array of *nkeys malloc'd strings (free them with
 * ecp_answer_keys_free).  Memory is the keys' own, whatever the values
 * hold.  A key that appears twice, or one with \u0000, is
 * ECP_ANSWER_UNEXPECTED.
 */
extern EcpAnswerRead ecp_answer_object_keys(const char *body, size_t len, char ***keys, int *nkeys,
											char *err, size_t errlen);
extern void ecp_answer_keys_free(char **keys, int nkeys);

/*
 * The top-level "count" of a _count answer: a non-negative integer that
 * fits in 64 bits, present once.
 */
extern EcpAnswerRead ecp_answer_count(const char *body, size_t len, long long *count,
									  char *err, size_t errlen);

#endif
