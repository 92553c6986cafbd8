/*
 * Pages taken straight from the snapshots, for the searches that walk a
 * whole index: a match_all sorted on _shard_doc (ES's point-in-time walk) or
 * on _id (OpenSearch 2.x, which has no _shard_doc).  The general path
 * (search.c) matches, sorts and scans every document for every page, which
 * made a 1,000,000-document walk cost ~250 ms a page; here a page costs a
 * binary search for search_after plus the hits it returns, as a real
 * cluster's does.
 *
 * Neither order needs a sort per search: _shard_doc is the targets' write
 * order one after the other (or its reverse), and each snapshot keeps its
 * positions ordered by _id, built by the first search that needs them and
 * freed with the snapshot.  search_after is located with hit_after() and
 * the targets are merged with cmp_hits(), the general path's own
 * functions, so every answer is the general path's.
 */
#include "search.h"

#include <stdlib.h>
#include <string.h>

/* A run of hits in the order of the search, read by position: all the
 * targets in _shard_doc order, or one target's documents in _id order. */
typedef struct seq {
    hit_t (*at)(const struct seq *s, size_t q);
    size_t n;
    const search_target_t *tg;
    const size_t *base;          /* target_bases() */
    size_t ntg;
    size_t target;               /* _id: whose documents */
    const size_t *by_id;         /* _id: that target's snapshot->by_id */
    bool desc;
} seq_t;

static size_t snap_n(const search_target_t *t)
{
    return t->snap ? t->snap->n : 0;
}

/* base[i]: the ord of target i's first document; base[ntg]: how many
 * documents the targets hold */
static size_t *target_bases(const search_target_t *tg, size_t ntg)
{
    size_t *base = xmalloc((ntg + 1) * sizeof *base);
    base[0] = 0;
    for (size_t i = 0; i < ntg; i++)
        base[i + 1] = base[i] + snap_n(&tg[i]);
    return base;
}

/* the hit of target i's document at position k, as collect() makes it */
static hit_t hit_of(const seq_t *s, size_t i, size_t k)
{
    return (hit_t){s->tg[i].ix, s->tg[i].snap->docs[k], (long long)(s->base[i] + k),
                   (long long)i << 32 | (long long)k};
}

static hit_t shard_doc_at(const seq_t *s, size_t q)
{
    size_t p = s->desc ? s->n - 1 - q : q;
    size_t lo = 0, hi = s->ntg;   /* the last target starting at or before p */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->base[mid] <= p)
            lo = mid;
        else
            hi = mid;
    }
    return hit_of(s, lo, p - s->base[lo]);
}

static hit_t id_at(const seq_t *s, size_t q)
{
    return hit_of(s, s->target, s->by_id[s->desc ? s->n - 1 - q : q]);
}

/* the first position whose hit sorts after sa (n if none; 0 without sa):
 * hit_after is monotone along a run in the search's order */
static size_t first_after(const seq_t *s, const sctx_t *sc, const json_t *sa)
{
    size_t lo = 0, hi = s->n;
    while (sa && lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        hit_t h = s->at(s, mid);
        if (hit_after(&h, sc, sa))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static int cmp_by_id(const void *x, const void *y, void *docs)
{
    doc_t *const *d = docs;
    size_t a = *(const size_t *)x, b = *(const size_t *)y;
    int c = strcmp(d[a]->id, d[b]->id);
    return c ? c : (a > b) - (a < b);
}

/* Builds s->by_id once per snapshot (under the store lock, as every
 * search).  The general path compares _ids with strcmp; when two of them
 * compare equal (an _id holding a NUL byte) its order for them depends on
 * other keys, so such a snapshot is never paged from by_id. */
static bool snapshot_by_id(snapshot_t *s)
{
    if (!s->by_id_built) {
        s->by_id = xmalloc((s->n ? s->n : 1) * sizeof *s->by_id);
        for (size_t k = 0; k < s->n; k++)
            s->by_id[k] = k;
        qsort_r(s->by_id, s->n, sizeof *s->by_id, cmp_by_id, s->docs);
        for (size_t j = 1; j < s->n && !s->by_id_ties; j++)
            s->by_id_ties = !strcmp(s->docs[s->by_id[j - 1]]->id, s->docs[s->by_id[j]]->id);
        s->by_id_built = true;
    }
    return !s->by_id_ties;
}

/* Merges the runs from where search_after puts each, skips from, keeps
 * size: the page of the general path, since each run is in the search's
 * order and cmp_hits breaks ties between runs as its sort does. */
static void merge_page(const seq_t *runs, size_t nruns, const sctx_t *sc, const json_t *sa,
                       long long from, long long size, page_t *pg)
{
    size_t *cur = xmalloc((nruns ? nruns : 1) * sizeof *cur);
    for (size_t r = 0; r < nruns; r++)
        cur[r] = first_after(&runs[r], sc, sa);
    pg->hits = xmalloc((size > 0 ? (size_t)size : 1) * sizeof *pg->hits);
    pg->start = pg->count = 0;
    for (long long taken = 0; taken < from + size; taken++) {
        long best = -1;
        hit_t best_hit = {0};
        for (size_t r = 0; r < nruns; r++) {
            if (cur[r] == runs[r].n)
                continue;
            hit_t h = runs[r].at(&runs[r], cur[r]);
            if (best < 0 || cmp_hits(&h, &best_hit, (void *)sc) < 0) {
                best = (long)r;
                best_hit = h;
            }
        }
        if (best < 0)
            break;
        cur[best]++;
        if (taken >= from)
            pg->hits[pg->count++] = best_hit;
    }
    free(cur);
}

/* _shard_doc alone: one run, all the targets in write order or reversed */
static bool is_shard_doc_walk(const sctx_t *sc)
{
    return sc->nkeys == 1 && sc->keys[0].is_shard_doc;
}

/* _id alone, or followed by _shard_doc (ES's tiebreaker on es7), after a
 * string _id: hit_after ranks every _id equal to a boolean or an object,
 * which leaves the documents it keeps no longer a suffix of the _id order */
static bool is_id_walk(const sctx_t *sc, const json_t *sa)
{
    return (sc->nkeys == 1 || (sc->nkeys == 2 && sc->keys[1].is_shard_doc)) && sc->keys[0].is_id &&
           (!sa || json_is_string(json_array_get(sa, 0)));
}

bool page_direct(const search_target_t *tg, size_t ntg, const json_t *query, const sctx_t *sc,
                 const json_t *sa, long long from, long long size, page_t *pg)
{
    if (query && strcmp(json_object_iter_key(json_object_iter((json_t *)query)), "match_all"))
        return false;
    bool by_shard_doc = is_shard_doc_walk(sc);
    if (!by_shard_doc && !is_id_walk(sc, sa))
        return false;
    for (size_t i = 0; !by_shard_doc && i < ntg; i++)
        if (tg[i].snap && !snapshot_by_id(tg[i].snap))
            return false;
    size_t *base = target_bases(tg, ntg);
    size_t nruns = by_shard_doc ? 1 : ntg;
    seq_t *runs = xcalloc(nruns ? nruns : 1, sizeof *runs);
    for (size_t r = 0; r < nruns; r++) {
        runs[r] = (seq_t){by_shard_doc ? shard_doc_at : id_at, by_shard_doc ? base[ntg] : snap_n(&tg[r]),
                          tg, base, ntg, r, by_shard_doc || !tg[r].snap ? NULL : tg[r].snap->by_id,
                          sc->keys[0].desc};
    }
    merge_page(runs, nruns, sc, sa, from, size, pg);
    pg->total = base[ntg];
    free(runs);
    free(base);
    return true;
}
