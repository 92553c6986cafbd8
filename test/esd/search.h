/*
 * Search internals shared by search.c (queries, sorting, the general path,
 * the endpoints) and search_page.c (pages taken straight from snapshots).
 */
#ifndef ESD_SEARCH_H
#define ESD_SEARCH_H

#include "esd.h"

typedef struct sortkey {
    char *field;        /* source path (".keyword" stripped), NULL for _doc/_score */
    bool is_doc, is_score, is_id;
    bool is_shard_doc;  /* ES's PIT tiebreaker (OpenSearch 2.x has none) */
    bool desc;
} sortkey_t;

typedef struct hit {
    index_t *ix;
    doc_t *d;
    long long ord;      /* global doc order */
    long long shard_doc; /* (shard index << 32) | position in the snapshot */
} hit_t;

typedef struct sctx {
    sortkey_t *keys;
    int nkeys;
} sctx_t;

/* qsort_r comparator of hits (arg: the sctx_t): the sort keys, then ord */
int cmp_hits(const void *x, const void *y, void *arg);
/* true when hit h sorts strictly after the search_after values sa */
bool hit_after(const hit_t *h, const sctx_t *sc, const json_t *sa);

/* One page of a search, as the general path would answer it. */
typedef struct page {
    hit_t *hits;        /* owned; the page starts at hits + start */
    size_t start, count;
    size_t total;       /* every document the query matches */
} page_t;

/* The page of a match_all search (query absent or match_all) sorted on
 * _shard_doc alone, or on _id alone or followed by _shard_doc, taken straight
 * from the snapshots in O(log n + from + size): true with *pg filled, false
 * when the request has another shape (the caller takes the general path). */
bool page_direct(const search_target_t *tg, size_t ntg, const json_t *query, const sctx_t *sc,
                 const json_t *sa, long long from, long long size, page_t *pg);

#endif
