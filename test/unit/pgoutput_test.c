/*
 * pgoutput_test.c: src/lib/pgoutput.c, the reader of pgoutput messages
 * (logical replication protocol version 1), with no server: messages built
 * byte by byte for every type and every tuple kind, every field checked;
 * column counts at and past MaxTupleAttributeNumber; each kind of error,
 * its exact text (the field, the byte offset); LSN text both ways and
 * commit timestamps in Unix time.  Then every message read well goes
 * through the damage tests of pgoutput_check.h (cut short at every length,
 * a byte more, bytes replaced, random damage), each parse from a copy that
 * ends at an inaccessible page.  pgoutput_real_test.c reads messages
 * captured from PostgreSQL 15.
 */
#include "pgoutput_check.h"

/* ---- each message type, built */

static void
test_begin_commit(void)
{
	static Msg	m;

	start(&m, 'B');
	put_u64(&m, UINT64_C(0x00000016B374D848));
	put_u64(&m, UINT64_MAX);	/* -1: a microsecond before 2000 */
	put_u32(&m, 0xFFFFFFFEu);
	if (parse_ok(&m, "Begin"))
	{
		is_num(msg.type, ECP_PGO_BEGIN, "Begin: type");
		is_u64(msg.body.begin.final_lsn, UINT64_C(0x16B374D848), "Begin: final LSN");
		is_num(msg.body.begin.commit_time, -1, "Begin: commit time, negative");
		is_u64(msg.body.begin.xid, 0xFFFFFFFEu, "Begin: xid, unsigned");
	}

	start(&m, 'C');
	put_u8(&m, 0);
	put_u64(&m, UINT64_C(0x1542C08));
	put_u64(&m, UINT64_C(0x1542C38));
	put_u64(&m, UINT64_C(0x000304FE725FD4A9));
	if (parse_ok(&m, "Commit"))
	{
		is_num(msg.type, ECP_PGO_COMMIT, "Commit: type");
		is_u64(msg.body.commit.commit_lsn, 0x1542C08, "Commit: commit LSN");
		is_u64(msg.body.commit.end_lsn, 0x1542C38, "Commit: end LSN");
		is_num(msg.body.commit.commit_time, INT64_C(0x000304FE725FD4A9), "Commit: commit time");
	}
}

static void
test_relation(void)
{
	static Msg	m;
	const EcpPgoRelation *rel = &msg.body.relation;

	start(&m, 'R');
	put_u32(&m, 0x80000001u);
	put_str(&m, "");
	put_str(&m, "t");
	put_u8(&m, 'i');
	put_u16(&m, 3);
	put_u8(&m, 1);
	put_str(&m, "id");
	put_u32(&m, 23);
	put_u32(&m, 0xFFFFFFFFu);
	put_u8(&m, 0);
	put_str(&m, "amount");
	put_u32(&m, 1700);
	put_u32(&m, (10 << 16 | 2) + 4);
	put_u8(&m, 3);
	put_str(&m, "x");
	put_u32(&m, 4294967295u);
	put_u32(&m, 0x80000000u);
	if (!parse_ok(&m, "Relation"))
		return;
	is_num(msg.type, ECP_PGO_RELATION, "Relation: type");
	is_u64(rel->relid, 0x80000001u, "Relation: relid, unsigned");
	is_str(rel->schema, "", "Relation: empty schema (pg_catalog)");
	is_str(rel->name, "t", "Relation: name");
	ok(string_inside(rel->schema) && string_inside(rel->name), "Relation: names are views into the message");
	is_num(rel->replica_identity, 'i', "Relation: replica identity");
	is_num(rel->ncolumns, 3, "Relation: 3 columns");
	is_str(rel->columns[0].name, "id", "Relation: column 1 name");
	ok(rel->columns[0].key && rel->columns[0].flags == 1, "Relation: column 1 is key");
	is_u64(rel->columns[0].type_oid, 23, "Relation: column 1 type");
	is_num(rel->columns[0].type_modifier, -1, "Relation: column 1 typmod -1");
	is_str(rel->columns[1].name, "amount", "Relation: column 2 name");
	ok(!rel->columns[1].key && rel->columns[1].flags == 0, "Relation: column 2 is not key");
	is_num(rel->columns[1].type_modifier, (10 << 16 | 2) + 4, "Relation: column 2 typmod numeric(10,2)");
	ok(rel->columns[2].key && rel->columns[2].flags == 3, "Relation: column 3 flags kept as sent, key bit read");
	is_u64(rel->columns[2].type_oid, 4294967295u, "Relation: column 3 type oid, unsigned");
	is_num(rel->columns[2].type_modifier, INT32_MIN, "Relation: column 3 typmod INT32_MIN");
}

static void
test_insert(void)
{
	static Msg	m;
	const EcpPgoChange *change = &msg.body.change;
	const unsigned char binary[] = {0x00, 0x01, 0xff};

	start(&m, 'I');
	put_u32(&m, 16389);
	put_u8(&m, 'N');
	put_u16(&m, 5);
	put_text(&m, "1");
	put_u8(&m, 'n');
	put_text(&m, "");
	put_value(&m, 'b', binary, sizeof(binary));
	put_u8(&m, 'u');
	if (!parse_ok(&m, "Insert"))
		return;
	is_num(msg.type, ECP_PGO_INSERT, "Insert: type");
	is_u64(change->relid, 16389, "Insert: relid");
	ok(change->has_new && change->old_kind == '\0', "Insert: a new tuple, no old one");
	is_num(change->new_tuple.ncolumns, 5, "Insert: 5 columns");
	is_text_value(&change->new_tuple.columns[0], "1", "Insert: text column");
	is_value(&change->new_tuple.columns[1], 'n', NULL, 0, "Insert: null column");
	is_text_value(&change->new_tuple.columns[2], "", "Insert: empty text column");
	is_value(&change->new_tuple.columns[3], 'b', binary, sizeof(binary), "Insert: binary column with a NUL");
	is_value(&change->new_tuple.columns[4], 'u', NULL, 0, "Insert: unchanged TOAST column");
	ok(change->new_tuple.columns[0].data == base + 13, "Insert: a value is a view at its offset (byte 13)");

	start(&m, 'I');
	put_u32(&m, 1);
	put_u8(&m, 'N');
	put_u16(&m, 0);
	if (parse_ok(&m, "Insert of no columns"))
		is_num(change->new_tuple.ncolumns, 0, "Insert of no columns: 0 columns");
}

/* 'K' old key (1, null), then 'N' (3, "x") */
static void
build_update_with_old(Msg *m, char old_kind)
{
	start(m, 'U');
	put_u32(m, 42);
	put_u8(m, (unsigned char) old_kind);
	put_u16(m, 2);
	put_text(m, "1");
	put_u8(m, 'n');
	put_u8(m, 'N');
	put_u16(m, 2);
	put_text(m, "3");
	put_text(m, "x");
}

static void
test_update(void)
{
	static Msg	m;
	const EcpPgoChange *change = &msg.body.change;

	start(&m, 'U');
	put_u32(&m, 42);
	put_u8(&m, 'N');
	put_u16(&m, 2);
	put_text(&m, "1");
	put_u8(&m, 'u');
	if (parse_ok(&m, "Update, new tuple only"))
	{
		is_num(msg.type, ECP_PGO_UPDATE, "Update: type");
		is_u64(change->relid, 42, "Update: relid");
		ok(change->has_new && change->old_kind == '\0', "Update: no old tuple");
		is_num(change->new_tuple.ncolumns, 2, "Update: 2 new columns");
		is_value(&change->new_tuple.columns[1], 'u', NULL, 0, "Update: unchanged TOAST column");
	}

	build_update_with_old(&m, 'K');
	if (parse_ok(&m, "Update with the old key"))
	{
		ok(change->has_new && change->old_kind == 'K', "Update 'K': old key and new tuple");
		is_num(change->old_tuple.ncolumns, 2, "Update 'K': 2 old columns");
		is_text_value(&change->old_tuple.columns[0], "1", "Update 'K': old key value");
		is_value(&change->old_tuple.columns[1], 'n', NULL, 0, "Update 'K': non-key column null");
		is_text_value(&change->new_tuple.columns[0], "3", "Update 'K': new key value");
		is_text_value(&change->new_tuple.columns[1], "x", "Update 'K': new second value");
	}

	build_update_with_old(&m, 'O');
	if (parse_ok(&m, "Update with the old row"))
		ok(change->old_kind == 'O' && change->old_tuple.ncolumns == 2 &&
		   change->new_tuple.ncolumns == 2, "Update 'O': old row and new tuple");
}

static void
test_delete(void)
{
	static Msg	m;
	const EcpPgoChange *change = &msg.body.change;

	for (int i = 0; i < 2; i++)
	{
		char		kind = i == 0 ? 'K' : 'O';
		char		name[64];

		start(&m, 'D');
		put_u32(&m, 7);
		put_u8(&m, (unsigned char) kind);
		put_u16(&m, 2);
		put_text(&m, "7");
		put_text(&m, "seven");
		snprintf(name, sizeof(name), "Delete '%c'", kind);
		if (!parse_ok(&m, name))
			continue;
		ok(msg.type == ECP_PGO_DELETE && change->relid == 7, "%s: type and relid", name);
		ok(!change->has_new && change->old_kind == kind, "%s: old tuple only", name);
		is_text_value(&change->old_tuple.columns[1], "seven", name);
	}
}

static void
test_truncate(void)
{
	static Msg	m;
	const EcpPgoTruncate *truncate = &msg.body.truncate;

	start(&m, 'T');
	put_u32(&m, 3);
	put_u8(&m, ECP_PGO_TRUNCATE_CASCADE | ECP_PGO_TRUNCATE_RESTART_IDENTITY);
	put_u32(&m, 16389);
	put_u32(&m, 0xFFFFFFFFu);
	put_u32(&m, 1);
	if (parse_ok(&m, "Truncate"))
	{
		is_num(msg.type, ECP_PGO_TRUNCATE, "Truncate: type");
		is_num(truncate->options, 3, "Truncate: cascade and restart identity");
		is_num(truncate->nrelations, 3, "Truncate: 3 relations");
		is_u64(ecp_pgo_truncate_relid(truncate, 0), 16389, "Truncate: relation 1");
		is_u64(ecp_pgo_truncate_relid(truncate, 1), 0xFFFFFFFFu, "Truncate: relation 2, unsigned");
		is_u64(ecp_pgo_truncate_relid(truncate, 2), 1, "Truncate: relation 3");
	}

	start(&m, 'T');
	put_u32(&m, 0);
	put_u8(&m, 0);
	if (parse_ok(&m, "Truncate of no relations"))
		is_num(truncate->nrelations, 0, "Truncate of no relations: 0");
}

static void
test_origin_type_message(void)
{
	static Msg	m;
	const EcpPgoLogicalMessage *message = &msg.body.message;

	start(&m, 'O');
	put_u64(&m, UINT64_C(0x1234ABC));
	put_str(&m, "o1");
	if (parse_ok(&m, "Origin"))
	{
		is_num(msg.type, ECP_PGO_ORIGIN, "Origin: type");
		is_u64(msg.body.origin.origin_lsn, 0x1234ABC, "Origin: LSN");
		is_str(msg.body.origin.name, "o1", "Origin: name");
	}

	start(&m, 'Y');
	put_u32(&m, 16385);
	put_str(&m, "public");
	put_str(&m, "mood");
	if (parse_ok(&m, "Type"))
	{
		is_num(msg.type, ECP_PGO_TYPE, "Type: type");
		is_u64(msg.body.type_info.type_oid, 16385, "Type: oid");
		is_str(msg.body.type_info.schema, "public", "Type: schema");
		is_str(msg.body.type_info.name, "mood", "Type: name");
	}

	start(&m, 'M');
	put_u8(&m, 1);
	put_u64(&m, 0x1543990);
	put_str(&m, "ecp");
	put_u32(&m, 3);
	put(&m, "a\0b", 3);
	if (parse_ok(&m, "Message"))
	{
		is_num(msg.type, ECP_PGO_MESSAGE, "Message: type");
		ok(message->transactional && message->flags == 1, "Message: transactional");
		is_u64(message->lsn, 0x1543990, "Message: LSN");
		is_str(message->prefix, "ecp", "Message: prefix");
		ok(message->content_length == 3 && inside(message->content, 3) &&
		   memcmp(message->content, "a\0b", 3) == 0, "Message: content, with a NUL");
	}

	start(&m, 'M');
	put_u8(&m, 0);
	put_u64(&m, 0);
	put_str(&m, "");
	put_u32(&m, 0);
	if (parse_ok(&m, "Message, empty"))
		ok(!message->transactional && message->content_length == 0 && message->prefix[0] == '\0',
		   "Message, empty: not transactional, empty prefix and content");
}

/* ---- limits and errors */

/* an Insert of n null columns */
static void
build_wide_insert(Msg *m, unsigned n)
{
	start(m, 'I');
	put_u32(m, 1);
	put_u8(m, 'N');
	put_u16(m, n);
	for (unsigned i = 0; i < n; i++)
		put_u8(m, 'n');
}

/* a Relation of n int4 columns named c1 ... */
static void
build_wide_relation(Msg *m, unsigned n)
{
	start(m, 'R');
	put_u32(m, 1);
	put_str(m, "public");
	put_str(m, "wide");
	put_u8(m, 'd');
	put_u16(m, n);
	for (unsigned i = 0; i < n; i++)
	{
		char		name[16];

		snprintf(name, sizeof(name), "c%u", i + 1);
		put_u8(m, 0);
		put_str(m, name);
		put_u32(m, 23);
		put_u32(m, 0xFFFFFFFFu);
	}
}

static void
test_column_limits(void)
{
	static Msg	m;

	build_wide_insert(&m, ECP_PGO_MAX_COLUMNS);
	if (parse_ok(&m, "Insert of 1664 columns (MaxTupleAttributeNumber)"))
		ok(msg.body.change.new_tuple.ncolumns == 1664 &&
		   msg.body.change.new_tuple.columns[1663].kind == ECP_PGO_NULL, "Insert of 1664 columns: all read");
	build_wide_insert(&m, ECP_PGO_MAX_COLUMNS + 1);
	refused_with(&m, "pgoutput Insert message, new tuple: column count 1665 at byte 6 is more than 1664",
				 "Insert of 1665 columns");
	build_wide_insert(&m, 0);
	m.bytes[6] = 0xff;
	m.bytes[7] = 0xff;
	refused_saying(&m, "column count 65535 at byte 6", "more than 1664", "Insert claiming 65535 columns");

	build_wide_relation(&m, ECP_PGO_MAX_COLUMNS);
	if (parse_ok(&m, "Relation of 1664 columns"))
		is_str(msg.body.relation.columns[1663].name, "c1664", "Relation of 1664 columns: the last one");
	build_wide_relation(&m, ECP_PGO_MAX_COLUMNS + 1);
	refused_with(&m, "pgoutput Relation message: column count 1665 at byte 18 is more than 1664",
				 "Relation of 1665 columns");
}

/* an Insert whose single column is the given bytes (kind, length, data) */
static void
build_insert_column(Msg *m, const void *column, size_t length)
{
	start(m, 'I');
	put_u32(m, 16389);
	put_u8(m, 'N');
	put_u16(m, 1);
	put(m, column, length);
}

static void
test_type_errors(void)
{
	static Msg	m;

	m.len = 0;
	refused_with(&m, "pgoutput message: empty (0 bytes)", "an empty message");
	start(&m, 'Z');
	refused_with(&m, "pgoutput message: unknown message type 'Z' (0x5a) at byte 0", "type 'Z'");
	start(&m, '\0');
	refused_with(&m, "pgoutput message: unknown message type 0x00 at byte 0", "type 0x00");
	start(&m, 'S');
	put_u32(&m, 1);
	put_u8(&m, 1);
	refused_saying(&m, "type 'S' (0x53) at byte 0 is a streaming message", "proto_version '1'",
				   "Stream Start");
	start(&m, 'P');
	refused_saying(&m, "type 'P' (0x50) at byte 0 is a two-phase message", "proto_version '1'",
				   "Prepare");
}

static void
test_tuple_errors(void)
{
	static Msg	m;

	build_insert_column(&m, "x", 1);
	refused_with(&m, "pgoutput Insert message, new tuple column 1: unknown kind 'x' (0x78) at byte 8 "
				 "(expected 'n', 'u', 't' or 'b')", "kind 'x'");
	build_insert_column(&m, "t\xff\xff\xff\xff", 5);
	refused_with(&m, "pgoutput Insert message, new tuple column 1: value length -1 at byte 9 is negative",
				 "a length of -1");
	build_insert_column(&m, "t\x80\0\0\0", 5);
	refused_saying(&m, "value length -2147483648 at byte 9", "negative", "a length of INT32_MIN");
	build_insert_column(&m, "t\0\0\0\x64" "abc", 8);
	refused_with(&m, "pgoutput Insert message, new tuple column 1: value truncated at byte 13: "
				 "needs 100 bytes, 3 left", "a length past the end");

	start(&m, 'I');
	put_u32(&m, 1);
	put_u8(&m, 'K');
	refused_with(&m, "pgoutput Insert message: tuple tag 'K' (0x4b) at byte 5 (expected 'N')",
				 "Insert with an old key");
	start(&m, 'D');
	put_u32(&m, 1);
	put_u8(&m, 'N');
	refused_saying(&m, "tuple tag 'N' (0x4e) at byte 5", "(expected 'K' or 'O')", "Delete with a new tuple");
	build_update_with_old(&m, 'K');
	m.bytes[15] = 'K';
	refused_with(&m, "pgoutput Update message: tuple tag 'K' (0x4b) at byte 15 (expected 'N' after the old tuple)",
				 "Update with two old tuples");
	build_update_with_old(&m, 'K');
	m.len = 15;
	refused_with(&m, "pgoutput Update message: tuple tag truncated at byte 15: needs 1 byte, 0 left",
				 "Update that ends after its old tuple");
	build_update_with_old(&m, 'X');
	refused_saying(&m, "tuple tag 'X' (0x58) at byte 5", "(expected 'K', 'O' or 'N')", "Update with tag 'X'");
}

static void
test_field_errors(void)
{
	static Msg	m;

	start(&m, 'R');
	put_u32(&m, 1);
	put_str(&m, "public");
	put(&m, "item", 4);
	refused_with(&m, "pgoutput Relation message: relation name at byte 12 has no terminating NUL "
				 "before the end (byte 16)", "a name without its NUL");
	start(&m, 'R');
	put_u32(&m, 1);
	put_str(&m, "public");
	put_str(&m, "item");
	put_u8(&m, 'x');
	put_u16(&m, 0);
	refused_saying(&m, "unknown replica identity 'x' (0x78) at byte 17", "expected 'd', 'n', 'f' or 'i'",
				   "replica identity 'x'");
	build_wide_relation(&m, 2);
	m.len -= 3;
	refused_with(&m, "pgoutput Relation message, column 2: type modifier truncated at byte 40: "
				 "needs 4 bytes, 1 left", "a relation column cut in its type modifier");

	start(&m, 'C');
	put_u8(&m, 1);
	put_u64(&m, 1);
	put_u64(&m, 2);
	put_u64(&m, 3);
	refused_with(&m, "pgoutput Commit message: flags 0x01 at byte 1: none are defined", "Commit with flags");

	start(&m, 'T');
	put_u32(&m, 0xFFFFFFFFu);
	put_u8(&m, 0);
	refused_with(&m, "pgoutput Truncate message: relation count -1 at byte 1 is negative",
				 "Truncate of -1 relations");
	start(&m, 'T');
	put_u32(&m, 1000);
	put_u8(&m, 0);
	put_u32(&m, 1);
	put_u32(&m, 2);
	refused_with(&m, "pgoutput Truncate message: 1000 relation oids need 4000 bytes from byte 6, 8 left",
				 "Truncate of more relations than sent");
	start(&m, 'T');
	put_u32(&m, 0x7FFFFFFFu);
	put_u8(&m, 0);
	refused_saying(&m, "2147483647 relation oids need 8589934588 bytes", "0 left", "Truncate of INT32_MAX relations");

	start(&m, 'M');
	put_u8(&m, 1);
	put_u64(&m, 1);
	put_str(&m, "p");
	put_u32(&m, 0xFFFFFFFEu);
	refused_with(&m, "pgoutput Message message: content length -2 at byte 12 is negative",
				 "Message of length -2");
}

static void
test_error_buffer(void)
{
	static Msg	m;
	char		small[12];
	unsigned char one = 'Z';

	start(&m, 'B');
	put_u64(&m, 1);
	put_u64(&m, 2);
	put_u32(&m, 3);
	put_u8(&m, 0);
	refused_with(&m, "pgoutput Begin message: 1 trailing byte at byte 21, after the whole message",
				 "Begin with a byte more");

	memset(small, 'x', sizeof(small));
	ok(!ecp_pgo_parse(&one, 1, &msg, small, sizeof(small)) && strlen(small) == sizeof(small) - 1 &&
	   strncmp(small, "pgoutput me", 11) == 0, "a short error buffer: cut, NUL-terminated");
	ok(!ecp_pgo_parse(&one, 1, &msg, NULL, 0), "no error buffer: refused all the same");
	ok(!ecp_pgo_parse(&one, 1, NULL, err, sizeof(err)) && contains(err, "no message struct"),
	   "no message struct: refused");
	ok(!ecp_pgo_parse(NULL, 4, &msg, err, sizeof(err)) && contains(err, "no data"),
	   "NULL data of 4 bytes: refused");
	is_str(ecp_pgo_type_name(ECP_PGO_TRUNCATE), "Truncate", "type name of 'T'");
	is_str(ecp_pgo_type_name((EcpPgoType) 'S'), "unknown", "type name of 'S'");
}

static void
test_errors(void)
{
	test_type_errors();
	test_tuple_errors();
	test_field_errors();
	test_error_buffer();
}


/* ---- LSNs and timestamps */

static void
test_lsn(void)
{
	static const char *const refused[] = {
		"", "/", "1/", "/1", "123456789/0", "0/123456789", "1/2x", " 1/2", "1/2 ", "-1/2",
		"+1/2", "1//2", "1/2/3", "0x1/2", "g/1", "1-2",
	};
	static const uint64_t round_trip[] = {
		0, 1, UINT64_C(0xFFFFFFFF), UINT64_C(0x100000000), UINT64_C(0x16B374D848), UINT64_MAX,
	};
	char		buf[ECP_PGO_LSN_BUFSIZE];
	uint64_t	lsn = 42;
	int			all = 1;

	is_str(ecp_pgo_lsn_format(0, buf), "0/0", "LSN 0 is 0/0");
	is_str(ecp_pgo_lsn_format(UINT64_C(0x16B374D848), buf), "16/B374D848", "LSN as pg_lsn prints it");
	is_str(ecp_pgo_lsn_format(UINT64_MAX, buf), "FFFFFFFF/FFFFFFFF", "the largest LSN fits the buffer");
	ok(ecp_pgo_lsn_parse("16/B374D848", &lsn) && lsn == UINT64_C(0x16B374D848), "LSN 16/B374D848 read");
	ok(ecp_pgo_lsn_parse("ab/cDeF", &lsn) && lsn == UINT64_C(0xAB0000CDEF), "LSN in mixed case read");
	ok(ecp_pgo_lsn_parse("00000000/00000001", &lsn) && lsn == 1, "LSN of 8 and 8 digits read");
	for (size_t i = 0; i < sizeof(round_trip) / sizeof(round_trip[0]); i++)
		all &= ecp_pgo_lsn_parse(ecp_pgo_lsn_format(round_trip[i], buf), &lsn) && lsn == round_trip[i];
	ok(all, "LSNs read back as formatted");
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
	{
		lsn = 42;
		if (!ok(!ecp_pgo_lsn_parse(refused[i], &lsn) && lsn == 42, "LSN '%s' refused, result untouched", refused[i]))
			diag("read as %llu", (unsigned long long) lsn);
	}
	ok(!ecp_pgo_lsn_parse(NULL, &lsn), "LSN NULL refused");
}

static void
test_timestamp(void)
{
	const int64_t epoch_us = INT64_C(946684800000000);

	is_num(ecp_pgo_timestamp_to_unix_us(0), epoch_us, "timestamp 0 is 2000-01-01");
	is_num(ecp_pgo_timestamp_to_unix_us(-epoch_us), 0, "1970-01-01 is 0");
	is_num(ecp_pgo_timestamp_to_unix_us(INT64_MAX), INT64_MAX, "infinity stays infinity");
	is_num(ecp_pgo_timestamp_to_unix_us(INT64_MIN), INT64_MIN, "-infinity stays -infinity");
	is_num(ecp_pgo_timestamp_to_unix_us(INT64_MAX - epoch_us), INT64_MAX, "the last that converts");
	is_num(ecp_pgo_timestamp_to_unix_us(INT64_MAX - epoch_us + 1), INT64_MAX, "past it: INT64_MAX, no overflow");
	is_num(ecp_pgo_timestamp_to_unix_us(INT64_MIN + 1), INT64_MIN + 1 + epoch_us, "the earliest finite one");
}


int
main(void)
{
	arena_open();
	test_begin_commit();
	test_relation();
	test_insert();
	test_update();
	test_delete();
	test_truncate();
	test_origin_type_message();
	test_column_limits();
	test_errors();
	test_lsn();
	test_timestamp();
	test_damage(18);
	forget_all();
	arena_close();
	return tap_done();
}
