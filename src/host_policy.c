/*
 * host_policy.c: the outbound-request policy (security findings H5, L6).
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

#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <sys/stat.h>

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

void
ecp_host_policy_current(HmPolicy *policy)
{
	policy->allowed_hosts = ecp_allowed_hosts;
	policy->block_private = ecp_block_private_networks;
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

/* Refuse the target: the message names the host, never the whole URL. */
static void
refuse_host(const HmUrl *url, const char *role, const char *why, const char *entry)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("consumer host \"%s\" is not allowed for role \"%s\": %s",
					url->host, role, why),
			 errhint("An administrator can allow it with ecp.allowed_hosts = '%s' "
					 "(postgresql.conf, then reload; keep the entries already listed).",
					 entry)));
}

/*
 * The allowed_hosts entry a hint suggests for a name: "host:port", or the
 * address it resolved to when the name cannot be an entry ("127.1", which
 * getaddrinfo reads as 127.0.0.1).
 */
static void
suggest_entry(const HmUrl *url, const char *address, char *entry, size_t size)
{
	HmEntry		parsed;

	hm_format_entry(url->host, url->port, entry, size);
	if (hm_parse_entry(entry, strlen(entry), &parsed, NULL, 0) != 0)
		hm_format_entry(address, url->port, entry, size);
}

/* Judge every address host resolves to; false when it does not resolve. */
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
			char		why[256];
			char		text[HM_ADDR_TEXT];

			if (hm_addr_from_sockaddr(ai->ai_addr, ai->ai_addrlen, &addr, NULL) != 0)
				continue;
			if (hm_check(policy, url->host, url->port, &addr, why, sizeof(why)) == HM_ALLOWED)
				continue;
			hm_addr_format(&addr, text, sizeof(text));
			suggest_entry(url, text, entry, sizeof(entry));
			refuse_host(url, role, psprintf("it resolves to %s, and %s", text, why), entry);
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
			refuse_host(&url, role, why, entry);
		return;
	}
	/* a name that does not resolve now is judged by name; the worker checks
	 * the addresses it really connects to anyway */
	if (check_resolved(&policy, &url, role))
		return;
	hm_format_entry(url.host, url.port, entry, sizeof(entry));
	if (hm_check(&policy, url.host, url.port, NULL, why, sizeof(why)) != HM_ALLOWED)
		refuse_host(&url, role, why, entry);
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
 * ecp._check_consumer_target(url text, options jsonb) RETURNS void: refuse
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
