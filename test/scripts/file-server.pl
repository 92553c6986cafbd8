#!/usr/bin/perl
# file-server.pl: a small HTTP file server for the file-source tests
# (test/unit/file_reader_test.c, TAP tests).  Perl 5 core modules only.
#
#   perl test/scripts/file-server.pl --dir DIR --port-file FILE [--log FILE]
#        [--cut-once-at BYTES [--reset-at-cut]] [--ignore-range] [--max-seconds N]
#        [--bytes-per-second N]
#
# Binds 127.0.0.1 on an ephemeral port and writes the port to --port-file
# (atomically: a reader never sees it half written) once it listens.
# Serves GET and HEAD of the files under DIR with Content-Length; a path
# with a ".." segment is refused (400).  "Range: bytes=N-" (or N-M) gets
# 206 with Content-Range, 416 with "Content-Range: bytes */SIZE" when
# N >= SIZE; --ignore-range answers 200 with the whole file instead.
# 404 for a missing file, 403 for one that cannot be read (or a directory).
# GET /__status/NNN answers status NNN (100 < NNN < 600) with a short body,
# for the tests of how a client takes 401, 410, 429, 503 and the like.
#
# --cut-once-at B: the first answer whose body would carry byte B of the
# file sends its body up to (not including) byte B, then closes the
# connection without the rest (the client sees fewer bytes than
# Content-Length); once per server lifetime.  With --reset-at-cut the
# connection is reset (RST, SO_LINGER 0) instead of closed: bytes still in
# the socket buffer may then never arrive.
#
# --bytes-per-second N: each answer's body is paced to at most N bytes a
# second (from its first byte), so a test can rely on a reader still
# reading when it looks at it: a lower bound on how long a file takes.
#
# --log FILE: one line per request, flushed at once:
#   <method> <target> range=<Range value or -> status=<code> bytes=<body bytes sent>
# (target as requested, query string included).
#
# One process per connection (forked after the request is read, so the
# cut-once decision stays in the server); files stream in 64 KiB chunks.
# The server, and each connection's process, exits by itself when its
# parent dies (getppid polled every second) or after --max-seconds
# (default 3600): no server outlives its test.
use strict;
use warnings;
use Errno qw(EINTR EAGAIN);
use Fcntl qw(O_RDONLY O_WRONLY O_CREAT O_APPEND);
use Getopt::Long;
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes ();
use Socket qw(IPPROTO_TCP TCP_NODELAY SOL_SOCKET SO_LINGER);

my %opt = ('max-seconds' => 3600);
GetOptions(\%opt, 'dir=s', 'port-file=s', 'log=s', 'cut-once-at=i', 'reset-at-cut',
	'ignore-range', 'max-seconds=i', 'bytes-per-second=i')
  or die "usage: $0 --dir DIR --port-file FILE [--log FILE] [--cut-once-at BYTES]"
  . " [--ignore-range] [--max-seconds N] [--bytes-per-second N]\n";
die "--dir and --port-file are required\n" unless defined $opt{dir} && defined $opt{'port-file'};
die "--dir $opt{dir} is not a directory\n" unless -d $opt{dir};

my $CHUNK = 64 * 1024;
my %REASON = (200 => 'OK', 206 => 'Partial Content', 400 => 'Bad Request',
	403 => 'Forbidden', 404 => 'Not Found', 405 => 'Method Not Allowed',
	416 => 'Range Not Satisfiable');
my $started = time;
my $parent = getppid();
my $cut_pending = defined $opt{'cut-once-at'};
$SIG{PIPE} = 'IGNORE';

my $listener = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => 0,
	Proto => 'tcp',
	Listen => 16,
	ReuseAddr => 1)
  or die "listen: $!\n";
write_port_file($opt{'port-file'}, $listener->sockport);

my $log_fh;
if (defined $opt{log})
{
	sysopen($log_fh, $opt{log}, O_WRONLY | O_CREAT | O_APPEND, 0644)
	  or die "open $opt{log}: $!\n";
}

serve();
exit 0;

# ------------------------------------------------------------------------

sub should_stop
{
	my ($ppid) = @_;
	return getppid() != $ppid || time - $started > $opt{'max-seconds'};
}

sub write_port_file
{
	my ($file, $port) = @_;
	my $tmp = "$file.tmp.$$";
	open(my $fh, '>', $tmp) or die "open $tmp: $!\n";
	print $fh "$port\n";
	close($fh) or die "close $tmp: $!\n";
	rename($tmp, $file) or die "rename $tmp: $!\n";
}

sub serve
{
	my $sel = IO::Select->new($listener);
	while (!should_stop($parent))
	{
		1 while waitpid(-1, WNOHANG) > 0;    # reap finished connections
		next unless $sel->can_read(1);
		my $client = $listener->accept or next;
		handle_connection($client);
	}
}

# Read the request in the server (so the cut is decided once), answer in a child.
sub handle_connection
{
	my ($client) = @_;
	my $req = read_request($client);
	if (!$req)
	{
		close($client);
		return;
	}
	my $plan = plan_answer($req);
	$plan->{head} = 1 if $req->{method} eq 'HEAD';
	my $server_pid = $$;
	my $pid = fork();
	if (!defined $pid)
	{
		close($client);
		return;
	}
	if ($pid == 0)
	{
		$listener->close;
		$parent = $server_pid;    # from now on, outlive the server no longer than a second
		my $sent = send_answer($client, $plan);
		log_request($req, $plan->{status}, $sent);
		setsockopt($client, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0))
		  if defined $plan->{cut} && $opt{'reset-at-cut'};
		POSIX::_exit(0);
	}
	close($client);
}

# Headers of one request, within 10 s; undef when none came.
sub read_request
{
	my ($client) = @_;
	my $sel = IO::Select->new($client);
	my $data = '';
	my $deadline = time + 10;
	while ($data !~ /\r?\n\r?\n/)
	{
		return undef if time > $deadline || length($data) > 65536;
		next unless $sel->can_read(1);
		my $n = sysread($client, $data, 4096, length $data);
		next if !defined $n && ($! == EINTR || $! == EAGAIN);
		return undef unless $n;
	}
	my ($line, @headers) = split /\r?\n/, $data;
	my ($method, $target) = $line =~ m{^(\S+)\s+(\S+)\s+HTTP/\d\.\d$}
	  or return { method => '-', target => '-', bad => 1 };
	my %h;
	for (@headers)
	{
		last if $_ eq '';
		$h{lc $1} = $2 if /^([^:]+):\s*(.*?)\s*$/;
	}
	return { method => $method, target => $target, range => $h{range} };
}

sub url_decode
{
	my ($s) = @_;
	$s =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge;
	return $s;
}

# What to answer: status, headers, and the byte range of the file to send.
sub plan_answer
{
	my ($req) = @_;
	return { status => 400 } if $req->{bad};
	return { status => 405 } unless $req->{method} eq 'GET' || $req->{method} eq 'HEAD';
	my ($path) = $req->{target} =~ m{^([^?#]*)};
	$path = url_decode($path);
	return { status => $1 } if $path =~ m{^/__status/([1-5]\d\d)$} && $1 > 100;
	my @segments = split m{/}, $path;
	return { status => 400 } if $path !~ m{^/} || $path =~ /\0/ || grep { $_ eq '..' } @segments;
	my $file = "$opt{dir}$path";
	return { status => 404 } unless -e $file;
	return { status => 403 } if -d $file;
	my $fh;
	return { status => 403 } unless sysopen($fh, $file, O_RDONLY);
	my $size = -s $fh;
	my ($from, $to) = (0, $size - 1);
	my $status = 200;
	if (defined $req->{range} && !$opt{'ignore-range'}
		&& $req->{range} =~ /^bytes=(\d+)-(\d*)$/)
	{
		($from, $to) = ($1, $2 eq '' ? $size - 1 : $2);
		return { status => 416, size => $size } if $from >= $size;
		$to = $size - 1 if $to >= $size;
		return { status => 416, size => $size } if $to < $from;
		$status = 206;
	}
	my $plan = { status => $status, fh => $fh, size => $size, from => $from, to => $to,
		head => $req->{method} eq 'HEAD' };
	my $cut = $opt{'cut-once-at'};
	if ($cut_pending && !$plan->{head} && $cut >= $from && $cut <= $to)
	{
		$plan->{cut} = $cut;
		$cut_pending = 0;
	}
	return $plan;
}

# Send the answer; the body bytes sent.
sub send_answer
{
	my ($client, $plan) = @_;
	my $status = $plan->{status};
	my $reason = $REASON{$status} || 'Status';
	my $head = "HTTP/1.1 $status $reason\r\nConnection: close\r\n";
	setsockopt($client, IPPROTO_TCP, TCP_NODELAY, 1);
	if (!$plan->{fh})
	{
		my $body = "$status $reason\n";
		$head .= "Content-Range: bytes */$plan->{size}\r\n" if $status == 416;
		$head .= "Content-Type: text/plain\r\nContent-Length: " . length($body) . "\r\n\r\n";
		$body = '' if $plan->{head};
		return write_all($client, $head . $body) ? length $body : 0;
	}
	my $length = $plan->{to} - $plan->{from} + 1;
	$head .= "Content-Type: application/octet-stream\r\nContent-Length: $length\r\n";
	$head .= "Accept-Ranges: bytes\r\n" unless $opt{'ignore-range'};
	$head .= "Content-Range: bytes $plan->{from}-$plan->{to}/$plan->{size}\r\n" if $status == 206;
	return 0 unless write_all($client, "$head\r\n");
	return 0 if $plan->{head};
	my $end = defined $plan->{cut} ? $plan->{cut} : $plan->{to} + 1;
	return send_body($client, $plan->{fh}, $plan->{from}, $end);
}

# File bytes [from, end) in 64 KiB chunks; the bytes sent.
sub send_body
{
	my ($client, $fh, $from, $end) = @_;
	my $sent = 0;
	my $began = Time::HiRes::time();
	my $rate = $opt{'bytes-per-second'};
	sysseek($fh, $from, 0) or return 0;
	while ($from + $sent < $end)
	{
		if ($rate)
		{
			# not ahead of the pace: wait until the bytes sent are due
			my $due = $began + $sent / $rate - Time::HiRes::time();
			Time::HiRes::sleep($due) if $due > 0;
		}
		my $want = $end - $from - $sent;
		$want = $CHUNK if $want > $CHUNK;
		my $buf;
		my $n = sysread($fh, $buf, $want);
		last unless $n;
		last unless write_all($client, $buf);
		$sent += $n;
	}
	return $sent;
}

# Write everything, waiting at most a second at a time (a paused client
# may hold the connection) and giving up when the server is gone.
sub write_all
{
	my ($client, $data) = @_;
	my $sel = IO::Select->new($client);
	my $off = 0;
	while ($off < length $data)
	{
		if (!$sel->can_write(1))
		{
			return 0 if should_stop($parent);
			next;
		}
		my $n = syswrite($client, $data, length($data) - $off, $off);
		if (!defined $n)
		{
			next if $! == EINTR || $! == EAGAIN;
			return 0;
		}
		$off += $n;
	}
	return 1;
}

sub log_request
{
	my ($req, $status, $sent) = @_;
	return unless $log_fh;
	my $range = defined $req->{range} ? $req->{range} : '-';
	syswrite($log_fh, "$req->{method} $req->{target} range=$range status=$status bytes=$sent\n");
}
