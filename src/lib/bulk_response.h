/*
 * bulk_response.h: read an Elasticsearch _bulk response (jansson), and
 * summarise an error body (ecp_error_summary, in error_summary.c).
 *
 * Plain C99, no PostgreSQL headers (jansson's json_object() clashes with
 * PostgreSQL's fmgrprotos.h).  Never ereports, exits or longjmps: errors
 * come back in err.  Every string written to err/out is valid UTF-8.
 */
#ifndef ECP_BULK_RESPONSE_H
#define ECP_BULK_RESPONSE_H

#include <stddef.h>

typedef enum EcpItemClass
{
	ECP_ITEM_OK,
	ECP_ITEM_RETRY,				/* per-item 429 or 5xx: transient */
	ECP_ITEM_DATA_ERROR,		/* other 4xx (and 1xx/3xx): a dead letter */
	ECP_ITEM_CONFIG				/* the cluster's setup refused it, not the
								 * document: the run must stop (see
								 * ecp_bulk_parse) */
} EcpItemClass;

typedef struct EcpBulkItem
{
	int			status;
	EcpItemClass klass;
	char	   *error_type;		/* malloc'd or NULL; NULL for OK items */
	char	   *reason;			/* malloc'd or NULL; NULL for OK items;
								 * "reason (caused by: ...)", at most 1000
								 * bytes, cut on a UTF-8 boundary */
} EcpBulkItem;

typedef struct EcpBulkResult
{
	int			nitems;
	int			n_ok;
	int			n_retry;
	int			n_data_error;
	int			n_config;
	int			first_config;	/* index of the first ECP_ITEM_CONFIG item
								 * (when n_config > 0) */
	EcpBulkItem *items;			/* nitems entries, in request order */
} EcpBulkResult;

/*
 * The filter_path ecp sends with every _bulk request: one entry per item
 * (every item has a status), so positions match the request, and the
 * error of a failed item.  Elasticsearch never filters an error response
 * (it disables filtering when it builds one), so a whole-request error
 * envelope arrives intact without naming "error" here.
 */
#define ECP_BULK_FILTER_PATH \
	"errors,items.*.status,items.*.error.type,items.*.error.reason," \
	"items.*.error.caused_by.reason"

/*
 * Parse the response to a _bulk request of expected_items actions, all of
 * type op ("index", "create", "update", "delete"; NULL: use each item's
 * key), sent with filter_path=ECP_BULK_FILTER_PATH (or without
 * filter_path).  flags is reserved and must be 0 (ecp never counts a 409
 * as success: op create documents a conflict as a failed document).
 *
 * Classification (the per-item statuses Elasticsearch sends, and what a
 * bulk client does with each): 2xx OK; a delete answered 404
 * without an error object (result not_found) OK; 429 and 5xx RETRY;
 * CONFIG for what no document can cause and retrying cannot cure: any
 * per-item 401/403 (security_exception: the user lacks write privileges on
 * the index; cluster_block_exception: index.blocks.write or a read-only
 * block), 404 index_not_found_exception for every op (a missing index with
 * auto-creation off, or a delete into a missing index), and a 400 whose
 * reason says "no write index is defined for alias" or "pipeline with id
 * [...] does not exist" (option pipeline names no ingest pipeline); the
 * rest DATA_ERROR.  A 409 is DATA_ERROR here; with external versions the
 * sink counts it as stale instead (sink_es.c).
 *
 * 0 on success (free out with ecp_bulk_result_free); -1 with err set and out
 * zeroed when flags is not 0, the body is not JSON, has no items array, has a different
 * number of items than expected_items, or an item is not a single-key object
 * with an integer status.
 *
 * Memory is bounded whatever the body: the scanner allocates
 * only the items; a failed item's error object over 64 KiB is not parsed
 * (its reason says so); a body the scanner cannot read is parsed whole
 * only up to 512 KiB, a larger one is -1 ("not a readable _bulk answer").
 */
extern int	ecp_bulk_parse(const char *body, size_t len, int expected_items, const char *op,
						   int flags, EcpBulkResult *out, char *err, size_t errlen);

/*
 * 1 (default): ecp_bulk_parse reads statuses with a fast scanner and uses
 * jansson only for failed items and for anything unusual; 0: jansson for
 * everything (the tests compare both).
 */
extern int	ecp_bulk_use_scanner;

/*
 * What to change for a CONFIG item (a static string, no trailing period),
 * chosen from its error type and reason; op as given to ecp_bulk_parse.
 */
extern const char *ecp_bulk_config_hint(const EcpBulkItem *item, const char *op);

/* Frees the items; safe on a zeroed or already freed result. */
extern void ecp_bulk_result_free(EcpBulkResult *result);

/*
 * Summarise a whole-request error body (non-2xx) in out: "type: reason" for
 * the ES envelope (plus " (caused by: ...)" when present), the string for
 * {"error":"..."}, else the first 200 printable characters of the body
 * (HTML from a proxy), or "(empty body)".  Always NUL-terminates (when
 * outlen > 0); never cuts a UTF-8 character.  A body over 64 KiB is not
 * parsed whole: only an "error" member within its first 64 KiB is read.
 */
extern void ecp_error_summary(const char *body, size_t len, long status, char *out, size_t outlen);

#endif
