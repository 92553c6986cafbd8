/*
 * checkpoint.c: the durable side of a worker: what it reads about its run
 * at start, and what it commits after each acknowledged batch (checkpoint,
 * counters, heartbeat and dead letters in one transaction), at the end,
 * and on failure.  All of it as bookkeeping (sandbox.c): the worker's own
 * user with a pinned search_path, ecp's fixed statements only, each run
 * and part addressed by its id.  Nothing read here is trusted before
 * config_check.c has looked at it.
 */
#include "sync.h"
#include "host_policy.h"

#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

static char *
copy_text(HeapTuple tuple, TupleDesc desc, const char *column)
{
	char	   *value = SPI_getvalue(tuple, desc, SPI_fnumber(desc, column));
	char	   *copy;

	if (value == NULL)
		return NULL;
	copy = MemoryContextStrdup(TopMemoryContext, value);
	return copy;
}

static char *
basic_auth(const char *user, const char *password)
{
	char	   *plain = psprintf("%s:%s", user, password);
	int			len = strlen(plain);
	int			enc_len = pg_b64_enc_len(len);
	char	   *encoded = palloc(enc_len + 1);
	int			n = pg_b64_encode(plain, len, encoded, enc_len);

	encoded[Max(n, 0)] = '\0';
	return MemoryContextStrdup(TopMemoryContext, psprintf("Basic %s", encoded));
}

/*
 * Every field as text (options too: a cast in SQL would fail the whole
 * statement on one bad value), and the owners of all four rows.
 */
#define CONFIG_SQL \
	"SELECT t.name AS task_name, t.query, t.index_name, t.search_path, " \
	"       t.id AS task_id, c.id AS consumer_id, " \
	"       t.options->>'id_column' AS id_column, " \
	"       coalesce(t.options->>'key_column', t.options->>'id_column') AS key_column, " \
	"       t.options->>'op' AS op, t.options->>'paging' AS paging, " \
	"       t.options->>'batch_size' AS batch_size, t.options->>'batch_bytes' AS batch_bytes, " \
	"       t.options->>'exact_total' AS exact_total, " \
	"       t.options->>'max_retries' AS max_retries, " \
	"       t.options->>'retry_base_ms' AS retry_base_ms, " \
	"       t.options->>'retry_max_ms' AS retry_max_ms, " \
	"       c.url, c.options->>'username' AS username, c.options->>'password' AS password, " \
	"       c.options->>'api_key' AS api_key, c.options->>'ca_file' AS ca_file, " \
	"       c.options->>'insecure' AS insecure, c.options->>'gzip' AS gzip, " \
	"       c.options->>'connect_timeout_ms' AS connect_timeout_ms, " \
	"       c.options->>'request_timeout_ms' AS request_timeout_ms, " \
	"       r.state AS run_state, (r.total IS NOT NULL) AS has_total, " \
	"       r.only_ids::text AS only_ids, " \
	"       p.last_key, p.processed, p.failed, " \
	"       r.owner::oid AS run_owner, t.owner::oid AS task_owner, " \
	"       c.owner::oid AS consumer_owner, p.owner::oid AS part_owner, " \
	"       a.rolname AS owner_name, " \
	"       (a.rolcanlogin AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil > now())) AS owner_can_login " \
	"  FROM ecp.run r JOIN ecp.part p ON p.run_id = r.id " \
	"  LEFT JOIN ecp.task t ON t.id = r.task_id " \
	"  LEFT JOIN ecp.consumer c ON c.id = t.consumer_id " \
	"  LEFT JOIN pg_catalog.pg_authid a ON a.oid = r.owner::oid " \
	" WHERE r.id = $1 AND p.part_no = $2"

static bool
bool_column(HeapTuple tuple, TupleDesc desc, const char *column)
{
	char	   *v = SPI_getvalue(tuple, desc, SPI_fnumber(desc, column));

	return v && v[0] == 't';
}

static long
long_column(HeapTuple tuple, TupleDesc desc, const char *column)
{
	char	   *v = SPI_getvalue(tuple, desc, SPI_fnumber(desc, column));

	return v ? atol(v) : 0;
}

static char *
value_of(HeapTuple tuple, TupleDesc desc, const char *column)
{
	return SPI_getvalue(tuple, desc, SPI_fnumber(desc, column));
}

static Oid
oid_column(HeapTuple tuple, TupleDesc desc, const char *column)
{
	char	   *v = value_of(tuple, desc, column);

	return v ? (Oid) strtoul(v, NULL, 10) : InvalidOid;
}

/* Who the run belongs to, and whether that role may still act. */
static void
load_owner(EcpPartConfig *config, HeapTuple tuple, TupleDesc desc)
{
	char	   *name = value_of(tuple, desc, "owner_name");

	ecp_config_check_owners(oid_column(tuple, desc, "run_owner"),
							oid_column(tuple, desc, "task_owner"),
							oid_column(tuple, desc, "consumer_owner"),
							oid_column(tuple, desc, "part_owner"));
	if (oid_column(tuple, desc, "run_owner") != config->owner)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("run " INT64_FORMAT " changed owner since its worker was started", config->run_id)));
	ecp_config_check_owner_login(config->owner, name, value_of(tuple, desc, "owner_can_login"));
	config->owner_name = MemoryContextStrdup(TopMemoryContext, name);
}

static const char *const op_words[] = {"index", "create", "update", "delete", NULL};
static const char *const paging_words[] = {"auto", "keyset", "window", NULL};

/* The task's fields, each checked: what a worker acts on. */
static void
load_task(EcpPartConfig *config, HeapTuple tuple, TupleDesc desc)
{
	const char *recreate = "Recreate the task with ecp.create_task.";

	config->task_name = copy_text(tuple, desc, "task_name");
	ecp_config_required(config->task_name, "the run's task", "The task was deleted; start a new run of an existing task.");
	config->task_id = long_column(tuple, desc, "task_id");
	config->raw_query = copy_text(tuple, desc, "query");
	ecp_config_required(config->raw_query, "the task's query", recreate);
	config->index_name = copy_text(tuple, desc, "index_name");
	ecp_config_check_index(config->index_name);
	config->search_path = copy_text(tuple, desc, "search_path");
	config->id_column = copy_text(tuple, desc, "id_column");
	ecp_config_required(config->id_column, "the task's option \"id_column\"", recreate);
	config->key_column = copy_text(tuple, desc, "key_column");
	config->op = (char *) ecp_config_word(value_of(tuple, desc, "op"), "op", op_words);
	config->paging = (char *) ecp_config_word(value_of(tuple, desc, "paging"), "paging", paging_words);
	config->batch_size = ecp_config_int(value_of(tuple, desc, "batch_size"), "batch_size", 1000, 1, 100000);
	config->batch_bytes = ecp_config_int(value_of(tuple, desc, "batch_bytes"), "batch_bytes",
										 5242880, 1024, 104857600);
	config->exact_total = ecp_config_bool(value_of(tuple, desc, "exact_total"), "exact_total", false);
	config->max_retries = ecp_config_int(value_of(tuple, desc, "max_retries"), "max_retries",
										 ecp_max_retries, 0, 1000);
	config->retry_base_ms = ecp_config_int(value_of(tuple, desc, "retry_base_ms"), "retry_base_ms",
										   ecp_retry_base_ms, 1, 3600000);
	config->retry_max_ms = ecp_config_int(value_of(tuple, desc, "retry_max_ms"), "retry_max_ms",
										  ecp_retry_max_ms, 1, 3600000);
}

/* The consumer's fields, each checked; credentials into a header. */
static void
load_consumer(EcpPartConfig *config, HeapTuple tuple, TupleDesc desc)
{
	char	   *user = value_of(tuple, desc, "username");
	char	   *password = value_of(tuple, desc, "password");
	char	   *api_key = value_of(tuple, desc, "api_key");

	config->consumer_id = long_column(tuple, desc, "consumer_id");
	config->url = copy_text(tuple, desc, "url");
	ecp_config_check_url(config->url);
	config->ca_file = copy_text(tuple, desc, "ca_file");
	config->insecure = ecp_config_bool(value_of(tuple, desc, "insecure"), "insecure", false);
	config->gzip = ecp_config_bool(value_of(tuple, desc, "gzip"), "gzip", false);
	config->connect_timeout_ms = ecp_config_int(value_of(tuple, desc, "connect_timeout_ms"),
												"connect_timeout_ms", 5000, 1, 600000);
	config->request_timeout_ms = ecp_config_int(value_of(tuple, desc, "request_timeout_ms"),
												"request_timeout_ms", 60000, 1, 3600000);
	if (user && password)
		config->auth_header = basic_auth(user, password);
	else if (api_key)
		config->auth_header = MemoryContextStrdup(TopMemoryContext, psprintf("ApiKey %s", api_key));
}

/*
 * Read the task, consumer, run and part a worker was started for, and
 * check every field.  An ERROR here names the bad field; the caller fails
 * the run with it.
 */
void
ecp_checkpoint_load(EcpPartConfig *config)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no)};
	HeapTuple	tuple;
	TupleDesc	desc;

	ecp_begin_bookkeeping();
	SPI_connect();
	if (SPI_execute_with_args(CONFIG_SQL, 2, types, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
	{
		SPI_finish();
		ecp_commit_bookkeeping();
		config->run_state = "gone";
		return;
	}
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	config->run_state = copy_text(tuple, desc, "run_state");
	config->only_ids = copy_text(tuple, desc, "only_ids");
	config->has_total = bool_column(tuple, desc, "has_total");
	config->last_key = copy_text(tuple, desc, "last_key");
	config->processed = long_column(tuple, desc, "processed");
	config->failed = long_column(tuple, desc, "failed");
	if (strcmp(config->run_state, "pending") == 0 || strcmp(config->run_state, "running") == 0)
	{
		load_owner(config, tuple, desc);
		load_task(config, tuple, desc);
		load_consumer(config, tuple, desc);
		config->target_unrestricted = ecp_host_policy_role_exempt(config->owner);
	}
	SPI_finish();
	ecp_commit_bookkeeping();
}

static int
owner_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "ecp: bookkeeping statement failed (SPI code %d): %s", rc, sql);
	return rc;
}

/*
 * Mark the run and part running and record that a worker started.  False
 * when the run is no longer pending or running (paused or cancelled since
 * the launcher looked).
 */
bool
ecp_checkpoint_claim(EcpPartConfig *config)
{
	Oid			types[4] = {INT8OID, INT4OID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', config->has_heartbeat ? ' ' : 'n'};
	bool		claimed;
	bool		running = false;

	values[0] = Int64GetDatum(config->run_id);
	values[1] = Int32GetDatum(config->part_no);
	values[2] = CStringGetTextDatum(config->last_key ? config->last_key : "");
	values[3] = TimestampTzGetDatum(config->heartbeat_seen);

	ecp_begin_bookkeeping();
	SPI_connect();

	/*
	 * Compare-and-set on the heartbeat the launcher saw: if anyone renewed
	 * it since (a late worker, another launcher), this worker stands down,
	 * so a part never runs twice.
	 */
	owner_exec(config->recovering ?
			   "UPDATE ecp.part SET state = 'running', worker_pid = pg_backend_pid(), "
			   "       heartbeat_at = now(), recoveries = recoveries + 1 "
			   " WHERE run_id = $1 AND part_no = $2 AND heartbeat_at IS NOT DISTINCT FROM $4" :
			   "UPDATE ecp.part SET state = 'running', worker_pid = pg_backend_pid(), "
			   "       heartbeat_at = now(), started_at = coalesce(started_at, now()) "
			   " WHERE run_id = $1 AND part_no = $2 AND heartbeat_at IS NOT DISTINCT FROM $4",
			   4, types, values, nulls);
	claimed = SPI_processed == 1;
	if (claimed)
	{
		owner_exec("UPDATE ecp.run SET state = 'running', started_at = coalesce(started_at, now()) "
				   " WHERE id = $1 AND state = 'pending'", 1, types, values, NULL);
		owner_exec("SELECT 1 FROM ecp.run WHERE id = $1 AND state = 'running'", 1, types, values, NULL);
		running = SPI_processed == 1;
	}
	if (running && config->recovering)
		owner_exec("SELECT ecp._flow_event($1, 'recovered', "
				   "  jsonb_build_object('part', $2, 'pid', pg_backend_pid(), "
				   "                     'interrupted_at', $4, 'resume_after_key', nullif($3, '')))",
				   4, types, values, nulls);
	else if (running)
		owner_exec("SELECT ecp._flow_event($1, 'worker started', "
				   "  jsonb_build_object('part', $2, 'pid', pg_backend_pid(), "
				   "                     'resume_after_key', nullif($3, '')))",
				   3, types, values, NULL);
	SPI_finish();
	ecp_commit_bookkeeping();
	if (!claimed)
		ereport(LOG,
				(errmsg("ecp worker for run " INT64_FORMAT " part %d stands down: another worker claimed the part",
						config->run_id, config->part_no)));
	return running;
}

/* The run was paused or cancelled: the part waits, unclaimed. */
void
ecp_checkpoint_release(EcpPartConfig *config)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no)};

	ecp_begin_bookkeeping();
	SPI_connect();
	owner_exec("UPDATE ecp.part SET state = 'pending', worker_pid = NULL, docs_per_second = NULL "
			   " WHERE run_id = $1 AND part_no = $2 AND state = 'running'",
			   2, types, values, NULL);
	SPI_finish();
	ecp_commit_bookkeeping();
}

void
ecp_checkpoint_set_total(EcpPartConfig *config, int64 total, bool is_estimate)
{
	Oid			types[3] = {INT8OID, INT8OID, BOOLOID};
	Datum		values[3] = {Int64GetDatum(config->run_id), Int64GetDatum(total),
	BoolGetDatum(is_estimate)};

	ecp_begin_bookkeeping();
	SPI_connect();
	owner_exec("UPDATE ecp.run SET total = $2, total_is_estimate = $3 WHERE id = $1",
			   3, types, values, NULL);
	SPI_finish();
	ecp_commit_bookkeeping();
	config->has_total = true;
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
 * The run's state ("gone" when deleted), inside an open SPI connection.
 * A static buffer: it is read once per batch and must not pile up.
 */
static char *
select_run_state(EcpPartConfig *config)
{
	static char state[NAMEDATALEN];
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(config->run_id)};

	owner_exec("SELECT state FROM ecp.run WHERE id = $1", 1, types, values, NULL);
	if (SPI_processed != 1)
		return "gone";
	strlcpy(state, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), sizeof(state));
	return state;
}

/* The run's state, read in a transaction of its own. */
char *
ecp_checkpoint_run_state(EcpPartConfig *config)
{
	char	   *state;

	ecp_begin_bookkeeping();
	SPI_connect();
	state = select_run_state(config);
	SPI_finish();
	ecp_commit_bookkeeping();
	return state;
}

/* A source that learns its size as it reads refines the run's estimate. */
static void
update_estimated_total(EcpPartConfig *config)
{
	int64		total = ecp_source_estimated_total(config);
	Oid			types[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(config->run_id), Int64GetDatum(total)};

	if (total >= 0)
		owner_exec("UPDATE ecp.run SET total = $2 WHERE id = $1 AND total_is_estimate",
				   2, types, values, NULL);
}

/*
 * After the sink acknowledged the batch: dead letters, then the checkpoint
 * with counters and heartbeat, all in one transaction.  Returns the run's
 * state, so a pause or cancel is seen at the next batch at the latest.
 */
char *
ecp_checkpoint_save(EcpPartConfig *config, EcpBatch *batch, EcpDocResult *results,
					double docs_per_second)
{
	Oid			types[6] = {INT8OID, INT4OID, TEXTOID, INT8OID, INT8OID, FLOAT8OID};
	Datum		values[6];
	int64		ok = 0,
				failed = 0;
	char	   *state;
	const char *last_key = batch->docs[batch->ndocs - 1].key;

	ecp_begin_bookkeeping();
	SPI_connect();
	for (int i = 0; i < batch->ndocs; i++)
	{
		if (results[i].outcome == ECP_DOC_OK)
			ok++;
		else if (results[i].outcome == ECP_DOC_FAILED)
		{
			failed++;
			insert_dead_letter(config, batch->docs[i].id, results[i].status,
							   results[i].error_type, results[i].reason);
		}
	}
	values[0] = Int64GetDatum(config->run_id);
	values[1] = Int32GetDatum(config->part_no);
	values[2] = CStringGetTextDatum(last_key);
	values[3] = Int64GetDatum(ok);
	values[4] = Int64GetDatum(failed);
	values[5] = Float8GetDatum(docs_per_second);
	owner_exec("UPDATE ecp.part SET last_key = $3, processed = processed + $4, "
			   "       failed = failed + $5, batches = batches + 1, heartbeat_at = now(), "
			   "       docs_per_second = $6, recoveries = 0 "
			   " WHERE run_id = $1 AND part_no = $2", 6, types, values, NULL);
	/* an error aborts the worker: the new position may be set before commit */
	if (config->last_key)
		pfree(config->last_key);
	config->last_key = MemoryContextStrdup(TopMemoryContext, last_key);
	config->processed += ok;
	config->failed += failed;
	update_estimated_total(config);
	state = select_run_state(config);
	SPI_finish();
	ecp_commit_bookkeeping();
	return state;
}

/* The part is done; the run succeeds when it was its last running part. */
void
ecp_checkpoint_finish(EcpPartConfig *config, int64 null_keys)
{
	Oid			types[3] = {INT8OID, INT4OID, INT8OID};
	Datum		values[3] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no),
	Int64GetDatum(null_keys)};

	ecp_begin_bookkeeping();
	SPI_connect();
	if (null_keys > 0)
		insert_dead_letter(config, NULL, 0, "null_key",
						   psprintf(INT64_FORMAT " rows have NULL in key column \"%s\"; they cannot be paged or given an _id",
									null_keys, config->key_column));
	owner_exec("UPDATE ecp.part SET state = 'done', finished_at = now(), heartbeat_at = now(), "
			   "       docs_per_second = NULL, failed = failed + $3 "
			   " WHERE run_id = $1 AND part_no = $2", 3, types, values, NULL);
	/*
	 * Lock the run first: two parts finishing at once would otherwise each
	 * see the other unfinished, and neither would end the run.
	 */
	owner_exec("SELECT 1 FROM ecp.run WHERE id = $1 FOR UPDATE", 1, types, values, NULL);
	owner_exec("UPDATE ecp.run SET state = 'succeeded', finished_at = now() "
			   " WHERE id = $1 AND state = 'running' "
			   "   AND NOT EXISTS (SELECT 1 FROM ecp.part WHERE run_id = $1 AND state <> 'done')",
			   1, types, values, NULL);
	SPI_finish();
	ecp_commit_bookkeeping();
	ereport(LOG,
			(errmsg("ecp run " INT64_FORMAT " part %d finished", config->run_id, config->part_no)));
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

static void
record_failure(EcpPartConfig *config, const char *error)
{
	Oid			types[3] = {INT8OID, TEXTOID, INT4OID};
	Datum		values[3] = {Int64GetDatum(config->run_id), CStringGetTextDatum(error),
	Int32GetDatum(config->part_no)};

	ecp_begin_bookkeeping();
	SPI_connect();
	owner_exec("UPDATE ecp.part SET state = 'failed', heartbeat_at = now(), docs_per_second = NULL "
			   " WHERE run_id = $1 AND part_no = $3", 3, types, values, NULL);
	owner_exec("UPDATE ecp.run SET state = 'failed', finished_at = now(), last_error = $2 "
			   " WHERE id = $1 AND state IN ('pending', 'running')", 2, types, values, NULL);
	SPI_finish();
	ecp_commit_bookkeeping();
}

/*
 * The run fails with error as last_error; its checkpoint is kept.  This
 * is the worker's last word, so it must not fail itself: when recording
 * the error fails (whatever the reason), a short fixed message is
 * recorded instead, and the first error goes to the server log.
 */
void
ecp_checkpoint_fail(EcpPartConfig *config, const char *error)
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
ecp_checkpoint_heartbeat(EcpPartConfig *config)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no)};

	ecp_begin_bookkeeping();
	SPI_connect();
	owner_exec("UPDATE ecp.part SET heartbeat_at = now() WHERE run_id = $1 AND part_no = $2",
			   2, types, values, NULL);
	SPI_finish();
	ecp_commit_bookkeeping();
}

/* A flow event of this part (retry, ...); content is a JSON object. */
void
ecp_checkpoint_event(EcpPartConfig *config, const char *action, const char *content_json)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[4];

	values[0] = Int64GetDatum(config->run_id);
	values[1] = CStringGetTextDatum(action);
	values[2] = CStringGetTextDatum(content_json);
	values[3] = Int32GetDatum(config->part_no);
	ecp_begin_bookkeeping();
	SPI_connect();
	owner_exec("SELECT ecp._flow_event($1, $2, jsonb_build_object('part', $4) || $3::jsonb)",
			   4, types, values, NULL);
	owner_exec("UPDATE ecp.part SET heartbeat_at = now() WHERE run_id = $1 AND part_no = $4",
			   4, types, values, NULL);
	SPI_finish();
	ecp_commit_bookkeeping();
}

/* An alert about this run: flow row, NOTIFY ecp_alert (at commit). */
void
ecp_checkpoint_alert(EcpPartConfig *config, const char *class, int attempts, const char *error)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT4OID, TEXTOID};
	Datum		values[4];

	values[0] = Int64GetDatum(config->run_id);
	values[1] = CStringGetTextDatum(class);
	values[2] = Int32GetDatum(attempts);
	values[3] = CStringGetTextDatum(error ? error : "");
	ecp_begin_bookkeeping();
	SPI_connect();
	owner_exec("SELECT ecp._alert($1, $2, $3, $4)", 4, types, values, NULL);
	SPI_finish();
	ecp_commit_bookkeeping();
}
