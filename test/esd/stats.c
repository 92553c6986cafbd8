/*
 * Counters, the per-second timeline of accepted bulk items, the per-bulk log
 * and the ring buffer of recent requests.  Own locks: these are touched by
 * every request and read by the control endpoints, and must not wait on the
 * document store.
 */
#include "esd.h"

#include <stdlib.h>
#include <string.h>

#define TIMELINE_MAX 86400
#define BULKLOG_MAX 10000
#define REQLOG_MAX 1000

typedef struct tl_entry {
    int64_t second;
    uint64_t items, ok;
} tl_entry_t;

typedef struct bl_entry {
    int64_t t_ms;
    uint64_t items, bytes, ok;
} bl_entry_t;

static struct {
    pthread_mutex_t lock;
    int64_t since_ms;
    uint64_t requests, bulk_requests, bulk_items, bulk_bytes, rejected, dropped;
    uint64_t status[600];
    tl_entry_t *tl;
    size_t ntl;
    bl_entry_t bl[BULKLOG_MAX];
    size_t bl_next, bl_count;
} S;

static struct {
    pthread_mutex_t lock;
    reqlog_t ring[REQLOG_MAX];
    size_t next, count;
} R;

void stats_init(void)
{
    pthread_mutex_init(&S.lock, NULL);
    pthread_mutex_init(&R.lock, NULL);
    S.tl = xcalloc(TIMELINE_MAX, sizeof(tl_entry_t));
    S.since_ms = now_ms();
}

void stats_request(void)
{
    pthread_mutex_lock(&S.lock);
    S.requests++;
    pthread_mutex_unlock(&S.lock);
}

void stats_rejected(void)
{
    pthread_mutex_lock(&S.lock);
    S.rejected++;
    S.bulk_requests++;
    pthread_mutex_unlock(&S.lock);
}

void stats_dropped(void)
{
    pthread_mutex_lock(&S.lock);
    S.dropped++;
    pthread_mutex_unlock(&S.lock);
}

void stats_bulk(int64_t t_ms, size_t items, size_t bytes, size_t ok_items)
{
    pthread_mutex_lock(&S.lock);
    S.bulk_requests++;
    S.bulk_items += items;
    S.bulk_bytes += bytes;
    int64_t sec = t_ms / 1000;
    if (!S.ntl || S.tl[S.ntl - 1].second != sec) {
        if (S.ntl == TIMELINE_MAX) {   /* keep the newest half */
            memmove(S.tl, S.tl + TIMELINE_MAX / 2, (TIMELINE_MAX / 2) * sizeof(tl_entry_t));
            S.ntl = TIMELINE_MAX / 2;
        }
        S.tl[S.ntl++] = (tl_entry_t){sec, 0, 0};
    }
    S.tl[S.ntl - 1].items += items;
    S.tl[S.ntl - 1].ok += ok_items;
    S.bl[S.bl_next] = (bl_entry_t){t_ms, items, bytes, ok_items};
    S.bl_next = (S.bl_next + 1) % BULKLOG_MAX;
    if (S.bl_count < BULKLOG_MAX)
        S.bl_count++;
    pthread_mutex_unlock(&S.lock);
}

void stats_items(const unsigned *counts)
{
    pthread_mutex_lock(&S.lock);
    for (int i = 0; i < 600; i++)
        S.status[i] += counts[i];
    pthread_mutex_unlock(&S.lock);
}

void stats_reset(void)
{
    pthread_mutex_lock(&S.lock);
    S.requests = S.bulk_requests = S.bulk_items = S.bulk_bytes = S.rejected = S.dropped = 0;
    memset(S.status, 0, sizeof S.status);
    S.ntl = 0;
    S.bl_next = S.bl_count = 0;
    S.since_ms = now_ms();
    pthread_mutex_unlock(&S.lock);
}

json_t *stats_json(void)
{
    pthread_mutex_lock(&S.lock);
    json_t *st = json_object();
    char key[8];
    for (int i = 0; i < 600; i++) {
        if (!S.status[i])
            continue;
        snprintf(key, sizeof key, "%d", i);
        json_object_set_new(st, key, json_integer((json_int_t)S.status[i]));
    }
    json_t *tl = json_array();
    for (size_t i = 0; i < S.ntl; i++)
        json_array_append_new(tl, json_pack("{s:I,s:I,s:I}", "second", (json_int_t)S.tl[i].second,
                                            "items", (json_int_t)S.tl[i].items, "ok", (json_int_t)S.tl[i].ok));
    json_t *bl = json_array();
    size_t start = (S.bl_next + BULKLOG_MAX - S.bl_count) % BULKLOG_MAX;
    for (size_t k = 0; k < S.bl_count; k++) {
        bl_entry_t *e = &S.bl[(start + k) % BULKLOG_MAX];
        json_array_append_new(bl, json_pack("{s:I,s:I,s:I,s:I}", "t_ms", (json_int_t)e->t_ms, "items",
                                            (json_int_t)e->items, "bytes", (json_int_t)e->bytes, "ok", (json_int_t)e->ok));
    }
    json_t *out = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:o}",
                            "since_ms", (json_int_t)S.since_ms,
                            "open_pits", (json_int_t)pits_open(),
                            "requests", (json_int_t)S.requests,
                            "bulk_requests", (json_int_t)S.bulk_requests,
                            "bulk_items", (json_int_t)S.bulk_items,
                            "bulk_bytes", (json_int_t)S.bulk_bytes,
                            "rejected_requests", (json_int_t)S.rejected,
                            "dropped_connections", (json_int_t)S.dropped,
                            "item_status", st, "timeline", tl, "bulk_log", bl);
    pthread_mutex_unlock(&S.lock);
    return out;
}

/* --------------------------------------------------------------- */
/* request log                                                     */
/* --------------------------------------------------------------- */
static void reqlog_entry_free(reqlog_t *e)
{
    free(e->method);
    free(e->url);
    free(e->body);
    if (e->headers)
        json_decref(e->headers);
    memset(e, 0, sizeof *e);
}

void reqlog_add(reqlog_t *e)
{
    pthread_mutex_lock(&R.lock);
    reqlog_entry_free(&R.ring[R.next]);
    R.ring[R.next] = *e;
    R.next = (R.next + 1) % REQLOG_MAX;
    if (R.count < REQLOG_MAX)
        R.count++;
    pthread_mutex_unlock(&R.lock);
}

/* Bodies are logged as JSON strings; binary or cut-off UTF-8 is made ASCII. */
static json_t *body_string(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    if (s)
        return s;
    char *copy = xstrndup(p, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)copy[i] >= 0x80 || copy[i] == '\0')
            copy[i] = '?';
    s = json_stringn(copy, n);
    free(copy);
    return s;
}

json_t *reqlog_json(int n)
{
    pthread_mutex_lock(&R.lock);
    size_t want = n < 0 ? 0 : (size_t)n;
    if (want > R.count)
        want = R.count;
    json_t *arr = json_array();
    size_t start = (R.next + REQLOG_MAX - want) % REQLOG_MAX;
    for (size_t k = 0; k < want; k++) {
        reqlog_t *e = &R.ring[(start + k) % REQLOG_MAX];
        size_t bl = strlen(e->body);
        json_t *o = json_pack("{s:I,s:s?,s:s?,s:O,s:I,s:I,s:o,s:b,s:i,s:i,s:I}",
                              "time", (json_int_t)e->t_ms, "method", e->method, "url", e->url,
                              "headers", e->headers, "body_bytes", (json_int_t)e->body_bytes,
                              "wire_bytes", (json_int_t)e->wire_bytes, "body", body_string(e->body, bl),
                              "body_truncated", bl < e->body_bytes,
                              "items", e->items, "status", e->status,
                              "duration_ms", (json_int_t)e->duration_ms);
        if (o)
            json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&R.lock);
    return arr;
}

void reqlog_clear(void)
{
    pthread_mutex_lock(&R.lock);
    for (size_t i = 0; i < REQLOG_MAX; i++)
        reqlog_entry_free(&R.ring[i]);
    R.next = R.count = 0;
    pthread_mutex_unlock(&R.lock);
}
