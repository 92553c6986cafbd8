/*
 * source_file.c: the file source.  A task's file (an http(s) URL or a
 * server path, gunzipped while it streams when its name ends in .gz) holds
 * one item a line: an NDJSON document, sent as it is with its _id taken
 * from the field option id_field names, or an id, looked up through the
 * task's query like the id source (source_ids.c).
 *
 * Lines stream through file_reader.c in constant memory: a page is at most
 * batch_size lines and about batch_bytes bytes, read, sent and forgotten.
 * The checkpoint is the byte offset and the number of the line after the
 * last acknowledged page.  A page is read from where the reader stands
 * when that is the checkpoint (the normal case, also for the page read
 * ahead while the previous one is sent); otherwise (after a pause, a
 * crash, or a lost connection) the file is opened again at the
 * checkpoint: with an HTTP Range request, or, when the server ignores
 * Range or the file is gzipped, by reading from the start and dropping
 * bytes up to the offset.  The flow says which.
 *
 * A line that is not a JSON object, has no usable id (or its id field
 * twice) or is over max_line_bytes is a dead letter with its line number;
 * the run goes on.  Lines are checked by es_answers.c's scanner, which
 * builds no tree: other keys given twice are Elasticsearch's to refuse.
 * Empty lines are skipped.  A missing file, 404 or 403 fails the run;
 * a cut connection, timeout or 5xx is retried from the checkpoint like
 * any transient source error.
 *
 * A server path is read by the worker's process: the owner must be a
 * member of pg_read_server_files (checked at create_task and here again,
 * as the rights may have changed since).
 */
#include "sync.h"

#include "access/xact.h"
#include "catalog/pg_authid_d.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "es_answers.h"
#include "file_reader.h"
#include "http_client.h"
#include "json_build.h"

/* A file source's state (in its own memory, source.c). */
typedef struct FileSource
{
	EcpFileReader *reader;		/* open at the position read up to, or NULL */
	EcpIdLookup *lookup;		/* lines of ids: how they are looked up */
	EcpAddressCheck filter;	/* the owner's outbound policy, for curl */
} FileSource;

static int
abort_read(void *arg)
{
	return ecp_worker_should_stop((const EcpPartConfig *) arg);
}

static void
check_server_file_access(EcpPartConfig *config)
{
	MemoryContext back_to;
	bool		allowed;

	if (config->file[0] != '/')
		return;
	back_to = ecp_begin_bookkeeping();
	allowed = has_privs_of_role(config->owner, ROLE_PG_READ_SERVER_FILES);
	ecp_commit_bookkeeping(back_to);
	if (!allowed)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not read server file \"%s\"", config->owner_name, config->file),
				 errhint("Reading files on the server needs membership in pg_read_server_files.")));
}


/* The URL without its query string (a presigned signature), or the path. */
static char *
shown_location(const char *file)
{
	return pnstrdup(file, strcspn(file, "?#"));
}

static void
close_reader(FileSource *fs)
{
	ecp_file_close(fs->reader);
	fs->reader = NULL;
}

/* A reader's failure as an error: transient ones are retried. */
static void
report_failure(FileSource *fs, EcpFileStatus status, const char *error)
{
	close_reader(fs);
	if (status == ECP_FILE_ABORTED)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("reading the file was interrupted by a stop request")));
	if (status == ECP_FILE_TRANSIENT)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("reading the file failed: %s", error)));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_FILE),
			 errmsg("the file cannot be read: %s", error),
			 errhint("Check the task's file (ecp.tasks shows it): it must exist and be readable by the database server.")));
}

/* Open the file at the checkpoint, and say in the flow how it resumed. */
static void
open_at(FileSource *fs, EcpPartConfig *config, const EcpPosition *at)
{
	EcpFileReaderConfig cfg;
	char		error[ECP_FILE_ERROR_SIZE];
	EcpFileStatus status;
	const char *how;
	StringInfoData event;

	close_reader(fs);
	memset(&cfg, 0, sizeof(cfg));
	cfg.location = config->file;
	cfg.max_line_bytes = config->max_line_bytes;
	cfg.transport.connect_timeout_ms = config->connect_timeout_ms;
	cfg.idle_timeout_ms = config->request_timeout_ms;
	cfg.transport.user_agent = "ecp/" ECP_VERSION;
	cfg.transport.should_abort = abort_read;
	cfg.transport.abort_arg = config;
	if (!config->target_unrestricted)
	{
		fs->filter.owner_name = config->owner_name;
		cfg.transport.allow_address = ecp_filter_address;
		cfg.transport.address_arg = &fs->filter;
	}
	status = ecp_file_open(&cfg, (uint64_t) at->position, (uint64_t) at->line_no, &fs->reader,
						   error, sizeof(error));
	if (status != ECP_FILE_OK)
		report_failure(fs, status, error);
	if (at->position == 0)
		return;
	how = ecp_file_resume_kind(fs->reader) == ECP_FILE_RANGED ? "range"
		: "skipped (the server ignored Range, or the file is gzipped: read from the start up to the offset)";
	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "file", shown_location(config->file));
	ecp_json_key_int(&event, "offset", at->position);
	ecp_json_key_int(&event, "line", at->line_no);
	ecp_json_key_string(&event, "how", how);
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_FILE_RESUMED, event.data);
}

static void
add_bad_line(EcpBatch *batch, int capacity, int64 line_no, const char *reason)
{
	if (batch->bad_lines == NULL)
		batch->bad_lines = palloc(sizeof(EcpBadLine) * capacity);
	batch->bad_lines[batch->nbad_lines].line_no = line_no;
	batch->bad_lines[batch->nbad_lines].reason = pstrdup(reason);
	batch->nbad_lines++;
}

/*
 * The _id of an NDJSON document, or NULL with why.  The line is scanned,
 * never parsed into a tree: a line of max_line_bytes (up to 256 MiB) from
 * a hostile server costs its own bytes, not ~75 times as many.
 */
static char *
document_id(const EcpPartConfig *config, const char *line, size_t len, const char **why)
{
	char		id[ECP_LINE_ID_MAX + 1];
	char		detail[256];

	switch (ecp_line_id(line, len, config->id_field, id, detail, sizeof(detail)))
	{
		case ECP_LINE_ID:
			return pstrdup(id);
		case ECP_LINE_NOT_JSON:
			*why = psprintf("not JSON: %s", detail);
			break;
		case ECP_LINE_NOT_OBJECT:
			*why = "not a JSON object";
			break;
		case ECP_LINE_ID_TWICE:
			*why = psprintf("field \"%s\" appears more than once", config->id_field);
			break;
		case ECP_LINE_BAD_ID:
			*why = psprintf("field \"%s\" is not a string of 1 to %d bytes or an integer (it is %s)",
							config->id_field, ECP_LINE_ID_MAX, detail);
			break;
		case ECP_LINE_NO_ID:
			*why = psprintf("no field \"%s\" (option id_field)", config->id_field);
			break;
	}
	return NULL;
}

/* One line into the page: a document, an id, or a dead letter. */
static void
take_line(const FileSource *fs, const EcpPartConfig *config, EcpBatch *batch, char **ids,
		  int *nids, const char *line, size_t len, int capacity)
{
	int64		line_no = (int64) ecp_file_line_no(fs->reader);
	const char *why = NULL;

	if (len == 0)
		return;
	if (!config->ndjson)
	{
		char	   *id = pnstrdup(line, len);

		ids[(*nids)++] = id;
		return;
	}
	{
		char	   *id = document_id(config, line, len, &why);
		EcpDoc	   *doc;

		if (id == NULL)
		{
			add_bad_line(batch, capacity, line_no, why);
			return;
		}
		doc = &batch->docs[batch->ndocs++];
		doc->id = id;
		doc->key = id;
		doc->json = pnstrdup(line, len);
		doc->json_len = (int) len;
	}
}

static bool
file_read(void *state, EcpPartConfig *config, const EcpPosition *after, EcpBatch *batch)
{
	FileSource *fs = state;
	int			capacity = config->batch_size;
	char	  **ids = palloc(sizeof(char *) * capacity);
	int			nids = 0;
	int			lines = 0;
	size_t		bytes = 0;
	char		error[ECP_FILE_ERROR_SIZE];

	if (fs->reader == NULL || ecp_file_offset(fs->reader) != (uint64_t) after->position)
		open_at(fs, config, after);
	batch->docs = palloc0(sizeof(EcpDoc) * capacity);
	while (lines < capacity && bytes < (size_t) config->batch_bytes)
	{
		const char *line;
		size_t		len;
		EcpFileStatus status = ecp_file_next(fs->reader, &line, &len, error, sizeof(error));

		if (status == ECP_FILE_EOF)
			break;
		if (status != ECP_FILE_LINE && status != ECP_FILE_TOO_LONG)
			report_failure(fs, status, error);
		lines++;
		bytes += len;
		if (status == ECP_FILE_TOO_LONG)
			add_bad_line(batch, capacity, (int64) ecp_file_line_no(fs->reader),
						 psprintf("longer than max_line_bytes (%d bytes)", config->max_line_bytes));
		else
			take_line(fs, config, batch, ids, &nids, line, len, capacity);
	}
	batch->end.position = (int64) ecp_file_offset(fs->reader);
	batch->end.line_no = (int64) ecp_file_line_no(fs->reader);
	batch->end.last_key = NULL;
	if (nids > 0)
		ecp_ids_lookup(fs->lookup, config, ids, nids, batch);
	batch->read_any = lines > 0;
	return batch->read_any;
}

static int64
file_total(void *state, EcpPartConfig *config, bool *is_estimate)
{
	*is_estimate = true;
	return -1;					/* a stream's lines are known at its end */
}

/* Ready to read: curl, the owner's right to read the file, the id lookup. */
static void *
file_open(EcpPartConfig *config, MemoryContext context)
{
	FileSource *fs = MemoryContextAllocZero(context, sizeof(FileSource));
	char		err[256];

	if (ecp_http_global_init(err, sizeof(err)) != 0)
		ereport(ERROR, (errmsg("ecp could not initialise libcurl: %s", err)));
	check_server_file_access(config);
	if (!config->ndjson)
		fs->lookup = ecp_ids_prepare(config, context);
	return fs;
}

static void
file_close(void *state)
{
	close_reader((FileSource *) state);
}

const EcpSourceOps ecp_file_source = {
	.name = "file",
	.open = file_open,
	.read = file_read,
	.total = file_total,
	.estimated_total = ecp_source_no_estimate,
	.unreadable = ecp_source_nothing_unreadable,
	.close = file_close,
};
