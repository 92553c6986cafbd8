/*
 * Routing of REST paths to handlers, and the response/error helpers every
 * handler uses.  Error bodies follow the ES envelope,
 * {"error":{"root_cause":[...],"type":...,"reason":...},"status":N}.
 */
#include "esd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- */
/* response helpers                                                */
/* --------------------------------------------------------------- */
void resp_json(resp_t *rs, int status, json_t *body)
{
    if (rs->json)
        json_decref(rs->json);
    rs->status = status;
    rs->json = body;
}

void resp_sb(resp_t *rs, int status, sb_t *body)
{
    sb_free(&rs->raw);
    rs->status = status;
    rs->raw = *body;
    rs->has_raw = true;
    body->buf = NULL;
    body->len = body->cap = 0;
}

/* The shape that makes a JSON tree parser allocate ~70 bytes per byte, so
 * a client can show it bounds what it parses. */
void resp_huge(resp_t *rs, int status, size_t bytes, const char *head, const char *tail)
{
    size_t hl = strlen(head), tl = strlen(tail);
    sb_t s;
    sb_init(&s, bytes + 1);
    sb_append(&s, head, hl);
    while (s.len + 3 + tl <= bytes)
        sb_append(&s, "{},", 3);
    if (s.buf[s.len - 1] == ',')
        s.len--;
    while (s.len + tl < bytes)
        sb_putc(&s, ' ');
    sb_append(&s, tail, tl);
    resp_sb(rs, status, &s);
    rs->no_filter = true;
}

void resp_empty(resp_t *rs, int status)
{
    if (rs->json)
        json_decref(rs->json);
    rs->json = NULL;
    rs->status = status;
}

void resp_add_header(resp_t *rs, const char *name, const char *val)
{
    if (rs->nhdr >= 4)
        return;
    rs->hdr_name[rs->nhdr] = name;
    rs->hdr_val[rs->nhdr] = xstrdup(val);
    rs->nhdr++;
}

json_t *err_cause(const char *type, const char *reason)
{
    json_t *c = json_object();
    json_object_set_new(c, "type", json_string(type));
    json_object_set_new(c, "reason", reason ? json_string(reason) : json_null());
    return c;
}

/* Wraps a cause into {"error":{"root_cause":[...], ...},"status":N}.  The root
 * cause is the innermost caused_by, as in ES.  Error responses are never
 * cut by filter_path: Elasticsearch disables filtering when it builds one
 * (a client must be able to read "error" and "status" whatever it asked
 * to keep). */
void resp_error_obj(resp_t *rs, int status, json_t *cause)
{
    json_t *root = cause;
    while (json_object_get(root, "caused_by"))
        root = json_object_get(root, "caused_by");
    json_t *rc = json_deep_copy(root);
    json_object_del(rc, "caused_by");
    json_t *err = json_object();
    json_t *arr = json_array();
    json_array_append_new(arr, rc);
    json_object_set_new(err, "root_cause", arr);
    json_object_update(err, cause);
    json_decref(cause);
    json_t *top = json_object();
    json_object_set_new(top, "error", err);
    json_object_set_new(top, "status", json_integer(status));
    resp_json(rs, status, top);
    rs->no_filter = true;
}

void resp_error(resp_t *rs, int status, const char *type, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    resp_error_obj(rs, status, err_cause(type, msg));
}

/* Errors raised by the REST routing layer carry a plain string (never
 * filtered either, see resp_error_obj). */
void resp_error_string(resp_t *rs, int status, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *top = json_object();
    json_object_set_new(top, "error", json_string(msg));
    json_object_set_new(top, "status", json_integer(status));
    resp_json(rs, status, top);
    rs->no_filter = true;
}

/* ES's ActionRequestValidationException: "Validation Failed: 1: a;2: b;" */
void resp_validation(resp_t *rs, const char *const *msgs, int n)
{
    char buf[2048];
    size_t len = (size_t)snprintf(buf, sizeof buf, "Validation Failed: ");
    for (int i = 0; i < n && len < sizeof buf; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%d: %s;", i + 1, msgs[i]);
    resp_error(rs, 400, "action_request_validation_exception", "%s", buf);
}

json_t *index_not_found_cause(const char *name)
{
    char msg[600];
    snprintf(msg, sizeof msg, "no such index [%s]", name);
    json_t *c = err_cause("index_not_found_exception", msg);
    json_object_set_new(c, "resource.type", json_string("index_or_alias"));
    json_object_set_new(c, "resource.id", json_string(name));
    json_object_set_new(c, "index_uuid", json_string("_na_"));
    json_object_set_new(c, "index", json_string(name));
    return c;
}

/* --------------------------------------------------------------- */
/* routing                                                         */
/* --------------------------------------------------------------- */
static bool is(const req_t *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

static bool any(const req_t *r, const char *m1, const char *m2)
{
    return is(r, m1) || (m2 && is(r, m2));
}

static void method_not_allowed(req_t *r, resp_t *rs, const char *allowed)
{
    resp_error_string(rs, 405, "Incorrect HTTP method for uri [%s] and method [%s], allowed: [%s]",
                      r->path, r->method, allowed);
}

static void no_handler(req_t *r, resp_t *rs)
{
    resp_error_string(rs, 400, "no handler found for uri [%s] and method [%s]", r->path, r->method);
}

/* endpoints that exist both as /_x and /{index}/_x */
static bool route_common(req_t *r, resp_t *rs, const char *ep, const char *target)
{
    if (strcmp(ep, "_bulk") == 0) {
        if (any(r, "POST", "PUT"))
            handle_bulk(r, rs, target);
        else
            method_not_allowed(r, rs, "POST, PUT");
    } else if (strcmp(ep, "_search") == 0) {
        if (any(r, "GET", "POST"))
            handle_search(r, rs, target ? target : "_all");
        else
            method_not_allowed(r, rs, "GET, POST");
    } else if (strcmp(ep, "_count") == 0) {
        if (any(r, "GET", "POST"))
            handle_count(r, rs, target ? target : "_all");
        else
            method_not_allowed(r, rs, "GET, POST");
    } else if (strcmp(ep, "_mget") == 0) {
        if (any(r, "GET", "POST"))
            handle_mget(r, rs, target);
        else
            method_not_allowed(r, rs, "GET, POST");
    } else if (strcmp(ep, "_refresh") == 0) {
        if (any(r, "GET", "POST"))
            handle_refresh(r, rs, target ? target : "_all");
        else
            method_not_allowed(r, rs, "GET, POST");
    } else if (strcmp(ep, "_settings") == 0) {
        if (is(r, "GET"))
            handle_settings_get(r, rs, target ? target : "_all");
        else if (is(r, "PUT"))
            handle_settings_put(r, rs, target ? target : "_all");
        else
            method_not_allowed(r, rs, "GET, PUT");
    } else if (strcmp(ep, "_mapping") == 0 || strcmp(ep, "_mappings") == 0) {
        if (is(r, "GET"))
            handle_mapping_get(r, rs, target ? target : "_all");
        else if (any(r, "PUT", "POST"))
            handle_mapping_put(r, rs, target ? target : "_all");
        else
            method_not_allowed(r, rs, "GET, PUT, POST");
    } else {
        return false;
    }
    return true;
}

static void route_index(req_t *r, resp_t *rs);

/* /_pit: Elasticsearch's close (and, on 8.x, an open without index);
 * OpenSearch has no such endpoint, and takes _pit for an index name */
static void route_pit(req_t *r, resp_t *rs)
{
    if (g_cfg.flavor == FLAVOR_OPENSEARCH)
        route_index(r, rs);
    else if (is(r, "DELETE"))
        handle_pit_close(r, rs);
    else if (is(r, "POST"))
        handle_pit_open(r, rs, NULL);
    else
        method_not_allowed(r, rs, "DELETE, POST");
}

static void route_top(req_t *r, resp_t *rs)
{
    const char *s0 = r->seg[0];
    if (!strcmp(s0, "_pit") && r->nseg == 1) {
        route_pit(r, rs);
        return;
    }
    if (!strcmp(s0, "_search") && r->nseg >= 2 && r->nseg <= 3 &&
        !strcmp(r->seg[1], "point_in_time") && g_cfg.flavor == FLAVOR_OPENSEARCH) {
        handle_os_pit(r, rs, NULL);
        return;
    }
    if (strcmp(s0, "_cluster") == 0 && r->nseg >= 2 && strcmp(r->seg[1], "health") == 0 &&
        r->nseg <= 3) {
        if (is(r, "GET"))
            handle_health(r, rs, r->nseg == 3 ? r->seg[2] : NULL);
        else
            method_not_allowed(r, rs, "GET");
        return;
    }
    if (r->nseg == 1 && route_common(r, rs, s0, NULL))
        return;
    if (strcmp(s0, "_aliases") == 0 && r->nseg == 1) {
        if (is(r, "POST"))
            handle_aliases_post(r, rs);
        else if (any(r, "GET", "HEAD"))
            handle_alias_get(r, rs, NULL, NULL);
        else
            method_not_allowed(r, rs, "POST, GET");
        return;
    }
    if (strcmp(s0, "_alias") == 0 && r->nseg <= 2) {
        if (any(r, "GET", "HEAD"))
            handle_alias_get(r, rs, NULL, r->nseg == 2 ? r->seg[1] : NULL);
        else
            method_not_allowed(r, rs, "GET, HEAD");
        return;
    }
    if (strcmp(s0, "_ingest") == 0 && r->nseg >= 2 && r->nseg <= 3 &&
        strcmp(r->seg[1], "pipeline") == 0) {
        handle_ingest(r, rs);
        return;
    }
    if (r->nseg == 1 && is(r, "PUT")) {
        handle_index_create(r, rs, s0);   /* rejected by the index name rules */
        return;
    }
    no_handler(r, rs);
}

static void route_doc(req_t *r, resp_t *rs, const char *index, const char *ep, const char *id)
{
    if (strcmp(ep, "_doc") == 0) {
        if (!id) {
            if (is(r, "POST"))
                handle_doc_write(r, rs, index, NULL, OP_INDEX, false);
            else
                method_not_allowed(r, rs, "POST");
        } else if (any(r, "GET", "HEAD")) {
            handle_get_doc(r, rs, index, id, false);
        } else if (any(r, "PUT", "POST")) {
            const char *ot = req_arg(r, "op_type");
            handle_doc_write(r, rs, index, id, OP_INDEX, ot && strcmp(ot, "create") == 0);
        } else if (is(r, "DELETE")) {
            handle_doc_write(r, rs, index, id, OP_DELETE, false);
        } else {
            method_not_allowed(r, rs, "GET, HEAD, PUT, POST, DELETE");
        }
    } else if (strcmp(ep, "_create") == 0 && id) {
        if (any(r, "PUT", "POST"))
            handle_doc_write(r, rs, index, id, OP_CREATE, true);
        else
            method_not_allowed(r, rs, "PUT, POST");
    } else if (strcmp(ep, "_update") == 0 && id) {
        if (is(r, "POST"))
            handle_doc_write(r, rs, index, id, OP_UPDATE, false);
        else
            method_not_allowed(r, rs, "POST");
    } else if (strcmp(ep, "_source") == 0 && id) {
        if (any(r, "GET", "HEAD"))
            handle_get_doc(r, rs, index, id, true);
        else
            method_not_allowed(r, rs, "GET, HEAD");
    } else {
        no_handler(r, rs);
    }
}

static void route_index(req_t *r, resp_t *rs)
{
    const char *ix = r->seg[0];
    if (r->nseg == 1) {
        if (is(r, "PUT"))
            handle_index_create(r, rs, ix);
        else if (is(r, "GET"))
            handle_index_get(r, rs, ix);
        else if (is(r, "HEAD"))
            handle_index_head(r, rs, ix);
        else if (is(r, "DELETE"))
            handle_index_delete(r, rs, ix);
        else
            method_not_allowed(r, rs, "PUT, GET, HEAD, DELETE");
        return;
    }
    const char *ep = r->seg[1];
    if (r->nseg == 2 && route_common(r, rs, ep, ix))
        return;
    if (r->nseg == 2 && !strcmp(ep, "_pit") && g_cfg.flavor != FLAVOR_OPENSEARCH) {
        if (is(r, "POST"))
            handle_pit_open(r, rs, ix);
        else
            method_not_allowed(r, rs, "POST");
        return;
    }
    if (r->nseg == 3 && !strcmp(ep, "_search") && !strcmp(r->seg[2], "point_in_time") &&
        g_cfg.flavor == FLAVOR_OPENSEARCH) {
        handle_os_pit(r, rs, ix);
        return;
    }
    if ((strcmp(ep, "_alias") == 0 || strcmp(ep, "_aliases") == 0) && r->nseg <= 3) {
        if (any(r, "GET", "HEAD"))
            handle_alias_get(r, rs, ix, r->nseg == 3 ? r->seg[2] : NULL);
        else
            method_not_allowed(r, rs, "GET, HEAD");
        return;
    }
    if (r->nseg <= 3) {
        route_doc(r, rs, ix, ep, r->nseg == 3 ? r->seg[2] : NULL);
        return;
    }
    no_handler(r, rs);
}

void route_request(req_t *r, resp_t *rs)
{
    if (r->nseg > MAX_SEGS) {
        no_handler(r, rs);
        return;
    }
    if (r->nseg == 0) {
        if (any(r, "GET", "HEAD"))
            handle_root(r, rs);
        else
            method_not_allowed(r, rs, "GET, HEAD");
        return;
    }
    if (r->seg[0][0] == '_')
        route_top(r, rs);
    else
        route_index(r, rs);
}
