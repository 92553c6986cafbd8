/*
 * ecp.h: declarations shared by the parts of ecp that run inside PostgreSQL.
 *
 * This header includes only PostgreSQL headers that do not clash with
 * jansson (no utils/builtins.h): files that work with JSON include it too.
 */
#ifndef ECP_H
#define ECP_H

#include "postgres.h"

#include "storage/latch.h"
#include "storage/lwlock.h"

#ifndef ECP_VERSION
#error "ECP_VERSION must be defined by the build (see Makefile)"
#endif

#define ECP_EXTENSION_NAME "ecp"
#define ECP_LAUNCHER_TYPE "ecp launcher"

/* Seconds the postmaster waits before restarting a launcher that exited. */
#define ECP_LAUNCHER_RESTART_SECONDS 5

/* How often the launcher wakes up on its own, in milliseconds. */
#define ECP_LAUNCHER_NAPTIME_MS 1000L

/* GUCs (module.c) */
extern char *ecp_database_name;

/*
 * Live state shared by all backends.  Only plain data: durable state lives
 * in tables, and this struct is rebuilt empty after a crash restart.
 */
typedef struct EcpSharedState
{
	LWLock	   *lock;			/* protects every field below */
	pid_t		launcher_pid;	/* 0 while no launcher runs */
	Latch	   *launcher_latch; /* to wake the launcher; NULL when none */
	bool		launcher_connected; /* connected to ecp.database_name */

	/*
	 * Set while the launcher's database is being dropped, or after it was:
	 * the launcher then keeps out of it (without connecting) until a
	 * CREATE DATABASE of that name clears the flag.
	 */
	bool		database_held;
} EcpSharedState;

/* shmem.c */
extern void ecp_shmem_install_hooks(void);
extern EcpSharedState *ecp_shared(void);
extern void ecp_wake_launcher(void);
extern pid_t ecp_launcher_pid(void);
extern void ecp_set_database_held(bool held);
extern bool ecp_database_is_held(void);

/* launcher.c */
extern void ecp_register_launcher(void);
extern PGDLLEXPORT void ecp_launcher_main(Datum main_arg);

/* utility_hook.c */
extern void ecp_utility_hook_install(void);

#endif							/* ECP_H */
