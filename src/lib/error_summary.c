/*
 * error_summary.c: Elasticsearch's errors as text (see error_summary.h):
 * ecp_error_summary, the one line that messages quote of a whole-request
 * error body (non-2xx: the ES error envelope, {"error":"..."}, or a
 * proxy's HTML page), and the bounded UTF-8 text builder and ErrorCause
 * text it shares with the _bulk reader (bulk_response.c).
 *
 * Memory is bounded whatever the body: jansson builds a tree
 * of about 70 bytes per byte of "[{},{},...]", so a body over
 * ECP_ERROR_BODY_JSON_MAX is not handed to it whole; only an "error"
 * member within its first ECP_ERROR_BODY_JSON_MAX bytes, found with the
 * allocation-free scanner of bulk_scan.c, is.  Strings written are valid
 * UTF-8: jansson validates its input, cuts are made on character
 * boundaries, and bytes quoted from non-JSON bodies are printable ASCII.
 */
#include "error_summary.h"
#include "bulk_response.h"
#include "bulk_scan.h"

#include <string.h>

#include <jansson.h>

#define MAX_PREFIX_CHARS 200	/* characters quoted from a non-JSON body */
#define ECP_ERROR_BODY_JSON_MAX (64 * 1024)

size_t
ecp_utf8_fit(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	len = max;
	/* s[len] is the first byte left out: back up while it continues a char */
	while (len > 0 && ((unsigned char) s[len] & 0xC0) == 0x80)
		len--;
	return len;
}

void
ecp_text_init(EcpTextBuf *tb, char *data, size_t size)
{
	tb->data = data;
	tb->size = size;
	tb->len = 0;
	tb->full = size == 0;
	if (size > 0)
		data[0] = '\0';
}

void
ecp_text_append_n(EcpTextBuf *tb, const char *s, size_t n)
{
	size_t		room;
	size_t		take;

	if (tb->full || s == NULL)
		return;
	room = tb->size - 1 - tb->len;
	take = ecp_utf8_fit(s, n, room);
	memcpy(tb->data + tb->len, s, take);
	tb->len += take;
	tb->data[tb->len] = '\0';
	if (take < n)
		tb->full = 1;
}

void
ecp_text_append(EcpTextBuf *tb, const char *s)
{
	if (s)
		ecp_text_append_n(tb, s, strlen(s));
}

/* "type: reason" of an ErrorCause object into tb (either part may be missing). */
void
ecp_error_cause_append(EcpTextBuf *tb, json_t *cause, int with_type)
{
	const char *type = json_string_value(json_object_get(cause, "type"));
	const char *reason = json_string_value(json_object_get(cause, "reason"));

	if (with_type && type)
	{
		ecp_text_append(tb, type);
		if (reason)
			ecp_text_append(tb, ": ");
	}
	if (reason)
		ecp_text_append(tb, reason);
}

/*
 * The first MAX_PREFIX_CHARS printable characters of a non-JSON body (a
 * proxy's HTML page): whitespace runs become one space, other control and
 * non-ASCII bytes become '?'.
 */
static void
printable_prefix(const char *body, size_t len, EcpTextBuf *tb)
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
			ecp_text_append_n(tb, " ", 1);
			taken++;
			pending_space = 0;
			if (taken >= MAX_PREFIX_CHARS)
				break;
		}
		ch = (c >= 0x21 && c <= 0x7E) ? (char) c : '?';
		ecp_text_append_n(tb, &ch, 1);
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
	EcpBulkScan	s;
	const unsigned char *key;
	const unsigned char *value;
	size_t		klen;
	int			escaped;
	int			more;

	s.p = (const unsigned char *) body;
	s.end = s.p + (len < ECP_ERROR_BODY_JSON_MAX ? len : ECP_ERROR_BODY_JSON_MAX);
	ecp_bulk_scan_ws(&s);
	if (ecp_bulk_scan_peek(&s) != '{')
		return NULL;
	s.p++;
	ecp_bulk_scan_ws(&s);
	do
	{
		if (ecp_bulk_scan_key(&s, &key, &klen, &escaped) != ECP_BULK_SCAN_OK)
			return NULL;
		value = s.p;
		if (ecp_bulk_scan_skip_value(&s, 1) != ECP_BULK_SCAN_OK)
			return NULL;
		if (ecp_bulk_scan_key_is(key, klen, escaped, "error"))
			return json_loadb((const char *) value, (size_t) (s.p - value),
							  JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
		if (ecp_bulk_scan_next(&s, '}', &more) != ECP_BULK_SCAN_OK)
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
	EcpTextBuf	tb;

	(void) status;
	if (out == NULL || outlen == 0)
		return;
	ecp_text_init(&tb, out, outlen);
	error = error_member(body, len);
	if (json_is_string(error))
		ecp_text_append(&tb, json_string_value(error));
	else if (json_is_object(error) &&
			 (json_object_get(error, "type") || json_object_get(error, "reason")))
	{
		json_t	   *caused = json_object_get(error, "caused_by");

		ecp_error_cause_append(&tb, error, 1);
		if (json_is_object(caused) &&
			(json_object_get(caused, "reason") || json_object_get(caused, "type")))
		{
			ecp_text_append(&tb, " (caused by: ");
			ecp_error_cause_append(&tb, caused, 1);
			ecp_text_append(&tb, ")");
		}
	}
	else if (body != NULL)
		printable_prefix(body, len, &tb);
	if (tb.len == 0 && !tb.full)
		ecp_text_append(&tb, "(empty body)");
	json_decref(error);
}
