/*
 * pass_steps.c: each step of the launcher's pass (reading the runs,
 * applying windows, failing a run) runs in a subtransaction of its own, so
 * an error rolls back only that step and the pass goes on; and its lock
 * waits are bounded, since roles may lock the rows of their own runs and
 * tasks for as long as they like and the launcher serves every role.
 */
#include "ecp.h"

#include "access/xact.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "launcher_pass.h"

/* A write that keeps finding its row locked is logged once per this. */
#define LOCKED_LOG_MS 60000

/* At most this many distinct writes are remembered as logged. */
#define MAX_LOGGED 10000

#define LOGGED_KEY_LEN 160

typedef struct LockedLog
{
	char		key[LOGGED_KEY_LEN];	/* what the launcher tried */
	TimestampTz logged_at;
} LockedLog;

/* When each write that found its rows locked was last logged, by what it does. */
static HTAB *locked_logged = NULL;

/*
 * Whether a write that found its rows locked should be logged now: once
 * per LOCKED_LOG_MS for each thing the launcher tried (say, "fail run 93"),
 * not at every pass while a role keeps its lock.
 */
static bool
locked_log_due(const char *what)
{
	char		key[LOGGED_KEY_LEN];
	LockedLog  *entry;
	TimestampTz now = GetCurrentTimestamp();
	bool		found;

	if (locked_logged == NULL || hash_get_num_entries(locked_logged) >= MAX_LOGGED)
	{
		HASHCTL		ctl;

		if (locked_logged)
			hash_destroy(locked_logged);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = LOGGED_KEY_LEN;
		ctl.entrysize = sizeof(LockedLog);
		locked_logged = hash_create("ecp locked writes", 64, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	strlcpy(key, what, sizeof(key));
	entry = hash_search(locked_logged, key, HASH_ENTER, &found);
	if (found && !TimestampDifferenceExceeds(entry->logged_at, now, LOCKED_LOG_MS))
		return false;
	entry->logged_at = now;
	return true;
}

/* Report a step that failed: a lock held elsewhere is retried quietly. */
static void
report_step_error(const ErrorData *edata, const char *what)
{
	if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("ecp launcher could not %s: %s", what, edata->message),
				 errhint("The launcher goes on with the other runs and tries again in a second.")));
	else if (locked_log_due(what))
		ereport(LOG,
				(errmsg("ecp launcher could not %s yet: a lock it needs is held by another transaction (%s)",
						what, edata->message),
				 errdetail("Roles may lock the rows of their own runs and tasks (SELECT ... FOR UPDATE); the launcher waits at most %s for a lock, never for a role's transaction.",
						   PASS_LOCK_TIMEOUT),
				 errhint("The launcher goes on with the other runs and tries again at every pass; this is logged once a minute.")));
}

/*
 * Run step(arg) in a subtransaction: an error rolls back only the step,
 * and the pass goes on.  With bounded_locks, the step waits at most
 * PASS_LOCK_TIMEOUT for any lock (the session pins lock_timeout = 0,
 * launcher.c): a step that changes rows a role can lock must never hold up
 * the pass for every role.
 */
bool
ecp_pass_step(void (*step) (void *), void *arg, const char *what, bool bounded_locks)
{
	MemoryContext caller_context = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller_context);
	PG_TRY();
	{
		/* as a function's SET clause: undone when the step ends, either way */
		int			guc_level = NewGUCNestLevel();

		if (bounded_locks)
			(void) set_config_option("lock_timeout", PASS_LOCK_TIMEOUT, PGC_SUSET, PGC_S_OVERRIDE,
									 GUC_ACTION_SAVE, true, 0, false);
		step(arg);
		AtEOXact_GUC(true, guc_level);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		report_step_error(edata, what);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller_context);
	CurrentResourceOwner = caller_owner;
	return ok;
}

