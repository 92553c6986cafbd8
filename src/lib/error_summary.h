/*
 * error_summary.h: Elasticsearch's errors as text, shared by the two files
 * that read them with jansson: error_summary.c (ecp_error_summary, the
 * one-line summary of a whole-request error body; it is declared in
 * bulk_response.h, where its PostgreSQL callers find it) and
 * bulk_response.c (the reason of a failed _bulk item).  Both build their
 * text in the caller's buffer with EcpTextBuf, never cutting a UTF-8
 * character.
 *
 * Plain C99 with jansson: not for files that include PostgreSQL headers
 * (jansson's json_object() clashes with PostgreSQL's fmgrprotos.h).
 */
#ifndef ECP_ERROR_SUMMARY_H
#define ECP_ERROR_SUMMARY_H

#include <stddef.h>

#include <jansson.h>

/*
 * Length of the longest prefix of s[0..len) that fits in max bytes without
 * cutting a UTF-8 character.
 */
extern size_t ecp_utf8_fit(const char *s, size_t len, size_t max);

/*
 * A bounded string builder over a caller's buffer: appends are cut on a
 * UTF-8 boundary, and after the first cut nothing more is appended.
 */
typedef struct EcpTextBuf
{
	char	   *data;
	size_t		size;			/* bytes available, including the NUL */
	size_t		len;
	int			full;
} EcpTextBuf;

/* Start an empty text in data[0..size) (size 0: a full one). */
extern void ecp_text_init(EcpTextBuf *tb, char *data, size_t size);
extern void ecp_text_append_n(EcpTextBuf *tb, const char *s, size_t n);
extern void ecp_text_append(EcpTextBuf *tb, const char *s);

/* "type: reason" of an ErrorCause object into tb (either part may be missing). */
extern void ecp_error_cause_append(EcpTextBuf *tb, json_t *cause, int with_type);

#endif							/* ECP_ERROR_SUMMARY_H */
