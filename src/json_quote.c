/*
 * json_quote.c: a C string as a JSON string literal, for the flow rows and
 * request bodies ecp writes.  A leaf: every part of the worker uses it,
 * and it uses nothing of ecp's.
 */
#include "sync.h"

#include "lib/stringinfo.h"
#include "utils/json.h"

char *
ecp_json_quote(const char *text)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, text ? text : "");
	return buf.data;
}
