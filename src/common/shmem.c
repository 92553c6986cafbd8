/*
 * shmem.c: the shared-memory segment of ecp.
 *
 * Space and the LWLock tranche are requested from shmem_request_hook (the
 * only place PostgreSQL 15 allows it) and initialised once, under
 * AddinShmemInitLock, in shmem_startup_hook.
 */
#include "ecp.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/procarray.h"
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
	state->database_held_by = 0;
	LWLockRelease(state->lock);
}

/* This backend's DROP DATABASE holds the launcher out, until it ends. */
void
ecp_hold_database(void)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->database_held = true;
	state->database_held_by = MyProcPid;
	LWLockRelease(state->lock);
}

/* The drop failed or this backend exits: release our hold, not another's. */
void
ecp_release_database_hold(void)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (state->database_held && state->database_held_by == MyProcPid)
	{
		state->database_held = false;
		state->database_held_by = 0;
	}
	LWLockRelease(state->lock);
}

/* The drop committed: the hold outlives us, until CREATE DATABASE. */
void
ecp_keep_database_hold(void)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (state->database_held && state->database_held_by == MyProcPid)
		state->database_held_by = 0;
	LWLockRelease(state->lock);
}

/*
 * Drop a hold whose DROP DATABASE backend is gone without releasing it
 * (say, killed with SIGKILL between the hold and its callbacks); true when
 * one was dropped.  The liveness check is done without our lock, then the
 * hold is cleared only if it is still that backend's.
 */
bool
ecp_drop_stale_database_hold(void)
{
	EcpSharedState *state = ecp_shared();
	pid_t		holder;
	bool		dropped = false;

	LWLockAcquire(state->lock, LW_SHARED);
	holder = state->database_held ? state->database_held_by : 0;
	LWLockRelease(state->lock);
	if (holder == 0 || BackendPidGetProc(holder) != NULL)
		return false;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (state->database_held && state->database_held_by == holder)
	{
		state->database_held = false;
		state->database_held_by = 0;
		dropped = true;
	}
	LWLockRelease(state->lock);
	return dropped;
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

/* Whether a slot (other than except) holds the part; the caller holds the lock. */
static bool
part_held(const EcpSharedState *state, int64 run_id, int32 part_no, int except)
{
	for (int i = 0; i < state->nslots; i++)
		if (i != except && state->slots[i].in_use && state->slots[i].run_id == run_id &&
			state->slots[i].part_no == part_no)
			return true;
	return false;
}

/*
 * Reserve a free worker slot for a part; -1 when all are taken, -2 when a
 * slot holds the part already (a worker of its run went on with it since
 * the launcher looked; even_if_held: a second one all the same, for
 * ecp.test_claim_race).  Reserved slots whose worker never attached are
 * reclaimed by the launcher through ecp_reclaim_slot.
 */
int
ecp_reserve_slot(int64 run_id, int32 part_no, bool even_if_held)
{
	EcpSharedState *state = ecp_shared();
	int			found = -1;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (!even_if_held && part_held(state, run_id, part_no, -1))
		found = -2;
	for (int i = 0; i < state->nslots && found == -1; i++)
	{
		EcpWorkerSlot *slot = &state->slots[i];

		if (!slot->in_use)
		{
			memset(slot, 0, sizeof(*slot));
			slot->in_use = true;
			slot->run_id = run_id;
			slot->part_no = part_no;
			slot->reserved_at = GetCurrentTimestamp();
			slot->generation = ++state->slot_generations;
			found = i;
			break;
		}
	}
	LWLockRelease(state->lock);
	return found;
}

/* The generation of a slot the launcher just reserved (it alone reserves). */
uint64
ecp_slot_generation(int slot)
{
	EcpSharedState *state = ecp_shared();
	uint64		generation;

	LWLockAcquire(state->lock, LW_SHARED);
	generation = state->slots[slot].generation;
	LWLockRelease(state->lock);
	return generation;
}

/*
 * The launcher frees a reservation whose worker never attached; false when
 * the slot is no longer that reservation or its worker attached meanwhile.
 */
bool
ecp_reclaim_slot(int slot, uint64 generation)
{
	EcpSharedState *state = ecp_shared();
	EcpWorkerSlot *s = &state->slots[slot];
	bool		reclaimed = false;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (s->in_use && s->generation == generation && s->pid == 0)
	{
		memset(s, 0, sizeof(EcpWorkerSlot));
		reclaimed = true;
	}
	LWLockRelease(state->lock);
	return reclaimed;
}

/*
 * A worker's exit: free its own slot (only if it is still the one it
 * attached to).
 */
void
ecp_release_slot(int slot)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (state->slots[slot].pid == MyProcPid)
		memset(&state->slots[slot], 0, sizeof(EcpWorkerSlot));
	LWLockRelease(state->lock);
}

/*
 * A worker whose part ended moves its slot to the next part of its run;
 * false when a slot holds that part already (the launcher started a
 * worker for it meanwhile): the worker then leaves it alone.
 */
bool
ecp_move_slot(int slot, int64 run_id, int32 part_no)
{
	EcpSharedState *state = ecp_shared();
	bool		moved = false;

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (state->slots[slot].pid == MyProcPid && state->slots[slot].run_id == run_id &&
		!part_held(state, run_id, part_no, slot))
	{
		state->slots[slot].part_no = part_no;
		moved = true;
	}
	LWLockRelease(state->lock);
	return moved;
}

/* The launcher's pass: the runs that wait for a slot (see nwaiting_runs). */
void
ecp_set_waiting_runs(const int64 *run_ids, int nruns)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->nwaiting_runs = Min(nruns, ECP_WAITING_RUNS);
	state->waiting_overflow = nruns > ECP_WAITING_RUNS;
	memcpy(state->waiting_runs, run_ids, sizeof(int64) * state->nwaiting_runs);
	LWLockRelease(state->lock);
}

/* Whether a run other than this one waits for a slot. */
bool
ecp_other_run_waits(int64 run_id)
{
	EcpSharedState *state = ecp_shared();
	bool		waits;

	LWLockAcquire(state->lock, LW_SHARED);
	waits = state->waiting_overflow;
	for (int i = 0; i < state->nwaiting_runs && !waits; i++)
		waits = state->waiting_runs[i] != run_id;
	LWLockRelease(state->lock);
	return waits;
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

/*
 * A worker takes up the slot the launcher reserved for it.  If the
 * reservation is gone (the worker started so late that the launcher gave
 * the slot up, and perhaps to another part), it must not touch the slot
 * nor run the part: it exits, and the launcher starts the part again.
 */
void
ecp_attach_slot(int slot)
{
	EcpSharedState *state = ecp_shared();
	uint64		mine = 0;
	bool		attached = false;

	if (MyBgworkerEntry != NULL)
		memcpy(&mine, MyBgworkerEntry->bgw_extra + ECP_SLOT_GENERATION_OFFSET, sizeof(mine));

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	if (slot >= 0 && slot < state->nslots && state->slots[slot].in_use &&
		state->slots[slot].generation == mine && state->slots[slot].pid == 0)
	{
		state->slots[slot].pid = MyProcPid;
		state->slots[slot].latch = MyLatch;
		attached = true;
	}
	LWLockRelease(state->lock);

	if (!attached)
	{
		ereport(LOG,
				(errmsg("ecp worker exits: its slot %d was given up before it started (generation " UINT64_FORMAT ")",
						slot, mine),
				 errdetail("The worker started more than a minute after the launcher asked for it; the launcher starts its part again.")));
		proc_exit(0);
	}
}

/*
 * Read without the lock: a bool, polled often; set by ecp_request_stop and
 * cleared by ecp_clear_stop_request, both under the lock.
 */
bool
ecp_stop_requested(int slot)
{
	return ((volatile EcpWorkerSlot *) &ecp_shared()->slots[slot])->stop_requested;
}

/*
 * A worker takes its stop request back before it reads the run's state,
 * under the lock ecp_request_stop sets it with (whose release is also the
 * barrier that orders the clear before the read).
 */
void
ecp_clear_stop_request(int slot)
{
	EcpSharedState *state = ecp_shared();

	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->slots[slot].stop_requested = false;
	LWLockRelease(state->lock);
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
