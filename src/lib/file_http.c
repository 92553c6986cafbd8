/*
 * file_http.c: the HTTP side of a file source's reader (file_reader.h):
 * the URL (what errors show of it, whether it is ".gz", never its
 * secrets) and the raw layer of an http:// or https:// location, an HTTP
 * transfer (http_transport.c, in its streaming mode) that writes into the
 * reader's fixed raw buffer and is paused (CURL_WRITEFUNC_PAUSE) while it
 * is full, so memory stays bounded.  It asks for "Range: bytes=<offset>-"
 * when resuming plain content, and reads the answer's status and
 * Content-Range into what the open means (resumed, skipped, at the end,
 * a transient or a fatal error).  file_reader.c holds the rest: local
 * files, gzip, lines, open/close.
 *
 * The transport's pump waits at most 100 ms at a time, so should_abort is
 * asked that often while a server is silent.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "file_reader_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ----------------------------------------------------------------- URLs */

/* What an error may say about a location curl cannot parse (see file_reader_internal.h). */
char *
ecp_file_url_shown_prefix(const char *location)
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
	return ecp_file_dup_range(location, n);
}

/*
 * Read a URL as curl does: the text errors show (scheme://host:port/path),
 * and whether the path ends in ".gz".  -1 when curl cannot parse it (or
 * the host is longer than the address filter takes).
 */
int
ecp_file_url_parse(EcpFileReader *r)
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
			r->gz = ecp_file_ends_with_gz(path, strlen(path));
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
			char	   *userinfo = ecp_file_dup_range(host, (size_t) (at - host));
			int			found = userinfo == NULL || strstr(text, userinfo) != NULL;

			free(userinfo);
			return found;
		}
	}
	return 0;
}

/* ----------------------------------------------------------------- HTTP */

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
			return ecp_file_fail(error, errlen, ECP_FILE_ABORTED, "reading %s abandoned by the caller",
								 r->shown);
		case ECP_PUMP_IDLE:
			return ecp_file_fail(error, errlen, ECP_FILE_TRANSIENT,
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
		return ecp_file_fail(error, errlen, ECP_FILE_FATAL, "could not read %s: %s", r->shown,
							 ecp_transport_refused(h->transport));
	if (result == CURLE_OK)
		return ecp_file_fail(error, errlen, ECP_FILE_FATAL, "could not read %s: no HTTP answer",
							 r->shown);
	if (shows_secret(r, text))
		text = curl_easy_strerror(result);
	return ecp_file_fail(error, errlen,
						 curl_code_is_fatal(result) ? ECP_FILE_FATAL : ECP_FILE_TRANSIENT,
						 "reading %s failed%s: %s", r->shown,
						 h->headers_done ? " mid-body" : "", text);
}

/* Fill the empty raw buffer from the transfer. */
EcpFileStatus
ecp_file_http_fill(EcpFileReader *r, char *error, size_t errlen)
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
			return ecp_file_fail(error, errlen, ECP_FILE_FATAL,
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
			return ecp_file_fail(error, errlen, ECP_FILE_FATAL,
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
	return ecp_file_fail(error, errlen,
						 (s == 408 || s == 429 || s >= 500) ? ECP_FILE_TRANSIENT : ECP_FILE_FATAL,
						 "could not read %s: HTTP %ld (%s)", r->shown, s, status_text(s));
}

EcpFileStatus
ecp_file_http_open(EcpFileReader *r, uint64_t offset, const EcpTransportConfig *tc,
				   char *error, size_t errlen)
{
	HttpSource *h = &r->http;
	char		msg[256];
	EcpFileStatus st;

	if (ecp_transport_global_init(msg, sizeof(msg)) != 0)
		return ecp_file_fail(error, errlen, ECP_FILE_TRANSIENT, "could not read %s: %s", r->shown, msg);
	h->transport = ecp_transport_create(tc, msg, sizeof(msg));
	if (h->transport == NULL)
		return ecp_file_fail(error, errlen, ECP_FILE_TRANSIENT, "could not read %s: %s", r->shown, msg);
	h->easy = ecp_transport_prepare(h->transport, r->location, on_body, r, msg, sizeof(msg));
	if (h->easy == NULL)
		return ecp_file_fail(error, errlen, ECP_FILE_FATAL, "\"%s\" is not a valid URL", r->shown);
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
