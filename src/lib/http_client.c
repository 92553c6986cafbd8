/*
 * http_client.c: libcurl for a background worker (one client per process,
 * made after it started; nothing of libcurl's in shared memory).
 *
 * What is the client's own: request bodies (optional gzip, no "Expect:
 * 100-continue"), headers and auth, a total timeout, a capped response
 * buffer, and what a failure means.  The curl handles, the outbound policy
 * (protocols, redirects, TLS, the address filter) and the poll loop are
 * http_transport.c's, shared with the file reader.  Nothing here calls
 * exit/abort/longjmp; every path frees what it allocated.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "http_client.h"
#include "http_errors.h"
#include "http_transport.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <zlib.h>

#define DEFAULT_REQUEST_TIMEOUT_MS 60000L
#define DEFAULT_MAX_RESPONSE_BYTES ((size_t) 64 << 20)
#define UPLOAD_BUFFER_BYTES (512L * 1024)

typedef struct ResponseBuffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		max;
	int			too_large;
	int			out_of_memory;
} ResponseBuffer;

struct EcpHttpClient
{
	EcpTransport *transport;
	long		request_timeout_ms;
	size_t		max_response_bytes;	/* of the next request */
	size_t		configured_max_response_bytes;	/* as created */
	int			gzip_requests;
	char	   *auth_line;		/* "Authorization: <value>" */
	const char *auth_value;		/* points into auth_line, for redaction */
	/* per request */
	ResponseBuffer buf;
	/* the request between ecp_http_begin and ecp_http_finish */
	int			in_flight;
	struct curl_slist *pending_headers;
	char	   *pending_compressed;
	char	   *pending_url;
	double		pending_start;
	curl_off_t	pending_send_len;	/* body bytes to write */
};

static char *
dup_string(const char *s)
{
	size_t		n;
	char	   *copy;

	if (s == NULL)
		return NULL;
	n = strlen(s);
	copy = malloc(n + 1);
	if (copy)
		memcpy(copy, s, n + 1);
	return copy;
}

static void
set_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen > 0)
		snprintf(err, errlen, "%s", msg);
}

int
ecp_http_global_init(char *err, size_t errlen)
{
	return ecp_transport_global_init(err, errlen);
}

/* A header value must not smuggle in another header line. */
static int
has_line_break(const char *s)
{
	return strpbrk(s, "\r\n") != NULL;
}

/* The options every outbound request shares (http_transport.h). */
static EcpTransportConfig
transport_config(const EcpHttpConfig *cfg)
{
	EcpTransportConfig tc;

	memset(&tc, 0, sizeof(tc));
	tc.connect_timeout_ms = cfg->connect_timeout_ms;
	tc.user_agent = cfg->user_agent;
	tc.ca_file = cfg->ca_file;
	tc.insecure = cfg->insecure;
	tc.should_abort = cfg->should_abort;
	tc.abort_arg = cfg->abort_arg;
	tc.allow_address = cfg->allow_address;
	tc.address_arg = cfg->address_arg;
	return tc;
}

EcpHttpClient *
ecp_http_client_create(const EcpHttpConfig *cfg, char *err, size_t errlen)
{
	EcpHttpClient *client;
	EcpTransportConfig tc;

	if (cfg == NULL)
	{
		set_err(err, errlen, "no HTTP client configuration");
		return NULL;
	}
	if ((cfg->auth_header && has_line_break(cfg->auth_header)) ||
		(cfg->user_agent && has_line_break(cfg->user_agent)))
	{
		set_err(err, errlen, "the Authorization or User-Agent value contains a line break");
		return NULL;
	}
	client = calloc(1, sizeof(EcpHttpClient));
	if (client == NULL)
	{
		set_err(err, errlen, "out of memory");
		return NULL;
	}
	client->request_timeout_ms = cfg->request_timeout_ms > 0 ?
		cfg->request_timeout_ms : DEFAULT_REQUEST_TIMEOUT_MS;
	client->max_response_bytes = cfg->max_response_bytes > 0 ?
		cfg->max_response_bytes : DEFAULT_MAX_RESPONSE_BYTES;
	client->configured_max_response_bytes = client->max_response_bytes;
	client->gzip_requests = cfg->gzip_requests;

	if (cfg->auth_header && cfg->auth_header[0])
	{
		static const char prefix[] = "Authorization: ";
		size_t		n = strlen(cfg->auth_header);

		client->auth_line = malloc(sizeof(prefix) + n);
		if (client->auth_line == NULL)
			goto oom;
		memcpy(client->auth_line, prefix, sizeof(prefix) - 1);
		memcpy(client->auth_line + sizeof(prefix) - 1, cfg->auth_header, n + 1);
		client->auth_value = client->auth_line + sizeof(prefix) - 1;
	}
	tc = transport_config(cfg);
	client->transport = ecp_transport_create(&tc, err, errlen);
	if (client->transport == NULL)
	{
		ecp_http_client_destroy(client);
		return NULL;
	}
	return client;

oom:
	set_err(err, errlen, "out of memory");
	ecp_http_client_destroy(client);
	return NULL;
}

void
ecp_http_client_destroy(EcpHttpClient *client)
{
	if (client == NULL)
		return;
	/* a request begun and never finished (an error while it ran) */
	if (client->in_flight)
	{
		free(client->pending_compressed);
		curl_slist_free_all(client->pending_headers);
		free(client->pending_url);
	}
	/* ends a transfer still running */
	ecp_transport_destroy(client->transport);
	if (client->auth_line)
	{
		/* do not leave the secret lying around in freed memory */
		memset(client->auth_line, 0, strlen(client->auth_line));
		free(client->auth_line);
	}
	free(client->buf.data);
	free(client);
}

void
ecp_http_set_max_response(EcpHttpClient *client, size_t max_bytes)
{
	if (client == NULL || client->in_flight)
		return;
	client->max_response_bytes = max_bytes > 0 ? max_bytes : client->configured_max_response_bytes;
}

void
ecp_http_response_free(EcpHttpResponse *resp)
{
	if (resp == NULL)
		return;
	free(resp->body);
	free(resp->content_type);
	resp->body = NULL;
	resp->body_len = 0;
	resp->content_type = NULL;
}

static size_t
collect_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	ResponseBuffer *buf = userdata;
	size_t		n = size * nmemb;

	if (n > buf->max - buf->len)
	{
		buf->too_large = 1;
		return 0;				/* curl fails with CURLE_WRITE_ERROR */
	}
	if (buf->len + n + 1 > buf->cap)
	{
		size_t		cap = buf->cap ? buf->cap : 16384;
		char	   *grown;

		while (cap < buf->len + n + 1)
			cap *= 2;
		if (cap > buf->max + 1)
			cap = buf->max + 1;
		grown = realloc(buf->data, cap);
		if (grown == NULL)
		{
			buf->out_of_memory = 1;
			return 0;
		}
		buf->data = grown;
		buf->cap = cap;
	}
	memcpy(buf->data + buf->len, ptr, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
	return n;
}

/* gzip body into a malloc'd buffer; NULL on failure. */
static char *
gzip_body(const char *body, size_t len, size_t *out_len)
{
	z_stream	zs;
	size_t		cap;
	char	   *out;

	if (len > (size_t) UINT_MAX - 1024)
		return NULL;
	cap = (size_t) compressBound((uLong) len) + 64;		/* + gzip header/trailer */
	out = malloc(cap);
	if (out == NULL)
		return NULL;
	memset(&zs, 0, sizeof(zs));
	if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
	{
		free(out);
		return NULL;
	}
	zs.next_in = (Bytef *) body;
	zs.avail_in = (uInt) len;
	zs.next_out = (Bytef *) out;
	zs.avail_out = (uInt) cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
	{
		deflateEnd(&zs);
		free(out);
		return NULL;
	}
	*out_len = (size_t) zs.total_out;
	deflateEnd(&zs);
	return out;
}

/* Append to a header list without losing it when curl runs out of memory. */
static int
append_header(struct curl_slist **list, const char *line)
{
	struct curl_slist *next = curl_slist_append(*list, line);

	if (next == NULL)
		return -1;
	*list = next;
	return 0;
}

/* Does a "Name: value" list contain a header called name? */
static int
has_header(const char *const *headers, const char *name)
{
	size_t		n = strlen(name);

	for (int i = 0; headers && headers[i]; i++)
		if (strncasecmp(headers[i], name, n) == 0 &&
			(headers[i][n] == ':' || headers[i][n] == ';'))
			return 1;
	return 0;
}

/* NULL on out-of-memory. */
static struct curl_slist *
build_headers(EcpHttpClient *client, const char *content_type, int sends_body, int gzip,
			  const char *const *extra_headers, int *failed)
{
	struct curl_slist *headers = NULL;
	char	   *line = NULL;

	*failed = 0;
	if (!has_header(extra_headers, "Accept") &&
		append_header(&headers, "Accept: application/json") != 0)
		goto fail;
	/* no 100-continue (libcurl adds it to large bodies): ES then answers an
	 * oversized body with 417 instead of its empty 413 */
	if (append_header(&headers, "Expect:") != 0)
		goto fail;
	if (!has_header(extra_headers, "Content-Type"))
	{
		if (content_type)
		{
			size_t		n = strlen(content_type) + sizeof("Content-Type: ");

			line = malloc(n);
			if (line == NULL)
				goto fail;
			snprintf(line, n, "Content-Type: %s", content_type);
			if (append_header(&headers, line) != 0)
				goto fail;
			free(line);
			line = NULL;
		}
		else if (sends_body)
		{
			/* keep curl from sending application/x-www-form-urlencoded */
			if (append_header(&headers, "Content-Type:") != 0)
				goto fail;
		}
	}
	if (gzip && append_header(&headers, "Content-Encoding: gzip") != 0)
		goto fail;
	if (client->auth_line && !has_header(extra_headers, "Authorization") &&
		append_header(&headers, client->auth_line) != 0)
		goto fail;
	for (int i = 0; extra_headers && extra_headers[i]; i++)
		if (append_header(&headers, extra_headers[i]) != 0)
			goto fail;
	return headers;

fail:
	free(line);
	curl_slist_free_all(headers);
	*failed = 1;
	return NULL;
}

/* Remove credentials (Authorization value, URL user info) from resp->error. */
static void
scrub_error(EcpHttpClient *client, const char *url, EcpHttpResponse *resp)
{
	ecp_http_redact(resp->error, client->auth_value, url);
}

/*
 * The server closed or reset the connection before the status line of an
 * answer came: a send failed (EPIPE, ECONNRESET), a read was reset, or the
 * connection ended with nothing.  Elasticsearch does that to a body over
 * http.max_content_length when the client is still sending (the 413 it
 * writes first may never be read), so the caller may want to tell it from
 * a timeout, a refused connection or an answer cut short.
 */
static int
connection_was_lost(EcpHttpClient *client, CURLcode rc)
{
	long		code = 0;

	if (rc != CURLE_SEND_ERROR && rc != CURLE_RECV_ERROR && rc != CURLE_GOT_NOTHING)
		return 0;
	if (curl_easy_getinfo(ecp_transport_easy(client->transport), CURLINFO_RESPONSE_CODE,
						  &code) != CURLE_OK)
		code = 0;
	return code == 0;
}

static EcpHttpOutcome
classify_failure(EcpHttpClient *client, CURLcode rc, EcpHttpResponse *resp)
{
	const char *name = ecp_http_curl_code_name(rc);
	const char *errbuf = ecp_transport_error(client->transport);
	const char *text = errbuf[0] ? errbuf : curl_easy_strerror(rc);
	const char *refused = ecp_transport_refused(client->transport);
	char		code[48];

	if (ecp_transport_aborted(client->transport) || rc == CURLE_ABORTED_BY_CALLBACK)
	{
		snprintf(resp->error, sizeof(resp->error),
				 "request abandoned by the caller (pause, cancel or shutdown)");
		return ECP_HTTP_ABORTED;
	}
	/* curl only saw "could not connect": the policy's reason is the news */
	if (refused[0])
	{
		snprintf(resp->error, sizeof(resp->error), "%s", refused);
		return ECP_HTTP_SETUP;
	}
	if (client->buf.too_large || rc == CURLE_FILESIZE_EXCEEDED)
	{
		snprintf(resp->error, sizeof(resp->error), "response larger than %zu bytes",
				 client->max_response_bytes);
		return ECP_HTTP_TOO_LARGE;
	}
	if (client->buf.out_of_memory)
		text = "out of memory while reading the response";

	resp->connection_lost = connection_was_lost(client, rc);
	if (name)
		snprintf(code, sizeof(code), "%s", name);
	else
		snprintf(code, sizeof(code), "curl error %d", (int) rc);
	snprintf(resp->error, sizeof(resp->error), "%.200s [%.40s]", text, code);

	switch (rc)
	{
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_BAD_FUNCTION_ARGUMENT:
		case CURLE_UNKNOWN_OPTION:
		case CURLE_NOT_BUILT_IN:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CRL_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_ENGINE_NOTFOUND:
		case CURLE_TOO_MANY_REDIRECTS:
			return ECP_HTTP_SETUP;
		default:
			return ECP_HTTP_TRANSPORT;
	}
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* The client's own options of every request (the transport set the rest). */
static void
set_request_options(EcpHttpClient *client, CURL *curl)
{
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, client->request_timeout_ms);
	/* bodies of a megabyte go out in a few writes, not sixteen (64 kB default) */
	curl_easy_setopt(curl, CURLOPT_UPLOAD_BUFFERSIZE, UPLOAD_BUFFER_BYTES);
}

/* Method names are HTTP tokens; keep it to letters. */
static int
valid_method(const char *method)
{
	if (method == NULL || method[0] == '\0' || strlen(method) > 16)
		return 0;
	for (const char *p = method; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
			return 0;
	return 1;
}

/*
 * Drive the transfer to its end, asking should_abort at least every 100 ms
 * (the transport's pump).  Returns the transfer's CURLcode.
 */
static CURLcode
complete_transfer(EcpHttpClient *client, EcpHttpResponse *resp)
{
	EcpTransport *t = client->transport;
	CURL	   *easy = ecp_transport_easy(t);
	CURLcode	rc = CURLE_ABORTED_BY_CALLBACK;

	if (ecp_transport_pump(t, NULL, NULL, 0) == ECP_PUMP_DONE)
		rc = ecp_transport_result(t);
	if (rc == CURLE_OK)
	{
		char	   *ctype = NULL;

		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &resp->status);
		curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &resp->new_connections);
		if (curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &ctype) == CURLE_OK && ctype)
			resp->content_type = dup_string(ctype);
	}
	ecp_transport_end(t);
	return rc;
}

EcpHttpOutcome
ecp_http_request(EcpHttpClient *client, const char *method, const char *url,
				 const char *content_type, const char *body, size_t body_len,
				 const char *const *extra_headers, EcpHttpResponse *resp)
{
	EcpHttpOutcome outcome = ecp_http_begin(client, method, url, content_type, body, body_len,
											extra_headers, resp);

	if (outcome != ECP_HTTP_OK)
		return outcome;
	return ecp_http_finish(client, resp);
}

/* Free what a request held; fill an empty body for failed outcomes. */
static void
end_request(EcpHttpClient *client, EcpHttpResponse *resp, double start)
{
	if (resp->body == NULL)
	{
		resp->body = malloc(1);
		if (resp->body)
			resp->body[0] = '\0';
		resp->body_len = 0;
	}
	resp->seconds = now_seconds() - start;
	if (client == NULL)
		return;
	free(client->pending_compressed);
	curl_slist_free_all(client->pending_headers);
	free(client->pending_url);
	client->pending_compressed = NULL;
	client->pending_headers = NULL;
	client->pending_url = NULL;
	client->in_flight = 0;
}

EcpHttpOutcome
ecp_http_begin(EcpHttpClient *client, const char *method, const char *url,
			   const char *content_type, const char *body, size_t body_len,
			   const char *const *extra_headers, EcpHttpResponse *resp)
{
	struct curl_slist *headers = NULL;
	char	   *compressed = NULL;
	const char *send = body;
	size_t		send_len = body_len;
	int			is_head;
	int			sends_body;
	int			gzip;
	int			failed;
	CURL	   *easy;
	double		start = now_seconds();
	EcpHttpOutcome outcome = ECP_HTTP_OK;

	if (resp == NULL)
		return ECP_HTTP_SETUP;
	memset(resp, 0, sizeof(*resp));

	if (client == NULL || url == NULL || url[0] == '\0' || !valid_method(method))
	{
		snprintf(resp->error, sizeof(resp->error), "%s",
				 client == NULL ? "no HTTP client" :
				 (url == NULL || url[0] == '\0') ? "no URL" : "invalid HTTP method");
		outcome = ECP_HTTP_SETUP;
		goto out;
	}
	if ((content_type && has_line_break(content_type)) || has_line_break(url))
	{
		snprintf(resp->error, sizeof(resp->error), "line break in the URL or Content-Type");
		outcome = ECP_HTTP_SETUP;
		goto out;
	}
	for (int i = 0; extra_headers && extra_headers[i]; i++)
		if (has_line_break(extra_headers[i]) || strchr(extra_headers[i], ':') == NULL)
		{
			snprintf(resp->error, sizeof(resp->error),
					 "extra header %d is not a single \"Name: value\" line", i + 1);
			outcome = ECP_HTTP_SETUP;
			goto out;
		}

	is_head = strcmp(method, "HEAD") == 0;
	sends_body = !is_head && (body != NULL || strcmp(method, "POST") == 0 ||
							  strcmp(method, "PUT") == 0);
	if (!sends_body || body == NULL)
	{
		send = "";
		send_len = 0;
	}
	gzip = sends_body && client->gzip_requests && send_len > 0;
	if (gzip)
	{
		compressed = gzip_body(body, body_len, &send_len);
		if (compressed == NULL)
		{
			snprintf(resp->error, sizeof(resp->error),
					 "gzip compression of a %zu-byte body failed", body_len);
			outcome = ECP_HTTP_SETUP;
			goto out;
		}
		send = compressed;
	}

	headers = build_headers(client, content_type, sends_body, gzip, extra_headers, &failed);
	if (failed)
	{
		snprintf(resp->error, sizeof(resp->error), "out of memory building the request headers");
		outcome = ECP_HTTP_TRANSPORT;
		goto out;
	}

	client->buf.len = 0;
	client->buf.too_large = 0;
	client->buf.out_of_memory = 0;
	client->buf.max = client->max_response_bytes;
	if (client->buf.data)
		client->buf.data[0] = '\0';

	if (ecp_transport_should_abort(client->transport))
	{
		snprintf(resp->error, sizeof(resp->error),
				 "request abandoned by the caller (pause, cancel or shutdown)");
		outcome = ECP_HTTP_ABORTED;
		goto out;
	}

	easy = ecp_transport_prepare(client->transport, url, collect_body, &client->buf,
								 resp->error, sizeof(resp->error));
	if (easy == NULL)
	{
		outcome = ECP_HTTP_SETUP;
		goto out;
	}
	set_request_options(client, easy);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	if (is_head)
		curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
	else
	{
		/* a Content-Length over the cap fails before any byte is read */
		curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
						 (curl_off_t) client->max_response_bytes);
		if (sends_body)
		{
			curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) send_len);
			curl_easy_setopt(easy, CURLOPT_POSTFIELDS, send);
		}
		if (strcmp(method, "POST") != 0)
			curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
	}

	/* the transfer goes on until ecp_http_finish: keep what it uses */
	client->pending_headers = headers;
	client->pending_compressed = compressed;
	client->pending_url = dup_string(url);
	client->pending_start = start;
	client->pending_send_len = sends_body ? (curl_off_t) send_len : 0;
	client->in_flight = 1;
	ecp_transport_start(client->transport, client->pending_send_len);
	return ECP_HTTP_OK;

out:
	if (client)
	{
		client->pending_headers = headers;
		client->pending_compressed = compressed;
	}
	end_request(client, resp, start);
	return outcome;
}

EcpHttpOutcome
ecp_http_finish(EcpHttpClient *client, EcpHttpResponse *resp)
{
	EcpHttpOutcome outcome = ECP_HTTP_OK;
	CURLcode	rc;

	if (client == NULL || !client->in_flight)
	{
		snprintf(resp->error, sizeof(resp->error), "no request in flight");
		return ECP_HTTP_SETUP;
	}
	rc = complete_transfer(client, resp);
	resp->body_bytes_sent = (size_t) ecp_transport_bytes_sent(client->transport);
	if (rc == CURLE_OK)
	{
		if (client->buf.data && client->buf.len > 0)
		{
			/* hand the buffer over; shrink it if it is mostly empty */
			if (client->buf.cap > 2 * (client->buf.len + 1) + 4096)
			{
				char	   *copy = malloc(client->buf.len + 1);

				if (copy)
				{
					memcpy(copy, client->buf.data, client->buf.len + 1);
					resp->body = copy;
				}
			}
			if (resp->body == NULL)
			{
				resp->body = client->buf.data;
				client->buf.data = NULL;
				client->buf.cap = 0;
			}
			resp->body_len = client->buf.len;
		}
	}
	else
	{
		resp->status = 0;
		free(resp->content_type);
		resp->content_type = NULL;
		outcome = classify_failure(client, rc, resp);
		scrub_error(client, client->pending_url ? client->pending_url : "", resp);
	}
	/* never keep a big buffer between requests */
	if (client->buf.cap > 65536)
	{
		free(client->buf.data);
		client->buf.data = NULL;
		client->buf.cap = 0;
	}
	client->buf.len = 0;
	end_request(client, resp, client->pending_start);
	return outcome;
}
