/*
 * Ingest pipelines, shared by pipelines.c (definitions, registry,
 * endpoints) and ingest.c (running them).
 */
#ifndef ESD_PIPELINES_H
#define ESD_PIPELINES_H

#include "esd.h"

typedef enum { P_SET, P_REMOVE, P_RENAME, P_LOWERCASE, P_UPPERCASE } ptype_t;

typedef struct fpath {
    char *path;                  /* as configured, for messages */
    char **el;                   /* elements below the source root */
    int nel;
} fpath_t;

typedef struct proc {
    ptype_t type;
    bool ignore_failure, ignore_missing, override, ignore_empty_value;
    fpath_t *fields;             /* remove: several; the others: one */
    int nfields;
    fpath_t target;              /* rename / lowercase / uppercase target_field */
    bool has_target;
    fpath_t copy_from;           /* set */
    bool has_copy_from;
    json_t *value;               /* set */
} proc_t;

struct pipeline {
    char *id;
    json_t *def;                 /* the definition as it was PUT */
    proc_t *procs;
    int nprocs;
};

/* The Java class ES names in its messages for a parsed JSON value. */
const char *java_type(const json_t *v);
/* the pipeline of that id, or NULL; caller holds g_store.lock */
pipeline_t *pipeline_find(const char *id, size_t n);
/* Runs the processors in order on doc (changed in place); NULL or the
 * failure (owned). */
json_t *pipeline_run(const pipeline_t *pl, json_t *doc);

#endif
