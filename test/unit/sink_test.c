/*
 * sink_test.c: unit tests for src/bulk_response.c and src/http_client.c.
 *
 * Prints TAP.  The parser tests need nothing; the HTTP tests start esd
 * (path in $ESD_BIN) on an ephemeral port and stop it on exit.  Exit status
 * is 0 only when every test passed.
 *
 *   ESD_BIN=test/esd/esd test/unit/sink_test
 *
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <curl/curl.h>
#include <jansson.h>

#include "bulk_response.h"
#include "http_client.h"

/* ---------------------------------------------------------------- TAP */

static int	test_count = 0;
static const char *name_prefix = "";
static int	fail_count = 0;

static int	ok(int cond, const char *fmt,...) __attribute__((format(printf, 2, 3)));
static void diag(const char *fmt,...) __attribute__((format(printf, 1, 2)));

static int
ok(int cond, const char *fmt,...)
{
	va_list		ap;

	test_count++;
	if (!cond)
		fail_count++;
	printf("%sok %d - %s", cond ? "" : "not ", test_count, name_prefix);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return cond;
}

static void
diag(const char *fmt,...)
{
	va_list		ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void
skip(const char *why)
{
	test_count++;
	printf("ok %d # SKIP %s\n", test_count, why);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/*
 * Elapsed-time bounds are checked only when UNIT_NO_PERF is unset: run.sh
 * sets it under valgrind, which slows everything down tens of times.  The
 * outcome checks next to them run in both cases.
 */
static int
timing_checks(void)
{
	const char *v = getenv("UNIT_NO_PERF");

	return v == NULL || v[0] == '\0';
}

static int
streq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

static int
contains(const char *hay, const char *needle)
{
	return hay && needle && strstr(hay, needle) != NULL;
}

/* Is s valid UTF-8? */
static int
valid_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *) s;

	while (*p)
	{
		int			n;

		if (*p < 0x80)
			n = 0;
		else if ((*p & 0xE0) == 0xC0)
			n = 1;
		else if ((*p & 0xF0) == 0xE0)
			n = 2;
		else if ((*p & 0xF8) == 0xF0)
			n = 3;
		else
			return 0;
		p++;
		while (n-- > 0)
		{
			if ((*p & 0xC0) != 0x80)
				return 0;
			p++;
		}
	}
	return 1;
}

/* ------------------------------------------------------- parser tests */

static int
parse(const char *body, int expected, const char *op, int flags, EcpBulkResult *r,
	  char *err, size_t errlen)
{
	return ecp_bulk_parse(body, strlen(body), expected, op, flags, r, err, errlen);
}

/*
 * What only the cluster's setup can cause stops the run (ECP_ITEM_CONFIG):
 * per-item 403 for privileges or a write block, a missing index (also for
 * a delete), an alias without a write index.  A document that is merely
 * not there for a delete stays fine.
 */
static void
test_config_items(void)
{
	EcpBulkResult r;
	char		err[256];
	int			rc;
	const char *denied =
	"{\"errors\":true,\"items\":[{\"index\":{\"status\":201}},"
	"{\"index\":{\"status\":403,\"error\":{\"type\":\"security_exception\","
	"\"reason\":\"action [indices:data/write/bulk[s]] is unauthorized for user [app] with effective roles [reader] "
	"on indices [orders], this action is granted by the index privileges [create_doc,create,delete,index,write,all]\"}}},"
	"{\"index\":{\"status\":400,\"error\":{\"type\":\"document_parsing_exception\",\"reason\":\"bad\"}}},"
	"{\"index\":{\"status\":403,\"error\":{\"type\":\"security_exception\",\"reason\":\"again\"}}}]}";
	const char *blocked =
	"{\"errors\":true,\"items\":[{\"delete\":{\"status\":403,\"error\":{\"type\":\"cluster_block_exception\","
	"\"reason\":\"index [orders] blocked by: [FORBIDDEN/8/index write (api)];\"}}}]}";
	const char *gone_index =
	"{\"errors\":true,\"items\":[{\"delete\":{\"status\":404,\"error\":{\"type\":\"index_not_found_exception\","
	"\"reason\":\"no such index [ordrs]\"}}},{\"delete\":{\"status\":404}}]}";
	const char *no_writer =
	"{\"errors\":true,\"items\":[{\"index\":{\"status\":400,\"error\":{\"type\":\"illegal_argument_exception\","
	"\"reason\":\"no write index is defined for alias [orders]. The write index may be explicitly disabled using "
	"is_write_index=false or the alias points to multiple indices without one being designated as a write index\"}}}]}";

	rc = parse(denied, 4, "index", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.items[1].klass == ECP_ITEM_CONFIG && r.items[3].klass == ECP_ITEM_CONFIG &&
	   r.items[2].klass == ECP_ITEM_DATA_ERROR && r.n_config == 2 && r.first_config == 1 &&
	   r.n_ok == 1 && r.n_data_error == 1 && contains(r.items[1].reason, "unauthorized for user [app]"),
	   "per-item 403 security_exception is a configuration failure (2 of 4, first at 1)");
	ok(rc == 0 && streq(ecp_bulk_config_hint(&r.items[1], "index"),
						"grant the user write/index privileges on the index"),
	   "... with the privileges hint");
	ecp_bulk_result_free(&r);

	rc = parse(blocked, 1, "delete", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.items[0].klass == ECP_ITEM_CONFIG &&
	   contains(ecp_bulk_config_hint(&r.items[0], "delete"), "remove index.blocks.write"),
	   "per-item 403 cluster_block_exception (write block) is a configuration failure");
	ecp_bulk_result_free(&r);

	rc = parse(gone_index, 2, "delete", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.items[0].klass == ECP_ITEM_CONFIG && r.items[1].klass == ECP_ITEM_OK &&
	   r.n_config == 1 && r.n_ok == 1 &&
	   contains(ecp_bulk_config_hint(&r.items[0], "delete"), "check the task's index name"),
	   "delete + 404 index_not_found_exception is a missing index, delete + 404 not_found is fine");
	ecp_bulk_result_free(&r);

	rc = parse(no_writer, 1, "index", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.items[0].klass == ECP_ITEM_CONFIG && r.n_data_error == 0 &&
	   contains(ecp_bulk_config_hint(&r.items[0], "index"), "write index"),
	   "400 \"no write index is defined for alias\" is a configuration failure");
	ecp_bulk_result_free(&r);
}

static void
test_parser(void)
{
	EcpBulkResult r;
	char		err[256];
	int			rc;
	const char *success =
	"{\"took\":3,\"errors\":false,\"items\":["
	"{\"index\":{\"_index\":\"t\",\"_id\":\"1\",\"_version\":1,\"result\":\"created\",\"status\":201}},"
	"{\"index\":{\"_index\":\"t\",\"_id\":\"2\",\"_version\":2,\"result\":\"updated\",\"status\":200}}]}";
	const char *filtered_ok =
	"{\"errors\":false,\"items\":[{\"index\":{\"status\":201}},{\"index\":{\"status\":200}},"
	"{\"index\":{\"status\":201}}]}";
	const char *mixed =
	"{\"errors\":true,\"items\":["
	"{\"index\":{\"status\":201}},"
	"{\"index\":{\"status\":200}},"
	"{\"index\":{\"status\":409,\"error\":{\"type\":\"version_conflict_engine_exception\","
	"\"reason\":\"[3]: version conflict, current version [5] is higher or equal to the one provided [4]\"}}},"
	"{\"index\":{\"status\":400,\"error\":{\"type\":\"document_parsing_exception\","
	"\"reason\":\"[1:26] failed to parse field [price] of type [long]\","
	"\"caused_by\":{\"reason\":\"For input string: \\\"cheap\\\"\"}}}},"
	"{\"index\":{\"status\":429,\"error\":{\"type\":\"es_rejected_execution_exception\","
	"\"reason\":\"rejected execution of primary operation\"}}},"
	"{\"index\":{\"status\":503,\"error\":{\"type\":\"unavailable_shards_exception\","
	"\"reason\":\"primary shard is not active\"}}}]}";
	const char *deletes =
	"{\"errors\":false,\"items\":[{\"delete\":{\"status\":200}},{\"delete\":{\"status\":404}}]}";
	const char *creates =
	"{\"errors\":true,\"items\":[{\"create\":{\"status\":201}},"
	"{\"create\":{\"status\":409,\"error\":{\"type\":\"version_conflict_engine_exception\","
	"\"reason\":\"[sku-2]: version conflict, document already exists (current version [1])\"}}}]}";

	diag("bulk_response parser");

	rc = parse(success, 2, "index", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.nitems == 2 && r.n_ok == 2 && r.n_retry == 0 && r.n_data_error == 0,
	   "full success response: 2 OK items");
	ok(rc == 0 && r.items[0].status == 201 && r.items[1].status == 200 &&
	   r.items[0].error_type == NULL && r.items[0].reason == NULL,
	   "statuses in request order, OK items carry no strings");
	ecp_bulk_result_free(&r);
	ok(r.items == NULL && r.nitems == 0, "result_free zeroes the result");
	ecp_bulk_result_free(&r);	/* twice is harmless */

	rc = parse(filtered_ok, 3, "index", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.n_ok == 3, "filter_path errors:false response with 3 items");
	ecp_bulk_result_free(&r);

	rc = parse(filtered_ok, 4, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "3 items") && contains(err, "4 actions"),
	   "errors:false still checks the count: %s", err);
	ok(r.items == NULL && r.nitems == 0, "failed parse leaves a zeroed result");

	rc = parse(mixed, 6, "index", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.nitems == 6, "mixed 201/200/409/400/429/503 parsed");
	if (rc == 0)
	{
		ok(r.items[0].klass == ECP_ITEM_OK && r.items[1].klass == ECP_ITEM_OK,
		   "201 and 200 are OK");
		ok(r.items[2].klass == ECP_ITEM_DATA_ERROR && r.items[2].status == 409 &&
		   streq(r.items[2].error_type, "version_conflict_engine_exception"),
		   "409 on index without external versioning is a data error");
		ok(r.items[3].klass == ECP_ITEM_DATA_ERROR &&
		   streq(r.items[3].error_type, "document_parsing_exception") &&
		   streq(r.items[3].reason,
				 "[1:26] failed to parse field [price] of type [long] (caused by: For input string: \"cheap\")"),
		   "400 is a data error, reason includes caused_by: %s", r.items[3].reason);
		ok(r.items[4].klass == ECP_ITEM_RETRY &&
		   streq(r.items[4].error_type, "es_rejected_execution_exception"),
		   "429 is retryable");
		ok(r.items[5].klass == ECP_ITEM_RETRY, "503 is retryable");
		ok(r.n_ok == 2 && r.n_retry == 2 && r.n_data_error == 2, "counters 2/2/2");
	}
	ecp_bulk_result_free(&r);

	/* ecp sends no versions and counts no 409 as success: no flags exist */
	rc = parse(mixed, 6, "index", 1, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "flags") && r.items == NULL,
	   "flags other than 0 are refused: %s", err);

	rc = parse(deletes, 2, "delete", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.n_ok == 2 && r.items[1].status == 404 && r.items[1].klass == ECP_ITEM_OK &&
	   r.items[1].error_type == NULL, "delete + 404 without an error (not_found) is OK");
	ecp_bulk_result_free(&r);

	test_config_items();

	rc = parse("{\"errors\":true,\"items\":[{\"update\":{\"status\":404,\"error\":{\"type\":"
			   "\"document_missing_exception\",\"reason\":\"[9]: document missing\"}}}]}",
			   1, "update", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.items[0].klass == ECP_ITEM_DATA_ERROR &&
	   streq(r.items[0].error_type, "document_missing_exception"),
	   "update + 404 is a data error");
	ecp_bulk_result_free(&r);

	rc = parse(creates, 2, "create", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.items[0].klass == ECP_ITEM_OK && r.items[1].klass == ECP_ITEM_DATA_ERROR &&
	   contains(r.items[1].reason, "document already exists"),
	   "create + 409 is a data error by default");
	ecp_bulk_result_free(&r);

	rc = parse(creates, 2, NULL, 0, &r, err, sizeof(err));
	ok(rc == 0 && r.items[1].klass == ECP_ITEM_DATA_ERROR,
	   "op NULL classifies by each item's key");
	ecp_bulk_result_free(&r);

	rc = parse(success, 3, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "2 items") && contains(err, "3 actions"),
	   "count mismatch names both numbers: %s", err);

	rc = parse("<html><body>502 Bad Gateway</body></html>", 1, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "not JSON") && valid_utf8(err), "garbage: %s", err);

	rc = ecp_bulk_parse("\xff\xfe{\x01garbage", 10, 1, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && valid_utf8(err), "binary garbage gives a UTF-8 clean error: %s", err);

	rc = ecp_bulk_parse("", 0, 1, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "empty"), "empty body: %s", err);

	rc = parse("[1,2]", 1, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "not a JSON object"), "array root: %s", err);

	rc = parse("{\"took\":1,\"errors\":false}", 2, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "no items array"), "missing items: %s", err);

	rc = parse("{\"error\":{\"type\":\"illegal_argument_exception\",\"reason\":\"The bulk request must be terminated by a newline [\\\\n]\"},\"status\":400}",
			   2, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "illegal_argument_exception"),
	   "an error envelope instead of items is named: %s", err);

	rc = parse("{\"errors\":false,\"items\":[{\"index\":{\"status\":201},\"create\":{\"status\":201}}]}",
			   1, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "items[0]") && contains(err, "single"),
	   "two-key item rejected: %s", err);

	rc = parse("{\"errors\":false,\"items\":[{\"index\":{\"status\":201}},\"x\"]}",
			   2, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "items[1]"), "non-object item rejected: %s", err);

	rc = parse("{\"errors\":false,\"items\":[{\"index\":{\"_id\":\"1\"}}]}",
			   1, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "status"), "missing status rejected: %s", err);

	rc = parse("{\"errors\":false,\"items\":[{\"index\":{\"status\":\"201\"}}]}",
			   1, "index", 0, &r, err, sizeof(err));
	ok(rc == -1 && contains(err, "status"), "string status rejected: %s", err);

	rc = parse("{\"errors\":false}", 0, "index", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.nitems == 0, "zero items expected, items dropped by filter_path: OK");
	ecp_bulk_result_free(&r);

	/* long and multi-byte reasons are capped on a character boundary */
	{
		char	   *body = malloc(8192);
		char	   *p = body;
		int			i;

		p += sprintf(p, "{\"errors\":true,\"items\":[{\"index\":{\"status\":400,\"error\":{\"type\":\"x\",\"reason\":\"a");
		for (i = 0; i < 1500; i++)
			p += sprintf(p, "\xc3\xa9");	/* é, 2 bytes */
		p += sprintf(p, "\"}}}]}");
		rc = parse(body, 1, "index", 0, &r, err, sizeof(err));
		ok(rc == 0 && r.items[0].reason && strlen(r.items[0].reason) <= 1000 &&
		   strlen(r.items[0].reason) >= 998 && valid_utf8(r.items[0].reason),
		   "reason capped at 1000 bytes on a UTF-8 boundary (%zu bytes)",
		   r.items[0].reason ? strlen(r.items[0].reason) : 0);
		ecp_bulk_result_free(&r);
		free(body);
	}

	rc = parse("{\"errors\":true,\"items\":[{\"index\":{\"status\":400,\"error\":{\"type\":\"x\",\"reason\":\"nul \\u0000 here\"}}}]}",
			   1, "index", 0, &r, err, sizeof(err));
	ok(rc == 0 && r.items[0].klass == ECP_ITEM_DATA_ERROR, "a \\u0000 in a reason does not fail the parse");
	ecp_bulk_result_free(&r);

	rc = parse("{\"errors\":true,\"items\":[{\"index\":{\"status\":400,\"error\":\"plain string\"}}]}",
			   1, "index", 0, &r, err, sizeof(err));
	ok(rc == 0 && streq(r.items[0].reason, "plain string") && r.items[0].error_type == NULL,
	   "item error given as a string");
	ecp_bulk_result_free(&r);
}

static void
test_error_summary(void)
{
	char		out[512];
	char		tiny[8];
	const char *envelope =
	"{\"error\":{\"root_cause\":[{\"type\":\"security_exception\",\"reason\":\"missing authentication credentials for REST request [/_bulk]\"}],"
	"\"type\":\"security_exception\",\"reason\":\"missing authentication credentials for REST request [/_bulk]\","
	"\"header\":{\"WWW-Authenticate\":\"Basic realm=\\\"security\\\"\"}},\"status\":401}";
	const char *html =
	"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
	"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
	char		longbody[1000];

	diag("ecp_error_summary");
	ecp_error_summary(envelope, strlen(envelope), 401, out, sizeof(out));
	ok(streq(out, "security_exception: missing authentication credentials for REST request [/_bulk]"),
	   "envelope -> type: reason (%s)", out);

	{
		const char *e = "{\"error\":\"alias [missing] missing\",\"status\":404}";

		ecp_error_summary(e, strlen(e), 404, out, sizeof(out));
	}
	ok(streq(out, "alias [missing] missing"), "error as string (%s)", out);

	ecp_error_summary(html, strlen(html), 502, out, sizeof(out));
	ok(streq(out, "<html> <head><title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> <hr><center>nginx</center> </body> </html>"),
	   "HTML 502 -> printable text (%s)", out);

	ecp_error_summary("", 0, 413, out, sizeof(out));
	ok(streq(out, "(empty body)"), "empty 413 body");
	ecp_error_summary(NULL, 0, 502, out, sizeof(out));
	ok(streq(out, "(empty body)"), "NULL body");
	ecp_error_summary(" \r\n ", 4, 504, out, sizeof(out));
	ok(streq(out, "(empty body)"), "whitespace-only body");

	memset(longbody, 'x', sizeof(longbody));
	ecp_error_summary(longbody, sizeof(longbody), 500, out, sizeof(out));
	ok(strlen(out) == 200, "non-JSON body cut at 200 characters");

	ecp_error_summary("\xff\xfe\x01oops\xc3\xa9", 9, 500, out, sizeof(out));
	ok(valid_utf8(out) && contains(out, "oops"), "binary body -> ASCII (%s)", out);

	ecp_error_summary(envelope, strlen(envelope), 401, tiny, sizeof(tiny));
	ok(strlen(tiny) == 7, "always NUL-terminated in a small buffer");

	{
		const char *e = "{\"error\":{\"type\":\"x_content_parse_exception\",\"reason\":\"[1:2] Unexpected character\","
		"\"caused_by\":{\"type\":\"json_parse_exception\",\"reason\":\"bad \xc3\xa9\"}},\"status\":400}";

		ecp_error_summary(e, strlen(e), 400, out, sizeof(out));
		ok(streq(out, "x_content_parse_exception: [1:2] Unexpected character (caused by: json_parse_exception: bad \xc3\xa9)"),
		   "caused_by appended (%s)", out);
		ecp_error_summary(e, strlen(e), 400, out, 36 + 2);
		ok(valid_utf8(out), "cut in the middle of a UTF-8 character stays valid");
	}
}

/* Mean microseconds per ecp_bulk_parse of body (rc != 0 on failure). */
static double
time_parse(const char *body, size_t len, int rounds, int *rc)
{
	EcpBulkResult r;
	char		err[256];
	double		t0 = now();

	*rc = 0;
	for (int i = 0; i < rounds && *rc == 0; i++)
	{
		*rc = ecp_bulk_parse(body, len, 1000, "index", 0, &r, err, sizeof(err));
		if (*rc == 0)
		{
			if (r.n_ok != 990 || r.n_retry != 10 || !streq(r.items[99].error_type, "es_rejected_execution_exception"))
				*rc = -2;
			ecp_bulk_result_free(&r);
		}
	}
	return (now() - t0) / rounds * 1e6;
}

static void
test_parse_speed(void)
{
	size_t		cap = 64 * 1024;
	char	   *body = malloc(cap);
	size_t		len = 0;
	int			rc_scan;
	int			rc_jansson;
	double		us_scan;
	double		us_jansson;

	len += (size_t) snprintf(body + len, cap - len, "{\"errors\":true,\"items\":[");
	for (int i = 0; i < 1000; i++)
	{
		if (i % 100 == 99)
			len += (size_t) snprintf(body + len, cap - len,
									 "%s{\"index\":{\"status\":429,\"error\":{\"type\":\"es_rejected_execution_exception\",\"reason\":\"rejected execution of primary operation\"}}}",
									 i ? "," : "");
		else
			len += (size_t) snprintf(body + len, cap - len, "%s{\"index\":{\"status\":201}}", i ? "," : "");
	}
	len += (size_t) snprintf(body + len, cap - len, "]}");

	diag("parse speed");
	time_parse(body, len, 20, &rc_scan);	/* warm up */
	us_scan = time_parse(body, len, 500, &rc_scan);
	ecp_bulk_use_scanner = 0;
	us_jansson = time_parse(body, len, 100, &rc_jansson);
	ecp_bulk_use_scanner = 1;
	ok(rc_scan == 0 && rc_jansson == 0,
	   "1000-item filter_path response (%zu bytes, 10 failed items) parses both ways", len);
	/* a figure, not an assertion: speed is for benchmarks, not tests */
	diag("%.1f us per 1000-item response (jansson-only path: %.1f us)", us_scan, us_jansson);
	free(body);
}

/* Same outcome from the scanner and the jansson path? */
static int
same_parse(const char *body, size_t len, int expected, const char *op, int flags,
		   char *why, size_t whylen)
{
	EcpBulkResult a;
	EcpBulkResult b;
	char		ea[256];
	char		eb[256];
	int			ra;
	int			rb;
	int			same = 1;
	json_t	   *root;

	ecp_bulk_use_scanner = 1;
	ra = ecp_bulk_parse(body, len, expected, op, flags, &a, ea, sizeof(ea));
	ecp_bulk_use_scanner = 0;
	rb = ecp_bulk_parse(body, len, expected, op, flags, &b, eb, sizeof(eb));
	ecp_bulk_use_scanner = 1;
	if (ra != rb)
	{
		snprintf(why, whylen, "rc %d vs %d (%s / %s)", ra, rb, ea, eb);
		same = 0;
	}
	else if (ra != 0 && strcmp(ea, eb) != 0)
	{
		snprintf(why, whylen, "errors differ: %s / %s", ea, eb);
		same = 0;
	}
	else if (ra == 0)
	{
		if (a.nitems != b.nitems || a.n_ok != b.n_ok || a.n_retry != b.n_retry ||
			a.n_data_error != b.n_data_error || a.n_config != b.n_config ||
			(a.n_config > 0 && a.first_config != b.first_config))
		{
			snprintf(why, whylen, "counts differ");
			same = 0;
		}
		for (int i = 0; same && i < a.nitems; i++)
		{
			EcpBulkItem *x = &a.items[i];
			EcpBulkItem *y = &b.items[i];

			if (x->status != y->status || x->klass != y->klass ||
				(x->error_type == NULL) != (y->error_type == NULL) ||
				(x->reason == NULL) != (y->reason == NULL) ||
				(x->error_type && strcmp(x->error_type, y->error_type) != 0) ||
				(x->reason && strcmp(x->reason, y->reason) != 0))
			{
				snprintf(why, whylen, "item %d differs", i);
				same = 0;
			}
		}
	}
	/* whatever jansson rejects must be rejected */
	root = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
	if (root == NULL && ra == 0 && same)
	{
		snprintf(why, whylen, "invalid JSON accepted");
		same = 0;
	}
	if (root)
		json_decref(root);
	if (ra == 0)
		ecp_bulk_result_free(&a);
	if (rb == 0)
		ecp_bulk_result_free(&b);
	return same;
}

static void
test_scanner_equivalence(void)
{
	static const struct
	{
		const char *body;
		int			n;
		const char *op;
	}			cases[] = {
		{"{\"errors\":false,\"items\":[{\"index\":{\"status\":201}},{\"index\":{\"status\":200}}]}", 2, "index"},
		{" {\r\n \"took\" : 12 , \"errors\" : true , \"items\" : [ { \"index\" : { \"_index\" : \"a\\u00e9\", \"_id\":\"1\", \"_version\": 1, \"result\": \"created\", \"_shards\": {\"total\": 2, \"successful\": 1, \"failed\": 0}, \"_seq_no\": 0, \"_primary_term\": 1, \"status\": 201, \"forced_refresh\": true, \"get\": {\"found\": null, \"x\": [1, -2.5e3, [], {}]} } } , { \"index\" : { \"status\" : 400 , \"error\" : { \"type\" : \"document_parsing_exception\" , \"reason\" : \"caf\xc3\xa9 \\\"q\\\" \\u0000 \\n\" , \"caused_by\" : { \"type\": \"x\", \"reason\" : \"deep\" } } } } ] }\n", 2, "index"},
		{"{\"items\":[{\"delete\":{\"status\":404}},{\"delete\":{\"status\":409,\"error\":{\"type\":\"version_conflict_engine_exception\",\"reason\":\"[x]: version conflict\"}}}],\"errors\":true}", 2, NULL},
		{"{\"errors\":true,\"items\":[{\"create\":{\"status\":429,\"error\":\"string error\"}},{\"create\":{\"status\":503,\"error\":{\"type\":\"unavailable_shards_exception\"}}},{\"create\":{\"status\":201,\"status\":409}}]}", 3, "create"},
		{"{\"errors\":true,\"items\":[{\"index\":{\"status\":201}}],\"items\":[{\"index\":{\"status\":500}}]}", 1, "index"},
		{"{\"errors\":true,\"items\":[{\"ind\\u0065x\":{\"st\\u0061tus\":201}}]}", 1, NULL},
		{"{\"errors\":true,\"items\":[{\"index\":{\"status\":2.01e2}}]}", 1, "index"},
		{"{\"errors\":true,\"items\":[{\"index\":{\"status\":99999999999999999999}}]}", 1, "index"},
		{"{\"errors\":true,\"items\":[{\"index\":{\"status\":201,\"error\":{\"reason\":\"\\ud83d\\ude00 pair\"}}}]}", 1, "index"},
		{"{\"errors\":true,\"items\":[{\"delete\":{\"status\":404,\"error\":{\"type\":\"index_not_found_exception\",\"reason\":\"no such index [x]\"}}},{\"delete\":{\"status\":404,\"result\":\"not_found\"}},{\"delete\":{\"status\":403,\"error\":{\"type\":\"cluster_block_exception\",\"reason\":\"index [x] blocked by: [FORBIDDEN/8/index write (api)];\"}}}]}", 3, NULL},
		{"{\"errors\":true,\"items\":[{\"index\":{\"status\":400,\"error\":{\"type\":\"illegal_argument_exception\",\"reason\":\"no write index is defined for alias [a]\"}}},{\"index\":{\"status\":403,\"error\":{\"type\":\"security_exception\",\"reason\":\"unauthorized\"}}}]}", 2, "index"},
	};
	unsigned int seed = 12345;
	int			checked = 0;
	int			bad = 0;
	char		why[600];
	char		first_bad[700] = "";

	diag("scanner vs jansson");
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
	{
		const char *body = cases[c].body;
		size_t		len = strlen(body);
		char	   *copy = malloc(len + 1);

		/* the case itself, with every expected count around the real one */
		for (int n = 0; n <= cases[c].n + 1; n++)
		{
			checked++;
			if (!same_parse(body, len, n, cases[c].op, 0, why, sizeof(why)) && bad++ == 0)
				snprintf(first_bad, sizeof(first_bad), "case %zu n=%d: %s", c, n, why);
		}
		/* every truncation */
		for (size_t cut = 0; cut < len; cut++)
		{
			checked++;
			if (!same_parse(body, cut, cases[c].n, cases[c].op, 0, why, sizeof(why)) && bad++ == 0)
				snprintf(first_bad, sizeof(first_bad), "case %zu cut at %zu: %s", c, cut, why);
		}
		/* random one- and two-byte mutations */
		for (int m = 0; m < 3000; m++)
		{
			memcpy(copy, body, len + 1);
			for (int k = 0; k <= m % 2; k++)
			{
				static const char alphabet[] = "{}[]\":,\\ 0129-.eEtfnu\x80\xc3\xa9\xff\x01";

				seed = seed * 1103515245u + 12345u;
				copy[(seed >> 8) % len] = alphabet[(seed >> 20) % (sizeof(alphabet) - 1)];
			}
			checked++;
			if (!same_parse(copy, len, cases[c].n, cases[c].op, 0,
							why, sizeof(why)) && bad++ == 0)
				snprintf(first_bad, sizeof(first_bad), "case %zu mutation %d [%s]: %s", c, m, copy, why);
		}
		free(copy);
	}
	ok(bad == 0, "scanner and jansson agree on %d bodies (cases, counts, truncations, mutations)%s%s",
	   checked, bad ? ": first difference " : "", first_bad);
}

/* ---------------------------------------------------------- esd control */

static pid_t esd_pid = 0;
static int	esd_port = 0;
static char esd_dir[256] = "";
static char esd_portfile[300];
static char esd_log[300];

static void
stop_esd(void)
{
	if (esd_pid > 0)
	{
		int			status;
		int			i;

		kill(esd_pid, SIGTERM);
		for (i = 0; i < 50; i++)
		{
			if (waitpid(esd_pid, &status, WNOHANG) == esd_pid)
				break;
			usleep(100 * 1000);
		}
		if (i == 50)
		{
			kill(esd_pid, SIGKILL);
			waitpid(esd_pid, &status, 0);
		}
		esd_pid = 0;
	}
	if (esd_dir[0])
	{
		unlink(esd_portfile);
		unlink(esd_log);
		rmdir(esd_dir);
		esd_dir[0] = '\0';
	}
}

static void
on_signal(int sig)
{
	if (esd_pid > 0)
		kill(esd_pid, SIGTERM);
	signal(sig, SIG_DFL);
	raise(sig);
}

static int
start_esd(const char *bin)
{
	const char *tmp = getenv("TMPDIR");
	double		deadline;

	snprintf(esd_dir, sizeof(esd_dir), "%s/ecp-unit-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (mkdtemp(esd_dir) == NULL)
	{
		diag("mkdtemp(%s): %s", esd_dir, strerror(errno));
		esd_dir[0] = '\0';
		return -1;
	}
	snprintf(esd_portfile, sizeof(esd_portfile), "%s/port", esd_dir);
	snprintf(esd_log, sizeof(esd_log), "%s/esd.log", esd_dir);

	esd_pid = fork();
	if (esd_pid < 0)
	{
		diag("fork: %s", strerror(errno));
		esd_pid = 0;
		return -1;
	}
	if (esd_pid == 0)
	{
		int			fd = open(esd_log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (fd >= 0)
		{
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execl(bin, bin, "--port", "0", "--port-file", esd_portfile, "--no-refresh-timer",
			  (char *) NULL);
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}

	deadline = now() + 10.0;
	while (now() < deadline)
	{
		FILE	   *f = fopen(esd_portfile, "r");
		int			status;

		if (f)
		{
			int			port = 0;

			if (fscanf(f, "%d", &port) == 1 && port > 0)
				esd_port = port;
			fclose(f);
			if (esd_port > 0)
				return 0;
		}
		if (waitpid(esd_pid, &status, WNOHANG) == esd_pid)
		{
			diag("esd exited early (status %d); see its log", status);
			esd_pid = 0;
			return -1;
		}
		usleep(20 * 1000);
	}
	diag("esd did not write %s within 10 s", esd_portfile);
	return -1;
}

/* -------------------------------------------------------- HTTP helpers */

static char url_buf[1024];

static const char *
url(const char *path)
{
	snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d%s", esd_port, path);
	return url_buf;
}

static EcpHttpClient *
make_client(EcpHttpConfig *cfg)
{
	char		err[256];
	EcpHttpClient *c = ecp_http_client_create(cfg, err, sizeof(err));

	if (c == NULL)
		diag("ecp_http_client_create: %s", err);
	return c;
}

static void
default_config(EcpHttpConfig *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->connect_timeout_ms = 2000;
	cfg->request_timeout_ms = 10000;
	cfg->user_agent = "ecp-unit/1";
	cfg->max_response_bytes = 4 << 20;
}

/* A request whose only interest is success; returns the HTTP status or -1. */
static long
simple(EcpHttpClient *c, const char *method, const char *path, const char *body)
{
	EcpHttpResponse resp;
	EcpHttpOutcome o;
	long		status;

	o = ecp_http_request(c, method, url(path), body ? "application/json" : NULL,
						 body, body ? strlen(body) : 0, NULL, &resp);
	status = o == ECP_HTTP_OK ? resp.status : -1;
	if (o != ECP_HTTP_OK)
		diag("%s %s: outcome %d: %s", method, path, (int) o, resp.error);
	ecp_http_response_free(&resp);
	return status;
}

static int
set_faults(EcpHttpClient *ctl, const char *json)
{
	return simple(ctl, "PUT", "/_esd/faults", json) == 200 ? 0 : -1;
}

static int
clear_faults(EcpHttpClient *ctl)
{
	return simple(ctl, "DELETE", "/_esd/faults", NULL) == 200 ? 0 : -1;
}

/* The newest entry of esd's request log (decoded), or NULL. */
static json_t *
last_logged_request(EcpHttpClient *ctl)
{
	EcpHttpResponse resp;
	json_t	   *root = NULL;
	json_t	   *entry = NULL;

	if (ecp_http_request(ctl, "GET", url("/_esd/requests?n=1"), NULL, NULL, 0, NULL, &resp) == ECP_HTTP_OK &&
		resp.status == 200)
		root = json_loadb(resp.body, resp.body_len, 0, NULL);
	ecp_http_response_free(&resp);
	if (root)
	{
		json_t	   *reqs = json_object_get(root, "requests");
		size_t		n = json_array_size(reqs);

		if (n > 0)
			entry = json_incref(json_array_get(reqs, n - 1));
		json_decref(root);
	}
	return entry;
}

static const char *
logged_header(json_t *entry, const char *name)
{
	json_t	   *headers = json_object_get(entry, "headers");
	const char *key;
	json_t	   *value;

	json_object_foreach(headers, key, value)
		if (strcasecmp(key, name) == 0)
		return json_string_value(value);
	return NULL;
}

static int	abort_now_flag = 0;
static double abort_at = 0;

static int
abort_after_deadline(void *arg)
{
	int		   *calls = arg;

	(*calls)++;
	return abort_now_flag || (abort_at > 0 && now() >= abort_at);
}

static EcpHttpOutcome
bulk(EcpHttpClient *c, const char *index, const char *ndjson, EcpHttpResponse *resp)
{
	char		path[256];

	/* the filter_path ecp sends */
	snprintf(path, sizeof(path), "/%s/_bulk?filter_path=" ECP_BULK_FILTER_PATH, index);
	return ecp_http_request(c, "POST", url(path), "application/x-ndjson", ndjson,
							strlen(ndjson), NULL, resp);
}

/*
 * A one-shot server for what esd cannot do: answers the i-th connection
 * with a chunked (no Content-Length) body of sizes[i] bytes, like ES does
 * for large responses.  Returns the child's pid; *port gets the port.
 */
static pid_t
start_chunked_server(const size_t *sizes, int nconn, int *port)
{
	int			s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa;
	socklen_t	sl = sizeof(sa);
	int			one = 1;
	pid_t		pid;

	*port = 0;
	if (s < 0)
		return -1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *) &sa, sizeof(sa)) != 0 || listen(s, 4) != 0 ||
		getsockname(s, (struct sockaddr *) &sa, &sl) != 0)
	{
		close(s);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	pid = fork();
	if (pid != 0)
	{
		close(s);
		return pid;
	}
	/* child */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(20);
	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < nconn; i++)
	{
		int			c = accept(s, NULL, NULL);
		char		req[8192];
		size_t		got = 0;
		char		chunk[4096 + 32];
		const char *head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
		size_t		left = sizes[i];

		if (c < 0)
			_exit(1);
		/* read the request head */
		while (got < sizeof(req) - 1)
		{
			ssize_t		n = read(c, req + got, sizeof(req) - 1 - got);

			if (n <= 0)
				break;
			got += (size_t) n;
			req[got] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		if (write(c, head, strlen(head)) < 0)
			left = 0;
		while (left > 0)
		{
			size_t		n = left < 4096 ? left : 4096;
			int			h = sprintf(chunk, "%zx\r\n", n);

			memset(chunk + h, 'x', n);
			memcpy(chunk + h + n, "\r\n", 2);
			if (write(c, chunk, (size_t) h + n + 2) < 0)
				break;
			left -= n;
		}
		if (write(c, "0\r\n\r\n", 5) < 0)
			left = 0;
		shutdown(c, SHUT_WR);
		while (read(c, req, sizeof(req)) > 0)
			;
		close(c);
	}
	_exit(0);
}

/*
 * A one-shot server, in a thread of this process (a forked copy would be
 * reported by valgrind for the memory it inherits), that reads one request
 * head and then resets the connection (SO_LINGER 0) without reading the
 * body: what a server that refuses an oversized body may look like to a
 * client still sending it.  It gives up after 20 s without a connection.
 */
typedef struct ResetServer
{
	int			listener;
	int			port;
	pthread_t	thread;
} ResetServer;

static void *
reset_server_main(void *arg)
{
	ResetServer *rs = arg;
	struct pollfd pfd = {rs->listener, POLLIN, 0};
	char		req[8192];
	size_t		got = 0;
	struct linger lg = {1, 0};
	int			c;

	if (poll(&pfd, 1, 20000) != 1 || (c = accept(rs->listener, NULL, NULL)) < 0)
		return NULL;
	while (got < sizeof(req) - 1)
	{
		ssize_t		n = read(c, req + got, sizeof(req) - 1 - got);

		if (n <= 0)
			break;
		got += (size_t) n;
		req[got] = '\0';
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(c);					/* RST: unread data is pending */
	return NULL;
}

/* 0 with rs->port set and the thread running, else -1. */
static int
start_reset_server(ResetServer *rs)
{
	struct sockaddr_in sa;
	socklen_t	sl = sizeof(sa);

	rs->port = 0;
	rs->listener = socket(AF_INET, SOCK_STREAM, 0);
	if (rs->listener < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(rs->listener, (struct sockaddr *) &sa, sizeof(sa)) != 0 || listen(rs->listener, 4) != 0 ||
		getsockname(rs->listener, (struct sockaddr *) &sa, &sl) != 0 ||
		pthread_create(&rs->thread, NULL, reset_server_main, rs) != 0)
	{
		close(rs->listener);
		return -1;
	}
	rs->port = ntohs(sa.sin_port);
	return 0;
}

static void
stop_reset_server(ResetServer *rs)
{
	pthread_join(rs->thread, NULL);
	close(rs->listener);
}

/* ------------------------------------------------------------ HTTP tests */

/* esd's count of _bulk requests it has answered, or -1. */
static long
answered_bulk_requests(EcpHttpClient *ctl)
{
	EcpHttpResponse resp;
	json_t	   *root = NULL;
	long		n = -1;

	if (ecp_http_request(ctl, "GET", url("/_esd/stats"), NULL, NULL, 0, NULL, &resp) == ECP_HTTP_OK &&
		resp.status == 200)
		root = json_loadb(resp.body, resp.body_len, 0, NULL);
	ecp_http_response_free(&resp);
	if (root && json_is_integer(json_object_get(root, "bulk_requests")))
		n = (long) json_integer_value(json_object_get(root, "bulk_requests"));
	json_decref(root);
	return n;
}

/*
 * ecp_http_begin writes the whole body (when the socket takes it) before
 * returning, so the server works on the request while the caller does
 * something else: a 1 MB request is answered before finish is called.
 * With one curl_multi_perform only the first 64 kB would have gone out.
 */
static void
test_begin_sends_whole_body(EcpHttpClient *ctl)
{
	EcpHttpConfig cfg;
	EcpHttpClient *c;
	EcpHttpResponse resp;
	EcpHttpOutcome o;
	int			ndocs = 5000;
	size_t		cap = (size_t) ndocs * 256;
	char	   *body = malloc(cap);
	size_t		len = 0;
	long		before, after = -1;
	double		deadline;

	default_config(&cfg);
	c = make_client(&cfg);
	for (int i = 0; i < ndocs && body; i++)
		len += (size_t) snprintf(body + len, cap - len,
								 "{\"index\":{\"_id\":\"w%d\"}}\n{\"n\":%d,\"pad\":\"%0180d\"}\n", i, i, i);
	before = answered_bulk_requests(ctl);
	o = ecp_http_begin(c, "POST", url("/unit-overlap/_bulk?filter_path=errors"), "application/x-ndjson",
					   body, len, NULL, &resp);
	ok(o == ECP_HTTP_OK && len > 900000, "begin of a %zu-byte _bulk request", len);
	/* no finish yet: only the server can move the request on now */
	deadline = now() + 10;
	while (o == ECP_HTTP_OK && now() < deadline &&
		   (after = answered_bulk_requests(ctl)) <= before)
		usleep(10000);
	ok(before >= 0 && after == before + 1,
	   "the server answered it before finish was called (bulk_requests %ld -> %ld)", before, after);
	o = ecp_http_finish(c, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && contains(resp.body, "\"errors\":false"),
	   "finish returns its answer (%ld)", resp.status);
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);
	free(body);
}

/* What the address filter of test_address_filter saw, and its answer. */
typedef struct FilterLog
{
	int			allow;
	int			calls;
	int			family;
	int			port;
	char		host[256];
} FilterLog;

static int
filter_address(const struct sockaddr *addr, socklen_t addrlen, const char *host, int port,
			   char *why, size_t whylen, void *arg)
{
	FilterLog  *log = arg;

	(void) addrlen;
	log->calls++;
	log->family = addr->sa_family;
	log->port = port;
	snprintf(log->host, sizeof(log->host), "%s", host);
	if (!log->allow)
		snprintf(why, whylen, "consumer address 127.0.0.1:%d is not allowed (unit test)", port);
	return log->allow;
}

/*
 * allow_address sees every address before curl connects; a refusal is a
 * configuration outcome (ECP_HTTP_SETUP) with the filter's reason, and
 * nothing reaches the server.
 */
static void
test_address_filter(EcpHttpClient *ctl)
{
	EcpHttpConfig cfg;
	EcpHttpClient *c;
	EcpHttpResponse resp;
	EcpHttpOutcome o;
	FilterLog	log;
	long		before = answered_bulk_requests(ctl);
	const char *ndjson = "{\"index\":{\"_id\":\"f1\"}}\n{\"n\":1}\n";

	memset(&log, 0, sizeof(log));
	default_config(&cfg);
	cfg.allow_address = filter_address;
	cfg.address_arg = &log;
	c = make_client(&cfg);
	o = ecp_http_request(c, "POST", url("/unit-filter/_bulk"), "application/x-ndjson",
						 ndjson, strlen(ndjson), NULL, &resp);
	ok(o == ECP_HTTP_SETUP && contains(resp.error, "is not allowed (unit test)"),
	   "a refused address is ECP_HTTP_SETUP with the filter's reason (%d: %s)", (int) o, resp.error);
	ok(log.calls >= 1 && log.family == AF_INET && log.port == esd_port &&
	   strcmp(log.host, "127.0.0.1") == 0,
	   "the filter saw the address, the URL's host and port (%d calls, %s:%d)",
	   log.calls, log.host, log.port);
	ecp_http_response_free(&resp);
	ok(answered_bulk_requests(ctl) == before, "nothing reached the server");

	log.allow = 1;
	log.calls = 0;
	o = ecp_http_request(c, "POST", url("/unit-filter/_bulk"), "application/x-ndjson",
						 ndjson, strlen(ndjson), NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && log.calls == 1,
	   "an allowed address connects (%d: %ld, %d calls)", (int) o, resp.status, log.calls);
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);
}

/*
 * What a refusal of a large body looks like to the client: an HTTP 413, or
 * (when the server closes while the body is still going out) a lost
 * connection, which the sink takes for the same refusal above 1 MiB.
 * esd answers its 413 before reading the body and drains the rest, so a
 * client reads it; a server that resets instead gives connection_lost.
 */
static void
test_too_large(EcpHttpClient *ctl)
{
	EcpHttpConfig cfg;
	EcpHttpClient *c;
	EcpHttpResponse resp;
	EcpHttpOutcome o;
	size_t		len = 4 * 1024 * 1024;
	char	   *big;
	size_t		small_len = 200 * 1024;
	ResetServer rs;
	int			started;
	char		u[256];

	diag("bodies over the server's limit");
	big = malloc(len);
	if (big == NULL)
	{
		skip("out of memory");
		return;
	}
	for (size_t i = 0; i < len; i += 32)
		memcpy(big + i, "{\"index\":{}}\n{\"pad\":\"xxxxxxx\"}\n", 32);
	default_config(&cfg);
	c = make_client(&cfg);

	simple(ctl, "PUT", "/_esd/config", "{\"max_content_length\":102400}");
	o = ecp_http_request(c, "POST", url("/unit-big/_bulk"), "application/x-ndjson",
						 big, small_len, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 413 && resp.body_len == 0,
	   "200 KiB over esd's 100 KiB limit: HTTP 413 with an empty body (outcome %d, %ld: %s)",
	   (int) o, resp.status, resp.error);
	ecp_http_response_free(&resp);
	o = ecp_http_request(c, "POST", url("/unit-big/_bulk"), "application/x-ndjson",
						 big, len, NULL, &resp);
	ok((o == ECP_HTTP_OK && resp.status == 413) || (o == ECP_HTTP_TRANSPORT && resp.connection_lost),
	   "4 MiB over it: the 413, or a lost connection (outcome %d, %ld, %s)", (int) o, resp.status, resp.error);
	ecp_http_response_free(&resp);
	simple(ctl, "PUT", "/_esd/config", "{\"max_content_length\":104857600}");
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200, "the client goes on after a 413");
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);

	started = start_reset_server(&rs) == 0;
	memset(&resp, 0, sizeof(resp));
	c = make_client(&cfg);
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/x/_bulk", rs.port);
	o = started ? ecp_http_request(c, "POST", u, "application/x-ndjson", big, len, NULL, &resp) :
		ECP_HTTP_SETUP;
	ok(o == ECP_HTTP_TRANSPORT && resp.connection_lost && resp.body_bytes_sent <= len,
	   "a reset while sending 4 MiB: ECP_HTTP_TRANSPORT, connection_lost, %zu bytes sent (%s)",
	   resp.body_bytes_sent, started ? resp.error : "the server did not start");
	ecp_http_response_free(&resp);
	if (started)
		stop_reset_server(&rs);
	ecp_http_client_destroy(c);
	free(big);
}

/*
 * Per-item 403 from esd through the client and the parser: a write block
 * and a user restricted to other indices are configuration failures.
 */
static void
test_forbidden_items(EcpHttpClient *ctl)
{
	EcpHttpConfig cfg;
	EcpHttpClient *c;
	EcpHttpResponse resp;
	EcpHttpOutcome o;
	EcpBulkResult r;
	char		err[256];
	int			rc;

	default_config(&cfg);
	c = make_client(&cfg);
	simple(c, "PUT", "/unit-blocked", "{\"settings\":{\"index.blocks.write\":true}}");
	o = bulk(c, "unit-blocked", "{\"index\":{\"_id\":\"1\"}}\n{\"n\":1}\n{\"delete\":{\"_id\":\"2\"}}\n", &resp);
	rc = o == ECP_HTTP_OK && resp.status == 200 ?
		ecp_bulk_parse(resp.body, resp.body_len, 2, NULL, 0, &r, err, sizeof(err)) : -1;
	ok(rc == 0 && r.n_config == 2 && r.first_config == 0 && r.items[0].status == 403 &&
	   streq(r.items[0].error_type, "cluster_block_exception") &&
	   streq(r.items[0].reason, "index [unit-blocked] blocked by: [FORBIDDEN/8/index write (api)];"),
	   "esd write block: per-item 403 cluster_block_exception, a configuration failure (%s)",
	   rc == 0 && r.items[0].reason ? r.items[0].reason : err);
	if (rc == 0)
		ecp_bulk_result_free(&r);
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);

	set_faults(ctl, "{\"auth\":{\"basic\":\"app:pw\",\"indices\":[\"unit-ok*\"]}}");
	cfg.auth_header = "Basic YXBwOnB3";	/* app:pw */
	c = make_client(&cfg);
	o = bulk(c, "unit-elsewhere", "{\"index\":{\"_id\":\"1\"}}\n{\"n\":1}\n", &resp);
	rc = o == ECP_HTTP_OK && resp.status == 200 ?
		ecp_bulk_parse(resp.body, resp.body_len, 1, "index", 0, &r, err, sizeof(err)) : -1;
	ok(rc == 0 && r.n_config == 1 && streq(r.items[0].error_type, "security_exception") &&
	   contains(r.items[0].reason, "is unauthorized for user [app]") &&
	   streq(ecp_bulk_config_hint(&r.items[0], "index"), "grant the user write/index privileges on the index"),
	   "esd user without privileges on the index: per-item 403 security_exception (%s)",
	   rc == 0 && r.items[0].reason ? r.items[0].reason : err);
	if (rc == 0)
		ecp_bulk_result_free(&r);
	ecp_http_response_free(&resp);
	o = bulk(c, "unit-ok-1", "{\"index\":{\"_id\":\"1\"}}\n{\"n\":1}\n", &resp);
	rc = o == ECP_HTTP_OK && resp.status == 200 ?
		ecp_bulk_parse(resp.body, resp.body_len, 1, "index", 0, &r, err, sizeof(err)) : -1;
	ok(rc == 0 && r.n_ok == 1, "... and OK for an index it may write");
	if (rc == 0)
		ecp_bulk_result_free(&r);
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);
	clear_faults(ctl);
}

static void
test_http(EcpHttpClient *ctl)
{
	EcpHttpConfig cfg;
	EcpHttpClient *c;
	EcpHttpResponse resp;
	EcpHttpOutcome o;
	EcpBulkResult r;
	char		err[256];
	int			rc;
	int			abort_calls = 0;
	double		t0;
	double		elapsed;

	diag("http_client against esd on port %d", esd_port);

	/* keep-alive */
	default_config(&cfg);
	c = make_client(&cfg);
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && contains(resp.body, "\"version\"") &&
	   resp.body_len == strlen(resp.body), "GET / -> 200 with a body");
	ok(o == ECP_HTTP_OK && resp.content_type && strncmp(resp.content_type, "application/json", 16) == 0,
	   "content_type is returned (%s)", resp.content_type ? resp.content_type : "NULL");
	ok(resp.new_connections == 1, "first request opened a connection (%ld)", resp.new_connections);
	ecp_http_response_free(&resp);
	ok(resp.body == NULL && resp.content_type == NULL, "response_free clears the pointers");
	ecp_http_response_free(&resp);

	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && resp.new_connections == 0,
	   "second request reuses the kept-alive connection (NUM_CONNECTS %ld)", resp.new_connections);
	ecp_http_response_free(&resp);

	o = ecp_http_request(c, "PUT", url("/unit-idx"), "application/json", "{}", 2, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && resp.new_connections == 0,
	   "PUT /unit-idx with a body -> 200 on the same connection");
	ecp_http_response_free(&resp);

	/* HEAD */
	o = ecp_http_request(c, "HEAD", url("/unit-idx"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && resp.body_len == 0 && resp.body && resp.body[0] == '\0',
	   "HEAD /unit-idx -> 200, empty body");
	ecp_http_response_free(&resp);
	o = ecp_http_request(c, "HEAD", url("/no-such-index"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 404 && resp.body_len == 0, "HEAD /no-such-index -> 404");
	ecp_http_response_free(&resp);
	o = ecp_http_request(c, "GET", url("/unit-idx"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && resp.new_connections == 0 && contains(resp.body, "unit-idx"),
	   "GET after HEAD works on the same connection");
	ecp_http_response_free(&resp);

	/* begin/finish: the request runs while the caller does other work */
	{
		char		doc[] = "{\"index\":{\"_id\":\"bf\"}}\n{\"n\":7}\n";

		o = ecp_http_begin(c, "POST", url("/unit-idx/_bulk"), "application/x-ndjson",
						   doc, strlen(doc), NULL, &resp);
		ok(o == ECP_HTTP_OK, "begin starts a request");
		o = ecp_http_finish(c, &resp);
		ok(o == ECP_HTTP_OK && resp.status == 200 && contains(resp.body, "\"_id\":\"bf\"") &&
		   resp.new_connections == 0, "finish returns its answer, on the kept-alive connection");
		ecp_http_response_free(&resp);
		o = ecp_http_finish(c, &resp);
		ok(o == ECP_HTTP_SETUP && contains(resp.error, "no request in flight"),
		   "finish without begin is refused");
		o = ecp_http_begin(c, "POST", url("/unit-idx/_bulk"), "application/x-ndjson",
						   doc, strlen(doc), NULL, &resp);
		ok(o == ECP_HTTP_OK, "a request begun and never finished ...");
		ecp_http_client_destroy(c);
		c = make_client(&cfg);
		o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
		ok(o == ECP_HTTP_OK && resp.status == 200, "... is dropped with its client (no leak under valgrind)");
		ecp_http_response_free(&resp);
	}

	/* POST without a body (Content-Length: 0) */
	o = ecp_http_request(c, "POST", url("/unit-idx/_refresh"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200, "POST without a body -> %ld", resp.status);
	ecp_http_response_free(&resp);

	/* real _bulk round trips with filter_path */
	o = bulk(c, "unit-idx",
			 "{\"index\":{\"_id\":\"a\"}}\n{\"n\":1}\n{\"index\":{\"_id\":\"b\"}}\n{\"n\":2}\n"
			 "{\"index\":{\"_id\":\"a\"}}\n{\"n\":3}\n", &resp);
	rc = o == ECP_HTTP_OK && resp.status == 200 ?
		ecp_bulk_parse(resp.body, resp.body_len, 3, "index", 0, &r, err, sizeof(err)) : -1;
	ok(rc == 0 && r.n_ok == 3 && r.items[0].status == 201 && r.items[2].status == 200,
	   "esd _bulk index: 201, 201, 200");
	if (rc == 0)
		ecp_bulk_result_free(&r);
	ecp_http_response_free(&resp);

	o = bulk(c, "unit-idx",
			 "{\"create\":{\"_id\":\"a\"}}\n{\"n\":1}\n{\"create\":{\"_id\":\"c\"}}\n{\"n\":2}\n", &resp);
	rc = o == ECP_HTTP_OK && resp.status == 200 ?
		ecp_bulk_parse(resp.body, resp.body_len, 2, "create", 0, &r, err, sizeof(err)) : -1;
	ok(rc == 0 && r.items[0].status == 409 && r.items[0].klass == ECP_ITEM_DATA_ERROR &&
	   streq(r.items[0].error_type, "version_conflict_engine_exception") &&
	   r.items[1].klass == ECP_ITEM_OK, "esd _bulk create: 409 data error, 201 OK");
	if (rc == 0)
		ecp_bulk_result_free(&r);
	ecp_http_response_free(&resp);

	o = bulk(c, "unit-idx",
			 "{\"delete\":{\"_id\":\"c\"}}\n{\"delete\":{\"_id\":\"never\"}}\n", &resp);
	rc = o == ECP_HTTP_OK && resp.status == 200 ?
		ecp_bulk_parse(resp.body, resp.body_len, 2, "delete", 0, &r, err, sizeof(err)) : -1;
	ok(rc == 0 && r.n_ok == 2 && r.items[1].status == 404, "esd _bulk delete: 200 and 404 both OK");
	if (rc == 0)
		ecp_bulk_result_free(&r);
	ecp_http_response_free(&resp);

	o = bulk(c, "unit-idx", "{\"index\":{\"_id\":\"p\"}}\n{\"price\":1}\n{\"index\":{\"_id\":\"q\"}}\n{\"price\":\"cheap\"}\n", &resp);
	rc = o == ECP_HTTP_OK && resp.status == 200 ?
		ecp_bulk_parse(resp.body, resp.body_len, 2, "index", 0, &r, err, sizeof(err)) : -1;
	ok(rc == 0 && r.items[0].klass == ECP_ITEM_OK && r.items[1].status == 400 &&
	   r.items[1].klass == ECP_ITEM_DATA_ERROR && r.items[1].reason != NULL,
	   "esd _bulk mapping error: 400 data error (%s: %s)",
	   rc == 0 && r.items[1].error_type ? r.items[1].error_type : "?",
	   rc == 0 && r.items[1].reason ? r.items[1].reason : "?");
	if (rc == 0)
		ecp_bulk_result_free(&r);
	ecp_http_response_free(&resp);

	/* per-item 429 */
	set_faults(ctl, "{\"item_reject\":{\"status\":429,\"first\":1}}");
	o = bulk(c, "unit-idx", "{\"index\":{\"_id\":\"r1\"}}\n{\"n\":1}\n{\"index\":{\"_id\":\"r2\"}}\n{\"n\":2}\n", &resp);
	rc = o == ECP_HTTP_OK && resp.status == 200 ?
		ecp_bulk_parse(resp.body, resp.body_len, 2, "index", 0, &r, err, sizeof(err)) : -1;
	ok(rc == 0 && r.n_retry == 1 && r.n_ok == 1 && r.items[0].status == 429,
	   "esd per-item 429 is retryable");
	if (rc == 0)
		ecp_bulk_result_free(&r);
	ecp_http_response_free(&resp);

	/*
	 * Whole-request rejections, through ecp's filter_path: an error
	 * response is never filtered (Elasticsearch disables filtering when it
	 * builds one), so the envelope arrives whole although
	 * ECP_BULK_FILTER_PATH does not name "error".
	 */
	set_faults(ctl, "{\"bulk_reject\":{\"status\":429}}");
	o = bulk(c, "unit-idx", "{\"index\":{\"_id\":\"w\"}}\n{\"n\":1}\n", &resp);
	ecp_error_summary(resp.body, resp.body_len, resp.status, err, sizeof(err));
	ok(o == ECP_HTTP_OK && resp.status == 429 && contains(err, "es_rejected_execution_exception: ") &&
	   contains(resp.body, "\"root_cause\""),
	   "whole-request 429 under ecp's filter_path: the envelope whole, summarised: %s", err);
	ecp_http_response_free(&resp);

	set_faults(ctl, "{\"bulk_reject\":{\"status\":502}}");
	o = bulk(c, "unit-idx", "{\"index\":{\"_id\":\"w\"}}\n{\"n\":1}\n", &resp);
	ecp_error_summary(resp.body, resp.body_len, resp.status, err, sizeof(err));
	ok(o == ECP_HTTP_OK && resp.status == 502 && contains(resp.content_type, "text/html") &&
	   contains(err, "502 Bad Gateway"), "proxy-style HTML 502 summarised: %s", err);
	rc = ecp_bulk_parse(resp.body, resp.body_len, 1, "index", 0, &r, err, sizeof(err));
	ok(rc == -1, "and not parsed as a bulk response: %s", err);
	ecp_http_response_free(&resp);
	clear_faults(ctl);

	/* request headers as sent: no Expect even for a 2 MB body, Accept, Content-Type, UA */
	{
		size_t		n = 2 * 1024 * 1024;
		char	   *big = malloc(n + 64);
		size_t		len = 0;
		json_t	   *entry;
		int			docs = 0;

		while (len + 40 < n)
		{
			len += (size_t) sprintf(big + len, "{\"index\":{\"_id\":\"big%d\"}}\n{\"n\":%d}\n", docs, docs);
			docs++;
		}
		o = ecp_http_request(c, "POST", url("/unit-idx/_bulk?filter_path=errors"),
							 "application/x-ndjson", big, len, NULL, &resp);
		ok(o == ECP_HTTP_OK && resp.status == 200 && contains(resp.body, "\"errors\":false"),
		   "2 MB bulk (%d docs) accepted", docs);
		ecp_http_response_free(&resp);
		entry = last_logged_request(ctl);
		ok(entry && logged_header(entry, "Expect") == NULL &&
		   streq(logged_header(entry, "Accept"), "application/json") &&
		   streq(logged_header(entry, "Content-Type"), "application/x-ndjson") &&
		   streq(logged_header(entry, "User-Agent"), "ecp-unit/1") &&
		   logged_header(entry, "Authorization") == NULL,
		   "headers: no Expect, Accept json, Content-Type ndjson, User-Agent, no Authorization");
		json_decref(entry);
		free(big);
	}

	/* extra headers, Accept replaced */
	{
		const char *extra[] = {"X-Opaque-Id: unit-42", "Accept: application/vnd.elasticsearch+json; compatible-with=8", NULL};
		json_t	   *entry;

		o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, extra, &resp);
		ok(o == ECP_HTTP_OK && resp.status == 200, "GET with extra headers");
		ecp_http_response_free(&resp);
		entry = last_logged_request(ctl);
		ok(entry && streq(logged_header(entry, "X-Opaque-Id"), "unit-42") &&
		   contains(logged_header(entry, "Accept"), "compatible-with=8"),
		   "extra headers sent, Accept overridden");
		json_decref(entry);
	}
	ecp_http_client_destroy(c);

	/* gzip */
	default_config(&cfg);
	cfg.gzip_requests = 1;
	c = make_client(&cfg);
	{
		char		body[8192];
		size_t		len = 0;
		int			i;
		json_t	   *entry;

		for (i = 0; i < 50; i++)
			len += (size_t) snprintf(body + len, sizeof(body) - len,
									 "{\"index\":{\"_id\":\"gz%d\"}}\n{\"text\":\"the same words again and again %d\"}\n", i, i);
		o = bulk(c, "unit-idx", body, &resp);
		rc = o == ECP_HTTP_OK && resp.status == 200 ?
			ecp_bulk_parse(resp.body, resp.body_len, 50, "index", 0, &r, err, sizeof(err)) : -1;
		ok(rc == 0 && r.n_ok == 50, "gzip-compressed bulk accepted by esd (status %ld)", resp.status);
		if (rc == 0)
			ecp_bulk_result_free(&r);
		ecp_http_response_free(&resp);
		entry = last_logged_request(ctl);
		ok(entry && streq(logged_header(entry, "Content-Encoding"), "gzip") &&
		   json_integer_value(json_object_get(entry, "body_bytes")) == (json_int_t) len &&
		   json_integer_value(json_object_get(entry, "wire_bytes")) < (json_int_t) len / 2,
		   "sent with Content-Encoding: gzip (%lld bytes on the wire for %zu)",
		   entry ? (long long) json_integer_value(json_object_get(entry, "wire_bytes")) : -1LL, len);
		json_decref(entry);
		o = ecp_http_request(c, "GET", url("/unit-idx/_doc/gz7"), NULL, NULL, 0, NULL, &resp);
		ok(o == ECP_HTTP_OK && resp.status == 200 && contains(resp.body, "again 7"),
		   "gzip'd document readable; bodyless GET not compressed");
		ecp_http_response_free(&resp);
	}
	ecp_http_client_destroy(c);

	/* auth */
	set_faults(ctl, "{\"auth\":{\"basic\":\"elastic:s3cret-pass\"}}");
	default_config(&cfg);
	c = make_client(&cfg);
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ecp_error_summary(resp.body, resp.body_len, resp.status, err, sizeof(err));
	ok(o == ECP_HTTP_OK && resp.status == 401 && contains(err, "security_exception"),
	   "no credentials -> 401 (%s)", err);
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);

	cfg.auth_header = "Basic ZWxhc3RpYzp3cm9uZw==";	/* elastic:wrong */
	c = make_client(&cfg);
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 401, "wrong password -> 401");
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);

	cfg.auth_header = "Basic ZWxhc3RpYzpzM2NyZXQtcGFzcw==";	/* elastic:s3cret-pass */
	c = make_client(&cfg);
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200, "right basic auth -> 200");
	ecp_http_response_free(&resp);
	o = bulk(c, "unit-idx", "{\"index\":{\"_id\":\"auth1\"}}\n{\"n\":1}\n", &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200, "authenticated bulk -> 200");
	ecp_http_response_free(&resp);
	clear_faults(ctl);

	/* transport error on a closed port, credentials never in the error */
	{
		int			s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa;
		socklen_t	sl = sizeof(sa);
		int			closed_port = 0;
		char		u[256];

		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (s >= 0 && bind(s, (struct sockaddr *) &sa, sizeof(sa)) == 0 &&
			getsockname(s, (struct sockaddr *) &sa, &sl) == 0)
			closed_port = ntohs(sa.sin_port);
		if (s >= 0)
			close(s);			/* bound, never listened: connections are refused */
		snprintf(u, sizeof(u), "http://elastic:hunter2pw@127.0.0.1:%d/_bulk", closed_port);
		o = ecp_http_request(c, "POST", u, "application/x-ndjson", "{}\n", 3, NULL, &resp);
		ok(o == ECP_HTTP_TRANSPORT && contains(resp.error, "CURLE_COULDNT_CONNECT") &&
		   !resp.connection_lost, "closed port -> ECP_HTTP_TRANSPORT, no connection lost (%s)", resp.error);
		ok(!contains(resp.error, "hunter2pw") && !contains(resp.error, "s3cret") &&
		   !contains(resp.error, "ZWxhc3RpYzpzM2NyZXQtcGFzcw"),
		   "no credentials in the error");
		ok(resp.status == 0 && resp.body && resp.body_len == 0, "no status, empty body");
		ecp_http_response_free(&resp);
	}
	ecp_http_client_destroy(c);

	/* setup errors */
	default_config(&cfg);
	c = make_client(&cfg);
	o = ecp_http_request(c, "GET", "ftp://127.0.0.1/", NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_SETUP, "ftp:// -> ECP_HTTP_SETUP (%s)", resp.error);
	ecp_http_response_free(&resp);
	o = ecp_http_request(c, "GET", "http://[::1", NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_SETUP, "malformed URL -> ECP_HTTP_SETUP (%s)", resp.error);
	ecp_http_response_free(&resp);
	o = ecp_http_request(c, "GE T", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_SETUP, "bad method -> ECP_HTTP_SETUP (%s)", resp.error);
	ecp_http_response_free(&resp);
	{
		const char *bad[] = {"X-Evil: a\r\nX-Injected: b", NULL};

		o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, bad, &resp);
		ok(o == ECP_HTTP_SETUP, "header with a line break -> ECP_HTTP_SETUP (%s)", resp.error);
		ecp_http_response_free(&resp);
	}
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200, "the client still works after setup errors");
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);

	/* dropped connection */
	set_faults(ctl, "{\"drop\":{\"first\":1,\"match\":\"all\"}}");
	default_config(&cfg);
	c = make_client(&cfg);
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_TRANSPORT && resp.connection_lost,
	   "connection closed without an answer -> ECP_HTTP_TRANSPORT, connection_lost (%s)", resp.error);
	ecp_http_response_free(&resp);
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && resp.new_connections == 1,
	   "next request reconnects");
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);
	clear_faults(ctl);

	/* timeout */
	set_faults(ctl, "{\"delay_ms\":3000}");
	default_config(&cfg);
	cfg.request_timeout_ms = 300;
	c = make_client(&cfg);
	t0 = now();
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	elapsed = now() - t0;
	ok(o == ECP_HTTP_TRANSPORT && contains(resp.error, "CURLE_OPERATION_TIMEDOUT") && !resp.connection_lost,
	   "delay 3000 ms, timeout 300 ms -> ECP_HTTP_TRANSPORT, not a lost connection (%s)", resp.error);
	/* 1.2 s of slack for a loaded machine, still half the server's delay */
	if (timing_checks())
		ok(elapsed < 1.5, "... after %.2f s: the timeout, not the answer (bound 1.5 s)", elapsed);
	else
		skip("UNIT_NO_PERF is set (valgrind): no elapsed-time bound on the timeout");
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);

	/* abort through should_abort while the server is silent */
	default_config(&cfg);
	cfg.should_abort = abort_after_deadline;
	cfg.abort_arg = &abort_calls;
	c = make_client(&cfg);
	abort_now_flag = 0;
	abort_at = now() + 0.25;
	t0 = now();
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	elapsed = now() - t0;
	ok(o == ECP_HTTP_ABORTED,
	   "should_abort -> ECP_HTTP_ABORTED while the server is silent (asked at 250 ms; %d polls)",
	   abort_calls);

	/*
	 * should_abort is polled every 100 ms (POLL_INTERVAL_MS), so an abort
	 * asked at 250 ms lands by about 350 ms.  The bound allows a second
	 * more for a loaded machine (a descheduled process, a slow poll), and
	 * stays under the 3 s the server keeps silent: an abort that waited
	 * for the answer would come back ECP_HTTP_OK, one that waited for the
	 * next poll but one would still pass.
	 */
	if (timing_checks())
		ok(elapsed < 0.25 + 1.0, "... %.0f ms after the request began (bound 1250 ms)", elapsed * 1000);
	else
		skip("UNIT_NO_PERF is set (valgrind): no elapsed-time bound on the abort");
	ecp_http_response_free(&resp);
	abort_at = 0;
	clear_faults(ctl);

	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && resp.new_connections == 1,
	   "after an abort the next request opens a fresh connection");
	ecp_http_response_free(&resp);

	abort_now_flag = 1;
	simple(ctl, "DELETE", "/_esd/requests", NULL);
	o = ecp_http_request(c, "POST", url("/unit-idx/_bulk"), "application/x-ndjson",
						 "{\"index\":{\"_id\":\"never-sent\"}}\n{}\n", 33, NULL, &resp);
	ok(o == ECP_HTTP_ABORTED, "should_abort already set -> ECP_HTTP_ABORTED");
	ecp_http_response_free(&resp);
	{
		json_t	   *entry = last_logged_request(ctl);

		ok(entry == NULL, "and nothing was sent");
		json_decref(entry);
	}
	abort_now_flag = 0;
	ecp_http_client_destroy(c);

	/* response cap */
	default_config(&cfg);
	cfg.max_response_bytes = 64;
	c = make_client(&cfg);
	o = ecp_http_request(c, "GET", url("/"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_TOO_LARGE && resp.body && resp.body_len == 0,
	   "GET / with a 64-byte cap -> ECP_HTTP_TOO_LARGE (%s)", resp.error);
	ecp_http_response_free(&resp);
	o = ecp_http_request(c, "HEAD", url("/unit-idx"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200, "HEAD is not affected by the cap");
	ecp_http_response_free(&resp);
	o = ecp_http_request(c, "GET", url("/_cluster/health?filter_path=status"), NULL, NULL, 0, NULL, &resp);
	ok(o == ECP_HTTP_OK && resp.status == 200 && resp.body_len <= 64,
	   "a small answer under the cap still works (%s)", resp.body ? resp.body : "");
	ecp_http_response_free(&resp);
	ecp_http_client_destroy(c);

	/* response cap on a chunked body (no Content-Length): the write callback path */
	{
		size_t		sizes[] = {100000, 10000};
		int			port;
		pid_t		pid = start_chunked_server(sizes, 2, &port);
		char		u[128];
		int			status;

		default_config(&cfg);
		cfg.max_response_bytes = 10000;
		c = make_client(&cfg);
		snprintf(u, sizeof(u), "http://127.0.0.1:%d/", port);
		o = ecp_http_request(c, "GET", u, NULL, NULL, 0, NULL, &resp);
		ok(pid > 0 && o == ECP_HTTP_TOO_LARGE && resp.body_len == 0,
		   "chunked 100000-byte body with a 10000-byte cap -> ECP_HTTP_TOO_LARGE (%s)", resp.error);
		ecp_http_response_free(&resp);
		o = ecp_http_request(c, "GET", u, NULL, NULL, 0, NULL, &resp);
		ok(o == ECP_HTTP_OK && resp.status == 200 && resp.body_len == 10000 &&
		   strlen(resp.body) == 10000, "chunked body of exactly the cap is accepted");
		ecp_http_response_free(&resp);
		ecp_http_client_destroy(c);
		if (pid > 0)
		{
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
		}
	}

	/* TLS settings */
	default_config(&cfg);
	cfg.ca_file = "/nonexistent/ca.pem";
	c = make_client(&cfg);
	{
		char		u[128];

		snprintf(u, sizeof(u), "https://127.0.0.1:%d/", esd_port);
		o = ecp_http_request(c, "GET", u, NULL, NULL, 0, NULL, &resp);
		ok(o == ECP_HTTP_SETUP, "https with a missing CA file -> ECP_HTTP_SETUP (%s)", resp.error);
		ecp_http_response_free(&resp);
		ecp_http_client_destroy(c);
		default_config(&cfg);
		cfg.insecure = 1;
		c = make_client(&cfg);
		o = ecp_http_request(c, "GET", u, NULL, NULL, 0, NULL, &resp);
		ok(o == ECP_HTTP_TRANSPORT, "https to a plain-HTTP port -> ECP_HTTP_TRANSPORT (%s)", resp.error);
		ecp_http_response_free(&resp);
	}
	ecp_http_client_destroy(c);

	/* many requests on one client: bounded, reused */
	default_config(&cfg);
	c = make_client(&cfg);
	{
		int			i;
		int			good = 0;
		long		conns = 0;

		for (i = 0; i < 200; i++)
		{
			o = bulk(c, "unit-idx", "{\"index\":{\"_id\":\"loop\"}}\n{\"n\":1}\n", &resp);
			if (o == ECP_HTTP_OK && resp.status == 200 &&
				ecp_bulk_parse(resp.body, resp.body_len, 1, "index", 0, &r, err, sizeof(err)) == 0)
			{
				good += r.n_ok;
				ecp_bulk_result_free(&r);
			}
			conns += resp.new_connections;
			ecp_http_response_free(&resp);
		}
		ok(good == 200 && conns == 1, "200 bulk requests, one connection (%d ok, %ld connects)",
		   good, conns);
	}
	ecp_http_client_destroy(c);
	ecp_http_client_destroy(NULL);
}

int
main(void)
{
	const char *esd_bin = getenv("ESD_BIN");
	char		err[256];

	setvbuf(stdout, NULL, _IOLBF, 0);
	ecp_bulk_use_scanner = 1;
	name_prefix = "[scanner] ";
	test_parser();
	ecp_bulk_use_scanner = 0;
	name_prefix = "[jansson] ";
	test_parser();
	ecp_bulk_use_scanner = 1;
	name_prefix = "";
	test_scanner_equivalence();
	test_error_summary();
	test_parse_speed();

	if (!ok(ecp_http_global_init(err, sizeof(err)) == 0, "ecp_http_global_init"))
		diag("%s", err);
	ok(ecp_http_global_init(err, sizeof(err)) == 0, "ecp_http_global_init twice is fine");

	if (esd_bin == NULL || esd_bin[0] == '\0')
		skip("HTTP tests: ESD_BIN is not set");
	else if (access(esd_bin, X_OK) != 0)
		ok(0, "ESD_BIN=%s is not executable", esd_bin);
	else
	{
		signal(SIGINT, on_signal);
		signal(SIGTERM, on_signal);
		atexit(stop_esd);
		if (ok(start_esd(esd_bin) == 0, "esd started"))
		{
			EcpHttpConfig cfg;
			EcpHttpClient *ctl;

			default_config(&cfg);
			ctl = make_client(&cfg);
			if (ok(ctl != NULL, "control client"))
			{
				test_http(ctl);
				test_begin_sends_whole_body(ctl);
				test_address_filter(ctl);
				test_too_large(ctl);
				test_forbidden_items(ctl);
				ecp_http_client_destroy(ctl);
			}
		}
		stop_esd();
	}
	curl_global_cleanup();
	printf("1..%d\n", test_count);
	if (fail_count)
		printf("# %d of %d tests failed\n", fail_count, test_count);
	return fail_count ? 1 : 0;
}
