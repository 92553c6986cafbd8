/*
 * HTTP layer: libmicrohttpd glue.
 *
 * One thread per connection (MHD_USE_THREAD_PER_CONNECTION) so that a delay
 * fault or a long bulk request only ever blocks its own connection.  Each
 * connection keeps a body buffer that is reused across keep-alive requests:
 * for large bulk bodies this avoids mapping and faulting in fresh memory on
 * every request, which matters for the throughput target.
 *
 * A body over max_content_length is refused by the HTTP layer before
 * anything else looks at the request, as Elasticsearch's HTTP pipeline
 * does: as soon as Content-Length (or the bytes received, or the bytes a
 * gzip body inflates to) passes the limit, an empty 413 is written and the
 * connection closes, without reading the rest of the body (see
 * answer_too_large).  Order of checks for the other non-control requests
 * (ES's, with the faults first): fault drop/delay, authentication,
 * Content-Type (406), compatibility headers (400), then the route handler.
 */
#include "esd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <microhttpd.h>
#include <poll.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define KEEP_BUFFER_MAX (256u << 20)   /* larger buffers are freed after use */

typedef struct conn_state {
    sb_t body;       /* request body as received */
    sb_t plain;      /* decompressed body (gzip requests only) */
    sb_t spare;      /* big response buffer kept for the next request */
    sb_t inflight;   /* response body being sent (MHD_RESPMEM_PERSISTENT) */
} conn_state_t;

/* Inflates a gzip (or zlib) request body as it arrives (streaming, so
 * that the decompressed size is known before the body ends). */
typedef struct inflater {
    z_stream zs;
    bool on;         /* inflateInit2 done */
    bool ended;      /* a member ended at the last byte fed */
    bool failed;     /* corrupt data: 400 once the body is in */
} inflater_t;

typedef struct reqctx {
    conn_state_t *cs;
    bool is_control;
    bool is_sink;
    bool too_big;    /* control endpoints: body cut at the limit */
    bool answered;   /* 413 written before the body ended: discard, close */
    bool inflating;  /* Content-Encoding gzip/deflate: the body goes to cs->plain */
    inflater_t inf;
    size_t wire;     /* bytes received */
    int64_t t0_ms, t0_mono;
} reqctx_t;

static void inflater_free(inflater_t *in)
{
    if (in->on)
        inflateEnd(&in->zs);
    in->on = false;
}

static struct MHD_Daemon *g_daemon;

/* --------------------------------------------------------------- */
/* connection and request lifecycle                                */
/* --------------------------------------------------------------- */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)c;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = xcalloc(1, sizeof(conn_state_t));
    } else if (*socket_context) {
        conn_state_t *cs = *socket_context;
        sb_free(&cs->body);
        sb_free(&cs->plain);
        sb_free(&cs->spare);
        sb_free(&cs->inflight);
        free(cs);
        *socket_context = NULL;
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    reqctx_t *rc = *con_cls;
    if (!rc)
        return;
    inflater_free(&rc->inf);
    conn_state_t *cs = rc->cs;
    if (cs) {
        /* keep moderately sized buffers for the next request on this connection */
        if (cs->body.cap > KEEP_BUFFER_MAX)
            sb_free(&cs->body);
        if (cs->plain.cap > KEEP_BUFFER_MAX)
            sb_free(&cs->plain);
        cs->body.len = cs->plain.len = 0;
        /* the response has been sent: its buffer becomes the spare */
        if (cs->inflight.buf) {
            if (cs->inflight.cap <= KEEP_BUFFER_MAX && !cs->spare.buf) {
                cs->spare = cs->inflight;
                cs->spare.len = 0;
            } else {
                sb_free(&cs->inflight);
            }
            memset(&cs->inflight, 0, sizeof cs->inflight);
        }
    }
    free(rc);
    *con_cls = NULL;
}

/* The path is split and unescaped by us, segment by segment, so that ids
 * containing an escaped '/' (%2F) stay one segment. */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* --------------------------------------------------------------- */
/* request accessors                                               */
/* --------------------------------------------------------------- */
const char *req_arg(const req_t *r, const char *key)
{
    for (int i = 0; i < r->nargs; i++)
        if (strcmp(r->args[i].key, key) == 0)
            return r->args[i].val ? r->args[i].val : "";
    return NULL;
}

bool req_arg_bool(const req_t *r, const char *key, bool dflt)
{
    const char *v = req_arg(r, key);
    if (!v)
        return dflt;
    return *v == '\0' || strcmp(v, "true") == 0;
}

const char *req_hdr(const req_t *r, const char *name)
{
    for (int i = 0; i < r->nhdrs; i++)
        if (strcasecmp(r->hdrs[i].key, name) == 0)
            return r->hdrs[i].val;
    return NULL;
}

typedef struct kvcollect {
    kv_t *v;
    int n, cap;
    bool unescape;
} kvcollect_t;

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    kvcollect_t *kc = cls;
    if (kc->n == kc->cap) {
        kc->cap = kc->cap ? kc->cap * 2 : 16;
        kc->v = xrealloc(kc->v, sizeof(kv_t) * (size_t)kc->cap);
    }
    kv_t *e = &kc->v[kc->n++];
    e->key = xstrdup(key ? key : "");
    e->val = value ? xstrdup(value) : NULL;
    if (kc->unescape) {
        url_unescape_inplace(e->key, true);
        if (e->val)
            url_unescape_inplace(e->val, true);
    }
    return MHD_YES;
}

static void split_path(req_t *r)
{
    char *p = xstrdup(r->path);
    char *save = NULL;
    r->nseg = 0;
    for (char *tok = strtok_r(p, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (r->nseg == MAX_SEGS) {
            r->nseg++;   /* too many: the router answers 400 */
            break;
        }
        r->seg[r->nseg] = xstrdup(tok);
        url_unescape_inplace(r->seg[r->nseg], false);
        r->nseg++;
    }
    free(p);
}

static void req_free(req_t *r)
{
    for (int i = 0; i < r->nseg && i < MAX_SEGS; i++)
        free(r->seg[i]);
    for (int i = 0; i < r->nargs; i++) {
        free(r->args[i].key);
        free(r->args[i].val);
    }
    for (int i = 0; i < r->nhdrs; i++) {
        free(r->hdrs[i].key);
        free(r->hdrs[i].val);
    }
    free(r->args);
    free(r->hdrs);
    free(r->path);
    principal_free(r->who);
}

/* --------------------------------------------------------------- */
/* media types                                                     */
/* --------------------------------------------------------------- */
static const char *ok_types[] = {
    "application/json", "application/x-ndjson",
    "application/vnd.elasticsearch+json", "application/vnd.elasticsearch+x-ndjson",
};

/* Returns the compatible-with version (0 if none) and whether the type is
 * accepted. */
static int media_type(const char *h, bool *ok)
{
    char base[128];
    size_t i = 0;
    while (h[i] && h[i] != ';' && i + 1 < sizeof base) {
        base[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] + 32 : h[i]);
        i++;
    }
    while (i > 0 && base[i - 1] == ' ')
        i--;
    base[i] = '\0';
    *ok = false;
    for (size_t k = 0; k < sizeof ok_types / sizeof ok_types[0]; k++)
        if (strcmp(base, ok_types[k]) == 0)
            *ok = true;
    bool vnd = strstr(base, "vnd.elasticsearch") != NULL;
    if (vnd && g_cfg.flavor == FLAVOR_OPENSEARCH)
        *ok = false;   /* OpenSearch does not know the compatibility media types */
    const char *cw = strcasestr(h, "compatible-with=");
    if (!vnd || !cw)
        return 0;
    return atoi(cw + strlen("compatible-with="));
}

static bool check_media(req_t *r, resp_t *rs)
{
    const char *ct = req_hdr(r, "Content-Type");
    const char *acc = req_hdr(r, "Accept");
    int ct_v = 0, acc_v = 0;
    bool ok = true;
    if (r->body_len > 0) {
        if (!ct) {
            resp_error_string(rs, 406, "Content-Type header is missing");
            return false;
        }
        ct_v = media_type(ct, &ok);
        if (!ok) {
            resp_error_string(rs, 406, "Content-Type header [%s] is not supported", ct);
            return false;
        }
    }
    if (acc) {
        bool aok;
        acc_v = media_type(acc, &aok);
    }
    if (!ct_v && !acc_v)
        return true;
    if (r->body_len > 0 && ct_v != acc_v) {
        json_t *c = err_cause("status_exception", NULL);
        char msg[1024];
        snprintf(msg, sizeof msg,
                 "A compatible version is required on both Content-Type and Accept headers if "
                 "either one has requested a compatible version and the compatible versions "
                 "must match. Accept=%s, Content-Type=%s",
                 acc ? acc : "null", ct ? ct : "null");
        json_object_set_new(c, "reason", json_string(msg));
        json_t *top = err_cause("media_type_header_exception",
                                "Invalid media-type value on headers [Accept, Content-Type]");
        json_object_set_new(top, "caused_by", c);
        resp_error_obj(rs, 400, top);
        return false;
    }
    int v = acc_v ? acc_v : ct_v;
    int cur = g_cfg.flavor == FLAVOR_ES7 ? 7 : 8;
    if (v != cur && v != cur - 1) {
        resp_error(rs, 400, "media_type_header_exception",
                   "Invalid media-type value on headers [Accept, Content-Type]: "
                   "version must be either version %d or %d, but found %d", cur, cur - 1, v);
        return false;
    }
    r->compat = v;
    return true;
}

/* --------------------------------------------------------------- */
/* body handling                                                   */
/* --------------------------------------------------------------- */
/* Feeds n more bytes of a compressed body to in, appending the inflated
 * bytes to out.  Returns 413 as soon as out passes limit, else 0 (corrupt
 * data sets in->failed and ignores the rest). */
static int inflate_feed(inflater_t *in, const char *p, size_t n, sb_t *out, size_t limit)
{
    if (in->failed || n == 0)
        return 0;
    if (!in->on) {
        memset(&in->zs, 0, sizeof in->zs);
        if (inflateInit2(&in->zs, 15 + 32) != Z_OK) {
            in->failed = true;
            return 0;
        }
        in->on = true;
        out->len = 0;
    } else if (in->ended && inflateReset(&in->zs) != Z_OK) {   /* concatenated gzip members */
        in->failed = true;
        return 0;
    }
    in->ended = false;
    in->zs.next_in = (Bytef *)p;
    in->zs.avail_in = (uInt)n;
    while (in->zs.avail_in > 0) {
        if (out->cap - out->len < 65536)
            sb_grow(out, out->cap > 65536 ? out->cap : 65536);
        in->zs.next_out = (Bytef *)out->buf + out->len;
        in->zs.avail_out = (uInt)(out->cap - out->len - 1);
        int rc = inflate(&in->zs, Z_NO_FLUSH);
        out->len = (size_t)((char *)in->zs.next_out - out->buf);
        if (out->len > limit)
            return 413;
        if (rc == Z_STREAM_END) {
            if (in->zs.avail_in == 0) {
                in->ended = true;
                break;
            }
            if (inflateReset(&in->zs) != Z_OK) {
                in->failed = true;
                return 0;
            }
        } else if (rc != Z_OK) {
            in->failed = true;
            return 0;
        }
    }
    return 0;
}

/* The body is in: 0 with out NUL-terminated, or 400 for corrupt or
 * truncated data. */
static int inflate_finish(inflater_t *in, sb_t *out)
{
    if (!in->on) {          /* no byte came */
        out->len = 0;
        sb_grow(out, 1);
        out->buf[0] = '\0';
        return 0;
    }
    if (in->failed || !in->ended)
        return 400;
    out->buf[out->len] = '\0';
    return 0;
}

/* --------------------------------------------------------------- */
/* response rendering                                              */
/* --------------------------------------------------------------- */
static void render(req_t *r, resp_t *rs, sb_t *out)
{
    const char *fp = req_arg(r, "filter_path");
    if (fp && *fp && !rs->no_filter && rs->status != 413) {
        sb_t f = {NULL, 0, 0};
        if (rs->has_raw && !rs->ctype && filter_path_render(rs->raw.buf, rs->raw.len, fp, &f)) {
            sb_free(&rs->raw);
            rs->raw = f;
        } else if (rs->json) {
            rs->json = filter_path_apply(rs->json, fp);
        }
    }
    if (rs->has_raw) {
        *out = rs->raw;
        rs->raw.buf = NULL;
        rs->has_raw = false;
    } else if (rs->json) {
        sb_init(out, 256);
        sb_json_value(out, rs->json);
    } else {
        out->buf = NULL;
        out->len = out->cap = 0;
    }
    if (rs->json) {
        json_decref(rs->json);
        rs->json = NULL;
    }
}

#define PERSIST_MIN (256u << 10)

static enum MHD_Result send_response(struct MHD_Connection *c, req_t *r, resp_t *rs, sb_t *body,
                                     conn_state_t *cs)
{
    struct MHD_Response *mr;
    if (cs && body->buf && body->len >= PERSIST_MIN && !cs->inflight.buf) {
        /* kept until the request completes, then reused (see on_completed) */
        cs->inflight = *body;
        memset(body, 0, sizeof *body);
        mr = MHD_create_response_from_buffer(cs->inflight.len, cs->inflight.buf,
                                             MHD_RESPMEM_PERSISTENT);
    } else if (body->buf && body->len) {
        size_t len;
        char *buf = sb_detach(body, &len);
        mr = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    } else {
        sb_free(body);
        mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!mr)
        return MHD_NO;
    if (rs->status != 413 && rs->status != 417) {
        char ctype[96];
        if (rs->ctype)
            snprintf(ctype, sizeof ctype, "%s", rs->ctype);
        else if (r && r->compat)
            snprintf(ctype, sizeof ctype, "application/vnd.elasticsearch+json;compatible-with=%d",
                     r->compat);
        else
            snprintf(ctype, sizeof ctype, "application/json");
        MHD_add_response_header(mr, "Content-Type", ctype);
    }
    if (g_cfg.flavor != FLAVOR_OPENSEARCH)
        MHD_add_response_header(mr, "X-Elastic-Product", "Elasticsearch");
    const char *opaque = r ? req_hdr(r, "X-Opaque-Id") : NULL;
    if (opaque)
        MHD_add_response_header(mr, "X-Opaque-Id", opaque);
    for (int i = 0; i < rs->nhdr; i++)
        MHD_add_response_header(mr, rs->hdr_name[i], rs->hdr_val[i]);
    if (rs->status == 413)
        MHD_add_response_header(mr, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)rs->status, mr);
    MHD_destroy_response(mr);
    return ret;
}

static void resp_cleanup(resp_t *rs)
{
    if (rs->json)
        json_decref(rs->json);
    sb_free(&rs->raw);
    for (int i = 0; i < rs->nhdr; i++)
        free(rs->hdr_val[i]);
}

static void log_request(reqctx_t *rc, req_t *r, const char *url, int status, int items)
{
    reqlog_t e;
    memset(&e, 0, sizeof e);
    e.t_ms = rc->t0_ms;
    e.method = xstrdup(r->method);
    e.url = xstrdup(url);
    e.headers = json_object();
    for (int i = 0; i < r->nhdrs; i++)
        json_object_set_new(e.headers, r->hdrs[i].key,
                            json_string(r->hdrs[i].val ? r->hdrs[i].val : "") ?: json_string("?"));
    size_t keep = r->body_len < g_cfg.log_body_max ? r->body_len : g_cfg.log_body_max;
    e.body = r->body ? xstrndup(r->body, keep) : xstrdup("");
    e.body_bytes = r->body_len;
    e.wire_bytes = rc->wire;
    e.items = items;
    e.status = status;
    e.duration_ms = mono_ms() - rc->t0_mono;
    reqlog_add(&e);
}

/* path + query string as received */
static char *full_url(struct MHD_Connection *c, const char *url, req_t *r)
{
    (void)c;
    sb_t s;
    sb_init(&s, 128);
    sb_puts(&s, url);
    for (int i = 0; i < r->nargs; i++) {
        sb_putc(&s, i ? '&' : '?');
        sb_puts(&s, r->args[i].key);
        if (r->args[i].val) {
            sb_putc(&s, '=');
            sb_puts(&s, r->args[i].val);
        }
    }
    return sb_detach(&s, NULL);
}

/* --------------------------------------------------------------- */
/* request processing                                              */
/* --------------------------------------------------------------- */
static bool is_bulk_path(const req_t *r)
{
    return (r->nseg == 1 && strcmp(r->seg[0], "_bulk") == 0) ||
           (r->nseg == 2 && strcmp(r->seg[1], "_bulk") == 0);
}

static void process(reqctx_t *rc, req_t *r, resp_t *rs)
{
    conn_state_t *cs = rc->cs;
    if (rc->is_control) {
        handle_control(r, rs);
        return;
    }
    stats_request();
    pre_fault_t pf;
    faults_pre_request(is_bulk_path(r), &pf);
    if (pf.drop) {
        rs->drop = true;
        stats_dropped();
        return;
    }
    if (pf.delay_ms > 0)
        sleep_ms_interruptible(pf.delay_ms);
    if (!auth_check(r, rs))
        return;
    if (rc->inflating) {
        if (inflate_finish(&rc->inf, &cs->plain)) {
            resp_error(rs, 400, "parse_exception", "failed to decompress the request body [%s]",
                       req_hdr(r, "Content-Encoding"));
            return;
        }
        r->body = cs->plain.buf;
        r->body_len = cs->plain.len;
    }
    if (!check_media(r, rs))
        return;
    size_t huge_bytes;
    int huge = faults_huge_answer(r->method, r->path, &huge_bytes);
    if (huge) {
        resp_huge(rs, huge, huge_bytes, "{\"a\":[", "]}");
        return;
    }
    route_request(r, rs);
}

/* The request as the handlers see it (the body as received so far). */
static void build_req(struct MHD_Connection *c, reqctx_t *rc, const char *url, const char *method,
                      req_t *r)
{
    memset(r, 0, sizeof *r);
    r->method = method;
    r->head = strcmp(method, "HEAD") == 0;
    r->path = xstrdup(url);
    split_path(r);
    kvcollect_t kc = {NULL, 0, 0, true};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_kv, &kc);
    r->args = kc.v;
    r->nargs = kc.n;
    kvcollect_t kh = {NULL, 0, 0, false};
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_kv, &kh);
    r->hdrs = kh.v;
    r->nhdrs = kh.n;
    if (rc->cs->body.buf) {
        rc->cs->body.buf[rc->cs->body.len] = '\0';
        r->body = rc->cs->body.buf;
    } else {
        r->body = "";
    }
    r->body_len = rc->cs->body.len;
    r->spare = &rc->cs->spare;
}

static enum MHD_Result finish(struct MHD_Connection *c, reqctx_t *rc, const char *url,
                              const char *method)
{
    req_t r;
    build_req(c, rc, url, method, &r);

    resp_t rs;
    memset(&rs, 0, sizeof rs);
    rs.status = 200;
    if (rc->is_sink) {
        json_t *j = json_object();
        json_object_set_new(j, "bytes", json_integer((json_int_t)rc->wire));
        resp_json(&rs, 200, j);
    } else {
        process(rc, &r, &rs);
    }
    char *furl = full_url(c, url, &r);
    enum MHD_Result ret;
    if (rs.drop) {
        if (!rc->is_control)
            log_request(rc, &r, furl, 0, 0);
        ret = MHD_NO;   /* MHD closes the socket without sending anything */
    } else {
        sb_t out;
        render(&r, &rs, &out);
        if (!rc->is_control && !rc->is_sink)
            log_request(rc, &r, furl, rs.status, rs.items);
        ret = send_response(c, &r, &rs, &out, rc->cs);
    }
    free(furl);
    resp_cleanup(&rs);
    req_free(&r);
    return ret;
}

/* Writes s to the connection's socket, waiting at most 2 s for room. */
static void write_all(int fd, const char *s, size_t n)
{
    int64_t deadline = mono_ms() + 2000;
    size_t off = 0;
    while (off < n && mono_ms() < deadline) {
        ssize_t w = send(fd, s + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            struct pollfd p = {fd, POLLOUT, 0};
            poll(&p, 1, 100);
        } else {
            break;
        }
    }
}

/*
 * The body is over max_content_length: answer an empty 413 now, before the
 * rest of the body is read, and close, as Elasticsearch's HTTP layer does
 * (the request reaches no handler, fault or authentication).  MHD cannot
 * queue a response while the upload runs, so the answer is written to the
 * socket directly and the write side shut down; the rest of the body is
 * then read and discarded until the client closes (a client still sending
 * would otherwise get a reset that can swallow the 413), and the
 * connection is closed without another answer.
 */
static void answer_too_large(struct MHD_Connection *c, reqctx_t *rc, const char *url,
                             const char *method)
{
    req_t r;
    build_req(c, rc, url, method, &r);
    r.body = "";
    r.body_len = 0;
    stats_request();
    char *furl = full_url(c, url, &r);
    log_request(rc, &r, furl, 413, 0);
    free(furl);
    req_free(&r);

    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        char head[256];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 413 Request Entity Too Large\r\ncontent-length: 0\r\n%s"
                         "connection: close\r\n\r\n",
                         g_cfg.flavor != FLAVOR_OPENSEARCH ? "X-Elastic-Product: Elasticsearch\r\n" : "");
        write_all(ci->connect_fd, head, (size_t)n);
        shutdown(ci->connect_fd, SHUT_WR);
    }
    rc->answered = true;
    rc->cs->body.len = 0;
    rc->cs->plain.len = 0;
    inflater_free(&rc->inf);
}

static bool encoding_inflates(const char *ce)
{
    return ce && (strcasecmp(ce, "gzip") == 0 || strcasecmp(ce, "deflate") == 0);
}

/* First call: headers are in, no body byte read yet. */
static enum MHD_Result begin_request(struct MHD_Connection *c, const char *url, const char *method,
                                     void **con_cls)
{
    reqctx_t *rc = xcalloc(1, sizeof *rc);
    rc->t0_ms = now_ms();
    rc->t0_mono = mono_ms();
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    rc->cs = ci ? ci->socket_context : NULL;
    if (!rc->cs) {
        free(rc);
        return MHD_NO;
    }
    rc->cs->body.len = 0;
    rc->cs->plain.len = 0;
    /* --no-control: /_esd/ is a path like any other, so a client that
     * reaches for it gets what a real cluster answers */
    rc->is_control = g_cfg.control && (strncmp(url, "/_esd/", 6) == 0 || strcmp(url, "/_esd") == 0);
    rc->is_sink = g_cfg.control && strcmp(url, "/_esd/sink") == 0;
    rc->inflating = !rc->is_control &&
        encoding_inflates(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Encoding"));
    *con_cls = rc;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    long long n;
    if (!cl || !parse_long_strict(cl, &n) || n <= 0 || rc->is_sink)
        return MHD_YES;
    if ((size_t)n <= g_cfg.max_content_length) {
        if (!rc->inflating)
            sb_grow(&rc->cs->body, (size_t)n);
        return MHD_YES;
    }
    if (rc->is_control) {
        rc->too_big = true;
        return MHD_YES;
    }
    const char *ex = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
    if (ex && strcasecmp(ex, "100-continue") == 0) {
        /* an oversized body announced with Expect: 100-continue gets 417
         * before it is sent, as in ES */
        resp_t rs;
        memset(&rs, 0, sizeof rs);
        rs.status = 417;
        sb_t out = {NULL, 0, 0};
        return send_response(c, NULL, &rs, &out, NULL);
    }
    answer_too_large(c, rc, url, method);
    return MHD_YES;
}

/* n more bytes of the body. */
static void take_body(struct MHD_Connection *c, reqctx_t *rc, const char *url, const char *method,
                      const char *data, size_t n)
{
    rc->wire += n;
    if (rc->answered || rc->is_sink || rc->too_big)
        return;   /* discarded */
    size_t limit = g_cfg.max_content_length;
    if (rc->wire > limit) {
        if (rc->is_control)
            rc->too_big = true;
        else
            answer_too_large(c, rc, url, method);
        return;
    }
    if (!rc->inflating)
        sb_append(&rc->cs->body, data, n);
    else if (inflate_feed(&rc->inf, data, n, &rc->cs->plain, limit) == 413)
        answer_too_large(c, rc, url, method);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    reqctx_t *rc = *con_cls;
    if (!rc)
        return begin_request(c, url, method, con_cls);
    if (*upload_size) {
        take_body(c, rc, url, method, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (rc->answered)
        return MHD_NO;   /* the 413 is out: close without another answer */
    return finish(c, rc, url, method);
}

/* --------------------------------------------------------------- */
/* daemon                                                          */
/* --------------------------------------------------------------- */
int http_start(int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL;
    g_daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(1u << 20),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
        MHD_OPTION_END);
    if (!g_daemon)
        return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(g_daemon, MHD_DAEMON_INFO_BIND_PORT);
    return di ? di->port : -1;
}

void http_stop(void)
{
    if (g_daemon)
        MHD_stop_daemon(g_daemon);
    g_daemon = NULL;
}
