/*
 * json_compare.c: JSON value equality of two texts, and where they first
 * differ (see json_compare.h).
 *
 * Each text is first checked whole with json_scan.c's scanner (grammar,
 * escapes, UTF-8, nesting at most 512 deep), which allocates nothing; the
 * usual case, Elasticsearch handing back _source byte for byte as it was
 * sent, ends there.  Otherwise each text becomes a flat array of nodes in
 * document order, spans into the text (24 bytes a value, whatever its
 * size), and the two are walked together: arrays element by element,
 * objects through their members sorted by unescaped key (a stable merge
 * sort, so of a key given twice the last is kept, as jsonb keeps it).
 * Strings and keys are compared unescaped on the fly, numbers on their
 * decimal digits and exponent (so no precision is lost and 1e999999999
 * costs nothing): json_text.c does both, and holds the message's text.
 * Plain C99: the unit tests build it alone.
 */
#include "json_compare.h"
#include "json_scan.h"
#include "json_text.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 512			/* json_scan.c's, which the check enforces */
#define SHOWN_VALUE_BYTES 40	/* of a value's raw text in why */
#define SHOWN_KEY_BYTES 60		/* of a key (unescaped) in a path */
#define SHOWN_PATH_BYTES 240	/* beyond that a path keeps its last steps */
#define STEP_BYTES 512			/* one step of a path, shown */

typedef enum Kind
{
	K_OBJECT,
	K_ARRAY,
	K_STRING,
	K_NUMBER,
	K_TRUE,
	K_FALSE,
	K_NULL
} Kind;

#define ESCAPED_VALUE 1			/* the string value holds a backslash */
#define ESCAPED_KEY 2			/* the member's key holds a backslash */

/* One value, in document order; offsets fit: texts are under 4 GiB. */
typedef struct Node
{
	uint32_t	start;			/* offset of its first byte */
	uint32_t	len;			/* a scalar: its text's bytes; a container:
								 * its members or elements */
	uint32_t	next;			/* the node after its subtree */
	uint32_t	key;			/* a member's value: offset of the key's
								 * opening quote */
	uint32_t	key_len;		/* the key's text, quotes included */
	uint8_t		kind;
	uint8_t		escaped;
} Node;

typedef struct Doc
{
	const unsigned char *text;
	size_t		len;
	Node	   *nodes;
	uint32_t	n;
	size_t		cap;
	size_t		members;		/* of all its objects */
} Doc;

/* A step of the path to the value compared: a member's key or an element. */
typedef struct Step
{
	const Doc  *doc;			/* whose node holds the key */
	uint32_t	node;
	uint32_t	index;
	int			is_index;
} Step;

typedef struct Cmp
{
	Doc		   *e;				/* expected: the source */
	Doc		   *a;				/* actual: the index */
	uint32_t   *arena;			/* sorted members of the objects being
								 * compared, a stack along the path */
	size_t		used;
	size_t		cap;
	Step		path[MAX_DEPTH];
	int			depth;
	char	   *why;
	size_t		whylen;
} Cmp;

/* ---------------------------------------------------------------------------
 * Checking a text, and its nodes.
 * ------------------------------------------------------------------------- */

static const unsigned char *
skip_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* text is one JSON value, whitespace around it: 0, or -1 with why set. */
static int
check_json(const char *text, size_t len, const char *noun, char *why, size_t whylen)
{
	EcpScan		s;
	char		err[256];

	if (len >= UINT32_MAX)
		snprintf(err, sizeof(err), "it is 4 GiB or larger");
	else
	{
		ecp_scan_begin(&s, text, len, "it", err, sizeof(err));
		s.p = skip_ws(s.p, s.end);
		if (s.p == s.end)
			snprintf(err, sizeof(err), "it is empty");
		else if (ecp_scan_skip_value(&s) == 0)
		{
			s.p = skip_ws(s.p, s.end);
			if (s.p == s.end)
				return 0;
			if (*s.p >= 0x20 && *s.p < 0x7f)
				snprintf(err, sizeof(err), "unexpected '%c' after the value at byte %zu", *s.p,
						 (size_t) (s.p - s.start));
			else
				snprintf(err, sizeof(err), "unexpected byte 0x%02x after the value at byte %zu",
						 *s.p, (size_t) (s.p - s.start));
		}
	}
	ecp_why_set(why, whylen, "%s is not well-formed JSON: %s", noun, err);
	return -1;
}

/* A new node at the end of d's, or UINT32_MAX when memory runs out. */
static uint32_t
new_node(Doc *d)
{
	if (d->n == d->cap)
	{
		size_t		cap = d->cap ? d->cap * 2 : 64;
		Node	   *grown;

		/* a value takes a byte at least */
		if (cap > d->len + 1)
			cap = d->len + 1;
		grown = cap > d->cap ? realloc(d->nodes, cap * sizeof(Node)) : NULL;
		if (grown == NULL)
			return UINT32_MAX;
		d->nodes = grown;
		d->cap = cap;
	}
	memset(&d->nodes[d->n], 0, sizeof(Node));
	return d->n++;
}

/* Past the well-formed string that opens at p; *escaped when it holds a backslash. */
static const unsigned char *
string_end(const unsigned char *p, int *escaped)
{
	for (p++; *p != '"'; p++)
		if (*p == '\\')
		{
			*escaped = 1;
			p++;
		}
	return p + 1;
}

static Kind
kind_of(unsigned char c)
{
	switch (c)
	{
		case '{':
			return K_OBJECT;
		case '[':
			return K_ARRAY;
		case '"':
			return K_STRING;
		case 't':
			return K_TRUE;
		case 'f':
			return K_FALSE;
		case 'n':
			return K_NULL;
		default:
			return K_NUMBER;
	}
}

/* The scalar at p (node's kind set): its length into node; past it. */
static const unsigned char *
scalar_end(const unsigned char *p, const unsigned char *end, Node *node)
{
	const unsigned char *q = p;
	int			escaped = 0;

	if (node->kind == K_STRING)
		q = string_end(p, &escaped);
	else if (node->kind == K_NUMBER)
		while (q < end && (ecp_scan_is_digit(*q) || *q == '-' || *q == '+' || *q == '.' ||
						   *q == 'e' || *q == 'E'))
			q++;
	else
		q += node->kind == K_FALSE ? 5 : 4;
	node->len = (uint32_t) (q - p);
	node->escaped |= escaped ? ESCAPED_VALUE : 0;
	return q;
}

/*
 * The nodes of d's text, which check_json accepted: 0, or -1 when memory
 * runs out.  Each value gets a node; a member's node also holds its key.
 */
static int
build_nodes(Doc *d)
{
	const unsigned char *p = d->text;
	const unsigned char *end = d->text + d->len;
	uint32_t	open[MAX_DEPTH];
	int			depth = 0;
	int			want_key = 0;

	for (;;)
	{
		const unsigned char *key = NULL;
		const unsigned char *key_end = NULL;
		int			key_escaped = 0;
		uint32_t	i;
		Node	   *node;

		p = skip_ws(p, end);
		if (want_key)
		{
			key = p;
			key_end = string_end(p, &key_escaped);
			p = skip_ws(skip_ws(key_end, end) + 1, end);	/* past the ':' */
		}
		if ((i = new_node(d)) == UINT32_MAX)
			return -1;
		node = &d->nodes[i];
		node->start = (uint32_t) (p - d->text);
		node->kind = (uint8_t) kind_of(*p);
		if (key)
		{
			node->key = (uint32_t) (key - d->text);
			node->key_len = (uint32_t) (key_end - key);
			node->escaped = key_escaped ? ESCAPED_KEY : 0;
			d->members++;
		}
		if (depth > 0)
			d->nodes[open[depth - 1]].len++;
		want_key = 0;
		if (node->kind == K_OBJECT || node->kind == K_ARRAY)
		{
			int			closer = node->kind == K_OBJECT ? '}' : ']';

			p = skip_ws(p + 1, end);
			if (*p != closer)
			{
				if (depth == MAX_DEPTH)
					return -1;	/* not after check_json */
				open[depth++] = i;
				want_key = node->kind == K_OBJECT;
				continue;
			}
			p++;
			node->next = i + 1;
		}
		else
		{
			p = scalar_end(p, end, node);
			node->next = i + 1;
		}
		/* after a value: close what ends here, up to a ',' or the end */
		for (;;)
		{
			if (depth == 0)
				return 0;
			p = skip_ws(p, end);
			if (*p == ',')
			{
				p++;
				want_key = d->nodes[open[depth - 1]].kind == K_OBJECT;
				break;
			}
			p++;
			d->nodes[open[--depth]].next = d->n;
		}
	}
}

/* ---------------------------------------------------------------------------
 * Why: the path and the difference.
 * ------------------------------------------------------------------------- */

/* A key needs brackets when a dotted path would misread it. */
static int
plain_key(const char *key, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) key[i];

		if (c < 0x20 || c == 0x7f || c == '.' || c == '[' || c == ']' || c == '"' || c == '\\')
			return 0;
	}
	return 1;
}

/* A step of the path as shown: "key" (first), ".key", "[\"k.ey\"]", "[3]". */
static void
step_text(const Step *step, int first, char *out, size_t outlen)
{
	const Node *node;
	char		key[SHOWN_KEY_BYTES + 1];
	char		quoted[STEP_BYTES - 4];
	size_t		len;
	int			cut;

	if (step->is_index)
	{
		snprintf(out, outlen, "[%u]", (unsigned) step->index);
		return;
	}
	node = &step->doc->nodes[step->node];
	len = ecp_json_string_decode((const char *) step->doc->text + node->key, node->key_len, key,
								 sizeof(key), &cut);
	if (!cut && plain_key(key, len))
	{
		snprintf(out, outlen, "%s%s", first ? "" : ".", key);
		return;
	}
	ecp_json_quote_shown(key, len, cut, quoted, sizeof(quoted));
	snprintf(out, outlen, "[%s]", quoted);
}

/* The path to the value compared, its last steps when long. */
static void
path_add(const Cmp *c, EcpWhyText *t)
{
	char		step[STEP_BYTES];
	size_t		total = 0;
	int			from = c->depth;

	while (from > 0)
	{
		size_t		n;

		step_text(&c->path[from - 1], from == 1, step, sizeof(step));
		n = strlen(step);
		if (from < c->depth && total + n > SHOWN_PATH_BYTES)
			break;
		total += n;
		from--;
	}
	if (from > 0)
		ecp_why_add(t, "(...)");
	for (int i = from; i < c->depth; i++)
	{
		step_text(&c->path[i], i == 0, step, sizeof(step));
		ecp_why_add(t, step);
	}
}

/* why: "path: detail", or "(the whole document: detail)" at the top. */
static int
differ(Cmp *c, const char *detail)
{
	EcpWhyText	t;

	ecp_why_init(&t, c->why, c->whylen);
	if (c->depth == 0)
		ecp_why_add(&t, "(the whole document: ");
	else
	{
		path_add(c, &t);
		ecp_why_add(&t, ": ");
	}
	ecp_why_add(&t, detail);
	if (c->depth == 0)
		ecp_why_add(&t, ")");
	return 1;
}

/* A value's raw text, cut to SHOWN_VALUE_BYTES with "...". */
static void
value_shown(const Doc *d, const Node *node, char *out, size_t outlen)
{
	EcpWhyText	t;
	const char *raw = (const char *) d->text + node->start;

	ecp_why_init(&t, out, outlen);
	if (node->len <= SHOWN_VALUE_BYTES)
		ecp_why_add_n(&t, raw, node->len);
	else
	{
		EcpWhyText	cut;
		char		head[SHOWN_VALUE_BYTES + 1];

		ecp_why_init(&cut, head, sizeof(head));
		ecp_why_add_n(&cut, raw, node->len);
		ecp_why_add(&t, head);
		ecp_why_add(&t, "...");
	}
}

static const char *
kind_words(const Doc *d, const Node *node)
{
	return ecp_scan_value_kind(d->text[node->start]);
}

/* Two values of different kinds, or two scalars that differ. */
static int
differ_values(Cmp *c, const Node *en, const Node *an)
{
	char		detail[256];

	if (en->kind == K_OBJECT || en->kind == K_ARRAY || an->kind == K_OBJECT || an->kind == K_ARRAY)
		snprintf(detail, sizeof(detail), "%s in the source, %s in the index",
				 kind_words(c->e, en), kind_words(c->a, an));
	else
	{
		char		shown_e[SHOWN_VALUE_BYTES + 8];
		char		shown_a[SHOWN_VALUE_BYTES + 8];

		value_shown(c->e, en, shown_e, sizeof(shown_e));
		value_shown(c->a, an, shown_a, sizeof(shown_a));
		snprintf(detail, sizeof(detail), "%s in the source, %s in the index", shown_e, shown_a);
	}
	return differ(c, detail);
}

/* ---------------------------------------------------------------------------
 * Comparing.
 * ------------------------------------------------------------------------- */

static int	compare_values(Cmp *c, uint32_t ei, uint32_t ai);

static int
key_cmp(const Doc *x, uint32_t i, const Doc *y, uint32_t j)
{
	const Node *a = &x->nodes[i];
	const Node *b = &y->nodes[j];

	return ecp_json_quoted_cmp(x->text + a->key, a->key_len, a->escaped & ESCAPED_KEY,
							   y->text + b->key, b->key_len, b->escaped & ESCAPED_KEY);
}

/* Stable merge sort of member nodes by key; tmp holds n more. */
static void
sort_members(const Doc *d, uint32_t *v, uint32_t *tmp, size_t n)
{
	uint32_t   *from = v;
	uint32_t   *to = tmp;

	for (size_t width = 1; width < n; width *= 2)
	{
		uint32_t   *swap;

		for (size_t lo = 0; lo < n; lo += 2 * width)
		{
			size_t		mid = lo + width < n ? lo + width : n;
			size_t		hi = lo + 2 * width < n ? lo + 2 * width : n;
			size_t		i = lo;
			size_t		j = mid;
			size_t		k = lo;

			while (i < mid && j < hi)
				to[k++] = key_cmp(d, from[j], d, from[i]) < 0 ? from[j++] : from[i++];
			while (i < mid)
				to[k++] = from[i++];
			while (j < hi)
				to[k++] = from[j++];
		}
		swap = from;
		from = to;
		to = swap;
	}
	if (from != v)
		memcpy(v, from, n * sizeof(uint32_t));
}

/*
 * The members of object node oi, sorted by key, the last of a key given
 * twice only: pushed on the arena, *n of them.
 */
static uint32_t *
sorted_members(Cmp *c, const Doc *d, uint32_t oi, uint32_t *n)
{
	uint32_t	count = d->nodes[oi].len;
	uint32_t   *v = c->arena + c->used;
	uint32_t	m = oi + 1;
	uint32_t	kept = 0;

	for (uint32_t k = 0; k < count; k++, m = d->nodes[m].next)
		v[k] = m;
	sort_members(d, v, v + count, count);
	for (uint32_t k = 0; k < count; k++)
	{
		/* equal keys sit in document order: a later one replaces */
		if (kept > 0 && key_cmp(d, v[kept - 1], d, v[k]) == 0)
			v[kept - 1] = v[k];
		else
			v[kept++] = v[k];
	}
	c->used += kept;
	*n = kept;
	return v;
}

/* Where the key of node ki (of kd) is among sorted[0..n) (of d), or -1. */
static long
find_key(const Doc *d, const uint32_t *sorted, uint32_t n, const Doc *kd, uint32_t ki)
{
	size_t		lo = 0;
	size_t		hi = n;

	while (lo < hi)
	{
		size_t		mid = lo + (hi - lo) / 2;
		int			r = key_cmp(kd, ki, d, sorted[mid]);

		if (r == 0)
			return (long) mid;
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

static void
push_key(Cmp *c, const Doc *d, uint32_t node)
{
	Step	   *step = &c->path[c->depth++];

	step->doc = d;
	step->node = node;
	step->index = 0;
	step->is_index = 0;
}

static void
push_index(Cmp *c, uint32_t index)
{
	Step	   *step = &c->path[c->depth++];

	step->doc = NULL;
	step->node = 0;
	step->index = index;
	step->is_index = 1;
}

/* A member of the index that the source lacks (whole objects only). */
static int
first_extra_member(Cmp *c, uint32_t ai, const uint32_t *se, uint32_t ne)
{
	uint32_t	m = ai + 1;

	for (uint32_t k = 0; k < c->a->nodes[ai].len; k++, m = c->a->nodes[m].next)
		if (find_key(c->e, se, ne, c->a, m) < 0)
		{
			push_key(c, c->a, m);
			differ(c, "in the index, not in the source");
			c->depth--;
			return 1;
		}
	return 0;
}

/*
 * Objects ei and ai: each of the source's members (in its order, the last
 * of a key given twice) against the index's; whole: the index has no more.
 */
static int
compare_objects(Cmp *c, uint32_t ei, uint32_t ai, int whole)
{
	size_t		mark = c->used;
	uint32_t	count = c->e->nodes[ei].len;
	uint32_t	ne;
	uint32_t	na;
	uint32_t   *se = sorted_members(c, c->e, ei, &ne);
	uint32_t   *sa = sorted_members(c, c->a, ai, &na);
	uint32_t	m = ei + 1;
	int			rc = 0;

	for (uint32_t k = 0; k < count && rc == 0; k++, m = c->e->nodes[m].next)
	{
		long		j;

		/* a key given twice: only its last member counts */
		if (ne < count && se[find_key(c->e, se, ne, c->e, m)] != m)
			continue;
		j = find_key(c->a, sa, na, c->e, m);
		push_key(c, c->e, m);
		rc = j < 0 ? differ(c, "in the source, not in the index") : compare_values(c, m, sa[j]);
		c->depth--;
	}
	/* every key of the source is in the index: any more are extra */
	if (rc == 0 && whole && na > ne)
		rc = first_extra_member(c, ai, se, ne);
	c->used = mark;
	return rc;
}

static int
compare_arrays(Cmp *c, uint32_t ei, uint32_t ai)
{
	uint32_t	count = c->e->nodes[ei].len;
	uint32_t	other = c->a->nodes[ai].len;
	uint32_t	x = ei + 1;
	uint32_t	y = ai + 1;

	if (count != other)
	{
		char		detail[128];

		snprintf(detail, sizeof(detail), "%u element%s in the source, %u in the index",
				 (unsigned) count, count == 1 ? "" : "s", (unsigned) other);
		return differ(c, detail);
	}
	for (uint32_t k = 0; k < count; k++)
	{
		int			rc;

		push_index(c, k);
		rc = compare_values(c, x, y);
		c->depth--;
		if (rc != 0)
			return rc;
		x = c->e->nodes[x].next;
		y = c->a->nodes[y].next;
	}
	return 0;
}

/* 0 when equal, 1 when not (why set). */
static int
compare_values(Cmp *c, uint32_t ei, uint32_t ai)
{
	const Node *en = &c->e->nodes[ei];
	const Node *an = &c->a->nodes[ai];
	const unsigned char *et = c->e->text + en->start;
	const unsigned char *at = c->a->text + an->start;
	int			equal = 1;

	if (en->kind != an->kind)
		return differ_values(c, en, an);
	switch (en->kind)
	{
		case K_OBJECT:
			return compare_objects(c, ei, ai, 1);
		case K_ARRAY:
			return compare_arrays(c, ei, ai);
		case K_STRING:
			equal = ecp_json_quoted_cmp(et, en->len, en->escaped & ESCAPED_VALUE,
										at, an->len, an->escaped & ESCAPED_VALUE) == 0;
			break;
		case K_NUMBER:
			equal = ecp_json_numbers_equal(et, en->len, at, an->len);
			break;
		default:
			break;
	}
	return equal ? 0 : differ_values(c, en, an);
}

/* The two texts' nodes, and the arena for their objects' members. */
static int
prepare(Cmp *c)
{
	if (build_nodes(c->e) != 0 || build_nodes(c->a) != 0)
		return -1;

	/*
	 * Along a path each object pushes its members from both sides (no more
	 * than each side's members in all), and a sort borrows as many again.
	 */
	c->cap = 2 * (c->e->members + c->a->members) + 2;
	c->arena = malloc(c->cap * sizeof(uint32_t));
	return c->arena ? 0 : -1;
}

/* The first non-whitespace byte of a checked text. */
static int
first_byte(const char *text, size_t len)
{
	const unsigned char *p = skip_ws((const unsigned char *) text,
									 (const unsigned char *) text + len);

	return *p;
}

static EcpJsonCompare
compare_texts(Cmp *c, EcpJsonCompareScope scope)
{
	int			rc;

	if (prepare(c) != 0)
	{
		ecp_why_set(c->why, c->whylen, "out of memory comparing documents of %zu and %zu bytes",
				c->e->len, c->a->len);
		return ECP_JSON_INVALID;
	}
	if (scope == ECP_COMPARE_EXPECTED_FIELDS &&
		(c->e->nodes[0].kind != K_OBJECT || c->a->nodes[0].kind != K_OBJECT))
	{
		char		detail[128];

		snprintf(detail, sizeof(detail), "%s in the source, %s in the index",
				 kind_words(c->e, &c->e->nodes[0]), kind_words(c->a, &c->a->nodes[0]));
		rc = differ(c, detail);
	}
	else if (scope == ECP_COMPARE_EXPECTED_FIELDS)
		rc = compare_objects(c, 0, 0, 0);
	else
		rc = compare_values(c, 0, 0);
	return rc == 0 ? ECP_JSON_EQUAL : ECP_JSON_DIFFERENT;
}

EcpJsonCompare
ecp_json_compare(const char *expected, size_t expected_len, const char *actual, size_t actual_len,
				 EcpJsonCompareScope scope, char *why, size_t whylen)
{
	Doc			e;
	Doc			a;
	Cmp		   *c;
	EcpJsonCompare rc;

	if (why && whylen > 0)
		why[0] = '\0';
	if (expected == NULL)
		expected = "";
	if (actual == NULL)
		actual = "";
	if (check_json(expected, expected_len, "the source document", why, whylen) != 0)
		return ECP_JSON_INVALID;
	/* the usual case: the index holds the bytes sent */
	if (expected_len == actual_len && memcmp(expected, actual, expected_len) == 0 &&
		(scope == ECP_COMPARE_WHOLE || first_byte(expected, expected_len) == '{'))
		return ECP_JSON_EQUAL;
	if (check_json(actual, actual_len, "the index document", why, whylen) != 0)
		return ECP_JSON_INVALID;

	memset(&e, 0, sizeof(e));
	memset(&a, 0, sizeof(a));
	e.text = (const unsigned char *) expected;
	e.len = expected_len;
	a.text = (const unsigned char *) actual;
	a.len = actual_len;
	c = calloc(1, sizeof(Cmp));
	if (c == NULL)
	{
		ecp_why_set(why, whylen, "out of memory comparing documents");
		return ECP_JSON_INVALID;
	}
	c->e = &e;
	c->a = &a;
	c->why = why;
	c->whylen = whylen;
	rc = compare_texts(c, scope);
	free(c->arena);
	free(c);
	free(e.nodes);
	free(a.nodes);
	return rc;
}
