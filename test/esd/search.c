/*
 * _search and _count over the refreshed snapshot of each index, or over the
 * snapshots of a point in time (pit.c).
 *
 * Supported queries: match_all, match_none, ids, term, terms, match (exact,
 * case-insensitive), range, exists, bool.  Sorting on source fields with ES's
 * mapping rules (text fields and, on ES 8, _id are refused), _doc, _score,
 * _shard_doc (with a PIT), from/size, search_after and track_total_hits.
 * The walks of a whole index (match_all on _shard_doc or _id) take their
 * pages straight from the snapshots (search_page.c); the rest match and
 * sort every document here.
 */
#include "search.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --------------------------------------------------------------- */
/* field access                                                    */
/* --------------------------------------------------------------- */
static const json_t *get_path(const json_t *src, const char *path)
{
    const json_t *v = json_object_get(src, path);   /* literal dotted key */
    if (v)
        return v;
    const char *dot = strchr(path, '.');
    if (!dot)
        return NULL;
    char head[256];
    snprintf(head, sizeof head, "%.*s", (int)(dot - path), path);
    const json_t *o = json_object_get(src, head);
    if (json_is_object(o))
        return get_path(o, dot + 1);
    return NULL;
}

static const json_t *field_value(const doc_t *d, const char *path, json_t **tmp)
{
    *tmp = NULL;
    if (!strcmp(path, "_id")) {
        *tmp = json_stringn(d->id, d->id_len);
        return *tmp;
    }
    const json_t *v = get_path(d->src, path);
    size_t n = strlen(path);
    if (!v && n > 8 && !strcmp(path + n - 8, ".keyword")) {
        char base[512];
        snprintf(base, sizeof base, "%.*s", (int)(n - 8), path);
        v = get_path(d->src, base);
    }
    return v;
}

static bool scalar_eq(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_is_string(a) && json_is_string(b))
        return strcmp(json_string_value(a), json_string_value(b)) == 0;
    if (json_is_number(a) && json_is_string(b)) {
        char *end;
        double d = strtod(json_string_value(b), &end);
        return !*end && d == json_number_value(a);
    }
    if (json_is_string(a) && json_is_number(b))
        return scalar_eq(b, a);
    if (json_is_boolean(a) && json_is_string(b))
        return !strcmp(json_string_value(b), json_is_true(a) ? "true" : "false");
    if (json_is_string(a) && json_is_boolean(b))
        return scalar_eq(b, a);
    return json_equal(a, b);
}

/* any element of v (array or scalar) satisfies pred */
static bool any_value(const json_t *v, bool (*pred)(const json_t *, const json_t *), const json_t *arg)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)v, i, x) if (any_value(x, pred, arg)) return true;
        return false;
    }
    return v && !json_is_null(v) && pred(v, arg);
}

static bool pred_eq(const json_t *v, const json_t *want)
{
    return scalar_eq(want, v);
}

static bool pred_ieq(const json_t *v, const json_t *want)
{
    if (json_is_string(v) && json_is_string(want))
        return strcasecmp(json_string_value(v), json_string_value(want)) == 0;
    return scalar_eq(want, v);
}

static int cmp_scalar(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        return x < y ? -1 : x > y;
    }
    if (json_is_string(a) && json_is_string(b))
        return strcmp(json_string_value(a), json_string_value(b));
    if (json_is_number(a) && json_is_string(b))
        return -1;
    if (json_is_string(a) && json_is_number(b))
        return 1;
    if (json_is_boolean(a) && json_is_boolean(b))
        return (int)json_is_true(a) - (int)json_is_true(b);
    return 0;
}

static bool pred_range(const json_t *v, const json_t *r)
{
    const json_t *b;
    if ((b = json_object_get(r, "gte")) && cmp_scalar(v, b) < 0) return false;
    if ((b = json_object_get(r, "gt")) && cmp_scalar(v, b) <= 0) return false;
    if ((b = json_object_get(r, "lte")) && cmp_scalar(v, b) > 0) return false;
    if ((b = json_object_get(r, "lt")) && cmp_scalar(v, b) >= 0) return false;
    return true;
}

/* --------------------------------------------------------------- */
/* queries                                                         */
/* --------------------------------------------------------------- */
static json_t *qerr(const char *fmt, const char *arg)
{
    char msg[600];
    snprintf(msg, sizeof msg, fmt, arg);
    return err_cause("parsing_exception", msg);
}

/* Validates a query tree once, before any document is looked at. */
static json_t *query_check(const json_t *q)
{
    if (!json_is_object(q) || json_object_size(q) != 1)
        return qerr("%s", "[_na] query malformed, must start with start_object");
    const char *kind = json_object_iter_key(json_object_iter((json_t *)q));
    const json_t *body = json_object_iter_value(json_object_iter((json_t *)q));
    if (!strcmp(kind, "match_all") || !strcmp(kind, "match_none"))
        return NULL;
    if (!strcmp(kind, "ids"))
        return json_is_array(json_object_get(body, "values")) ? NULL : qerr("[ids] query malformed, no [values]%s", "");
    if (!strcmp(kind, "term") || !strcmp(kind, "terms") || !strcmp(kind, "match") ||
        !strcmp(kind, "range") || !strcmp(kind, "match_phrase"))
        return json_is_object(body) && json_object_size(body) >= 1 ? NULL : qerr("[%s] query malformed, no field", kind);
    if (!strcmp(kind, "exists"))
        return json_is_string(json_object_get(body, "field")) ? NULL : qerr("[exists] must be provided with a [field]%s", "");
    if (!strcmp(kind, "bool")) {
        static const char *parts[] = {"must", "filter", "should", "must_not"};
        for (int i = 0; i < 4; i++) {
            const json_t *p = json_object_get(body, parts[i]);
            if (json_is_object(p)) {
                json_t *e = query_check(p);
                if (e) return e;
            } else if (json_is_array(p)) {
                size_t k;
                json_t *x;
                json_array_foreach((json_t *)p, k, x) {
                    json_t *e = query_check(x);
                    if (e) return e;
                }
            }
        }
        return NULL;
    }
    return qerr("unknown query [%s]", kind);
}

static bool query_match(const json_t *q, const doc_t *d);

static bool match_list(const json_t *p, const doc_t *d, bool all, bool empty_result)
{
    if (!p)
        return empty_result;
    if (json_is_object(p))
        return query_match(p, d);
    if (!json_array_size(p))
        return empty_result;
    size_t i;
    json_t *x;
    json_array_foreach((json_t *)p, i, x) {
        bool m = query_match(x, d);
        if (all && !m) return false;
        if (!all && m) return true;
    }
    return all;
}

static bool match_field(const char *kind, const json_t *body, const doc_t *d)
{
    const char *field = json_object_iter_key(json_object_iter((json_t *)body));
    const json_t *arg = json_object_iter_value(json_object_iter((json_t *)body));
    json_t *tmp;
    const json_t *v = field_value(d, field, &tmp);
    bool m = false;
    if (!strcmp(kind, "term")) {
        const json_t *want = json_is_object(arg) ? json_object_get(arg, "value") : arg;
        m = any_value(v, pred_eq, want);
    } else if (!strcmp(kind, "match") || !strcmp(kind, "match_phrase")) {
        const json_t *want = json_is_object(arg) ? json_object_get(arg, "query") : arg;
        m = any_value(v, pred_ieq, want);
    } else if (!strcmp(kind, "terms")) {
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)arg, i, x) if ((m = any_value(v, pred_eq, x))) break;
    } else if (!strcmp(kind, "range")) {
        m = any_value(v, pred_range, arg);
    }
    if (tmp)
        json_decref(tmp);
    return m;
}

static bool query_match(const json_t *q, const doc_t *d)
{
    if (!q)
        return true;
    const char *kind = json_object_iter_key(json_object_iter((json_t *)q));
    const json_t *body = json_object_iter_value(json_object_iter((json_t *)q));
    if (!strcmp(kind, "match_all"))
        return true;
    if (!strcmp(kind, "match_none"))
        return false;
    if (!strcmp(kind, "ids")) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(body, "values"), i, x)
            if (json_is_string(x) && json_string_length(x) == d->id_len &&
                !memcmp(json_string_value(x), d->id, d->id_len))
                return true;
        return false;
    }
    if (!strcmp(kind, "exists")) {
        json_t *tmp;
        const json_t *v = field_value(d, json_string_value(json_object_get(body, "field")), &tmp);
        bool m = v && !json_is_null(v) && !(json_is_array(v) && !json_array_size(v));
        if (tmp) json_decref(tmp);
        return m;
    }
    if (!strcmp(kind, "bool")) {
        const json_t *should = json_object_get(body, "should");
        bool has_must = json_object_get(body, "must") || json_object_get(body, "filter");
        if (!match_list(json_object_get(body, "must"), d, true, true) ||
            !match_list(json_object_get(body, "filter"), d, true, true))
            return false;
        const json_t *mn = json_object_get(body, "must_not");
        if (mn && match_list(mn, d, false, false))
            return false;
        if (should && json_array_size(should) + json_is_object(should) > 0) {
            const json_t *msm = json_object_get(body, "minimum_should_match");
            bool need = !has_must || (msm && json_integer_value(msm) > 0);
            if (need)
                return match_list(should, d, false, false);
        }
        return true;
    }
    return match_field(kind, body, d);
}

/* --------------------------------------------------------------- */
/* sorting                                                         */
/* --------------------------------------------------------------- */
static void sort_free(sctx_t *sc)
{
    for (int i = 0; i < sc->nkeys; i++)
        free(sc->keys[i].field);
    free(sc->keys);
}

static json_t *sort_add(sctx_t *sc, const char *field, const char *order, const ixlist_t *ixs,
                        bool unmapped_ok)
{
    if (order && strcmp(order, "asc") && strcmp(order, "desc"))
        return qerr("[sort] unknown order [%s]", order);
    sc->keys = xrealloc(sc->keys, (size_t)(sc->nkeys + 1) * sizeof(sortkey_t));
    sortkey_t *k = &sc->keys[sc->nkeys++];
    memset(k, 0, sizeof *k);
    k->is_doc = !strcmp(field, "_doc");
    k->is_shard_doc = !strcmp(field, "_shard_doc") && g_cfg.flavor != FLAVOR_OPENSEARCH;
    k->is_score = !strcmp(field, "_score");
    k->is_id = !strcmp(field, "_id");
    k->desc = order ? !strcmp(order, "desc") : k->is_score;
    if (k->is_doc || k->is_score || k->is_shard_doc)
        return NULL;
    k->field = xstrdup(field);
    if (k->is_id) {
        if (g_cfg.flavor == FLAVOR_ES8)
            return err_cause("illegal_argument_exception",
                             "Fielddata access on the _id field is disallowed, you can re-enable it by updating the dynamic cluster setting: indices.id_field_data.enabled");
        return NULL;
    }
    bool mapped = false;
    for (size_t i = 0; i < ixs->n; i++) {
        const json_t *fm = mapping_field(ixs->v[i], field);
        if (!fm)
            continue;
        mapped = true;
        const char *t = json_string_value(json_object_get(fm, "type"));
        if (t && !strcmp(t, "text")) {
            char msg[900];
            snprintf(msg, sizeof msg,
                     "Fielddata is disabled on [%s] in [%s]. Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [%s] in order to load field data by uninverting the inverted index. Note that this can use significant memory.",
                     field, ixs->v[i]->name, field);
            return err_cause("illegal_argument_exception", msg);
        }
    }
    if (!mapped && !unmapped_ok && ixs->n) {
        char msg[600];
        snprintf(msg, sizeof msg, "No mapping found for [%s] in order to sort on", field);
        return err_cause("query_shard_exception", msg);
    }
    return NULL;
}

static json_t *parse_sort(const json_t *spec, const char *arg, sctx_t *sc, const ixlist_t *ixs)
{
    if (arg) {
        char *copy = xstrdup(arg), *save = NULL;
        json_t *e = NULL;
        for (char *t = strtok_r(copy, ",", &save); t && !e; t = strtok_r(NULL, ",", &save)) {
            char *colon = strchr(t, ':');
            if (colon)
                *colon++ = '\0';
            e = sort_add(sc, t, colon, ixs, false);
        }
        free(copy);
        return e;
    }
    if (!spec)
        return NULL;
    if (json_is_string(spec) || json_is_object(spec)) {
        json_t *arr = json_array();
        json_array_append((json_t *)arr, (json_t *)spec);
        json_t *e = parse_sort(arr, NULL, sc, ixs);
        json_decref(arr);
        return e;
    }
    size_t i;
    json_t *x;
    json_array_foreach((json_t *)spec, i, x) {
        json_t *e = NULL;
        if (json_is_string(x)) {
            e = sort_add(sc, json_string_value(x), NULL, ixs, false);
        } else if (json_is_object(x) && json_object_size(x) == 1) {
            const char *f = json_object_iter_key(json_object_iter(x));
            json_t *o = json_object_iter_value(json_object_iter(x));
            const char *order = json_is_string(o) ? json_string_value(o)
                                                  : json_string_value(json_object_get(o, "order"));
            e = sort_add(sc, f, order, ixs, json_object_get(o, "unmapped_type") != NULL);
        } else {
            e = qerr("%s", "[sort] malformed sort element");
        }
        if (e)
            return e;
    }
    return NULL;
}

/* sort value of a hit for key k; *missing set when the doc has no value */
static const json_t *sort_value(const hit_t *h, const sortkey_t *k, json_t **tmp)
{
    *tmp = NULL;
    const json_t *v = field_value(h->d, k->field, tmp);
    if (json_is_array(v)) {
        const json_t *best = NULL;
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)v, i, x) {
            if (json_is_null(x)) continue;
            if (!best || (k->desc ? cmp_scalar(x, best) > 0 : cmp_scalar(x, best) < 0))
                best = x;
        }
        v = best;
    }
    return json_is_null(v) ? NULL : v;
}

static int cmp_key(const hit_t *a, const hit_t *b, const sortkey_t *k)
{
    if (k->is_score)
        return 0;
    if (k->is_doc || k->is_shard_doc) {
        long long x = k->is_doc ? a->ord : a->shard_doc, y = k->is_doc ? b->ord : b->shard_doc;
        int c = x < y ? -1 : x > y;
        return k->desc ? -c : c;
    }
    if (k->is_id) {   /* what comparing their json_stringn copies gives, without them */
        int c = strcmp(a->d->id, b->d->id);
        return k->desc ? -c : c;
    }
    json_t *ta, *tb;
    const json_t *va = sort_value(a, k, &ta), *vb = sort_value(b, k, &tb);
    int c;
    if (!va || !vb)
        c = (!va && !vb) ? 0 : !va ? 1 : -1;   /* missing values sort last */
    else
        c = k->desc ? -cmp_scalar(va, vb) : cmp_scalar(va, vb);
    if (ta) json_decref(ta);
    if (tb) json_decref(tb);
    return c;
}

int cmp_hits(const void *x, const void *y, void *arg)
{
    const sctx_t *sc = arg;
    const hit_t *a = x, *b = y;
    for (int i = 0; i < sc->nkeys; i++) {
        int c = cmp_key(a, b, &sc->keys[i]);
        if (c)
            return c;
    }
    return a->ord < b->ord ? -1 : a->ord > b->ord;
}

/* the sort values ES would print for a hit */
static json_t *hit_sort_values(const hit_t *h, const sctx_t *sc)
{
    json_t *arr = json_array();
    for (int i = 0; i < sc->nkeys; i++) {
        const sortkey_t *k = &sc->keys[i];
        if (k->is_doc || k->is_shard_doc) {
            json_array_append_new(arr, json_integer(k->is_doc ? h->ord : h->shard_doc));
        } else if (k->is_score) {
            json_array_append_new(arr, json_real(1.0));
        } else {
            json_t *tmp;
            const json_t *v = sort_value(h, k, &tmp);
            if (v && json_is_boolean(v))
                json_array_append_new(arr, json_integer(json_is_true(v)));
            else if (v)
                json_array_append(arr, (json_t *)v);
            else
                json_array_append_new(arr, json_null());
            if (tmp) json_decref(tmp);
        }
    }
    return arr;
}

/* (search.h) h against the search_after values, key by key as cmp_key */
bool hit_after(const hit_t *h, const sctx_t *sc, const json_t *sa)
{
    for (int i = 0; i < sc->nkeys; i++) {
        const sortkey_t *k = &sc->keys[i];
        const json_t *want = json_array_get(sa, (size_t)i);
        int c;
        if (k->is_score) {
            continue;
        } else if (k->is_doc || k->is_shard_doc) {
            long long w = (long long)json_number_value(want), v = k->is_doc ? h->ord : h->shard_doc;
            c = v < w ? -1 : v > w;
            if (k->desc) c = -c;
        } else {
            json_t *tmp;
            const json_t *v = sort_value(h, k, &tmp);
            if (!v || json_is_null(want))
                c = (!v && json_is_null(want)) ? 0 : !v ? 1 : -1;
            else
                c = k->desc ? -cmp_scalar(v, want) : cmp_scalar(v, want);
            if (tmp) json_decref(tmp);
        }
        if (c)
            return c > 0;
    }
    return false;
}

/* --------------------------------------------------------------- */
/* endpoints                                                       */
/* --------------------------------------------------------------- */
static void search_error(resp_t *rs, json_t *inner, const ixlist_t *ixs)
{
    json_t *c = err_cause("search_phase_execution_exception", "all shards failed");
    json_object_set_new(c, "phase", json_string("query"));
    json_object_set_new(c, "grouped", json_true());
    json_t *fs = json_array();
    if (ixs && ixs->n) {
        json_t *f = json_pack("{s:i,s:s,s:s,s:O}", "shard", 0, "index", ixs->v[0]->name, "node",
                              "esd-node-0", "reason", inner);
        json_array_append_new(fs, f);
    }
    json_object_set_new(c, "failed_shards", fs);
    json_object_set_new(c, "caused_by", inner);
    resp_error_obj(rs, 400, c);
}

static json_t *load_body(req_t *r, resp_t *rs)
{
    if (!r->body_len)
        return json_object();
    json_error_t e;
    json_t *b = json_parse_precise(r->body, r->body_len, 0, &e);
    if (!b || !json_is_object(b)) {
        if (b) json_decref(b);
        resp_error(rs, 400, "parse_exception", "failed to parse search request body: %s", e.text);
    }
    return b;
}

static void collect(const search_target_t *tg, size_t ntg, const json_t *query, hit_t **out, size_t *n)
{
    size_t cap = 0;
    for (size_t i = 0; i < ntg; i++)
        cap += tg[i].snap ? tg[i].snap->n : 0;
    *out = xmalloc((cap ? cap : 1) * sizeof(hit_t));
    *n = 0;
    long long base = 0;
    for (size_t i = 0; i < ntg; i++) {
        const snapshot_t *s = tg[i].snap;
        size_t sn = s ? s->n : 0;
        for (size_t k = 0; k < sn; k++)
            if (query_match(query, s->docs[k]))
                (*out)[(*n)++] = (hit_t){tg[i].ix, s->docs[k], base + (long long)k,
                                         (long long)i << 32 | (long long)k};
        base += (long long)sn;
    }
}

/* Every document the query matches, sorted: any query, any sort. */
static void page_general(const search_target_t *tg, size_t ntg, const json_t *query, const sctx_t *sc,
                         const json_t *sa, long long from, long long size, page_t *pg)
{
    size_t n;
    collect(tg, ntg, query, &pg->hits, &n);
    if (sc->nkeys)
        qsort_r(pg->hits, n, sizeof *pg->hits, cmp_hits, (void *)sc);
    size_t start = 0;
    if (sa)
        while (start < n && !hit_after(&pg->hits[start], sc, sa))
            start++;
    start += (size_t)from;
    pg->total = n;
    pg->start = start;
    pg->count = start < n ? n - start : 0;
    if ((long long)pg->count > size)
        pg->count = (size_t)size;
}

static bool int_param(req_t *r, const json_t *body, const char *key, long long dflt, long long *out)
{
    const char *a = req_arg(r, key);
    if (a)
        return parse_long_strict(a, out);
    const json_t *v = json_object_get(body, key);
    if (!v) {
        *out = dflt;
        return true;
    }
    if (!json_is_integer(v))
        return false;
    *out = json_integer_value(v);
    return true;
}

static const char *known_keys[] = {"query", "size", "from", "sort", "search_after", "_source",
                                   "track_total_hits", "timeout", "seq_no_primary_term", "version",
                                   "stored_fields", "explain", "track_scores", "min_score", "pit",
                                   NULL};

static json_t *check_keys(const json_t *body)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        bool ok = false;
        for (int i = 0; known_keys[i]; i++)
            ok |= !strcmp(k, known_keys[i]);
        if (!ok)
            return qerr("esd: unsupported search request key [%s]", k);
    }
    return NULL;
}

static void write_hits(sb_t *s, req_t *r, const json_t *body, hit_t *hits, size_t n,
                       const sctx_t *sc, const char *filter, bool with_source)
{
    bool seqno = json_is_true(json_object_get(body, "seq_no_primary_term")) ||
                 req_arg_bool(r, "seq_no_primary_term", false);
    bool version = json_is_true(json_object_get(body, "version")) || req_arg_bool(r, "version", false);
    for (size_t i = 0; i < n; i++) {
        hit_t *h = &hits[i];
        if (i)
            sb_putc(s, ',');
        sb_putc(s, '{');
        write_hit_meta(s, h->ix, h->d, r->compat);
        sb_puts(s, sc->nkeys ? ",\"_score\":null" : ",\"_score\":1.0");
        if (version)
            sb_printf(s, ",\"_version\":%lld", (long long)h->d->version);
        if (seqno)
            sb_printf(s, ",\"_seq_no\":%lld,\"_primary_term\":1", (long long)h->d->seq_no);
        if (h->d->routing) {
            sb_puts(s, ",\"_routing\":");
            sb_json_cstr(s, h->d->routing);
        }
        if (with_source) {
            sb_puts(s, ",\"_source\":");
            write_source(s, h->d, filter);
        }
        if (sc->nkeys) {
            json_t *sv = hit_sort_values(h, sc);
            sb_puts(s, ",\"sort\":");
            sb_json_value(s, sv);
            json_decref(sv);
        }
        sb_putc(s, '}');
    }
}

static void write_total(sb_t *s, req_t *r, const json_t *body, size_t total)
{
    const json_t *tth = json_object_get(body, "track_total_hits");
    const char *targ = req_arg(r, "track_total_hits");
    long long limit = 10000;
    if (json_is_false(tth) || (targ && !strcmp(targ, "false")))
        return;
    if (json_is_true(tth) || (targ && !strcmp(targ, "true")))
        limit = -1;
    else if (json_is_integer(tth))
        limit = json_integer_value(tth);
    if (req_arg_bool(r, "rest_total_hits_as_int", false)) {
        sb_printf(s, "\"total\":%zu,", total);
        return;
    }
    bool gte = limit >= 0 && (long long)total > limit;
    sb_printf(s, "\"total\":{\"value\":%lld,\"relation\":\"%s\"},",
              gte ? limit : (long long)total, gte ? "gte" : "eq");
}

/* whether the request sorts on name, in the body or in ?sort= */
static bool sorts_on(const json_t *spec, const char *arg, const char *name)
{
    if (arg) {
        size_t n = strlen(name);
        for (const char *p = arg; *p;) {
            size_t len = strcspn(p, ",");
            if ((len == n || (len > n && p[n] == ':')) && !strncmp(p, name, n))
                return true;
            p += len + (p[len] == ',');
        }
        return false;
    }
    if (json_is_string(spec))
        return !strcmp(json_string_value(spec), name);
    if (json_is_object(spec))
        return json_object_get(spec, name) != NULL;
    size_t i;
    json_t *x;
    json_array_foreach((json_t *)spec, i, x) if (sorts_on(x, NULL, name)) return true;
    return false;
}

/* What RestSearchAction and SearchRequest.validate refuse before any index
 * is looked at: a PIT comes with its own indices, routing and preference,
 * and _shard_doc only means something within a PIT. */
static bool pit_rules_ok(req_t *r, resp_t *rs, const json_t *body, bool has_pit)
{
    static const char *opts[] = {"ignore_unavailable", "allow_no_indices", "expand_wildcards",
                                 "ignore_throttled", NULL};
    const char *msgs[4];
    int n = 0;
    if (has_pit) {
        bool indices_options = false;
        for (int i = 0; opts[i]; i++)
            indices_options |= req_arg(r, opts[i]) != NULL;
        if (r->nseg == 2)
            msgs[n++] = "[indices] cannot be used with point in time. Do not specify any index with point in time.";
        if (indices_options)
            msgs[n++] = "[indicesOptions] cannot be used with point in time";
        if (req_arg(r, "routing"))
            msgs[n++] = "[routing] cannot be used with point in time";
        if (req_arg(r, "preference"))
            msgs[n++] = "[preference] cannot be used with point in time";
    } else if (g_cfg.flavor != FLAVOR_OPENSEARCH &&
               sorts_on(json_object_get(body, "sort"), req_arg(r, "sort"), "_shard_doc")) {
        msgs[n++] = "[_shard_doc] sort field cannot be used without [point in time]";
    }
    if (n)
        resp_validation(rs, msgs, n);
    return n == 0;
}

/* Checks that need no index; answers the 400 and returns false otherwise. */
static bool search_validate(req_t *r, resp_t *rs, const json_t *body, pit_ref_t *pit, bool *has_pit)
{
    json_t *e = check_keys(body);
    const json_t *query = json_object_get(body, "query");
    if (!e && query)
        e = query_check(query);
    long long size, from;
    if (!e && (!int_param(r, body, "size", 10, &size) || !int_param(r, body, "from", 0, &from) ||
               size < 0 || from < 0))
        e = qerr("%s", "[size] and [from] must be non-negative integers");
    if (!e && from + size > 10000) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "Result window is too large, from + size must be less than or equal to: [10000] but was [%lld]. See the scroll api for a more efficient way to request large data sets. This limit can be set by changing the [index.max_result_window] index level setting.",
                 from + size);
        e = err_cause("illegal_argument_exception", msg);
    }
    if (e) {
        search_error(rs, e, NULL);
        return false;
    }
    const json_t *pj = json_object_get(body, "pit");
    *has_pit = pj != NULL;
    if (pj && (e = pit_ref_parse(pj, pit))) {
        resp_error_obj(rs, 400, e);
        return false;
    }
    return pit_rules_ok(r, rs, body, *has_pit);
}

/* Elasticsearch (7.12+) appends an ascending _shard_doc to a sorted PIT
 * search whose sort does not end with one, unless search_after holds
 * exactly as many values as the sort (SearchRequest's tiebreaker rule).
 * OpenSearch 2.x adds nothing. */
static json_t *add_tiebreaker(sctx_t *sc, const json_t *sa, const ixlist_t *ixs)
{
    if (g_cfg.flavor == FLAVOR_OPENSEARCH || !sc->nkeys || sc->keys[sc->nkeys - 1].is_shard_doc)
        return NULL;
    if (sa && json_array_size(sa) != (size_t)sc->nkeys + 1)
        return NULL;
    return sort_add(sc, "_shard_doc", "asc", ixs, true);
}

/* Sorts, pages and renders; the store lock is held. */
static void search_run(req_t *r, resp_t *rs, const json_t *body, const ixlist_t *ixs,
                       const search_target_t *tg, size_t ntg, const char *pit_id, int64_t t0)
{
    long long size, from;
    int_param(r, body, "size", 10, &size);
    int_param(r, body, "from", 0, &from);
    sctx_t sc = {NULL, 0};
    json_t *e = parse_sort(json_object_get(body, "sort"), req_arg(r, "sort"), &sc, ixs);
    const json_t *sa = json_object_get(body, "search_after");
    if (!e && pit_id)
        e = add_tiebreaker(&sc, sa, ixs);
    if (!e && sa && (!json_is_array(sa) || (int)json_array_size(sa) != sc.nkeys)) {
        char msg[200];
        snprintf(msg, sizeof msg, "search_after has %zu value(s) but sort has %d.", json_array_size(sa), sc.nkeys);
        e = err_cause("illegal_argument_exception", msg);
    }
    if (e) {
        search_error(rs, e, ixs);
        sort_free(&sc);
        return;
    }
    const json_t *query = json_object_get(body, "query");
    page_t pg;
    if (!page_direct(tg, ntg, query, &sc, sa, from, size, &pg))
        page_general(tg, ntg, query, &sc, sa, from, size, &pg);
    bool with_source;
    char *filter = source_spec(json_object_get(body, "_source"), r, &with_source);
    sb_t s;
    sb_init(&s, 4096);
    sb_putc(&s, '{');
    if (pit_id) {
        sb_puts(&s, "\"pit_id\":");
        sb_json_cstr(&s, pit_id);
        sb_putc(&s, ',');
    }
    sb_printf(&s, "\"took\":%lld,\"timed_out\":false,\"_shards\":{\"total\":%zu,\"successful\":%zu,\"skipped\":0,\"failed\":0},\"hits\":{",
              (long long)(mono_ms() - t0), ntg, ntg);
    write_total(&s, r, body, pg.total);
    sb_puts(&s, sc.nkeys || !pg.count ? "\"max_score\":null,\"hits\":[" : "\"max_score\":1.0,\"hits\":[");
    write_hits(&s, r, body, pg.hits + pg.start, pg.count, &sc, filter, with_source);
    sb_puts(&s, "]}}");
    free(filter);
    free(pg.hits);
    sort_free(&sc);
    resp_sb(rs, 200, &s);
}

/* the refreshed snapshot of each resolved index */
static search_target_t *index_targets(const ixlist_t *ixs)
{
    search_target_t *tg = xcalloc(ixs->n ? ixs->n : 1, sizeof *tg);
    for (size_t i = 0; i < ixs->n; i++)
        tg[i] = (search_target_t){ixs->v[i], ixs->v[i]->snap};
    return tg;
}

void handle_search(req_t *r, resp_t *rs, const char *expr)
{
    int64_t t0 = mono_ms();
    json_t *body = load_body(r, rs);
    if (!body)
        return;
    pit_ref_t pit;
    bool has_pit = false;
    if (!search_validate(r, rs, body, &pit, &has_pit)) {
        json_decref(body);
        return;
    }
    pthread_mutex_lock(&g_store.lock);
    ixlist_t ixs = {0};
    search_target_t *tg = NULL;
    size_t ntg = 0;
    json_t *cause = NULL;
    bool ok;
    if (has_pit) {
        ok = pit_acquire(&pit, rs, &ixs, &tg, &ntg);
    } else {
        ok = resolve_read(expr, &ixs, &cause, req_arg_bool(r, "ignore_unavailable", false));
        if (ok) {
            tg = index_targets(&ixs);
            ntg = ixs.n;
        } else {
            resp_error_obj(rs, 404, cause);
        }
    }
    if (ok)
        search_run(r, rs, body, &ixs, tg, ntg, has_pit ? pit.id : NULL, t0);
    pthread_mutex_unlock(&g_store.lock);
    free(tg);
    ixlist_free(&ixs);
    json_decref(body);
}

void handle_count(req_t *r, resp_t *rs, const char *expr)
{
    json_t *body = load_body(r, rs);
    if (!body)
        return;
    const json_t *query = json_object_get(body, "query");
    json_t *e = query ? query_check(query) : NULL;
    if (e) {
        json_decref(body);
        resp_error_obj(rs, 400, e);
        return;
    }
    pthread_mutex_lock(&g_store.lock);
    ixlist_t ixs = {0};
    json_t *cause = NULL;
    if (!resolve_read(expr, &ixs, &cause, req_arg_bool(r, "ignore_unavailable", false))) {
        pthread_mutex_unlock(&g_store.lock);
        json_decref(body);
        resp_error_obj(rs, 404, cause);
        return;
    }
    size_t count = 0;
    for (size_t i = 0; i < ixs.n; i++) {
        const snapshot_t *snap = ixs.v[i]->snap;
        for (size_t k = 0; snap && k < snap->n; k++)
            count += query_match(query, snap->docs[k]);
    }
    pthread_mutex_unlock(&g_store.lock);
    json_t *out = json_pack("{s:I,s:{s:I,s:I,s:i,s:i}}", "count", (json_int_t)count, "_shards",
                            "total", (json_int_t)ixs.n, "successful", (json_int_t)ixs.n,
                            "skipped", 0, "failed", 0);
    ixlist_free(&ixs);
    json_decref(body);
    resp_json(rs, 200, out);
}
