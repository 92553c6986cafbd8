/*
 * hostile_body_test.c: src/bulk_response.c against 64 MiB bodies built to
 * make jansson allocate gigabytes (finding M5): "[{},{},...]" as a 2xx
 * _bulk answer and as an error body, an item whose error is 64 MiB, an
 * error envelope followed by 64 MiB of junk.  Each must come back quickly
 * with jansson's peak allocation (counted through json_set_alloc_funcs)
 * and the process's peak RSS bounded.
 *
 * UNIT_NO_PERF=1 (run.sh sets it under valgrind) skips the time limits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include <jansson.h>

#include "bulk_response.h"
#include "tap.h"

#define HOSTILE_BYTES ((size_t) 64 << 20)
#define MAX_JANSSON_PEAK ((size_t) 48 << 20)	/* bytes jansson may hold at once */
#define MAX_RSS_GROWTH_KB (256L * 1024)
#define MAX_SECONDS 20.0		/* generous: shared 2-core machines */
#define HEADER_BYTES 16			/* keeps jansson's blocks 16-byte aligned */

/* ---- jansson allocation accounting: a size header before each block */

static size_t jansson_now;
static size_t jansson_peak;

static void *
counting_malloc(size_t n)
{
	size_t	   *block = malloc(n + HEADER_BYTES);

	if (block == NULL)
		return NULL;
	*block = n;
	jansson_now += n;
	if (jansson_now > jansson_peak)
		jansson_peak = jansson_now;
	return (char *) block + HEADER_BYTES;
}

static void
counting_free(void *p)
{
	size_t	   *block;

	if (p == NULL)
		return;
	block = (size_t *) ((char *) p - HEADER_BYTES);
	jansson_now -= *block;
	free(block);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static long
max_rss_kb(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* head + "{},{},...,{}" + tail, exactly total bytes (malloc'd, NUL-terminated). */
static char *
hostile_body(const char *head, const char *tail, size_t total, size_t *len)
{
	size_t		hl = strlen(head);
	size_t		tl = strlen(tail);
	char	   *body = malloc(total + 1);
	size_t		pos = hl;

	memcpy(body, head, hl);
	while (pos + 3 + tl <= total)
	{
		memcpy(body + pos, "{},", 3);
		pos += 3;
	}
	if (pos > hl)
		pos--;					/* no comma after the last {} */
	memcpy(body + pos, tail, tl);
	pos += tl;
	body[pos] = '\0';
	*len = pos;
	return body;
}

typedef struct Measure
{
	double		start;
	long		rss_before;
} Measure;

static void
measure_start(Measure *m)
{
	jansson_now = 0;
	jansson_peak = 0;
	m->rss_before = max_rss_kb();
	m->start = now();
}

/* The bounds every case must meet. */
static void
measure_check(const Measure *m, const char *what)
{
	double		seconds = now() - m->start;
	long		grown = max_rss_kb() - m->rss_before;

	ok(jansson_peak <= MAX_JANSSON_PEAK, "%s: jansson peak %.1f MB (at most %zu MB)", what,
	   jansson_peak / 1048576.0, MAX_JANSSON_PEAK >> 20);
	ok(grown <= MAX_RSS_GROWTH_KB, "%s: peak RSS grew %ld kB (at most %ld kB)", what, grown,
	   MAX_RSS_GROWTH_KB);
	if (getenv("UNIT_NO_PERF"))
		ok(1, "%s: %.2f s (no time limit under UNIT_NO_PERF)", what, seconds);
	else
		ok(seconds < MAX_SECONDS, "%s: %.2f s (under %.0f s)", what, seconds, MAX_SECONDS);
}

static void
test_bulk_array(void)
{
	size_t		len;
	char	   *body = hostile_body("[", "]", HOSTILE_BYTES, &len);
	EcpBulkResult res;
	char		err[512];
	Measure		m;
	int			rc;

	measure_start(&m);
	rc = ecp_bulk_parse(body, len, 1000, "index", 0, &res, err, sizeof(err));
	ok(rc == -1 && contains(err, "not a readable _bulk answer"),
	   "64 MiB [{},{},...] as a 2xx _bulk answer is refused: %s", err);
	measure_check(&m, "2xx [{},...]");
	free(body);
}

static void
test_bulk_items(void)
{
	size_t		len;
	char	   *body = hostile_body("{\"errors\":false,\"items\":[", "]}", HOSTILE_BYTES, &len);
	EcpBulkResult res;
	char		err[512];
	Measure		m;
	int			rc;

	measure_start(&m);
	rc = ecp_bulk_parse(body, len, 1000, "index", 0, &res, err, sizeof(err));
	ok(rc == -1, "64 MiB {\"items\":[{},{},...]} is refused: %s", err);
	measure_check(&m, "2xx items:[{},...]");
	free(body);
}

static void
test_huge_item_error(void)
{
	size_t		len;
	char	   *body = hostile_body("{\"errors\":true,\"items\":[{\"index\":{\"status\":201}},"
									"{\"index\":{\"status\":400,\"error\":[",
									"]}}]}", HOSTILE_BYTES, &len);
	EcpBulkResult res;
	char		err[512];
	Measure		m;
	int			rc;

	measure_start(&m);
	rc = ecp_bulk_parse(body, len, 2, "index", 0, &res, err, sizeof(err));
	ok(rc == 0 && res.nitems == 2 && res.items[0].klass == ECP_ITEM_OK &&
	   res.items[1].klass == ECP_ITEM_DATA_ERROR && res.items[1].status == 400,
	   "an item with a 64 MiB error keeps its status and class (rc %d: %s)", rc, err);
	ok(rc == 0 && contains(res.items[1].reason, "over the"),
	   "... its reason says the error was too large: %s", rc == 0 ? res.items[1].reason : "");
	measure_check(&m, "2xx item with a 64 MiB error");
	if (rc == 0)
		ecp_bulk_result_free(&res);
	free(body);
}

static void
test_summary_array(void)
{
	size_t		len;
	char	   *body = hostile_body("[", "]", HOSTILE_BYTES, &len);
	char		out[300];
	Measure		m;

	measure_start(&m);
	ecp_error_summary(body, len, 500, out, sizeof(out));
	ok(strncmp(out, "[{},{},", 7) == 0, "500 with 64 MiB [{},...]: the printable prefix (%.40s...)",
	   out);
	measure_check(&m, "500 [{},...]");
	free(body);
}

static void
test_summary_envelope_then_junk(void)
{
	size_t		len;
	char	   *body = hostile_body("{\"error\":{\"type\":\"cluster_block_exception\","
									"\"reason\":\"blocked\"},\"status\":500,\"junk\":[",
									"]}", HOSTILE_BYTES, &len);
	char		out[300];
	Measure		m;

	measure_start(&m);
	ecp_error_summary(body, len, 500, out, sizeof(out));
	ok(strcmp(out, "cluster_block_exception: blocked") == 0,
	   "500 envelope then 64 MiB of junk: the envelope is read from the prefix (%s)", out);
	measure_check(&m, "500 envelope + junk");
	free(body);

	body = hostile_body("{\"junk\":[", "],\"error\":\"late\"}", HOSTILE_BYTES, &len);
	measure_start(&m);
	ecp_error_summary(body, len, 500, out, sizeof(out));
	ok(strncmp(out, "{\"junk\":[{},", 12) == 0,
	   "an error member after 64 KiB is not looked for: the prefix (%.40s...)", out);
	measure_check(&m, "500 junk then error");
	free(body);
}

static void
test_fallback_limit(void)
{
	size_t		len;
	char	   *body = hostile_body("[", "]", 500 * 1000, &len);
	EcpBulkResult res;
	char		err[512];
	Measure		m;
	int			rc;

	measure_start(&m);
	rc = ecp_bulk_parse(body, len, 10, "index", 0, &res, err, sizeof(err));
	ok(rc == -1 && contains(err, "not a JSON object"),
	   "500 kB [{},...] (under the 512 KiB limit) is parsed in full and refused: %s", err);
	measure_check(&m, "500 kB [{},...] through jansson");
	free(body);
}

/* The bounds must not refuse what a real cluster sends for a large batch. */
static void
test_large_valid_answer(void)
{
	int			n = 100000;
	size_t		cap = (size_t) n * 160 + 64;
	char	   *body = malloc(cap);
	size_t		len = 0;
	EcpBulkResult res;
	char		err[512];
	int			rc;

	len += (size_t) snprintf(body + len, cap - len, "{\"errors\":true,\"items\":[");
	for (int i = 0; i < n; i++)
		len += (size_t) snprintf(body + len, cap - len, i % 1000 == 7 ?
								 "%s{\"index\":{\"status\":400,\"error\":{\"type\":\"document_parsing_exception\",\"reason\":\"failed to parse field [n] of type [long]\"}}}" :
								 "%s{\"index\":{\"status\":201}}", i ? "," : "");
	len += (size_t) snprintf(body + len, cap - len, "]}");
	rc = ecp_bulk_parse(body, len, n, "index", 0, &res, err, sizeof(err));
	ok(rc == 0 && res.n_ok == n - 100 && res.n_data_error == 100,
	   "a valid 100,000-item answer (%zu bytes) still parses (rc %d %s)", len, rc, err);
	if (rc == 0)
		ecp_bulk_result_free(&res);
	free(body);
}

int
main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	json_set_alloc_funcs(counting_malloc, counting_free);
	test_bulk_array();
	test_bulk_items();
	test_huge_item_error();
	test_summary_array();
	test_summary_envelope_then_junk();
	test_fallback_limit();
	test_large_valid_answer();
	return tap_done();
}
