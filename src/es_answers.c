/*
 * es_answers.c: the few things ecp reads out of Elasticsearch's JSON
 * answers besides _bulk's (bulk_response.c): the keys of an object (the
 * indices of GET /<name> and GET /_alias/<name>) and _count's count.
 * jansson only (its json_object clashes with PostgreSQL's fmgr
 * prototypes, so these stay out of files that need those).
 */
#include "postgres.h"

#include "es_answers.h"

#include <jansson.h>

char	  **
ecp_json_object_keys(const char *body, size_t len, int *nkeys)
{
	json_error_t jerr;
	json_t	   *root = json_loadb(body, len, 0, &jerr);
	const char *key;
	json_t	   *value;
	char	  **keys;

	*nkeys = 0;
	if (!json_is_object(root))
	{
		if (root)
			json_decref(root);
		return NULL;
	}
	keys = palloc0(sizeof(char *) * (json_object_size(root) + 1));
	json_object_foreach(root, key, value)
		keys[(*nkeys)++] = pstrdup(key);
	json_decref(root);
	return keys;
}

int64
ecp_json_count(const char *body, size_t len)
{
	json_error_t jerr;
	json_t	   *root = json_loadb(body, len, 0, &jerr);
	json_t	   *count = root ? json_object_get(root, "count") : NULL;
	int64		n = json_is_integer(count) ? (int64) json_integer_value(count) : -1;

	if (root)
		json_decref(root);
	return n;
}
