/*
 * es_answers_test.c: src/es_answers.c, the streaming scanner of the
 * answers a migration reads (finding H1): the keys of GET /<name> and
 * GET /_alias/<name>, _count's count.  Real answers, escapes and \u keys,
 * nesting, every truncation of an answer, malformed JSON, and 64 MiB of
 * "[{},{},...]" read in bounded time with no memory beyond the body.
 *
 * UNIT_NO_PERF=1 (run.sh sets it under valgrind) skips the time and RSS
 * bounds and scans 4 MiB instead of 64.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "es_answers.h"
#include "tap.h"

#define HUGE_BYTES ((size_t) 64 << 20)
#define HUGE_BYTES_VALGRIND ((size_t) 4 << 20)
#define MAX_RSS_GROWTH_KB (4L * 1024)	/* the scanner keeps nothing of a value */
#define MAX_SECONDS 20.0		/* generous: shared 2-core machines */

/* a string literal and its length (it may hold a NUL) */
#define LIT(s) s, sizeof(s) - 1

/* ---- helpers */

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
	return rc == ECP_ANSWER_READ ? "read" : rc == ECP_ANSWER_NOT_JSON ? "not JSON" : "unexpected";
}

/* The keys of text joined by '|' (into out), and how the scan went. */
static EcpAnswerRead
keys_of(const char *text, size_t len, char *out, size_t outlen, char *err, size_t errlen)
{
	char	  **keys = NULL;
	int			n = -1;
	EcpAnswerRead rc = ecp_answer_object_keys(text, len, &keys, &n, err, errlen);

	out[0] = '\0';
	for (int i = 0; i < n; i++)
	{
		strncat(out, i ? "|" : "", outlen - strlen(out) - 1);
		strncat(out, keys[i], outlen - strlen(out) - 1);
	}
	if (rc != ECP_ANSWER_READ && (keys != NULL || n != 0))
		ok(0, "a failed scan hands back no keys (%d)", n);
	ecp_answer_keys_free(keys, n);
	return rc;
}

/* A copy for a TAP line: control characters as '?'. */
static char *
shown(const char *text)
{
	char	   *copy = strdup(text);

	for (char *c = copy; *c; c++)
		if ((unsigned char) *c < 0x20)
			*c = '?';
	return copy;
}

static void
expect_keys(const char *text, const char *want, const char *what)
{
	char		got[1024];
	char		err[256] = "";
	EcpAnswerRead rc = keys_of(text, strlen(text), got, sizeof(got), err, sizeof(err));
	char	   *got_shown = shown(got);
	char	   *want_shown = shown(want);

	ok(rc == ECP_ANSWER_READ && strcmp(got, want) == 0, "%s: keys [%s] (want [%s]) %s", what, got_shown,
	   want_shown, err);
	free(got_shown);
	free(want_shown);
}

static void
expect_keys_fail(const char *text, size_t len, EcpAnswerRead want, const char *err_part,
				 const char *what)
{
	char		got[1024];
	char		err[256] = "";
	EcpAnswerRead rc = keys_of(text, len, got, sizeof(got), err, sizeof(err));

	ok(rc == want && contains(err, err_part), "%s: %s (%s)", what, read_name(rc), err);
}

static void
expect_count(const char *text, EcpAnswerRead want, long long want_count, const char *err_part,
			 const char *what)
{
	char		err[256] = "";
	long long	count = -7;
	EcpAnswerRead rc = ecp_answer_count(text, strlen(text), &count, err, sizeof(err));

	if (want == ECP_ANSWER_READ)
		ok(rc == want && count == want_count, "%s: count %lld (%s)", what, count, err);
	else
		ok(rc == want && count == -1 && contains(err, err_part), "%s: %s, count %lld (%s)", what,
		   read_name(rc), count, err);
}

/* ---- the answers Elasticsearch gives */

static void
test_real_answers(void)
{
	expect_keys("{\"products-71\":{\"aliases\":{\"products\":{\"is_write_index\":true}},"
				"\"mappings\":{\"properties\":{\"sku\":{\"type\":\"keyword\"},\"n\":{\"type\":\"long\"}}},"
				"\"settings\":{\"index\":{\"number_of_shards\":\"1\",\"uuid\":\"x-Yz_09\",\"version\":{\"created\":\"8110099\"}}}},"
				"\"products-v1\":{\"aliases\":{\"products\":{}},\"mappings\":{},\"settings\":{}}}",
				"products-71|products-v1", "GET /<alias>, unfiltered: the indices in order");
	expect_keys("{\"a-1\":{\"settings\":{\"index\":{\"uuid\":\"u1\"}}}}", "a-1",
				"GET /<alias>?filter_path=*.settings.index.uuid");
	expect_keys(" \r\n\t{ \"b\" : { \"aliases\" : { \"p\" : { } } } , \"a\":{\"aliases\":{\"p\":{}}} } \n",
				"b|a", "GET /_alias/<alias> with whitespace everywhere, answer order kept");
	expect_keys("{}", "", "an empty object: no keys");
	expect_keys("{\"\":1,\"b\":2}", "|b", "an empty key is a key");
	expect_keys("{\"x\":[1,-2.5e+3,0,0.0,1E9,true,false,null,\"s\",[],{},[[{}]]]}", "x",
				"every kind of value is skipped");
	expect_count("{\"count\":100000,\"_shards\":{\"total\":1,\"successful\":1,\"skipped\":0,\"failed\":0}}",
				 ECP_ANSWER_READ, 100000, NULL, "_count");
	expect_count("{\"_shards\":{\"count\":5,\"failures\":[{\"count\":6}]},\"count\":0}", ECP_ANSWER_READ, 0,
				 NULL, "a nested \"count\" is not the count");
	expect_count("{\"count\":9223372036854775807}", ECP_ANSWER_READ, 9223372036854775807LL, NULL,
				 "the largest count");
	expect_count("{\"c\\u006funt\":3}", ECP_ANSWER_READ, 3, NULL, "\"count\" written with an escape");
}

/* ---- escapes, \u keys, UTF-8 */

static void
test_escapes(void)
{
	expect_keys("{\"\\u0070roducts\":1}", "products", "a key with a \\u escape is unescaped");
	expect_keys("{\"\\u00e9t\\u00E9\":1}", "\xc3\xa9t\xc3\xa9", "\\u00e9 becomes UTF-8 (either case of hex)");
	expect_keys("{\"\\ud83d\\ude00\":1}", "\xf0\x9f\x98\x80", "a surrogate pair becomes one code point");
	expect_keys("{\"\\u20ac\":1}", "\xe2\x82\xac", "a three-byte code point");
	expect_keys("{\"q\\\"b\\\\s\\/n\\nt\\tr\\rb\\bf\\f\":1}", "q\"b\\s/n\nt\tr\rb\bf\f",
				"every simple escape in a key");
	expect_keys("{\"\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80\":1}", "\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80",
				"raw UTF-8 in a key is kept");
	expect_keys("{\"k\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\ud83d\\ude00 \\\" } ] { [\"}", "k",
				"escapes and brackets inside a skipped string");
	expect_keys_fail(LIT("{\"a\\u0000b\":1}"), ECP_ANSWER_UNEXPECTED, "\\u0000", "a key with \\u0000");
	expect_keys_fail(LIT("{\"\\ud83d\":1}"), ECP_ANSWER_NOT_JSON, "high surrogate", "a lone high surrogate");
	expect_keys_fail(LIT("{\"\\ud83dx\":1}"), ECP_ANSWER_NOT_JSON, "high surrogate",
					 "a high surrogate then a plain character");
	expect_keys_fail(LIT("{\"\\ud83d\\u0041\":1}"), ECP_ANSWER_NOT_JSON, "high surrogate",
					 "a high surrogate then a non-surrogate escape");
	expect_keys_fail(LIT("{\"\\ude00\":1}"), ECP_ANSWER_NOT_JSON, "low surrogate", "a lone low surrogate");
	expect_keys_fail(LIT("{\"\\u12g4\":1}"), ECP_ANSWER_NOT_JSON, "hex digit", "a bad hex digit");
	expect_keys_fail(LIT("{\"\\u12"), ECP_ANSWER_NOT_JSON, "ends", "a \\u escape cut short");
	expect_keys_fail(LIT("{\"\\x\":1}"), ECP_ANSWER_NOT_JSON, "escape", "an unknown escape");
	expect_keys_fail(LIT("{\"a\nb\":1}"), ECP_ANSWER_NOT_JSON, "control character", "a raw newline in a key");
	expect_keys_fail(LIT("{\"a\0b\":1}"), ECP_ANSWER_NOT_JSON, "control character", "a raw NUL in a key");
	expect_keys_fail(LIT("{\"k\":\"\xc0\x80\"}"), ECP_ANSWER_NOT_JSON, "UTF-8", "an overlong encoding");
	expect_keys_fail(LIT("{\"k\":\"\xed\xa0\x80\"}"), ECP_ANSWER_NOT_JSON, "UTF-8", "an encoded surrogate");
	expect_keys_fail(LIT("{\"k\":\"\xf4\x90\x80\x80\"}"), ECP_ANSWER_NOT_JSON, "UTF-8", "above U+10FFFF");
	expect_keys_fail(LIT("{\"k\":\"\xe2\x82\"}"), ECP_ANSWER_NOT_JSON, "UTF-8", "a sequence cut short");
	expect_keys_fail(LIT("{\"\xff\":1}"), ECP_ANSWER_NOT_JSON, "UTF-8", "a byte that is never UTF-8");
	expect_keys_fail(LIT("{\"a\":1,\"b\":2,\"a\":3}"), ECP_ANSWER_UNEXPECTED, "\"a\" appears twice",
					 "a key given twice");
	expect_keys_fail(LIT("{\"ab\":1,\"\\u0061b\":2}"), ECP_ANSWER_UNEXPECTED, "appears twice",
					 "a key given twice, once escaped");
}

/* ---- nesting */

static char *
nested(int depth, size_t *len)
{
	char	   *text = malloc((size_t) depth * 6 + 16);
	size_t		n = 0;

	n += (size_t) sprintf(text, "{\"k\":");
	for (int i = 0; i < depth - 1; i++)
		n += (size_t) sprintf(text + n, i % 2 ? "[" : "{\"a\":");
	text[n++] = '1';
	for (int i = depth - 2; i >= 0; i--)
		text[n++] = i % 2 ? ']' : '}';
	text[n++] = '}';
	text[n] = '\0';
	*len = n;
	return text;
}

static void
test_nesting(void)
{
	size_t		len;
	char	   *text = nested(512, &len);
	char		got[64];
	char		err[256] = "";
	EcpAnswerRead rc = keys_of(text, len, got, sizeof(got), err, sizeof(err));

	ok(rc == ECP_ANSWER_READ && strcmp(got, "k") == 0, "a value nested 511 levels deep is skipped (%s)", err);
	free(text);
	text = nested(600, &len);
	rc = keys_of(text, len, got, sizeof(got), err, sizeof(err));
	ok(rc == ECP_ANSWER_NOT_JSON && contains(err, "nested deeper than 512"),
	   "600 levels are refused, not a stack overflow: %s", err);
	free(text);
	expect_keys_fail(LIT("{\"k\":[1,2}"), ECP_ANSWER_NOT_JSON, "',' or ']'", "an array closed by '}'");
	expect_keys_fail(LIT("{\"k\":{\"a\":1]}"), ECP_ANSWER_NOT_JSON, "',' or '}'", "an object closed by ']'");
}

/* ---- malformed answers */

static void
test_malformed(void)
{
	static const struct
	{
		const char *text;
		EcpAnswerRead want;
		const char *err_part;
	}			cases[] = {
		{"", ECP_ANSWER_NOT_JSON, "empty"},
		{"   ", ECP_ANSWER_NOT_JSON, "empty"},
		{"<html><body>nginx</body></html>", ECP_ANSWER_NOT_JSON, "unexpected '<'"},
		{"[{\"a\":1}]", ECP_ANSWER_UNEXPECTED, "an array, not a JSON object"},
		{"\"products\"", ECP_ANSWER_UNEXPECTED, "a string"},
		{"42", ECP_ANSWER_UNEXPECTED, "a number"},
		{"null", ECP_ANSWER_UNEXPECTED, "null"},
		{"{\"a\":1,}", ECP_ANSWER_NOT_JSON, "a key"},
		{"{\"a\":[1,]}", ECP_ANSWER_NOT_JSON, "a value"},
		{"{\"a\" 1}", ECP_ANSWER_NOT_JSON, "':'"},
		{"{'a':1}", ECP_ANSWER_NOT_JSON, "a key"},
		{"{a:1}", ECP_ANSWER_NOT_JSON, "a key"},
		{"{\"a\":1} x", ECP_ANSWER_NOT_JSON, "the end of the answer should be at byte 8"},
		{"{}{}", ECP_ANSWER_NOT_JSON, "the end of the answer"},
		{"{\"a\":01}", ECP_ANSWER_NOT_JSON, "',' or '}'"},
		{"{\"a\":-}", ECP_ANSWER_NOT_JSON, "a digit"},
		{"{\"a\":1.}", ECP_ANSWER_NOT_JSON, "fraction"},
		{"{\"a\":1e}", ECP_ANSWER_NOT_JSON, "exponent"},
		{"{\"a\":NaN}", ECP_ANSWER_NOT_JSON, "a value"},
		{"{\"a\":tru}", ECP_ANSWER_NOT_JSON, "a value"},
		{"{\"a\":nul}", ECP_ANSWER_NOT_JSON, "a value"},
		{"{\"a\":+1}", ECP_ANSWER_NOT_JSON, "a value"},
		{"\xef\xbb\xbf{}", ECP_ANSWER_NOT_JSON, "byte 0xef"},
		{"{\"a\":1\x01}", ECP_ANSWER_NOT_JSON, "byte 0x01"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_keys_fail(cases[i].text, strlen(cases[i].text), cases[i].want, cases[i].err_part,
						 cases[i].text[0] ? cases[i].text : "(empty)");
	expect_keys_fail(NULL, 0, ECP_ANSWER_NOT_JSON, "empty", "no body at all");
	expect_count("{\"_shards\":{}}", ECP_ANSWER_UNEXPECTED, 0, "no \"count\"", "no count");
	expect_count("{\"count\":\"42\"}", ECP_ANSWER_UNEXPECTED, 0, "not a number", "a count as a string");
	expect_count("{\"count\":[42]}", ECP_ANSWER_UNEXPECTED, 0, "not a number", "a count in an array");
	expect_count("{\"count\":-1}", ECP_ANSWER_UNEXPECTED, 0, "not a non-negative integer", "a negative count");
	expect_count("{\"count\":1.5}", ECP_ANSWER_UNEXPECTED, 0, "not a non-negative integer", "a fraction");
	expect_count("{\"count\":1e3}", ECP_ANSWER_UNEXPECTED, 0, "not a non-negative integer", "an exponent");
	expect_count("{\"count\":9223372036854775808}", ECP_ANSWER_UNEXPECTED, 0, "larger than",
				 "a count over 2^63-1");
	expect_count("{\"count\":1,\"count\":2}", ECP_ANSWER_UNEXPECTED, 0, "appears twice", "two counts");
	expect_count("[{\"count\":1}]", ECP_ANSWER_UNEXPECTED, 0, "not a JSON object", "an array");
	expect_count("{\"count\":1", ECP_ANSWER_NOT_JSON, 0, "ends", "a count cut short");
}

/* Every proper prefix of an answer fails as not JSON: never read, never a crash. */
static void
test_truncated(void)
{
	static const char *answers[] = {
		"{\"idx-\\u00e9\":{\"aliases\":{\"p\":{\"filter\":{\"term\":{\"a\":\"x\\\"y\\ud83d\\ude00\"}}}},"
		"\"n\":[-1.5e-3,0,true,false,null,[],{}]},\"b\":\"\xc3\xbc\"}",
		"{\"count\":12345,\"_shards\":{\"total\":1}}",
	};
	int			wrong = 0;
	size_t		tried = 0;

	for (size_t a = 0; a < sizeof(answers) / sizeof(answers[0]); a++)
	{
		size_t		len = strlen(answers[a]);

		for (size_t cut = 0; cut < len; cut++)
		{
			char		got[256];
			char		err[256];
			long long	count;
			char	   *prefix = malloc(cut ? cut : 1);	/* exactly cut bytes: valgrind sees overreads */

			memcpy(prefix, answers[a], cut);
			if (keys_of(prefix, cut, got, sizeof(got), err, sizeof(err)) != ECP_ANSWER_NOT_JSON ||
				ecp_answer_count(prefix, cut, &count, err, sizeof(err)) != ECP_ANSWER_NOT_JSON)
			{
				if (wrong++ < 3)
					diag("prefix of %zu bytes of answer %zu: not refused as not JSON", cut, a);
			}
			tried++;
			free(prefix);
		}
	}
	ok(wrong == 0, "every one of %zu truncations of two answers is not JSON (%d were not)", tried, wrong);
}

/* ---- size */

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
	pos--;						/* no comma after the last {} */
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
	ok(seconds < MAX_SECONDS && grown <= MAX_RSS_GROWTH_KB, "%s: %.2f s (under %.0f s), peak RSS +%ld kB (at most %ld kB)",
	   what, seconds, MAX_SECONDS, grown, MAX_RSS_GROWTH_KB);
}

static void
test_huge(void)
{
	size_t		total = no_perf() ? HUGE_BYTES_VALGRIND : HUGE_BYTES;
	size_t		len;
	char	   *body = hostile_body("{\"a\":[", "],\"count\":7}", total, &len);
	char		got[64];
	char		err[256] = "";
	long long	count;
	long		rss = max_rss_kb();
	double		start = now();
	EcpAnswerRead rc = keys_of(body, len, got, sizeof(got), err, sizeof(err));

	ok(rc == ECP_ANSWER_READ && strcmp(got, "a|count") == 0, "%.0f MiB {\"a\":[{},{},...],\"count\":7}: keys [%s] %s",
	   len / 1048576.0, got, err);
	rc = ecp_answer_count(body, len, &count, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && count == 7, "... and its count after the array: %lld %s", count, err);
	check_bounds(start, rss, "two scans of it");
	free(body);

	body = hostile_body("[", "]", total, &len);
	rss = max_rss_kb();
	start = now();
	rc = keys_of(body, len, got, sizeof(got), err, sizeof(err));
	ok(rc == ECP_ANSWER_UNEXPECTED && contains(err, "an array"), "%.0f MiB [{},{},...]: %s", len / 1048576.0, err);
	body[len - 1] = ' ';		/* the closing bracket gone */
	rc = keys_of(body, len, got, sizeof(got), err, sizeof(err));
	ok(rc == ECP_ANSWER_NOT_JSON && contains(err, "ends"), "... without its last bracket: %s", err);
	check_bounds(start, rss, "two scans of [{},...]");
	free(body);
}

/* Many keys: each kept once, the check for one given twice stays fast. */
static void
test_many_keys(void)
{
	int			n = 100000;
	char	   *text = malloc((size_t) n * 16 + 16);
	size_t		len = 0;
	char	  **keys;
	int			nkeys;
	char		err[256] = "";
	double		start = now();
	EcpAnswerRead rc;

	text[len++] = '{';
	for (int i = 0; i < n; i++)
		len += (size_t) sprintf(text + len, "%s\"i-%d\":{}", i ? "," : "", i);
	text[len++] = '}';
	rc = ecp_answer_object_keys(text, len, &keys, &nkeys, err, sizeof(err));
	ok(rc == ECP_ANSWER_READ && nkeys == n && strcmp(keys[0], "i-0") == 0 && strcmp(keys[n - 1], "i-99999") == 0,
	   "%d keys in %.2f s (%s)", nkeys, now() - start, err);
	ecp_answer_keys_free(keys, nkeys);
	free(text);
}

static void
test_caps(void)
{
	ok(ecp_answer_cap(ECP_ANSWER_PRODUCT) == 64 * 1024 && ecp_answer_cap(ECP_ANSWER_INDICES) == 1024 * 1024 &&
	   ecp_answer_cap(ECP_ANSWER_COUNT) == 64 * 1024 && ecp_answer_cap(ECP_ANSWER_ACK) == 256 * 1024,
	   "caps: GET / 64 KiB, indices 1 MiB, _count 64 KiB, acknowledgements 256 KiB (README \"Limits\")");
	ok(contains(ecp_answer_requests(ECP_ANSWER_INDICES), "GET /_alias/<alias>") &&
	   contains(ecp_answer_requests(ECP_ANSWER_COUNT), "_count") && ecp_answer_hint(ECP_ANSWER_ACK)[0] != '\0',
	   "each kind names its requests and has a hint");
}

int
main(void)
{
	test_caps();
	test_real_answers();
	test_escapes();
	test_nesting();
	test_malformed();
	test_truncated();
	test_many_keys();
	test_huge();
	return tap_done();
}
