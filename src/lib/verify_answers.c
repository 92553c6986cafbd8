/*
 * verify_answers.c: the answers a verify run reads (see verify_answers.h):
 * _mget's documents, a point in time's id, a page of a search's ids.
 *
 * Read with json_scan.c's streaming scanner, as es_answers.c reads the
 * others, and for the same reason: a tree of a hostile answer costs tens
 * of times its size.  json_scan.c walks the top-level object; the objects
 * and arrays inside are walked here (each_member, each_element) on its
 * primitives, down the few levels ecp reads; everything else is skipped
 * (and so checked).  A reader that finds the answer is not what it
 * expects stops there, and the body is then checked whole, so that a body
 * that is not JSON is said to be so.  Sources and sort values are spans
 * of the body; strings ecp keeps are unescaped by json_scan.c, or by
 * json_text.c's decoder when only their start is shown.
 * Plain C99: the unit tests build it alone.
 */
#include "verify_answers.h"
#include "json_scan.h"
#include "json_text.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_BYTES 16			/* the keys read are shorter: a longer one is
								 * none of them */
#define SHOWN_ID_BYTES 100		/* an id quoted in a message */
#define REASON_BYTES 300		/* of an error's type, and of its reason */

typedef int (*ElementFn) (EcpScan *s, int index, void *arg);

/* ---------------------------------------------------------------------------
 * Walking the objects and arrays inside the answer.
 * ------------------------------------------------------------------------- */

static void
skip_ws(EcpScan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* Not JSON: an unexpected byte, or the end, where expected should be. */
static int
bad_byte(EcpScan *s, const char *expected)
{
	int			c = ecp_scan_peek(s);
	size_t		at = (size_t) (s->p - s->start);

	if (s->err && s->errlen > 0)
	{
		if (c < 0)
			snprintf(s->err, s->errlen, "%s ends where %s should be at byte %zu", s->noun,
					 expected, at);
		else if (c >= 0x20 && c < 0x7f)
			snprintf(s->err, s->errlen, "unexpected '%c' where %s should be at byte %zu", c,
					 expected, at);
		else
			snprintf(s->err, s->errlen, "unexpected byte 0x%02x where %s should be at byte %zu", c,
					 expected, at);
	}
	s->failure = ECP_SCAN_NOT_JSON;
	return -1;
}

static int
key_is(const EcpScanText *key, const char *name)
{
	size_t		n = strlen(name);

	return !key->over && !key->has_nul && key->len == n && memcmp(key->data, name, n) == 0;
}

/*
 * The object at s->p: each member handed to member at its value, which it
 * must consume, with its key decoded (a key of KEY_BYTES or more is over).
 */
static int
each_member(EcpScan *s, EcpScanMemberFn member, void *arg)
{
	char		buf[KEY_BYTES];
	EcpScanText key;

	memset(&key, 0, sizeof(key));
	key.data = buf;
	key.cap = sizeof(buf);
	key.fixed = 1;
	s->p++;
	skip_ws(s);
	if (ecp_scan_peek(s) == '}')
	{
		s->p++;
		return 0;
	}
	for (;;)
	{
		skip_ws(s);
		if (ecp_scan_peek(s) != '"')
			return bad_byte(s, "a key");
		key.len = 0;
		key.over = 0;
		key.has_nul = 0;
		buf[0] = '\0';
		if (ecp_scan_string(s, &key) != 0)
			return -1;
		skip_ws(s);
		if (ecp_scan_peek(s) != ':')
			return bad_byte(s, "':'");
		s->p++;
		skip_ws(s);
		if (member(s, &key, arg) != 0)
			return -1;
		skip_ws(s);
		if (ecp_scan_peek(s) == '}')
		{
			s->p++;
			return 0;
		}
		if (ecp_scan_peek(s) != ',')
			return bad_byte(s, "',' or '}'");
		s->p++;
	}
}

/* The array at s->p: each element handed to element, which must consume it. */
static int
each_element(EcpScan *s, ElementFn element, void *arg)
{
	s->p++;
	skip_ws(s);
	if (ecp_scan_peek(s) == ']')
	{
		s->p++;
		return 0;
	}
	for (int i = 0;; i++)
	{
		skip_ws(s);
		if (i == INT_MAX)
			return ecp_scan_unexpected(s, "an array of the answer has more than %d elements",
									   INT_MAX);
		if (element(s, i, arg) != 0)
			return -1;
		skip_ws(s);
		if (ecp_scan_peek(s) == ']')
		{
			s->p++;
			return 0;
		}
		if (ecp_scan_peek(s) != ',')
			return bad_byte(s, "',' or ']'");
		s->p++;
	}
}

/* The kind of the value at s->p, for messages. */
static const char *
kind_here(const EcpScan *s)
{
	return ecp_scan_value_kind(ecp_scan_peek(s));
}

/* The whole body is one JSON value: 1, or 0 with err saying where it is not. */
static int
well_formed(const char *body, size_t len, char *err, size_t errlen)
{
	EcpScan		s;
	char		why[256];

	ecp_scan_begin(&s, body, len, "the answer", why, sizeof(why));
	skip_ws(&s);
	if (s.p == s.end)
		snprintf(why, sizeof(why), "the answer is empty");
	else if (ecp_scan_skip_value(&s) == 0)
	{
		skip_ws(&s);
		if (s.p == s.end)
			return 1;
		bad_byte(&s, "the end of the answer");
	}
	if (err && errlen > 0)
		snprintf(err, errlen, "%s", why);
	return 0;
}

/*
 * An answer: one object, each member handed to member.  One that is not
 * what the reader expects is checked whole: not JSON comes first.
 */
static EcpAnswerRead
read_answer(const char *body, size_t len, EcpScanMemberFn member, void *arg, char *err,
			size_t errlen)
{
	EcpScan		s;
	char		buf[KEY_BYTES];
	EcpScanText key;

	memset(&key, 0, sizeof(key));
	key.data = buf;
	key.cap = sizeof(buf);
	key.fixed = 1;
	ecp_scan_begin(&s, body, len, "the answer", err, errlen);
	if (ecp_scan_object(&s, member, arg, &key) == 0)
		return ECP_ANSWER_READ;
	if (s.failure == ECP_SCAN_NOT_JSON || !well_formed(body, len, err, errlen))
		return ECP_ANSWER_NOT_JSON;
	return ECP_ANSWER_UNEXPECTED;
}

/* JSON, not what the request answers (after the body was read whole). */
static EcpAnswerRead
unexpected(char *err, size_t errlen, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

static EcpAnswerRead
unexpected(char *err, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	if (err && errlen > 0)
	{
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return ECP_ANSWER_UNEXPECTED;
}

/* The string at the span [from, to) of the body, unescaped and quoted for a message. */
static void
span_shown(const unsigned char *from, const unsigned char *to, char *out, size_t outlen)
{
	char		text[SHOWN_ID_BYTES];
	int			cut;
	size_t		n = ecp_json_string_decode((const char *) from, (size_t) (to - from), text,
										   sizeof(text), &cut);

	ecp_json_quote_shown(text, n, cut, out, outlen);
}

/*
 * The integer at s->p into *value: 0; -1 when it is not JSON; 1 when it is
 * no integer within 64 bits, *instead saying what it is.
 */
static int
read_integer(EcpScan *s, long long *value, const char **instead)
{
	const unsigned char *from = s->p;
	int			c = ecp_scan_peek(s);
	EcpScanNumber kind;

	if (c != '-' && !ecp_scan_is_digit(c))
	{
		*instead = kind_here(s);
		return 1;
	}
	if (ecp_scan_number(s) != 0)
		return -1;
	kind = ecp_scan_number_kind(from, s->p, value);
	*instead = kind == ECP_SCAN_REAL ? "a real number" : "an integer beyond 64 bits";
	return kind == ECP_SCAN_INTEGER ? 0 : 1;
}

/* ---------------------------------------------------------------------------
 * _mget.
 * ------------------------------------------------------------------------- */

typedef struct MgetRead
{
	const char *const *ids;
	int			nids;
	EcpMgetDoc *docs;
	int			ndocs;			/* docs read */
	int			docs_seen;		/* "docs" members */
} MgetRead;

/* One item of "docs", read. */
typedef struct DocRead
{
	int			index;
	const char *want;			/* the id asked for at its position */
	EcpMgetDoc *doc;
	int			id_seen;
	int			id_matches;
	const unsigned char *id;	/* the _id's string, quotes included */
	const unsigned char *id_end;
	int			found_seen;
	int			found;
	int			source_seen;
	int			version_seen;
	int			error_seen;
	const unsigned char *type;	/* the error's type and reason strings */
	const unsigned char *type_end;
	const unsigned char *reason;
	const unsigned char *reason_end;
} DocRead;

/* A member given twice: which one. */
static int
seen_twice(EcpScan *s, int *seen, int index, const EcpScanText *key)
{
	if ((*seen)++ == 0)
		return 0;
	return ecp_scan_unexpected(s, "docs[%d] has \"%s\" twice", index, key->data);
}

static int
read_doc_id(EcpScan *s, DocRead *d)
{
	EcpScanText text;

	if (ecp_scan_peek(s) != '"')
		return ecp_scan_unexpected(s, "docs[%d]._id is %s, not a string", d->index, kind_here(s));
	memset(&text, 0, sizeof(text));
	text.expect = d->want;
	text.expect_len = strlen(d->want);
	d->id = s->p;
	if (ecp_scan_string(s, &text) != 0)
		return -1;
	d->id_end = s->p;
	d->id_matches = !text.over && !text.has_nul && text.len == text.expect_len;
	return 0;
}

/* A string member of an error object: its span. */
static int
error_member(EcpScan *s, const EcpScanText *key, void *arg)
{
	DocRead    *d = arg;
	const unsigned char *from = s->p;
	int			is_type = key_is(key, "type");

	if (ecp_scan_peek(s) != '"' || (!is_type && !key_is(key, "reason")))
		return ecp_scan_skip_value(s);
	if (ecp_scan_string(s, NULL) != 0)
		return -1;
	if (is_type)
	{
		d->type = from;
		d->type_end = s->p;
	}
	else
	{
		d->reason = from;
		d->reason_end = s->p;
	}
	return 0;
}

/* "error": an ErrorCause object, or a string (its reason). */
static int
read_error(EcpScan *s, DocRead *d)
{
	const unsigned char *from = s->p;

	if (ecp_scan_peek(s) == '{')
		return each_member(s, error_member, d);
	if (ecp_scan_peek(s) != '"')
		return ecp_scan_unexpected(s, "docs[%d].error is %s, not an object", d->index,
								   kind_here(s));
	if (ecp_scan_string(s, NULL) != 0)
		return -1;
	d->reason = from;
	d->reason_end = s->p;
	return 0;
}

static int
doc_member(EcpScan *s, const EcpScanText *key, void *arg)
{
	DocRead    *d = arg;
	int			c = ecp_scan_peek(s);
	const char *instead;
	int			rc;

	if (key_is(key, "_id"))
		return seen_twice(s, &d->id_seen, d->index, key) != 0 ? -1 : read_doc_id(s, d);
	if (key_is(key, "found"))
	{
		if (seen_twice(s, &d->found_seen, d->index, key) != 0)
			return -1;
		if (c != 't' && c != 'f')
			return ecp_scan_unexpected(s, "docs[%d].found is %s, not a boolean", d->index,
									   kind_here(s));
		d->found = c == 't';
		return ecp_scan_skip_value(s);
	}
	if (key_is(key, "_source"))
	{
		const unsigned char *from = s->p;

		if (seen_twice(s, &d->source_seen, d->index, key) != 0 || ecp_scan_skip_value(s) != 0)
			return -1;
		d->doc->source = (const char *) from;
		d->doc->source_len = (size_t) (s->p - from);
		return 0;
	}
	if (key_is(key, "_version"))
	{
		if (seen_twice(s, &d->version_seen, d->index, key) != 0)
			return -1;
		d->doc->has_version = 1;
		rc = read_integer(s, &d->doc->version, &instead);
		if (rc > 0)
			return ecp_scan_unexpected(s, "docs[%d]._version is not a 64-bit integer: it is %s",
									   d->index, instead);
		return rc;
	}
	if (key_is(key, "error"))
		return seen_twice(s, &d->error_seen, d->index, key) != 0 ? -1 : read_error(s, d);
	return ecp_scan_skip_value(s);
}

/* The string at the span [from, to), unescaped into out for a message ("..." when cut). */
static void
span_text(const unsigned char *from, const unsigned char *to, char *out, size_t outlen)
{
	int			cut;

	ecp_json_string_decode((const char *) from, (size_t) (to - from), out, outlen - 3, &cut);
	/* a \u0000 ends the text: it is for a message */
	if (cut)
		strcat(out, "...");
}

/* An error item's "type: reason", malloc'd (NULL when memory runs out). */
static char *
error_text(const DocRead *d)
{
	char		type[REASON_BYTES + 4] = "";
	char		reason[REASON_BYTES + 4] = "";
	char		text[2 * REASON_BYTES + 16];

	if (d->type)
		span_text(d->type, d->type_end, type, sizeof(type));
	if (d->reason)
		span_text(d->reason, d->reason_end, reason, sizeof(reason));
	if (type[0] && reason[0])
		snprintf(text, sizeof(text), "%s: %s", type, reason);
	else if (type[0] || reason[0])
		snprintf(text, sizeof(text), "%s", type[0] ? type : reason);
	else
		snprintf(text, sizeof(text), "an error without a type or a reason");
	return strdup(text);
}

/* An item read whole: its id, and what it says. */
static int
doc_done(EcpScan *s, DocRead *d)
{
	EcpMgetDoc *doc = d->doc;

	if (!d->id_seen)
		return ecp_scan_unexpected(s, "docs[%d] has no \"_id\"", d->index);
	if (!d->id_matches)
	{
		char		got[SHOWN_ID_BYTES + 8];
		char		want[SHOWN_ID_BYTES + 8];

		span_shown(d->id, d->id_end, got, sizeof(got));
		ecp_json_quote_shown(d->want, strlen(d->want), 0, want, sizeof(want));
		return ecp_scan_unexpected(s, "docs[%d]._id is %s, expected %s", d->index, got, want);
	}
	if (d->error_seen)
	{
		doc->found = -1;
		doc->source = NULL;
		doc->source_len = 0;
		doc->error = error_text(d);
		return doc->error ? 0 : ecp_scan_unexpected(s, "out of memory reading the answer");
	}
	if (!d->found_seen)
		return ecp_scan_unexpected(s, "docs[%d] has neither \"found\" nor \"error\"", d->index);
	if (!d->found && d->source_seen)
		return ecp_scan_unexpected(s, "docs[%d] is not found, yet has a \"_source\"", d->index);
	doc->found = d->found;
	return 0;
}

static int
read_doc(EcpScan *s, int index, void *arg)
{
	MgetRead   *m = arg;
	DocRead		d;

	if (index >= m->nids)
		return ecp_scan_unexpected(s, "the answer holds more docs than the %d asked for",
								   m->nids);
	if (ecp_scan_peek(s) != '{')
		return ecp_scan_unexpected(s, "docs[%d] is %s, not an object", index, kind_here(s));
	memset(&d, 0, sizeof(d));
	d.index = index;
	d.want = m->ids[index] ? m->ids[index] : "";
	d.doc = &m->docs[index];
	if (each_member(s, doc_member, &d) != 0)
		return -1;
	m->ndocs = index + 1;
	return doc_done(s, &d);
}

static int
mget_member(EcpScan *s, const EcpScanText *key, void *arg)
{
	MgetRead   *m = arg;

	if (!key_is(key, "docs"))
		return ecp_scan_skip_value(s);
	if (m->docs_seen++)
		return ecp_scan_unexpected(s, "\"docs\" appears twice");
	if (ecp_scan_peek(s) != '[')
		return ecp_scan_unexpected(s, "\"docs\" is %s, not an array", kind_here(s));
	return each_element(s, read_doc, m);
}

void
ecp_mget_docs_free(EcpMgetDoc *docs, int nids)
{
	if (docs == NULL)
		return;
	for (int i = 0; i < nids; i++)
	{
		free(docs[i].error);
		docs[i].error = NULL;
	}
}

EcpAnswerRead
ecp_answer_mget(const char *body, size_t len, const char *const *ids, int nids, EcpMgetDoc *docs,
				char *err, size_t errlen)
{
	MgetRead	m;
	EcpAnswerRead rc;

	if (nids < 0 || (nids > 0 && (ids == NULL || docs == NULL)))
		return unexpected(err, errlen, "no ids to read the answer for");
	if (nids > 0)
		memset(docs, 0, sizeof(EcpMgetDoc) * (size_t) nids);
	memset(&m, 0, sizeof(m));
	m.ids = ids;
	m.nids = nids;
	m.docs = docs;
	rc = read_answer(body, len, mget_member, &m, err, errlen);
	if (rc == ECP_ANSWER_READ && !m.docs_seen)
		rc = unexpected(err, errlen, "the answer has no \"docs\"");
	else if (rc == ECP_ANSWER_READ && m.ndocs < nids)
		rc = unexpected(err, errlen, "the answer holds %d of the %d docs asked for", m.ndocs,
						nids);
	if (rc != ECP_ANSWER_READ && nids > 0)
	{
		ecp_mget_docs_free(docs, nids);
		memset(docs, 0, sizeof(EcpMgetDoc) * (size_t) nids);
	}
	return rc;
}

/* ---------------------------------------------------------------------------
 * The id of a point in time.
 * ------------------------------------------------------------------------- */

typedef struct PitRead
{
	EcpScanText id;				/* decoded, malloc'd */
	const char *name;			/* "id" or "pit_id", once read */
} PitRead;

static int
pit_member(EcpScan *s, const EcpScanText *key, void *arg)
{
	PitRead    *pit = arg;
	const char *name = key_is(key, "id") ? "id" : key_is(key, "pit_id") ? "pit_id" : NULL;

	if (name == NULL)
		return ecp_scan_skip_value(s);
	if (pit->name == name)
		return ecp_scan_unexpected(s, "\"%s\" appears twice", name);
	if (pit->name)
		return ecp_scan_unexpected(s, "the answer has both \"id\" and \"pit_id\"");
	pit->name = name;
	if (ecp_scan_peek(s) != '"')
		return ecp_scan_unexpected(s, "\"%s\" is %s, not a string", name, kind_here(s));
	return ecp_scan_string(s, &pit->id);
}

EcpAnswerRead
ecp_answer_pit_id(const char *body, size_t len, char **pit_id, char *err, size_t errlen)
{
	PitRead		pit;
	EcpAnswerRead rc;

	memset(&pit, 0, sizeof(pit));
	rc = read_answer(body, len, pit_member, &pit, err, errlen);
	if (rc == ECP_ANSWER_READ && pit.name == NULL)
		rc = unexpected(err, errlen,
						"the answer has neither \"id\" (Elasticsearch) nor \"pit_id\" (OpenSearch)");
	else if (rc == ECP_ANSWER_READ && pit.id.has_nul)
		rc = unexpected(err, errlen, "\"%s\" holds \\u0000", pit.name);
	else if (rc == ECP_ANSWER_READ && pit.id.len == 0)
		rc = unexpected(err, errlen, "\"%s\" is empty", pit.name);
	if (rc != ECP_ANSWER_READ)
	{
		free(pit.id.data);
		pit.id.data = NULL;
	}
	*pit_id = pit.id.data;
	return rc;
}

/* ---------------------------------------------------------------------------
 * A page of hits.
 * ------------------------------------------------------------------------- */

typedef struct PageRead
{
	EcpHitPage *page;
	int			cap;			/* of page->ids */
	int			pit_seen;
	int			hits_seen;
	int			inner_seen;		/* hits.hits */
	int			timed_out;
	long long	failed_shards;
	EcpScanText pit_id;			/* decoded, malloc'd */
	EcpScanText id;				/* a hit's id, decoded (reused) */
	const unsigned char *sort;	/* the last hit's sort array */
	const unsigned char *sort_end;
} PageRead;

/* One hit, read. */
typedef struct HitRead
{
	PageRead   *read;
	int			index;
	int			id_seen;
	int			sort_seen;
	const unsigned char *sort;
	const unsigned char *sort_end;
} HitRead;

static int
hit_member(EcpScan *s, const EcpScanText *key, void *arg)
{
	HitRead    *h = arg;
	EcpScanText *id = &h->read->id;

	if (key_is(key, "_id"))
	{
		if (h->id_seen++)
			return ecp_scan_unexpected(s, "hits.hits[%d] has \"_id\" twice", h->index);
		if (ecp_scan_peek(s) != '"')
			return ecp_scan_unexpected(s, "hits.hits[%d]._id is %s, not a string", h->index,
									   kind_here(s));
		id->len = 0;
		id->has_nul = 0;
		if (id->data)
			id->data[0] = '\0';
		return ecp_scan_string(s, id);
	}
	if (key_is(key, "sort"))
	{
		if (h->sort_seen++)
			return ecp_scan_unexpected(s, "hits.hits[%d] has \"sort\" twice", h->index);
		if (ecp_scan_peek(s) != '[')
			return ecp_scan_unexpected(s, "hits.hits[%d].sort is %s, not an array", h->index,
									   kind_here(s));
		h->sort = s->p;
		if (ecp_scan_skip_value(s) != 0)
			return -1;
		h->sort_end = s->p;
		return 0;
	}
	return ecp_scan_skip_value(s);
}

/* The hit's id, copied onto the page. */
static int
add_id(EcpScan *s, PageRead *r, int index)
{
	EcpHitPage *page = r->page;
	char	   *copy;

	if (r->id.has_nul)
		return ecp_scan_unexpected(s, "hits.hits[%d]._id holds \\u0000", index);
	if (r->id.len == 0)
		return ecp_scan_unexpected(s, "hits.hits[%d]._id is empty", index);
	if (page->nids == r->cap)
	{
		int			cap = r->cap ? r->cap * 2 : 64;
		char	  **grown;

		if (r->cap > INT_MAX / 4)
			return ecp_scan_unexpected(s, "the answer has more than %d hits", r->cap);
		grown = realloc(page->ids, sizeof(char *) * (size_t) cap);
		if (grown == NULL)
			return ecp_scan_unexpected(s, "out of memory reading the answer");
		page->ids = grown;
		r->cap = cap;
	}
	copy = malloc(r->id.len + 1);
	if (copy == NULL)
		return ecp_scan_unexpected(s, "out of memory reading the answer");
	memcpy(copy, r->id.data, r->id.len + 1);
	page->ids[page->nids++] = copy;
	return 0;
}

static int
read_hit(EcpScan *s, int index, void *arg)
{
	PageRead   *r = arg;
	HitRead		h;

	if (ecp_scan_peek(s) != '{')
		return ecp_scan_unexpected(s, "hits.hits[%d] is %s, not an object", index, kind_here(s));
	memset(&h, 0, sizeof(h));
	h.read = r;
	h.index = index;
	if (each_member(s, hit_member, &h) != 0)
		return -1;
	if (!h.id_seen)
		return ecp_scan_unexpected(s, "hits.hits[%d] has no \"_id\"", index);
	if (!h.sort_seen)
		return ecp_scan_unexpected(s, "hits.hits[%d] has no \"sort\" (the search must sort)",
								   index);
	r->sort = h.sort;
	r->sort_end = h.sort_end;
	return add_id(s, r, index);
}

/* A member of "hits": the array "hits". */
static int
hits_member(EcpScan *s, const EcpScanText *key, void *arg)
{
	PageRead   *r = arg;

	if (!key_is(key, "hits"))
		return ecp_scan_skip_value(s);
	if (r->inner_seen++)
		return ecp_scan_unexpected(s, "hits.hits appears twice");
	if (ecp_scan_peek(s) != '[')
		return ecp_scan_unexpected(s, "hits.hits is %s, not an array", kind_here(s));
	return each_element(s, read_hit, r);
}

/* A member of "_shards": how many failed. */
static int
shards_member(EcpScan *s, const EcpScanText *key, void *arg)
{
	PageRead   *r = arg;
	long long	failed;
	const char *instead;
	int			rc;

	if (!key_is(key, "failed"))
		return ecp_scan_skip_value(s);
	rc = read_integer(s, &failed, &instead);
	if (rc > 0)
		return ecp_scan_unexpected(s, "_shards.failed is not a 64-bit integer: it is %s", instead);
	if (rc == 0 && failed > 0)
		r->failed_shards = failed;
	return rc;
}

static int
page_member(EcpScan *s, const EcpScanText *key, void *arg)
{
	PageRead   *r = arg;
	int			c = ecp_scan_peek(s);

	if (key_is(key, "hits"))
	{
		if (r->hits_seen++)
			return ecp_scan_unexpected(s, "\"hits\" appears twice");
		if (c != '{')
			return ecp_scan_unexpected(s, "\"hits\" is %s, not an object", kind_here(s));
		return each_member(s, hits_member, r);
	}
	if (key_is(key, "pit_id"))
	{
		if (r->pit_seen++)
			return ecp_scan_unexpected(s, "\"pit_id\" appears twice");
		if (c != '"')
			return ecp_scan_unexpected(s, "\"pit_id\" is %s, not a string", kind_here(s));
		return ecp_scan_string(s, &r->pit_id);
	}
	if (key_is(key, "timed_out"))
		r->timed_out |= c == 't';
	else if (key_is(key, "_shards") && c == '{')
		return each_member(s, shards_member, r);
	return ecp_scan_skip_value(s);
}

/* What the page says once read whole: hits there, none missing. */
static EcpAnswerRead
page_done(PageRead *r, char *err, size_t errlen)
{
	EcpHitPage *page = r->page;
	size_t		sort_len = (size_t) (r->sort_end - r->sort);

	if (!r->hits_seen)
		return unexpected(err, errlen, "the answer has no \"hits\"");
	if (!r->inner_seen)
		return unexpected(err, errlen, "the answer has no hits.hits");
	if (r->timed_out)
		return unexpected(err, errlen,
						  "the search timed out (\"timed_out\" is true): the page may lack hits");
	if (r->failed_shards > 0)
		return unexpected(err, errlen, "%lld of the search's shards failed: the page may lack hits",
						  r->failed_shards);
	if (r->pit_seen && r->pit_id.has_nul)
		return unexpected(err, errlen, "\"pit_id\" holds \\u0000");
	if (r->pit_seen && r->pit_id.len == 0)
		return unexpected(err, errlen, "\"pit_id\" is empty");
	if (page->nids > 0)
	{
		page->last_sort = malloc(sort_len + 1);
		if (page->last_sort == NULL)
			return unexpected(err, errlen, "out of memory reading the answer");
		memcpy(page->last_sort, r->sort, sort_len);
		page->last_sort[sort_len] = '\0';
	}
	page->pit_id = r->pit_id.data;
	r->pit_id.data = NULL;
	return ECP_ANSWER_READ;
}

void
ecp_hit_page_free(EcpHitPage *page)
{
	if (page == NULL)
		return;
	for (int i = 0; i < page->nids; i++)
		free(page->ids[i]);
	free(page->ids);
	free(page->last_sort);
	free(page->pit_id);
	memset(page, 0, sizeof(*page));
}

EcpAnswerRead
ecp_answer_hit_page(const char *body, size_t len, EcpHitPage *page, char *err, size_t errlen)
{
	PageRead	r;
	EcpAnswerRead rc;

	memset(page, 0, sizeof(*page));
	memset(&r, 0, sizeof(r));
	r.page = page;
	rc = read_answer(body, len, page_member, &r, err, errlen);
	if (rc == ECP_ANSWER_READ)
		rc = page_done(&r, err, errlen);
	free(r.id.data);
	free(r.pit_id.data);
	if (rc != ECP_ANSWER_READ)
		ecp_hit_page_free(page);
	return rc;
}
