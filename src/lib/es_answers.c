/*
 * es_answers.c: the caps on Elasticsearch's answers other than _bulk's
 * (see es_answers.h), and the few things ecp reads out of them with the
 * streaming scanner of json_scan.c: the keys of an object (the indices of
 * GET /<name> and GET /_alias/<name>) and _count's count; with the same
 * scanner it checks the lines of an NDJSON file and reads their id (the
 * file source).  No tree is built, so memory stays small whatever a
 * hostile server sends (json_scan.c says why not jansson).
 * Plain C99: the unit tests build it alone.
 */
#include "es_answers.h"
#include "json_scan.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

size_t
ecp_answer_cap(EcpAnswerKind kind)
{
	switch (kind)
	{
		case ECP_ANSWER_PRODUCT:
			return ECP_ANSWER_PRODUCT_CAP;
		case ECP_ANSWER_INDICES:
			return ECP_ANSWER_INDICES_CAP;
		case ECP_ANSWER_COUNT:
			return ECP_ANSWER_COUNT_CAP;
		case ECP_ANSWER_HITS:
			return ECP_ANSWER_HITS_CAP;
		case ECP_ANSWER_ACK:
			break;
	}
	return ECP_ANSWER_ACK_CAP;
}

const char *
ecp_answer_requests(EcpAnswerKind kind)
{
	switch (kind)
	{
		case ECP_ANSWER_PRODUCT:
			return "GET /";
		case ECP_ANSWER_INDICES:
			return "GET /<index or alias> and GET /_alias/<alias>";
		case ECP_ANSWER_COUNT:
			return "GET /<index>/_count";
		case ECP_ANSWER_HITS:
			return "POST /_search with a point in time (a page of ids)";
		case ECP_ANSWER_ACK:
			break;
	}
	return "index creation, settings, refresh, _aliases, HEAD and DELETE requests";
}

const char *
ecp_answer_hint(EcpAnswerKind kind)
{
	switch (kind)
	{
		case ECP_ANSWER_PRODUCT:
			return "Elasticsearch and OpenSearch answer GET / with less than 1 KiB, so a larger answer comes from some other server.";
		case ECP_ANSWER_INDICES:
			return "ecp asks for the index names only, about 100 bytes per index, so a larger answer comes from a server that is not Elasticsearch, or from an alias over more than about 10,000 indices.";
		case ECP_ANSWER_COUNT:
			return "Elasticsearch answers _count with less than 1 KiB, so a larger answer comes from some other server.";
		case ECP_ANSWER_HITS:
			return "ecp asks for at most 10,000 ids without their documents, about 100 bytes each plus the id, so a larger answer comes from a server that ignores \"_source\": false, or is not Elasticsearch.";
		case ECP_ANSWER_ACK:
			break;
	}
	return "Elasticsearch acknowledges these requests with less than 1 KiB and explains an error in a few KiB, so a larger answer comes from some other server.";
}

/* An answer: one object, each member handed to member with its key decoded. */
static EcpAnswerRead
scan_answer(const char *body, size_t len, EcpScanMemberFn member, void *arg, char *err,
			size_t errlen)
{
	EcpScan		s;
	EcpScanText	key;
	int			rc;

	memset(&key, 0, sizeof(key));
	ecp_scan_begin(&s, body, len, "the answer", err, errlen);
	rc = ecp_scan_object(&s, member, arg, &key);
	free(key.data);
	if (rc == 0)
		return ECP_ANSWER_READ;
	return s.failure == ECP_SCAN_NOT_JSON ? ECP_ANSWER_NOT_JSON : ECP_ANSWER_UNEXPECTED;
}

/* ---------------------------------------------------------------------------
 * The keys of an object.
 * ------------------------------------------------------------------------- */

typedef struct KeyList
{
	char	  **keys;
	int			n;
	int			cap;
} KeyList;

/* A key for a message: printable ASCII, the rest as '?', at most 64 bytes. */
static void
printable(const char *key, char *out, size_t outlen)
{
	size_t		i;

	for (i = 0; key[i] && i + 1 < outlen && i < 64; i++)
		out[i] = key[i] >= 0x20 && key[i] < 0x7f ? key[i] : '?';
	out[i] = '\0';
}

static int
collect_key(EcpScan *s, const EcpScanText *key, void *arg)
{
	KeyList    *list = arg;
	char	   *copy;

	if (key->has_nul)
		return ecp_scan_unexpected(s, "a key of the answer holds \\u0000");
	if (list->n == list->cap)
	{
		int			cap = list->cap ? list->cap * 2 : 16;
		char	  **grown;

		if (list->cap > INT_MAX / 4)
			return ecp_scan_unexpected(s, "the answer has more than %d keys", list->cap);
		grown = realloc(list->keys, sizeof(char *) * (size_t) cap);
		if (grown == NULL)
			return ecp_scan_unexpected(s, "out of memory reading the answer");
		list->keys = grown;
		list->cap = cap;
	}
	copy = malloc(key->len + 1);
	if (copy == NULL)
		return ecp_scan_unexpected(s, "out of memory reading the answer");
	memcpy(copy, key->data, key->len + 1);
	list->keys[list->n++] = copy;
	return ecp_scan_skip_value(s);
}

static int
compare_keys(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* A key given twice (an index named twice): sorted copies side by side. */
static const char *
duplicate_key(char **keys, int n)
{
	char	  **sorted;
	const char *found = NULL;

	if (n < 2)
		return NULL;
	sorted = malloc(sizeof(char *) * (size_t) n);
	if (sorted == NULL)
		return NULL;
	memcpy(sorted, keys, sizeof(char *) * (size_t) n);
	qsort(sorted, (size_t) n, sizeof(char *), compare_keys);
	for (int i = 1; i < n && found == NULL; i++)
		if (strcmp(sorted[i - 1], sorted[i]) == 0)
			found = sorted[i];
	free(sorted);
	return found;
}

void
ecp_answer_keys_free(char **keys, int nkeys)
{
	if (keys == NULL)
		return;
	for (int i = 0; i < nkeys; i++)
		free(keys[i]);
	free(keys);
}

EcpAnswerRead
ecp_answer_object_keys(const char *body, size_t len, char ***keys, int *nkeys, char *err,
					   size_t errlen)
{
	KeyList		list = {NULL, 0, 0};
	EcpAnswerRead rc = scan_answer(body, len, collect_key, &list, err, errlen);
	const char *twice = rc == ECP_ANSWER_READ ? duplicate_key(list.keys, list.n) : NULL;

	if (twice)
	{
		char		shown[72];

		printable(twice, shown, sizeof(shown));
		if (err && errlen > 0)
			snprintf(err, errlen, "the key \"%s\" appears twice", shown);
		rc = ECP_ANSWER_UNEXPECTED;
	}
	if (rc != ECP_ANSWER_READ)
	{
		ecp_answer_keys_free(list.keys, list.n);
		list.keys = NULL;
		list.n = 0;
	}
	*keys = list.keys;
	*nkeys = list.n;
	return rc;
}

/* ---------------------------------------------------------------------------
 * _count's count.
 * ------------------------------------------------------------------------- */

typedef struct Count
{
	long long	value;
	int			seen;
} Count;

/* The number at s->p, which must be a non-negative integer. */
static int
read_integer(EcpScan *s, long long *value)
{
	const unsigned char *from = s->p;
	EcpScanNumber kind;

	if (ecp_scan_peek(s) != '-' && !ecp_scan_is_digit(ecp_scan_peek(s)))
	{
		if (ecp_scan_skip_value(s) != 0)
			return -1;
		return ecp_scan_unexpected(s, "\"count\" is not a number");
	}
	if (ecp_scan_number(s) != 0)
		return -1;
	kind = ecp_scan_number_kind(from, s->p, value);
	if (kind == ECP_SCAN_REAL || *from == '-')
		return ecp_scan_unexpected(s, "\"count\" is %.*s, not a non-negative integer",
								   (int) (s->p - from > 40 ? 40 : s->p - from), (const char *) from);
	if (kind == ECP_SCAN_TOO_BIG)
		return ecp_scan_unexpected(s, "\"count\" is larger than %lld", LLONG_MAX);
	return 0;
}

static int
read_count(EcpScan *s, const EcpScanText *key, void *arg)
{
	Count	   *count = arg;

	if (key->has_nul || key->len != 5 || memcmp(key->data, "count", 5) != 0)
		return ecp_scan_skip_value(s);
	if (count->seen)
		return ecp_scan_unexpected(s, "\"count\" appears twice");
	count->seen = 1;
	return read_integer(s, &count->value);
}

EcpAnswerRead
ecp_answer_count(const char *body, size_t len, long long *value, char *err, size_t errlen)
{
	Count		count = {-1, 0};
	EcpAnswerRead rc = scan_answer(body, len, read_count, &count, err, errlen);

	if (rc == ECP_ANSWER_READ && !count.seen)
	{
		if (err && errlen > 0)
			snprintf(err, errlen, "the answer has no \"count\"");
		rc = ECP_ANSWER_UNEXPECTED;
	}
	*value = rc == ECP_ANSWER_READ ? count.value : -1;
	return rc;
}

/* ---------------------------------------------------------------------------
 * The id of an NDJSON line.
 * ------------------------------------------------------------------------- */

typedef struct LineId
{
	int			seen;			/* how many members are named the field */
	EcpScanText	text;			/* a string id, into the caller's buffer */
	const char *bad;			/* what the first one is when it is no id */
	char	   *id;				/* the caller's buffer */
} LineId;

/* The id field's string value at s->p, into the caller's buffer. */
static int
read_string_id(EcpScan *s, LineId *line)
{
	if (ecp_scan_string(s, &line->text) != 0)
		return -1;
	if (line->text.has_nul)
		line->bad = "a string holding \\u0000";
	else if (line->text.over)
		line->bad = "a string longer than " STRINGIFY(ECP_LINE_ID_MAX) " bytes";
	else if (line->text.len == 0)
		line->bad = "an empty string";
	return 0;
}

/* The id field's number at s->p: an integer, in decimal as jansson's %lld. */
static int
read_number_id(EcpScan *s, LineId *line)
{
	const unsigned char *from = s->p;
	long long	value;
	EcpScanNumber kind;

	if (ecp_scan_number(s) != 0)
		return -1;
	kind = ecp_scan_number_kind(from, s->p, &value);
	if (kind == ECP_SCAN_REAL)
		line->bad = "a real number";
	else if (kind == ECP_SCAN_TOO_BIG)
		line->bad = "an integer beyond 64 bits";
	else
		snprintf(line->id, ECP_LINE_ID_MAX + 1, "%lld", value);
	return 0;
}

static int
read_line_id(EcpScan *s, const EcpScanText *key, void *arg)
{
	LineId	   *line = arg;
	int			c = ecp_scan_peek(s);

	/* key was only compared with the field: over when it differs */
	if (key->over || key->len != key->expect_len || ++line->seen > 1)
		return ecp_scan_skip_value(s);
	if (c == '"')
		return read_string_id(s, line);
	if (c == '-' || ecp_scan_is_digit(c))
		return read_number_id(s, line);
	line->bad = ecp_scan_value_kind(c);
	return ecp_scan_skip_value(s);
}

EcpLineId
ecp_line_id(const char *line, size_t len, const char *field, char id[ECP_LINE_ID_MAX + 1],
			char *err, size_t errlen)
{
	EcpScan		s;
	EcpScanText	key;
	LineId		found;

	memset(&key, 0, sizeof(key));
	key.expect = field;
	key.expect_len = strlen(field);
	memset(&found, 0, sizeof(found));
	found.id = id;
	found.text.data = id;
	found.text.cap = ECP_LINE_ID_MAX + 1;
	found.text.fixed = 1;
	id[0] = '\0';
	ecp_scan_begin(&s, line, len, "the line", err, errlen);
	if (ecp_scan_object(&s, read_line_id, &found, &key) != 0)
	{
		id[0] = '\0';
		return s.failure == ECP_SCAN_NOT_OBJECT ? ECP_LINE_NOT_OBJECT : ECP_LINE_NOT_JSON;
	}
	if (found.seen == 1 && found.bad == NULL)
		return ECP_LINE_ID;
	id[0] = '\0';
	if (found.seen > 1)
		return ECP_LINE_ID_TWICE;
	if (found.bad && err && errlen > 0)
		snprintf(err, errlen, "%s", found.bad);
	return found.bad ? ECP_LINE_BAD_ID : ECP_LINE_NO_ID;
}
