/*
 * host_policy.h: which hosts, TLS settings and CA files a role may use for
 * its consumers.  The SQL function
 * ecp_internal._check_consumer_target checks a consumer when it is created; the
 * worker checks every address it connects to (sink_es.c) and the TLS
 * options when it opens the sink.  Superusers, and members of
 * ecp.unrestricted_role, are exempt.
 *
 * Include after postgres.h.
 */
#ifndef ECP_HOST_POLICY_H
#define ECP_HOST_POLICY_H

#include "host_match.h"

/* GUCs (superuser only, reload) */
extern char *ecp_allowed_hosts;
extern bool ecp_block_private_networks;
extern char *ecp_unrestricted_role;
extern char *ecp_ca_directory;
extern bool ecp_allow_insecure_tls;

/* Defines the GUCs above; module.c calls it from _PG_init. */
extern void ecp_host_policy_define_gucs(void);

/*
 * Is roleid exempt from the policy: a superuser or a member of
 * ecp.unrestricted_role?  Reads the catalogs: call it in a transaction.
 */
extern bool ecp_host_policy_role_exempt(Oid roleid);

/*
 * The policy as the GUCs say now (they change on reload), with this
 * server's own addresses when ecp.block_private_networks is on (read with
 * getifaddrs, at most every few seconds).  Neither pallocs nor ereports:
 * the connect-time filter calls it inside libcurl.
 */
extern void ecp_host_policy_current(HmPolicy *policy);

/*
 * Is path a regular file inside ecp.ca_directory (after resolving symlinks
 * and "..")?  When it is, *resolved is its real path (palloc'd): hand that
 * to curl, not path, so a later swap of a link changes nothing.
 */
extern bool ecp_host_policy_ca_file_allowed(const char *path, char **resolved);

#endif
