/*
 * filter_path: keep only the leaves matching the comma separated patterns
 * ('*' within a name, '**' for any depth, '-' prefix to exclude), then drop
 * empty objects and arrays.  Arrays are transparent, as in ES.  This
 * reproduces ES's gotcha: filter_path=items.*.error drops the successful
 * items from a _bulk response's items[] altogether.  Also used for
 * _source includes/excludes.
 *
 * Two forms of the same filter: filter_path_apply() on a jansson tree (the
 * reference, used for every endpoint), and cursors (fp_child, fp_write) that
 * decide key by key while a response is written, so that _bulk responses are
 * never parsed back (bulk_filter.c).
 */
#include "esd.h"

#include <stdlib.h>
#include <string.h>

typedef struct fpat {
    char **seg;
    int n;
} fpat_t;

typedef fp_state_t fstate_t;

typedef struct fset {
    fpat_t *pats;
    int n;
} fset_t;

struct fp_spec {
    fset_t inc, exc;
};

static void compile(const char *spec, fset_t *inc, fset_t *exc)
{
    char *copy = xstrdup(spec), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        fset_t *set = inc;
        if (*t == '-') {
            set = exc;
            t++;
        }
        if (!*t)
            continue;
        set->pats = xrealloc(set->pats, (size_t)(set->n + 1) * sizeof(fpat_t));
        fpat_t *fp = &set->pats[set->n++];
        fp->seg = NULL;
        fp->n = 0;
        char *s2 = NULL;
        for (char *sg = strtok_r(t, ".", &s2); sg; sg = strtok_r(NULL, ".", &s2)) {
            fp->seg = xrealloc(fp->seg, (size_t)(fp->n + 1) * sizeof(char *));
            fp->seg[fp->n++] = xstrdup(sg);
        }
        if (!fp->n)
            set->n--;   /* only dots ("."): no segment to match */
    }
    free(copy);
}

static void set_free(fset_t *s)
{
    for (int p = 0; p < s->n; p++) {
        for (int i = 0; i < s->pats[p].n; i++)
            free(s->pats[p].seg[i]);
        free(s->pats[p].seg);
    }
    free(s->pats);
}

/* Advances states over one key.  Returns true if some pattern ends here. */
static bool step(const fset_t *set, const fstate_t *st, int nst, const char *key, fstate_t **out,
                 int *nout)
{
    bool full = false;
    *out = xmalloc((size_t)(nst * 2 + 1) * sizeof(fstate_t));
    *nout = 0;
    for (int k = 0; k < nst; k++) {
        const fpat_t *fp = &set->pats[st[k].p];
        int i = st[k].i;
        const char *seg = fp->seg[i];
        if (!strcmp(seg, "**")) {
            if (i + 1 == fp->n) {
                full = true;
                continue;
            }
            (*out)[(*nout)++] = st[k];   /* '**' swallows this key */
            if (glob_match(fp->seg[i + 1], key)) {
                if (i + 2 == fp->n)
                    full = true;
                else
                    (*out)[(*nout)++] = (fstate_t){st[k].p, i + 2};
            }
        } else if (glob_match(seg, key)) {
            if (i + 1 == fp->n)
                full = true;
            else
                (*out)[(*nout)++] = (fstate_t){st[k].p, i + 1};
        }
    }
    return full;
}

static bool empty_container(const json_t *v)
{
    return (json_is_object(v) && !json_object_size(v)) || (json_is_array(v) && !json_array_size(v));
}

/* include pass: returns a new value or NULL when nothing is kept */
static json_t *keep(const fset_t *set, json_t *node, const fstate_t *st, int nst)
{
    if (json_is_array(node)) {
        json_t *out = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(node, i, x) {
            json_t *k = keep(set, x, st, nst);
            if (k)
                json_array_append_new(out, k);
        }
        if (!json_array_size(out)) {
            json_decref(out);
            return NULL;
        }
        return out;
    }
    if (!json_is_object(node))
        return NULL;
    json_t *out = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(node, key, v) {
        fstate_t *ns;
        int nn;
        if (step(set, st, nst, key, &ns, &nn)) {
            json_object_set(out, key, v);
        } else if (nn && (json_is_object(v) || json_is_array(v))) {
            json_t *k = keep(set, v, ns, nn);
            if (k)
                json_object_set_new(out, key, k);
        }
        free(ns);
    }
    if (!json_object_size(out)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* exclude pass, in place */
static void drop(const fset_t *set, json_t *node, const fstate_t *st, int nst)
{
    if (json_is_array(node)) {
        size_t i;
        json_t *x;
        json_array_foreach(node, i, x) drop(set, x, st, nst);
        return;
    }
    if (!json_is_object(node))
        return;
    const char *key;
    json_t *v, *tmp;
    json_object_foreach_safe(node, tmp, key, v) {
        fstate_t *ns;
        int nn;
        if (step(set, st, nst, key, &ns, &nn)) {
            json_object_del(node, key);
        } else if (nn) {
            drop(set, v, ns, nn);
            if (empty_container(v))
                json_object_del(node, key);
        }
        free(ns);
    }
}

static fstate_t *initial(const fset_t *set)
{
    fstate_t *st = xmalloc((size_t)(set->n + 1) * sizeof(fstate_t));
    for (int p = 0; p < set->n; p++)
        st[p] = (fstate_t){p, 0};
    return st;
}

fp_spec_t *fp_compile(const char *spec)
{
    fp_spec_t *f = xcalloc(1, sizeof *f);
    compile(spec, &f->inc, &f->exc);
    return f;
}

void fp_spec_free(fp_spec_t *f)
{
    if (!f)
        return;
    set_free(&f->inc);
    set_free(&f->exc);
    free(f);
}

json_t *filter_path_apply(json_t *root, const char *spec)
{
    fp_spec_t *f = fp_compile(spec);
    json_t *out = root;
    if (f->inc.n) {
        fstate_t *st = initial(&f->inc);
        out = keep(&f->inc, root, st, f->inc.n);
        free(st);
        json_decref(root);
        if (!out)
            out = json_object();
    }
    if (f->exc.n) {
        fstate_t *st = initial(&f->exc);
        drop(&f->exc, out, st, f->exc.n);
        free(st);
    }
    fp_spec_free(f);
    return out;
}

/* The generic path for a pre-rendered body: parse, filter, render again.
 * Returns false (out untouched) when the body does not parse. */
bool filter_path_render(const char *buf, size_t len, const char *spec, sb_t *out)
{
    json_error_t e;
    json_t *j = json_parse_precise(buf, len, JSON_DECODE_ANY, &e);
    if (!j)
        return false;
    j = filter_path_apply(j, spec);
    sb_json_value(out, j);
    json_decref(j);
    return true;
}

/* --------------------------------------------------------------- */
/* cursors: the same filter, decided key by key while writing       */
/* --------------------------------------------------------------- */
/* A cursor is the filter's state at one node of the output:
 *   include: inc_all (a prefix matched fully: everything below is kept) or
 *            the pattern states still alive;
 *   exclude: the pattern states still alive (none: nothing below is
 *            excluded).
 * keep() then drop() compute, node by node, exactly this:
 *   - keep(): a key survives when some include state survives it; a scalar
 *     survives only under inc_all; a container survives under inc_all or
 *     when one of its children survives ("survives include");
 *   - drop() then removes the keys an exclude pattern ends on, and the
 *     values of keys with a live exclude state that it left empty; it never
 *     removes array elements, nor the root.
 * So a child removed by drop() still counts for its parent's survival of
 * keep(): {"a":{"b":1}} with a.b,-a.b gives {} but inside an array [{}]. */
void fp_root(const fp_spec_t *f, fp_cur_t *c)
{
    memset(c, 0, sizeof *c);
    c->spec = f;
    c->inc_all = f->inc.n == 0;
    if (f->inc.n) {
        c->inc = initial(&f->inc);
        c->ninc = f->inc.n;
    }
    if (f->exc.n) {
        c->exc = initial(&f->exc);
        c->nexc = f->exc.n;
    }
}

void fp_cur_free(fp_cur_t *c)
{
    free(c->inc);
    free(c->exc);
    c->inc = c->exc = NULL;
    c->ninc = c->nexc = 0;
}

int fp_child(const fp_cur_t *p, const char *key, fp_cur_t *c)
{
    memset(c, 0, sizeof *c);
    c->spec = p->spec;
    c->inc_all = p->inc_all;
    if (!p->inc_all) {
        if (step(&p->spec->inc, p->inc, p->ninc, key, &c->inc, &c->ninc)) {
            c->inc_all = true;
            free(c->inc);
            c->inc = NULL;
            c->ninc = 0;
        } else if (!c->ninc) {
            fp_cur_free(c);
            return 0;
        }
    }
    int r = FP_IN;
    if (p->nexc && step(&p->spec->exc, p->exc, p->nexc, key, &c->exc, &c->nexc))
        r |= FP_OUT;
    if (!c->nexc || (r & FP_OUT)) {
        free(c->exc);   /* below an excluded key only include survival matters */
        c->exc = NULL;
        c->nexc = 0;
    }
    return r;
}

bool fp_empty_kept(const fp_cur_t *c, enum fp_ctx ctx)
{
    return ctx != FP_KEY || !c->nexc;
}

static int write_members(sb_t *s, const json_t *v, const fp_cur_t *c, bool *inc)
{
    int n = 0;
    const char *k;
    json_t *x;
    sb_putc(s, '{');
    json_object_foreach((json_t *)v, k, x) {
        fp_cur_t cc;
        int r = fp_child(c, k, &cc);
        if (!r)
            continue;
        size_t mark = s->len;
        if (n)
            sb_putc(s, ',');
        sb_json_cstr(s, k);
        sb_putc(s, ':');
        bool ci;
        if (fp_write(s, x, &cc, FP_KEY, &ci) && !(r & FP_OUT))
            n++;
        else
            s->len = mark;
        *inc |= ci;
        fp_cur_free(&cc);
    }
    sb_putc(s, '}');
    return n;
}

static int write_elems(sb_t *s, const json_t *v, const fp_cur_t *c, bool *inc)
{
    int n = 0;
    size_t i;
    json_t *x;
    sb_putc(s, '[');
    json_array_foreach((json_t *)v, i, x) {
        size_t mark = s->len;
        if (n)
            sb_putc(s, ',');
        bool ci;
        if (fp_write(s, x, c, FP_ELEM, &ci))
            n++;
        else
            s->len = mark;
        *inc |= ci;
    }
    sb_putc(s, ']');
    return n;
}

bool fp_write(sb_t *s, const json_t *v, const fp_cur_t *c, enum fp_ctx ctx, bool *inc)
{
    *inc = c->inc_all;
    if (c->inc_all && !c->nexc) {
        sb_json_value(s, v);
        return true;
    }
    bool obj = json_is_object(v);
    if (!obj && !json_is_array(v)) {
        if (c->inc_all)
            sb_json_value(s, v);
        return c->inc_all;
    }
    size_t mark = s->len;
    int n = obj ? write_members(s, v, c, inc) : write_elems(s, v, c, inc);
    if (*inc && (n || fp_empty_kept(c, ctx)))
        return true;
    s->len = mark;
    s->buf[mark] = '\0';
    if (ctx != FP_ROOT)
        return false;
    sb_puts(s, "{}");   /* keep() found nothing: the generic path answers {} */
    return true;
}
