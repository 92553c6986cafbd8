/*
 * Aliases and index-name resolution.
 *
 * Alias definitions live in each index (ix->aliases: alias -> definition), as
 * in the ES cluster state.  POST /_aliases applies its actions to a staged
 * copy of every index's alias map and swaps them in only when all actions
 * succeeded, so a swap is all-or-nothing, as POST /_aliases is in ES.
 */
#include "esd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- */
/* resolution (callers hold g_store.lock)                          */
/* --------------------------------------------------------------- */
bool alias_exists(const char *name)
{
    for (size_t i = 0; i < g_store.n; i++)
        if (json_object_get(g_store.idx[i]->aliases, name))
            return true;
    return false;
}

void ixlist_free(ixlist_t *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void ixlist_add(ixlist_t *l, index_t *ix)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i] == ix)
            return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = xrealloc(l->v, l->cap * sizeof(index_t *));
    }
    l->v[l->n++] = ix;
}

index_t *resolve_write_target(const char *name, json_t **cause, bool *missing)
{
    *cause = NULL;
    *missing = false;
    index_t *ix = store_find(name);
    if (ix)
        return ix;
    index_t *only = NULL, *writer = NULL;
    size_t count = 0;
    bool only_disabled = false;
    for (size_t i = 0; i < g_store.n; i++) {
        json_t *def = json_object_get(g_store.idx[i]->aliases, name);
        if (!def)
            continue;
        count++;
        only = g_store.idx[i];
        json_t *w = json_object_get(def, "is_write_index");
        if (json_is_true(w))
            writer = g_store.idx[i];
        only_disabled = json_is_false(w);
    }
    if (writer)
        return writer;
    if (count == 1 && !only_disabled)
        return only;
    if (count == 0) {
        *missing = true;
        return NULL;
    }
    char msg[800];
    snprintf(msg, sizeof msg,
             "no write index is defined for alias [%s]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index",
             name);
    *cause = err_cause("illegal_argument_exception", msg);
    return NULL;
}

index_t *resolve_single(const char *name, json_t **cause, int *status)
{
    index_t *ix = store_find(name);
    if (ix)
        return ix;
    ixlist_t l = {0};
    for (size_t i = 0; i < g_store.n; i++)
        if (json_object_get(g_store.idx[i]->aliases, name))
            ixlist_add(&l, g_store.idx[i]);
    if (l.n == 1) {
        ix = l.v[0];
        ixlist_free(&l);
        return ix;
    }
    if (!l.n) {
        *status = 404;
        *cause = index_not_found_cause(name);
        return NULL;
    }
    sb_t s = {NULL, 0, 0};
    for (size_t i = 0; i < l.n; i++) {
        if (i) sb_puts(&s, ", ");
        sb_puts(&s, l.v[i]->name);
    }
    char msg[1200];
    snprintf(msg, sizeof msg,
             "alias [%s] has more than one index associated with it [%s], can't execute a single index op",
             name, s.buf);
    sb_free(&s);
    ixlist_free(&l);
    *status = 400;
    *cause = err_cause("illegal_argument_exception", msg);
    return NULL;
}

/* One name or pattern of an expression; returns false if a concrete name is
 * unknown. */
static bool resolve_token(const char *t, ixlist_t *out)
{
    if (!strcmp(t, "_all") || !strcmp(t, "*")) {
        for (size_t i = 0; i < g_store.n; i++)
            ixlist_add(out, g_store.idx[i]);
        return true;
    }
    bool wild = strchr(t, '*') != NULL;
    bool found = false;
    for (size_t i = 0; i < g_store.n; i++) {
        index_t *ix = g_store.idx[i];
        bool m = wild ? glob_match(t, ix->name) : !strcmp(t, ix->name);
        if (!m) {
            const char *a;
            json_t *d;
            json_object_foreach(ix->aliases, a, d) if (wild ? glob_match(t, a) : !strcmp(t, a)) m = true;
        }
        if (m) {
            ixlist_add(out, ix);
            found = true;
        }
    }
    return found || wild;
}

bool resolve_read(const char *expr, ixlist_t *out, json_t **cause, bool ignore_unavailable)
{
    char *copy = xstrdup(expr), *save = NULL;
    bool ok = true;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (t[0] == '-')
            continue;
        if (!resolve_token(t, out) && !ignore_unavailable) {
            *cause = index_not_found_cause(t);
            ok = false;
            break;
        }
    }
    free(copy);
    if (!ok)
        ixlist_free(out);
    return ok;
}

/* --------------------------------------------------------------- */
/* POST /_aliases                                                  */
/* --------------------------------------------------------------- */
typedef struct stage {
    json_t **aliases;   /* staged alias map per index */
    bool *deleted;
    size_t n;
    json_t *results;    /* action_results for partial success (ES >= 8.14) */
    bool partial;
} stage_t;

static json_t *names_of(const json_t *act, const char *one, const char *many)
{
    json_t *arr = json_array();
    const json_t *v = json_object_get(act, one);
    if (json_is_string(v))
        json_array_append((json_t *)arr, (json_t *)v);
    v = json_object_get(act, many);
    if (json_is_string(v))
        json_array_append((json_t *)arr, (json_t *)v);
    else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)v, i, x) if (json_is_string(x)) json_array_append(arr, x);
    }
    return arr;
}

/* indices (by position) matched by the index names of an action */
static json_t *match_indices(stage_t *st, const json_t *names, json_t **cause)
{
    json_t *out = json_array();
    size_t i;
    json_t *x;
    json_array_foreach((json_t *)names, i, x) {
        const char *n = json_string_value(x);
        bool found = false;
        for (size_t k = 0; k < st->n; k++) {
            if (st->deleted[k])
                continue;
            bool m = strchr(n, '*') ? glob_match(n, g_store.idx[k]->name)
                                    : !strcmp(n, g_store.idx[k]->name) || !strcmp(n, "_all");
            if (!m && !strchr(n, '*') && json_object_get(st->aliases[k], n))
                m = true;   /* an alias name resolves to its indices */
            if (m) {
                json_array_append_new(out, json_integer((json_int_t)k));
                found = true;
            }
        }
        if (!found && !strchr(n, '*')) {
            *cause = index_not_found_cause(n);
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static json_t *do_add(stage_t *st, const json_t *act, json_t *idx, json_t *aliases)
{
    size_t i, j;
    json_t *x, *a;
    json_array_foreach(aliases, j, a) {
        const char *an = json_string_value(a);
        for (size_t k = 0; k < st->n; k++)
            if (!st->deleted[k] && !strcmp(g_store.idx[k]->name, an)) {
                char msg[700];
                snprintf(msg, sizeof msg, "Invalid alias name [%s]: an index or data stream exists with the same name as the alias", an);
                json_t *c = err_cause("invalid_alias_name_exception", msg);
                json_object_set_new(c, "index_uuid", json_string("_na_"));
                json_object_set_new(c, "index", json_string(an));
                return c;
            }
        char buf[200];
        const char *why = index_name_invalid(an, buf, sizeof buf);
        if (why) {
            char msg[700];
            snprintf(msg, sizeof msg, "Invalid alias name [%s], %s", an, why);
            return err_cause("invalid_alias_name_exception", msg);
        }
        json_array_foreach(idx, i, x) {
            json_t *def = json_object();
            static const char *keys[] = {"filter", "index_routing", "search_routing", "is_write_index", "is_hidden", NULL};
            const json_t *rt = json_object_get(act, "routing");
            if (rt) {
                json_object_set(def, "index_routing", (json_t *)rt);
                json_object_set(def, "search_routing", (json_t *)rt);
            }
            for (int k = 0; keys[k]; k++) {
                const json_t *v = json_object_get(act, keys[k]);
                if (v && !json_is_null(v))
                    json_object_set(def, keys[k], (json_t *)v);
            }
            json_object_set_new(st->aliases[json_integer_value(x)], an, def);
        }
    }
    return NULL;
}

static json_t *do_remove(stage_t *st, const json_t *act, json_t *idx, json_t *aliases, bool *partial_miss)
{
    const json_t *me = json_object_get(act, "must_exist");
    json_t *missing = json_array();
    size_t i, j;
    json_t *x, *a;
    json_array_foreach(aliases, j, a) {
        const char *an = json_string_value(a);
        bool any = false;
        json_array_foreach(idx, i, x) {
            json_t *m = st->aliases[json_integer_value(x)];
            const char *k;
            json_t *v, *tmp;
            json_object_foreach_safe(m, tmp, k, v) {
                if (strchr(an, '*') ? glob_match(an, k) : !strcmp(an, k)) {
                    json_object_del(m, k);
                    any = true;
                }
            }
        }
        if (!any)
            json_array_append(missing, a);
    }
    json_t *cause = NULL;
    if (json_array_size(missing)) {
        sb_t s = {NULL, 0, 0};
        json_array_foreach(missing, j, a) {
            if (j) sb_putc(&s, ',');
            sb_puts(&s, json_string_value(a));
        }
        char msg[800];
        snprintf(msg, sizeof msg, "aliases [%s] missing", s.buf);
        sb_free(&s);
        cause = err_cause("aliases_not_found_exception", msg);
        json_object_set_new(cause, "resource.type", json_string("aliases"));
        json_object_set_new(cause, "resource.id", json_string(msg + 9));
        /* ES >= 8.14: a missing alias without must_exist=true is a partial success */
        if (g_cfg.flavor == FLAVOR_ES8 && !json_is_true(me))
            *partial_miss = true;
    }
    json_decref(missing);
    return cause;
}

static json_t *do_remove_index(stage_t *st, json_t *names)
{
    size_t i;
    json_t *x;
    json_array_foreach(names, i, x) {
        const char *n = json_string_value(x);
        bool found = false;
        for (size_t k = 0; k < st->n; k++) {
            if (st->deleted[k])
                continue;
            if (strchr(n, '*') ? glob_match(n, g_store.idx[k]->name) : !strcmp(n, g_store.idx[k]->name)) {
                st->deleted[k] = true;
                found = true;
            } else if (!strchr(n, '*') && json_object_get(st->aliases[k], n)) {
                char msg[700];
                snprintf(msg, sizeof msg, "The provided expression [%s] matches an alias, specify the corresponding concrete indices instead.", n);
                return err_cause("illegal_argument_exception", msg);
            }
        }
        if (!found && !strchr(n, '*'))
            return index_not_found_cause(n);
    }
    return NULL;
}

static void add_result(stage_t *st, const char *type, json_t *idx_names, json_t *al, json_t *cause)
{
    json_t *act = json_pack("{s:s,s:O}", "type", type, "indices", idx_names);
    if (al)
        json_object_set(act, "aliases", al);
    json_t *r = json_pack("{s:o,s:i}", "action", act, "status", cause ? 404 : 200);
    if (cause)
        json_object_set_new(r, "error", cause);
    json_array_append_new(st->results, r);
}

/* Applies one action to the staged state; returns an error cause with status. */
static json_t *apply_action(stage_t *st, const json_t *entry, int *status)
{
    *status = 400;
    if (!json_is_object(entry) || json_object_size(entry) != 1)
        return err_cause("illegal_argument_exception", "[actions] entries must be objects with exactly one of [add], [remove] or [remove_index]");
    const char *type = json_object_iter_key(json_object_iter((json_t *)entry));
    const json_t *act = json_object_iter_value(json_object_iter((json_t *)entry));
    bool add = !strcmp(type, "add"), rem = !strcmp(type, "remove"), remi = !strcmp(type, "remove_index");
    if (!add && !rem && !remi) {
        char msg[300];
        snprintf(msg, sizeof msg, "[alias_action] unknown field [%s]", type);
        return err_cause("x_content_parse_exception", msg);
    }
    if (!json_is_object(act))
        return err_cause("x_content_parse_exception", "[alias_action] action must be an object");
    if (json_object_get(act, "must_exist") && !rem) {
        char msg[200];
        snprintf(msg, sizeof msg, "[must_exist] is unsupported for [%s]", add ? "ADD" : "REMOVE_INDEX");
        return err_cause("illegal_argument_exception", msg);
    }
    json_t *names = names_of(act, "index", "indices");
    json_t *aliases = remi ? json_array() : names_of(act, "alias", "aliases");
    json_t *cause = NULL;
    if (!json_array_size(names))
        cause = err_cause("action_request_validation_exception", "Validation Failed: 1: One of [index/indices] is required;");
    else if (!remi && !json_array_size(aliases))
        cause = err_cause("action_request_validation_exception", "Validation Failed: 1: One of [alias/aliases] is required;");
    if (!cause && remi) {
        cause = do_remove_index(st, names);
        if (cause && !strcmp(json_string_value(json_object_get(cause, "type")), "index_not_found_exception"))
            *status = 404;
    } else if (!cause) {
        json_t *idx = match_indices(st, names, &cause);
        if (!idx) {
            *status = 404;
        } else if (add) {
            cause = do_add(st, act, idx, aliases);
        } else {
            bool partial = false;
            cause = do_remove(st, act, idx, aliases, &partial);
            *status = 404;
            if (partial) {
                add_result(st, type, names, aliases, cause);
                st->partial = true;
                cause = NULL;
            } else if (!cause) {
                add_result(st, type, names, aliases, NULL);
            }
        }
        if (idx)
            json_decref(idx);
        if (!cause && add)
            add_result(st, type, names, aliases, NULL);
    }
    json_decref(names);
    json_decref(aliases);
    return cause;
}

static json_t *check_write_indices(stage_t *st)
{
    json_t *seen = json_object();   /* alias -> index name with is_write_index */
    json_t *cause = NULL;
    for (size_t k = 0; k < st->n && !cause; k++) {
        if (st->deleted[k])
            continue;
        const char *a;
        json_t *d;
        json_object_foreach(st->aliases[k], a, d) {
            if (!json_is_true(json_object_get(d, "is_write_index")))
                continue;
            json_t *prev = json_object_get(seen, a);
            if (prev) {
                char msg[800];
                snprintf(msg, sizeof msg, "alias [%s] has more than one write index [%s,%s]", a,
                         json_string_value(prev), g_store.idx[k]->name);
                cause = err_cause("illegal_state_exception", msg);
                break;
            }
            json_object_set_new(seen, a, json_string(g_store.idx[k]->name));
        }
    }
    json_decref(seen);
    return cause;
}

static void stage_free(stage_t *st)
{
    for (size_t k = 0; k < st->n; k++)
        if (st->aliases[k])
            json_decref(st->aliases[k]);
    free(st->aliases);
    free(st->deleted);
    json_decref(st->results);
}

void handle_aliases_post(req_t *r, resp_t *rs)
{
    json_error_t e;
    json_t *body = json_loadb(r->body, r->body_len, 0, &e);
    json_t *actions = json_object_get(body, "actions");
    if (!body || !json_is_array(actions) || !json_array_size(actions)) {
        if (body) json_decref(body);
        resp_error(rs, 400, "action_request_validation_exception", "Validation Failed: 1: No action specified;");
        return;
    }
    pthread_mutex_lock(&g_store.lock);
    stage_t st = {xcalloc(g_store.n + 1, sizeof(json_t *)), xcalloc(g_store.n + 1, sizeof(bool)), g_store.n, json_array(), false};
    for (size_t k = 0; k < st.n; k++)
        st.aliases[k] = json_deep_copy(g_store.idx[k]->aliases);
    json_t *cause = NULL;
    int status = 400;
    size_t i;
    json_t *x;
    json_array_foreach(actions, i, x) if ((cause = apply_action(&st, x, &status))) break;
    if (!cause) {
        status = 400;
        cause = check_write_indices(&st);
    }
    if (cause) {
        pthread_mutex_unlock(&g_store.lock);
        stage_free(&st);
        json_decref(body);
        resp_error_obj(rs, status, cause);
        return;
    }
    /* commit: swap alias maps, then drop removed indices */
    for (size_t k = 0; k < st.n; k++) {
        json_decref(g_store.idx[k]->aliases);
        g_store.idx[k]->aliases = st.aliases[k];
        st.aliases[k] = NULL;
    }
    index_t **gone = xcalloc(st.n + 1, sizeof(index_t *));
    size_t ng = 0;
    for (size_t k = 0; k < st.n; k++)
        if (st.deleted[k])
            gone[ng++] = g_store.idx[k];
    for (size_t k = 0; k < ng; k++)
        store_delete(gone[k]);
    free(gone);
    pthread_mutex_unlock(&g_store.lock);
    json_t *out = json_pack("{s:b}", "acknowledged", 1);
    if (g_cfg.flavor == FLAVOR_ES8) {
        json_object_set_new(out, "errors", json_boolean(st.partial));
        if (st.partial)
            json_object_set(out, "action_results", st.results);
    }
    stage_free(&st);
    json_decref(body);
    resp_json(rs, 200, out);
}

/* --------------------------------------------------------------- */
/* GET /_alias                                                     */
/* --------------------------------------------------------------- */
void handle_alias_get(req_t *r, resp_t *rs, const char *index_expr, const char *names)
{
    pthread_mutex_lock(&g_store.lock);
    ixlist_t l = {0};
    json_t *cause = NULL;
    if (!resolve_read(index_expr ? index_expr : "_all", &l, &cause, false)) {
        pthread_mutex_unlock(&g_store.lock);
        resp_error_obj(rs, 404, cause);
        return;
    }
    bool all = !names || !strcmp(names, "_all") || !strcmp(names, "*");
    json_t *out = json_object();
    json_t *pats = json_array();
    if (names) {
        char *copy = xstrdup(names), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            json_array_append_new(pats, json_pack("{s:s,s:b}", "p", t, "hit", 0));
        free(copy);
    }
    for (size_t i = 0; i < l.n; i++) {
        json_t *m = json_object();
        const char *a;
        json_t *d;
        json_object_foreach(l.v[i]->aliases, a, d) {
            bool keep = !names || all;
            size_t k;
            json_t *p;
            json_array_foreach(pats, k, p) {
                if (glob_match(json_string_value(json_object_get(p, "p")), a)) {
                    keep = true;
                    json_object_set_new(p, "hit", json_true());
                }
            }
            if (keep)
                json_object_set(m, a, d);
        }
        if (json_object_size(m) || !names)
            json_object_set_new(out, l.v[i]->name, json_pack("{s:o}", "aliases", m));
        else
            json_decref(m);
    }
    pthread_mutex_unlock(&g_store.lock);
    ixlist_free(&l);
    sb_t miss = {NULL, 0, 0};
    size_t nmiss = 0, k;
    json_t *p;
    json_array_foreach(pats, k, p) {
        const char *pt = json_string_value(json_object_get(p, "p"));
        if (!json_is_true(json_object_get(p, "hit")) && !strchr(pt, '*') && strcmp(pt, "_all")) {
            if (nmiss++) sb_putc(&miss, ',');
            sb_puts(&miss, pt);
        }
    }
    json_decref(pats);
    if (nmiss) {
        char msg[1200];
        snprintf(msg, sizeof msg, "alias%s [%s] missing", nmiss > 1 ? "es" : "", miss.buf);
        json_object_set_new(out, "error", json_string(msg));
        json_object_set_new(out, "status", json_integer(404));
        resp_json(rs, 404, out);
    } else {
        resp_json(rs, (names && !all && !json_object_size(out)) ? 404 : 200, out);
    }
    sb_free(&miss);
    (void)r;
}
