/*
 * line_id_test.c: ecp_line_id (src/es_answers.c), how the file source
 * checks an NDJSON line and reads its id without a JSON tree.
 *
 * Each case is also read the way the file source read lines before the
 * scanner (jansson, JSON_REJECT_DUPLICATES; see jansson_id): where the
 * scanner takes a line as a document, the old code took it with the same
 * id, and where it refuses one the old code refused it too, except for the
 * cases marked CHANGED (README "Files" says why).  Then: every truncation
 * of real lines, and 64 MiB lines ("[{},{},...]", a 64 MiB id, a 64 MiB
 * key) in bounded time and no memory beyond the line.
 *
 * UNIT_NO_PERF=1 (run.sh sets it under valgrind) skips the time and RSS
 * bounds and scans 4 MiB instead of 64.
 */
#include <jansson.h>
#include <stdio.h>
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
line_name(EcpLineId rc)
{
	switch (rc)
	{
		case ECP_LINE_ID:
			return "id";
		case ECP_LINE_NOT_JSON:
			return "not JSON";
		case ECP_LINE_NOT_OBJECT:
			return "not an object";
		case ECP_LINE_ID_TWICE:
			return "id twice";
		case ECP_LINE_BAD_ID:
			return "bad id";
		case ECP_LINE_NO_ID:
			return "no id";
	}
	return "?";
}

/* A copy for a TAP line: bytes outside printable ASCII as '?', at most 70. */
static void
shown(const char *text, size_t len, char *out, size_t outlen)
{
	size_t		n = 0;

	for (size_t i = 0; i < len && n + 4 < outlen && n < 70; i++)
		out[n++] = (unsigned char) text[i] >= 0x20 && (unsigned char) text[i] < 0x7f ? text[i] : '?';
	if (len > 70)
		out[n++] = '.', out[n++] = '.';
	out[n] = '\0';
}

/*
 * The line as the file source read it before the scanner: 1 and the id
 * when it was a document, 0 when a dead letter.
 */
static int
jansson_id(const char *line, size_t len, const char *field, char *id, size_t idlen)
{
	json_error_t jerr;
	json_t	   *doc = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t	   *value = doc && json_is_object(doc) ? json_object_get(doc, field) : NULL;
	int			taken = 0;

	if (value && json_is_string(value) && json_string_length(value) > 0 && json_string_length(value) <= 512)
		taken = snprintf(id, idlen, "%s", json_string_value(value)) >= 0;
	else if (value && json_is_integer(value))
		taken = snprintf(id, idlen, "%lld", (long long) json_integer_value(value)) >= 0;
	json_decref(doc);
	return taken;
}

/* Whether the scanner's verdict on a line is the old code's. */
static int
same_as_jansson(EcpLineId rc, const char *id, const char *line, size_t len, const char *field)
{
	char		old_id[ECP_LINE_ID_MAX + 1] = "";
	int			old_taken = jansson_id(line, len, field, old_id, sizeof(old_id));

	return old_taken == (rc == ECP_LINE_ID) && (!old_taken || strcmp(old_id, id) == 0);
}

enum
{
	SAME,						/* jansson's verdict too */
	CHANGED						/* a deliberate difference */
};

/*
 * line (len bytes) read for field: want, the id want_id (ECP_LINE_ID) or
 * an err holding err_part (otherwise), and the old code's verdict the
 * same or deliberately not.
 */
static void
expect_line(const char *line, size_t len, const char *field, EcpLineId want, const char *want_part,
			int vs_jansson, const char *what)
{
	char		id[ECP_LINE_ID_MAX + 1];
	char		err[256] = "(none)";
	char		text[80];
	char		got[80];
	EcpLineId	rc = ecp_line_id(line, len, field, id, err, sizeof(err));
	int			right = rc == want;
	int			agrees = same_as_jansson(rc, id, line, len, field);

	if (want == ECP_LINE_ID)
		right = right && strcmp(id, want_part) == 0;
	else
		right = right && id[0] == '\0' && (want_part == NULL || contains(err, want_part));
	shown(line, len, text, sizeof(text));
	shown(rc == ECP_LINE_ID ? id : err, strlen(rc == ECP_LINE_ID ? id : err), got, sizeof(got));
	ok(right && agrees == (vs_jansson == SAME), "%s: %s -> %s [%s] (%s)%s", what, text, line_name(rc),
	   got, vs_jansson == SAME ? "as jansson" : "changed from jansson",
	   agrees == (vs_jansson == SAME) ? "" : " (the jansson comparison differs)");
}

/* ---- documents */

static void
test_documents(void)
{
	expect_line(LIT("{\"id\":\"abc\",\"n\":1}"), "id", ECP_LINE_ID, "abc", SAME, "a string id");
	expect_line(LIT("{\"order_id\": 42, \"amount\": 10.5}"), "order_id", ECP_LINE_ID, "42", SAME,
				"an integer id, another field");
	expect_line(LIT(" \t{ \"n\" : [1, {\"id\": \"inner\"}, [[{}]]], \"x\": {\"id\": 7, \"y\": {\"id\": null}},"
					" \"id\" : \"outer\" } \r"), "id", ECP_LINE_ID, "outer", SAME,
				"ids nested in arrays and objects are not the id; whitespace anywhere");
	expect_line(LIT("{\"a\":[1,-2.5e+3,0,0.0,1E9,true,false,null,\"s\",[],{},[[{}]]],\"id\":\"k\"}"), "id",
				ECP_LINE_ID, "k", SAME, "every kind of value skipped before the id");
	expect_line(LIT("{\"\\u0069d\":\"escaped key\"}"), "id", ECP_LINE_ID, "escaped key", SAME,
				"a key written with a \\u escape");
	expect_line(LIT("{\"i\\\"d\":1,\"id\\\\\":2,\"id\":3}"), "id", ECP_LINE_ID, "3", SAME,
				"keys that differ by an escaped character");
	expect_line(LIT("{\"id\":\"a\\\"b\\\\c\\/d\\n\\t\\u00e9\\ud83d\\ude00\"}"), "id", ECP_LINE_ID,
				"a\"b\\c/d\n\t\xc3\xa9\xf0\x9f\x98\x80", SAME, "escapes in the id are decoded");
	expect_line(LIT("{\"id\":\"\xc3\xbc\xe2\x82\xac\"}"), "id", ECP_LINE_ID, "\xc3\xbc\xe2\x82\xac", SAME,
				"raw UTF-8 in the id");
	expect_line(LIT("{\"\xc3\xa9tiquette\":\"x\"}"), "\xc3\xa9tiquette", ECP_LINE_ID, "x", SAME,
				"a field name in UTF-8");
	expect_line(LIT("{\"\\u00e9tiquette\":\"x\"}"), "\xc3\xa9tiquette", ECP_LINE_ID, "x", SAME,
				"... written as an escape");
	expect_line(LIT("{\"\":\"empty key\"}"), "", ECP_LINE_ID, "empty key", SAME, "an empty field name");
	expect_line(LIT("{\"id\":\"x\",\"a\":{\"b\":1,\"b\":2}}"), "id", ECP_LINE_ID, "x", CHANGED,
				"a nested key twice is Elasticsearch's to refuse");
	expect_line(LIT("{\"id\":\"x\",\"a\":1,\"a\":2}"), "id", ECP_LINE_ID, "x", CHANGED,
				"another top-level key twice is Elasticsearch's to refuse");
	expect_line(LIT("{\"id\":\"x\",\"note\":\"a\\u0000b\"}"), "id", ECP_LINE_ID, "x", CHANGED,
				"\\u0000 outside the id is JSON (jansson refused it)");
	expect_line(LIT("{\"id\\u0000\":1,\"id\":\"x\"}"), "id", ECP_LINE_ID, "x", CHANGED,
				"a key with \\u0000 is not the id (jansson refused the line)");
	expect_line(LIT("{\"id\":\"x\",\"big\":123456789012345678901234567890}"), "id", ECP_LINE_ID, "x", CHANGED,
				"an integer beyond 64 bits outside the id (jansson refused the line)");
	expect_line(LIT("{\"id\":\"x\",\"big\":1e400}"), "id", ECP_LINE_ID, "x", CHANGED,
				"a real beyond a double outside the id (jansson refused the line)");
}

/* ---- integers and reals */

static void
test_numbers(void)
{
	expect_line(LIT("{\"id\":0}"), "id", ECP_LINE_ID, "0", SAME, "zero");
	expect_line(LIT("{\"id\":-0}"), "id", ECP_LINE_ID, "0", SAME, "-0 is 0, as %lld prints it");
	expect_line(LIT("{\"id\":-17}"), "id", ECP_LINE_ID, "-17", SAME, "a negative integer");
	expect_line(LIT("{\"id\":9223372036854775807}"), "id", ECP_LINE_ID, "9223372036854775807", SAME,
				"2^63-1");
	expect_line(LIT("{\"id\":-9223372036854775808}"), "id", ECP_LINE_ID, "-9223372036854775808", SAME,
				"-2^63");
	expect_line(LIT("{\"id\":9223372036854775808}"), "id", ECP_LINE_BAD_ID, "an integer beyond 64 bits", SAME,
				"2^63");
	expect_line(LIT("{\"id\":-9223372036854775809}"), "id", ECP_LINE_BAD_ID, "an integer beyond 64 bits", SAME,
				"-2^63-1");
	expect_line(LIT("{\"id\":100000000000000000000000000000000000000000}"), "id", ECP_LINE_BAD_ID,
				"beyond 64 bits", SAME, "10^41");
	expect_line(LIT("{\"id\":1.0}"), "id", ECP_LINE_BAD_ID, "a real number", SAME, "1.0 is a real");
	expect_line(LIT("{\"id\":1e2}"), "id", ECP_LINE_BAD_ID, "a real number", SAME, "1e2 is a real");
	expect_line(LIT("{\"id\":1E+2}"), "id", ECP_LINE_BAD_ID, "a real number", SAME, "1E+2 is a real");
	expect_line(LIT("{\"id\":-0.0}"), "id", ECP_LINE_BAD_ID, "a real number", SAME, "-0.0 is a real");
	expect_line(LIT("{\"id\":123456789012345678901234567890.5}"), "id", ECP_LINE_BAD_ID, "a real number", SAME,
				"a long real is a real, not a too big integer");
	expect_line(LIT("{\"id\":01}"), "id", ECP_LINE_NOT_JSON, "unexpected '1'", SAME, "a leading zero");
	expect_line(LIT("{\"id\":+1}"), "id", ECP_LINE_NOT_JSON, "a value", SAME, "a plus sign");
	expect_line(LIT("{\"id\":1.}"), "id", ECP_LINE_NOT_JSON, "fraction", SAME, "a fraction without digits");
}

/* ---- ids that are not ids */

static void
test_bad_ids(void)
{
	char		line[2048];
	char		id[1024];
	int			n;

	expect_line(LIT("{\"id\":\"\"}"), "id", ECP_LINE_BAD_ID, "an empty string", SAME, "an empty string");
	expect_line(LIT("{\"id\":\"a\\u0000b\"}"), "id", ECP_LINE_BAD_ID, "\\u0000", SAME,
				"an id with \\u0000 (jansson: not JSON)");
	expect_line(LIT("{\"id\":true}"), "id", ECP_LINE_BAD_ID, "a boolean", SAME, "true");
	expect_line(LIT("{\"id\":false}"), "id", ECP_LINE_BAD_ID, "a boolean", SAME, "false");
	expect_line(LIT("{\"id\":null}"), "id", ECP_LINE_BAD_ID, "null", SAME, "null");
	expect_line(LIT("{\"id\":[\"x\"]}"), "id", ECP_LINE_BAD_ID, "an array", SAME, "an array");
	expect_line(LIT("{\"id\":{\"id\":\"x\"}}"), "id", ECP_LINE_BAD_ID, "an object", SAME, "an object");
	expect_line(LIT("{\"ID\":1}"), "id", ECP_LINE_NO_ID, NULL, SAME, "field names are case-sensitive");
	expect_line(LIT("{\"i\":1,\"idx\":2,\"a\":{\"id\":3}}"), "id", ECP_LINE_NO_ID, NULL, SAME,
				"a prefix, a longer name, a nested id: no id");
	expect_line(LIT("{}"), "id", ECP_LINE_NO_ID, NULL, SAME, "an empty object");
	expect_line(LIT("{\"id\":1,\"id\":1}"), "id", ECP_LINE_ID_TWICE, NULL, SAME, "the id twice, equal");
	expect_line(LIT("{\"id\":\"a\",\"x\":[],\"\\u0069d\":\"b\"}"), "id", ECP_LINE_ID_TWICE, NULL, SAME,
				"the id twice, once escaped");
	expect_line(LIT("{\"id\":[],\"id\":\"b\"}"), "id", ECP_LINE_ID_TWICE, NULL, SAME,
				"the id twice, a bad one first: twice, not bad");
	expect_line(LIT("{\"id\":1,\"id\":2,"), "id", ECP_LINE_NOT_JSON, "ends", SAME,
				"the id twice in a line cut short: not JSON first");

	/* 512 bytes are an id, 513 are not, counted decoded */
	n = snprintf(line, sizeof(line), "{\"id\":\"%0512d\"}", 7);
	snprintf(id, sizeof(id), "%0512d", 7);
	expect_line(line, (size_t) n, "id", ECP_LINE_ID, id, SAME, "a string id of 512 bytes");
	n = snprintf(line, sizeof(line), "{\"id\":\"%0513d\"}", 7);
	expect_line(line, (size_t) n, "id", ECP_LINE_BAD_ID, "longer than 512 bytes", SAME, "513 bytes");
	strcpy(line, "{\"id\":\"");
	id[0] = '\0';
	for (int i = 0; i < 256; i++)
	{
		strcat(line, "\\u00e9");
		strcat(id, "\xc3\xa9");
	}
	strcat(line, "\"}");
	expect_line(line, strlen(line), "id", ECP_LINE_ID, id, SAME,
				"256 escaped two-byte characters: 1,536 bytes written, 512 decoded");
	strcpy(line, "{\"id\":\"");
	for (int i = 0; i < 171; i++)
		strcat(line, "\xe2\x82\xac");
	strcat(line, "\"}");
	expect_line(line, strlen(line), "id", ECP_LINE_BAD_ID, "longer than 512", SAME,
				"171 three-byte characters: 513 bytes");
}

/* ---- lines that are not documents */

static void
test_not_documents(void)
{
	char	   *deep = malloc(2000 * 2 + 32);
	size_t		len;

	expect_line(LIT("[{\"id\":1}]"), "id", ECP_LINE_NOT_OBJECT, "an array", SAME, "an array");
	expect_line(LIT("\"id\""), "id", ECP_LINE_NOT_OBJECT, "a string", SAME, "a string");
	expect_line(LIT("42"), "id", ECP_LINE_NOT_OBJECT, "a number", SAME, "a number");
	expect_line(LIT("null"), "id", ECP_LINE_NOT_OBJECT, "null", SAME, "null");
	expect_line(LIT("[1"), "id", ECP_LINE_NOT_JSON, "ends", SAME, "an array cut short is not JSON");
	expect_line(LIT("   "), "id", ECP_LINE_NOT_JSON, "the line is empty", SAME, "blanks only");
	expect_line(LIT("{not json"), "id", ECP_LINE_NOT_JSON, "where a key should be at byte 1", SAME, "091's bad line");
	expect_line(LIT("{\"id\":1} x"), "id", ECP_LINE_NOT_JSON, "the end of the line should be at byte 9",
				SAME, "something after the object");
	expect_line(LIT("{\"id\":1}{\"id\":2}"), "id", ECP_LINE_NOT_JSON, "the end of the line", SAME,
				"two objects on a line");
	expect_line(LIT("{\"id\":1,}"), "id", ECP_LINE_NOT_JSON, "a key", SAME, "a trailing comma");
	expect_line(LIT("{'id':1}"), "id", ECP_LINE_NOT_JSON, "a key", SAME, "single quotes");
	expect_line(LIT("{\"id\":\"a\nb\"}"), "id", ECP_LINE_NOT_JSON, "control character", SAME,
				"a raw control character in the id");
	expect_line(LIT("{\"id\":\"\\ud83d\"}"), "id", ECP_LINE_NOT_JSON, "high surrogate", SAME,
				"a lone surrogate in the id");
	expect_line(LIT("{\"id\":\"\xc0\x80\"}"), "id", ECP_LINE_NOT_JSON, "UTF-8", SAME, "an overlong encoding");
	expect_line(LIT("{\"id\":\"x\",\"v\":\"\xff\"}"), "id", ECP_LINE_NOT_JSON, "UTF-8", SAME,
				"invalid UTF-8 after the id");
	expect_line(LIT("\xef\xbb\xbf{\"id\":1}"), "id", ECP_LINE_NOT_JSON, "byte 0xef", SAME, "a byte-order mark");
	expect_line(LIT("{\"id\":1,\"x\":[}"), "id", ECP_LINE_NOT_JSON, "a value", SAME,
				"a bracket mismatch after the id");

	/* nesting: 512 levels are JSON; jansson allowed 2048 */
	len = (size_t) sprintf(deep, "{\"id\":1,\"d\":");
	for (int i = 0; i < 511; i++)
		deep[len++] = '[';
	for (int i = 0; i < 511; i++)
		deep[len++] = ']';
	deep[len++] = '}';
	expect_line(deep, len, "id", ECP_LINE_ID, "1", SAME, "containers 512 deep (the object's and 511 arrays)");
	len = (size_t) sprintf(deep, "{\"id\":1,\"d\":");
	for (int i = 0; i < 1000; i++)
		deep[len++] = '[';
	for (int i = 0; i < 1000; i++)
		deep[len++] = ']';
	deep[len++] = '}';
	expect_line(deep, len, "id", ECP_LINE_NOT_JSON, "nested deeper than 512", CHANGED,
				"1,001 levels deep: not JSON (jansson allowed 2,048)");
	free(deep);
}

/* Every proper prefix of a real line is not JSON: never an id, never a crash. */
static void
test_truncated(void)
{
	static const char *lines[] = {
		"{\"order_id\": \"o-77\", \"amount\": 77.5, \"note\": \"x\\\"y\\u00e9\\ud83d\\ude00\"}",
		"{\"sku\":\"A-1\",\"tags\":[\"a\",{\"k\":[1,-2.5e-3,true,false,null]}],\"id\":-9223372036854775808}",
		"{\"id\":12345}",
		"{\"\\u0069d\":\"\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80\",\"n\":{}}",
	};
	static const char *fields[] = {"order_id", "id", "id", "id"};
	int			wrong = 0;
	size_t		tried = 0;

	for (size_t l = 0; l < sizeof(lines) / sizeof(lines[0]); l++)
	{
		size_t		len = strlen(lines[l]);
		char		id[ECP_LINE_ID_MAX + 1];
		char		err[256];

		if (ecp_line_id(lines[l], len, fields[l], id, err, sizeof(err)) != ECP_LINE_ID)
		{
			wrong++;
			diag("line %zu whole: not an id (%s)", l, err);
		}
		for (size_t cut = 0; cut < len; cut++)
		{
			char	   *prefix = malloc(cut ? cut : 1);	/* exactly cut bytes: valgrind sees overreads */
			EcpLineId	rc;

			memcpy(prefix, lines[l], cut);
			rc = ecp_line_id(prefix, cut, fields[l], id, err, sizeof(err));
			if (rc != ECP_LINE_NOT_JSON || id[0] != '\0' || err[0] == '\0')
			{
				if (wrong++ < 3)
					diag("prefix of %zu bytes of line %zu: %s (%s)", cut, l, line_name(rc), err);
			}
			tried++;
			free(prefix);
		}
	}
	ok(wrong == 0, "4 real lines are ids; each of their %zu truncations is not JSON (%d were not)", tried, wrong);
}

/* ---- size */

/* head + fill repeated + tail, exactly about total bytes (malloc'd). */
static char *
big_line(const char *head, const char *fill, const char *tail, size_t total, size_t *len)
{
	size_t		hl = strlen(head);
	size_t		fl = strlen(fill);
	size_t		tl = strlen(tail);
	char	   *line = malloc(total + 1);
	size_t		pos = hl;

	memcpy(line, head, hl);
	while (pos + fl + tl <= total)
	{
		memcpy(line + pos, fill, fl);
		pos += fl;
	}
	memcpy(line + pos, tail, tl);
	pos += tl;
	line[pos] = '\0';
	*len = pos;
	return line;
}

/* One huge line: the verdict, and time and peak memory within bounds. */
static void
expect_huge(const char *head, const char *fill, const char *tail, EcpLineId want, const char *want_part,
			const char *what)
{
	size_t		total = no_perf() ? HUGE_BYTES_VALGRIND : HUGE_BYTES;
	size_t		len;
	char	   *line = big_line(head, fill, tail, total, &len);
	char		id[ECP_LINE_ID_MAX + 1];
	char		err[256] = "";
	long		rss = max_rss_kb();
	double		start = now();
	EcpLineId	rc = ecp_line_id(line, len, "id", id, err, sizeof(err));
	double		seconds = now() - start;
	long		grown = max_rss_kb() - rss;
	int			right = rc == want && (want == ECP_LINE_ID ? strcmp(id, want_part) == 0 : contains(err, want_part));

	if (no_perf())
		ok(right, "%.0f MiB, %s: %s [%s] (%.2f s, RSS +%ld kB: no bounds under UNIT_NO_PERF)",
		   len / 1048576.0, what, line_name(rc), rc == ECP_LINE_ID ? id : err, seconds, grown);
	else
		ok(right && seconds < MAX_SECONDS && grown <= MAX_RSS_GROWTH_KB,
		   "%.0f MiB, %s: %s [%s] in %.2f s (under %.0f s), peak RSS +%ld kB (at most %ld kB)",
		   len / 1048576.0, what, line_name(rc), rc == ECP_LINE_ID ? id : err, seconds, MAX_SECONDS, grown,
		   MAX_RSS_GROWTH_KB);
	free(line);
}

static void
test_huge(void)
{
	expect_huge("{\"id\":\"first\",\"a\":[", "{},", "{}]}", ECP_LINE_ID, "first", "the id, then [{},{},...]");
	expect_huge("{\"a\":[", "{},", "{}],\"id\":-5}", ECP_LINE_ID, "-5", "[{},{},...], then the id");
	expect_huge("{\"a\":[", "{\"id\":1},", "{}],\"id\":\"x\"}", ECP_LINE_ID, "x",
				"[{\"id\":1},... nested ids, then the id");
	expect_huge("{\"id\":\"", "\\u00e9x", "\"}", ECP_LINE_BAD_ID, "longer than 512", "an id of 64 MiB");
	expect_huge("{\"", "id", "\":1,\"id\":2}", ECP_LINE_ID, "2", "a key of 64 MiB that starts like the id");
	expect_huge("{\"id\":1,\"a\":[", "{},", "{}", ECP_LINE_NOT_JSON, "the line ends", "[{},{},... cut short");
	expect_huge("{\"id\":1,\"a\":", "[", "", ECP_LINE_NOT_JSON, "nested deeper than 512", "[[[[... 64 MiB deep");
	expect_huge("{\"id\":1,\"a\":[", "{},", "{}],\"id\":2}", ECP_LINE_ID_TWICE, "", "the id before and after");
}

int
main(void)
{
	test_documents();
	test_numbers();
	test_bad_ids();
	test_not_documents();
	test_truncated();
	test_huge();
	return tap_done();
}
