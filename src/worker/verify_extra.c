/*
 * verify_extra.c: a verify run's walk of every id of the index (verify
 * option extra), to find the documents whose rows the source no longer
 * has (a full run never removes them).
 *
 * The ids come a page at a time from a point in time (the index as it was
 * when the walk began, so documents written meanwhile neither repeat nor
 * slip through), sorted by _shard_doc on Elasticsearch (it refuses to sort
 * on _id unless a cluster setting allows fielddata on it; _shard_doc is
 * the order a point in time is meant to be paged in) and by _id on
 * OpenSearch (2.x has no _shard_doc, and allows _id), paged with
 * search_after, asking for no _source.  Each page is looked up through
 * the task's query (or each of its queries, or the one shard_of names),
 * as an id run does; an id the source does not return is "extra" in
 * ecp.drift.
 *
 * The checkpoint is the point in time and the sort values of the last
 * page (part.last_key, a JSON object) with the ids walked (part.position).
 * A walk that goes on after a pause or a crash goes on from there while
 * its point in time lives (WALK_KEEP_ALIVE after the last page); once the
 * cluster has let it go, the walk starts again from the beginning with a
 * new one (flow "walk restarted"): ids found again are recorded once.
 *
 * Elasticsearch (7.12 and later) opens a point in time with POST
 * /<index>/_pit and closes it with DELETE /_pit; OpenSearch (2.4 and
 * later) with POST /<index>/_search/point_in_time and DELETE
 * /_search/point_in_time.  The search itself is the same.
 */
#include "sink.h"

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include <jansson.h>

#include "json_build.h"
#include "verify_answers.h"

/*
 * How long the cluster keeps the point in time after each page: long
 * enough for a page's lookup under a rate limit and a short pause, short
 * enough that an abandoned one does not hold segments for long.
 */
#define WALK_KEEP_ALIVE "5m"

/* Elasticsearch's default index.max_result_window bounds size too. */
#define WALK_MAX_PAGE 10000

typedef struct Walk
{
	EcpPartConfig *config;
	EcpSink    *sink;
	bool		opensearch;
	char	   *pit;			/* the point in time, or NULL: open one */
	char	   *after;			/* the last page's sort values (JSON), or NULL */
	bool		restarted;		/* the checkpoint's point in time was gone */
	EcpHitPage	page;			/* the page in hand */
	EcpIdLookup *lookup;
	MemoryContext context;		/* the walk's: pit, after, lookup */
	EcpBatch	batch;			/* the page's lookup, in its own memory */
} Walk;

/* The walk's checkpoint (part.last_key), back into pit and after. */
static void
restore_checkpoint(Walk *walk, const char *last_key)
{
	json_error_t jerr;
	json_t	   *root;
	const char *pit;
	json_t	   *after;

	if (last_key == NULL)
		return;
	root = json_loads(last_key, 0, &jerr);
	pit = root ? json_string_value(json_object_get(root, "pit")) : NULL;
	after = root ? json_object_get(root, "after") : NULL;
	if (pit && json_is_array(after))
	{
		char	   *text = json_dumps(after, JSON_COMPACT);

		walk->pit = MemoryContextStrdup(walk->context, pit);
		walk->after = MemoryContextStrdup(walk->context, text);
		free(text);
	}
	if (root)
		json_decref(root);
}

static char *
checkpoint_text(const Walk *walk)
{
	StringInfoData text;

	ecp_json_object_new(&text);
	ecp_json_key_string(&text, "pit", walk->pit);
	ecp_json_key_raw(&text, "after", walk->after);
	ecp_json_end_object(&text);
	return text.data;
}

static void
set_pit(Walk *walk, const char *pit)
{
	walk->pit = pit ? MemoryContextStrdup(walk->context, pit) : NULL;
}

/* Open a point in time on the task's index. */
static EcpSendStatus
open_pit(Walk *walk, char **error)
{
	EcpPartConfig *config = walk->config;
	EcpAnswer	answer;
	EcpSendStatus status;
	char		why[256];
	char	   *pit;
	const char *path = psprintf(walk->opensearch ? "/%s/_search/point_in_time?keep_alive=%s" : "/%s/_pit?keep_alive=%s",
								config->index_name, WALK_KEEP_ALIVE);

	status = ecp_sink_request(walk->sink, config, ECP_ANSWER_ACK, "POST", path, NULL, &answer, error);
	if (status != ECP_SEND_DONE)
		return status;
	if (!ecp_answer_ok(&answer))
		return ecp_answer_refused(config, psprintf("opening a point in time on \"%s\"", config->index_name),
								  &answer, error);
	if (ecp_answer_pit_id(answer.body, answer.len, &pit, why, sizeof(why)) != ECP_ANSWER_READ)
		ecp_answer_unreadable(config, &answer, ECP_ANSWER_UNEXPECTED, why, "{\"id\": \"...\"}");
	set_pit(walk, pit);
	free(pit);
	walk->after = NULL;
	return ECP_SEND_DONE;
}

/* Best effort: an abandoned point in time ends with its keep_alive anyway. */
static void
close_pit(Walk *walk)
{
	EcpAnswer	answer;
	char	   *error = NULL;
	StringInfoData body;

	if (walk->pit == NULL)
		return;
	ecp_json_object_new(&body);
	if (walk->opensearch)
	{
		ecp_json_key(&body, "pit_id");
		ecp_json_begin_array(&body);
		ecp_json_string(&body, walk->pit);
		ecp_json_end_array(&body);
	}
	else
		ecp_json_key_string(&body, "id", walk->pit);
	ecp_json_end_object(&body);
	(void) ecp_sink_request(walk->sink, walk->config, ECP_ANSWER_ACK, "DELETE",
							walk->opensearch ? "/_search/point_in_time" : "/_pit", body.data, &answer, &error);
}

static char *
search_body(const Walk *walk)
{
	StringInfoData body;

	ecp_json_object_new(&body);
	ecp_json_key_int(&body, "size", Min(walk->config->batch_size, WALK_MAX_PAGE));
	ecp_json_key_bool(&body, "_source", false);
	ecp_json_key_bool(&body, "track_total_hits", false);
	ecp_json_key(&body, "pit");
	ecp_json_begin_object(&body);
	ecp_json_key_string(&body, "id", walk->pit);
	ecp_json_key_string(&body, "keep_alive", WALK_KEEP_ALIVE);
	ecp_json_end_object(&body);
	ecp_json_key_raw(&body, "sort", walk->opensearch ? "[{\"_id\":\"asc\"}]" : "[{\"_shard_doc\":\"asc\"}]");
	if (walk->after)
		ecp_json_key_raw(&body, "search_after", walk->after);
	ecp_json_end_object(&body);
	return body.data;
}

/* The cluster let the point in time go (its keep_alive passed). */
static bool
pit_gone(const EcpAnswer *answer)
{
	return answer->code == 404 && answer->body != NULL &&
		strstr(answer->body, "search_context_missing") != NULL;
}

/* The next page of ids into walk->page (none left: nids 0). */
static EcpSendStatus
search_page(Walk *walk, char **error)
{
	EcpPartConfig *config = walk->config;
	EcpAnswer	answer;
	EcpSendStatus status;
	char		why[256];

	status = ecp_sink_request(walk->sink, config, ECP_ANSWER_HITS, "POST", "/_search", search_body(walk),
							  &answer, error);
	if (status != ECP_SEND_DONE)
		return status;
	if (pit_gone(&answer))
	{
		walk->pit = NULL;
		walk->after = NULL;
		walk->restarted = true;
		*error = pstrdup("the point in time of the walk is gone");
		return ECP_SEND_TRANSIENT;
	}
	if (!ecp_answer_ok(&answer))
		return ecp_answer_refused(config, psprintf("searching the ids of \"%s\"", config->index_name),
								  &answer, error);
	ecp_hit_page_free(&walk->page);
	if (ecp_answer_hit_page(answer.body, answer.len, &walk->page, why, sizeof(why)) != ECP_ANSWER_READ)
		ecp_answer_unreadable(config, &answer, ECP_ANSWER_UNEXPECTED, why,
							  "{\"hits\": {\"hits\": [{\"_id\": \"...\", \"sort\": [...]}, ...]}}");
	if (walk->page.pit_id)
		set_pit(walk, walk->page.pit_id);
	return ECP_SEND_DONE;
}

/*
 * One page, as a retried step: a point in time first when there is none,
 * and a new one at once when the cluster let the walk's go (a second
 * loss in a row is retried with back-off).
 */
static EcpSendStatus
page_step(EcpPartConfig *config, void *arg, char **error)
{
	Walk	   *walk = (Walk *) arg;
	EcpSendStatus status = ECP_SEND_DONE;

	for (int opened = 0; opened < 2; opened++)
	{
		if (walk->pit == NULL)
		{
			status = open_pit(walk, error);
			if (status != ECP_SEND_DONE)
				return status;
		}
		status = search_page(walk, error);
		if (!(status == ECP_SEND_TRANSIENT && walk->pit == NULL))
			break;
	}
	return status;
}

static EcpSendStatus
hello_step(EcpPartConfig *config, void *arg, char **error)
{
	return ecp_sink_hello((EcpSink *) arg, config, error);
}

static bool
prepare_step(EcpPartConfig *config, void *arg)
{
	Walk	   *walk = (Walk *) arg;

	walk->lookup = ecp_ids_prepare(config, walk->context);
	return true;
}

static bool
look_up_step(EcpPartConfig *config, void *arg)
{
	Walk	   *walk = (Walk *) arg;

	MemoryContextReset(walk->batch.context);
	walk->batch.docs = NULL;
	walk->batch.ndocs = 0;
	walk->batch.missing = 0;
	ecp_ids_lookup(walk->lookup, config, walk->page.ids, walk->page.nids, &walk->batch);
	return true;
}

/* A page not in the sample: its ids are counted as skipped. */
static void
skip_page(Walk *walk)
{
	MemoryContext old = MemoryContextSwitchTo(walk->batch.context);

	MemoryContextReset(walk->batch.context);
	walk->batch.docs = palloc0(sizeof(EcpDoc) * Max(walk->page.nids, 1));
	walk->batch.ndocs = walk->page.nids;
	walk->batch.missing = 0;
	for (int i = 0; i < walk->page.nids; i++)
		walk->batch.docs[i].id = pstrdup(walk->page.ids[i]);
	MemoryContextSwitchTo(old);
}

/* What the lookup found: rows (fine) and deletes (the row is gone: extra). */
static EcpDocResult *
judge_page(Walk *walk, bool sampled)
{
	EcpDocResult *results = MemoryContextAllocZero(walk->batch.context,
												   sizeof(EcpDocResult) * Max(walk->batch.ndocs, 1));

	for (int i = 0; i < walk->batch.ndocs; i++)
	{
		if (!sampled)
			results[i].outcome = ECP_DOC_SKIPPED;
		else if (walk->batch.docs[i].is_delete)
		{
			results[i].outcome = ECP_DOC_DRIFT;
			results[i].error_type = "extra";
			walk->batch.docs[i].is_delete = false;	/* counted as checked, not deleted */
		}
	}
	return results;
}

static const EcpSourceOps walk_source_ops = {
	.name = "index ids",
	.estimated_total = ecp_source_no_estimate,
};

/* The page's findings and the new checkpoint, in one transaction. */
static EcpRunState
save_page(Walk *walk, bool sampled)
{
	EcpSource	source = {&walk_source_ops, NULL, NULL};
	EcpDocResult *results = judge_page(walk, sampled);

	walk->after = MemoryContextStrdup(walk->context, walk->page.last_sort);
	walk->batch.end.last_key = checkpoint_text(walk);
	walk->batch.end.position = walk->config->progress.position + walk->page.nids;
	walk->batch.end.line_no = 0;
	return ecp_store_save(walk->config, &walk->batch, results, 0, &source);
}

static void
note_restart(Walk *walk)
{
	if (!walk->restarted)
		return;
	walk->restarted = false;
	ecp_store_event(walk->config, ECP_FLOW_WALK_RESTARTED,
					"{\"why\": \"the point in time was gone (its keep_alive " WALK_KEEP_ALIVE
					" passed): the walk of the index's ids starts again from the beginning\"}");
}

static bool
finish_step(EcpPartConfig *config, void *arg)
{
	(void) ecp_store_finish(config, 0);
	return true;
}

/* One page: fetched, looked up, saved.  False when the part ended or stopped. */
static bool
walk_one_page(Walk *walk)
{
	EcpPartConfig *config = walk->config;
	EcpSendStatus status = ecp_send_with_retries(config, page_step, walk);
	bool		sampled;
	EcpRunState state;

	if (status == ECP_SEND_STOPPED)
		return true;			/* the loop sees the request */
	if (status != ECP_SEND_DONE)
		return false;			/* failed, and recorded */
	note_restart(walk);
	if (walk->page.nids == 0)
	{
		close_pit(walk);
		(void) ecp_source_with_retries(config, finish_step, walk);
		return false;
	}
	sampled = config->verify_sample >= 1.0 || pg_prng_double(&pg_global_prng_state) < config->verify_sample;
	if (!sampled)
		skip_page(walk);
	else if (ecp_source_with_retries(config, look_up_step, walk) == ECP_SOURCE_STOPPED)
		return true;
	state = save_page(walk, sampled);
	if (state != ECP_RUN_RUNNING)
	{
		ecp_part_release_for(config, state);
		return false;
	}
	return true;
}

void
ecp_verify_extra_part(EcpPartConfig *config, EcpSink *sink)
{
	Walk		walk;

	memset(&walk, 0, sizeof(walk));
	walk.config = config;
	walk.sink = sink;
	walk.context = AllocSetContextCreate(TopMemoryContext, "ecp index walk", ALLOCSET_DEFAULT_SIZES);
	walk.batch.context = AllocSetContextCreate(walk.context, "ecp index walk page", ALLOCSET_DEFAULT_SIZES);
	if (ecp_send_with_retries(config, hello_step, sink) != ECP_SEND_DONE)
	{
		MemoryContextDelete(walk.context);
		return;
	}
	walk.opensearch = ecp_sink_product(sink) && strcmp(ecp_sink_product(sink), "OpenSearch") == 0;
	restore_checkpoint(&walk, config->progress.last_key);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		ecp_reload_settings_if_asked();
		if (ecp_worker_should_stop(config) && !ecp_part_still_running(config))
			break;
		if (walk.lookup == NULL &&
			ecp_source_with_retries(config, prepare_step, &walk) == ECP_SOURCE_STOPPED)
			continue;
		if (!walk_one_page(&walk))
			break;
	}
	ecp_hit_page_free(&walk.page);
	MemoryContextDelete(walk.context);
}
