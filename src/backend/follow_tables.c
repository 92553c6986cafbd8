/*
 * follow_tables.c: what a follower watches, and what DROP EXTENSION must
 * not leave behind.
 *
 * ecp_internal._query_tables(query, search_path, id_column) lists the tables a
 * task's query reads, views expanded (a change to a table under a view
 * changes the view's rows), read as the caller under the task's
 * search_path, like every other look at a task's query.  For the table
 * the id column comes from, it also names that table's column: a change
 * of that table maps to documents by it without any option.
 *
 * Replication slots are not objects of the extension: DROP EXTENSION ecp
 * would leave every follower's slot behind, retaining WAL for ever.  The
 * utility hook calls ecp_follow_drop_extension_cleanup first, which drops
 * them (and the publications and triggers) through ecp_internal._follow_cleanup_all.
 */
#include "ecp.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteHandler.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

PG_FUNCTION_INFO_V1(ecp_query_tables);

/* The relations found so far, each once. */
typedef struct TableWalk
{
	List	   *relids;
} TableWalk;

static bool walk_query(Query *query, TableWalk *walk);

static bool
walk_node(Node *node, TableWalk *walk)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
		return walk_query((Query *) node, walk);
	return expression_tree_walker(node, walk_node, walk);
}

/*
 * Every relation of the query's range tables, its subqueries', CTEs' and
 * sublinks' (views are subqueries once rewritten).
 */
static bool
walk_query(Query *query, TableWalk *walk)
{
	ListCell   *lc;

	foreach(lc, query->rtable)
	{
		RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

		if (rte->rtekind == RTE_RELATION && rte->relkind != RELKIND_VIEW)
			walk->relids = list_append_unique_oid(walk->relids, rte->relid);
	}
	return query_tree_walker(query, walk_node, walk, 0);
}

/*
 * The table and column the output column named id_column comes from,
 * through subqueries (and views); false when it is not a plain column.
 */
static bool
id_source(Query *query, const char *id_column, Oid *relid, char **column)
{
	ListCell   *lc;
	TargetEntry *found = NULL;

	foreach(lc, query->targetList)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (!tle->resjunk && tle->resname && strcmp(tle->resname, id_column) == 0)
			found = tle;
	}
	while (found && IsA(found->expr, Var))
	{
		Var		   *var = (Var *) found->expr;
		RangeTblEntry *rte;

		if (var->varlevelsup != 0 || var->varattno <= 0)
			return false;
		rte = rt_fetch(var->varno, query->rtable);
		if (rte->rtekind == RTE_RELATION)
		{
			*relid = rte->relid;
			*column = get_attname(rte->relid, var->varattno, false);
			return true;
		}
		if (rte->rtekind != RTE_SUBQUERY || rte->subquery->setOperations)
			return false;
		query = rte->subquery;
		found = get_tle_by_resno(query->targetList, var->varattno);
	}
	return false;
}

/* The query, parsed, analysed and rewritten (views expanded). */
static Query *
rewritten_query(const char *query_text)
{
	List	   *statements = pg_parse_query(query_text);
	List	   *queries;

	if (list_length(statements) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the task's query is not one statement")));
	queries = pg_analyze_and_rewrite_fixedparams(linitial_node(RawStmt, statements), query_text,
												 NULL, 0, NULL);
	if (list_length(queries) != 1 || linitial_node(Query, queries)->commandType != CMD_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the task's query is not one SELECT")));
	return linitial_node(Query, queries);
}

/*
 * ecp_internal._query_tables(query text, search_path text, id_column text,
 *                   OUT relid oid, OUT relkind "char", OUT id_source text)
 */
Datum
ecp_query_tables(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TableWalk	walk = {NIL};
	Query	   *query;
	Oid			id_relid = InvalidOid;
	char	   *id_column_source = NULL;
	int			nest_level;
	ListCell   *lc;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("query and id_column must not be NULL")));
	InitMaterializedSRF(fcinfo, 0);
	nest_level = ecp_enter_search_path(PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	query = rewritten_query(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	(void) walk_query(query, &walk);
	(void) id_source(query, text_to_cstring(PG_GETARG_TEXT_PP(2)), &id_relid, &id_column_source);
	AtEOXact_GUC(true, nest_level);

	foreach(lc, walk.relids)
	{
		Oid			relid = lfirst_oid(lc);
		Datum		values[3];
		bool		nulls[3] = {false, false, relid != id_relid};

		values[0] = ObjectIdGetDatum(relid);
		values[1] = CharGetDatum(get_rel_relkind(relid));
		values[2] = relid == id_relid ? CStringGetTextDatum(id_column_source) : (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Whether a DROP statement drops extension ecp. */
static bool
drops_ecp(const DropStmt *stmt)
{
	ListCell   *lc;

	if (stmt->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, stmt->objects)
		if (strcmp(strVal(lfirst(lc)), "ecp") == 0)
			return true;
	return false;
}

/*
 * Before DROP EXTENSION ecp: every follower's slot, publication and
 * triggers go first (in the same transaction as far as PostgreSQL lets
 * them: dropping a slot cannot be undone, so a DROP that fails after
 * this leaves the followers without capture; ecp.follow again).
 */
void
ecp_follow_drop_extension_cleanup(Node *parsetree)
{
	if (!IsA(parsetree, DropStmt) || !drops_ecp((DropStmt *) parsetree))
		return;
	if (!OidIsValid(get_namespace_oid("ecp", true)))
		return;
	SPI_connect();
	if (SPI_execute("SELECT pg_catalog.to_regprocedure('ecp_internal._follow_cleanup_all()') IS NOT NULL",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		bool		exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
														1, &isnull));

		if (exists && !isnull)
			SPI_execute("SELECT ecp_internal._follow_cleanup_all()", false, 0);
	}
	SPI_finish();
}
