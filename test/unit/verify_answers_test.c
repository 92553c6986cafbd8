/*
 * verify_answers_test.c: src/lib/verify_answers.c, the answers a verify
 * run reads: _mget answers as Elasticsearch 8 writes them (found, not
 * found, with and without _source, _version, error items, ids with
 * escapes), ids that do not match, points in time of Elasticsearch and
 * OpenSearch, pages of hits (empty, one, many; sort values of every
 * kind; pit_id or none); malformed and hostile bodies: every truncation,
 * deep nesting, 64 MiB bodies in bounded time and memory.
 *
 * UNIT_NO_PERF=1 (run.sh sets it under valgrind) skips the time and RSS
 * bounds and reads 4 MiB instead of 64.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "verify_answers.h"
#include "tap.h"

#define HUGE_BYTES ((size_t) 64 << 20)
#define HUGE_BYTES_VALGRIND ((size_t) 4 << 20)
#define MAX_RSS_GROWTH_KB (4L * 1024)	/* nothing of a skipped value is kept */
#define MAX_SECONDS 20.0		/* generous: shared 2-core machines */

#define MAX_IDS 8

/* a string literal as a body and its length */
#define LIT_BODY(s) s, sizeof(s) - 1

static int
no_perf(void)
{
	return getenv("UNIT_NO_PERF") != NULL;
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

static const char *
read_name(EcpAnswerRead rc)
{
	return rc == ECP_ANSWER_READ ? "read" : rc == ECP_ANSWER_NOT_JSON ? "not JSON" :
		rc == ECP_ANSWER_UNEXPECTED ? "unexpected" : "?";
}

/* A span of the body is exactly want. */
static int
span_is(const char *span, size_t len, const char *want)
{
	if (want == NULL)
		return span == NULL && len == 0;
	return span != NULL && len == strlen(want) && memcmp(span, want, len) == 0;
}

/* After a failure the docs hold nothing. */
static int
docs_empty(const EcpMgetDoc *docs, int n)
{
	for (int i = 0; i < n; i++)
		if (docs[i].found || docs[i].source || docs[i].source_len || docs[i].has_version ||
			docs[i].version || docs[i].error)
			return 0;
	return 1;
}

static void
expect_mget_fail(const char *body, const char *const *ids, int nids, EcpAnswerRead want,
				 const char *err_part, const char *what)
{
	EcpMgetDoc	docs[MAX_IDS];
	char		err[512] = "";
	EcpAnswerRead rc;

	memset(docs, 0x5a, sizeof(docs));
	rc = ecp_answer_mget(body, strlen(body), ids, nids, docs, err, sizeof(err));
	ok(rc == want && contains(err, err_part) && docs_empty(docs, nids), "%s: %s (%s)", what,
	   read_name(rc), err);
	if (rc != want || !contains(err, err_part))
		diag("want %s with \"%s\"", read_name(want), err_part);
	ecp_mget_docs_free(docs, nids);
}

/* ---- _mget */

static void
test_mget_real(void)
{
	const char *body =
		"{\"docs\":["
		"{\"_index\":\"products-v1\",\"_id\":\"1\",\"_version\":3,\"_seq_no\":10,\"_primary_term\":1,"
		"\"found\":true,\"_source\":{\"id\":1,\"name\":\"caf\\u00e9\",\"tags\":[\"a\"]}},"
		"{\"_index\":\"products-v1\",\"_id\":\"2\",\"found\":false},"
		"{\"_index\":\"products-v1\",\"_id\":\"3\",\"_version\":1,\"_seq_no\":11,\"_primary_term\":1,\"found\":true},"
		"{\"_index\":\"missing\",\"_id\":\"4\",\"error\":{\"root_cause\":[{\"type\":\"index_not_found_exception\","
		"\"reason\":\"no such index [missing]\",\"resource.type\":\"index_expression\",\"resource.id\":\"missing\","
		"\"index_uuid\":\"_na_\",\"index\":\"missing\"}],\"type\":\"index_not_found_exception\","
		"\"reason\":\"no such index [missing]\",\"resource.type\":\"index_expression\",\"resource.id\":\"missing\","
		"\"index_uuid\":\"_na_\",\"index\":\"missing\"}},"
		"{\"_index\":\"products-v1\",\"_id\":\"a\\\"b\\\\c\\u00e9\\/\\ud83d\\ude00\",\"_version\":9223372036854775807,"
		"\"found\":true,\"_source\":\"not an object\"}"
		"]}";
	const char *ids[] = {"1", "2", "3", "4", "a\"b\\c\xc3\xa9/\xf0\x9f\x98\x80"};
	EcpMgetDoc	docs[5];
	char		err[256] = "";
	EcpAnswerRead rc = ecp_answer_mget(body, strlen(body), ids, 5, docs, err, sizeof(err));

	ok(rc == ECP_ANSWER_READ, "an Elasticsearch 8 _mget answer of 5 docs: %s %s", read_name(rc), err);
	ok(docs[0].found == 1 && span_is(docs[0].source, docs[0].source_len,
									  "{\"id\":1,\"name\":\"caf\\u00e9\",\"tags\":[\"a\"]}") &&
	   docs[0].has_version && docs[0].version == 3 && docs[0].error == NULL,
	   "found, with its _source (the raw text in the body) and _version 3");
	ok(docs[1].found == 0 && docs[1].source == NULL && !docs[1].has_version && docs[1].error == NULL,
	   "not found: no _source, no _version");
	ok(docs[2].found == 1 && docs[2].source == NULL && docs[2].has_version && docs[2].version == 1,
	   "found, _source not asked for: NULL");
	ok(docs[3].found == -1 && docs[3].source == NULL && docs[3].error &&
	   strcmp(docs[3].error, "index_not_found_exception: no such index [missing]") == 0,
	   "an error item: \"%s\"", docs[3].error ? docs[3].error : "(null)");
	ok(docs[4].found == 1 && span_is(docs[4].source, docs[4].source_len, "\"not an object\"") &&
	   docs[4].version == 9223372036854775807LL,
	   "an id with every kind of escape matches its unescaped form; the largest _version");
	ecp_mget_docs_free(docs, 5);
}

static void
test_mget_shapes(void)
{
	const char *pretty =
		"{\n  \"docs\" : [\n    {\n      \"_index\" : \"p\",\n      \"_id\" : \"7\",\n      \"_version\" : 2,\n"
		"      \"found\" : true,\n      \"_source\" : {\n        \"a\" : [ 1, 2 ]\n      }\n    }\n  ]\n}\n";
	const char *ids7[] = {"7"};
	const char *ids2[] = {"x", "y"};
	EcpMgetDoc	docs[2];
	char		err[256] = "";
	EcpAnswerRead rc = ecp_answer_mget(pretty, strlen(pretty), ids7, 1, docs, err, sizeof(err));

	ok(rc == ECP_ANSWER_READ && docs[0].found == 1 &&
	   span_is(docs[0].source, docs[0].source_len, "{\n        \"a\" : [ 1, 2 ]\n      }") &&
	   docs[0].version == 2, "?pretty: the _source span is the value's text, whitespace inside kept (%s)", err);
	ecp_mget_docs_free(docs, 1);

	rc = ecp_answer_mget(LIT_BODY("{\"docs\":[]}"), NULL, 0, NULL, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ, "no ids, no docs: read (%s)", err);

	rc = ecp_answer_mget(LIT_BODY("{\"took\":3,\"docs\":[{\"_id\":\"x\",\"error\":\"boom\"},"
								  "{\"_id\":\"y\",\"error\":{\"caused_by\":{}}}],\"extra\":{\"docs\":1}}"),
						 ids2, 2, docs, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && docs[0].found == -1 && docs[0].error && strcmp(docs[0].error, "boom") == 0 &&
	   docs[1].found == -1 && docs[1].error &&
	   strcmp(docs[1].error, "an error without a type or a reason") == 0,
	   "an error as a string, one without type or reason: \"%s\", \"%s\" (%s)",
	   docs[0].error ? docs[0].error : "", docs[1].error ? docs[1].error : "", err);
	ecp_mget_docs_free(docs, 2);

	rc = ecp_answer_mget(LIT_BODY("{\"docs\":[{\"_id\":\"x\",\"error\":{\"type\":\"t\"}},"
								  "{\"_id\":\"y\",\"error\":{\"reason\":\"r \\u00e9\"}}]}"),
						 ids2, 2, docs, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && docs[0].error && strcmp(docs[0].error, "t") == 0 && docs[1].error &&
	   strcmp(docs[1].error, "r \xc3\xa9") == 0, "an error with only a type, one with only a reason (%s)", err);
	ecp_mget_docs_free(docs, 2);
}

static void
test_mget_ids(void)
{
	const char *one[] = {"8"};
	const char *two[] = {"1", "2"};
	const char *newline[] = {"a\nb"};
	const char *quoted[] = {"say \"hi\""};
	char	   *long_id = malloc(1001);
	char	   *body = malloc(1100);
	const char *long_ids[1];

	expect_mget_fail("{\"docs\":[{\"_id\":\"7\",\"found\":false}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0]._id is \"7\", expected \"8\"", "another id");
	expect_mget_fail("{\"docs\":[{\"_id\":\"2\",\"found\":false},{\"_id\":\"1\",\"found\":false}]}", two, 2,
					 ECP_ANSWER_UNEXPECTED, "docs[0]._id is \"2\", expected \"1\"", "ids in another order");
	expect_mget_fail("{\"docs\":[{\"_id\":\"1\",\"found\":false},{\"_id\":\"3\",\"found\":false}]}", two, 2,
					 ECP_ANSWER_UNEXPECTED, "docs[1]._id is \"3\", expected \"2\"", "the second id differs");
	expect_mget_fail("{\"docs\":[{\"_id\":\"1\",\"found\":false}]}", two, 2, ECP_ANSWER_UNEXPECTED,
					 "the answer holds 1 of the 2 docs asked for", "a doc short");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":false},{\"_id\":\"9\",\"found\":false}]}", one, 1,
					 ECP_ANSWER_UNEXPECTED, "more docs than the 1 asked for", "a doc too many");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\\u0000\",\"found\":false}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0]._id is \"8\\u0000\", expected \"8\"", "an id with \\u0000 after the one asked for");
	expect_mget_fail("{\"docs\":[{\"_id\":\"\",\"found\":false}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0]._id is \"\", expected \"8\"", "an empty id");
	expect_mget_fail("{\"docs\":[{\"_id\":\"a\\\\nb\",\"found\":false}]}", newline, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0]._id is \"a\\\\nb\", expected \"a\\nb\"", "a backslash-n is not a newline");
	expect_mget_fail("{\"docs\":[{\"_id\":\"say hi\",\"found\":false}]}", quoted, 1, ECP_ANSWER_UNEXPECTED,
					 "expected \"say \\\"hi\\\"\"", "an expected id with quotes, quoted in the message");
	expect_mget_fail("{\"docs\":[{\"_id\":8,\"found\":false}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0]._id is a number, not a string", "a number id");
	expect_mget_fail("{\"docs\":[{\"found\":false}]}", one, 1, ECP_ANSWER_UNEXPECTED, "docs[0] has no \"_id\"",
					 "no id");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"_id\":\"8\",\"found\":false}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0] has \"_id\" twice", "an id twice");

	/* a long id is cut in the message */
	memset(long_id, 'i', 1000);	/* an id of 1000 i's */
	long_id[1000] = '\0';
	long_ids[0] = long_id;
	snprintf(body, 1100, "{\"docs\":[{\"_id\":\"%.999s\",\"found\":false}]}", long_id);
	{
		EcpMgetDoc	docs[1];
		char		err[512] = "";
		EcpAnswerRead rc = ecp_answer_mget(body, strlen(body), long_ids, 1, docs, err, sizeof(err));

		ok(rc == ECP_ANSWER_UNEXPECTED && contains(err, "iii...\", expected \"iii") && contains(err, "...\"") &&
		   strlen(err) < 260, "a 999-byte id against a 1000-byte one: both cut in the message (%zu bytes)",
		   strlen(err));
	}
	free(body);
	free(long_id);
}

static void
test_mget_items(void)
{
	const char *one[] = {"8"};

	expect_mget_fail("{\"docs\":[{\"_id\":\"8\"}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0] has neither \"found\" nor \"error\"", "no found, no error");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":\"yes\"}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0].found is a string, not a boolean", "found as a string");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":null}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0].found is null, not a boolean", "found null");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":true,\"found\":true}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0] has \"found\" twice", "found twice");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":false,\"_source\":{}}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0] is not found, yet has a \"_source\"", "not found with a _source");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":true,\"_source\":{},\"_source\":{}}]}", one, 1,
					 ECP_ANSWER_UNEXPECTED, "docs[0] has \"_source\" twice", "a _source twice");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":true,\"_version\":\"3\"}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0]._version is not a 64-bit integer: it is a string", "a _version as a string");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":true,\"_version\":1.5}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0]._version is not a 64-bit integer: it is a real number", "a real _version");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":true,\"_version\":9223372036854775808}]}", one, 1,
					 ECP_ANSWER_UNEXPECTED, "it is an integer beyond 64 bits", "a _version beyond 64 bits");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"error\":42}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0].error is a number, not an object", "an error as a number");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"error\":{},\"error\":{}}]}", one, 1, ECP_ANSWER_UNEXPECTED,
					 "docs[0] has \"error\" twice", "an error twice");
	expect_mget_fail("{\"docs\":[\"8\"]}", one, 1, ECP_ANSWER_UNEXPECTED, "docs[0] is a string, not an object",
					 "a doc as a string");
	expect_mget_fail("{\"docs\":{}}", one, 1, ECP_ANSWER_UNEXPECTED, "\"docs\" is an object, not an array",
					 "docs as an object");
	expect_mget_fail("{\"docs\":[],\"docs\":[]}", NULL, 0, ECP_ANSWER_UNEXPECTED, "\"docs\" appears twice",
					 "docs twice");
	expect_mget_fail("{\"error\":{\"type\":\"index_not_found_exception\",\"reason\":\"no such index\"},\"status\":404}",
					 one, 1, ECP_ANSWER_UNEXPECTED, "the answer has no \"docs\"", "an error answer");
	expect_mget_fail("[{\"_id\":\"8\"}]", one, 1, ECP_ANSWER_UNEXPECTED, "not a JSON object", "an array answer");
	expect_mget_fail("{\"docs\":[{\"_id\":\"8\",\"found\":true,\"_source\":{\"a\":}}]}", one, 1, ECP_ANSWER_NOT_JSON,
					 "where a value should be", "a _source that is not JSON");
	expect_mget_fail("{\"docs\":[{\"_id\":\"7\",\"found\":true}] x", one, 1, ECP_ANSWER_NOT_JSON,
					 "',' or '}'", "a wrong id in a body that is not JSON: not JSON first");
	expect_mget_fail("", one, 1, ECP_ANSWER_NOT_JSON, "empty", "an empty body");
	expect_mget_fail("<html>502 Bad Gateway</html>", one, 1, ECP_ANSWER_NOT_JSON, "unexpected '<'", "a proxy's page");
	expect_mget_fail("{\"docs\":[]}", one, -1, ECP_ANSWER_UNEXPECTED, "no ids", "a negative count of ids");
}

/* ---- points in time */

static void
expect_pit(const char *body, EcpAnswerRead want, const char *want_id, const char *err_part,
		   const char *what)
{
	char	   *pit = (char *) "untouched";
	char		err[256] = "";
	EcpAnswerRead rc = ecp_answer_pit_id(body, strlen(body), &pit, err, sizeof(err));

	if (want == ECP_ANSWER_READ)
		ok(rc == want && pit && strcmp(pit, want_id) == 0, "%s: %s \"%.40s\" (%s)", what, read_name(rc),
		   pit ? pit : "(null)", err);
	else
		ok(rc == want && pit == NULL && contains(err, err_part), "%s: %s (%s)", what, read_name(rc), err);
	if (rc == ECP_ANSWER_READ)
		free(pit);
}

static void
test_pit(void)
{
	expect_pit("{\"id\":\"46ToAwMDaWR5BXV1aWQyKwZub2RlXzMAAAAAAAAAACoBYwADaWR4BXV1aWQxAgZub2RlXzEAAAAAAAAAAAEBYQAD"
			   "aWR5BXV1aWQyKgZub2RlXzIAAAAAAAAAAAwBYgACBXV1aWQyAAAFdXVpZDEAAQltYXRjaF9hbGw_gAAAAA==\"}",
			   ECP_ANSWER_READ,
			   "46ToAwMDaWR5BXV1aWQyKwZub2RlXzMAAAAAAAAAACoBYwADaWR4BXV1aWQxAgZub2RlXzEAAAAAAAAAAAEBYQAD"
			   "aWR5BXV1aWQyKgZub2RlXzIAAAAAAAAAAAwBYgACBXV1aWQyAAAFdXVpZDEAAQltYXRjaF9hbGw_gAAAAA==",
			   NULL, "Elasticsearch: {\"id\":...}");
	expect_pit("{\"id\":\"p-1\",\"_shards\":{\"total\":2,\"successful\":2,\"skipped\":0,\"failed\":0}}",
			   ECP_ANSWER_READ, "p-1", NULL, "Elasticsearch 8.x with _shards");
	expect_pit("{\"pit_id\":\"o463QQEPbXktaW5kZXgtMRZkby1xdU9kWlRzbWZGWkpPTnJKaDdnABZjMGp3VlZQb1RVU05vYjhQMk5CZHV3"
			   "AAAAAAAAAAAtFlp5ZzVvZmF6VEVxMW1UV2hOY2xWZkEBFmRvLXF1T2RaVHNtZkZaSk9OckpoN2cAAA==\","
			   "\"_shards\":{\"total\":1,\"successful\":1,\"skipped\":0,\"failed\":0},\"creation_time\":1658146048666}",
			   ECP_ANSWER_READ,
			   "o463QQEPbXktaW5kZXgtMRZkby1xdU9kWlRzbWZGWkpPTnJKaDdnABZjMGp3VlZQb1RVU05vYjhQMk5CZHV3"
			   "AAAAAAAAAAAtFlp5ZzVvZmF6VEVxMW1UV2hOY2xWZkEBFmRvLXF1T2RaVHNtZkZaSk9OckpoN2cAAA==",
			   NULL, "OpenSearch: {\"pit_id\":...,\"creation_time\":...}");
	expect_pit("{\"id\":\"a\\/b\\u003d\"}", ECP_ANSWER_READ, "a/b=", NULL, "an id with escapes, unescaped");
	expect_pit("{\"_shards\":{\"id\":\"x\"}}", ECP_ANSWER_UNEXPECTED, NULL,
			   "neither \"id\" (Elasticsearch) nor \"pit_id\" (OpenSearch)", "an id only nested");
	expect_pit("{\"error\":{\"type\":\"index_not_found_exception\"},\"status\":404}", ECP_ANSWER_UNEXPECTED, NULL,
			   "neither", "an error answer");
	expect_pit("{\"id\":\"a\",\"pit_id\":\"b\"}", ECP_ANSWER_UNEXPECTED, NULL, "both \"id\" and \"pit_id\"", "both");
	expect_pit("{\"id\":\"a\",\"id\":\"a\"}", ECP_ANSWER_UNEXPECTED, NULL, "\"id\" appears twice", "id twice");
	expect_pit("{\"id\":42}", ECP_ANSWER_UNEXPECTED, NULL, "\"id\" is a number, not a string", "a number id");
	expect_pit("{\"pit_id\":null}", ECP_ANSWER_UNEXPECTED, NULL, "\"pit_id\" is null, not a string", "a null pit_id");
	expect_pit("{\"id\":\"\"}", ECP_ANSWER_UNEXPECTED, NULL, "\"id\" is empty", "an empty id");
	expect_pit("{\"id\":\"a\\u0000b\"}", ECP_ANSWER_UNEXPECTED, NULL, "\"id\" holds \\u0000", "an id with \\u0000");
	expect_pit("{\"id\":\"abc", ECP_ANSWER_NOT_JSON, NULL, "ends inside a string", "cut inside the id");
	expect_pit("{\"id\":\"abc\",}", ECP_ANSWER_NOT_JSON, NULL, "a key", "a trailing comma");
	expect_pit("{\"id\":1,\"x\":[}", ECP_ANSWER_NOT_JSON, NULL, "a value",
			   "a number id in a body that is not JSON: not JSON first");
	expect_pit("\"id\"", ECP_ANSWER_UNEXPECTED, NULL, "a string, not a JSON object", "a string answer");
}

/* ---- pages of hits */

static void
expect_page_fail(const char *body, EcpAnswerRead want, const char *err_part, const char *what)
{
	EcpHitPage	page;
	char		err[256] = "";
	EcpAnswerRead rc = ecp_answer_hit_page(body, strlen(body), &page, err, sizeof(err));

	ok(rc == want && contains(err, err_part) && page.ids == NULL && page.nids == 0 && page.last_sort == NULL &&
	   page.pit_id == NULL, "%s: %s (%s)", what, read_name(rc), err);
	if (rc != want || !contains(err, err_part))
		diag("want %s with \"%s\"", read_name(want), err_part);
	ecp_hit_page_free(&page);
}

static void
test_pages(void)
{
	EcpHitPage	page;
	char		err[256] = "";
	EcpAnswerRead rc;
	const char *empty = "{\"pit_id\":\"p-2\",\"took\":1,\"timed_out\":false,"
		"\"_shards\":{\"total\":1,\"successful\":1,\"skipped\":0,\"failed\":0},"
		"\"hits\":{\"total\":{\"value\":0,\"relation\":\"eq\"},\"max_score\":null,\"hits\":[]}}";
	const char *one = "{\"pit_id\":\"p-3\",\"took\":2,\"timed_out\":false,\"_shards\":{\"total\":1,\"successful\":1,"
		"\"skipped\":0,\"failed\":0},\"hits\":{\"total\":{\"value\":10000,\"relation\":\"gte\"},\"max_score\":null,"
		"\"hits\":[{\"_index\":\"products-v1\",\"_id\":\"1\",\"_score\":null,\"sort\":[\"1\"]}]}}";
	const char *many = "{\"took\":5,\"timed_out\":false,\"hits\":{\"max_score\":null,\"hits\":["
		"{\"_index\":\"p\",\"_id\":\"id-1\",\"_score\":null,\"sort\":[\"id-1\",17]},"
		"{\"_index\":\"p\",\"_id\":\"id-\\u00e9\",\"_score\":null,\"sort\":[\"id-\\u00e9\",18]},"
		"{\"_index\":\"p\",\"sort\":[ \"z\\\"q\" , -1.5e3, null, true ],\"_id\":\"z\\\"q\"}]}}";

	rc = ecp_answer_hit_page(empty, strlen(empty), &page, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && page.nids == 0 && page.ids == NULL && page.last_sort == NULL && page.pit_id &&
	   strcmp(page.pit_id, "p-2") == 0, "an empty page: no ids, no sort, the pit_id (%s)", err);
	ecp_hit_page_free(&page);

	rc = ecp_answer_hit_page(one, strlen(one), &page, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && page.nids == 1 && strcmp(page.ids[0], "1") == 0 && page.last_sort &&
	   strcmp(page.last_sort, "[\"1\"]") == 0 && page.pit_id && strcmp(page.pit_id, "p-3") == 0,
	   "one hit: its id, its sort, the pit_id (%s)", err);
	ecp_hit_page_free(&page);
	ok(page.ids == NULL && page.nids == 0 && page.last_sort == NULL && page.pit_id == NULL,
	   "a freed page is empty");

	rc = ecp_answer_hit_page(many, strlen(many), &page, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && page.nids == 3 && strcmp(page.ids[0], "id-1") == 0 &&
	   strcmp(page.ids[1], "id-\xc3\xa9") == 0 && strcmp(page.ids[2], "z\"q") == 0 && page.pit_id == NULL &&
	   page.last_sort && strcmp(page.last_sort, "[ \"z\\\"q\" , -1.5e3, null, true ]") == 0,
	   "three hits, ids unescaped, no pit_id, the last sort as written: %s (%s)",
	   page.last_sort ? page.last_sort : "(null)", err);
	ecp_hit_page_free(&page);

	/* many hits: the ids array grows */
	{
		int			n = 5000;
		char	   *body = malloc((size_t) n * 48 + 64);
		size_t		len = (size_t) sprintf(body, "{\"hits\":{\"hits\":[");
		int			good;

		for (int i = 0; i < n; i++)
			len += (size_t) sprintf(body + len, "%s{\"_id\":\"%d\",\"sort\":[%d]}", i ? "," : "", i, i);
		len += (size_t) sprintf(body + len, "]}}");
		rc = ecp_answer_hit_page(body, len, &page, err, sizeof(err));
		good = rc == ECP_ANSWER_READ && page.nids == n && strcmp(page.last_sort, "[4999]") == 0;
		for (int i = 0; good && i < n; i++)
			good = atoi(page.ids[i]) == i;
		ok(good, "%d hits in order, the last sort [4999] (%s)", n, err);
		ecp_hit_page_free(&page);
		free(body);
	}
}

static void
test_bad_pages(void)
{
	expect_page_fail("{\"hits\":{\"hits\":[{\"sort\":[1]}]}}", ECP_ANSWER_UNEXPECTED, "hits.hits[0] has no \"_id\"",
					 "a hit without _id");
	expect_page_fail("{\"hits\":{\"hits\":[{\"_id\":\"1\",\"sort\":[1]},{\"_id\":\"2\"}]}}", ECP_ANSWER_UNEXPECTED,
					 "hits.hits[1] has no \"sort\"", "a hit without sort");
	expect_page_fail("{\"hits\":{\"hits\":[{\"_id\":\"1\",\"sort\":1}]}}", ECP_ANSWER_UNEXPECTED,
					 "hits.hits[0].sort is a number, not an array", "sort as a number");
	expect_page_fail("{\"hits\":{\"hits\":[{\"_id\":1,\"sort\":[1]}]}}", ECP_ANSWER_UNEXPECTED,
					 "hits.hits[0]._id is a number, not a string", "a number id");
	expect_page_fail("{\"hits\":{\"hits\":[{\"_id\":\"a\\u0000\",\"sort\":[1]}]}}", ECP_ANSWER_UNEXPECTED,
					 "hits.hits[0]._id holds \\u0000", "an id with \\u0000");
	expect_page_fail("{\"hits\":{\"hits\":[{\"_id\":\"\",\"sort\":[1]}]}}", ECP_ANSWER_UNEXPECTED,
					 "hits.hits[0]._id is empty", "an empty id");
	expect_page_fail("{\"hits\":{\"hits\":[{\"_id\":\"1\",\"_id\":\"1\",\"sort\":[1]}]}}", ECP_ANSWER_UNEXPECTED,
					 "hits.hits[0] has \"_id\" twice", "an id twice");
	expect_page_fail("{\"hits\":{\"hits\":[{\"_id\":\"1\",\"sort\":[1],\"sort\":[2]}]}}", ECP_ANSWER_UNEXPECTED,
					 "hits.hits[0] has \"sort\" twice", "a sort twice");
	expect_page_fail("{\"hits\":{\"hits\":[[]]}}", ECP_ANSWER_UNEXPECTED, "hits.hits[0] is an array, not an object",
					 "a hit as an array");
	expect_page_fail("{\"hits\":{\"hits\":{}}}", ECP_ANSWER_UNEXPECTED, "hits.hits is an object, not an array",
					 "hits.hits as an object");
	expect_page_fail("{\"hits\":[]}", ECP_ANSWER_UNEXPECTED, "\"hits\" is an array, not an object", "hits as an array");
	expect_page_fail("{\"hits\":{\"total\":0}}", ECP_ANSWER_UNEXPECTED, "the answer has no hits.hits", "no hits.hits");
	expect_page_fail("{\"pit_id\":\"p\"}", ECP_ANSWER_UNEXPECTED, "the answer has no \"hits\"", "no hits");
	expect_page_fail("{\"hits\":{\"hits\":[]},\"hits\":{\"hits\":[]}}", ECP_ANSWER_UNEXPECTED, "\"hits\" appears twice",
					 "hits twice");
	expect_page_fail("{\"hits\":{\"hits\":[],\"hits\":[]}}", ECP_ANSWER_UNEXPECTED, "hits.hits appears twice",
					 "hits.hits twice");
	expect_page_fail("{\"pit_id\":7,\"hits\":{\"hits\":[]}}", ECP_ANSWER_UNEXPECTED, "\"pit_id\" is a number",
					 "a number pit_id");
	expect_page_fail("{\"pit_id\":\"a\",\"pit_id\":\"b\",\"hits\":{\"hits\":[]}}", ECP_ANSWER_UNEXPECTED,
					 "\"pit_id\" appears twice", "pit_id twice");
	expect_page_fail("{\"pit_id\":\"\",\"hits\":{\"hits\":[]}}", ECP_ANSWER_UNEXPECTED, "\"pit_id\" is empty",
					 "an empty pit_id");
	expect_page_fail("{\"pit_id\":\"\\u0000\",\"hits\":{\"hits\":[]}}", ECP_ANSWER_UNEXPECTED, "\"pit_id\" holds \\u0000",
					 "a pit_id with \\u0000");
	expect_page_fail("{\"timed_out\":true,\"hits\":{\"hits\":[{\"_id\":\"1\",\"sort\":[1]}]}}", ECP_ANSWER_UNEXPECTED,
					 "the search timed out", "a page that timed out");
	expect_page_fail("{\"_shards\":{\"total\":3,\"successful\":1,\"failed\":2,\"failures\":[{}]},"
					 "\"hits\":{\"hits\":[{\"_id\":\"1\",\"sort\":[1]}]}}", ECP_ANSWER_UNEXPECTED,
					 "2 of the search's shards failed", "a page with failed shards");
	expect_page_fail("{\"_shards\":{\"failed\":\"0\"},\"hits\":{\"hits\":[]}}", ECP_ANSWER_UNEXPECTED,
					 "_shards.failed is not a 64-bit integer: it is a string", "failed as a string");
	expect_page_fail("{\"hits\":{\"hits\":[{\"_id\":\"1\",\"sort\":[1,]}]}}", ECP_ANSWER_NOT_JSON, "a value",
					 "a sort that is not JSON");
	expect_page_fail("{\"hits\":{\"hits\":[{\"sort\":[1]}]}} ]", ECP_ANSWER_NOT_JSON, "the end of the answer",
					 "a hit without _id in a body that is not JSON: not JSON first");
	expect_page_fail("", ECP_ANSWER_NOT_JSON, "empty", "an empty body");
}

/* ---- truncation */

/* Every proper prefix of each answer is not JSON, for every reader; never a crash. */
static void
test_truncated(void)
{
	static const char *answers[] = {
		"{\"docs\":[{\"_index\":\"p\",\"_id\":\"1\",\"_version\":3,\"found\":true,\"_source\":{\"a\":[1,\"\\u00e9\",{}]}},"
		"{\"_index\":\"p\",\"_id\":\"2\",\"found\":false},{\"_index\":\"m\",\"_id\":\"3\",\"error\":{\"type\":\"t\","
		"\"reason\":\"r\\\"\"}}]}",
		"{\"pit_id\":\"o46\\/3==\",\"_shards\":{\"total\":1,\"failed\":0},\"creation_time\":1658146048666}",
		"{\"pit_id\":\"p\",\"timed_out\":false,\"hits\":{\"hits\":[{\"_id\":\"1\",\"sort\":[\"1\",2.5e1]},"
		"{\"_id\":\"\\ud83d\\ude00\",\"sort\":[null,true]}]}}",
	};
	const char *ids[] = {"1", "2", "3"};
	int			wrong = 0;
	size_t		tried = 0;

	for (size_t a = 0; a < sizeof(answers) / sizeof(answers[0]); a++)
	{
		size_t		len = strlen(answers[a]);

		for (size_t cut = 0; cut < len; cut++)
		{
			char	   *prefix = malloc(cut ? cut : 1);	/* exactly cut bytes: valgrind sees overreads */
			EcpMgetDoc	docs[3];
			EcpHitPage	page;
			char	   *pit = NULL;
			char		err[256];
			EcpAnswerRead r1;
			EcpAnswerRead r2;
			EcpAnswerRead r3;

			memcpy(prefix, answers[a], cut);
			r1 = ecp_answer_mget(prefix, cut, ids, 3, docs, err, sizeof(err));
			r2 = ecp_answer_pit_id(prefix, cut, &pit, err, sizeof(err));
			r3 = ecp_answer_hit_page(prefix, cut, &page, err, sizeof(err));
			if (r1 != ECP_ANSWER_NOT_JSON || r2 != ECP_ANSWER_NOT_JSON || r3 != ECP_ANSWER_NOT_JSON ||
				pit != NULL || page.nids != 0 || !docs_empty(docs, 3))
			{
				if (wrong++ < 3)
					diag("prefix of %zu bytes of answer %zu: %s, %s, %s", cut, a, read_name(r1), read_name(r2),
						 read_name(r3));
			}
			ecp_mget_docs_free(docs, 3);
			ecp_hit_page_free(&page);
			free(pit);
			tried++;
			free(prefix);
		}
	}
	ok(wrong == 0, "every one of %zu truncations of three answers is not JSON to all three readers (%d were not)",
	   tried, wrong);
	{
		EcpMgetDoc	docs[3];
		char		err[256] = "";
		EcpAnswerRead rc = ecp_answer_mget(answers[0], strlen(answers[0]), ids, 3, docs, err, sizeof(err));

		ok(rc == ECP_ANSWER_READ && docs[2].error && strcmp(docs[2].error, "t: r\"") == 0,
		   "the whole first answer reads (%s)", err);
		ecp_mget_docs_free(docs, 3);
	}
}

/* ---- hostile bodies */

/* head + filler repeated + tail, about total bytes (malloc'd, NUL-terminated). */
static char *
hostile_body(const char *head, const char *filler, const char *tail, size_t total, size_t *len)
{
	size_t		hl = strlen(head);
	size_t		fl = strlen(filler);
	size_t		tl = strlen(tail);
	char	   *body = malloc(total + hl + tl + 1);
	size_t		pos = hl;

	memcpy(body, head, hl);
	while (pos + fl + tl <= total)
	{
		memcpy(body + pos, filler, fl);
		pos += fl;
	}
	memcpy(body + pos, tail, tl);
	pos += tl;
	body[pos] = '\0';
	*len = pos;
	return body;
}

static void
check_bounds(double start, long rss_before, const char *what)
{
	double		seconds = now() - start;
	long		grown = max_rss_kb() - rss_before;

	if (no_perf())
	{
		ok(1, "%s: %.2f s, RSS +%ld kB (no bounds under UNIT_NO_PERF)", what, seconds, grown);
		return;
	}
	ok(seconds < MAX_SECONDS && grown <= MAX_RSS_GROWTH_KB,
	   "%s: %.2f s (under %.0f s), peak RSS +%ld kB (at most %ld kB)", what, seconds, MAX_SECONDS, grown,
	   MAX_RSS_GROWTH_KB);
}

static void
test_hostile(void)
{
	size_t		total = no_perf() ? HUGE_BYTES_VALGRIND : HUGE_BYTES;
	const char *ids[] = {"1"};
	const char *source_head = "{\"docs\":[{\"_id\":\"1\",\"found\":true,\"_source\":{\"a\":[{}";
	size_t		source_at = strlen(source_head) - strlen("{\"a\":[{}");
	EcpMgetDoc	docs[1];
	EcpHitPage	page;
	char	   *pit = NULL;
	char		err[256] = "";
	size_t		len;
	char	   *body;
	long		rss;
	double		start;
	EcpAnswerRead rc;

	/* a huge _source: a span, nothing copied */
	body = hostile_body(source_head, ",{}", "]}}]}", total, &len);
	rss = max_rss_kb();
	start = now();
	rc = ecp_answer_mget(body, len, ids, 1, docs, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && docs[0].found == 1 && docs[0].source == body + source_at &&
	   docs[0].source_len == len - source_at - 3 && docs[0].source[docs[0].source_len - 1] == '}', "a %.0f MiB _source is read as a span of the body (%s)", len / 1048576.0, err);
	ecp_mget_docs_free(docs, 1);

	/* a huge error reason: cut */
	free(body);
	body = hostile_body("{\"docs\":[{\"_id\":\"1\",\"error\":{\"type\":\"t\",\"reason\":\"", "\\u00e9aaaaaaa", "\"}}]}",
						total, &len);
	rc = ecp_answer_mget(body, len, ids, 1, docs, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && docs[0].found == -1 && docs[0].error && strlen(docs[0].error) < 400 &&
	   contains(docs[0].error, "t: \xc3\xa9") && contains(docs[0].error, "..."),
	   "a %.0f MiB error reason is cut to %zu bytes (%s)", len / 1048576.0,
	   docs[0].error ? strlen(docs[0].error) : 0, err);
	ecp_mget_docs_free(docs, 1);

	/* docs of nothing: refused at the first, the rest still checked */
	free(body);
	body = hostile_body("{\"docs\":[{}", ",{}", "]}", total, &len);
	rc = ecp_answer_mget(body, len, ids, 1, docs, err, sizeof(err));
	ok(rc == ECP_ANSWER_UNEXPECTED && contains(err, "docs[0] has no \"_id\""), "%.0f MiB of docs [{},{},...]: %s",
	   len / 1048576.0, err);
	body[len - 2] = ' ';		/* not JSON any more */
	rc = ecp_answer_mget(body, len, ids, 1, docs, err, sizeof(err));
	ok(rc == ECP_ANSWER_NOT_JSON, "... without its last bracket: not JSON (%s)", err);

	/* a hit page padded with a huge member, and a huge _source in its hit */
	free(body);
	body = hostile_body("{\"pit_id\":\"p\",\"aggregations\":[0", ",[{}]", "],\"hits\":{\"hits\":[{\"_id\":\"1\",\"sort\":[1]}]}}",
						total, &len);
	rc = ecp_answer_hit_page(body, len, &page, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && page.nids == 1 && strcmp(page.last_sort, "[1]") == 0,
	   "a %.0f MiB member before the hits is skipped (%s)", len / 1048576.0, err);
	ecp_hit_page_free(&page);
	free(body);
	body = hostile_body("{\"id\":\"p\",\"_shards\":[\"", "x\\\"", "\"]}", total, &len);
	rc = ecp_answer_pit_id(body, len, &pit, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && pit && strcmp(pit, "p") == 0, "a %.0f MiB string after the pit id is skipped (%s)",
	   len / 1048576.0, err);
	free(pit);
	pit = NULL;
	check_bounds(start, rss, "six reads of huge answers");
	free(body);

	/* nesting: refused, no stack overflow */
	body = hostile_body("{\"docs\":[", "[", "", total / 16, &len);
	rc = ecp_answer_mget(body, len, ids, 1, docs, err, sizeof(err));
	ok(rc == ECP_ANSWER_NOT_JSON && contains(err, "nested deeper than 512"), "%zu nested arrays in docs: %s", len - 9,
	   err);
	rc = ecp_answer_hit_page(body, len, &page, err, sizeof(err));
	ok(rc == ECP_ANSWER_NOT_JSON && contains(err, "nested deeper than 512"), "... to the hit page reader: %s", err);
	free(body);
	body = hostile_body("{\"docs\":[{\"_id\":\"1\",\"found\":true,\"_source\":", "{\"a\":", "", total / 16, &len);
	rc = ecp_answer_mget(body, len, ids, 1, docs, err, sizeof(err));
	ok(rc == ECP_ANSWER_NOT_JSON && contains(err, "nested deeper than 512"), "a _source nested %zu deep: %s",
	   (len - 44) / 5, err);
	free(body);
}

int
main(void)
{
	test_mget_real();
	test_mget_shapes();
	test_mget_ids();
	test_mget_items();
	test_pit();
	test_pages();
	test_bad_pages();
	test_truncated();
	test_hostile();
	return tap_done();
}
