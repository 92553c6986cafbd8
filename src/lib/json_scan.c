/*
 * json_scan.c: the streaming JSON scanner (see json_scan.h) that
 * es_answers.c reads Elasticsearch's answers and NDJSON lines with.
 *
 * Why not jansson: a tree costs about 75 bytes of malloc per byte of
 * "[{},{},...]", outside PostgreSQL's memory accounting, so a hostile
 * server answering a few tens of MB took gigabytes, and a
 * hostile file server 773 MB per 10 MB line.  The scanner checks the
 * whole input (RFC 8259: grammar, escapes, UTF-8) but keeps only what its
 * caller reads; values are skipped with a nesting stack of MAX_DEPTH bytes.
 * Plain C99: the unit tests build it alone.
 */
#include "json_scan.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Elasticsearch's own answers nest a few levels; jansson allows 2048. */
#define MAX_DEPTH 512

static int	fail_as(EcpScan *s, EcpScanFailure why, int at_byte, const char *fmt, va_list ap)
			ECP_SCAN_PRINTF_LIKE(4, 0);
static int	bad_json(EcpScan *s, const char *fmt,...) ECP_SCAN_PRINTF_LIKE(2, 3);
static int	not_object(EcpScan *s, const char *fmt,...) ECP_SCAN_PRINTF_LIKE(2, 3);

void
ecp_scan_begin(EcpScan *s, const char *input, size_t len, const char *noun, char *err, size_t errlen)
{
	s->start = s->p = (const unsigned char *) (input ? input : "");
	s->end = s->p + (input ? len : 0);
	s->noun = noun;
	s->err = err;
	s->errlen = errlen;
	s->failure = ECP_SCAN_GOING;
	if (err && errlen > 0)
		err[0] = '\0';
}

static int
fail_as(EcpScan *s, EcpScanFailure why, int at_byte, const char *fmt, va_list ap)
{
	char		what[200];

	vsnprintf(what, sizeof(what), fmt, ap);
	if (s->err && s->errlen > 0)
	{
		if (at_byte)
			snprintf(s->err, s->errlen, "%s at byte %zu", what, (size_t) (s->p - s->start));
		else
			snprintf(s->err, s->errlen, "%s", what);
	}
	s->failure = why;
	return -1;
}

/* Not JSON: what was wrong, and where. */
static int
bad_json(EcpScan *s, const char *fmt,...)
{
	va_list		ap;
	int			rc;

	va_start(ap, fmt);
	rc = fail_as(s, ECP_SCAN_NOT_JSON, 1, fmt, ap);
	va_end(ap);
	return rc;
}

/* JSON, but not what the caller reads. */
int
ecp_scan_unexpected(EcpScan *s, const char *fmt,...)
{
	va_list		ap;
	int			rc;

	va_start(ap, fmt);
	rc = fail_as(s, ECP_SCAN_UNEXPECTED, 0, fmt, ap);
	va_end(ap);
	return rc;
}

/* JSON, but not an object. */
static int
not_object(EcpScan *s, const char *fmt,...)
{
	va_list		ap;
	int			rc;

	va_start(ap, fmt);
	rc = fail_as(s, ECP_SCAN_NOT_OBJECT, 0, fmt, ap);
	va_end(ap);
	return rc;
}

static void
skip_ws(EcpScan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* An unexpected byte, or the end of the answer, where `expected` should be. */
static int
bad_byte(EcpScan *s, const char *expected)
{
	int			c = ecp_scan_peek(s);

	if (c < 0)
		return bad_json(s, "%s ends where %s should be", s->noun, expected);
	if (c >= 0x20 && c < 0x7f)
		return bad_json(s, "unexpected '%c' where %s should be", c, expected);
	return bad_json(s, "unexpected byte 0x%02x where %s should be", c, expected);
}

/* Length of the well-formed UTF-8 sequence at p (lead byte >= 0x80), or 0. */
static size_t
utf8_length(const unsigned char *p, const unsigned char *end)
{
	unsigned char lead = p[0];
	unsigned char lo = 0x80;
	unsigned char hi = 0xbf;
	size_t		n;

	if (lead >= 0xc2 && lead <= 0xdf)
		n = 2;
	else if (lead >= 0xe0 && lead <= 0xef)
	{
		n = 3;
		lo = lead == 0xe0 ? 0xa0 : 0x80;	/* no overlong forms */
		hi = lead == 0xed ? 0x9f : 0xbf;	/* no surrogates */
	}
	else if (lead >= 0xf0 && lead <= 0xf4)
	{
		n = 4;
		lo = lead == 0xf0 ? 0x90 : 0x80;
		hi = lead == 0xf4 ? 0x8f : 0xbf;	/* at most U+10FFFF */
	}
	else
		return 0;
	if ((size_t) (end - p) < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* Compare n more bytes with what out expects. */
static void
text_compare(EcpScanText *out, const void *bytes, size_t n)
{
	if (out->len + n > out->expect_len || memcmp(out->expect + out->len, bytes, n) != 0)
		out->over = 1;
	else
		out->len += n;
}

/* Append n bytes to out (NULL: the string is only checked). */
static int
text_append(EcpScan *s, EcpScanText *out, const void *bytes, size_t n)
{
	if (out == NULL || out->over)
		return 0;
	if (out->expect)
	{
		text_compare(out, bytes, n);
		return 0;
	}
	if (out->len + n + 1 > out->cap)
	{
		size_t		cap = out->cap ? out->cap : 64;
		char	   *grown;

		if (out->fixed)
		{
			out->over = 1;
			return 0;
		}

		while (cap < out->len + n + 1)
			cap *= 2;
		grown = realloc(out->data, cap);
		if (grown == NULL)
			return ecp_scan_unexpected(s, "out of memory reading the answer");
		out->data = grown;
		out->cap = cap;
	}
	memcpy(out->data + out->len, bytes, n);
	out->len += n;
	out->data[out->len] = '\0';
	return 0;
}

/* Empty out for the next string (a growable one gets its first buffer). */
static int
text_reset(EcpScan *s, EcpScanText *out)
{
	out->len = 0;
	out->over = 0;
	out->has_nul = 0;
	if (out->data)
		out->data[0] = '\0';
	return text_append(s, out, "", 0);
}

static int
hex4(EcpScan *s, unsigned *value)
{
	*value = 0;
	for (int i = 0; i < 4; i++)
	{
		int			c = ecp_scan_peek(s);

		*value <<= 4;
		if (c >= '0' && c <= '9')
			*value |= (unsigned) (c - '0');
		else if (c >= 'a' && c <= 'f')
			*value |= (unsigned) (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*value |= (unsigned) (c - 'A' + 10);
		else
			return bad_byte(s, "a hex digit of a \\u escape");
		s->p++;
	}
	return 0;
}

/* A \uXXXX escape (s->p after the 'u'), a surrogate pair as one code point. */
static int
unicode_escape(EcpScan *s, unsigned *code)
{
	unsigned	low;

	if (hex4(s, code) != 0)
		return -1;
	if (*code >= 0xdc00 && *code <= 0xdfff)
		return bad_json(s, "a \\u escape of a low surrogate without a high one");
	if (*code < 0xd800 || *code > 0xdbff)
		return 0;
	if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u')
		return bad_json(s, "a \\u escape of a high surrogate without a low one");
	s->p += 2;
	if (hex4(s, &low) != 0)
		return -1;
	if (low < 0xdc00 || low > 0xdfff)
		return bad_json(s, "a \\u escape of a high surrogate without a low one");
	*code = 0x10000 + ((*code - 0xd800) << 10) + (low - 0xdc00);
	return 0;
}

static int
append_code_point(EcpScan *s, EcpScanText *out, unsigned code)
{
	unsigned char utf8[4];
	size_t		n;

	if (code == 0 && out)
		out->has_nul = 1;
	if (code < 0x80)
	{
		utf8[0] = (unsigned char) code;
		n = 1;
	}
	else if (code < 0x800)
	{
		utf8[0] = (unsigned char) (0xc0 | (code >> 6));
		utf8[1] = (unsigned char) (0x80 | (code & 0x3f));
		n = 2;
	}
	else if (code < 0x10000)
	{
		utf8[0] = (unsigned char) (0xe0 | (code >> 12));
		utf8[1] = (unsigned char) (0x80 | ((code >> 6) & 0x3f));
		utf8[2] = (unsigned char) (0x80 | (code & 0x3f));
		n = 3;
	}
	else
	{
		utf8[0] = (unsigned char) (0xf0 | (code >> 18));
		utf8[1] = (unsigned char) (0x80 | ((code >> 12) & 0x3f));
		utf8[2] = (unsigned char) (0x80 | ((code >> 6) & 0x3f));
		utf8[3] = (unsigned char) (0x80 | (code & 0x3f));
		n = 4;
	}
	return text_append(s, out, utf8, n);
}

/* The escape at s->p (after the backslash), decoded into out. */
static int
escape(EcpScan *s, EcpScanText *out)
{
	static const char from[] = "\"\\/bfnrt";
	static const char to[] = "\"\\/\b\f\n\r\t";
	int			c = ecp_scan_peek(s);
	const char *simple = c > 0 ? strchr(from, c) : NULL;
	unsigned	code;

	if (c == 'u')
	{
		s->p++;
		return unicode_escape(s, &code) != 0 ? -1 : append_code_point(s, out, code);
	}
	if (simple == NULL)
		return bad_byte(s, "an escape (one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u)");
	s->p++;
	return text_append(s, out, &to[simple - from], 1);
}

/*
 * The string at s->p (its opening quote), into out (NULL: checked and
 * skipped).  Runs of plain bytes are appended at once.
 */
int
ecp_scan_string(EcpScan *s, EcpScanText *out)
{
	s->p++;
	for (;;)
	{
		const unsigned char *run = s->p;
		int			c;

		while (s->p < s->end && *s->p >= 0x20 && *s->p < 0x80 && *s->p != '"' && *s->p != '\\')
			s->p++;
		if (text_append(s, out, run, (size_t) (s->p - run)) != 0)
			return -1;
		c = ecp_scan_peek(s);
		if (c == '"')
		{
			s->p++;
			return 0;
		}
		if (c == '\\')
		{
			s->p++;
			if (escape(s, out) != 0)
				return -1;
		}
		else if (c < 0)
			return bad_json(s, "%s ends inside a string", s->noun);
		else if (c < 0x20)
			return bad_json(s, "a control character (0x%02x) inside a string", c);
		else
		{
			size_t		n = utf8_length(s->p, s->end);

			if (n == 0)
				return bad_json(s, "invalid UTF-8");
			if (text_append(s, out, s->p, n) != 0)
				return -1;
			s->p += n;
		}
	}
}

static void
skip_digits(EcpScan *s)
{
	while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
		s->p++;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
int
ecp_scan_number(EcpScan *s)
{
	if (ecp_scan_peek(s) == '-')
		s->p++;
	if (ecp_scan_peek(s) == '0')
		s->p++;
	else if (ecp_scan_is_digit(ecp_scan_peek(s)))
		skip_digits(s);
	else
		return bad_byte(s, "a digit");
	if (ecp_scan_peek(s) == '.')
	{
		s->p++;
		if (!ecp_scan_is_digit(ecp_scan_peek(s)))
			return bad_byte(s, "a digit of the fraction");
		skip_digits(s);
	}
	if (ecp_scan_peek(s) == 'e' || ecp_scan_peek(s) == 'E')
	{
		s->p++;
		if (ecp_scan_peek(s) == '+' || ecp_scan_peek(s) == '-')
			s->p++;
		if (!ecp_scan_is_digit(ecp_scan_peek(s)))
			return bad_byte(s, "a digit of the exponent");
		skip_digits(s);
	}
	return 0;
}

/* The kind of the number [from, to) (as ecp_scan_number took it), its value if an integer. */
EcpScanNumber
ecp_scan_number_kind(const unsigned char *from, const unsigned char *to, long long *value)
{
	int			negative = *from == '-';

	*value = 0;
	for (const unsigned char *d = from + negative; d < to; d++)
		if (!ecp_scan_is_digit(*d))
			return ECP_SCAN_REAL;
	for (const unsigned char *d = from + negative; d < to; d++)
	{
		int			digit = *d - '0';

		/* accumulated with the number's sign, so LLONG_MIN fits */
		if (negative ? *value < (LLONG_MIN + digit) / 10 : *value > (LLONG_MAX - digit) / 10)
			return ECP_SCAN_TOO_BIG;
		*value = *value * 10 + (negative ? -digit : digit);
	}
	return ECP_SCAN_INTEGER;
}

static int
scan_literal(EcpScan *s, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return bad_byte(s, "a value");
	s->p += n;
	return 0;
}

/* A string, number, true, false or null. */
static int
scan_scalar(EcpScan *s)
{
	int			c = ecp_scan_peek(s);

	if (c == '"')
		return ecp_scan_string(s, NULL);
	if (c == '-' || ecp_scan_is_digit(c))
		return ecp_scan_number(s);
	if (c == 't')
		return scan_literal(s, "true");
	if (c == 'f')
		return scan_literal(s, "false");
	if (c == 'n')
		return scan_literal(s, "null");
	return bad_byte(s, "a value");
}

/* A member's key (checked, skipped) and its colon. */
static int
member_key(EcpScan *s)
{
	skip_ws(s);
	if (ecp_scan_peek(s) != '"')
		return bad_byte(s, "a key");
	if (ecp_scan_string(s, NULL) != 0)
		return -1;
	skip_ws(s);
	if (ecp_scan_peek(s) != ':')
		return bad_byte(s, "':'");
	s->p++;
	return 0;
}

static int
closer(int open)
{
	return open == '{' ? '}' : ']';
}

/*
 * After a value inside the containers open[0..*depth): close those that
 * end here, up to a ',' (and, in an object, the next key) or the end of
 * the outermost one.
 */
static int
after_value(EcpScan *s, const unsigned char *open, int *depth)
{
	while (*depth > 0)
	{
		int			inner = open[*depth - 1];

		skip_ws(s);
		if (ecp_scan_peek(s) == ',')
		{
			s->p++;
			return inner == '{' ? member_key(s) : 0;
		}
		if (ecp_scan_peek(s) != closer(inner))
			return bad_byte(s, inner == '{' ? "',' or '}'" : "',' or ']'");
		s->p++;
		(*depth)--;
	}
	return 0;
}

/* Check and skip one value of any kind. */
int
ecp_scan_skip_value(EcpScan *s)
{
	unsigned char open[MAX_DEPTH];	/* '{' or '[' of each container we are in */
	int			depth = 0;

	for (;;)
	{
		int			c;

		skip_ws(s);
		c = ecp_scan_peek(s);
		if (c == '{' || c == '[')
		{
			if (depth == MAX_DEPTH)
				return bad_json(s, "containers nested deeper than %d levels", MAX_DEPTH);
			open[depth++] = (unsigned char) c;
			s->p++;
			skip_ws(s);
			if (ecp_scan_peek(s) != closer(c))
			{
				if (c == '{' && member_key(s) != 0)
					return -1;
				continue;		/* the first member's value, or element */
			}
			s->p++;
			depth--;
		}
		else if (scan_scalar(s) != 0)
			return -1;
		if (after_value(s, open, &depth) != 0)
			return -1;
		if (depth == 0)
			return 0;
	}
}

/* Nothing but whitespace may follow the value. */
static int
at_end(EcpScan *s)
{
	char		expected[40];

	skip_ws(s);
	if (s->p == s->end)
		return 0;
	snprintf(expected, sizeof(expected), "the end of %s", s->noun);
	return bad_byte(s, expected);
}

/* The kind of the value that begins with c: "an array", "null", ... */
const char *
ecp_scan_value_kind(int c)
{
	return c == '{' ? "an object" : c == '[' ? "an array" : c == '"' ? "a string" :
		c == 't' || c == 'f' ? "a boolean" : c == 'n' ? "null" : "a number";
}

/* The input is not an object: which JSON it is, or where it is not JSON. */
static int
not_an_object(EcpScan *s)
{
	int			c = ecp_scan_peek(s);

	if (c < 0)
		return bad_json(s, "%s is empty", s->noun);
	if (ecp_scan_skip_value(s) != 0 || at_end(s) != 0)
		return -1;
	return not_object(s, "%s is %s, not a JSON object", s->noun, ecp_scan_value_kind(c));
}

static int
scan_members(EcpScan *s, EcpScanMemberFn member, void *arg, EcpScanText *key)
{
	for (;;)
	{
		skip_ws(s);
		if (ecp_scan_peek(s) != '"')
			return bad_byte(s, "a key");
		if (text_reset(s, key) != 0 || ecp_scan_string(s, key) != 0)
			return -1;
		skip_ws(s);
		if (ecp_scan_peek(s) != ':')
			return bad_byte(s, "':'");
		s->p++;
		skip_ws(s);
		if (member(s, key, arg) != 0)
			return -1;
		skip_ws(s);
		if (ecp_scan_peek(s) == '}')
		{
			s->p++;
			return 0;
		}
		if (ecp_scan_peek(s) != ',')
			return bad_byte(s, "',' or '}'");
		s->p++;
	}
}

/* The whole input: one object, each member handed to member, its key in key. */
int
ecp_scan_object(EcpScan *s, EcpScanMemberFn member, void *arg, EcpScanText *key)
{
	skip_ws(s);
	if (ecp_scan_peek(s) != '{')
		return not_an_object(s);
	s->p++;
	skip_ws(s);
	if (ecp_scan_peek(s) == '}')
		s->p++;
	else if (scan_members(s, member, arg, key) != 0)
		return -1;
	return at_end(s);
}
