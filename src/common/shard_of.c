/*
 * shard_of.c: task option shard_of, which query of a task's queries holds
 * an id.  An id run of a task of queries looks each id up in every query;
 * with shard_of, only in the one that holds it.
 *
 * shard_of is an SQL expression over the placeholder column id that gives
 * the 1-based number of that query (1 for queries[1]), e.g. (id % 16) + 1
 * when queries[1] reads the table of the ids with id % 16 = 0.  It is
 * checked when the task is written (ecp_internal._check_shard_of, as the caller)
 * and again by the worker before it runs it (as the owner: stored rows
 * are not trusted), and evaluated for a whole batch of ids at once:
 *
 *   SELECT (<shard_of>\n)::pg_catalog.int8
 *     FROM pg_catalog.unnest('{...}'::<id type>[]) WITH ORDINALITY
 *          AS "ecp:ids"(id, "ecp:n")
 *    ORDER BY "ecp:n"
 *
 * The check: the text parses alone as the one target of a bare SELECT, so
 * inside the parentheses above it is that one expression and cannot reach
 * past them; no subquery, aggregate, window or set-returning function,
 * nothing volatile (the number of an id's query must not change from one
 * call to the next); its type is an integer; and it starts as the caller
 * (LIMIT 0), so a function it may not execute is named at once.  id is of
 * the id column's type when the ids are compared in it (an integer or a
 * uuid), else text, as the id source compares them (source_ids.c).
 */
#include "ecp.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"

PG_FUNCTION_INFO_V1(ecp_check_shard_of);

#define SHARD_OF_HINT \
	"shard_of is an expression over id (the id column's value) that gives the number of the query of queries that holds it, 1 for queries[1], e.g. \"(id % 16) + 1\"."

/* Whether ids are compared in the id column's own type (else as text). */
bool
ecp_id_compared_in_own_type(Oid type)
{
	return type == INT2OID || type == INT4OID || type == INT8OID || type == UUIDOID;
}

/* The type of id in shard_of, for an id column of column_type. */
Oid
ecp_shard_of_id_type(Oid column_type)
{
	return ecp_id_compared_in_own_type(column_type) ? column_type : TEXTOID;
}

/* The ids of id_array as rows of the column id, numbered from 1. */
#define FROM_IDS " FROM pg_catalog.unnest(%s) WITH ORDINALITY AS \"ecp:ids\"(id, \"ecp:n\")"

/* The statement that evaluates shard_of for each id of id_array, in order. */
char *
ecp_shard_of_sql(const char *expression, const char *id_array)
{
	return psprintf("SELECT (%s\n)" ECP_AS_INT8 FROM_IDS " ORDER BY \"ecp:n\"",
					expression, id_array);
}

static void
refuse(const char *expression, int sqlstate, const char *why)
{
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("option \"shard_of\" \"%s\" %s", expression, why),
			 errhint("%s", SHARD_OF_HINT)));
}

static bool
contains_sublink(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubLink))
		return true;
	return raw_expression_tree_walker(node, contains_sublink, context);
}

/*
 * The parser's and analysis' own errors (a syntax error, a column other
 * than id, a function that does not exist) keep their SQLSTATE and say
 * which option they are about.
 */
static void
rethrow_about(const char *expression, MemoryContext context)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(context);
	edata = CopyErrorData();
	FlushErrorState();
	ereport(ERROR,
			(errcode(edata->sqlerrcode),
			 errmsg("option \"shard_of\" \"%s\": %s", expression, edata->message),
			 errhint("%s", SHARD_OF_HINT)));
}

static List *
parsed(const char *expression, const char *sql)
{
	MemoryContext context = CurrentMemoryContext;
	List	   *statements = NIL;

	PG_TRY();
	{
		statements = pg_parse_query(sql);
	}
	PG_CATCH();
	{
		rethrow_about(expression, context);
	}
	PG_END_TRY();
	return statements;
}

/* The text is one expression: the only target of a bare SELECT. */
static void
check_one_expression(const char *expression)
{
	List	   *statements = parsed(expression, psprintf("SELECT (%s\n)", expression));
	SelectStmt *select;
	ResTarget  *target;

	if (list_length(statements) != 1 || !IsA(linitial_node(RawStmt, statements)->stmt, SelectStmt))
		refuse(expression, ERRCODE_SYNTAX_ERROR, "is not one expression");
	select = (SelectStmt *) linitial_node(RawStmt, statements)->stmt;
	if (select->op != SETOP_NONE || list_length(select->targetList) != 1 ||
		select->fromClause || select->whereClause || select->groupClause || select->havingClause ||
		select->windowClause || select->withClause || select->distinctClause ||
		select->sortClause || select->limitCount || select->limitOffset ||
		select->lockingClause || select->intoClause || select->valuesLists)
		refuse(expression, ERRCODE_SYNTAX_ERROR, "is not one expression");
	target = linitial_node(ResTarget, select->targetList);
	if (target->name != NULL || target->indirection != NIL)
		refuse(expression, ERRCODE_SYNTAX_ERROR, "is not one expression");
	if (contains_sublink(target->val, NULL))
		refuse(expression, ERRCODE_FEATURE_NOT_SUPPORTED, "holds a subquery");
}

static Query *
analyzed(const char *expression, const char *probe)
{
	MemoryContext context = CurrentMemoryContext;
	Query	   *query = NULL;

	PG_TRY();
	{
		query = parse_analyze_fixedparams(linitial_node(RawStmt, pg_parse_query(probe)), probe,
										  NULL, 0, NULL);
	}
	PG_CATCH();
	{
		rethrow_about(expression, context);
	}
	PG_END_TRY();
	return query;
}

/* Parse analysis with id of its type: the expression's kind and type. */
static void
check_analyzed(const char *expression, const char *probe)
{
	Query	   *query = analyzed(expression, probe);
	TargetEntry *target = linitial_node(TargetEntry, query->targetList);
	Oid			type = exprType((Node *) target->expr);

	if (query->hasSubLinks)
		refuse(expression, ERRCODE_FEATURE_NOT_SUPPORTED, "holds a subquery");
	if (query->hasAggs || query->hasWindowFuncs || query->hasTargetSRFs)
		refuse(expression, ERRCODE_FEATURE_NOT_SUPPORTED,
			   "calls an aggregate, window or set-returning function");
	if (contain_volatile_functions((Node *) target->expr))
		refuse(expression, ERRCODE_FEATURE_NOT_SUPPORTED,
			   "calls a volatile function: an id's query must be the same at every call");
	if (type != INT2OID && type != INT4OID && type != INT8OID)
		refuse(expression, ERRCODE_DATATYPE_MISMATCH,
			   psprintf("is of type %s, not an integer", format_type_be(type)));
}

/*
 * Fail unless expression is a shard_of for ids of an id column of
 * column_type: checked as above, then started (LIMIT 0) as the current
 * user under the current search_path.
 */
void
ecp_check_shard_of_expression(const char *expression, Oid column_type)
{
	char	   *no_ids = psprintf("'{}'::%s[]",
								  format_type_be_qualified(ecp_shard_of_id_type(column_type)));

	if (strspn(expression, " \t\r\n") == strlen(expression))
		refuse(expression, ERRCODE_INVALID_PARAMETER_VALUE, "is empty");
	check_one_expression(expression);
	check_analyzed(expression, psprintf("SELECT (%s\n)" FROM_IDS, expression, no_ids));
	SPI_connect();
	if (SPI_execute(psprintf("%s LIMIT 0", ecp_shard_of_sql(expression, no_ids)), true, 0) != SPI_OK_SELECT)
		refuse(expression, ERRCODE_INVALID_PARAMETER_VALUE, "does not give a value");
	SPI_finish();
}

/*
 * ecp_internal._check_shard_of(expression text, id_type regtype, search_path text)
 * RETURNS void: the check of task option shard_of at create_task, with
 * the type of the id column of queries[1] and the task's search_path.
 */
Datum
ecp_check_shard_of(PG_FUNCTION_ARGS)
{
	int			nest_level;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_VOID();
	nest_level = ecp_enter_search_path(PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)));
	ecp_check_shard_of_expression(text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_OID(1));
	AtEOXact_GUC(true, nest_level);
	PG_RETURN_VOID();
}
