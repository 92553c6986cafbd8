/*
 * bulk_response.c: walk items[] of a _bulk response in request order and
 * classify each one (ES_API.md 2.6, 5.5).
 *
 * ecp asks for filter_path=errors,items.*.status,items.*.error.type,
 * items.*.error.reason,items.*.error.caused_by.reason, which keeps one
 * entry per item (every item has a status), so positions still match the
 * request (ES_API.md 2.8).  "errors":false is not trusted on its own: the
 * item count is always checked and every status read (a 1000-item response
 * parses in well under a millisecond, see test/unit).
 *
 * Strings handed out are valid UTF-8: jansson validates its input, cuts
 * are made on character boundaries, and bytes quoted from non-JSON bodies
 * are restricted to printable ASCII.
 */
#include "bulk_response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define MAX_ITEM_STRING 1000	/* bytes kept of error.type / reason */
#define MAX_PREFIX_CHARS 200	/* characters quoted from a non-JSON body */

/* Length of the longest prefix of s[0..len) that fits in max bytes without
 * cutting a UTF-8 character. */
static size_t
utf8_fit(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	len = max;
	/* s[len] is the first byte left out: back up while it continues a char */
	while (len > 0 && ((unsigned char) s[len] & 0xC0) == 0x80)
		len--;
	return len;
}

/*
 * A bounded string builder over a caller's buffer: appends are cut on a
 * UTF-8 boundary, and after the first cut nothing more is appended.
 */
typedef struct TextBuf
{
	char	   *data;
	size_t		size;			/* bytes available, including the NUL */
	size_t		len;
	int			full;
} TextBuf;

static void
tb_init(TextBuf *tb, char *data, size_t size)
{
	tb->data = data;
	tb->size = size;
	tb->len = 0;
	tb->full = size == 0;
	if (size > 0)
		data[0] = '\0';
}

static void
tb_append_n(TextBuf *tb, const char *s, size_t n)
{
	size_t		room;
	size_t		take;

	if (tb->full || s == NULL)
		return;
	room = tb->size - 1 - tb->len;
	take = utf8_fit(s, n, room);
	memcpy(tb->data + tb->len, s, take);
	tb->len += take;
	tb->data[tb->len] = '\0';
	if (take < n)
		tb->full = 1;
}

static void
tb_append(TextBuf *tb, const char *s)
{
	if (s)
		tb_append_n(tb, s, strlen(s));
}

/* Copy of s capped at max bytes (UTF-8 safe); NULL if s is NULL or no memory. */
static char *
dup_capped(const char *s, size_t max)
{
	size_t		len;
	char	   *copy;

	if (s == NULL)
		return NULL;
	len = utf8_fit(s, strlen(s), max);
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

static EcpItemClass
classify(int status, const char *op, int flags)
{
	if (status >= 200 && status < 300)
		return ECP_ITEM_OK;
	if (status == 404 && op && strcmp(op, "delete") == 0)
		return ECP_ITEM_OK;		/* not_found: already gone, what a sync wants */
	if (status == 409)
	{
		if (op && strcmp(op, "create") == 0)
			return (flags & ECP_BULK_CREATE_CONFLICT_OK) ? ECP_ITEM_OK : ECP_ITEM_DATA_ERROR;
		/* external versioning: the target already has this or a newer version */
		return (flags & ECP_BULK_EXTERNAL_VERSIONING) ? ECP_ITEM_OK : ECP_ITEM_DATA_ERROR;
	}
	if (status == 429 || status >= 500)
		return ECP_ITEM_RETRY;
	return ECP_ITEM_DATA_ERROR;
}

/* "type: reason" of an ErrorCause object into tb (either part may be missing). */
static void
append_cause(TextBuf *tb, json_t *cause, int with_type)
{
	const char *type = json_string_value(json_object_get(cause, "type"));
	const char *reason = json_string_value(json_object_get(cause, "reason"));

	if (with_type && type)
	{
		tb_append(tb, type);
		if (reason)
			tb_append(tb, ": ");
	}
	if (reason)
		tb_append(tb, reason);
}

/* Fill error_type and reason of a failed item from its "error". */
static void
read_item_error(json_t *entry, EcpBulkItem *item)
{
	json_t	   *error = json_object_get(entry, "error");
	json_t	   *caused;
	char		text[MAX_ITEM_STRING + 1];
	TextBuf		tb;

	if (json_is_string(error))
	{
		item->reason = dup_capped(json_string_value(error), MAX_ITEM_STRING);
		return;
	}
	if (!json_is_object(error))
		return;
	item->error_type = dup_capped(json_string_value(json_object_get(error, "type")),
								  MAX_ITEM_STRING);
	tb_init(&tb, text, sizeof(text));
	append_cause(&tb, error, 0);
	caused = json_object_get(error, "caused_by");
	if (json_is_object(caused) &&
		(json_object_get(caused, "reason") || json_object_get(caused, "type")))
	{
		tb_append(&tb, tb.len > 0 ? " (caused by: " : "(caused by: ");
		append_cause(&tb, caused, 1);
		tb_append(&tb, ")");
	}
	if (tb.len > 0)
		item->reason = dup_capped(text, MAX_ITEM_STRING);
}

static int
read_item(json_t *wrapper, int index, const char *op, int flags,
		  EcpBulkItem *item, char *err, size_t errlen)
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
	item->klass = classify(item->status, op ? op : action, flags);
	if (item->klass != ECP_ITEM_OK)
		read_item_error(entry, item);
	return 0;
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

		if (read_item(json_array_get(items, i), (int) i, op, flags, item, err, errlen) != 0)
		{
			json_decref(root);
			ecp_bulk_result_free(out);
			return -1;
		}
		switch (item->klass)
		{
			case ECP_ITEM_OK:
				out->n_ok++;
				break;
			case ECP_ITEM_RETRY:
				out->n_retry++;
				break;
			case ECP_ITEM_DATA_ERROR:
				out->n_data_error++;
				break;
		}
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

/*
 * The first MAX_PREFIX_CHARS printable characters of a non-JSON body (a
 * proxy's HTML page): whitespace runs become one space, other control and
 * non-ASCII bytes become '?'.
 */
static void
printable_prefix(const char *body, size_t len, TextBuf *tb)
{
	size_t		taken = 0;
	int			pending_space = 0;

	for (size_t i = 0; i < len && taken < MAX_PREFIX_CHARS && !tb->full; i++)
	{
		unsigned char c = (unsigned char) body[i];
		char		ch;

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v')
		{
			pending_space = taken > 0;
			continue;
		}
		if (pending_space)
		{
			tb_append_n(tb, " ", 1);
			taken++;
			pending_space = 0;
			if (taken >= MAX_PREFIX_CHARS)
				break;
		}
		ch = (c >= 0x21 && c <= 0x7E) ? (char) c : '?';
		tb_append_n(tb, &ch, 1);
		taken++;
	}
}

void
ecp_error_summary(const char *body, size_t len, long status, char *out, size_t outlen)
{
	json_error_t jerr;
	json_t	   *root = NULL;
	json_t	   *error = NULL;
	TextBuf		tb;

	(void) status;
	if (out == NULL || outlen == 0)
		return;
	tb_init(&tb, out, outlen);
	if (body != NULL && len > 0)
	{
		root = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
		if (json_is_object(root))
			error = json_object_get(root, "error");
	}
	if (json_is_string(error))
		tb_append(&tb, json_string_value(error));
	else if (json_is_object(error) &&
			 (json_object_get(error, "type") || json_object_get(error, "reason")))
	{
		json_t	   *caused = json_object_get(error, "caused_by");

		append_cause(&tb, error, 1);
		if (json_is_object(caused) &&
			(json_object_get(caused, "reason") || json_object_get(caused, "type")))
		{
			tb_append(&tb, " (caused by: ");
			append_cause(&tb, caused, 1);
			tb_append(&tb, ")");
		}
	}
	else if (body != NULL)
		printable_prefix(body, len, &tb);
	if (tb.len == 0 && !tb.full)
		tb_append(&tb, "(empty body)");
	if (root)
		json_decref(root);
}
