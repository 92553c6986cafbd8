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
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

/* A column of the query's row: "ecp:row"."column". */
char *
ecp_source_column_ref(const char *column)
{
	return psprintf(ECP_ROW_ALIAS ".%s", quote_identifier(column));
}

/*
 * The version column as an integer text: integer types as they are,
 * timestamps and dates as microseconds since 1970 (an updated_at column
 * is the usual version), numeric cut to a bigint.  Anything else fails
 * the run: a version that does not grow with the row would make
 * Elasticsearch refuse newer rows.
 */
static char *
version_expression(const EcpPartConfig *config, Oid type)
{
	char	   *ref = ecp_source_column_ref(config->version_column);

	switch (type)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
			return psprintf("(%s)" ECP_AS_TEXT, ref);
		case NUMERICOID:
			return psprintf("pg_catalog.trunc(%s)" ECP_AS_INT8 ECP_AS_TEXT, ref);
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
		case DATEOID:
			/* extract(... from ...) is grammar: always pg_catalog.extract */
			return psprintf("(extract(epoch from %s) OPERATOR(pg_catalog.*) 1000000)" ECP_AS_INT8 ECP_AS_TEXT, ref);
		default:
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("version_column \"%s\" of task \"%s\" is of type %s",
							config->version_column, config->task_name, format_type_be(type)),
					 errhint("A version is an integer, numeric, date or timestamp column that grows with every change of the row, e.g. updated_at.")));
	}
	return NULL;
}

/*
 * The columns a page query adds after (key, id, document) for the task's
 * routing_column and version_column: "" when it names neither, else
 * ", routing, version" (either may be a NULL text).  Inside SPI, as the
 * owner (the types are the query's).
 */
char *
ecp_source_write_columns(const EcpPartConfig *config)
{
	char	   *routing = "NULL" ECP_AS_TEXT;
	char	   *version = "NULL" ECP_AS_TEXT;

	if (config->routing_column == NULL && config->version_column == NULL)
		return "";
	if (config->routing_column)
		routing = psprintf("(%s)" ECP_AS_TEXT, ecp_source_column_ref(config->routing_column));
	if (config->version_column)
	{
		MemoryContext caller = CurrentMemoryContext;
		char	   *sql = psprintf("SELECT %s FROM (%s\n) AS " ECP_ROW_ALIAS " LIMIT 0",
								   ecp_source_column_ref(config->version_column), config->query);

		if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "ecp: could not read the version column of the source query");
		/* SPI leaves its own context current: what is returned goes where the caller's things go */
		MemoryContextSwitchTo(caller);
		version = version_expression(config, SPI_gettypeid(SPI_tuptable->tupdesc, 1));
	}
	return psprintf(", %s, %s", routing, version);
}

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
						OidIsValid(found) ? format_type_be_qualified(found) : "(none)",
						format_type_be_qualified(expected)),
				 errhint("ecp qualifies every name it adds to the task's query with pg_catalog; report this as a bug.")));
}

/* ecp_require_column_type for every column of a result: each must be expected. */
void
ecp_require_all_columns(TupleDesc desc, Oid expected, const char *what)
{
	for (int attno = 1; attno <= desc->natts; attno++)
		ecp_require_column_type(desc, attno, expected, what);
}
