/*
 * Ingest pipelines: PUT/GET/DELETE /_ingest/pipeline/{id}, the registry,
 * and parsing a definition with ES's validation errors.  Running them over
 * an index/create source (or an update's upsert document) before the
 * write, as Elasticsearch's IngestService does, is in ingest.c.
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
#include "pipelines.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *ptype_name[] = {"set", "remove", "rename", "lowercase", "uppercase"};

static pipeline_t **g_pipes;
static size_t g_npipes;

/* --------------------------------------------------------------- */
/* helpers                                                         */
/* --------------------------------------------------------------- */
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
        return cerr(c->type, c->tag, key, "property isn't a string, but of type [%s]", java_type(v));
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
        return cerr(c->type, c->tag, key, "property isn't a boolean, but of type [%s]", java_type(v));
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
        return cerr(type, NULL, NULL, "property isn't a map, but of type [%s]", java_type(cfg_in));
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
                e = cerr(type, tag, "field", "property isn't a string, but of type [%s]", java_type(x));
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
        return cerr(NULL, NULL, "_meta", "property isn't a map, but of type [%s]", java_type(v));
    v = json_object_get(body, "deprecated");
    if (v && !json_is_null(v) && !json_is_boolean(v))
        return cerr(NULL, NULL, "deprecated", "property isn't a boolean, but of type [%s]", java_type(v));
    json_t *procs = json_object_get(body, "processors");
    if (!procs || json_is_null(procs))
        return cerr(NULL, NULL, "processors", "required property is missing");
    if (!json_is_array(procs))
        return cerr(NULL, NULL, "processors", "property isn't a list, but of type [%s]", java_type(procs));
    if (json_object_get(body, "on_failure"))
        return cerr(NULL, NULL, "on_failure", "esd does not support on_failure handlers");
    const char *k;
    pipeline_t *pl = xcalloc(1, sizeof *pl);
    size_t i;
    json_t *elem;
    json_array_foreach(procs, i, elem) {
        if (!json_is_object(elem)) {
            e = cerr(NULL, NULL, "processors", "property isn't a map, but of type [%s]", java_type(elem));
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
pipeline_t *pipeline_find(const char *id, size_t n)
{
    for (size_t i = 0; i < g_npipes; i++)
        if (strlen(g_pipes[i]->id) == n && !memcmp(g_pipes[i]->id, id, n))
            return g_pipes[i];
    return NULL;
}

bool pipeline_exists(const char *id, size_t n)
{
    return pipeline_find(id, n) != NULL;
}

void pipelines_clear(void)
{
    for (size_t i = 0; i < g_npipes; i++)
        pipeline_free(g_pipes[i]);
    free(g_pipes);
    g_pipes = NULL;
    g_npipes = 0;
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
