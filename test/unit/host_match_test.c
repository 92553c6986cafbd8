/*
 * host_match_test.c: unit tests for src/host_match.c, the matcher of the
 * outbound-request policy (ecp.allowed_hosts, ecp.block_private_networks).
 * Needs no network: every address is a literal.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "host_match.h"
#include "tap.h"

static HmEntry
entry_of(const char *text, int *rc, char *err, size_t errlen)
{
	HmEntry		entry;

	*rc = hm_parse_entry(text, strlen(text), &entry, err, errlen);
	return entry;
}

static void
test_entries(void)
{
	static const char *const bad[] = {
		"*", "*.", "a..b", "-", "host:0", "host:65536", "host:http", "10.0.0.0/33",
		"10.1.2.3/8", "fd00::1/8", "[::1", "[::1]x", "[example.com]", "127.1",
		"2130706433", "exa mple.com", "h\xc3\xa9.example", "[fe80::1%eth0]", "::ffff:1.2.3.4/95",
		"host:9200:1", "300.1.2.3", "", NULL
	};
	HmEntry		e;
	int			rc;
	char		err[256];

	e = entry_of("Example.COM.", &rc, err, sizeof(err));
	ok(rc == 0 && e.kind == HM_ENTRY_NAME && strcmp(e.name, "example.com") == 0 && e.port == 0,
	   "host name: lower case, trailing dot dropped, any port");
	e = entry_of("  es.local:9200 ", &rc, err, sizeof(err));
	ok(rc == 0 && e.kind == HM_ENTRY_NAME && e.port == 9200, "host:port, blanks trimmed");
	e = entry_of("*.Corp.example", &rc, err, sizeof(err));
	ok(rc == 0 && e.kind == HM_ENTRY_SUFFIX && strcmp(e.name, ".corp.example") == 0,
	   "*.suffix keeps the dot");
	e = entry_of("127.0.0.1", &rc, err, sizeof(err));
	ok(rc == 0 && e.kind == HM_ENTRY_ADDRESS && e.addr.family == 4 && e.prefix == 32,
	   "bare IPv4 is a /32");
	e = entry_of("127.0.0.1:9200", &rc, err, sizeof(err));
	ok(rc == 0 && e.kind == HM_ENTRY_ADDRESS && e.port == 9200, "IPv4:port");
	e = entry_of("10.0.0.0/8", &rc, err, sizeof(err));
	ok(rc == 0 && e.kind == HM_ENTRY_ADDRESS && e.prefix == 8, "IPv4 CIDR");
	e = entry_of("10.0.0.0/8:9200", &rc, err, sizeof(err));
	ok(rc == 0 && e.prefix == 8 && e.port == 9200, "IPv4 CIDR with a port");
	e = entry_of("fd00::/8", &rc, err, sizeof(err));
	ok(rc == 0 && e.addr.family == 6 && e.prefix == 8 && e.port == 0, "bare IPv6 CIDR");
	e = entry_of("[::1]", &rc, err, sizeof(err));
	ok(rc == 0 && e.addr.family == 6 && e.prefix == 128, "[v6]");
	e = entry_of("[::1]:9200", &rc, err, sizeof(err));
	ok(rc == 0 && e.port == 9200, "[v6]:port");
	e = entry_of("[fd00::]/8:443", &rc, err, sizeof(err));
	ok(rc == 0 && e.prefix == 8 && e.port == 443, "[v6]/len:port");
	e = entry_of("::ffff:127.0.0.1", &rc, err, sizeof(err));
	ok(rc == 0 && e.addr.family == 4 && e.prefix == 32, "IPv4-mapped IPv6 is stored as IPv4");
	e = entry_of("::ffff:10.0.0.0/104", &rc, err, sizeof(err));
	ok(rc == 0 && e.addr.family == 4 && e.prefix == 8, "mapped CIDR /104 is IPv4 /8");
	for (int i = 0; bad[i]; i++)
	{
		err[0] = '\0';
		e = entry_of(bad[i], &rc, err, sizeof(err));
		ok(rc == -1 && err[0] != '\0', "\"%s\" refused (%s)", bad[i], err);
	}
	ok(hm_validate_list("", err, sizeof(err)) == 0, "empty list is valid");
	ok(hm_validate_list(" a.example , 10.0.0.0/8,,[::1]:9200, ", err, sizeof(err)) == 0,
	   "list with blanks and empty entries");
	ok(hm_validate_list("good.example, bad host ,other", err, sizeof(err)) == -1 &&
	   contains(err, "\"bad host\""), "a bad entry is named, without blanks: %s", err);
}

static HmAddr
ip(const char *text)
{
	HmAddr		a;

	if (hm_parse_ip(text, strlen(text), &a) != 0)
	{
		diag("cannot parse %s", text);
		exit(2);
	}
	return a;
}

static void
test_cidr(void)
{
	HmAddr		net = ip("172.16.0.0");
	HmAddr		a;

	a = ip("172.31.255.255");
	ok(hm_cidr_contains(&net, 12, &a), "172.31.255.255 in 172.16/12");
	a = ip("172.32.0.0");
	ok(!hm_cidr_contains(&net, 12, &a), "172.32.0.0 not in 172.16/12");
	net = ip("0.0.0.0");
	a = ip("8.8.8.8");
	ok(hm_cidr_contains(&net, 0, &a), "/0 holds everything of its family");
	a = ip("::1");
	ok(!hm_cidr_contains(&net, 0, &a), "families do not mix");
	net = ip("fe80::");
	a = ip("febf::1");
	ok(hm_cidr_contains(&net, 10, &a), "febf::1 in fe80::/10");
	a = ip("fec0::1");
	ok(!hm_cidr_contains(&net, 10, &a), "fec0::1 not in fe80::/10");
	net = ip("127.0.0.1");
	a = ip("::ffff:127.0.0.1");
	ok(hm_cidr_contains(&net, 32, &a), "::ffff:127.0.0.1 is 127.0.0.1");
}

static void
test_private(void)
{
	static const struct
	{
		const char *addr;
		const char *klass;		/* substring, NULL: public */
	}			cases[] = {
		{"127.0.0.1", "loopback"}, {"127.255.0.9", "loopback"}, {"::1", "loopback"},
		{"0.0.0.0", "unspecified"}, {"::", "unspecified"},
		{"169.254.169.254", "link-local"}, {"fe80::1", "link-local"},
		{"10.1.2.3", "RFC 1918"}, {"172.16.0.1", "RFC 1918"}, {"172.31.9.9", "RFC 1918"},
		{"192.168.1.1", "RFC 1918"}, {"100.64.0.1", "carrier-grade"},
		{"100.127.255.255", "carrier-grade"}, {"fd12::1", "unique local"},
		{"fc00::1", "unique local"}, {"::ffff:127.0.0.1", "loopback"},
		{"::ffff:169.254.169.254", "link-local"}, {"::ffff:10.0.0.1", "RFC 1918"},
		{"::127.0.0.1", "loopback"}, {"64:ff9b::a9fe:a9fe", "link-local"},
		{"8.8.8.8", NULL}, {"172.32.0.1", NULL}, {"100.128.0.1", NULL},
		{"2001:4860:4860::8888", NULL}, {"::ffff:8.8.8.8", NULL}, {"192.169.0.1", NULL},
		/* IANA special-purpose ranges (finding M4), and their neighbours */
		{"192.0.0.192", "IETF protocol assignment"}, {"192.0.0.0", "IETF protocol assignment"},
		{"192.0.2.2", "documentation"}, {"198.51.100.7", "documentation"},
		{"203.0.113.255", "documentation"}, {"198.18.0.1", "benchmarking"},
		{"198.19.255.255", "benchmarking"}, {"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"}, {"240.0.0.1", "reserved"},
		{"254.1.2.3", "reserved"}, {"255.255.255.255", "broadcast"},
		{"192.0.1.255", NULL}, {"192.0.3.0", NULL}, {"198.17.255.255", NULL},
		{"198.20.0.0", NULL}, {"198.51.101.0", NULL}, {"203.0.114.0", NULL},
		{"223.255.255.255", NULL},
		{"100::1", "discard-only"}, {"100::ffff:ffff:ffff:ffff", "discard-only"},
		{"ff02::1", "multicast"}, {"ff0e::101", "multicast"},
		{"2001:db8::1", "documentation"}, {"2001:db8:ffff::1", "documentation"},
		{"64:ff9b:1::7f00:1", "local-use NAT64"}, {"64:ff9b:1:ffff::8.8.8.8", "local-use NAT64"},
		{"100:0:0:1::1", NULL}, {"2001:db9::1", NULL}, {"64:ff9b:2::1", NULL},
		{"64:ff9b::8.8.8.8", NULL}, {"fe00::1", NULL},
		/* 6to4: the IPv4 address in bits 16..48 */
		{"2002:7f00:1::1", "loopback"}, {"2002:a00:1::1", "RFC 1918"},
		{"2002:c000:201::1", "documentation"}, {"2002:a9fe:a9fe::1", "link-local"},
		{"2002:e000:1::1", "multicast"}, {"2002:808:808::1", NULL},
		/* Teredo: server in bits 32..64, client in the last 32 bits, inverted */
		{"2001:0:7f00:1::1", "loopback"},
		{"2001:0:7f00:1::f7f7:fbfb", "loopback"},	/* server 127.0.0.1 */
		{"2001:0:4136:e378::80ff:fffe", "loopback"},	/* client 127.0.0.1 */
		{"2001:0:4136:e378::f5ff:fffe", "RFC 1918"},	/* client 10.0.0.1 */
		{"2001:0:a00:1::f7f7:fbfb", "RFC 1918"},	/* server 10.0.0.1 */
		{"2001:0:4136:e378::f7f7:fbfb", NULL},	/* 65.54.227.120, 8.8.4.4 */
		{"2001:1::1", NULL},		/* not Teredo: 2001:0::/32 only */
		{"2001:2::1", "benchmarking"}, {"2001:2:0:ffff::1", "benchmarking"}, {"2001:2:1::1", NULL},
		{"2001:10::1", "ORCHID"}, {"2001:1f:ffff::1", "ORCHID"}, {"2001:20::1", NULL},
		{"3fff::1", "documentation"}, {"3fff:fff:ffff::1", "documentation"}, {"3fff:1000::1", NULL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		HmAddr		a = ip(cases[i].addr);
		const char *klass = hm_private_class(&a);

		if (cases[i].klass)
			ok(contains(klass, cases[i].klass), "%s is %s (%s)", cases[i].addr, cases[i].klass,
			   klass ? klass : "public");
		else
			ok(klass == NULL, "%s is public (%s)", cases[i].addr, klass ? klass : "public");
	}
	ok(hm_is_metadata_name("metadata.google.internal"), "metadata host name");
}

static void
test_names(void)
{
	HmEntry		e;
	int			rc;
	char		err[128];

	e = entry_of("*.example.com", &rc, err, sizeof(err));
	ok(hm_entry_matches_name(&e, "a.example.com", 443), "*.example.com matches a subdomain");
	ok(hm_entry_matches_name(&e, "a.b.example.com", 9200), "... and a deeper one");
	ok(!hm_entry_matches_name(&e, "example.com", 443), "... not the domain itself");
	ok(!hm_entry_matches_name(&e, "badexample.com", 443), "... not a name that only ends alike");
	e = entry_of("es.example.com:9200", &rc, err, sizeof(err));
	ok(hm_entry_matches_name(&e, "es.example.com", 9200), "host:port matches that port");
	ok(!hm_entry_matches_name(&e, "es.example.com", 9201), "... not another");
	e = entry_of("10.0.0.0/8", &rc, err, sizeof(err));
	ok(!hm_entry_matches_name(&e, "10.0.0.1", 80), "address entries never match by name");
}

static void
test_urls(void)
{
	HmUrl		u;
	char		err[128];
	char		origin[300];

	ok(hm_parse_url("http://Example.com:9200/prefix/x", &u, err, sizeof(err)) == 0 &&
	   strcmp(u.host, "example.com") == 0 && u.port == 9200 && !u.is_ip, "http host:port/path");
	ok(hm_parse_url("https://es.example", &u, err, sizeof(err)) == 0 && u.port == 443,
	   "https default port");
	ok(hm_parse_url("http://es.example", &u, err, sizeof(err)) == 0 && u.port == 80,
	   "http default port");
	ok(hm_parse_url("http://[::1]:9200", &u, err, sizeof(err)) == 0 && u.is_ip &&
	   strcmp(u.host, "::1") == 0 && u.port == 9200, "[v6]:port");
	ok(hm_parse_url("http://[::ffff:127.0.0.1]/", &u, err, sizeof(err)) == 0 && u.is_ip &&
	   u.addr.family == 4, "[::ffff:127.0.0.1] is an IPv4 address");
	ok(hm_parse_url("http://[fe80::1%25eth0]:80", &u, err, sizeof(err)) == 0 && u.is_ip,
	   "zone id accepted, address kept");
	ok(hm_parse_url("http://user:pw@127.0.0.1:9200", &u, err, sizeof(err)) == 0 &&
	   u.has_userinfo && strcmp(u.host, "127.0.0.1") == 0, "user info skipped (last @)");
	ok(hm_parse_url("http://127.1:9200", &u, err, sizeof(err)) == 0 && !u.is_ip &&
	   strcmp(u.host, "127.1") == 0, "127.1 is left to getaddrinfo");
	ok(hm_parse_url("ftp://x", &u, err, sizeof(err)) == -1, "ftp refused");
	ok(hm_parse_url("http://:9200", &u, err, sizeof(err)) == -1, "no host refused");
	ok(hm_parse_url("http://h:99999", &u, err, sizeof(err)) == -1, "bad port refused");
	ok(hm_parse_url("http://a%2eb/", &u, err, sizeof(err)) == -1, "percent in host refused");
	ok(hm_parse_url("http://[::1]x/", &u, err, sizeof(err)) == -1, "junk after ] refused");

	hm_url_origin("https://user:secret@es.example.com:9243/tok3n/path?q=1", origin, sizeof(origin));
	ok(strcmp(origin, "https://es.example.com:9243") == 0, "origin drops user info and path: %s",
	   origin);
	hm_url_origin("http://[::1]/x", origin, sizeof(origin));
	ok(strcmp(origin, "http://[::1]:80") == 0, "origin of [v6]: %s", origin);
	hm_url_origin("nonsense", origin, sizeof(origin));
	ok(strcmp(origin, "(unparsable URL)") == 0, "unparsable URL");
}

static HmVerdict
verdict_with(const HmPolicy *p, const char *host, int port, const char *addr, char *why)
{
	HmAddr		a;

	if (addr)
		a = ip(addr);
	why[0] = '\0';
	return hm_check(p, host, port, addr ? &a : NULL, why, 256);
}

static HmVerdict
verdict(const char *list, int block, const char *host, int port, const char *addr, char *why)
{
	HmPolicy	p;

	memset(&p, 0, sizeof(p));
	p.allowed_hosts = list;
	p.block_private = block;
	return verdict_with(&p, host, port, addr, why);
}

static void
test_check(void)
{
	char		why[256];

	ok(verdict("", 1, "es.example.com", 443, "93.184.216.34", why) == HM_ALLOWED,
	   "no list: a public address is allowed");
	ok(verdict("", 1, "127.0.0.1", 9200, NULL, why) == HM_BLOCKED && contains(why, "loopback") &&
	   contains(why, "ecp.block_private_networks"), "no list: loopback blocked (%s)", why);
	ok(verdict("", 0, "127.0.0.1", 9200, NULL, why) == HM_ALLOWED,
	   "block_private_networks off: loopback allowed");
	ok(verdict("", 1, "localhost", 9200, "127.0.0.1", why) == HM_BLOCKED,
	   "a name resolving to loopback blocked");
	ok(verdict("", 1, "[::1]", 9200, NULL, why) == HM_BLOCKED, "[::1] blocked");
	ok(verdict("", 1, "::ffff:127.0.0.1", 9200, NULL, why) == HM_BLOCKED,
	   "::ffff:127.0.0.1 blocked");
	ok(verdict("", 1, "169.254.169.254", 80, NULL, why) == HM_BLOCKED, "metadata address blocked");
	ok(verdict("", 1, "metadata.google.internal", 80, NULL, why) == HM_BLOCKED &&
	   contains(why, "metadata"), "metadata host name blocked (%s)", why);
	ok(verdict("", 1, "Metadata.Google.Internal.", 80, NULL, why) == HM_BLOCKED,
	   "... in any case, with a trailing dot");
	ok(verdict("", 1, "10.1.2.3", 9200, NULL, why) == HM_BLOCKED, "RFC 1918 blocked");

	ok(verdict("127.0.0.1", 1, "127.0.0.1", 9200, NULL, why) == HM_ALLOWED,
	   "listed address allowed on any port");
	ok(verdict("127.0.0.1:9200", 1, "127.0.0.1", 9201, NULL, why) == HM_BLOCKED,
	   "listed with another port: still blocked");
	ok(strstr(why, "lists this host for port 9200 only, not for port 9201") != NULL,
	   "... and the refusal says the port is what is missing (%s)", why);
	ok(verdict("search.example.com:9200", 1, "search.example.com", 9300, "93.184.216.34", why) == HM_NOT_LISTED &&
	   strstr(why, "for port 9200 only, not for port 9300") != NULL,
	   "a listed public name on another port: not listed, and why (%s)", why);
	ok(verdict("127.0.0.1", 1, "::ffff:127.0.0.1", 9200, NULL, why) == HM_ALLOWED,
	   "127.0.0.1 covers ::ffff:127.0.0.1");
	ok(verdict("127.0.0.1", 1, "localhost", 9200, "127.0.0.1", why) == HM_ALLOWED,
	   "an address entry covers a name resolving to it");
	ok(verdict("localhost:9200", 1, "localhost", 9200, "127.0.0.1", why) == HM_ALLOWED,
	   "a name entry covers the private address it resolves to");
	ok(verdict("es.example.com", 1, "localhost", 9200, "127.0.0.1", why) == HM_BLOCKED,
	   "with only public names listed, localhost is blocked");
	ok(verdict("es.example.com", 1, "other.example.com", 443, "93.184.216.34", why) == HM_NOT_LISTED
	   && contains(why, "ecp.allowed_hosts"), "a public host not in the list (%s)", why);
	ok(verdict("es.example.com", 1, "ES.Example.com", 443, "93.184.216.34", why) == HM_ALLOWED,
	   "names compare case-insensitively");
	ok(verdict("*.example.com", 1, "a.example.com", 443, "10.0.0.5", why) == HM_ALLOWED,
	   "*.suffix covers a private address of a subdomain");
	ok(verdict("10.0.0.0/8", 1, "es.internal", 9200, "10.9.8.7", why) == HM_ALLOWED,
	   "a CIDR entry covers a name resolving inside it");
	ok(verdict("10.0.0.0/8", 1, "es.internal", 9200, "192.168.0.1", why) == HM_BLOCKED,
	   "... not one resolving outside it");
	ok(verdict("10.0.0.0/8", 1, "es.example.com", 443, "93.184.216.34", why) == HM_NOT_LISTED,
	   "a CIDR-only list refuses public names");
	ok(verdict("fd00::/8", 1, "[fd00::5]", 9200, NULL, why) == HM_ALLOWED, "IPv6 CIDR entry");
	ok(verdict("[::1]:9200", 1, "::1", 9200, NULL, why) == HM_ALLOWED, "[v6]:port entry");
	ok(verdict("metadata.google.internal", 1, "metadata.google.internal", 80, NULL, why) ==
	   HM_ALLOWED, "the metadata name can be listed explicitly");
	ok(verdict("bad entry", 1, "a.example", 443, "93.184.216.34", why) == HM_NOT_LISTED,
	   "an unreadable list allows nothing");
	ok(verdict(" , ", 1, "a.example", 443, "93.184.216.34", why) == HM_ALLOWED,
	   "a list of blanks is no list");

	/* the special ranges and the unwrapped forms, with the reason */
	ok(verdict("", 1, "198.18.0.1", 80, NULL, why) == HM_BLOCKED &&
	   contains(why, "benchmarking (198.18.0.0/15) addresses are blocked (ecp.block_private_networks)"),
	   "198.18.0.1 blocked (%s)", why);
	ok(verdict("", 1, "[2002:7f00:1::1]", 80, NULL, why) == HM_BLOCKED &&
	   contains(why, "6to4 (2002::/16) addresses embedding loopback addresses are blocked"),
	   "6to4 of 127.0.0.1 blocked, saying so (%s)", why);
	ok(verdict("", 1, "[2001:0:7f00:1::1]", 80, NULL, why) == HM_BLOCKED &&
	   contains(why, "Teredo (2001::/32) addresses embedding"), "Teredo blocked (%s)", why);
	ok(verdict("", 1, "[64:ff9b::7f00:1]", 80, NULL, why) == HM_BLOCKED &&
	   contains(why, "NAT64 (64:ff9b::/96) addresses embedding loopback"),
	   "NAT64 of 127.0.0.1 blocked (%s)", why);
	ok(verdict("", 1, "[2002:808:808::1]", 80, NULL, why) == HM_ALLOWED,
	   "6to4 of a public address allowed");
	ok(verdict("", 0, "255.255.255.255", 80, NULL, why) == HM_ALLOWED,
	   "block_private_networks off: the special ranges too");
	ok(verdict("2002::/16", 1, "[2002:7f00:1::1]", 80, NULL, why) == HM_ALLOWED,
	   "a listed 6to4 block allows its private embeddings");
	ok(verdict("127.0.0.1", 1, "[2002:7f00:1::1]", 80, NULL, why) == HM_BLOCKED,
	   "listing the IPv4 address does not allow its 6to4 form");
}

/* The server's own addresses (finding M4), handed in as host_policy.c does. */
static void
test_local(void)
{
	HmAddr		own[3];
	HmPolicy	p;
	char		why[256];

	own[0] = ip("93.184.216.34");
	own[1] = ip("2a00:1450:4001::5");
	own[2] = ip("8.8.4.4");
	memset(&p, 0, sizeof(p));
	p.allowed_hosts = "";
	p.block_private = 1;
	p.local_addrs = own;
	p.n_local_addrs = 3;
	ok(verdict_with(&p, "93.184.216.34", 9200, NULL, why) == HM_BLOCKED &&
	   contains(why, "this server's own addresses are blocked (ecp.block_private_networks)"),
	   "the server's own public IPv4 address is blocked (%s)", why);
	ok(verdict_with(&p, "[2a00:1450:4001::5]", 9200, NULL, why) == HM_BLOCKED,
	   "... its own IPv6 address");
	ok(verdict_with(&p, "[::ffff:93.184.216.34]", 9200, NULL, why) == HM_BLOCKED,
	   "... mapped into IPv6");
	ok(verdict_with(&p, "[2002:5db8:d822::1]", 9200, NULL, why) == HM_BLOCKED &&
	   contains(why, "6to4 (2002::/16) addresses embedding this server's own"),
	   "... inside 6to4 (%s)", why);
	ok(verdict_with(&p, "[2001:0:4136:e378::f7f7:fbfb]", 9200, NULL, why) == HM_BLOCKED,
	   "... as a Teredo client (8.8.4.4 inverted)");
	ok(verdict_with(&p, "es.example.com", 9200, "93.184.216.34", why) == HM_BLOCKED,
	   "... a name resolving to it");
	ok(verdict_with(&p, "93.184.216.35", 9200, NULL, why) == HM_ALLOWED,
	   "the next address is not the server's");
	ok(verdict_with(&p, "[2a00:1450:4001::6]", 9200, NULL, why) == HM_ALLOWED,
	   "... nor the next IPv6 one");
	p.allowed_hosts = "93.184.216.34:9200";
	ok(verdict_with(&p, "93.184.216.34", 9200, NULL, why) == HM_ALLOWED,
	   "listed in ecp.allowed_hosts: allowed");
	ok(verdict_with(&p, "93.184.216.34", 22, NULL, why) == HM_BLOCKED,
	   "... on that port only");
	p.allowed_hosts = "es.example.com";
	ok(verdict_with(&p, "es.example.com", 9200, "93.184.216.34", why) == HM_ALLOWED,
	   "a name entry covers the server's address it resolves to");
	p.allowed_hosts = "";
	p.block_private = 0;
	ok(verdict_with(&p, "93.184.216.34", 9200, NULL, why) == HM_ALLOWED,
	   "block_private_networks off: the server's addresses are not refused");

	memset(&p, 0, sizeof(p));
	p.allowed_hosts = "";
	p.block_private = 1;
	p.local_unknown = 1;
	ok(verdict_with(&p, "8.8.8.8", 443, NULL, why) == HM_BLOCKED && contains(why, "cannot be read"),
	   "own addresses unknown: every unlisted address is blocked (%s)", why);
	p.allowed_hosts = "8.8.8.8";
	ok(verdict_with(&p, "8.8.8.8", 443, NULL, why) == HM_ALLOWED, "... but a listed one");
	p.allowed_hosts = "";
	p.block_private = 0;
	ok(verdict_with(&p, "8.8.8.8", 443, NULL, why) == HM_ALLOWED,
	   "... and any with block_private_networks off");
}

/* One link of a made-up getifaddrs list. */
static void
link_if(struct ifaddrs *ifa, struct ifaddrs *next, const char *name, struct sockaddr *addr)
{
	memset(ifa, 0, sizeof(*ifa));
	ifa->ifa_next = next;
	ifa->ifa_name = (char *) name;
	ifa->ifa_addr = addr;
}

static void
test_collect_local(void)
{
	struct sockaddr_in v4[4];
	struct sockaddr_in6 v6[3];
	struct sockaddr other;
	struct ifaddrs ifa[9];
	const char *v4_text[4] = {"127.0.0.1", "93.184.216.34", "93.184.216.34", "203.0.113.9"};
	const char *v6_text[3] = {"::1", "fe80::1", "::ffff:127.0.0.2"};
	HmAddr		out[8];
	HmAddr		small[1];
	size_t		n;
	char		text[4][HM_ADDR_TEXT];
	struct ifaddrs *real;

	for (int i = 0; i < 4; i++)
	{
		memset(&v4[i], 0, sizeof(v4[i]));
		v4[i].sin_family = AF_INET;
		inet_pton(AF_INET, v4_text[i], &v4[i].sin_addr);
	}
	for (int i = 0; i < 3; i++)
	{
		memset(&v6[i], 0, sizeof(v6[i]));
		v6[i].sin6_family = AF_INET6;
		inet_pton(AF_INET6, v6_text[i], &v6[i].sin6_addr);
	}
	memset(&other, 0, sizeof(other));
	other.sa_family = AF_UNIX;	/* stands for AF_PACKET, the link layer */
	/* lo: 127.0.0.1, ::1, a service address 203.0.113.9; eth0: the rest */
	link_if(&ifa[0], &ifa[1], "lo", (struct sockaddr *) &v4[0]);
	link_if(&ifa[1], &ifa[2], "lo", (struct sockaddr *) &v6[0]);
	link_if(&ifa[2], &ifa[3], "lo", (struct sockaddr *) &v4[3]);
	link_if(&ifa[3], &ifa[4], "eth0", &other);
	link_if(&ifa[4], &ifa[5], "eth0", NULL);
	link_if(&ifa[5], &ifa[6], "eth0", (struct sockaddr *) &v4[1]);
	link_if(&ifa[6], &ifa[7], "eth0", (struct sockaddr *) &v6[1]);
	link_if(&ifa[7], &ifa[8], "eth1", (struct sockaddr *) &v4[2]);
	link_if(&ifa[8], NULL, "eth1", (struct sockaddr *) &v6[2]);

	n = hm_collect_local(ifa, out, 8);
	for (size_t i = 0; i < n && i < 4; i++)
		hm_addr_format(&out[i], text[i], sizeof(text[i]));
	ok(n == 3 && strcmp(text[0], "203.0.113.9") == 0 && strcmp(text[1], "93.184.216.34") == 0 &&
	   strcmp(text[2], "fe80::1") == 0,
	   "own addresses: no loopback (mapped or not), no link layer, each once (%zu)", n);
	ok(hm_collect_local(ifa, NULL, 0) >= 3, "with no room: an upper bound to size the array");
	n = hm_collect_local(ifa, small, 1);
	ok(n > 1 && small[0].family == 4, "with too little room: more than max, the first stored");

	/* the real list, as host_policy.c reads it */
	if (getifaddrs(&real) != 0)
		ok(0, "getifaddrs failed");
	else
	{
		HmAddr		found[256];
		HmAddr		v4_loopback = ip("127.0.0.0");
		HmAddr		v6_loopback = ip("::1");
		int			loopback = 0;

		n = hm_collect_local(real, found, 256);
		for (size_t i = 0; i < n && i < 256; i++)
			loopback |= hm_cidr_contains(&v4_loopback, 8, &found[i]) ||
				hm_cidr_contains(&v6_loopback, 128, &found[i]);
		ok(n <= 256 && !loopback, "this machine's own addresses (%zu) hold no loopback", n);
		freeifaddrs(real);
	}
}

static void
test_sockaddr(void)
{
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	HmAddr		a;
	int			port = 0;
	char		text[HM_ADDR_TEXT];

	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons(9200);
	inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
	ok(hm_addr_from_sockaddr((struct sockaddr *) &in, sizeof(in), &a, &port) == 0 &&
	   a.family == 4 && port == 9200, "sockaddr_in");
	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	in6.sin6_port = htons(443);
	inet_pton(AF_INET6, "::ffff:169.254.169.254", &in6.sin6_addr);
	ok(hm_addr_from_sockaddr((struct sockaddr *) &in6, sizeof(in6), &a, &port) == 0 &&
	   a.family == 4 && port == 443, "mapped sockaddr_in6 becomes IPv4");
	hm_addr_format(&a, text, sizeof(text));
	ok(strcmp(text, "169.254.169.254") == 0, "formatted: %s", text);
	ok(hm_addr_from_sockaddr((struct sockaddr *) &in, 4, &a, &port) == -1, "short length refused");
}

int
main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	test_entries();
	test_cidr();
	test_private();
	test_names();
	test_urls();
	test_check();
	test_local();
	test_collect_local();
	test_sockaddr();
	return tap_done();
}
