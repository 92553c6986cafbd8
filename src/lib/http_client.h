/*
 * http_client.h: a small libcurl client for one worker process.
 *
 * Plain C99, no PostgreSQL headers: it never ereports, longjmps, exits or
 * aborts, and reports errors through return values and the response's
 * error buffer.  One client (one easy handle driven by a private multi
 * handle) is created per worker and reused, so the connection is kept
 * alive across requests.  Not thread-safe: one client per thread.
 */
#ifndef ECP_HTTP_CLIENT_H
#define ECP_HTTP_CLIENT_H

#include <stddef.h>
#include <sys/socket.h>

/* room for a refusal of the address filter, which names host and role */
#define ECP_HTTP_ERROR_SIZE 512

typedef struct EcpHttpClient EcpHttpClient;

/*
 * connect_timeout_ms, user_agent, ca_file, insecure, should_abort and
 * allow_address (with their args) are the transport's options
 * (EcpTransportConfig, src/http_transport.h), copied into it; they stay
 * flat here so that callers need not include libcurl's header.
 */
typedef struct EcpHttpConfig
{
	long		connect_timeout_ms; /* <= 0: 5000 */
	long		request_timeout_ms; /* total per request; <= 0: 60000 */
	const char *auth_header;	/* value of Authorization ("Basic ...",
								 * "ApiKey ...", "Bearer ..."), or NULL */
	const char *user_agent;		/* or NULL */
	size_t		max_response_bytes; /* larger bodies -> ECP_HTTP_TOO_LARGE;
									 * 0: 64 MiB */
	int			gzip_requests;	/* send bodies with Content-Encoding: gzip */
	const char *ca_file;		/* CA bundle for https, NULL: system default */
	int			insecure;		/* skip TLS verification (tests only) */

	/*
	 * Polled at least every 100 ms while a request runs (and whenever data
	 * moves); nonzero abandons the request (ECP_HTTP_ABORTED).  Must be cheap
	 * and must not longjmp.  May be NULL.
	 */
	int			(*should_abort) (void *arg);
	void	   *abort_arg;

	/*
	 * Asked before every connect(), with the address curl is about to
	 * connect to and the URL's host (as curl parsed it) and port; zero
	 * refuses that address: curl gets no socket for it, and when the request
	 * fails the outcome is ECP_HTTP_SETUP with why (a configuration error,
	 * never retried as transient).  This is where a policy holds against DNS
	 * rebinding: the address checked is the one connected to.  Must not
	 * longjmp.  May be NULL (any address).
	 */
	int			(*allow_address) (const struct sockaddr *addr, socklen_t addrlen,
								  const char *host, int port,
								  char *why, size_t whylen, void *arg);
	void	   *address_arg;
} EcpHttpConfig;

typedef enum EcpHttpOutcome
{
	ECP_HTTP_OK = 0,			/* an HTTP status arrived (any status) */
	ECP_HTTP_TRANSPORT,			/* refused/reset/timeout/DNS/TLS handshake:
								 * transient */
	ECP_HTTP_ABORTED,			/* should_abort asked for it */
	ECP_HTTP_TOO_LARGE,			/* response over max_response_bytes */
	ECP_HTTP_SETUP				/* bad URL, method, header, CA file or
								 * certificate, or every address refused by
								 * allow_address: a configuration error */
} EcpHttpOutcome;

typedef struct EcpHttpResponse
{
	long		status;			/* HTTP status when ECP_HTTP_OK, else 0 */
	char	   *body;			/* malloc'd, NUL-terminated, "" for HEAD and
								 * for outcomes other than ECP_HTTP_OK (NULL
								 * only if out of memory); free with
								 * ecp_http_response_free */
	size_t		body_len;
	char	   *content_type;	/* malloc'd or NULL */
	char		error[ECP_HTTP_ERROR_SIZE];	/* why, for outcomes other than ECP_HTTP_OK;
								 * never holds credentials */
	double		seconds;		/* wall time of the request */
	int			connection_lost;	/* ECP_HTTP_TRANSPORT because the server
									 * closed or reset the connection before
									 * any answer came (not a refusal, a
									 * timeout, a DNS or TLS failure, or an
									 * answer cut short) */
	size_t		body_bytes_sent;	/* request body bytes written to the
									 * connection (after gzip), also when it
									 * failed */
	long		new_connections;	/* connections opened for it: 0 when a
									 * kept-alive one was reused */
} EcpHttpResponse;

/* curl_global_init once per process; 0 on success, else -1 and err. */
extern int	ecp_http_global_init(char *err, size_t errlen);

/* NULL on failure (err says why).  cfg's strings are copied. */
extern EcpHttpClient *ecp_http_client_create(const EcpHttpConfig *cfg, char *err, size_t errlen);

/*
 * method: GET, HEAD (no body read), POST, PUT, DELETE or another token.
 * body may be NULL (POST/PUT then send an empty body).  extra_headers: a
 * NULL-terminated list of "Name: value" lines, or NULL; an Accept or
 * Content-Type line there replaces the default.  resp is always filled in
 * (free it with ecp_http_response_free whatever the outcome).
 */
extern EcpHttpOutcome ecp_http_request(EcpHttpClient *client, const char *method, const char *url,
									   const char *content_type, const char *body, size_t body_len,
									   const char *const *extra_headers, EcpHttpResponse *resp);

/*
 * The same request in two steps, so the caller can work while it runs:
 * ecp_http_begin hands curl the request and returns at once (ECP_HTTP_OK:
 * started; anything else: it already failed, resp says why, and there is
 * nothing to finish).  ecp_http_finish waits for the answer and fills
 * resp.  body must stay valid until ecp_http_finish returns; one request
 * in flight per client.
 */
extern EcpHttpOutcome ecp_http_begin(EcpHttpClient *client, const char *method, const char *url,
									 const char *content_type, const char *body, size_t body_len,
									 const char *const *extra_headers, EcpHttpResponse *resp);
extern EcpHttpOutcome ecp_http_finish(EcpHttpClient *client, EcpHttpResponse *resp);

/*
 * The largest answer the client's next requests may read: a caller that
 * knows an answer is small caps it lower than max_response_bytes, so a
 * server cannot make it hold more (0: max_response_bytes again).  A larger
 * answer fails with ECP_HTTP_TOO_LARGE as soon as its Content-Length or its
 * bytes pass the cap.  Not while a request is in flight.
 */
extern void ecp_http_set_max_response(EcpHttpClient *client, size_t max_bytes);

/* Frees body and content_type; safe on a zeroed or already freed response. */
extern void ecp_http_response_free(EcpHttpResponse *resp);

/* Closes the kept-alive connection; NULL is a no-op. */
extern void ecp_http_client_destroy(EcpHttpClient *client);

#endif
