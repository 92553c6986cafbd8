/*
 * http_transport_test.c: src/http_transport.c against a socket this test
 * holds itself (no other process): the address filter's refusal and what
 * it is told, a URL the filter cannot be told about, the idle limit and
 * should_abort on a silent server, the common options on the wire
 * (User-Agent), and a redirect that is not followed.
 */
#include "http_transport.h"
#include "tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct FilterSeen
{
	int			allow;
	int			calls;
	char		host[64];
	int			port;
} FilterSeen;

static int
filter(const struct sockaddr *addr, socklen_t addrlen, const char *host, int port,
	   char *why, size_t whylen, void *arg)
{
	FilterSeen *seen = arg;

	(void) addr;
	(void) addrlen;
	seen->calls++;
	snprintf(seen->host, sizeof(seen->host), "%s", host);
	seen->port = port;
	if (!seen->allow)
		snprintf(why, whylen, "test filter refuses %s:%d", host, port);
	return seen->allow;
}

static size_t
count_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	(void) ptr;
	*(size_t *) arg += size * nmemb;
	return size * nmemb;
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int
abort_after(void *arg)
{
	return now_seconds() >= *(double *) arg;
}

/* A listening socket on 127.0.0.1 that answers nothing unless told to. */
static int
listen_local(int *port)
{
	struct sockaddr_in sa;
	socklen_t	len = sizeof(sa);
	int			fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0 || listen(fd, 8) != 0 ||
		getsockname(fd, (struct sockaddr *) &sa, &len) != 0)
		return -1;
	*port = ntohs(sa.sin_port);
	return fd;
}

/*
 * The request on the next connection (waits up to 5 s; "" if none came);
 * returns the connection, left open (or -1).
 */
static int
read_request(int listener, char *buf, size_t cap)
{
	struct pollfd pfd = {listener, POLLIN, 0};
	size_t		got = 0;
	int			conn;

	buf[0] = '\0';
	if (poll(&pfd, 1, 5000) != 1 || (conn = accept(listener, NULL, NULL)) < 0)
		return -1;
	pfd.fd = conn;
	while (got + 1 < cap && !strstr(buf, "\r\n\r\n") && poll(&pfd, 1, 5000) == 1)
	{
		ssize_t		n = recv(conn, buf + got, cap - 1 - got, 0);

		if (n <= 0)
			break;
		got += (size_t) n;
		buf[got] = '\0';
	}
	return conn;
}

static EcpTransport *
make_transport(FilterSeen *seen, double *deadline)
{
	EcpTransportConfig cfg;
	char		err[256];
	EcpTransport *t;

	memset(&cfg, 0, sizeof(cfg));
	cfg.connect_timeout_ms = 2000;
	cfg.user_agent = "ecp-test/1";
	cfg.allow_address = filter;
	cfg.address_arg = seen;
	if (deadline)
	{
		cfg.should_abort = abort_after;
		cfg.abort_arg = deadline;
	}
	t = ecp_transport_create(&cfg, err, sizeof(err));
	if (t == NULL)
		diag("ecp_transport_create: %s", err);
	return t;
}

static void
test_refused(int port)
{
	FilterSeen	seen = {0, 0, "", 0};
	EcpTransport *t = make_transport(&seen, NULL);
	size_t		body = 0;
	char		url[64];
	char		err[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", port);
	ok(ecp_transport_prepare(t, "http://[::1/x", count_body, &body, err, sizeof(err)) == NULL &&
	   contains(err, "cannot be parsed"), "a URL the filter cannot be told about is refused: %s", err);
	ok(ecp_transport_prepare(t, url, count_body, &body, err, sizeof(err)) != NULL, "prepared %s", url);
	ecp_transport_start(t, 0);
	ok(ecp_transport_pump(t, NULL, NULL, 5000) == ECP_PUMP_DONE, "a refused address ends the transfer");
	ok(ecp_transport_result(t) != CURLE_OK, "with a curl error (%d)", (int) ecp_transport_result(t));
	ok(seen.calls >= 1 && strcmp(seen.host, "127.0.0.1") == 0 && seen.port == port,
	   "the filter was told the URL's host and port (%s:%d)", seen.host, seen.port);
	ok(contains(ecp_transport_refused(t), "test filter refuses 127.0.0.1"),
	   "the refusal says why: %s", ecp_transport_refused(t));
	ecp_transport_destroy(t);
}

static void
test_silent_server(int listener, int port)
{
	FilterSeen	seen = {1, 0, "", 0};
	double		deadline = now_seconds() + 3600;
	EcpTransport *t = make_transport(&seen, &deadline);
	size_t		body = 0;
	char		url[64];
	char		request[4096];
	double		start;
	EcpPumpResult res;
	int			conn;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/silent", port);
	ecp_transport_prepare(t, url, count_body, &body, NULL, 0);
	ecp_transport_start(t, 0);
	start = now_seconds();
	res = ecp_transport_pump(t, NULL, NULL, 300);
	ok(res == ECP_PUMP_IDLE && now_seconds() - start >= 0.29 && now_seconds() - start < 5,
	   "a silent server: idle after %.2f s (limit 0.3 s)", now_seconds() - start);
	/* held open: a closed connection would end the transfer before the abort */
	conn = read_request(listener, request, sizeof(request));
	ok(contains(request, "GET /silent HTTP/1.1") && contains(request, "User-Agent: ecp-test/1"),
	   "the request went out with the User-Agent");
	deadline = now_seconds() + 0.2;
	start = now_seconds();
	res = ecp_transport_pump(t, NULL, NULL, 0);
	ok(res == ECP_PUMP_ABORTED && ecp_transport_aborted(t) && now_seconds() - start < 5,
	   "should_abort ends the wait after %.2f s (asked to at 0.2 s)", now_seconds() - start);
	ecp_transport_destroy(t);
	if (conn >= 0)
		close(conn);
}

static void
test_redirect_not_followed(int listener, int port)
{
	FilterSeen	seen = {1, 0, "", 0};
	EcpTransport *t = make_transport(&seen, NULL);
	size_t		body = 0;
	char		url[64];
	char		answer[256];
	long		status = 0;
	int			conn;
	struct pollfd pfd = {listener, POLLIN, 0};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/from", port);
	ecp_transport_prepare(t, url, count_body, &body, NULL, 0);
	ecp_transport_start(t, 0);
	if (poll(&pfd, 1, 5000) != 1 || (conn = accept(listener, NULL, NULL)) < 0)
	{
		ok(0, "the client connected");
		ecp_transport_destroy(t);
		return;
	}
	snprintf(answer, sizeof(answer),
			 "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/to\r\nConnection: close\r\n"
			 "Content-Length: 4\r\n\r\nmove", port);
	if (send(conn, answer, strlen(answer), 0) < 0)
		diag("send: %s", strerror(errno));
	ok(ecp_transport_pump(t, NULL, NULL, 5000) == ECP_PUMP_DONE &&
	   ecp_transport_result(t) == CURLE_OK, "the 302 answer ends the transfer");
	curl_easy_getinfo(ecp_transport_easy(t), CURLINFO_RESPONSE_CODE, &status);
	ok(status == 302 && body == 4, "status %ld, body of %zu bytes, handed to the callback", status, body);
	ecp_transport_end(t);
	close(conn);
	fcntl(listener, F_SETFL, O_NONBLOCK);
	pfd.revents = 0;
	ok(poll(&pfd, 1, 300) == 0, "no request for the Location");
	ecp_transport_destroy(t);
}

int
main(void)
{
	char		err[256];
	int			port = 0;
	int			listener;

	if (ecp_transport_global_init(err, sizeof(err)) != 0)
	{
		ok(0, "curl_global_init: %s", err);
		return tap_done();
	}
	listener = listen_local(&port);
	if (!ok(listener >= 0, "listening on 127.0.0.1:%d", port))
		return tap_done();
	test_refused(port);
	test_silent_server(listener, port);
	test_redirect_not_followed(listener, port);
	close(listener);
	curl_global_cleanup();
	return tap_done();
}
