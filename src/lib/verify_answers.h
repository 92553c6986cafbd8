/*
 * verify_answers.h: the answers a verify run reads from Elasticsearch or
 * OpenSearch: _mget's documents (compared with what ecp would send, by
 * json_compare.c), the id of a point in time, and the pages of ids of a
 * search with one (search_after), which find the ids the source no longer
 * has.
 *
 * Each reader checks the whole body is well-formed JSON (RFC 8259; the
 * values it skips nest at most 512 deep) with json_scan.c's streaming
 * scanner: memory is what the result holds plus a few hundred bytes,
 * whatever a hostile answer holds, and time is linear in the body.  Return codes and err are
 * es_answers.h's: ECP_ANSWER_NOT_JSON says where the body stops being
 * JSON, ECP_ANSWER_UNEXPECTED names what is wrong and where
 * ("docs[3]._id is \"7\", expected \"8\"").  A body that is both is
 * ECP_ANSWER_NOT_JSON.  On failure nothing is handed back (freeing the
 * result is harmless).
 *
 * Plain C99, no PostgreSQL headers (the unit tests build it alone).
 */
#ifndef ECP_VERIFY_ANSWERS_H
#define ECP_VERIFY_ANSWERS_H

#include <stddef.h>

#include "es_answers.h"

/* One document of an _mget answer, matched to the id asked for at its position. */
typedef struct EcpMgetDoc
{
	int			found;			/* 1 found, 0 not found, -1 the item is an error */
	const char *source;			/* the raw text of its _source inside the
								 * body (not copied), or NULL when absent (not
								 * asked for, or not found; or the index keeps
								 * no _source) */
	size_t		source_len;
	int			has_version;
	long long	version;		/* _version when has_version */
	char	   *error;			/* found == -1: a short reason (malloc'd:
								 * "type: reason"), else NULL */
} EcpMgetDoc;

/*
 * An _mget answer ({"docs":[...]}) to a request for ids[0..nids) in that
 * order: docs (nids entries, caller's array) is filled in.  The answer
 * must hold exactly nids docs, the i-th with "_id" equal to ids[i] (after
 * unescaping), else ECP_ANSWER_UNEXPECTED naming the position and both
 * ids.  An item of the form {"_index":..,"_id":..,"error":{...}} (or
 * "error":"...") is found = -1 with its reason (type and reason cut to a
 * few hundred bytes each).  Any other item needs a boolean "found"; one
 * not found has no _source; "_version", when there, is an integer.  Free
 * with ecp_mget_docs_free (the error strings).  Memory: the docs array
 * plus the errors, whatever the sources hold (spans point into body).
 */
extern EcpAnswerRead ecp_answer_mget(const char *body, size_t len, const char *const *ids, int nids,
									 EcpMgetDoc *docs, char *err, size_t errlen);
extern void ecp_mget_docs_free(EcpMgetDoc *docs, int nids);

/*
 * The id of a point in time just opened: Elasticsearch answers
 * {"id":"..."}, OpenSearch {"pit_id":"...",...}.  A non-empty string
 * without \u0000, given once, malloc'd into *pit_id (NULL on failure).
 */
extern EcpAnswerRead ecp_answer_pit_id(const char *body, size_t len, char **pit_id, char *err,
									   size_t errlen);

/* A page of hits of a search with a point in time, asking only for ids (_source false). */
typedef struct EcpHitPage
{
	char	  **ids;			/* malloc'd array of nids malloc'd, unescaped
								 * ids (NUL-free); NULL when there are no hits */
	int			nids;
	char	   *last_sort;		/* the raw JSON text of the last hit's "sort"
								 * array (malloc'd copy, to send back as
								 * search_after), NULL when there are no hits */
	char	   *pit_id;			/* the answer's top-level "pit_id" (it may
								 * change from page to page), malloc'd, or NULL
								 * when absent */
} EcpHitPage;

/*
 * {"pit_id":..., "hits":{"hits":[{"_id":"..","sort":[...]},...]}, ...}:
 * every hit must have a non-empty string _id and a "sort" array; an id
 * with \u0000 is ECP_ANSWER_UNEXPECTED.  So is a page that may lack hits:
 * "timed_out":true, or "_shards" with "failed" above 0 (a walk that went
 * on would never see the ids of the shards that failed).
 */
extern EcpAnswerRead ecp_answer_hit_page(const char *body, size_t len, EcpHitPage *page,
										 char *err, size_t errlen);
extern void ecp_hit_page_free(EcpHitPage *page);

#endif							/* ECP_VERIFY_ANSWERS_H */
