/*
 * worker_args.h: what the launcher hands a sync worker in bgw_extra.
 */
#ifndef ECP_WORKER_ARGS_H
#define ECP_WORKER_ARGS_H

#include "datatype/timestamp.h"

typedef struct EcpWorkerArgs
{
	Oid			database;
	Oid			owner;			/* the run's owner: the worker acts as this role */
	int64		run_id;
	int32		part_no;
	bool		recovering;		/* the part was running: a worker died */
	bool		has_heartbeat;
	TimestampTz heartbeat_seen; /* the claim is a compare-and-set on it */
} EcpWorkerArgs;

#endif
