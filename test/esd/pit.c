/*
 * Points in time: POST /{index}/_pit and DELETE /_pit (Elasticsearch 7.10+),
 * /{index}/_search/point_in_time and /_search/point_in_time[/_all]
 * (OpenSearch 2.x), and the registry a search with "pit" reads.
 *
 * A PIT holds, for each concrete index it was opened on (a "member", ES's
 * shard: esd has one shard per index), a reference to the snapshot the index
 * searched at that moment (store.c): later writes and refreshes replace the
 * index's snapshot and leave the PIT's untouched.  Members are ordered by
 * index name, as ES orders shards, and a member's position is the shard
 * index in its _shard_doc values.
 *
 * Expiry follows ES's ReaderContext: a PIT expires when keep_alive has
 * elapsed since its last use; each search with a keep_alive raises it to
 * max(current, given).  Expired PITs are freed by the refresh thread
 * (store.c, every 50 ms) or by the next PIT request, whichever comes first.
 * Everything here runs under g_store.lock, except pits_open().
 */
#include "esd.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pit_member {
    char *index;             /* concrete index name */
    char uuid[23];           /* which incarnation of that name */
    uint64_t ctx_id;         /* the shard context id ES names in errors */
    snapshot_t *snap;        /* owned reference; NULL: nothing refreshed yet */
} pit_member_t;

typedef struct pit {
    uint64_t serial;         /* what the id looks up */
    char *id;                /* the encoded id handed out */
    int64_t created_ms;      /* epoch ms (OpenSearch's creation_time) */
    int64_t keep_alive_ms;
    int64_t last_used;       /* mono_ms() */
    pit_member_t *m;
    size_t nm;
} pit_t;

/* What an id says, decoded without the registry: enough to name the
 * indices and context ids in a 404 when the PIT is gone. */
typedef struct pit_key {
    uint64_t serial;
    size_t nm;
    char **index;
    uint64_t *ctx_id;
} pit_key_t;

static pit_t **g_pits;
static size_t g_npits, g_cappits;
static size_t g_open_count;  /* mirrors g_npits for lock-free readers */
static uint64_t g_next_serial = 1, g_next_ctx = 1;

static const char ID_MAGIC[4] = {'e', 's', 'd', 'P'};

size_t pits_open(void)
{
    return __atomic_load_n(&g_open_count, __ATOMIC_RELAXED);
}

static void count_changed(void)
{
    __atomic_store_n(&g_open_count, g_npits, __ATOMIC_RELAXED);
}

/* --------------------------------------------------------------- */
/* ids: URL-safe base64 with padding, as ES's Base64.getUrlEncoder  */
/* --------------------------------------------------------------- */
static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *b64url_encode(const unsigned char *in, size_t n)
{
    char *out = xmalloc((n + 2) / 3 * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n) v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = B64URL[(v >> 18) & 63];
        out[o++] = B64URL[(v >> 12) & 63];
        out[o++] = i + 1 < n ? B64URL[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? B64URL[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* Java's URL decoder: the URL alphabet only, padding optional.  Returns the
 * decoded length, or -1 (the bad character in *bad, or -1 for a bad length). */
static long b64url_decode(const char *in, unsigned char *out, int *bad)
{
    size_t n = strlen(in), o = 0;
    unsigned acc = 0;
    int bits = 0;
    *bad = -1;
    while (n && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *p = memchr(B64URL, in[i], 64);
        if (!p) {
            *bad = (unsigned char)in[i];
            return -1;
        }
        acc = (acc << 6) | (unsigned)(p - B64URL);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)o;
}

static void put_u64(sb_t *s, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        sb_putc(s, (char)(v >> (i * 8)));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* magic | serial u64 | member count u16 | per member: ctx id u64, name
 * length u16, name */
static char *id_encode(const pit_t *p)
{
    sb_t s;
    sb_init(&s, 64);
    sb_append(&s, ID_MAGIC, 4);
    put_u64(&s, p->serial);
    sb_putc(&s, (char)(p->nm >> 8));
    sb_putc(&s, (char)p->nm);
    for (size_t i = 0; i < p->nm; i++) {
        size_t len = strlen(p->m[i].index);
        put_u64(&s, p->m[i].ctx_id);
        sb_putc(&s, (char)(len >> 8));
        sb_putc(&s, (char)len);
        sb_append(&s, p->m[i].index, len);
    }
    char *id = b64url_encode((const unsigned char *)s.buf, s.len);
    sb_free(&s);
    return id;
}

static void key_free(pit_key_t *k)
{
    for (size_t i = 0; i < k->nm; i++)
        free(k->index[i]);
    free(k->index);
    free(k->ctx_id);
    memset(k, 0, sizeof *k);
}

/* false when id is not one esd issues (ES: IllegalArgumentException) */
static bool id_decode(const char *id, pit_key_t *k, int *bad_char)
{
    memset(k, 0, sizeof *k);
    unsigned char *buf = xmalloc(strlen(id) + 1);
    long n = b64url_decode(id, buf, bad_char);
    const unsigned char *p = buf, *end = buf + (n > 0 ? n : 0);
    bool ok = n >= 14 && !memcmp(p, ID_MAGIC, 4);
    if (ok) {
        k->serial = get_u64(p + 4);
        k->nm = (size_t)p[12] << 8 | p[13];
        k->index = xcalloc(k->nm ? k->nm : 1, sizeof(char *));
        k->ctx_id = xcalloc(k->nm ? k->nm : 1, sizeof(uint64_t));
        p += 14;
        for (size_t i = 0; ok && i < k->nm; i++) {
            ok = end - p >= 10;
            size_t len = ok ? ((size_t)p[8] << 8 | p[9]) : 0;
            ok = ok && (size_t)(end - p) >= 10 + len && len > 0;
            if (ok) {
                k->ctx_id[i] = get_u64(p);
                k->index[i] = xstrndup((const char *)p + 10, len);
                p += 10 + len;
            }
        }
        ok = ok && p == end;
    }
    free(buf);
    if (!ok)
        key_free(k);
    return ok;
}

/* --------------------------------------------------------------- */
/* time values: Elasticsearch's TimeValue.parseTimeValue            */
/* --------------------------------------------------------------- */
static json_t *iae(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *iae(const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_cause("illegal_argument_exception", msg);
}

/* the number before the unit: a Java long, no fraction */
static json_t *time_number(const char *input, const char *num, const char *setting, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(num, &end, 10);
    bool is_long = *num && !isspace((unsigned char)*num) && !*end && !errno;
    if (!is_long) {
        errno = 0;
        (void)strtod(num, &end);
        if (*num && !*end && !errno)
            return iae("failed to parse [%s], fractional time values are not supported", input);
        return iae("failed to parse [%s]", input);
    }
    if (v < -1)
        return iae("failed to parse setting [%s] with value [%s] as a time value: negative durations are not supported",
                   setting, input);
    *out = v;
    return NULL;
}

/* "-0*1" and "0+", the unit-less values TimeValue accepts */
static bool is_minus_one(const char *n)
{
    size_t l = strlen(n);
    if (l < 2 || n[0] != '-' || n[l - 1] != '1')
        return false;
    return strspn(n + 1, "0") == l - 2;
}

static bool is_zero(const char *n)
{
    return *n && strspn(n, "0") == strlen(n);
}

/* NULL (and *ms) when s is a valid time value, else the 400 cause */
static json_t *time_value(const char *s, const char *setting, int64_t *ms)
{
    static const struct { const char *unit; double ms; } units[] = {
        {"nanos", 1e-6}, {"micros", 1e-3}, {"ms", 1}, {"s", 1000},
        {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    char norm[256];
    size_t len = strlen(s);
    if (len >= sizeof norm)
        return iae("failed to parse [%s]", s);
    size_t a = 0, b = len;
    while (a < b && isspace((unsigned char)s[a])) a++;
    while (b > a && isspace((unsigned char)s[b - 1])) b--;
    for (size_t i = a; i < b; i++)
        norm[i - a] = (char)tolower((unsigned char)s[i]);
    norm[b - a] = '\0';
    size_t nl = b - a;
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        size_t ul = strlen(units[u].unit);
        if (nl < ul || strcmp(norm + nl - ul, units[u].unit))
            continue;
        /* minutes are case-sensitive: 'M' would be months */
        if (!strcmp(units[u].unit, "m") && (!len || s[len - 1] != 'm'))
            continue;
        char num[256];
        snprintf(num, sizeof num, "%.*s", (int)(nl - ul), norm);
        size_t nb = strlen(num);
        while (nb && isspace((unsigned char)num[nb - 1])) num[--nb] = '\0';
        char *np = num;
        while (isspace((unsigned char)*np)) np++;
        long long v = 0;
        json_t *e = time_number(s, np, setting, &v);
        if (e)
            return e;
        double total = (double)v * units[u].ms;
        *ms = total > 9e18 ? INT64_MAX : (int64_t)total;
        return NULL;
    }
    if (is_minus_one(norm)) {
        *ms = -1;
        return NULL;
    }
    if (is_zero(norm)) {
        *ms = 0;
        return NULL;
    }
    return iae("failed to parse setting [%s] with value [%s] as a time value: unit is missing or unrecognized",
               setting, s);
}

/* --------------------------------------------------------------- */
/* registry                                                        */
/* --------------------------------------------------------------- */
static void pit_free(pit_t *p)
{
    for (size_t i = 0; i < p->nm; i++) {
        free(p->m[i].index);
        snapshot_release(p->m[i].snap);
    }
    free(p->m);
    free(p->id);
    free(p);
}

static void pit_remove_at(size_t i)
{
    pit_free(g_pits[i]);
    g_pits[i] = g_pits[--g_npits];
    count_changed();
}

static bool expired(const pit_t *p, int64_t now)
{
    return now - p->last_used > p->keep_alive_ms;
}

size_t pits_expire(bool all)
{
    int64_t now = mono_ms();
    size_t freed = 0;
    for (size_t i = 0; i < g_npits;) {
        if (all || expired(g_pits[i], now)) {
            pit_remove_at(i);
            freed++;
        } else {
            i++;
        }
    }
    return freed;
}

void pits_clear(void)
{
    pits_expire(true);
    free(g_pits);
    g_pits = NULL;
    g_npits = g_cappits = 0;
}

static long pit_find(uint64_t serial)
{
    for (size_t i = 0; i < g_npits; i++)
        if (g_pits[i]->serial == serial)
            return (long)i;
    return -1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(index_t *const *)a)->name, (*(index_t *const *)b)->name);
}

/* a new PIT over the resolved indices (sorted by name in place) */
static pit_t *pit_new(ixlist_t *ixs, int64_t keep_alive_ms)
{
    qsort(ixs->v, ixs->n, sizeof(index_t *), by_name);
    pit_t *p = xcalloc(1, sizeof *p);
    p->serial = g_next_serial++;
    p->created_ms = now_ms();
    p->keep_alive_ms = keep_alive_ms;
    p->last_used = mono_ms();
    p->nm = ixs->n;
    p->m = xcalloc(p->nm ? p->nm : 1, sizeof(pit_member_t));
    for (size_t i = 0; i < p->nm; i++) {
        p->m[i].index = xstrdup(ixs->v[i]->name);
        memcpy(p->m[i].uuid, ixs->v[i]->uuid, sizeof p->m[i].uuid);
        p->m[i].ctx_id = g_next_ctx++;
        p->m[i].snap = snapshot_ref(ixs->v[i]->snap);
    }
    p->id = id_encode(p);
    if (g_npits == g_cappits) {
        g_cappits = g_cappits ? g_cappits * 2 : 16;
        g_pits = xrealloc(g_pits, g_cappits * sizeof *g_pits);
    }
    g_pits[g_npits++] = p;
    count_changed();
    return p;
}

json_t *pits_json(void)
{
    pits_expire(false);
    int64_t now = mono_ms();
    json_t *arr = json_array();
    for (size_t i = 0; i < g_npits; i++) {
        const pit_t *p = g_pits[i];
        json_t *ix = json_array();
        for (size_t k = 0; k < p->nm; k++)
            json_array_append_new(ix, json_string(p->m[k].index));
        json_array_append_new(arr, json_pack("{s:s,s:o,s:I,s:I}", "id", p->id, "indices", ix,
                                             "keep_alive_ms", (json_int_t)p->keep_alive_ms,
                                             "expires_in_ms",
                                             (json_int_t)(p->keep_alive_ms - (now - p->last_used))));
    }
    return json_pack("{s:I,s:I,s:o}", "open_pits", (json_int_t)g_npits, "max_open_pits",
                     (json_int_t)g_cfg.max_open_pits, "pits", arr);
}

/* --------------------------------------------------------------- */
/* errors                                                          */
/* --------------------------------------------------------------- */
/* search_phase_execution_exception "all shards failed", one failed shard
 * per index, each with its own reason (consumed) */
static void shards_failed(resp_t *rs, int status, const char *phase, char *const *index,
                          json_t **reason, size_t n)
{
    json_t *roots = json_array(), *failed = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append(roots, reason[i]);
        json_array_append_new(failed, json_pack("{s:i,s:s,s:s,s:O}", "shard", 0, "index", index[i],
                                                "node", "esd-node-0", "reason", reason[i]));
    }
    json_t *err = json_pack("{s:o,s:s,s:s,s:s,s:b,s:o}", "root_cause", roots, "type",
                            "search_phase_execution_exception", "reason", "all shards failed",
                            "phase", phase, "grouped", 1, "failed_shards", failed);
    if (n)
        json_object_set(err, "caused_by", reason[0]);
    for (size_t i = 0; i < n; i++)
        json_decref(reason[i]);
    resp_json(rs, status, json_pack("{s:o,s:i}", "error", err, "status", status));
    rs->no_filter = true;
}

/* 404: the contexts of a PIT that is closed, expired or never was */
static void context_missing(resp_t *rs, const pit_key_t *k)
{
    json_t **reasons = xcalloc(k->nm ? k->nm : 1, sizeof(json_t *));
    for (size_t i = 0; i < k->nm; i++) {
        char msg[64];
        snprintf(msg, sizeof msg, "No search context found for id [%llu]", (unsigned long long)k->ctx_id[i]);
        reasons[i] = err_cause("search_context_missing_exception", msg);
    }
    shards_failed(rs, 404, "query", k->index, reasons, k->nm);
    free(reasons);
}

static void invalid_id(resp_t *rs, const char *id)
{
    resp_error(rs, 400, "illegal_argument_exception", "invalid id: [%s]", id);
}

/* --------------------------------------------------------------- */
/* search with "pit"                                               */
/* --------------------------------------------------------------- */
json_t *pit_ref_parse(const json_t *pit, pit_ref_t *out)
{
    out->id = NULL;
    out->keep_alive_ms = -1;
    if (!json_is_object(pit))
        return err_cause("x_content_parse_exception", "[pit] point in time must be an object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)pit, k, v) {
        char msg[600];
        if (!strcmp(k, "id") && json_is_string(v)) {
            out->id = json_string_value(v);
        } else if (!strcmp(k, "keep_alive") && json_is_string(v)) {
            json_t *cause = time_value(json_string_value(v), "keep_alive", &out->keep_alive_ms);
            if (cause) {
                json_t *e = err_cause("x_content_parse_exception", "[pit] failed to parse field [keep_alive]");
                json_object_set_new(e, "caused_by", cause);
                return e;
            }
        } else if (!strcmp(k, "id") || !strcmp(k, "keep_alive")) {
            snprintf(msg, sizeof msg, "[pit] %s doesn't support values of type: %s", k,
                     json_is_number(v) ? "VALUE_NUMBER" : json_is_object(v) ? "START_OBJECT" :
                     json_is_array(v) ? "START_ARRAY" : json_is_null(v) ? "VALUE_NULL" : "VALUE_BOOLEAN");
            return err_cause("x_content_parse_exception", msg);
        } else {
            snprintf(msg, sizeof msg, "[pit] unknown field [%s]", k);
            return err_cause("x_content_parse_exception", msg);
        }
    }
    if (!out->id)
        return err_cause("illegal_argument_exception", "point in time id is not provided");
    return NULL;
}

/* the live index a member was opened on, or NULL when it was deleted */
static index_t *member_index(const pit_member_t *m)
{
    index_t *ix = store_find(m->index);
    return ix && !strcmp(ix->uuid, m->uuid) ? ix : NULL;
}

bool pit_acquire(const pit_ref_t *ref, resp_t *rs, ixlist_t *ixs, search_target_t **targets,
                 size_t *n)
{
    pit_key_t key;
    int bad;
    if (!id_decode(ref->id, &key, &bad)) {
        invalid_id(rs, ref->id);
        return false;
    }
    pits_expire(false);
    long at = pit_find(key.serial);
    pit_t *p = at >= 0 ? g_pits[at] : NULL;
    /* ES frees the contexts of a deleted index; esd frees the whole PIT then
     * (ES would still answer the other indices' hits, as a partial result) */
    for (size_t i = 0; p && i < p->nm; i++) {
        if (!member_index(&p->m[i])) {
            pit_remove_at((size_t)at);
            p = NULL;
        }
    }
    if (!p && key.nm) {
        context_missing(rs, &key);
        key_free(&key);
        return false;
    }
    key_free(&key);
    *targets = xcalloc(p && p->nm ? p->nm : 1, sizeof(search_target_t));
    *n = p ? p->nm : 0;
    for (size_t i = 0; i < *n; i++) {
        index_t *ix = member_index(&p->m[i]);
        (*targets)[i] = (search_target_t){ix, p->m[i].snap};
        ixs->v = xrealloc(ixs->v, (ixs->n + 1) * sizeof(index_t *));
        ixs->v[ixs->n++] = ix;
        ixs->cap = ixs->n;
    }
    if (p) {
        if (ref->keep_alive_ms > p->keep_alive_ms)
            p->keep_alive_ms = ref->keep_alive_ms;
        p->last_used = mono_ms();
    }
    return true;
}

/* --------------------------------------------------------------- */
/* open                                                            */
/* --------------------------------------------------------------- */
/* body of an open request: ES 8 knows index_filter (not supported here) */
static bool open_body_ok(req_t *r, resp_t *rs)
{
    if (!r->body_len)
        return true;
    json_error_t e;
    json_t *b = json_loadb(r->body, r->body_len, 0, &e);
    if (!b || !json_is_object(b)) {
        resp_error(rs, 400, "parse_exception", "failed to parse open point in time request body: %s",
                   b ? "must be an object" : e.text);
        if (b) json_decref(b);
        return false;
    }
    const char *k = json_object_size(b) ? json_object_iter_key(json_object_iter(b)) : NULL;
    if (k && !strcmp(k, "index_filter"))
        resp_error(rs, 400, "illegal_argument_exception",
                   "esd: [index_filter] of an open point in time request is not supported");
    else if (k)
        resp_error(rs, 400, "x_content_parse_exception", "[open_point_in_time_request] unknown field [%s]", k);
    json_decref(b);
    return !k;
}

static void too_many(resp_t *rs, const ixlist_t *ixs, bool os)
{
    char msg[400];
    snprintf(msg, sizeof msg,
             "Trying to create too many Point In Time contexts. Must be less than or equal to: [%zu]. This limit can be set by changing the [search.max_open_pit_context] setting.",
             g_cfg.max_open_pits);
    json_t **reasons = xcalloc(ixs->n ? ixs->n : 1, sizeof(json_t *));
    char **names = xcalloc(ixs->n ? ixs->n : 1, sizeof(char *));
    for (size_t i = 0; i < ixs->n; i++) {
        reasons[i] = err_cause(flavor_rejected_type(), msg);
        names[i] = ixs->v[i]->name;
    }
    if (ixs->n) {
        shards_failed(rs, 429, os ? "create_pit" : "open_search_context", names, reasons, ixs->n);
    } else {
        resp_error(rs, 429, flavor_rejected_type(), "%s", msg);
    }
    free(reasons);
    free(names);
}

static void open_answer(resp_t *rs, const pit_t *p, bool os)
{
    json_t *shards = json_pack("{s:I,s:I,s:i,s:i}", "total", (json_int_t)p->nm, "successful",
                               (json_int_t)p->nm, "skipped", 0, "failed", 0);
    json_t *out;
    if (os) {
        out = json_pack("{s:s,s:o,s:I}", "pit_id", p->id, "_shards", shards, "creation_time",
                        (json_int_t)p->created_ms);
    } else if (g_cfg.flavor == FLAVOR_ES8) {
        out = json_pack("{s:s,s:o}", "id", p->id, "_shards", shards);
    } else {
        out = json_pack("{s:s}", "id", p->id);   /* 7.x answers the id only */
        json_decref(shards);
    }
    resp_json(rs, 200, out);
}

/* expr NULL: POST /_pit without an index */
static void pit_open(req_t *r, resp_t *rs, const char *expr, bool os)
{
    const char *ka = req_arg(r, "keep_alive");
    int64_t keep = 0;
    json_t *cause = ka ? time_value(ka, "keep_alive", &keep) : NULL;
    if (cause) {
        resp_error_obj(rs, 400, cause);
        return;
    }
    const char *msgs[2];
    int n = 0;
    if (!expr)
        msgs[n++] = "[index] is not specified";
    if (!ka)
        msgs[n++] = os ? "keep alive not specified" : "[keep_alive] is not specified";
    if (n) {
        resp_validation(rs, msgs, n);
        return;
    }
    if (!os && !open_body_ok(r, rs))
        return;
    pthread_mutex_lock(&g_store.lock);
    pits_expire(false);
    ixlist_t ixs = {0};
    if (!resolve_read(expr, &ixs, &cause, req_arg_bool(r, "ignore_unavailable", false))) {
        pthread_mutex_unlock(&g_store.lock);
        resp_error_obj(rs, 404, cause);
        return;
    }
    if (g_npits >= g_cfg.max_open_pits)
        too_many(rs, &ixs, os);
    else
        open_answer(rs, pit_new(&ixs, keep), os);
    pthread_mutex_unlock(&g_store.lock);
    ixlist_free(&ixs);
}

void handle_pit_open(req_t *r, resp_t *rs, const char *expr)
{
    pit_open(r, rs, expr, false);
}

/* --------------------------------------------------------------- */
/* close (Elasticsearch)                                           */
/* --------------------------------------------------------------- */
/* The id of DELETE /_pit, as ClosePointInTimeRequest.fromXContent reads it;
 * NULL with the 400 answered. */
static json_t *close_body(req_t *r, resp_t *rs, const char **id)
{
    if (!r->body_len) {
        resp_error(rs, 400, "parse_exception", "request body is required");
        return NULL;
    }
    json_error_t e;
    json_t *b = json_loadb(r->body, r->body_len, 0, &e);
    if (!b || !json_is_object(b)) {
        resp_error(rs, 400, "illegal_argument_exception", "%s",
                   b ? "Malformed content, must start with an object" : e.text);
        if (b) json_decref(b);
        return NULL;
    }
    const char *k;
    json_t *v;
    *id = NULL;
    json_object_foreach(b, k, v) {
        if (strcmp(k, "id")) {
            resp_error(rs, 400, "illegal_argument_exception",
                       "Unknown parameter [%s] in request body or parameter is of the wrong type[%s] ", k,
                       json_is_string(v) ? "VALUE_STRING" : json_is_number(v) ? "VALUE_NUMBER" : "START_OBJECT");
            json_decref(b);
            return NULL;
        }
        if (!json_is_string(v)) {
            resp_error(rs, 400, "illegal_argument_exception", "the request must contain only [id field");
            json_decref(b);
            return NULL;
        }
        *id = json_string_value(v);
    }
    if (!*id || !**id) {
        resp_error(rs, 400, "illegal_argument_exception", "search context id is is not provided");
        json_decref(b);
        return NULL;
    }
    return b;
}

void handle_pit_close(req_t *r, resp_t *rs)
{
    const char *id;
    json_t *body = close_body(r, rs, &id);
    if (!body)
        return;
    pit_key_t key;
    int bad;
    if (!id_decode(id, &key, &bad)) {
        if (bad >= 0)
            resp_error(rs, 400, "illegal_argument_exception", "Illegal base64 character %x", bad);
        else
            invalid_id(rs, id);
        json_decref(body);
        return;
    }
    pthread_mutex_lock(&g_store.lock);
    pits_expire(false);
    long at = pit_find(key.serial);
    size_t freed = 0;
    if (at >= 0) {
        freed = g_pits[at]->nm;
        pit_remove_at((size_t)at);
    }
    pthread_mutex_unlock(&g_store.lock);
    /* ClosePointInTimeResponse: succeeded when every context was freed;
     * 404 when none was and not all succeeded */
    bool succeeded = freed == key.nm;
    resp_json(rs, succeeded || freed ? 200 : 404,
              json_pack("{s:b,s:I}", "succeeded", succeeded, "num_freed", (json_int_t)freed));
    key_free(&key);
    json_decref(body);
}

/* --------------------------------------------------------------- */
/* OpenSearch: create, delete, list                                */
/* --------------------------------------------------------------- */
/* the ids of DELETE /_search/point_in_time: "pit_id" a string or an array */
static bool os_delete_ids(req_t *r, resp_t *rs, json_t **body, json_t **ids)
{
    json_error_t e;
    *body = r->body_len ? json_loadb(r->body, r->body_len, 0, &e) : NULL;
    if (r->body_len && (!*body || !json_is_object(*body))) {
        resp_error(rs, 400, "illegal_argument_exception", "Failed to parse request body");
        if (*body) json_decref(*body);
        return false;
    }
    *ids = json_array();
    const json_t *v = json_object_get(*body, "pit_id");
    const char *k;
    json_t *x;
    json_object_foreach(*body, k, x) {
        if (strcmp(k, "pit_id")) {
            resp_error(rs, 400, "illegal_argument_exception", "Unknown parameter [%s] in request body", k);
            return false;
        }
    }
    if (json_is_string(v)) {
        json_array_append(*ids, (json_t *)v);
    } else if (json_is_array(v)) {
        size_t i;
        json_array_foreach((json_t *)v, i, x) {
            if (!json_is_string(x)) {
                resp_error(rs, 400, "illegal_argument_exception", "pit_id array element should only contain pit_id");
                return false;
            }
            json_array_append(*ids, x);
        }
    }
    if (!json_array_size(*ids)) {
        const char *msg = "no pit ids specified";
        resp_validation(rs, &msg, 1);
        return false;
    }
    return true;
}

static void os_delete(req_t *r, resp_t *rs, bool all)
{
    json_t *body = NULL, *ids = NULL, *out = json_array();
    if (!all && !os_delete_ids(r, rs, &body, &ids)) {
        if (body) json_decref(body);
        if (ids) json_decref(ids);
        json_decref(out);
        return;
    }
    size_t i;
    json_t *x;
    json_array_foreach(ids, i, x) {
        pit_key_t key;
        int bad;
        if (!id_decode(json_string_value(x), &key, &bad)) {
            invalid_id(rs, json_string_value(x));
            json_decref(body);
            json_decref(ids);
            json_decref(out);
            return;
        }
        key_free(&key);
    }
    pthread_mutex_lock(&g_store.lock);
    pits_expire(false);
    if (all) {
        for (size_t k = 0; k < g_npits; k++)
            json_array_append_new(out, json_pack("{s:b,s:s}", "successful", 1, "pit_id", g_pits[k]->id));
        pits_expire(true);
    }
    json_array_foreach(ids, i, x) {
        pit_key_t key;
        int bad;
        id_decode(json_string_value(x), &key, &bad);
        long at = pit_find(key.serial);
        if (at >= 0)
            pit_remove_at((size_t)at);
        /* OpenSearch counts a context already gone as deleted */
        json_array_append_new(out, json_pack("{s:b,s:O}", "successful", 1, "pit_id", x));
        key_free(&key);
    }
    pthread_mutex_unlock(&g_store.lock);
    resp_json(rs, 200, json_pack("{s:o}", "pits", out));
    if (body) json_decref(body);
    if (ids) json_decref(ids);
}

static void os_list(resp_t *rs)
{
    json_t *out = json_array();
    pthread_mutex_lock(&g_store.lock);
    pits_expire(false);
    for (size_t k = 0; k < g_npits; k++)
        json_array_append_new(out, json_pack("{s:s,s:I,s:I}", "pit_id", g_pits[k]->id, "creation_time",
                                             (json_int_t)g_pits[k]->created_ms, "keep_alive",
                                             (json_int_t)g_pits[k]->keep_alive_ms));
    pthread_mutex_unlock(&g_store.lock);
    resp_json(rs, 200, json_pack("{s:o}", "pits", out));
}

void handle_os_pit(req_t *r, resp_t *rs, const char *expr)
{
    bool post = !strcmp(r->method, "POST"), del = !strcmp(r->method, "DELETE");
    if (expr) {
        if (post)
            pit_open(r, rs, expr, true);
        else
            resp_error_string(rs, 405, "Incorrect HTTP method for uri [%s] and method [%s], allowed: [POST]",
                              r->path, r->method);
    } else if (r->nseg == 2) {
        if (del)
            os_delete(r, rs, false);
        else
            resp_error_string(rs, 405, "Incorrect HTTP method for uri [%s] and method [%s], allowed: [DELETE]",
                              r->path, r->method);
    } else if (r->nseg == 3 && !strcmp(r->seg[2], "_all")) {
        if (del)
            os_delete(r, rs, true);
        else if (!strcmp(r->method, "GET"))
            os_list(rs);
        else
            resp_error_string(rs, 405, "Incorrect HTTP method for uri [%s] and method [%s], allowed: [GET, DELETE]",
                              r->path, r->method);
    } else {
        resp_error_string(rs, 400, "no handler found for uri [%s] and method [%s]", r->path, r->method);
    }
}
