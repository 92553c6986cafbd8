/*
 * transform.c: task option transform, a SQL function (jsonb) RETURNS
 * jsonb applied to each document of a page before it is sent.
 *
 * It runs as the task's owner, in the sandbox like the owner's query
 * (sandbox.c), after the page was read: NULL drops the document (counted
 * as skipped), an error is that document's dead letter with the
 * function's message.  Each call is a subtransaction, so one bad document
 * neither stops the page nor leaves anything of its call behind; errors
 * that are not the document's (a stop request, a shutdown, memory or
 * disk exhausted) still end the page as they would any query.  The
 * function is called through fmgr, not a statement, so the EXECUTE
 * privilege is checked here, as the executor would.
 */
#include "sync.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

/*
 * The function the task was bound to when it was written: resolved then
 * under search_path pg_catalog, pg_temp (ecp_internal._bind_transform), never under
 * the task's, and stored as an OID.  Its signature is checked here again
 * from pg_proc, because a jsonb Datum is about to be passed to it: one
 * argument of type jsonb, a plain function returning one jsonb.
 */
static Oid
transform_function(const EcpPartConfig *config)
{
	Oid			fn = config->transform_fn;
	HeapTuple	tuple = OidIsValid(fn) ? SearchSysCache1(PROCOID, ObjectIdGetDatum(fn)) : NULL;
	Form_pg_proc proc;
	bool		fits;

	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("transform function %s(jsonb) of task \"%s\" no longer exists", config->transform,
						config->task_name),
				 errhint("A task is bound to its transform when it is written. Create the function, then bind it again: UPDATE ecp.task SET options = options WHERE name = '%s'.",
						 config->task_name)));
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	fits = proc->prokind == PROKIND_FUNCTION && !proc->proretset && proc->prorettype == JSONBOID &&
		proc->pronargs == 1 && proc->proargtypes.values[0] == JSONBOID;
	ReleaseSysCache(tuple);
	if (!fits)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("transform function %s of task \"%s\" is not a function (pg_catalog.jsonb) RETURNS pg_catalog.jsonb",
						format_procedure_qualified(fn), config->task_name),
				 errhint("A transform takes a document and returns it reshaped, or NULL to skip it.")));
	if (pg_proc_aclcheck(fn, config->owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not execute transform function %s", config->owner_name,
						format_procedure_qualified(fn)),
				 errhint("GRANT EXECUTE ON FUNCTION %s TO %s.", format_procedure_qualified(fn), config->owner_name)));
	return fn;
}

/*
 * Errors that say nothing about the document: a stop request or a
 * statement timeout (57), exhausted resources (53), internal errors (XX).
 * They end the page; everything else is the document's.
 */
static bool
is_documents_error(int sqlerrcode)
{
	int			class = ERRCODE_TO_CATEGORY(sqlerrcode);

	return class != ERRCODE_TO_CATEGORY(ERRCODE_QUERY_CANCELED) &&
		class != ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES) &&
		class != ERRCODE_TO_CATEGORY(ERRCODE_INTERNAL_ERROR);
}

/* Call the function on one document: its new text, skipped, or refused. */
static void
transform_document(const EcpPartConfig *config, FmgrInfo *flinfo, EcpDoc *doc,
				   MemoryContext page_context)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		LOCAL_FCINFO(fcinfo, 1);
		Datum		result;

		InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = DirectFunctionCall1(jsonb_in, CStringGetDatum(doc->json));
		fcinfo->args[0].isnull = false;
		result = FunctionCallInvoke(fcinfo);
		if (fcinfo->isnull)
			doc->skipped = true;
		else
		{
			Jsonb	   *jb = DatumGetJsonbP(result);
			char	   *text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));

			doc->json = MemoryContextStrdup(page_context, text);
			doc->json_len = (int) strlen(doc->json);
		}
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
		if (!is_documents_error(edata->sqlerrcode))
			ReThrowError(edata);
		doc->refused = MemoryContextStrdup(page_context,
										   psprintf("transform %s failed: %s", config->transform,
													edata->message));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/*
 * Transform the page's documents in place (in the page's memory), in one
 * transaction as the owner.  Deletes and bare ids have no document.
 */
void
ecp_transform_page(EcpPartConfig *config, EcpBatch *page)
{
	MemoryContext back_to;
	FmgrInfo	flinfo;

	if (config->transform == NULL || page->ndocs == 0)
		return;
	back_to = ecp_begin_as_owner(config);
	fmgr_info(transform_function(config), &flinfo);
	for (int i = 0; i < page->ndocs; i++)
	{
		EcpDoc	   *doc = &page->docs[i];

		if (doc->is_delete || doc->json == NULL || doc->skipped || doc->refused)
			continue;
		CHECK_FOR_INTERRUPTS();
		transform_document(config, &flinfo, doc, page->context);
	}
	ecp_commit_as_owner(back_to);
}
