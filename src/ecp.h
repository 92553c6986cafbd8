/*
 * ecp.h: declarations shared by the parts of ecp that run inside PostgreSQL.
 *
 * This header includes only PostgreSQL headers that do not clash with
 * jansson (no utils/builtins.h): files that work with JSON include it too.
 */
#ifndef ECP_H
#define ECP_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "nodes/nodes.h"

#ifndef ECP_VERSION
#error "ECP_VERSION must be defined by the build (see Makefile)"
#endif

#define ECP_EXTENSION_NAME "ecp"
#define ECP_LAUNCHER_TYPE "ecp launcher"

/* Seconds the postmaster waits before restarting a launcher that exited. */
#define ECP_LAUNCHER_RESTART_SECONDS 5

/* How often the launcher wakes up on its own, in milliseconds. */
#define ECP_LAUNCHER_NAPTIME_MS 1000L

/*
 * The alias of the source query's row in every statement ecp builds
 * around it (a user column cannot be captured by it by accident), and the
 * row's own columns a page query selects after ecp's.  A document is the
 * JSON value of the row, the object row_to_json writes of it, written by
 * the worker straight from those columns (worker/doc_writer.c): no
 * composite is formed, and no jsonb tree built and printed again as
 * to_jsonb would; equal JSON values for every type, only the text differs
 * from to_jsonb's (columns in the query's order, no spaces, a json
 * column's text as it is stored).
 */
#define ECP_ROW_ALIAS "\"ecp:row\""
#define ECP_ROW_COLUMNS_SQL ECP_ROW_ALIAS ".*"

/*
 * Every name ecp adds to SQL it runs as a task's owner is schema-qualified,
 * so the task's search_path reaches only the owner's own query: a role's
 * type named text or its function named count can never stand in for
 * PostgreSQL's (and C then reads what it asked for).
 */
#define ECP_AS_TEXT "::pg_catalog.text"
#define ECP_AS_INT8 "::pg_catalog.int8"

/*
 * owner_sql.c: no Datum is read before the result's column is of the type
 * asked for (an error naming the column otherwise).
 */
extern void ecp_require_column_type(TupleDesc desc, int attno, Oid expected, const char *what);
extern void ecp_require_all_columns(TupleDesc desc, Oid expected, const char *what);

/* GUCs (module.c) */
extern char *ecp_database_name;
extern int	ecp_max_workers;
extern int	ecp_max_retries;
extern int	ecp_retry_base_ms;
extern int	ecp_retry_max_ms;
extern int	ecp_heartbeat_interval;	/* seconds */
extern int	ecp_recovery_timeout;	/* seconds */
extern int	ecp_alert_after;
extern int	ecp_max_followers_per_role;
extern int	ecp_max_follow_slots;
extern int	ecp_follow_interval_ms;
extern int	ecp_follow_max_retained_wal_mb;
extern char *ecp_alert_webhook;

/*
 * One slot per possible sync worker.  The launcher reserves a slot before
 * it registers the worker (so a part is never started twice); the worker
 * fills in its pid and latch when it attaches and clears the slot when it
 * exits.  stop_requested is how pause and cancel reach a worker that is in
 * the middle of an HTTP request.
 */
typedef struct EcpWorkerSlot
{
	bool		in_use;
	int64		run_id;
	int32		part_no;
	pid_t		pid;			/* 0 until the worker attached */
	Latch	   *latch;
	TimestampTz reserved_at;
	bool		stop_requested;

	/*
	 * Which reservation this is: the launcher hands it to the worker (at
	 * ECP_SLOT_GENERATION_OFFSET of bgw_extra), and a worker that attaches
	 * after its slot was reclaimed and given to another part finds a
	 * different one and leaves the slot alone.
	 */
	uint64		generation;
} EcpWorkerSlot;

#define ECP_WAITING_RUNS 8

/* Where in bgw_extra the launcher puts the slot's generation (a uint64). */
#define ECP_SLOT_GENERATION_OFFSET 120

/*
 * Live state shared by all backends.  Only plain data: durable state lives
 * in tables, and this struct is rebuilt empty after a crash restart.
 */
typedef struct EcpSharedState
{
	LWLock	   *lock;			/* protects every field below, and the rate
								 * limiter's table (limiter.c) */
	pid_t		launcher_pid;	/* 0 while no launcher runs */
	Latch	   *launcher_latch; /* to wake the launcher; NULL when none */
	bool		launcher_connected; /* connected to ecp.database_name */

	/*
	 * Set while the launcher's database is being dropped, or after it was:
	 * the launcher then keeps out of it (without connecting) until a
	 * CREATE DATABASE of that name clears the flag.
	 */
	bool		database_held;

	/*
	 * The backend whose DROP DATABASE set the hold, while it runs; 0 once
	 * the drop committed (the hold then lasts until CREATE DATABASE).  A
	 * hold whose holder is gone is stale: the launcher drops it.
	 */
	pid_t		database_held_by;

	uint64		slot_generations;	/* last generation handed out */

	/*
	 * The runs whose parts the launcher's last pass could not start for
	 * want of a free slot (at most ECP_WAITING_RUNS; waiting_overflow:
	 * more).  A worker whose part ended goes on with the next part of its
	 * run only when no other run waits, so slots still go round as they
	 * did when every part had a worker of its own.
	 */
	int			nwaiting_runs;
	bool		waiting_overflow;
	int64		waiting_runs[ECP_WAITING_RUNS];

	int			nslots;			/* ecp.max_workers at server start */
	EcpWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} EcpSharedState;

/* shmem.c */
extern void ecp_shmem_install_hooks(void);
extern EcpSharedState *ecp_shared(void);
extern void ecp_wake_launcher(void);
extern pid_t ecp_launcher_pid(void);
extern void ecp_set_database_held(bool held);
extern bool ecp_database_is_held(void);
extern int	ecp_reserve_slot(int64 run_id, int32 part_no, bool even_if_held);
extern void ecp_release_slot(int slot);
extern bool ecp_part_has_slot(int64 run_id, int32 part_no);
extern bool ecp_move_slot(int slot, int64 run_id, int32 part_no);
extern void ecp_set_waiting_runs(const int64 *run_ids, int nruns);
extern bool ecp_other_run_waits(int64 run_id);
extern void ecp_attach_slot(int slot);
extern bool ecp_stop_requested(int slot);
extern void ecp_request_stop(int64 run_id);
extern void ecp_clear_stop_request(int slot);
extern uint64 ecp_slot_generation(int slot);
extern bool ecp_reclaim_slot(int slot, uint64 generation);
extern void ecp_hold_database(void);
extern void ecp_release_database_hold(void);
extern void ecp_keep_database_hold(void);
extern bool ecp_drop_stale_database_hold(void);

/* run_windows.c */
extern void ecp_apply_windows(void *arg);

/* follow_watch.c */
extern void ecp_watch_followers(void *arg);

/* follow_poll.c */
extern void ecp_poll_followers(void *arg);

/* query_check.c */

extern char *ecp_statement_text(const char *query);
extern char *ecp_checked_statement_text(const char *query);
extern int	ecp_enter_search_path(const char *search_path);

/* shard_of.c: task option shard_of, which query of queries holds an id */
extern bool ecp_id_compared_in_own_type(Oid type);
extern Oid	ecp_shard_of_id_type(Oid column_type);
extern char *ecp_shard_of_sql(const char *expression, const char *id_array);
extern void ecp_check_shard_of_expression(const char *expression, Oid column_type);

/* follow_tables.c */
extern void ecp_follow_drop_extension_cleanup(Node *parsetree);

/* commit_signals.c */
extern void ecp_commit_signals_install(void);

/* scheduler.c */
extern void ecp_schedule_runs(void);
extern int	ecp_max_workers_per_role;
extern bool ecp_test_claim_race;
extern void ecp_scheduler_define_gucs(void);

/* limiter.c */
extern void ecp_limiter_install_hooks(void);
extern void ecp_limiter_set(char kind, int64 id, double rate);
extern double ecp_limiter_rate(int64 task_id, int64 consumer_id);
extern long ecp_limiter_take(int64 task_id, int64 consumer_id, int n, bool waiting);
extern void ecp_limiter_done_waiting(int64 task_id);
extern void ecp_limiter_feedback(int64 consumer_id, bool throttled);

/* A bucket the launcher's pass wants: a task ('t') or consumer ('c') rate. */
typedef struct EcpRateWant
{
	char		kind;
	int64		id;
	double		rate;			/* documents per second, > 0 */
} EcpRateWant;
extern int	ecp_limiter_sync(const EcpRateWant *wants, int n);
extern void ecp_limiter_forget_waits(void);

/* alerts.c */
extern void ecp_post_alerts(void);

/* retention.c: ecp.history_days, the purge of old history */
extern int	ecp_history_days;
extern void ecp_retention_define_gucs(void);
extern void ecp_purge_history(void);

/* sandbox.c */
extern void ecp_sandbox_define_gucs(void);

/* worker.c */
extern PGDLLEXPORT void ecp_worker_main(Datum main_arg);

/* launcher.c */
extern void ecp_register_launcher(void);
extern PGDLLEXPORT void ecp_launcher_main(Datum main_arg);
extern bool ecp_launcher_stopping(void);

/* utility_hook.c */
extern void ecp_utility_hook_install(void);

/* backend/functions.c: CREATE EXTENSION ecp in ecp.database_name only */
extern void ecp_install_check_define_gucs(void);

/* backend/error_context.c: errors without ecp's internal CONTEXT lines */
extern void ecp_error_context_define_gucs(void);
extern void ecp_error_context_install(void);

#endif							/* ECP_H */
