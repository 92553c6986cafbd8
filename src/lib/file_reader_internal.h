/*
 * file_reader_internal.h: the state of a file reader (struct
 * EcpFileReader), shared by the two files that implement file_reader.h:
 * file_reader.c (local files, gzip, lines, open/close) and file_http.c
 * (the HTTP transfer that fills the raw buffer, and URL handling).  Not
 * for other files: they use file_reader.h.
 *
 * Plain C99 + libcurl + zlib, no PostgreSQL headers.
 */
#ifndef ECP_FILE_READER_INTERNAL_H
#define ECP_FILE_READER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <zlib.h>

#include "file_reader.h"

typedef struct HttpSource
{
	EcpTransport *transport;
	CURL	   *easy;			/* the transport's */
	int			headers_done;	/* the final answer's headers all came */
	int			body_wanted;	/* a 2xx answer: keep its body */
	int			asked_range;	/* sent "Range: bytes=<offset>-" */
	long		status;
	char		content_range[128];
} HttpSource;

struct EcpFileReader
{
	char	   *location;		/* as given: may hold credentials, never shown */
	char	   *shown;			/* the location as error texts name it */
	int			is_http;
	int			gz;
	size_t		max_line;
	long		idle_timeout_ms;
	int			(*should_abort) (void *arg);
	void	   *abort_arg;
	EcpFileResumeKind resume;
	uint64_t	skip;			/* content bytes to drop to reach the offset */

	/* raw layer */
	int			fd;
	HttpSource	http;
	char	   *raw;
	size_t		raw_cap;
	size_t		raw_pos;		/* next unread byte */
	size_t		raw_len;		/* bytes held */
	int			raw_eof;		/* the source ended cleanly */

	/* content layer (gzip) */
	z_stream	zs;
	int			zs_ready;		/* inflateInit2 succeeded */
	int			member_open;	/* inside a gzip member */

	/* line layer */
	char	   *buf;
	size_t		cap;
	size_t		start;			/* first byte of the next line */
	size_t		end;			/* end of the bytes held */
	size_t		scan;			/* [start, scan) holds no '\n' */
	int			content_eof;
	int			discarding;		/* inside a too-long line */
	uint64_t	discarded;		/* its bytes so far */
	char		preview[ECP_FILE_PREVIEW_BYTES];
	size_t		preview_len;
	uint64_t	offset;
	uint64_t	line_no;
	EcpFileStatus failed;		/* the error already reported, or OK */
};

/* Fill error (when given) from fmt and return st. */
extern EcpFileStatus ecp_file_fail(char *error, size_t errlen, EcpFileStatus st,
								   const char *fmt,...)
			__attribute__((format(printf, 4, 5)));

/* A malloc'd copy of s[0..n), NUL-terminated; NULL without memory. */
extern char *ecp_file_dup_range(const char *s, size_t n);

/* Does path[0..n) end in ".gz" (any case)? */
extern int	ecp_file_ends_with_gz(const char *path, size_t n);

/* file_http.c: URLs. */

/*
 * What an error may say about a location curl cannot parse: the text
 * before any query or fragment, without user info (malloc'd; NULL without
 * memory).
 */
extern char *ecp_file_url_shown_prefix(const char *location);

/*
 * Read r->location as curl does: set r->shown (scheme://host:port/path)
 * and r->gz.  -1 when curl cannot parse it (or the host is longer than
 * the address filter takes).
 */
extern int	ecp_file_url_parse(EcpFileReader *r);

/* file_http.c: the HTTP raw layer. */

/*
 * Start the transfer of r->location (from offset, with Range when the
 * content is not gzip) and wait for its answer's headers: ECP_FILE_OK when
 * its status lets the read go on (r->resume and r->skip say how it got to
 * offset).
 */
extern EcpFileStatus ecp_file_http_open(EcpFileReader *r, uint64_t offset,
										const EcpTransportConfig *tc, char *error, size_t errlen);

/* Fill the empty raw buffer from the transfer (r->raw_eof at its end). */
extern EcpFileStatus ecp_file_http_fill(EcpFileReader *r, char *error, size_t errlen);

#endif							/* ECP_FILE_READER_INTERNAL_H */
