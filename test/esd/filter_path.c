/*
 * filter_path: keep only the leaves matching the comma separated patterns
 * ('*' within a name, '**' for any depth, '-' prefix to exclude), then drop
 * empty objects and arrays.  Arrays are transparent, as in ES.  This
 * reproduces the items.*.error gotcha of ES_API.md 2.8.  Also used for
 * _source includes/excludes.
 */
#include "esd.h"

#include <stdlib.h>
#include <string.h>

typedef struct fpat {
    char **seg;
    int n;
} fpat_t;

typedef struct fstate {
    int p, i;
} fstate_t;

typedef struct fset {
    fpat_t *pats;
    int n;
} fset_t;

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

json_t *filter_path_apply(json_t *root, const char *spec)
{
    fset_t inc = {NULL, 0}, exc = {NULL, 0};
    compile(spec, &inc, &exc);
    json_t *out = root;
    if (inc.n) {
        fstate_t *st = initial(&inc);
        out = keep(&inc, root, st, inc.n);
        free(st);
        json_decref(root);
        if (!out)
            out = json_object();
    }
    if (exc.n) {
        fstate_t *st = initial(&exc);
        drop(&exc, out, st, exc.n);
        free(st);
    }
    set_free(&inc);
    set_free(&exc);
    return out;
}
