/*
 * module.c: what PostgreSQL calls when it loads ecp.so.
 *
 * Defines the GUCs and installs the hooks.  The launcher is registered only
 * while shared_preload_libraries is processed: a static background worker
 * cannot be registered later, and without it no run would ever start.
 */
#include "ecp.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "host_policy.h"
#include "option_contract.h"

PG_MODULE_MAGIC;

char	   *ecp_database_name = NULL;
int			ecp_max_workers = 8;
int			ecp_max_retries = 10;
int			ecp_max_followers_per_role = 4;
int			ecp_max_follow_slots = 4;
int			ecp_follow_interval_ms = 250;
int			ecp_follow_max_retained_wal_mb = 1024;
int			ecp_retry_base_ms = 1000;
int			ecp_retry_max_ms = 30000;
int			ecp_heartbeat_interval = 5;
int			ecp_recovery_timeout = 60;
int			ecp_alert_after = 3;
char	   *ecp_alert_webhook = NULL;

void		_PG_init(void);

/*
 * The GUC that holds a task option's default (ecp.max_retries, ...): its
 * boot value and bounds are the option's in the contract
 * (option_contract.c).
 */
static void
define_option_default(const char *option_name, const char *description, int *variable, int flags)
{
	const EcpOption *option = ecp_option_find("task", option_name);

	DefineCustomIntVariable(option->default_setting, description, NULL, variable,
							(int) strtol(option->default_json, NULL, 10),
							(int) option->min, (int) option->max,
							PGC_SIGHUP, flags, NULL, NULL, NULL);
}

static void
define_gucs(void)
{
	DefineCustomStringVariable("ecp.database_name",
							   "Database the ecp launcher connects to.",
							   "ecp's tables live in this database; create the extension there.",
							   &ecp_database_name,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("ecp.max_workers",
							"Maximum number of ecp sync workers running at once.",
							"Each takes one of max_worker_processes.",
							&ecp_max_workers,
							8, 1, 1024,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);
	define_option_default("max_retries",
						  "Default for the task option max_retries: attempts per batch after a transient failure.",
						  &ecp_max_retries, 0);
	define_option_default("retry_base_ms",
						  "Default for the task option retry_base_ms: the unit of the Fibonacci back-off.",
						  &ecp_retry_base_ms, GUC_UNIT_MS);
	define_option_default("retry_max_ms",
						  "Default for the task option retry_max_ms: the longest back-off wait.",
						  &ecp_retry_max_ms, GUC_UNIT_MS);
	DefineCustomIntVariable("ecp.heartbeat_interval",
							"How often a worker renews its heartbeat, also while it waits.",
							NULL, &ecp_heartbeat_interval, 5, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("ecp.recovery_timeout",
							"A running part whose heartbeat is older than this and that has no worker is restarted.",
							NULL, &ecp_recovery_timeout, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("ecp.alert_after",
							"Alert after this many consecutive failed attempts of a batch.",
							NULL, &ecp_alert_after, 3, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ecp.max_followers_per_role",
							"How many tasks one role may follow at once (ecp.follow).",
							"Each follower holds a worker slot for as long as it follows.",
							&ecp_max_followers_per_role, 4, 0, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ecp.max_follow_slots",
							"How many replication slots ecp's followers may hold (mode decoding).",
							"Each slot decodes all WAL of the database and retains WAL until its follower confirms it.",
							&ecp_max_follow_slots, 4, 0, 100,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ecp.follow_interval",
							"How often an idle follower looks for changes.",
							NULL, &ecp_follow_interval_ms, 250, 10, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("ecp.follow_max_retained_wal",
							"Alert when a follower's replication slot retains more WAL than this.",
							"Set max_slot_wal_keep_size too: past it PostgreSQL invalidates the slot instead of filling the disk.",
							&ecp_follow_max_retained_wal_mb, 1024, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MB, NULL, NULL, NULL);
	/* superuser-only: a webhook URL often carries a token */
	DefineCustomStringVariable("ecp.alert_webhook",
							   "URL the launcher POSTs every alert to (JSON), best effort; empty: none.",
							   NULL, &ecp_alert_webhook, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	ecp_host_policy_define_gucs();
	ecp_scheduler_define_gucs();
	ecp_retention_define_gucs();
	ecp_sandbox_define_gucs();
	ecp_error_context_define_gucs();
	ecp_install_check_define_gucs();
	MarkGUCPrefixReserved("ecp");
}

void
_PG_init(void)
{
	define_gucs();

	if (!process_shared_preload_libraries_in_progress)
		return;

	ecp_shmem_install_hooks();
	ecp_limiter_install_hooks();
	ecp_utility_hook_install();
	ecp_error_context_install();
	ecp_commit_signals_install();
	ecp_register_launcher();
}
