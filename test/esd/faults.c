/*
 * Fault injection and authentication.
 *
 * The fault set is replaced as a whole (PUT /_esd/faults or --faults): the
 * JSON is parsed into a new struct and swapped in under the lock, so
 * counters ("first N", "every K") always start from zero for a new set.
 */
#include "esd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct rule {
    bool on;
    long long first;     /* > 0: the first N matching events */
    long long every;     /* > 0: every K-th matching event */
    long long seen;
    bool all_requests;   /* match every non-control request, not only _bulk */
} rule_t;

typedef struct faults {
    json_t *spec;
    rule_t bulk_reject;
    int bulk_reject_status;
    rule_t item_reject;
    int item_reject_status;
    double fraction;
    uint64_t rng;
    char **poison;
    int npoison;
    rule_t delay;
    int64_t delay_ms;
    rule_t drop;
    rule_t huge;
    int huge_status;
    size_t huge_bytes;
    bool huge_items;     /* {"items":[{},...]} instead of [{},...] */
    rule_t answer;       /* huge_answer: any request whose path matches */
    int answer_status;
    size_t answer_bytes;
    char *answer_path;   /* a glob of the path, without the query */
    char *answer_method; /* or NULL: any method */
    auth_user_t *users;  /* the auth fault: who may connect, and write where */
    int nusers;
} faults_t;

static pthread_mutex_t g_flock = PTHREAD_MUTEX_INITIALIZER;
static faults_t *g_faults;

static void auth_user_free(auth_user_t *u)
{
    free(u->basic);
    free(u->api_key);
    for (int i = 0; i < u->nindices; i++)
        free(u->indices[i]);
    free(u->indices);
    free(u->roles);
}

static void faults_free(faults_t *f)
{
    if (!f)
        return;
    if (f->spec)
        json_decref(f->spec);
    for (int i = 0; i < f->npoison; i++)
        free(f->poison[i]);
    free(f->poison);
    free(f->answer_path);
    free(f->answer_method);
    for (int i = 0; i < f->nusers; i++)
        auth_user_free(&f->users[i]);
    free(f->users);
    free(f);
}

/* true when the event counted now is affected */
static bool rule_hit(rule_t *r)
{
    if (!r->on)
        return false;
    long long n = ++r->seen;
    if (r->first > 0)
        return n <= r->first;
    if (r->every > 0)
        return n % r->every == 0;
    return true;
}

/* --------------------------------------------------------------- */
/* parsing                                                         */
/* --------------------------------------------------------------- */
static bool bad(char *err, size_t n, const char *msg, const char *key)
{
    snprintf(err, n, msg, key);
    return false;
}

static bool parse_rule(const json_t *o, rule_t *r, const char *key, bool all_default, char *err,
                       size_t n, const char **extra)
{
    r->on = true;
    r->all_requests = all_default;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        if (!strcmp(k, "first") || !strcmp(k, "every")) {
            if (!json_is_integer(v) || json_integer_value(v) < 1)
                return bad(err, n, "[%s] first/every must be positive integers", key);
            *(strcmp(k, "first") ? &r->every : &r->first) = json_integer_value(v);
        } else if (!strcmp(k, "match")) {
            const char *m = json_string_value(v);
            if (!m || (strcmp(m, "bulk") && strcmp(m, "all")))
                return bad(err, n, "[%s] match must be \"bulk\" or \"all\"", key);
            r->all_requests = !strcmp(m, "all");
        } else {
            bool ok = false;
            for (int i = 0; extra && extra[i]; i++)
                ok |= !strcmp(extra[i], k);
            if (!ok) {
                snprintf(err, n, "[%s] unknown key [%s]", key, k);
                return false;
            }
        }
    }
    if (r->first > 0 && r->every > 0)
        return bad(err, n, "[%s] use either first or every, not both", key);
    return true;
}

static bool parse_status(const json_t *o, const char *key, const int *allowed, int *out, char *err, size_t n)
{
    const json_t *s = json_object_get(o, "status");
    if (!s) {
        *out = allowed[0];
        return true;
    }
    for (int i = 0; allowed[i]; i++)
        if (json_is_integer(s) && json_integer_value(s) == allowed[i]) {
            *out = allowed[i];
            return true;
        }
    return bad(err, n, "[%s] unsupported status", key);
}

/* A list of strings into a malloc'd array (NULL when absent); false when
 * present but not an array of strings. */
static bool string_list(const json_t *v, char ***out, int *n)
{
    size_t i;
    json_t *x;
    *out = NULL;
    *n = 0;
    if (!v)
        return true;
    if (!json_is_array(v))
        return false;
    json_array_foreach((json_t *)v, i, x) if (!json_is_string(x) || !*json_string_value(x))
        return false;
    *out = xcalloc(json_array_size(v) + 1, sizeof(char *));
    json_array_foreach((json_t *)v, i, x) (*out)[(*n)++] = xstrdup(json_string_value(x));
    return true;
}

/* One user of the auth fault: {"basic":"u:p"} or {"api_key":"ENCODED"},
 * optionally "indices" (patterns it may write; absent: every index) and
 * "roles" (named in a 403, as ES does). */
static bool parse_user(const json_t *v, auth_user_t *u, char *err, size_t n)
{
    static const char *usage =
        "[auth] a user must be {\"basic\":\"user:pass\"} or {\"api_key\":\"ENCODED\"}, "
        "with optional \"indices\" and \"roles\" (arrays of strings)";
    memset(u, 0, sizeof *u);
    u->nindices = -1;
    const char *b = json_string_value(json_object_get(v, "basic"));
    const char *a = json_string_value(json_object_get(v, "api_key"));
    if (!json_is_object(v) || (!b && !a) || (b && a) || (b && !strchr(b, ':')))
        return bad(err, n, "%s", usage);
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) if (strcmp(k, "basic") && strcmp(k, "api_key") &&
                                                 strcmp(k, "indices") && strcmp(k, "roles")) {
        snprintf(err, n, "[auth] unknown key [%s]; %s", k, usage);
        return false;
    }
    char **roles;
    int nroles;
    const json_t *ix = json_object_get(v, "indices");
    if (!string_list(ix, &u->indices, &u->nindices) || !string_list(json_object_get(v, "roles"), &roles, &nroles))
        return bad(err, n, "%s", usage);   /* auth_user_free frees what was parsed */
    if (!ix)
        u->nindices = -1;
    u->basic = b ? xstrdup(b) : NULL;
    u->api_key = a ? xstrdup(a) : NULL;
    sb_t r;
    sb_init(&r, 64);
    for (int i = 0; i < nroles; i++) {
        sb_puts(&r, i ? "," : "");
        sb_puts(&r, roles[i]);
        free(roles[i]);
    }
    free(roles);
    u->roles = sb_detach(&r, NULL);
    return true;
}

/* "auth": one user (the object itself) or {"users": [user, ...]}. */
static bool parse_auth(faults_t *f, const json_t *v, char *err, size_t n)
{
    const json_t *list = json_object_get(v, "users");
    if (!json_is_object(v) || (list && (!json_is_array(list) || !json_array_size(list) || json_object_size(v) != 1)))
        return bad(err, n, "%s", "[auth] must be a user ({\"basic\":\"user:pass\"} or {\"api_key\":\"ENCODED\"}, "
                                 "optional \"indices\" and \"roles\") or {\"users\":[user,...]}");
    size_t count = list ? json_array_size(list) : 1;
    f->users = xcalloc(count, sizeof *f->users);
    for (size_t i = 0; i < count; i++) {
        if (!parse_user(list ? json_array_get(list, i) : v, &f->users[i], err, n)) {
            auth_user_free(&f->users[i]);
            return false;
        }
        f->nusers++;
    }
    return true;
}

/* "huge_answer": {"path": glob, "method": M, "status": S, "bytes": N} and
 * first/every: the requests whose path matches get {"a":[{},{},...]}. */
static bool parse_huge_answer(faults_t *f, const json_t *v, char *err, size_t n)
{
    static const int answer_st[] = {200, 404, 500, 0};
    static const char *answer_keys[] = {"status", "bytes", "path", "method", NULL};
    const char *k = "huge_answer";
    if (!json_is_object(v)) return bad(err, n, "[%s] must be an object", k);
    if (!parse_status(v, k, answer_st, &f->answer_status, err, n) ||
        !parse_rule(v, &f->answer, k, true, err, n, answer_keys))
        return false;
    const json_t *by = json_object_get(v, "bytes");
    const char *path = json_string_value(json_object_get(v, "path"));
    const json_t *method = json_object_get(v, "method");
    if (by && (!json_is_integer(by) || json_integer_value(by) < 16 ||
               json_integer_value(by) > (json_int_t)1 << 30))
        return bad(err, n, "[%s] bytes must be an integer from 16 to 1073741824", k);
    if (!path || path[0] != '/')
        return bad(err, n, "[%s] path must be a path pattern starting with / (* matches any characters)", k);
    if (method && (!json_is_string(method) || !*json_string_value(method)))
        return bad(err, n, "[%s] method must be an HTTP method", k);
    f->answer_bytes = by ? (size_t)json_integer_value(by) : (size_t)64 << 20;
    f->answer_path = xstrdup(path);
    f->answer_method = method ? xstrdup(json_string_value(method)) : NULL;
    return true;
}

static bool parse_one(faults_t *f, const char *k, const json_t *v, char *err, size_t n)
{
    static const int bulk_st[] = {429, 500, 502, 503, 504, 0};
    static const int item_st[] = {429, 503, 500, 0};
    static const char *st_keys[] = {"status", NULL};
    static const char *item_keys[] = {"status", "fraction", "seed", NULL};
    static const char *delay_keys[] = {"ms", NULL};
    if (!strcmp(k, "bulk_reject")) {
        if (!json_is_object(v)) return bad(err, n, "[%s] must be an object", k);
        return parse_status(v, k, bulk_st, &f->bulk_reject_status, err, n) &&
               parse_rule(v, &f->bulk_reject, k, false, err, n, st_keys);
    }
    if (!strcmp(k, "item_reject")) {
        if (!json_is_object(v)) return bad(err, n, "[%s] must be an object", k);
        if (!parse_status(v, k, item_st, &f->item_reject_status, err, n) ||
            !parse_rule(v, &f->item_reject, k, false, err, n, item_keys))
            return false;
        const json_t *fr = json_object_get(v, "fraction"), *sd = json_object_get(v, "seed");
        if (fr && (!json_is_number(fr) || json_number_value(fr) < 0 || json_number_value(fr) > 1))
            return bad(err, n, "[%s] fraction must be a number between 0 and 1", k);
        if (sd && !json_is_integer(sd))
            return bad(err, n, "[%s] seed must be an integer", k);
        f->fraction = fr ? json_number_value(fr) : 1.0;
        f->rng = sd ? (uint64_t)json_integer_value(sd) : 42;
        return true;
    }
    if (!strcmp(k, "poison_field")) {
        json_t *arr = json_is_string(v) ? json_pack("[O]", v) : json_incref((json_t *)v);
        size_t i;
        json_t *x;
        bool ok = json_is_array(arr) && json_array_size(arr);
        json_array_foreach(arr, i, x) ok &= json_is_string(x);
        if (ok) {
            f->poison = xcalloc(json_array_size(arr), sizeof(char *));
            json_array_foreach(arr, i, x) f->poison[f->npoison++] = xstrdup(json_string_value(x));
        }
        json_decref(arr);
        return ok ? true : bad(err, n, "[%s] must be a field name or an array of field names", k);
    }
    if (!strcmp(k, "delay_ms")) {
        if (json_is_integer(v) && json_integer_value(v) >= 0) {
            f->delay.on = true;
            f->delay.all_requests = true;
            f->delay_ms = json_integer_value(v);
            return true;
        }
        if (!json_is_object(v) || !json_is_integer(json_object_get(v, "ms")) ||
            json_integer_value(json_object_get(v, "ms")) < 0)
            return bad(err, n, "[%s] must be a number of milliseconds or {\"ms\":N,...}", k);
        f->delay_ms = json_integer_value(json_object_get(v, "ms"));
        return parse_rule(v, &f->delay, k, true, err, n, delay_keys);
    }
    if (!strcmp(k, "drop")) {
        if (!json_is_object(v)) return bad(err, n, "[%s] must be an object", k);
        return parse_rule(v, &f->drop, k, false, err, n, NULL);
    }
    if (!strcmp(k, "huge_body")) {
        static const int huge_st[] = {200, 500, 0};
        static const char *huge_keys[] = {"status", "bytes", "shape", NULL};
        if (!json_is_object(v)) return bad(err, n, "[%s] must be an object", k);
        if (!parse_status(v, k, huge_st, &f->huge_status, err, n) ||
            !parse_rule(v, &f->huge, k, false, err, n, huge_keys))
            return false;
        const json_t *by = json_object_get(v, "bytes"), *sh = json_object_get(v, "shape");
        if (by && (!json_is_integer(by) || json_integer_value(by) < 16 ||
                   json_integer_value(by) > (json_int_t)1 << 30))
            return bad(err, n, "[%s] bytes must be an integer from 16 to 1073741824", k);
        if (sh && (!json_is_string(sh) || (strcmp(json_string_value(sh), "array") &&
                                           strcmp(json_string_value(sh), "items"))))
            return bad(err, n, "[%s] shape must be \"array\" or \"items\"", k);
        f->huge_bytes = by ? (size_t)json_integer_value(by) : (size_t)64 << 20;
        f->huge_items = sh && !strcmp(json_string_value(sh), "items");
        return true;
    }
    if (!strcmp(k, "huge_answer"))
        return parse_huge_answer(f, v, err, n);
    if (!strcmp(k, "auth"))
        return parse_auth(f, v, err, n);
    snprintf(err, n, "unknown fault [%s]; known: bulk_reject, item_reject, poison_field, delay_ms, drop, huge_body, huge_answer, auth", k);
    return false;
}

bool faults_set(const json_t *spec, char *err, size_t n)
{
    if (!json_is_object(spec))
        return bad(err, n, "%s", "faults must be a JSON object");
    faults_t *f = xcalloc(1, sizeof *f);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)spec, k, v) {
        if (!parse_one(f, k, v, err, n)) {
            faults_free(f);
            return false;
        }
    }
    f->spec = json_deep_copy(spec);
    pthread_mutex_lock(&g_flock);
    faults_t *old = g_faults;
    g_faults = f;
    pthread_mutex_unlock(&g_flock);
    faults_free(old);
    return true;
}

json_t *faults_get(void)
{
    pthread_mutex_lock(&g_flock);
    json_t *j = g_faults ? json_deep_copy(g_faults->spec) : json_object();
    pthread_mutex_unlock(&g_flock);
    return j;
}

void faults_clear(void)
{
    pthread_mutex_lock(&g_flock);
    faults_t *old = g_faults;
    g_faults = NULL;
    pthread_mutex_unlock(&g_flock);
    faults_free(old);
}

/* --------------------------------------------------------------- */
/* decisions                                                       */
/* --------------------------------------------------------------- */
void faults_pre_request(bool is_bulk, pre_fault_t *out)
{
    out->drop = false;
    out->delay_ms = 0;
    pthread_mutex_lock(&g_flock);
    faults_t *f = g_faults;
    if (f) {
        if ((is_bulk || f->drop.all_requests) && rule_hit(&f->drop))
            out->drop = true;
        else if ((is_bulk || f->delay.all_requests) && rule_hit(&f->delay))
            out->delay_ms = f->delay_ms;
    }
    pthread_mutex_unlock(&g_flock);
}

int faults_bulk_reject(void)
{
    int st = 0;
    pthread_mutex_lock(&g_flock);
    if (g_faults && rule_hit(&g_faults->bulk_reject))
        st = g_faults->bulk_reject_status;
    pthread_mutex_unlock(&g_flock);
    return st;
}

int faults_huge_body(size_t *bytes, bool *items_shape)
{
    int st = 0;
    pthread_mutex_lock(&g_flock);
    if (g_faults && rule_hit(&g_faults->huge)) {
        st = g_faults->huge_status;
        *bytes = g_faults->huge_bytes;
        *items_shape = g_faults->huge_items;
    }
    pthread_mutex_unlock(&g_flock);
    return st;
}

/* Only the requests the pattern matches count for first/every. */
int faults_huge_answer(const char *method, const char *path, size_t *bytes)
{
    int st = 0;
    pthread_mutex_lock(&g_flock);
    faults_t *f = g_faults;
    if (f && f->answer.on && glob_match(f->answer_path, path) &&
        (!f->answer_method || !strcmp(f->answer_method, method)) && rule_hit(&f->answer)) {
        st = f->answer_status;
        *bytes = f->answer_bytes;
    }
    pthread_mutex_unlock(&g_flock);
    return st;
}

/* Deterministic: the n-th item since the fault set decides from a seeded
 * generator, so a test with the same items sees the same rejections. */
int faults_item_reject(void)
{
    int st = 0;
    pthread_mutex_lock(&g_flock);
    faults_t *f = g_faults;
    if (f && rule_hit(&f->item_reject)) {
        double x = (double)(splitmix64(&f->rng) >> 11) * (1.0 / 9007199254740992.0);
        if (x < f->fraction)
            st = f->item_reject_status;
    }
    pthread_mutex_unlock(&g_flock);
    return st;
}

bool faults_has_poison(void)
{
    pthread_mutex_lock(&g_flock);
    bool p = g_faults && g_faults->npoison;
    pthread_mutex_unlock(&g_flock);
    return p;
}

bool faults_poison(const json_t *src, const char *raw, size_t len, char *field, size_t fsz)
{
    (void)raw;
    (void)len;
    bool hit = false;
    pthread_mutex_lock(&g_flock);
    for (int i = 0; g_faults && src && i < g_faults->npoison && !hit; i++) {
        if (json_object_get(src, g_faults->poison[i])) {
            snprintf(field, fsz, "%s", g_faults->poison[i]);
            hit = true;
        }
    }
    pthread_mutex_unlock(&g_flock);
    return hit;
}

/* --------------------------------------------------------------- */
/* authentication                                                  */
/* --------------------------------------------------------------- */
static void deny(req_t *r, resp_t *rs, const char *reason)
{
    json_t *c = err_cause("security_exception", reason);
    json_object_set_new(c, "header", json_pack("{s:[s,s]}", "WWW-Authenticate",
                                               "Basic realm=\"security\", charset=\"UTF-8\"", "ApiKey"));
    resp_error_obj(rs, 401, c);
    resp_add_header(rs, "WWW-Authenticate", "Basic realm=\"security\", charset=\"UTF-8\"");
    resp_add_header(rs, "WWW-Authenticate", "ApiKey");
    (void)r;
}

/* The principal of a user allowed in, for the per-item privilege checks
 * (NULL when it may write everywhere). */
static principal_t *principal_of(const auth_user_t *u, const char *name)
{
    if (u->nindices < 0)
        return NULL;
    principal_t *p = xcalloc(1, sizeof *p);
    p->user = xstrdup(name);
    p->roles = xstrdup(u->roles ? u->roles : "");
    p->api_key = u->api_key != NULL;
    p->indices = xcalloc((size_t)u->nindices + 1, sizeof(char *));
    for (int i = 0; i < u->nindices; i++)
        p->indices[p->nindices++] = xstrdup(u->indices[i]);
    return p;
}

void principal_free(principal_t *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nindices; i++)
        free(p->indices[i]);
    free(p->indices);
    free(p->user);
    free(p->roles);
    free(p);
}

/* Decodes "Basic <b64>" into dec ("user:pass"); false when it is not one. */
static bool basic_credentials(const char *h, char *dec, size_t decsz)
{
    if (strncasecmp(h, "Basic ", 6))
        return false;
    int n = b64_decode(h + 6, strlen(h + 6), dec, decsz);
    return n > 0;
}

/* Which user of the fault (or of --auth) the header names; 1 when found
 * (*who set for a restricted user), 0 when auth is off, -1 when refused. */
static int find_user(const char *h, principal_t **who, char *user, size_t usz)
{
    char dec[512] = "";
    bool basic = h && basic_credentials(h, dec, sizeof dec);
    const char *key = h && !strncasecmp(h, "ApiKey ", 7) ? h + 7 : NULL;
    int found = -1;
    *who = NULL;
    if (basic) {
        snprintf(user, usz, "%s", dec);
        char *colon = strchr(user, ':');
        if (colon)
            *colon = '\0';
    }
    pthread_mutex_lock(&g_flock);
    if (g_faults && g_faults->nusers) {
        for (int i = 0; i < g_faults->nusers && found < 0; i++) {
            const auth_user_t *u = &g_faults->users[i];
            if (basic && u->basic && !strcmp(dec, u->basic)) {
                *who = principal_of(u, user);
                found = 1;
            } else if (key && u->api_key && !strcmp(key, u->api_key)) {
                char id[512] = "";
                b64_decode(key, strlen(key), id, sizeof id);
                char *colon = strchr(id, ':');
                if (colon)
                    *colon = '\0';
                *who = principal_of(u, id);
                found = 1;
            }
        }
    } else if (!g_cfg.auth_basic && !g_cfg.auth_apikey) {
        found = 0;
    } else if ((basic && g_cfg.auth_basic && !strcmp(dec, g_cfg.auth_basic)) ||
               (key && g_cfg.auth_apikey && !strcmp(key, g_cfg.auth_apikey))) {
        found = 1;
    }
    pthread_mutex_unlock(&g_flock);
    return found;
}

bool auth_check(req_t *r, resp_t *rs)
{
    const char *h = req_hdr(r, "Authorization");
    char user[512] = "";
    char msg[1200];
    int found = find_user(h && *h ? h : NULL, &r->who, user, sizeof user);
    if (found >= 0)
        return true;
    if (!h || !*h)
        snprintf(msg, sizeof msg, "missing authentication credentials for REST request [%s]", r->path);
    else if (!strncasecmp(h, "Basic ", 6))
        snprintf(msg, sizeof msg, "unable to authenticate user [%s] for REST request [%s]", user, r->path);
    else
        snprintf(msg, sizeof msg, "unable to authenticate with provided credentials and anonymous access is not allowed for this request");
    deny(r, rs, msg);
    return false;
}

bool principal_may_write(const principal_t *p, const char *name)
{
    if (!p)
        return true;
    for (int i = 0; i < p->nindices; i++)
        if (glob_match(p->indices[i], name))
            return true;
    return false;
}

json_t *principal_denied_cause(const principal_t *p, const char *index)
{
    char msg[1500];
    if (p->api_key)
        snprintf(msg, sizeof msg,
                 "action [indices:data/write/bulk[s]] is unauthorized for API key id [%s] of user [%s] "
                 "on indices [%s], this action is granted by the index privileges "
                 "[create_doc,create,delete,index,write,all]",
                 p->user, "esd_api_key_owner", index);
    else
        snprintf(msg, sizeof msg,
                 "action [indices:data/write/bulk[s]] is unauthorized for user [%s] with effective roles [%s] "
                 "on indices [%s], this action is granted by the index privileges "
                 "[create_doc,create,delete,index,write,all]",
                 p->user, p->roles, index);
    return err_cause("security_exception", msg);
}
