/*
 * sync.h: the data a sync worker carries through its loop, and the parts
 * of the flow it calls: a source (EcpSourceOps: source_query.c,
 * source_ids.c, source_file.c) -> a page of documents (transform.c) ->
 * a sink (sink_es.c with batch.c, or sink_http.c) -> the checkpoint
 * (run_store.c); worker.c drives the loop.
 */
#ifndef ECP_SYNC_H
#define ECP_SYNC_H

#include "ecp.h"
#include "flow_actions.h"

#include <sys/socket.h>

#include "access/tupdesc.h"
#include "lib/stringinfo.h"
#include "utils/palloc.h"

/*
 * The states of a run, as ecp.run.state spells them (its CHECK
 * constraint; ecp_internal._run_states() returns these names, and pg_regress
 * compares the two), plus GONE for a run that was deleted.
 */
typedef enum EcpRunState
{
	ECP_RUN_PENDING,
	ECP_RUN_RUNNING,
	ECP_RUN_PAUSED,
	ECP_RUN_SUCCEEDED,
	ECP_RUN_FAILED,
	ECP_RUN_CANCELLED,
	ECP_RUN_GONE
} EcpRunState;

extern const char *const ecp_run_state_names[];
extern EcpRunState ecp_run_state_of(const char *name);

/* What a part reads (ecp.part.source). */
typedef enum EcpPartKind
{
	ECP_PART_QUERY,				/* the task's query, or one of its queries */
	ECP_PART_SPLIT,				/* the query, to be cut into key ranges first */
	ECP_PART_RANGE,				/* from <= key < to of the query */
	ECP_PART_IDS,				/* the run's ids, looked up through the query */
	ECP_PART_FILE,				/* the task's file */
	ECP_PART_MIGRATE,			/* a step of a migration (migrate.c) */
	ECP_PART_FOLLOW,			/* a follower: capture (follow_capture.c) or
								 * apply (source_follow.c) */
	ECP_PART_INDEX_IDS			/* a verify run's walk of the index's ids
								 * (verify_extra.c) */
} EcpPartKind;

/* What a part has done: its run's state, its checkpoint and counters. */
typedef struct EcpPartProgress
{
	EcpRunState run_state;
	bool		has_total;
	char	   *last_key;		/* checkpoint, NULL at the start */
	int64		position;		/* checkpoint of id and file parts */
	int64		line_no;
	int64		processed;
	int64		failed;
	int			exhausted_after;	/* attempts, when retries ran out */
	bool		has_since_max;	/* since_column: the largest value acknowledged */
	int64		since_max;		/* (as ecp_since_datum_value orders it) */
	Oid			since_max_type;
} EcpPartProgress;

/* Everything a worker needs to know about its run, read once at start. */
/* A pending part of a run, as a worker that goes on with it sees it. */
typedef struct EcpNextPart
{
	int32		part_no;
	bool		has_heartbeat;
	TimestampTz heartbeat;		/* the claim's compare-and-set */
} EcpNextPart;

typedef struct EcpPartConfig
{
	/*
	 * The part's memory: every string and list below lives here, freed
	 * when the part ends (a worker runs part after part).
	 */
	MemoryContext memory;
	int64		run_id;
	int32		part_no;
	Oid			owner;
	char	   *owner_name;
	int			slot;
	int64		task_id;		/* rate limit buckets */
	int64		consumer_id;
	bool		recovering;		/* a worker of this part died before */
	bool		has_heartbeat;
	TimestampTz heartbeat_seen; /* by the launcher: the claim's compare-and-set */

	/* task */
	char	   *task_name;
	char	   *raw_query;		/* as stored; checked when the source is prepared */
	char	   *query;			/* one SELECT, without trailing ';' */
	char	   *index_name;
	char	   *id_column;
	char	   *key_column;
	char	   *paging;			/* auto | keyset | window | cursor */
	bool		reads_cursor;	/* paging cursor: a query part reads its
								 * query through one held cursor */
	bool		no_id;			/* id_column '' (paging cursor, op create):
								 * documents go without _id */
	char	   *op;				/* index | create | update | delete */
	int			batch_size;
	int			batch_bytes;
	int			max_retries;	/* per batch */
	int			retry_base_ms;
	int			retry_max_ms;
	bool		exact_total;
	char	   *search_path;
	int			parallelism;
	bool		delete_missing; /* ids the query does not return are deleted */
	char	   *tag;			/* sent in tag_header, picks a route; or NULL */
	char	   *transform;		/* schema.function(jsonb) RETURNS jsonb, or NULL */
	Oid			transform_fn;	/* the function it named when the task was
								 * written (ecp.task.transform_fn) */
	char	   *routing_column; /* or NULL */
	char	   *version_column; /* external_gte versions, or NULL */
	char	   *pipeline;		/* ingest pipeline, or NULL */
	bool		refresh;		/* refresh the index at the end of the part */
	bool		verify;			/* a verify run (ecp.verify): pages are compared
								 * with the index (sink_verify.c), never written */
	double		verify_sample;	/* the fraction of pages a verify compares (1: all) */
	char	   *since_column;	/* incremental runs (since.c), or NULL: the
								 * whole source, and always for ids, files
								 * and migrations */
	int			since_overlap;	/* seconds (days of a date, rounded up), or
								 * units of an integer */
	char	   *since_watermark;	/* the watermark of the part's query, or
									 * NULL: none yet */
	Oid			since_watermark_type;
	Oid			since_type;		/* since_column's type, once the source is open */

	/* part: what it reads */
	EcpPartKind kind;
	bool		has_from;		/* ECP_PART_RANGE: from <= key */
	int64		range_from;
	bool		has_to;			/* ECP_PART_RANGE: key < to */
	int64		range_to;
	int			query_no;		/* which of queries (1..), 0: query */
	int64		ids_count;		/* ECP_PART_IDS: how many ids the run has */
	char	  **queries;		/* ECP_PART_IDS of a task of queries: each
								 * query, as stored (raw_query is NULL) */
	int			nqueries;		/* ... how many, 0: the task has a query */
	char	   *shard_of;		/* task option shard_of: the query of an id */
	char	   *file;			/* ECP_PART_FILE: URL or path */
	bool		ndjson;			/* ECP_PART_FILE: documents, else ids */
	char	   *id_field;		/* ECP_PART_FILE, ndjson: the _id field */
	int			max_line_bytes;
	char	   *migrate_step;	/* ECP_PART_MIGRATE: create, swap, rollback, drop_index */
	char	   *follow_step;	/* ECP_PART_FOLLOW: capture, apply */
	char	   *alias;			/* a migration's alias (the task's index) */
	char	   *new_index;		/* a migration's new index; its load parts write there */
	bool		writes_alias;	/* mode alias_swap, not a migration's load: the
								 * documents go through the alias, which must
								 * exist (require_alias: never an index named
								 * like it) */

	/* consumer */
	bool		write_service;	/* kind http: batches as JSON (sink_http.c) */
	char	   *url;			/* the consumer's URL, or the route of the tag */
	char	   *route_why;		/* "route T", "no route for T: ...", "no tag: ..." */
	char	  **nodes;			/* further base URLs (none with a route) */
	int			nnodes;
	char	   *tag_header;		/* default X-Ecp-Tag */
	char	   *auth_header;	/* "Basic ..." / "ApiKey ..." or NULL */
	char	   *ca_file;
	bool		insecure;
	bool		gzip;
	long		connect_timeout_ms;
	long		request_timeout_ms;
	bool		target_unrestricted;	/* owner exempt from the outbound host policy */

	/*
	 * Everything above is fixed once the part's source is open (opening it
	 * fills in query and, for a split, kind); this is what the part has
	 * done so far, moved by the store after each checkpoint.
	 */
	EcpPartProgress progress;

	/*
	 * The new index of a migration of this part's alias that is loading:
	 * every batch goes to it as well (read at the claim and at every
	 * checkpoint), or NULL.
	 */
	char	   *dual_index;
} EcpPartConfig;

/*
 * A position in a part's source: the last key read (keyset and window
 * pages), or the ids done / the byte offset and line number after the
 * last line (id and file parts).  The checkpoint is one of these.
 */
typedef struct EcpPosition
{
	const char *last_key;
	int64		position;
	int64		line_no;
} EcpPosition;

/* One document read from the source. */
typedef struct EcpDoc
{
	char	   *key;			/* key column as text: the checkpoint */
	char	   *id;				/* _id, NULL when the id column is NULL */
	char	   *json;			/* the row's JSON text, or a file's line */
	int			json_len;		/* its length, or 0: not known (strlen) */
	bool		is_delete;		/* delete_missing: the row is gone */
	char	   *routing;		/* routing_column's value, or NULL */
	char	   *version;		/* version_column's value as an integer, or NULL */
	bool		skipped;		/* the transform returned NULL: not sent */
	char	   *refused;		/* why the document cannot be sent (the
								 * transform failed): a dead letter */
	bool		has_since;		/* since_column's value is not NULL */
	int64		since;			/* ... as ecp_since_datum_value orders it */
} EcpDoc;

/* A line of a file that cannot be a document: a dead letter. */
typedef struct EcpBadLine
{
	int64		line_no;
	char	   *reason;
} EcpBadLine;

typedef struct EcpBatch
{
	MemoryContext context;		/* everything of the batch; reset per page */
	EcpDoc	   *docs;
	int			ndocs;
	bool		read_any;		/* the source moved (ndocs may be 0: every
								 * id missing, every line bad) */
	EcpPosition end;			/* where the next page starts */
	int64		missing;		/* ids asked for that the query did not
								 * return (not deleted) */
	EcpBadLine *bad_lines;
	int			nbad_lines;
	void	   *ack;			/* what the source consumed for this page,
								 * released with its checkpoint
								 * (EcpSourceOps.acknowledge), or NULL */
	int64		bytes_sent;		/* request bodies sent for this page, retries
								 * included (ecp_sink_take_bytes_sent), added
								 * to the part and the throughput at its
								 * checkpoint */
} EcpBatch;

/*
 * A source: the worker reads every kind of part through these, and knows
 * none of them by name (source.c picks one for the part).  open returns
 * the source's own state, allocated in the memory context it is given
 * (deleted when the source is closed); every other call takes that state.
 * All but close may ereport; transient errors (class 08 and the like,
 * retry.c) are retried from the checkpoint.
 */
typedef struct EcpSourceOps
{
	const char *name;
	/* ready to read (as the owner where the owner's code runs): the state */
	void	   *(*open) (EcpPartConfig *config, MemoryContext context);
	/* the page after *after into batch (in batch->context); false at the end */
	bool		(*read) (void *state, EcpPartConfig *config, const EcpPosition *after,
						 EcpBatch *batch);
	/* the part's size: >= 0, or -1 when unknown */
	int64		(*total) (void *state, EcpPartConfig *config, bool *is_estimate);
	/* a better estimate at a checkpoint, or -1 to keep the one there is */
	int64		(*estimated_total) (void *state, const EcpPartConfig *config);
	/* rows the part could not read (NULL keys), reported at its end */
	int64		(*unreadable) (void *state, EcpPartConfig *config);
	/* what memory does not free: connections, files (may be NULL) */
	void		(*close) (void *state);

	/*
	 * Inside the checkpoint's transaction (as ecp, SPI connected), after
	 * the sink acknowledged the page: release what the page consumed (a
	 * follower's queue entries).  NULL: nothing to release.
	 */
	void		(*acknowledge) (void *state, EcpPartConfig *config, const EcpBatch *batch);
} EcpSourceOps;

/* An open source: its kind and its state (source.c opens and closes it). */
typedef struct EcpSource
{
	const EcpSourceOps *ops;
	void	   *state;
	MemoryContext context;		/* the state's memory */
} EcpSource;

/* An open sink: the consumer's nodes, client and request in flight (sink.c). */
typedef struct EcpSink EcpSink;

/* How the sink judged one document. */
typedef enum EcpDocOutcome
{
	ECP_DOC_OK,
	ECP_DOC_RETRY,				/* transient: 429 / 5xx for this item */
	ECP_DOC_FAILED,				/* data error: dead letter */
	ECP_DOC_SKIPPED,			/* the transform dropped it: not sent */
	ECP_DOC_STALE,				/* a newer version is in the index (409) */
	ECP_DOC_DRIFT				/* a verify: the index differs (error_type
								 * missing or stale, reason: where) */
} EcpDocOutcome;

typedef struct EcpDocResult
{
	EcpDocOutcome outcome;
	int			status;
	char	   *error_type;
	char	   *reason;
} EcpDocResult;

/* What sending a batch came to. */
typedef enum EcpSendStatus
{
	ECP_SEND_DONE,				/* every document has a result */
	ECP_SEND_STOPPED,			/* pause/cancel/shutdown interrupted it */
	ECP_SEND_TRANSIENT,			/* connect/reset/timeout, 429/502/503/504:
								 * retry the same documents */
	ECP_SEND_FAILED				/* configuration: credentials, bad request;
								 * retrying cannot help (see error) */
} EcpSendStatus;

/* sandbox.c: the owner's code, sandboxed; ecp's own bookkeeping */
extern void ecp_sandbox_init(int slot);
extern void ecp_sandbox_act_for(const char *owner_name);
extern void ecp_sandbox_sigterm(void);
extern bool ecp_sandbox_in_owner_code(void);
extern MemoryContext ecp_begin_as_owner(const EcpPartConfig *config);
extern void ecp_commit_as_owner(MemoryContext back_to);
extern MemoryContext ecp_begin_bookkeeping(void);
extern void ecp_commit_bookkeeping(MemoryContext back_to);

/* part_control.c: stop requests, waits, reloads (used by every module) */
extern void ecp_worker_sigterm(SIGNAL_ARGS);
extern bool ecp_worker_got_sigterm(void);
extern void ecp_reload_settings_if_asked(void);
extern bool ecp_worker_should_stop(const EcpPartConfig *config);
extern bool ecp_worker_wait(EcpPartConfig *config, long wait_ms);
extern void ecp_part_release_for(EcpPartConfig *config, EcpRunState state);
extern bool ecp_part_still_running(EcpPartConfig *config);

/* source.c: the source of a part; cutting a query into key ranges */
extern EcpSource *ecp_source_open(EcpPartConfig *config);
extern void ecp_source_close(EcpSource *source);
extern int64 ecp_owner_int8(EcpPartConfig *config, const char *sql);
extern int64 ecp_source_no_estimate(void *state, const EcpPartConfig *config);
extern int64 ecp_source_nothing_unreadable(void *state, EcpPartConfig *config);

/* owner_sql.c: the SQL ecp writes around the owner's query, and result checks */
extern char *ecp_source_column_ref(const char *column);
extern char *ecp_source_write_columns(const EcpPartConfig *config);
extern char *ecp_type_operator(Oid type, int16 strategy, const char *column);
extern char *ecp_qualified_type(Oid type);

/*
 * page_reader.c: a page query's rows straight into documents.  A page
 * query selects ecp's own columns first (key, id: text; routing, version:
 * text, when the task names either; since_column's value, of its type,
 * in an incremental run), then the row's own (ECP_ROW_COLUMNS_SQL).
 */
typedef struct EcpPageColumns
{
	int			leading;		/* how many columns are ecp's: 2 to 5 */
	bool		write_columns;	/* routing and version follow key and id */
	Oid			since_type;		/* the last of ecp's columns is since_column's
								 * value, of this type (InvalidOid: none) */
} EcpPageColumns;
extern char *ecp_page_select_list(const EcpPartConfig *config, const char *key_sql,
								  const char *id_sql, Oid since_type, EcpPageColumns *columns);
extern int	ecp_read_page_rows(const char *sql, int nargs, Oid *types, Datum *values,
							   const EcpPageColumns *columns, EcpDoc *docs, int capacity,
							   MemoryContext context);
extern int	ecp_read_all_rows(const char *sql, const EcpPageColumns *columns, EcpDoc **docs,
							  MemoryContext context);
struct PortalData;
extern int	ecp_read_portal_rows(struct PortalData *portal, long count, const EcpPageColumns *columns,
								 EcpDoc *docs, int capacity, MemoryContext context);

/*
 * doc_writer.c: a row's columns as the JSON object row_to_json writes,
 * by a plan made once per result type (kept while the type is equal).
 */
typedef struct EcpDocWriter EcpDocWriter;
extern EcpDocWriter *ecp_doc_writer_for(TupleDesc desc, int first_column);
extern char *ecp_doc_write(EcpDocWriter *writer, const Datum *values, const bool *isnull,
						   MemoryContext context, int *length);

/*
 * since.c: task option since_column, incremental runs.  A part that reads
 * a query (not ids, a file or a migration's step) loads the option, the
 * watermark of its query and its own largest value so far with its row
 * (ecp_since_load, in the store's SPI connection).  Once the source is
 * open as the owner, ecp_since_prepare knows the column's type; then
 * ecp_since_filter is the page query's " AND <column> >= <watermark less
 * since_overlap>" (NULL: read everything) and ecp_since_page_column the
 * column each page adds last, whose largest value ecp_since_save keeps
 * with every checkpoint.  ecp_store_advance_watermark moves the query's
 * watermark up to it (a full run's moves when the run succeeds, by the
 * trigger watermark on ecp.run, a follower's poll runs included).
 */
extern bool ecp_since_type_allowed(Oid type);
extern int64 ecp_since_datum_value(Oid type, Datum value);
extern void ecp_since_load(EcpPartConfig *config);
extern void ecp_since_prepare(EcpPartConfig *config);
extern char *ecp_since_filter(const EcpPartConfig *config);
extern char *ecp_since_page_column(const EcpPartConfig *config);
extern void ecp_since_save(EcpPartConfig *config, const EcpBatch *batch);
extern void ecp_store_advance_watermark(EcpPartConfig *config);

/* source_query.c: keyset pages (or key windows) of a query */
extern const EcpSourceOps ecp_query_source;
extern void ecp_source_column_types(const EcpPartConfig *config, Oid *key_type, Oid *id_type);

/* source_cursor.c: a query read whole through one held cursor (paging cursor) */
extern const EcpSourceOps ecp_cursor_source;

/* source_ids.c: the run's ids, looked up through the query (or queries) */
extern const EcpSourceOps ecp_ids_source;
typedef struct EcpIdLookup EcpIdLookup;
extern EcpIdLookup *ecp_ids_prepare(EcpPartConfig *config, MemoryContext context);
extern void ecp_ids_lookup(const EcpIdLookup *lookup, EcpPartConfig *config, char **ids, int nids,
						   EcpBatch *batch);

/* source_file.c: lines of a file: documents, or ids to look up */
extern const EcpSourceOps ecp_file_source;

/* source_follow.c: a follower's changes, applied through the query */
extern const EcpSourceOps ecp_follow_source;

/* follow_capture.c: a follower's publication and slot (mode decoding) */
extern void ecp_follow_capture_part(EcpPartConfig *config);
typedef struct EcpDecoder EcpDecoder;
extern EcpDecoder *ecp_decoder_open(EcpPartConfig *config, MemoryContext context);
extern int64 ecp_decoder_capture(EcpDecoder *decoder, EcpPartConfig *config);

/* source_window.c: key windows over foreign tables */
extern bool ecp_source_reads_foreign_table(const char *sql);
typedef struct EcpKeyWindows EcpKeyWindows;
typedef struct EcpWindowQuery
{
	const char *base_sql;		/* SELECT * FROM (<query>) AS "ecp:row" */
	const char *select_list;	/* the page's columns over "ecp:row" */
	const char *key;			/* the key column's reference */
	Oid			key_type;
	const char *filter;			/* " AND ..." (a range part, since.c) or "" */
	EcpPageColumns columns;		/* ecp's own columns of the select list */
} EcpWindowQuery;
extern EcpKeyWindows *ecp_source_windows_open(const EcpPartConfig *config,
											  const EcpWindowQuery *query,
											  MemoryContext context);
extern int	ecp_source_window_read(EcpKeyWindows *windows, const EcpPartConfig *config,
								   const char *after_key, EcpDoc *docs, int capacity,
								   MemoryContext context);
extern int64 ecp_source_window_total(const EcpKeyWindows *windows, int64 rows_done,
									 const char *checkpoint_key);

/* retry.c: back-off, and retries of transient source errors */
typedef bool (*EcpSourceStep) (EcpPartConfig *config, void *arg);
typedef enum EcpSourceOutcome
{
	ECP_SOURCE_TRUE,			/* the step ran and answered true */
	ECP_SOURCE_FALSE,			/* ... false */
	ECP_SOURCE_STOPPED			/* pause, cancel or shutdown ended a wait */
} EcpSourceOutcome;
typedef enum EcpRetryVerdict
{
	ECP_RETRY_AGAIN,			/* the back-off was waited out */
	ECP_RETRY_STOPPED,			/* pause, cancel or shutdown ended the wait */
	ECP_RETRY_EXHAUSTED			/* max_retries reached: fail the run */
} EcpRetryVerdict;
typedef EcpSendStatus (*EcpSendStep) (EcpPartConfig *config, void *arg, char **error);
extern EcpSendStatus ecp_send_with_retries(EcpPartConfig *config, EcpSendStep step, void *arg);
#define ECP_RETRY_OF_SOURCE (-1)	/* documents of ecp_retry_after: a source step */
extern EcpRetryVerdict ecp_retry_after(EcpPartConfig *config, int attempt, const char *why,
									   int documents, char **exhausted);
extern bool ecp_source_error_is_transient(int sqlerrcode);
extern bool ecp_source_try(EcpPartConfig *config, EcpSourceStep step, void *arg, bool *result);
extern EcpSourceOutcome ecp_source_with_retries(EcpPartConfig *config, EcpSourceStep step,
												void *arg);

/* transform.c: option transform over a page, as the owner */
extern void ecp_transform_page(EcpPartConfig *config, EcpBatch *page);

/* verify_extra.c: a verify run's walk of every id of the index (option extra) */
extern void ecp_verify_extra_part(EcpPartConfig *config, EcpSink *sink);

/* count_check.c: the index's _count against what a full run wrote */
extern void ecp_count_check(EcpPartConfig *config, EcpSink *sink);

/* migrate.c: the steps of a migration (mode alias_swap) and its maintenance runs */
extern void ecp_migrate_part(EcpPartConfig *config, EcpSink *sink);

/* batch.c */
extern void ecp_batch_append_ndjson(StringInfo body, const EcpPartConfig *config,
									const EcpDoc *doc, const char *index);

/* sink.c: batches to the consumer (sink_es.c / sink_http.c: its kind) */
extern EcpSink *ecp_sink_open(EcpPartConfig *config);
extern EcpSink *ecp_sink_reopen(EcpSink *kept, EcpPartConfig *config);
extern EcpSendStatus ecp_sink_begin(EcpSink *sink, EcpPartConfig *config, EcpBatch *batch,
									const int *subset, int nsubset,
									EcpDocResult *results, char **error);
extern EcpSendStatus ecp_sink_finish(EcpSink *sink, EcpPartConfig *config, char **error);
extern EcpSendStatus ecp_sink_end_part(EcpSink *sink, EcpPartConfig *config, char **error);
extern void ecp_sink_report_nodes(EcpSink *sink, EcpPartConfig *config);
extern int64 ecp_sink_take_bytes_sent(EcpSink *sink);
extern void ecp_sink_close(EcpSink *sink);

/* address_filter.c: the outbound policy as curl's connect-time filter */
typedef struct EcpAddressCheck
{
	const char *owner_name;		/* whose connection: named in refusals */
	bool		refused;		/* the filter refused the last connection */
} EcpAddressCheck;
extern int	ecp_filter_address(const struct sockaddr *sa, socklen_t len, const char *host,
							   int port, char *why, size_t whylen, void *arg);

/* config_check.c: fields of rows, checked before use */
extern const char *ecp_config_required(const char *value, const char *what, const char *hint);
extern int	ecp_config_int(const char *value, const char *option, int fallback, int min, int max);
extern bool ecp_config_bool(const char *value, const char *option, bool fallback);
extern int64 ecp_config_int64(const char *value, const char *what);
extern char **ecp_config_queries(MemoryContext memory, Datum array, const char *task_name, int *nqueries);
extern const char *ecp_config_word(const char *value, const char *option,
								   const char *const *words);
extern int	ecp_option_int(const char *kind, const char *name, const char *value);
extern bool ecp_option_bool(const char *kind, const char *name, const char *value);
extern const char *ecp_option_word(const char *kind, const char *name, const char *value);
extern void ecp_config_check_index(const char *index);
extern void ecp_config_check_url(const char *url);
extern void ecp_config_check_owners(Oid run_owner, Oid task_owner, Oid consumer_owner,
									Oid part_owner);
extern void ecp_config_check_owner_login(Oid owner, const char *name, const char *can_login);

/* run_store.c: the rows of the run and its parts (every transaction of bookkeeping) */
extern void ecp_store_load(EcpPartConfig *config);
extern bool ecp_store_claim(EcpPartConfig *config);
extern int	ecp_store_next_parts(EcpPartConfig *config, EcpNextPart *next, int max);
extern void ecp_store_set_total(EcpPartConfig *config, int64 total, bool is_estimate);
extern EcpRunState ecp_store_save(EcpPartConfig *config, EcpBatch *batch,
							EcpDocResult *results, double docs_per_second,
							const EcpSource *source);
extern bool ecp_store_finish(EcpPartConfig *config, int64 null_keys);
extern void ecp_store_fail(EcpPartConfig *config, const char *error);
extern EcpRunState ecp_store_run_state(EcpPartConfig *config);
extern void ecp_store_heartbeat(EcpPartConfig *config);
extern void ecp_store_refresh_dual_index(EcpPartConfig *config);
extern void ecp_store_release(EcpPartConfig *config);
extern void ecp_store_retrying(EcpPartConfig *config, int attempt, long wait_ms,
							   const char *error, const char *retry_class,
							   const char *content_json);
extern void ecp_store_alert(EcpPartConfig *config, const char *class, int attempts,
								 const char *error);
extern void ecp_store_restart_part(EcpPartConfig *config, int64 total, const char *why);
extern void ecp_store_event(EcpPartConfig *config, EcpFlowAction action,
								 const char *content_json);
extern void ecp_store_drift(EcpPartConfig *config, const char *id, const char *kind,
							const char *detail);
extern int	ecp_store_split(EcpPartConfig *config, bool has_keys, int64 low, int64 high,
								 int nranges);
extern char **ecp_store_run_ids(EcpPartConfig *config, int64 after, int n, int *nids);

#endif
