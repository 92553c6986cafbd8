/*
 * owner_sql.c: the pieces of SQL ecp writes around a task's query, and the
 * checks on what comes back.
 *
 * Those statements run as the task's owner under the task's search_path
 * (the owner's query needs it), so every name ecp adds must not depend on
 * it: types, functions and aggregates are written with pg_catalog., and
 * comparisons of the key name the operator of the key type's own btree
 * ordering, the one ORDER BY uses, by its schema.  And nothing is read
 * from a result column before its type is the one asked for: a Datum of
 * another type read as text or int8 would be a pointer the role chose.
 */
#include "sync.h"

#include "access/htup_details.h"
#include "access/stratnum.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

/*
 * OPERATOR(schema.name) of a btree strategy (BTLessStrategyNumber, ...)
 * for two values of type, taken from the type's default btree ordering.
 */
char *
ecp_type_operator(Oid type, int16 strategy, const char *column)
{
	TypeCacheEntry *entry = lookup_type_cache(type, TYPECACHE_BTREE_OPFAMILY);
	Oid			opno = InvalidOid;
	HeapTuple	tuple;
	Form_pg_operator form;
	char	   *sql;

	if (OidIsValid(entry->btree_opf))
		opno = get_opfamily_member(entry->btree_opf, entry->btree_opintype,
								   entry->btree_opintype, strategy);
	if (!OidIsValid(opno))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("column \"%s\" of type %s has no default btree ordering to page by",
						column, format_type_be(type)),
				 errhint("Page by a column of a type with an ordering (an integer, text, uuid, timestamp, ...).")));
	tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for operator %u", opno);
	form = (Form_pg_operator) GETSTRUCT(tuple);
	sql = psprintf("OPERATOR(%s.%s)", quote_identifier(get_namespace_name(form->oprnamespace)),
				   NameStr(form->oprname));
	ReleaseSysCache(tuple);
	return sql;
}

/* The type's name as SQL, with its schema whatever the search_path. */
char *
ecp_qualified_type(Oid type)
{
	return format_type_be_qualified(type);
}

/*
 * Fail unless column attno (from 1) of a result ecp built is of type
 * expected.  With every name qualified this does not happen; it is what
 * keeps a mistake in that from becoming a read at an address.
 */
void
ecp_require_column_type(TupleDesc desc, int attno, Oid expected, const char *what)
{
	Oid			found = attno <= desc->natts ? TupleDescAttr(desc, attno - 1)->atttypid : InvalidOid;

	if (found != expected)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column %d of %s is of type %s, not %s", attno, what,
						OidIsValid(found) ? format_type_be(found) : "(none)", format_type_be(expected)),
				 errhint("ecp qualifies every name it adds to the task's query with pg_catalog; report this as a bug.")));
}

/* ecp_require_column_type for every column of a result: each must be expected. */
void
ecp_require_all_columns(TupleDesc desc, Oid expected, const char *what)
{
	for (int attno = 1; attno <= desc->natts; attno++)
		ecp_require_column_type(desc, attno, expected, what);
}
