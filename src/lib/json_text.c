/*
 * json_text.c: the text helpers of json_compare.c and verify_answers.c
 * (see json_text.h): a message in a bounded buffer, a value quoted for
 * one, JSON strings unescaped, and numbers compared by exact decimal
 * value.
 *
 * Every JSON text given here was checked well-formed before (json_scan.c),
 * so nothing is checked again: a string's escapes are complete, a high
 * surrogate has its low one, a number has its digits.
 * Plain C99, no file-scope state: the unit tests build it alone.
 */
#include "json_text.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/*
 * Two exponents whose difference is this far apart are never made equal
 * by the other digits, which shift an exponent by less than 2^33.
 */
#define EXPONENT_FAR ((int64_t) 1000000000000000)

/* ---------------------------------------------------------------------------
 * Text for messages: the why, values quoted.
 * ------------------------------------------------------------------------- */

void
ecp_why_init(EcpWhyText *t, char *buf, size_t size)
{
	t->buf = buf;
	t->size = size;
	t->len = 0;
	t->full = buf == NULL || size == 0;
	if (!t->full)
		buf[0] = '\0';
}

void
ecp_why_add_n(EcpWhyText *t, const char *s, size_t n)
{
	size_t		take = n;

	if (t->full)
		return;
	if (take > t->size - 1 - t->len)
	{
		take = t->size - 1 - t->len;
		/* s[take] is the first byte left out: no half characters */
		while (take > 0 && ((unsigned char) s[take] & 0xC0) == 0x80)
			take--;
		t->full = 1;
	}
	memcpy(t->buf + t->len, s, take);
	t->len += take;
	t->buf[t->len] = '\0';
}

void
ecp_why_add(EcpWhyText *t, const char *s)
{
	ecp_why_add_n(t, s, strlen(s));
}

void
ecp_why_set(char *why, size_t whylen, const char *fmt,...)
{
	char		line[512];
	va_list		ap;
	EcpWhyText	t;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	ecp_why_init(&t, why, whylen);
	ecp_why_add(&t, line);
}

/* Length of the well-formed UTF-8 sequence at p (lead byte >= 0x80), or 0. */
static size_t
utf8_length(const unsigned char *p, size_t avail)
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
		lo = lead == 0xe0 ? 0xa0 : 0x80;
		hi = lead == 0xed ? 0x9f : 0xbf;
	}
	else if (lead >= 0xf0 && lead <= 0xf4)
	{
		n = 4;
		lo = lead == 0xf0 ? 0x90 : 0x80;
		hi = lead == 0xf4 ? 0x8f : 0xbf;
	}
	else
		return 0;
	if (avail < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* The piece of a quoted message text that shows s[0..avail) (s[0] first). */
static size_t
quote_piece(const unsigned char *s, size_t avail, char piece[8], size_t *used)
{
	unsigned char c = s[0];
	size_t		n;

	*used = 1;
	if (c == '"' || c == '\\')
		return (size_t) snprintf(piece, 8, "\\%c", c);
	if (c == '\n')
		return (size_t) snprintf(piece, 8, "\\n");
	if (c == '\t')
		return (size_t) snprintf(piece, 8, "\\t");
	if (c == '\r')
		return (size_t) snprintf(piece, 8, "\\r");
	if (c < 0x20 || c == 0x7f)
		return (size_t) snprintf(piece, 8, "\\u%04x", c);
	if (c < 0x80)
	{
		piece[0] = (char) c;
		return 1;
	}
	n = utf8_length(s, avail);
	if (n == 0)
		return (size_t) snprintf(piece, 8, "\\x%02x", c);
	memcpy(piece, s, n);
	*used = n;
	return n;
}

void
ecp_json_quote_shown(const char *text, size_t len, int more, char *out, size_t outlen)
{
	const unsigned char *s = (const unsigned char *) text;
	size_t		pos = 0;
	size_t		i = 0;

	if (out == NULL || outlen < 8)
	{
		if (out && outlen > 0)
			out[0] = '\0';
		return;
	}
	out[pos++] = '"';
	while (i < len)
	{
		char		piece[8];
		size_t		used;
		size_t		n = quote_piece(s + i, len - i, piece, &used);

		/* room for the piece, then "...", the quote and the NUL */
		if (pos + n + 5 > outlen)
		{
			more = 1;
			break;
		}
		memcpy(out + pos, piece, n);
		pos += n;
		i += used;
	}
	if (more)
	{
		memcpy(out + pos, "...", 3);
		pos += 3;
	}
	out[pos++] = '"';
	out[pos] = '\0';
}

/* ---------------------------------------------------------------------------
 * Strings, unescaped on the fly.  The text is well-formed: checked before.
 * ------------------------------------------------------------------------- */

typedef struct Cursor
{
	const unsigned char *p;
	const unsigned char *end;	/* the closing quote */
	unsigned char buf[4];		/* the rest of an escape's UTF-8 */
	int			nbuf;
	int			ibuf;
} Cursor;

static void
cursor_init(Cursor *c, const unsigned char *quoted, size_t len)
{
	c->p = quoted + 1;
	c->end = quoted + len - 1;
	c->nbuf = c->ibuf = 0;
}

static unsigned
hex4(const unsigned char *p)
{
	unsigned	v = 0;

	for (int i = 0; i < 4; i++)
	{
		unsigned char h = p[i];

		v = v << 4 | (unsigned) (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
	}
	return v;
}

static int
utf8_encode(unsigned code, unsigned char *out)
{
	if (code < 0x80)
	{
		out[0] = (unsigned char) code;
		return 1;
	}
	if (code < 0x800)
	{
		out[0] = (unsigned char) (0xc0 | (code >> 6));
		out[1] = (unsigned char) (0x80 | (code & 0x3f));
		return 2;
	}
	if (code < 0x10000)
	{
		out[0] = (unsigned char) (0xe0 | (code >> 12));
		out[1] = (unsigned char) (0x80 | ((code >> 6) & 0x3f));
		out[2] = (unsigned char) (0x80 | (code & 0x3f));
		return 3;
	}
	out[0] = (unsigned char) (0xf0 | (code >> 18));
	out[1] = (unsigned char) (0x80 | ((code >> 12) & 0x3f));
	out[2] = (unsigned char) (0x80 | ((code >> 6) & 0x3f));
	out[3] = (unsigned char) (0x80 | (code & 0x3f));
	return 4;
}

/* The escape after the backslash at c->p, into c->buf. */
static void
cursor_escape(Cursor *c)
{
	unsigned char e = c->p[1];
	unsigned	code;

	c->p += 2;
	c->ibuf = 0;
	c->nbuf = 1;
	switch (e)
	{
		case 'b':
			c->buf[0] = '\b';
			return;
		case 'f':
			c->buf[0] = '\f';
			return;
		case 'n':
			c->buf[0] = '\n';
			return;
		case 'r':
			c->buf[0] = '\r';
			return;
		case 't':
			c->buf[0] = '\t';
			return;
		case 'u':
			break;
		default:				/* " \ / */
			c->buf[0] = e;
			return;
	}
	code = hex4(c->p);
	c->p += 4;
	if (code >= 0xd800 && code <= 0xdbff)
	{
		/* a high surrogate: the check made sure a low one follows */
		code = 0x10000 + ((code - 0xd800) << 10) + (hex4(c->p + 2) - 0xdc00);
		c->p += 6;
	}
	c->nbuf = utf8_encode(code, c->buf);
}

/* The next unescaped byte, or -1 at the end of the string. */
static int
cursor_next(Cursor *c)
{
	if (c->ibuf < c->nbuf)
		return c->buf[c->ibuf++];
	if (c->p >= c->end)
		return -1;
	if (*c->p != '\\')
		return *c->p++;
	cursor_escape(c);
	return c->buf[c->ibuf++];
}

/* Order of two quoted strings by their unescaped bytes. */
int
ecp_json_quoted_cmp(const unsigned char *a, size_t alen, int a_escaped,
					const unsigned char *b, size_t blen, int b_escaped)
{
	Cursor		ca;
	Cursor		cb;

	if (!a_escaped && !b_escaped)
	{
		size_t		n = alen < blen ? alen : blen;
		int			r = memcmp(a + 1, b + 1, n - 2);

		if (r != 0 || alen == blen)
			return r;
		return alen < blen ? -1 : 1;
	}
	cursor_init(&ca, a, alen);
	cursor_init(&cb, b, blen);
	for (;;)
	{
		int			x = cursor_next(&ca);
		int			y = cursor_next(&cb);

		if (x != y)
			return x < y ? -1 : 1;
		if (x < 0)
			return 0;
	}
}

size_t
ecp_json_string_decode(const char *quoted, size_t len, char *out, size_t outlen, int *cut)
{
	Cursor		c;
	size_t		n = 0;
	int			b;

	*cut = 0;
	if (out == NULL || outlen == 0)
	{
		*cut = len > 2;
		return 0;
	}
	cursor_init(&c, (const unsigned char *) quoted, len);
	while ((b = cursor_next(&c)) >= 0)
	{
		if (n + 1 >= outlen)
		{
			*cut = 1;
			/* b continues a character: drop the part of it written */
			if ((b & 0xC0) == 0x80)
			{
				while (n > 0 && ((unsigned char) out[n - 1] & 0xC0) == 0x80)
					n--;
				if (n > 0)
					n--;
			}
			break;
		}
		out[n++] = (char) b;
	}
	out[n] = '\0';
	return n;
}

/* ---------------------------------------------------------------------------
 * Numbers: sign, significant digits, and where the decimal point goes.
 * ------------------------------------------------------------------------- */

typedef struct Decimal
{
	int			zero;
	int			negative;
	const unsigned char *first; /* first significant digit */
	size_t		digits;			/* significant digits (first to last
								 * non-zero, the point not counted) */
	int64_t		shift;			/* the value is 0.<digits> x 10^(shift +
								 * exponent) */
	const unsigned char *exponent;	/* its digits, leading zeros skipped */
	size_t		exponent_len;
	int			exponent_negative;
} Decimal;

/* A well-formed number's text [p, end) read into d. */
static void
decimal_read(const unsigned char *p, const unsigned char *end, Decimal *d)
{
	const unsigned char *mantissa_end = p;
	const unsigned char *point;
	const unsigned char *first = NULL;
	const unsigned char *last = NULL;

	memset(d, 0, sizeof(*d));
	d->negative = *p == '-';
	p += d->negative;
	while (mantissa_end < end && *mantissa_end != 'e' && *mantissa_end != 'E')
		mantissa_end++;
	point = p;
	while (point < mantissa_end && *point != '.')
		point++;
	for (const unsigned char *q = p; q < mantissa_end; q++)
		if (*q >= '1' && *q <= '9')
		{
			if (first == NULL)
				first = q;
			last = q;
		}
	if (first == NULL)
	{
		d->zero = 1;
		return;
	}
	d->first = first;
	d->digits = (size_t) (last - first) + 1 - (first < point && point < last);
	d->shift = first < point ? (int64_t) (point - first) : -(int64_t) (first - point - 1);
	if (mantissa_end < end)
	{
		const unsigned char *q = mantissa_end + 1;

		d->exponent_negative = *q == '-';
		q += *q == '-' || *q == '+';
		while (q < end && *q == '0')
			q++;
		d->exponent = q;
		d->exponent_len = (size_t) (end - q);
	}
}

/* The i-th of n digits of the exponent, right-aligned in width digits. */
static int
exponent_digit(const Decimal *d, size_t i, size_t width)
{
	size_t		pad = width - d->exponent_len;

	return i < pad ? 0 : d->exponent[i - pad] - '0';
}

/*
 * a's exponent minus b's, exactly while within EXPONENT_FAR, else +-
 * EXPONENT_FAR: Horner's rule from the highest digit, where a partial
 * result past the bound only grows.
 */
static int64_t
exponent_difference(const Decimal *a, const Decimal *b)
{
	size_t		width = a->exponent_len > b->exponent_len ? a->exponent_len : b->exponent_len;
	int			same_sign = a->exponent_negative == b->exponent_negative;
	int64_t		r = 0;

	for (size_t i = 0; i < width; i++)
	{
		int			da = exponent_digit(a, i, width);
		int			db = exponent_digit(b, i, width);

		r = r * 10 + (same_sign ? da - db : da + db);
		if (r > EXPONENT_FAR || r < -EXPONENT_FAR)
		{
			r = r > 0 ? EXPONENT_FAR : -EXPONENT_FAR;
			break;
		}
	}
	/* |a| - |b| or |a| + |b|, signed as a is */
	return a->exponent_negative ? -r : r;
}

static int
digits_equal(const Decimal *a, const Decimal *b)
{
	const unsigned char *p = a->first;
	const unsigned char *q = b->first;

	for (size_t i = 0; i < a->digits; i++, p++, q++)
	{
		if (*p == '.')
			p++;
		if (*q == '.')
			q++;
		if (*p != *q)
			return 0;
	}
	return 1;
}

int
ecp_json_numbers_equal(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	Decimal		x;
	Decimal		y;

	if (alen == blen && memcmp(a, b, alen) == 0)
		return 1;
	decimal_read(a, a + alen, &x);
	decimal_read(b, b + blen, &y);
	if (x.zero || y.zero)
		return x.zero && y.zero;
	if (x.negative != y.negative || x.digits != y.digits || !digits_equal(&x, &y))
		return 0;
	/* shift_x + exponent_x == shift_y + exponent_y; shifts are under 2^32 */
	return exponent_difference(&x, &y) == y.shift - x.shift;
}
