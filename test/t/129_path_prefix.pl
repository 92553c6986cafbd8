# A cluster behind a reverse proxy under a path prefix (issue 24): the
# consumer's URL is http://127.0.0.1:<proxy>/search, the proxy strips
# "/search" and forwards to the stand-in.  A full run, an id run and a
# verify with extra (GET /, _bulk, the count check's refresh and _count,
# _mget, the point in time) all go through the prefix; a request without
# the prefix is answered 404 by the proxy, so one that lost it would fail
# the run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use POSIX ();
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('a reverse proxy in front of the stand-in');
my $es = EsdServer->start();
my $upstream_port = $es->port;
my $PREFIX = '/search';
my $dir = PostgreSQL::Test::Utils::tempdir();

# The proxy: one request per connection (it answers with Connection:
# close), at most 600 s, counting the requests it forwarded and refused.
my $listen = IO::Socket::INET->new(Listen => 64, LocalAddr => '127.0.0.1', LocalPort => 0,
	Proto => 'tcp', ReuseAddr => 1) or die "listen: $!";
my $proxy_port = $listen->sockport;
my $proxy = fork();
die "fork: $!" unless defined $proxy;
if ($proxy == 0)
{
	my $deadline = time + 600;
	open(my $log, '>>', "$dir/proxy.log") or POSIX::_exit(1);
	$log->autoflush(1);
	while (time < $deadline)
	{
		my $client = $listen->accept or next;
		my $head = '';
		while ($head !~ /\r\n\r\n/)
		{
			my $n = sysread($client, my $chunk, 65536);
			last unless $n;
			$head .= $chunk;
		}
		my ($headers, $body) = split /\r\n\r\n/, $head, 2;
		$body //= '';
		my ($length) = $headers =~ /^Content-Length:\s*(\d+)/mi;
		while (defined $length && length($body) < $length)
		{
			my $n = sysread($client, my $chunk, 65536);
			last unless $n;
			$body .= $chunk;
		}
		my ($method, $path, $version) = $headers =~ /^(\S+) (\S+) (\S+)/;
		if (!defined $path || index($path, $PREFIX) != 0)
		{
			print $log "refused $method $path\n";
			print $client "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nno route\n";
			close $client;
			next;
		}
		(my $forward = substr($path, length $PREFIX)) =~ s{^(?!/)}{/};
		print $log "forwarded $method $forward\n";
		$headers =~ s/^(\S+) \S+ (\S+)/$1 $forward $2/;
		$headers =~ s/^Connection:[^\r\n]*\r\n//mig;
		$headers =~ s/^Host:[^\r\n]*/Host: 127.0.0.1:$upstream_port/mi;
		my $up = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $upstream_port, Proto => 'tcp')
		  or do { close $client; next };
		print $up "$headers\r\nConnection: close\r\n\r\n$body";
		while (sysread($up, my $chunk, 65536)) { print $client $chunk }
		close $up;
		close $client;
	}
	POSIX::_exit(0);
}
close $listen;

my $node = EcpTest::new_node('prefix', allowed_hosts => "127.0.0.1:$proxy_port");
$node->safe_psql('postgres', qq{
	CREATE TABLE items AS SELECT g AS id, 'item ' || g AS name FROM generate_series(1, 3000) g;
	ALTER TABLE items ADD PRIMARY KEY (id);
	SELECT ecp.create_consumer('proxied', 'http://127.0.0.1:$proxy_port$PREFIX');
	SELECT ecp.create_task('items', 'proxied', 'items', query => 'SELECT * FROM items', options => '{"batch_size": 500}');
});
sub sql { return $node->safe_psql('postgres', $_[0]) }

my $run = sql(q{SELECT ecp.start('items')});
is(EcpTest::wait_for_run($node, $run, 'succeeded', 120), 'succeeded', 'a full run through the path prefix succeeds');
ok(EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp.flow WHERE run_id = $run AND action = 'count checked'", 30),
	'its count check ran');
is(sql("SELECT content->>'equal' FROM ecp.flow WHERE run_id = $run AND action = 'count checked'"), 'true',
	'... through the prefix too: the index holds the 3,000 documents');
$es->refresh('items');
is($es->count('items'), 3000, 'the stand-in behind the proxy holds them');
sql(q{UPDATE items SET name = 'renamed' WHERE id = 7});
$run = sql(q{SELECT ecp.start('items', ids => ARRAY[7])});
is(EcpTest::wait_for_run($node, $run, 'succeeded', 60), 'succeeded', 'an id run through the prefix succeeds');
is($es->doc('items', '7')->{name}, 'renamed', '... and its document arrived');
my $verify = sql(q{SELECT ecp.verify('items', '{"extra": true}')});
is(EcpTest::wait_for_run($node, $verify, 'succeeded', 120), 'succeeded', 'a verify with extra through the prefix succeeds');
is(sql("SELECT checked || ' ' || (missing + stale + extra) || ' ' || index_ids_walked FROM ecp.drift_summary WHERE run_id = $verify"),
	'3000 0 3000', '... it checked every document and walked every id, and found no drift');

my $log = slurp_file("$dir/proxy.log");
like($log, qr/forwarded GET \/\n/, 'GET / went through the prefix');
like($log, qr/forwarded POST \/items\/_bulk/, '_bulk went through the prefix');
like($log, qr/forwarded POST \/items\/_mget/, '_mget went through the prefix');
like($log, qr/forwarded POST \/items\/_pit/, 'the point in time went through the prefix');
unlike($log, qr/^refused/m, 'no request lost the prefix');

kill 'TERM', $proxy;
waitpid($proxy, 0);
$es->stop;
$node->stop;
done_testing();
