#!/usr/bin/env bash
# Compares the ecp schema of two databases object by object, e.g. an
# install upgraded from 0.1 with a fresh install of the current version:
#
#   test/scripts/schema-diff.sh [-q] DB_A DB_B
#
# DB_A and DB_B are what psql -d takes: a database name, a connection
# string ("host=127.0.0.1 port=5432 dbname=fresh") or a URI; the PG*
# environment variables apply to both.
#
# Each object of schema ecp (and of extension ecp) is described from the
# catalog, one description per object: functions with their bodies,
# settings and privileges, relations, columns, constraints, triggers,
# policies, views, indexes, sequences, types, comments, the extension's
# members and its config dumps.  Each description goes into a file named
# after its kind and object, and the two trees are compared with diff -ru,
# so a difference names its object and shows its definition on both sides.
#
# Exit status: 0 when the schemas are equal (prints one summary line, none
# with -q), 1 when they differ (prints the differences), 2 on an error.
set -euo pipefail

quiet=false
if [ "${1:-}" = -q ]; then quiet=true; shift; fi
if [ $# -ne 2 ]; then
	echo "usage: $0 [-q] DB_A DB_B  (database names, connection strings or URIs)" >&2
	exit 2
fi

# One row per object: its kind/name, then its description.  The query of
# test/t/073_upgrade.pl, plus: function and column comments, sequences
# (type, bounds, owning column), types, extension membership, the schema's
# privileges, owners of functions and relations, relation persistence and
# forced RLS, column collations and generated columns, trigger enabled
# state.  Left out, because they differ
# between an upgraded and a fresh install without changing what the schema
# does: the extension's version, sequence positions, oids, and the stored
# fast defaults of columns added to tables that existed (atthasmissing).
# Columns are keyed by their position among the live columns: their order
# is the tables' row type, so it must match as well, but the gaps a DROP
# COLUMN leaves in attnum on an upgraded install do not count.
read -r -d '' catalog <<'SQL' || true
WITH ns AS (SELECT n.oid FROM pg_namespace n WHERE n.nspname IN ('ecp', 'ecp_internal')),
     ext AS (SELECT e.oid, e.extconfig, e.extcondition FROM pg_extension e WHERE e.extname = 'ecp')
SELECT kind || '/' || name, coalesce(def, '') FROM (
  SELECT 'function' AS kind, p.oid::regprocedure::text AS name,
         pg_get_functiondef(p.oid) || ' acl=' || coalesce(p.proacl::text, '') || ' owner=' || p.proowner::regrole AS def
    FROM pg_proc p, ns WHERE p.pronamespace = ns.oid AND p.prokind <> 'a'
  UNION ALL
  SELECT 'aggregate', p.oid::regprocedure::text, 'acl=' || coalesce(p.proacl::text, '')
    FROM pg_proc p, ns WHERE p.pronamespace = ns.oid AND p.prokind = 'a'
  UNION ALL
  SELECT 'function_comment', p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc')
    FROM pg_proc p, ns WHERE p.pronamespace = ns.oid AND obj_description(p.oid, 'pg_proc') IS NOT NULL
  UNION ALL
  SELECT 'relation', c.relname, c.relkind::text || ' owner=' || c.relowner::regrole || ' persistence=' || c.relpersistence::text
         || ' rls=' || c.relrowsecurity || ' force_rls=' || c.relforcerowsecurity
         || ' acl=' || coalesce(c.relacl::text, '') || ' options=' || coalesce(c.reloptions::text, '')
    FROM pg_class c, ns WHERE c.relnamespace = ns.oid
  UNION ALL
  SELECT 'column', c.relname || '.' || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) || '.' || a.attname,
         format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull || ' identity=' || a.attidentity::text
         || ' generated=' || a.attgenerated::text
         || ' collation=' || coalesce(nullif(a.attcollation, t.typcollation)::regcollation::text, '')
         || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' acl=' || coalesce(a.attacl::text, '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum, ns
   WHERE c.relnamespace = ns.oid AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'column_comment', c.relname || '.' || a.attname, col_description(c.oid, a.attnum)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid, ns
   WHERE c.relnamespace = ns.oid AND a.attnum > 0 AND NOT a.attisdropped
     AND col_description(c.oid, a.attnum) IS NOT NULL
  UNION ALL
  SELECT 'constraint', conrelid::regclass || '.' || conname, pg_get_constraintdef(co.oid)
    FROM pg_constraint co, ns WHERE co.connamespace = ns.oid
  UNION ALL
  SELECT 'trigger', tgrelid::regclass || '.' || tgname, pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid, ns
   WHERE c.relnamespace = ns.oid AND NOT t.tgisinternal
  UNION ALL
  SELECT 'policy', tablename || '.' || policyname,
         permissive || ' ' || cmd || ' ' || roles::text || ' using=' || coalesce(qual, '') || ' check=' || coalesce(with_check, '')
    FROM pg_policies WHERE schemaname IN ('ecp', 'ecp_internal')
  UNION ALL
  SELECT 'view', c.relname, pg_get_viewdef(c.oid) FROM pg_class c, ns WHERE c.relnamespace = ns.oid AND c.relkind = 'v'
  UNION ALL
  SELECT 'index', c.relname, pg_get_indexdef(c.oid) FROM pg_class c, ns WHERE c.relnamespace = ns.oid AND c.relkind = 'i'
  UNION ALL
  SELECT 'comment', c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c, ns WHERE c.relnamespace = ns.oid
  UNION ALL
  SELECT 'sequence', c.relname,
         format_type(s.seqtypid, NULL) || ' start=' || s.seqstart || ' increment=' || s.seqincrement
         || ' min=' || s.seqmin || ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
         || ' owned_by=' || coalesce((SELECT string_agg(dep.refobjid::regclass || '.' || att.attname || ' (' || dep.deptype::text || ')', ', ')
                                        FROM pg_depend dep
                                        JOIN pg_attribute att ON att.attrelid = dep.refobjid AND att.attnum = dep.refobjsubid
                                       WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid
                                         AND dep.refclassid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i')), '')
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid, ns WHERE c.relnamespace = ns.oid
  UNION ALL
  SELECT 'type', t.typname, t.typtype::text || ' relation=' || coalesce(t.typrelid::regclass::text, '')
         || ' element=' || coalesce(nullif(t.typelem, 0)::regtype::text, '') || ' acl=' || coalesce(t.typacl::text, '')
    FROM pg_type t, ns WHERE t.typnamespace = ns.oid
  UNION ALL
  SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid), ''
    FROM pg_depend d, ext WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
  UNION ALL
  SELECT 'schema', n.nspname, 'acl=' || coalesce(n.nspacl::text, '') || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '')
    FROM pg_namespace n, ns WHERE n.oid = ns.oid
  UNION ALL
  SELECT 'config_dump', 'ecp', ext.extconfig::regclass[]::text || ' ' || ext.extcondition::text FROM ext
) objects
SQL

work=$(mktemp -d "${TMPDIR:-/tmp}/schema-diff.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Writes the descriptions of database $1 into directory $2/<kind>/<name>.
describe() {
	local db=$1 dir=$2
	if [ "$(psql -X -At -v ON_ERROR_STOP=1 -d "$db" -c "SELECT count(*) FROM pg_extension WHERE extname = 'ecp'")" != 1 ]; then
		echo "schema-diff: extension ecp is not installed in database \"$db\"" >&2
		exit 2
	fi
	psql -X -At -v ON_ERROR_STOP=1 --field-separator-zero --record-separator-zero -d "$db" -c "$catalog" \
		>"$work/$dir.raw"
	perl -e '
		use strict; use warnings; use Digest::MD5 qw(md5_hex);
		my ($raw, $dir) = @ARGV;
		open(my $in, "<", $raw) or die "$raw: $!";
		local $/; my @fields = split /\0/, <$in>, -1;
		pop @fields if @fields % 2;     # the final record separator
		my %seen;
		while (my ($key, $def) = splice(@fields, 0, 2)) {
			my ($kind, $name) = split m{/}, $key, 2;
			$name =~ s{%}{%25}g; $name =~ s{/}{%2F}g;
			# file names are at most 255 bytes: a long name keeps a digest
			$name = substr($name, 0, 180) . "..." . md5_hex($name) if length($name) > 200;
			die "two objects described as $kind/$name\n" if $seen{"$kind/$name"}++;
			mkdir "$dir/$kind";
			open(my $out, ">", "$dir/$kind/$name") or die "$dir/$kind/$name: $!";
			print $out $def, "\n";
			close $out;
		}
		print scalar(keys %seen), "\n";
	' "$work/$dir.raw" "$work/$dir"
}

mkdir "$work/A" "$work/B"
count_a=$(describe "$1" A)
count_b=$(describe "$2" B)

set +e
(cd "$work" && diff -ru A B) >"$work/diff"
status=$?
set -e
if [ $status -eq 0 ]; then
	$quiet || echo "schema-diff: no difference ($count_a objects in A: $1; $count_b in B: $2)"
	exit 0
fi
if [ $status -ne 1 ]; then
	cat "$work/diff" >&2
	exit 2
fi
echo "schema-diff: A is $1 ($count_a objects), B is $2 ($count_b objects)"
cat "$work/diff"
echo "schema-diff: $(grep -c -E '^(diff -ru|Only in)' "$work/diff") objects differ"
exit 1
