/*
 * pgoutput_real_test.c: src/lib/pgoutput.c on real messages, captured from
 * PostgreSQL 15 (the fixtures below say how): every one is read, its fields
 * checked against what the statements wrote (oids, names, key flags, typmods,
 * old and new tuples, an unchanged TOAST value, binary values, an origin, a
 * commit time against the one set), and then each goes through the damage
 * tests of pgoutput_check.h.
 */
#include "pgoutput_check.h"

/* ---- real messages, from PostgreSQL 15.20 */

/*
 * Captured from a throwaway PostgreSQL 15 cluster (wal_level=logical) with
 * pg_logical_slot_peek_binary_changes('s', NULL, NULL, 'proto_version',
 * '1', 'publication_names', 'p', 'messages', 'true'): a row's lsn, xid and
 * encode(data, 'hex').  The statements were:
 *   CREATE TYPE mood AS ENUM ('sad', 'happy');
 *   CREATE TABLE item (id int PRIMARY KEY, name text, note text,
 *                      price numeric(10,2), m mood);      -- oid 16389
 *   CREATE TABLE full_ri (a int, b text);                   -- oid 16396
 *   ALTER TABLE full_ri REPLICA IDENTITY FULL;
 *   INSERT INTO item VALUES (1, 'café', NULL, 12.50, 'happy');
 *   UPDATE item SET id = 3 WHERE id = 1;   DELETE FROM item WHERE id = 3;
 *   INSERT INTO full_ri VALUES (7, 'seven');
 *   UPDATE full_ri SET b = 'SEVEN';        DELETE FROM full_ri;
 *   SELECT pg_logical_emit_message(true, 'ecp', 'hello');
 *   SELECT pg_logical_emit_message(false, 'ecp', 'nontx');
 *   TRUNCATE item, full_ri RESTART IDENTITY;
 *   a transaction from replication origin 'o1', pg_replication_origin_
 *     xact_setup('0/1234ABC', '2024-01-02 03:04:05+00'): INSERT (9, 'origin')
 *   with note's storage EXTERNAL and 3000 bytes in it for id 20:
 *     UPDATE item SET name = 't2' WHERE id = 20;  -- note unchanged: 'u'
 * and the last two rows with 'binary', 'true' instead of 'messages'.
 */
typedef struct Fixture
{
	const char *name;
	const char *lsn;			/* the row's lsn column */
	uint32_t	xid;			/* the row's xid column */
	const char *hex;
} Fixture;

static const Fixture fixtures[] = {
	{"Begin", "0/1542B18", 729, "420000000001542c08000304fe725fd4a9000002d9"},
	{"Type mood", "0/1542B18", 729, "59000040017075626c6963006d6f6f6400"},
	{"Relation item", "0/1542B18", 729,
		"52000040057075626c6963006974656d006400050169640000000017ffffffff006e616d6500000000"
		"19ffffffff006e6f74650000000019ffffffff00707269636500000006a4000a0006006d0000004001ffffffff"},
	{"Insert item 1", "0/1542B18", 729,
	"49000040054e00057400000001317400000005636166c3a96e740000000531322e353074000000056861707079"},
	{"Commit", "0/1542C38", 729, "43000000000001542c080000000001542c38000304fe725fd4a9"},
	{"Update item key 1 -> 3", "0/1543688", 732,
		"55000040054b00057400000001316e6e6e6e4e00057400000001337400000005636166c3a96e74000000"
	"0531322e353074000000056861707079"},
	{"Delete item 3", "0/1543760", 733, "44000040054b00057400000001336e6e6e6e"},
	{"Relation full_ri", "0/15437D0", 734,
	"520000400c7075626c69630066756c6c5f72690066000201610000000017ffffffff01620000000019ffffffff"},
	{"Update full_ri", "0/1543848", 735,
	"550000400c4f00027400000001377400000005736576656e4e00027400000001377400000005534556454e"},
	{"Delete full_ri", "0/15438D8", 736, "440000400c4f00027400000001377400000005534556454e"},
	{"Message transactional", "0/1543990", 737, "4d010000000001543990656370000000000568656c6c6f"},
	{"Message non-transactional", "0/1543A00", 0, "4d000000000001543a0065637000000000056e6f6e7478"},
	{"Truncate", "0/1544DA0", 738, "540000000202000040050000400c"},
	{"Begin from origin", "0/1545268", 740, "4200000000015453500002b0ec8515f340000002e4"},
	{"Origin", "0/1545268", 740, "4f0000000001234abc6f3100"},
	{"Commit from origin", "0/1545398", 740, "4300000000000154535000000000015453980002b0ec8515f340"},
	{"Update unchanged TOAST", "0/1546520", 743,
	"55000040054e00057400000002323074000000027432757400000004322e30307400000003736164"},
	{"Insert binary", "0/1542B18", 729,
		"49000040054e00056200000004000000016200000005636166c3a96e620000000c0002000000000002000c"
	"138862000000056861707079"},
	{"Update full_ri binary", "0/1543848", 735,
		"550000400c4f00026200000004000000076200000005736576656e4e000262000000040000000762000000"
	"05534556454e"},
};

#define NFIXTURES ((int) (sizeof(fixtures) / sizeof(fixtures[0])))

static size_t
unhex(const char *hex, unsigned char *out, size_t room)
{
	size_t		n = strlen(hex) / 2;

	if (n > room)
		exit(2);
	for (size_t i = 0; i < n; i++)
	{
		unsigned	byte;

		if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
			exit(2);
		out[i] = (unsigned char) byte;
	}
	return n;
}

/* Parses fixture i; true when it is read (and then it is remembered). */
static int
parse_fixture(int i)
{
	static unsigned char bytes[512];
	size_t		len = unhex(fixtures[i].hex, bytes, sizeof(bytes));
	int			read = parse(bytes, len);

	if (read)
		remember(fixtures[i].name, bytes, len);
	return read;
}

static int
fixture_named(const char *name)
{
	for (int i = 0; i < NFIXTURES; i++)
		if (strcmp(fixtures[i].name, name) == 0)
			return parse_fixture(i);
	return 0;
}

static void
test_real_reads(void)
{
	for (int i = 0; i < NFIXTURES; i++)
	{
		int			read = parse_fixture(i);

		if (!ok(read, "real %s is read", fixtures[i].name))
			diag("error: %s", err);
		else if (msg.type == ECP_PGO_BEGIN)
			is_num(msg.body.begin.xid, fixtures[i].xid, "real Begin: the xid of its row");
		else if (msg.type == ECP_PGO_COMMIT)
		{
			uint64_t	row_lsn = 0;

			/* a Commit's row is the end of the commit record */
			ok(ecp_pgo_lsn_parse(fixtures[i].lsn, &row_lsn) && row_lsn == msg.body.commit.end_lsn,
			   "real Commit: end LSN is its row's lsn %s", fixtures[i].lsn);
		}
	}
}

static void
test_real_relation(void)
{
	const EcpPgoRelation *rel = &msg.body.relation;

	if (fixture_named("Relation item"))
	{
		ok(rel->relid == 16389 && strcmp(rel->schema, "public") == 0 && strcmp(rel->name, "item") == 0 &&
		   rel->replica_identity == 'd' && rel->ncolumns == 5, "real Relation item: oid, names, identity, 5 columns");
		ok(strcmp(rel->columns[0].name, "id") == 0 && rel->columns[0].key && rel->columns[0].type_oid == 23,
		   "real Relation item: id int4, the key");
		ok(strcmp(rel->columns[3].name, "price") == 0 && !rel->columns[3].key &&
		   rel->columns[3].type_oid == 1700 && rel->columns[3].type_modifier == (10 << 16 | 2) + 4,
		   "real Relation item: price numeric(10,2)");
		ok(strcmp(rel->columns[4].name, "m") == 0 && rel->columns[4].type_oid == 16385 &&
		   rel->columns[4].type_modifier == -1, "real Relation item: m, the enum");
	}
	if (fixture_named("Relation full_ri"))
		ok(rel->replica_identity == 'f' && rel->ncolumns == 2 && rel->columns[0].key && rel->columns[1].key,
		   "real Relation full_ri: identity full, every column key");
	if (fixture_named("Type mood"))
		ok(msg.body.type_info.type_oid == 16385 && strcmp(msg.body.type_info.name, "mood") == 0,
		   "real Type: mood, 16385");
}

static void
test_real_changes(void)
{
	const EcpPgoChange *change = &msg.body.change;
	const unsigned char int4_one[] = {0, 0, 0, 1};

	if (fixture_named("Insert item 1"))
	{
		is_text_value(&change->new_tuple.columns[1], "caf\xc3\xa9", "real Insert: UTF-8 text");
		is_value(&change->new_tuple.columns[2], 'n', NULL, 0, "real Insert: NULL note");
		is_text_value(&change->new_tuple.columns[3], "12.50", "real Insert: numeric as text");
	}
	if (fixture_named("Update item key 1 -> 3"))
		ok(change->old_kind == 'K' && change->old_tuple.ncolumns == 5 &&
		   change->old_tuple.columns[0].length == 1 && change->old_tuple.columns[0].data[0] == '1' &&
		   change->old_tuple.columns[4].kind == ECP_PGO_NULL &&
		   change->new_tuple.columns[0].data[0] == '3', "real Update of the key: old key 1, others null, new 3");
	if (fixture_named("Delete item 3"))
		ok(change->old_kind == 'K' && !change->has_new && change->old_tuple.columns[0].data[0] == '3',
		   "real Delete: old key 3");
	if (fixture_named("Update full_ri"))
		ok(change->old_kind == 'O' && change->old_tuple.columns[1].length == 5 &&
		   memcmp(change->new_tuple.columns[1].data, "SEVEN", 5) == 0, "real Update, identity full: old row, new row");
	if (fixture_named("Update unchanged TOAST"))
	{
		ok(change->old_kind == '\0' && change->new_tuple.ncolumns == 5, "real Update: no old tuple");
		is_value(&change->new_tuple.columns[2], 'u', NULL, 0, "real Update: the TOASTed note unchanged");
	}
	if (fixture_named("Insert binary"))
	{
		is_value(&change->new_tuple.columns[0], 'b', int4_one, 4, "real binary Insert: int4 1, 4 bytes");
		is_value(&change->new_tuple.columns[4], 'b', "happy", 5, "real binary Insert: the enum");
	}
}

static void
test_real_other(void)
{
	char		lsn[ECP_PGO_LSN_BUFSIZE];

	if (fixture_named("Truncate"))
		ok(msg.body.truncate.nrelations == 2 &&
		   msg.body.truncate.options == ECP_PGO_TRUNCATE_RESTART_IDENTITY &&
		   ecp_pgo_truncate_relid(&msg.body.truncate, 0) == 16389 &&
		   ecp_pgo_truncate_relid(&msg.body.truncate, 1) == 16396, "real Truncate: both tables, restart identity");
	if (fixture_named("Message non-transactional"))
		ok(!msg.body.message.transactional && strcmp(msg.body.message.prefix, "ecp") == 0 &&
		   msg.body.message.content_length == 5 && memcmp(msg.body.message.content, "nontx", 5) == 0,
		   "real Message: not transactional, prefix and content");
	if (fixture_named("Origin"))
		ok(msg.body.origin.origin_lsn == 0x1234ABC && strcmp(msg.body.origin.name, "o1") == 0,
		   "real Origin: o1 at 0/1234ABC");
	if (fixture_named("Begin from origin"))
	{
		/* the origin's commit time, set by pg_replication_origin_xact_setup */
		is_num(ecp_pgo_timestamp_to_unix_us(msg.body.begin.commit_time), INT64_C(1704164645000000),
			   "real Begin: commit time 2024-01-02 03:04:05 UTC in Unix microseconds");
		is_str(ecp_pgo_lsn_format(msg.body.begin.final_lsn, lsn), "0/1545350", "real Begin: final LSN as text");
	}
}

static void
test_real_messages(void)
{
	test_real_reads();
	test_real_relation();
	test_real_changes();
	test_real_other();
}


int
main(void)
{
	arena_open();
	test_real_messages();
	test_damage(NFIXTURES);
	forget_all();
	arena_close();
	return tap_done();
}
