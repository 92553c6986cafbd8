/*
 * json_build_test.c: unit tests for src/json_build.c, the one way ecp
 * writes the JSON of its flow rows and small request bodies.  Built as
 * PostgreSQL frontend code (FRONTEND, libpgcommon's StringInfo); no
 * server, no network.  Each result is compared with the exact text, and
 * the objects are also read back with jansson, so a text that is not JSON
 * fails even where the expected text were wrong.
 *
 *   test/unit/json_build_test
 */
#include "postgres_fe.h"

#include <math.h>

#include <jansson.h>

#include "json_build.h"
#include "tap.h"

/* text is JSON (any value), as jansson reads it */
static int
is_json(const char *text)
{
	json_error_t error;
	json_t	   *value = json_loads(text, JSON_DECODE_ANY, &error);

	if (value == NULL)
		return 0;
	json_decref(value);
	return 1;
}

static void
is_text(const StringInfoData *buf, const char *expected, const char *name)
{
	if (!ok(strcmp(buf->data, expected) == 0, "%s", name))
		diag("got      %s\n# expected %s", buf->data, expected);
}

static void
test_escaping(void)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ecp_json_escape(&buf, "plain");
	is_text(&buf, "\"plain\"", "a plain string is quoted");

	resetStringInfo(&buf);
	ecp_json_escape(&buf, "q\"b\\s/");
	is_text(&buf, "\"q\\\"b\\\\s/\"", "quote and backslash escaped, slash not");

	resetStringInfo(&buf);
	ecp_json_escape(&buf, "\b\f\n\r\t");
	is_text(&buf, "\"\\b\\f\\n\\r\\t\"", "the two-character escapes");

	resetStringInfo(&buf);
	ecp_json_escape(&buf, "\x01\x1f\x7f");
	is_text(&buf, "\"\\u0001\\u001f\x7f\"", "other control characters as \\u00XX, DEL as it is");

	resetStringInfo(&buf);
	ecp_json_escape(&buf, NULL);
	is_text(&buf, "\"\"", "NULL is the empty string (as ecp_json_quote)");

	resetStringInfo(&buf);
	ecp_json_escape(&buf, "caf\xc3\xa9 \xe2\x82\xac");
	is_text(&buf, "\"caf\xc3\xa9 \xe2\x82\xac\"", "valid UTF-8 copied as it is");

	/* as escape_json: bytes are copied, not checked (the server's jsonb input judges them) */
	resetStringInfo(&buf);
	ecp_json_escape(&buf, "a\xff\xc3(\x80z");
	is_text(&buf, "\"a\xff\xc3(\x80z\"", "invalid UTF-8 bytes copied unchanged, no byte lost or added");
	ok(buf.len == 8, "invalid UTF-8: 6 bytes and the quotes (got %d)", buf.len);

	resetStringInfo(&buf);
	ecp_json_key_string(&buf, "k\"ey\n", "v");
	is_text(&buf, "\"k\\\"ey\\n\":\"v\"", "a key is escaped like a string");
	pfree(buf.data);
}

static void
test_values(void)
{
	StringInfoData buf;

	ecp_json_object_new(&buf);
	ecp_json_key_string(&buf, "s", "x");
	ecp_json_key_string(&buf, "none", NULL);
	ecp_json_key_int(&buf, "i", -42);
	ecp_json_key_int(&buf, "max", INT64CONST(9223372036854775807));
	ecp_json_key_int(&buf, "min", PG_INT64_MIN);
	ecp_json_key_bool(&buf, "t", true);
	ecp_json_key_bool(&buf, "f", false);
	ecp_json_key(&buf, "n");
	ecp_json_null(&buf);
	ecp_json_end_object(&buf);
	is_text(&buf, "{\"s\":\"x\",\"none\":null,\"i\":-42,\"max\":9223372036854775807,"
			"\"min\":-9223372036854775808,\"t\":true,\"f\":false,\"n\":null}",
			"strings, NULL, int64 bounds, booleans, null");
	ok(is_json(buf.data), "... and it is JSON");

	resetStringInfo(&buf);
	ecp_json_begin_array(&buf);
	ecp_json_double(&buf, 0.1);
	ecp_json_double(&buf, 1.5e300);
	ecp_json_double(&buf, -2.0);
	ecp_json_double(&buf, 1e-7);
	ecp_json_double(&buf, NAN);
	ecp_json_double(&buf, INFINITY);
	ecp_json_double(&buf, -INFINITY);
	ecp_json_end_array(&buf);
	is_text(&buf, "[0.1,1.5e+300,-2,1e-07,null,null,null]",
			"doubles: shortest text that reads back; NaN and infinities are null");
	ok(is_json(buf.data), "... and it is JSON");
	pfree(buf.data);
}

static void
test_nesting(void)
{
	StringInfoData buf;
	char	   *names[] = {"a", "b\"c"};

	ecp_json_object_new(&buf);
	ecp_json_key(&buf, "actions");
	ecp_json_begin_array(&buf);
	for (int i = 0; i < 2; i++)
	{
		ecp_json_begin_object(&buf);
		ecp_json_key(&buf, i == 0 ? "remove" : "add");
		ecp_json_begin_object(&buf);
		ecp_json_key_string(&buf, "index", names[i]);
		ecp_json_end_object(&buf);
		ecp_json_end_object(&buf);
	}
	ecp_json_end_array(&buf);
	ecp_json_key_string_array(&buf, "names", names, 2);
	ecp_json_key_string_array(&buf, "empty", names, 0);
	ecp_json_key(&buf, "nested");
	ecp_json_begin_array(&buf);
	ecp_json_begin_array(&buf);
	ecp_json_end_array(&buf);
	ecp_json_begin_object(&buf);
	ecp_json_end_object(&buf);
	ecp_json_int(&buf, 1);
	ecp_json_end_array(&buf);
	ecp_json_end_object(&buf);
	is_text(&buf, "{\"actions\":[{\"remove\":{\"index\":\"a\"}},{\"add\":{\"index\":\"b\\\"c\"}}],"
			"\"names\":[\"a\",\"b\\\"c\"],\"empty\":[],\"nested\":[[],{},1]}",
			"objects in arrays in objects, empty ones, separators only between members");
	ok(is_json(buf.data), "... and it is JSON");
	pfree(buf.data);
}

static void
test_raw(void)
{
	StringInfoData buf;

	/* settings as a task holds them: spaces and a newline at the end */
	ecp_json_object_new(&buf);
	ecp_json_key_raw(&buf, "settings", " {\"number_of_replicas\": 0}\n");
	ecp_json_key_raw(&buf, "missing", NULL);
	ecp_json_key_raw(&buf, "empty", "");
	ecp_json_key_int(&buf, "after", 1);
	ecp_json_end_object(&buf);
	is_text(&buf, "{\"settings\": {\"number_of_replicas\": 0}\n,\"missing\":null,\"empty\":null,"
			"\"after\":1}",
			"raw values as given (trailing whitespace kept), NULL and empty are null");
	ok(is_json(buf.data), "... and it is JSON");

	/* the HTTP sink starts its body in one function and ends it in another */
	resetStringInfo(&buf);
	ecp_json_begin_object(&buf);
	ecp_json_key_string(&buf, "task", "t");
	ecp_json_key_string(&buf, "tag", NULL);
	ecp_json_key(&buf, "docs");
	ecp_json_begin_array(&buf);
	appendStringInfoString(&buf, "{\"id\":\"1\"},{\"id\":\"2\"}");
	ecp_json_end_array(&buf);
	ecp_json_end_object(&buf);
	is_text(&buf, "{\"task\":\"t\",\"tag\":null,\"docs\":[{\"id\":\"1\"},{\"id\":\"2\"}]}",
			"an object begun, filled by other code, and ended apart");
	ok(is_json(buf.data), "... and it is JSON");
	pfree(buf.data);
}

int
main(void)
{
	test_escaping();
	test_values();
	test_nesting();
	test_raw();
	return tap_done();
}
