/*
 * json_text.h: what json_compare.c and verify_answers.c share, internal
 * to src/lib: a message in the caller's bounded buffer, a value quoted for
 * a message, a JSON string unescaped, and two JSON strings or numbers
 * compared as jsonb compares them (strings by their unescaped bytes,
 * numbers by exact decimal value: 1 == 1.0 == 10E-1, never through a
 * double).
 *
 * Every JSON text given here is well-formed (json_scan.c checked it):
 * nothing is checked again.  Plain C99, no PostgreSQL headers (the unit
 * tests build it alone): nothing here allocates, ereports, exits or
 * longjmps.
 */
#ifndef ECP_JSON_TEXT_H
#define ECP_JSON_TEXT_H

#include <stddef.h>

/*
 * A message built in the caller's buffer: what does not fit is left out,
 * cut on a UTF-8 boundary (full is then set and later additions dropped);
 * buf stays NUL-terminated.  A NULL buf or a size of 0 takes nothing.
 */
typedef struct EcpWhyText
{
	char	   *buf;
	size_t		size;
	size_t		len;
	int			full;
} EcpWhyText;

extern void ecp_why_init(EcpWhyText *t, char *buf, size_t size);
extern void ecp_why_add_n(EcpWhyText *t, const char *s, size_t n);
extern void ecp_why_add(EcpWhyText *t, const char *s);

/* why[0..whylen) set to the formatted message (511 bytes of it at most). */
extern void ecp_why_set(char *why, size_t whylen, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

/*
 * text[0..len) between double quotes for a message, in at most outlen
 * bytes with the NUL (outlen >= 8): '"', '\\' and control characters
 * escaped as in JSON, a byte that is not UTF-8 as \xNN; "..." before the
 * closing quote when it is cut or when more is set (the caller cut it
 * already).
 */
extern void ecp_json_quote_shown(const char *text, size_t len, int more, char *out,
								 size_t outlen);

/*
 * The JSON string quoted[0..len) (its quotes included, well-formed: as
 * json_scan.c's ecp_scan_string accepted it) unescaped into out: at most
 * outlen - 1 bytes and a NUL, cut on a UTF-8 boundary (*cut set when some
 * was left out).  The length written; it may hold NULs (\u0000).
 */
extern size_t ecp_json_string_decode(const char *quoted, size_t len, char *out, size_t outlen,
									 int *cut);

/*
 * Order (<0, 0, >0) of two well-formed JSON strings, quotes included, by
 * their unescaped bytes.  a_escaped, b_escaped: whether that side holds a
 * backslash (when neither does the bytes are compared as they stand).
 */
extern int	ecp_json_quoted_cmp(const unsigned char *a, size_t alen, int a_escaped,
								const unsigned char *b, size_t blen, int b_escaped);

/*
 * Whether two well-formed JSON numbers' texts have the same decimal value:
 * sign, significant digits and exponent, read exactly (1e999999999 costs
 * nothing); 0, -0 and 0e5 are all zero.
 */
extern int	ecp_json_numbers_equal(const unsigned char *a, size_t alen,
								   const unsigned char *b, size_t blen);

#endif							/* ECP_JSON_TEXT_H */
