/*
 * In-memory store: indices, documents and refresh.
 *
 * Document records are immutable once written; a write replaces the record
 * in the hash map.  The "searchable" view of an index is an array of record
 * pointers taken at the last refresh (reference counted), which gives the
 * real near-real-time semantics: GET/_mget see the map, _search/_count see
 * the snapshot.  A point in time holds a reference to the snapshot it was
 * opened on (pit.c), which keeps those records alive after later writes.
 */
#include "esd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

store_t g_store;
static pthread_t g_refresh_thread;
static bool g_refresh_running;

void store_init(void)
{
    pthread_mutex_init(&g_store.lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g_store.refreshed, &ca);
    pthread_condattr_destroy(&ca);
}

/* --------------------------------------------------------------- */
/* documents                                                       */
/* --------------------------------------------------------------- */
doc_t *doc_new(const char *id, size_t id_len)
{
    doc_t *d = xcalloc(1, sizeof *d);
    d->id = xstrndup(id, id_len);
    d->id_len = id_len;
    d->hash = hash_bytes(id, id_len);
    d->refs = 1;
    return d;
}

void doc_release(doc_t *d)
{
    if (!d || --d->refs > 0)
        return;
    free(d->id);
    free(d->raw);
    free(d->routing);
    if (d->src)
        json_decref(d->src);
    free(d);
}

doc_t *doc_find(index_t *ix, const char *id, size_t len)
{
    if (!ix->nbuckets)
        return NULL;
    uint64_t h = hash_bytes(id, len);
    for (doc_t *d = ix->buckets[h & (ix->nbuckets - 1)]; d; d = d->hnext)
        if (d->hash == h && d->id_len == len && memcmp(d->id, id, len) == 0)
            return d;
    return NULL;
}

static void rehash(index_t *ix)
{
    size_t nb = ix->nbuckets ? ix->nbuckets * 2 : 1024;
    doc_t **b = xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < ix->nbuckets; i++) {
        doc_t *d = ix->buckets[i];
        while (d) {
            doc_t *nx = d->hnext;
            d->hnext = b[d->hash & (nb - 1)];
            b[d->hash & (nb - 1)] = d;
            d = nx;
        }
    }
    free(ix->buckets);
    ix->buckets = b;
    ix->nbuckets = nb;
}

static void list_unlink(index_t *ix, doc_t *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        ix->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        ix->tail = d->prev;
    d->prev = d->next = NULL;
    ix->live--;
}

static void list_append(index_t *ix, doc_t *d)
{
    d->prev = ix->tail;
    d->next = NULL;
    if (ix->tail)
        ix->tail->next = d;
    else
        ix->head = d;
    ix->tail = d;
    ix->live++;
}

/* Inserts d (refs already 1 for the map), replacing any record with that id. */
void doc_put(index_t *ix, doc_t *d)
{
    if (ix->nentries + 1 > ix->nbuckets)
        rehash(ix);
    doc_t **pp = &ix->buckets[d->hash & (ix->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->hnext) {
        doc_t *o = *pp;
        if (o->hash == d->hash && o->id_len == d->id_len && memcmp(o->id, d->id, d->id_len) == 0) {
            d->hnext = o->hnext;
            *pp = d;
            if (!o->deleted)
                list_unlink(ix, o);
            o->hnext = NULL;
            doc_release(o);
            goto linked;
        }
    }
    d->hnext = ix->buckets[d->hash & (ix->nbuckets - 1)];
    ix->buckets[d->hash & (ix->nbuckets - 1)] = d;
    ix->nentries++;
linked:
    if (!d->deleted)
        list_append(ix, d);
    index_touch(ix);
}

/* --------------------------------------------------------------- */
/* indices                                                         */
/* --------------------------------------------------------------- */
index_t *store_find(const char *name)
{
    for (size_t i = 0; i < g_store.n; i++)
        if (strcmp(g_store.idx[i]->name, name) == 0)
            return g_store.idx[i];
    return NULL;
}

index_t *store_create(const char *name)
{
    index_t *ix = xcalloc(1, sizeof *ix);
    ix->name = xstrdup(name);
    gen_uuid(ix->uuid);
    ix->created_ms = now_ms();
    ix->settings = json_object();
    ix->mappings = json_object();
    ix->aliases = json_object();
    ix->refresh_ms = 1000;
    ix->last_refresh = mono_ms();
    if (g_store.n == g_store.cap) {
        g_store.cap = g_store.cap ? g_store.cap * 2 : 16;
        g_store.idx = xrealloc(g_store.idx, g_store.cap * sizeof *g_store.idx);
    }
    g_store.idx[g_store.n++] = ix;
    return ix;
}

snapshot_t *snapshot_ref(snapshot_t *s)
{
    if (s)
        s->refs++;
    return s;
}

void snapshot_release(snapshot_t *s)
{
    if (!s || --s->refs > 0)
        return;
    for (size_t i = 0; i < s->n; i++)
        doc_release(s->docs[i]);
    free(s->docs);
    free(s->by_id);
    free(s);
}

static void snap_release(index_t *ix)
{
    snapshot_release(ix->snap);
    ix->snap = NULL;
}

static void index_free(index_t *ix)
{
    snap_release(ix);
    for (size_t i = 0; i < ix->nbuckets; i++) {
        doc_t *d = ix->buckets[i];
        while (d) {
            doc_t *nx = d->hnext;
            doc_release(d);
            d = nx;
        }
    }
    free(ix->buckets);
    json_decref(ix->settings);
    json_decref(ix->mappings);
    json_decref(ix->aliases);
    free(ix->name);
    free(ix);
}

void store_delete(index_t *ix)
{
    for (size_t i = 0; i < g_store.n; i++) {
        if (g_store.idx[i] == ix) {
            memmove(&g_store.idx[i], &g_store.idx[i + 1], (g_store.n - i - 1) * sizeof(index_t *));
            g_store.n--;
            break;
        }
    }
    index_free(ix);
    /* wake refresh=wait_for waiters whose index vanished */
    pthread_cond_broadcast(&g_store.refreshed);
}

void store_clear(void)
{
    for (size_t i = 0; i < g_store.n; i++)
        index_free(g_store.idx[i]);
    g_store.n = 0;
    pthread_cond_broadcast(&g_store.refreshed);
}

void index_touch(index_t *ix)
{
    ix->dirty = true;
    ix->writes++;
}

void index_refresh(index_t *ix)
{
    if (ix->dirty) {
        snap_release(ix);
        snapshot_t *s = xcalloc(1, sizeof *s);
        s->refs = 1;
        s->docs = xmalloc((ix->live ? ix->live : 1) * sizeof(doc_t *));
        for (doc_t *d = ix->head; d; d = d->next) {
            d->refs++;
            s->docs[s->n++] = d;
        }
        ix->snap = s;
        ix->dirty = false;
    }
    ix->refreshed_writes = ix->writes;
    ix->last_refresh = mono_ms();
    pthread_cond_broadcast(&g_store.refreshed);
}

const char *index_setting(const index_t *ix, const char *key)
{
    return json_string_value(json_object_get(ix->settings, key));
}

int index_replicas(const index_t *ix)
{
    const char *v = index_setting(ix, "index.number_of_replicas");
    return v ? atoi(v) : 1;
}

/* Re-derives cached values after the settings object changed. */
void index_apply_settings(index_t *ix)
{
    const char *ri = index_setting(ix, "index.refresh_interval");
    bool ok = false;
    int64_t ms = ri ? parse_time_value_ms(ri, &ok) : 1000;
    ix->refresh_ms = ok || !ri ? ms : 1000;
}

/* --------------------------------------------------------------- */
/* periodic refresh                                                */
/* --------------------------------------------------------------- */
static void *refresh_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_store.lock);
    while (g_refresh_running) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g_store.refreshed, &g_store.lock, &ts);
        pits_expire(false);   /* frees expired points in time, timer or not */
        if (!g_cfg.refresh_timer)
            continue;
        int64_t now = mono_ms();
        for (size_t i = 0; i < g_store.n; i++) {
            index_t *ix = g_store.idx[i];
            if (ix->refresh_ms < 0 || ix->writes == ix->refreshed_writes)
                continue;
            if (now - ix->last_refresh >= ix->refresh_ms)
                index_refresh(ix);
        }
    }
    pthread_mutex_unlock(&g_store.lock);
    return NULL;
}

void refresh_thread_start(void)
{
    g_refresh_running = true;
    pthread_create(&g_refresh_thread, NULL, refresh_main, NULL);
}

void refresh_thread_stop(void)
{
    pthread_mutex_lock(&g_store.lock);
    g_refresh_running = false;
    pthread_cond_broadcast(&g_store.refreshed);
    pthread_mutex_unlock(&g_store.lock);
    pthread_join(g_refresh_thread, NULL);
}
