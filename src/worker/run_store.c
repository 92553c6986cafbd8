/*
 * run_store.c: the durable side of a worker, the rows of its run and
 * part (what it reads about them at start is run_config.c's): the claim, the checkpoint it commits after each acknowledged
 * batch (position, counters, heartbeat and dead letters in one
 * transaction), the split into key ranges, the run's ids, the end, a
 * failure, flow events and alerts.  All of it as bookkeeping (sandbox.c): the worker's own
 * user with a pinned search_path, ecp's fixed statements only, each run
 * and part addressed by its id.  Nothing read here is trusted before
 * config_check.c has looked at it.
 */
#include "sync.h"
#include "host_policy.h"
#include "json_build.h"

#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/*
 * A part that moves on (a checkpoint, its end, a claim, a release) is no
 * longer waiting to retry: ecp.progress stops saying so.
 */
#define CLEAR_RETRY \
	", retry_attempt = NULL, retry_at = NULL, retry_error = NULL, retry_class = NULL "

static int
owner_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "ecp: bookkeeping statement failed (SPI code %d): %s", rc, sql);
	return rc;
}

/*
 * The usual shape of ecp's bookkeeping: statements (NULL-terminated) with
 * the same arguments, in one transaction of their own, committed before
 * this returns.
 */
static void
store_statements(const char *const *statements, int nargs, Oid *types, Datum *values,
				 const char *nulls)
{
	MemoryContext back_to = ecp_begin_bookkeeping();

	SPI_connect();
	for (int i = 0; statements[i]; i++)
		owner_exec(statements[i], nargs, types, values, nulls);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}

/*
 * Whether a migration of this part's index (an alias) is loading through
 * the same consumer: its new index gets every batch too.  Inside an open
 * SPI connection; the name goes to the part's memory.
 */
static void
read_dual_index(EcpPartConfig *config)
{
	Oid			types[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {Int64GetDatum(config->consumer_id), CStringGetTextDatum(config->index_name),
	Int64GetDatum(config->run_id)};
	char	   *dual = NULL;
	StringInfoData content;

	if (config->kind == ECP_PART_MIGRATE)
		return;
	/*
	 * A write service's cluster is not ecp's to know: it is told the new
	 * index of its owner's migration of the same alias, through any
	 * consumer (ecp_internal._service_dual_index).
	 */
	owner_exec(config->write_service ? "SELECT ecp_internal._service_dual_index($2, $3)" :
			   "SELECT ecp_internal._dual_index($1, $2, $3)", 3, types, values, NULL);
	if (SPI_processed == 1)
		dual = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if ((dual == NULL && config->dual_index == NULL) ||
		(dual && config->dual_index && strcmp(dual, config->dual_index) == 0))
		return;
	ecp_json_object_new(&content);
	ecp_json_key_string(&content, "alias", config->index_name);
	ecp_json_key_string(&content, "new_index", dual ? dual : config->dual_index);
	ecp_json_end_object(&content);
	values[1] = CStringGetTextDatum(content.data);
	owner_exec(psprintf("SELECT ecp_internal._flow_event($3, %s, $2::pg_catalog.jsonb)",
						quote_literal_cstr(ecp_flow_action_names[dual ? ECP_FLOW_DUAL_WRITE : ECP_FLOW_DUAL_WRITE_ENDED])),
			   3, types, values, NULL);
	config->dual_index = dual ? MemoryContextStrdup(config->memory, dual) : NULL;
}

/*
 * Read again whether a migration of the part's alias loads (a follower
 * does it for every page, between reading its rows and sending them: a
 * migration that began after the rows were read loads them itself).
 */
void
ecp_store_refresh_dual_index(EcpPartConfig *config)
{
	MemoryContext back_to = ecp_begin_bookkeeping();

	SPI_connect();
	read_dual_index(config);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}

/* Documents this part wrote to a loading migration's index as well. */
static void
count_dual_writes(EcpPartConfig *config, int64 written)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT8OID, BOOLOID};
	Datum		values[4] = {Int64GetDatum(config->consumer_id),
		CStringGetTextDatum(config->dual_index ? config->dual_index : ""), Int64GetDatum(written),
	BoolGetDatum(config->write_service)};

	if (config->dual_index == NULL || written == 0)
		return;
	/* a write service's batches name the index of a migration of another consumer */
	owner_exec("UPDATE ecp.migration SET dual_writes = dual_writes + $3 "
			   " WHERE (consumer_id = $1 OR $4) AND new_index = $2",
			   4, types, values, NULL);
}

/*
 * Mark the run and part running and record that a worker started.  False
 * when the run is no longer pending or running (paused or cancelled since
 * the launcher looked).
 */
bool
ecp_store_claim(EcpPartConfig *config)
{
	MemoryContext back_to;
	Oid			types[4] = {INT8OID, INT4OID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', config->has_heartbeat ? ' ' : 'n'};
	bool		claimed;
	bool		running = false;

	values[0] = Int64GetDatum(config->run_id);
	values[1] = Int32GetDatum(config->part_no);
	values[2] = CStringGetTextDatum(config->progress.last_key ? config->progress.last_key :
									(config->progress.position > 0 ? psprintf("line " INT64_FORMAT ", byte " INT64_FORMAT,
																	 config->progress.line_no, config->progress.position) : ""));
	if (config->kind == ECP_PART_IDS && config->progress.position > 0)
		values[2] = CStringGetTextDatum(psprintf(INT64_FORMAT " ids done", config->progress.position));
	if (config->reads_cursor && config->progress.position > 0)
		values[2] = CStringGetTextDatum(psprintf(INT64_FORMAT " rows done (paging cursor: the query starts again)",
												 config->progress.position));
	values[3] = TimestampTzGetDatum(config->heartbeat_seen);

	back_to = ecp_begin_bookkeeping();
	SPI_connect();

	/*
	 * Compare-and-set on the heartbeat the launcher saw: if anyone renewed
	 * it since (a late worker, another launcher), this worker stands down,
	 * so a part never runs twice.
	 */
	owner_exec(config->recovering ?
			   "UPDATE ecp.part SET state = 'running', worker_pid = pg_catalog.pg_backend_pid(), "
			   "       heartbeat_at = now(), recoveries = recoveries + 1" CLEAR_RETRY
			   " WHERE run_id = $1 AND part_no = $2 AND heartbeat_at IS NOT DISTINCT FROM $4" :
			   "UPDATE ecp.part SET state = 'running', worker_pid = pg_catalog.pg_backend_pid(), "
			   "       heartbeat_at = now(), started_at = coalesce(started_at, now())" CLEAR_RETRY
			   " WHERE run_id = $1 AND part_no = $2 AND heartbeat_at IS NOT DISTINCT FROM $4",
			   4, types, values, nulls);
	claimed = SPI_processed == 1;
	if (claimed)
	{
		owner_exec("UPDATE ecp.run SET state = 'running', started_at = coalesce(started_at, pg_catalog.now()) "
				   " WHERE id = $1 AND state = 'pending'", 1, types, values, NULL);
		owner_exec("SELECT 1 FROM ecp.run WHERE id = $1 AND state = 'running'", 1, types, values, NULL);
		running = SPI_processed == 1;

		/*
		 * The run ended (another part failed it, a cancel) between the
		 * launcher's start and this claim: the part waits, unclaimed, as a
		 * worker that meets a stopped run at a checkpoint leaves it,
		 * instead of staying "running" with no worker.
		 */
		if (!running)
			owner_exec("UPDATE ecp.part SET state = 'pending', worker_pid = NULL "
					   " WHERE run_id = $1 AND part_no = $2 AND worker_pid = pg_catalog.pg_backend_pid()",
					   2, types, values, NULL);
	}
	if (running)
		read_dual_index(config);
	if (running && config->recovering)
		owner_exec(psprintf("SELECT ecp_internal._flow_event($1, %s, "
							"  jsonb_build_object('part', $2, 'pid', pg_backend_pid(), "
							"                     'interrupted_at', $4, 'resume_after_key', nullif($3, '')))",
							quote_literal_cstr(ecp_flow_action_names[ECP_FLOW_RECOVERED])),
				   4, types, values, nulls);
	else if (running)
		owner_exec(psprintf("SELECT ecp_internal._flow_event($1, %s, "
							"  jsonb_build_object('part', $2, 'pid', pg_backend_pid(), "
							"                     'resume_after_key', nullif($3, '')))",
							quote_literal_cstr(ecp_flow_action_names[ECP_FLOW_WORKER_STARTED])),
				   3, types, values, NULL);
	/*
	 * The loser of a race says so in the flow: it sends nothing, and the
	 * winner's claim (a newer heartbeat) is what made it stand down.
	 */
	if (!claimed)
		owner_exec(psprintf("SELECT ecp_internal._flow_event($1, %s, "
							"  jsonb_build_object('part', $2, 'pid', pg_backend_pid(), 'heartbeat_seen', $4))",
							quote_literal_cstr(ecp_flow_action_names[ECP_FLOW_CLAIM_LOST])),
				   4, types, values, nulls);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	if (!claimed)
		ereport(LOG,
				(errmsg("ecp worker for run " INT64_FORMAT " part %d stands down: another worker claimed the part",
						config->run_id, config->part_no)));
	return running;
}

/*
 * The parts of the config's run a worker whose part ended may go on with:
 * pending ones of the run's lowest stage not done (a migration's steps
 * wait for the stage before), first ones first, at most max, with the
 * heartbeat each had (the claim compares it).  None unless the run is
 * running.  Parts a worker died on are the launcher's: they wait their
 * back-off and count towards failing the run (scheduler.c).
 */
int
ecp_store_next_parts(EcpPartConfig *config, EcpNextPart *next, int max)
{
	MemoryContext back_to;
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(config->run_id), Int32GetDatum(max)};
	int			n;

	back_to = ecp_begin_bookkeeping();
	SPI_connect();
	owner_exec("SELECT p.part_no, p.heartbeat_at FROM ecp.part p "
			   "  JOIN ecp.run r ON r.id = p.run_id AND r.state = 'running' "
			   " WHERE p.run_id = $1 AND p.state = 'pending' "
			   "   AND p.stage = (SELECT pg_catalog.min(q.stage) FROM ecp.part q "
			   "                   WHERE q.run_id = $1 AND q.state <> 'done') "
			   " ORDER BY p.part_no LIMIT $2", 2, types, values, NULL);
	n = (int) SPI_processed;
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		ecp_require_column_type(desc, 1, INT4OID, "the next parts of a run");
		ecp_require_column_type(desc, 2, TIMESTAMPTZOID, "the next parts of a run");
		next[i].part_no = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
		next[i].heartbeat = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 2, &isnull));
		next[i].has_heartbeat = !isnull;
	}
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	return n;
}

/* The run was paused or cancelled: the part waits, unclaimed. */
void
ecp_store_release(EcpPartConfig *config)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no)};
	const char *const statements[] = {
		"UPDATE ecp.part SET state = 'pending', worker_pid = NULL, docs_per_second = NULL" CLEAR_RETRY
		" WHERE run_id = $1 AND part_no = $2 AND state = 'running'",
		NULL
	};

	store_statements(statements, 2, types, values, NULL);
}

/*
 * The run's total is the sum of its parts' (once some part has one);
 * ecp.progress shows it once every part has one.
 */
#define RUN_TOTAL_SQL \
	"UPDATE ecp.run SET total = (SELECT pg_catalog.sum(total) FROM ecp.part WHERE run_id = $1), " \
	"       total_is_estimate = total_is_estimate OR $3 WHERE id = $1"

void
ecp_store_set_total(EcpPartConfig *config, int64 total, bool is_estimate)
{
	Oid			types[4] = {INT8OID, INT8OID, BOOLOID, INT4OID};
	Datum		values[4] = {Int64GetDatum(config->run_id), Int64GetDatum(total),
	BoolGetDatum(is_estimate), Int32GetDatum(config->part_no)};
	const char *const statements[] = {
		"UPDATE ecp.part SET total = $2 WHERE run_id = $1 AND part_no = $4",
		"UPDATE ecp.run SET total_is_estimate = $3 WHERE id = $1 AND total IS NULL",
		RUN_TOTAL_SQL,
		NULL
	};

	if (total < 0)
		return;					/* unknown (a file) */
	store_statements(statements, 4, types, values, NULL);
	config->progress.has_total = true;
}

static void
insert_dead_letter(EcpPartConfig *config, const char *doc_id, int status,
				   const char *error_type, const char *reason)
{
	Oid			types[5] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', doc_id ? ' ' : 'n', status ? ' ' : 'n',
	error_type ? ' ' : 'n', reason ? ' ' : 'n'};

	values[0] = Int64GetDatum(config->run_id);
	values[1] = doc_id ? CStringGetTextDatum(doc_id) : (Datum) 0;
	values[2] = Int32GetDatum(status);
	values[3] = error_type ? CStringGetTextDatum(error_type) : (Datum) 0;
	values[4] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	owner_exec("INSERT INTO ecp.failed_doc (run_id, doc_id, status, error_type, reason, owner) "
			   "SELECT $1, $2, $3, $4, $5, owner FROM ecp.run WHERE id = $1",
			   5, types, values, nulls);
}

/*
 * What a verify found about one id (inside an open SPI connection).  A
 * page checked again after a crash finds its ids again: one row per id.
 */
static void
insert_drift(EcpPartConfig *config, const char *id, const char *kind, const char *detail)
{
	Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', detail ? ' ' : 'n', ' '};

	values[0] = Int64GetDatum(config->run_id);
	values[1] = CStringGetTextDatum(id);
	values[2] = CStringGetTextDatum(kind);
	values[3] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
	values[4] = Int32GetDatum(config->part_no);
	owner_exec("INSERT INTO ecp.drift (run_id, id, kind, detail, part_no, owner) "
			   "SELECT $1, $2, $3, $4, $5, owner FROM ecp.run WHERE id = $1 "
			   "ON CONFLICT (run_id, id) DO NOTHING",
			   5, types, values, nulls);
}

/* The same in a transaction of its own (a verify's walk of the index). */
void
ecp_store_drift(EcpPartConfig *config, const char *id, const char *kind, const char *detail)
{
	MemoryContext back_to = ecp_begin_bookkeeping();

	SPI_connect();
	insert_drift(config, id, kind, detail);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}

/* The run's state (GONE when deleted), inside an open SPI connection. */
static EcpRunState
select_run_state(EcpPartConfig *config)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(config->run_id)};

	owner_exec("SELECT state FROM ecp.run WHERE id = $1", 1, types, values, NULL);
	if (SPI_processed != 1)
		return ECP_RUN_GONE;
	return ecp_run_state_of(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}

/* The run's state, read in a transaction of its own. */
EcpRunState
ecp_store_run_state(EcpPartConfig *config)
{
	MemoryContext back_to;
	EcpRunState state;

	back_to = ecp_begin_bookkeeping();
	SPI_connect();
	state = select_run_state(config);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	return state;
}

/* A source that learns its size as it reads refines the part's estimate. */
static void
update_estimated_total(EcpPartConfig *config, int64 total)
{
	Oid			types[4] = {INT8OID, INT8OID, BOOLOID, INT4OID};
	Datum		values[4] = {Int64GetDatum(config->run_id), Int64GetDatum(total),
	BoolGetDatum(true), Int32GetDatum(config->part_no)};

	if (total < 0)
		return;
	owner_exec("UPDATE ecp.part SET total = $2 WHERE run_id = $1 AND part_no = $4",
			   4, types, values, NULL);
	owner_exec(RUN_TOTAL_SQL, 3, types, values, NULL);
}

static void
insert_bad_lines(EcpPartConfig *config, const EcpBatch *batch)
{
	for (int i = 0; i < batch->nbad_lines; i++)
		insert_dead_letter(config, NULL, 0, "bad_line",
						   psprintf("line " INT64_FORMAT ": %s", batch->bad_lines[i].line_no,
									batch->bad_lines[i].reason));
}

/* Documents, deletes and dead letters of a batch, by the sink's answers. */
typedef struct BatchCounts
{
	int64		ok;
	int64		deleted;
	int64		failed;
	int64		skipped;
	int64		stale;
} BatchCounts;

static void
count_results(EcpPartConfig *config, EcpBatch *batch, EcpDocResult *results, BatchCounts *counts)
{
	int64	   *failed = &counts->failed;

	memset(counts, 0, sizeof(*counts));
	for (int i = 0; i < batch->ndocs; i++)
	{
		if (results[i].outcome == ECP_DOC_OK)
			(*(batch->docs[i].is_delete ? &counts->deleted : &counts->ok))++;
		else if (results[i].outcome == ECP_DOC_SKIPPED)
			counts->skipped++;
		else if (results[i].outcome == ECP_DOC_STALE)
			counts->stale++;
		else if (results[i].outcome == ECP_DOC_DRIFT)
		{
			counts->ok++;		/* checked: what it found is in ecp.drift */
			insert_drift(config, batch->docs[i].id, results[i].error_type, results[i].reason);
		}
		else if (results[i].outcome == ECP_DOC_FAILED)
		{
			(*failed)++;
			insert_dead_letter(config, batch->docs[i].id, results[i].status,
							   results[i].error_type, results[i].reason);
		}
	}
	insert_bad_lines(config, batch);
	*failed += batch->nbad_lines;
}

/*
 * Add a page's documents (what the consumer answered for: written,
 * deleted, refused or already newer) and request bytes to its task's row
 * of this minute in ecp.throughput (inside the checkpoint's transaction).
 */
static void
add_throughput(EcpPartConfig *config, int64 documents, int64 bytes)
{
	Oid			types[4] = {INT8OID, INT8OID, INT8OID, REGROLEOID};
	Datum		values[4] = {Int64GetDatum(config->task_id), Int64GetDatum(documents),
	Int64GetDatum(bytes), ObjectIdGetDatum(config->owner)};

	if (documents == 0 && bytes == 0)
		return;
	owner_exec("INSERT INTO ecp.throughput AS s (minute, task_id, documents, bytes, owner) "
			   "VALUES (date_trunc('minute', now()), $1, $2, $3, $4) "
			   "ON CONFLICT (minute, task_id) DO UPDATE "
			   "   SET documents = s.documents + EXCLUDED.documents, bytes = s.bytes + EXCLUDED.bytes",
			   4, types, values, NULL);
}

/* The new position, in the worker's memory (the batch's is reset). */
static void
move_position(EcpPartConfig *config, const EcpPosition *end)
{
	if (config->progress.last_key)
		pfree(config->progress.last_key);
	config->progress.last_key = end->last_key ? MemoryContextStrdup(config->memory, end->last_key) : NULL;
	config->progress.position = end->position;
	config->progress.line_no = end->line_no;
}

/*
 * After the sink acknowledged the batch: dead letters, then the checkpoint
 * with counters and heartbeat, all in one transaction.  Returns the run's
 * state, so a pause or cancel is seen at the next batch at the latest.
 */
EcpRunState
ecp_store_save(EcpPartConfig *config, EcpBatch *batch, EcpDocResult *results,
			   double docs_per_second, const EcpSource *source)
{
	MemoryContext back_to;
	Oid			types[13] = {INT8OID, INT4OID, TEXTOID, INT8OID, INT8OID, FLOAT8OID,
	INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum		values[13];
	char		nulls[13] = {' ', ' ', batch->end.last_key ? ' ' : 'n', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	BatchCounts counts;
	EcpRunState state;

	back_to = ecp_begin_bookkeeping();

	/*
	 * This commit alone does not wait for its WAL to reach the disk: a
	 * flush per page cost a tenth of a run.  PostgreSQL flushes it within
	 * 3 x wal_writer_delay (600 ms by default); a crash before that (of
	 * PostgreSQL, the operating system or the machine) loses the newest
	 * checkpoints, and the part sends those pages again from the last one
	 * that survived: at-least-once and idempotent by _id, as always.  The
	 * claim, the end, a failure and a split stay synchronous: a restart
	 * must never forget them (the count of recoveries gives up on a part
	 * that keeps dying).
	 */
	(void) set_config_option("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
	SPI_connect();
	count_results(config, batch, results, &counts);
	values[0] = Int64GetDatum(config->run_id);
	values[1] = Int32GetDatum(config->part_no);
	values[2] = batch->end.last_key ? CStringGetTextDatum(batch->end.last_key) : (Datum) 0;
	values[3] = Int64GetDatum(counts.ok);
	values[4] = Int64GetDatum(counts.failed);
	values[5] = Float8GetDatum(docs_per_second);
	values[6] = Int64GetDatum(batch->end.position);
	values[7] = Int64GetDatum(batch->end.line_no);
	values[8] = Int64GetDatum(counts.deleted);
	values[9] = Int64GetDatum(batch->missing);
	values[10] = Int64GetDatum(counts.skipped);
	values[11] = Int64GetDatum(counts.stale);
	values[12] = Int64GetDatum(batch->bytes_sent);
	owner_exec("UPDATE ecp.part SET last_key = $3, processed = processed + $4, "
			   "       failed = failed + $5, batches = batches + 1, heartbeat_at = now(), "
			   "       docs_per_second = $6, recoveries = 0, position = $7, line_no = $8, "
			   "       deleted = deleted + $9, missing = missing + $10, "
			   "       skipped = skipped + $11, skipped_stale = skipped_stale + $12, "
			   "       bytes_sent = bytes_sent + $13" CLEAR_RETRY
			   " WHERE run_id = $1 AND part_no = $2", 13, types, values, nulls);
	ecp_since_save(config, batch);
	/* an error aborts the worker: the new position may be set before commit */
	move_position(config, &batch->end);
	config->progress.processed += counts.ok + counts.deleted;
	config->progress.failed += counts.failed;
	/* the source's estimate from the new position */
	update_estimated_total(config, source->ops->estimated_total(source->state, config));
	if (source->ops->acknowledge)
		source->ops->acknowledge(source->state, config, batch);
	count_dual_writes(config, counts.ok + counts.deleted);
	read_dual_index(config);
	/* last: parts of one task share the minute's row, so its lock is held shortest */
	add_throughput(config, counts.ok + counts.deleted + counts.failed + counts.stale, batch->bytes_sent);
	state = select_run_state(config);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	return state;
}

/*
 * Cut a split part into key ranges (ecp_internal._split_part); the number of parts
 * it became.
 */
int
ecp_store_split(EcpPartConfig *config, bool has_keys, int64 low, int64 high, int nranges)
{
	MemoryContext back_to;
	Oid			types[4] = {INT8OID, INT8OID, INT8OID, INT4OID};
	Datum		values[4] = {Int64GetDatum(config->run_id), Int64GetDatum(low),
	Int64GetDatum(high), Int32GetDatum(nranges)};
	char		nulls[4] = {' ', has_keys ? ' ' : 'n', has_keys ? ' ' : 'n', ' '};
	int			parts = 1;

	back_to = ecp_begin_bookkeeping();
	SPI_connect();
	owner_exec("SELECT ecp_internal._split_part($1, $2, $3, $4)", 4, types, values, nulls);
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d;

		ecp_require_column_type(SPI_tuptable->tupdesc, 1, INT4OID, "ecp_internal._split_part");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		parts = isnull ? 1 : DatumGetInt32(d);
	}
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	return parts;
}

/*
 * Up to n of the run's ids after the first `after` (rows of ecp.run_id, by
 * their primary key: memory and time stay bounded by the batch, whatever
 * the list's length), in the current memory context.
 */
char	  **
ecp_store_run_ids(EcpPartConfig *config, int64 after, int n, int *nids)
{
	MemoryContext back_to;
	Oid			types[3] = {INT8OID, INT8OID, INT8OID};
	Datum		values[3] = {Int64GetDatum(config->run_id), Int64GetDatum(after + 1),
	Int64GetDatum(after + n)};
	MemoryContext caller = CurrentMemoryContext;
	char	  **ids;

	back_to = ecp_begin_bookkeeping();
	SPI_connect();
	owner_exec("SELECT id FROM ecp.run_id WHERE run_id = $1 AND n BETWEEN $2 AND $3 ORDER BY n",
			   3, types, values, NULL);
	*nids = (int) SPI_processed;
	ids = MemoryContextAlloc(caller, sizeof(char *) * Max(*nids, 1));
	for (int i = 0; i < *nids; i++)
		ids[i] = MemoryContextStrdup(caller, SPI_getvalue(SPI_tuptable->vals[i],
														  SPI_tuptable->tupdesc, 1));
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	MemoryContextSwitchTo(caller);
	return ids;
}

/*
 * The part is done; the run succeeds when it was its last running part
 * (true: this part ended it).
 */
bool
ecp_store_finish(EcpPartConfig *config, int64 null_keys)
{
	MemoryContext back_to;
	Oid			types[3] = {INT8OID, INT4OID, INT8OID};
	Datum		values[3] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no),
	Int64GetDatum(null_keys)};
	bool		ended_run;

	back_to = ecp_begin_bookkeeping();
	SPI_connect();
	if (null_keys > 0)
		insert_dead_letter(config, NULL, 0, "null_key",
						   psprintf(INT64_FORMAT " rows have NULL in key column \"%s\"; they cannot be paged or given an _id",
									null_keys, config->key_column));
	owner_exec("UPDATE ecp.part SET state = 'done', finished_at = pg_catalog.now(), heartbeat_at = pg_catalog.now(), "
			   "       docs_per_second = NULL, failed = failed + $3" CLEAR_RETRY
			   " WHERE run_id = $1 AND part_no = $2", 3, types, values, NULL);
	/*
	 * Lock the run first: two parts finishing at once would otherwise each
	 * see the other unfinished, and neither would end the run.
	 */
	owner_exec("SELECT 1 FROM ecp.run WHERE id = $1 FOR UPDATE", 1, types, values, NULL);
	owner_exec("UPDATE ecp.run SET state = 'succeeded', finished_at = pg_catalog.now() "
			   " WHERE id = $1 AND state = 'running' "
			   "   AND NOT EXISTS (SELECT 1 FROM ecp.part WHERE run_id = $1 AND state <> 'done')",
			   1, types, values, NULL);
	ended_run = SPI_processed == 1;
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	ereport(LOG,
			(errmsg("ecp run " INT64_FORMAT " part %d finished", config->run_id, config->part_no)));
	return ended_run;
}

/* At most this many bytes of an error go into last_error (and the flow). */
#define MAX_ERROR_BYTES 2000

/* error cut to MAX_ERROR_BYTES on a character boundary. */
static char *
bounded_error(const char *error)
{
	int			len = strlen(error);

	if (len <= MAX_ERROR_BYTES)
		return pstrdup(error);
	len = pg_mbcliplen(error, len, MAX_ERROR_BYTES - 4);
	return psprintf("%.*s ...", len, error);
}

/*
 * The part and the run fail.  The alert's class is stored with the run
 * (failure_class, failure_attempts), never parsed back out of the text.
 */
static void
record_failure(EcpPartConfig *config, const char *error)
{
	Oid			types[5] = {INT8OID, TEXTOID, INT4OID, TEXTOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', config->progress.exhausted_after > 0 ? ' ' : 'n'};
	const char *const statements[] = {
		"UPDATE ecp.part SET state = 'failed', heartbeat_at = pg_catalog.now(), docs_per_second = NULL, "
		"       last_error = $2" CLEAR_RETRY " WHERE run_id = $1 AND part_no = $3",
		"UPDATE ecp.run SET state = 'failed', finished_at = pg_catalog.now(), last_error = $2, "
		"       failure_class = $4, failure_attempts = $5 "
		" WHERE id = $1 AND state IN ('pending', 'running')",
		NULL
	};

	values[0] = Int64GetDatum(config->run_id);
	values[1] = CStringGetTextDatum(error);
	values[2] = Int32GetDatum(config->part_no);
	values[3] = CStringGetTextDatum(config->progress.exhausted_after > 0 ? "retries exhausted" : "failed");
	values[4] = Int32GetDatum(config->progress.exhausted_after);
	store_statements(statements, 5, types, values, nulls);
}

/*
 * The run fails with error as last_error; its checkpoint is kept.  This
 * is the worker's last word, so it must not fail itself: when recording
 * the error fails (whatever the reason), a short fixed message is
 * recorded instead, and the first error goes to the server log.
 */
void
ecp_store_fail(EcpPartConfig *config, const char *error)
{
	MemoryContext context = CurrentMemoryContext;
	char	   *bounded = bounded_error(error ? error : "unknown error");

	PG_TRY();
	{
		record_failure(config, bounded);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(context);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("ecp run " INT64_FORMAT " failed, and recording its error failed too: %s; the error was: %s",
						config->run_id, edata->message, bounded)));
		record_failure(config, psprintf("the run failed; its error could not be recorded (SQLSTATE %s), see the server log",
										unpack_sql_state(edata->sqlerrcode)));
	}
	PG_END_TRY();
}

/* Renew the part's heartbeat (while the worker waits). */
void
ecp_store_heartbeat(EcpPartConfig *config)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no)};
	const char *const statements[] = {
		"UPDATE ecp.part SET heartbeat_at = pg_catalog.now() WHERE run_id = $1 AND part_no = $2",
		NULL
	};

	store_statements(statements, 2, types, values, NULL);
}

/* A flow event of this part (retry, ...); content is a JSON object. */
void
ecp_store_event(EcpPartConfig *config, EcpFlowAction action, const char *content_json)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[4];
	const char *const statements[] = {
		"SELECT ecp_internal._flow_event($1, $2, pg_catalog.jsonb_build_object('part', $4) || $3::pg_catalog.jsonb)",
		"UPDATE ecp.part SET heartbeat_at = pg_catalog.now() WHERE run_id = $1 AND part_no = $4",
		NULL
	};

	values[0] = Int64GetDatum(config->run_id);
	Assert((unsigned) action < ECP_FLOW_NACTIONS);
	values[1] = CStringGetTextDatum(ecp_flow_action_names[action]);
	values[2] = CStringGetTextDatum(content_json);
	values[3] = Int32GetDatum(config->part_no);
	store_statements(statements, 4, types, values, NULL);
}

/*
 * A part of paging cursor starts its query again from the beginning (the
 * held result went with the worker that died, or was paused, or broke):
 * the flow row "cursor restarted" says how far the part had come, and its
 * counters count again from 0, its total the new result's, in the same
 * transaction, so ecp.progress never counts a row twice.  Batches and
 * bytes sent stay: they are work done.
 */
void
ecp_store_restart_part(EcpPartConfig *config, int64 total, const char *why)
{
	Oid			types[5] = {INT8OID, INT4OID, INT8OID, TEXTOID, TEXTOID};
	Datum		values[5];
	const char *const statements[] = {
		"SELECT ecp_internal._flow_event($1, $4, pg_catalog.jsonb_build_object("
		"         'part', $2, 'why', $5, 'rows', $3, 'rows_done_before', p.position, "
		"         'processed_before', p.processed, 'failed_before', p.failed)) "
		"  FROM ecp.part p WHERE p.run_id = $1 AND p.part_no = $2",
		"UPDATE ecp.part SET processed = 0, failed = 0, deleted = 0, missing = 0, skipped = 0, "
		"       skipped_stale = 0, position = 0, last_key = NULL, total = $3, "
		"       heartbeat_at = pg_catalog.now() "
		" WHERE run_id = $1 AND part_no = $2",
		"UPDATE ecp.run SET total = (SELECT pg_catalog.sum(total) FROM ecp.part WHERE run_id = $1) "
		" WHERE id = $1",
		NULL
	};

	values[0] = Int64GetDatum(config->run_id);
	values[1] = Int32GetDatum(config->part_no);
	values[2] = Int64GetDatum(total);
	values[3] = CStringGetTextDatum(ecp_flow_action_names[ECP_FLOW_CURSOR_RESTARTED]);
	values[4] = CStringGetTextDatum(why);
	store_statements(statements, 5, types, values, NULL);
	ereport(LOG,
			(errmsg("ecp worker for run " INT64_FORMAT " part %d starts its query again from the beginning (paging cursor): %s",
					config->run_id, config->part_no, why)));
	if (config->progress.last_key)
		pfree(config->progress.last_key);
	config->progress.last_key = NULL;
	config->progress.position = 0;
	config->progress.processed = 0;
	config->progress.failed = 0;
	config->progress.has_total = true;
}

/*
 * The part waits wait_ms to retry attempt after error (of the source or
 * the consumer: retry_class): ecp.progress shows it until the part moves
 * on, and the flow gets the retry row, in one transaction.
 */
void
ecp_store_retrying(EcpPartConfig *config, int attempt, long wait_ms, const char *error,
				   const char *retry_class, const char *content_json)
{
	Oid			types[8] = {INT8OID, TEXTOID, TEXTOID, INT4OID, INT4OID, INT8OID, TEXTOID, TEXTOID};
	Datum		values[8];
	const char *const statements[] = {
		"SELECT ecp_internal._flow_event($1, $2, pg_catalog.jsonb_build_object('part', $4) || $3::pg_catalog.jsonb)",
		"UPDATE ecp.part SET heartbeat_at = pg_catalog.now(), retry_attempt = $5, "
		"       retry_at = pg_catalog.now() + pg_catalog.make_interval(secs => $6 / 1000.0), "
		"       retry_error = pg_catalog.\"left\"($7, 2000), retry_class = $8 "
		" WHERE run_id = $1 AND part_no = $4",
		NULL
	};

	values[0] = Int64GetDatum(config->run_id);
	values[1] = CStringGetTextDatum(ecp_flow_action_names[ECP_FLOW_RETRY]);
	values[2] = CStringGetTextDatum(content_json);
	values[3] = Int32GetDatum(config->part_no);
	values[4] = Int32GetDatum(attempt);
	values[5] = Int64GetDatum((int64) wait_ms);
	values[6] = CStringGetTextDatum(error ? error : "");
	values[7] = CStringGetTextDatum(retry_class);
	store_statements(statements, 8, types, values, NULL);
}

/* An alert about this run: flow row, NOTIFY ecp_alert (at commit). */
void
ecp_store_alert(EcpPartConfig *config, const char *class, int attempts, const char *error)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT4OID, TEXTOID};
	Datum		values[4];
	const char *const statements[] = {"SELECT ecp_internal._alert($1, $2, $3, $4)", NULL};

	values[0] = Int64GetDatum(config->run_id);
	values[1] = CStringGetTextDatum(class);
	values[2] = Int32GetDatum(attempts);
	values[3] = CStringGetTextDatum(error ? error : "");
	store_statements(statements, 4, types, values, NULL);
}
