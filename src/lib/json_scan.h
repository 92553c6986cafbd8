/*
 * json_scan.h: a streaming JSON scanner that builds no tree.  It checks
 * the whole input (RFC 8259: grammar, escapes, surrogates, UTF-8;
 * containers nested at most 512 deep) but keeps only what its caller
 * reads: the keys of a top-level object, handed one by one to a callback
 * at its member's value, which the callback reads or skips.  Memory is a
 * few hundred bytes plus the longest key kept, whatever the input holds;
 * time is linear in it.
 *
 * Used by es_answers.c: Elasticsearch's answers other than _bulk's (the
 * keys of an object, _count's count) and the id of an NDJSON line.
 *
 * Plain C99, no PostgreSQL headers (the unit tests build it alone):
 * nothing here ereports, exits or longjmps; a function that fails returns
 * -1 with the scan's err set and its failure saying why.
 */
#ifndef ECP_JSON_SCAN_H
#define ECP_JSON_SCAN_H

#include <stddef.h>

#if defined(__GNUC__)
#define ECP_SCAN_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define ECP_SCAN_PRINTF_LIKE(f, a)
#endif

/* Why a scan stopped. */
typedef enum EcpScanFailure
{
	ECP_SCAN_GOING = 0,			/* not stopped */
	ECP_SCAN_NOT_JSON,			/* not well-formed JSON */
	ECP_SCAN_NOT_OBJECT,		/* JSON, but not an object */
	ECP_SCAN_UNEXPECTED			/* an object, but not what the caller reads */
} EcpScanFailure;

typedef struct EcpScan
{
	const unsigned char *start;
	const unsigned char *p;
	const unsigned char *end;
	const char *noun;			/* what is scanned, for messages: "the answer" */
	char	   *err;
	size_t		errlen;
	EcpScanFailure failure;		/* why the scan stopped (when it returned -1) */
} EcpScan;

/*
 * A decoded string, in one of three ways: into a malloc'd buffer that
 * grows (data NULL or malloc'd, fixed 0); into the caller's buffer of cap
 * bytes (fixed 1: what does not fit sets over and is dropped); or only
 * compared with the expect_len bytes of expect (nothing stored; over as
 * soon as a byte differs or the string is longer).  data is always
 * NUL-terminated; has_nul when the string held \u0000.
 */
typedef struct EcpScanText
{
	char	   *data;
	size_t		len;
	size_t		cap;
	int			fixed;
	const char *expect;
	size_t		expect_len;
	int			over;
	int			has_nul;
} EcpScanText;

/* A well-formed number as jansson reads it. */
typedef enum EcpScanNumber
{
	ECP_SCAN_INTEGER,			/* no fraction, no exponent, within 64 bits */
	ECP_SCAN_REAL,				/* a fraction or an exponent */
	ECP_SCAN_TOO_BIG			/* an integer beyond 64 bits */
} EcpScanNumber;

/* Called with each member's key, at its value, which it must consume. */
typedef int (*EcpScanMemberFn) (EcpScan *s, const EcpScanText *key, void *arg);

/* Start scanning input[0..len); noun names it in messages ("the line"). */
extern void ecp_scan_begin(EcpScan *s, const char *input, size_t len, const char *noun,
						   char *err, size_t errlen);

/* The whole input: one object, each member handed to member, its key in key. */
extern int	ecp_scan_object(EcpScan *s, EcpScanMemberFn member, void *arg, EcpScanText *key);

/* JSON, but not what the caller reads: -1, with the message in err. */
extern int	ecp_scan_unexpected(EcpScan *s, const char *fmt,...) ECP_SCAN_PRINTF_LIKE(2, 3);

/* Check and skip one value of any kind. */
extern int	ecp_scan_skip_value(EcpScan *s);

/*
 * The string at s->p (its opening quote), into out (NULL: checked and
 * skipped).
 */
extern int	ecp_scan_string(EcpScan *s, EcpScanText *out);

/* The number at s->p: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
extern int	ecp_scan_number(EcpScan *s);

/* The kind of the number [from, to) (as ecp_scan_number took it), its value if an integer. */
extern EcpScanNumber ecp_scan_number_kind(const unsigned char *from, const unsigned char *to,
										  long long *value);

/* The kind of the value that begins with c: "an array", "null", ... */
extern const char *ecp_scan_value_kind(int c);

/* The byte at s->p, or -1 at the end of the input. */
static inline int
ecp_scan_peek(const EcpScan *s)
{
	return s->p < s->end ? *s->p : -1;
}

static inline int
ecp_scan_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

#endif							/* ECP_JSON_SCAN_H */
