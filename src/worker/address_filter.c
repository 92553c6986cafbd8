/*
 * address_filter.c: the outbound policy (host_policy.c, host_match.c) as
 * curl's connect-time filter, for the sink and the file source alike.
 * It judges the address curl is about to connect to, not the name the
 * row holds, so a name that resolves elsewhere later (DNS rebinding)
 * still cannot reach a blocked address.
 */
#include "sync.h"

#include "host_policy.h"

/* Whether a URL's host is a name, not an address written out (IPv6 in brackets). */
static bool
host_is_name(const char *host)
{
	HmAddr		literal;
	size_t		len = strlen(host);

	if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
		return hm_parse_ip(host + 1, len - 2, &literal) != 0;
	return hm_parse_ip(host, len, &literal) != 0;
}

/*
 * EcpHttpConfig.allow_address: the outbound policy for the address curl
 * is about to connect to, with the GUCs' values now (a reload applies to
 * the next connection).  Runs inside curl: no ereport, no palloc.
 */
int
ecp_filter_address(const struct sockaddr *sa, socklen_t len, const char *host, int port,
				   char *why, size_t whylen, void *arg)
{
	EcpAddressCheck *filter = arg;
	HmPolicy	policy;
	HmAddr		addr;
	HmVerdict	verdict;
	char		reason[256];
	char		text[HM_ADDR_TEXT];
	char		where[HM_ADDR_TEXT + 16];

	if (hm_addr_from_sockaddr(sa, len, &addr, NULL) != 0)
	{
		filter->refused = true;
		snprintf(why, whylen, "consumer address of family %d is not allowed for role \"%s\"",
				 (int) sa->sa_family, filter->owner_name);
		return 0;
	}
	ecp_host_policy_current(&policy);
	verdict = hm_check(&policy, host, port, &addr, reason, sizeof(reason));
	if (verdict == HM_ALLOWED)
		return 1;
	filter->refused = true;
	if (host_is_name(host))
	{
		/*
		 * Not the address a name resolved to: the run's last_error would
		 * make the policy a DNS oracle for the role (the server log of a
		 * superuser's own run is no concern: they are not restricted).
		 */
		hm_format_entry(host, port, where, sizeof(where));
		snprintf(why, whylen, "consumer host %s resolves to an address that is not allowed for role \"%s\": %s%s",
				 where, filter->owner_name, reason,
				 verdict == HM_BLOCKED ? "; an administrator can list the host in ecp.allowed_hosts" : "");
		return 0;
	}
	hm_addr_format(&addr, text, sizeof(text));
	hm_format_entry(text, port, where, sizeof(where));
	snprintf(why, whylen, "consumer address %s is not allowed for role \"%s\": %s%s",
			 where, filter->owner_name, reason,
			 verdict == HM_BLOCKED ? "; an administrator can list it in ecp.allowed_hosts" : "");
	return 0;
}

