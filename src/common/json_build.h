/*
 * json_build.h: the one way ecp writes the JSON of its flow rows and of
 * its small request bodies (the _bulk and webhook documents are written
 * in batch.c and sink_http.c, for speed).
 *
 * Every call appends to a StringInfo.  The separator is decided by what
 * the buffer ends with: nothing after '{', '[', ':' or at its start, a
 * ',' otherwise; so a value or a key is appended in order, without a
 * state to carry, and an object may be started in one function and
 * ended in another.  The output is compact ({"a":1,"b":[true,null]}).
 * Strings are escaped as PostgreSQL's escape_json does: '"', '\\' and
 * control characters; every other byte, invalid
 * UTF-8 included, is copied as it is.
 */
#ifndef ECP_JSON_BUILD_H
#define ECP_JSON_BUILD_H

#include "lib/stringinfo.h"

extern void ecp_json_escape(StringInfo buf, const char *text);

extern void ecp_json_object_new(StringInfo buf);
extern void ecp_json_begin_object(StringInfo buf);
extern void ecp_json_end_object(StringInfo buf);
extern void ecp_json_begin_array(StringInfo buf);
extern void ecp_json_end_array(StringInfo buf);

extern void ecp_json_key(StringInfo buf, const char *key);
extern void ecp_json_string(StringInfo buf, const char *value);
extern void ecp_json_int(StringInfo buf, int64 value);
extern void ecp_json_double(StringInfo buf, double value);
extern void ecp_json_bool(StringInfo buf, bool value);
extern void ecp_json_null(StringInfo buf);
extern void ecp_json_raw(StringInfo buf, const char *json);

extern void ecp_json_key_string(StringInfo buf, const char *key, const char *value);
extern void ecp_json_key_int(StringInfo buf, const char *key, int64 value);
extern void ecp_json_key_double(StringInfo buf, const char *key, double value);
extern void ecp_json_key_bool(StringInfo buf, const char *key, bool value);
extern void ecp_json_key_raw(StringInfo buf, const char *key, const char *json);
extern void ecp_json_key_string_array(StringInfo buf, const char *key, char **values, int n);

#endif
