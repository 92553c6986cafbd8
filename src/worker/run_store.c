/*
 * run_store.c: the durable side of a worker, the rows of its run and
 * part: what it reads about them at start (task, consumer, run, part,
 * checked), the claim, the checkpoint it commits after each acknowledged
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

/*
 * A part that moves on (a checkpoint, its end, a claim, a release) is no
 * longer waiting to retry: ecp.progress stops saying so.
 */
#define CLEAR_RETRY \
	", retry_attempt = NULL, retry_at = NULL, retry_error = NULL, retry_class = NULL "
#define CONFIG_SQL \
	"SELECT t.name AS task_name, t.index_name, t.search_path, " \
	"       CASE WHEN p.source->>'query' ~ '^[0-9]{1,6}$' AND (p.source->>'query')::pg_catalog.int4 > 0 " \
	"            THEN t.queries[(p.source->>'query')::pg_catalog.int4] ELSE t.query END AS query, " \
	"       p.source->>'kind' AS part_kind, p.source->>'query' AS part_query, " \
	"       p.source->>'step' AS migrate_step, m.new_index, " \
	"       p.source->>'from' AS range_from, p.source->>'to' AS range_to, " \
	"       t.file, (SELECT pg_catalog.max(i.n) FROM ecp.run_id i WHERE i.run_id = r.id) AS ids_count, " \
	"       t.options->>'parallelism' AS parallelism, " \
	"       t.options->>'delete_missing' AS delete_missing, " \
	"       t.options->>'format' AS format, t.options->>'id_field' AS id_field, " \
	"       t.options->>'max_line_bytes' AS max_line_bytes, " \
	"       t.options->>'tag' AS tag, t.options->>'transform' AS transform, " \
	"       t.transform_fn::pg_catalog.oid AS transform_fn, " \
	"       t.options->>'routing_column' AS routing_column, " \
	"       t.options->>'version_column' AS version_column, " \
	"       t.options->>'pipeline' AS pipeline, t.options->>'refresh' AS refresh, " \
	"       c.kind AS consumer_kind, c.options->>'tag_header' AS tag_header, " \
	"       CASE WHEN pg_catalog.jsonb_typeof(c.options->'routes') = 'object' " \
	"            THEN c.options->'routes'->>(t.options->>'tag') END AS route_url, " \
	"       CASE WHEN pg_catalog.jsonb_typeof(c.options->'nodes') = 'array' " \
	"            THEN (SELECT pg_catalog.string_agg(n, E'\\n') FROM pg_catalog.jsonb_array_elements_text(c.options->'nodes') n) " \
	"       END AS nodes, " \
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
	"       r.state AS run_state, (p.total IS NOT NULL) AS has_total, " \
	"       p.last_key, p.position, p.line_no, p.processed, p.failed, " \
	"       r.owner::pg_catalog.oid AS run_owner, t.owner::pg_catalog.oid AS task_owner, " \
	"       c.owner::pg_catalog.oid AS consumer_owner, p.owner::pg_catalog.oid AS part_owner, " \
	"       a.rolname AS owner_name, " \
	"       (a.rolcanlogin AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil > pg_catalog.now())) AS owner_can_login " \
	"  FROM ecp.run r JOIN ecp.part p ON p.run_id = r.id " \
	"  LEFT JOIN ecp.task t ON t.id = r.task_id " \
	"  LEFT JOIN ecp.consumer c ON c.id = t.consumer_id " \
	"  LEFT JOIN pg_catalog.pg_authid a ON a.oid = r.owner::pg_catalog.oid " \
	"  LEFT JOIN ecp.migration m ON m.run_id = r.id " \
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

static const char *const consumer_kinds[] = {"elasticsearch", "http", NULL};

/*
 * A name that goes into a URL, a header or a function call: checked here
 * too (the row's triggers check it, but a row may have been written with
 * them off), so it cannot add a parameter, a header or SQL.
 */
static char *
checked_word(HeapTuple tuple, TupleDesc desc, const char *option, const char *allowed, int max_len)
{
	char	   *value = copy_text(tuple, desc, option);

	if (value == NULL)
		return NULL;
	if (strlen(value) == 0 || strlen(value) > (size_t) max_len || strspn(value, allowed) != strlen(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"%s\" \"%s\"", option, value),
				 errhint("Recreate the task with ecp.create_task.")));
	return value;
}

#define WORD_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"

/* Options of how a document is written: tag, transform, routing, versions. */
static void
load_write_options(EcpPartConfig *config, HeapTuple tuple, TupleDesc desc)
{
	config->tag = checked_word(tuple, desc, "tag", WORD_CHARS ".:-", 64);
	config->pipeline = checked_word(tuple, desc, "pipeline", WORD_CHARS ".-", 255);
	config->transform = copy_text(tuple, desc, "transform");
	config->transform_fn = oid_column(tuple, desc, "transform_fn");
	config->routing_column = copy_text(tuple, desc, "routing_column");
	config->version_column = copy_text(tuple, desc, "version_column");
	config->refresh = ecp_option_bool("task", "refresh", value_of(tuple, desc, "refresh"));
}

/* The task's fields, each checked: what a worker acts on. */
static void
load_task(EcpPartConfig *config, HeapTuple tuple, TupleDesc desc)
{
	const char *recreate = "Recreate the task with ecp.create_task.";

	config->task_name = copy_text(tuple, desc, "task_name");
	ecp_config_required(config->task_name, "the run's task", "The task was deleted; start a new run of an existing task.");
	config->task_id = long_column(tuple, desc, "task_id");
	config->raw_query = copy_text(tuple, desc, "query");
	config->index_name = copy_text(tuple, desc, "index_name");
	ecp_config_check_index(config->index_name);
	config->alias = config->index_name;
	config->new_index = copy_text(tuple, desc, "new_index");
	if (config->new_index)
	{
		ecp_config_check_index(config->new_index);
		if (config->kind != ECP_PART_MIGRATE)
			config->index_name = config->new_index;	/* a migration loads its new index */
	}
	config->search_path = copy_text(tuple, desc, "search_path");
	config->id_column = copy_text(tuple, desc, "id_column");
	config->key_column = copy_text(tuple, desc, "key_column");
	if (config->kind != ECP_PART_MIGRATE && !(config->kind == ECP_PART_FILE && config->ndjson) &&
		!(config->write_service && config->raw_query == NULL &&
		  (config->kind == ECP_PART_IDS || config->kind == ECP_PART_FILE)))
	{
		/* everything but an NDJSON file (or bare ids for a write service) is read through a query */
		ecp_config_required(config->raw_query, "the task's query", recreate);
		ecp_config_required(config->id_column, "the task's option \"id_column\"", recreate);
	}
	config->op = (char *) ecp_option_word("task", "op", value_of(tuple, desc, "op"));
	config->paging = (char *) ecp_option_word("task", "paging", value_of(tuple, desc, "paging"));
	config->batch_size = ecp_option_int("task", "batch_size", value_of(tuple, desc, "batch_size"));
	config->batch_bytes = ecp_option_int("task", "batch_bytes", value_of(tuple, desc, "batch_bytes"));
	config->exact_total = ecp_option_bool("task", "exact_total", value_of(tuple, desc, "exact_total"));
	config->max_retries = ecp_option_int("task", "max_retries", value_of(tuple, desc, "max_retries"));
	config->retry_base_ms = ecp_option_int("task", "retry_base_ms", value_of(tuple, desc, "retry_base_ms"));
	config->retry_max_ms = ecp_option_int("task", "retry_max_ms", value_of(tuple, desc, "retry_max_ms"));
	config->parallelism = ecp_option_int("task", "parallelism", value_of(tuple, desc, "parallelism"));
	config->delete_missing = ecp_option_bool("task", "delete_missing",
											 value_of(tuple, desc, "delete_missing"));
	/* a follower deletes the documents of rows that are gone */
	if (config->kind == ECP_PART_FOLLOW)
		config->delete_missing = true;
	load_write_options(config, tuple, desc);
}

static const char *const kind_words[] = {"query", "split", "range", "ids", "file", "migrate", "follow", NULL};
static const char *const step_words[] = {"create", "swap", "rollback", "drop_index", NULL};
static const char *const follow_step_words[] = {"capture", "apply", NULL};

/* A bound of a key range: NULL (open) or an integer. */
static bool
range_bound(const char *text, const char *what, int64 *value)
{
	if (text == NULL)
		return false;
	*value = ecp_config_int64(text, what);
	return true;
}

/* What the part reads (ecp.part.source), each field checked. */
static void
load_part_source(EcpPartConfig *config, HeapTuple tuple, TupleDesc desc)
{
	const char *kind = ecp_config_word(value_of(tuple, desc, "part_kind"), "source kind", kind_words);
	const EcpPartKind kinds[] = {ECP_PART_QUERY, ECP_PART_SPLIT, ECP_PART_RANGE, ECP_PART_IDS, ECP_PART_FILE,
	ECP_PART_MIGRATE, ECP_PART_FOLLOW};

	config->kind = ECP_PART_QUERY;
	for (int i = 0; kind_words[i]; i++)
		if (kind && strcmp(kind, kind_words[i]) == 0)
			config->kind = kinds[i];
	config->query_no = ecp_config_int(value_of(tuple, desc, "part_query"), "source query", 0, 0, 4096);
	config->has_from = range_bound(value_of(tuple, desc, "range_from"), "range from", &config->range_from);
	config->has_to = range_bound(value_of(tuple, desc, "range_to"), "range to", &config->range_to);
	config->ids_count = long_column(tuple, desc, "ids_count");
	if (config->kind == ECP_PART_MIGRATE)
		config->migrate_step = (char *) ecp_config_word(value_of(tuple, desc, "migrate_step"),
														"migration step", step_words);
	if (config->kind == ECP_PART_FOLLOW)
		config->follow_step = (char *) ecp_config_word(value_of(tuple, desc, "migrate_step"),
													   "follow step", follow_step_words);
	if (config->kind == ECP_PART_FILE)
	{
		const char *format;

		config->file = copy_text(tuple, desc, "file");
		ecp_config_required(config->file, "the task's file", "Recreate the task with ecp.create_task(..., file => ...).");
		format = ecp_option_word("task", "format", value_of(tuple, desc, "format"));
		config->ndjson = format != NULL && strcmp(format, "ndjson") == 0;
		config->id_field = copy_text(tuple, desc, "id_field");
		if (config->id_field == NULL)
			config->id_field = "id";
		config->max_line_bytes = ecp_option_int("task", "max_line_bytes",
												value_of(tuple, desc, "max_line_bytes"));
	}
}

/* Option nodes, one URL per line (each checked when the sink opens). */
static void
load_nodes(EcpPartConfig *config, char *node_list)
{
	char	   *copy = MemoryContextStrdup(TopMemoryContext, node_list);
	char	   *line;
	char	   *save = NULL;
	int			n = 1;

	for (char *c = copy; *c; c++)
		n += *c == '\n';
	config->nodes = MemoryContextAllocZero(TopMemoryContext, sizeof(char *) * n);
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		config->nodes[config->nnodes++] = line;
}

/* The consumer's fields, each checked; credentials into a header. */
static void
load_consumer(EcpPartConfig *config, HeapTuple tuple, TupleDesc desc)
{
	char	   *user = value_of(tuple, desc, "username");
	char	   *password = value_of(tuple, desc, "password");
	char	   *api_key = value_of(tuple, desc, "api_key");

	char	   *route = copy_text(tuple, desc, "route_url");
	char	   *node_list = value_of(tuple, desc, "nodes");

	config->consumer_id = long_column(tuple, desc, "consumer_id");
	config->url = copy_text(tuple, desc, "url");
	ecp_config_check_url(config->url);
	config->tag_header = checked_word(tuple, desc, "tag_header", WORD_CHARS "-", 64);
	config->route_why = config->tag == NULL ? "no tag: default endpoint" :
		route ? psprintf("route %s", config->tag) :
		psprintf("no route for %s: default endpoint", config->tag);
	if (route)
		config->url = route;	/* the route alone: nodes are the default endpoint's */
	else if (node_list)
		load_nodes(config, node_list);
	config->ca_file = copy_text(tuple, desc, "ca_file");
	config->insecure = ecp_option_bool("consumer", "insecure", value_of(tuple, desc, "insecure"));
	config->gzip = ecp_option_bool("consumer", "gzip", value_of(tuple, desc, "gzip"));
	config->connect_timeout_ms = ecp_option_int("consumer", "connect_timeout_ms",
												value_of(tuple, desc, "connect_timeout_ms"));
	config->request_timeout_ms = ecp_option_int("consumer", "request_timeout_ms",
												value_of(tuple, desc, "request_timeout_ms"));
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
ecp_store_load(EcpPartConfig *config)
{
	MemoryContext back_to;
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no)};
	HeapTuple	tuple;
	TupleDesc	desc;

	back_to = ecp_begin_bookkeeping();
	SPI_connect();
	if (SPI_execute_with_args(CONFIG_SQL, 2, types, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
	{
		SPI_finish();
		ecp_commit_bookkeeping(back_to);
		config->progress.run_state = ECP_RUN_GONE;
		return;
	}
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	config->progress.run_state = ecp_run_state_of(value_of(tuple, desc, "run_state"));
	config->progress.has_total = bool_column(tuple, desc, "has_total");
	config->progress.last_key = copy_text(tuple, desc, "last_key");
	config->progress.position = long_column(tuple, desc, "position");
	config->progress.line_no = long_column(tuple, desc, "line_no");
	config->progress.processed = long_column(tuple, desc, "processed");
	config->progress.failed = long_column(tuple, desc, "failed");
	if (config->progress.run_state == ECP_RUN_PENDING || config->progress.run_state == ECP_RUN_RUNNING)
	{
		load_owner(config, tuple, desc);
		config->write_service = strcmp(ecp_config_word(value_of(tuple, desc, "consumer_kind"), "kind",
													   consumer_kinds), "http") == 0;
		load_part_source(config, tuple, desc);
		load_task(config, tuple, desc);
		load_consumer(config, tuple, desc);
		config->target_unrestricted = ecp_host_policy_role_exempt(config->owner);
		ecp_since_load(config);
	}
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
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
 * SPI connection; the name goes to TopMemoryContext.
 */
static void
read_dual_index(EcpPartConfig *config)
{
	Oid			types[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {Int64GetDatum(config->consumer_id), CStringGetTextDatum(config->index_name),
	Int64GetDatum(config->run_id)};
	char	   *dual = NULL;
	StringInfoData content;

	if (config->write_service || config->kind == ECP_PART_MIGRATE)
		return;
	owner_exec("SELECT ecp._dual_index($1, $2, $3)", 3, types, values, NULL);
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
	owner_exec(psprintf("SELECT ecp._flow_event($3, %s, $2::pg_catalog.jsonb)",
						quote_literal_cstr(ecp_flow_action_names[dual ? ECP_FLOW_DUAL_WRITE : ECP_FLOW_DUAL_WRITE_ENDED])),
			   3, types, values, NULL);
	config->dual_index = dual ? MemoryContextStrdup(TopMemoryContext, dual) : NULL;
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
	Oid			types[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {Int64GetDatum(config->consumer_id),
	CStringGetTextDatum(config->dual_index ? config->dual_index : ""), Int64GetDatum(written)};

	if (config->dual_index == NULL || written == 0)
		return;
	owner_exec("UPDATE ecp.migration SET dual_writes = dual_writes + $3 "
			   " WHERE consumer_id = $1 AND new_index = $2", 3, types, values, NULL);
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
		owner_exec(psprintf("SELECT ecp._flow_event($1, %s, "
							"  jsonb_build_object('part', $2, 'pid', pg_backend_pid(), "
							"                     'interrupted_at', $4, 'resume_after_key', nullif($3, '')))",
							quote_literal_cstr(ecp_flow_action_names[ECP_FLOW_RECOVERED])),
				   4, types, values, nulls);
	else if (running)
		owner_exec(psprintf("SELECT ecp._flow_event($1, %s, "
							"  jsonb_build_object('part', $2, 'pid', pg_backend_pid(), "
							"                     'resume_after_key', nullif($3, '')))",
							quote_literal_cstr(ecp_flow_action_names[ECP_FLOW_WORKER_STARTED])),
				   3, types, values, NULL);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	if (!claimed)
		ereport(LOG,
				(errmsg("ecp worker for run " INT64_FORMAT " part %d stands down: another worker claimed the part",
						config->run_id, config->part_no)));
	return running;
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

/* The new position, in the worker's memory (the batch's is reset). */
static void
move_position(EcpPartConfig *config, const EcpPosition *end)
{
	if (config->progress.last_key)
		pfree(config->progress.last_key);
	config->progress.last_key = end->last_key ? MemoryContextStrdup(TopMemoryContext, end->last_key) : NULL;
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
	Oid			types[12] = {INT8OID, INT4OID, TEXTOID, INT8OID, INT8OID, FLOAT8OID,
	INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum		values[12];
	char		nulls[12] = {' ', ' ', batch->end.last_key ? ' ' : 'n', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
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
	owner_exec("UPDATE ecp.part SET last_key = $3, processed = processed + $4, "
			   "       failed = failed + $5, batches = batches + 1, heartbeat_at = now(), "
			   "       docs_per_second = $6, recoveries = 0, position = $7, line_no = $8, "
			   "       deleted = deleted + $9, missing = missing + $10, "
			   "       skipped = skipped + $11, skipped_stale = skipped_stale + $12" CLEAR_RETRY
			   " WHERE run_id = $1 AND part_no = $2", 12, types, values, nulls);
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
	state = select_run_state(config);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	return state;
}

/*
 * Cut a split part into key ranges (ecp._split_part); the number of parts
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
	owner_exec("SELECT ecp._split_part($1, $2, $3, $4)", 4, types, values, nulls);
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d;

		ecp_require_column_type(SPI_tuptable->tupdesc, 1, INT4OID, "ecp._split_part");
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

/* The part is done; the run succeeds when it was its last running part. */
void
ecp_store_finish(EcpPartConfig *config, int64 null_keys)
{
	MemoryContext back_to;
	Oid			types[3] = {INT8OID, INT4OID, INT8OID};
	Datum		values[3] = {Int64GetDatum(config->run_id), Int32GetDatum(config->part_no),
	Int64GetDatum(null_keys)};

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
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
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
		"SELECT ecp._flow_event($1, $2, pg_catalog.jsonb_build_object('part', $4) || $3::pg_catalog.jsonb)",
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
		"SELECT ecp._flow_event($1, $2, pg_catalog.jsonb_build_object('part', $4) || $3::pg_catalog.jsonb)",
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
	const char *const statements[] = {"SELECT ecp._alert($1, $2, $3, $4)", NULL};

	values[0] = Int64GetDatum(config->run_id);
	values[1] = CStringGetTextDatum(class);
	values[2] = Int32GetDatum(attempts);
	values[3] = CStringGetTextDatum(error ? error : "");
	store_statements(statements, 4, types, values, NULL);
}
