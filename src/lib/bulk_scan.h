/*
 * bulk_scan.h: the validating, allocation-free JSON scanner of _bulk
 * answers (bulk_response.c's fast path) and of the head of a large error
 * body (error_summary.c).  It reads in place: a string comes back as its
 * raw bytes, with a flag when it holds an escape.  Anything unusual
 * (escaped keys, numbers jansson might reject, surrogate escapes, nesting
 * past 64 levels) is ECP_BULK_SCAN_FALLBACK: the caller then lets jansson
 * decide, so both paths accept exactly the same inputs.
 *
 * Plain C99, no PostgreSQL headers (the unit tests build it alone).
 */
#ifndef ECP_BULK_SCAN_H
#define ECP_BULK_SCAN_H

#include <stddef.h>

#define ECP_BULK_SCAN_OK 0
#define ECP_BULK_SCAN_FALLBACK 1

typedef struct EcpBulkScan
{
	const unsigned char *p;		/* the next byte to read */
	const unsigned char *end;
} EcpBulkScan;

/* "key": at s->p, leaving s->p at the value. */
extern int	ecp_bulk_scan_key(EcpBulkScan *s, const unsigned char **key, size_t *klen,
							  int *escaped);

/* Is the raw key (as ecp_bulk_scan_key gave it) name? */
extern int	ecp_bulk_scan_key_is(const unsigned char *key, size_t klen, int escaped,
								 const char *name);

/* Check and skip one value, depth levels in (deeper than 64: fallback). */
extern int	ecp_bulk_scan_skip_value(EcpBulkScan *s, int depth);

/* A JSON number; *is_int when it has no fraction or exponent. */
extern int	ecp_bulk_scan_number(EcpBulkScan *s, int *is_int, long *value);

/* After a member or element: ',' (returns 1 in *more) or the closing char. */
extern int	ecp_bulk_scan_next(EcpBulkScan *s, int close, int *more);

static inline void
ecp_bulk_scan_ws(EcpBulkScan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
		s->p++;
}

/* The byte at s->p, or -1 at the end. */
static inline int
ecp_bulk_scan_peek(EcpBulkScan *s)
{
	return s->p < s->end ? *s->p : -1;
}

#endif							/* ECP_BULK_SCAN_H */
