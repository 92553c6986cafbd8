/*
 * file_reader.c: the streaming line reader of a file source (see
 * file_reader.h).
 *
 * Three layers, each pulling from the one below:
 *   raw      bytes as stored: read() on a local file, or an HTTP transfer
 *            (file_http.c, on http_transport.c in its streaming mode) that
 *            writes into a fixed buffer and is paused (CURL_WRITEFUNC_PAUSE)
 *            while it is full;
 *   content  the raw bytes, or for ".gz" what zlib inflates from them
 *            (concatenated gzip members included);
 *   lines    the content split on '\n' in a buffer that grows to at most
 *            max_line_bytes + 2; a longer line is dropped as it streams by.
 * So memory stays bounded whatever the file's size.
 *
 * This file holds the local files, the content and line layers and
 * open/close; file_http.c the HTTP raw layer and the URL handling;
 * file_util.c what both use.  The reader's state (file_reader_internal.h)
 * is theirs alone.  Nothing here
 * calls exit/abort/longjmp, and every error path frees what it allocated
 * (ecp_file_close takes any partly built reader).
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "file_reader_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#define DEFAULT_MAX_LINE_BYTES ((size_t) 10 << 20)
#define MAX_MAX_LINE_BYTES ((size_t) 1 << 30)	/* keeps max_line + 2 from wrapping */
#define DEFAULT_IDLE_TIMEOUT_MS 60000L

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

static int
aborted(EcpFileReader *r)
{
	return r->should_abort && r->should_abort(r->abort_arg);
}

static int
is_url(const char *location)
{
	return strncasecmp(location, "http://", 7) == 0 || strncasecmp(location, "https://", 8) == 0;
}

/* errno of a local open or read: worth a retry, or not. */
static EcpFileStatus
errno_status(int err)
{
	switch (err)
	{
		case EINTR:
		case EAGAIN:
		case EIO:
		case EMFILE:
		case ENFILE:
		case ENOMEM:
		case ETIMEDOUT:
#ifdef ESTALE
		case ESTALE:
#endif
			return ECP_FILE_TRANSIENT;
		default:
			return ECP_FILE_FATAL;
	}
}

/* ---------------------------------------------------------- local files */

static EcpFileStatus
local_open(EcpFileReader *r, uint64_t offset, char *error, size_t errlen)
{
	struct stat st;

	r->fd = open(r->location, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0 || fstat(r->fd, &st) != 0)
		return ecp_file_fail(error, errlen, errno_status(errno), "could not open \"%s\": %s",
							 r->shown, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return ecp_file_fail(error, errlen, ECP_FILE_FATAL, "could not open \"%s\": it is a directory",
							 r->shown);
	if (offset == 0)
		return ECP_FILE_OK;
	if (r->gz)
	{
		/* a gzip stream cannot be entered in the middle */
		r->skip = offset;
		r->resume = ECP_FILE_SKIPPED;
		return ECP_FILE_OK;
	}
	if (S_ISREG(st.st_mode) && (uint64_t) st.st_size < offset)
		return ecp_file_fail(error, errlen, ECP_FILE_FATAL,
							 "\"%s\" is %llu bytes, shorter than the resume offset %llu (the file changed)",
							 r->shown, (unsigned long long) st.st_size, (unsigned long long) offset);
	if (lseek(r->fd, (off_t) offset, SEEK_SET) < 0)
		return ecp_file_fail(error, errlen, errno_status(errno),
							 "could not seek in \"%s\" to byte %llu: %s",
							 r->shown, (unsigned long long) offset, strerror(errno));
	r->resume = ECP_FILE_RANGED;
	return ECP_FILE_OK;
}

/* Read the next buffer of a local file (the raw buffer is empty). */
static EcpFileStatus
local_fill(EcpFileReader *r, char *error, size_t errlen)
{
	ssize_t		n;

	if (aborted(r))
		return ecp_file_fail(error, errlen, ECP_FILE_ABORTED, "reading \"%s\" abandoned by the caller",
							 r->shown);
	do
		n = read(r->fd, r->raw, r->raw_cap);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return ecp_file_fail(error, errlen, errno_status(errno), "could not read \"%s\": %s",
							 r->shown, strerror(errno));
	if (n == 0)
		r->raw_eof = 1;
	r->raw_len = (size_t) n;
	return ECP_FILE_OK;
}

/* --------------------------------------------------------- content layer */

/* Make sure the raw buffer holds unread bytes, or that the source ended. */
static EcpFileStatus
raw_fill(EcpFileReader *r, char *error, size_t errlen)
{
	if (r->raw_pos < r->raw_len || r->raw_eof)
		return ECP_FILE_OK;
	r->raw_pos = r->raw_len = 0;
	return r->is_http ? ecp_file_http_fill(r, error, errlen) : local_fill(r, error, errlen);
}

static EcpFileStatus
plain_read(EcpFileReader *r, char *dst, size_t cap, size_t *got, char *error, size_t errlen)
{
	EcpFileStatus st = raw_fill(r, error, errlen);
	size_t		n = r->raw_len - r->raw_pos;

	if (st != ECP_FILE_OK)
		return st;
	if (n > cap)
		n = cap;
	memcpy(dst, r->raw + r->raw_pos, n);
	r->raw_pos += n;
	*got = n;
	return ECP_FILE_OK;
}

/*
 * Inflate into dst until some output came or the content ended.  After a
 * member's end the stream is reset for the next one (gzip allows
 * concatenated members); the input ending inside a member is a truncated
 * file.
 */
static EcpFileStatus
gz_read(EcpFileReader *r, char *dst, size_t cap, size_t *got, char *error, size_t errlen)
{
	while (*got == 0)
	{
		EcpFileStatus st = raw_fill(r, error, errlen);
		size_t		avail = r->raw_len - r->raw_pos;
		int			zr;

		if (st != ECP_FILE_OK)
			return st;
		if (avail == 0 && !r->member_open)
			return ECP_FILE_OK; /* the end of the content */
		r->zs.next_in = (Bytef *) r->raw + r->raw_pos;
		r->zs.avail_in = (uInt) avail;
		r->zs.next_out = (Bytef *) dst;
		r->zs.avail_out = (uInt) cap;
		zr = inflate(&r->zs, Z_NO_FLUSH);
		r->raw_pos += avail - r->zs.avail_in;
		*got = cap - r->zs.avail_out;
		if (zr == Z_STREAM_END)
		{
			r->member_open = 0;
			if (inflateReset(&r->zs) != Z_OK)
				return ecp_file_fail(error, errlen, ECP_FILE_FATAL, "%s: inflateReset failed", r->shown);
		}
		else if (zr == Z_OK)
			r->member_open = 1;
		else if (zr == Z_BUF_ERROR && avail == 0)
			return ecp_file_fail(error, errlen, ECP_FILE_FATAL,
								 "%s: truncated gzip data (the file ends inside a gzip member)", r->shown);
		else
			return ecp_file_fail(error, errlen, ECP_FILE_FATAL, "%s: bad gzip data (%s)", r->shown,
								 r->zs.msg ? r->zs.msg : "inflate failed");
	}
	return ECP_FILE_OK;
}

/* Up to cap bytes of content into dst; *got == 0 at its end. */
static EcpFileStatus
content_read(EcpFileReader *r, char *dst, size_t cap, size_t *got, char *error, size_t errlen)
{
	*got = 0;
	if (r->gz)
		return gz_read(r, dst, cap, got, error, errlen);
	return plain_read(r, dst, cap, got, error, errlen);
}

/* Read and drop r->skip bytes of content (resume without a seek). */
static EcpFileStatus
skip_to_offset(EcpFileReader *r, uint64_t offset, char *error, size_t errlen)
{
	while (r->skip > 0)
	{
		size_t		want = r->skip < r->cap ? (size_t) r->skip : r->cap;
		size_t		got;
		EcpFileStatus st = content_read(r, r->buf, want, &got, error, errlen);

		if (st != ECP_FILE_OK)
			return st;
		if (got == 0)
			return ecp_file_fail(error, errlen, ECP_FILE_FATAL,
								 "%s ends at byte %llu, before the resume offset %llu (the file changed)",
								 r->shown, (unsigned long long) (offset - r->skip),
								 (unsigned long long) offset);
		r->skip -= got;
	}
	return ECP_FILE_OK;
}

/* ------------------------------------------------------------ line layer */

/* Count a line of content (consumed bytes with its '\n') and hand it out. */
static EcpFileStatus
emit(EcpFileReader *r, const char *text, size_t n, uint64_t consumed,
	 const char **line, size_t *len)
{
	r->offset += consumed;
	r->line_no++;
	if (n > 0 && text[n - 1] == '\r')
		n--;
	*line = text;
	if (n > r->max_line)
	{
		*len = n < ECP_FILE_PREVIEW_BYTES ? n : ECP_FILE_PREVIEW_BYTES;
		return ECP_FILE_TOO_LONG;
	}
	*len = n;
	return ECP_FILE_LINE;
}

/* A complete line in the buffer: 1 and *st, else 0. */
static int
take_line(EcpFileReader *r, const char **line, size_t *len, EcpFileStatus *st)
{
	char	   *nl = memchr(r->buf + r->scan, '\n', r->end - r->scan);
	size_t		n;

	if (nl == NULL)
	{
		r->scan = r->end;
		return 0;
	}
	n = (size_t) (nl - (r->buf + r->start));
	*st = emit(r, r->buf + r->start, n, n + 1, line, len);
	r->start += n + 1;
	r->scan = r->start;
	return 1;
}

/* The line in the buffer is too long to keep: note its start, drop it. */
static void
start_discard(EcpFileReader *r)
{
	size_t		n = r->end - r->start;

	r->preview_len = n < ECP_FILE_PREVIEW_BYTES ? n : ECP_FILE_PREVIEW_BYTES;
	memcpy(r->preview, r->buf + r->start, r->preview_len);
	r->discarded = n;
	r->discarding = 1;
	r->start = r->end = r->scan = 0;
}

/* The end of a too-long line (its '\n' or the content's end) came. */
static EcpFileStatus
end_discard(EcpFileReader *r, uint64_t consumed, const char **line, size_t *len)
{
	r->discarding = 0;
	r->offset += r->discarded + consumed;
	r->line_no++;
	*line = r->preview;
	*len = r->preview_len;
	return ECP_FILE_TOO_LONG;
}

/* Inside a too-long line: 1 and *st when its end is in the buffer, else 0. */
static int
discard_step(EcpFileReader *r, const char **line, size_t *len, EcpFileStatus *st)
{
	char	   *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
	size_t		n;

	if (nl == NULL)
	{
		r->discarded += r->end - r->start;
		r->start = r->end = r->scan = 0;
		return 0;
	}
	n = (size_t) (nl - (r->buf + r->start));
	r->start += n + 1;
	r->scan = r->start;
	*st = end_discard(r, n + 1, line, len);
	return 1;
}

/* Room for more content at the buffer's end (doubling up to max_line + 2). */
static int
make_room(EcpFileReader *r)
{
	size_t		want;
	char	   *grown;

	if (r->start > 0)
	{
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->end -= r->start;
		r->scan -= r->start;
		r->start = 0;
	}
	if (r->end < r->cap)
		return 0;
	want = r->cap * 2 < r->max_line + 2 ? r->cap * 2 : r->max_line + 2;
	grown = realloc(r->buf, want);
	if (grown == NULL)
		return -1;
	r->buf = grown;
	r->cap = want;
	return 0;
}

static EcpFileStatus
refill(EcpFileReader *r, char *error, size_t errlen)
{
	size_t		got;
	EcpFileStatus st;

	if (make_room(r) != 0)
		return ecp_file_fail(error, errlen, ECP_FILE_TRANSIENT, "reading %s: out of memory for a line",
							 r->shown);
	st = content_read(r, r->buf + r->end, r->cap - r->end, &got, error, errlen);
	if (st != ECP_FILE_OK)
		return st;
	if (got == 0)
		r->content_eof = 1;
	r->end += got;
	return ECP_FILE_OK;
}

/* At the content's end: a last line without '\n', or EOF. */
static EcpFileStatus
last_line(EcpFileReader *r, const char **line, size_t *len)
{
	size_t		n = r->end - r->start;

	if (r->discarding)
		return end_discard(r, 0, line, len);
	if (n == 0)
		return ECP_FILE_EOF;
	r->start = r->end = r->scan = 0;
	return emit(r, r->buf, n, n, line, len);
}

EcpFileStatus
ecp_file_next(EcpFileReader *r, const char **line, size_t *len, char *error, size_t errlen)
{
	EcpFileStatus st;

	*line = NULL;
	*len = 0;
	if (r == NULL)
		return ecp_file_fail(error, errlen, ECP_FILE_FATAL, "no file reader");
	if (r->failed != ECP_FILE_OK)
		return ecp_file_fail(error, errlen, r->failed, "reading %s: the reader already failed", r->shown);
	for (;;)
	{
		if (r->discarding ? discard_step(r, line, len, &st) : take_line(r, line, len, &st))
			return st;
		/* no '\n' within max_line + 1 bytes: too long even without a '\r' */
		if (!r->discarding && r->end - r->start > r->max_line + 1)
		{
			start_discard(r);
			continue;
		}
		if (r->content_eof)
			return last_line(r, line, len);
		st = refill(r, error, errlen);
		if (st != ECP_FILE_OK)
		{
			r->failed = st;
			return st;
		}
	}
}

/* ------------------------------------------------------------ open/close */

static EcpFileReader *
reader_new(const EcpFileReaderConfig *cfg)
{
	EcpFileReader *r = calloc(1, sizeof(EcpFileReader));

	if (r == NULL)
		return NULL;
	r->fd = -1;
	r->max_line = cfg->max_line_bytes > 0 ? cfg->max_line_bytes : DEFAULT_MAX_LINE_BYTES;
	if (r->max_line > MAX_MAX_LINE_BYTES)
		r->max_line = MAX_MAX_LINE_BYTES;
	r->idle_timeout_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : DEFAULT_IDLE_TIMEOUT_MS;
	r->should_abort = cfg->transport.should_abort;
	r->abort_arg = cfg->transport.abort_arg;
	r->location = ecp_file_dup_range(cfg->location, strlen(cfg->location));
	r->raw_cap = ECP_FILE_BUFFER_BYTES;
	r->raw = malloc(r->raw_cap);
	r->cap = ECP_FILE_BUFFER_BYTES;
	r->buf = malloc(r->cap);
	if (r->location == NULL || r->raw == NULL || r->buf == NULL)
	{
		ecp_file_close(r);
		return NULL;
	}
	return r;
}

/* Which kind of location, what errors call it, gzip or not. */
static EcpFileStatus
classify_location(EcpFileReader *r, char *error, size_t errlen)
{
	if (is_url(r->location))
	{
		r->is_http = 1;
		if (ecp_file_url_parse(r) == 0)
			return ECP_FILE_OK;
		r->shown = ecp_file_url_shown_prefix(r->location);
		return ecp_file_fail(error, errlen, ECP_FILE_FATAL, "\"%s\" is not a valid URL",
							 r->shown ? r->shown : "?");
	}
	r->shown = ecp_file_dup_range(r->location, strlen(r->location));
	if (r->shown == NULL)
		return ecp_file_fail(error, errlen, ECP_FILE_TRANSIENT, "out of memory");
	if (r->location[0] != '/')
	{
		free(r->shown);
		r->shown = ecp_file_url_shown_prefix(r->location);
		return ecp_file_fail(error, errlen, ECP_FILE_FATAL,
							 "\"%s\" is neither an http:// or https:// URL nor an absolute path",
							 r->shown ? r->shown : "?");
	}
	r->gz = ecp_file_ends_with_gz(r->location, strlen(r->location));
	return ECP_FILE_OK;
}

/* The source is open: set up gzip, then go to the offset if it must be read to. */
static EcpFileStatus
prepare_content(EcpFileReader *r, uint64_t offset, char *error, size_t errlen)
{
	if (r->gz)
	{
		/* 15 + 16: a gzip wrapper, the largest window */
		if (inflateInit2(&r->zs, 15 + 16) != Z_OK)
			return ecp_file_fail(error, errlen, ECP_FILE_TRANSIENT, "%s: inflateInit2 failed", r->shown);
		r->zs_ready = 1;
	}
	return skip_to_offset(r, offset, error, errlen);
}

EcpFileStatus
ecp_file_open(const EcpFileReaderConfig *cfg, uint64_t offset, uint64_t line_no,
			  EcpFileReader **out, char *error, size_t errlen)
{
	EcpFileReader *r;
	EcpFileStatus st;

	if (out)
		*out = NULL;
	if (cfg == NULL || cfg->location == NULL || cfg->location[0] == '\0' || out == NULL)
		return ecp_file_fail(error, errlen, ECP_FILE_FATAL, "no file location");
	r = reader_new(cfg);
	if (r == NULL)
		return ecp_file_fail(error, errlen, ECP_FILE_TRANSIENT, "out of memory opening a file source");
	st = classify_location(r, error, errlen);
	if (st == ECP_FILE_OK)
		st = r->is_http ? ecp_file_http_open(r, offset, &cfg->transport, error, errlen) :
			local_open(r, offset, error, errlen);
	if (st == ECP_FILE_OK)
		st = prepare_content(r, offset, error, errlen);
	if (st != ECP_FILE_OK)
	{
		ecp_file_close(r);
		return st;
	}
	r->offset = offset;
	r->line_no = line_no;
	*out = r;
	return ECP_FILE_OK;
}

uint64_t
ecp_file_offset(const EcpFileReader *r)
{
	return r ? r->offset : 0;
}

uint64_t
ecp_file_line_no(const EcpFileReader *r)
{
	return r ? r->line_no : 0;
}

EcpFileResumeKind
ecp_file_resume_kind(const EcpFileReader *r)
{
	return r ? r->resume : ECP_FILE_START;
}

size_t
ecp_file_buffer_capacity(const EcpFileReader *r)
{
	return r ? r->raw_cap + r->cap : 0;
}

void
ecp_file_close(EcpFileReader *r)
{
	if (r == NULL)
		return;
	ecp_transport_destroy(r->http.transport);
	if (r->fd >= 0)
		close(r->fd);
	if (r->zs_ready)
		inflateEnd(&r->zs);
	free(r->raw);
	free(r->buf);
	free(r->shown);
	free(r->location);
	free(r);
}
