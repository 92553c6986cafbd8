/*
 * source_columns.c: what ecp can tell about a source query's output
 * columns before it runs.
 *
 * Pages continue after the last key sent, so the key column must be
 * unique, and documents overwrite each other when ids repeat.  When the
 * query reads one table and an output column is a plain column of it,
 * the table's indexes tell: a single-column unique index (or primary key)
 * makes it unique; none makes it "not known to be unique".  Anything else
 * (a join, a view, a subquery, a foreign table, grouping, set operations,
 * set-returning functions) cannot be told from the catalog, and the run's
 * own check decides (source_query.c).
 */
#include "ecp.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "parser/analyze.h"
#include "parser/parsetree.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"

PG_FUNCTION_INFO_V1(ecp_column_facts);

/*
 * The range-table index of the one table the query reads, or 0 when its
 * rows are not simply rows of one table.
 */
static Index
single_table(Query *query)
{
	RangeTblRef *ref;
	RangeTblEntry *rte;

	if (query->setOperations || query->hasAggs || query->groupClause ||
		query->groupingSets || query->hasTargetSRFs ||
		query->jointree == NULL || list_length(query->jointree->fromlist) != 1 ||
		!IsA(linitial(query->jointree->fromlist), RangeTblRef))
		return 0;
	ref = linitial_node(RangeTblRef, query->jointree->fromlist);
	rte = rt_fetch(ref->rtindex, query->rtable);
	if (rte->rtekind != RTE_RELATION ||
		(rte->relkind != RELKIND_RELATION && rte->relkind != RELKIND_PARTITIONED_TABLE))
		return 0;
	return ref->rtindex;
}

/* Whether attno has a valid single-column, non-partial unique index. */
static bool
has_unique_index(Relation table, AttrNumber attno, bool *primary)
{
	List	   *indexes = RelationGetIndexList(table);
	ListCell   *lc;
	bool		unique = false;

	*primary = false;
	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index form = index->rd_index;

		if (form->indisunique && form->indisvalid && form->indnkeyatts == 1 &&
			form->indkey.values[0] == attno &&
			heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL))
		{
			unique = true;
			*primary = *primary || form->indisprimary;
		}
		index_close(index, AccessShareLock);
	}
	list_free(indexes);
	return unique;
}

static void
append_name(StringInfo json, bool *first, const char *name)
{
	if (!*first)
		appendStringInfoString(json, ", ");
	escape_json(json, name);
	*first = false;
}

/*
 * {"table": ..., "primary_key": ..., "unique": [...], "not_unique": [...]}
 * for a query of one table; {} otherwise.
 */
static char *
facts_of(Query *query)
{
	Index		rti = single_table(query);
	RangeTblEntry *rte;
	Relation	table;
	StringInfoData unique, not_unique;
	const char *primary_key = NULL;
	bool		first_unique = true, first_not_unique = true;
	StringInfoData json;
	ListCell   *lc;

	if (rti == 0)
		return "{}";
	rte = rt_fetch(rti, query->rtable);
	table = table_open(rte->relid, AccessShareLock);
	initStringInfo(&unique);
	initStringInfo(&not_unique);
	foreach(lc, query->targetList)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);
		Var		   *var = (Var *) tle->expr;
		bool		primary;

		if (tle->resjunk || tle->resname == NULL || !IsA(var, Var) ||
			var->varno != (int) rti || var->varlevelsup != 0 || var->varattno <= 0)
			continue;
		if (has_unique_index(table, var->varattno, &primary))
		{
			append_name(&unique, &first_unique, tle->resname);
			if (primary && primary_key == NULL)
				primary_key = tle->resname;
		}
		else
			append_name(&not_unique, &first_not_unique, tle->resname);
	}
	initStringInfo(&json);
	appendStringInfoString(&json, "{\"table\": ");
	escape_json(&json, quote_qualified_identifier(get_namespace_name(RelationGetNamespace(table)),
												  RelationGetRelationName(table)));
	appendStringInfoString(&json, ", \"primary_key\": ");
	if (primary_key)
		escape_json(&json, primary_key);
	else
		appendStringInfoString(&json, "null");
	appendStringInfo(&json, ", \"unique\": [%s], \"not_unique\": [%s]}", unique.data, not_unique.data);
	table_close(table, AccessShareLock);
	return json.data;
}

/*
 * ecp_internal._column_facts(query text, search_path text) RETURNS jsonb: what the
 * catalog says about the uniqueness of the query's output columns, read
 * under the task's search_path.  The query has passed ecp_internal._check_query.
 */
Datum
ecp_column_facts(PG_FUNCTION_ARGS)
{
	char	   *query_text;
	List	   *statements;
	Query	   *query;
	char	   *facts;
	int			nest_level;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	query_text = text_to_cstring(PG_GETARG_TEXT_PP(0));
	nest_level = ecp_enter_search_path(PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	statements = pg_parse_query(query_text);
	if (list_length(statements) != 1)
		facts = "{}";
	else
	{
		query = parse_analyze_fixedparams(linitial_node(RawStmt, statements), query_text,
										  NULL, 0, NULL);
		facts = query->commandType == CMD_SELECT ? facts_of(query) : "{}";
	}
	AtEOXact_GUC(true, nest_level);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(facts)));
}

PG_FUNCTION_INFO_V1(ecp_column_type);

/*
 * ecp_internal._column_type(query text, search_path text, column text) RETURNS
 * regtype: the type of the query's output column of that name (the first
 * one), read under the task's search_path by parse analysis only; NULL
 * when the query has no such column.  The query has passed
 * ecp_internal._check_query.  Task option since_column is checked with it.
 */
Datum
ecp_column_type(PG_FUNCTION_ARGS)
{
	char	   *query_text;
	char	   *column;
	List	   *statements;
	Oid			type = InvalidOid;
	int			nest_level;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	query_text = text_to_cstring(PG_GETARG_TEXT_PP(0));
	column = text_to_cstring(PG_GETARG_TEXT_PP(2));
	nest_level = ecp_enter_search_path(PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	statements = pg_parse_query(query_text);
	if (list_length(statements) == 1)
	{
		Query	   *query = parse_analyze_fixedparams(linitial_node(RawStmt, statements), query_text,
													  NULL, 0, NULL);
		ListCell   *lc;

		foreach(lc, query->targetList)
		{
			TargetEntry *tle = lfirst_node(TargetEntry, lc);

			if (!tle->resjunk && tle->resname && strcmp(tle->resname, column) == 0)
			{
				type = exprType((Node *) tle->expr);
				break;
			}
		}
	}
	AtEOXact_GUC(true, nest_level);
	if (!OidIsValid(type))
		PG_RETURN_NULL();
	PG_RETURN_OID(type);
}
