/*
 * shmem.c: the shared-memory segment of ecp.
 *
 * Space and the LWLock tranche are requested from shmem_request_hook (the
 * only place PostgreSQL 15 allows it) and initialised once, under
 * AddinShmemInitLock, in shmem_startup_hook.
 */
#include "ecp.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#define ECP_TRANCHE_NAME "ecp"

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static EcpSharedState *shared_state = NULL;

static Size
shared_state_size(void)
{
	return add_size(offsetof(EcpSharedState, slots),
					mul_size(sizeof(EcpWorkerSlot), ecp_max_workers));
}

static void
ecp_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(shared_state_size()));
	RequestAddinShmemSpace(MAXALIGN(ecp_limiter_shmem_size()));
	RequestNamedLWLockTranche(ECP_TRANCHE_NAME, 1);
}

static void
ecp_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared_state = ShmemInitStruct("ecp shared state", shared_state_size(), &found);
	if (!found)
	{
		memset(shared_state, 0, shared_state_size());
		shared_state->lock = &(GetNamedLWLockTranche(ECP_TRANCHE_NAME))->lock;
		shared_state->nslots = ecp_max_workers;
	}
	ecp_limiter_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

void
ecp_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ecp_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ecp_shmem_startup;
}

/*
 * The shared state, or an error when ecp was not preloaded (the SQL
 * functions can be called after a plain CREATE EXTENSION).
 */
EcpSharedState *
ecp_shared(void)
{
	if (shared_state == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ecp is not loaded through shared_preload_libraries"),
				 errhint("Add 'ecp' to shared_preload_libraries in postgresql.conf and restart the server.")));
	return shared_state;
}

void
ecp_wake_launcher(void)
{
	EcpSharedState *state = ecp_shared();
	Latch	   *latch;

	LWLockAcquire(state->lock, LW_SHARED);
	latch = state->launcher_latch;
	if (latch)
		SetLatch(latch);
	LWLockRelease(state->lock);
}

pid_t
ecp_launcher_pid(void)
{
	EcpSharedState *state = ecp_shared();
	pid_t		pid;

	LWLockAcquire(state->lock, LW_SHARED);
	pid = state->launcher_pid;
	LWLockRelease(state->lock);
	return pid;
}

void
ecp_set_database_held(bool held)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->database_held = held;
	LWLockRelease(state->lock);
}

bool
ecp_database_is_held(void)
{
	EcpSharedState *state = ecp_shared();
	bool		held;

	LWLockAcquire(state->lock, LW_SHARED);
	held = state->database_held;
	LWLockRelease(state->lock);
	return held;
}

/*
 * Reserve a free worker slot for a part; -1 when all are taken.  Reserved
 * slots whose worker never attached are reclaimed by the launcher through
 * ecp_release_slot.
 */
int
ecp_reserve_slot(int64 run_id, int32 part_no)
{
	EcpSharedState *state = ecp_shared();
	int			found = -1;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	for (int i = 0; i < state->nslots; i++)
	{
		EcpWorkerSlot *slot = &state->slots[i];

		if (!slot->in_use)
		{
			memset(slot, 0, sizeof(*slot));
			slot->in_use = true;
			slot->run_id = run_id;
			slot->part_no = part_no;
			slot->reserved_at = GetCurrentTimestamp();
			found = i;
			break;
		}
	}
	LWLockRelease(state->lock);
	return found;
}

void
ecp_release_slot(int slot)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	memset(&state->slots[slot], 0, sizeof(EcpWorkerSlot));
	LWLockRelease(state->lock);
}

bool
ecp_part_has_slot(int64 run_id, int32 part_no)
{
	EcpSharedState *state = ecp_shared();
	bool		found = false;

	LWLockAcquire(state->lock, LW_SHARED);
	for (int i = 0; i < state->nslots && !found; i++)
		found = state->slots[i].in_use && state->slots[i].run_id == run_id &&
			state->slots[i].part_no == part_no;
	LWLockRelease(state->lock);
	return found;
}

void
ecp_attach_slot(int slot)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->slots[slot].pid = MyProcPid;
	state->slots[slot].latch = MyLatch;
	LWLockRelease(state->lock);
}

/* Read without the lock: a bool, polled often, set once. */
bool
ecp_stop_requested(int slot)
{
	return ((volatile EcpWorkerSlot *) &ecp_shared()->slots[slot])->stop_requested;
}

/* Ask every worker of a run to stop what it is doing and look at the run. */
void
ecp_request_stop(int64 run_id)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	for (int i = 0; i < state->nslots; i++)
	{
		EcpWorkerSlot *slot = &state->slots[i];

		if (slot->in_use && slot->run_id == run_id)
		{
			slot->stop_requested = true;
			if (slot->latch)
				SetLatch(slot->latch);
		}
	}
	LWLockRelease(state->lock);
}
