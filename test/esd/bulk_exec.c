/*
 * Execution of bulk operations against the store, with ES's per-operation
 * results (index creates or replaces, create conflicts with 409, update
 * merges or upserts, a delete of a missing document is a 404 not_found;
 * _seq_no grows with every write, not-found deletes included) and the
 * _bulk endpoint itself.  Single-document endpoints (docs.c) reuse exec_op()
 * so that both paths have exactly the same semantics.
 */
#include "esd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 256   /* ops parsed outside the lock, then executed under it */
#define HEADER_ROOM 64

/* --------------------------------------------------------------- */
/* item results                                                    */
/* --------------------------------------------------------------- */
void item_result_free(item_result_t *res)
{
    if (res->error)
        json_decref(res->error);
    free(res->id);
    res->error = NULL;
    res->id = NULL;
}

static void set_error(item_result_t *res, int status, json_t *cause)
{
    res->status = status;
    res->ok = false;
    if (res->error)
        json_decref(res->error);
    if (res->ix && !json_object_get(cause, "index_uuid")) {
        json_object_set_new(cause, "index_uuid", json_string(res->ix->uuid));
        json_object_set_new(cause, "shard", json_string("0"));
        json_object_set_new(cause, "index", json_string(res->ix->name));
    }
    res->error = cause;
}

static void set_errorf(item_result_t *res, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_errorf(item_result_t *res, int status, const char *type, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_error(res, status, err_cause(type, msg));
}

static inline void put_lit(sb_t *s, const char *p, size_t n)
{
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}
#define LIT(s, str) put_lit(s, str, sizeof(str) - 1)

/* caller guarantees room (sb_grow) for the fixed parts */
static inline void put_int(sb_t *s, long long v)
{
    char tmp[24];
    int i = 24;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    put_lit(s, tmp + i, (size_t)(24 - i));
}

void item_write(sb_t *s, const char *opname, const item_result_t *res, int compat)
{
    sb_puts(s, "{\"");
    sb_puts(s, opname);
    sb_puts(s, "\":{\"_index\":");
    sb_json_cstr(s, res->index);
    if (flavor_has_type(compat))
        sb_puts(s, ",\"_type\":\"_doc\"");
    sb_puts(s, ",\"_id\":");
    if (res->id)
        sb_json_cstr(s, res->id);
    else
        sb_puts(s, "null");
    if (res->ok) {
        sb_grow(s, 256);
        LIT(s, ",\"_version\":");
        put_int(s, res->version);
        LIT(s, ",\"result\":\"");
        put_lit(s, res->result, strlen(res->result));
        LIT(s, "\"");
        if (res->forced_refresh)
            LIT(s, ",\"forced_refresh\":true");
        if (!strcmp(res->result, "noop")) {   /* nothing was written to any shard */
            LIT(s, ",\"_shards\":{\"total\":0,\"successful\":0,\"failed\":0}");
        } else {
            LIT(s, ",\"_shards\":{\"total\":");
            put_int(s, res->shards_total);
            LIT(s, ",\"successful\":1,\"failed\":0}");
        }
        LIT(s, ",\"_seq_no\":");
        put_int(s, res->seq_no);
        LIT(s, ",\"_primary_term\":1,\"status\":");
        put_int(s, res->status);
        LIT(s, "}}");
        s->buf[s->len] = '\0';
    } else {
        sb_printf(s, ",\"status\":%d,\"error\":", res->status);
        sb_json_value(s, res->error);
        sb_puts(s, "}}");
    }
}

/* --------------------------------------------------------------- */
/* validation shared by every op                                   */
/* --------------------------------------------------------------- */
static bool validate_op(const bulk_op_t *op, item_result_t *res)
{
    const char *msg = NULL;
    char buf[700];
    if ((op->kind == OP_UPDATE || op->kind == OP_DELETE) && !op->has_id)
        msg = "id is missing";
    else if (op->has_id && op->id.n > 512) {
        snprintf(buf, sizeof buf, "id [%.*s...] is too long, must be no longer than 512 bytes but was: %zu",
                 40, op->id.p, op->id.n);
        msg = buf;
    } else if (op->kind == OP_CREATE && op->vtype != VT_INTERNAL)
        msg = "create operations only support internal versioning. use index instead";
    else if (op->has_version && op->vtype == VT_INTERNAL)
        msg = "internal versioning can not be used for optimistic concurrency control. Please use `if_seq_no` and `if_primary_term` instead";
    else if (op->vtype != VT_INTERNAL && !op->has_version) {
        snprintf(buf, sizeof buf, "illegal version value [-3] for version type [%s]",
                 op->vtype == VT_EXTERNAL ? "EXTERNAL" : "EXTERNAL_GTE");
        msg = buf;
    } else if (op->vtype != VT_INTERNAL && op->version < 0) {
        snprintf(buf, sizeof buf, "illegal version value [%lld] for version type [%s]", op->version,
                 op->vtype == VT_EXTERNAL ? "EXTERNAL" : "EXTERNAL_GTE");
        msg = buf;
    } else if ((op->has_if_seq || op->has_if_term) && op->vtype != VT_INTERNAL)
        msg = "compare and write operations can not be used with version type [EXTERNAL]";
    else if (op->has_if_seq && (!op->has_if_term || op->if_term <= 0))
        msg = "ifSeqNo is set, but primary term is [0]";
    else if (op->has_if_seq && op->if_seq < 0)
        msg = "sequence numbers must be non negative";
    if (msg) {
        set_errorf(res, 400, "action_request_validation_exception", "Validation Failed: 1: %s;", msg);
        return false;
    }
    if (op->has_id && op->id.n == 0) {
        set_errorf(res, 400, "illegal_argument_exception", "if _id is specified it must not be empty");
        return false;
    }
    return true;
}

/* Discard mode keeps no index settings and runs no processor, but an
 * index/create naming an unknown pipeline is refused as in ES. */
static bool discard_pipeline_ok(const bulk_op_t *op, item_result_t *res)
{
    if (!op->has_pipeline || (op->kind != OP_INDEX && op->kind != OP_CREATE) ||
        (op->pipeline.n == 5 && !memcmp(op->pipeline.p, "_none", 5)))
        return true;
    pthread_mutex_lock(&g_store.lock);
    bool ok = pipeline_exists(op->pipeline.p, op->pipeline.n);
    pthread_mutex_unlock(&g_store.lock);
    if (!ok)
        set_errorf(res, 400, "illegal_argument_exception", "pipeline with id [%.*s] does not exist",
                   (int)op->pipeline.n, op->pipeline.p);
    return ok;
}

/* Compare-and-set and external version checks.  Returns false after setting
 * a 409 when the write must not happen. */
static bool version_checks(const bulk_op_t *op, const doc_t *cur, item_result_t *res)
{
    bool live = cur && !cur->deleted;
    if (op->has_if_seq) {
        if (!live) {
            set_errorf(res, 409, "version_conflict_engine_exception",
                       "[%s]: version conflict, required seqNo [%lld], primary term [%lld] but no document was found",
                       res->id, op->if_seq, op->if_term);
            return false;
        }
        if (cur->seq_no != op->if_seq || op->if_term != 1) {
            set_errorf(res, 409, "version_conflict_engine_exception",
                       "[%s]: version conflict, required seqNo [%lld], primary term [%lld]. current document has seqNo [%lld] and primary term [1]",
                       res->id, op->if_seq, op->if_term, (long long)cur->seq_no);
            return false;
        }
    }
    if (op->kind == OP_CREATE && live) {
        set_errorf(res, 409, "version_conflict_engine_exception",
                   "[%s]: version conflict, document already exists (current version [%lld])",
                   res->id, (long long)cur->version);
        return false;
    }
    if (op->vtype != VT_INTERNAL && cur) {
        bool ok = op->vtype == VT_EXTERNAL ? op->version > cur->version : op->version >= cur->version;
        if (!ok) {
            set_errorf(res, 409, "version_conflict_engine_exception",
                       "[%s]: version conflict, current version [%lld] is higher %s the one provided [%lld]",
                       res->id, (long long)cur->version, op->vtype == VT_EXTERNAL ? "or equal to" : "than",
                       op->version);
            return false;
        }
    }
    return true;
}

/* --------------------------------------------------------------- */
/* target resolution                                               */
/* --------------------------------------------------------------- */
static index_t *target_index(const bulk_op_t *op, const char *name, int require_alias,
                             item_result_t *res)
{
    bool is_alias = alias_exists(name);
    if (require_alias == 1 && !is_alias) {
        json_t *c = index_not_found_cause(name);
        char msg[1200];
        snprintf(msg, sizeof msg,
                 "no such index [%s] and [require_alias] request flag is [true] and [%s] is not an alias",
                 name, name);
        json_object_set_new(c, "reason", json_string(msg));
        set_error(res, 404, c);
        return NULL;
    }
    json_t *cause = NULL;
    bool missing = false;
    index_t *ix = resolve_write_target(name, &cause, &missing);
    if (ix)
        return ix;
    if (cause) {
        set_error(res, 400, cause);
        return NULL;
    }
    if (op->kind == OP_DELETE || !g_cfg.auto_create_index) {
        set_error(res, 404, index_not_found_cause(name));
        return NULL;
    }
    char buf[200];
    const char *why = index_name_invalid(name, buf, sizeof buf);
    if (why) {
        json_t *c = err_cause("invalid_index_name_exception", NULL);
        char msg[600];
        snprintf(msg, sizeof msg, "Invalid index name [%s], %s", name, why);
        json_object_set_new(c, "reason", json_string(msg));
        json_object_set_new(c, "index_uuid", json_string("_na_"));
        json_object_set_new(c, "index", json_string(name));
        set_error(res, 400, c);
        return NULL;
    }
    return store_create(name);
}

/* --------------------------------------------------------------- */
/* the operations                                                  */
/* --------------------------------------------------------------- */
static void store_doc(index_t *ix, item_result_t *res, json_t *src, const char *raw,
                      size_t raw_len, int64_t version, const char *routing, bool deleted)
{
    doc_t *d = doc_new(res->id, strlen(res->id));
    if (!deleted) {
        d->raw = xstrndup(raw, raw_len);
        d->raw_len = raw_len;
        d->src = json_incref(src);
    }
    d->routing = routing ? xstrdup(routing) : NULL;
    d->version = version;
    d->seq_no = ix->next_seq++;
    d->deleted = deleted;
    res->version = version;
    res->seq_no = d->seq_no;
    doc_put(ix, d);
}

static bool check_mapping(index_t *ix, const json_t *src, const char *raw, size_t len,
                          item_result_t *res)
{
    int status;
    json_t *e = mapping_apply(ix, src, raw, len, res->id, &status);
    if (e) {
        set_error(res, status, e);
        return false;
    }
    return true;
}

static void do_index(bulk_op_t *op, index_t *ix, const char *routing, item_result_t *res)
{
    if (op->doc_err) {
        set_error(res, 400, json_incref(op->doc_err));
        return;
    }
    char field[256];
    if (faults_poison(op->doc, op->src, op->src_len, field, sizeof field)) {
        json_t *e = err_cause(flavor_parse_error_type(), NULL);
        char msg[800];
        snprintf(msg, sizeof msg,
                 "[1:2] failed to parse field [%s] in document with id '%s' (esd poison_field fault)",
                 field, res->id);
        json_object_set_new(e, "reason", json_string(msg));
        set_error(res, 400, e);
        return;
    }
    doc_t *cur = doc_find(ix, res->id, strlen(res->id));
    if (!version_checks(op, cur, res) || !check_mapping(ix, op->doc, op->src, op->src_len, res))
        return;
    bool live = cur && !cur->deleted;
    int64_t v = op->vtype != VT_INTERNAL ? op->version : (cur ? cur->version + 1 : 1);
    store_doc(ix, res, op->doc, op->src, op->src_len, v, routing, false);
    res->ok = true;
    res->result = live ? "updated" : "created";
    res->status = live ? 200 : 201;
}

/* Recursive merge, as XContentHelper.update(): objects merge, the rest is
 * replaced.  Returns true when anything changed. */
static bool merge_doc(json_t *dst, const json_t *src)
{
    bool changed = false;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)src, k, v) {
        json_t *old = json_object_get(dst, k);
        if (old && json_is_object(old) && json_is_object(v)) {
            changed |= merge_doc(old, v);
        } else if (!old || !json_equal(old, v)) {
            json_object_set(dst, k, v);
            changed = true;
        }
    }
    return changed;
}

static void store_json(index_t *ix, item_result_t *res, json_t *src, int64_t version,
                       const char *routing)
{
    sb_t s = {NULL, 0, 0};
    sb_json_value(&s, src);
    store_doc(ix, res, src, s.buf, s.len, version, routing, false);
    sb_free(&s);
}

static void do_update(bulk_op_t *op, index_t *ix, const char *routing, item_result_t *res)
{
    const json_t *u = op->upd;
    if (json_object_get(u, "script")) {
        set_errorf(res, 400, "illegal_argument_exception", "esd does not execute scripts; use a partial [doc]");
        return;
    }
    const json_t *pdoc = json_object_get(u, "doc");
    const json_t *upsert = json_object_get(u, "upsert");
    if (!pdoc) {
        set_errorf(res, 400, "action_request_validation_exception", "Validation Failed: 1: script or doc is missing;");
        return;
    }
    if (!json_is_object(pdoc) || (upsert && !json_is_object(upsert))) {
        set_errorf(res, 400, "illegal_argument_exception", "[doc] and [upsert] must be objects");
        return;
    }
    doc_t *cur = doc_find(ix, res->id, strlen(res->id));
    bool live = cur && !cur->deleted;
    if (!live) {
        if (!json_is_true(json_object_get(u, "doc_as_upsert")) && !upsert) {
            set_errorf(res, 404, "document_missing_exception", "[%s]: document missing", res->id);
            return;
        }
        if (!version_checks(op, cur, res))
            return;
        json_t *src = json_deep_copy(json_is_true(json_object_get(u, "doc_as_upsert")) ? pdoc : upsert);
        if (check_mapping(ix, src, NULL, 0, res)) {
            store_json(ix, res, src, cur ? cur->version + 1 : 1, routing);
            res->ok = true;
            res->result = "created";
            res->status = 201;
        }
        json_decref(src);
        return;
    }
    if (!version_checks(op, cur, res))
        return;
    json_t *merged = json_deep_copy(cur->src);
    bool changed = merge_doc(merged, pdoc);
    if (!changed && !json_is_false(json_object_get(u, "detect_noop"))) {
        res->ok = true;
        res->result = "noop";
        res->status = 200;
        res->version = cur->version;
        res->seq_no = cur->seq_no;
    } else if (check_mapping(ix, merged, NULL, 0, res)) {
        store_json(ix, res, merged, cur->version + 1, routing ? routing : cur->routing);
        res->ok = true;
        res->result = "updated";
        res->status = 200;
    }
    json_decref(merged);
}

static void do_delete(bulk_op_t *op, index_t *ix, const char *routing, item_result_t *res)
{
    doc_t *cur = doc_find(ix, res->id, strlen(res->id));
    if (!version_checks(op, cur, res))
        return;
    bool live = cur && !cur->deleted;
    int64_t v = op->vtype != VT_INTERNAL ? op->version : (cur ? cur->version + 1 : 1);
    /* a tombstone keeps the version; a not-found delete still takes a seq_no */
    store_doc(ix, res, NULL, NULL, 0, v, routing, true);
    res->ok = true;
    res->result = live ? "deleted" : "not_found";
    res->status = live ? 200 : 404;
}

/* --------------------------------------------------------------- */
/* privileges and blocks (403 per item)                            */
/* --------------------------------------------------------------- */
/*
 * The auth fault may restrict a user to index patterns: a write elsewhere
 * is refused per item with 403 security_exception, as ES's authorization
 * aborts the item.  A pattern may match the name the item writes to (an
 * index or an alias) or the index it resolves to; the reason names the
 * concrete index when there is one.
 */
static bool write_allowed(const principal_t *who, const char *name, item_result_t *res)
{
    if (principal_may_write(who, name))
        return true;
    json_t *cause = NULL;
    bool missing;
    index_t *ix = resolve_write_target(name, &cause, &missing);
    if (cause)
        json_decref(cause);
    if (ix && principal_may_write(who, ix->name))
        return true;
    set_error(res, 403, principal_denied_cause(who, ix ? ix->name : name));
    return false;
}

/* index.blocks.write / index.blocks.read_only: every write to the index is
 * refused per item with 403 cluster_block_exception, with ES's text. */
static bool write_blocked(const index_t *ix, item_result_t *res)
{
    const char *block = NULL;
    const char *w = index_setting(ix, "index.blocks.write");
    const char *ro = index_setting(ix, "index.blocks.read_only");
    if (ro && !strcmp(ro, "true"))
        block = "FORBIDDEN/5/index read-only (api)";
    else if (w && !strcmp(w, "true"))
        block = "FORBIDDEN/8/index write (api)";
    if (!block)
        return false;
    set_errorf(res, 403, "cluster_block_exception", "index [%s] blocked by: [%s];", ix->name, block);
    return true;
}

/* Executes one op; the caller holds g_store.lock. */
void exec_op(bulk_op_t *op, const char *default_routing, int default_require_alias,
             const principal_t *who, item_result_t *res)
{
    memset(res, 0, sizeof *res);
    res->shards_total = 2;
    if (op->has_index)
        snprintf(res->index, sizeof res->index, "%.*s", (int)op->index.n, op->index.p);
    if (op->has_id)
        res->id = xstrndup(op->id.p, op->id.n);
    else if (op->kind == OP_INDEX || op->kind == OP_CREATE) {
        res->id = xmalloc(21);
        gen_doc_id(res->id);
    }
    if (!op->has_index || !res->index[0]) {
        set_errorf(res, 400, "action_request_validation_exception", "Validation Failed: 1: index is missing;");
        return;
    }
    int rej = faults_item_reject();
    if (rej) {
        set_errorf(res, rej, rej == 429 ? flavor_rejected_type() : "unavailable_shards_exception",
                   "rejected execution of primary operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, primary_operation_bytes=%zu, max_coordinating_and_primary_bytes=107374182] (esd item_reject fault)",
                   op->src_len);
        return;
    }
    if (!validate_op(op, res))
        return;
    /* ingest runs first in ES, before authorization, blocks and auto-create */
    bool ran = false;
    json_t *perr = ingest_apply(op, &ran);
    if (perr) {
        set_error(res, 400, perr);
        return;
    }
    if (!write_allowed(who, res->index, res))
        return;
    int ra = op->require_alias >= 0 ? op->require_alias : default_require_alias;
    index_t *ix = target_index(op, res->index, ra, res);
    if (!ix || write_blocked(ix, res))
        return;
    res->ix = ix;
    snprintf(res->index, sizeof res->index, "%s", ix->name);
    res->shards_total = 1 + index_replicas(ix);
    char *routing = op->has_routing ? xstrndup(op->routing.p, op->routing.n)
                                    : default_routing ? xstrdup(default_routing) : NULL;
    /* a processed source is stored re-serialized, as ES does */
    sb_t ps = {NULL, 0, 0};
    const char *orig = op->src;
    size_t orig_len = op->src_len;
    if (ran && op->doc && (op->kind == OP_INDEX || op->kind == OP_CREATE)) {
        sb_json_value(&ps, op->doc);
        op->src = ps.buf;
        op->src_len = ps.len;
    }
    switch (op->kind) {
    case OP_INDEX:
    case OP_CREATE: do_index(op, ix, routing, res); break;
    case OP_UPDATE: do_update(op, ix, routing, res); break;
    case OP_DELETE: do_delete(op, ix, routing, res); break;
    }
    op->src = orig;
    op->src_len = orig_len;
    sb_free(&ps);
    free(routing);
}

/* --------------------------------------------------------------- */
/* source parsing (outside the lock)                               */
/* --------------------------------------------------------------- */
static void parse_source(bulk_op_t *op)
{
    if (op->kind != OP_INDEX && op->kind != OP_CREATE)
        return;
    json_error_t e;
    const char *p = op->src;
    size_t n = op->src_len;
    while (n && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    if (!n) {
        op->doc_err = err_cause(flavor_parse_error_type(), "failed to parse, document is empty");
        return;
    }
    op->doc = json_parse_precise(op->src, op->src_len,
                                 JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    char msg[400];
    if (!op->doc) {
        snprintf(msg, sizeof msg, "[1:%d] failed to parse: %s", e.column, e.text);
        op->doc_err = err_cause(flavor_parse_error_type(), msg);
        json_object_set_new(op->doc_err, "caused_by", err_cause("x_content_parse_exception", e.text));
    } else if (!json_is_object(op->doc)) {
        op->doc_err = err_cause(flavor_parse_error_type(),
                                "[1:1] failed to parse: Malformed content, must start with an object");
        json_decref(op->doc);
        op->doc = NULL;
    }
}

/* --------------------------------------------------------------- */
/* the endpoint                                                    */
/* --------------------------------------------------------------- */
typedef struct bulk_run {
    req_t *r;
    sb_t items;                  /* the response: HEADER_ROOM bytes, then the items */
    bulk_filter_t *bf;           /* filter_path, applied while writing */
    bool check;                  /* esd_filter_check: also render unfiltered */
    sb_t full;                   /* ... here */
    size_t shown;                /* items written after filtering */
    bool errors;
    int refresh;                 /* 0 none, 1 true, 2 wait_for */
    const char *routing;
    int require_alias;
    const char *path_index;
    const char *pipeline;        /* pipeline= of the URL */
    unsigned counts[600];
    size_t ok_items;
    size_t nitems;
    char **touched;
    size_t ntouched;
    int64_t seq;                 /* discard mode sequence numbers */
} bulk_run_t;

static const char *op_name(enum op_kind k)
{
    static const char *n[] = {"index", "create", "update", "delete"};
    return n[k];
}

static void note_touched(bulk_run_t *br, const char *name)
{
    for (size_t i = 0; i < br->ntouched; i++)
        if (strcmp(br->touched[i], name) == 0)
            return;
    br->touched = xrealloc(br->touched, (br->ntouched + 1) * sizeof(char *));
    br->touched[br->ntouched++] = xstrdup(name);
}

static void account(bulk_run_t *br, const item_result_t *res, enum op_kind kind)
{
    if (!br->bf || br->check) {
        sb_t *s = br->bf ? &br->full : &br->items;
        if (br->nitems)
            sb_putc(s, ',');
        sb_grow(s, 512);
        item_write(s, op_name(kind), res, br->r->compat);
    }
    if (br->bf && bulk_filter_item(br->bf, &br->items, br->shown == 0, kind, res))
        br->shown++;
    br->nitems++;
    if (res->error)
        br->errors = true;
    if (res->status > 0 && res->status < 600)
        br->counts[res->status]++;
    if (res->ok)
        br->ok_items++;
}

static void default_index(bulk_run_t *br, bulk_op_t *op)
{
    if (!op->has_index && br->path_index) {
        op->index.p = br->path_index;
        op->index.n = strlen(br->path_index);
        op->has_index = true;
    }
    if (!op->has_pipeline && br->pipeline) {   /* the action line's pipeline wins */
        op->pipeline.p = br->pipeline;
        op->pipeline.n = strlen(br->pipeline);
        op->has_pipeline = true;
    }
}

/* Discard mode: every parsed op immediately becomes a response item. */
static void discard_op(void *ctx, bulk_req_t *b, bulk_op_t *op)
{
    (void)b;
    bulk_run_t *br = ctx;
    default_index(br, op);
    item_result_t res;
    memset(&res, 0, sizeof res);
    res.shards_total = 2;
    if (op->has_index)
        snprintf(res.index, sizeof res.index, "%.*s", (int)op->index.n, op->index.p);
    char idbuf[21];
    if (op->has_id) {
        res.id = xstrndup(op->id.p, op->id.n);
    } else {
        gen_doc_id(idbuf);
        res.id = xstrdup(idbuf);
    }
    int rej = faults_item_reject();
    char field[256];
    if (!res.index[0]) {
        set_errorf(&res, 400, "action_request_validation_exception", "Validation Failed: 1: index is missing;");
    } else if (rej) {
        set_errorf(&res, rej, rej == 429 ? flavor_rejected_type() : "unavailable_shards_exception",
                   "rejected execution of primary operation (esd item_reject fault)");
    } else if (!validate_op(op, &res) || !discard_pipeline_ok(op, &res)) {
        /* error set */
    } else if (!principal_may_write(br->r->who, res.index)) {
        set_error(&res, 403, principal_denied_cause(br->r->who, res.index));
    } else if (faults_has_poison() && op->src && (op->kind == OP_INDEX || op->kind == OP_CREATE)) {
        parse_source(op);
        if (op->doc_err)
            set_error(&res, 400, json_incref(op->doc_err));
        else if (faults_poison(op->doc, op->src, op->src_len, field, sizeof field))
            set_errorf(&res, 400, flavor_parse_error_type(),
                       "[1:2] failed to parse field [%s] in document with id '%s' (esd poison_field fault)",
                       field, res.id);
        if (op->doc) json_decref(op->doc);
        if (op->doc_err) json_decref(op->doc_err);
        op->doc = op->doc_err = NULL;
    }
    if (!res.error) {
        res.ok = true;
        res.version = op->vtype != VT_INTERNAL ? op->version : 1;
        res.seq_no = br->seq++;
        switch (op->kind) {
        case OP_INDEX:
        case OP_CREATE: res.result = "created"; res.status = 201; break;
        case OP_UPDATE: res.result = "updated"; res.status = 200; break;
        case OP_DELETE: res.result = "deleted"; res.status = 200; break;
        }
        res.forced_refresh = br->refresh == 1;
    }
    account(br, &res, op->kind);
    item_result_free(&res);
}

static void exec_chunk(bulk_run_t *br, bulk_req_t *b, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        default_index(br, &b->ops[i]);
        parse_source(&b->ops[i]);
    }
    pthread_mutex_lock(&g_store.lock);
    for (size_t i = from; i < to; i++) {
        item_result_t res;
        exec_op(&b->ops[i], br->routing, br->require_alias, br->r->who, &res);
        if (res.ok && res.ix) {
            note_touched(br, res.ix->name);
            res.forced_refresh = br->refresh == 1;
        }
        account(br, &res, b->ops[i].kind);
        item_result_free(&res);
    }
    pthread_mutex_unlock(&g_store.lock);
    for (size_t i = from; i < to; i++) {
        if (b->ops[i].doc)
            json_decref(b->ops[i].doc);
        b->ops[i].doc = NULL;
    }
}

/* refresh=true refreshes at once; wait_for waits for the periodic refresh,
 * or refreshes at once when no periodic refresh would ever come. */
static void refresh_locked(const char *name, int mode)
{
    index_t *ix = store_find(name);
    if (!ix)
        return;
    if (mode == 1 || !g_cfg.refresh_timer || ix->refresh_ms < 0) {
        index_refresh(ix);
        return;
    }
    uint64_t want = ix->writes;
    int64_t deadline = mono_ms() + 60000;
    while ((ix = store_find(name)) && ix->refreshed_writes < want && mono_ms() < deadline &&
           !g_stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g_store.refreshed, &g_store.lock, &ts);
    }
}

void refresh_after_write(const char *index, int mode)
{
    if (!mode)
        return;
    pthread_mutex_lock(&g_store.lock);
    refresh_locked(index, mode);
    pthread_mutex_unlock(&g_store.lock);
}

static void apply_refresh(bulk_run_t *br)
{
    if (!br->refresh || !br->ntouched)
        return;
    pthread_mutex_lock(&g_store.lock);
    for (size_t i = 0; i < br->ntouched; i++)
        refresh_locked(br->touched[i], br->refresh);
    pthread_mutex_unlock(&g_store.lock);
}

static int parse_refresh(const char *v, bool *ok)
{
    *ok = true;
    if (!v || !strcmp(v, "false"))
        return 0;
    if (!*v || !strcmp(v, "true"))
        return 1;
    if (!strcmp(v, "wait_for"))
        return 2;
    *ok = false;
    return 0;
}

static void bulk_reject_response(resp_t *rs, int status)
{
    if (status == 502) {
        sb_t s;
        sb_init(&s, 256);
        sb_puts(&s, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
                    "</body>\r\n</html>\r\n");
        resp_sb(rs, 502, &s);
        rs->ctype = "text/html";
        rs->no_filter = true;
    } else if (status == 429) {
        resp_error(rs, 429, flavor_rejected_type(),
                   "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
                   "replica_bytes=0, all_bytes=0, coordinating_operation_bytes=0, "
                   "max_coordinating_and_primary_bytes=107374182] (esd bulk_reject fault)");
    } else if (status == 503) {
        resp_error(rs, 503, "cluster_block_exception",
                   "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized]; (esd bulk_reject fault)");
    } else {
        resp_error(rs, status, "exception", "esd injected failure (bulk_reject fault, status %d)", status);
    }
}

/* The huge_body fault: "[{},{},...]" (or {"items":[{},...]}) of exactly
 * bytes bytes. */
static void huge_body_response(resp_t *rs, int status, size_t bytes, bool items_shape)
{
    resp_huge(rs, status, bytes, items_shape ? "{\"items\":[" : "[", items_shape ? "]}" : "]");
}

/* The items were rendered after HEADER_ROOM reserved bytes; the header goes
 * there, padded with JSON whitespace, so a response of tens of megabytes is
 * never copied again. */
static void finish_unfiltered(sb_t *s, bool errors, long long took)
{
    char head[HEADER_ROOM + 1];
    int n = snprintf(head, sizeof head, "{\"errors\":%s,\"took\":%lld,\"items\":[",
                     errors ? "true" : "false", took);
    memcpy(s->buf, head, (size_t)n);
    memset(s->buf + n, ' ', HEADER_ROOM - (size_t)n);
    sb_append(s, "]}", 2);
}

/* esd_filter_check: {"fast": <this path's body>, "generic": <the generic
 * filter applied to the unfiltered body>}, both as JSON strings, so that a
 * test can compare them byte for byte. */
static void check_body(bulk_run_t *br, long long took)
{
    finish_unfiltered(&br->full, br->errors, took);
    sb_t generic = {NULL, 0, 0};
    if (!filter_path_render(br->full.buf, br->full.len, req_arg(br->r, "filter_path"), &generic))
        sb_append(&generic, br->full.buf, br->full.len);
    sb_t out;
    sb_init(&out, br->items.len + generic.len + 64);
    sb_puts(&out, "{\"fast\":");
    sb_json_str(&out, br->items.buf, br->items.len);
    sb_puts(&out, ",\"generic\":");
    sb_json_str(&out, generic.buf, generic.len);
    sb_putc(&out, '}');
    sb_free(&generic);
    sb_free(&br->items);
    br->items = out;
}

static void finish_response(bulk_run_t *br, resp_t *rs, int64_t t0)
{
    long long took = (long long)(mono_ms() - t0);
    if (!br->bf) {
        finish_unfiltered(&br->items, br->errors, took);
    } else {
        bulk_filter_finish(br->bf, &br->items, HEADER_ROOM, br->shown, br->errors, took);
        if (br->check)
            check_body(br, took);
        rs->no_filter = true;   /* already filtered */
    }
    resp_sb(rs, 200, &br->items);
    rs->items = (int)br->nitems;
}

static void setup_filter(bulk_run_t *br)
{
    const char *fp = req_arg(br->r, "filter_path");
    if (!fp || !*fp)
        return;
    br->bf = bulk_filter_new(fp, br->r->compat);
    br->check = req_arg(br->r, "esd_filter_check") != NULL;
    if (br->check) {
        sb_init(&br->full, 4096 + HEADER_ROOM);
        memset(br->full.buf, ' ', HEADER_ROOM);
        br->full.len = HEADER_ROOM;
    }
}

static void bulk_run_free(bulk_run_t *br)
{
    sb_free(&br->items);
    sb_free(&br->full);
    bulk_filter_free(br->bf);
    for (size_t i = 0; i < br->ntouched; i++)
        free(br->touched[i]);
    free(br->touched);
}

void handle_bulk(req_t *r, resp_t *rs, const char *path_index)
{
    int64_t t0 = mono_ms();
    bulk_run_t br;
    memset(&br, 0, sizeof br);
    br.r = r;
    br.path_index = path_index;
    bool ok;
    br.refresh = parse_refresh(req_arg(r, "refresh"), &ok);
    if (!ok) {
        resp_error(rs, 400, "illegal_argument_exception", "Unknown value for refresh: [%s].", req_arg(r, "refresh"));
        return;
    }
    br.routing = req_arg(r, "routing");
    br.pipeline = req_arg(r, "pipeline");
    br.require_alias = req_arg_bool(r, "require_alias", false) ? 1 : 0;
    int rej = faults_bulk_reject();
    if (rej) {
        stats_rejected();
        bulk_reject_response(rs, rej);
        return;
    }
    size_t huge_bytes;
    bool huge_items;
    int huge = faults_huge_body(&huge_bytes, &huge_items);
    if (huge) {
        stats_rejected();
        huge_body_response(rs, huge, huge_bytes, huge_items);
        return;
    }
    bulk_req_t b;
    memset(&b, 0, sizeof b);
    bool discard = g_cfg.discard;
    /* reuse the connection's spare buffer: fresh memory of this size would be
     * page-faulted in on every request */
    if (r->spare && r->spare->buf) {
        br.items = *r->spare;
        memset(r->spare, 0, sizeof *r->spare);
        br.items.len = 0;
    }
    sb_grow(&br.items, (discard ? r->body_len / 3 : 4096) + HEADER_ROOM);
    memset(br.items.buf, ' ', HEADER_ROOM);
    br.items.len = HEADER_ROOM;
    setup_filter(&br);
    if (discard) {
        b.on_op = discard_op;
        b.ctx = &br;
    } else {
        b.parse_updates = true;
    }
    json_t *err = NULL;
    if (!bulk_parse(r->body, r->body_len, r->compat, &b, &err)) {
        resp_error_obj(rs, 400, err);
        bulk_run_free(&br);
        bulk_req_free(&b);
        return;
    }
    for (size_t i = 0; i < b.n; i += CHUNK)
        exec_chunk(&br, &b, i, i + CHUNK < b.n ? i + CHUNK : b.n);
    apply_refresh(&br);
    finish_response(&br, rs, t0);
    stats_bulk(now_ms(), br.nitems, r->body_len, br.ok_items);
    stats_items(br.counts);
    bulk_run_free(&br);
    bulk_req_free(&b);
}
