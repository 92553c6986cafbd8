/*
 * json_compare_test.c: src/lib/json_compare.c, the JSON value equality a
 * verify run judges documents with, and its description of the first
 * difference.  A table of (source, index, scope, result, why) cases for
 * every rule (numbers in every form, huge exponents, escapes, duplicate
 * keys, key order, paths, array lengths, the update scope, invalid texts
 * on either side), each equal case also the other way round; documents as
 * PostgreSQL's row_to_json writes them against the same re-serialised by
 * jansson; nesting, long paths, short why buffers; 4 MiB documents in
 * bounded time and memory.
 *
 * UNIT_NO_PERF=1 (run.sh sets it under valgrind) skips the time and RSS
 * bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include <jansson.h>

#include "json_compare.h"
#include "tap.h"

#define W ECP_COMPARE_WHOLE
#define F ECP_COMPARE_EXPECTED_FIELDS
#define EQ ECP_JSON_EQUAL
#define DIFF ECP_JSON_DIFFERENT
#define BAD ECP_JSON_INVALID

#define BIG_BYTES ((size_t) 4 << 20)
#define MAX_SECONDS 10.0		/* generous: a shared 2-core machine takes well under 1 s */
#define MAX_BYTES_PER_BYTE 24	/* RSS growth per byte of the two texts: nodes (at
								 * most 12 for [0,0,...]) and arena */
#define SLACK_KB 1024			/* and what stdio and the allocator may take */

typedef struct Case
{
	const char *name;
	const char *expected;
	const char *actual;
	EcpJsonCompareScope scope;
	EcpJsonCompare want;
	const char *why;			/* a part of why (NULL: empty) */
} Case;

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
result_name(EcpJsonCompare rc)
{
	return rc == EQ ? "equal" : rc == DIFF ? "different" : rc == BAD ? "invalid" : "?";
}

static EcpJsonCompare
compare(const char *e, const char *a, EcpJsonCompareScope scope, char *why, size_t whylen)
{
	return ecp_json_compare(e, strlen(e), a, strlen(a), scope, why, whylen);
}

static void
run_case(const Case *c)
{
	char		why[512];
	char		why_back[512] = "";
	EcpJsonCompare rc = compare(c->expected, c->actual, c->scope, why, sizeof(why));
	int			good = rc == c->want && (c->why ? contains(why, c->why) : why[0] == '\0');

	/* equality is symmetric: whole equal or different texts are so the other way round */
	if (good && c->scope == W && c->want != BAD)
	{
		EcpJsonCompare back = compare(c->actual, c->expected, W, why_back, sizeof(why_back));

		if (back != c->want)
		{
			good = 0;
			diag("%s: the other way round is %s (%s)", c->name, result_name(back), why_back);
		}
	}
	ok(good, "%s: %s (%s)", c->name, result_name(rc), why);
	if (!good)
		diag("want %s with \"%s\"", result_name(c->want), c->why ? c->why : "");
}

static void
run_cases(const Case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		run_case(&cases[i]);
}

/* ---- numbers */

static void
test_numbers(void)
{
	static const Case cases[] = {
		{"1 and 1.0", "1", "1.0", W, EQ, NULL},
		{"1 and 1e0", "1", "1e0", W, EQ, NULL},
		{"1 and 10E-1", "1", "10E-1", W, EQ, NULL},
		{"1 and 0.1e1", "1", "0.1e1", W, EQ, NULL},
		{"1 and 1.000E+000", "1", "1.000E+000", W, EQ, NULL},
		{"100 and 1e2", "100", "1e2", W, EQ, NULL},
		{"100 and 1E+2", "100", "1E+2", W, EQ, NULL},
		{"0.001 and 1e-3", "0.001", "1e-3", W, EQ, NULL},
		{"123.456 and 123456e-3", "123.456", "123456e-3", W, EQ, NULL},
		{"1.50 and 1.5", "1.50", "1.5", W, EQ, NULL},
		{"-2.5 and -25e-1", "-2.5", "-25e-1", W, EQ, NULL},
		{"-0 and 0", "-0", "0", W, EQ, NULL},
		{"-0.0 and 0e10", "-0.0", "0e10", W, EQ, NULL},
		{"0.000 and -0e-99999999999999999999", "0.000", "-0e-99999999999999999999", W, EQ, NULL},
		{"1 and 2", "1", "2", W, DIFF, "(the whole document: 1 in the source, 2 in the index)"},
		{"1 and -1", "1", "-1", W, DIFF, "1 in the source, -1 in the index"},
		{"-1 and -1.0", "-1", "-1.0", W, EQ, NULL},
		{"0.1 and its double 0.10000000000000001", "0.1", "0.10000000000000001", W, DIFF,
		"0.1 in the source, 0.10000000000000001 in the index"},
		{"30 digits differ in the last", "12345678901234567890.123456789",
			"12345678901234567890.123456788", W, DIFF, "12345678901234567890.123456789 in the source"},
		{"30 digits equal, trailing zeros", "12345678901234567890.123456789",
		"12345678901234567890.1234567890000", W, EQ, NULL},
		{"beyond 64 bits, equal", "9223372036854775808", "9223372036854775808.0", W, EQ, NULL},
		{"beyond 64 bits, differ by one", "18446744073709551616", "18446744073709551617", W, DIFF,
		"18446744073709551616 in the source"},
		{"2^53 + 1 is not 2^53 (no doubles)", "9007199254740993", "9007199254740992", W, DIFF,
		"9007199254740993"},
		{"10 and 100", "10", "100", W, DIFF, "10 in the source, 100 in the index"},
		{"12 and 1.2e1", "12", "1.2e1", W, EQ, NULL},
		{"12 and 21", "12", "21", W, DIFF, "12 in the source"},
		{"0.5 and 5e-1", "0.5", "5e-1", W, EQ, NULL},
		{"0.05 and 0.5", "0.05", "0.5", W, DIFF, "0.05 in the source"},
	};

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void
test_huge_exponents(void)
{
	static const Case cases[] = {
		{"1e999999999 and 10e999999998", "1e999999999", "10e999999998", W, EQ, NULL},
		{"1e999999999 and 1e999999998", "1e999999999", "1e999999998", W, DIFF, "1e999999999 in the source"},
		{"1e-999999999 and 0.1e-999999998", "1e-999999999", "0.1e-999999998", W, EQ, NULL},
		{"exponents beyond 64 bits that differ", "1e99999999999999999999999999",
		"1e99999999999999999999999998", W, DIFF, "in the source"},
		{"exponents beyond 64 bits, equal after the shift", "1e1000000000000000000",
		"10e999999999999999999", W, EQ, NULL},
		{"a 40-digit exponent, equal after the shift",
			"1e1000000000000000000000000000000000000001",
		"10e1000000000000000000000000000000000000000", W, EQ, NULL},
		{"a 40-digit exponent off by one", "1e1000000000000000000000000000000000000001",
		"1e1000000000000000000000000000000000000000", W, DIFF, "in the index"},
		{"leading zeros of an exponent", "1e+00000000000000000000000000005", "100000", W, EQ, NULL},
		{"a tiny number is not 0", "5e-99999999999999999999999999999", "0", W, DIFF, "in the source"},
		{"huge exponents of opposite signs", "1e-9223372036854775809", "1e9223372036854775807", W, DIFF,
		"in the source"},
		{"huge negative exponents, equal after the shift", "0.01e-9223372036854775809",
		"1e-9223372036854775811", W, EQ, NULL},
		{"-0 with a huge exponent is 0", "-0e999999999999999999999", "0", W, EQ, NULL},
		{"a huge exponent in a member", "{\"x\":1e400}", "{\"x\":10e399}", W, EQ, NULL},
	};

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- strings, kinds */

static void
test_strings_and_kinds(void)
{
	static const Case cases[] = {
		{"\\u00e9 and raw UTF-8", "\"\\u00e9\"", "\"\xc3\xa9\"", W, EQ, NULL},
		{"\\u00E9 (upper hex) and raw UTF-8", "\"caf\\u00E9\"", "\"caf\xc3\xa9\"", W, EQ, NULL},
		{"\\/ and /", "\"a\\/b\"", "\"a/b\"", W, EQ, NULL},
		{"a surrogate pair and raw UTF-8", "\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"", W, EQ, NULL},
		{"\\n and \\u000a", "\"a\\nb\"", "\"a\\u000ab\"", W, EQ, NULL},
		{"every simple escape", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\u0022\\u005c/\\u0008\\u000c\\u000a\\u000d\\u0009\"",
		W, EQ, NULL},
		{"e + combining accent is not \\u00e9 (no normalisation)", "\"e\\u0301\"", "\"\xc3\xa9\"", W, DIFF,
		"\"e\\u0301\" in the source, \"\xc3\xa9\" in the index"},
		{"a trailing space", "\"a\"", "\"a \"", W, DIFF, "\"a\" in the source, \"a \" in the index"},
		{"\\u0000 and empty", "\"\\u0000\"", "\"\"", W, DIFF, "in the source"},
		{"an escape at the end of a longer string", "\"abc\\u0064\"", "\"abcd\"", W, EQ, NULL},
		{"a prefix", "\"abc\"", "\"abcd\"", W, DIFF, "\"abc\" in the source"},
		{"a long value is cut at 40 bytes",
			"{\"a\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", "{\"a\":\"b\"}", W, DIFF,
		"a: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa... in the source, \"b\" in the index"},
		{"a long UTF-8 value is cut on a character",
			"\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
			"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"",
			"\"x\"", W, DIFF,
			"\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
		"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9... in the source"},
		{"1 and \"1\"", "1", "\"1\"", W, DIFF, "1 in the source, \"1\" in the index"},
		{"true and 1", "true", "1", W, DIFF, "true in the source, 1 in the index"},
		{"true and false", "{\"ok\":true}", "{\"ok\":false}", W, DIFF, "ok: true in the source, false in the index"},
		{"null and false", "null", "false", W, DIFF, "null in the source, false in the index"},
		{"null and null", "null", " null ", W, EQ, NULL},
		{"false and false", "false", "false\n", W, EQ, NULL},
		{"an object and an array", "{}", "[]", W, DIFF,
		"(the whole document: an object in the source, an array in the index)"},
		{"an array and null", "[]", "null", W, DIFF, "an array in the source, null in the index"},
		{"a member: an object and a string", "{\"a\":{\"b\":{}}}", "{\"a\":{\"b\":\"s\"}}", W, DIFF,
		"a.b: an object in the source, a string in the index"},
		{"a member: a number and an array", "{\"a\":1}", "{\"a\":[1]}", W, DIFF,
		"a: a number in the source, an array in the index"},
	};

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- objects, arrays, paths */

static void
test_objects_and_arrays(void)
{
	static const Case cases[] = {
		{"key order does not matter", "{\"a\":1,\"b\":2,\"c\":3}", "{\"c\":3,\"a\":1,\"b\":2}", W, EQ, NULL},
		{"whitespace does not matter", " {\n\"a\" : [ 1 , 2 ] ,\t\"b\":{ } }\r\n", "{\"a\":[1,2],\"b\":{}}", W,
		EQ, NULL},
		{"a key twice: the last counts", "{\"a\":1,\"a\":2}", "{\"a\":2}", W, EQ, NULL},
		{"a key twice: the first does not", "{\"a\":1,\"a\":2}", "{\"a\":1}", W, DIFF,
		"a: 2 in the source, 1 in the index"},
		{"a key twice in the index: the last counts", "{\"a\":2,\"b\":0}", "{\"b\":0,\"a\":1,\"a\":2}", W, EQ,
		NULL},
		{"a key three times, nested", "{\"o\":{\"k\":1,\"j\":0,\"k\":[],\"k\":{\"z\":true}}}",
		"{\"o\":{\"j\":0,\"k\":{\"z\":true}}}", W, EQ, NULL},
		{"an escaped key and a plain one", "{\"\\u0061\":1,\"\\u00e9t\\u00e9\":2}",
		"{\"a\":1,\"\xc3\xa9t\xc3\xa9\":2}", W, EQ, NULL},
		{"an escaped duplicate of a plain key", "{\"ab\":1,\"\\u0061b\":2}", "{\"ab\":2}", W, EQ, NULL},
		{"a member the index lacks", "{\"a\":1,\"name\":\"x\"}", "{\"a\":1}", W, DIFF,
		"name: in the source, not in the index"},
		{"a member the source lacks", "{\"a\":1}", "{\"a\":1,\"legacy\":0}", W, DIFF,
		"legacy: in the index, not in the source"},
		{"the source's order first", "{\"z\":1,\"a\":1}", "{\"a\":2,\"z\":2}", W, DIFF,
		"z: 1 in the source, 2 in the index"},
		{"a nested path", "{\"a\":{\"b\":{\"c\":[1,2,{\"d\":true}]}}}",
			"{\"a\":{\"b\":{\"c\":[1,2,{\"d\":false}]}}}", W, DIFF,
		"a.b.c[2].d: true in the source, false in the index"},
		{"price", "{\"price\":10.50}", "{\"price\":9.99}", W, DIFF, "price: 10.50 in the source, 9.99 in the index"},
		{"a key with a dot", "{\"a.b\":1}", "{\"a.b\":2}", W, DIFF, "[\"a.b\"]: 1 in the source"},
		{"a key with a quote", "{\"k\\\"ey\":1}", "{\"k\\\"ey\":2}", W, DIFF, "[\"k\\\"ey\"]: 1 in the source"},
		{"an empty key", "{\"x\":{\"\":1}}", "{\"x\":{\"\":2}}", W, DIFF, "x[\"\"]: 1 in the source"},
		{"a key with brackets", "{\"x\":{\"a[0]\":1}}", "{\"x\":{\"a[0]\":2}}", W, DIFF,
		"x[\"a[0]\"]: 1 in the source"},
		{"a key with a newline", "{\"a\\nb\":1}", "{\"a\\nb\":2}", W, DIFF, "[\"a\\nb\"]: 1"},
		{"a key with a space and UTF-8 stays plain", "{\"k\xc3\xa9 y\":{\"z\":1}}",
		"{\"k\xc3\xa9 y\":{\"z\":2}}", W, DIFF, "k\xc3\xa9 y.z: 1 in the source"},
		{"a missing nested member named with a dot", "{\"o\":{\"a.b\":1}}", "{\"o\":{}}", W, DIFF,
		"o[\"a.b\"]: in the source, not in the index"},
		{"array lengths", "{\"tags\":[\"a\",\"b\",\"c\"]}", "{\"tags\":[\"a\",\"b\"]}", W, DIFF,
		"tags: 3 elements in the source, 2 in the index"},
		{"one element", "{\"tags\":[\"a\"]}", "{\"tags\":[]}", W, DIFF,
		"tags: 1 element in the source, 0 in the index"},
		{"arrays are ordered", "[1,2]", "[2,1]", W, DIFF, "[0]: 1 in the source, 2 in the index"},
		{"the first differing element", "{\"tags\":[\"x\",\"y\",\"red\"]}", "{\"tags\":[\"x\",\"y\",\"blue\"]}", W,
		DIFF, "tags[2]: \"red\" in the source, \"blue\" in the index"},
		{"arrays of objects in another key order", "[{\"a\":1,\"b\":[{}]},{\"c\":null}]",
		"[{\"b\":[{}],\"a\":1.0},{\"c\":null}]", W, EQ, NULL},
		{"nested arrays", "[[[1]],[[2,3]]]", "[[[1]],[[2,3.0]]]", W, EQ, NULL},
		{"nested arrays differ", "[[[1]],[[2,3]]]", "[[[1]],[[2,4]]]", W, DIFF, "[1][0][1]: 3 in the source"},
		{"empty containers", "{\"a\":{},\"b\":[]}", "{\"b\":[],\"a\":{}}", W, EQ, NULL},
		{"an empty object and one with a member", "{}", "{\"a\":1}", W, DIFF, "a: in the index, not in the source"},
	};

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- op=update: the source's fields only */

static void
test_update_scope(void)
{
	static const Case cases[] = {
		{"update: the index may have more", "{\"a\":1}", "{\"a\":1,\"b\":2}", F, EQ, NULL},
		{"update: an empty partial document", "{}", "{\"a\":1}", F, EQ, NULL},
		{"update: a field the index lacks", "{\"a\":1,\"b\":2}", "{\"a\":1}", F, DIFF,
		"b: in the source, not in the index"},
		{"update: a field that differs", "{\"a\":1,\"b\":2}", "{\"b\":3,\"a\":1,\"c\":0}", F, DIFF,
		"b: 2 in the source, 3 in the index"},
		{"update: a nested object is compared whole", "{\"a\":{\"x\":1}}", "{\"a\":{\"x\":1,\"y\":2}}", F,
		DIFF, "a.y: in the index, not in the source"},
		{"update: a key twice in the source", "{\"a\":1,\"a\":2}", "{\"a\":2,\"z\":0}", F, EQ, NULL},
		{"update: byte-identical objects", "{\"a\":1}", "{\"a\":1}", F, EQ, NULL},
		{"update: byte-identical arrays are not objects", " [1]", " [1]", F, DIFF,
		"(the whole document: an array in the source, an array in the index)"},
		{"update: an object and an array", "{\"a\":1}", "[1]", F, DIFF,
		"(the whole document: an object in the source, an array in the index)"},
		{"update: a string and an object", "\"a\"", "{}", F, DIFF,
		"(the whole document: a string in the source, an object in the index)"},
		{"whole: the same two are different", "{\"a\":1}", "{\"a\":1,\"b\":2}", W, DIFF,
		"b: in the index, not in the source"},
	};

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- texts that are not JSON, on either side */

static void
test_invalid(void)
{
	static const Case cases[] = {
		{"the source cut short", "{\"a\":1", "{}", W, BAD,
		"the source document is not well-formed JSON: it ends where ',' or '}' should be at byte 6"},
		{"the index cut short", "{}", "{\"a\":", W, BAD, "the index document is not well-formed JSON"},
		{"an empty source", "", "{}", W, BAD, "the source document is not well-formed JSON: it is empty"},
		{"a blank index", "{}", " \n ", W, BAD, "the index document is not well-formed JSON: it is empty"},
		{"two values", "{} {}", "{}", W, BAD, "unexpected '{' after the value at byte 3"},
		{"identical, both invalid", "{", "{", W, BAD, "the source document is not well-formed JSON"},
		{"identical, both invalid, update", "[1,]", "[1,]", F, BAD, "the source document"},
		{"an unknown escape", "\"\\x\"", "\"x\"", W, BAD, "the source document"},
		{"invalid UTF-8 in the index", "\"\xc3\xa9\"", "\"\xc3\"", W, BAD,
		"the index document is not well-formed JSON: invalid UTF-8"},
		{"an overlong encoding", "\"\xc0\xaf\"", "\"/\"", W, BAD, "invalid UTF-8"},
		{"a lone surrogate", "\"\\ud83d\"", "\"x\"", W, BAD, "surrogate"},
		{"a raw control character", "\"a\tb\"", "\"a\\tb\"", W, BAD, "control character"},
		{"NaN", "{\"a\":NaN}", "{\"a\":null}", W, BAD, "the source document"},
		{"single quotes in the index", "{\"a\":1}", "{'a':1}", W, BAD, "the index document"},
		{"a leading zero", "01", "1", W, BAD, "the source document"},
		{"a plus sign", "1", "+1", W, BAD, "the index document"},
		{"a byte order mark", "\xef\xbb\xbf{}", "{}", W, BAD, "byte 0xef"},
		{"the source is checked before the index", "[", "]", W, BAD, "the source document"},
	};

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* A NUL inside a text, and texts with no pointer at all. */
static void
test_odd_inputs(void)
{
	char		why[256];
	EcpJsonCompare rc = ecp_json_compare("\"a\0b\"", 5, "\"ab\"", 4, W, why, sizeof(why));

	ok(rc == BAD && contains(why, "control character (0x00)"), "a raw NUL inside a string: %s", why);
	rc = ecp_json_compare("{}", 2, "{}\0", 3, W, why, sizeof(why));
	ok(rc == BAD && contains(why, "the index document") && contains(why, "0x00"),
	   "a NUL after the value: %s", why);
	rc = ecp_json_compare(NULL, 0, "{}", 2, W, why, sizeof(why));
	ok(rc == BAD && contains(why, "the source document is not well-formed JSON: it is empty"),
	   "no source text at all: %s", why);
	rc = ecp_json_compare("1", 1, "2", 1, W, NULL, 0);
	ok(rc == DIFF, "no why buffer: still different");
	rc = ecp_json_compare("1", 1, "1.0", 3, W, NULL, 0);
	ok(rc == EQ, "no why buffer: still equal");
	rc = ecp_json_compare("{\"a\":1}", 7, "{\"a\":1}x", 7, W, why, sizeof(why));
	ok(rc == EQ, "only len bytes are read: %s", result_name(rc));
}

/* why is cut to whylen on a UTF-8 boundary. */
static void
test_short_why(void)
{
	const char *e = "{\"\xc3\xa9\xc3\xa9\xc3\xa9\":1}";
	const char *a = "{\"\xc3\xa9\xc3\xa9\xc3\xa9\":2}";
	int			good = 1;

	for (size_t whylen = 1; whylen <= 48; whylen++)
	{
		char		why[64];
		EcpJsonCompare rc;
		size_t		n;

		memset(why, 'x', sizeof(why));
		rc = compare(e, a, W, why, whylen);
		n = strlen(why);
		if (rc != DIFF || n >= whylen || why[whylen] != 'x' ||
			(n > 0 && ((unsigned char) why[n - 1] == 0xc3)) ||
			strncmp(why, "\xc3\xa9\xc3\xa9\xc3\xa9: 1 in the source, 2 in the index", n) != 0)
		{
			good = 0;
			diag("whylen %zu: \"%s\"", whylen, why);
		}
	}
	ok(good, "why of every length from 1 to 48: NUL-terminated, within whylen, never half a character");
}

/* A document nested depth levels: {"k":{"k":...v...}}. */
static char *
nested(int depth, const char *leaf)
{
	size_t		size = (size_t) depth * 6 + strlen(leaf) + 1;
	char	   *text = malloc(size);
	size_t		n = 0;

	for (int i = 0; i < depth; i++)
		n += (size_t) sprintf(text + n, "{\"k\":");
	n += (size_t) sprintf(text + n, "%s", leaf);
	for (int i = 0; i < depth; i++)
		text[n++] = '}';
	text[n] = '\0';
	return text;
}

static void
test_nesting(void)
{
	char	   *e = nested(511, "[1]");
	char	   *a = nested(511, "[2]");
	char		why[512];
	EcpJsonCompare rc = compare(e, a, W, why, sizeof(why));

	ok(rc == DIFF && strncmp(why, "(...).k.k", 9) == 0 && contains(why, ".k[0]: 1 in the source, 2 in the index") &&
	   strlen(why) < 300, "512 levels: different, the path's last steps after (...): %.60s...", why);
	free(a);
	a = nested(511, "[1.0]");
	rc = compare(e, a, W, why, sizeof(why));
	ok(rc == EQ, "512 levels: equal (%s)", why);
	free(a);
	a = nested(512, "[1]");
	rc = compare(e, a, W, why, sizeof(why));
	ok(rc == BAD && contains(why, "the index document") && contains(why, "nested deeper than 512"),
	   "513 levels are refused: %s", why);
	free(a);
	free(e);
	e = nested(100000, "1");
	rc = compare(e, e, W, why, sizeof(why));
	ok(rc == BAD && contains(why, "nested deeper than 512"),
	   "100,000 levels, identical: refused, no stack overflow: %s", why);
	free(e);
}

/* ---- row_to_json and a JSON library's re-serialisation */

static const char *const rows[] = {
	"{\"id\":42,\"sku\":\"A-1\",\"price\":10.50,\"weight\":0.250,\"qty\":3,\"ratio\":1.0,"
	"\"f8\":1e+100,\"created\":\"2024-05-01T10:00:00.123456+00:00\",\"active\":true,\"note\":null,"
	"\"tags\":[\"red\",\"blue\"],\"attrs\":{\"color\": \"r\\u00e9d\", \"size\": 2, \"dims\": [1.50, 2]},"
	"\"name\":\"caf\xc3\xa9 \\\"quoted\\\" \\/ slash\"}",
	"{\"order_id\":1000001,\"lines\":[{\"n\":1,\"amount\":19.90},{\"n\":2,\"amount\":0.10}],"
	"\"customer\":{\"id\":7,\"emails\":[]},\"total\":20.00,\"discount\":0}",
};

/* row through jansson with flags, compared with the row as written. */
static void
reserialised(const char *row, size_t flags, const char *how)
{
	json_error_t error;
	json_t	   *value = json_loads(row, JSON_DECODE_ANY, &error);
	char	   *text = value ? json_dumps(value, flags) : NULL;
	char		why[256];
	EcpJsonCompare rc = text ? compare(row, text, W, why, sizeof(why)) : BAD;
	char		shown[72];
	const char *source = text ? text : error.text;
	size_t		n = strlen(source) < sizeof(shown) - 1 ? strlen(source) : sizeof(shown) - 1;

	memcpy(shown, source, n);
	shown[n] = '\0';
	for (char *c = shown; *c; c++)
		if (*c == '\n')
			*c = ' ';
	ok(rc == EQ && strcmp(row, text) != 0, "row_to_json vs jansson %s: %s (%s...) %s", how, result_name(rc),
	   shown, rc == EQ ? "" : why);
	free(text);
	json_decref(value);
}

static void
test_row_to_json(void)
{
	static const Case cases[] = {
		{"row_to_json vs a client's writing", rows[0],
			"{\"active\":true,\"attrs\":{\"dims\":[1.5,2.0],\"size\":2.0,\"color\":\"r\xc3\xa9\x64\"},"
			"\"created\":\"2024-05-01T10:00:00.123456+00:00\",\"f8\":1.0E100,\"id\":4.2e1,"
			"\"name\":\"caf\\u00e9 \\\"quoted\\\" / slash\",\"note\":null,\"price\":10.5,\"qty\":3,"
		"\"ratio\":1,\"sku\":\"A-1\",\"tags\":[\"red\",\"blue\"],\"weight\":0.25}", W, EQ, NULL},
		{"row_to_json vs a client's writing, a price changed", rows[0],
			"{\"active\":true,\"attrs\":{\"dims\":[1.5,2.0],\"size\":2.0,\"color\":\"r\xc3\xa9\x64\"},"
			"\"created\":\"2024-05-01T10:00:00.123456+00:00\",\"f8\":1.0E100,\"id\":4.2e1,"
			"\"name\":\"caf\\u00e9 \\\"quoted\\\" / slash\",\"note\":null,\"price\":10.05,\"qty\":3,"
		"\"ratio\":1,\"sku\":\"A-1\",\"tags\":[\"red\",\"blue\"],\"weight\":0.25}", W, DIFF,
		"price: 10.50 in the source, 10.05 in the index"},
		{"row_to_json vs a client's writing, a nested amount changed", rows[1],
			"{\"customer\":{\"emails\":[],\"id\":7},\"discount\":0.0,\"lines\":[{\"amount\":19.9,\"n\":1},"
		"{\"amount\":0.01,\"n\":2}],\"order_id\":1000001,\"total\":20}", W, DIFF,
		"lines[1].amount: 0.10 in the source, 0.01 in the index"},
	};
	json_t	   *value;
	char	   *text;
	char		why[256];
	EcpJsonCompare rc;
	const char *precise = "{\"id\":1,\"amount\":12345678901234567890.12}";

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
	{
		reserialised(rows[i], JSON_COMPACT | JSON_REAL_PRECISION(15), "(compact, 15 digits)");
		reserialised(rows[i], JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15),
					 "(indented, keys sorted)");
		reserialised(rows[i], JSON_COMPACT | JSON_ENSURE_ASCII | JSON_SORT_KEYS | JSON_REAL_PRECISION(15),
					 "(\\u escapes, keys sorted)");
	}

	/* a numeric beyond a double's precision does not survive a double */
	value = json_loads(precise, 0, NULL);
	text = json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER);
	rc = compare(precise, text, W, why, sizeof(why));
	ok(rc == DIFF && contains(why, "amount: 12345678901234567890.12 in the source, "),
	   "a numeric that went through a double (%s) differs: %s", text, why);
	free(text);
	json_decref(value);
}

/* ---- size */

/*
 * {"items":[{...},...]} of about target bytes, or of *items items when
 * reformatted (written another way: longer), malloc'd.
 */
static char *
big_document(size_t target, int reformatted, int change_last, size_t *len, int *items)
{
	char	   *text = malloc(reformatted ? (size_t) *items * 100 + 256 : target + 256);
	size_t		n = 0;
	int			i = 0;

	n += (size_t) sprintf(text, reformatted ? "{ \"count\": 0, \"items\": [" : "{\"items\":[");
	while (reformatted ? i < *items : n + 200 < target)
	{
		int			cents = i * 7 % 100;
		char		price[16];

		/* the same price, without its trailing zero: 10.70 is 10.7 */
		if (cents % 10 == 0)
			snprintf(price, sizeof(price), "10.%d", cents / 10);
		else
			snprintf(price, sizeof(price), "10.%02d", cents);

		n += (size_t) sprintf(text + n, "%s", i ? "," : "");
		if (reformatted)
			n += (size_t) sprintf(text + n, "{\"tags\": [\"a\", \"b\"], \"price\": %s, \"name\": \"item \\u0031%d\", \"id\": %de0}",
								  price, i, i);
		else
			n += (size_t) sprintf(text + n, "{\"id\":%d,\"name\":\"item 1%d\",\"price\":10.%02d,\"tags\":[\"a\",\"b\"]}",
								  i, i, cents);
		i++;
	}
	if (change_last)
	{
		/* the last item's price: 10.xx becomes 11.xx */
		char	   *p = text;
		char	   *last = NULL;

		while ((p = strstr(p, "\"price\":")) != NULL)
			last = p++;
		if (last)
			memcpy(last + (reformatted ? 9 : 8), "11", 2);
	}
	n += (size_t) sprintf(text + n, reformatted ? "]}" : "],\"count\":0}");
	*len = n;
	*items = i;
	return text;
}

static void
check_bounds(double start, long rss_before, size_t bytes, const char *what)
{
	double		seconds = now() - start;
	long		grown = max_rss_kb() - rss_before;
	long		allowed = (long) (bytes * MAX_BYTES_PER_BYTE / 1024) + SLACK_KB;

	if (no_perf())
	{
		ok(1, "%s: %.2f s, RSS +%ld kB (no bounds under UNIT_NO_PERF)", what, seconds, grown);
		return;
	}
	ok(seconds < MAX_SECONDS && grown <= allowed, "%s: %.2f s (under %.0f s), peak RSS +%ld kB (at most %ld kB)",
	   what, seconds, MAX_SECONDS, grown, allowed);
}

static void
test_big(void)
{
	size_t		elen;
	size_t		alen;
	int			items;
	char	   *e = big_document(BIG_BYTES, 0, 0, &elen, &items);
	char	   *a = big_document(BIG_BYTES, 1, 0, &alen, &items);
	char	   *copy = malloc(elen);
	char		why[256];
	char		want[64];
	long		rss;
	double		start;
	EcpJsonCompare rc;

	memcpy(copy, e, elen);
	rss = max_rss_kb();
	start = now();
	rc = ecp_json_compare(e, elen, copy, elen, W, why, sizeof(why));
	ok(rc == EQ, "%.1f MiB, byte-identical: equal", elen / 1048576.0);
	check_bounds(start, rss, 0, "the fast path builds nothing");

	rss = max_rss_kb();
	start = now();
	rc = ecp_json_compare(e, elen, a, alen, W, why, sizeof(why));
	ok(rc == EQ, "%.1f MiB of %d items against %.1f MiB written another way: %s %s", elen / 1048576.0, items,
	   alen / 1048576.0, result_name(rc), why);
	free(a);
	a = big_document(BIG_BYTES, 1, 1, &alen, &items);
	rc = ecp_json_compare(e, elen, a, alen, W, why, sizeof(why));
	snprintf(want, sizeof(want), "items[%d].price: 10.", items - 1);
	ok(rc == DIFF && contains(why, want) && contains(why, "in the source, 11."),
	   "... the last item's price changed: %s", why);
	check_bounds(start, rss, elen + alen, "two comparisons of 4 MiB documents");
	free(a);
	free(copy);
	free(e);
}

/* The worst case for nodes: [0,0,...] (a value every 2 bytes), and an object of many keys. */
static void
test_dense(void)
{
	size_t		n = BIG_BYTES / 2;
	char	   *e = malloc(n * 2 + 2);
	char	   *a;
	char		why[256];
	long		rss = max_rss_kb();
	double		start = now();
	EcpJsonCompare rc;
	size_t		len = 0;
	int			keys = 200000;

	e[len++] = '[';
	for (size_t i = 0; i + 1 < n; i++)
	{
		e[len++] = '0';
		e[len++] = ',';
	}
	e[len++] = '0';
	e[len++] = ']';
	a = malloc(len);
	memcpy(a, e, len);
	a[len - 2] = '1';
	rc = ecp_json_compare(e, len, a, len, W, why, sizeof(why));
	ok(rc == DIFF && contains(why, "0 in the source, 1 in the index"), "4 MiB of [0,0,...,0] and its last 1: %s", why);
	check_bounds(start, rss, 2 * len, "2 million values a side");
	free(a);
	free(e);

	/* keys in opposite orders: each side sorted, n log n */
	e = malloc((size_t) keys * 24 + 8);
	a = malloc((size_t) keys * 24 + 8);
	len = 0;
	e[len++] = '{';
	for (int i = 0; i < keys; i++)
		len += (size_t) sprintf(e + len, "%s\"key-%d\":%d", i ? "," : "", i, i);
	e[len++] = '}';
	e[len] = '\0';
	{
		size_t		alen = 0;

		a[alen++] = '{';
		for (int i = keys - 1; i >= 0; i--)
			alen += (size_t) sprintf(a + alen, "%s\"key-%d\":%d.0", i < keys - 1 ? "," : "", i, i);
		a[alen++] = '}';
		a[alen] = '\0';
		rss = max_rss_kb();
		start = now();
		rc = ecp_json_compare(e, len, a, alen, W, why, sizeof(why));
		ok(rc == EQ, "an object of %d keys against the same in reverse order: %s %s", keys, result_name(rc), why);
		check_bounds(start, rss, len + alen, "sorting 200,000 keys a side");
	}
	free(a);
	free(e);
}

int
main(void)
{
	test_numbers();
	test_huge_exponents();
	test_strings_and_kinds();
	test_objects_and_arrays();
	test_update_scope();
	test_invalid();
	test_odd_inputs();
	test_short_why();
	test_nesting();
	test_row_to_json();
	test_big();
	test_dense();
	return tap_done();
}
