/*
 * flow_actions.c: the names of the flow actions (flow_actions.h), and
 * ecp_internal._flow_actions() that shows them to SQL.
 */
#include "ecp.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "flow_actions.h"

/*
 * Named by index, so a name sits next to its enum value; the CHECK of
 * ecp.flow_log lists them in this order.
 */
const char *const ecp_flow_action_names[ECP_FLOW_NACTIONS] = {
	[ECP_FLOW_CREATE_CONSUMER] = "create_consumer",
	[ECP_FLOW_CREATE_TASK] = "create_task",
	[ECP_FLOW_START] = "start",
	[ECP_FLOW_PAUSE] = "pause",
	[ECP_FLOW_RESUME] = "resume",
	[ECP_FLOW_RUNNING] = "running",
	[ECP_FLOW_CANCEL] = "cancel",
	[ECP_FLOW_FINISHED] = "finished",
	[ECP_FLOW_FAILED] = "failed",
	[ECP_FLOW_SET_RATE] = "set_rate",
	[ECP_FLOW_ALERT] = "alert",
	[ECP_FLOW_DROP_OWNED] = "drop_owned",
	[ECP_FLOW_CRON_SKIPPED] = "cron skipped",
	[ECP_FLOW_WORKER_STARTED] = "worker started",
	[ECP_FLOW_RECOVERED] = "recovered",
	[ECP_FLOW_DUAL_WRITE] = "dual write",
	[ECP_FLOW_DUAL_WRITE_ENDED] = "dual write ended",
	[ECP_FLOW_RETRY] = "retry",
	[ECP_FLOW_SPLIT] = "split",
	[ECP_FLOW_FILE_RESUMED] = "file resumed",
	[ECP_FLOW_CLUSTER] = "cluster",
	[ECP_FLOW_NODES_USED] = "nodes used",
	[ECP_FLOW_NODE_DOWN] = "node down",
	[ECP_FLOW_REFRESHED] = "refreshed",
	[ECP_FLOW_INDEX_EXISTS] = "index exists",
	[ECP_FLOW_INDEX_CREATED] = "index created",
	[ECP_FLOW_SETTINGS_RESTORED] = "settings restored",
	[ECP_FLOW_COUNT_CHECKED] = "count checked",
	[ECP_FLOW_ALIAS_SWAPPED] = "alias swapped",
	[ECP_FLOW_INDEX_DROPPED] = "index dropped",
	[ECP_FLOW_ROLLBACK] = "rollback",
	[ECP_FLOW_FOLLOW] = "follow",
	[ECP_FLOW_UNFOLLOW] = "unfollow",
	[ECP_FLOW_CAPTURE_READY] = "capture ready",
	[ECP_FLOW_TRUNCATE_SEEN] = "truncate seen",
	[ECP_FLOW_WATERMARK] = "watermark",
	[ECP_FLOW_DUPLICATE_IDS] = "duplicate ids",
	[ECP_FLOW_WALK_RESTARTED] = "walk restarted",
	[ECP_FLOW_ALTER_TASK] = "alter_task",
	[ECP_FLOW_RENAME_TASK] = "rename_task",
	[ECP_FLOW_DROP_TASK] = "drop_task",
	[ECP_FLOW_ALTER_CONSUMER] = "alter_consumer",
	[ECP_FLOW_RENAME_CONSUMER] = "rename_consumer",
	[ECP_FLOW_DROP_CONSUMER] = "drop_consumer",
	[ECP_FLOW_CLAIM_LOST] = "claim lost",
	[ECP_FLOW_CURSOR_RESTARTED] = "cursor restarted",
};

PG_FUNCTION_INFO_V1(ecp_flow_actions);

/*
 * ecp_internal._flow_actions(): the flow actions the C code knows, in order;
 * pg_regress checks them against ecp.flow_log's CHECK constraint.  A name
 * left out of the list above is an error here, not a NULL in the array.
 */
Datum
ecp_flow_actions(PG_FUNCTION_ARGS)
{
	Datum		names[ECP_FLOW_NACTIONS];

	for (int i = 0; i < ECP_FLOW_NACTIONS; i++)
	{
		if (ecp_flow_action_names[i] == NULL)
			elog(ERROR, "flow action %d has no name in ecp_flow_action_names", i);
		names[i] = CStringGetTextDatum(ecp_flow_action_names[i]);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(names, ECP_FLOW_NACTIONS, TEXTOID, -1, false, TYPALIGN_INT));
}
