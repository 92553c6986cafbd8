/*
 * pgoutput_check.h: what the two tests of src/lib/pgoutput.c share
 * (pgoutput_test.c: messages built byte by byte; pgoutput_real_test.c:
 * messages captured from PostgreSQL 15): a builder of messages, the guarded
 * parse, field checks, and the damage tests every message read well goes
 * through.  Functions are static inline, as in tap.h: each program includes
 * this once and uses a part of it.
 *
 * Out-of-bounds reads cannot pass silently: each message is parsed from a
 * copy that ends exactly where an inaccessible (PROT_NONE) page begins, so
 * a read of one byte past the end is a SIGSEGV, which run.sh reports as a
 * failed program (and valgrind, under make valgrind, reports it too).
 *
 * The damage: every message read well is read again cut short at every
 * length (sampled past EXHAUSTIVE_MAX bytes), with a byte more, with each
 * byte replaced by a dozen chosen values, and with seeded random damage.
 * Each must be refused with an error naming the field and the byte, or read
 * with every view inside the buffer.
 */
#ifndef ECP_PGOUTPUT_CHECK_H
#define ECP_PGOUTPUT_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pgoutput.h"
#include "tap.h"

#define BUILD_MAX (64 * 1024)	/* room for 1665 relation columns */
#define MAX_REMEMBERED 64
#define EXHAUSTIVE_MAX 4096		/* longer messages: sampled prefixes */
#define RANDOM_ROUNDS 20000

/* ---- the builder: a message byte by byte, integers big-endian */

typedef struct Msg
{
	unsigned char bytes[BUILD_MAX];
	size_t		len;
} Msg;

static inline void
put(Msg *m, const void *bytes, size_t n)
{
	if (m->len + n > BUILD_MAX)
	{
		fprintf(stderr, "pgoutput_check: builder overflow\n");
		exit(2);
	}
	memcpy(m->bytes + m->len, bytes, n);
	m->len += n;
}

static inline void
put_u8(Msg *m, unsigned value)
{
	unsigned char b = (unsigned char) value;

	put(m, &b, 1);
}

static inline void
put_u16(Msg *m, unsigned value)
{
	put_u8(m, (value >> 8) & 0xff);
	put_u8(m, value & 0xff);
}

static inline void
put_u32(Msg *m, uint32_t value)
{
	put_u16(m, value >> 16);
	put_u16(m, value & 0xffff);
}

static inline void
put_u64(Msg *m, uint64_t value)
{
	put_u32(m, (uint32_t) (value >> 32));
	put_u32(m, (uint32_t) value);
}

/* a String: the bytes and the NUL */
static inline void
put_str(Msg *m, const char *text)
{
	put(m, text, strlen(text) + 1);
}

static inline void
start(Msg *m, char type)
{
	m->len = 0;
	put_u8(m, (unsigned char) type);
}

/* a TupleData column of kind 't' or 'b': Int32 length and the bytes */
static inline void
put_value(Msg *m, char kind, const void *bytes, uint32_t length)
{
	put_u8(m, (unsigned char) kind);
	put_u32(m, length);
	put(m, bytes, length);
}

static inline void
put_text(Msg *m, const char *text)
{
	put_value(m, 't', text, (uint32_t) strlen(text));
}

/* ---- the guard: messages end where an inaccessible page begins */

static unsigned char *arena;
static size_t arena_room;		/* readable bytes before the guard page */
static size_t page_size;

static inline void
arena_open(void)
{
	page_size = (size_t) sysconf(_SC_PAGESIZE);
	arena_room = (BUILD_MAX + page_size - 1) / page_size * page_size;
	arena = mmap(NULL, arena_room + page_size, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED || mprotect(arena + arena_room, page_size, PROT_NONE) != 0)
	{
		perror("pgoutput_check: guard page");
		exit(2);
	}
}

static inline void
arena_close(void)
{
	munmap(arena, arena_room + page_size);
}

static EcpPgoMessage msg;
static char err[ECP_PGO_ERROR_SIZE];
static const unsigned char *base;	/* the guarded copy last parsed */
static size_t base_len;

/* Parses a copy of bytes that ends right before the guard page. */
static inline int
parse(const unsigned char *bytes, size_t len)
{
	unsigned char *copy = arena + arena_room - len;

	if (len > arena_room)
	{
		fprintf(stderr, "pgoutput_check: message longer than the arena\n");
		exit(2);
	}
	memmove(copy, bytes, len);
	base = copy;
	base_len = len;
	strcpy(err, "(not set)");
	return ecp_pgo_parse(copy, len, &msg, err, sizeof(err));
}

/* ---- messages read well, kept for the damage tests below */

typedef struct Remembered
{
	char		name[64];
	unsigned char *bytes;
	size_t		len;
} Remembered;

static Remembered remembered[MAX_REMEMBERED];
static int	nremembered;

static inline void
remember(const char *name, const unsigned char *bytes, size_t len)
{
	Remembered *r;

	for (int i = 0; i < nremembered; i++)
		if (strcmp(remembered[i].name, name) == 0)
			return;				/* read again for its fields */
	if (nremembered == MAX_REMEMBERED)
	{
		fprintf(stderr, "pgoutput_check: too many messages to remember\n");
		exit(2);
	}
	r = &remembered[nremembered++];
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->bytes = malloc(len);
	if (r->bytes == NULL)
		exit(2);
	memcpy(r->bytes, bytes, len);
	r->len = len;
}

static inline void
forget_all(void)
{
	for (int i = 0; i < nremembered; i++)
		free(remembered[i].bytes);
	nremembered = 0;
}

/* Parses a built message that must be read; remembers it. */
static inline int
parse_ok(const Msg *m, const char *name)
{
	int			read = parse(m->bytes, m->len);

	if (!ok(read, "%s is read", name))
		diag("error: %s", err);
	else
		remember(name, m->bytes, m->len);
	return read;
}

/* Parses a message that must be refused with exactly the error expected. */
static inline void
refused_with(const Msg *m, const char *expected, const char *name)
{
	int			read = parse(m->bytes, m->len);

	if (!ok(!read && strcmp(err, expected) == 0, "%s: refused", name))
		diag("read %d, error: %s\n# expected:     %s", read, err, expected);
}

/* Parses a message that must be refused with an error holding both parts. */
static inline void
refused_saying(const Msg *m, const char *part1, const char *part2, const char *name)
{
	int			read = parse(m->bytes, m->len);

	if (!ok(!read && contains(err, part1) && contains(err, part2), "%s: refused", name))
		diag("read %d, error: %s", read, err);
}

/* ---- field checks */

static inline void
is_num(long long got, long long expected, const char *name)
{
	if (!ok(got == expected, "%s", name))
		diag("got %lld, expected %lld", got, expected);
}

static inline void
is_u64(uint64_t got, uint64_t expected, const char *name)
{
	if (!ok(got == expected, "%s", name))
		diag("got %llu, expected %llu", (unsigned long long) got, (unsigned long long) expected);
}

static inline void
is_str(const char *got, const char *expected, const char *name)
{
	if (!ok(got != NULL && strcmp(got, expected) == 0, "%s", name))
		diag("got '%s', expected '%s'", got ? got : "(null)", expected);
}

/* the view lies in the parsed buffer */
static inline int
inside(const void *data, size_t length)
{
	const unsigned char *p = data;

	return p >= base && p <= base + base_len && length <= (size_t) (base + base_len - p);
}

/* a string view: inside the buffer, with its NUL */
static inline int
string_inside(const char *text)
{
	const unsigned char *p = (const unsigned char *) text;

	return p != NULL && inside(p, 1) && memchr(p, '\0', (size_t) (base + base_len - p)) != NULL;
}

static inline void
is_value(const EcpPgoValue *value, char kind, const void *bytes, uint32_t length, const char *name)
{
	int			same = value->kind == (EcpPgoValueKind) kind && value->length == length;

	if (kind == 't' || kind == 'b')
		same = same && inside(value->data, length) && memcmp(value->data, bytes, length) == 0;
	else
		same = same && value->data == NULL;
	if (!ok(same, "%s", name))
		diag("got kind %c length %u, expected kind %c length %u",
			 (char) value->kind, value->length, kind, length);
}

static inline void
is_text_value(const EcpPgoValue *value, const char *text, const char *name)
{
	is_value(value, 't', text, (uint32_t) strlen(text), name);
}


/* ---- damage: every message cut short, lengthened, altered */

/* Every view of the message just read lies in the buffer parsed. */
static inline int
views_inside(void)
{
	const EcpPgoChange *change = &msg.body.change;
	const EcpPgoRelation *rel = &msg.body.relation;
	int			in = 1;

	switch (msg.type)
	{
		case ECP_PGO_INSERT:
		case ECP_PGO_UPDATE:
		case ECP_PGO_DELETE:
			for (int t = 0; t < 2; t++)
			{
				const EcpPgoTuple *tuple = t == 0 ? &change->new_tuple : &change->old_tuple;

				if ((t == 0 && !change->has_new) || (t == 1 && change->old_kind == '\0'))
					continue;
				in &= tuple->ncolumns >= 0 && tuple->ncolumns <= ECP_PGO_MAX_COLUMNS;
				for (int i = 0; in && i < tuple->ncolumns; i++)
					in &= tuple->columns[i].data == NULL ? tuple->columns[i].length == 0
						: inside(tuple->columns[i].data, tuple->columns[i].length);
			}
			return in;
		case ECP_PGO_RELATION:
			in = string_inside(rel->schema) && string_inside(rel->name) &&
				rel->ncolumns >= 0 && rel->ncolumns <= ECP_PGO_MAX_COLUMNS;
			for (int i = 0; in && i < rel->ncolumns; i++)
				in &= string_inside(rel->columns[i].name);
			return in;
		case ECP_PGO_TRUNCATE:
			return msg.body.truncate.nrelations >= 0 &&
				inside(msg.body.truncate.relids, (size_t) msg.body.truncate.nrelations * 4);
		case ECP_PGO_MESSAGE:
			return string_inside(msg.body.message.prefix) &&
				inside(msg.body.message.content, msg.body.message.content_length);
		case ECP_PGO_ORIGIN:
			return string_inside(msg.body.origin.name);
		case ECP_PGO_TYPE:
			return string_inside(msg.body.type_info.schema) && string_inside(msg.body.type_info.name);
		case ECP_PGO_BEGIN:
		case ECP_PGO_COMMIT:
			return 1;
	}
	return 0;
}

/* What refusing a prefix of a valid message may say: it ran out of bytes */
static inline int
says_too_short(const char *error)
{
	return contains(error, " truncated at byte ") || contains(error, "has no terminating NUL") ||
		contains(error, "empty (0 bytes)") || contains(error, "relation oids need");
}

static inline void
test_every_prefix(int at_least)
{
	int			nbig = 0;

	for (int i = 0; i < nremembered; i++)
	{
		const Remembered *r = &remembered[i];
		size_t		tried = 0,
					bad = 0;
		/* long messages: every 61st prefix and the last 64 */
		size_t		step = r->len <= EXHAUSTIVE_MAX ? 1 : 61;
		static unsigned char longer[BUILD_MAX + 1];

		nbig += step > 1;
		for (size_t cut = 0; cut < r->len; cut += (r->len - cut <= 64 ? 1 : step))
		{
			tried++;
			if (parse(r->bytes, cut) || !says_too_short(err))
			{
				if (bad++ == 0)
					diag("%s cut to %zu of %zu bytes: %s", r->name, cut, r->len,
						 base_len == cut && msg.type ? err : "read");
			}
		}
		ok(bad == 0, "%s: all %zu prefixes refused as too short", r->name, tried);

		memcpy(longer, r->bytes, r->len);
		longer[r->len] = 0;
		if (!ok(!parse(longer, r->len + 1) && contains(err, "1 trailing byte at byte"),
				"%s: a byte more refused as trailing", r->name))
			diag("error: %s", err);
	}
	ok(nremembered >= at_least, "%d messages cut (%d long ones sampled)", nremembered, nbig);
}

/* One more parse of damaged bytes: a clear refusal, or views inside */
static inline int
damaged_parse_sane(const unsigned char *bytes, size_t len, size_t *accepted)
{
	if (parse(bytes, len))
	{
		(*accepted)++;
		return views_inside();
	}
	return err[0] != '\0' && strncmp(err, "pgoutput ", 9) == 0 && contains(err, "byte");
}

static inline void
test_replaced_bytes(void)
{
	static const unsigned char replacements[] = {
		0x00, 0x01, 0x7f, 0x80, 0xff, 'n', 'u', 't', 'b', 'N', 'K', 'O',
	};
	static unsigned char copy[BUILD_MAX];
	size_t		tried = 0,
				accepted = 0,
				insane = 0;

	for (int i = 0; i < nremembered; i++)
	{
		const Remembered *r = &remembered[i];

		if (r->len > EXHAUSTIVE_MAX)
			continue;
		for (size_t at = 0; at < r->len; at++)
			for (size_t k = 0; k < sizeof(replacements); k++)
			{
				memcpy(copy, r->bytes, r->len);
				copy[at] = replacements[k];
				tried++;
				if (!damaged_parse_sane(copy, r->len, &accepted) && insane++ == 0)
					diag("%s with byte %zu = 0x%02x: %s", r->name, at, replacements[k], err);
			}
	}
	ok(insane == 0 && tried > 1000, "%zu single-byte replacements: %zu read with views inside, the rest refused",
	   tried, accepted);
}

/* xorshift64: the same damage on every run */
static inline uint64_t
next_random(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

static inline void
test_random_damage(void)
{
	static unsigned char copy[BUILD_MAX + 8];
	uint64_t	state = UINT64_C(0x9E3779B97F4A7C15);
	size_t		accepted = 0,
				insane = 0;
	int			small[MAX_REMEMBERED],
				nsmall = 0;

	for (int i = 0; i < nremembered; i++)
		if (remembered[i].len <= EXHAUSTIVE_MAX)
			small[nsmall++] = i;
	for (int round = 0; round < RANDOM_ROUNDS && nsmall > 0; round++)
	{
		const Remembered *r = &remembered[small[next_random(&state) % (uint64_t) nsmall]];
		size_t		len = r->len;
		int			changes = 1 + (int) (next_random(&state) % 4);

		memcpy(copy, r->bytes, len);
		for (int c = 0; c < changes; c++)
			copy[next_random(&state) % len] = (unsigned char) next_random(&state);
		/* a third cut short, a third lengthened by up to 8 random bytes */
		switch (next_random(&state) % 3)
		{
			case 0:
				len = (size_t) (next_random(&state) % len);
				break;
			case 1:
				for (int extra = 1 + (int) (next_random(&state) % 8); extra > 0; extra--)
					copy[len++] = (unsigned char) next_random(&state);
				break;
			default:
				break;
		}
		if (!damaged_parse_sane(copy, len, &accepted) && insane++ == 0)
			diag("%s, damage round %d: %s", r->name, round, err);
	}
	ok(insane == 0, "%d randomly damaged messages: %zu read with views inside, the rest refused",
	   RANDOM_ROUNDS, accepted);
}


/* The damage tests, over every message read well so far */
static inline void
test_damage(int at_least)
{
	test_every_prefix(at_least);
	test_replaced_bytes();
	test_random_damage();
}

#endif
