/*
 * es_answers.h: Elasticsearch's answers other than _bulk's: how large
 * each may be, and the few things ecp reads out of them (the keys of an
 * object, _count's count) with a streaming scanner that builds no tree.
 * The same scanner checks the lines of an NDJSON file and reads their id.
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
	ECP_ANSWER_HITS,			/* POST /_search with a point in time: a page
								 * of ids (a verify's walk of the index) */
	ECP_ANSWER_ACK				/* PUT /<index>, PUT /<index>/_settings,
								 * POST /<index>/_refresh, POST /_aliases,
								 * DELETE /<index>, HEAD /<index>: an
								 * acknowledgement or an error */
} EcpAnswerKind;

#define ECP_ANSWER_PRODUCT_CAP ((size_t) 64 << 10)
#define ECP_ANSWER_INDICES_CAP ((size_t) 1 << 20)
#define ECP_ANSWER_COUNT_CAP ((size_t) 64 << 10)
#define ECP_ANSWER_ACK_CAP ((size_t) 256 << 10)
#define ECP_ANSWER_HITS_CAP ((size_t) 32 << 20)

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

/*
 * NDJSON lines (the file source).  A line can be as large as
 * max_line_bytes (up to 256 MiB) and come from any server the policy
 * allows, so it is checked and its id read without a tree: memory is a
 * few hundred bytes whatever the line holds, time is linear in it.
 */

/* The largest string id, in bytes (Elasticsearch's limit for _id). */
#define ECP_LINE_ID_MAX 512

/* What a line is, from the best to the worst. */
typedef enum EcpLineId
{
	ECP_LINE_ID = 0,			/* a JSON object with a usable id */
	ECP_LINE_NOT_JSON,			/* not well-formed JSON (err: what, at which byte) */
	ECP_LINE_NOT_OBJECT,		/* JSON, not an object (err: an array, a string, ...) */
	ECP_LINE_ID_TWICE,			/* the id field appears more than once */
	ECP_LINE_BAD_ID,			/* the id field is neither a string of 1 to
								 * ECP_LINE_ID_MAX bytes nor an integer that fits
								 * in 64 bits (err: what it is) */
	ECP_LINE_NO_ID				/* the object has no id field */
} EcpLineId;

/*
 * Check that line (len bytes, no newline) is one JSON object (RFC 8259:
 * grammar, escapes, surrogates, UTF-8; containers nested at most 512
 * deep) and read its top-level member named field into id: a string,
 * unescaped (no \u0000), or an integer as jansson reads one (no fraction,
 * no exponent, within 64 bits) in decimal ("-0" is "0").  A line that
 * fails several ways is the first of EcpLineId's order that applies.
 * Only the id field is checked for duplicates: other keys given twice,
 * at any depth, are left to Elasticsearch, which refuses the document.
 */
extern EcpLineId ecp_line_id(const char *line, size_t len, const char *field,
							 char id[ECP_LINE_ID_MAX + 1], char *err, size_t errlen);

#endif
