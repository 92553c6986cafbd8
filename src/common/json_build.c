/*
 * json_build.c: JSON text on a StringInfo (json_build.h).  A leaf that
 * uses only PostgreSQL's StringInfo, so test/unit builds it as frontend
 * code (FRONTEND, with libpgcommon).
 */
#ifdef FRONTEND
#include "postgres_fe.h"
#else
#include "postgres.h"
#endif

#include <math.h>

#include "common/shortest_dec.h"

#include "json_build.h"

/*
 * A JSON string literal of text (NULL is ""), as escape_json writes it
 * (PostgreSQL 15): the two-character escapes, \u00XX for the other
 * control characters, every other byte copied.
 */
void
ecp_json_escape(StringInfo buf, const char *text)
{
	appendStringInfoCharMacro(buf, '"');
	for (const char *p = text ? text : ""; *p; p++)
	{
		switch (*p)
		{
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			default:
				if ((unsigned char) *p < ' ')
					appendStringInfo(buf, "\\u%04x", (int) *p);
				else
					appendStringInfoCharMacro(buf, *p);
				break;
		}
	}
	appendStringInfoCharMacro(buf, '"');
}

/* The ',' before a value or key that follows another one. */
static void
separate(StringInfo buf)
{
	char		last = buf->len > 0 ? buf->data[buf->len - 1] : '\0';

	if (last != '\0' && last != '{' && last != '[' && last != ':')
		appendStringInfoCharMacro(buf, ',');
}

/* A new buffer holding "{": the usual start of a flow row's content. */
void
ecp_json_object_new(StringInfo buf)
{
	initStringInfo(buf);
	appendStringInfoCharMacro(buf, '{');
}

void
ecp_json_begin_object(StringInfo buf)
{
	separate(buf);
	appendStringInfoCharMacro(buf, '{');
}

void
ecp_json_end_object(StringInfo buf)
{
	appendStringInfoCharMacro(buf, '}');
}

void
ecp_json_begin_array(StringInfo buf)
{
	separate(buf);
	appendStringInfoCharMacro(buf, '[');
}

void
ecp_json_end_array(StringInfo buf)
{
	appendStringInfoCharMacro(buf, ']');
}

void
ecp_json_key(StringInfo buf, const char *key)
{
	separate(buf);
	ecp_json_escape(buf, key);
	appendStringInfoCharMacro(buf, ':');
}

/* A string, or null for NULL. */
void
ecp_json_string(StringInfo buf, const char *value)
{
	separate(buf);
	if (value)
		ecp_json_escape(buf, value);
	else
		appendStringInfoString(buf, "null");
}

void
ecp_json_int(StringInfo buf, int64 value)
{
	separate(buf);
	appendStringInfo(buf, INT64_FORMAT, value);
}

/*
 * The shortest text that reads back as the same double, as float8out
 * writes it; JSON has no NaN or infinity: those are null.
 */
void
ecp_json_double(StringInfo buf, double value)
{
	char		text[DOUBLE_SHORTEST_DECIMAL_LEN];

	separate(buf);
	if (isnan(value) || isinf(value))
		appendStringInfoString(buf, "null");
	else
	{
		double_to_shortest_decimal_buf(value, text);
		appendStringInfoString(buf, text);
	}
}

void
ecp_json_bool(StringInfo buf, bool value)
{
	separate(buf);
	appendStringInfoString(buf, value ? "true" : "false");
}

void
ecp_json_null(StringInfo buf)
{
	separate(buf);
	appendStringInfoString(buf, "null");
}

/*
 * A JSON value given as text (settings the task holds, a nested object
 * built apart), appended as it is; NULL or empty is null.
 */
void
ecp_json_raw(StringInfo buf, const char *json)
{
	separate(buf);
	appendStringInfoString(buf, json && json[0] ? json : "null");
}

void
ecp_json_key_string(StringInfo buf, const char *key, const char *value)
{
	ecp_json_key(buf, key);
	ecp_json_string(buf, value);
}

void
ecp_json_key_int(StringInfo buf, const char *key, int64 value)
{
	ecp_json_key(buf, key);
	ecp_json_int(buf, value);
}

void
ecp_json_key_double(StringInfo buf, const char *key, double value)
{
	ecp_json_key(buf, key);
	ecp_json_double(buf, value);
}

void
ecp_json_key_bool(StringInfo buf, const char *key, bool value)
{
	ecp_json_key(buf, key);
	ecp_json_bool(buf, value);
}

void
ecp_json_key_raw(StringInfo buf, const char *key, const char *json)
{
	ecp_json_key(buf, key);
	ecp_json_raw(buf, json);
}

/* "key": ["a", "b", ...] */
void
ecp_json_key_string_array(StringInfo buf, const char *key, char **values, int n)
{
	ecp_json_key(buf, key);
	ecp_json_begin_array(buf);
	for (int i = 0; i < n; i++)
		ecp_json_string(buf, values[i]);
	ecp_json_end_array(buf);
}
