# mysql_fdw against a throwaway MariaDB: what ecp relies on when it reads
# sharded MySQL through foreign tables.
#
# Needs the server from test/scripts/mariadb.sh; its ECP_MYSQL_* variables
# must be in the environment (make test exports them).  Without them this
# test FAILS on purpose: CI must not skip it silently.
#
# It does not load ecp; it checks the foreign-data layer only:
#   - values (decimal scale, NULLs, datetime, non-ASCII text) arrive intact,
#     including through to_jsonb(t), which ecp uses to serialise rows;
#   - what mysql_fdw 2.8 pushes down for a keyset page
#     (WHERE id > $1 ORDER BY id LIMIT n) and for a key window
#     (WHERE id > $a AND id <= $b), with custom and generic plans;
#   - how MariaDB executes the pushed queries (EXPLAIN, no timing).

use strict;
use warnings;

use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpMysql;

my $my = EcpMysql->require_env;

# Cluster->init runs pg_regress --config-auth; plain prove does not set it.
if (!$ENV{PG_REGRESS})
{
	my $pgxs = `pg_config --pgxs`;
	chomp $pgxs;
	$ENV{PG_REGRESS} = dirname($pgxs) . '/../test/regress/pg_regress';
}
$ENV{PGCLIENTENCODING} = 'UTF8';

my $NROWS = 20000;

# ---------------------------------------------------------------------------
# MariaDB side
# ---------------------------------------------------------------------------
# Source text is UTF-8 bytes (no "use utf8"): sent and compared as bytes.
my $odd_note = "O'Brien \xc3\xbc \xe2\x82\xac";    # O'Brien ü €

$my->query(qq{
	DROP TABLE IF EXISTS orders;
	CREATE TABLE orders (
		id         BIGINT PRIMARY KEY,
		customer   VARCHAR(64) NOT NULL,
		amount     DECIMAL(12,2) NOT NULL,
		created_at DATETIME NOT NULL,
		note       VARCHAR(100) NULL
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
	INSERT INTO orders
	SELECT seq,
	       CONCAT('cust-', seq % 997),
	       (seq * 7919 % 1000000) / 100,
	       TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq MINUTE,
	       IF(seq % 3 = 0, NULL, CONCAT('note ', seq))
	  FROM seq_1_to_$NROWS;
	UPDATE orders SET amount = 9999999999.99,
	                  created_at = '1999-12-31 23:59:59',
	                  note = 'O''Brien \xc3\xbc \xe2\x82\xac'
	 WHERE id = 7;
	UPDATE orders SET amount = -0.01 WHERE id = 8;
});
is($my->query('SELECT COUNT(*) FROM orders'), $NROWS, 'MariaDB: orders loaded');

# ---------------------------------------------------------------------------
# PostgreSQL side
# ---------------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('main');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->start;

# server with character_set 'utf8mb4' (see the charset check below)
$my->setup_fdw($node, 'postgres', 'my_shard');
$node->safe_psql('postgres', q{
	IMPORT FOREIGN SCHEMA ecp_test LIMIT TO (orders)
	  FROM SERVER my_shard INTO public;
});

is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod)
	                  || CASE WHEN attnotnull THEN ' not null' ELSE '' END,
	                  ', ' ORDER BY attnum)
	  FROM pg_attribute
	 WHERE attrelid = 'orders'::regclass AND attnum > 0}),
	'id bigint not null, customer character varying(64) not null, '
	  . 'amount numeric not null, '
	  . 'created_at timestamp without time zone not null, '
	  . 'note character varying(100)',
	'IMPORT FOREIGN SCHEMA: column types (DECIMAL(12,2) becomes plain numeric)');

is($node->safe_psql('postgres', 'SELECT count(*) FROM orders'),
	$NROWS, 'count(*) through the foreign table');

# --- values of a few rows, against what MariaDB holds ----------------------
my @ids = (1, 3, 7, 8, 9, 12345, $NROWS);
my $idlist = join(',', @ids);

my @my_rows = map {
	join('|', map { $_ // '<NULL>' } @$_)
} $my->rows(qq{
	SELECT id, customer, amount,
	       DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s'), note
	  FROM orders WHERE id IN ($idlist) ORDER BY id});

my @pg_rows = split /\n/, $node->safe_psql('postgres', qq{
	SELECT id, customer, amount,
	       to_char(created_at, 'YYYY-MM-DD HH24:MI:SS'),
	       coalesce(note, '<NULL>')
	  FROM orders WHERE id IN ($idlist) ORDER BY id});

is_deeply(\@pg_rows, \@my_rows, 'sample rows equal what MariaDB holds');
is_deeply(
	[ @pg_rows[ 1 .. 3 ] ],
	[
		'3|cust-3|237.57|2024-01-01 00:03:00|<NULL>',
		"7|cust-7|9999999999.99|1999-12-31 23:59:59|$odd_note",
		'8|cust-8|-0.01|2024-01-01 00:08:00|note 8',
	],
	'sample rows: decimal scale, NULL, datetime, non-ASCII text');

# --- the whole table, every column, compared by checksum -------------------
# OFFSET 0 keeps the aggregate local, so all rows really cross the FDW.
my $pg_md5 = $node->safe_psql('postgres', q{
	SELECT md5(string_agg(
	         concat_ws('|', id, customer, amount,
	                   to_char(created_at, 'YYYY-MM-DD HH24:MI:SS'),
	                   coalesce(note, '<NULL>')),
	         E'\n' ORDER BY id)) || ' ' || count(*)
	  FROM (SELECT * FROM orders OFFSET 0) s});
my $my_md5 = $my->query(q{
	SET SESSION group_concat_max_len = 100000000;
	SELECT CONCAT(MD5(GROUP_CONCAT(
	         CONCAT_WS('|', id, customer, amount,
	                   DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s'),
	                   COALESCE(note, '<NULL>'))
	         ORDER BY id SEPARATOR '\n')), ' ', COUNT(*))
	  FROM orders});
is($pg_md5, $my_md5, 'all rows and columns equal (checksum)');

# --- to_jsonb(t) of foreign rows --------------------------------------------
is( $node->safe_psql(
		'postgres', qq{
	SELECT to_jsonb(t) FROM orders t WHERE id IN (3, 7, $NROWS) ORDER BY id}),
	join("\n",
		'{"id": 3, "note": null, "amount": 237.57, "customer": "cust-3", '
		  . '"created_at": "2024-01-01T00:03:00"}',
		qq({"id": 7, "note": "$odd_note", "amount": 9999999999.99, )
		  . '"customer": "cust-7", "created_at": "1999-12-31T23:59:59"}',
		qq({"id": $NROWS, "note": "note $NROWS", "amount": 3800.00, )
		  . '"customer": "cust-60", "created_at": "2024-01-14T21:20:00"}'),
	'to_jsonb(t) of foreign rows (numeric scale kept, NULL, ISO datetime)');

# --- mysql_fdw's default character_set ('auto') -----------------------------
# 'auto' follows the backend's LC_CTYPE; this database has LC_CTYPE C, so the
# connection is latin1 (MariaDB's latin1 is cp1252: the euro sign is 0x80)
# and the text arrives as latin1 bytes inside a UTF8 database, without any
# error.  Hence character_set 'utf8mb4' on every server ecp reads from.
$my->setup_fdw($node, 'postgres', 'my_shard_auto', character_set => undef);
$node->safe_psql('postgres', q{
	CREATE SCHEMA auto;
	IMPORT FOREIGN SCHEMA ecp_test LIMIT TO (orders)
	  FROM SERVER my_shard_auto INTO auto;
});
is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT encode(note::bytea, 'hex') FROM orders WHERE id = 7),
	       (SELECT encode(note::bytea, 'hex') FROM auto.orders WHERE id = 7)}),
	'4f27427269656e20c3bc20e282ac|4f27427269656e20fc2080',
	"character_set: utf8mb4 gives UTF-8; default 'auto' under LC_CTYPE C gives latin1 bytes silently"
);

# ---------------------------------------------------------------------------
# Push-down
# ---------------------------------------------------------------------------
my $COLS = '`id`, `customer`, `amount`, `created_at`, `note`';
my $FROM = "SELECT $COLS FROM `ecp_test`.`orders`";

# Run @sql (may include PREPARE/SET) and EXPLAIN (VERBOSE, COSTS OFF) $stmt
# $n times in one session; returns the plans as array of strings.
sub explain_plans
{
	my ($stmt, $n, @sql) = @_;
	my $out = $node->safe_psql('postgres',
		join(";\n", @sql, ("EXPLAIN (VERBOSE, COSTS OFF) $stmt") x $n));
	my @plans = split /\n(?=\S)/, $out;
	is(scalar(@plans), $n, "got $n plans for $stmt");
	return @plans;
}

sub remote_query
{
	my ($plan) = @_;
	return $plan =~ /^\s*Remote query: (.*)$/m ? $1 : '<no Remote query>';
}

# node names of a plan, top first
sub plan_nodes
{
	my ($plan) = @_;
	return join(' > ',
		map { /^\s*(?:->\s+)?([A-Z][A-Za-z ]+?)(?: on | {2}|$)/ ? $1 : () }
		  grep { /^\S|->/ } split /\n/, $plan);
}

# --- keyset page: WHERE id > $1 ORDER BY id LIMIT 1000 ---------------------
my $PAGE_PREP =
  'PREPARE page(bigint) AS SELECT * FROM orders WHERE id > $1 ORDER BY id LIMIT 1000';

{
	my ($plan) = explain_plans('EXECUTE page(4321)', 1,
		'SET plan_cache_mode = force_custom_plan', $PAGE_PREP);
	is(plan_nodes($plan), 'Foreign Scan',
		'keyset page (custom plan): one Foreign Scan, no local Sort or Limit');
	is(remote_query($plan),
		"$FROM WHERE ((`id` > 4321)) ORDER BY `id` IS NULL, `id` ASC LIMIT 1000",
		'keyset page (custom plan): WHERE, ORDER BY (as "id IS NULL, id") and LIMIT pushed');

	($plan) = explain_plans('EXECUTE page(4321)', 1,
		'SET plan_cache_mode = force_generic_plan', $PAGE_PREP);
	is(plan_nodes($plan), 'Foreign Scan',
		'keyset page (generic plan): one Foreign Scan');
	is(remote_query($plan),
		"$FROM WHERE ((`id` > ?)) ORDER BY `id` IS NULL, `id` ASC LIMIT 1000",
		'keyset page (generic plan): parameter sent as a MySQL placeholder');

	# default plan_cache_mode: 5 custom plans, then the generic one wins
	my @plans = explain_plans('EXECUTE page(4321)', 6, $PAGE_PREP);
	is_deeply(
		[ map { remote_query($_) =~ /> \?\)/ ? 'generic' : 'custom' } @plans ],
		[ ('custom') x 5, 'generic' ],
		'keyset page (auto): custom plans first, generic from the 6th execution');

	for my $mode ('force_custom_plan', 'force_generic_plan')
	{
		for my $case ([ 4321, 4322 .. 5321 ], [ 19500, 19501 .. $NROWS ])
		{
			my ($after, @want) = @$case;
			my $out = $node->safe_psql('postgres',
				"SET plan_cache_mode = $mode; $PAGE_PREP; EXECUTE page($after)");
			my @got = map { (split /\|/)[0] } split /\n/, $out;
			is_deeply(\@got, \@want,
				"keyset page after $after ($mode): ids "
				  . "$want[0]..$want[-1] in order");
		}
	}
}

# --- key window: WHERE id > $a AND id <= $b --------------------------------
my $WIN_PREP =
  'PREPARE win(bigint, bigint) AS SELECT * FROM orders WHERE id > $1 AND id <= $2';

{
	my ($plan) = explain_plans('EXECUTE win(5000, 6000)', 1,
		'SET plan_cache_mode = force_custom_plan', $WIN_PREP);
	is(plan_nodes($plan), 'Foreign Scan', 'key window (custom plan): one Foreign Scan');
	is(remote_query($plan),
		"$FROM WHERE ((`id` > 5000)) AND ((`id` <= 6000))",
		'key window (custom plan): both range predicates pushed, nothing else');

	($plan) = explain_plans('EXECUTE win(5000, 6000)', 1,
		'SET plan_cache_mode = force_generic_plan', $WIN_PREP);
	is(remote_query($plan),
		"$FROM WHERE ((`id` > ?)) AND ((`id` <= ?))",
		'key window (generic plan): both range predicates pushed as placeholders');

	for my $mode ('force_custom_plan', 'force_generic_plan')
	{
		my $out = $node->safe_psql('postgres',
			"SET plan_cache_mode = $mode; $WIN_PREP; EXECUTE win(5000, 6000)");
		my @got = sort { $a <=> $b } map { (split /\|/)[0] } split /\n/, $out;
		is_deeply(\@got, [ 5001 .. 6000 ],
			"key window ($mode): exactly ids 5001..6000");
	}

	# Adding ORDER BY to the window query pushes the sort again (with the
	# IS NULL rewrite); a subquery fence (OFFSET 0) keeps the sort local.
	($plan) = explain_plans(
		'SELECT * FROM orders WHERE id > 5000 AND id <= 6000 ORDER BY id', 1);
	is(remote_query($plan),
		"$FROM WHERE ((`id` > 5000)) AND ((`id` <= 6000)) ORDER BY `id` IS NULL, `id` ASC",
		'key window + ORDER BY: the ORDER BY is pushed too');

	($plan) = explain_plans(
		'SELECT * FROM (SELECT * FROM orders WHERE id > 5000 AND id <= 6000 OFFSET 0) w ORDER BY id',
		1);
	is(plan_nodes($plan), 'Sort > Foreign Scan',
		'key window fenced by OFFSET 0, ORDER BY outside: local Sort');
	is(remote_query($plan),
		"$FROM WHERE ((`id` > 5000)) AND ((`id` <= 6000))",
		'key window fenced by OFFSET 0: remote query has no ORDER BY');

	# ecp's serialisation over a window: predicates still pushed
	($plan) = explain_plans(
		'SELECT to_jsonb(t) FROM orders t WHERE id > 5000 AND id <= 6000', 1);
	is(remote_query($plan),
		"$FROM WHERE ((`id` > 5000)) AND ((`id` <= 6000))",
		'to_jsonb(t) over a key window: predicates pushed, all columns fetched');

	# page the whole table by windows in one session, as ecp would
	my $out = $node->safe_psql('postgres', join(";\n", $WIN_PREP,
		map { my $lo = $_ * 2500; "EXECUTE win($lo, " . ($lo + 2500) . ")" }
		  0 .. ($NROWS / 2500)));
	my @got = sort { $a <=> $b } map { (split /\|/)[0] } split /\n/, $out;
	is_deeply(\@got, [ 1 .. $NROWS ],
		'windows of 2500 over the whole table: every id exactly once');
}

# --- how MariaDB runs the pushed queries (plan shape, not timing) ----------
# EXPLAIN columns: id select_type table type possible_keys key key_len ref rows Extra
{
	my ($e) = $my->rows(
		'EXPLAIN SELECT * FROM orders WHERE ((`id` > 4321)) '
		  . 'ORDER BY `id` IS NULL, `id` ASC LIMIT 1000');
	like($e->[9] // '', qr/Using filesort/,
		'MariaDB: pushed keyset page ("ORDER BY id IS NULL, id") needs a filesort');

	($e) = $my->rows(
		'EXPLAIN SELECT * FROM orders WHERE ((`id` > 5000)) AND ((`id` <= 6000))');
	is("$e->[3] $e->[5]", 'range PRIMARY',
		'MariaDB: key window is a range scan on the primary key');
	unlike($e->[9] // '', qr/filesort/, 'MariaDB: key window needs no filesort');
}

$node->stop;
done_testing();
