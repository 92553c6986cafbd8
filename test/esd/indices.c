/*
 * Index management endpoints, GET / and cluster health.
 *
 * Settings are kept flat ("index.number_of_replicas" -> "0") and always as
 * strings, which is how ES echoes them back; they are nested again on output
 * unless flat_settings=true.
 */
#include "esd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- */
/* settings helpers                                                */
/* --------------------------------------------------------------- */
static json_t *as_setting_string(const json_t *v)
{
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_STRING: return json_incref((json_t *)v);
    case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        return json_string(buf);
    case JSON_REAL:
        snprintf(buf, sizeof buf, "%g", json_real_value(v));
        return json_string(buf);
    case JSON_TRUE: return json_string("true");
    case JSON_FALSE: return json_string("false");
    case JSON_NULL: return json_null();
    case JSON_ARRAY: {
        json_t *a = json_array();
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)v, i, x) json_array_append_new(a, as_setting_string(x));
        return a;
    }
    default: return NULL;
    }
}

static void flatten_into(json_t *out, const json_t *in, const char *prefix)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) {
        char key[512];
        snprintf(key, sizeof key, "%s%s", prefix, k);
        if (json_is_object(v)) {
            char pfx[520];
            snprintf(pfx, sizeof pfx, "%s.", key);
            flatten_into(out, v, pfx);
        } else {
            json_object_set_new(out, key, as_setting_string(v));
        }
    }
}

/* flat, nested or dotted input -> {"index.x": "v"}; null values stay null */
json_t *settings_flatten(const json_t *in, json_t **cause)
{
    *cause = NULL;
    if (!json_is_object(in)) {
        *cause = err_cause("illegal_argument_exception", "settings must be an object");
        return NULL;
    }
    json_t *tmp = json_object(), *out = json_object();
    flatten_into(tmp, in, "");
    const char *k;
    json_t *v;
    json_object_foreach(tmp, k, v) {
        char key[520];
        snprintf(key, sizeof key, "%s%s", strncmp(k, "index.", 6) ? "index." : "", k);
        json_object_set(out, key, v);
    }
    json_decref(tmp);
    return out;
}

json_t *settings_nest(const json_t *flat)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)flat, k, v) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s", k);
        json_t *cur = out;
        char *save = NULL, *tok = strtok_r(buf, ".", &save);
        while (tok) {
            char *next = strtok_r(NULL, ".", &save);
            if (!next) {
                json_object_set(cur, tok, v);
            } else {
                json_t *sub = json_object_get(cur, tok);
                if (!json_is_object(sub)) {
                    sub = json_object();
                    json_object_set_new(cur, tok, sub);
                }
                cur = sub;
            }
            tok = next;
        }
    }
    return out;
}

static json_t *validate_settings(const json_t *flat, bool creating, const index_t *ix)
{
    const char *k;
    json_t *v;
    char msg[900];
    json_object_foreach((json_t *)flat, k, v) {
        const char *s = json_string_value(v);
        long long n;
        if (!creating && (!strcmp(k, "index.number_of_shards") || !strcmp(k, "index.routing_partition_size"))) {
            snprintf(msg, sizeof msg, "Can't update non dynamic settings [[%s]] for open indices [[%s/%s]]", k, ix->name, ix->uuid);
            return err_cause("illegal_argument_exception", msg);
        }
        if ((!strcmp(k, "index.number_of_shards") || !strcmp(k, "index.number_of_replicas")) && s &&
            (!parse_long_strict(s, &n) || n < (strstr(k, "shards") ? 1 : 0))) {
            snprintf(msg, sizeof msg, "Failed to parse value [%s] for setting [%s] must be >= %d", s, k, strstr(k, "shards") ? 1 : 0);
            return err_cause("illegal_argument_exception", msg);
        }
        if ((!strcmp(k, "index.blocks.write") || !strcmp(k, "index.blocks.read_only")) && s &&
            strcmp(s, "true") && strcmp(s, "false")) {
            snprintf(msg, sizeof msg, "Failed to parse value [%s] as only [true] or [false] are allowed.", s);
            return err_cause("illegal_argument_exception", msg);
        }
        if (!strcmp(k, "index.refresh_interval") && s) {
            bool ok;
            parse_time_value_ms(s, &ok);
            if (!ok) {
                snprintf(msg, sizeof msg, "failed to parse setting [index.refresh_interval] with value [%s] as a time value: unit is missing or unrecognized", s);
                return err_cause("illegal_argument_exception", msg);
            }
        }
    }
    return NULL;
}

/* --------------------------------------------------------------- */
/* create / get / head / delete                                    */
/* --------------------------------------------------------------- */
static json_t *create_checks(const char *name, const json_t *body, json_t **settings, json_t **mappings)
{
    char buf[200];
    const char *why = index_name_invalid(name, buf, sizeof buf);
    if (why) {
        char msg[600];
        snprintf(msg, sizeof msg, "Invalid index name [%s], %s", name, why);
        json_t *c = err_cause("invalid_index_name_exception", msg);
        json_object_set_new(c, "index_uuid", json_string("_na_"));
        json_object_set_new(c, "index", json_string(name));
        return c;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) if (strcmp(k, "settings") && strcmp(k, "mappings") && strcmp(k, "aliases")) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown key [%s] for create index", k);
        return err_cause("parse_exception", msg);
    }
    json_t *cause = NULL;
    json_t *s = json_object_get(body, "settings");
    *settings = s ? settings_flatten(s, &cause) : json_object();
    if (cause)
        return cause;
    if ((cause = validate_settings(*settings, true, NULL)))
        return cause;
    json_t *m = json_object_get(body, "mappings");
    *mappings = m ? mapping_normalize(m, &cause) : json_object();
    return cause;
}

static json_t *check_aliases(const json_t *aliases)
{
    if (aliases && !json_is_object(aliases))
        return err_cause("illegal_argument_exception", "[aliases] must be an object");
    const char *a;
    json_t *d;
    json_object_foreach((json_t *)aliases, a, d) {
        if (store_find(a)) {
            char msg[600];
            snprintf(msg, sizeof msg, "Invalid alias name [%s]: an index or data stream exists with the same name as the alias", a);
            return err_cause("invalid_alias_name_exception", msg);
        }
        if (json_is_true(json_object_get(d, "is_write_index"))) {
            for (size_t i = 0; i < g_store.n; i++) {
                json_t *o = json_object_get(g_store.idx[i]->aliases, a);
                if (o && json_is_true(json_object_get(o, "is_write_index"))) {
                    char msg[800];
                    snprintf(msg, sizeof msg, "alias [%s] has more than one write index [%s,new index]", a, g_store.idx[i]->name);
                    return err_cause("illegal_state_exception", msg);
                }
            }
        }
    }
    return NULL;
}

void handle_index_create(req_t *r, resp_t *rs, const char *name)
{
    json_error_t e;
    json_t *body = r->body_len ? json_loadb(r->body, r->body_len, 0, &e) : json_object();
    if (!body || !json_is_object(body)) {
        if (body)
            json_decref(body);
        resp_error(rs, 400, "parse_exception", "failed to parse request body: %s",
                   body ? "the body must be a JSON object" : e.text);
        return;
    }
    json_t *settings = NULL, *mappings = NULL;
    json_t *cause = create_checks(name, body, &settings, &mappings);
    pthread_mutex_lock(&g_store.lock);
    int status = 400;
    if (!cause && store_find(name)) {
        index_t *ex = store_find(name);
        char msg[700];
        snprintf(msg, sizeof msg, "index [%s/%s] already exists", name, ex->uuid);
        cause = err_cause("resource_already_exists_exception", msg);
        json_object_set_new(cause, "index_uuid", json_string(ex->uuid));
        json_object_set_new(cause, "index", json_string(name));
    }
    if (!cause && alias_exists(name)) {
        char msg[600];
        snprintf(msg, sizeof msg, "Invalid index name [%s], already exists as alias", name);
        cause = err_cause("invalid_index_name_exception", msg);
    }
    json_t *aliases = json_object_get(body, "aliases");
    if (!cause)
        cause = check_aliases(aliases);
    if (cause) {
        pthread_mutex_unlock(&g_store.lock);
        if (settings) json_decref(settings);
        if (mappings) json_decref(mappings);
        json_decref(body);
        resp_error_obj(rs, status, cause);
        return;
    }
    index_t *ix = store_create(name);
    json_object_update(ix->settings, settings);
    json_decref(settings);
    json_decref(ix->mappings);
    ix->mappings = mappings;
    if (aliases)
        json_object_update(ix->aliases, aliases);
    index_apply_settings(ix);
    pthread_mutex_unlock(&g_store.lock);
    json_decref(body);
    resp_json(rs, 200, json_pack("{s:b,s:b,s:s}", "acknowledged", 1, "shards_acknowledged", 1, "index", name));
}

static json_t *settings_json(const index_t *ix, bool flat)
{
    json_t *s = json_object();
    char buf[64];
    snprintf(buf, sizeof buf, "%lld", (long long)ix->created_ms);
    json_object_set_new(s, "index.creation_date", json_string(buf));
    json_object_set_new(s, "index.number_of_shards", json_string("1"));
    json_object_set_new(s, "index.number_of_replicas", json_string("1"));
    json_object_set_new(s, "index.uuid", json_string(ix->uuid));
    json_object_set_new(s, "index.version.created", json_string(g_cfg.flavor == FLAVOR_ES7 ? "7172999" : "8150199"));
    json_object_set_new(s, "index.provided_name", json_string(ix->name));
    json_object_update(s, ix->settings);
    if (flat)
        return s;
    json_t *n = settings_nest(s);
    json_decref(s);
    return n;
}

void handle_index_get(req_t *r, resp_t *rs, const char *expr)
{
    pthread_mutex_lock(&g_store.lock);
    ixlist_t l = {0};
    json_t *cause = NULL;
    if (!resolve_read(expr, &l, &cause, req_arg_bool(r, "ignore_unavailable", false))) {
        pthread_mutex_unlock(&g_store.lock);
        resp_error_obj(rs, 404, cause);
        return;
    }
    bool flat = req_arg_bool(r, "flat_settings", false);
    json_t *out = json_object();
    for (size_t i = 0; i < l.n; i++) {
        index_t *ix = l.v[i];
        json_object_set_new(out, ix->name, json_pack("{s:O,s:O,s:o}", "aliases", ix->aliases,
                                                     "mappings", ix->mappings, "settings", settings_json(ix, flat)));
    }
    pthread_mutex_unlock(&g_store.lock);
    ixlist_free(&l);
    resp_json(rs, 200, out);
}

void handle_index_head(req_t *r, resp_t *rs, const char *expr)
{
    (void)r;
    pthread_mutex_lock(&g_store.lock);
    ixlist_t l = {0};
    json_t *cause = NULL;
    bool ok = resolve_read(expr, &l, &cause, false) && l.n > 0;
    pthread_mutex_unlock(&g_store.lock);
    if (cause)
        json_decref(cause);
    ixlist_free(&l);
    resp_empty(rs, ok ? 200 : 404);
}

void handle_index_delete(req_t *r, resp_t *rs, const char *expr)
{
    pthread_mutex_lock(&g_store.lock);
    char *copy = xstrdup(expr), *save = NULL;
    ixlist_t l = {0};
    json_t *cause = NULL;
    bool ignore = req_arg_bool(r, "ignore_unavailable", false);
    for (char *t = strtok_r(copy, ",", &save); t && !cause; t = strtok_r(NULL, ",", &save)) {
        index_t *ix = store_find(t);
        if (ix) {
            ixlist_t one = {0};
            (void)one;
            l.v = xrealloc(l.v, (l.n + 1) * sizeof(index_t *));
            l.v[l.n++] = ix;
        } else if (alias_exists(t)) {
            char msg[700];
            snprintf(msg, sizeof msg, "The provided expression [%s] matches an alias, specify the corresponding concrete indices instead.", t);
            cause = err_cause("illegal_argument_exception", msg);
        } else if (strchr(t, '*') || !strcmp(t, "_all")) {
            cause = err_cause("illegal_argument_exception", "Wildcard expressions or all indices are not allowed");
        } else if (!ignore) {
            cause = index_not_found_cause(t);
        }
    }
    free(copy);
    if (!cause)
        for (size_t i = 0; i < l.n; i++)
            if (store_find(l.v[i]->name) == l.v[i])
                store_delete(l.v[i]);
    pthread_mutex_unlock(&g_store.lock);
    free(l.v);
    if (cause) {
        bool nf = !strcmp(json_string_value(json_object_get(cause, "type")), "index_not_found_exception");
        resp_error_obj(rs, nf ? 404 : 400, cause);
        return;
    }
    resp_json(rs, 200, json_pack("{s:b}", "acknowledged", 1));
}

/* --------------------------------------------------------------- */
/* settings / mapping / refresh                                    */
/* --------------------------------------------------------------- */
void handle_settings_get(req_t *r, resp_t *rs, const char *expr)
{
    pthread_mutex_lock(&g_store.lock);
    ixlist_t l = {0};
    json_t *cause = NULL;
    if (!resolve_read(expr, &l, &cause, false)) {
        pthread_mutex_unlock(&g_store.lock);
        resp_error_obj(rs, 404, cause);
        return;
    }
    bool flat = req_arg_bool(r, "flat_settings", false);
    json_t *out = json_object();
    for (size_t i = 0; i < l.n; i++)
        json_object_set_new(out, l.v[i]->name, json_pack("{s:o}", "settings", settings_json(l.v[i], flat)));
    pthread_mutex_unlock(&g_store.lock);
    ixlist_free(&l);
    resp_json(rs, 200, out);
}

void handle_settings_put(req_t *r, resp_t *rs, const char *expr)
{
    json_error_t e;
    json_t *body = json_loadb(r->body, r->body_len, 0, &e);
    if (!body) {
        resp_error(rs, 400, "parse_exception", "failed to parse request body: %s", e.text);
        return;
    }
    json_t *inner = json_object_get(body, "settings");
    json_t *cause = NULL;
    json_t *flat = settings_flatten(inner ? inner : body, &cause);
    json_decref(body);
    if (!flat) {
        resp_error_obj(rs, 400, cause);
        return;
    }
    pthread_mutex_lock(&g_store.lock);
    ixlist_t l = {0};
    int status = 404;
    if (resolve_read(expr, &l, &cause, false)) {
        status = 400;
        for (size_t i = 0; i < l.n && !cause; i++)
            cause = validate_settings(flat, false, l.v[i]);
    }
    if (!cause) {
        for (size_t i = 0; i < l.n; i++) {
            const char *k;
            json_t *v;
            json_object_foreach(flat, k, v) {
                if (json_is_null(v))
                    json_object_del(l.v[i]->settings, k);   /* null resets to the default */
                else
                    json_object_set(l.v[i]->settings, k, v);
            }
            index_apply_settings(l.v[i]);
        }
    }
    pthread_mutex_unlock(&g_store.lock);
    ixlist_free(&l);
    json_decref(flat);
    if (cause)
        resp_error_obj(rs, status, cause);
    else
        resp_json(rs, 200, json_pack("{s:b}", "acknowledged", 1));
}

void handle_mapping_get(req_t *r, resp_t *rs, const char *expr)
{
    (void)r;
    pthread_mutex_lock(&g_store.lock);
    ixlist_t l = {0};
    json_t *cause = NULL;
    if (!resolve_read(expr, &l, &cause, false)) {
        pthread_mutex_unlock(&g_store.lock);
        resp_error_obj(rs, 404, cause);
        return;
    }
    json_t *out = json_object();
    for (size_t i = 0; i < l.n; i++)
        json_object_set_new(out, l.v[i]->name, json_pack("{s:O}", "mappings", l.v[i]->mappings));
    pthread_mutex_unlock(&g_store.lock);
    ixlist_free(&l);
    resp_json(rs, 200, out);
}

void handle_mapping_put(req_t *r, resp_t *rs, const char *expr)
{
    json_error_t e;
    json_t *body = json_loadb(r->body, r->body_len, 0, &e);
    json_t *cause = NULL;
    json_t *m = body ? mapping_normalize(body, &cause) : NULL;
    if (body)
        json_decref(body);
    if (!m) {
        if (cause) resp_error_obj(rs, 400, cause);
        else resp_error(rs, 400, "parse_exception", "failed to parse request body: %s", e.text);
        return;
    }
    pthread_mutex_lock(&g_store.lock);
    ixlist_t l = {0};
    int status = 404;
    if (resolve_read(expr, &l, &cause, false)) {
        status = 400;
        /* merge into copies first so a conflict changes nothing */
        json_t **copies = xcalloc(l.n + 1, sizeof(json_t *));
        for (size_t i = 0; i < l.n && !cause; i++) {
            copies[i] = json_deep_copy(l.v[i]->mappings);
            cause = mapping_merge(copies[i], m);
        }
        for (size_t i = 0; i < l.n; i++) {
            if (!cause) {
                json_decref(l.v[i]->mappings);
                l.v[i]->mappings = copies[i];
            } else if (copies[i]) {
                json_decref(copies[i]);
            }
        }
        free(copies);
    }
    pthread_mutex_unlock(&g_store.lock);
    ixlist_free(&l);
    json_decref(m);
    if (cause)
        resp_error_obj(rs, status, cause);
    else
        resp_json(rs, 200, json_pack("{s:b}", "acknowledged", 1));
}

void handle_refresh(req_t *r, resp_t *rs, const char *expr)
{
    pthread_mutex_lock(&g_store.lock);
    ixlist_t l = {0};
    json_t *cause = NULL;
    if (!resolve_read(expr, &l, &cause, req_arg_bool(r, "ignore_unavailable", false))) {
        pthread_mutex_unlock(&g_store.lock);
        resp_error_obj(rs, 404, cause);
        return;
    }
    int total = 0;
    for (size_t i = 0; i < l.n; i++) {
        index_refresh(l.v[i]);
        total += 1 + index_replicas(l.v[i]);
    }
    pthread_mutex_unlock(&g_store.lock);
    json_t *out = json_pack("{s:{s:i,s:I,s:i}}", "_shards", "total", total, "successful",
                            (json_int_t)l.n, "failed", 0);
    ixlist_free(&l);
    resp_json(rs, 200, out);
}

/* --------------------------------------------------------------- */
/* GET / and health                                                */
/* --------------------------------------------------------------- */
void handle_root(req_t *r, resp_t *rs)
{
    (void)r;
    json_t *v;
    const char *tagline = "You Know, for Search";
    if (g_cfg.flavor == FLAVOR_OPENSEARCH) {
        v = json_pack("{s:s,s:s,s:s,s:s,s:s,s:b,s:s,s:s,s:s}", "distribution", "opensearch",
                      "number", "2.11.0", "build_type", "tar", "build_hash",
                      "4dcad6dd1fd45b6bd91f041a041829c8687278fa", "build_date",
                      "2023-10-13T02:55:55.511945994Z", "build_snapshot", 0, "lucene_version",
                      "9.7.0", "minimum_wire_compatibility_version", "7.10.0",
                      "minimum_index_compatibility_version", "7.0.0");
        tagline = "The OpenSearch Project: https://opensearch.org/";
    } else {
        bool es7 = g_cfg.flavor == FLAVOR_ES7;
        v = json_pack("{s:s,s:s,s:s,s:s,s:s,s:b,s:s,s:s,s:s}", "number", es7 ? "7.17.29" : "8.15.1",
                      "build_flavor", "default", "build_type", "docker", "build_hash",
                      "0123456789abcdef0123456789abcdef01234567", "build_date",
                      "2024-09-01T10:00:00.000000000Z", "build_snapshot", 0, "lucene_version",
                      es7 ? "8.11.3" : "9.11.1", "minimum_wire_compatibility_version",
                      es7 ? "6.8.0" : "7.17.0", "minimum_index_compatibility_version",
                      es7 ? "6.0.0-beta1" : "7.0.0");
    }
    resp_json(rs, 200, json_pack("{s:s,s:s,s:s,s:o,s:s}", "name", "esd-node-0", "cluster_name",
                                 "esd", "cluster_uuid", "ZXNkLWNsdXN0ZXItdXVpZA", "version", v,
                                 "tagline", tagline));
}

static const char *health_status(const ixlist_t *l, int *primaries, int *unassigned)
{
    *primaries = (int)l->n;
    *unassigned = 0;
    for (size_t i = 0; i < l->n; i++)
        *unassigned += index_replicas(l->v[i]);
    return *unassigned ? "yellow" : "green";
}

static int status_rank(const char *s)
{
    return !strcmp(s, "green") ? 2 : !strcmp(s, "yellow") ? 1 : 0;
}

void handle_health(req_t *r, resp_t *rs, const char *expr)
{
    const char *want = req_arg(r, "wait_for_status");
    bool ok_t;
    const char *tv = req_arg(r, "timeout");
    int64_t timeout = tv ? parse_time_value_ms(tv, &ok_t) : 30000;
    if (timeout > 30000)
        timeout = 30000;
    int64_t deadline = mono_ms() + timeout;
    for (;;) {
        pthread_mutex_lock(&g_store.lock);
        ixlist_t l = {0};
        json_t *cause = NULL;
        bool found = resolve_read(expr ? expr : "_all", &l, &cause, false);
        int prim, unas;
        const char *st = found ? health_status(&l, &prim, &unas) : "red";
        if (!found) {
            prim = unas = 0;
            json_decref(cause);
        }
        pthread_mutex_unlock(&g_store.lock);
        ixlist_free(&l);
        bool met = !want || status_rank(st) >= status_rank(want);
        if (met || mono_ms() >= deadline || g_stopping || (!found && !want)) {
            int total = prim + unas;
            json_t *out = json_pack(
                "{s:s,s:s,s:b,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f}",
                "cluster_name", "esd", "status", st, "timed_out", !met, "number_of_nodes", 1,
                "number_of_data_nodes", 1, "active_primary_shards", prim, "active_shards", prim,
                "relocating_shards", 0, "initializing_shards", 0, "unassigned_shards", unas,
                "unassigned_primary_shards", 0, "delayed_unassigned_shards", 0,
                "number_of_pending_tasks", 0, "number_of_in_flight_fetch", 0,
                "task_max_waiting_in_queue_millis", 0, "active_shards_percent_as_number",
                total ? 100.0 * prim / total : 100.0);
            int status = 200;
            if (!met && g_cfg.flavor != FLAVOR_ES8)
                status = 408;
            if (!found && !want) {
                json_decref(out);
                resp_error_obj(rs, 404, index_not_found_cause(expr));
                return;
            }
            resp_json(rs, status, out);
            return;
        }
        sleep_ms_interruptible(100);
    }
}
