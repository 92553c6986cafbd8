/*
 * Running ingest pipelines (see pipelines.c for their definitions): the
 * field paths, processors and the choice of pipelines for a write, with
 * the rules and error texts of ES's IngestDocument, processors and
 * IngestService.
 */
#include "pipelines.h"

#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

/* --------------------------------------------------------------- */
/* helpers                                                         */
/* --------------------------------------------------------------- */
const char *java_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "java.util.HashMap";
    case JSON_ARRAY: return "java.util.ArrayList";
    case JSON_STRING: return "java.lang.String";
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        return i >= INT_MIN && i <= INT_MAX ? "java.lang.Integer" : "java.lang.Long";
    }
    case JSON_REAL: return "java.lang.Double";
    case JSON_TRUE:
    case JSON_FALSE: return "java.lang.Boolean";
    default: return "null";
    }
}


static json_t *ierr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *ierr(const char *fmt, ...)
{
    char msg[1500];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_cause("illegal_argument_exception", msg);
}


/* Java's Integer.parseInt */
static bool parse_int(const char *s, long long *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!*p)
        return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return false;
    long long v = 0;
    for (; *p; p++) {
        v = v * 10 + (*p - '0');
        if (v > (long long)INT_MAX + 1)
            return false;
    }
    v = s[0] == '-' ? -v : v;
    if (v > INT_MAX || v < INT_MIN)
        return false;
    *out = v;
    return true;
}


/* --------------------------------------------------------------- */
/* field access, as IngestDocument                                 */
/* --------------------------------------------------------------- */
/* One step down; NULL with *err set when it cannot be taken. */
static json_t *resolve(json_t *ctx, const char *el, const char *path, json_t **err)
{
    if (!ctx || json_is_null(ctx)) {
        *err = ierr("cannot resolve [%s] from null as part of path [%s]", el, path);
        return NULL;
    }
    if (json_is_object(ctx)) {
        json_t *v = json_object_get(ctx, el);
        if (!v)
            *err = ierr("field [%s] not present as part of path [%s]", el, path);
        return v;
    }
    if (json_is_array(ctx)) {
        long long i;
        if (!parse_int(el, &i)) {
            *err = ierr("[%s] is not an integer, cannot be used as an index as part of path [%s]", el, path);
            return NULL;
        }
        if (i < 0 || (size_t)i >= json_array_size(ctx)) {
            *err = ierr("[%lld] is out of bounds for array with length [%zu] as part of path [%s]", i,
                        json_array_size(ctx), path);
            return NULL;
        }
        return json_array_get(ctx, (size_t)i);
    }
    *err = ierr("cannot resolve [%s] from object of type [%s] as part of path [%s]", el, java_type(ctx), path);
    return NULL;
}

static bool has_field(json_t *root, const fpath_t *f)
{
    json_t *ctx = root, *err = NULL;
    for (int i = 0; i < f->nel && ctx; i++) {
        ctx = resolve(ctx, f->el[i], f->path, &err);
        if (err) {
            json_decref(err);
            return false;
        }
    }
    return ctx != NULL;
}

/* The value (borrowed; json null for a null field), or NULL: missing with
 * ignore_missing, or an error in *err. */
static json_t *get_field(json_t *root, const fpath_t *f, bool ignore_missing, json_t **err)
{
    json_t *ctx = root;
    for (int i = 0; i < f->nel; i++) {
        json_t *e = NULL;
        ctx = resolve(ctx, f->el[i], f->path, &e);
        if (e) {
            if (ignore_missing) {
                json_decref(e);
            } else {
                *err = e;
            }
            return NULL;
        }
    }
    return ctx;
}

/* Sets the field to v (stolen), creating missing objects on the way. */
static json_t *set_field(json_t *root, const fpath_t *f, json_t *v)
{
    json_t *ctx = root;
    const char *path = f->path;
    for (int i = 0; i < f->nel - 1; i++) {
        const char *el = f->el[i];
        if (json_is_null(ctx)) {
            json_decref(v);
            return ierr("cannot resolve [%s] from null as part of path [%s]", el, path);
        }
        if (json_is_object(ctx)) {
            json_t *next = json_object_get(ctx, el);
            if (!next) {
                next = json_object();
                json_object_set_new(ctx, el, next);
            }
            ctx = next;
        } else if (json_is_array(ctx)) {
            json_t *err = NULL;
            ctx = resolve(ctx, el, path, &err);
            if (err) {
                json_decref(v);
                return err;
            }
        } else {
            json_decref(v);
            return ierr("cannot resolve [%s] from object of type [%s] as part of path [%s]", el,
                        java_type(ctx), path);
        }
    }
    const char *leaf = f->el[f->nel - 1];
    if (json_is_null(ctx)) {
        json_decref(v);
        return ierr("cannot set [%s] with null parent as part of path [%s]", leaf, path);
    }
    if (json_is_object(ctx)) {
        json_object_set_new(ctx, leaf, v);
        return NULL;
    }
    if (json_is_array(ctx)) {
        long long i;
        json_t *err = NULL;
        if (!parse_int(leaf, &i))
            err = ierr("[%s] is not an integer, cannot be used as an index as part of path [%s]", leaf, path);
        else if (i < 0 || (size_t)i >= json_array_size(ctx))
            err = ierr("[%lld] is out of bounds for array with length [%zu] as part of path [%s]", i,
                       json_array_size(ctx), path);
        if (err) {
            json_decref(v);
            return err;
        }
        json_array_set_new(ctx, (size_t)i, v);
        return NULL;
    }
    json_decref(v);
    return ierr("cannot set [%s] with parent object of type [%s] as part of path [%s]", leaf,
                java_type(ctx), path);
}

static json_t *remove_field(json_t *root, const fpath_t *f)
{
    json_t *ctx = root, *err = NULL;
    const char *path = f->path;
    for (int i = 0; i < f->nel - 1; i++) {
        ctx = resolve(ctx, f->el[i], path, &err);
        if (err)
            return err;
    }
    const char *leaf = f->el[f->nel - 1];
    if (json_is_null(ctx))
        return ierr("cannot remove [%s] from null as part of path [%s]", leaf, path);
    if (json_is_object(ctx)) {
        if (json_object_del(ctx, leaf) == 0)
            return NULL;
        return ierr("field [%s] not present as part of path [%s]", leaf, path);
    }
    if (json_is_array(ctx)) {
        long long i;
        if (!parse_int(leaf, &i))
            return ierr("[%s] is not an integer, cannot be used as an index as part of path [%s]", leaf, path);
        if (i < 0 || (size_t)i >= json_array_size(ctx))
            return ierr("[%lld] is out of bounds for array with length [%zu] as part of path [%s]", i,
                        json_array_size(ctx), path);
        json_array_remove(ctx, (size_t)i);
        return NULL;
    }
    return ierr("cannot remove [%s] from object of type [%s] as part of path [%s]", leaf, java_type(ctx), path);
}

/* --------------------------------------------------------------- */
/* case mapping (Java's toLowerCase/toUpperCase(Locale.ROOT), one  */
/* code point to one code point)                                   */
/* --------------------------------------------------------------- */
static pthread_once_t g_loc_once = PTHREAD_ONCE_INIT;
static locale_t g_loc;

static void loc_init(void)
{
    g_loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

static unsigned map_cp(unsigned cp, bool upper)
{
    if (g_loc)
        return (unsigned)(upper ? towupper_l((wint_t)cp, g_loc) : towlower_l((wint_t)cp, g_loc));
    if (upper && cp >= 'a' && cp <= 'z')
        return cp - 32;
    if (!upper && cp >= 'A' && cp <= 'Z')
        return cp + 32;
    return cp;
}

static json_t *recase(const json_t *str, bool upper)
{
    pthread_once(&g_loc_once, loc_init);
    const unsigned char *s = (const unsigned char *)json_string_value(str);
    size_t n = json_string_length(str);
    sb_t out;
    sb_init(&out, n + 8);
    for (size_t i = 0; i < n;) {
        unsigned cp = s[i];
        int len = 1;
        if (cp >= 0xf0 && i + 3 < n) {
            cp = ((cp & 0x07u) << 18) | ((s[i + 1] & 0x3fu) << 12) | ((s[i + 2] & 0x3fu) << 6) | (s[i + 3] & 0x3fu);
            len = 4;
        } else if (cp >= 0xe0 && i + 2 < n) {
            cp = ((cp & 0x0fu) << 12) | ((s[i + 1] & 0x3fu) << 6) | (s[i + 2] & 0x3fu);
            len = 3;
        } else if (cp >= 0xc0 && i + 1 < n) {
            cp = ((cp & 0x1fu) << 6) | (s[i + 1] & 0x3fu);
            len = 2;
        }
        unsigned m = map_cp(cp, upper);
        char buf[4];
        int k = 0;
        if (m < 0x80) {
            buf[k++] = (char)m;
        } else if (m < 0x800) {
            buf[k++] = (char)(0xc0 | (m >> 6));
            buf[k++] = (char)(0x80 | (m & 0x3f));
        } else if (m < 0x10000) {
            buf[k++] = (char)(0xe0 | (m >> 12));
            buf[k++] = (char)(0x80 | ((m >> 6) & 0x3f));
            buf[k++] = (char)(0x80 | (m & 0x3f));
        } else {
            buf[k++] = (char)(0xf0 | (m >> 18));
            buf[k++] = (char)(0x80 | ((m >> 12) & 0x3f));
            buf[k++] = (char)(0x80 | ((m >> 6) & 0x3f));
            buf[k++] = (char)(0x80 | (m & 0x3f));
        }
        sb_append(&out, buf, (size_t)k);
        i += (size_t)len;
    }
    json_t *r = json_stringn(out.buf ? out.buf : "", out.len);
    sb_free(&out);
    return r;
}

/* --------------------------------------------------------------- */
/* processors                                                      */
/* --------------------------------------------------------------- */
static bool empty_value(const json_t *v)
{
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

static json_t *run_set(const proc_t *p, json_t *doc)
{
    const fpath_t *f = &p->fields[0];
    if (!p->override && has_field(doc, f)) {
        json_t *err = NULL, *cur = get_field(doc, f, false, &err);
        if (err)
            return err;
        if (!json_is_null(cur))
            return NULL;
    }
    json_t *v;
    if (p->has_copy_from) {
        json_t *err = NULL;
        json_t *src = get_field(doc, &p->copy_from, p->ignore_empty_value, &err);
        if (err)
            return err;
        v = src ? json_deep_copy(src) : json_null();
    } else {
        v = json_deep_copy(p->value);
    }
    if (p->ignore_empty_value && empty_value(v)) {
        json_decref(v);
        return NULL;
    }
    return set_field(doc, f, v);
}

static json_t *run_remove(const proc_t *p, json_t *doc)
{
    for (int i = 0; i < p->nfields; i++) {
        if (p->ignore_missing && !has_field(doc, &p->fields[i]))
            continue;
        json_t *err = remove_field(doc, &p->fields[i]);
        if (err)
            return err;
    }
    return NULL;
}

static json_t *run_rename(const proc_t *p, json_t *doc)
{
    const fpath_t *f = &p->fields[0];
    if (!has_field(doc, f))
        return p->ignore_missing ? NULL : ierr("field [%s] doesn't exist", f->path);
    if (has_field(doc, &p->target) && !p->override)
        return ierr("field [%s] already exists", p->target.path);
    json_t *err = NULL;
    json_t *v = json_incref(get_field(doc, f, false, &err));
    if (err)
        return err;
    if ((err = remove_field(doc, f))) {
        json_decref(v);
        return err;
    }
    if ((err = set_field(doc, &p->target, json_incref(v)))) {
        json_t *e2 = set_field(doc, f, json_incref(v));   /* put it back, as ES does */
        if (e2)
            json_decref(e2);
    }
    json_decref(v);
    return err;
}

static void value_text(const json_t *v, char *buf, size_t n)
{
    if (json_is_string(v)) {
        snprintf(buf, n, "%s", json_string_value(v));
        return;
    }
    sb_t s = {NULL, 0, 0};
    sb_json_value(&s, v);
    snprintf(buf, n, "%s", s.buf);
    sb_free(&s);
}

static json_t *run_case(const proc_t *p, json_t *doc)
{
    const fpath_t *f = &p->fields[0];
    bool upper = p->type == P_UPPERCASE;
    json_t *err = NULL;
    json_t *v = get_field(doc, f, p->ignore_missing, &err);
    if (err)
        return err;
    if ((!v || json_is_null(v)) && p->ignore_missing)
        return NULL;
    if (!v || json_is_null(v))
        return ierr("field [%s] is null, cannot process it.", f->path);
    json_t *nv;
    if (json_is_array(v)) {
        nv = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (!json_is_string(x)) {
                char buf[256];
                value_text(x, buf, sizeof buf);
                json_decref(nv);
                return ierr("value [%s] of type [%s] in list field [%s] cannot be cast to [java.lang.String]",
                            buf, java_type(x), f->path);
            }
            json_array_append_new(nv, recase(x, upper));
        }
    } else if (json_is_string(v)) {
        nv = recase(v, upper);
    } else {
        return ierr("field [%s] of type [%s] cannot be cast to [java.lang.String]", f->path, java_type(v));
    }
    return set_field(doc, p->has_target ? &p->target : f, nv);
}

json_t *pipeline_run(const pipeline_t *pl, json_t *doc)
{
    for (int i = 0; i < pl->nprocs; i++) {
        const proc_t *p = &pl->procs[i];
        json_t *err = NULL;
        switch (p->type) {
        case P_SET: err = run_set(p, doc); break;
        case P_REMOVE: err = run_remove(p, doc); break;
        case P_RENAME: err = run_rename(p, doc); break;
        case P_LOWERCASE:
        case P_UPPERCASE: err = run_case(p, doc); break;
        }
        if (err && p->ignore_failure) {
            json_decref(err);
            err = NULL;
        }
        if (err)
            return err;
    }
    return NULL;
}

/* --------------------------------------------------------------- */
/* choosing the pipelines of a write (caller holds g_store.lock)   */
/* --------------------------------------------------------------- */
static bool is_none(const char *id, size_t n)
{
    return n == 5 && !memcmp(id, "_none", 5);
}

static json_t *run_named(const char *id, size_t n, json_t *doc)
{
    pipeline_t *pl = pipeline_find(id, n);
    if (!pl)
        return ierr("pipeline with id [%.*s] does not exist", (int)n, id);
    return pipeline_run(pl, doc);
}

/*
 * The document a pipeline processes, as TransportBulkAction's
 * getIndexWriteRequest: the source of index/create; for an update, the
 * partial doc when doc_as_upsert (which no explicit pipeline reaches, only
 * the index's default pipeline), else the upsert document; nothing for a
 * delete or a plain update.  The explicit pipeline (action line, else the
 * URL's pipeline=) replaces the index's default_pipeline, "_none" meaning
 * none; index.final_pipeline runs after either.  The index's settings are
 * those of the existing write index of the target: no index templates,
 * so an index created by this write has none.
 */
json_t *ingest_apply(bulk_op_t *op, bool *ran)
{
    *ran = false;
    json_t *doc = NULL;
    bool explicit_ok = true;
    if (op->kind == OP_INDEX || op->kind == OP_CREATE) {
        doc = op->doc;
    } else if (op->kind == OP_UPDATE && op->upd) {
        if (json_is_true(json_object_get(op->upd, "doc_as_upsert"))) {
            doc = json_object_get(op->upd, "doc");
            explicit_ok = false;
        } else {
            doc = json_object_get(op->upd, "upsert");
        }
    }
    if (!json_is_object(doc))
        return NULL;
    index_t *ix = NULL;
    if (op->has_index && op->index.n && op->index.n < 256) {   /* longer: no such index */
        char name[256];
        memcpy(name, op->index.p, op->index.n);
        name[op->index.n] = '\0';
        json_t *cause = NULL;
        bool missing;
        ix = resolve_write_target(name, &cause, &missing);
        if (cause)
            json_decref(cause);
    }
    const char *pid = NULL;
    size_t pn = 0;
    if (explicit_ok && op->has_pipeline) {
        pid = op->pipeline.p;
        pn = op->pipeline.n;
    } else if (ix && (pid = index_setting(ix, "index.default_pipeline"))) {
        pn = strlen(pid);
    }
    json_t *err = NULL;
    if (pid && !is_none(pid, pn)) {
        if ((err = run_named(pid, pn, doc)))
            return err;
        *ran = true;
    }
    const char *fin = ix ? index_setting(ix, "index.final_pipeline") : NULL;
    if (fin && !is_none(fin, strlen(fin))) {
        if ((err = run_named(fin, strlen(fin), doc)))
            return err;
        *ran = true;
    }
    return NULL;
}

