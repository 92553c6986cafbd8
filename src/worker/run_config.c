/*
 * run_config.c: what a worker reads about its run at start: the task,
 * consumer, run and part rows (ecp_store_load), each field checked by
 * config_check.c before anything acts on it.  Read as bookkeeping
 * (sandbox.c): the worker's own user with a pinned search_path, one fixed
 * statement addressed by the run's and part's ids.
 */
#include "sync.h"
#include "host_policy.h"

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
copy_text(MemoryContext memory, HeapTuple tuple, TupleDesc desc, const char *column)
{
	char	   *value = SPI_getvalue(tuple, desc, SPI_fnumber(desc, column));
	char	   *copy;

	if (value == NULL)
		return NULL;
	copy = MemoryContextStrdup(memory, value);
	return copy;
}

static char *
basic_auth(MemoryContext memory, const char *user, const char *password)
{
	char	   *plain = psprintf("%s:%s", user, password);
	int			len = strlen(plain);
	int			enc_len = pg_b64_enc_len(len);
	char	   *encoded = palloc(enc_len + 1);
	int			n = pg_b64_encode(plain, len, encoded, enc_len);

	encoded[Max(n, 0)] = '\0';
	return MemoryContextStrdup(memory, psprintf("Basic %s", encoded));
}

/*
 * Every field as text (options too: a cast in SQL would fail the whole
 * statement on one bad value), and the owners of all four rows.
 */
#define CONFIG_SQL \
	"SELECT t.name AS task_name, t.index_name, t.search_path, " \
	"       CASE WHEN p.source->>'query' ~ '^[0-9]{1,6}$' AND (p.source->>'query')::pg_catalog.int4 > 0 " \
	"            THEN t.queries[(p.source->>'query')::pg_catalog.int4] ELSE t.query END AS query, " \
	"       p.source->>'kind' AS part_kind, p.source->>'query' AS part_query, " \
	"       p.source->>'step' AS migrate_step, m.new_index, " \
	"       p.source->>'from' AS range_from, p.source->>'to' AS range_to, " \
	"       t.file, (SELECT pg_catalog.max(i.n) FROM ecp.run_id i WHERE i.run_id = r.id) AS ids_count, " \
	"       CASE WHEN p.source->>'kind' IN ('ids', 'index_ids') AND t.query IS NULL THEN t.queries END AS id_queries, " \
	"       (r.action = 'verify') AS verify, r.verify_with->>'sample' AS verify_sample, " \
	"       (r.repair_of IS NOT NULL) AS repair, " \
	"       t.options->>'shard_of' AS shard_of, " \
	"       t.options->>'parallelism' AS parallelism, " \
	"       t.options->>'delete_missing' AS delete_missing, " \
	"       t.options->>'format' AS format, t.options->>'id_field' AS id_field, " \
	"       t.options->>'max_line_bytes' AS max_line_bytes, " \
	"       t.options->>'tag' AS tag, t.options->>'transform' AS transform, " \
	"       t.transform_fn::pg_catalog.oid AS transform_fn, " \
	"       t.options->>'routing_column' AS routing_column, " \
	"       t.options->>'version_column' AS version_column, " \
	"       t.options->>'pipeline' AS pipeline, t.options->>'refresh' AS refresh, " \
	"       (t.options->>'mode' = 'alias_swap') AS alias_swap, " \
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
	config->owner_name = MemoryContextStrdup(config->memory, name);
}

static const char *const consumer_kinds[] = {"elasticsearch", "http", NULL};

/*
 * A name that goes into a URL, a header or a function call: checked here
 * too (the row's triggers check it, but a row may have been written with
 * them off), so it cannot add a parameter, a header or SQL.
 */
static char *
checked_word(MemoryContext memory, HeapTuple tuple, TupleDesc desc, const char *option, const char *allowed, int max_len)
{
	char	   *value = copy_text(memory, tuple, desc, option);

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
	config->tag = checked_word(config->memory, tuple, desc, "tag", WORD_CHARS ".:-", 64);
	config->pipeline = checked_word(config->memory, tuple, desc, "pipeline", WORD_CHARS ".-", 255);
	config->transform = copy_text(config->memory, tuple, desc, "transform");
	config->transform_fn = oid_column(tuple, desc, "transform_fn");
	config->routing_column = copy_text(config->memory, tuple, desc, "routing_column");
	config->version_column = copy_text(config->memory, tuple, desc, "version_column");
	config->refresh = ecp_option_bool("task", "refresh", value_of(tuple, desc, "refresh"));
}

/*
 * An id part of a task of queries looks its ids up in every query: all
 * of them, as stored (each is checked when the source opens).
 */
static void
load_id_queries(EcpPartConfig *config, HeapTuple tuple, TupleDesc desc)
{
	int			attno = SPI_fnumber(desc, "id_queries");
	bool		isnull;
	Datum		queries;

	config->shard_of = copy_text(config->memory, tuple, desc, "shard_of");
	ecp_require_column_type(desc, attno, TEXTARRAYOID, "the task's queries");
	queries = SPI_getbinval(tuple, desc, attno, &isnull);
	config->queries = isnull ? NULL : ecp_config_queries(config->memory, queries, config->task_name, &config->nqueries);
	if (isnull)
		config->nqueries = 0;
}

/* The task's fields, each checked: what a worker acts on. */
/* Verify option sample: 0 < s <= 1 (ecp_internal._check_verify_options), 1 when absent. */
static double
verify_sample(const char *text)
{
	char	   *end;
	double		sample;

	if (text == NULL)
		return 1.0;
	errno = 0;
	sample = strtod(text, &end);
	if (errno != 0 || *end != '\0' || !(sample > 0 && sample <= 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("verify option \"sample\" is \"%s\", not a number above 0 and at most 1", text),
				 errhint("Start the verify again with ecp.verify(task, '{\"sample\": 0.1}').")));
	return sample;
}

static void
load_task(EcpPartConfig *config, HeapTuple tuple, TupleDesc desc)
{
	const char *recreate = "Recreate the task with ecp.create_task.";

	config->task_name = copy_text(config->memory, tuple, desc, "task_name");
	ecp_config_required(config->task_name, "the run's task", "The task was deleted; start a new run of an existing task.");
	config->task_id = long_column(tuple, desc, "task_id");
	config->raw_query = copy_text(config->memory, tuple, desc, "query");
	config->index_name = copy_text(config->memory, tuple, desc, "index_name");
	ecp_config_check_index(config->index_name);
	config->alias = config->index_name;
	config->new_index = copy_text(config->memory, tuple, desc, "new_index");
	if (config->new_index)
	{
		ecp_config_check_index(config->new_index);
		if (config->kind != ECP_PART_MIGRATE)
			config->index_name = config->new_index;	/* a migration loads its new index */
	}
	config->writes_alias = bool_column(tuple, desc, "alias_swap") && config->new_index == NULL;
	config->search_path = copy_text(config->memory, tuple, desc, "search_path");
	config->id_column = copy_text(config->memory, tuple, desc, "id_column");
	config->key_column = copy_text(config->memory, tuple, desc, "key_column");
	/* id_column '': documents without _id (checked with the task: paging cursor, op create) */
	config->no_id = config->id_column != NULL && config->id_column[0] == '\0';
	load_id_queries(config, tuple, desc);
	if (config->nqueries > 0)
		ecp_config_required(config->id_column, "the task's option \"id_column\"", recreate);
	else if (config->kind != ECP_PART_MIGRATE && !(config->kind == ECP_PART_FILE && config->ndjson) &&
		!(config->write_service && config->raw_query == NULL &&
		  (config->kind == ECP_PART_IDS || config->kind == ECP_PART_FILE)))
	{
		/* everything but an NDJSON file (or bare ids for a write service) is read through a query */
		ecp_config_required(config->raw_query, "the task's query", recreate);
		if (!config->no_id)
			ecp_config_required(config->id_column, "the task's option \"id_column\"", recreate);
	}
	config->op = (char *) ecp_option_word("task", "op", value_of(tuple, desc, "op"));
	config->paging = (char *) ecp_option_word("task", "paging", value_of(tuple, desc, "paging"));
	config->reads_cursor = strcmp(config->paging, "cursor") == 0 && config->kind == ECP_PART_QUERY;
	config->batch_size = ecp_option_int("task", "batch_size", value_of(tuple, desc, "batch_size"));
	config->batch_bytes = ecp_option_int("task", "batch_bytes", value_of(tuple, desc, "batch_bytes"));
	config->exact_total = ecp_option_bool("task", "exact_total", value_of(tuple, desc, "exact_total"));
	config->max_retries = ecp_option_int("task", "max_retries", value_of(tuple, desc, "max_retries"));
	config->retry_base_ms = ecp_option_int("task", "retry_base_ms", value_of(tuple, desc, "retry_base_ms"));
	config->retry_max_ms = ecp_option_int("task", "retry_max_ms", value_of(tuple, desc, "retry_max_ms"));
	config->parallelism = ecp_option_int("task", "parallelism", value_of(tuple, desc, "parallelism"));
	config->delete_missing = ecp_option_bool("task", "delete_missing",
											 value_of(tuple, desc, "delete_missing"));
	/*
	 * A follower deletes the documents of rows that are gone, and so does
	 * a repair (the extra documents a verify found); a verify's walk of
	 * the index finds them by the same lookup.
	 */
	if (config->kind == ECP_PART_FOLLOW || config->kind == ECP_PART_INDEX_IDS ||
		bool_column(tuple, desc, "repair"))
		config->delete_missing = true;
	config->verify = bool_column(tuple, desc, "verify");
	config->verify_sample = verify_sample(value_of(tuple, desc, "verify_sample"));
	load_write_options(config, tuple, desc);
}

static const char *const kind_words[] = {"query", "split", "range", "ids", "file", "migrate", "follow",
"index_ids", NULL};
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
	ECP_PART_MIGRATE, ECP_PART_FOLLOW, ECP_PART_INDEX_IDS};

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

		config->file = copy_text(config->memory, tuple, desc, "file");
		ecp_config_required(config->file, "the task's file", "Recreate the task with ecp.create_task(..., file => ...).");
		format = ecp_option_word("task", "format", value_of(tuple, desc, "format"));
		config->ndjson = format != NULL && strcmp(format, "ndjson") == 0;
		config->id_field = copy_text(config->memory, tuple, desc, "id_field");
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
	char	   *copy = MemoryContextStrdup(config->memory, node_list);
	char	   *line;
	char	   *save = NULL;
	int			n = 1;

	for (char *c = copy; *c; c++)
		n += *c == '\n';
	config->nodes = MemoryContextAllocZero(config->memory, sizeof(char *) * n);
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

	char	   *route = copy_text(config->memory, tuple, desc, "route_url");
	char	   *node_list = value_of(tuple, desc, "nodes");

	config->consumer_id = long_column(tuple, desc, "consumer_id");
	config->url = copy_text(config->memory, tuple, desc, "url");
	ecp_config_check_url(config->url);
	config->tag_header = checked_word(config->memory, tuple, desc, "tag_header", WORD_CHARS "-", 64);
	config->route_why = config->tag == NULL ? "no tag: default endpoint" :
		route ? psprintf("route %s", config->tag) :
		psprintf("no route for %s: default endpoint", config->tag);
	if (route)
		config->url = route;	/* the route alone: nodes are the default endpoint's */
	else if (node_list)
		load_nodes(config, node_list);
	config->ca_file = copy_text(config->memory, tuple, desc, "ca_file");
	config->insecure = ecp_option_bool("consumer", "insecure", value_of(tuple, desc, "insecure"));
	config->gzip = ecp_option_bool("consumer", "gzip", value_of(tuple, desc, "gzip"));
	config->connect_timeout_ms = ecp_option_int("consumer", "connect_timeout_ms",
												value_of(tuple, desc, "connect_timeout_ms"));
	config->request_timeout_ms = ecp_option_int("consumer", "request_timeout_ms",
												value_of(tuple, desc, "request_timeout_ms"));
	if (user && password)
		config->auth_header = basic_auth(config->memory, user, password);
	else if (api_key)
		config->auth_header = MemoryContextStrdup(config->memory, psprintf("ApiKey %s", api_key));
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
	config->progress.last_key = copy_text(config->memory, tuple, desc, "last_key");
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
