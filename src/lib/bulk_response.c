/*
 * bulk_response.c: walk items[] of a _bulk response in request order and
 * classify each one (the rules are in bulk_response.h, ecp_bulk_parse).
 *
 * ecp asks for filter_path=ECP_BULK_FILTER_PATH, which keeps one entry
 * per item (every item has a status), so positions still match the
 * request (a filter such as items.*.error drops the successful items from
 * items[] altogether).  "errors":false is not trusted on its own: the
 * item count is always checked and every status read.  The scanner of
 * bulk_scan.c does that without allocating (~55 us for 1000 items here,
 * against ~700 us for a full jansson parse); jansson reads the failed
 * items and every unusual body.  The summary of a whole-request error
 * (ecp_error_summary) is error_summary.c's.
 *
 * Strings handed out are valid UTF-8: jansson validates its input, cuts
 * are made on character boundaries, and bytes quoted from non-JSON bodies
 * are restricted to printable ASCII.
 */
#include "bulk_response.h"
#include "bulk_scan.h"
#include "error_summary.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Add item i, of class klass, to the result's counters. */
static void
count_class(EcpBulkResult *out, int i, EcpItemClass klass)
{
	if (klass == ECP_ITEM_OK)
		out->n_ok++;
	else if (klass == ECP_ITEM_RETRY)
		out->n_retry++;
	else if (klass == ECP_ITEM_CONFIG)
	{
		if (out->n_config++ == 0)
			out->first_config = i;
	}
	else
		out->n_data_error++;
}

#define MAX_ITEM_STRING 1000	/* bytes kept of error.type / reason */

/*
 * Bounds on what jansson is given.  jansson builds a tree of
 * about 70 bytes per byte of "[{},{},...]": a 64 MiB body from a hostile or
 * broken server would take several GB.  The scanner reads any size without
 * allocating; jansson only reads one failed item's error object (at most
 * ECP_BULK_ITEM_JSON_MAX), a whole body the scanner cannot read (at most
 * ECP_BULK_FALLBACK_JSON_MAX, about 35 MB of tree at worst) and, in
 * error_summary.c, the error envelope of a non-2xx answer.
 */
#define ECP_BULK_ITEM_JSON_MAX (64 * 1024)
#define ECP_BULK_FALLBACK_JSON_MAX (512 * 1024)

int			ecp_bulk_use_scanner = 1;

/* Copy of s capped at max bytes (UTF-8 safe); NULL if s is NULL or no memory. */
static char *
dup_capped(const char *s, size_t max)
{
	size_t		len;
	char	   *copy;

	if (s == NULL)
		return NULL;
	len = ecp_utf8_fit(s, strlen(s), max);
	copy = malloc(len + 1);
	if (copy)
	{
		memcpy(copy, s, len);
		copy[len] = '\0';
	}
	return copy;
}

/* Printable-ASCII copy of a message that may quote raw input bytes. */
static void
ascii_only(char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s < 0x20 || (unsigned char) *s > 0x7E)
			*s = '?';
}

static void
set_err(char *err, size_t errlen, const char *fmt_result)
{
	if (err && errlen > 0)
		snprintf(err, errlen, "%s", fmt_result);
}

static int
op_is(const char *op, size_t oplen, const char *name)
{
	return op && oplen == strlen(name) && memcmp(op, name, oplen) == 0;
}

/* ES's reason for a write through an alias that has no write index */
#define NO_WRITE_INDEX "no write index is defined for alias"
/* ... and for a pipeline= that names no ingest pipeline */
#define NO_PIPELINE "pipeline with id ["

static int
type_is(const EcpBulkItem *item, const char *type)
{
	return item->error_type && strcmp(item->error_type, type) == 0;
}

/*
 * The class of an item whose status (and, for a failed item, error_type
 * and reason) are read; has_error: the item had an "error" member.  Only
 * the cluster's setup can cause a per-item 401/403 (privileges, a write
 * block), a missing index or an alias without a write index, so those
 * stop the run (CONFIG) instead of sending the whole table to failed_docs.
 * A delete's 404 is "already gone" only without an error: with
 * index_not_found_exception the index itself is missing (a misspelt
 * index must not look like a successful sync).
 */
static EcpItemClass
classify(const EcpBulkItem *item, const char *op, size_t oplen, int has_error)
{
	int			status = item->status;

	if (status >= 200 && status < 300)
		return ECP_ITEM_OK;
	if (status == 401 || status == 403)
		return ECP_ITEM_CONFIG;
	if (status == 404 && type_is(item, "index_not_found_exception"))
		return ECP_ITEM_CONFIG;
	if (status == 404 && !has_error && op_is(op, oplen, "delete"))
		return ECP_ITEM_OK;		/* not_found: already gone, what a sync wants */
	if (status == 400 && item->reason && strstr(item->reason, NO_WRITE_INDEX) != NULL)
		return ECP_ITEM_CONFIG;
	if (status == 400 && item->reason && strstr(item->reason, NO_PIPELINE) != NULL &&
		strstr(item->reason, "does not exist") != NULL)
		return ECP_ITEM_CONFIG;
	if (status == 429 || status >= 500)
		return ECP_ITEM_RETRY;
	return ECP_ITEM_DATA_ERROR;
}

/* An OK item carries no strings. */
static void
drop_item_strings(EcpBulkItem *item)
{
	free(item->error_type);
	free(item->reason);
	item->error_type = NULL;
	item->reason = NULL;
}

const char *
ecp_bulk_config_hint(const EcpBulkItem *item, const char *op)
{
	if (type_is(item, "security_exception"))
		return "grant the user write/index privileges on the index";
	if (type_is(item, "cluster_block_exception"))
		return "remove index.blocks.write, or the cluster's read-only block after a full disk";
	if (type_is(item, "index_not_found_exception"))
		return op && strcmp(op, "delete") == 0 ?
			"a delete never creates an index: check the task's index name" :
			"create the index, or allow action.auto_create_index";
	if (item->reason && strstr(item->reason, NO_WRITE_INDEX) != NULL)
		return "give the alias a write index (is_write_index: true on one of its indices), or write to an index";
	if (item->reason && strstr(item->reason, NO_PIPELINE) != NULL)
		return "create the ingest pipeline (PUT _ingest/pipeline/<id>), or change the task's option pipeline";
	if (item->status == 401)
		return "check the consumer's credentials (options username/password or api_key)";
	return "check the user's index privileges and the index's blocks";
}

/* Fill error_type and reason of a failed item from its "error". */
static void
read_item_error(json_t *entry, EcpBulkItem *item)
{
	json_t	   *error = json_object_get(entry, "error");
	json_t	   *caused;
	char		text[MAX_ITEM_STRING + 1];
	EcpTextBuf	tb;

	if (json_is_string(error))
	{
		item->reason = dup_capped(json_string_value(error), MAX_ITEM_STRING);
		return;
	}
	if (!json_is_object(error))
		return;
	item->error_type = dup_capped(json_string_value(json_object_get(error, "type")),
								  MAX_ITEM_STRING);
	ecp_text_init(&tb, text, sizeof(text));
	ecp_error_cause_append(&tb, error, 0);
	caused = json_object_get(error, "caused_by");
	if (json_is_object(caused) &&
		(json_object_get(caused, "reason") || json_object_get(caused, "type")))
	{
		ecp_text_append(&tb, tb.len > 0 ? " (caused by: " : "(caused by: ");
		ecp_error_cause_append(&tb, caused, 1);
		ecp_text_append(&tb, ")");
	}
	if (tb.len > 0)
		item->reason = dup_capped(text, MAX_ITEM_STRING);
}

static int
read_item(json_t *wrapper, int index, const char *op, EcpBulkItem *item,
		  char *err, size_t errlen)
{
	const char *action;
	json_t	   *entry;
	json_t	   *status;
	json_int_t	value;
	void	   *iter;

	if (!json_is_object(wrapper) || json_object_size(wrapper) != 1)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "items[%d] is not an object with a single action key", index);
		return -1;
	}
	iter = json_object_iter(wrapper);
	action = json_object_iter_key(iter);
	entry = json_object_iter_value(iter);
	if (!json_is_object(entry))
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "items[%d] is not an object with a single action key", index);
		return -1;
	}
	status = json_object_get(entry, "status");
	if (!json_is_integer(status))
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "items[%d] has no integer status", index);
		return -1;
	}
	value = json_integer_value(status);
	if (value < 100 || value > 599)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "items[%d] has status %lld, not an HTTP status", index,
					 (long long) value);
		return -1;
	}
	item->status = (int) value;
	/* classify by what was sent: op_type=create would show as "create" */
	if (op == NULL)
		op = action;
	if (item->status < 200 || item->status > 299)
		read_item_error(entry, item);
	item->klass = classify(item, op, strlen(op), json_object_get(entry, "error") != NULL);
	if (item->klass == ECP_ITEM_OK)
		drop_item_strings(item);
	return 0;
}

/*
 * Fast path: the allocation-free scanner of bulk_scan.c reads each item's
 * status and hands only failed items to jansson.  Anything unusual (escaped
 * keys, numbers jansson might reject, deep nesting, a count mismatch, a
 * malformed item) returns ECP_BULK_SCAN_FALLBACK, and the jansson path
 * below decides and writes the error message, so both paths accept exactly
 * the same inputs with the same results.
 */

/*
 * The error of a failed item the scanner found between inner and
 * inner_end: jansson unescapes its strings (rare).  An error object over
 * ECP_BULK_ITEM_JSON_MAX is not handed to jansson; the item keeps its
 * status and class, and its reason says so.
 */
static int
read_scanned_error(const unsigned char *inner, const unsigned char *inner_end, EcpBulkItem *item)
{
	size_t		len = (size_t) (inner_end - inner);
	json_t	   *entry;
	char		text[120];

	if (len > ECP_BULK_ITEM_JSON_MAX)
	{
		snprintf(text, sizeof(text), "(an error of %zu bytes, over the %d bytes ecp reads)",
				 len, ECP_BULK_ITEM_JSON_MAX);
		item->reason = dup_capped(text, MAX_ITEM_STRING);
		return ECP_BULK_SCAN_OK;
	}
	entry = json_loadb((const char *) inner, len, JSON_ALLOW_NUL, NULL);
	if (entry == NULL)
		return ECP_BULK_SCAN_FALLBACK;
	read_item_error(entry, item);
	json_decref(entry);
	return ECP_BULK_SCAN_OK;
}

/* One element of items[]: {"<action>": {..., "status": N, "error": ...}} */
static int
sc_item(EcpBulkScan *s, const char *op, EcpBulkItem *item)
{
	const unsigned char *action;
	size_t		action_len;
	const unsigned char *inner;
	const unsigned char *inner_end;
	const unsigned char *key;
	size_t		klen;
	int			escaped;
	int			more;
	int			has_status = 0;
	int			has_error = 0;
	long		status = 0;

	if (ecp_bulk_scan_peek(s) != '{')
		return ECP_BULK_SCAN_FALLBACK;
	s->p++;
	ecp_bulk_scan_ws(s);
	if (ecp_bulk_scan_key(s, &action, &action_len, &escaped) != ECP_BULK_SCAN_OK || escaped)
		return ECP_BULK_SCAN_FALLBACK;
	if (ecp_bulk_scan_peek(s) != '{')
		return ECP_BULK_SCAN_FALLBACK;
	inner = s->p;
	s->p++;
	ecp_bulk_scan_ws(s);
	if (ecp_bulk_scan_peek(s) == '}')
		return ECP_BULK_SCAN_FALLBACK;	/* no status */
	do
	{
		if (ecp_bulk_scan_key(s, &key, &klen, &escaped) != ECP_BULK_SCAN_OK)
			return ECP_BULK_SCAN_FALLBACK;
		if (ecp_bulk_scan_key_is(key, klen, escaped, "status"))
		{
			int			is_int;

			if (ecp_bulk_scan_number(s, &is_int, &status) != ECP_BULK_SCAN_OK || !is_int ||
				status < 100 || status > 599)
				return ECP_BULK_SCAN_FALLBACK;
			has_status = 1;
		}
		else
		{
			if (ecp_bulk_scan_key_is(key, klen, escaped, "error"))
				has_error = 1;
			if (ecp_bulk_scan_skip_value(s, 3) != ECP_BULK_SCAN_OK)
				return ECP_BULK_SCAN_FALLBACK;
		}
		if (ecp_bulk_scan_next(s, '}', &more) != ECP_BULK_SCAN_OK)
			return ECP_BULK_SCAN_FALLBACK;
	} while (more);
	if (!has_status)
		return ECP_BULK_SCAN_FALLBACK;
	inner_end = s->p;			/* just past the inner object's '}' */
	/* the wrapper must hold exactly one key */
	ecp_bulk_scan_ws(s);
	if (ecp_bulk_scan_peek(s) != '}')
		return ECP_BULK_SCAN_FALLBACK;
	s->p++;

	item->status = (int) status;
	if (has_error && (status < 200 || status > 299) &&
		read_scanned_error(inner, inner_end, item) != ECP_BULK_SCAN_OK)
		return ECP_BULK_SCAN_FALLBACK;
	if (op)
		item->klass = classify(item, op, strlen(op), has_error);
	else
		item->klass = classify(item, (const char *) action, action_len, has_error);
	if (item->klass == ECP_ITEM_OK)
		drop_item_strings(item);
	return ECP_BULK_SCAN_OK;
}

/* ECP_BULK_SCAN_OK with out filled in, or ECP_BULK_SCAN_FALLBACK with out zeroed. */
static int
fast_parse(const char *body, size_t len, int expected_items, const char *op,
		   EcpBulkResult *out)
{
	EcpBulkScan	s;
	const unsigned char *key;
	size_t		klen;
	int			escaped;
	int			more;
	int			n = 0;
	int			found_items = 0;

	if (expected_items <= 0)
		return ECP_BULK_SCAN_FALLBACK;
	out->items = calloc((size_t) expected_items, sizeof(EcpBulkItem));
	if (out->items == NULL)
		return ECP_BULK_SCAN_FALLBACK;
	out->nitems = expected_items;	/* so that a partial result can be freed */

	s.p = (const unsigned char *) body;
	s.end = s.p + len;
	ecp_bulk_scan_ws(&s);
	if (ecp_bulk_scan_peek(&s) != '{')
		goto fallback;
	s.p++;
	ecp_bulk_scan_ws(&s);
	if (ecp_bulk_scan_peek(&s) == '}')
		goto fallback;
	do
	{
		if (ecp_bulk_scan_key(&s, &key, &klen, &escaped) != ECP_BULK_SCAN_OK)
			goto fallback;
		if (ecp_bulk_scan_key_is(key, klen, escaped, "items"))
		{
			if (found_items || ecp_bulk_scan_peek(&s) != '[')
				goto fallback;
			found_items = 1;
			s.p++;
			ecp_bulk_scan_ws(&s);
			if (ecp_bulk_scan_peek(&s) == ']')
				s.p++;
			else
			{
				int			more_items;

				do
				{
					if (n >= expected_items ||
						sc_item(&s, op, &out->items[n]) != ECP_BULK_SCAN_OK)
						goto fallback;
					n++;
					if (ecp_bulk_scan_next(&s, ']', &more_items) != ECP_BULK_SCAN_OK)
						goto fallback;
				} while (more_items);
			}
		}
		else if (ecp_bulk_scan_skip_value(&s, 1) != ECP_BULK_SCAN_OK)
			goto fallback;
		if (ecp_bulk_scan_next(&s, '}', &more) != ECP_BULK_SCAN_OK)
			goto fallback;
	} while (more);
	ecp_bulk_scan_ws(&s);
	if (s.p != s.end || !found_items || n != expected_items)
		goto fallback;

	for (int i = 0; i < n; i++)
		count_class(out, i, out->items[i].klass);
	return ECP_BULK_SCAN_OK;

fallback:
	ecp_bulk_result_free(out);
	return ECP_BULK_SCAN_FALLBACK;
}

int
ecp_bulk_parse(const char *body, size_t len, int expected_items, const char *op,
			   int flags, EcpBulkResult *out, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t	   *root;
	json_t	   *items;
	size_t		n;
	char		summary[300];

	if (err && errlen > 0)
		err[0] = '\0';
	if (out == NULL)
	{
		set_err(err, errlen, "no result struct");
		return -1;
	}
	memset(out, 0, sizeof(*out));
	if (flags != 0)
	{
		set_err(err, errlen, "unknown _bulk parse flags (none are defined: pass 0)");
		return -1;
	}
	if (expected_items < 0)
	{
		set_err(err, errlen, "negative expected item count");
		return -1;
	}
	if (body == NULL || len == 0)
	{
		set_err(err, errlen, "empty _bulk response body");
		return -1;
	}
	if (ecp_bulk_use_scanner &&
		fast_parse(body, len, expected_items, op, out) == ECP_BULK_SCAN_OK)
		return 0;
	if (ecp_bulk_use_scanner && len > ECP_BULK_FALLBACK_JSON_MAX)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "_bulk response of %zu bytes is not a readable _bulk answer "
					 "(only answers up to %d bytes are parsed in full when the scanner cannot read them)",
					 len, ECP_BULK_FALLBACK_JSON_MAX);
		return -1;
	}

	/* JSON_ALLOW_NUL: a \u0000 quoted in a reason must not sink the batch */
	root = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
	if (root == NULL)
	{
		ascii_only(jerr.text);
		if (err && errlen > 0)
			snprintf(err, errlen, "_bulk response is not JSON (%.120s, at byte %d)",
					 jerr.text, jerr.position);
		return -1;
	}
	if (!json_is_object(root))
	{
		set_err(err, errlen, "_bulk response is not a JSON object");
		json_decref(root);
		return -1;
	}
	items = json_object_get(root, "items");
	if (items == NULL && expected_items == 0)
	{
		/* filter_path drops an empty items array */
		json_decref(root);
		return 0;
	}
	if (!json_is_array(items))
	{
		if (json_object_get(root, "error"))
		{
			ecp_error_summary(body, len, 0, summary, sizeof(summary));
			if (err && errlen > 0)
				snprintf(err, errlen, "_bulk response has no items array but an error: %s",
						 summary);
		}
		else
			set_err(err, errlen, "_bulk response has no items array");
		json_decref(root);
		return -1;
	}
	n = json_array_size(items);
	if (n != (size_t) expected_items)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "_bulk response has %zu items but %d actions were sent",
					 n, expected_items);
		json_decref(root);
		return -1;
	}
	out->items = calloc(n > 0 ? n : 1, sizeof(EcpBulkItem));
	if (out->items == NULL)
	{
		set_err(err, errlen, "out of memory");
		json_decref(root);
		return -1;
	}
	out->nitems = (int) n;
	for (size_t i = 0; i < n; i++)
	{
		EcpBulkItem *item = &out->items[i];

		if (read_item(json_array_get(items, i), (int) i, op, item, err, errlen) != 0)
		{
			json_decref(root);
			ecp_bulk_result_free(out);
			return -1;
		}
		count_class(out, (int) i, item->klass);
	}
	json_decref(root);
	return 0;
}

void
ecp_bulk_result_free(EcpBulkResult *result)
{
	if (result == NULL)
		return;
	for (int i = 0; i < result->nitems && result->items; i++)
	{
		free(result->items[i].error_type);
		free(result->items[i].reason);
	}
	free(result->items);
	memset(result, 0, sizeof(*result));
}
