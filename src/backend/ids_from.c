/*
 * ids_from.c: ecp_internal._copy_ids_from, the ids of an id run read from
 * a relation or a query (ecp.start(task, ids_from => ...)) into
 * ecp.run_id, where the worker reads them a batch at a time as it reads
 * the ids of an array.
 *
 * The copy runs in the session that starts the run, inside its
 * transaction (the run and its ids commit together, or neither does), and
 * reads as the run's owner, never as the caller: a superuser who starts a
 * role's run reads nothing the role could not.  Each fetch runs as the
 * owner inside a security-restricted operation with a GUC nest level of
 * its own and the task's search_path (the recipe of the worker's
 * sandbox.c), so the owner's functions and types cannot SET ROLE back to
 * the caller nor leave a setting behind; each batch is written to
 * ecp.run_id between fetches as ecp (the calling trigger is SECURITY
 * DEFINER), with the pinned search_path.
 *
 * The text is a relation when it does not begin with SELECT, WITH, VALUES
 * or TABLE: "schema.table" (resolved with the task's search_path) reads
 * SELECT * FROM it.  Exactly one column, of any type: its text form is
 * the id (as ids => ARRAY[...] of that type would give).  DISTINCT: each
 * id once, sorted and compared as text in the executor within work_mem
 * (spilling to disk beyond it), so memory stays bounded by a fetch of
 * IDS_PER_FETCH ids whatever the size.  A NULL, an empty id or one over
 * 512 bytes refuses the start.
 */
#include "ecp.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"

PG_FUNCTION_INFO_V1(ecp_copy_ids_from);

/* Ids fetched, checked and written to ecp.run_id at a time. */
#define IDS_PER_FETCH 10000

/* An Elasticsearch _id is 1 to 512 bytes (as _check_ids says of arrays). */
#define MAX_ID_BYTES 512

/* Bytes of an id or of the source text quoted in a message. */
#define QUOTED_BYTES 100

/* The caller's identity while the owner's code runs. */
typedef struct OwnerScope
{
	Oid			saved_user;
	int			saved_context;
	int			nest_level;
} OwnerScope;

/* What the error context names. */
typedef struct CopyContext
{
	const char *source;
	const char *owner_name;
} CopyContext;

static void
enter_owner(OwnerScope *scope, Oid owner, const char *search_path)
{
	GetUserIdAndSecContext(&scope->saved_user, &scope->saved_context);
	SetUserIdAndSecContext(owner, scope->saved_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	scope->nest_level = NewGUCNestLevel();
	if (search_path)
		(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
}

/* Back to the caller; every setting the owner's code changed is undone. */
static void
leave_owner(OwnerScope *scope)
{
	AtEOXact_GUC(false, scope->nest_level);
	SetUserIdAndSecContext(scope->saved_user, scope->saved_context);
}

static char *
quoted_cut(const char *text)
{
	int			len = strlen(text);

	if (len <= QUOTED_BYTES)
		return quote_literal_cstr(text);
	return psprintf("%s...", quote_literal_cstr(pnstrdup(text, pg_mbcliplen(text, len, QUOTED_BYTES))));
}

static void
copy_error_context(void *arg)
{
	CopyContext *context = (CopyContext *) arg;

	errcontext("reading ids_from => %s as role \"%s\"", quoted_cut(context->source), context->owner_name);
}

/* A query begins with one of these words (after blanks and parentheses). */
static bool
is_query_text(const char *text)
{
	static const char *const words[] = {"select", "with", "values", "table", NULL};

	while (*text && (isspace((unsigned char) *text) || *text == '('))
		text++;
	for (int i = 0; words[i]; i++)
	{
		int			len = strlen(words[i]);

		if (pg_strncasecmp(text, words[i], len) == 0 &&
			!(isalnum((unsigned char) text[len]) || text[len] == '_' || text[len] == '$'))
			return true;
	}
	return false;
}

/*
 * The relation form: its name resolved as the owner (schema USAGE is the
 * owner's), refused with the owner named when the owner may not read it;
 * the query is SELECT * FROM it.
 */
static char *
relation_query(const char *source, Oid owner, const char *owner_name)
{
	List	   *names = stringToQualifiedNameList(source);
	RangeVar   *relation = makeRangeVarFromNameList(names);
	Oid			relid = RangeVarGetRelid(relation, AccessShareLock, false);
	char	   *name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
												  get_rel_name(relid));

	if (pg_class_aclcheck(relid, owner, ACL_SELECT) != ACLCHECK_OK &&
		pg_attribute_aclcheck_all(relid, owner, ACL_SELECT, ACLMASK_ANY) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not read %s, which ids_from names", owner_name, name),
				 errdetail("ids_from is read with the privileges of the task's owner, \"%s\".", owner_name),
				 errhint("GRANT SELECT ON %s TO %s, or read ids from a table \"%s\" may read.",
						 name, quote_identifier(owner_name), owner_name)));
	return psprintf("SELECT * FROM %s", name);
}

/* One column, else which columns there are and how to name one. */
static void
require_one_column(const char *statement, const char *source)
{
	TupleDesc	desc;
	StringInfoData columns;

	if (SPI_execute(psprintf("SELECT * FROM (%s\n) AS ecp_ids LIMIT 0", statement), true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ecp: ids_from did not return rows");
	desc = SPI_tuptable->tupdesc;
	if (desc->natts == 1)
		return;
	initStringInfo(&columns);
	for (int i = 0; i < desc->natts; i++)
		appendStringInfo(&columns, "%s%s", i ? ", " : "", quote_identifier(NameStr(TupleDescAttr(desc, i)->attname)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("ids_from => %s returns %d columns (%s), not one", quoted_cut(source), desc->natts,
					desc->natts ? columns.data : "none"),
			 errhint("Name the id column: ids_from => 'SELECT %s FROM ...'.",
					 desc->natts ? quote_identifier(NameStr(TupleDescAttr(desc, 0)->attname)) : "id")));
}

/* The fetched ids as a text[] (in the current context), each checked. */
static Datum
checked_ids(const char *source, int64 copied)
{
	TupleDesc	desc = SPI_tuptable->tupdesc;
	Datum	   *ids = palloc(sizeof(Datum) * Max(SPI_processed, 1));

	if (desc->natts != 1 || SPI_gettypeid(desc, 1) != TEXTOID)
		elog(ERROR, "ecp: ids_from's cursor does not return text");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[i], desc, 1, &isnull);
		int			bytes;

		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("ids_from => %s returns a NULL id", quoted_cut(source)),
					 errhint("Leave NULLs out: ... WHERE id IS NOT NULL.")));
		ids[i] = PointerGetDatum(PG_DETOAST_DATUM_COPY(id));
		bytes = VARSIZE_ANY_EXHDR(DatumGetPointer(ids[i]));
		if (bytes < 1 || bytes > MAX_ID_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ids_from => %s returns an id of %d bytes: %s", quoted_cut(source), bytes,
							quoted_cut(TextDatumGetCString(ids[i]))),
					 errhint("An Elasticsearch _id is 1 to 512 bytes.")));
	}
	if (copied + (int64) SPI_processed > PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("ids_from => %s returns more than %d ids", quoted_cut(source), PG_INT32_MAX),
				 errhint("Split the ids into several runs (ids_from => 'SELECT id FROM ... WHERE ...').")));
	return PointerGetDatum(construct_array(ids, (int) SPI_processed, TEXTOID, -1, false, TYPALIGN_INT));
}

static void
store_ids(int64 run, int64 copied, Datum ids)
{
	Oid			types[3] = {INT8OID, INT8OID, TEXTARRAYOID};
	Datum		values[3] = {Int64GetDatum(run), Int64GetDatum(copied), ids};

	if (SPI_execute_with_args("INSERT INTO ecp.run_id (run_id, n, id) "
							  "SELECT $1, $2 OPERATOR(pg_catalog.+) u.n, u.id "
							  "  FROM pg_catalog.unnest($3) WITH ORDINALITY AS u(id, n)",
							  3, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "ecp: storing the ids of run " INT64_FORMAT " failed", run);
}

/*
 * ecp_internal._copy_ids_from(run bigint, owner regrole, source text,
 * search_path text) RETURNS bigint: the ids copied.  Called by the trigger
 * copy_ids of ecp.run (SECURITY DEFINER); EXECUTE is not granted.
 */
Datum
ecp_copy_ids_from(PG_FUNCTION_ARGS)
{
	int64		run = PG_GETARG_INT64(0);
	Oid			owner = PG_GETARG_OID(1);
	char	   *source = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *search_path = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	CopyContext context = {source, GetUserNameFromId(owner, false)};
	ErrorContextCallback callback = {error_context_stack, copy_error_context, &context};
	MemoryContext batch_context = AllocSetContextCreate(CurrentMemoryContext, "ecp ids_from batch",
														ALLOCSET_DEFAULT_SIZES);
	OwnerScope	scope;
	SPIPlanPtr	plan;
	Portal		portal;
	char	   *statement;
	int64		copied = 0;

	error_context_stack = &callback;
	SPI_connect();
	enter_owner(&scope, owner, search_path);
	statement = is_query_text(source) ? ecp_checked_statement_text(source)
		: relation_query(source, owner, context.owner_name);
	require_one_column(statement, source);
	plan = SPI_prepare(psprintf("SELECT DISTINCT ecp_ids.ecp_id::pg_catalog.text "
								"  FROM (%s\n) AS ecp_ids(ecp_id)", statement), 0, NULL);
	if (plan == NULL)
		elog(ERROR, "ecp: preparing ids_from failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	leave_owner(&scope);
	for (;;)
	{
		MemoryContext back_to;
		Datum		ids;
		uint64		fetched;

		enter_owner(&scope, owner, search_path);
		SPI_cursor_fetch(portal, true, IDS_PER_FETCH);
		back_to = MemoryContextSwitchTo(batch_context);
		ids = checked_ids(source, copied);
		MemoryContextSwitchTo(back_to);
		fetched = SPI_processed;
		SPI_freetuptable(SPI_tuptable);
		leave_owner(&scope);
		if (fetched == 0)
			break;
		store_ids(run, copied, ids);
		copied += fetched;
		MemoryContextReset(batch_context);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_finish();
	MemoryContextDelete(batch_context);
	error_context_stack = callback.previous;
	PG_RETURN_INT64(copied);
}
