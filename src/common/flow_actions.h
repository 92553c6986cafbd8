/*
 * flow_actions.h: the actions of ecp.flow_log, as the table's CHECK
 * constraint spells them.  One list for both sides: ecp_internal._flow_actions()
 * returns these names, and pg_regress compares them with the CHECK and
 * with every action ecp's SQL functions write, like the run states.
 */
#ifndef ECP_FLOW_ACTIONS_H
#define ECP_FLOW_ACTIONS_H

typedef enum EcpFlowAction
{
	/* written by ecp's SQL: triggers on consumer, task and run, functions */
	ECP_FLOW_CREATE_CONSUMER,
	ECP_FLOW_CREATE_TASK,
	ECP_FLOW_START,
	ECP_FLOW_PAUSE,
	ECP_FLOW_RESUME,
	ECP_FLOW_RUNNING,
	ECP_FLOW_CANCEL,
	ECP_FLOW_FINISHED,
	ECP_FLOW_FAILED,
	ECP_FLOW_SET_RATE,
	ECP_FLOW_ALERT,
	ECP_FLOW_DROP_OWNED,
	ECP_FLOW_CRON_SKIPPED,
	/* written by the workers (run_store.c, through ecp_internal._flow_event) */
	ECP_FLOW_WORKER_STARTED,
	ECP_FLOW_RECOVERED,
	ECP_FLOW_DUAL_WRITE,
	ECP_FLOW_DUAL_WRITE_ENDED,
	ECP_FLOW_RETRY,
	ECP_FLOW_SPLIT,
	ECP_FLOW_FILE_RESUMED,
	ECP_FLOW_CLUSTER,
	ECP_FLOW_NODES_USED,
	ECP_FLOW_NODE_DOWN,
	ECP_FLOW_REFRESHED,
	ECP_FLOW_INDEX_EXISTS,
	ECP_FLOW_INDEX_CREATED,
	ECP_FLOW_SETTINGS_RESTORED,
	ECP_FLOW_COUNT_CHECKED,
	ECP_FLOW_ALIAS_SWAPPED,
	ECP_FLOW_INDEX_DROPPED,
	ECP_FLOW_ROLLBACK,
	/* following changes: ecp.follow and ecp.unfollow (SQL), the follower */
	ECP_FLOW_FOLLOW,
	ECP_FLOW_UNFOLLOW,
	ECP_FLOW_CAPTURE_READY,
	ECP_FLOW_TRUNCATE_SEEN,
	/* written by ecp's SQL: a run's watermarks, ecp.reset_watermark */
	ECP_FLOW_WATERMARK,
	/* written by the workers: an id that two queries of a task return */
	ECP_FLOW_DUPLICATE_IDS,
	/* verify and repair */
	ECP_FLOW_WALK_RESTARTED,
	/* the lifecycle of tasks and consumers: triggers on their rows */
	ECP_FLOW_ALTER_TASK,
	ECP_FLOW_RENAME_TASK,
	ECP_FLOW_DROP_TASK,
	ECP_FLOW_ALTER_CONSUMER,
	ECP_FLOW_RENAME_CONSUMER,
	ECP_FLOW_DROP_CONSUMER,
	ECP_FLOW_CLAIM_LOST,
	/* paging cursor: a part that starts its query again from the beginning */
	ECP_FLOW_CURSOR_RESTARTED
} EcpFlowAction;

#define ECP_FLOW_NACTIONS (ECP_FLOW_CURSOR_RESTARTED + 1)

/* ecp.flow_log.action's words, indexed by EcpFlowAction. */
extern const char *const ecp_flow_action_names[ECP_FLOW_NACTIONS];

#endif
