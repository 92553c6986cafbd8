/*
 * file_reader.c: the streaming line reader of a file source (see
 * file_reader.h).
 *
 * Three layers, each pulling from the one below:
 *   raw      bytes as stored: read() on a local file, or an HTTP transfer
 *            (http_transport.c, in its streaming mode) that writes into a
 *            fixed buffer and is paused (CURL_WRITEFUNC_PAUSE) while it is
 *            full;
 *   content  the raw bytes, or for ".gz" what zlib inflates from them
 *            (concatenated gzip members included);
 *   lines    the content split on '\n' in a buffer that grows to at most
 *            max_line_bytes + 2; a longer line is dropped as it streams by.
 * So memory stays bounded whatever the file's size.
 *
 * The transport's pump waits at most 100 ms at a time, so should_abort is
 * asked that often while a server is silent.  Nothing here calls
 * exit/abort/longjmp, and every error
 * path frees what it allocated (ecp_file_close takes any partly built
 * reader).
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "file_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <zlib.h>

#define DEFAULT_MAX_LINE_BYTES ((size_t) 10 << 20)
#define MAX_MAX_LINE_BYTES ((size_t) 1 << 30)	/* keeps max_line + 2 from wrapping */
#define DEFAULT_IDLE_TIMEOUT_MS 60000L

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

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

static EcpFileStatus fail(char *error, size_t errlen, EcpFileStatus st, const char *fmt,...)
			__attribute__((format(printf, 4, 5)));

static EcpFileStatus
fail(char *error, size_t errlen, EcpFileStatus st, const char *fmt,...)
{
	va_list		ap;

	if (error && errlen > 0)
	{
		va_start(ap, fmt);
		vsnprintf(error, errlen, fmt, ap);
		va_end(ap);
	}
	return st;
}

static int
aborted(EcpFileReader *r)
{
	return r->should_abort && r->should_abort(r->abort_arg);
}

static char *
dup_range(const char *s, size_t n)
{
	char	   *copy = malloc(n + 1);

	if (copy)
	{
		memcpy(copy, s, n);
		copy[n] = '\0';
	}
	return copy;
}

static int
ends_with_gz(const char *path, size_t n)
{
	return n >= 3 && strncasecmp(path + n - 3, ".gz", 3) == 0;
}

static int
is_url(const char *location)
{
	return strncasecmp(location, "http://", 7) == 0 || strncasecmp(location, "https://", 8) == 0;
}

/*
 * What an error may say about a location curl cannot parse: the text
 * before any query or fragment, without user info.
 */
static char *
shown_prefix(const char *location)
{
	size_t		n = strcspn(location, "?#");
	const char *authority = strstr(location, "://");

	if (authority && (size_t) (authority - location) < n)
	{
		const char *host = authority + 3;
		size_t		hostlen = strcspn(host, "/?#");
		const char *at = memchr(host, '@', hostlen);

		if (at)
		{
			size_t		scheme = (size_t) (host - location);
			size_t		rest = n - (size_t) (at + 1 - location);
			char	   *out = malloc(scheme + rest + 1);

			if (out)
			{
				memcpy(out, location, scheme);
				memcpy(out + scheme, at + 1, rest);
				out[scheme + rest] = '\0';
			}
			return out;
		}
	}
	return dup_range(location, n);
}

/*
 * Read a URL as curl does: the text errors show (scheme://host:port/path),
 * and whether the path ends in ".gz".  -1 when curl cannot parse it (or
 * the host is longer than the address filter takes).
 */
static int
parse_url(EcpFileReader *r)
{
	CURLU	   *u = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *port = NULL;
	char	   *path = NULL;
	int			rc = -1;

	if (u && curl_url_set(u, CURLUPART_URL, r->location, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK &&
		strlen(host) < ECP_TRANSPORT_MAX_HOST)
	{
		size_t		n = strlen(scheme) + strlen(host) + strlen(port) + strlen(path) + 5;

		r->shown = malloc(n);
		if (r->shown)
		{
			snprintf(r->shown, n, "%s://%s:%s%s", scheme, host, port, path);
			r->gz = ends_with_gz(path, strlen(path));
			rc = 0;
		}
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return rc;
}

/*
 * Does text show a secret of the location (its query string or user
 * info)?  curl's messages should not, but an error must never leak one.
 */
static int
shows_secret(const EcpFileReader *r, const char *text)
{
	const char *query = strchr(r->location, '?');
	const char *authority = strstr(r->location, "://");

	if (query && strlen(query + 1) >= 3 && strstr(text, query + 1))
		return 1;
	if (authority)
	{
		const char *host = authority + 3;
		size_t		hostlen = strcspn(host, "/?#");
		const char *at = memchr(host, '@', hostlen);

		if (at && at - host >= 3)
		{
			char	   *userinfo = dup_range(host, (size_t) (at - host));
			int			found = userinfo == NULL || strstr(text, userinfo) != NULL;

			free(userinfo);
			return found;
		}
	}
	return 0;
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
		return fail(error, errlen, errno_status(errno), "could not open \"%s\": %s",
					r->shown, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return fail(error, errlen, ECP_FILE_FATAL, "could not open \"%s\": it is a directory",
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
		return fail(error, errlen, ECP_FILE_FATAL,
					"\"%s\" is %llu bytes, shorter than the resume offset %llu (the file changed)",
					r->shown, (unsigned long long) st.st_size, (unsigned long long) offset);
	if (lseek(r->fd, (off_t) offset, SEEK_SET) < 0)
		return fail(error, errlen, errno_status(errno), "could not seek in \"%s\" to byte %llu: %s",
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
		return fail(error, errlen, ECP_FILE_ABORTED, "reading \"%s\" abandoned by the caller",
					r->shown);
	do
		n = read(r->fd, r->raw, r->raw_cap);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return fail(error, errlen, errno_status(errno), "could not read \"%s\": %s",
					r->shown, strerror(errno));
	if (n == 0)
		r->raw_eof = 1;
	r->raw_len = (size_t) n;
	return ECP_FILE_OK;
}

/* ---------------------------------------------------------------- HTTP */

/*
 * CURLOPT_WRITEFUNCTION: keep a 2xx body in the raw buffer; pause the
 * transfer when the chunk does not fit (curl keeps it and hands it over
 * again on curl_easy_pause(CONT)), so memory stays bounded.
 */
static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	EcpFileReader *r = arg;
	size_t		n = size * nmemb;

	if (!r->http.body_wanted)
		return n;				/* an error page: only its status matters */
	if (n > r->raw_cap - r->raw_len && r->raw_pos > 0)
	{
		memmove(r->raw, r->raw + r->raw_pos, r->raw_len - r->raw_pos);
		r->raw_len -= r->raw_pos;
		r->raw_pos = 0;
	}
	if (n > r->raw_cap - r->raw_len && r->raw_len > 0)
		return CURL_WRITEFUNC_PAUSE;	/* the transport resumes it at its next pump */
	if (n > r->raw_cap)
	{
		/*
		 * A chunk over the whole buffer (curl hands at most its 16 KiB
		 * CURL_MAX_WRITE_SIZE today): hold it, it is curl's bound too.
		 */
		char	   *grown = realloc(r->raw, n);

		if (grown == NULL)
			return 0;			/* CURLE_WRITE_ERROR */
		r->raw = grown;
		r->raw_cap = n;
	}
	memcpy(r->raw + r->raw_len, ptr, n);
	r->raw_len += n;
	return n;
}

/* CURLOPT_HEADERFUNCTION: the final status and its Content-Range. */
static size_t
on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	EcpFileReader *r = arg;
	HttpSource *h = &r->http;
	size_t		n = size * nmemb;

	ecp_transport_saw_bytes(h->transport);
	if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0)
		h->content_range[0] = '\0'; /* a new answer (after a 1xx) */
	else if (n > 14 && strncasecmp(ptr, "Content-Range:", 14) == 0)
	{
		const char *v = ptr + 14;
		size_t		len = n - 14;

		while (len > 0 && (*v == ' ' || *v == '\t'))
			v++, len--;
		while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
			len--;
		if (len >= sizeof(h->content_range))
			len = sizeof(h->content_range) - 1;
		memcpy(h->content_range, v, len);
		h->content_range[len] = '\0';
	}
	else if (n <= 2 && (ptr[0] == '\r' || ptr[0] == '\n'))
	{
		long		code = 0;

		curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
		if (code >= 200)
		{
			h->headers_done = 1;
			h->status = code;
			h->body_wanted = code >= 200 && code < 300;
		}
	}
	return n;
}

static int
headers_came(void *arg)
{
	EcpFileReader *r = arg;

	return r->http.headers_done;
}

static int
bytes_came(void *arg)
{
	EcpFileReader *r = arg;

	return r->raw_len > r->raw_pos;
}

/*
 * Drive the transfer until the headers came (headers_only) or the raw
 * buffer holds bytes, or the transfer ended; should_abort is asked every
 * 100 ms at most, and the idle clock starts here.
 */
static EcpFileStatus
http_pump(EcpFileReader *r, int headers_only, char *error, size_t errlen)
{
	switch (ecp_transport_pump(r->http.transport, headers_only ? headers_came : bytes_came, r,
							   r->idle_timeout_ms))
	{
		case ECP_PUMP_ABORTED:
			return fail(error, errlen, ECP_FILE_ABORTED, "reading %s abandoned by the caller",
						r->shown);
		case ECP_PUMP_IDLE:
			return fail(error, errlen, ECP_FILE_TRANSIENT,
						"reading %s failed: no data for %ld ms", r->shown, r->idle_timeout_ms);
		default:
			return ECP_FILE_OK;
	}
}

/* Failures no retry can mend: the URL, the TLS setup, the certificate. */
static int
curl_code_is_fatal(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CRL_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_ENGINE_NOTFOUND:
		case CURLE_SSL_CIPHER:
			return 1;
		default:
			return 0;
	}
}

/* The transfer ended with an error (or without an answer). */
static EcpFileStatus
transfer_failure(EcpFileReader *r, char *error, size_t errlen)
{
	HttpSource *h = &r->http;
	CURLcode	result = ecp_transport_result(h->transport);
	const char *errbuf = ecp_transport_error(h->transport);
	const char *text = errbuf[0] ? errbuf : curl_easy_strerror(result);

	if (ecp_transport_refused(h->transport)[0])
		return fail(error, errlen, ECP_FILE_FATAL, "could not read %s: %s", r->shown,
					ecp_transport_refused(h->transport));
	if (result == CURLE_OK)
		return fail(error, errlen, ECP_FILE_FATAL, "could not read %s: no HTTP answer", r->shown);
	if (shows_secret(r, text))
		text = curl_easy_strerror(result);
	return fail(error, errlen,
				curl_code_is_fatal(result) ? ECP_FILE_FATAL : ECP_FILE_TRANSIENT,
				"reading %s failed%s: %s", r->shown,
				h->headers_done ? " mid-body" : "", text);
}

/* Fill the empty raw buffer from the transfer. */
static EcpFileStatus
http_fill(EcpFileReader *r, char *error, size_t errlen)
{
	EcpFileStatus st = http_pump(r, 0, error, errlen);

	if (st != ECP_FILE_OK || r->raw_len > r->raw_pos)
		return st;
	if (ecp_transport_result(r->http.transport) != CURLE_OK)
		return transfer_failure(r, error, errlen);
	r->raw_eof = 1;
	return ECP_FILE_OK;
}

static const char *
status_text(long s)
{
	switch (s)
	{
		case 401:
			return "unauthorized";
		case 403:
			return "forbidden";
		case 404:
			return "not found";
		case 408:
			return "request timeout";
		case 410:
			return "gone";
		case 429:
			return "too many requests";
		default:
			break;
	}
	if (s >= 500)
		return "server error";
	if (s >= 300 && s < 400)
		return "redirect, not followed";
	return "client error";
}

/* "bytes N-M/T" starts at N? */
static int
range_starts_at(const char *content_range, uint64_t offset)
{
	char	   *end;
	unsigned long long start;

	if (strncasecmp(content_range, "bytes ", 6) != 0)
		return 0;
	errno = 0;
	start = strtoull(content_range + 6, &end, 10);
	return errno == 0 && end != content_range + 6 && *end == '-' && start == offset;
}

/*
 * 416 to "bytes=<offset>-": at the end of the file when the size it gives
 * (Content-Range "bytes *" "/T") is the offset, or when it gives none (some object stores
 * do not; the offset came from a checkpoint of this file).  A smaller size
 * means the file changed under the checkpoint.
 */
static EcpFileStatus
range_not_satisfiable(EcpFileReader *r, uint64_t offset, char *error, size_t errlen)
{
	const char *slash = strchr(r->http.content_range, '/');
	unsigned long long size;
	char	   *end;

	if (slash && slash[1] >= '0' && slash[1] <= '9')
	{
		size = strtoull(slash + 1, &end, 10);
		if (size != offset)
			return fail(error, errlen, ECP_FILE_FATAL,
						"%s is %llu bytes, not the resume offset %llu (HTTP 416: the file changed)",
						r->shown, size, (unsigned long long) offset);
	}
	r->raw_eof = 1;
	r->resume = ECP_FILE_RANGED;
	return ECP_FILE_OK;
}

/* What the answer's status means for the open. */
static EcpFileStatus
http_answer(EcpFileReader *r, uint64_t offset, char *error, size_t errlen)
{
	HttpSource *h = &r->http;
	long		s = h->status;

	if (s == 206)
	{
		if (!h->asked_range || !range_starts_at(h->content_range, offset))
			return fail(error, errlen, ECP_FILE_FATAL,
						"could not read %s: HTTP 206 with Content-Range \"%s\", not from byte %llu",
						r->shown, h->content_range, (unsigned long long) offset);
		r->resume = ECP_FILE_RANGED;
		return ECP_FILE_OK;
	}
	if (s >= 200 && s < 300)
	{
		/* a .gz, or the server ignored Range: drop bytes up to the offset */
		r->skip = offset;
		r->resume = offset > 0 ? ECP_FILE_SKIPPED : ECP_FILE_START;
		return ECP_FILE_OK;
	}
	if (s == 416 && h->asked_range)
		return range_not_satisfiable(r, offset, error, errlen);
	return fail(error, errlen,
				(s == 408 || s == 429 || s >= 500) ? ECP_FILE_TRANSIENT : ECP_FILE_FATAL,
				"could not read %s: HTTP %ld (%s)", r->shown, s, status_text(s));
}

static EcpFileStatus
http_open(EcpFileReader *r, uint64_t offset, const EcpTransportConfig *tc,
		  char *error, size_t errlen)
{
	HttpSource *h = &r->http;
	char		msg[256];
	EcpFileStatus st;

	if (ecp_transport_global_init(msg, sizeof(msg)) != 0)
		return fail(error, errlen, ECP_FILE_TRANSIENT, "could not read %s: %s", r->shown, msg);
	h->transport = ecp_transport_create(tc, msg, sizeof(msg));
	if (h->transport == NULL)
		return fail(error, errlen, ECP_FILE_TRANSIENT, "could not read %s: %s", r->shown, msg);
	h->easy = ecp_transport_prepare(h->transport, r->location, on_body, r, msg, sizeof(msg));
	if (h->easy == NULL)
		return fail(error, errlen, ECP_FILE_FATAL, "\"%s\" is not a valid URL", r->shown);
	curl_easy_setopt(h->easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h->easy, CURLOPT_HEADERDATA, r);
	if (offset > 0 && !r->gz)
	{
		char		range[32];

		snprintf(range, sizeof(range), "%llu-", (unsigned long long) offset);
		curl_easy_setopt(h->easy, CURLOPT_RANGE, range);	/* curl copies it */
		h->asked_range = 1;
	}
	ecp_transport_start(h->transport, 0);
	st = http_pump(r, 1, error, errlen);
	if (st != ECP_FILE_OK)
		return st;
	if (!h->headers_done)
		return transfer_failure(r, error, errlen);
	return http_answer(r, offset, error, errlen);
}

/* --------------------------------------------------------- content layer */

/* Make sure the raw buffer holds unread bytes, or that the source ended. */
static EcpFileStatus
raw_fill(EcpFileReader *r, char *error, size_t errlen)
{
	if (r->raw_pos < r->raw_len || r->raw_eof)
		return ECP_FILE_OK;
	r->raw_pos = r->raw_len = 0;
	return r->is_http ? http_fill(r, error, errlen) : local_fill(r, error, errlen);
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
				return fail(error, errlen, ECP_FILE_FATAL, "%s: inflateReset failed", r->shown);
		}
		else if (zr == Z_OK)
			r->member_open = 1;
		else if (zr == Z_BUF_ERROR && avail == 0)
			return fail(error, errlen, ECP_FILE_FATAL,
						"%s: truncated gzip data (the file ends inside a gzip member)", r->shown);
		else
			return fail(error, errlen, ECP_FILE_FATAL, "%s: bad gzip data (%s)", r->shown,
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
			return fail(error, errlen, ECP_FILE_FATAL,
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
		return fail(error, errlen, ECP_FILE_TRANSIENT, "reading %s: out of memory for a line",
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
		return fail(error, errlen, ECP_FILE_FATAL, "no file reader");
	if (r->failed != ECP_FILE_OK)
		return fail(error, errlen, r->failed, "reading %s: the reader already failed", r->shown);
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
	r->location = dup_range(cfg->location, strlen(cfg->location));
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
		if (parse_url(r) == 0)
			return ECP_FILE_OK;
		r->shown = shown_prefix(r->location);
		return fail(error, errlen, ECP_FILE_FATAL, "\"%s\" is not a valid URL",
					r->shown ? r->shown : "?");
	}
	r->shown = dup_range(r->location, strlen(r->location));
	if (r->shown == NULL)
		return fail(error, errlen, ECP_FILE_TRANSIENT, "out of memory");
	if (r->location[0] != '/')
	{
		free(r->shown);
		r->shown = shown_prefix(r->location);
		return fail(error, errlen, ECP_FILE_FATAL,
					"\"%s\" is neither an http:// or https:// URL nor an absolute path",
					r->shown ? r->shown : "?");
	}
	r->gz = ends_with_gz(r->location, strlen(r->location));
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
			return fail(error, errlen, ECP_FILE_TRANSIENT, "%s: inflateInit2 failed", r->shown);
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
		return fail(error, errlen, ECP_FILE_FATAL, "no file location");
	r = reader_new(cfg);
	if (r == NULL)
		return fail(error, errlen, ECP_FILE_TRANSIENT, "out of memory opening a file source");
	st = classify_location(r, error, errlen);
	if (st == ECP_FILE_OK)
		st = r->is_http ? http_open(r, offset, &cfg->transport, error, errlen) :
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
