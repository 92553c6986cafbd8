/*
 * query_check.c: ecp_internal._check_query(query), the gate every source query
 * passes before it is stored or previewed.
 *
 * PostgreSQL's own parser decides what the text is: exactly one statement,
 * a plain SELECT (no INTO, no locking clause, no data-modifying WITH).
 * Then the query is planned and started with LIMIT 0 as the caller, so the
 * executor checks every table and column privilege (also inside views,
 * subqueries and CTEs) without reading a row.
 */
#include "ecp.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/parsenodes.h"
#include "parser/analyze.h"
#include "tcop/tcopprot.h"
#include "tcop/cmdtag.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"

PG_FUNCTION_INFO_V1(ecp_check_query);
PG_FUNCTION_INFO_V1(ecp_statement_text_sql);
PG_FUNCTION_INFO_V1(ecp_check_query_with_path);

static void
refuse(const char *why, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("source query is not a plain SELECT: %s", why),
			 errhint("%s", hint)));
}

/*
 * The text of the one statement in query, without a trailing ';' or
 * comments after it, ready to be wrapped as a subquery.
 */
char *
ecp_statement_text(const char *query)
{
	List	   *statements = pg_parse_query(query);
	RawStmt    *raw;
	int			len;

	if (list_length(statements) != 1)
		return pstrdup(query);
	raw = linitial_node(RawStmt, statements);
	len = raw->stmt_len > 0 ? raw->stmt_len : (int) strlen(query) - raw->stmt_location;
	return pnstrdup(query + raw->stmt_location, len);
}

static SelectStmt *
single_select(const char *query)
{
	List	   *statements = pg_parse_query(query);
	RawStmt    *raw;

	if (list_length(statements) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("source query must be exactly one SELECT statement, found %d statements",
						list_length(statements)),
				 errhint("Remove the extra statements and any ';' between them.")));
	raw = linitial_node(RawStmt, statements);
	if (!IsA(raw->stmt, SelectStmt))
		refuse(psprintf("it is a %s statement", GetCommandTagName(CreateCommandTag(raw->stmt))),
			   "Only SELECT queries can be a source; ecp never writes to your tables.");
	if (((SelectStmt *) raw->stmt)->intoClause)
		refuse("SELECT INTO creates a table", "Remove the INTO clause.");
	return (SelectStmt *) raw->stmt;
}

static void
check_analyzed(const char *query)
{
	List	   *statements = pg_parse_query(query);
	Query	   *analyzed = parse_analyze_fixedparams(linitial_node(RawStmt, statements),
													 query, NULL, 0, NULL);

	if (analyzed->commandType != CMD_SELECT || analyzed->utilityStmt != NULL)
		refuse("it does not return rows", "Use a SELECT ... FROM ... query.");
	if (analyzed->hasModifyingCTE)
		refuse("it contains a data-modifying WITH (INSERT/UPDATE/DELETE in a CTE)",
			   "Remove the data-modifying CTE; a source only reads.");
	if (analyzed->rowMarks != NIL)
		refuse("it has a locking clause (FOR UPDATE/SHARE)",
			   "Remove the locking clause: ecp reads in short transactions and must not lock rows.");
}

/*
 * Start the query with LIMIT 0 as the caller: privilege errors surface
 * here, and the result descriptor gives the column names.
 */
static ArrayType *
output_columns(const char *query)
{
	StringInfoData sql;
	TupleDesc	desc;
	Datum	   *names;
	int			ncolumns;

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT * FROM (%s\n) AS " ECP_ROW_ALIAS " LIMIT 0",
					 ecp_statement_text(query));

	SPI_connect();
	if (SPI_execute(sql.data, true, 0) != SPI_OK_SELECT)
		refuse("it does not return rows", "Use a SELECT ... FROM ... query.");
	desc = SPI_tuptable->tupdesc;
	ncolumns = desc->natts;
	names = palloc(sizeof(Datum) * Max(ncolumns, 1));
	for (int i = 0; i < ncolumns; i++)
	{
		const char *name = NameStr(TupleDescAttr(desc, i)->attname);

		for (int j = 0; j < i; j++)
			if (strcmp(name, NameStr(TupleDescAttr(desc, j)->attname)) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("source query returns column \"%s\" twice", name),
						 errdetail("A document can hold each field once; one value would be lost."),
						 errhint("Give each output column a distinct alias.")));
		names[i] = CStringGetTextDatum(name);
	}
	SPI_finish();
	if (ncolumns == 0)
		refuse("it returns no columns", "Select at least an id column.");
	return construct_array(names, ncolumns, TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * The worker's gate: the stored query gets the same checks as at
 * create_task (one plain SELECT), so a row written some other way never
 * reaches SPI as several statements or as anything but a SELECT.
 */
char *
ecp_checked_statement_text(const char *query)
{
	(void) single_select(query);
	check_analyzed(query);
	return ecp_statement_text(query);
}

/* ecp_internal._check_query(query text) RETURNS text[] (output column names) */
Datum
ecp_check_query(PG_FUNCTION_ARGS)
{
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));

	(void) single_select(query);
	check_analyzed(query);
	PG_RETURN_ARRAYTYPE_P(output_columns(query));
}

/* ecp_internal._statement_text(query text) RETURNS text, after the same checks */
Datum
ecp_statement_text_sql(PG_FUNCTION_ARGS)
{
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));

	(void) single_select(query);
	check_analyzed(query);
	(void) output_columns(query);
	PG_RETURN_TEXT_P(cstring_to_text(ecp_statement_text(query)));
}

/*
 * The checks of _check_query, with an error's position shown in the
 * query itself: the statement the caller ran (an INSERT into ecp.task by
 * a trigger, create_task) holds the query only as a value.
 */
static ArrayType *
checked_columns(const char *query)
{
	MemoryContext context = CurrentMemoryContext;
	ErrorContextCallback *outer_context = error_context_stack;
	ArrayType  *columns = NULL;

	/* no caller's callback may move the position into its own statement */
	error_context_stack = NULL;
	PG_TRY();
	{
		(void) single_select(query);
		check_analyzed(query);
		columns = output_columns(query);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		error_context_stack = outer_context;
		MemoryContextSwitchTo(context);
		edata = CopyErrorData();
		if (edata->cursorpos > 0 && edata->internalquery == NULL)
		{
			FlushErrorState();
			edata->internalpos = edata->cursorpos;
			edata->internalquery = pstrdup(query);
			edata->cursorpos = 0;
			ReThrowError(edata);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
	error_context_stack = outer_context;
	return columns;
}

/*
 * Read a query under search_path (NULL: the session's) in a GUC nest level
 * of its own; the caller ends it with AtEOXact_GUC(true, level), which
 * puts the session's search_path back (an error does it by aborting).
 */
int
ecp_enter_search_path(const char *search_path)
{
	int			level = NewGUCNestLevel();

	if (search_path)
		(void) set_config_option("search_path", search_path,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return level;
}

/*
 * ecp_internal._check_query(query text, search_path text) RETURNS text[]: the same
 * checks with the search_path the query will be read with (the task's),
 * so the validating trigger can pin its own search_path.  The setting
 * lives in a GUC nest level of its own and is gone when this returns.
 */
Datum
ecp_check_query_with_path(PG_FUNCTION_ARGS)
{
	char	   *query;
	ArrayType  *columns;
	int			nest_level;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a task needs a source query"),
				 errhint("Pass query => 'SELECT id, ... FROM ...'.")));
	query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	nest_level = ecp_enter_search_path(PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	columns = checked_columns(query);
	AtEOXact_GUC(true, nest_level);
	PG_RETURN_ARRAYTYPE_P(columns);
}
