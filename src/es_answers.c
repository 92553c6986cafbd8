/*
 * es_answers.c: the caps on Elasticsearch's answers other than _bulk's
 * (see es_answers.h), and a streaming scanner for the few things ecp
 * reads out of them: the keys of an object (the indices of GET /<name>
 * and GET /_alias/<name>) and _count's count; the same scanner checks the
 * lines of an NDJSON file and reads their id (the file source).
 *
 * Why not jansson: a tree costs about 75 bytes of malloc per byte of
 * "[{},{},...]", outside PostgreSQL's memory accounting, so a hostile
 * server answering a few tens of MB took gigabytes (finding H1), and a
 * hostile file server 773 MB per 10 MB line.  The scanner checks the
 * whole input (RFC 8259: grammar, escapes, UTF-8) but keeps only what it
 * returns; values are skipped with a nesting stack of MAX_DEPTH bytes.
 * Plain C99: the unit tests build it alone.
 */
#include "es_answers.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Elasticsearch's own answers nest a few levels; jansson allows 2048. */
#define MAX_DEPTH 512

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

size_t
ecp_answer_cap(EcpAnswerKind kind)
{
	switch (kind)
	{
		case ECP_ANSWER_PRODUCT:
			return ECP_ANSWER_PRODUCT_CAP;
		case ECP_ANSWER_INDICES:
			return ECP_ANSWER_INDICES_CAP;
		case ECP_ANSWER_COUNT:
			return ECP_ANSWER_COUNT_CAP;
		case ECP_ANSWER_ACK:
			break;
	}
	return ECP_ANSWER_ACK_CAP;
}

const char *
ecp_answer_requests(EcpAnswerKind kind)
{
	switch (kind)
	{
		case ECP_ANSWER_PRODUCT:
			return "GET /";
		case ECP_ANSWER_INDICES:
			return "GET /<index or alias> and GET /_alias/<alias>";
		case ECP_ANSWER_COUNT:
			return "GET /<index>/_count";
		case ECP_ANSWER_ACK:
			break;
	}
	return "index creation, settings, refresh, _aliases, HEAD and DELETE requests";
}

const char *
ecp_answer_hint(EcpAnswerKind kind)
{
	switch (kind)
	{
		case ECP_ANSWER_PRODUCT:
			return "Elasticsearch and OpenSearch answer GET / with less than 1 KiB, so a larger answer comes from some other server.";
		case ECP_ANSWER_INDICES:
			return "ecp asks for the index names only, about 100 bytes per index, so a larger answer comes from a server that is not Elasticsearch, or from an alias over more than about 10,000 indices.";
		case ECP_ANSWER_COUNT:
			return "Elasticsearch answers _count with less than 1 KiB, so a larger answer comes from some other server.";
		case ECP_ANSWER_ACK:
			break;
	}
	return "Elasticsearch acknowledges these requests with less than 1 KiB and explains an error in a few KiB, so a larger answer comes from some other server.";
}

/* ---------------------------------------------------------------------------
 * The scanner.
 * ------------------------------------------------------------------------- */

/* Why a scan stopped. */
typedef enum ScanFailure
{
	SCAN_GOING = 0,				/* not stopped */
	SCAN_NOT_JSON,				/* not well-formed JSON */
	SCAN_NOT_OBJECT,			/* JSON, but not an object */
	SCAN_UNEXPECTED				/* an object, but not what the caller reads */
} ScanFailure;

typedef struct Scan
{
	const unsigned char *start;
	const unsigned char *p;
	const unsigned char *end;
	const char *noun;			/* what is scanned, for messages: "the answer" */
	char	   *err;
	size_t		errlen;
	ScanFailure failure;		/* why the scan stopped (when it returned -1) */
} Scan;

/*
 * A decoded string, in one of three ways: into a malloc'd buffer that
 * grows (data NULL or malloc'd, fixed 0); into the caller's buffer of cap
 * bytes (fixed 1: what does not fit sets over and is dropped); or only
 * compared with the expect_len bytes of expect (nothing stored; over as
 * soon as a byte differs or the string is longer).  data is always
 * NUL-terminated; has_nul when the string held \u0000.
 */
typedef struct Text
{
	char	   *data;
	size_t		len;
	size_t		cap;
	int			fixed;
	const char *expect;
	size_t		expect_len;
	int			over;
	int			has_nul;
} Text;

static int	fail_as(Scan *s, ScanFailure why, int at_byte, const char *fmt, va_list ap) PRINTF_LIKE(4, 0);
static int	bad_json(Scan *s, const char *fmt,...) PRINTF_LIKE(2, 3);
static int	unexpected(Scan *s, const char *fmt,...) PRINTF_LIKE(2, 3);
static int	not_object(Scan *s, const char *fmt,...) PRINTF_LIKE(2, 3);

static void
scan_begin(Scan *s, const char *input, size_t len, const char *noun, char *err, size_t errlen)
{
	s->start = s->p = (const unsigned char *) (input ? input : "");
	s->end = s->p + (input ? len : 0);
	s->noun = noun;
	s->err = err;
	s->errlen = errlen;
	s->failure = SCAN_GOING;
	if (err && errlen > 0)
		err[0] = '\0';
}

static int
fail_as(Scan *s, ScanFailure why, int at_byte, const char *fmt, va_list ap)
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
bad_json(Scan *s, const char *fmt,...)
{
	va_list		ap;
	int			rc;

	va_start(ap, fmt);
	rc = fail_as(s, SCAN_NOT_JSON, 1, fmt, ap);
	va_end(ap);
	return rc;
}

/* JSON, but not the answer the request gets. */
static int
unexpected(Scan *s, const char *fmt,...)
{
	va_list		ap;
	int			rc;

	va_start(ap, fmt);
	rc = fail_as(s, SCAN_UNEXPECTED, 0, fmt, ap);
	va_end(ap);
	return rc;
}

/* JSON, but not an object. */
static int
not_object(Scan *s, const char *fmt,...)
{
	va_list		ap;
	int			rc;

	va_start(ap, fmt);
	rc = fail_as(s, SCAN_NOT_OBJECT, 0, fmt, ap);
	va_end(ap);
	return rc;
}

static int
peek(const Scan *s)
{
	return s->p < s->end ? *s->p : -1;
}

static void
skip_ws(Scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* An unexpected byte, or the end of the answer, where `expected` should be. */
static int
bad_byte(Scan *s, const char *expected)
{
	int			c = peek(s);

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
text_compare(Text *out, const void *bytes, size_t n)
{
	if (out->len + n > out->expect_len || memcmp(out->expect + out->len, bytes, n) != 0)
		out->over = 1;
	else
		out->len += n;
}

/* Append n bytes to out (NULL: the string is only checked). */
static int
text_append(Scan *s, Text *out, const void *bytes, size_t n)
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
			return unexpected(s, "out of memory reading the answer");
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
text_reset(Scan *s, Text *out)
{
	out->len = 0;
	out->over = 0;
	out->has_nul = 0;
	if (out->data)
		out->data[0] = '\0';
	return text_append(s, out, "", 0);
}

static int
hex4(Scan *s, unsigned *value)
{
	*value = 0;
	for (int i = 0; i < 4; i++)
	{
		int			c = peek(s);

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
unicode_escape(Scan *s, unsigned *code)
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
append_code_point(Scan *s, Text *out, unsigned code)
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
escape(Scan *s, Text *out)
{
	static const char from[] = "\"\\/bfnrt";
	static const char to[] = "\"\\/\b\f\n\r\t";
	int			c = peek(s);
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
static int
scan_string(Scan *s, Text *out)
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
		c = peek(s);
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
skip_digits(Scan *s)
{
	while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
		s->p++;
}

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int
scan_number(Scan *s)
{
	if (peek(s) == '-')
		s->p++;
	if (peek(s) == '0')
		s->p++;
	else if (is_digit(peek(s)))
		skip_digits(s);
	else
		return bad_byte(s, "a digit");
	if (peek(s) == '.')
	{
		s->p++;
		if (!is_digit(peek(s)))
			return bad_byte(s, "a digit of the fraction");
		skip_digits(s);
	}
	if (peek(s) == 'e' || peek(s) == 'E')
	{
		s->p++;
		if (peek(s) == '+' || peek(s) == '-')
			s->p++;
		if (!is_digit(peek(s)))
			return bad_byte(s, "a digit of the exponent");
		skip_digits(s);
	}
	return 0;
}

/* A well-formed number as jansson reads it. */
typedef enum NumberKind
{
	NUMBER_INTEGER,				/* no fraction, no exponent, within 64 bits */
	NUMBER_REAL,				/* a fraction or an exponent */
	NUMBER_TOO_BIG				/* an integer beyond 64 bits */
} NumberKind;

/* The kind of the number [from, to) (as scan_number took it), its value if an integer. */
static NumberKind
number_kind(const unsigned char *from, const unsigned char *to, long long *value)
{
	int			negative = *from == '-';

	*value = 0;
	for (const unsigned char *d = from + negative; d < to; d++)
		if (!is_digit(*d))
			return NUMBER_REAL;
	for (const unsigned char *d = from + negative; d < to; d++)
	{
		int			digit = *d - '0';

		/* accumulated with the number's sign, so LLONG_MIN fits */
		if (negative ? *value < (LLONG_MIN + digit) / 10 : *value > (LLONG_MAX - digit) / 10)
			return NUMBER_TOO_BIG;
		*value = *value * 10 + (negative ? -digit : digit);
	}
	return NUMBER_INTEGER;
}

static int
scan_literal(Scan *s, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return bad_byte(s, "a value");
	s->p += n;
	return 0;
}

/* A string, number, true, false or null. */
static int
scan_scalar(Scan *s)
{
	int			c = peek(s);

	if (c == '"')
		return scan_string(s, NULL);
	if (c == '-' || is_digit(c))
		return scan_number(s);
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
member_key(Scan *s)
{
	skip_ws(s);
	if (peek(s) != '"')
		return bad_byte(s, "a key");
	if (scan_string(s, NULL) != 0)
		return -1;
	skip_ws(s);
	if (peek(s) != ':')
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
after_value(Scan *s, const unsigned char *open, int *depth)
{
	while (*depth > 0)
	{
		int			inner = open[*depth - 1];

		skip_ws(s);
		if (peek(s) == ',')
		{
			s->p++;
			return inner == '{' ? member_key(s) : 0;
		}
		if (peek(s) != closer(inner))
			return bad_byte(s, inner == '{' ? "',' or '}'" : "',' or ']'");
		s->p++;
		(*depth)--;
	}
	return 0;
}

/* Check and skip one value of any kind. */
static int
skip_value(Scan *s)
{
	unsigned char open[MAX_DEPTH];	/* '{' or '[' of each container we are in */
	int			depth = 0;

	for (;;)
	{
		int			c;

		skip_ws(s);
		c = peek(s);
		if (c == '{' || c == '[')
		{
			if (depth == MAX_DEPTH)
				return bad_json(s, "containers nested deeper than %d levels", MAX_DEPTH);
			open[depth++] = (unsigned char) c;
			s->p++;
			skip_ws(s);
			if (peek(s) != closer(c))
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

/* Called with each member's key, at its value, which it must consume. */
typedef int (*MemberFn) (Scan *s, const Text *key, void *arg);

/* Nothing but whitespace may follow the value. */
static int
at_end(Scan *s)
{
	char		expected[40];

	skip_ws(s);
	if (s->p == s->end)
		return 0;
	snprintf(expected, sizeof(expected), "the end of %s", s->noun);
	return bad_byte(s, expected);
}

/* The kind of the value that begins with c: "an array", "null", ... */
static const char *
value_kind(int c)
{
	return c == '{' ? "an object" : c == '[' ? "an array" : c == '"' ? "a string" :
		c == 't' || c == 'f' ? "a boolean" : c == 'n' ? "null" : "a number";
}

/* The input is not an object: which JSON it is, or where it is not JSON. */
static int
not_an_object(Scan *s)
{
	int			c = peek(s);

	if (c < 0)
		return bad_json(s, "%s is empty", s->noun);
	if (skip_value(s) != 0 || at_end(s) != 0)
		return -1;
	return not_object(s, "%s is %s, not a JSON object", s->noun, value_kind(c));
}

static int
scan_members(Scan *s, MemberFn member, void *arg, Text *key)
{
	for (;;)
	{
		skip_ws(s);
		if (peek(s) != '"')
			return bad_byte(s, "a key");
		if (text_reset(s, key) != 0 || scan_string(s, key) != 0)
			return -1;
		skip_ws(s);
		if (peek(s) != ':')
			return bad_byte(s, "':'");
		s->p++;
		skip_ws(s);
		if (member(s, key, arg) != 0)
			return -1;
		skip_ws(s);
		if (peek(s) == '}')
		{
			s->p++;
			return 0;
		}
		if (peek(s) != ',')
			return bad_byte(s, "',' or '}'");
		s->p++;
	}
}

/* The whole input: one object, each member handed to member, its key in key. */
static int
scan_object(Scan *s, MemberFn member, void *arg, Text *key)
{
	skip_ws(s);
	if (peek(s) != '{')
		return not_an_object(s);
	s->p++;
	skip_ws(s);
	if (peek(s) == '}')
		s->p++;
	else if (scan_members(s, member, arg, key) != 0)
		return -1;
	return at_end(s);
}

/* An answer: one object, each member handed to member with its key decoded. */
static EcpAnswerRead
scan_answer(const char *body, size_t len, MemberFn member, void *arg, char *err, size_t errlen)
{
	Scan		s;
	Text		key;
	int			rc;

	memset(&key, 0, sizeof(key));
	scan_begin(&s, body, len, "the answer", err, errlen);
	rc = scan_object(&s, member, arg, &key);
	free(key.data);
	if (rc == 0)
		return ECP_ANSWER_READ;
	return s.failure == SCAN_NOT_JSON ? ECP_ANSWER_NOT_JSON : ECP_ANSWER_UNEXPECTED;
}

/* ---------------------------------------------------------------------------
 * The keys of an object.
 * ------------------------------------------------------------------------- */

typedef struct KeyList
{
	char	  **keys;
	int			n;
	int			cap;
} KeyList;

/* A key for a message: printable ASCII, the rest as '?', at most 64 bytes. */
static void
printable(const char *key, char *out, size_t outlen)
{
	size_t		i;

	for (i = 0; key[i] && i + 1 < outlen && i < 64; i++)
		out[i] = key[i] >= 0x20 && key[i] < 0x7f ? key[i] : '?';
	out[i] = '\0';
}

static int
collect_key(Scan *s, const Text *key, void *arg)
{
	KeyList    *list = arg;
	char	   *copy;

	if (key->has_nul)
		return unexpected(s, "a key of the answer holds \\u0000");
	if (list->n == list->cap)
	{
		int			cap = list->cap ? list->cap * 2 : 16;
		char	  **grown;

		if (list->cap > INT_MAX / 4)
			return unexpected(s, "the answer has more than %d keys", list->cap);
		grown = realloc(list->keys, sizeof(char *) * (size_t) cap);
		if (grown == NULL)
			return unexpected(s, "out of memory reading the answer");
		list->keys = grown;
		list->cap = cap;
	}
	copy = malloc(key->len + 1);
	if (copy == NULL)
		return unexpected(s, "out of memory reading the answer");
	memcpy(copy, key->data, key->len + 1);
	list->keys[list->n++] = copy;
	return skip_value(s);
}

static int
compare_keys(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* A key given twice (an index named twice): sorted copies side by side. */
static const char *
duplicate_key(char **keys, int n)
{
	char	  **sorted;
	const char *found = NULL;

	if (n < 2)
		return NULL;
	sorted = malloc(sizeof(char *) * (size_t) n);
	if (sorted == NULL)
		return NULL;
	memcpy(sorted, keys, sizeof(char *) * (size_t) n);
	qsort(sorted, (size_t) n, sizeof(char *), compare_keys);
	for (int i = 1; i < n && found == NULL; i++)
		if (strcmp(sorted[i - 1], sorted[i]) == 0)
			found = sorted[i];
	free(sorted);
	return found;
}

void
ecp_answer_keys_free(char **keys, int nkeys)
{
	if (keys == NULL)
		return;
	for (int i = 0; i < nkeys; i++)
		free(keys[i]);
	free(keys);
}

EcpAnswerRead
ecp_answer_object_keys(const char *body, size_t len, char ***keys, int *nkeys, char *err,
					   size_t errlen)
{
	KeyList		list = {NULL, 0, 0};
	EcpAnswerRead rc = scan_answer(body, len, collect_key, &list, err, errlen);
	const char *twice = rc == ECP_ANSWER_READ ? duplicate_key(list.keys, list.n) : NULL;

	if (twice)
	{
		char		shown[72];

		printable(twice, shown, sizeof(shown));
		if (err && errlen > 0)
			snprintf(err, errlen, "the key \"%s\" appears twice", shown);
		rc = ECP_ANSWER_UNEXPECTED;
	}
	if (rc != ECP_ANSWER_READ)
	{
		ecp_answer_keys_free(list.keys, list.n);
		list.keys = NULL;
		list.n = 0;
	}
	*keys = list.keys;
	*nkeys = list.n;
	return rc;
}

/* ---------------------------------------------------------------------------
 * _count's count.
 * ------------------------------------------------------------------------- */

typedef struct Count
{
	long long	value;
	int			seen;
} Count;

/* The number at s->p, which must be a non-negative integer. */
static int
read_integer(Scan *s, long long *value)
{
	const unsigned char *from = s->p;
	NumberKind	kind;

	if (peek(s) != '-' && !is_digit(peek(s)))
	{
		if (skip_value(s) != 0)
			return -1;
		return unexpected(s, "\"count\" is not a number");
	}
	if (scan_number(s) != 0)
		return -1;
	kind = number_kind(from, s->p, value);
	if (kind == NUMBER_REAL || *from == '-')
		return unexpected(s, "\"count\" is %.*s, not a non-negative integer",
						  (int) (s->p - from > 40 ? 40 : s->p - from), (const char *) from);
	if (kind == NUMBER_TOO_BIG)
		return unexpected(s, "\"count\" is larger than %lld", LLONG_MAX);
	return 0;
}

static int
read_count(Scan *s, const Text *key, void *arg)
{
	Count	   *count = arg;

	if (key->has_nul || key->len != 5 || memcmp(key->data, "count", 5) != 0)
		return skip_value(s);
	if (count->seen)
		return unexpected(s, "\"count\" appears twice");
	count->seen = 1;
	return read_integer(s, &count->value);
}

EcpAnswerRead
ecp_answer_count(const char *body, size_t len, long long *value, char *err, size_t errlen)
{
	Count		count = {-1, 0};
	EcpAnswerRead rc = scan_answer(body, len, read_count, &count, err, errlen);

	if (rc == ECP_ANSWER_READ && !count.seen)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "the answer has no \"count\"");
		rc = ECP_ANSWER_UNEXPECTED;
	}
	*value = rc == ECP_ANSWER_READ ? count.value : -1;
	return rc;
}

/* ---------------------------------------------------------------------------
 * The id of an NDJSON line.
 * ------------------------------------------------------------------------- */

typedef struct LineId
{
	int			seen;			/* how many members are named the field */
	Text		text;			/* a string id, into the caller's buffer */
	const char *bad;			/* what the first one is when it is no id */
	char	   *id;				/* the caller's buffer */
} LineId;

/* The id field's string value at s->p, into the caller's buffer. */
static int
read_string_id(Scan *s, LineId *line)
{
	if (scan_string(s, &line->text) != 0)
		return -1;
	if (line->text.has_nul)
		line->bad = "a string holding \\u0000";
	else if (line->text.over)
		line->bad = "a string longer than " STRINGIFY(ECP_LINE_ID_MAX) " bytes";
	else if (line->text.len == 0)
		line->bad = "an empty string";
	return 0;
}

/* The id field's number at s->p: an integer, in decimal as jansson's %lld. */
static int
read_number_id(Scan *s, LineId *line)
{
	const unsigned char *from = s->p;
	long long	value;
	NumberKind	kind;

	if (scan_number(s) != 0)
		return -1;
	kind = number_kind(from, s->p, &value);
	if (kind == NUMBER_REAL)
		line->bad = "a real number";
	else if (kind == NUMBER_TOO_BIG)
		line->bad = "an integer beyond 64 bits";
	else
		snprintf(line->id, ECP_LINE_ID_MAX + 1, "%lld", value);
	return 0;
}

static int
read_line_id(Scan *s, const Text *key, void *arg)
{
	LineId	   *line = arg;
	int			c = peek(s);

	/* key was only compared with the field: over when it differs */
	if (key->over || key->len != key->expect_len || ++line->seen > 1)
		return skip_value(s);
	if (c == '"')
		return read_string_id(s, line);
	if (c == '-' || is_digit(c))
		return read_number_id(s, line);
	line->bad = value_kind(c);
	return skip_value(s);
}

EcpLineId
ecp_line_id(const char *line, size_t len, const char *field, char id[ECP_LINE_ID_MAX + 1],
			char *err, size_t errlen)
{
	Scan		s;
	Text		key;
	LineId		found;

	memset(&key, 0, sizeof(key));
	key.expect = field;
	key.expect_len = strlen(field);
	memset(&found, 0, sizeof(found));
	found.id = id;
	found.text.data = id;
	found.text.cap = ECP_LINE_ID_MAX + 1;
	found.text.fixed = 1;
	id[0] = '\0';
	scan_begin(&s, line, len, "the line", err, errlen);
	if (scan_object(&s, read_line_id, &found, &key) != 0)
	{
		id[0] = '\0';
		return s.failure == SCAN_NOT_OBJECT ? ECP_LINE_NOT_OBJECT : ECP_LINE_NOT_JSON;
	}
	if (found.seen == 1 && found.bad == NULL)
		return ECP_LINE_ID;
	id[0] = '\0';
	if (found.seen > 1)
		return ECP_LINE_ID_TWICE;
	if (found.bad && err && errlen > 0)
		snprintf(err, errlen, "%s", found.bad);
	return found.bad ? ECP_LINE_BAD_ID : ECP_LINE_NO_ID;
}
