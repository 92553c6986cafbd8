/*
 * launcher_pass.h: what the launcher's pass (scheduler.c) uses besides
 * its own decisions: each step in a subtransaction whose lock waits are
 * bounded (pass_steps.c), and a task's options read from a row and
 * checked (launcher_options.c).
 */
#ifndef ECP_LAUNCHER_PASS_H
#define ECP_LAUNCHER_PASS_H

#include "ecp.h"

#include "access/htup.h"
#include "access/tupdesc.h"

#include "option_contract.h"

/* Largest parallelism of a task (the option's bound in the contract). */
#define MAX_PARALLELISM ECP_MAX_PARALLELISM

/*
 * How long a write of the pass waits for a lock before it gives up until
 * the next pass: roles may lock their own runs and tasks (FOR UPDATE), and
 * the launcher serves every role.
 */
#define PASS_LOCK_TIMEOUT "100ms"

/* A task's settings as the launcher uses them, checked. */
typedef struct TaskSettings
{
	int			max_retries;
	int			retry_base_ms;
	int			retry_max_ms;
	double		task_rate;		/* 0: unlimited */
	double		consumer_rate;
	int			parallelism;	/* parts of one run at once */
} TaskSettings;

/*
 * One option of a task (o = "t") or consumer ("c") as two columns of the
 * pass's SQL, (jsonb_typeof, text): the SQL casts nothing a user wrote.
 * The columns of ecp_launcher_settings, in its order: max_retries,
 * retry_base_ms, retry_max_ms of the task, rate_limit of the task and of
 * the consumer, parallelism of the task.
 */
#define OPTION_COLUMNS(o, name) \
	"pg_catalog.jsonb_typeof(" o ".options OPERATOR(pg_catalog.->) '" name "'::pg_catalog.text), " \
	o ".options OPERATOR(pg_catalog.->>) '" name "'::pg_catalog.text"

/* pass_steps.c */
extern bool ecp_pass_step(void (*step) (void *), void *arg, const char *what, bool bounded_locks);

/* launcher_options.c */
extern TaskSettings ecp_launcher_settings(HeapTuple tuple, TupleDesc desc, int task_name_column,
										  int consumer_name_column, int first_option_column,
										  int64 task_id, int64 consumer_id);

#endif							/* ECP_LAUNCHER_PASS_H */
