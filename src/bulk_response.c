/*
 * bulk_response.c: walk items[] of a _bulk response in request order and
 * classify each one (the rules are in bulk_response.h, ecp_bulk_parse).
 *
 * ecp asks for filter_path=ECP_BULK_FILTER_PATH, which keeps one entry
 * per item (every item has a status), so positions still match the
 * request (a filter such as items.*.error drops the successful items from
 * items[] altogether).  "errors":false is not trusted on its own: the
 * item count is always checked and every status read.  A scanner does that
 * without allocating (~55 us for 1000 items here, against ~700 us for a full
 * jansson parse); jansson reads the failed items and every unusual body.
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
#define MAX_PREFIX_CHARS 200	/* characters quoted from a non-JSON body */

/*
 * Bounds on what jansson is given (finding M5).  jansson builds a tree of
 * about 70 bytes per byte of "[{},{},...]": a 64 MiB body from a hostile or
 * broken server would take several GB.  The scanner reads any size without
 * allocating; jansson only reads one failed item's error object (at most
 * ECP_BULK_ITEM_JSON_MAX), a whole body the scanner cannot read (at most
 * ECP_BULK_FALLBACK_JSON_MAX, about 35 MB of tree at worst) and the error
 * envelope of a non-2xx answer (within its first ECP_ERROR_BODY_JSON_MAX).
 */
#define ECP_BULK_ITEM_JSON_MAX (64 * 1024)
#define ECP_BULK_FALLBACK_JSON_MAX (512 * 1024)
#define ECP_ERROR_BODY_JSON_MAX (64 * 1024)

int			ecp_bulk_use_scanner = 1;

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
 * Fast path: a validating, allocation-free scanner over the response that
 * reads each item's status and hands only failed items to jansson.  A full
 * jansson parse of a 1000-item response costs about as much as the 1 ms
 * budget (one hash table per object); this is ~10x cheaper.  Anything
 * unusual (escaped keys, numbers jansson might reject, deep nesting, a
 * count mismatch, a malformed item) returns SCAN_FALLBACK, and the jansson
 * path below decides and writes the error message, so both paths accept
 * exactly the same inputs with the same results.
 */
#define SCAN_OK 0
#define SCAN_FALLBACK 1
#define SCAN_MAX_DEPTH 64

typedef struct Scanner
{
	const unsigned char *p;
	const unsigned char *end;
} Scanner;

static void
sc_ws(Scanner *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
		s->p++;
}

static int
sc_peek(Scanner *s)
{
	return s->p < s->end ? *s->p : -1;
}

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), 0 if invalid:
 * no overlong forms, surrogates or code points over U+10FFFF (as jansson). */
static int
utf8_sequence(const unsigned char *p, const unsigned char *end)
{
	unsigned int c = p[0];
	unsigned int v;
	int			n;

	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4;
	else
		return 0;
	if (end - p < n)
		return 0;
	v = c & (0x7Fu >> n);
	for (int i = 1; i < n; i++)
	{
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		v = (v << 6) | (p[i] & 0x3Fu);
	}
	if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) ||
		(v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF)
		return 0;
	return n;
}

static int
hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A string at s->p ('"'): raw contents in *start and *len, *escaped if it has
 * a backslash escape. */
static int
sc_string(Scanner *s, const unsigned char **start, size_t *len, int *escaped)
{
	const unsigned char *p = s->p + 1;

	*escaped = 0;
	*start = p;
	while (p < s->end)
	{
		unsigned int c = *p;

		if (c == '"')
		{
			*len = (size_t) (p - *start);
			s->p = p + 1;
			return SCAN_OK;
		}
		if (c < 0x20)
			return SCAN_FALLBACK;
		if (c == '\\')
		{
			*escaped = 1;
			if (s->end - p < 2)
				return SCAN_FALLBACK;
			c = p[1];
			if (c == 'u')
			{
				unsigned int v = 0;

				if (s->end - p < 6)
					return SCAN_FALLBACK;
				for (int i = 2; i < 6; i++)
				{
					int			h = hex_value(p[i]);

					if (h < 0)
						return SCAN_FALLBACK;
					v = (v << 4) | (unsigned int) h;
				}
				if (v >= 0xD800 && v <= 0xDFFF)
					return SCAN_FALLBACK;	/* surrogate pairs: let jansson check */
				p += 6;
			}
			else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' ||
					 c == 'n' || c == 'r' || c == 't')
				p += 2;
			else
				return SCAN_FALLBACK;
			continue;
		}
		if (c >= 0x80)
		{
			int			n = utf8_sequence(p, s->end);

			if (n == 0)
				return SCAN_FALLBACK;
			p += n;
			continue;
		}
		p++;
	}
	return SCAN_FALLBACK;
}

static int
sc_is_digit(const Scanner *s, const unsigned char *p)
{
	return p < s->end && *p >= '0' && *p <= '9';
}

/* A JSON number; *is_int when it has no fraction or exponent. */
static int
sc_number(Scanner *s, int *is_int, long *value)
{
	const unsigned char *p = s->p;
	long		v = 0;
	int			neg = 0;
	int			digits = 0;

	if (p < s->end && *p == '-')
	{
		neg = 1;
		p++;
	}
	if (!sc_is_digit(s, p))
		return SCAN_FALLBACK;
	if (*p == '0')
	{
		p++;
		digits = 1;
	}
	else
		while (sc_is_digit(s, p))
		{
			if (++digits > 15)
				return SCAN_FALLBACK;	/* overflow rules: jansson's business */
			v = v * 10 + (*p - '0');
			p++;
		}
	*is_int = 1;
	if (p < s->end && *p == '.')
	{
		*is_int = 0;
		p++;
		if (!sc_is_digit(s, p))
			return SCAN_FALLBACK;
		while (sc_is_digit(s, p))
			p++;
	}
	if (p < s->end && (*p == 'e' || *p == 'E'))
	{
		*is_int = 0;
		p++;
		if (p < s->end && (*p == '+' || *p == '-'))
			p++;
		if (!sc_is_digit(s, p))
			return SCAN_FALLBACK;
		while (sc_is_digit(s, p))
			p++;
	}
	if (p - s->p > 24)
		return SCAN_FALLBACK;
	*value = neg ? -v : v;
	s->p = p;
	return SCAN_OK;
}

static int
sc_literal(Scanner *s, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return SCAN_FALLBACK;
	s->p += n;
	return SCAN_OK;
}

static int	sc_skip_value(Scanner *s, int depth);

/* After a member or element: ',' (returns 1 in *more) or the closing char. */
static int
sc_next(Scanner *s, int close, int *more)
{
	sc_ws(s);
	if (sc_peek(s) == ',')
	{
		s->p++;
		sc_ws(s);
		*more = 1;
		return SCAN_OK;
	}
	if (sc_peek(s) == close)
	{
		s->p++;
		*more = 0;
		return SCAN_OK;
	}
	return SCAN_FALLBACK;
}

/* "key": at s->p, leaving s->p at the value. */
static int
sc_key(Scanner *s, const unsigned char **key, size_t *klen, int *escaped)
{
	if (sc_peek(s) != '"' || sc_string(s, key, klen, escaped) != SCAN_OK)
		return SCAN_FALLBACK;
	sc_ws(s);
	if (sc_peek(s) != ':')
		return SCAN_FALLBACK;
	s->p++;
	sc_ws(s);
	return SCAN_OK;
}

static int
sc_skip_value(Scanner *s, int depth)
{
	const unsigned char *str;
	size_t		slen;
	int			escaped;
	int			more;
	int			is_int;
	long		value;

	if (depth > SCAN_MAX_DEPTH)
		return SCAN_FALLBACK;
	switch (sc_peek(s))
	{
		case '{':
			s->p++;
			sc_ws(s);
			if (sc_peek(s) == '}')
			{
				s->p++;
				return SCAN_OK;
			}
			do
			{
				if (sc_key(s, &str, &slen, &escaped) != SCAN_OK ||
					sc_skip_value(s, depth + 1) != SCAN_OK ||
					sc_next(s, '}', &more) != SCAN_OK)
					return SCAN_FALLBACK;
			} while (more);
			return SCAN_OK;
		case '[':
			s->p++;
			sc_ws(s);
			if (sc_peek(s) == ']')
			{
				s->p++;
				return SCAN_OK;
			}
			do
			{
				if (sc_skip_value(s, depth + 1) != SCAN_OK ||
					sc_next(s, ']', &more) != SCAN_OK)
					return SCAN_FALLBACK;
			} while (more);
			return SCAN_OK;
		case '"':
			return sc_string(s, &str, &slen, &escaped);
		case 't':
			return sc_literal(s, "true");
		case 'f':
			return sc_literal(s, "false");
		case 'n':
			return sc_literal(s, "null");
		default:
			return sc_number(s, &is_int, &value);
	}
}

static int
key_is(const unsigned char *key, size_t klen, int escaped, const char *name)
{
	return !escaped && klen == strlen(name) && memcmp(key, name, klen) == 0;
}

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
		return SCAN_OK;
	}
	entry = json_loadb((const char *) inner, len, JSON_ALLOW_NUL, NULL);
	if (entry == NULL)
		return SCAN_FALLBACK;
	read_item_error(entry, item);
	json_decref(entry);
	return SCAN_OK;
}

/* One element of items[]: {"<action>": {..., "status": N, "error": ...}} */
static int
sc_item(Scanner *s, const char *op, EcpBulkItem *item)
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

	if (sc_peek(s) != '{')
		return SCAN_FALLBACK;
	s->p++;
	sc_ws(s);
	if (sc_key(s, &action, &action_len, &escaped) != SCAN_OK || escaped)
		return SCAN_FALLBACK;
	if (sc_peek(s) != '{')
		return SCAN_FALLBACK;
	inner = s->p;
	s->p++;
	sc_ws(s);
	if (sc_peek(s) == '}')
		return SCAN_FALLBACK;	/* no status */
	do
	{
		if (sc_key(s, &key, &klen, &escaped) != SCAN_OK)
			return SCAN_FALLBACK;
		if (key_is(key, klen, escaped, "status"))
		{
			int			is_int;

			if (sc_number(s, &is_int, &status) != SCAN_OK || !is_int ||
				status < 100 || status > 599)
				return SCAN_FALLBACK;
			has_status = 1;
		}
		else
		{
			if (key_is(key, klen, escaped, "error"))
				has_error = 1;
			if (sc_skip_value(s, 3) != SCAN_OK)
				return SCAN_FALLBACK;
		}
		if (sc_next(s, '}', &more) != SCAN_OK)
			return SCAN_FALLBACK;
	} while (more);
	if (!has_status)
		return SCAN_FALLBACK;
	inner_end = s->p;			/* just past the inner object's '}' */
	/* the wrapper must hold exactly one key */
	sc_ws(s);
	if (sc_peek(s) != '}')
		return SCAN_FALLBACK;
	s->p++;

	item->status = (int) status;
	if (has_error && (status < 200 || status > 299) &&
		read_scanned_error(inner, inner_end, item) != SCAN_OK)
		return SCAN_FALLBACK;
	if (op)
		item->klass = classify(item, op, strlen(op), has_error);
	else
		item->klass = classify(item, (const char *) action, action_len, has_error);
	if (item->klass == ECP_ITEM_OK)
		drop_item_strings(item);
	return SCAN_OK;
}

/* SCAN_OK with out filled in, or SCAN_FALLBACK with out zeroed. */
static int
fast_parse(const char *body, size_t len, int expected_items, const char *op,
		   EcpBulkResult *out)
{
	Scanner		s;
	const unsigned char *key;
	size_t		klen;
	int			escaped;
	int			more;
	int			n = 0;
	int			found_items = 0;

	if (expected_items <= 0)
		return SCAN_FALLBACK;
	out->items = calloc((size_t) expected_items, sizeof(EcpBulkItem));
	if (out->items == NULL)
		return SCAN_FALLBACK;
	out->nitems = expected_items;	/* so that a partial result can be freed */

	s.p = (const unsigned char *) body;
	s.end = s.p + len;
	sc_ws(&s);
	if (sc_peek(&s) != '{')
		goto fallback;
	s.p++;
	sc_ws(&s);
	if (sc_peek(&s) == '}')
		goto fallback;
	do
	{
		if (sc_key(&s, &key, &klen, &escaped) != SCAN_OK)
			goto fallback;
		if (key_is(key, klen, escaped, "items"))
		{
			if (found_items || sc_peek(&s) != '[')
				goto fallback;
			found_items = 1;
			s.p++;
			sc_ws(&s);
			if (sc_peek(&s) == ']')
				s.p++;
			else
			{
				int			more_items;

				do
				{
					if (n >= expected_items ||
						sc_item(&s, op, &out->items[n]) != SCAN_OK)
						goto fallback;
					n++;
					if (sc_next(&s, ']', &more_items) != SCAN_OK)
						goto fallback;
				} while (more_items);
			}
		}
		else if (sc_skip_value(&s, 1) != SCAN_OK)
			goto fallback;
		if (sc_next(&s, '}', &more) != SCAN_OK)
			goto fallback;
	} while (more);
	sc_ws(&s);
	if (s.p != s.end || !found_items || n != expected_items)
		goto fallback;

	for (int i = 0; i < n; i++)
		count_class(out, i, out->items[i].klass);
	return SCAN_OK;

fallback:
	ecp_bulk_result_free(out);
	return SCAN_FALLBACK;
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
		fast_parse(body, len, expected_items, op, out) == SCAN_OK)
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

/*
 * The "error" member of a JSON object body that is too large to parse
 * whole, parsed alone when it ends within the first
 * ECP_ERROR_BODY_JSON_MAX bytes (Elasticsearch writes it first); NULL
 * otherwise.  The caller owns the reference.
 */
static json_t *
error_from_prefix(const char *body, size_t len)
{
	Scanner		s;
	const unsigned char *key;
	const unsigned char *value;
	size_t		klen;
	int			escaped;
	int			more;

	s.p = (const unsigned char *) body;
	s.end = s.p + (len < ECP_ERROR_BODY_JSON_MAX ? len : ECP_ERROR_BODY_JSON_MAX);
	sc_ws(&s);
	if (sc_peek(&s) != '{')
		return NULL;
	s.p++;
	sc_ws(&s);
	do
	{
		if (sc_key(&s, &key, &klen, &escaped) != SCAN_OK)
			return NULL;
		value = s.p;
		if (sc_skip_value(&s, 1) != SCAN_OK)
			return NULL;
		if (key_is(key, klen, escaped, "error"))
			return json_loadb((const char *) value, (size_t) (s.p - value),
							  JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
		if (sc_next(&s, '}', &more) != SCAN_OK)
			return NULL;
	} while (more);
	return NULL;
}

/* The "error" member of body (a new reference), or NULL; bounded memory. */
static json_t *
error_member(const char *body, size_t len)
{
	json_t	   *root;
	json_t	   *error;

	if (body == NULL || len == 0)
		return NULL;
	if (len > ECP_ERROR_BODY_JSON_MAX)
		return error_from_prefix(body, len);
	root = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
	error = json_is_object(root) ? json_incref(json_object_get(root, "error")) : NULL;
	json_decref(root);
	return error;
}

void
ecp_error_summary(const char *body, size_t len, long status, char *out, size_t outlen)
{
	json_t	   *error;
	TextBuf		tb;

	(void) status;
	if (out == NULL || outlen == 0)
		return;
	tb_init(&tb, out, outlen);
	error = error_member(body, len);
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
	json_decref(error);
}
