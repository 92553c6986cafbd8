/*
 * _bulk body parser, mirroring ES's BulkRequestParser: an action line,
 * then a source line except for delete; the last line must end with a
 * newline; a CR before the LF and empty lines are accepted.
 *
 * Action lines are scanned by hand: they are tiny, and the discard mode's
 * throughput depends on not building a JSON tree per line.  Source lines are
 * only delimited (memchr); index/create sources are parsed later, per item,
 * because a broken source is a per-item error in ES, while a broken action
 * line (or update body) fails the whole request before anything runs.
 */
#include "esd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct scan {
    const char *p, *start, *end;
    int line;
    json_t *err;
} scan_t;

typedef enum { T_OBJ, T_END_OBJ, T_ARR, T_END_ARR, T_STR, T_NUM, T_BOOL, T_NULL, T_EOF, T_BAD } tok_t;

static const char *tok_name(tok_t t)
{
    static const char *n[] = {"START_OBJECT", "END_OBJECT", "START_ARRAY", "END_ARRAY",
                              "VALUE_STRING", "VALUE_NUMBER", "VALUE_BOOLEAN", "VALUE_NULL",
                              "null", "null"};
    return n[t];
}

static void fail(scan_t *s, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(scan_t *s, const char *type, const char *fmt, ...)
{
    if (s->err)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->err = err_cause(type, msg);
}

static void fail_syntax(scan_t *s, const char *what)
{
    int col = (int)(s->p - s->start) + 1;
    if (s->p >= s->end)
        fail(s, "x_content_parse_exception", "[%d:%d] Unexpected end-of-input: %s", s->line, col, what);
    else
        fail(s, "x_content_parse_exception",
             "[%d:%d] Unexpected character ('%c' (code %d)): %s", s->line, col,
             (unsigned char)*s->p >= 0x20 ? *s->p : '?', (unsigned char)*s->p, what);
}

static inline void ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\r'))
        s->p++;
}

static tok_t peek(scan_t *s)
{
    ws(s);
    if (s->p >= s->end)
        return T_EOF;
    switch (*s->p) {
    case '{': return T_OBJ;
    case '}': return T_END_OBJ;
    case '[': return T_ARR;
    case ']': return T_END_ARR;
    case '"': return T_STR;
    case 't': case 'f': return T_BOOL;
    case 'n': return T_NULL;
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9'))
            return T_NUM;
        return T_BAD;
    }
}

static void put_utf8(char **w, unsigned cp)
{
    char *o = *w;
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    *w = o;
}

static int hex4(const char *p, const char *end)
{
    if (end - p < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

static void own(bulk_req_t *b, char *p)
{
    if (b->nowned == b->owned_cap) {
        b->owned_cap = b->owned_cap ? b->owned_cap * 2 : 8;
        b->owned = xrealloc(b->owned, b->owned_cap * sizeof(char *));
    }
    b->owned[b->nowned++] = p;
}

/* Reads a string token.  Without escapes the result points into the body;
 * with escapes it is decoded into an owned buffer. */
static bool read_string(scan_t *s, bulk_req_t *b, strv_t *out)
{
    const char *q = s->p + 1;
    bool esc = false;
    while (q < s->end && *q != '"') {
        if (*q == '\\') {
            esc = true;
            q++;
        }
        q++;
    }
    if (q >= s->end) {
        s->p = s->end;
        fail_syntax(s, "was expecting closing quote for a string value");
        return false;
    }
    if (!esc) {
        out->p = s->p + 1;
        out->n = (size_t)(q - s->p - 1);
        s->p = q + 1;
        return true;
    }
    char *buf = xmalloc((size_t)(q - s->p) + 4), *w = buf;
    for (const char *r = s->p + 1; r < q; r++) {
        if (*r != '\\') {
            *w++ = *r;
            continue;
        }
        r++;
        switch (*r) {
        case 'n': *w++ = '\n'; break;
        case 't': *w++ = '\t'; break;
        case 'r': *w++ = '\r'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'u': {
            int cp = hex4(r + 1, q);
            if (cp < 0) {
                free(buf);
                s->p = r;
                fail_syntax(s, "Unrecognized character escape");
                return false;
            }
            r += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && r + 6 < q && r[1] == '\\' && r[2] == 'u') {
                int lo = hex4(r + 3, q);
                if (lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    r += 6;
                }
            }
            put_utf8(&w, (unsigned)cp);
            break;
        }
        default: *w++ = *r;
        }
    }
    *w = '\0';
    own(b, buf);
    out->p = buf;
    out->n = (size_t)(w - buf);
    s->p = q + 1;
    return true;
}

/* A scalar value: string, number, boolean or null. */
static bool read_scalar(scan_t *s, bulk_req_t *b, tok_t t, strv_t *out)
{
    if (t == T_STR)
        return read_string(s, b, out);
    const char *q = s->p;
    while (q < s->end && *q != ',' && *q != '}' && *q != ']' && *q != ' ' && *q != '\t' &&
           *q != '\r')
        q++;
    out->p = s->p;
    out->n = (size_t)(q - s->p);
    bool ok = (t == T_NULL && out->n == 4 && !memcmp(out->p, "null", 4)) ||
              (t == T_BOOL && ((out->n == 4 && !memcmp(out->p, "true", 4)) ||
                               (out->n == 5 && !memcmp(out->p, "false", 5)))) ||
              t == T_NUM;
    if (!ok) {
        fail_syntax(s, "expected a valid value (JSON String, Number, Array, Object or token 'null', 'true' or 'false')");
        return false;
    }
    s->p = q;
    return true;
}

/* Skips a balanced object/array value (dynamic_templates, _source). */
static bool skip_value(scan_t *s, bulk_req_t *b)
{
    int depth = 0;
    do {
        tok_t t = peek(s);
        strv_t tmp;
        switch (t) {
        case T_OBJ: case T_ARR: depth++; s->p++; break;
        case T_END_OBJ: case T_END_ARR: depth--; s->p++; break;
        case T_STR: case T_NUM: case T_BOOL: case T_NULL:
            if (!read_scalar(s, b, t, &tmp))
                return false;
            break;
        default:
            fail_syntax(s, "expected a value");
            return false;
        }
        ws(s);
        if (s->p < s->end && (*s->p == ',' || *s->p == ':'))
            s->p++;
    } while (depth > 0);
    return true;
}

static bool sv_eq(strv_t v, const char *lit)
{
    size_t n = strlen(lit);
    return v.n == n && memcmp(v.p, lit, n) == 0;
}

static bool sv_long(strv_t v, long long *out)
{
    char tmp[32];
    if (v.n == 0 || v.n >= sizeof tmp)
        return false;
    memcpy(tmp, v.p, v.n);
    tmp[v.n] = '\0';
    return parse_long_strict(tmp, out);
}

static bool want_long(scan_t *s, strv_t key, strv_t v, long long *out)
{
    if (sv_long(v, out))
        return true;
    fail(s, "illegal_argument_exception", "[%.*s] failed to parse value [%.*s] as a number on line [%d]",
         (int)key.n, key.p, (int)v.n, v.p, s->line);
    return false;
}

/* Applies one metadata key/value of an action line. */
static bool apply_meta(scan_t *s, bulk_op_t *op, strv_t key, tok_t t, strv_t v, int compat)
{
    bool null = t == T_NULL;
    if (sv_eq(key, "_index")) {
        if (!null) { op->index = v; op->has_index = true; }
    } else if (sv_eq(key, "_id")) {
        if (!null) { op->id = v; op->has_id = true; }
    } else if (sv_eq(key, "routing")) {
        if (!null) { op->routing = v; op->has_routing = true; }
    } else if (sv_eq(key, "pipeline")) {
        if (!null) { op->pipeline = v; op->has_pipeline = true; }
    } else if (sv_eq(key, "version")) {
        if (!want_long(s, key, v, &op->version))
            return false;
        op->has_version = true;
    } else if (sv_eq(key, "version_type")) {
        if (sv_eq(v, "internal")) op->vtype = VT_INTERNAL;
        else if (sv_eq(v, "external")) op->vtype = VT_EXTERNAL;
        else if (sv_eq(v, "external_gte")) op->vtype = VT_EXTERNAL_GTE;
        else {
            fail(s, "illegal_argument_exception", "No version type match [%.*s]", (int)v.n, v.p);
            return false;
        }
        op->has_vtype = true;
    } else if (sv_eq(key, "if_seq_no")) {
        if (!want_long(s, key, v, &op->if_seq))
            return false;
        op->has_if_seq = true;
    } else if (sv_eq(key, "if_primary_term")) {
        if (!want_long(s, key, v, &op->if_term))
            return false;
        op->has_if_term = true;
    } else if (sv_eq(key, "op_type")) {
        if (sv_eq(v, "create")) op->op_type_create = true;
        else if (!sv_eq(v, "index")) {
            fail(s, "illegal_argument_exception", "opType must be 'create' or 'index', found: [%.*s]",
                 (int)v.n, v.p);
            return false;
        }
    } else if (sv_eq(key, "require_alias")) {
        op->require_alias = sv_eq(v, "true") ? 1 : 0;
    } else if (sv_eq(key, "retry_on_conflict") || sv_eq(key, "require_data_stream") ||
               sv_eq(key, "list_executed_pipelines") || sv_eq(key, "_source") ||
               (sv_eq(key, "_type") && (g_cfg.flavor == FLAVOR_ES7 || compat == 7))) {
        /* accepted, no effect on a single-shard in-memory index */
    } else {
        fail(s, "illegal_argument_exception", "Action/metadata line [%d] contains an unknown parameter [%.*s]",
             s->line, (int)key.n, key.p);
        return false;
    }
    return true;
}

static bool parse_meta_object(scan_t *s, bulk_req_t *b, bulk_op_t *op, int compat)
{
    s->p++;   /* '{' */
    tok_t t = peek(s);
    if (t == T_END_OBJ) {
        s->p++;
        return true;
    }
    for (;;) {
        if (peek(s) != T_STR) {
            fail_syntax(s, "was expecting double-quote to start field name");
            return false;
        }
        strv_t key, val;
        if (!read_string(s, b, &key))
            return false;
        ws(s);
        if (s->p >= s->end || *s->p != ':') {
            fail_syntax(s, "was expecting a colon to separate field name and value");
            return false;
        }
        s->p++;
        t = peek(s);
        if (t == T_ARR || t == T_OBJ) {
            if (!sv_eq(key, "dynamic_templates") && !sv_eq(key, "_source")) {
                fail(s, "illegal_argument_exception",
                     "Malformed action/metadata line [%d], expected a simple value for field [%.*s] but found [%s]",
                     s->line, (int)key.n, key.p, tok_name(t));
                return false;
            }
            if (!skip_value(s, b))
                return false;
        } else if (t == T_EOF || t == T_BAD || t == T_END_OBJ || t == T_END_ARR) {
            fail_syntax(s, "expected a value");
            return false;
        } else {
            if (!read_scalar(s, b, t, &val) || !apply_meta(s, op, key, t, val, compat))
                return false;
        }
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return true;
        }
        fail_syntax(s, "was expecting comma to separate Object entries");
        return false;
    }
}

/* {"<action>": {meta...}} */
static bool parse_action(scan_t *s, bulk_req_t *b, bulk_op_t *op, int compat)
{
    tok_t t = peek(s);
    if (t != T_OBJ) {
        if (t == T_BAD) fail_syntax(s, "expected a valid value");
        else fail(s, "illegal_argument_exception",
                  "Malformed action/metadata line [%d], expected START_OBJECT but found [%s]",
                  s->line, tok_name(t));
        return false;
    }
    s->p++;
    t = peek(s);
    if (t == T_END_OBJ) {
        fail(s, "illegal_argument_exception",
             "Malformed action/metadata line [%d], expected FIELD_NAME but found [END_OBJECT]", s->line);
        return false;
    }
    if (t != T_STR) {
        fail_syntax(s, "was expecting double-quote to start field name");
        return false;
    }
    strv_t act;
    if (!read_string(s, b, &act))
        return false;
    if (sv_eq(act, "index")) op->kind = OP_INDEX;
    else if (sv_eq(act, "create")) op->kind = OP_CREATE;
    else if (sv_eq(act, "update")) op->kind = OP_UPDATE;
    else if (sv_eq(act, "delete")) op->kind = OP_DELETE;
    else {
        fail(s, "illegal_argument_exception",
             "Malformed action/metadata line [%d], expected field [create], [delete], [index] or [update] but found [%.*s]",
             s->line, (int)act.n, act.p);
        return false;
    }
    ws(s);
    if (s->p >= s->end || *s->p != ':') {
        fail_syntax(s, "was expecting a colon to separate field name and value");
        return false;
    }
    s->p++;
    t = peek(s);
    if (t != T_OBJ) {
        fail(s, "illegal_argument_exception",
             "Malformed action/metadata line [%d], expected START_OBJECT but found [%s]", s->line,
             tok_name(t));
        return false;
    }
    if (!parse_meta_object(s, b, op, compat))
        return false;
    t = peek(s);
    if (t == T_STR || (t == T_BAD && *s->p == ',')) {
        fail(s, "illegal_argument_exception",
             "Malformed action/metadata line [%d], expected END_OBJECT but found [FIELD_NAME]", s->line);
        return false;
    }
    if (t != T_END_OBJ) {
        fail_syntax(s, "was expecting closing '}' for the action object");
        return false;
    }
    s->p++;
    ws(s);
    if (s->p < s->end) {
        fail_syntax(s, "unexpected data after the action object");
        return false;
    }
    if (op->kind == OP_UPDATE && op->has_version) {
        fail(s, "illegal_argument_exception",
             "Update requests do not support versioning. Please use `if_seq_no` and `if_primary_term` instead");
        return false;
    }
    if (op->op_type_create && op->kind == OP_INDEX)
        op->kind = OP_CREATE;
    return true;
}

static const char *update_keys[] = {"doc", "upsert", "doc_as_upsert", "detect_noop", "script",
                                    "scripted_upsert", "_source", "lang", NULL};

/* Update bodies are parsed up front, as ES does. */
static bool parse_update_body(scan_t *s, bulk_op_t *op)
{
    json_error_t e;
    json_t *j = json_parse_precise(op->src, op->src_len, JSON_DECODE_ANY, &e);
    if (!j) {
        fail(s, "x_content_parse_exception", "[%d:%d] %s", s->line, e.column, e.text);
        return false;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        fail(s, "x_content_parse_exception", "[%d:1] [UpdateRequest] Expected START_OBJECT", s->line);
        return false;
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        bool known = false;
        for (int i = 0; update_keys[i]; i++)
            known |= strcmp(k, update_keys[i]) == 0;
        if (!known) {
            fail(s, "x_content_parse_exception", "[%d:2] [UpdateRequest] unknown field [%s]", s->line, k);
            json_decref(j);
            return false;
        }
    }
    op->upd = j;
    return true;
}

static void push_op(bulk_req_t *b, bulk_op_t *op)
{
    if (b->on_op) {
        b->on_op(b->ctx, b, op);
        return;
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->ops = xrealloc(b->ops, b->cap * sizeof *b->ops);
    }
    b->ops[b->n++] = *op;
}

static json_t *newline_error(void)
{
    return err_cause("illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]");
}

bool bulk_parse(const char *body, size_t len, int compat, bulk_req_t *b, json_t **err)
{
    const char *p = body, *end = body + len;
    int line = 0;
    size_t count = 0;
    *err = NULL;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            *err = newline_error();
            return false;
        }
        line++;
        const char *le = nl;
        if (le > p && le[-1] == '\r')
            le--;
        scan_t s = {p, p, le, line, NULL};
        p = nl + 1;
        if (peek(&s) == T_EOF)
            continue;   /* empty line where an action is expected: skipped */
        bulk_op_t op;
        memset(&op, 0, sizeof op);
        op.require_alias = -1;
        op.line = line;
        if (!parse_action(&s, b, &op, compat)) {
            *err = s.err;
            return false;
        }
        if (op.kind != OP_DELETE) {
            if (p >= end)
                break;   /* action without a source at the very end: ignored, as in ES */
            nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) {
                *err = newline_error();
                return false;
            }
            line++;
            le = nl;
            if (le > p && le[-1] == '\r')
                le--;
            op.src = p;
            op.src_len = (size_t)(le - p);
            p = nl + 1;
            if (op.kind == OP_UPDATE && b->parse_updates) {
                scan_t us = {op.src, op.src, le, line, NULL};
                if (!parse_update_body(&us, &op)) {
                    *err = us.err;
                    return false;
                }
            }
        }
        push_op(b, &op);
        count++;
    }
    if (!count) {
        *err = err_cause("action_request_validation_exception", "Validation Failed: 1: no requests added;");
        return false;
    }
    return true;
}

void bulk_req_free(bulk_req_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        if (b->ops[i].upd)
            json_decref(b->ops[i].upd);
        if (b->ops[i].doc)
            json_decref(b->ops[i].doc);
        if (b->ops[i].doc_err)
            json_decref(b->ops[i].doc_err);
    }
    free(b->ops);
    for (size_t i = 0; i < b->nowned; i++)
        free(b->owned[i]);
    free(b->owned);
    memset(b, 0, sizeof *b);
}
