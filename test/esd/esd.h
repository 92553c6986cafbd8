/*
 * esd: an Elasticsearch-compatible stand-in server for tests and benchmarks.
 *
 * Shared declarations.  The process keeps all state in memory behind one
 * mutex (g_store.lock); statistics, the request log and fault counters have
 * their own small locks so that the control endpoints never wait for a big
 * bulk request to finish executing.
 */
#ifndef ESD_H
#define ESD_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ */
/* string builder (sb.c)                                               */
/* ------------------------------------------------------------------ */
typedef struct sb {
    char *buf;
    size_t len, cap;
} sb_t;

void sb_init(sb_t *s, size_t cap);
void sb_grow(sb_t *s, size_t add);
void sb_append(sb_t *s, const char *p, size_t n);
void sb_puts(sb_t *s, const char *p);
void sb_printf(sb_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_json_str(sb_t *s, const char *p, size_t n);
void sb_json_cstr(sb_t *s, const char *p);
void sb_json_int(sb_t *s, long long v);
void sb_json_value(sb_t *s, const json_t *v);
char *sb_detach(sb_t *s, size_t *len);
void sb_free(sb_t *s);

static inline void sb_putc(sb_t *s, char c)
{
    if (s->len + 1 >= s->cap)
        sb_grow(s, 1);
    s->buf[s->len++] = c;
}

/* ------------------------------------------------------------------ */
/* utilities (util.c)                                                  */
/* ------------------------------------------------------------------ */
int64_t now_ms(void);
int64_t mono_ms(void);
void sleep_ms_interruptible(int64_t ms);
uint64_t hash_bytes(const char *p, size_t n);
uint64_t splitmix64(uint64_t *state);
void gen_uuid(char out[23]);
void gen_doc_id(char out[21]);
char *xstrndup(const char *p, size_t n);
char *xstrdup(const char *p);
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
int b64_decode(const char *in, size_t n, char *out, size_t outcap);
void b64_encode(const unsigned char *in, size_t n, char *out);
bool glob_match(const char *pat, const char *s);
bool parse_long_strict(const char *s, long long *out);
int64_t parse_time_value_ms(const char *s, bool *ok);
json_t *json_parse_precise(const char *buf, size_t len, size_t flags, json_error_t *err);
void url_unescape_inplace(char *s, bool plus_is_space);

/* ------------------------------------------------------------------ */
/* configuration and flavour                                           */
/* ------------------------------------------------------------------ */
typedef enum { FLAVOR_ES8, FLAVOR_ES7, FLAVOR_OPENSEARCH } flavor_t;

typedef struct config {
    flavor_t flavor;
    bool discard;
    bool auto_create_index;
    bool refresh_timer;
    bool control;            /* the /_esd/ endpoints; off: routed as a cluster routes them */
    size_t max_content_length;
    size_t max_open_pits;    /* search.max_open_pit_context */
    size_t log_body_max;     /* bytes of each request body kept in /_esd/requests */
    char *auth_basic;        /* "user:pass" from --auth, or NULL */
    char *auth_apikey;       /* encoded api key from --auth, or NULL */
} config_t;

extern config_t g_cfg;
extern volatile int g_stopping;

const char *flavor_parse_error_type(void);   /* document_/mapper_parsing_exception */
const char *flavor_rejected_type(void);      /* es_/rejected_execution_exception */
bool flavor_has_type(int compat);            /* "_type":"_doc" in responses */

/* ------------------------------------------------------------------ */
/* requests and responses (http.c / router.c)                         */
/* ------------------------------------------------------------------ */
typedef struct kv {
    char *key;
    char *val;   /* NULL when the query argument had no '=' */
} kv_t;

#define MAX_SEGS 8

/* Who sent a request, when the auth fault restricts where it may write. */
typedef struct principal {
    char *user;              /* user name, or the API key's id */
    char *roles;             /* "r1,r2", named in a 403 */
    bool api_key;
    char **indices;          /* index patterns (glob '*') it may write */
    int nindices;
} principal_t;

typedef struct req {
    const char *method;
    char *path;              /* raw (still escaped) path */
    char *seg[MAX_SEGS];     /* unescaped path segments */
    int nseg;
    kv_t *args;
    int nargs;
    kv_t *hdrs;
    int nhdrs;
    const char *body;        /* decompressed body, NUL terminated */
    size_t body_len;
    int compat;              /* compatible-with=N, 0 if none */
    bool head;
    sb_t *spare;             /* reusable big buffer of this connection */
    principal_t *who;        /* set by auth_check for a restricted user, else NULL */
} req_t;

typedef struct resp {
    int status;
    json_t *json;            /* either json ... */
    sb_t raw;                /* ... or a pre-rendered body */
    bool has_raw;
    const char *ctype;       /* NULL = JSON */
    const char *hdr_name[4];
    char *hdr_val[4];
    int nhdr;
    bool drop;               /* close the connection without answering */
    bool no_filter;          /* filter_path must not touch this body */
    int items;               /* bulk items, for statistics */
} resp_t;

const char *req_arg(const req_t *r, const char *key);
bool req_arg_bool(const req_t *r, const char *key, bool dflt);
const char *req_hdr(const req_t *r, const char *name);

void resp_json(resp_t *rs, int status, json_t *body);
void resp_sb(resp_t *rs, int status, sb_t *body);
/* head + "{},{},...,{}" + tail of exactly bytes bytes (huge_body, huge_answer) */
void resp_huge(resp_t *rs, int status, size_t bytes, const char *head, const char *tail);
void resp_empty(resp_t *rs, int status);
void resp_add_header(resp_t *rs, const char *name, const char *val);
json_t *err_cause(const char *type, const char *reason);
void resp_error(resp_t *rs, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void resp_error_obj(resp_t *rs, int status, json_t *cause);
void resp_error_string(resp_t *rs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
json_t *index_not_found_cause(const char *name);
void resp_validation(resp_t *rs, const char *const *msgs, int n);

void route_request(req_t *r, resp_t *rs);
int http_start(int port);
void http_stop(void);

/* ------------------------------------------------------------------ */
/* store (store.c)                                                     */
/* ------------------------------------------------------------------ */
typedef struct doc {
    struct doc *hnext;           /* hash chain */
    struct doc *prev, *next;     /* live list in write order (Lucene doc order) */
    uint64_t hash;
    char *id;
    size_t id_len;
    char *raw;                   /* exact _source bytes as received */
    size_t raw_len;
    json_t *src;                 /* parsed _source */
    char *routing;
    int64_t version;
    int64_t seq_no;
    bool deleted;                /* tombstone: keeps the version after a delete */
    int refs;                    /* map + snapshots */
} doc_t;

/* The documents a search sees: the live list as of a refresh.  Shared by
 * the index (until its next refresh) and by every point in time opened
 * on it, so PITs opened between two refreshes cost no copy. */
typedef struct snapshot {
    int refs;
    size_t n;
    doc_t **docs;                /* in write order (Lucene doc order) */
    /* positions in docs ordered by _id, built by the first search paging on
     * _id (search_page.c); by_id_ties: two _ids compare equal, no such paging */
    size_t *by_id;
    bool by_id_built, by_id_ties;
} snapshot_t;

typedef struct index {
    char *name;
    char uuid[23];
    int64_t created_ms;
    json_t *settings;            /* flat "index.x" -> string */
    json_t *mappings;            /* {"properties":{...}, "dynamic":...} */
    json_t *aliases;             /* alias -> definition */
    doc_t **buckets;
    size_t nbuckets, nentries;
    doc_t *head, *tail;          /* live docs */
    size_t live;
    snapshot_t *snap;            /* searchable docs as of the last refresh, or NULL */
    int64_t next_seq;
    int64_t refresh_ms;          /* -1: no periodic refresh */
    int64_t last_refresh;
    bool dirty;
    uint64_t writes;             /* write generation */
    uint64_t refreshed_writes;   /* write generation visible to search */
} index_t;

typedef struct store {
    pthread_mutex_t lock;
    pthread_cond_t refreshed;
    index_t **idx;
    size_t n, cap;
} store_t;

extern store_t g_store;

void store_init(void);
void store_clear(void);          /* caller holds the lock */
index_t *store_find(const char *name);
index_t *store_create(const char *name);
void store_delete(index_t *ix);
doc_t *doc_find(index_t *ix, const char *id, size_t len);
doc_t *doc_new(const char *id, size_t id_len);
void doc_put(index_t *ix, doc_t *d);      /* replace any record with the same id */
void doc_release(doc_t *d);
void index_refresh(index_t *ix);
snapshot_t *snapshot_ref(snapshot_t *s);  /* NULL-safe; returns s */
void snapshot_release(snapshot_t *s);     /* NULL-safe */
void index_touch(index_t *ix);
void index_apply_settings(index_t *ix);
int index_replicas(const index_t *ix);
const char *index_setting(const index_t *ix, const char *key);
void refresh_thread_start(void);
void refresh_thread_stop(void);

/* name rules: returns NULL when valid, else a reason (static or malloc'd into *buf) */
const char *index_name_invalid(const char *name, char *buf, size_t bufsz);

/* ------------------------------------------------------------------ */
/* aliases (aliases.c)                                                 */
/* ------------------------------------------------------------------ */
bool alias_exists(const char *name);
/* resolve a write target; returns index, or NULL with *cause set (owned) or
 * *missing = true when nothing of that name exists */
index_t *resolve_write_target(const char *name, json_t **cause, bool *missing);
/* resolve a comma/wildcard expression to indices (deduplicated). Returns false
 * with *cause set when a concrete name is missing. */
typedef struct ixlist {
    index_t **v;
    size_t n, cap;
} ixlist_t;
bool resolve_read(const char *expr, ixlist_t *out, json_t **cause, bool ignore_unavailable);
void ixlist_free(ixlist_t *l);
void handle_aliases_post(req_t *r, resp_t *rs);
index_t *resolve_single(const char *name, json_t **cause, int *status);
void handle_alias_get(req_t *r, resp_t *rs, const char *index_expr, const char *names);

/* ------------------------------------------------------------------ */
/* mapping (mapping.c)                                                 */
/* ------------------------------------------------------------------ */
/* Validate a document against the index mapping, adding dynamic fields.
 * Returns NULL on success or an error cause (owned) with *status. */
json_t *mapping_apply(index_t *ix, const json_t *src, const char *raw, size_t raw_len,
                      const char *id, int *status);
json_t *mapping_normalize(const json_t *in, json_t **cause);
json_t *mapping_merge(json_t *dst, const json_t *add);   /* returns cause or NULL */
const json_t *mapping_field(const index_t *ix, const char *path);

/* ------------------------------------------------------------------ */
/* bulk (bulk_parse.c / bulk_exec.c)                                  */
/* ------------------------------------------------------------------ */
enum op_kind { OP_INDEX, OP_CREATE, OP_UPDATE, OP_DELETE };
enum vtype { VT_INTERNAL, VT_EXTERNAL, VT_EXTERNAL_GTE };

typedef struct strv {
    const char *p;
    size_t n;
} strv_t;

typedef struct bulk_op {
    enum op_kind kind;
    bool op_type_create;
    int line;                    /* 1-based action line number */
    strv_t index, id, routing, pipeline;
    bool has_index, has_id, has_routing, has_pipeline;
    bool id_null;
    bool has_version;
    long long version;
    enum vtype vtype;
    bool has_vtype;
    bool has_if_seq, has_if_term;
    long long if_seq, if_term;
    int require_alias;           /* -1 unset */
    const char *src;             /* source line, NULL for delete */
    size_t src_len;
    json_t *upd;                 /* parsed update body */
    json_t *doc;                 /* parsed source for index/create */
    json_t *doc_err;             /* per-item error found while parsing the source */
} bulk_op_t;

typedef struct bulk_req {
    bulk_op_t *ops;
    size_t n, cap;
    char **owned;                /* unescaped strings referenced by ops */
    size_t nowned, owned_cap;
    /* called for each parsed op instead of storing it, when set (discard mode) */
    void (*on_op)(void *ctx, struct bulk_req *b, bulk_op_t *op);
    void *ctx;
    bool parse_updates;          /* parse update bodies (not in discard mode) */
} bulk_req_t;

/* Parses the whole body; on a structural error returns false with *err set
 * to an error cause (owned) - nothing is executed then. */
bool bulk_parse(const char *body, size_t len, int compat, bulk_req_t *out, json_t **err);
void bulk_req_free(bulk_req_t *b);
void handle_bulk(req_t *r, resp_t *rs, const char *path_index);

/* single document writes share the bulk executor */
typedef struct item_result {
    int status;
    json_t *error;               /* owned */
    const char *result;
    char index[256];
    char *id;                    /* owned */
    int64_t version, seq_no;
    bool ok;
    bool forced_refresh;
    int shards_total;
    index_t *ix;
} item_result_t;

/* who: the sender's write privileges (NULL: everywhere) */
void exec_op(bulk_op_t *op, const char *default_routing, int default_require_alias,
             const principal_t *who, item_result_t *res);
void item_result_free(item_result_t *res);
void refresh_after_write(const char *index, int mode);   /* 1 true, 2 wait_for */
void item_write(sb_t *s, const char *opname, const item_result_t *res, int compat);
void handle_doc_write(req_t *r, resp_t *rs, const char *index, const char *id,
                      enum op_kind kind, bool op_create);

/* ------------------------------------------------------------------ */
/* ingest pipelines (pipelines.c); the registry is guarded by          */
/* g_store.lock                                                        */
/* ------------------------------------------------------------------ */
typedef struct pipeline pipeline_t;
void handle_ingest(req_t *r, resp_t *rs);          /* /_ingest/pipeline[/{id}] */
bool pipeline_exists(const char *id, size_t n);
void pipelines_clear(void);
/* Runs the op's pipelines (explicit, else the index's default, then its
 * final pipeline) on the document they apply to, changing it in place.
 * NULL, or the item's 400 cause (owned); *ran: a pipeline ran. */
json_t *ingest_apply(bulk_op_t *op, bool *ran);

/* ------------------------------------------------------------------ */
/* reads (search.c / docs.c)                                           */
/* ------------------------------------------------------------------ */
void handle_search(req_t *r, resp_t *rs, const char *expr);
void handle_count(req_t *r, resp_t *rs, const char *expr);
void handle_get_doc(req_t *r, resp_t *rs, const char *index, const char *id, bool source_only);
void handle_mget(req_t *r, resp_t *rs, const char *index);
void write_source(sb_t *s, const doc_t *d, const char *filter);
/* _source selection from a body value and/or the _source* query arguments:
 * returns a filter_path style spec (owned) or NULL for the whole source */
char *source_spec(const json_t *body_source, const req_t *r, bool *enabled);
void write_hit_meta(sb_t *s, const index_t *ix, const doc_t *d, int compat);

/* ------------------------------------------------------------------ */
/* points in time (pit.c); the registry is guarded by g_store.lock     */
/* ------------------------------------------------------------------ */
/* One index a search reads, and the documents it sees there. */
typedef struct search_target {
    index_t *ix;
    snapshot_t *snap;            /* not owned; NULL: nothing refreshed yet */
} search_target_t;

/* The search body's "pit" object. */
typedef struct pit_ref {
    const char *id;              /* points into the parsed body */
    int64_t keep_alive_ms;       /* -1: not given */
} pit_ref_t;

/* NULL, or the 400 cause (owned) of a malformed "pit" object */
json_t *pit_ref_parse(const json_t *pit, pit_ref_t *out);
/* Caller holds g_store.lock.  The indices and snapshots of the open PIT,
 * whose keep_alive the search renews; false with the error (400 for an id
 * esd did not issue, 404 for one closed or expired) answered into rs. */
bool pit_acquire(const pit_ref_t *ref, resp_t *rs, ixlist_t *ixs, search_target_t **targets,
                 size_t *n);
/* POST /{index}/_pit and DELETE /_pit (Elasticsearch) */
void handle_pit_open(req_t *r, resp_t *rs, const char *expr);
void handle_pit_close(req_t *r, resp_t *rs);
/* /{index}/_search/point_in_time, /_search/point_in_time[/_all] (OpenSearch) */
void handle_os_pit(req_t *r, resp_t *rs, const char *expr);
size_t pits_open(void);                 /* any thread, no lock */
size_t pits_expire(bool all);           /* caller holds the lock; how many were freed */
void pits_clear(void);                  /* caller holds the lock */
json_t *pits_json(void);                /* caller holds the lock: /_esd/pits */

/* ------------------------------------------------------------------ */
/* indices (indices.c)                                                 */
/* ------------------------------------------------------------------ */
void handle_index_create(req_t *r, resp_t *rs, const char *name);
void handle_index_get(req_t *r, resp_t *rs, const char *expr);
void handle_index_head(req_t *r, resp_t *rs, const char *expr);
void handle_index_delete(req_t *r, resp_t *rs, const char *expr);
void handle_settings_get(req_t *r, resp_t *rs, const char *expr);
void handle_settings_put(req_t *r, resp_t *rs, const char *expr);
void handle_mapping_get(req_t *r, resp_t *rs, const char *expr);
void handle_mapping_put(req_t *r, resp_t *rs, const char *expr);
void handle_refresh(req_t *r, resp_t *rs, const char *expr);
void handle_root(req_t *r, resp_t *rs);
void handle_health(req_t *r, resp_t *rs, const char *expr);
json_t *settings_flatten(const json_t *in, json_t **cause);
json_t *settings_nest(const json_t *flat);
void index_shards_json(sb_t *s, const index_t *ix);

/* ------------------------------------------------------------------ */
/* faults and control (faults.c / control.c)                           */
/* ------------------------------------------------------------------ */
enum fault_kind { FK_NONE, FK_DROP, FK_DELAY, FK_REJECT };

typedef struct pre_fault {
    bool drop;
    int64_t delay_ms;
} pre_fault_t;

bool faults_set(const json_t *spec, char *errbuf, size_t errsz);
json_t *faults_get(void);
void faults_clear(void);
void faults_pre_request(bool is_bulk, pre_fault_t *out);
int faults_bulk_reject(void);                /* 0 or HTTP status */
int faults_huge_body(size_t *bytes, bool *items_shape);   /* 0 or HTTP status */
int faults_huge_answer(const char *method, const char *path, size_t *bytes);   /* 0 or HTTP status */
int faults_item_reject(void);                /* 0 or item status */
bool faults_poison(const json_t *src, const char *raw, size_t len, char *field, size_t fsz);
bool faults_has_poison(void);
/* One user of the auth fault. */
typedef struct auth_user {
    char *basic;             /* "user:pass", or NULL */
    char *api_key;           /* encoded key, or NULL */
    char **indices;          /* patterns it may write */
    int nindices;            /* -1: every index */
    char *roles;             /* "r1,r2" */
} auth_user_t;

/* auth: true when allowed (r->who set for a restricted user), else fills
 * resp with 401 */
bool auth_check(req_t *r, resp_t *rs);
void principal_free(principal_t *p);
/* whether p (NULL: unrestricted) may write to the index or alias name */
bool principal_may_write(const principal_t *p, const char *name);
/* the per-item 403 security_exception for a write to index */
json_t *principal_denied_cause(const principal_t *p, const char *index);
void handle_control(req_t *r, resp_t *rs);

/* ------------------------------------------------------------------ */
/* filter_path (filter_path.c)                                         */
/* ------------------------------------------------------------------ */
json_t *filter_path_apply(json_t *root, const char *spec);   /* consumes root */
/* parse + filter + render; false when buf is not JSON (out untouched) */
bool filter_path_render(const char *buf, size_t len, const char *spec, sb_t *out);

/* The same filter decided while writing (bulk responses, bulk_filter.c). */
typedef struct fp_spec fp_spec_t;
typedef struct fp_state {
    int p, i;
} fp_state_t;
typedef struct fp_cur {
    const fp_spec_t *spec;
    fp_state_t *inc, *exc;       /* live pattern states */
    int ninc, nexc;
    bool inc_all;                /* everything below is included */
} fp_cur_t;
enum fp_ctx { FP_ROOT, FP_KEY, FP_ELEM };   /* where a value sits */

fp_spec_t *fp_compile(const char *spec);
void fp_spec_free(fp_spec_t *f);
void fp_root(const fp_spec_t *f, fp_cur_t *c);
#define FP_IN 1    /* an include pattern is alive below the key (c is set) */
#define FP_OUT 2   /* an exclude pattern ends on the key: it is removed */
/* 0 when no include pattern survives the key (c then owns nothing) */
int fp_child(const fp_cur_t *parent, const char *key, fp_cur_t *c);
void fp_cur_free(fp_cur_t *c);
/* whether a container that survived include but has no child left is
 * still written */
bool fp_empty_kept(const fp_cur_t *c, enum fp_ctx ctx);
/* writes v filtered; false (nothing written) when it disappears.  *inc:
 * whether it survived the include pass (its parent then does too). */
bool fp_write(sb_t *s, const json_t *v, const fp_cur_t *c, enum fp_ctx ctx, bool *inc);

/* _bulk responses written already filtered (bulk_filter.c) */
typedef struct bulk_filter bulk_filter_t;
bulk_filter_t *bulk_filter_new(const char *spec, int compat);
void bulk_filter_free(bulk_filter_t *bf);
/* appends one item (with a leading ',' unless first); false if it vanished */
bool bulk_filter_item(const bulk_filter_t *bf, sb_t *s, bool first, enum op_kind kind,
                      const item_result_t *res);
/* s = room reserved bytes + the items written by bulk_filter_item; makes it
 * the whole response body */
void bulk_filter_finish(const bulk_filter_t *bf, sb_t *s, size_t room, size_t shown, bool errors,
                        long long took);

/* ------------------------------------------------------------------ */
/* statistics and request log (stats.c)                               */
/* ------------------------------------------------------------------ */
void stats_init(void);
void stats_request(void);
void stats_bulk(int64_t t_ms, size_t items, size_t bytes, size_t ok_items);
void stats_items(const unsigned *counts);   /* counts[600], indexed by item status */
void stats_rejected(void);
void stats_dropped(void);
void stats_reset(void);
json_t *stats_json(void);

typedef struct reqlog {
    int64_t t_ms;
    char *method;
    char *url;
    json_t *headers;
    char *body;                  /* prefix of the body */
    size_t body_bytes;           /* full (decompressed) length */
    size_t wire_bytes;           /* length as received */
    int items;
    int status;
    int64_t duration_ms;
} reqlog_t;

void reqlog_add(reqlog_t *e);   /* takes ownership of the strings */
json_t *reqlog_json(int n);
void reqlog_clear(void);

#endif
