/*
 * migrate.c: a migration with no downtime (task option mode alias_swap).
 *
 * A migration run has three stages of parts (the launcher starts a part
 * only when every part of a lower stage is done):
 *   0  create: the new index <alias>-<run id>, with the task's settings and
 *      mappings, no replicas and no refresh while it loads;
 *   1  the load parts, as any run's, writing to the new index;
 *   2  swap: the final replicas and refresh interval, a refresh, the count
 *      checked against what the run indexed, then one _aliases call that
 *      takes the alias from the old indices and gives it to the new one
 *      as its write index, then (keep_old false) the old indices dropped.
 * Until the swap the alias and the old index are untouched, so a failure
 * anywhere before it leaves searches as they were, and ecp.resume goes on
 * from the parts' checkpoints.  Every step is a flow row and moves
 * ecp.migration.step.  Two maintenance runs use the same machinery:
 * rollback (the alias back to the indices it had before the last swap)
 * and drop_index (the new index of a migration cancelled before its swap).
 *
 * Each step is idempotent, as a worker may die in the middle of one: an
 * index that already exists was created by this run (its name holds the
 * run id), and the indices the alias had are recorded before the
 * _aliases call, so a swap that is done again does not lose them.
 */
#include "sink.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "bulk_response.h"
#include "es_answers.h"
#include "json_build.h"

/* A migration's row, as the step that acts on it reads it. */
typedef struct Migration
{
	int64		run_id;			/* the migration's run */
	char	   *alias;
	char	   *new_index;
	char	   *load_settings;	/* JSON texts */
	char	   *final_settings;
	char	   *mappings;		/* or NULL */
	bool		keep_old;
	char	  **old;			/* old_indices, or NULL when not recorded yet */
	int			nold;
	int64		indexed;		/* documents the load parts indexed */
	int64		dual_writes;
	EcpSink    *sink;			/* the part's: every request goes through it */
} Migration;

/* What each step reads: its own run's migration, or the task's latest one. */
#define MIGRATION_COLUMNS \
	"SELECT m.run_id, m.alias, m.new_index, m.load_settings::pg_catalog.text, m.final_settings::pg_catalog.text, " \
	"       m.mappings::pg_catalog.text, m.keep_old, pg_catalog.array_to_string(m.old_indices, E'\\n'), " \
	"       (m.old_indices IS NOT NULL), " \
	"       (SELECT coalesce(pg_catalog.sum(p.processed), 0) FROM ecp.part p WHERE p.run_id = m.run_id AND p.stage = 1), " \
	"       m.dual_writes FROM ecp.migration m "

static const char *
migration_sql(const char *step)
{
	if (strcmp(step, "rollback") == 0)
		return MIGRATION_COLUMNS
			" WHERE m.task_id = (SELECT task_id FROM ecp.run WHERE id = $1) AND m.state = 'swapped' "
			" ORDER BY m.swapped_at DESC LIMIT 1";
	if (strcmp(step, "drop_index") == 0)
		return MIGRATION_COLUMNS
			" JOIN ecp.run r ON r.id = m.run_id "
			" WHERE m.task_id = (SELECT task_id FROM ecp.run WHERE id = $1) AND m.state = 'loading' "
			"   AND r.state = 'cancelled' ORDER BY m.run_id DESC LIMIT 1";
	return MIGRATION_COLUMNS " WHERE m.run_id = $1";
}

static char *
column(int n)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, n);

	return v ? pstrdup(v) : NULL;
}

/* The old indices, one per line, as an array (empty: the alias had none). */
static void
split_old(Migration *m, const char *lines, bool recorded)
{
	char	   *copy = pstrdup(lines ? lines : "");
	char	   *save = NULL;

	m->old = NULL;
	m->nold = 0;
	if (!recorded)
		return;
	m->old = palloc0(sizeof(char *) * (strlen(copy) / 2 + 2));
	for (char *name = strtok_r(copy, "\n", &save); name; name = strtok_r(NULL, "\n", &save))
		m->old[m->nold++] = name;
}

/* Read the migration a step acts on; false when there is none. */
static bool
read_migration(EcpPartConfig *config, Migration *m)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext back_to = ecp_begin_bookkeeping();
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(config->run_id)};
	bool		found;

	SPI_connect();
	if (SPI_execute_with_args(migration_sql(config->migrate_step), 1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "ecp: could not read the migration of run " INT64_FORMAT, config->run_id);
	found = SPI_processed == 1;
	if (found)
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		m->run_id = atoll(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		m->alias = column(2);
		m->new_index = column(3);
		m->load_settings = column(4);
		m->final_settings = column(5);
		m->mappings = column(6);
		m->keep_old = strcmp(column(7), "t") == 0;
		split_old(m, column(8), strcmp(column(9), "t") == 0);
		m->indexed = atoll(column(10));
		m->dual_writes = atoll(column(11));
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
	return found;
}

/* Move the migration's row (a fixed statement with $1 its run, $2 a text). */
static void
update_migration(const Migration *m, const char *sql, const char *text)
{
	MemoryContext back_to = ecp_begin_bookkeeping();
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(m->run_id), CStringGetTextDatum(text ? text : "")};

	SPI_connect();
	if (SPI_execute_with_args(sql, 2, types, values, NULL, false, 0) < 0)
		elog(ERROR, "ecp: could not update the migration of run " INT64_FORMAT, m->run_id);
	SPI_finish();
	ecp_commit_bookkeeping(back_to);
}

static void
set_step(const Migration *m, const char *step)
{
	update_migration(m, "UPDATE ecp.migration SET step = $2 WHERE run_id = $1", step);
}

/* ---------------------------------------------------------------------------
 * create: the new index, for the load.
 * ------------------------------------------------------------------------- */

/* An index named like the alias would keep the alias from being created. */
static EcpSendStatus
check_alias_name(EcpPartConfig *config, Migration *m, char **error)
{
	EcpAnswer		answer;
	int			n;
	char	  **names;
	/* the names are all it needs: not the mappings and settings of each index */
	EcpSendStatus status = ecp_sink_request(m->sink, config, ECP_ANSWER_INDICES, "GET",
								   psprintf("/%s?filter_path=*.settings.index.uuid", m->alias), NULL,
								   &answer, error);

	if (status != ECP_SEND_DONE || answer.code == 404)
		return status;
	if (!ecp_answer_ok(&answer))
		return ecp_answer_refused(config, psprintf("GET /%s", m->alias), &answer, error);
	names = ecp_answer_index_keys(config, &answer, &n);
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], m->alias) == 0)
		{
			*error = psprintf("\"%s\" is an index, not an alias: a migration cannot point an alias of that name at a new index; "
							  "reindex it under another name and give it the alias, or give the task another alias",
							  m->alias);
			return ECP_SEND_FAILED;
		}
	return ECP_SEND_DONE;
}

static EcpSendStatus
create_step(EcpPartConfig *config, void *arg, char **error)
{
	Migration  *m = arg;
	EcpAnswer		answer;
	StringInfoData body;
	StringInfoData event;
	EcpSendStatus status = check_alias_name(config, m, error);

	if (status != ECP_SEND_DONE)
		return status;
	ecp_json_object_new(&body);
	ecp_json_key_raw(&body, "settings", m->load_settings);
	if (m->mappings)
		ecp_json_key_raw(&body, "mappings", m->mappings);
	ecp_json_end_object(&body);
	status = ecp_sink_request(m->sink, config, ECP_ANSWER_ACK, "PUT", psprintf("/%s", m->new_index), body.data, &answer, error);
	if (status != ECP_SEND_DONE)
		return status;
	if (!ecp_answer_ok(&answer) && !(answer.code == 400 && strstr(answer.body, "resource_already_exists_exception")))
		return ecp_answer_refused(config, psprintf("creating index \"%s\"", m->new_index), &answer, error);
	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "index", m->new_index);
	if (ecp_answer_ok(&answer))
	{
		ecp_json_key_string(&event, "alias", m->alias);
		ecp_json_key_raw(&event, "settings", m->load_settings);
	}
	else
		ecp_json_key_string(&event, "why", "created before this worker (a resumed run)");
	ecp_json_end_object(&event);
	ecp_store_event(config, ecp_answer_ok(&answer) ? ECP_FLOW_INDEX_CREATED : ECP_FLOW_INDEX_EXISTS, event.data);
	set_step(m, "load");
	return ECP_SEND_DONE;
}

/* ---------------------------------------------------------------------------
 * swap: final settings, the count, the alias, the old indices.
 * ------------------------------------------------------------------------- */

static EcpSendStatus
settings_step(EcpPartConfig *config, Migration *m, char **error)
{
	EcpAnswer		answer;
	EcpSendStatus status;
	StringInfoData event;

	set_step(m, "settings");
	status = ecp_sink_request(m->sink, config, ECP_ANSWER_ACK, "PUT", psprintf("/%s/_settings", m->new_index), m->final_settings,
					 &answer, error);
	if (status != ECP_SEND_DONE)
		return status;
	if (!ecp_answer_ok(&answer))
		return ecp_answer_refused(config, psprintf("restoring the settings of \"%s\"", m->new_index), &answer, error);
	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "index", m->new_index);
	ecp_json_key_raw(&event, "settings", m->final_settings);
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_SETTINGS_RESTORED, event.data);
	return ECP_SEND_DONE;
}

/*
 * The new index must hold what the load indexed.  Other runs writing to
 * the alias meanwhile also wrote to the new index (dual writes): rows
 * added or deleted then make the two differ, so with dual writes the
 * count is recorded, not required.
 */
static EcpSendStatus
count_step(EcpPartConfig *config, Migration *m, char **error)
{
	EcpAnswer		answer;
	int64		count;
	EcpSendStatus status;
	StringInfoData event;

	set_step(m, "count");
	status = ecp_sink_request(m->sink, config, ECP_ANSWER_ACK, "POST", psprintf("/%s/_refresh", m->new_index), NULL, &answer, error);
	if (status != ECP_SEND_DONE)
		return status;
	if (!ecp_answer_ok(&answer))
		return ecp_answer_refused(config, psprintf("refreshing \"%s\"", m->new_index), &answer, error);
	status = ecp_sink_request(m->sink, config, ECP_ANSWER_COUNT, "GET", psprintf("/%s/_count", m->new_index), NULL, &answer, error);
	if (status != ECP_SEND_DONE)
		return status;
	if (!ecp_answer_ok(&answer))
		return ecp_answer_refused(config, psprintf("counting \"%s\"", m->new_index), &answer, error);
	count = ecp_answer_count_of(config, &answer);
	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "index", m->new_index);
	ecp_json_key_int(&event, "count", count);
	ecp_json_key_int(&event, "indexed", m->indexed);
	ecp_json_key_int(&event, "dual_writes", m->dual_writes);
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_COUNT_CHECKED, event.data);
	if (count != m->indexed && m->dual_writes == 0)
	{
		*error = psprintf("the new index \"%s\" holds " INT64_FORMAT " documents but the run indexed " INT64_FORMAT
						  "; the alias \"%s\" was not swapped (a non-unique id column, or a writer other than ecp?); "
						  "ecp.resume checks again",
						  m->new_index, count, m->indexed, m->alias);
		return ECP_SEND_FAILED;
	}
	return ECP_SEND_DONE;
}

/* What the alias points at now (404: nothing), less the new index. */
static EcpSendStatus
alias_targets(EcpPartConfig *config, Migration *m, char ***targets, int *ntargets, char **error)
{
	EcpAnswer		answer;
	char	  **names;
	int			n;
	EcpSendStatus status = ecp_sink_request(m->sink, config, ECP_ANSWER_INDICES, "GET", psprintf("/_alias/%s", m->alias), NULL,
								   &answer, error);

	*targets = NULL;
	*ntargets = 0;
	if (status != ECP_SEND_DONE || answer.code == 404)
		return status;
	if (!ecp_answer_ok(&answer))
		return ecp_answer_refused(config, psprintf("reading alias \"%s\"", m->alias), &answer, error);
	names = ecp_answer_index_keys(config, &answer, &n);
	*targets = palloc0(sizeof(char *) * (n + 1));
	for (int i = 0; i < n; i++)
	{
		/* the names go into URLs and a text[]: only what ES allows for an index */
		ecp_config_check_index(names[i]);
		if (strcmp(names[i], m->new_index) != 0)
			(*targets)[(*ntargets)++] = names[i];
	}
	return ECP_SEND_DONE;
}

static char *
text_array_literal(char **names, int n)
{
	StringInfoData out;

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	for (int i = 0; i < n; i++)
		appendStringInfo(&out, "%s\"%s\"", i ? "," : "", names[i]);	/* checked: no " or \ */
	appendStringInfoChar(&out, '}');
	return out.data;
}

/*
 * One _aliases call: the alias off every index in from[], on to[0] as the
 * write index (and on to[1..] as plain members).
 */
static EcpSendStatus
move_alias(EcpSink *sink, EcpPartConfig *config, const char *alias, char **from, int nfrom, char **to, int nto,
		   char **error)
{
	StringInfoData body;
	EcpAnswer		answer;
	EcpSendStatus status;

	ecp_json_object_new(&body);
	ecp_json_key(&body, "actions");
	ecp_json_begin_array(&body);
	for (int i = 0; i < nfrom + nto; i++)
	{
		ecp_json_begin_object(&body);
		ecp_json_key(&body, i < nfrom ? "remove" : "add");
		ecp_json_begin_object(&body);
		ecp_json_key_string(&body, "index", i < nfrom ? from[i] : to[i - nfrom]);
		ecp_json_key_string(&body, "alias", alias);
		if (i == nfrom)
			ecp_json_key_bool(&body, "is_write_index", true);
		ecp_json_end_object(&body);
		ecp_json_end_object(&body);
	}
	ecp_json_end_array(&body);
	ecp_json_end_object(&body);
	status = ecp_sink_request(sink, config, ECP_ANSWER_ACK, "POST", "/_aliases", body.data, &answer, error);
	if (status != ECP_SEND_DONE)
		return status;
	if (!ecp_answer_ok(&answer))
		return ecp_answer_refused(config, psprintf("moving alias \"%s\"", alias), &answer, error);
	return ECP_SEND_DONE;
}

static EcpSendStatus
alias_step(EcpPartConfig *config, Migration *m, char **error)
{
	EcpSendStatus status;
	StringInfoData event;

	if (m->old == NULL)
	{
		/* recorded before the call: a swap done again keeps what it replaced */
		status = alias_targets(config, m, &m->old, &m->nold, error);
		if (status != ECP_SEND_DONE)
			return status;
		update_migration(m, "UPDATE ecp.migration SET old_indices = $2::pg_catalog.text[], step = 'swap' WHERE run_id = $1",
						 text_array_literal(m->old, m->nold));
	}
	status = move_alias(m->sink, config, m->alias, m->old, m->nold, &m->new_index, 1, error);
	if (status != ECP_SEND_DONE)
		return status;
	update_migration(m, "UPDATE ecp.migration SET state = 'swapped', swapped_at = pg_catalog.now() WHERE run_id = $1 AND $2 = ''", NULL);
	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "alias", m->alias);
	ecp_json_key_string_array(&event, "from", m->old, m->nold);
	ecp_json_key_string(&event, "to", m->new_index);
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_ALIAS_SWAPPED, event.data);
	return ECP_SEND_DONE;
}

static EcpSendStatus
drop_indices(EcpSink *sink, EcpPartConfig *config, char **names, int n, const char *why, char **error)
{
	for (int i = 0; i < n; i++)
	{
		EcpAnswer		answer;
		EcpSendStatus status = ecp_sink_request(sink, config, ECP_ANSWER_ACK, "DELETE", psprintf("/%s", names[i]), NULL, &answer,
									   error);
		StringInfoData event;

		if (status != ECP_SEND_DONE)
			return status;
		if (!ecp_answer_ok(&answer) && answer.code != 404)
			return ecp_answer_refused(config, psprintf("dropping index \"%s\"", names[i]), &answer, error);
		ecp_json_object_new(&event);
		ecp_json_key_string(&event, "index", names[i]);
		ecp_json_key_string(&event, "why", why);
		ecp_json_end_object(&event);
		ecp_store_event(config, ECP_FLOW_INDEX_DROPPED, event.data);
	}
	return ECP_SEND_DONE;
}

static EcpSendStatus
swap_step(EcpPartConfig *config, void *arg, char **error)
{
	Migration  *m = arg;
	EcpSendStatus status = settings_step(config, m, error);

	if (status == ECP_SEND_DONE)
		status = count_step(config, m, error);
	if (status == ECP_SEND_DONE)
		status = alias_step(config, m, error);
	if (status == ECP_SEND_DONE && !m->keep_old && m->nold > 0)
	{
		set_step(m, "drop old");
		status = drop_indices(m->sink, config, m->old, m->nold, "keep_old is false", error);
		if (status == ECP_SEND_DONE)
			update_migration(m, "UPDATE ecp.migration SET old_dropped = true WHERE run_id = $1 AND $2 = ''", NULL);
	}
	if (status == ECP_SEND_DONE)
		set_step(m, "done");
	return status;
}

/* ---------------------------------------------------------------------------
 * Maintenance runs: rollback, drop_index.
 * ------------------------------------------------------------------------- */

/* The old indices must still be there: the alias cannot point at nothing. */
static EcpSendStatus
rollback_step(EcpPartConfig *config, void *arg, char **error)
{
	Migration  *m = arg;
	EcpSendStatus status;
	StringInfoData event;

	for (int i = 0; i < m->nold; i++)
	{
		EcpAnswer		answer;

		status = ecp_sink_request(m->sink, config, ECP_ANSWER_ACK, "HEAD", psprintf("/%s", m->old[i]), NULL, &answer, error);
		if (status != ECP_SEND_DONE)
			return status;
		if (answer.code == 404)
		{
			*error = psprintf("cannot roll back alias \"%s\": index \"%s\", which it pointed at before run " INT64_FORMAT
							  " swapped it, no longer exists; the alias still points at \"%s\"",
							  m->alias, m->old[i], m->run_id, m->new_index);
			return ECP_SEND_FAILED;
		}
		if (!ecp_answer_ok(&answer))
			return ecp_answer_refused(config, psprintf("checking index \"%s\"", m->old[i]), &answer, error);
	}
	status = move_alias(m->sink, config, m->alias, &m->new_index, 1, m->old, m->nold, error);
	if (status != ECP_SEND_DONE)
		return status;
	update_migration(m, "UPDATE ecp.migration SET state = 'rolled back', rolled_back_at = pg_catalog.now() WHERE run_id = $1 AND $2 = ''", NULL);
	ecp_json_object_new(&event);
	ecp_json_key_string(&event, "alias", m->alias);
	ecp_json_key_string(&event, "from", m->new_index);
	ecp_json_key_string_array(&event, "to", m->old, m->nold);
	ecp_json_key_int(&event, "migration_run", m->run_id);
	ecp_json_end_object(&event);
	ecp_store_event(config, ECP_FLOW_ROLLBACK, event.data);
	return ECP_SEND_DONE;
}

static EcpSendStatus
drop_new_step(EcpPartConfig *config, void *arg, char **error)
{
	Migration  *m = arg;
	EcpSendStatus status = drop_indices(m->sink, config, &m->new_index, 1, "its migration was cancelled", error);

	if (status == ECP_SEND_DONE)
		update_migration(m, "UPDATE ecp.migration SET state = 'dropped' WHERE run_id = $1 AND $2 = ''", NULL);
	return status;
}

/*
 * Run the part's step with the retries of a batch, then finish the part
 * (the launcher then starts the next stage).
 */
void
ecp_migrate_part(EcpPartConfig *config, EcpSink *sink)
{
	Migration	m;
	EcpSendStep step;
	const char *name = config->migrate_step;

	memset(&m, 0, sizeof(m));
	m.sink = sink;
	if (!read_migration(config, &m))
	{
		ecp_store_fail(config, psprintf("run " INT64_FORMAT " (%s) found no migration to act on", config->run_id, name));
		return;
	}
	step = strcmp(name, "create") == 0 ? create_step :
		strcmp(name, "swap") == 0 ? swap_step :
		strcmp(name, "rollback") == 0 ? rollback_step : drop_new_step;
	if (ecp_send_with_retries(config, step, &m) == ECP_SEND_DONE)
		ecp_store_finish(config, 0);
}
