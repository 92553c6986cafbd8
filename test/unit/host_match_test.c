/*
 * host_match_test.c: unit tests for src/host_match.c, the matcher of the
 * outbound-request policy (ecp.allowed_hosts, ecp.block_private_networks).
 * Needs no network: every address is a literal.
 */
#include <arpa/inet.h>
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
verdict(const char *list, int block, const char *host, int port, const char *addr, char *why)
{
	HmPolicy	p;
	HmAddr		a;

	p.allowed_hosts = list;
	p.block_private = block;
	if (addr)
		a = ip(addr);
	why[0] = '\0';
	return hm_check(&p, host, port, addr ? &a : NULL, why, 256);
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
	test_sockaddr();
	return tap_done();
}
