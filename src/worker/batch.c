/*
 * batch.c: documents to NDJSON, the body of a _bulk request.
 *
 * One action line and (except for delete) one source line per document,
 * each ending in '\n', the last one too.  The target index is in the URL
 * (/{index}/_bulk), so action lines carry the _id, and the routing and
 * external version when the task names columns for them.  Versions are
 * external_gte: a document written again with the same version (a batch
 * sent twice after a crash) is accepted, an older one is refused with 409
 * and counted as stale (sink_es.c).  The source line is the document as
 * the page reader wrote it (doc_writer.c), a transform's jsonb as
 * PostgreSQL prints it, or a file's line: none holds a raw newline.
 */
#include "sync.h"

#include "utils/json.h"

/*
 * index: NULL for the index in the URL, else the action names it (a
 * request to /_bulk that writes each document to an alias and to a
 * migration's new index).
 */
void
ecp_batch_append_ndjson(StringInfo body, const EcpPartConfig *config, const EcpDoc *doc,
						const char *index)
{
	const char *op = doc->is_delete ? "delete" : config->op;
	bool		is_update = strcmp(op, "update") == 0;
	const char *comma = "";		/* before the action's next field */

	appendStringInfo(body, "{\"%s\":{", op);
	if (index)
	{
		appendStringInfoString(body, "\"_index\":");
		escape_json(body, index);
		comma = ",";
	}
	/* no _id (id_column '', op create): Elasticsearch makes one up */
	if (doc->id)
	{
		appendStringInfoString(body, comma);
		appendStringInfoString(body, "\"_id\":");
		escape_json(body, doc->id);
		comma = ",";
	}
	/* through an alias_swap task's alias: never auto-create an index of its name */
	if (config->writes_alias && (index == NULL || strcmp(index, config->alias) == 0))
	{
		appendStringInfoString(body, comma);
		appendStringInfoString(body, "\"require_alias\":true");
		comma = ",";
	}
	if (doc->routing)
	{
		appendStringInfoString(body, comma);
		appendStringInfoString(body, "\"routing\":");
		escape_json(body, doc->routing);
		comma = ",";
	}
	if (doc->version && !doc->is_delete)
		appendStringInfo(body, "%s\"version\":%s,\"version_type\":\"external_gte\"", comma, doc->version);
	appendStringInfoString(body, "}}\n");

	if (strcmp(op, "delete") == 0)
		return;
	if (is_update)
		appendStringInfoString(body, "{\"doc\":");
	if (doc->json_len > 0)
		appendBinaryStringInfo(body, doc->json, doc->json_len);
	else
		appendStringInfoString(body, doc->json);
	if (is_update)
		appendStringInfoString(body, ",\"doc_as_upsert\":true}");
	appendStringInfoChar(body, '\n');
}
