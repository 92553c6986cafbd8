/*
 * json_quote.c: a C string as a JSON string literal, escaped as every
 * JSON ecp writes is (json_build.c).  A leaf: every part of the worker
 * uses it, and it uses nothing of ecp's but the builder.
 */
#include "sync.h"

#include "lib/stringinfo.h"

#include "json_build.h"

char *
ecp_json_quote(const char *text)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ecp_json_escape(&buf, text);
	return buf.data;
}
