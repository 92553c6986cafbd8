/*
 * file_reader.h: a streaming line reader for a task's file source.
 *
 * A file source is an http:// or https:// URL or an absolute server path,
 * holding one item a line (NDJSON documents or one id a line).  A location
 * whose path ends in ".gz" (for a URL: the path before any "?query") is
 * gunzipped while it streams.  Memory stays constant whatever the file's
 * size: ECP_FILE_BUFFER_BYTES of transport buffer, a line buffer of at
 * most max(ECP_FILE_BUFFER_BYTES, max_line_bytes + 2) bytes, and zlib's and
 * libcurl's own fixed state; nothing is read whole (an HTTP transfer is
 * paused while the buffer is full).
 *
 * Plain C99 + libcurl + zlib, no PostgreSQL headers: it never ereports,
 * longjmps, exits or aborts.  One reader per open file; not thread-safe.
 *
 * Positions.  Offsets are byte positions in the content (the decompressed
 * content for ".gz"), counted from 0; ecp_file_offset() is always the
 * offset just after the last line returned (its '\n' included), which is
 * where the next line starts.  Lines are numbered from 1;
 * ecp_file_line_no() is the number of the last line returned (0 before
 * the first).  A caller checkpoints the pair (ecp_file_offset(),
 * ecp_file_line_no()) after the lines it has dealt with, and resumes with
 * ecp_file_open(cfg, offset, line_no): the next line returned is then
 * line line_no + 1 (line_no is the 0-based number of the first line at
 * offset).  A fresh read is ecp_file_open(cfg, 0, 0).
 *
 * Errors.  Every error text names the location: the path, or for a URL
 * scheme://host:port/path only (never the user info nor the query string,
 * which may hold presigned credentials), with the HTTP status or the errno
 * text.
 */
#ifndef ECP_FILE_READER_H
#define ECP_FILE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "http_transport.h"

/* room for an error text; smaller buffers get it truncated */
#define ECP_FILE_ERROR_SIZE 512

/* the transport (raw bytes) buffer, and the line buffer's starting size */
#define ECP_FILE_BUFFER_BYTES ((size_t) 256 * 1024)

/* bytes of a too-long line handed back with ECP_FILE_TOO_LONG */
#define ECP_FILE_PREVIEW_BYTES 200

typedef struct EcpFileReader EcpFileReader;

typedef struct EcpFileReaderConfig
{
	const char *location;		/* http(s):// URL or absolute path; copied */
	size_t		max_line_bytes; /* longer lines are reported (TOO_LONG),
								 * never buffered whole; 0: 10 MiB; at most
								 * 1 GiB (more is taken as 1 GiB) */
	long		idle_timeout_ms;	/* no byte for this long while waiting for
									 * one: ECP_FILE_TRANSIENT; <= 0: 60000 */

	/*
	 * What every outbound request shares (src/http_transport.h).  Its
	 * should_abort is also asked once a buffer's worth of a local file
	 * (ECP_FILE_ABORTED); an address allow_address refuses fails the open
	 * with ECP_FILE_FATAL and its reason; neither the address filter nor the
	 * other options apply to local paths.
	 */
	EcpTransportConfig transport;
} EcpFileReaderConfig;

typedef enum EcpFileStatus
{
	ECP_FILE_OK = 0,			/* ecp_file_open only: the reader is open */
	ECP_FILE_LINE,				/* *line and *len hold one line, without its '\n'
								 * and without one trailing '\r' */
	ECP_FILE_TOO_LONG,			/* a line over max_line_bytes, skipped to its
								 * end; its number and offsets are counted as
								 * for any line; *line and *len hold its first
								 * bytes (at most ECP_FILE_PREVIEW_BYTES) */
	ECP_FILE_EOF,				/* no more lines (again on every later call) */
	ECP_FILE_TRANSIENT,			/* connection refused, reset or cut mid-body,
								 * idle timeout, HTTP 408/429/5xx, a local read
								 * error: the caller may reopen at its
								 * checkpoint */
	ECP_FILE_FATAL,				/* missing file, permission denied, HTTP
								 * 401/403/404/410 or another 4xx or 3xx, bad
								 * location, address refused, TLS setup, bad or
								 * truncated gzip data, a file shorter than the
								 * resume offset: retrying cannot help */
	ECP_FILE_ABORTED			/* should_abort said so */
} EcpFileStatus;

/* How ecp_file_open got to its offset. */
typedef enum EcpFileResumeKind
{
	ECP_FILE_START = 0,			/* offset 0: read from the start */
	ECP_FILE_RANGED,			/* HTTP 206 to "Range: bytes=<offset>-", or
								 * lseek on a local file */
	ECP_FILE_SKIPPED			/* bytes were read and dropped up to the
								 * offset: the server ignored Range (200), or
								 * a ".gz" decompressed from its start */
} EcpFileResumeKind;

/*
 * Open cfg->location at offset, line_no being the number of lines before
 * offset (see "Positions" above).  ECP_FILE_OK: *out is the reader.  Any
 * other status (TRANSIENT, FATAL, ABORTED): *out is NULL, error says why,
 * nothing is left allocated.  For HTTP the answer's status is known when
 * this returns (a 404 fails here, not at the first line).  A plain HTTP
 * file at offset > 0 is asked for with "Range: bytes=<offset>-"; a 416
 * answer at an offset equal to the file's size (as its Content-Range
 * says, or when it names no size) opens a reader at its end (ECP_FILE_EOF).
 * An offset beyond the end of the content is ECP_FILE_FATAL (the file
 * changed under the checkpoint).  cfg's strings are copied; cfg itself
 * need not outlive the call (the callbacks and their args must).
 */
extern EcpFileStatus ecp_file_open(const EcpFileReaderConfig *cfg, uint64_t offset,
								   uint64_t line_no, EcpFileReader **out,
								   char *error, size_t errlen);

/*
 * The next line: ECP_FILE_LINE or ECP_FILE_TOO_LONG with *line and *len (valid
 * until the next call on r, not NUL-terminated), or EOF, or an error
 * status with error filled in (*line NULL, *len 0).  A last line without
 * '\n' is a line; an empty line is an empty line (len 0).  A transfer cut
 * mid-line never returns the partial line: the lines before it come, then
 * ECP_FILE_TRANSIENT, and a reopen at ecp_file_offset() reads it whole.
 * After an error status the reader can only be closed.
 */
extern EcpFileStatus ecp_file_next(EcpFileReader *r, const char **line, size_t *len,
								   char *error, size_t errlen);

/* The byte offset just after the last line returned (open's offset before). */
extern uint64_t ecp_file_offset(const EcpFileReader *r);

/* The number of the last line returned (open's line_no before). */
extern uint64_t ecp_file_line_no(const EcpFileReader *r);

/* How the open got to its offset. */
extern EcpFileResumeKind ecp_file_resume_kind(const EcpFileReader *r);

/*
 * Bytes of data buffers the reader holds now (transport buffer + line
 * buffer): at most ECP_FILE_BUFFER_BYTES + max(ECP_FILE_BUFFER_BYTES,
 * max_line_bytes + 2), whatever the file's size (the 2: a '\r' and the
 * '\n' after a line of max_line_bytes).  For tests.
 */
extern size_t ecp_file_buffer_capacity(const EcpFileReader *r);

/* Closes the connection or file and frees r; NULL is a no-op. */
extern void ecp_file_close(EcpFileReader *r);

#endif							/* ECP_FILE_READER_H */
