/*
 * Single-document endpoints: GET/HEAD _doc, _source, _mget (all realtime:
 * they read the live map, not the refreshed snapshot), and PUT/POST/DELETE
 * _doc, _create, _update which go through the bulk executor.
 */
#include "esd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- */
/* _source selection                                               */
/* --------------------------------------------------------------- */
static void spec_add(sb_t *s, const char *pfx, const json_t *v)
{
    if (json_is_string(v)) {
        if (s->len)
            sb_putc(s, ',');
        sb_puts(s, pfx);
        sb_puts(s, json_string_value(v));
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)v, i, x) spec_add(s, pfx, x);
    }
}

static void spec_add_csv(sb_t *s, const char *pfx, const char *csv)
{
    char *copy = xstrdup(csv), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (s->len)
            sb_putc(s, ',');
        sb_puts(s, pfx);
        sb_puts(s, t);
    }
    free(copy);
}

char *source_spec(const json_t *body_source, const req_t *r, bool *enabled)
{
    sb_t s = {NULL, 0, 0};
    *enabled = true;
    const char *arg = r ? req_arg(r, "_source") : NULL;
    if (arg) {
        if (!strcmp(arg, "false"))
            *enabled = false;
        else if (*arg && strcmp(arg, "true") != 0)
            spec_add_csv(&s, "", arg);
    } else if (json_is_false(body_source)) {
        *enabled = false;
    } else if (json_is_string(body_source) || json_is_array(body_source)) {
        spec_add(&s, "", body_source);
    } else if (json_is_object(body_source)) {
        spec_add(&s, "", json_object_get(body_source, "includes"));
        spec_add(&s, "", json_object_get(body_source, "include"));
        spec_add(&s, "-", json_object_get(body_source, "excludes"));
        spec_add(&s, "-", json_object_get(body_source, "exclude"));
    }
    const char *inc = r ? req_arg(r, "_source_includes") : NULL;
    const char *exc = r ? req_arg(r, "_source_excludes") : NULL;
    if (inc)
        spec_add_csv(&s, "", inc);
    if (exc)
        spec_add_csv(&s, "-", exc);
    if (s.len && s.buf[0] == '-') {
        /* only excludes: everything else stays */
        sb_t t = {NULL, 0, 0};
        sb_puts(&t, "**,");
        sb_append(&t, s.buf, s.len);
        sb_free(&s);
        s = t;
    }
    return s.len ? sb_detach(&s, NULL) : (sb_free(&s), NULL);
}

/* The stored bytes are returned as is: exactly what the client sent. */
void write_source(sb_t *s, const doc_t *d, const char *filter)
{
    if (!filter) {
        sb_append(s, d->raw, d->raw_len);
        return;
    }
    json_t *f = filter_path_apply(json_deep_copy(d->src), filter);
    if (!f)
        f = json_object();
    sb_json_value(s, f);
    json_decref(f);
}

void write_hit_meta(sb_t *s, const index_t *ix, const doc_t *d, int compat)
{
    sb_puts(s, "\"_index\":");
    sb_json_cstr(s, ix->name);
    if (flavor_has_type(compat))
        sb_puts(s, ",\"_type\":\"_doc\"");
    sb_puts(s, ",\"_id\":");
    sb_json_str(s, d->id, d->id_len);
}

/* --------------------------------------------------------------- */
/* GET                                                             */
/* --------------------------------------------------------------- */
static void write_get(sb_t *s, const index_t *ix, const char *idx_name, const char *id,
                      const doc_t *d, const char *filter, bool with_source, int compat)
{
    sb_putc(s, '{');
    if (d && !d->deleted) {
        write_hit_meta(s, ix, d, compat);
        sb_printf(s, ",\"_version\":%lld,\"_seq_no\":%lld,\"_primary_term\":1,\"found\":true",
                  (long long)d->version, (long long)d->seq_no);
        if (d->routing) {
            sb_puts(s, ",\"_routing\":");
            sb_json_cstr(s, d->routing);
        }
        if (with_source) {
            sb_puts(s, ",\"_source\":");
            write_source(s, d, filter);
        }
    } else {
        sb_puts(s, "\"_index\":");
        sb_json_cstr(s, idx_name);
        if (flavor_has_type(compat))
            sb_puts(s, ",\"_type\":\"_doc\"");
        sb_puts(s, ",\"_id\":");
        sb_json_cstr(s, id);
        sb_puts(s, ",\"found\":false");
    }
    sb_putc(s, '}');
}

void handle_get_doc(req_t *r, resp_t *rs, const char *index, const char *id, bool source_only)
{
    bool with_source;
    char *filter = source_spec(NULL, r, &with_source);
    pthread_mutex_lock(&g_store.lock);
    json_t *cause = NULL;
    int status = 404;
    index_t *ix = resolve_single(index, &cause, &status);
    if (!ix) {
        pthread_mutex_unlock(&g_store.lock);
        resp_error_obj(rs, status, cause);
        free(filter);
        return;
    }
    doc_t *d = doc_find(ix, id, strlen(id));
    bool found = d && !d->deleted;
    sb_t s;
    sb_init(&s, found ? d->raw_len + 256 : 256);
    if (source_only) {
        if (found) {
            write_source(&s, d, filter);
        } else {
            char msg[700];
            snprintf(msg, sizeof msg, "Document not found [%s]/[_doc]/[%s]", ix->name, id);
            pthread_mutex_unlock(&g_store.lock);
            sb_free(&s);
            free(filter);
            resp_error(rs, 404, "resource_not_found_exception", "%s", msg);
            return;
        }
    } else {
        write_get(&s, ix, ix->name, id, d, filter, with_source, r->compat);
    }
    pthread_mutex_unlock(&g_store.lock);
    free(filter);
    resp_sb(rs, found ? 200 : 404, &s);
}

/* --------------------------------------------------------------- */
/* _mget                                                           */
/* --------------------------------------------------------------- */
static void mget_error(sb_t *s, const char *index, const char *id, json_t *cause)
{
    json_t *root = json_deep_copy(cause);
    json_t *e = json_object();
    json_t *arr = json_array();
    json_array_append_new(arr, root);
    json_object_set_new(e, "root_cause", arr);
    json_object_update(e, cause);
    json_decref(cause);
    sb_puts(s, "{\"_index\":");
    sb_json_cstr(s, index);
    sb_puts(s, ",\"_id\":");
    sb_json_cstr(s, id);
    sb_puts(s, ",\"error\":");
    sb_json_value(s, e);
    sb_putc(s, '}');
    json_decref(e);
}

static void mget_one(sb_t *s, req_t *r, const char *index, const char *id, const json_t *src_opt)
{
    json_t *cause = NULL;
    int status;
    index_t *ix = resolve_single(index, &cause, &status);
    if (!ix) {
        mget_error(s, index, id, cause);
        return;
    }
    bool with_source;
    char *filter = source_spec(src_opt, src_opt ? NULL : r, &with_source);
    doc_t *d = doc_find(ix, id, strlen(id));
    write_get(s, ix, ix->name, id, d, filter, with_source, r->compat);
    free(filter);
}

static const char *id_text(const json_t *v, char *buf, size_t n)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

void handle_mget(req_t *r, resp_t *rs, const char *index)
{
    json_error_t e;
    json_t *body = r->body_len ? json_loadb(r->body, r->body_len, 0, &e) : NULL;
    if (r->body_len && !body) {
        resp_error(rs, 400, "parse_exception", "failed to parse request body: %s", e.text);
        return;
    }
    json_t *ids = json_object_get(body, "ids");
    json_t *docs = json_object_get(body, "docs");
    size_t n = json_array_size(ids) + json_array_size(docs);
    if (!n) {
        json_decref(body);
        resp_error(rs, 400, "action_request_validation_exception", "Validation Failed: 1: no documents to get;");
        return;
    }
    char buf[32];
    for (size_t i = 0; i < json_array_size(docs); i++) {
        json_t *d = json_array_get(docs, i);
        const char *di = json_string_value(json_object_get(d, "_index"));
        if (!di && !index) {
            json_decref(body);
            resp_error(rs, 400, "action_request_validation_exception", "Validation Failed: 1: index is missing for doc %zu;", i);
            return;
        }
        if (!id_text(json_object_get(d, "_id"), buf, sizeof buf)) {
            json_decref(body);
            resp_error(rs, 400, "action_request_validation_exception", "Validation Failed: 1: id is missing for doc %zu;", i);
            return;
        }
    }
    if (json_array_size(ids) && !index) {
        json_decref(body);
        resp_error(rs, 400, "action_request_validation_exception", "Validation Failed: 1: index is missing for doc 0;");
        return;
    }
    sb_t s;
    sb_init(&s, 1024);
    sb_puts(&s, "{\"docs\":[");
    size_t k = 0;
    pthread_mutex_lock(&g_store.lock);
    for (size_t i = 0; i < json_array_size(docs); i++, k++) {
        json_t *d = json_array_get(docs, i);
        const char *di = json_string_value(json_object_get(d, "_index"));
        if (k)
            sb_putc(&s, ',');
        mget_one(&s, r, di ? di : index, id_text(json_object_get(d, "_id"), buf, sizeof buf),
                 json_object_get(d, "_source"));
    }
    for (size_t i = 0; i < json_array_size(ids); i++, k++) {
        const char *id = id_text(json_array_get(ids, i), buf, sizeof buf);
        if (k)
            sb_putc(&s, ',');
        mget_one(&s, r, index, id ? id : "", NULL);
    }
    pthread_mutex_unlock(&g_store.lock);
    sb_puts(&s, "]}");
    json_decref(body);
    resp_sb(rs, 200, &s);
}

/* --------------------------------------------------------------- */
/* single-document writes                                          */
/* --------------------------------------------------------------- */
static bool arg_long(req_t *r, resp_t *rs, const char *key, bool *has, long long *out)
{
    const char *v = req_arg(r, key);
    *has = v != NULL;
    if (v && !parse_long_strict(v, out)) {
        resp_error(rs, 400, "illegal_argument_exception", "Failed to parse long parameter [%s] with value [%s]", key, v);
        return false;
    }
    return true;
}

static bool op_from_args(req_t *r, resp_t *rs, bulk_op_t *op)
{
    if (!arg_long(r, rs, "version", &op->has_version, &op->version) ||
        !arg_long(r, rs, "if_seq_no", &op->has_if_seq, &op->if_seq) ||
        !arg_long(r, rs, "if_primary_term", &op->has_if_term, &op->if_term))
        return false;
    const char *vt = req_arg(r, "version_type");
    if (vt) {
        if (!strcmp(vt, "external")) op->vtype = VT_EXTERNAL;
        else if (!strcmp(vt, "external_gte")) op->vtype = VT_EXTERNAL_GTE;
        else if (strcmp(vt, "internal") != 0) {
            resp_error(rs, 400, "illegal_argument_exception", "No version type match [%s]", vt);
            return false;
        }
    }
    const char *rt = req_arg(r, "routing");
    if (rt) {
        op->routing.p = rt;
        op->routing.n = strlen(rt);
        op->has_routing = true;
    }
    const char *pl = req_arg(r, "pipeline");
    if (pl) {
        op->pipeline.p = pl;
        op->pipeline.n = strlen(pl);
        op->has_pipeline = true;
    }
    op->require_alias = req_arg_bool(r, "require_alias", false) ? 1 : 0;
    return true;
}

static void write_single(sb_t *s, const item_result_t *res)
{
    sb_puts(s, "{\"_index\":");
    sb_json_cstr(s, res->index);
    if (flavor_has_type(0))
        sb_puts(s, ",\"_type\":\"_doc\"");
    sb_puts(s, ",\"_id\":");
    sb_json_cstr(s, res->id ? res->id : "");
    sb_printf(s, ",\"_version\":%lld,\"result\":\"%s\"", (long long)res->version, res->result);
    if (res->forced_refresh)
        sb_puts(s, ",\"forced_refresh\":true");
    sb_printf(s, ",\"_shards\":{\"total\":%d,\"successful\":1,\"failed\":0}", res->shards_total);
    sb_printf(s, ",\"_seq_no\":%lld,\"_primary_term\":1}", (long long)res->seq_no);
}

static bool parse_update_body(req_t *r, resp_t *rs, bulk_op_t *op)
{
    json_error_t e;
    op->upd = json_parse_precise(r->body, r->body_len, 0, &e);
    if (!op->upd) {
        resp_error(rs, 400, "x_content_parse_exception", "[%d:%d] %s", e.line, e.column, e.text);
        return false;
    }
    static const char *keys[] = {"doc", "upsert", "doc_as_upsert", "detect_noop", "script",
                                 "scripted_upsert", "_source", "lang", NULL};
    const char *k;
    json_t *v;
    json_object_foreach(op->upd, k, v) {
        bool known = false;
        for (int i = 0; keys[i]; i++)
            known |= !strcmp(keys[i], k);
        if (!known) {
            resp_error(rs, 400, "x_content_parse_exception", "[1:2] [UpdateRequest] unknown field [%s]", k);
            return false;
        }
    }
    return true;
}

static bool parse_doc_body(req_t *r, resp_t *rs, bulk_op_t *op)
{
    if (!r->body_len) {
        resp_error(rs, 400, "parse_exception", "request body is required");
        return false;
    }
    json_error_t e;
    op->src = r->body;
    op->src_len = r->body_len;
    /* a trailing newline is not part of the stored source */
    while (op->src_len && (op->src[op->src_len - 1] == '\n' || op->src[op->src_len - 1] == '\r'))
        op->src_len--;
    op->doc = json_parse_precise(op->src, op->src_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &e);
    if (!op->doc || !json_is_object(op->doc)) {
        json_t *c = err_cause(flavor_parse_error_type(), NULL);
        char msg[400];
        snprintf(msg, sizeof msg, "[1:%d] failed to parse: %s", op->doc ? 1 : e.column,
                 op->doc ? "Malformed content, must start with an object" : e.text);
        json_object_set_new(c, "reason", json_string(msg));
        resp_error_obj(rs, 400, c);
        return false;
    }
    return true;
}

void handle_doc_write(req_t *r, resp_t *rs, const char *index, const char *id,
                      enum op_kind kind, bool op_create)
{
    bulk_op_t op;
    memset(&op, 0, sizeof op);
    op.kind = op_create ? OP_CREATE : kind;
    op.index.p = index;
    op.index.n = strlen(index);
    op.has_index = true;
    if (id) {
        op.id.p = id;
        op.id.n = strlen(id);
        op.has_id = true;
    }
    const char *rf = req_arg(r, "refresh");
    int refresh = !rf || !strcmp(rf, "false") ? 0 : (!*rf || !strcmp(rf, "true")) ? 1 : !strcmp(rf, "wait_for") ? 2 : -1;
    if (refresh < 0) {
        resp_error(rs, 400, "illegal_argument_exception", "Unknown value for refresh: [%s].", rf);
        return;
    }
    bool ok = op_from_args(r, rs, &op);
    if (ok && op.has_pipeline && (kind == OP_UPDATE || kind == OP_DELETE)) {
        /* only the index and create APIs take a pipeline */
        resp_error(rs, 400, "illegal_argument_exception",
                   "request [%s] contains unrecognized parameter: [pipeline]", r->path);
        ok = false;
    }
    if (ok && kind == OP_UPDATE && op.has_version) {
        resp_error(rs, 400, "action_request_validation_exception",
                   "Validation Failed: 1: internal versioning can not be used for optimistic concurrency control. Please use `if_seq_no` and `if_primary_term` instead;");
        ok = false;
    }
    if (ok && kind == OP_UPDATE)
        ok = parse_update_body(r, rs, &op);
    else if (ok && kind != OP_DELETE)
        ok = parse_doc_body(r, rs, &op);
    if (ok) {
        item_result_t res;
        pthread_mutex_lock(&g_store.lock);
        exec_op(&op, NULL, 0, r->who, &res);
        pthread_mutex_unlock(&g_store.lock);
        if (res.ok && refresh) {
            refresh_after_write(res.index, refresh);
            res.forced_refresh = refresh == 1;
        }
        if (res.ok) {
            sb_t s;
            sb_init(&s, 256);
            write_single(&s, &res);
            resp_sb(rs, res.status, &s);
        } else {
            resp_error_obj(rs, res.status, json_incref(res.error));
        }
        item_result_free(&res);
    }
    if (op.upd)
        json_decref(op.upd);
    if (op.doc)
        json_decref(op.doc);
}
