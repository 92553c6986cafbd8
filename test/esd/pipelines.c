/*
 * Ingest pipelines: PUT/GET/DELETE /_ingest/pipeline/{id}, and running a
 * pipeline over an index/create source (or an update's upsert document)
 * before the write, as Elasticsearch's IngestService does.
 *
 * Processors: set, remove, rename, lowercase, uppercase, with the common
 * options tag, description and ignore_failure.  Field paths are dotted
 * paths into objects, with integer elements indexing arrays, and an
 * optional "_source." prefix, resolved with the rules and error texts of
 * ES's IngestDocument.  Conditions (if), on_failure, mustache templates and
 * ingest metadata fields (_index, _id, _ingest.*, ...) are refused when the
 * pipeline is stored, with a 400 naming what esd does not support.
 *
 * The registry is guarded by g_store.lock, so that a bulk executing under
 * that lock sees one consistent set of pipelines.
 */
#include "esd.h"

#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

typedef enum { P_SET, P_REMOVE, P_RENAME, P_LOWERCASE, P_UPPERCASE } ptype_t;

static const char *ptype_name[] = {"set", "remove", "rename", "lowercase", "uppercase"};

typedef struct fpath {
    char *path;                  /* as configured, for messages */
    char **el;                   /* elements below the source root */
    int nel;
} fpath_t;

typedef struct proc {
    ptype_t type;
    bool ignore_failure, ignore_missing, override, ignore_empty_value;
    fpath_t *fields;             /* remove: several; the others: one */
    int nfields;
    fpath_t target;              /* rename / lowercase / uppercase target_field */
    bool has_target;
    fpath_t copy_from;           /* set */
    bool has_copy_from;
    json_t *value;               /* set */
} proc_t;

struct pipeline {
    char *id;
    json_t *def;                 /* the definition as it was PUT */
    proc_t *procs;
    int nprocs;
};

static pipeline_t **g_pipes;
static size_t g_npipes;

/* --------------------------------------------------------------- */
/* helpers                                                         */
/* --------------------------------------------------------------- */
/* The Java class ES names in its messages for a parsed JSON value. */
static const char *jtype(const json_t *v)
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

/* A configuration error, as ConfigurationUtils.newConfigurationException:
 * "[property] reason" with processor_type / processor_tag / property_name. */
static json_t *cerr(const char *ptype, const char *tag, const char *prop, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static json_t *cerr(const char *ptype, const char *tag, const char *prop, const char *fmt, ...)
{
    char msg[1200], full[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (prop)
        snprintf(full, sizeof full, "[%s] %s", prop, msg);
    else
        snprintf(full, sizeof full, "%s", msg);
    json_t *c = err_cause("parse_exception", full);
    if (prop)
        json_object_set_new(c, "property_name", json_string(prop));
    if (ptype)
        json_object_set_new(c, "processor_type", json_string(ptype));
    if (tag)
        json_object_set_new(c, "processor_tag", json_string(tag));
    return c;
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

static void fpath_free(fpath_t *f)
{
    for (int i = 0; i < f->nel; i++)
        free(f->el[i]);
    free(f->el);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* Ingest metadata lives next to the source in ES (ctx._index, ...); esd
 * keeps none of it, so a pipeline naming it is refused. */
static bool is_metadata(const char *first)
{
    static const char *m[] = {"_index", "_id", "_routing", "_version", "_version_type",
                              "_if_seq_no", "_if_primary_term", "_dynamic_templates", "_ingest",
                              NULL};
    for (int i = 0; m[i]; i++)
        if (!strcmp(first, m[i]))
            return true;
    return false;
}

static json_t *fpath_compile(const char *ptype, const char *tag, const char *prop, const char *s,
                             fpath_t *out)
{
    memset(out, 0, sizeof *out);
    if (strstr(s, "{{"))
        return cerr(ptype, tag, prop, "esd does not support mustache templates in field names [%s]", s);
    const char *p = s;
    if (!strncmp(p, "_source.", 8))
        p += 8;
    if (!*p)
        return cerr(ptype, tag, prop, "path [%s] is not valid", s);
    out->path = xstrdup(s);
    const char *q = p;
    for (;;) {
        const char *dot = strchr(q, '.');
        size_t n = dot ? (size_t)(dot - q) : strlen(q);
        out->el = xrealloc(out->el, (size_t)(out->nel + 1) * sizeof(char *));
        out->el[out->nel++] = xstrndup(q, n);
        if (!dot)
            break;
        q = dot + 1;
    }
    if (p == s && is_metadata(out->el[0])) {
        json_t *c = cerr(ptype, tag, prop,
                         "esd does not support ingest metadata fields in pipelines [%s]", s);
        fpath_free(out);
        return c;
    }
    return NULL;
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
    *err = ierr("cannot resolve [%s] from object of type [%s] as part of path [%s]", el, jtype(ctx), path);
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
                        jtype(ctx), path);
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
                jtype(ctx), path);
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
    return ierr("cannot remove [%s] from object of type [%s] as part of path [%s]", leaf, jtype(ctx), path);
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
                            buf, jtype(x), f->path);
            }
            json_array_append_new(nv, recase(x, upper));
        }
    } else if (json_is_string(v)) {
        nv = recase(v, upper);
    } else {
        return ierr("field [%s] of type [%s] cannot be cast to [java.lang.String]", f->path, jtype(v));
    }
    return set_field(doc, p->has_target ? &p->target : f, nv);
}

/* Runs the processors in order on doc (changed in place); NULL or the
 * failure (owned). */
static json_t *pipeline_run(const pipeline_t *pl, json_t *doc)
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
/* parsing a definition                                            */
/* --------------------------------------------------------------- */
static void proc_free(proc_t *p)
{
    for (int i = 0; i < p->nfields; i++)
        fpath_free(&p->fields[i]);
    free(p->fields);
    fpath_free(&p->target);
    fpath_free(&p->copy_from);
    if (p->value)
        json_decref(p->value);
}

static void pipeline_free(pipeline_t *pl)
{
    for (int i = 0; i < pl->nprocs; i++)
        proc_free(&pl->procs[i]);
    free(pl->procs);
    free(pl->id);
    if (pl->def)
        json_decref(pl->def);
    free(pl);
}

/* config is a copy: each option read is deleted, what is left is unknown */
typedef struct pctx {
    const char *type, *tag;
    json_t *cfg;
} pctx_t;

static json_t *opt_string(pctx_t *c, const char *key, bool required, const char **out)
{
    json_t *v = json_object_get(c->cfg, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return required ? cerr(c->type, c->tag, key, "required property is missing") : NULL;
    if (!json_is_string(v))
        return cerr(c->type, c->tag, key, "property isn't a string, but of type [%s]", jtype(v));
    *out = json_string_value(v);
    return NULL;
}

static json_t *opt_bool(pctx_t *c, const char *key, bool dflt, bool *out)
{
    json_t *v = json_object_get(c->cfg, key);
    *out = dflt;
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_boolean(v))
        return cerr(c->type, c->tag, key, "property isn't a boolean, but of type [%s]", jtype(v));
    *out = json_is_true(v);
    return NULL;
}

static bool has_template(const json_t *v)
{
    if (json_is_string(v))
        return strstr(json_string_value(v), "{{") != NULL;
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)v, i, x) if (has_template(x)) return true;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) if (has_template(x)) return true;
    }
    return false;
}

static json_t *one_field(pctx_t *c, const char *key, bool required, fpath_t *out, bool *has)
{
    const char *s;
    json_t *e = opt_string(c, key, required, &s);
    if (e || !s)
        return e;
    if ((e = fpath_compile(c->type, c->tag, key, s, out)))
        return e;
    if (has)
        *has = true;
    return NULL;
}

static json_t *parse_processor(const char *type, json_t *cfg_in, proc_t *p)
{
    memset(p, 0, sizeof *p);
    if (!json_is_object(cfg_in))
        return cerr(type, NULL, NULL, "property isn't a map, but of type [%s]", jtype(cfg_in));
    int t = -1;
    for (int i = 0; i < 5; i++)
        if (!strcmp(type, ptype_name[i]))
            t = i;
    const char *tag = json_string_value(json_object_get(cfg_in, "tag"));
    if (t < 0)
        return cerr(type, tag, NULL, "No processor type exists with name [%s]", type);
    p->type = (ptype_t)t;
    pctx_t c = {type, tag, json_copy(cfg_in)};
    json_t *e = NULL;
    const char *dummy;
    if ((e = opt_bool(&c, "ignore_failure", false, &p->ignore_failure)))
        goto out;
    if (json_object_get(c.cfg, "on_failure")) {
        e = cerr(type, tag, "on_failure", "esd does not support on_failure handlers");
        goto out;
    }
    if ((e = opt_string(&c, "tag", false, &dummy)) || (e = opt_string(&c, "description", false, &dummy)))
        goto out;
    if (json_object_get(c.cfg, "if")) {
        e = cerr(type, tag, "if", "esd does not support processor conditions (scripts)");
        goto out;
    }
    const char *common[] = {"ignore_failure", "on_failure", "tag", "description", "if", NULL};
    for (int i = 0; common[i]; i++)
        json_object_del(c.cfg, common[i]);
    const char *used[8] = {NULL};
    int nused = 0;
    switch (p->type) {
    case P_SET: {
        p->nfields = 1;
        p->fields = xcalloc(1, sizeof(fpath_t));
        if ((e = one_field(&c, "field", true, &p->fields[0], NULL)))
            goto out;
        if ((e = one_field(&c, "copy_from", false, &p->copy_from, &p->has_copy_from)))
            goto out;
        json_t *v = json_object_get(c.cfg, "value");
        if (p->has_copy_from && v && !json_is_null(v)) {
            e = cerr(type, tag, "copy_from", "cannot set both `copy_from` and `value` in the same processor");
            goto out;
        }
        if (!p->has_copy_from) {
            if (!v || json_is_null(v)) {
                e = cerr(type, tag, "value", "required property is missing");
                goto out;
            }
            if (has_template(v)) {
                e = cerr(type, tag, "value", "esd does not support mustache templates ({{...}}) in values");
                goto out;
            }
            p->value = json_incref(v);
        }
        if ((e = opt_bool(&c, "override", true, &p->override)) ||
            (e = opt_bool(&c, "ignore_empty_value", false, &p->ignore_empty_value)))
            goto out;
        if (json_object_get(c.cfg, "media_type")) {
            e = cerr(type, tag, "media_type", "esd does not support mustache templates, nor [media_type]");
            goto out;
        }
        const char *u[] = {"field", "copy_from", "value", "override", "ignore_empty_value"};
        for (int i = 0; i < 5; i++)
            used[nused++] = u[i];
        break;
    }
    case P_REMOVE: {
        if (json_object_get(c.cfg, "keep")) {
            e = cerr(type, tag, "keep", "esd does not support [keep] in the remove processor");
            goto out;
        }
        json_t *f = json_object_get(c.cfg, "field");
        if (!f || json_is_null(f)) {
            e = cerr(type, tag, "field", "required property is missing");
            goto out;
        }
        size_t n = json_is_array(f) ? json_array_size(f) : 1;
        p->fields = xcalloc(n ? n : 1, sizeof(fpath_t));
        for (size_t i = 0; i < n; i++) {
            json_t *x = json_is_array(f) ? json_array_get(f, i) : f;
            if (!json_is_string(x)) {
                e = cerr(type, tag, "field", "property isn't a string, but of type [%s]", jtype(x));
                goto out;
            }
            if ((e = fpath_compile(type, tag, "field", json_string_value(x), &p->fields[i])))
                goto out;
            p->nfields++;
        }
        if ((e = opt_bool(&c, "ignore_missing", false, &p->ignore_missing)))
            goto out;
        used[nused++] = "field";
        used[nused++] = "ignore_missing";
        break;
    }
    case P_RENAME:
        p->nfields = 1;
        p->fields = xcalloc(1, sizeof(fpath_t));
        if ((e = one_field(&c, "field", true, &p->fields[0], NULL)) ||
            (e = one_field(&c, "target_field", true, &p->target, &p->has_target)) ||
            (e = opt_bool(&c, "ignore_missing", false, &p->ignore_missing)) ||
            (e = opt_bool(&c, "override", false, &p->override)))
            goto out;
        used[nused++] = "field";
        used[nused++] = "target_field";
        used[nused++] = "ignore_missing";
        used[nused++] = "override";
        break;
    case P_LOWERCASE:
    case P_UPPERCASE:
        p->nfields = 1;
        p->fields = xcalloc(1, sizeof(fpath_t));
        if ((e = one_field(&c, "field", true, &p->fields[0], NULL)) ||
            (e = one_field(&c, "target_field", false, &p->target, &p->has_target)) ||
            (e = opt_bool(&c, "ignore_missing", false, &p->ignore_missing)))
            goto out;
        used[nused++] = "field";
        used[nused++] = "target_field";
        used[nused++] = "ignore_missing";
        break;
    }
    for (int i = 0; i < nused; i++)
        json_object_del(c.cfg, used[i]);
    if (json_object_size(c.cfg)) {
        sb_t s = {NULL, 0, 0};
        const char *k;
        json_t *v;
        json_object_foreach(c.cfg, k, v) {
            sb_puts(&s, s.len ? ", " : "[");
            sb_puts(&s, k);
        }
        sb_puts(&s, "]");
        e = cerr(type, tag, NULL, "processor [%s] doesn't support one or more provided configuration parameters %s",
                 type, s.buf);
        sb_free(&s);
    }
out:
    json_decref(c.cfg);
    return e;
}

static bool known_key(const char *k)
{
    return !strcmp(k, "description") || !strcmp(k, "version") || !strcmp(k, "_meta") ||
           !strcmp(k, "deprecated") || !strcmp(k, "processors");
}

static json_t *unknown_keys(const char *id, json_t *body)
{
    sb_t s = {NULL, 0, 0};
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (!known_key(k)) {
            sb_puts(&s, s.len ? ", " : "[");
            sb_puts(&s, k);
        }
    }
    if (!s.len)
        return NULL;
    sb_puts(&s, "]");
    json_t *e = err_cause("parse_exception", NULL);
    char msg[1200];
    snprintf(msg, sizeof msg, "pipeline [%s] doesn't support one or more provided configuration parameters %s",
             id, s.buf);
    json_object_set_new(e, "reason", json_string(msg));
    sb_free(&s);
    return e;
}

static json_t *parse_pipeline(const char *id, json_t *body, pipeline_t **out)
{
    *out = NULL;
    pctx_t c = {NULL, NULL, body};
    const char *desc;
    json_t *e = opt_string(&c, "description", false, &desc);
    if (e)
        return e;
    json_t *v = json_object_get(body, "version");
    if (v && !json_is_null(v) && !json_is_integer(v))
        return cerr(NULL, NULL, "version", "Failed to parse content to int");
    v = json_object_get(body, "_meta");
    if (v && !json_is_null(v) && !json_is_object(v))
        return cerr(NULL, NULL, "_meta", "property isn't a map, but of type [%s]", jtype(v));
    v = json_object_get(body, "deprecated");
    if (v && !json_is_null(v) && !json_is_boolean(v))
        return cerr(NULL, NULL, "deprecated", "property isn't a boolean, but of type [%s]", jtype(v));
    json_t *procs = json_object_get(body, "processors");
    if (!procs || json_is_null(procs))
        return cerr(NULL, NULL, "processors", "required property is missing");
    if (!json_is_array(procs))
        return cerr(NULL, NULL, "processors", "property isn't a list, but of type [%s]", jtype(procs));
    if (json_object_get(body, "on_failure"))
        return cerr(NULL, NULL, "on_failure", "esd does not support on_failure handlers");
    const char *k;
    pipeline_t *pl = xcalloc(1, sizeof *pl);
    size_t i;
    json_t *elem;
    json_array_foreach(procs, i, elem) {
        if (!json_is_object(elem)) {
            e = cerr(NULL, NULL, "processors", "property isn't a map, but of type [%s]", jtype(elem));
            break;
        }
        json_t *cfg;
        json_object_foreach(elem, k, cfg) {
            pl->procs = xrealloc(pl->procs, (size_t)(pl->nprocs + 1) * sizeof(proc_t));
            if ((e = parse_processor(k, cfg, &pl->procs[pl->nprocs]))) {
                proc_free(&pl->procs[pl->nprocs]);
                break;
            }
            pl->nprocs++;
        }
        if (e)
            break;
    }
    if (!e)
        e = unknown_keys(id, body);
    if (e) {
        pipeline_free(pl);
        return e;
    }
    pl->id = xstrdup(id);
    pl->def = json_incref(body);
    *out = pl;
    return NULL;
}

/* --------------------------------------------------------------- */
/* the registry (caller holds g_store.lock)                        */
/* --------------------------------------------------------------- */
static pipeline_t *find(const char *id, size_t n)
{
    for (size_t i = 0; i < g_npipes; i++)
        if (strlen(g_pipes[i]->id) == n && !memcmp(g_pipes[i]->id, id, n))
            return g_pipes[i];
    return NULL;
}

bool pipeline_exists(const char *id, size_t n)
{
    return find(id, n) != NULL;
}

void pipelines_clear(void)
{
    for (size_t i = 0; i < g_npipes; i++)
        pipeline_free(g_pipes[i]);
    free(g_pipes);
    g_pipes = NULL;
    g_npipes = 0;
}

static bool is_none(const char *id, size_t n)
{
    return n == 5 && !memcmp(id, "_none", 5);
}

static json_t *run_named(const char *id, size_t n, json_t *doc)
{
    pipeline_t *pl = find(id, n);
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
    if (op->has_index && op->index.n) {
        char *name = xstrndup(op->index.p, op->index.n);
        json_t *cause = NULL;
        bool missing;
        ix = resolve_write_target(name, &cause, &missing);
        if (cause)
            json_decref(cause);
        free(name);
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

/* --------------------------------------------------------------- */
/* the endpoints                                                   */
/* --------------------------------------------------------------- */
static bool any_pattern_match(const char *list, const char *id)
{
    char *copy = xstrdup(list), *save = NULL;
    bool hit = false;
    for (char *t = strtok_r(copy, ",", &save); t && !hit; t = strtok_r(NULL, ",", &save))
        hit = strchr(t, '*') ? glob_match(t, id) : !strcmp(t, id);
    free(copy);
    return hit;
}

static void handle_get(req_t *r, resp_t *rs, const char *ids)
{
    bool summary = req_arg_bool(r, "summary", false);
    json_t *out = json_object();
    pthread_mutex_lock(&g_store.lock);
    for (size_t i = 0; i < g_npipes; i++)
        if (!ids || any_pattern_match(ids, g_pipes[i]->id))
            json_object_set_new(out, g_pipes[i]->id, summary ? json_object() : json_deep_copy(g_pipes[i]->def));
    pthread_mutex_unlock(&g_store.lock);
    resp_json(rs, json_object_size(out) ? 200 : 404, out);
}

static void handle_put(req_t *r, resp_t *rs, const char *id)
{
    if (!r->body_len) {
        resp_error(rs, 400, "parse_exception", "request body is required");
        return;
    }
    json_error_t e;
    json_t *body = json_parse_precise(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
    if (!body) {
        resp_error(rs, 400, "x_content_parse_exception", "[%d:%d] %s", e.line, e.column, e.text);
        return;
    }
    pipeline_t *pl;
    json_t *cause = parse_pipeline(id, body, &pl);
    json_decref(body);
    if (cause) {
        resp_error_obj(rs, 400, cause);
        return;
    }
    pthread_mutex_lock(&g_store.lock);
    size_t i;
    for (i = 0; i < g_npipes; i++)
        if (!strcmp(g_pipes[i]->id, id))
            break;
    if (i < g_npipes) {
        pipeline_free(g_pipes[i]);
        g_pipes[i] = pl;
    } else {
        g_pipes = xrealloc(g_pipes, (g_npipes + 1) * sizeof *g_pipes);
        g_pipes[g_npipes++] = pl;
    }
    pthread_mutex_unlock(&g_store.lock);
    resp_json(rs, 200, json_pack("{s:b}", "acknowledged", 1));
}

/* "pipeline [x] cannot be deleted because it is the default pipeline for
 * N index(es) including [a,b,c]" (and/or the final pipeline) */
static json_t *in_use(const char *id)
{
    sb_t lists[2] = {{NULL, 0, 0}, {NULL, 0, 0}};
    int counts[2] = {0, 0};
    const char *keys[2] = {"index.default_pipeline", "index.final_pipeline"};
    /* indices are kept in creation order; ES names the first three by name */
    char **names[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < g_store.n; i++) {
            const char *v = index_setting(g_store.idx[i], keys[k]);
            if (v && !strcmp(v, id)) {
                names[k] = xrealloc(names[k], (size_t)(counts[k] + 1) * sizeof(char *));
                names[k][counts[k]++] = g_store.idx[i]->name;
            }
        }
        for (int a = 0; a < counts[k]; a++)   /* sorted */
            for (int b = a + 1; b < counts[k]; b++)
                if (strcmp(names[k][a], names[k][b]) > 0) {
                    char *t = names[k][a];
                    names[k][a] = names[k][b];
                    names[k][b] = t;
                }
        for (int a = 0; a < counts[k] && a < 3; a++) {
            if (a)
                sb_putc(&lists[k], ',');
            sb_puts(&lists[k], names[k][a]);
        }
        free(names[k]);
    }
    if (!counts[0] && !counts[1])
        return NULL;
    sb_t msg = {NULL, 0, 0};
    sb_printf(&msg, "pipeline [%s] cannot be deleted because it is ", id);
    if (counts[0])
        sb_printf(&msg, "the default pipeline for %d index(es) including [%s]", counts[0], lists[0].buf);
    if (counts[0] && counts[1])
        sb_puts(&msg, " and ");
    if (counts[1])
        sb_printf(&msg, "the final pipeline for %d index(es) including [%s]", counts[1], lists[1].buf);
    json_t *c = err_cause("illegal_argument_exception", msg.buf);
    sb_free(&msg);
    sb_free(&lists[0]);
    sb_free(&lists[1]);
    return c;
}

static void handle_delete(resp_t *rs, const char *id)
{
    pthread_mutex_lock(&g_store.lock);
    bool *hit = xcalloc(g_npipes ? g_npipes : 1, sizeof(bool));
    size_t nhit = 0;
    json_t *cause = NULL;
    for (size_t i = 0; i < g_npipes; i++)
        if (strchr(id, '*') ? glob_match(id, g_pipes[i]->id) : !strcmp(id, g_pipes[i]->id)) {
            hit[i] = true;
            nhit++;
            if (!cause)
                cause = in_use(g_pipes[i]->id);
        }
    int status = 400;
    if (!nhit && strcmp(id, "*") != 0 && !cause) {
        char msg[700];
        snprintf(msg, sizeof msg, "pipeline [%s] is missing", id);
        cause = err_cause("resource_not_found_exception", msg);
        status = 404;
    }
    if (!cause) {
        size_t w = 0;
        for (size_t i = 0; i < g_npipes; i++) {
            if (hit[i])
                pipeline_free(g_pipes[i]);
            else
                g_pipes[w++] = g_pipes[i];
        }
        g_npipes = w;
    }
    pthread_mutex_unlock(&g_store.lock);
    free(hit);
    if (cause)
        resp_error_obj(rs, status, cause);
    else
        resp_json(rs, 200, json_pack("{s:b}", "acknowledged", 1));
}

/* /_ingest/pipeline[/{id}] */
void handle_ingest(req_t *r, resp_t *rs)
{
    const char *id = r->nseg == 3 ? r->seg[2] : NULL;
    const char *m = r->method;
    if (id && !strcmp(id, "_simulate")) {
        resp_error(rs, 400, "illegal_argument_exception", "esd does not implement the simulate pipeline API");
    } else if (!strcmp(m, "GET")) {
        handle_get(r, rs, id);
    } else if (id && !strcmp(m, "PUT")) {
        handle_put(r, rs, id);
    } else if (id && !strcmp(m, "DELETE")) {
        handle_delete(rs, id);
    } else {
        resp_error_string(rs, 405, "Incorrect HTTP method for uri [%s] and method [%s], allowed: [%s]",
                          r->path, m, id ? "GET, PUT, DELETE" : "GET");
    }
}
