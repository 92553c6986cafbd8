/*
 * host_match.c: see host_match.h.
 *
 * Everything works on caller buffers: the connect-time check runs inside a
 * libcurl callback of a background worker, where allocating with palloc or
 * failing with ereport is not possible, and the list is short enough to be
 * parsed again for every connection.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "host_match.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#define METADATA_NAME "metadata.google.internal"

static void
set_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen > 0)
		snprintf(err, errlen, "%s", msg);
}

static int
fail(char *err, size_t errlen, const char *msg)
{
	set_err(err, errlen, msg);
	return -1;
}

/*
 * ASCII only: the C library's ctype follows the database's locale, where
 * tolower('I') is not always 'i' (Turkish) and bytes over 0x7F may count
 * as letters (Latin-1).
 */
static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int
is_alnum(int c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static char
to_lower(int c)
{
	return (char) (c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
}

/* ------------------------------------------------------------ addresses */

/* ::ffff:a.b.c.d is the IPv4 address a.b.c.d everywhere in the policy. */
static void
unmap_v4(HmAddr *addr)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (addr->family == 6 && memcmp(addr->bytes, mapped, 12) == 0)
	{
		memmove(addr->bytes, addr->bytes + 12, 4);
		memset(addr->bytes + 4, 0, 12);
		addr->family = 4;
	}
}

int
hm_parse_ip(const char *text, size_t len, HmAddr *out)
{
	char		buf[HM_ADDR_TEXT];

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, text, len);
	buf[len] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, buf, out->bytes) == 1)
	{
		out->family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, out->bytes) == 1)
	{
		out->family = 6;
		unmap_v4(out);
		return 0;
	}
	return -1;
}

int
hm_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, HmAddr *out, int *port)
{
	memset(out, 0, sizeof(*out));
	if (sa == NULL)
		return -1;
	if (sa->sa_family == AF_INET && len >= (socklen_t) sizeof(struct sockaddr_in))
	{
		const struct sockaddr_in *in = (const struct sockaddr_in *) sa;

		out->family = 4;
		memcpy(out->bytes, &in->sin_addr, 4);
		if (port)
			*port = ntohs(in->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6 && len >= (socklen_t) sizeof(struct sockaddr_in6))
	{
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;

		out->family = 6;
		memcpy(out->bytes, &in6->sin6_addr, 16);
		if (port)
			*port = ntohs(in6->sin6_port);
		unmap_v4(out);
		return 0;
	}
	return -1;
}

void
hm_addr_format(const HmAddr *addr, char *out, size_t outlen)
{
	char		buf[INET6_ADDRSTRLEN];

	if (inet_ntop(addr->family == 4 ? AF_INET : AF_INET6, addr->bytes, buf, sizeof(buf)) == NULL)
		snprintf(buf, sizeof(buf), "?");
	snprintf(out, outlen, "%s", buf);
}

int
hm_cidr_contains(const HmAddr *net, int prefix, const HmAddr *addr)
{
	int			full = prefix / 8;
	int			rest = prefix % 8;

	if (net->family != addr->family || prefix < 0 || prefix > (net->family == 4 ? 32 : 128))
		return 0;
	if (memcmp(net->bytes, addr->bytes, (size_t) full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((net->bytes[full] ^ addr->bytes[full]) & (0xFF << (8 - rest)) & 0xFF) == 0;
}

typedef struct Range
{
	int			family;
	unsigned char bytes[16];
	int			prefix;
	const char *what;
} Range;

/*
 * The ranges ecp.block_private_networks refuses (IPv4-mapped: see above):
 * private ones, and the IANA special-purpose ones that are not meant to
 * reach a public service (documentation, benchmarking, multicast,
 * reserved), where a consumer can only be something on the site.
 * 255.255.255.255 comes before 240/4 for its own name.
 */
static const Range private_ranges[] = {
	{4, {0, 0, 0, 0}, 8, "unspecified"},
	{4, {127, 0, 0, 0}, 8, "loopback"},
	{4, {10, 0, 0, 0}, 8, "private (RFC 1918)"},
	{4, {172, 16, 0, 0}, 12, "private (RFC 1918)"},
	{4, {192, 168, 0, 0}, 16, "private (RFC 1918)"},
	{4, {100, 64, 0, 0}, 10, "shared (carrier-grade NAT, 100.64.0.0/10)"},
	{4, {169, 254, 0, 0}, 16, "link-local"},
	{4, {192, 0, 0, 0}, 24, "IETF protocol assignment (192.0.0.0/24)"},
	{4, {192, 0, 2, 0}, 24, "documentation (192.0.2.0/24)"},
	{4, {198, 51, 100, 0}, 24, "documentation (198.51.100.0/24)"},
	{4, {203, 0, 113, 0}, 24, "documentation (203.0.113.0/24)"},
	{4, {198, 18, 0, 0}, 15, "benchmarking (198.18.0.0/15)"},
	{4, {224, 0, 0, 0}, 4, "multicast"},
	{4, {255, 255, 255, 255}, 32, "broadcast"},
	{4, {240, 0, 0, 0}, 4, "reserved (240.0.0.0/4)"},
	{6, {0}, 128, "unspecified"},
	{6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback"},
	{6, {0xfe, 0x80}, 10, "link-local"},
	{6, {0xfe, 0xc0}, 10, "site-local"},
	{6, {0xfc, 0x00}, 7, "unique local (fc00::/7)"},
	{6, {0x01, 0x00}, 64, "discard-only (100::/64)"},
	{6, {0xff}, 8, "multicast"},
	{6, {0x20, 0x01, 0x0d, 0xb8}, 32, "documentation (2001:db8::/32)"},
	{6, {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, "local-use NAT64 (64:ff9b:1::/48)"},
	{6, {0x20, 0x01, 0x00, 0x02, 0x00, 0x00}, 48, "benchmarking (2001:2::/48)"},
	{6, {0x20, 0x01, 0x00, 0x10}, 28, "deprecated ORCHID (2001:10::/28)"},
	{6, {0x3f, 0xff, 0x00}, 20, "documentation (3fff::/20)"},
};

/* The range of private_ranges[] addr is in, itself (nothing unwrapped). */
static const char *
range_class(const HmAddr *addr)
{
	for (size_t i = 0; i < sizeof(private_ranges) / sizeof(private_ranges[0]); i++)
	{
		const Range *r = &private_ranges[i];
		HmAddr		net;

		net.family = r->family;
		memcpy(net.bytes, r->bytes, sizeof(net.bytes));
		if (hm_cidr_contains(&net, r->prefix, addr))
			return r->what;
	}
	return NULL;
}

static void
set_v4(HmAddr *v4, const unsigned char *bytes, unsigned char flip)
{
	memset(v4, 0, sizeof(*v4));
	v4->family = 4;
	for (int i = 0; i < 4; i++)
		v4->bytes[i] = bytes[i] ^ flip;
}

/*
 * The IPv4 addresses an IPv6 address carries and reaches (up to two, into
 * v4[]), and the form's name: IPv4-compatible ::a.b.c.d (deprecated, still
 * routed by some stacks), NAT64 64:ff9b::/96 (last 32 bits), 6to4
 * 2002:AABB:CCDD::/48 (bits 16..48: the relay delivers there), Teredo
 * 2001:0:SSSS:SSSS:f:p:CCCC:CCCC (the server's IPv4 in bits 32..64, the
 * client's NAT address in the last 32 bits, inverted).  ::ffff:a.b.c.d was
 * unmapped on parsing.  0 for anything else.
 */
static int
embedded_v4(const HmAddr *addr, HmAddr v4[2], const char **form)
{
	static const unsigned char compat[12] = {0};
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
	static const unsigned char teredo[4] = {0x20, 0x01, 0, 0};
	const unsigned char *b = addr->bytes;

	if (addr->family != 6)
		return 0;
	if (b[0] == 0x20 && b[1] == 0x02)
	{
		*form = "6to4 (2002::/16)";
		set_v4(&v4[0], b + 2, 0);
		return 1;
	}
	if (memcmp(b, teredo, 4) == 0)
	{
		*form = "Teredo (2001::/32)";
		set_v4(&v4[0], b + 4, 0);
		set_v4(&v4[1], b + 12, 0xff);
		return 2;
	}
	if (memcmp(b, nat64, 12) == 0)
		*form = "NAT64 (64:ff9b::/96)";
	else if (memcmp(b, compat, 12) == 0)
	{
		/* :: and ::1 are themselves, not 0.0.0.0 and 0.0.0.1 */
		if (b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1)
			return 0;
		*form = "IPv4-compatible (::a.b.c.d)";
	}
	else
		return 0;
	set_v4(&v4[0], b + 12, 0);
	return 1;
}

static int
same_addr(const HmAddr *a, const HmAddr *b)
{
	return a->family == b->family &&
		memcmp(a->bytes, b->bytes, a->family == 4 ? 4 : 16) == 0;
}

/* Why addr itself is refused: one of the server's own, or a range. */
static const char *
own_class(const HmAddr *addr, const HmPolicy *policy)
{
	for (size_t i = 0; policy && i < policy->n_local_addrs; i++)
		if (same_addr(addr, &policy->local_addrs[i]))
			return "this server's own";
	return range_class(addr);
}

/*
 * Why addr is refused, or NULL; when it is refused for the IPv4 address it
 * carries, *form names the IPv6 form (else NULL).
 */
static const char *
blocked_class(const HmAddr *addr, const HmPolicy *policy, const char **form)
{
	HmAddr		v4[2];
	int			n;
	const char *klass;

	*form = NULL;
	if ((klass = own_class(addr, policy)) != NULL)
		return klass;
	n = embedded_v4(addr, v4, form);
	for (int i = 0; i < n; i++)
		if ((klass = own_class(&v4[i], policy)) != NULL)
			return klass;
	*form = NULL;
	return NULL;
}

const char *
hm_private_class(const HmAddr *addr)
{
	const char *form;

	return blocked_class(addr, NULL, &form);
}

static int
is_loopback(const HmAddr *addr)
{
	static const unsigned char v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

	if (addr->family == 4)
		return addr->bytes[0] == 127;
	return memcmp(addr->bytes, v6_loopback, 16) == 0;
}

size_t
hm_collect_local(const struct ifaddrs *ifa, HmAddr *out, size_t max)
{
	size_t		count = 0;

	for (; ifa != NULL; ifa = ifa->ifa_next)
	{
		HmAddr		addr;
		int			seen = 0;
		socklen_t	len;

		if (ifa->ifa_addr == NULL)
			continue;
		len = ifa->ifa_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
			sizeof(struct sockaddr_in);
		if (hm_addr_from_sockaddr(ifa->ifa_addr, len, &addr, NULL) != 0)
			continue;
		if (is_loopback(&addr))
			continue;
		for (size_t i = 0; i < count && i < max; i++)
			seen |= same_addr(&addr, &out[i]);
		if (seen)
			continue;
		if (count < max)
			out[count] = addr;
		count++;
	}
	return count;
}

int
hm_is_metadata_name(const char *host)
{
	return host != NULL && strcmp(host, METADATA_NAME) == 0;
}

/* ------------------------------------------------------------ host names */

/*
 * Copy a DNS name, lower case, without one trailing dot, into out; -1 when
 * it is not one (labels of letters, digits, '-' and '_', 1 to 63 bytes,
 * not beginning or ending with '-').
 * A name whose last label is numeric is an IPv4 form curl and getaddrinfo
 * read as an address ("127.1", "2130706433"): refused as a name.
 */
static int
normalise_name(const char *text, size_t len, char *out, size_t outlen)
{
	size_t		label = 0;
	int			last_all_digits = 1;

	if (len > 0 && text[len - 1] == '.')
		len--;
	if (len == 0 || len > 253 || len >= outlen)
		return -1;
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) text[i];

		if (c == '.')
		{
			if (label == 0 || text[i - 1] == '-')
				return -1;
			label = 0;
			last_all_digits = 1;
			out[i] = '.';
			continue;
		}
		if (!(is_alnum(c) || c == '-' || c == '_') || ++label > 63 || (label == 1 && c == '-'))
			return -1;
		if (!is_digit(c))
			last_all_digits = 0;
		out[i] = to_lower(c);
	}
	if (label == 0 || last_all_digits || text[len - 1] == '-')
		return -1;
	out[len] = '\0';
	return 0;
}

/* "65535" -> 65535; -1 for anything but 1..65535. */
static int
parse_port(const char *text, size_t len)
{
	long		port = 0;

	if (len == 0 || len > 5)
		return -1;
	for (size_t i = 0; i < len; i++)
	{
		if (!is_digit((unsigned char) text[i]))
			return -1;
		port = port * 10 + (text[i] - '0');
	}
	return port >= 1 && port <= 65535 ? (int) port : -1;
}

/* ------------------------------------------------------------ entries */

static int
parse_prefix(const char *text, size_t len, int max)
{
	int			prefix = 0;

	if (len == 0 || len > 3)
		return -1;
	for (size_t i = 0; i < len; i++)
	{
		if (!is_digit((unsigned char) text[i]))
			return -1;
		prefix = prefix * 10 + (text[i] - '0');
	}
	return prefix <= max ? prefix : -1;
}

/* "addr" or "addr/len" into an ADDRESS entry. */
static int
parse_address_part(const char *text, size_t len, HmEntry *out, char *err, size_t errlen)
{
	const char *slash = memchr(text, '/', len);
	size_t		addr_len = slash ? (size_t) (slash - text) : len;
	HmAddr		check;
	int			was_v6;

	if (hm_parse_ip(text, addr_len, &out->addr) != 0)
	{
		set_err(err, errlen, "not an IP address");
		return -1;
	}
	/* a mapped address's prefix counts the 96 bits of ::ffff:0:0/96 */
	was_v6 = memchr(text, ':', addr_len) != NULL;
	if (slash == NULL)
		out->prefix = out->addr.family == 4 ? 32 : 128;
	else
	{
		int			prefix = parse_prefix(slash + 1, len - addr_len - 1, was_v6 ? 128 : 32);

		if (prefix < 0 || (was_v6 && out->addr.family == 4 && prefix < 96))
		{
			set_err(err, errlen, "bad prefix length");
			return -1;
		}
		out->prefix = was_v6 && out->addr.family == 4 ? prefix - 96 : prefix;
	}
	/* 10.1.2.3/8 is a typo for 10.0.0.0/8 or for 10.1.2.3: refuse it */
	check = out->addr;
	for (int bit = out->prefix; bit < (check.family == 4 ? 32 : 128); bit++)
		check.bytes[bit / 8] &= (unsigned char) ~(0x80 >> (bit % 8));
	if (memcmp(check.bytes, out->addr.bytes, sizeof(check.bytes)) != 0)
	{
		set_err(err, errlen, "address bits are set to the right of the prefix length");
		return -1;
	}
	out->kind = HM_ENTRY_ADDRESS;
	return 0;
}

/* "[v6]", "[v6]:port", "[v6/len]", "[v6]/len", "[v6]/len:port" */
static int
parse_bracketed(const char *text, size_t len, HmEntry *out, char *err, size_t errlen)
{
	const char *close = memchr(text, ']', len);
	char		inner[HM_ADDR_TEXT + 8];
	size_t		inner_len;
	const char *rest;
	size_t		rest_len;

	if (close == NULL)
	{
		set_err(err, errlen, "'[' without ']'");
		return -1;
	}
	inner_len = (size_t) (close - text - 1);
	rest = close + 1;
	rest_len = len - (size_t) (rest - text);
	if (inner_len == 0 || memchr(text + 1, ':', inner_len) == NULL ||
		inner_len >= sizeof(inner) - 6)
	{
		set_err(err, errlen, "brackets hold an IPv6 address");
		return -1;
	}
	memcpy(inner, text + 1, inner_len);
	/* "[v6]/len...": move the prefix inside */
	if (rest_len > 0 && rest[0] == '/')
	{
		const char *colon = memchr(rest, ':', rest_len);
		size_t		plen = colon ? (size_t) (colon - rest) : rest_len;

		if (plen > 4)
		{
			set_err(err, errlen, "bad prefix length");
			return -1;
		}
		memcpy(inner + inner_len, rest, plen);
		inner_len += plen;
		rest += plen;
		rest_len -= plen;
	}
	if (parse_address_part(inner, inner_len, out, err, errlen) != 0)
		return -1;
	if (rest_len == 0)
		return 0;
	if (rest[0] != ':' || (out->port = parse_port(rest + 1, rest_len - 1)) < 0)
	{
		set_err(err, errlen, "bad port after ']'");
		return -1;
	}
	return 0;
}

/* "host", "host:port", "*.suffix[:port]", "a.b.c.d[/len][:port]" */
static int
parse_unbracketed(const char *text, size_t len, HmEntry *out, char *err, size_t errlen)
{
	const char *colon = memchr(text, ':', len);
	size_t		host_len = colon ? (size_t) (colon - text) : len;

	if (colon && memchr(colon + 1, ':', len - host_len - 1) != NULL)
		return parse_address_part(text, len, out, err, errlen);	/* bare IPv6 */
	if (colon && (out->port = parse_port(colon + 1, len - host_len - 1)) < 0)
	{
		set_err(err, errlen, "bad port (1 to 65535)");
		return -1;
	}
	if (host_len > 0 && (is_digit((unsigned char) text[0]) || memchr(text, '/', host_len)) &&
		(memchr(text, '/', host_len) || hm_parse_ip(text, host_len, &out->addr) == 0))
		return parse_address_part(text, host_len, out, err, errlen);
	if (host_len > 2 && text[0] == '*' && text[1] == '.')
	{
		out->kind = HM_ENTRY_SUFFIX;
		out->name[0] = '.';
		if (normalise_name(text + 2, host_len - 2, out->name + 1, sizeof(out->name) - 1) != 0)
		{
			set_err(err, errlen, "not a DNS name after \"*.\"");
			return -1;
		}
		return 0;
	}
	out->kind = HM_ENTRY_NAME;
	if (normalise_name(text, host_len, out->name, sizeof(out->name)) != 0)
	{
		set_err(err, errlen, "not a host name, IP address or CIDR block");
		return -1;
	}
	return 0;
}

int
hm_parse_entry(const char *text, size_t len, HmEntry *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	while (len > 0 && is_space((unsigned char) text[0]))
	{
		text++;
		len--;
	}
	while (len > 0 && is_space((unsigned char) text[len - 1]))
		len--;
	if (len == 0)
	{
		set_err(err, errlen, "empty entry");
		return -1;
	}
	if (text[0] == '[')
		return parse_bracketed(text, len, out, err, errlen);
	return parse_unbracketed(text, len, out, err, errlen);
}

/* Is text[0..len) only blanks? */
static int
blank(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!is_space((unsigned char) text[i]))
			return 0;
	return 1;
}

typedef int (*EntryFn) (const HmEntry *entry, void *arg);

/*
 * Call fn for each entry of list until it returns nonzero (then return
 * that); -1 with err on a bad entry, 0 at the end.
 */
static int
for_each_entry(const char *list, EntryFn fn, void *arg, char *err, size_t errlen)
{
	const char *p = list ? list : "";

	for (;;)
	{
		const char *comma = strchr(p, ',');
		size_t		len = comma ? (size_t) (comma - p) : strlen(p);
		HmEntry		entry;
		char		why[128];
		int			rc;

		if (!blank(p, len))
		{
			if (hm_parse_entry(p, len, &entry, why, sizeof(why)) != 0)
			{
				const char *start = p;
				size_t		shown = len;

				/* quote the entry without the blanks around it */
				while (is_space((unsigned char) *start))
					start++, shown--;
				while (shown > 0 && is_space((unsigned char) start[shown - 1]))
					shown--;
				if (err && errlen > 0)
					snprintf(err, errlen, "entry \"%.*s\" is invalid: %s",
							 (int) (shown > 200 ? 200 : shown), start, why);
				return -1;
			}
			if ((rc = fn(&entry, arg)) != 0)
				return rc;
		}
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
}

static int
accept_entry(const HmEntry *entry, void *arg)
{
	(void) entry;
	(void) arg;
	return 0;
}

int
hm_validate_list(const char *list, char *err, size_t errlen)
{
	return for_each_entry(list, accept_entry, NULL, err, errlen) == 0 ? 0 : -1;
}

int
hm_entry_matches_name(const HmEntry *entry, const char *host, int port)
{
	size_t		hlen;
	size_t		slen;

	if (entry->port != 0 && entry->port != port)
		return 0;
	if (entry->kind == HM_ENTRY_NAME)
		return strcmp(entry->name, host) == 0;
	if (entry->kind != HM_ENTRY_SUFFIX)
		return 0;
	hlen = strlen(host);
	slen = strlen(entry->name);
	return hlen > slen && strcmp(host + hlen - slen, entry->name) == 0;
}

/* ------------------------------------------------------------ URLs */

/* Copy text[0..len) in lower case; -1 unless it is letters, digits, "-_.:" */
static int
copy_host(const char *text, size_t len, char *out, size_t outlen)
{
	if (len == 0 || len >= outlen)
		return -1;
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) text[i];

		if (!(is_alnum(c) || c == '-' || c == '_' || c == '.' || c == ':'))
			return -1;
		out[i] = to_lower(c);
	}
	out[len] = '\0';
	return 0;
}

/*
 * Host of a URL authority (after user info): "[v6]" or a name or IPv4
 * address, kept as written (lower case, without brackets, zone or trailing
 * dot) for messages; an IP literal's address goes to out->addr.  Numeric
 * forms other than a dotted quad ("127.1") stay names: getaddrinfo reads
 * them as the address curl would connect to.
 */
static int
parse_url_host(const char *text, size_t len, HmUrl *out)
{
	if (text[0] == '[')
	{
		/* a zone ("%25eth0") says which link; the address is the same */
		const char *pct = memchr(text, '%', len);
		size_t		addr_len = (pct ? (size_t) (pct - text) : len - 1) - 1;

		if (len < 3 || text[len - 1] != ']' || memchr(text + 1, ':', addr_len) == NULL ||
			hm_parse_ip(text + 1, addr_len, &out->addr) != 0)
			return -1;
		out->is_ip = 1;
		return copy_host(text + 1, addr_len, out->host, sizeof(out->host));
	}
	if (memchr(text, ':', len) != NULL)
		return -1;
	if (hm_parse_ip(text, len, &out->addr) == 0)
		out->is_ip = 1;
	else if (len > 1 && text[len - 1] == '.')
		len--;
	return copy_host(text, len, out->host, sizeof(out->host));
}

int
hm_parse_url(const char *url, HmUrl *out, char *err, size_t errlen)
{
	const char *authority;
	size_t		alen;
	const char *at;
	const char *host;
	size_t		hlen;
	const char *port = NULL;

	memset(out, 0, sizeof(*out));
	if (url == NULL)
		return fail(err, errlen, "no URL");
	if (strncasecmp(url, "http://", 7) == 0)
		authority = url + 7;
	else if (strncasecmp(url, "https://", 8) == 0)
		authority = url + 8;
	else
		return fail(err, errlen, "the URL does not start with http:// or https://");
	snprintf(out->scheme, sizeof(out->scheme), "%s", authority - url == 7 ? "http" : "https");
	alen = strcspn(authority, "/?#");
	/* the last '@' ends the user info, as curl reads it */
	at = NULL;
	for (const char *p = authority; p < authority + alen; p++)
		if (*p == '@')
			at = p;
	out->has_userinfo = at != NULL;
	host = at ? at + 1 : authority;
	hlen = alen - (size_t) (host - authority);
	if (hlen > 0 && host[0] == '[')
	{
		const char *close = memchr(host, ']', hlen);

		if (close && (size_t) (close - host) + 1 < hlen)
			port = close + 1;
	}
	else
		port = memchr(host, ':', hlen);
	if (port && port[0] != ':')
		return fail(err, errlen, "unexpected characters after the IPv6 address");
	if (port)
		hlen = (size_t) (port - host);
	if (hlen == 0 || parse_url_host(host, hlen, out) != 0)
		return fail(err, errlen, "the URL's host is not a valid host name or IP address");
	if (port && alen - (size_t) (port - authority) > 1)
	{
		out->port = parse_port(port + 1, alen - (size_t) (port + 1 - authority));
		if (out->port < 0)
			return fail(err, errlen, "the URL's port is not a number from 1 to 65535");
	}
	else
		out->port = out->scheme[4] == 's' ? 443 : 80;
	return 0;
}

void
hm_format_entry(const char *host, int port, char *out, size_t outlen)
{
	if (strchr(host, ':'))
		snprintf(out, outlen, "[%s]:%d", host, port);
	else
		snprintf(out, outlen, "%s:%d", host, port);
}

void
hm_url_origin(const char *url, char *out, size_t outlen)
{
	HmUrl		parsed;
	char		hostport[HM_HOST_MAX + 16];

	if (hm_parse_url(url, &parsed, NULL, 0) != 0)
	{
		snprintf(out, outlen, "(unparsable URL)");
		return;
	}
	hm_format_entry(parsed.host, parsed.port, hostport, sizeof(hostport));
	snprintf(out, outlen, "%s://%s", parsed.scheme, hostport);
}

/* ------------------------------------------------------------ policy */

typedef struct Target
{
	const char *host;
	int			port;
	const HmAddr *addr;			/* NULL: the name alone */
	int			listed;			/* an entry covers it */
	int			entries;		/* entries seen */
	int			other_port;		/* an entry covers the host, for another port
								 * (the first such port) */
} Target;

static int
cover_target(const HmEntry *entry, void *arg)
{
	Target	   *t = arg;

	int			host_covered;

	t->entries++;
	if (entry->kind == HM_ENTRY_ADDRESS)
		host_covered = t->addr != NULL && hm_cidr_contains(&entry->addr, entry->prefix, t->addr);
	else
		host_covered = hm_entry_matches_name(entry, t->host, entry->port);	/* any port */
	if (!host_covered)
		return 0;
	if (entry->port == 0 || entry->port == t->port)
		t->listed = 1;
	else if (t->other_port == 0)
		t->other_port = entry->port;
	return 0;
}

/* host as curl may hand it over ("[::1]", "Example.COM.") in the form
 * entries are compared with: lower case, no brackets, no trailing dot. */
static void
normalise_target(const char *host, char *out, size_t outlen)
{
	size_t		len = host ? strlen(host) : 0;

	if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
	{
		host++;
		len -= 2;
	}
	if (len > 1 && host[len - 1] == '.')
		len--;
	if (len >= outlen)
		len = outlen - 1;
	for (size_t i = 0; i < len; i++)
		out[i] = to_lower((unsigned char) host[i]);
	out[len] = '\0';
}

HmVerdict
hm_check(const HmPolicy *policy, const char *host, int port, const HmAddr *addr,
		 char *why, size_t whylen)
{
	Target		t;
	HmAddr		literal;
	const char *klass = NULL;
	const char *form = NULL;
	char		name[HM_HOST_MAX];

	normalise_target(host, name, sizeof(name));
	if (addr == NULL && hm_parse_ip(name, strlen(name), &literal) == 0)
		addr = &literal;
	memset(&t, 0, sizeof(t));
	t.host = name;
	t.port = port;
	t.addr = addr;
	if (for_each_entry(policy->allowed_hosts, cover_target, &t, NULL, 0) != 0)
	{
		set_err(why, whylen, "ecp.allowed_hosts cannot be read");
		return HM_NOT_LISTED;
	}
	if (t.listed)
		return HM_ALLOWED;
	if (t.other_port != 0)
	{
		/* the likelier mistake than the address class: say it first */
		if (why && whylen > 0)
			snprintf(why, whylen, "ecp.allowed_hosts lists this host for port %d only, not for port %d",
					 t.other_port, port);
		return addr && policy->block_private && blocked_class(addr, policy, &form) ? HM_BLOCKED : HM_NOT_LISTED;
	}
	if (policy->block_private && addr && (klass = blocked_class(addr, policy, &form)) != NULL)
	{
		if (why && whylen > 0 && form)
			snprintf(why, whylen,
					 "%s addresses embedding %s addresses are blocked (ecp.block_private_networks)",
					 form, klass);
		else if (why && whylen > 0)
			snprintf(why, whylen, "%s addresses are blocked (ecp.block_private_networks)", klass);
		return HM_BLOCKED;
	}
	/* without the list of its own addresses, any address may be the server */
	if (policy->block_private && addr && policy->local_unknown)
	{
		set_err(why, whylen, "this server's own addresses cannot be read, so unlisted addresses "
				"are blocked (ecp.block_private_networks)");
		return HM_BLOCKED;
	}
	if (policy->block_private && hm_is_metadata_name(t.host))
	{
		set_err(why, whylen, "the cloud metadata host is blocked (ecp.block_private_networks)");
		return HM_BLOCKED;
	}
	if (t.entries > 0)
	{
		set_err(why, whylen, "it is not listed in ecp.allowed_hosts");
		return HM_NOT_LISTED;
	}
	return HM_ALLOWED;
}
