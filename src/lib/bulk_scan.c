/*
 * bulk_scan.c: the allocation-free JSON scanner of _bulk answers and of
 * the head of large error bodies (see bulk_scan.h).  A full jansson parse
 * of a 1000-item _bulk answer costs about as much as the 1 ms budget (one
 * hash table per object); this is ~10x cheaper, and reads any size in
 * bounded memory.  It validates what it reads (UTF-8, escapes, grammar)
 * and falls back on whatever it is not sure jansson would take alike.
 */
#include "bulk_scan.h"

#include <string.h>

#define SCAN_MAX_DEPTH 64		/* deeper values are left to jansson */

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
sc_string(EcpBulkScan *s, const unsigned char **start, size_t *len, int *escaped)
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
			return ECP_BULK_SCAN_OK;
		}
		if (c < 0x20)
			return ECP_BULK_SCAN_FALLBACK;
		if (c == '\\')
		{
			*escaped = 1;
			if (s->end - p < 2)
				return ECP_BULK_SCAN_FALLBACK;
			c = p[1];
			if (c == 'u')
			{
				unsigned int v = 0;

				if (s->end - p < 6)
					return ECP_BULK_SCAN_FALLBACK;
				for (int i = 2; i < 6; i++)
				{
					int			h = hex_value(p[i]);

					if (h < 0)
						return ECP_BULK_SCAN_FALLBACK;
					v = (v << 4) | (unsigned int) h;
				}
				if (v >= 0xD800 && v <= 0xDFFF)
					return ECP_BULK_SCAN_FALLBACK;	/* surrogate pairs: let jansson check */
				p += 6;
			}
			else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' ||
					 c == 'n' || c == 'r' || c == 't')
				p += 2;
			else
				return ECP_BULK_SCAN_FALLBACK;
			continue;
		}
		if (c >= 0x80)
		{
			int			n = utf8_sequence(p, s->end);

			if (n == 0)
				return ECP_BULK_SCAN_FALLBACK;
			p += n;
			continue;
		}
		p++;
	}
	return ECP_BULK_SCAN_FALLBACK;
}

static int
sc_is_digit(const EcpBulkScan *s, const unsigned char *p)
{
	return p < s->end && *p >= '0' && *p <= '9';
}

/* A JSON number; *is_int when it has no fraction or exponent. */
int
ecp_bulk_scan_number(EcpBulkScan *s, int *is_int, long *value)
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
		return ECP_BULK_SCAN_FALLBACK;
	if (*p == '0')
	{
		p++;
		digits = 1;
	}
	else
		while (sc_is_digit(s, p))
		{
			if (++digits > 15)
				return ECP_BULK_SCAN_FALLBACK;	/* overflow rules: jansson's business */
			v = v * 10 + (*p - '0');
			p++;
		}
	*is_int = 1;
	if (p < s->end && *p == '.')
	{
		*is_int = 0;
		p++;
		if (!sc_is_digit(s, p))
			return ECP_BULK_SCAN_FALLBACK;
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
			return ECP_BULK_SCAN_FALLBACK;
		while (sc_is_digit(s, p))
			p++;
	}
	if (p - s->p > 24)
		return ECP_BULK_SCAN_FALLBACK;
	*value = neg ? -v : v;
	s->p = p;
	return ECP_BULK_SCAN_OK;
}

static int
sc_literal(EcpBulkScan *s, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return ECP_BULK_SCAN_FALLBACK;
	s->p += n;
	return ECP_BULK_SCAN_OK;
}

/* After a member or element: ',' (returns 1 in *more) or the closing char. */
int
ecp_bulk_scan_next(EcpBulkScan *s, int close, int *more)
{
	ecp_bulk_scan_ws(s);
	if (ecp_bulk_scan_peek(s) == ',')
	{
		s->p++;
		ecp_bulk_scan_ws(s);
		*more = 1;
		return ECP_BULK_SCAN_OK;
	}
	if (ecp_bulk_scan_peek(s) == close)
	{
		s->p++;
		*more = 0;
		return ECP_BULK_SCAN_OK;
	}
	return ECP_BULK_SCAN_FALLBACK;
}

/* "key": at s->p, leaving s->p at the value. */
int
ecp_bulk_scan_key(EcpBulkScan *s, const unsigned char **key, size_t *klen, int *escaped)
{
	if (ecp_bulk_scan_peek(s) != '"' || sc_string(s, key, klen, escaped) != ECP_BULK_SCAN_OK)
		return ECP_BULK_SCAN_FALLBACK;
	ecp_bulk_scan_ws(s);
	if (ecp_bulk_scan_peek(s) != ':')
		return ECP_BULK_SCAN_FALLBACK;
	s->p++;
	ecp_bulk_scan_ws(s);
	return ECP_BULK_SCAN_OK;
}

int
ecp_bulk_scan_skip_value(EcpBulkScan *s, int depth)
{
	const unsigned char *str;
	size_t		slen;
	int			escaped;
	int			more;
	int			is_int;
	long		value;

	if (depth > SCAN_MAX_DEPTH)
		return ECP_BULK_SCAN_FALLBACK;
	switch (ecp_bulk_scan_peek(s))
	{
		case '{':
			s->p++;
			ecp_bulk_scan_ws(s);
			if (ecp_bulk_scan_peek(s) == '}')
			{
				s->p++;
				return ECP_BULK_SCAN_OK;
			}
			do
			{
				if (ecp_bulk_scan_key(s, &str, &slen, &escaped) != ECP_BULK_SCAN_OK ||
					ecp_bulk_scan_skip_value(s, depth + 1) != ECP_BULK_SCAN_OK ||
					ecp_bulk_scan_next(s, '}', &more) != ECP_BULK_SCAN_OK)
					return ECP_BULK_SCAN_FALLBACK;
			} while (more);
			return ECP_BULK_SCAN_OK;
		case '[':
			s->p++;
			ecp_bulk_scan_ws(s);
			if (ecp_bulk_scan_peek(s) == ']')
			{
				s->p++;
				return ECP_BULK_SCAN_OK;
			}
			do
			{
				if (ecp_bulk_scan_skip_value(s, depth + 1) != ECP_BULK_SCAN_OK ||
					ecp_bulk_scan_next(s, ']', &more) != ECP_BULK_SCAN_OK)
					return ECP_BULK_SCAN_FALLBACK;
			} while (more);
			return ECP_BULK_SCAN_OK;
		case '"':
			return sc_string(s, &str, &slen, &escaped);
		case 't':
			return sc_literal(s, "true");
		case 'f':
			return sc_literal(s, "false");
		case 'n':
			return sc_literal(s, "null");
		default:
			return ecp_bulk_scan_number(s, &is_int, &value);
	}
}

int
ecp_bulk_scan_key_is(const unsigned char *key, size_t klen, int escaped, const char *name)
{
	return !escaped && klen == strlen(name) && memcmp(key, name, klen) == 0;
}
