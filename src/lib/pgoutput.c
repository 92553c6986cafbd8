/*
 * pgoutput.c: one pgoutput message (protocol version 1) into an
 * EcpPgoMessage, see pgoutput.h.
 *
 * Every read goes through the Reader below, which checks the bytes left
 * before it touches one: the message comes from a bytea, and a parser that
 * trusted its counts and lengths would read past it on the first malformed
 * message.  Counts are checked against PostgreSQL's own limits before any
 * array is filled.  Errors are built only on failure: the hot path formats
 * nothing.
 */
#include "pgoutput.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* seconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch */
#define PG_EPOCH_UNIX_SECONDS INT64_C(946684800)
#define PG_EPOCH_UNIX_US (PG_EPOCH_UNIX_SECONDS * INT64_C(1000000))

/* hex digits in each half of an LSN's text (pg_lsn's MAXPG_LSNCOMPONENT) */
#define LSN_HALF_DIGITS 8

typedef struct Reader
{
	const unsigned char *data;
	size_t		len;
	size_t		pos;			/* the next byte to read */
	const char *message;		/* "Insert" ..., or NULL: an error's context */
	const char *part;			/* "new tuple" ..., or NULL */
	int			column;			/* from 0 (within part, if any), or -1 */
	char	   *error;
	size_t		errlen;
} Reader;

static bool fail(Reader *r, const char *fmt,...) __attribute__((format(printf, 2, 3)));

/*
 * Writes "pgoutput <Type> message[, <part>][ column N]: <detail>" into the
 * caller's error buffer; always false, so that a check can return it.
 */
static bool
fail(Reader *r, const char *fmt,...)
{
	char		context[96];
	char		detail[160];
	va_list		ap;

	if (r->error == NULL || r->errlen == 0)
		return false;
	if (r->part != NULL && r->column >= 0)
		snprintf(context, sizeof(context), ", %s column %d", r->part, r->column + 1);
	else if (r->part != NULL)
		snprintf(context, sizeof(context), ", %s", r->part);
	else if (r->column >= 0)
		snprintf(context, sizeof(context), ", column %d", r->column + 1);
	else
		context[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	snprintf(r->error, r->errlen, "pgoutput %s%smessage%s: %s",
			 r->message ? r->message : "", r->message ? " " : "", context, detail);
	return false;
}

/* A byte for an error: 'x' (0x78) when printable, else 0x07 */
static const char *
byte_text(unsigned char byte, char buf[16])
{
	if (byte >= 0x20 && byte < 0x7f && byte != '\'')
		snprintf(buf, 16, "'%c' (0x%02x)", byte, byte);
	else
		snprintf(buf, 16, "0x%02x", byte);
	return buf;
}

/* The next n bytes, or false when fewer are left */
static bool
take(Reader *r, size_t n, const char *what, const unsigned char **bytes)
{
	size_t		left = r->len - r->pos;

	if (n > left)
	{
		/* not "return fail()": the compiler then knows *bytes is not set */
		fail(r, "%s truncated at byte %zu: needs %zu byte%s, %zu left",
			 what, r->pos, n, n == 1 ? "" : "s", left);
		return false;
	}
	*bytes = r->data + r->pos;
	r->pos += n;
	return true;
}

static bool
read_u8(Reader *r, const char *what, uint8_t *value)
{
	const unsigned char *p;

	if (!take(r, 1, what, &p))
		return false;
	*value = p[0];
	return true;
}

static bool
read_u16(Reader *r, const char *what, uint16_t *value)
{
	const unsigned char *p;

	if (!take(r, 2, what, &p))
		return false;
	*value = (uint16_t) ((p[0] << 8) | p[1]);
	return true;
}

static uint32_t
be32(const unsigned char *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
		((uint32_t) p[2] << 8) | (uint32_t) p[3];
}

static bool
read_u32(Reader *r, const char *what, uint32_t *value)
{
	const unsigned char *p;

	if (!take(r, 4, what, &p))
		return false;
	*value = be32(p);
	return true;
}

/* An Int32 that must not be negative (a length or a count) */
static bool
read_count(Reader *r, const char *what, uint32_t *value)
{
	size_t		at = r->pos;

	if (!read_u32(r, what, value))
		return false;
	if (*value > INT32_MAX)
		return fail(r, "%s %d at byte %zu is negative", what, (int32_t) *value, at);
	return true;
}

static bool
read_u64(Reader *r, const char *what, uint64_t *value)
{
	const unsigned char *p;

	if (!take(r, 8, what, &p))
		return false;
	*value = ((uint64_t) be32(p) << 32) | be32(p + 4);
	return true;
}

/* The two's complement reading of an Int64 (no signed overflow) */
static bool
read_i64(Reader *r, const char *what, int64_t *value)
{
	uint64_t	bits;

	if (!read_u64(r, what, &bits))
		return false;
	*value = bits <= (uint64_t) INT64_MAX ? (int64_t) bits
		: -(int64_t) (~bits) - 1;
	return true;
}

/* A NUL-terminated string that ends before the message does */
static bool
read_string(Reader *r, const char *what, const char **text)
{
	const unsigned char *start = r->data + r->pos;
	const unsigned char *nul = memchr(start, '\0', r->len - r->pos);

	if (nul == NULL)
		return fail(r, "%s at byte %zu has no terminating NUL before the end (byte %zu)",
					what, r->pos, r->len);
	*text = (const char *) start;
	r->pos += (size_t) (nul - start) + 1;
	return true;
}

/* A column count (Int16) within MaxTupleAttributeNumber */
static bool
read_ncolumns(Reader *r, int *ncolumns)
{
	size_t		at = r->pos;
	uint16_t	count;

	if (!read_u16(r, "column count", &count))
		return false;
	if (count > ECP_PGO_MAX_COLUMNS)
		return fail(r, "column count %u at byte %zu is more than %d",
					(unsigned) count, at, ECP_PGO_MAX_COLUMNS);
	*ncolumns = count;
	return true;
}

static bool
read_value(Reader *r, EcpPgoValue *value)
{
	size_t		at = r->pos;
	uint8_t		kind;
	char		shown[16];

	if (!read_u8(r, "kind", &kind))
		return false;
	value->kind = (EcpPgoValueKind) kind;
	value->data = NULL;
	value->length = 0;
	switch (kind)
	{
		case ECP_PGO_NULL:
		case ECP_PGO_UNCHANGED:
			return true;
		case ECP_PGO_TEXT:
		case ECP_PGO_BINARY:
			if (!read_count(r, "value length", &value->length))
				return false;
			return take(r, value->length, "value", &value->data);
		default:
			return fail(r, "unknown kind %s at byte %zu (expected 'n', 'u', 't' or 'b')",
						byte_text(kind, shown), at);
	}
}

/* TupleData: Int16 count, then a kind (and maybe a value) per column */
static bool
read_tuple(Reader *r, const char *part, EcpPgoTuple *tuple)
{
	r->part = part;
	r->column = -1;
	if (!read_ncolumns(r, &tuple->ncolumns))
		return false;
	for (int i = 0; i < tuple->ncolumns; i++)
	{
		r->column = i;
		if (!read_value(r, &tuple->columns[i]))
			return false;
	}
	r->part = NULL;
	r->column = -1;
	return true;
}

static bool
read_begin(Reader *r, EcpPgoBegin *begin)
{
	return read_u64(r, "final LSN", &begin->final_lsn) &&
		read_i64(r, "commit timestamp", &begin->commit_time) &&
		read_u32(r, "xid", &begin->xid);
}

static bool
read_commit(Reader *r, EcpPgoCommit *commit)
{
	size_t		at = r->pos;
	uint8_t		flags;

	if (!read_u8(r, "flags", &flags))
		return false;
	/* as PostgreSQL's own reader (logicalrep_read_commit): none defined */
	if (flags != 0)
		return fail(r, "flags 0x%02x at byte %zu: none are defined", flags, at);
	return read_u64(r, "commit LSN", &commit->commit_lsn) &&
		read_u64(r, "end LSN", &commit->end_lsn) &&
		read_i64(r, "commit timestamp", &commit->commit_time);
}

static bool
read_origin(Reader *r, EcpPgoOrigin *origin)
{
	return read_u64(r, "origin LSN", &origin->origin_lsn) &&
		read_string(r, "origin name", &origin->name);
}

static bool
read_rel_column(Reader *r, EcpPgoRelColumn *column)
{
	uint32_t	typmod_bits;

	if (!read_u8(r, "flags", &column->flags) ||
		!read_string(r, "name", &column->name) ||
		!read_u32(r, "type oid", &column->type_oid) ||
		!read_u32(r, "type modifier", &typmod_bits))
		return false;
	column->key = (column->flags & 1) != 0;
	column->type_modifier = typmod_bits <= INT32_MAX ? (int32_t) typmod_bits
		: -(int32_t) (~typmod_bits) - 1;
	return true;
}

static bool
read_relation(Reader *r, EcpPgoRelation *relation)
{
	size_t		at;
	uint8_t		identity;
	char		shown[16];

	if (!read_u32(r, "relation oid", &relation->relid) ||
		!read_string(r, "schema name", &relation->schema) ||
		!read_string(r, "relation name", &relation->name))
		return false;
	at = r->pos;
	if (!read_u8(r, "replica identity", &identity))
		return false;
	if (identity != 'd' && identity != 'n' && identity != 'f' && identity != 'i')
		return fail(r, "unknown replica identity %s at byte %zu (expected 'd', 'n', 'f' or 'i')",
					byte_text(identity, shown), at);
	relation->replica_identity = (char) identity;
	if (!read_ncolumns(r, &relation->ncolumns))
		return false;
	for (int i = 0; i < relation->ncolumns; i++)
	{
		r->column = i;
		if (!read_rel_column(r, &relation->columns[i]))
			return false;
	}
	r->column = -1;
	return true;
}

static bool
read_type_info(Reader *r, EcpPgoTypeInfo *type_info)
{
	return read_u32(r, "type oid", &type_info->type_oid) &&
		read_string(r, "schema name", &type_info->schema) &&
		read_string(r, "type name", &type_info->name);
}

/* The Byte1 before a TupleData: one of the letters in allowed */
static bool
read_tuple_tag(Reader *r, const char *allowed, const char *expected, uint8_t *tag)
{
	size_t		at = r->pos;
	char		shown[16];

	if (!read_u8(r, "tuple tag", tag))
		return false;
	if (*tag == '\0' || strchr(allowed, *tag) == NULL)
		return fail(r, "tuple tag %s at byte %zu (expected %s)",
					byte_text(*tag, shown), at, expected);
	return true;
}

static bool
read_insert(Reader *r, EcpPgoChange *change)
{
	uint8_t		tag;

	change->old_kind = '\0';
	change->has_new = true;
	return read_u32(r, "relation oid", &change->relid) &&
		read_tuple_tag(r, "N", "'N'", &tag) &&
		read_tuple(r, "new tuple", &change->new_tuple);
}

static bool
read_update(Reader *r, EcpPgoChange *change)
{
	uint8_t		tag;

	change->old_kind = '\0';
	change->has_new = true;
	if (!read_u32(r, "relation oid", &change->relid) ||
		!read_tuple_tag(r, "KON", "'K', 'O' or 'N'", &tag))
		return false;
	if (tag != 'N')
	{
		change->old_kind = (char) tag;
		if (!read_tuple(r, "old tuple", &change->old_tuple) ||
			!read_tuple_tag(r, "N", "'N' after the old tuple", &tag))
			return false;
	}
	return read_tuple(r, "new tuple", &change->new_tuple);
}

static bool
read_delete(Reader *r, EcpPgoChange *change)
{
	uint8_t		tag;

	change->has_new = false;
	if (!read_u32(r, "relation oid", &change->relid) ||
		!read_tuple_tag(r, "KO", "'K' or 'O'", &tag))
		return false;
	change->old_kind = (char) tag;
	return read_tuple(r, "old tuple", &change->old_tuple);
}

static bool
read_truncate(Reader *r, EcpPgoTruncate *truncate)
{
	uint32_t	count;
	size_t		left;

	if (!read_count(r, "relation count", &count) ||
		!read_u8(r, "options", &truncate->options))
		return false;
	/* checked before the multiplication: count * 4 cannot wrap */
	left = r->len - r->pos;
	if (count > left / 4)
		return fail(r, "%u relation oids need %llu bytes from byte %zu, %zu left",
					count, (unsigned long long) count * 4, r->pos, left);
	truncate->nrelations = (int) count;
	return take(r, (size_t) count * 4, "relation oids", &truncate->relids);
}

static bool
read_logical_message(Reader *r, EcpPgoLogicalMessage *message)
{
	if (!read_u8(r, "flags", &message->flags) ||
		!read_u64(r, "LSN", &message->lsn) ||
		!read_string(r, "prefix", &message->prefix) ||
		!read_count(r, "content length", &message->content_length))
		return false;
	message->transactional = (message->flags & 1) != 0;
	return take(r, message->content_length, "content", &message->content);
}

/* "Insert" ... for the types of protocol version 1, NULL for any other */
static const char *
known_type_name(int type)
{
	switch (type)
	{
		case ECP_PGO_BEGIN:
			return "Begin";
		case ECP_PGO_COMMIT:
			return "Commit";
		case ECP_PGO_ORIGIN:
			return "Origin";
		case ECP_PGO_RELATION:
			return "Relation";
		case ECP_PGO_TYPE:
			return "Type";
		case ECP_PGO_INSERT:
			return "Insert";
		case ECP_PGO_UPDATE:
			return "Update";
		case ECP_PGO_DELETE:
			return "Delete";
		case ECP_PGO_TRUNCATE:
			return "Truncate";
		case ECP_PGO_MESSAGE:
			return "Message";
		default:
			return NULL;
	}
}

/* The types proto_version '1' never sends: a different reason than garbage */
static const char *
later_protocol_type(uint8_t type)
{
	switch (type)
	{
		case 'S':
		case 'E':
		case 'c':
		case 'A':
		case 'p':
			return "a streaming message (protocol version 2 and later)";
		case 'b':
		case 'P':
		case 'K':
		case 'r':
			return "a two-phase message (protocol version 3 and later)";
		default:
			return NULL;
	}
}

static bool
read_body(Reader *r, uint8_t type, EcpPgoMessage *out)
{
	char		shown[16];
	const char *later = later_protocol_type(type);

	switch (type)
	{
		case ECP_PGO_BEGIN:
			return read_begin(r, &out->body.begin);
		case ECP_PGO_COMMIT:
			return read_commit(r, &out->body.commit);
		case ECP_PGO_ORIGIN:
			return read_origin(r, &out->body.origin);
		case ECP_PGO_RELATION:
			return read_relation(r, &out->body.relation);
		case ECP_PGO_TYPE:
			return read_type_info(r, &out->body.type_info);
		case ECP_PGO_INSERT:
			return read_insert(r, &out->body.change);
		case ECP_PGO_UPDATE:
			return read_update(r, &out->body.change);
		case ECP_PGO_DELETE:
			return read_delete(r, &out->body.change);
		case ECP_PGO_TRUNCATE:
			return read_truncate(r, &out->body.truncate);
		case ECP_PGO_MESSAGE:
			return read_logical_message(r, &out->body.message);
		default:
			if (later != NULL)
				return fail(r, "type %s at byte 0 is %s, not expected with proto_version '1'",
							byte_text(type, shown), later);
			return fail(r, "unknown message type %s at byte 0", byte_text(type, shown));
	}
}

bool
ecp_pgo_parse(const unsigned char *data, size_t len,
			  EcpPgoMessage *out, char *error, size_t errlen)
{
	Reader		r = {data, len, 0, NULL, NULL, -1, error, errlen};
	uint8_t		type;

	if (error != NULL && errlen > 0)
		error[0] = '\0';
	if (out == NULL || (data == NULL && len > 0))
		return fail(&r, "no %s to read into", out == NULL ? "message struct" : "data");
	if (len == 0)
		return fail(&r, "empty (0 bytes)");
	type = data[0];
	r.pos = 1;
	r.message = known_type_name(type);
	out->type = (EcpPgoType) type;
	if (!read_body(&r, type, out))
		return false;
	if (r.pos != len)
		return fail(&r, "%zu trailing byte%s at byte %zu, after the whole message",
					len - r.pos, len - r.pos == 1 ? "" : "s", r.pos);
	return true;
}

const char *
ecp_pgo_type_name(EcpPgoType type)
{
	const char *name = known_type_name((int) type);

	return name != NULL ? name : "unknown";
}

uint32_t
ecp_pgo_truncate_relid(const EcpPgoTruncate *truncate, int i)
{
	return be32(truncate->relids + (size_t) i * 4);
}

char *
ecp_pgo_lsn_format(uint64_t lsn, char buf[ECP_PGO_LSN_BUFSIZE])
{
	snprintf(buf, ECP_PGO_LSN_BUFSIZE, "%X/%X",
			 (unsigned) (lsn >> 32), (unsigned) (lsn & 0xFFFFFFFFu));
	return buf;
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* 1 to 8 hex digits at *text, advanced past them */
static bool
parse_lsn_half(const char **text, uint32_t *half)
{
	int			digits = 0;

	*half = 0;
	for (; hex_value(**text) >= 0; (*text)++)
	{
		if (++digits > LSN_HALF_DIGITS)
			return false;
		*half = (*half << 4) | (uint32_t) hex_value(**text);
	}
	return digits > 0;
}

bool
ecp_pgo_lsn_parse(const char *text, uint64_t *lsn)
{
	uint32_t	high,
				low;

	if (text == NULL || !parse_lsn_half(&text, &high) || *text++ != '/' ||
		!parse_lsn_half(&text, &low) || *text != '\0')
		return false;
	*lsn = ((uint64_t) high << 32) | low;
	return true;
}

int64_t
ecp_pgo_timestamp_to_unix_us(int64_t pg_timestamp)
{
	/* DT_NOBEGIN and DT_NOEND, and what would overflow */
	if (pg_timestamp == INT64_MIN)
		return INT64_MIN;
	if (pg_timestamp > INT64_MAX - PG_EPOCH_UNIX_US)
		return INT64_MAX;
	return pg_timestamp + PG_EPOCH_UNIX_US;
}
