/*
 * bulk_response.h: read an Elasticsearch _bulk response (jansson).
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
	ECP_ITEM_DATA_ERROR			/* other 4xx (and 1xx/3xx): a dead letter */
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
	EcpBulkItem *items;			/* nitems entries, in request order */
} EcpBulkResult;

/* flags for ecp_bulk_parse (1 = the old "external_versioning" boolean) */
#define ECP_BULK_EXTERNAL_VERSIONING 0x01	/* 409 on index/update/delete is OK:
											 * the target is already newer */
#define ECP_BULK_CREATE_CONFLICT_OK 0x02	/* 409 on create is OK: already
											 * there */

/*
 * Parse the response to a _bulk request of expected_items actions, all of
 * type op ("index", "create", "update", "delete"; NULL: use each item's
 * key), sent with filter_path=errors,items.*.status,items.*.error.type,
 * items.*.error.reason,items.*.error.caused_by.reason (or without
 * filter_path).
 *
 * Classification (ES_API.md 2.6, 5.5): 2xx OK; delete + 404 OK (not_found);
 * 409 OK with ECP_BULK_EXTERNAL_VERSIONING for index/update/delete, on
 * create only with ECP_BULK_CREATE_CONFLICT_OK; 429 and 5xx RETRY; the rest
 * DATA_ERROR.
 *
 * 0 on success (free out with ecp_bulk_result_free); -1 with err set and out
 * zeroed when the body is not JSON, has no items array, has a different
 * number of items than expected_items, or an item is not a single-key object
 * with an integer status.
 *
 * Memory is bounded whatever the body (finding M5): the scanner allocates
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
