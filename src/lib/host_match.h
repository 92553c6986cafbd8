/*
 * host_match.h: the pure part of ecp's outbound-request policy: parsing ecp.allowed_hosts entries and consumer URLs, CIDR
 * matching, classifying private address ranges, and the verdict for one
 * (host, port, address) target.
 *
 * Plain C99, no PostgreSQL headers and no allocation: the connect-time
 * filter runs inside a libcurl callback, where nothing may ereport or
 * longjmp, and the unit tests (test/unit/host_match_test.c) link it alone.
 * The server's own addresses are read by the caller (getifaddrs, see
 * host_policy.c) and handed in through HmPolicy, so the tests can give any
 * list.
 */
#ifndef ECP_HOST_MATCH_H
#define ECP_HOST_MATCH_H

#include <stddef.h>
#include <sys/socket.h>

struct ifaddrs;

#define HM_HOST_MAX 256			/* a DNS name is at most 253 bytes */
#define HM_ADDR_TEXT 64			/* room for any formatted address */

/* An IPv4 or IPv6 address; IPv4-mapped IPv6 is stored as IPv4. */
typedef struct HmAddr
{
	int			family;			/* 4 or 6 */
	unsigned char bytes[16];	/* 4 used for IPv4 */
} HmAddr;

typedef enum HmEntryKind
{
	HM_ENTRY_NAME,				/* "host" or "host:port" */
	HM_ENTRY_SUFFIX,			/* "*.example.com": any subdomain */
	HM_ENTRY_ADDRESS			/* an IP, "[v6]", or a CIDR block */
} HmEntryKind;

/* One entry of ecp.allowed_hosts. */
typedef struct HmEntry
{
	HmEntryKind kind;
	char		name[HM_HOST_MAX];	/* NAME: the host, lower case; SUFFIX:
									 * ".example.com" (with the dot) */
	HmAddr		addr;			/* ADDRESS: the network */
	int			prefix;			/* ADDRESS: prefix length in bits */
	int			port;			/* 0: any port */
} HmEntry;

/* A consumer URL: http(s)://[userinfo@]host[:port][/path] */
typedef struct HmUrl
{
	char		scheme[8];		/* "http" or "https" */
	char		host[HM_HOST_MAX];	/* lower case, no brackets, no zone */
	int			is_ip;			/* host is an IP literal (then addr is set) */
	HmAddr		addr;
	int			port;			/* as written, else 80 / 443 */
	int			has_userinfo;
} HmUrl;

/* What the policy says about one target. */
typedef enum HmVerdict
{
	HM_ALLOWED,
	HM_NOT_LISTED,				/* ecp.allowed_hosts is set and has no entry
								 * for it */
	HM_BLOCKED					/* a private or special range, this server's
								 * own address or the metadata host, not
								 * listed explicitly */
} HmVerdict;

typedef struct HmPolicy
{
	const char *allowed_hosts;	/* the GUC's text; NULL or "" = no list */
	int			block_private;	/* ecp.block_private_networks */
	/* with block_private: this server's own addresses (hm_collect_local) */
	const HmAddr *local_addrs;
	size_t		n_local_addrs;
	int			local_unknown;	/* they could not be read: block_private
								 * then refuses every unlisted address */
} HmPolicy;

/*
 * Parse one entry text[0..len) (surrounding blanks are ignored).  0 on
 * success; -1 with err saying what is wrong with it.
 */
extern int	hm_parse_entry(const char *text, size_t len, HmEntry *out, char *err, size_t errlen);

/*
 * Check a whole comma-separated list; empty entries are skipped.  0 when
 * every entry parses, else -1 with err naming the first bad one.
 */
extern int	hm_validate_list(const char *list, char *err, size_t errlen);

/* A strict IPv4 dotted quad or an IPv6 literal (no brackets, no zone). */
extern int	hm_parse_ip(const char *text, size_t len, HmAddr *out);

/* The address and port of a connect() target; -1 for other families. */
extern int	hm_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, HmAddr *out,
								  int *port);

/* "127.0.0.1" / "::1" into out. */
extern void hm_addr_format(const HmAddr *addr, char *out, size_t outlen);

/* Is addr inside net/prefix?  Families must agree (IPv4-mapped is IPv4). */
extern int	hm_cidr_contains(const HmAddr *net, int prefix, const HmAddr *addr);

/*
 * The private or special-purpose range addr falls in ("loopback",
 * "link-local", "multicast", ...), or NULL for a public address.  An IPv6
 * address that carries an IPv4 address and reaches it (::a.b.c.d,
 * 64:ff9b::a.b.c.d, 6to4 2002::/16, Teredo 2001::/32; ::ffff:a.b.c.d is
 * IPv4 already) is also judged by that IPv4 address: the class is then
 * the IPv4 address's.
 */
extern const char *hm_private_class(const HmAddr *addr);

/*
 * This server's own addresses among the interface list ifa (getifaddrs),
 * for HmPolicy.local_addrs: up to max of them into out (out may be NULL
 * when max is 0), each once.  Returns how many it stored when that is at
 * most max; otherwise more than max: an upper bound to size out with
 * (duplicates past max count again).  Loopback addresses are left out:
 * their range refuses them anyway, with a message that says "loopback".
 */
extern size_t hm_collect_local(const struct ifaddrs *ifa, HmAddr *out, size_t max);

/* Is host (lower case, no trailing dot) a cloud metadata host name? */
extern int	hm_is_metadata_name(const char *host);

/* Does the entry match this host name (lower case) and port? */
extern int	hm_entry_matches_name(const HmEntry *entry, const char *host, int port);

/* 0 on success; -1 with err (never quoting credentials). */
extern int	hm_parse_url(const char *url, HmUrl *out, char *err, size_t errlen);

/*
 * "scheme://host:port" of url, for messages: never the path (it may hold
 * tokens) nor user info.  "(unparsable URL)" when it cannot be read.
 */
extern void hm_url_origin(const char *url, char *out, size_t outlen);

/* "host:port" or "[v6]:port", the form an allowed_hosts entry takes. */
extern void hm_format_entry(const char *host, int port, char *out, size_t outlen);

/*
 * The verdict for connecting to host (as in the URL: case, brackets and a
 * trailing dot do not matter) on port, at addr (NULL: judge the name
 * alone; an IP literal host is its own address).  For anything but HM_ALLOWED, why says why in a phrase like
 * "loopback addresses are blocked (ecp.block_private_networks)".  An
 * invalid list allows nothing (the GUC check refuses such a list anyway).
 */
extern HmVerdict hm_check(const HmPolicy *policy, const char *host, int port, const HmAddr *addr,
						  char *why, size_t whylen);

#endif
