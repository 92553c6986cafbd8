/*
 * filter_path for _bulk responses, applied while the items are written.
 *
 * The generic path (http.c render()) parses the rendered response, filters
 * the tree and renders it again; for a bulk response of thousands of items
 * that costs several times the bulk itself.  The shape of a bulk response is
 * fixed (errors, took, items -> {op: {fields, _shards{...}, error{...}}}), so
 * the filter's decision for every fixed key is taken once per request with
 * the cursors of filter_path.c, and each item writes only what survives.
 * Only the error object (arbitrary JSON) is filtered per item, with
 * fp_write().  The output is byte for byte the generic path's (the tests
 * compare both through the hidden esd_filter_check parameter).
 */
#include "esd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum bf_field {
    F_INDEX, F_TYPE, F_ID, F_VERSION, F_RESULT, F_FORCED, F_SHARDS, F_SEQ, F_TERM, F_STATUS,
    F_ERROR, NFIELDS
};

static const char *const field_names[NFIELDS] = {
    "_index", "_type", "_id", "_version", "result", "forced_refresh", "_shards", "_seq_no",
    "_primary_term", "status", "error",
};

static const char *const shard_names[3] = {"total", "successful", "failed"};
static const char *const op_names[4] = {"index", "create", "update", "delete"};

typedef struct bf_node {
    int r;                       /* fp_child() flags: FP_IN (c is set), FP_OUT */
    fp_cur_t c;
} bf_node_t;

typedef struct bf_op {
    bf_node_t op;                /* items -> <op> */
    bf_node_t f[NFIELDS];        /* items -> <op> -> field */
    bf_node_t sh[3];             /* items -> <op> -> _shards -> field */
} bf_op_t;

struct bulk_filter {
    fp_spec_t *spec;
    bool has_type;
    bf_node_t root, errors, took, items;
    bf_op_t ops[4];
};

/* --------------------------------------------------------------- */
/* the plan                                                        */
/* --------------------------------------------------------------- */
static void node(bf_node_t *n, const bf_node_t *parent, const char *key)
{
    n->r = (parent->r & FP_IN) ? fp_child(&parent->c, key, &n->c) : 0;
}

static void node_free(bf_node_t *n)
{
    if (n->r & FP_IN)
        fp_cur_free(&n->c);
}

/* a scalar at this node survives the include pass */
static inline bool scalar_in(const bf_node_t *n)
{
    return (n->r & FP_IN) && n->c.inc_all;
}

bulk_filter_t *bulk_filter_new(const char *spec, int compat)
{
    bulk_filter_t *bf = xcalloc(1, sizeof *bf);
    bf->spec = fp_compile(spec);
    bf->has_type = flavor_has_type(compat);
    bf->root.r = FP_IN;
    fp_root(bf->spec, &bf->root.c);
    node(&bf->errors, &bf->root, "errors");
    node(&bf->took, &bf->root, "took");
    node(&bf->items, &bf->root, "items");
    for (int k = 0; k < 4; k++) {
        bf_op_t *op = &bf->ops[k];
        node(&op->op, &bf->items, op_names[k]);   /* array elements: same cursor */
        for (int f = 0; f < NFIELDS; f++)
            node(&op->f[f], &op->op, field_names[f]);
        for (int i = 0; i < 3; i++)
            node(&op->sh[i], &op->f[F_SHARDS], shard_names[i]);
    }
    return bf;
}

void bulk_filter_free(bulk_filter_t *bf)
{
    if (!bf)
        return;
    for (int k = 0; k < 4; k++) {
        node_free(&bf->ops[k].op);
        for (int f = 0; f < NFIELDS; f++)
            node_free(&bf->ops[k].f[f]);
        for (int i = 0; i < 3; i++)
            node_free(&bf->ops[k].sh[i]);
    }
    node_free(&bf->errors);
    node_free(&bf->took);
    node_free(&bf->items);
    node_free(&bf->root);
    fp_spec_free(bf->spec);
    free(bf);
}

/* --------------------------------------------------------------- */
/* writing one item                                                */
/* --------------------------------------------------------------- */
/* members of the object being written: n written, in = something
 * survived the include pass (written or removed by an exclusion) */
typedef struct acc {
    int n;
    bool in;
} acc_t;

/* writes [,]"name": */
static void key(sb_t *s, const acc_t *a, const char *name)
{
    if (a->n)
        sb_putc(s, ',');
    sb_putc(s, '"');
    sb_puts(s, name);
    sb_append(s, "\":", 2);
}

/* for a scalar: whether to write it (the caller then writes key + value) */
static bool scalar(const bf_node_t *n, acc_t *a)
{
    if (!scalar_in(n))
        return false;
    a->in = true;
    return !(n->r & FP_OUT);
}

static void int_field(sb_t *s, acc_t *a, const bf_op_t *op, int f, long long v)
{
    if (!scalar(&op->f[f], a))
        return;
    key(s, a, field_names[f]);
    sb_json_int(s, v);
    a->n++;
}

static void str_field(sb_t *s, acc_t *a, const bf_op_t *op, int f, const char *v)
{
    if (!scalar(&op->f[f], a))
        return;
    key(s, a, field_names[f]);
    if (v)
        sb_json_cstr(s, v);
    else
        sb_puts(s, "null");
    a->n++;
}

/* A container member: its key was written at mark by the caller, then its
 * members (sub: what they left).  Keeps or rolls back. */
static void close_member(sb_t *s, acc_t *a, const bf_node_t *n, size_t mark, const acc_t *sub)
{
    if (sub->in)
        a->in = true;
    if (sub->in && !(n->r & FP_OUT) && (sub->n || fp_empty_kept(&n->c, FP_KEY))) {
        a->n++;
        return;
    }
    s->len = mark;
    s->buf[mark] = '\0';
}

static void shards(const bf_op_t *op, sb_t *s, acc_t *a, const item_result_t *res)
{
    const bf_node_t *sh = &op->f[F_SHARDS];
    if (!(sh->r & FP_IN))
        return;
    bool noop = !strcmp(res->result, "noop");   /* nothing was written to any shard */
    long long v[3] = {noop ? 0 : res->shards_total, noop ? 0 : 1, 0};
    acc_t sub = {0, sh->c.inc_all};
    size_t mark = s->len;
    key(s, a, "_shards");
    sb_putc(s, '{');
    for (int i = 0; i < 3; i++)
        if (scalar(&op->sh[i], &sub)) {
            key(s, &sub, shard_names[i]);
            sb_json_int(s, v[i]);
            sub.n++;
        }
    sb_putc(s, '}');
    close_member(s, a, sh, mark, &sub);
}

static void error_field(const bf_op_t *op, sb_t *s, acc_t *a, const item_result_t *res)
{
    const bf_node_t *e = &op->f[F_ERROR];
    if (!(e->r & FP_IN))
        return;
    size_t mark = s->len;
    key(s, a, "error");
    acc_t sub = {0, false};
    if (fp_write(s, res->error, &e->c, FP_KEY, &sub.in))
        sub.n = 1;
    close_member(s, a, e, mark, &sub);
}

static void fields(const bulk_filter_t *bf, const bf_op_t *op, sb_t *s, acc_t *a,
                   const item_result_t *res)
{
    str_field(s, a, op, F_INDEX, res->index);
    if (bf->has_type)
        str_field(s, a, op, F_TYPE, "_doc");
    str_field(s, a, op, F_ID, res->id);
    if (!res->ok) {
        int_field(s, a, op, F_STATUS, res->status);
        error_field(op, s, a, res);
        return;
    }
    int_field(s, a, op, F_VERSION, res->version);
    str_field(s, a, op, F_RESULT, res->result);
    if (res->forced_refresh && scalar(&op->f[F_FORCED], a)) {
        key(s, a, "forced_refresh");
        sb_puts(s, "true");
        a->n++;
    }
    shards(op, s, a, res);
    int_field(s, a, op, F_SEQ, res->seq_no);
    int_field(s, a, op, F_TERM, 1);
    int_field(s, a, op, F_STATUS, res->status);
}

/* An item is an array element: it is written when anything in it survived
 * the include pass, as {} when exclusions removed all of it. */
bool bulk_filter_item(const bulk_filter_t *bf, sb_t *s, bool first, enum op_kind kind,
                      const item_result_t *res)
{
    if (!(bf->items.r & FP_IN) || (bf->items.r & FP_OUT))
        return false;
    const bf_op_t *op = &bf->ops[kind];
    size_t mark = s->len;
    if (!first)
        sb_putc(s, ',');
    sb_putc(s, '{');
    acc_t item = {0, bf->items.c.inc_all};
    if (op->op.r & FP_IN) {
        size_t omark = s->len;
        key(s, &item, op_names[kind]);
        sb_putc(s, '{');
        acc_t sub = {0, op->op.c.inc_all};
        fields(bf, op, s, &sub, res);
        sb_putc(s, '}');
        close_member(s, &item, &op->op, omark, &sub);
    }
    if (!item.in) {
        s->len = mark;
        s->buf[mark] = '\0';
        return false;
    }
    sb_putc(s, '}');
    return true;
}

/* --------------------------------------------------------------- */
/* the envelope                                                    */
/* --------------------------------------------------------------- */
void bulk_filter_finish(const bulk_filter_t *bf, sb_t *s, size_t room, size_t shown, bool errors,
                        long long took)
{
    char head[128];
    int n = 0, keys = 0;
    head[n++] = '{';
    acc_t top = {0, false};
    if (scalar(&bf->errors, &top)) {
        n += snprintf(head + n, sizeof head - (size_t)n, "\"errors\":%s", errors ? "true" : "false");
        keys++;
    }
    if (scalar(&bf->took, &top)) {
        n += snprintf(head + n, sizeof head - (size_t)n, "%s\"took\":%lld", keys ? "," : "", took);
        keys++;
    }
    bool items = (bf->items.r & FP_IN) && !(bf->items.r & FP_OUT) &&
                 (shown || (bf->items.c.inc_all && fp_empty_kept(&bf->items.c, FP_KEY)));
    if (items)
        n += snprintf(head + n, sizeof head - (size_t)n, "%s\"items\":[", keys ? "," : "");
    else
        s->len = room;
    if ((size_t)n > room)
        abort();   /* cannot happen: room is sized for the longest header */
    /* header right before the items, then everything moved to the start */
    size_t start = room - (size_t)n;
    memcpy(s->buf + start, head, (size_t)n);
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
    sb_append(s, items ? "]}" : "}", items ? 2 : 1);
}
