/*
 * http_transport.c: libcurl's easy and multi handles for the HTTP client
 * and the file reader (see http_transport.h).
 *
 * The multi handle with a POLL_INTERVAL_MS poll rather than
 * curl_easy_perform: the easy interface only wakes about once a second
 * while a server is silent, so a pause/cancel/shutdown could wait that
 * long.  The multi handle owns the connection cache, so a kept-alive
 * connection survives between transfers (curl_easy_reset keeps it too).
 * Nothing here calls exit/abort/longjmp; every path frees what it
 * allocated.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "http_transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define POLL_INTERVAL_MS 100
/* writes of one upload buffer each, at most, before ecp_transport_start returns */
#define MAX_PUSH_ROUNDS 4096

struct EcpTransport
{
	CURLM	   *multi;
	CURL	   *easy;
	long		connect_timeout_ms;
	char	   *user_agent;
	char	   *ca_file;
	int			insecure;
	int			(*should_abort) (void *arg);
	void	   *abort_arg;
	EcpAddressFilter allow_address;
	void	   *address_arg;
	/* the caller's body callback */
	curl_write_callback write_body;
	void	   *write_arg;
	/* per transfer */
	int			added;			/* easy is in multi */
	int			paused;			/* the body callback paused the transfer */
	int			aborted;
	int			done;			/* curl reported DONE (or the pump gave up) */
	CURLcode	result;
	double		last_byte_ms;	/* for the idle timeout */
	char		errbuf[CURL_ERROR_SIZE];
	char		target_host[ECP_TRANSPORT_MAX_HOST];	/* the URL's host, for allow_address */
	int			target_port;
	char		refused[ECP_TRANSPORT_ERROR_SIZE];	/* allow_address said no: why */
};

static int	global_done = 0;

int
ecp_transport_global_init(char *err, size_t errlen)
{
	CURLcode	rc;

	if (global_done)
		return 0;
	rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "curl_global_init failed: %s", curl_easy_strerror(rc));
		return -1;
	}
	global_done = 1;
	return 0;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec * 1000.0 + (double) ts.tv_nsec / 1e6;
}

/* A copy of s (NULL or "" stays NULL); 0, or -1 when out of memory. */
static int
copy_option(char **dst, const char *s)
{
	size_t		n;

	*dst = NULL;
	if (s == NULL || s[0] == '\0')
		return 0;
	n = strlen(s);
	*dst = malloc(n + 1);
	if (*dst == NULL)
		return -1;
	memcpy(*dst, s, n + 1);
	return 0;
}

EcpTransport *
ecp_transport_create(const EcpTransportConfig *cfg, char *err, size_t errlen)
{
	EcpTransport *t = calloc(1, sizeof(EcpTransport));

	if (t == NULL || copy_option(&t->user_agent, cfg->user_agent) != 0 ||
		copy_option(&t->ca_file, cfg->ca_file) != 0)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "out of memory");
		ecp_transport_destroy(t);
		return NULL;
	}
	t->connect_timeout_ms = cfg->connect_timeout_ms > 0 ?
		cfg->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
	t->insecure = cfg->insecure;
	t->should_abort = cfg->should_abort;
	t->abort_arg = cfg->abort_arg;
	t->allow_address = cfg->allow_address;
	t->address_arg = cfg->address_arg;
	t->multi = curl_multi_init();
	t->easy = curl_easy_init();
	if (t->multi == NULL || t->easy == NULL)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "could not create a curl handle (out of memory?)");
		ecp_transport_destroy(t);
		return NULL;
	}
	return t;
}

void
ecp_transport_end(EcpTransport *t)
{
	/* an unfinished transfer's connection is closed here, never reused */
	if (t->added)
		curl_multi_remove_handle(t->multi, t->easy);
	t->added = 0;
}

void
ecp_transport_destroy(EcpTransport *t)
{
	if (t == NULL)
		return;
	if (t->easy)
	{
		ecp_transport_end(t);
		curl_easy_cleanup(t->easy);
	}
	if (t->multi)
		curl_multi_cleanup(t->multi);
	free(t->user_agent);
	free(t->ca_file);
	free(t);
}

static int
asks_abort(EcpTransport *t)
{
	return t->should_abort && t->should_abort(t->abort_arg);
}

static int
progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	EcpTransport *t = arg;

	(void) dltotal;
	(void) dlnow;
	(void) ultotal;
	(void) ulnow;
	if (asks_abort(t))
	{
		t->aborted = 1;
		return 1;
	}
	return 0;
}

/* CURLOPT_WRITEFUNCTION: the caller's, noting the byte and a pause. */
static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	EcpTransport *t = arg;
	size_t		n = t->write_body(ptr, size, nmemb, t->write_arg);

	t->last_byte_ms = now_ms();
	if (n == CURL_WRITEFUNC_PAUSE)
		t->paused = 1;
	return n;
}

/*
 * CURLOPT_OPENSOCKETFUNCTION: ask allow_address about every address curl
 * is about to connect to (each of a name's addresses, each attempt); a
 * refusal gives curl no socket, so nothing is sent there.
 */
static curl_socket_t
open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *address)
{
	EcpTransport *t = arg;
	char		why[ECP_TRANSPORT_ERROR_SIZE];
	int			type = address->socktype;

	(void) purpose;
	why[0] = '\0';
	if (!t->allow_address(&address->addr, (socklen_t) address->addrlen,
						  t->target_host, t->target_port, why, sizeof(why), t->address_arg))
	{
		if (t->refused[0] == '\0')
			snprintf(t->refused, sizeof(t->refused), "%s",
					 why[0] ? why : "the address filter refused every address of the host");
		return CURL_SOCKET_BAD;
	}
#ifdef SOCK_CLOEXEC
	type |= SOCK_CLOEXEC;		/* never inherited by a program the worker runs */
#endif
	return socket(address->family, type, address->protocol);
}

/*
 * The host and port curl will connect to for url, as curl reads it, for
 * allow_address; -1 when curl cannot parse the URL.
 */
static int
read_target(EcpTransport *t, const char *url)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	char	   *port = NULL;
	int			rc = -1;

	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
		strlen(host) < sizeof(t->target_host))
	{
		snprintf(t->target_host, sizeof(t->target_host), "%s", host);
		t->target_port = atoi(port);
		rc = 0;
	}
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}

/* The outbound policy: every option that applies to every transfer. */
static void
set_common_options(EcpTransport *t)
{
	CURL	   *curl = t->easy;

	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
	curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	/* a redirect could lead past allow_address's idea of the host */
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, t->connect_timeout_ms);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, 15L);
	curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, t);
	if (t->user_agent)
		curl_easy_setopt(curl, CURLOPT_USERAGENT, t->user_agent);
	if (t->ca_file)
		curl_easy_setopt(curl, CURLOPT_CAINFO, t->ca_file);
	if (t->insecure)
	{
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (t->allow_address)
	{
		curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, open_socket);
		curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, t);
	}
}

CURL *
ecp_transport_prepare(EcpTransport *t, const char *url,
					  curl_write_callback write_body, void *write_arg,
					  char *err, size_t errlen)
{
	ecp_transport_end(t);
	/* fresh options; the connection cache (in the multi handle) stays */
	curl_easy_reset(t->easy);
	t->errbuf[0] = '\0';
	t->refused[0] = '\0';
	t->aborted = 0;
	t->paused = 0;
	t->done = 0;
	t->result = CURLE_OK;
	t->write_body = write_body;
	t->write_arg = write_arg;
	if (t->allow_address && read_target(t, url) != 0)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "the URL cannot be parsed");
		return NULL;
	}
	set_common_options(t);
	curl_easy_setopt(t->easy, CURLOPT_URL, url);
	return t->easy;
}

/* Collect curl's DONE message for our handle, if it came. */
static void
read_done_message(EcpTransport *t)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(t->multi, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == t->easy)
		{
			t->result = msg->data.result;
			t->done = 1;
		}
}

/* End the transfer with result and an error text of ours. */
static void
give_up(EcpTransport *t, CURLcode result, const char *what, const char *why)
{
	snprintf(t->errbuf, sizeof(t->errbuf), "%s%s%s", what, why ? ": " : "", why ? why : "");
	t->result = result;
	t->done = 1;
}

curl_off_t
ecp_transport_bytes_sent(EcpTransport *t)
{
	curl_off_t	sent = 0;

	if (curl_easy_getinfo(t->easy, CURLINFO_SIZE_UPLOAD_T, &sent) != CURLE_OK)
		return 0;
	return sent;
}

/*
 * curl writes one upload buffer per curl_multi_perform call; a single call
 * would leave all but the first buffer of a body to the pump, and no
 * overlap of the server's work with the caller's at all.
 */
void
ecp_transport_start(EcpTransport *t, curl_off_t send_len)
{
	CURLMcode	mc;
	int			running;

	mc = curl_multi_add_handle(t->multi, t->easy);
	if (mc != CURLM_OK)
	{
		give_up(t, CURLE_OUT_OF_MEMORY, "curl_multi_add_handle", curl_multi_strerror(mc));
		return;
	}
	t->added = 1;
	for (int round = 0; round < MAX_PUSH_ROUNDS; round++)
	{
		curl_off_t	sent_before = ecp_transport_bytes_sent(t);
		int			ready = 1;

		/* after the first call: only while the socket takes more */
		if (round > 0)
			mc = curl_multi_wait(t->multi, NULL, 0, 0, &ready);
		if (mc == CURLM_OK && ready > 0)
			mc = curl_multi_perform(t->multi, &running);
		if (mc != CURLM_OK)
		{
			give_up(t, CURLE_RECV_ERROR, "curl_multi_perform", curl_multi_strerror(mc));
			return;
		}
		read_done_message(t);
		if (t->done || running == 0 || ready == 0 ||
			ecp_transport_bytes_sent(t) >= send_len ||
			(round > 0 && ecp_transport_bytes_sent(t) == sent_before))
			break;
	}
}

/* One wait of at most POLL_INTERVAL_MS and what curl can do then. */
static void
pump_once(EcpTransport *t)
{
	CURLMcode	mc;
	int			running = 1;

#if LIBCURL_VERSION_NUM >= 0x074200
	mc = curl_multi_poll(t->multi, NULL, 0, POLL_INTERVAL_MS, NULL);
#else
	mc = curl_multi_wait(t->multi, NULL, 0, POLL_INTERVAL_MS, NULL);
#endif
	if (mc == CURLM_OK)
		mc = curl_multi_perform(t->multi, &running);
	if (mc != CURLM_OK)
	{
		give_up(t, CURLE_RECV_ERROR, "curl_multi_perform", curl_multi_strerror(mc));
		return;
	}
	read_done_message(t);
	if (!t->done && running == 0)
		give_up(t, CURLE_RECV_ERROR, "transfer ended without a result", NULL);	/* should not happen */
}

EcpPumpResult
ecp_transport_pump(EcpTransport *t, int (*ready) (void *arg), void *ready_arg,
				   long idle_timeout_ms)
{
	/* time the caller spent while the transfer was paused is not the server's */
	t->last_byte_ms = now_ms();
	for (;;)
	{
		if (ready && ready(ready_arg))
			return ECP_PUMP_READY;
		if (t->aborted)			/* the progress callback ended it */
			return ECP_PUMP_ABORTED;
		if (t->done)
			return ECP_PUMP_DONE;
		if (asks_abort(t))
		{
			t->aborted = 1;
			return ECP_PUMP_ABORTED;
		}
		if (t->paused)
		{
			/* the caller has room again; curl may hand data over right here */
			t->paused = 0;
			if (curl_easy_pause(t->easy, CURLPAUSE_CONT) != CURLE_OK)
				give_up(t, CURLE_RECV_ERROR, "could not resume the paused transfer", NULL);
			continue;
		}
		if (idle_timeout_ms > 0 && now_ms() - t->last_byte_ms > (double) idle_timeout_ms)
			return ECP_PUMP_IDLE;
		pump_once(t);
	}
}

void
ecp_transport_saw_bytes(EcpTransport *t)
{
	t->last_byte_ms = now_ms();
}

CURL *
ecp_transport_easy(EcpTransport *t)
{
	return t->easy;
}

CURLcode
ecp_transport_result(const EcpTransport *t)
{
	return t->result;
}

const char *
ecp_transport_error(const EcpTransport *t)
{
	return t->errbuf;
}

const char *
ecp_transport_refused(const EcpTransport *t)
{
	return t->refused;
}

int
ecp_transport_aborted(const EcpTransport *t)
{
	return t->aborted;
}

int
ecp_transport_should_abort(EcpTransport *t)
{
	return asks_abort(t);
}
