#!/usr/bin/perl
# The two write services for consumers of kind 'http' (no PostgreSQL):
#   test/scripts/write-service.pl  - the test server: control API, shape
#       validation, fail_ids, statuses, gzip, chunked, keep-alive, delays;
#   test/examples/write_service.py - the example a team copies, against esd
#       (only with ESD_BIN set, and python3 present).
#
#   ESD_BIN=$PWD/test/esd/esd prove -I test/perl test/examples/t
#
# Every server started here is stopped at the end (END block, also when a
# check dies), and each has --max-seconds besides.
use strict;
use warnings;
use File::Spec;
use File::Temp qw(tempdir);
use FindBin;
use HTTP::Tiny;
use IO::Compress::Gzip qw(gzip $GzipError);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(time sleep);

my $root = File::Spec->rel2abs("$FindBin::RealBin/../../..");
my $script = "$root/test/scripts/write-service.pl";
my $example = "$root/test/examples/write_service.py";
my $dir = tempdir('write-service-t-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $J = JSON::PP->new->utf8->canonical->allow_nonref;

# ---- process handling ----------------------------------------------------
my @servers;
$SIG{INT} = $SIG{TERM} = sub { die "killed by signal\n" };

sub start_server
{
	my ($name, @cmd) = @_;
	my $port_file = "$dir/$name.port";
	push @cmd, '--port-file', $port_file;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>', "$dir/$name.out") or POSIX::_exit(127);
		open(STDERR, '>', "$dir/$name.err") or POSIX::_exit(127);
		exec(@cmd) or POSIX::_exit(127);
	}
	my $s = { name => $name, pid => $pid };
	push @servers, $s;
	my $deadline = time + 15;
	while (time < $deadline)
	{
		if (waitpid($pid, WNOHANG) == $pid)
		{
			$s->{pid} = undef;
			die "$name exited during start-up: " . slurp("$dir/$name.err");
		}
		if (-s $port_file && slurp($port_file) =~ /^(\d+)\n/)
		{
			$s->{port} = $1;
			$s->{url} = "http://127.0.0.1:$1";
			return $s;
		}
		sleep 0.02;
	}
	die "$name wrote no port within 15 s: " . slurp("$dir/$name.err");
}

sub stop_server
{
	my ($s) = @_;
	my $pid = $s->{pid} or return undef;
	$s->{pid} = undef;
	kill 'TERM', $pid;
	my $deadline = time + 10;
	while (time < $deadline)
	{
		return $? if waitpid($pid, WNOHANG) == $pid;
		sleep 0.02;
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	return -1;
}

END
{
	local $?;
	stop_server($_) for reverse @servers;
}

sub slurp
{
	my ($f) = @_;
	open(my $fh, '<', $f) or return '';
	local $/;
	return scalar(<$fh>) // '';
}

# ---- HTTP helpers --------------------------------------------------------
# HTTP::Tiny writes head and body apart: without TCP_NODELAY each request with
# a body waits ~40 ms for the server's delayed ACK (as in EsdServer.pm).
package NoDelayHTTP
{
	our @ISA = ('HTTP::Tiny');
	use Socket qw(IPPROTO_TCP TCP_NODELAY);

	sub _open_handle
	{
		my $self = shift;
		my $handle = $self->SUPER::_open_handle(@_);
		eval { setsockopt($handle->{fh}, IPPROTO_TCP, TCP_NODELAY, 1) };
		return $handle;
	}
}
my $http = NoDelayHTTP->new(keep_alive => 1, timeout => 30);

sub req
{
	my ($s, $method, $path, $body, $headers) = @_;
	my %o = (headers => { %{ $headers || {} } });
	if (defined $body)
	{
		$o{content} = ref $body && ref $body ne 'CODE' ? $J->encode($body) : $body;
		$o{headers}{'Content-Type'} //= 'application/json';
	}
	my $r = $http->request($method, "$s->{url}$path", \%o);
	my $d = eval { $J->decode($r->{content}) } if defined $r->{content} && length $r->{content};
	return ($r->{status}, $d, $r);
}

sub ctl
{
	my ($s, $method, $path, $body) = @_;
	my ($st, $d, $r) = req($s, $method, $path, $body);
	die "control $method $path: $st $r->{content}" unless $st == 200;
	return $d;
}

sub batch
{
	my (%o) = @_;
	return { task => 'orders', run => 12, part => 0, index => 'orders', indexes => ['orders'], tag => undef,
		op => 'index', docs => [], %o };
}

# A raw connection, for keep-alive, pipelining, chunked and framing checks.
sub raw_connect
{
	my ($s) = @_;
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->{port}, Proto => 'tcp', Timeout => 10)
	  or die "connect: $!";
	return $sock;
}

sub raw_request
{
	my ($method, $path, $body, %h) = @_;
	my $r = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\n";
	$h{'Content-Length'} = length $body if defined $body && !exists $h{'Transfer-Encoding'};
	$r .= "$_: $h{$_}\r\n" for sort keys %h;
	return $r . "\r\n" . ($body // '');
}

# Read one response: (status, headers, body), or () on EOF/timeout.
sub raw_read
{
	my ($sock, $timeout) = @_;
	$timeout //= 10;
	my $sel = IO::Select->new($sock);
	my $buf = \(${*$sock}{ws_buf} //= '');
	my $deadline = time + $timeout;
	my ($status, %h, $len, $head_len);
	while (1)
	{
		if (!defined $status && $$buf =~ /\r\n\r\n/)
		{
			$head_len = $+[0];
			my ($line, @lines) = split /\r\n/, substr($$buf, 0, $head_len);
			($status) = $line =~ m{^HTTP/1\.1 (\d{3})};
			for (@lines) { $h{ lc $1 } = $2 if /^([^:]+):\s*(.*)$/ }
			$len = $h{'content-length'} // 0;
		}
		if (defined $status && length($$buf) >= $head_len + $len)
		{
			substr($$buf, 0, $head_len, '');
			my $body = substr($$buf, 0, $len, '');
			return ($status, \%h, $body);
		}
		my $left = $deadline - time;
		return () if $left <= 0 || !$sel->can_read($left);
		my $n = sysread($sock, $$buf, 65536, length $$buf);
		return () unless $n;
	}
}

# True when the peer closes the connection within $timeout seconds.
sub raw_closed
{
	my ($sock, $timeout) = @_;
	my $sel = IO::Select->new($sock);
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		next unless $sel->can_read(0.1);
		my $n = sysread($sock, my $x, 4096);
		return 1 if !$n;
	}
	return 0;
}

# ==== write-service.pl ====================================================
my $ws = start_server('ws', $^X, $script, '--max-seconds', 300, '--log', "$dir/ws.log");
ok($ws->{port}, "write-service.pl listens on $ws->{port}");

# ---- GET / and unknown paths ---------------------------------------------
{
	my ($st, $d) = req($ws, 'GET', '/');
	is($st, 404, 'GET / answers 404 by default');
	is_deeply($d, { error => 'not an elasticsearch cluster' }, '... with the documented body');
	($st, $d) = req($ws, 'GET', '/nowhere');
	is($st, 404, 'GET of an unknown path: 404');
	like($d->{error}, qr{GET /nowhere}, '... naming method and path');
	($st, $d) = req($ws, 'DELETE', '/orders');
	is($st, 404, 'DELETE: 404');
	($st, $d) = req($ws, 'GET', '/_ws/nothing');
	is($st, 404, 'unknown control endpoint: 404');

	ctl($ws, 'PUT', '/_ws/config', { root => { status => 200, body => { version => { number => '1.0' } },
		headers => { 'X-Product' => 'write-service' } } });
	my $r;
	($st, $d, $r) = req($ws, 'GET', '/');
	is($st, 200, 'root: configured status');
	is_deeply($d, { version => { number => '1.0' } }, 'root: configured body');
	is($r->{headers}{'x-product'}, 'write-service', 'root: configured header');
	($st, undef, $r) = req($ws, 'HEAD', '/');
	is($st, 200, 'HEAD / answers the root status');
	ctl($ws, 'POST', '/_ws/reset');
	($st) = req($ws, 'GET', '/');
	is($st, 404, 'reset restores the default root');
}

# ---- a valid batch --------------------------------------------------------
{
	ctl($ws, 'POST', '/_ws/reset');
	my ($st, $d) = req($ws, 'POST', '/sink/orders?x=1', batch(docs => [
		{ id => '1', doc => { id => 1, total => 9.5 } },
		{ id => '2', doc => { id => 2 } },
		{ id => '3' }]), { 'X-Ecp-Tag' => 'FLUSH', 'User-Agent' => 'ecp/0.1', Authorization => 'Bearer t0k' });
	is($st, 200, 'a valid batch: 200');
	is_deeply($d, { failed => [] }, '... {"failed": []}');
	($st, $d) = req($ws, 'POST', '/sink/orders', batch(tag => 'FLUSH', docs => [
		{ id => '2', delete => JSON::PP::true }, { id => '1', doc => { id => 1, total => 10 } }]));
	is($st, 200, 'a batch with a tag and a delete: 200');
	my $docs = ctl($ws, 'GET', '/_ws/docs');
	is($docs->{count}, 2, 'two documents stored');
	is_deeply($docs->{docs}, { 1 => { id => 1, total => 10 }, 3 => { id_only => JSON::PP::true } },
		'last write wins, delete removes, id-only is stored as {"id_only": true}');
	my $log = ctl($ws, 'GET', '/_ws/requests')->{requests};
	is(scalar @$log, 2, 'the log has the two batches (no control requests)');
	my $e = $log->[0];
	is($e->{method}, 'POST', 'log: method');
	is($e->{path}, '/sink/orders?x=1', 'log: path with query');
	is($e->{headers}{'x-ecp-tag'}, 'FLUSH', 'log: the tag header, lower-cased name');
	is($e->{headers}{authorization}, 'Bearer t0k', 'log: Authorization');
	is($e->{headers}{'user-agent'}, 'ecp/0.1', 'log: User-Agent');
	is($e->{headers}{'content-type'}, 'application/json', 'log: Content-Type');
	is_deeply([ map { $_->{id} } @{ $e->{body}{docs} } ], [ 1, 2, 3 ], 'log: the body parsed (ids read back)');
	is($e->{body}{run}, 12, 'log: run');
	ok($e->{body_bytes} > 50, 'log: body_bytes');
	is($e->{status}, 200, 'log: status');
	ok($e->{time_ms} > 1e12, 'log: time_ms');
	is($log->[1]{body}{tag}, 'FLUSH', 'log: the tag in the body');
	ok(!defined $log->[0]{body}{tag}, 'log: a null tag');
	is(scalar @{ ctl($ws, 'GET', '/_ws/requests?n=1')->{requests} }, 1, '?n=1: the last entry only');
	is(ctl($ws, 'GET', '/_ws/requests?n=1')->{requests}[0]{seq}, 2, '... the newest');

	my $stats = ctl($ws, 'GET', '/_ws/stats');
	is($stats->{batches}, 2, 'stats: batches');
	is($stats->{docs}, 5, 'stats: docs');
	is($stats->{accepted}, 5, 'stats: accepted');
	is_deeply($stats->{answered}, { 200 => 2 }, 'stats: answered');
	is($stats->{written} . '/' . $stats->{deleted} . '/' . $stats->{id_only}, '3/1/1', 'stats: written/deleted/id_only');

	is_deeply(ctl($ws, 'GET', '/_ws/docs?index=orders')->{docs}, ctl($ws, 'GET', '/_ws/docs')->{docs}, '?index=orders: the same documents');
	($st) = req($ws, 'POST', '/sink/orders', batch(indexes => [qw(orders orders-9)], docs => [
		{ id => '1', delete => JSON::PP::true }, { id => '4', doc => { id => 4 } }]));
	is($st, 200, 'a batch for two indexes (a dual write): 200');
	is_deeply(ctl($ws, 'GET', '/_ws/docs?index=orders')->{docs}, { 3 => { id_only => JSON::PP::true }, 4 => { id => 4 } },
		'?index=orders: the dual write applied there');
	is_deeply(ctl($ws, 'GET', '/_ws/docs?index=orders-9')->{docs}, { 4 => { id => 4 } }, '... and to orders-9 (its one write)');
	is(ctl($ws, 'GET', '/_ws/docs?index=never')->{count}, 0, 'an index never listed: count 0');
	is_deeply(ctl($ws, 'GET', '/_ws/stats')->{indexes}, { orders => 7, 'orders-9' => 2 }, 'stats: accepted documents per index');

	ctl($ws, 'POST', '/_ws/reset');
	is(ctl($ws, 'GET', '/_ws/docs')->{count}, 0, 'reset clears the documents');
	is(scalar @{ ctl($ws, 'GET', '/_ws/requests')->{requests} }, 0, 'reset clears the log');
	is(ctl($ws, 'GET', '/_ws/stats')->{batches}, 0, 'reset clears the stats');
}

# ---- shape validation -----------------------------------------------------
{
	ctl($ws, 'POST', '/_ws/reset');
	my @bad = (
		[ 'not JSON', '{"task":', qr/not JSON/ ],
		[ 'empty body', '', qr/empty body/ ],
		[ 'an array', '[]', qr/must be a JSON object, not an array/ ],
		[ 'task missing', do { my $b = batch(); delete $b->{task}; $b }, qr/'task' is missing/ ],
		[ 'tag missing', do { my $b = batch(); delete $b->{tag}; $b }, qr/'tag' is missing/ ],
		[ 'task a number', batch(task => 5), qr/'task' must be a string, not a number/ ],
		[ 'run a string', batch(run => '12'), qr/'run' must be an integer >= 0, not a string/ ],
		[ 'run a float', '{"task":"t","run":1.5,"part":0,"index":"i","indexes":["i"],"tag":null,"op":"index","docs":[]}', qr/'run' must be an integer/ ],
		[ 'part negative', batch(part => -1), qr/'part' must be an integer >= 0/ ],
		[ 'index null', batch(index => undef), qr/'index' must be a string, not null/ ],
		[ 'indexes missing', do { my $b = batch(); delete $b->{indexes}; $b }, qr/'indexes' is missing/ ],
		[ 'indexes a string', batch(indexes => 'orders'), qr/'indexes' must be an array, not a string/ ],
		[ 'indexes empty', batch(indexes => []), qr/'indexes' must hold 1 or 2 names, not 0/ ],
		[ 'indexes of 3', batch(indexes => [qw(orders a b)]), qr/'indexes' must hold 1 or 2 names, not 3/ ],
		[ 'indexes not first', batch(indexes => [qw(other orders)]), qr/'indexes' must begin with the index 'orders', not 'other'/ ],
		[ 'indexes twice', batch(indexes => [qw(orders orders)]), qr/'indexes' names 'orders' twice/ ],
		[ 'indexes a number', batch(indexes => ['orders', 5]), qr/'indexes' must hold non-empty strings, not a number/ ],
		[ 'tag a number', batch(tag => 3), qr/'tag' must be a string or null, not a number/ ],
		[ 'op missing', do { my $b = batch(); delete $b->{op}; $b }, qr/'op' is missing/ ],
		[ 'docs an object', batch(docs => {}), qr/'docs' must be an array, not an object/ ],
		[ 'unknown key', batch(extra => 1), qr/unknown key 'extra'/ ],
		[ 'doc not an object', batch(docs => ['1']), qr/docs\[0\] must be an object, not a string/ ],
		[ 'id missing', batch(docs => [{ id => '1' }, { doc => {} }]), qr/docs\[1\]\.id is missing/ ],
		[ 'id a number', batch(docs => [{ id => 7 }]), qr/docs\[0\]\.id must be a string, not a number/ ],
		[ 'id empty', batch(docs => [{ id => '' }]), qr/docs\[0\]\.id is empty/ ],
		[ 'doc an array', batch(docs => [{ id => '1', doc => [] }]), qr/docs\[0\]\.doc must be an object, not an array/ ],
		[ 'delete false', batch(docs => [{ id => '1', delete => JSON::PP::false }]), qr/docs\[0\]\.delete must be true, not false/ ],
		[ 'delete 1', batch(docs => [{ id => '1', delete => 1 }]), qr/docs\[0\]\.delete must be true, not a number/ ],
		[ 'doc and delete', batch(docs => [{ id => '1', doc => {}, delete => JSON::PP::true }]), qr/both doc and delete/ ],
		[ 'unknown doc key', batch(docs => [{ id => '1', upsert => {} }]), qr/docs\[0\] has an unknown key 'upsert'/ ],
	);
	for my $t (@bad)
	{
		my ($name, $body, $re) = @$t;
		my ($st, $d) = req($ws, 'POST', '/bulk', $body);
		is($st, 400, "malformed ($name): 400");
		like($d->{error} // '', $re, "... the error names it ($name)");
	}
	my ($st, $d) = req($ws, 'POST', '/bulk', batch(), { 'Content-Type' => 'text/plain' });
	is($st, 415, 'Content-Type text/plain: 415');
	like($d->{error}, qr/application\/json/, '... saying what is expected');
	($st) = req($ws, 'POST', '/bulk', batch(), { 'Content-Type' => 'application/json; charset=utf-8' });
	is($st, 200, 'application/json with a charset is accepted');
	is(ctl($ws, 'GET', '/_ws/docs')->{count}, 0, 'nothing stored from malformed batches');
	my $log = ctl($ws, 'GET', '/_ws/requests')->{requests};
	is($log->[0]{status}, 400, 'malformed batches are logged with their status');
	ok(!defined $log->[0]{body}, '... a body that is not JSON is logged as null');
	like($log->[0]{error}, qr/not JSON/, '... with the error');
	is(ctl($ws, 'GET', '/_ws/stats')->{answered}{400}, scalar @bad, 'stats count the 400s');
}

# ---- config validation ----------------------------------------------------
{
	ctl($ws, 'POST', '/_ws/reset');
	ctl($ws, 'PUT', '/_ws/config', { fail_ids => { 9 => { retryable => JSON::PP::false } } });
	my @bad = (
		[ { bogus => 1 }, qr/unknown config key 'bogus'/ ],
		[ { fail_ids => [] }, qr/fail_ids must be an object/ ],
		[ { fail_ids => { 7 => { retryable => JSON::PP::true, times => 0 } } }, qr/fail_ids\.7\.times/ ],
		[ { fail_ids => { 7 => { retryable => 'yes' } } }, qr/fail_ids\.7\.retryable/ ],
		[ { fail_ids => { 7 => { retryable => JSON::PP::false, times => 2 } } }, qr/fail_ids\.7\.times applies to a retryable/ ],
		[ { fail_ids => { 7 => { why => 'x' } } }, qr/fail_ids\.7 has an unknown key 'why'/ ],
		[ { statuses => {} }, qr/statuses must be an array/ ],
		[ { statuses => [{ status => 99, first => 1 }] }, qr/statuses\[0\]\.status/ ],
		[ { statuses => [{ status => 429 }] }, qr/statuses\[0\] needs exactly one of first/ ],
		[ { statuses => [{ status => 429, first => 1 }, { status => 503, first => 0 }] }, qr/statuses\[1\]\.first/ ],
		[ { statuses => [{ status => 429, first => 1, color => 'red' }] }, qr/statuses\[0\] has an unknown key 'color'/ ],
		[ { root => { status => 'ok' } }, qr/root\.status/ ],
		[ { root => { headers => { 'X-A' => 1 } } }, qr/root\.headers/ ],
		[ { delay_ms => -1 }, qr/delay_ms/ ],
		[ { ok_status => 404 }, qr/ok_status/ ],
		[ { ok_body => 'none' }, qr/ok_body/ ],
		[ 'nope', qr/config body is not JSON/ ],
	);
	for my $t (@bad)
	{
		my ($st, $d) = req($ws, 'PUT', '/_ws/config', $t->[0]);
		is($st, 400, 'bad config ' . (ref $t->[0] ? $J->encode($t->[0]) : $t->[0]) . ': 400');
		like($d->{error} // '', $t->[1], '... naming the bad key');
	}
	my $c = ctl($ws, 'GET', '/_ws/config');
	ok($c->{config}{fail_ids}{9} && !$c->{config}{fail_ids}{9}{retryable}, 'a bad PUT keeps the config in force');
}

# ---- fail_ids ---------------------------------------------------------------
{
	ctl($ws, 'POST', '/_ws/reset');
	ctl($ws, 'PUT', '/_ws/config', { fail_ids => {
		7 => { retryable => JSON::PP::true, times => 2 },
		9 => { retryable => JSON::PP::false, reason => 'price missing' } } });
	my $b = batch(docs => [{ id => '7', doc => { n => 7 } }, { id => '8', doc => { n => 8 } }, { id => '9', doc => { n => 9 } }]);
	my @answers = map { (req($ws, 'POST', '/bulk', $b))[1] } 1 .. 3;
	is_deeply($answers[0], { failed => [
		{ id => '7', retryable => JSON::PP::true, reason => 'injected failure' },
		{ id => '9', retryable => JSON::PP::false, reason => 'price missing' }] }, 'fail_ids: first appearance');
	is_deeply($answers[1], $answers[0], 'fail_ids: second appearance, the same');
	is_deeply($answers[2], { failed => [{ id => '9', retryable => JSON::PP::false, reason => 'price missing' }] },
		'fail_ids: the retryable id is accepted on its third appearance, the other fails again');
	my $docs = ctl($ws, 'GET', '/_ws/docs')->{docs};
	is_deeply([ sort keys %$docs ], [ 7, 8 ], 'the non-retryable id is never stored');
	is_deeply(ctl($ws, 'GET', '/_ws/config')->{fail_seen}, { 7 => 3, 9 => 3 }, 'fail_seen counts appearances');
	my $s = ctl($ws, 'GET', '/_ws/stats');
	is("$s->{docs}/$s->{accepted}/$s->{failed}", '9/4/5', 'stats: docs/accepted/failed');

	# A PUT restarts the counts.
	ctl($ws, 'PUT', '/_ws/config', { fail_ids => { 8 => { retryable => JSON::PP::true } } });
	my (undef, $d) = req($ws, 'POST', '/bulk', batch(docs => [{ id => '8', delete => JSON::PP::true }]));
	is_deeply($d, { failed => [{ id => '8', retryable => JSON::PP::true, reason => 'injected failure' }] },
		'times defaults to 1, a delete fails too');
	ok(ctl($ws, 'GET', '/_ws/docs')->{docs}{8}, '... and was not applied');
	(undef, $d) = req($ws, 'POST', '/bulk', batch(docs => [{ id => '8', delete => JSON::PP::true }]));
	is_deeply($d, { failed => [] }, '... applied when sent again');
	ok(!ctl($ws, 'GET', '/_ws/docs')->{docs}{8}, '... and removed');
}

# ---- statuses ---------------------------------------------------------------
{
	ctl($ws, 'POST', '/_ws/reset');
	ctl($ws, 'PUT', '/_ws/config', { statuses => [{ status => 429, first => 2, retry_after => 3 },
		{ status => 503, first => 1, body => { error => 'busy' } }, { status => 200, first => 1, raw_body => 'not json' }] });
	my $b = batch(docs => [{ id => '1', doc => {} }]);
	my @r = map { [ req($ws, 'POST', '/bulk', $b) ] } 1 .. 5;
	is_deeply([ map { $_->[0] } @r ], [ 429, 429, 503, 200, 200 ], 'statuses apply in order, then batches are processed');
	is($r[0][2]{headers}{'retry-after'}, 3, 'retry_after: Retry-After header');
	is_deeply($r[0][1], { error => 'injected status 429' }, 'the default injected body');
	is_deeply($r[2][1], { error => 'busy' }, 'a configured body');
	is($r[3][2]{content}, 'not json', 'a raw body');
	is_deeply($r[4][1], { failed => [] }, 'then processed');
	my $log = ctl($ws, 'GET', '/_ws/requests')->{requests};
	is_deeply([ map { $_->{status} } @$log ], [ 429, 429, 503, 200, 200 ], 'the log has every status');
	is($log->[0]{body}{docs}[0]{id}, '1', 'an injected answer still logs the parsed body');
	is_deeply(ctl($ws, 'GET', '/_ws/stats')->{answered}, { 429 => 2, 503 => 1, 200 => 2 }, 'stats: answered');

	ctl($ws, 'PUT', '/_ws/config', { statuses => [{ status => 401, always => JSON::PP::true }] });
	is_deeply([ map { (req($ws, 'POST', '/bulk', $b))[0] } 1 .. 4 ], [ 401, 401, 401, 401 ], 'always: every batch');
	ctl($ws, 'PUT', '/_ws/config', {});
	is((req($ws, 'POST', '/bulk', $b))[0], 200, 'an empty config ends it');
	ctl($ws, 'PUT', '/_ws/config', { statuses => [{ status => 413, first => 1 }] });
	is((req($ws, 'POST', '/bulk', 'broken'))[0], 413, 'an injected status comes before validation');
	is((req($ws, 'GET', '/'))[0], 404, 'GET / does not consume an injected status');

	ctl($ws, 'PUT', '/_ws/config', { ok_body => 'empty', ok_status => 202 });
	my (undef, undef, $r) = req($ws, 'POST', '/bulk', $b);
	is("$r->{status} '$r->{content}'", "202 ''", 'ok_body empty, ok_status 202');
	ctl($ws, 'PUT', '/_ws/config', { ok_body => '{}' });
	(undef, undef, $r) = req($ws, 'POST', '/bulk', $b);
	is($r->{content}, '{}', 'ok_body {}');
	ctl($ws, 'PUT', '/_ws/config', { ok_body => '{}', fail_ids => { 1 => {} } });
	(undef, undef, $r) = req($ws, 'POST', '/bulk', $b);
	like($r->{content}, qr/"failed":\[\{"id":"1"/, 'ok_body {} still lists failures');
	ctl($ws, 'PUT', '/_ws/config', { ok_status => 204 });
	(undef, undef, $r) = req($ws, 'POST', '/bulk', $b);
	is("$r->{status} '" . ($r->{content} // '') . "'", "204 ''", 'ok_status 204 has no body');
}

# ---- gzip and chunked -------------------------------------------------------
{
	ctl($ws, 'POST', '/_ws/reset');
	my $plain = $J->encode(batch(docs => [ map { { id => "g$_", doc => { n => $_, pad => 'x' x 100 } } } 1 .. 200 ]));
	gzip(\$plain => \my $gz) or die $GzipError;
	my ($st, $d) = req($ws, 'POST', '/bulk', $gz, { 'Content-Encoding' => 'gzip' });
	is($st, 200, 'a gzip body: 200');
	is(ctl($ws, 'GET', '/_ws/docs')->{count}, 200, '... its 200 documents stored');
	my $e = ctl($ws, 'GET', '/_ws/requests')->{requests}[-1];
	is($e->{body_bytes}, length $gz, 'body_bytes: as received');
	is($e->{inflated_bytes}, length $plain, 'inflated_bytes: after gunzip');
	is($e->{headers}{'content-encoding'}, 'gzip', 'the Content-Encoding header is logged');
	($st, $d) = req($ws, 'POST', '/bulk', 'not gzip at all', { 'Content-Encoding' => 'gzip' });
	is($st, 400, 'a broken gzip body: 400');
	like($d->{error}, qr/not valid gzip/, '... saying so');
	($st, $d) = req($ws, 'POST', '/bulk', $plain, { 'Content-Encoding' => 'br' });
	is($st, 415, 'Content-Encoding br: 415');

	# HTTP::Tiny sends a code-ref body with Transfer-Encoding: chunked.
	my @parts = (substr($gz, 0, 100), substr($gz, 100, 1000), substr($gz, 1100));
	($st, $d) = req($ws, 'POST', '/bulk', sub { shift @parts }, { 'Content-Encoding' => 'gzip' });
	is($st, 200, 'a chunked gzip body: 200');
	$e = ctl($ws, 'GET', '/_ws/requests')->{requests}[-1];
	is($e->{headers}{'transfer-encoding'}, 'chunked', '... it was chunked');
	is($e->{body_bytes}, length $gz, '... de-chunked before inflating');
	is(scalar @{ $e->{body}{docs} }, 200, '... and parsed');
}

# ---- keep-alive, pipelining, several connections -----------------------------
{
	ctl($ws, 'POST', '/_ws/reset');
	my $one = $J->encode(batch(docs => [{ id => 'k1', doc => {} }]));
	my $two = $J->encode(batch(docs => [{ id => 'k2', doc => {} }]));
	my %ct = ('Content-Type' => 'application/json');

	my $a = raw_connect($ws);
	print $a raw_request('POST', '/bulk', $one, %ct);
	my ($st, $h) = raw_read($a);
	is($st, 200, 'raw connection: first request');
	is($h->{connection}, 'keep-alive', '... Connection: keep-alive');
	print $a raw_request('POST', '/bulk', $two, %ct);
	($st) = raw_read($a);
	is($st, 200, 'the same connection: a second request');
	print $a raw_request('POST', '/bulk', $one, %ct) . raw_request('GET', '/_ws/stats') . raw_request('POST', '/bulk', $two, %ct);
	my @st = map { (raw_read($a))[0] } 1 .. 3;
	is_deeply(\@st, [ 200, 200, 200 ], 'three pipelined requests, three answers in order');

	# A second connection is served while the first has sent half a request.
	my $b = raw_connect($ws);
	my $req = raw_request('POST', '/bulk', $one, %ct);
	print $b substr($req, 0, 60);
	my $c = raw_connect($ws);
	print $c raw_request('POST', '/bulk', $two, %ct);
	($st) = raw_read($c, 5);
	is($st, 200, 'another connection is served while one is half-way through its request');
	print $b substr($req, 60);
	($st) = raw_read($b, 5);
	is($st, 200, '... and the half-sent one completes');

	my $log = ctl($ws, 'GET', '/_ws/requests')->{requests};
	my @conns = map { $_->{conn} } @$log;
	is(scalar(@conns), 6, 'six batches logged');
	is(scalar(grep { $_ == $conns[0] } @conns[ 0 .. 3 ]), 4, 'the first four on one connection');
	isnt($conns[4], $conns[0], 'the other connection has another number');
	my $s = ctl($ws, 'GET', '/_ws/stats');
	ok($s->{open_connections} >= 4, "stats: open_connections ($s->{open_connections})");
	ok($s->{connections} >= 3, "stats: connections since the reset ($s->{connections})");

	# Expect: 100-continue gets a 100 before the body is sent.
	print $a "POST /bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
	  . length($one) . "\r\nExpect: 100-continue\r\n\r\n";
	($st) = raw_read($a, 5);
	is($st, 100, 'Expect: 100-continue: 100 Continue');
	print $a $one;
	($st) = raw_read($a, 5);
	is($st, 200, '... then the answer');

	# Raw chunked body.
	my $chunked = join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } (substr($one, 0, 10), substr($one, 10))) . "0\r\n\r\n";
	print $a raw_request('POST', '/bulk', $chunked, %ct, 'Transfer-Encoding' => 'chunked');
	($st) = raw_read($a, 5);
	is($st, 200, 'a raw chunked body');

	# Connection: close is honoured.
	print $c raw_request('POST', '/bulk', $one, %ct, Connection => 'close');
	($st, $h) = raw_read($c, 5);
	is($st, 200, 'Connection: close: answered');
	is($h->{connection}, 'close', '... with Connection: close');
	ok(raw_closed($c, 5), '... and closed');

	# Broken framing: 400 and a close.
	my $d = raw_connect($ws);
	print $d "POST /bulk HTTP/1.1\r\nContent-Length: abc\r\n\r\n";
	($st) = raw_read($d, 5);
	is($st, 400, 'a bad Content-Length: 400');
	ok(raw_closed($d, 5), '... and the connection closed');
	close($_) for $a, $b, $c, $d;

	# HTTP::Tiny with keep-alive: one connection for many batches.
	ctl($ws, 'POST', '/_ws/reset');
	my $t = NoDelayHTTP->new(keep_alive => 1);
	$t->post("$ws->{url}/bulk", { content => $one, headers => \%ct }) for 1 .. 20;
	my @c = map { $_->{conn} } @{ ctl($ws, 'GET', '/_ws/requests')->{requests} };
	is(scalar(@c), 20, 'HTTP::Tiny keep-alive: 20 batches');
	is(scalar(keys %{ { map { $_ => 1 } @c } }), 1, '... over one connection');
}

# ---- delay_ms and drop --------------------------------------------------------
{
	ctl($ws, 'POST', '/_ws/reset');
	ctl($ws, 'PUT', '/_ws/config', { delay_ms => 700 });
	my $one = $J->encode(batch(docs => [{ id => 'd1', doc => {} }]));
	my $a = raw_connect($ws);
	my $t0 = time;
	print $a raw_request('POST', '/bulk', $one, 'Content-Type' => 'application/json');
	my $stats = ctl($ws, 'GET', '/_ws/stats');    # another connection, meanwhile
	my $t_ctl = time - $t0;
	ok($t_ctl < 0.5, sprintf('a control request is answered while a batch is held (%.2f s)', $t_ctl));
	my ($st) = raw_read($a, 5);
	my $t_batch = time - $t0;
	is($st, 200, 'the held batch is answered');
	ok($t_batch >= 0.65, sprintf('... after delay_ms (%.2f s)', $t_batch));

	ctl($ws, 'PUT', '/_ws/config', { statuses => [{ drop => JSON::PP::true, first => 1 }] });
	print $a raw_request('POST', '/bulk', $one, 'Content-Type' => 'application/json');
	ok(raw_closed($a, 5), 'drop: the connection is closed without an answer');
	is(ctl($ws, 'GET', '/_ws/requests')->{requests}[-1]{status}, undef, '... logged with a null status');
	is(ctl($ws, 'GET', '/_ws/stats')->{answered}{dropped}, 1, '... counted as dropped');
	is((req($ws, 'POST', '/bulk', $one))[0], 200, 'the next batch is processed');
	close($a);
}

# ---- the --log file, --max-seconds ---------------------------------------------
like(slurp("$dir/ws.log"), qr/^\d+ conn=\d+ POST \/bulk status=200 bytes=\d+ docs=1$/m, '--log: one line per request');
{
	my $short = start_server('ws-short', $^X, $script, '--max-seconds', 1);
	my $deadline = time + 10;
	sleep 0.1 while time < $deadline && waitpid($short->{pid}, WNOHANG) != $short->{pid};
	ok(time < $deadline, '--max-seconds 1: the server stops by itself');
	is($?, 0, '... exit status 0');
	$short->{pid} = undef;
}
is(stop_server($ws), 0, 'write-service.pl stops on SIGTERM with status 0');

# ==== write_service.py against esd ==========================================
SKIP:
{
	my $python = $ENV{PYTHON} // (-x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3');
	skip 'ESD_BIN is not set: the example service is not tested', 1 unless $ENV{ESD_BIN};
	skip "no $python", 1 unless system("$python -c 'import http.server' 2>/dev/null") == 0;
	require EsdServer;
	EsdServer->require_stand_in('faults');
	my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
	my $ex = start_server('example', $python, $example, '--listen', '127.0.0.1:0', '--es', $es->url,
		'--max-seconds', 300);
	ok($ex->{port}, "write_service.py listens on $ex->{port}");

	my ($st, $d) = req($ex, 'POST', '/write', batch(docs => [{ id => '1', doc => { n => 1 } }, { id => '2', doc => { n => 2 } }]));
	is($st, 200, 'example: a first batch');
	is_deeply($d, { failed => [] }, '... all accepted');
	$es->refresh('orders-flush');
	is_deeply($es->doc('orders-flush', '1'), { n => 1, synced_by => 'write-service' }, '... written to <index>-flush with its own field');

	($st, $d) = req($ex, 'POST', '/write', batch(tag => 'FLUSH', docs => [
		{ id => '3', doc => { n => 3 } },
		{ id => '2', delete => JSON::PP::true },
		{ id => '4' },
		{ id => '5', doc => { n => 'x' } },
		{ id => 'never', delete => JSON::PP::true }]));
	is($st, 200, 'example: a batch with a doc, a delete, an id-only doc and a doc esd refuses');
	is(scalar @{ $d->{failed} }, 1, '... one failed entry');
	my $f = $d->{failed}[0] // {};
	is($f->{id}, '5', '... the refused doc');
	ok(JSON::PP::is_bool($f->{retryable}) && !$f->{retryable}, '... retryable: false');
	like($f->{reason} // '', qr/^(document_parsing|mapper_parsing)_exception: .*\[n\]/, "... ES's error.type: error.reason ($f->{reason})");
	$es->refresh('orders-flush');
	is_deeply($es->doc('orders-flush', '3'), { n => 3, synced_by => 'write-service' }, '... the doc written');
	ok(!defined $es->doc('orders-flush', '2'), '... the delete applied');
	is_deeply($es->doc('orders-flush', '4'), { id => '4', assembled => JSON::PP::true, synced_by => 'write-service' },
		'... the id-only doc assembled');
	ok(!defined $es->doc('orders-flush', '5'), '... the refused doc not written');
	is($es->count('orders-flush'), 3, '... 3 documents in orders-flush');

	# The same batch again (a re-send after a crash): the same result.
	my $b = batch(docs => [{ id => '3', doc => { n => 3 } }, { id => '2', delete => JSON::PP::true }]);
	($st, $d) = req($ex, 'POST', '/write', $b) for 1 .. 2;
	is_deeply($d, { failed => [] }, 'example: a batch sent twice is accepted twice (idempotent)');
	$es->refresh('orders-flush');
	is($es->count('orders-flush'), 3, '... and changes nothing');

	# A dual write: every index of "indexes" gets every document.
	($st, $d) = req($ex, 'POST', '/write', batch(indexes => [qw(orders orders-9)], docs => [
		{ id => 'm1', doc => { n => 1 } }, { id => 'm2', doc => { n => 'x' } }, { id => '3', delete => JSON::PP::true }]));
	is($st, 200, 'example: a batch for two indexes');
	is_deeply([ map { $_->{id} } @{ $d->{failed} } ], ['m2'], '... the doc esd refuses in both is the one failed entry');
	like($d->{failed}[0]{reason} // '', qr/^orders-flush: .*; orders-9-flush: /, '... its reason names each index');
	$es->refresh('orders-flush');
	$es->refresh('orders-9-flush');
	is_deeply($es->doc('orders-9-flush', 'm1'), { n => 1, synced_by => 'write-service' }, '... m1 written to orders-9-flush');
	is_deeply($es->doc('orders-flush', 'm1'), { n => 1, synced_by => 'write-service' }, '... and to orders-flush');
	ok(!defined $es->doc('orders-flush', '3'), '... 3 deleted from orders-flush');
	($st, $d) = req($ex, 'POST', '/write', batch(docs => [{ id => 'm1', delete => JSON::PP::true }, { id => '3', doc => { n => 3 } }]));
	is_deeply($d, { failed => [] }, '... (orders-flush as it was)');

	# gzip body.
	my $plain = $J->encode(batch(docs => [ map { { id => "z$_", doc => { n => $_ } } } 1 .. 50 ]));
	gzip(\$plain => \my $gz) or die $GzipError;
	($st, $d) = req($ex, 'POST', '/write', $gz, { 'Content-Encoding' => 'gzip' });
	is($st, 200, 'example: a gzip body');
	$es->refresh('orders-flush');
	is($es->count('orders-flush'), 53, '... its 50 documents written');

	# A chunked body.
	my @parts = (substr($plain, 0, 20), substr($plain, 20));
	($st, $d) = req($ex, 'POST', '/write', sub { shift @parts });
	is($st, 200, 'example: a chunked body');

	# Per-item 429 -> retryable.
	$es->set_faults({ item_reject => { status => 429, first => 1 } });
	($st, $d) = req($ex, 'POST', '/write', batch(docs => [{ id => 'r1', doc => { n => 1 } }, { id => 'r2', doc => { n => 2 } }]));
	is($st, 200, 'example: a per-item 429');
	is(scalar @{ $d->{failed} }, 1, '... one failed entry');
	ok($d->{failed}[0]{retryable}, '... retryable: true');
	like($d->{failed}[0]{reason}, qr/rejected_execution_exception/, "... reason $d->{failed}[0]{reason}");

	# Whole _bulk 429 / 503 -> the service answers 503.
	for my $status (429, 503)
	{
		$es->set_faults({ bulk_reject => { status => $status, first => 1 } });
		($st, $d) = req($ex, 'POST', '/write', batch(docs => [{ id => 'w', doc => { n => 1 } }]));
		is($st, 503, "example: a whole _bulk $status -> 503");
		($st) = req($ex, 'POST', '/write', batch(docs => [{ id => 'w', doc => { n => 1 } }]));
		is($st, 200, '... the batch sent again is accepted');
	}
	$es->clear_faults;

	# A malformed batch -> 400; an empty docs array needs no ES.
	($st, $d) = req($ex, 'POST', '/write', '{"docs": 3}');
	is($st, 400, 'example: a malformed batch: 400');
	($st, $d) = req($ex, 'POST', '/write', batch());
	is_deeply($d, { failed => [] }, 'example: no docs: {"failed": []}');

	# Keep-alive: HTTP::Tiny reuses one connection (the example answers HTTP/1.1).
	my (undef, undef, $r) = req($ex, 'POST', '/write', batch());
	is($r->{protocol}, 'HTTP/1.1', 'example: answers HTTP/1.1 (persistent connections)');

	# Elasticsearch gone -> 503.
	$es->stop;
	($st, $d) = req($ex, 'POST', '/write', batch(docs => [{ id => 'x', doc => {} }]));
	is($st, 503, 'example: Elasticsearch unreachable -> 503');
	like($d->{error} // '', qr/unreachable/, "... $d->{error}");
	stop_server($ex);
}

done_testing();
