# The outbound-request policy (security findings H5, L6): an ordinary role
# cannot point a consumer at loopback, link-local (cloud metadata),
# private networks or unlisted hosts, nor turn TLS checks off or name any
# server file as CA bundle.  Checked when the consumer is created and
# again for every address the worker connects to, so a row written some
# other way (here: by a superuser for bob) still cannot reach the stand-in
# on 127.0.0.1.  Superusers and ecp.unrestricted_role are exempt.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('request counts and a stand-in on 127.0.0.1');

# no ecp.allowed_hosts line: the defaults as shipped
my $node = EcpTest::new_node('hostpolicy', allowed_hosts => undef);
my $es = EsdServer->start();
my $url = $es->url;
my $port = $es->port;

$node->safe_psql('postgres', q{
CREATE ROLE bob LOGIN;
CREATE ROLE carol LOGIN;
CREATE ROLE trusted NOLOGIN;
GRANT trusted TO carol;
CREATE TABLE items (id int PRIMARY KEY, label text);
INSERT INTO items SELECT g, 'i' || g FROM generate_series(1, 50) g;
GRANT SELECT ON items TO bob, carol;
});

# Change ecp.* settings with ALTER SYSTEM and wait until new sessions see them.
sub set_policy
{
	my (%settings) = @_;
	for my $name (sort keys %settings)
	{
		$node->safe_psql('postgres', "ALTER SYSTEM SET ecp.$name = '$settings{$name}'");
	}
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	for my $name (sort keys %settings)
	{
		ok(EcpTest::poll($node, "SELECT current_setting('ecp.$name') = '$settings{$name}'", 30),
			"ecp.$name = '$settings{$name}' after reload");
	}
}

# The error (with SQLSTATE) of $sql run as $role (undef: the superuser the
# tests connect as), '' when it succeeded.
sub error_as
{
	my ($role, $sql) = @_;
	my $set_role = defined $role ? "SET ROLE $role;\n" : '';
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$set_role$sql");
	return $ret == 0 ? '' : $err;
}

sub refused
{
	my ($role, $sql, $pattern, $name) = @_;
	my $err = error_as($role, $sql);
	like($err, qr/ERROR:  42501: .*$pattern/s, $name);
}

# --- create time, default settings ------------------------------------------
is($node->safe_psql('postgres', 'SHOW ecp.allowed_hosts'), '', 'ecp.allowed_hosts is empty by default');
is($node->safe_psql('postgres', 'SHOW ecp.block_private_networks'), 'on', 'private networks blocked by default');

my $err = error_as('bob', "SELECT ecp.create_consumer('b_local', '$url')");
like($err, qr/ERROR:  42501: consumer host "127\.0\.0\.1" is not allowed for role "bob": loopback addresses are blocked \(ecp\.block_private_networks\)/,
	'the stand-in on 127.0.0.1 is refused to bob (42501)');
like($err, qr/HINT:  An administrator can allow it with ecp\.allowed_hosts = '127\.0\.0\.1:$port'/,
	'... the hint names the setting and the entry to add');
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.consumer WHERE name = 'b_local'"), '0',
	'... and nothing was stored');
for my $target ('http://169.254.169.254', 'http://10.1.2.3:9200', 'http://[::1]:9200',
	"http://[::ffff:127.0.0.1]:$port", 'http://172.16.5.4', 'http://100.64.0.1',
	'http://[fd00::1]:9200', 'http://0.0.0.0:9200', 'http://metadata.google.internal',
	'http://127.1:9200', 'http://2130706433:9200')
{
	refused('bob', "SELECT ecp.create_consumer('b_bad', '$target')",
		'(?:addresses are blocked|metadata host is blocked) \(ecp\.block_private_networks\)',
		"$target refused");
}
like(error_as('bob', "SELECT ecp.create_consumer('b_cred', 'http://u:secret\@10.1.2.3:9200/tok3n')"),
	qr/ERROR/, 'a URL with credentials is refused');
unlike(error_as('bob', "SELECT ecp.create_consumer('b_path', 'http://10.1.2.3:9200/tok3n')"),
	qr/tok3n/, 'the refusal never shows the URL path');
like(error_as('bob', "SELECT ecp.create_consumer('b_bad', 'http://127.1:9200')"),
	qr/HINT:  An administrator can allow it with ecp\.allowed_hosts = '127\.0\.0\.1:9200'/,
	'127.1: the hint names the address it resolves to');
is(error_as('bob', "SELECT ecp.create_consumer('b_public', 'http://93.184.216.34:9200')"), '',
	'without a list, a public address is allowed (not connected to)');
is(error_as(undef, "SELECT ecp.create_consumer('su_meta', 'http://169.254.169.254')"), '',
	'a superuser is not restricted');

# --- TLS options --------------------------------------------------------------
refused('bob', qq{SELECT ecp.create_consumer('b_tls', 'http://93.184.216.34', options => '{"insecure": true}')},
	'consumer option "insecure" is not allowed for role "bob".*ecp\.allow_insecure_tls', 'insecure refused');
refused('bob', qq{SELECT ecp.create_consumer('b_ca', 'https://93.184.216.34', options => '{"ca_file": "/etc/passwd"}')},
	'consumer option "ca_file" is not allowed for role "bob".*ecp\.ca_directory',
	'ca_file refused while ecp.ca_directory is empty');

use File::Spec;
my $cadir = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir());
my $outside = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir());
open(my $fh, '>', "$cadir/ca.pem") or die; print $fh "not really a certificate\n"; close $fh;
open($fh, '>', "$outside/secret") or die; print $fh "secret\n"; close $fh;
chmod 0755, $cadir, $outside;
symlink("$outside/secret", "$cadir/link.pem") or die "symlink: $!";
set_policy(ca_directory => $cadir);
is(error_as('bob', qq{SELECT ecp.create_consumer('b_ca_ok', 'https://93.184.216.34', options => '{"ca_file": "$cadir/ca.pem"}')}),
	'', 'a ca_file inside ecp.ca_directory is accepted');
for my $path ("$cadir/../" . (split m{/}, $outside)[-1] . '/secret', "$cadir/link.pem",
	"$cadir/missing.pem", '/etc/passwd', $cadir)
{
	refused('bob', qq{SELECT ecp.create_consumer('b_ca_bad', 'https://93.184.216.34', options => '{"ca_file": "$path"}')},
		'is not a file in ecp\.ca_directory', "ca_file $path refused");
}
set_policy(allow_insecure_tls => 'on');
is(error_as('bob', qq{SELECT ecp.create_consumer('b_tls_ok', 'https://93.184.216.34', options => '{"insecure": true}')}),
	'', 'insecure accepted with ecp.allow_insecure_tls = on');
set_policy(allow_insecure_tls => 'off');

# --- the allow list --------------------------------------------------------------
like(error_as(undef, "ALTER SYSTEM SET ecp.allowed_hosts = 'es.example.com, bad host'"),
	qr/entry "bad host" is invalid/, 'a bad entry is refused, named');

set_policy(allowed_hosts => "127.0.0.1:$port");
is(error_as('bob', "SELECT ecp.create_consumer('b_local', '$url')"), '',
	'bob may use the stand-in once ecp.allowed_hosts lists it');
refused('bob', "SELECT ecp.create_consumer('b_port', 'http://127.0.0.1:1')",
	"ecp.allowed_hosts lists this host for port $port only, not for port 1", 'another port of 127.0.0.1 is still refused, and the refusal says the port is what is missing');
refused('bob', "SELECT ecp.create_consumer('b_other', 'http://93.184.216.34:9200')",
	'it is not listed in ecp\.allowed_hosts', 'an unlisted public address is refused');

set_policy(allowed_hosts => 'es.example.com');
refused('bob', "SELECT ecp.create_consumer('b_name', 'http://localhost:$port')",
	'consumer host "localhost" is not allowed for role "bob": it resolves to a blocked address \(ecp\.block_private_networks\)\n',
	'localhost (resolving to loopback) refused when only a public host is listed, without the address (L4)');
for my $target ('http://169.254.169.254', 'http://10.1.2.3:9200', 'http://[::1]:9200',
	"http://[::ffff:127.0.0.1]:$port")
{
	refused('bob', "SELECT ecp.create_consumer('b_bad', '$target')",
		'addresses are blocked \(ecp\.block_private_networks\)', "$target refused with a list too");
}

set_policy(unrestricted_role => 'trusted');
is(error_as('carol', "SELECT ecp.create_consumer('c_private', 'http://10.1.2.3:9200', options => '{\"insecure\": true}')"),
	'', 'a member of ecp.unrestricted_role is exempt');

# --- connect time ------------------------------------------------------------------
# 127.0.0.1 is not allowed now; a superuser writes bob a consumer there.
$node->safe_psql('postgres', qq{
INSERT INTO ecp.consumer (name, kind, url, owner) VALUES ('smuggled', 'elasticsearch', '$url', 'bob');
INSERT INTO ecp.task (name, consumer_id, index_name, query, options, owner)
SELECT 'bob_task', id, 'smuggled', 'SELECT id, label FROM items', '{"exact_total": true}', 'bob'
  FROM ecp.consumer WHERE name = 'smuggled';
SELECT ecp.create_consumer('su_es', '$url');
SELECT ecp.create_task('su_task', 'su_es', 'su_index', query => 'SELECT id, label FROM items',
                       options => '{"exact_total": true}');
});
my $bulk_before = $es->stats->{bulk_requests};
my $started = time;
my $run = (split /\n/, $node->safe_psql('postgres', "SET ROLE bob; SELECT ecp.start('bob_task')"))[-1];
is(EcpTest::wait_for_run($node, $run, 'failed', 90), 'failed', "bob's run to 127.0.0.1 fails");
ok(time - $started < 60, '... at once, not after retries (' . sprintf('%.1f', time - $started) . ' s)');
my $last_error = $node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run");
like($last_error,
	qr/^consumer address 127\.0\.0\.1:$port is not allowed for role "bob": loopback addresses are blocked \(ecp\.block_private_networks\); an administrator can list it in ecp\.allowed_hosts$/,
	'... saying which address, which role and which setting');
is($es->stats->{bulk_requests}, $bulk_before, '... and the stand-in received no _bulk');

# A name: the refusal does not say what it resolved to (no DNS oracle, L4).
$node->safe_psql('postgres', qq{
INSERT INTO ecp.consumer (name, kind, url, owner) VALUES ('smuggled_name', 'elasticsearch', 'http://localhost:$port', 'bob');
INSERT INTO ecp.task (name, consumer_id, index_name, query, options, owner)
SELECT 'bob_name', id, 'smuggled-name', 'SELECT id, label FROM items', '{}', 'bob'
  FROM ecp.consumer WHERE name = 'smuggled_name';
});
$run = (split /\n/, $node->safe_psql('postgres', "SET ROLE bob; SELECT ecp.start('bob_name')"))[-1];
is(EcpTest::wait_for_run($node, $run, 'failed', 90), 'failed', "bob's run to localhost fails");
$last_error = $node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run");
like($last_error,
	qr/^consumer host localhost:$port resolves to an address that is not allowed for role "bob": loopback addresses are blocked \(ecp\.block_private_networks\); an administrator can list the host in ecp\.allowed_hosts$/,
	'... naming the host, not the address it resolved to');
unlike($last_error, qr/127\.0\.0\.1|::1/, '... no address in it');
is($es->stats->{bulk_requests}, $bulk_before, '... and the stand-in received no _bulk');

$run = $node->safe_psql('postgres', "SELECT ecp.start('su_task')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded',
	"the same target for a superuser's task succeeds");
$es->refresh('su_index');
is($es->count('su_index'), 50, '... every document arrived');

# TLS options in a row written for bob are refused when the worker opens the sink.
set_policy(allowed_hosts => "127.0.0.1:$port");
$node->safe_psql('postgres', qq{
INSERT INTO ecp.consumer (name, kind, url, options, owner)
VALUES ('smuggled_tls', 'elasticsearch', '$url', '{"insecure": true}', 'bob');
INSERT INTO ecp.task (name, consumer_id, index_name, query, options, owner)
SELECT 'bob_tls', id, 'smuggled-tls', 'SELECT id, label FROM items', '{"exact_total": true}', 'bob'
  FROM ecp.consumer WHERE name = 'smuggled_tls';
});
$run = (split /\n/, $node->safe_psql('postgres', "SET ROLE bob; SELECT ecp.start('bob_tls')"))[-1];
is(EcpTest::wait_for_run($node, $run, 'failed', 90), 'failed', "bob's run with insecure fails");
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
	qr/consumer option "insecure" is not allowed for role "bob"; an administrator can allow it with ecp\.allow_insecure_tls = on/,
	'... naming the option and the setting');

$node->safe_psql('postgres', qq{
INSERT INTO ecp.consumer (name, kind, url, options, owner)
VALUES ('smuggled_ca', 'elasticsearch', '$url', '{"ca_file": "/etc/passwd"}', 'bob');
INSERT INTO ecp.task (name, consumer_id, index_name, query, options, owner)
SELECT 'bob_ca', id, 'smuggled-ca', 'SELECT id, label FROM items', '{"exact_total": true}', 'bob'
  FROM ecp.consumer WHERE name = 'smuggled_ca';
});
$run = (split /\n/, $node->safe_psql('postgres', "SET ROLE bob; SELECT ecp.start('bob_ca')"))[-1];
is(EcpTest::wait_for_run($node, $run, 'failed', 90), 'failed', "bob's run with ca_file /etc/passwd fails");
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
	qr{consumer option "ca_file" "/etc/passwd" is not allowed for role "bob": it is not a file in ecp\.ca_directory},
	'... naming the file and the setting');

# With 127.0.0.1 listed, bob's first run resumes and goes through.
$node->safe_psql('postgres', "SET ROLE bob; SELECT ecp.resume((SELECT id FROM ecp.run r WHERE r.task_id = (SELECT id FROM ecp.task WHERE name = 'bob_task')))");
$run = $node->safe_psql('postgres', "SELECT id FROM ecp.run WHERE task_id = (SELECT id FROM ecp.task WHERE name = 'bob_task')");
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded',
	'once ecp.allowed_hosts lists the address, the resumed run succeeds');
$es->refresh('smuggled');
is($es->count('smuggled'), 50, '... every document arrived');

# --- M5: a hostile sink's huge answers fail the run, bounded -------------------
# 64 MiB is over the answer limit of a 1000-document batch (1 MiB + 4 KiB
# per document); 4 MiB is read, and refused by the parser without building
# a JSON tree of it.
for my $case ([ { status => 500 }, qr/response larger than \d+ bytes/, '64 MiB as 500' ],
	[ { status => 200, bytes => 4 << 20 }, qr/not a readable _bulk answer/, '4 MiB [{},...] as 200' ])
{
	my ($fault, $error, $what) = @$case;
	$es->set_faults({ huge_body => $fault });
	$run = $node->safe_psql('postgres', "SELECT ecp.start('su_task')");
	is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed', "$what: the run fails");
	like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"), $error,
		"$what: ... saying why");
}
$es->clear_faults;

done_testing();
