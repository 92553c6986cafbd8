/*
 * es_answers.h: keys and counts out of Elasticsearch's JSON answers.
 */
#ifndef ECP_ES_ANSWERS_H
#define ECP_ES_ANSWERS_H

#include <stddef.h>

/* The keys of a JSON object (palloc'd), or NULL when it is not one. */
extern char **ecp_json_object_keys(const char *body, size_t len, int *nkeys);

/* The "count" member of a _count answer, or -1. */
extern int64 ecp_json_count(const char *body, size_t len);

#endif
