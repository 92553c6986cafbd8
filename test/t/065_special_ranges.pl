# ecp.block_private_networks beyond the private ranges (security finding
# M4): with the defaults (ecp.allowed_hosts empty), an ordinary role cannot
# point a consumer at this server's own non-loopback addresses (a service
# bound to 0.0.0.0 answers there), at the IANA special-purpose ranges, nor
# at 6to4 / Teredo / NAT64 forms of a blocked IPv4 address.  Refused when
# the row is written and again when the worker connects (a row a superuser
# wrote for bob), before any connection: a listener on this machine's own
# address counts none, until ecp.allowed_hosts lists it.
# Also finding L4: the write-time refusal of a name does not say which
# address the name resolved to; the server log does.
use strict;
use warnings;
use IO::Socket::INET;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;

# no ecp.allowed_hosts line: the defaults as shipped
my $node = EcpTest::new_node('specialranges', allowed_hosts => undef);
$node->safe_psql('postgres', q{
CREATE ROLE bob LOGIN;
CREATE TABLE items (id int PRIMARY KEY, label text);
INSERT INTO items SELECT g, 'i' || g FROM generate_series(1, 5) g;
GRANT SELECT ON items TO bob;
});

# This machine's addresses other than loopback and link-local.
sub own_addresses
{
	my $out = `hostname -I 2>/dev/null` // '';
	if ($out !~ /\S/)
	{
		$out = join ' ', map { m{\binet6?\s+([0-9a-fA-F.:]+)/} ? $1 : () } `ip -o addr show 2>/dev/null`;
	}
	return grep { !/^127\./ && $_ ne '::1' && !/^fe80:/i } split ' ', $out;
}
my @own = own_addresses();
my ($own_v4) = grep { /^\d+\.\d+\.\d+\.\d+$/ } @own;
note('own addresses: ' . (@own ? "@own" : 'none'));

# A listener on this machine's own IPv4 address (for at most 300 s) that
# counts the connections it accepts and closes them.
my ($lport, $connections, $child) = (9, sub { 0 }, undef);
if (defined $own_v4)
{
	my $sock = IO::Socket::INET->new(Listen => 16, LocalAddr => $own_v4, LocalPort => 0,
		Proto => 'tcp', ReuseAddr => 1)
	  or die "listen on $own_v4: $!";
	$lport = $sock->sockport;
	my $accepted = PostgreSQL::Test::Utils::tempdir() . '/accepted';
	$child = fork();
	die "fork: $!" unless defined $child;
	if ($child == 0)
	{
		alarm(300);
		while (my $c = $sock->accept)
		{
			open(my $fh, '>>', $accepted) or POSIX::_exit(1);
			print $fh "x\n";
			close $fh;
			close $c;
		}
		POSIX::_exit(0);
	}
	close $sock;
	$connections = sub {
		open(my $fh, '<', $accepted) or return 0;
		my @lines = <$fh>;
		return scalar @lines;
	};
}

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

# The error (verbose, with SQLSTATE) of $sql as bob, '' when it succeeded.
sub error_as_bob
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\nSET ROLE bob;\n$sql");
	return $ret == 0 ? '' : $err;
}

# The host as a URL holds it.
sub url_of
{
	my ($host, $port) = @_;
	return $host =~ /:/ ? "http://[$host]:$port" : "http://$host:$port";
}

# The 6to4 form of an IPv4 address.
sub six_to_four
{
	my ($v4) = @_;
	my @b = split /\./, $v4;
	return sprintf('2002:%x:%x::1', $b[0] * 256 + $b[1], $b[2] * 256 + $b[3]);
}

my %is_own = map { $_ => 1 } @own;
my $own_reason = "this server's own addresses are blocked \\(ecp\\.block_private_networks\\)";

# --- write time ---------------------------------------------------------------
is($node->safe_psql('postgres', 'SHOW ecp.allowed_hosts'), '', 'ecp.allowed_hosts is empty by default');

SKIP:
{
	skip 'this machine has no address but loopback and link-local', 1 unless @own;
	for my $addr (@own)
	{
		like(error_as_bob("SELECT ecp.create_consumer('b_self', '" . url_of($addr, $lport) . "/internal-admin')"),
			qr/ERROR:  42501: consumer host "\Q$addr\E" is not allowed for role "bob": $own_reason\n/,
			"this machine's own address $addr is refused (42501)");
	}
}

# address => the reason's class, as a regex
my @special = (
	[ '192.0.0.192', 'IETF protocol assignment \(192\.0\.0\.0/24\)' ],
	[ '192.0.2.1', 'documentation \(192\.0\.2\.0/24\)' ],
	[ '198.18.0.1', 'benchmarking \(198\.18\.0\.0/15\)' ],
	[ '198.19.255.254', 'benchmarking \(198\.18\.0\.0/15\)' ],
	[ '198.51.100.1', 'documentation \(198\.51\.100\.0/24\)' ],
	[ '203.0.113.1', 'documentation \(203\.0\.113\.0/24\)' ],
	[ '224.0.0.1', 'multicast' ],
	[ '240.0.0.1', 'reserved \(240\.0\.0\.0/4\)' ],
	[ '255.255.255.255', 'broadcast' ],
	[ '100::1', 'discard-only \(100::/64\)' ],
	[ 'ff02::1', 'multicast' ],
	[ '2001:db8::1', 'documentation \(2001:db8::/32\)' ],
	[ '64:ff9b:1::7f00:1', 'local-use NAT64 \(64:ff9b:1::/48\)' ],
	[ '2002:7f00:1::1', '6to4 \(2002::/16\) addresses embedding loopback' ],
	[ '2002:a9fe:a9fe::1', '6to4 \(2002::/16\) addresses embedding link-local' ],
	[ '2001:0:7f00:1::f7f7:fbfb', 'Teredo \(2001::/32\) addresses embedding loopback' ],
	[ '2001:0:4136:e378::80ff:fffe', 'Teredo \(2001::/32\) addresses embedding loopback' ],
	[ '64:ff9b::7f00:1', 'NAT64 \(64:ff9b::/96\) addresses embedding loopback' ],
	(defined $own_v4 ? ([ six_to_four($own_v4), "6to4 \\(2002::/16\\) addresses embedding this server's own" ]) : ()),
);
for my $case (@special)
{
	my ($addr, $class) = @$case;
	# an address of this machine is refused as that first
	my $reason = $is_own{$addr} ? $own_reason : "$class addresses are blocked \\(ecp\\.block_private_networks\\)";
	like(error_as_bob("SELECT ecp.create_consumer('b_special', '" . url_of($addr, 9200) . "')"),
		qr/ERROR:  42501: consumer host "\Q$addr\E" is not allowed for role "bob": $reason\n/,
		"$addr refused (42501)");
}
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.consumer"), '0', '... and nothing was stored');
is(error_as_bob("SELECT ecp.create_consumer('b_public', 'http://8.8.8.8:9200')"), '',
	'a public address is still allowed (not connected to)');
is(error_as_bob("SELECT ecp.create_consumer('b_public6to4', 'http://[2002:808:808::1]:9200')"), '',
	'... and the 6to4 form of one');

# --- L4: a name's refusal does not say what it resolved to ----------------------
my $err = error_as_bob("SELECT ecp.create_consumer('b_name', 'http://localhost:9200')");
like($err,
	qr/ERROR:  42501: consumer host "localhost" is not allowed for role "bob": it resolves to a blocked address \(ecp\.block_private_networks\)\n/,
	'localhost is refused (42501) ...');
unlike($err, qr/127\.0\.0\.1|::1/, '... without the address it resolves to');
like($err, qr/HINT:  An administrator can allow it with ecp\.allowed_hosts = 'localhost:9200'/,
	'... the hint names the entry to add');
my $logged = 0;
my $deadline = time + 30;
while (!$logged && time < $deadline)
{
	$logged = slurp_file($node->logfile) =~ /DETAIL:  Host "localhost" resolved to (?:127\.0\.0\.1|::1)\./;
	sleep 0.05 unless $logged;
}
ok($logged, '... the server log has the address, for the administrator');

# --- connect time -----------------------------------------------------------------
# A superuser (exempt) writes bob consumers the policy refuses to bob; each
# run fails at once, saying which address, before any connection.
my @connect = ([ '198.18.0.1', 'benchmarking \(198\.18\.0\.0/15\)' ],
	[ '240.0.0.1', 'reserved \(240\.0\.0\.0/4\)' ],
	[ '2002:7f00:1::1', '6to4 \(2002::/16\) addresses embedding loopback' ]);
unshift @connect, [ $own_v4, "this server's own" ] if defined $own_v4;
my %run_of;
my $n = 0;
for my $case (@connect)
{
	my ($addr, $class) = @$case;
	$class = "this server's own" if $is_own{$addr};
	$n++;
	$node->safe_psql('postgres', qq{
INSERT INTO ecp.consumer (name, kind, url, owner) VALUES ('smuggled$n', 'http', '${\ url_of($addr, $lport)}/internal-admin', 'bob');
INSERT INTO ecp.task (name, consumer_id, index_name, query, owner)
SELECT 'bob_task$n', id, 'smuggled$n', 'SELECT id, label FROM items', 'bob'
  FROM ecp.consumer WHERE name = 'smuggled$n';
});
	my $started = time;
	my $run = (split /\n/, $node->safe_psql('postgres', "SET ROLE bob; SELECT ecp.start('bob_task$n')"))[-1];
	$run_of{$addr} = $run;
	is(EcpTest::wait_for_run($node, $run, 'failed', 90), 'failed', "bob's run to $addr fails");
	ok(time - $started < 60, '... at once, not after retries (' . sprintf('%.1f', time - $started) . ' s)');
	my $where = $addr =~ /:/ ? "[$addr]:$lport" : "$addr:$lport";
	like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
		qr/^consumer address \Q$where\E is not allowed for role "bob": $class addresses are blocked \(ecp\.block_private_networks\); an administrator can list it in ecp\.allowed_hosts$/,
		'... saying which address, which role and which setting');
}

# Poll until the listener accepted a connection (bounded).
sub wait_for_connection
{
	my ($timeout) = @_;
	my $until = time + $timeout;
	while (time < $until)
	{
		return 1 if $connections->() > 0;
		sleep 0.05;
	}
	return 0;
}

SKIP:
{
	skip 'this machine has no non-loopback IPv4 address to listen on', 4 unless defined $own_v4;
	is($connections->(), 0, "the listener on $own_v4:$lport received no connection");

	# The same run, once ecp.allowed_hosts lists the address, connects: the
	# listener could have seen one.
	set_policy(allowed_hosts => "$own_v4:$lport");
	my $run = $run_of{$own_v4};
	$node->safe_psql('postgres', "SET ROLE bob; SELECT ecp.resume($run)");
	ok(wait_for_connection(60), "... and one once ecp.allowed_hosts lists $own_v4:$lport");
	# the listener closes every connection: the run retries (or failed)
	$node->psql('postgres', "SET ROLE bob; SELECT ecp.cancel($run)");
	like(EcpTest::wait_for_run($node, $run, 'cancelled', 60), qr/^(?:cancelled|failed)$/,
		'... (the run stopped)');
}

if (defined $child)
{
	kill 'TERM', $child;
	waitpid($child, 0);
}
done_testing();
