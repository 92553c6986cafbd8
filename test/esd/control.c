/*
 * Control endpoints under /_esd/.  They bypass authentication, faults and
 * Content-Type checks so that a test can always steer the server.
 */
#include "esd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *load(req_t *r, resp_t *rs)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, JSON_DECODE_ANY, &e);
    if (!j)
        resp_error(rs, 400, "parse_exception", "invalid JSON body: %s (line %d, column %d)", e.text, e.line, e.column);
    return j;
}

static void ctl_faults(req_t *r, resp_t *rs)
{
    if (!strcmp(r->method, "GET")) {
        resp_json(rs, 200, faults_get());
    } else if (!strcmp(r->method, "DELETE")) {
        faults_clear();
        resp_json(rs, 200, json_pack("{s:b}", "acknowledged", 1));
    } else if (!strcmp(r->method, "PUT") || !strcmp(r->method, "POST")) {
        json_t *j = load(r, rs);
        if (!j)
            return;
        char err[512];
        if (faults_set(j, err, sizeof err))
            resp_json(rs, 200, json_pack("{s:b,s:O}", "acknowledged", 1, "faults", j));
        else
            resp_error(rs, 400, "illegal_argument_exception", "%s", err);
        json_decref(j);
    } else {
        resp_error_string(rs, 405, "use GET, PUT or DELETE on /_esd/faults");
    }
}

static json_t *config_json(void)
{
    static const char *fl[] = {"es8", "es7", "opensearch"};
    return json_pack("{s:b,s:b,s:I,s:b,s:I,s:I,s:s}", "discard", g_cfg.discard, "auto_create_index",
                     g_cfg.auto_create_index, "max_content_length", (json_int_t)g_cfg.max_content_length,
                     "refresh_timer", g_cfg.refresh_timer, "request_log_body_max",
                     (json_int_t)g_cfg.log_body_max, "max_open_pits", (json_int_t)g_cfg.max_open_pits,
                     "flavor", fl[g_cfg.flavor]);
}

static void ctl_config(req_t *r, resp_t *rs)
{
    if (!strcmp(r->method, "GET")) {
        resp_json(rs, 200, config_json());
        return;
    }
    json_t *j = load(r, rs);
    if (!j)
        return;
    /* validate everything before changing anything */
    const char *k;
    json_t *v;
    if (!json_is_object(j)) {
        resp_error(rs, 400, "illegal_argument_exception", "config must be a JSON object");
        json_decref(j);
        return;
    }
    json_object_foreach(j, k, v) {
        bool ok;
        if (!strcmp(k, "discard") || !strcmp(k, "auto_create_index") || !strcmp(k, "refresh_timer"))
            ok = json_is_boolean(v);
        else if (!strcmp(k, "max_content_length") || !strcmp(k, "request_log_body_max"))
            ok = json_is_integer(v) && json_integer_value(v) > 0;
        else if (!strcmp(k, "max_open_pits"))
            ok = json_is_integer(v) && json_integer_value(v) >= 0;
        else {
            resp_error(rs, 400, "illegal_argument_exception",
                       "unknown config key [%s]; known: discard, auto_create_index, max_content_length, refresh_timer, request_log_body_max, max_open_pits", k);
            json_decref(j);
            return;
        }
        if (!ok) {
            resp_error(rs, 400, "illegal_argument_exception", "bad value for config key [%s]", k);
            json_decref(j);
            return;
        }
    }
    json_object_foreach(j, k, v) {
        if (!strcmp(k, "discard")) g_cfg.discard = json_is_true(v);
        else if (!strcmp(k, "auto_create_index")) g_cfg.auto_create_index = json_is_true(v);
        else if (!strcmp(k, "refresh_timer")) g_cfg.refresh_timer = json_is_true(v);
        else if (!strcmp(k, "max_content_length")) g_cfg.max_content_length = (size_t)json_integer_value(v);
        else if (!strcmp(k, "max_open_pits")) g_cfg.max_open_pits = (size_t)json_integer_value(v);
        else g_cfg.log_body_max = (size_t)json_integer_value(v);
    }
    json_decref(j);
    resp_json(rs, 200, config_json());
}

/* GET /_esd/pits (the open PITs), POST /_esd/pits/expire (expire them all,
 * for a test of a client that must restart its walk) */
static void ctl_pits(req_t *r, resp_t *rs)
{
    bool expire = r->nseg == 3 && !strcmp(r->seg[2], "expire");
    if (expire && !strcmp(r->method, "POST")) {
        pthread_mutex_lock(&g_store.lock);
        size_t n = pits_expire(true);
        pthread_mutex_unlock(&g_store.lock);
        resp_json(rs, 200, json_pack("{s:b,s:I}", "acknowledged", 1, "expired", (json_int_t)n));
    } else if (r->nseg == 2 && !strcmp(r->method, "GET")) {
        pthread_mutex_lock(&g_store.lock);
        json_t *j = pits_json();
        pthread_mutex_unlock(&g_store.lock);
        resp_json(rs, 200, j);
    } else {
        resp_error_string(rs, 404, "unknown esd control endpoint [%s %s]", r->method, r->path);
    }
}

void handle_control(req_t *r, resp_t *rs)
{
    const char *what = r->nseg >= 2 ? r->seg[1] : "";
    bool get = !strcmp(r->method, "GET"), del = !strcmp(r->method, "DELETE");
    if (!strcmp(what, "pits") && r->nseg <= 3) {
        ctl_pits(r, rs);
    } else if (r->nseg != 2) {
        resp_error_string(rs, 404, "unknown esd control endpoint [%s]", r->path);
    } else if (!strcmp(what, "faults")) {
        ctl_faults(r, rs);
    } else if (!strcmp(what, "config") && (get || !strcmp(r->method, "PUT") || !strcmp(r->method, "POST"))) {
        ctl_config(r, rs);
    } else if (!strcmp(what, "requests") && (get || del)) {
        if (del) {
            reqlog_clear();
            resp_json(rs, 200, json_pack("{s:b}", "acknowledged", 1));
            return;
        }
        const char *n = req_arg(r, "n");
        long long cnt = 50;
        if (n && (!parse_long_strict(n, &cnt) || cnt < 0)) {
            resp_error(rs, 400, "illegal_argument_exception", "n must be a non-negative integer");
            return;
        }
        resp_json(rs, 200, json_pack("{s:o}", "requests", reqlog_json(cnt > 1000 ? 1000 : (int)cnt)));
    } else if (!strcmp(what, "stats") && (get || del)) {
        if (del)
            stats_reset();
        resp_json(rs, 200, stats_json());
    } else if (!strcmp(what, "reset") && (!strcmp(r->method, "POST") || !strcmp(r->method, "PUT"))) {
        pthread_mutex_lock(&g_store.lock);
        pits_clear();
        store_clear();
        pipelines_clear();
        pthread_mutex_unlock(&g_store.lock);
        stats_reset();
        reqlog_clear();
        faults_clear();
        resp_json(rs, 200, json_pack("{s:b}", "acknowledged", 1));
    } else {
        resp_error_string(rs, 404, "unknown esd control endpoint [%s %s]", r->method, r->path);
    }
}
