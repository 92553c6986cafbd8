/*
 * Mappings: validation of explicit mappings, dynamic mapping of new fields,
 * and per-document type checks that produce the same per-item errors as ES
 * (document_parsing_exception / mapper_parsing_exception,
 * strict_dynamic_mapping_exception).
 */
#include "esd.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { DYN_TRUE, DYN_FALSE, DYN_STRICT } dyn_t;

typedef struct mctx {
    const char *raw;
    size_t raw_len;
    const char *id;
    bool mutate;          /* pass 2: add dynamic fields */
    bool need_update;     /* pass 1 found unmapped fields */
    bool date_detection;
    json_t *cause;
} mctx_t;

static const char *known_types[] = {
    "text", "keyword", "long", "integer", "short", "byte", "double", "float", "half_float",
    "scaled_float", "unsigned_long", "boolean", "date", "date_nanos", "object", "nested",
    "flattened", "ip", "geo_point", "geo_shape", "binary", "wildcard", "constant_keyword",
    "match_only_text", "search_as_you_type", "token_count", "dense_vector", "sparse_vector",
    "rank_feature", "rank_features", "alias", "version", "histogram", "integer_range",
    "long_range", "float_range", "double_range", "date_range", "ip_range", "percolator",
    "join", "completion", "annotated_text", "murmur3", "point", "shape", "semantic_text",
    NULL,
};

static bool type_known(const char *t)
{
    for (int i = 0; known_types[i]; i++)
        if (strcmp(known_types[i], t) == 0)
            return true;
    return false;
}

static dyn_t dyn_of(const json_t *m, dyn_t inherited)
{
    const json_t *d = json_object_get(m, "dynamic");
    if (!d)
        return inherited;
    if (json_is_false(d))
        return DYN_FALSE;
    if (json_is_true(d))
        return DYN_TRUE;
    const char *s = json_string_value(d);
    if (!s)
        return inherited;
    if (strcmp(s, "strict") == 0)
        return DYN_STRICT;
    if (strcmp(s, "false") == 0 || strcmp(s, "runtime") == 0)
        return DYN_FALSE;
    return DYN_TRUE;
}

/* --------------------------------------------------------------- */
/* explicit mappings                                               */
/* --------------------------------------------------------------- */
static json_t *check_props(const json_t *props, const char *prefix)
{
    if (!json_is_object(props))
        return err_cause("mapper_parsing_exception", "Expected map for property [properties]");
    const char *k;
    json_t *f;
    json_object_foreach((json_t *)props, k, f) {
        char path[512];
        snprintf(path, sizeof path, "%s%s", prefix, k);
        if (!*k)
            return err_cause("illegal_argument_exception", "field name cannot be an empty string");
        if (!json_is_object(f)) {
            char msg[700];
            snprintf(msg, sizeof msg, "Expected map for property [fields] on field [%s] but got a class java.lang.String", path);
            return err_cause("mapper_parsing_exception", msg);
        }
        const char *t = json_string_value(json_object_get(f, "type"));
        if (t && !type_known(t)) {
            char msg[700];
            snprintf(msg, sizeof msg, "No handler for type [%s] declared on field [%s]", t, path);
            return err_cause("mapper_parsing_exception", msg);
        }
        json_t *sub = json_object_get(f, "properties");
        if (sub) {
            char pfx[520];
            snprintf(pfx, sizeof pfx, "%s.", path);
            json_t *c = check_props(sub, pfx);
            if (c)
                return c;
        }
    }
    return NULL;
}

/* Validates a "mappings" body (create index / put mapping) and returns a
 * private copy.  A 7.x style type wrapper ({"_doc":{...}}) is unwrapped. */
json_t *mapping_normalize(const json_t *in, json_t **cause)
{
    *cause = NULL;
    if (!json_is_object(in)) {
        *cause = err_cause("mapper_parsing_exception", "Failed to parse mapping: mapping must be an object");
        return NULL;
    }
    if (json_object_size(in) == 1 && json_is_object(json_object_get(in, "_doc")))
        in = json_object_get(in, "_doc");
    json_t *props = json_object_get(in, "properties");
    if (props && (*cause = check_props(props, "")))
        return NULL;
    return json_deep_copy(in);
}

static bool is_object_mapping(const json_t *fm)
{
    const char *t = json_string_value(json_object_get(fm, "type"));
    return (!t && json_object_get(fm, "properties")) || (t && (!strcmp(t, "object") || !strcmp(t, "nested")));
}

static json_t *merge_props(json_t *dst, const json_t *add, const char *prefix)
{
    const char *k;
    json_t *f;
    json_object_foreach((json_t *)add, k, f) {
        json_t *old = json_object_get(dst, k);
        if (!old) {
            json_object_set_new(dst, k, json_deep_copy(f));
            continue;
        }
        const char *ot = json_string_value(json_object_get(old, "type"));
        const char *nt = json_string_value(json_object_get(f, "type"));
        if (!ot && is_object_mapping(old))
            ot = "object";
        if (!nt && is_object_mapping(f))
            nt = "object";
        if (ot && nt && strcmp(ot, nt) != 0) {
            char msg[700];
            snprintf(msg, sizeof msg, "mapper [%s%s] cannot be changed from type [%s] to [%s]",
                     prefix, k, ot, nt);
            return err_cause("illegal_argument_exception", msg);
        }
        json_t *np = json_object_get(f, "properties");
        if (np) {
            json_t *op = json_object_get(old, "properties");
            if (!op) {
                op = json_object();
                json_object_set_new(old, "properties", op);
            }
            char pfx[520];
            snprintf(pfx, sizeof pfx, "%s%s.", prefix, k);
            json_t *c = merge_props(op, np, pfx);
            if (c)
                return c;
        }
        const char *kk;
        json_t *v;
        json_object_foreach(f, kk, v) if (strcmp(kk, "properties") != 0)
            json_object_set(old, kk, v);
    }
    return NULL;
}

json_t *mapping_merge(json_t *dst, const json_t *add)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)add, k, v) {
        if (strcmp(k, "properties") == 0) {
            json_t *p = json_object_get(dst, "properties");
            if (!p) {
                p = json_object();
                json_object_set_new(dst, "properties", p);
            }
            json_t *c = merge_props(p, v, "");
            if (c)
                return c;
        } else {
            json_object_set(dst, k, v);
        }
    }
    return NULL;
}

const json_t *mapping_field(const index_t *ix, const char *path)
{
    const json_t *props = json_object_get(ix->mappings, "properties");
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    const json_t *fm = NULL;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok; tok = strtok_r(NULL, ".", &save)) {
        const json_t *next = props ? json_object_get(props, tok) : NULL;
        if (!next && fm)
            next = json_object_get(json_object_get(fm, "fields"), tok);
        if (!next)
            return NULL;
        fm = next;
        props = json_object_get(fm, "properties");
    }
    return fm;
}

/* --------------------------------------------------------------- */
/* document checks                                                 */
/* --------------------------------------------------------------- */
static bool is_iso_date(const char *s)
{
    for (int i = 0; i < 10; i++) {
        bool want_dash = i == 4 || i == 7;
        if (want_dash ? s[i] != '-' : !isdigit((unsigned char)s[i]))
            return false;
    }
    const char *p = s + 10;
    if (!*p)
        return true;
    if (*p != 'T' && *p != ' ')
        return false;
    p++;
    if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1]))
        return false;
    p += 2;
    while (*p == ':' && isdigit((unsigned char)p[1]) && isdigit((unsigned char)p[2]))
        p += 3;
    if (*p == '.' || *p == ',') {
        p++;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'Z')
        p++;
    else if (*p == '+' || *p == '-') {
        p++;
        while (isdigit((unsigned char)*p) || *p == ':')
            p++;
    }
    return *p == '\0';
}

static json_t *infer(const json_t *v, bool date_detection)
{
    switch (json_typeof(v)) {
    case JSON_INTEGER: return json_pack("{s:s}", "type", "long");
    case JSON_REAL: return json_pack("{s:s}", "type", "float");
    case JSON_TRUE:
    case JSON_FALSE: return json_pack("{s:s}", "type", "boolean");
    case JSON_STRING:
        if (date_detection && is_iso_date(json_string_value(v)))
            return json_pack("{s:s}", "type", "date");
        return json_pack("{s:s,s:{s:{s:s,s:i}}}", "type", "text", "fields", "keyword", "type",
                         "keyword", "ignore_above", 256);
    case JSON_OBJECT: return json_pack("{s:{}}", "properties");
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)v, i, x) if (!json_is_null(x)) return infer(x, date_detection);
        return NULL;
    }
    default: return NULL;
    }
}

/* 1-based column of the value of the last path component in the raw source;
 * only used to make error messages look like ES's "[1:26]". */
static int column_of(const mctx_t *c, const char *path)
{
    const char *leaf = strrchr(path, '.');
    leaf = leaf ? leaf + 1 : path;
    char pat[300];
    snprintf(pat, sizeof pat, "\"%s\"", leaf);
    size_t pl = strlen(pat);
    for (size_t i = 0; c->raw && i + pl <= c->raw_len; i++)
        if (memcmp(c->raw + i, pat, pl) == 0) {
            size_t j = i + pl;
            while (j < c->raw_len && (c->raw[j] == ':' || c->raw[j] == ' '))
                j++;
            return (int)j + 1;
        }
    return 1;
}

static void preview(const json_t *v, char *out, size_t n)
{
    if (json_is_string(v)) {
        snprintf(out, n, "%s", json_string_value(v));
        return;
    }
    sb_t s = {NULL, 0, 0};
    sb_json_value(&s, v);
    snprintf(out, n, "%s", s.buf);
    sb_free(&s);
}

static json_t *doc_error(const mctx_t *c, const char *path, const char *fmt_reason)
{
    char msg[1400];
    if (g_cfg.flavor == FLAVOR_ES8)
        snprintf(msg, sizeof msg, "[1:%d] %s", column_of(c, path), fmt_reason);
    else
        snprintf(msg, sizeof msg, "%s", fmt_reason);
    return err_cause(flavor_parse_error_type(), msg);
}

static json_t *field_error(const mctx_t *c, const char *path, const char *type, const json_t *v,
                           const char *inner_type, const char *inner_reason)
{
    char pv[256], msg[1100];
    preview(v, pv, sizeof pv);
    snprintf(msg, sizeof msg,
             "failed to parse field [%s] of type [%s] in document with id '%s'. Preview of field's value: '%s'",
             path, type, c->id, pv);
    json_t *e = doc_error(c, path, msg);
    if (inner_type)
        json_object_set_new(e, "caused_by", err_cause(inner_type, inner_reason));
    return e;
}

static bool numeric_string(const char *s, bool integral)
{
    if (!*s)
        return false;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (*end || errno || !isfinite(d))
        return false;
    (void)integral;
    return true;
}

static json_t *check_scalar(mctx_t *c, const char *path, const json_t *fm, const json_t *v)
{
    const char *t = json_string_value(json_object_get(fm, "type"));
    if (!t)
        return NULL;
    char reason[400];
    bool integral = !strcmp(t, "long") || !strcmp(t, "integer") || !strcmp(t, "short") ||
                    !strcmp(t, "byte") || !strcmp(t, "unsigned_long");
    bool floating = !strcmp(t, "double") || !strcmp(t, "float") || !strcmp(t, "half_float") ||
                    !strcmp(t, "scaled_float");
    if (json_is_object(v)) {
        if (!strcmp(t, "flattened") || !strcmp(t, "geo_point") || !strcmp(t, "geo_shape") ||
            strstr(t, "range") || !strcmp(t, "dense_vector") || !strcmp(t, "join") ||
            !strcmp(t, "completion") || !strcmp(t, "rank_features") || !strcmp(t, "histogram"))
            return NULL;
        return field_error(c, path, t, v, "illegal_state_exception",
                           "Can't get text on a START_OBJECT");
    }
    if (integral || floating) {
        if (json_is_number(v))
            return NULL;
        if (json_is_string(v) && numeric_string(json_string_value(v), integral))
            return NULL;
        snprintf(reason, sizeof reason, "For input string: \"%s\"",
                 json_is_string(v) ? json_string_value(v) : json_is_true(v) ? "true" : "false");
        return field_error(c, path, t, v, json_is_string(v) ? "number_format_exception" : "illegal_argument_exception", reason);
    }
    if (!strcmp(t, "boolean")) {
        if (json_is_boolean(v))
            return NULL;
        const char *s = json_string_value(v);
        if (s && (!strcmp(s, "true") || !strcmp(s, "false") || !*s))
            return NULL;
        char pv[256];
        preview(v, pv, sizeof pv);
        snprintf(reason, sizeof reason, "Failed to parse value [%s] as only [true] or [false] are allowed.", pv);
        return field_error(c, path, t, v, "illegal_argument_exception", reason);
    }
    if (!strcmp(t, "date") || !strcmp(t, "date_nanos")) {
        if (json_is_integer(v) || json_is_real(v))
            return NULL;
        const char *s = json_string_value(v);
        if (s && (is_iso_date(s) || numeric_string(s, true)))
            return NULL;
        char pv[256];
        preview(v, pv, sizeof pv);
        snprintf(reason, sizeof reason,
                 "failed to parse date field [%s] with format [strict_date_optional_time||epoch_millis]", pv);
        return field_error(c, path, t, v, "illegal_argument_exception", reason);
    }
    return NULL;
}

static json_t *check_object(mctx_t *c, json_t *props, const json_t *obj, const char *prefix,
                            dyn_t dyn);

static json_t *check_value(mctx_t *c, json_t *fm, const json_t *v, const char *path, dyn_t dyn)
{
    if (json_is_null(v))
        return NULL;
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)v, i, x) {
            json_t *e = check_value(c, fm, x, path, dyn);
            if (e)
                return e;
        }
        return NULL;
    }
    if (is_object_mapping(fm)) {
        if (!json_is_object(v)) {
            char msg[1200];
            snprintf(msg, sizeof msg,
                     "object mapping for [%s] tried to parse field [%s] as object, but found a concrete value",
                     path, path);
            return doc_error(c, path, msg);
        }
        json_t *props = json_object_get(fm, "properties");
        if (!props) {
            if (!c->mutate) {
                if (json_object_size(v))
                    c->need_update = true;
                return NULL;
            }
            props = json_object();
            json_object_set_new(fm, "properties", props);
        }
        char pfx[520];
        snprintf(pfx, sizeof pfx, "%s.", path);
        return check_object(c, props, v, pfx, dyn_of(fm, dyn));
    }
    return check_scalar(c, path, fm, v);
}

static json_t *check_object(mctx_t *c, json_t *props, const json_t *obj, const char *prefix,
                            dyn_t dyn)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        char path[512];
        snprintf(path, sizeof path, "%s%s", prefix, k);
        json_t *fm = props ? json_object_get(props, k) : NULL;
        if (!fm) {
            if (dyn == DYN_FALSE)
                continue;
            if (dyn == DYN_STRICT) {
                char msg[1200], within[512];
                snprintf(within, sizeof within, "%.*s", prefix[0] ? (int)strlen(prefix) - 1 : 4,
                         prefix[0] ? prefix : "_doc");
                snprintf(msg, sizeof msg,
                         "mapping set to strict, dynamic introduction of [%s] within [%s] is not allowed",
                         k, within);
                json_t *e = doc_error(c, path, msg);
                json_object_set_new(e, "type", json_string("strict_dynamic_mapping_exception"));
                return e;
            }
            json_t *m = infer(v, c->date_detection);
            if (!m)
                continue;   /* null or empty array: nothing to map yet */
            if (!c->mutate) {
                json_decref(m);
                c->need_update = true;
                continue;
            }
            json_object_set_new(props, k, m);
            fm = m;
        }
        json_t *e = check_value(c, fm, v, path, dyn);
        if (e)
            return e;
    }
    return NULL;
}

static json_t *run(mctx_t *c, json_t *mappings, const json_t *src)
{
    json_t *props = json_object_get(mappings, "properties");
    if (!props && c->mutate) {
        props = json_object();
        json_object_set_new(mappings, "properties", props);
    }
    const json_t *dd = json_object_get(mappings, "date_detection");
    c->date_detection = !json_is_false(dd);
    return check_object(c, props, src, "", dyn_of(mappings, DYN_TRUE));
}

json_t *mapping_apply(index_t *ix, const json_t *src, const char *raw, size_t raw_len,
                      const char *id, int *status)
{
    mctx_t c = {raw, raw_len, id, false, false, true, NULL};
    *status = 400;
    json_t *e = run(&c, ix->mappings, src);
    if (e || !c.need_update)
        return e;
    /* new fields: map them on a copy so that a failing document leaves the
     * mapping untouched */
    json_t *copy = json_deep_copy(ix->mappings);
    c.mutate = true;
    e = run(&c, copy, src);
    if (e) {
        json_decref(copy);
        return e;
    }
    json_decref(ix->mappings);
    ix->mappings = copy;
    return NULL;
}
