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

#define ECP_TRANCHE_NAME "ecp"

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static EcpSharedState *shared_state = NULL;

static void
ecp_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(EcpSharedState)));
	RequestNamedLWLockTranche(ECP_TRANCHE_NAME, 1);
}

static void
ecp_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared_state = ShmemInitStruct("ecp shared state", sizeof(EcpSharedState), &found);
	if (!found)
	{
		memset(shared_state, 0, sizeof(EcpSharedState));
		shared_state->lock = &(GetNamedLWLockTranche(ECP_TRANCHE_NAME))->lock;
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
