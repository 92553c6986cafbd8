/*
 * http_transport.h: the one place that sets up libcurl (http_transport.c).
 *
 * The ES/write-service client (http_client.c) and the file reader
 * (file_reader.c) both go out through it, so the outbound policy is set in
 * one function: http/https only (redirects too), redirects not followed,
 * HTTP/1.1, timeouts, TLS (CA file, insecure), TCP keep-alive and
 * TCP_NODELAY, the User-Agent, progress-callback abort, and the
 * connect-time address filter.  A transport is one easy handle driven by a
 * private multi handle (which holds the kept-alive connection between
 * requests), pumped with a POLL_INTERVAL_MS poll so should_abort is asked
 * that often while a server is silent.
 *
 * Plain C99 + libcurl, no PostgreSQL headers: it never ereports, longjmps,
 * exits or aborts.  Not thread-safe: one transport per thread.
 */
#ifndef ECP_HTTP_TRANSPORT_H
#define ECP_HTTP_TRANSPORT_H

#include <stddef.h>
#include <sys/socket.h>

#include <curl/curl.h>

/* the longest host name the address filter is told about, its NUL included */
#define ECP_TRANSPORT_MAX_HOST 256

/* room for a refusal of the address filter, which names host and role */
#define ECP_TRANSPORT_ERROR_SIZE 512

/*
 * Asked before every connect(), with the address curl is about to connect
 * to and the URL's host (as curl parsed it) and port; zero refuses that
 * address: curl gets no socket for it, and why says why (a configuration
 * error, never retried as transient).  This is where a policy holds against
 * DNS rebinding: the address checked is the one connected to.  Must not
 * longjmp.
 */
typedef int (*EcpAddressFilter) (const struct sockaddr *addr, socklen_t addrlen,
								 const char *host, int port,
								 char *why, size_t whylen, void *arg);

/* What every outbound request of a client or a file source shares. */
typedef struct EcpTransportConfig
{
	long		connect_timeout_ms; /* <= 0: 5000 */
	const char *user_agent;		/* or NULL (no User-Agent header) */
	const char *ca_file;		/* CA bundle for https, NULL: system default */
	int			insecure;		/* skip TLS verification (tests only) */

	/*
	 * Polled at least every 100 ms while a transfer runs (and whenever data
	 * moves); nonzero abandons it.  Must be cheap and must not longjmp.  May
	 * be NULL.
	 */
	int			(*should_abort) (void *arg);
	void	   *abort_arg;

	EcpAddressFilter allow_address; /* NULL: any address */
	void	   *address_arg;
} EcpTransportConfig;

typedef struct EcpTransport EcpTransport;

/* How ecp_transport_pump returned. */
typedef enum EcpPumpResult
{
	ECP_PUMP_READY = 0,			/* the caller's ready() said so */
	ECP_PUMP_DONE,				/* the transfer ended: see ecp_transport_result */
	ECP_PUMP_ABORTED,			/* should_abort asked for it */
	ECP_PUMP_IDLE				/* no byte for idle_timeout_ms */
} EcpPumpResult;

/* curl_global_init once per process; 0 on success, else -1 and err. */
extern int	ecp_transport_global_init(char *err, size_t errlen);

/* NULL on failure (err says why).  cfg's strings are copied. */
extern EcpTransport *ecp_transport_create(const EcpTransportConfig *cfg, char *err, size_t errlen);

/* Ends a transfer still running and frees t; NULL is a no-op. */
extern void ecp_transport_destroy(EcpTransport *t);

/*
 * Fresh options for the next transfer to url (the kept-alive connection
 * stays): every common option, the address filter's target, and the body
 * callback (write_body(ptr, size, nmemb, write_arg), curl's
 * CURLOPT_WRITEFUNCTION contract, CURL_WRITEFUNC_PAUSE included).  Returns
 * the easy handle for the request's own options, or NULL when the URL
 * cannot be parsed for the address filter (err says so).
 */
extern CURL *ecp_transport_prepare(EcpTransport *t, const char *url,
								   curl_write_callback write_body, void *write_arg,
								   char *err, size_t errlen);

/*
 * Hand the transfer to the multi handle and write as much of a request
 * body of send_len bytes as the socket takes now, without waiting (so the
 * server works on it while the caller does something else).  A failure
 * here ends the transfer (ECP_PUMP_DONE at the next pump).
 */
extern void ecp_transport_start(EcpTransport *t, curl_off_t send_len);

/*
 * Drive the transfer until ready(ready_arg) says so (ready may be NULL:
 * until it ends), it ends, should_abort asks, or no byte came for
 * idle_timeout_ms (<= 0: no idle limit; the clock starts at this call).
 * A paused transfer (the body callback returned CURL_WRITEFUNC_PAUSE) is
 * resumed first.
 */
extern EcpPumpResult ecp_transport_pump(EcpTransport *t, int (*ready) (void *arg),
										void *ready_arg, long idle_timeout_ms);

/* Tell the pump that a byte came (for callbacks other than the body's). */
extern void ecp_transport_saw_bytes(EcpTransport *t);

/* Asks should_abort now (nonzero: the caller wants the transfer abandoned). */
extern int	ecp_transport_should_abort(EcpTransport *t);

/* Take the transfer out of the multi handle (a finished connection stays cached). */
extern void ecp_transport_end(EcpTransport *t);

extern CURL *ecp_transport_easy(EcpTransport *t);

/* The ended transfer's CURLcode (CURLE_OK while it runs). */
extern CURLcode ecp_transport_result(const EcpTransport *t);

/* curl's error text for the transfer, "" when it has none. */
extern const char *ecp_transport_error(const EcpTransport *t);

/* Why the address filter refused, "" when it did not. */
extern const char *ecp_transport_refused(const EcpTransport *t);

/* Did should_abort abandon the transfer? */
extern int	ecp_transport_aborted(const EcpTransport *t);

/* Request body bytes written to the connection so far. */
extern curl_off_t ecp_transport_bytes_sent(EcpTransport *t);

#endif							/* ECP_HTTP_TRANSPORT_H */
