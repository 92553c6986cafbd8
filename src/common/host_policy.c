/*
 * host_policy.c: the outbound-request policy.
 *
 * Without it any role could make the server POST to any host:port (SSRF:
 * the cloud metadata service, an internal admin port), read part of the
 * answer back in last_error, turn TLS verification off, or make curl open
 * any server file as a CA bundle.  The GUCs here are superuser-only; a
 * role that is not a superuser (nor a member of ecp.unrestricted_role) may
 * only target what they allow.  The matching itself is in host_match.c
 * (plain C, shared with the worker's connect-time filter).
 */
#include "ecp.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

#include "host_policy.h"

char	   *ecp_allowed_hosts = NULL;
bool		ecp_block_private_networks = true;
char	   *ecp_unrestricted_role = NULL;
char	   *ecp_ca_directory = NULL;
bool		ecp_allow_insecure_tls = false;

PG_FUNCTION_INFO_V1(ecp_check_consumer_target);

/* --------------------------------------------------------------- GUCs */

static bool
check_allowed_hosts(char **newval, void **extra, GucSource source)
{
	char		err[512];

	if (*newval == NULL || hm_validate_list(*newval, err, sizeof(err)) == 0)
		return true;
	GUC_check_errdetail("%s", err);
	GUC_check_errhint("Entries are host, host:port, *.domain, [IPv6]:port, an IP address or a CIDR block such as 10.0.0.0/8, separated by commas.");
	return false;
}

/* A relative directory would depend on each process's working directory. */
static bool
check_ca_directory(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0' || is_absolute_path(*newval))
		return true;
	GUC_check_errdetail("ecp.ca_directory must be an absolute path, not \"%s\".", *newval);
	return false;
}

void
ecp_host_policy_define_gucs(void)
{
	DefineCustomStringVariable("ecp.allowed_hosts",
							   "Hosts and networks the consumers of ordinary roles may connect to; empty: any public address.",
							   "Comma-separated: host, host:port, *.domain, [IPv6]:port, IP address or CIDR block.",
							   &ecp_allowed_hosts, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   check_allowed_hosts, NULL, NULL);
	DefineCustomBoolVariable("ecp.block_private_networks",
							 "Refuse loopback, link-local, private and metadata addresses to ordinary roles unless ecp.allowed_hosts lists them.",
							 NULL, &ecp_block_private_networks, true,
							 PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("ecp.unrestricted_role",
							   "Members of this role are exempt from the outbound-request policy, like superusers.",
							   NULL, &ecp_unrestricted_role, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("ecp.ca_directory",
							   "The only directory whose files ordinary roles may name as consumer option ca_file; empty: none.",
							   NULL, &ecp_ca_directory, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   check_ca_directory, NULL, NULL);
	DefineCustomBoolVariable("ecp.allow_insecure_tls",
							 "Whether ordinary roles may set consumer option insecure (no TLS verification).",
							 NULL, &ecp_allow_insecure_tls, false,
							 PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
}

/* --------------------------------------------------------------- policy */

bool
ecp_host_policy_role_exempt(Oid roleid)
{
	Oid			unrestricted;

	if (superuser_arg(roleid))
		return true;
	if (ecp_unrestricted_role == NULL || ecp_unrestricted_role[0] == '\0')
		return false;
	unrestricted = get_role_oid(ecp_unrestricted_role, true);
	return OidIsValid(unrestricted) && is_member_of_role(roleid, unrestricted);
}

/*
 * This server's own addresses: a service bound to 0.0.0.0 on
 * the database host answers on every one of them, public or not.  Read
 * with getifaddrs, at most every LOCAL_ADDRS_MAX_AGE seconds per process,
 * so an address added later (DHCP, a new bridge) counts soon without a
 * netlink dump per connection.  malloc, not palloc, and no ereport: this
 * runs inside libcurl's callback too (the worker's connect-time address check).
 */
#define LOCAL_ADDRS_MAX_AGE 5.0

static HmAddr *local_addrs = NULL;
static size_t n_local_addrs = 0;
static size_t local_addrs_capacity = 0;
static bool local_addrs_known = false;	/* read successfully at least once */
static double local_addrs_read_at = 0;

static double
monotonic_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double) now.tv_sec + (double) now.tv_nsec / 1e9;
}

/*
 * Read the list again when it is old.  On a failure the last list stays
 * (and the next call tries again); with none yet, the policy refuses every
 * unlisted address (HmPolicy.local_unknown) rather than guess.
 */
static void
refresh_local_addrs(void)
{
	struct ifaddrs *interfaces;
	size_t		needed;
	double		now = monotonic_seconds();

	if (local_addrs_known && now - local_addrs_read_at < LOCAL_ADDRS_MAX_AGE)
		return;
	if (getifaddrs(&interfaces) != 0)
		return;
	needed = hm_collect_local(interfaces, NULL, 0);
	if (needed > local_addrs_capacity)
	{
		HmAddr	   *grown = realloc(local_addrs, needed * sizeof(HmAddr));

		if (grown == NULL)
		{
			freeifaddrs(interfaces);
			return;
		}
		local_addrs = grown;
		local_addrs_capacity = needed;
	}
	n_local_addrs = hm_collect_local(interfaces, local_addrs, local_addrs_capacity);
	freeifaddrs(interfaces);
	local_addrs_known = true;
	local_addrs_read_at = now;
}

void
ecp_host_policy_current(HmPolicy *policy)
{
	memset(policy, 0, sizeof(*policy));
	policy->allowed_hosts = ecp_allowed_hosts;
	policy->block_private = ecp_block_private_networks;
	if (!policy->block_private)
		return;
	refresh_local_addrs();
	policy->local_addrs = local_addrs;
	policy->n_local_addrs = n_local_addrs;
	policy->local_unknown = !local_addrs_known;
}

bool
ecp_host_policy_ca_file_allowed(const char *path, char **resolved)
{
	char		dir[PATH_MAX];
	char		file[PATH_MAX];
	size_t		n;
	struct stat st;

	*resolved = NULL;
	if (ecp_ca_directory == NULL || ecp_ca_directory[0] == '\0' || path == NULL)
		return false;
	if (realpath(ecp_ca_directory, dir) == NULL || realpath(path, file) == NULL)
		return false;
	n = strlen(dir);
	/* inside: "<dir>/..." ("/" holds everything) */
	if (strncmp(file, dir, n) != 0 || (file[n] != '/' && strcmp(dir, "/") != 0))
		return false;
	if (stat(file, &st) != 0 || !S_ISREG(st.st_mode))
		return false;
	*resolved = pstrdup(file);
	return true;
}

/* ------------------------------------------------------ the SQL check */

/*
 * Refuse the target: the message names the host, never the whole URL.
 * entry: the allowed_hosts entry the hint suggests, NULL when there is
 * none to show.  resolved: the address a name resolved to, for the
 * server log only (see check_resolved).
 */
static void
refuse_host(const HmUrl *url, const char *role, const char *why, const char *entry,
			const char *resolved)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("consumer host \"%s\" is not allowed for role \"%s\": %s",
					url->host, role, why),
			 resolved ? errdetail_log("Host \"%s\" resolved to %s.", url->host, resolved) : 0,
			 entry ? errhint("An administrator can allow it with ecp.allowed_hosts = '%s' "
							 "(postgresql.conf, then reload; keep the entries already listed).",
							 entry) :
			 errhint("An administrator can allow it with an ecp.allowed_hosts entry for the "
					 "address it resolves to (postgresql.conf, then reload; keep the entries "
					 "already listed).")));
}

/*
 * Is the host a numeric form of addr ("127.1", "2130706433"), which
 * getaddrinfo reads as an address without asking DNS?  Then the address is
 * no news to the role, and the refusal may name it.
 */
static bool
numeric_form_of(const HmUrl *url, const HmAddr *addr)
{
	struct in_addr numeric;

	return addr->family == 4 && inet_aton(url->host, &numeric) != 0 &&
		memcmp(&numeric, addr->bytes, 4) == 0;
}

/*
 * The allowed_hosts entry a hint suggests for a name: "host:port"; when
 * the name cannot be an entry, the address of a numeric form; else NULL:
 * the address DNS gave is not for the role to see.
 */
static const char *
suggest_entry(const HmUrl *url, const HmAddr *addr, const char *address, char *entry,
			  size_t size)
{
	HmEntry		parsed;

	hm_format_entry(url->host, url->port, entry, size);
	if (hm_parse_entry(entry, strlen(entry), &parsed, NULL, 0) == 0)
		return entry;
	if (!numeric_form_of(url, addr))
		return NULL;
	hm_format_entry(address, url->port, entry, size);
	return entry;
}

/*
 * Judge every address host resolves to; false when it does not resolve.
 * The refusal does not quote an address DNS gave (PUBLIC may
 * call ecp_internal._check_consumer_target, which would make it an oracle of
 * internal DNS); the server log has it for the administrator.  Roles
 * exempt from the policy never get here.
 */
static bool
check_resolved(const HmPolicy *policy, const HmUrl *url, const char *role)
{
	struct addrinfo hints;
	struct addrinfo *list = NULL;
	char		entry[HM_HOST_MAX + 16];

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(url->host, NULL, &hints, &list) != 0)
		return false;
	PG_TRY();
	{
		for (struct addrinfo *ai = list; ai; ai = ai->ai_next)
		{
			HmAddr		addr;
			HmVerdict	verdict;
			char		why[256];
			char		text[HM_ADDR_TEXT];
			const char *reason;

			if (hm_addr_from_sockaddr(ai->ai_addr, ai->ai_addrlen, &addr, NULL) != 0)
				continue;
			verdict = hm_check(policy, url->host, url->port, &addr, why, sizeof(why));
			if (verdict == HM_ALLOWED)
				continue;
			hm_addr_format(&addr, text, sizeof(text));
			if (numeric_form_of(url, &addr))
				reason = psprintf("it resolves to %s, and %s", text, why);
			else if (verdict == HM_BLOCKED)
				reason = "it resolves to a blocked address (ecp.block_private_networks)";
			else
				reason = why;	/* "not listed": about the name and the list */
			refuse_host(url, role, reason, suggest_entry(url, &addr, text, entry, sizeof(entry)),
						text);
		}
	}
	PG_FINALLY();
	{
		freeaddrinfo(list);
	}
	PG_END_TRY();
	return true;
}

static void
check_target_url(const char *url_text, const char *role)
{
	HmUrl		url;
	HmPolicy	policy;
	char		err[256];
	char		why[256];
	char		entry[HM_HOST_MAX + 16];

	if (hm_parse_url(url_text, &url, err, sizeof(err)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid consumer URL: %s", err),
				 errhint("Use http://host:port or https://host:port, with an optional path prefix.")));
	ecp_host_policy_current(&policy);
	if (url.is_ip)
	{
		char		text[HM_ADDR_TEXT];

		hm_addr_format(&url.addr, text, sizeof(text));
		hm_format_entry(text, url.port, entry, sizeof(entry));
		if (hm_check(&policy, url.host, url.port, &url.addr, why, sizeof(why)) != HM_ALLOWED)
			refuse_host(&url, role, why, entry, NULL);
		return;
	}
	/*
	 * A name the policy refuses as a name (the metadata host) is refused
	 * without asking DNS.  A name that does not resolve now is judged by
	 * name; the worker checks the addresses it really connects to anyway.
	 */
	hm_format_entry(url.host, url.port, entry, sizeof(entry));
	if (hm_check(&policy, url.host, url.port, NULL, why, sizeof(why)) == HM_BLOCKED)
		refuse_host(&url, role, why, entry, NULL);
	if (check_resolved(&policy, &url, role))
		return;
	if (hm_check(&policy, url.host, url.port, NULL, why, sizeof(why)) != HM_ALLOWED)
		refuse_host(&url, role, why, entry, NULL);
}

/* A jsonb option's value as a boolean the way the worker reads it (::boolean). */
static bool
option_is_true(const JsonbValue *v)
{
	bool		result = false;

	if (v->type == jbvBool)
		return v->val.boolean;
	if (v->type == jbvString)
		return parse_bool_with_len(v->val.string.val, v->val.string.len, &result) && result;
	return false;
}

static void
check_tls_options(Jsonb *options, const char *role)
{
	JsonbValue	v;

	if (!JB_ROOT_IS_OBJECT(options))
		return;
	if (getKeyJsonValueFromContainer(&options->root, "insecure", 8, &v) &&
		option_is_true(&v) && !ecp_allow_insecure_tls)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("consumer option \"insecure\" is not allowed for role \"%s\"", role),
				 errhint("Name the cluster's CA certificate with option \"ca_file\" instead; an administrator can allow \"insecure\" with ecp.allow_insecure_tls = on (postgresql.conf, then reload).")));
	if (getKeyJsonValueFromContainer(&options->root, "ca_file", 7, &v) && v.type == jbvString)
	{
		char	   *path = pnstrdup(v.val.string.val, v.val.string.len);
		char	   *resolved;

		if (ecp_ca_directory == NULL || ecp_ca_directory[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("consumer option \"ca_file\" is not allowed for role \"%s\"", role),
					 errhint("An administrator can set ecp.ca_directory to a directory of CA certificates that every role may name (postgresql.conf, then reload).")));
		/* one message for missing and outside: no probing of server paths */
		if (!ecp_host_policy_ca_file_allowed(path, &resolved))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("consumer option \"ca_file\" \"%s\" is not a file in ecp.ca_directory", path),
					 errhint("Name a CA certificate inside the directory ecp.ca_directory names; an administrator puts it there.")));
	}
}

/*
 * ecp_internal._check_consumer_target(url text, options jsonb) RETURNS void: refuse
 * (42501) a consumer the current user may not use.  NULL options = '{}'.
 */
Datum
ecp_check_consumer_target(PG_FUNCTION_ARGS)
{
	Oid			role = GetUserId();
	char	   *role_name;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer URL is NULL"),
				 errhint("Use http://host:port or https://host:port.")));
	if (ecp_host_policy_role_exempt(role))
		PG_RETURN_VOID();
	role_name = GetUserNameFromId(role, false);
	check_target_url(text_to_cstring(PG_GETARG_TEXT_PP(0)), role_name);
	if (!PG_ARGISNULL(1))
		check_tls_options(PG_GETARG_JSONB_P(1), role_name);
	PG_RETURN_VOID();
}
