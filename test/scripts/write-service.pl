#!/usr/bin/perl
# write-service.pl: a test "write service" for consumers of kind 'http'
# (ecp POSTs each batch of documents to it as JSON).  Perl 5 core modules
# only.  The example a team would copy is test/examples/write_service.py;
# this one exists to be driven by tests.
#
#   perl test/scripts/write-service.pl --port-file FILE [--max-seconds N]
#        [--max-body BYTES] [--log FILE]
#
# Binds 127.0.0.1 on an ephemeral port and writes the port to --port-file
# (atomically: a reader never sees it half written) once it listens.  Exits
# by itself after --max-seconds (default 600), when its parent dies (getppid
# polled every second), or on SIGTERM/SIGINT: no server outlives its test.
# One process, one IO::Select loop: any number of connections at once, all
# sharing one state (config, counters, log, stored documents).
#
# HTTP: HTTP/1.1 with persistent connections (HTTP/1.0 closes unless it
# asks for keep-alive; "Connection: close" is honoured), pipelining,
# bodies with Content-Length or "Transfer-Encoding: chunked", "Expect:
# 100-continue" (a 100 is sent before the body is read), and
# "Content-Encoding: gzip" (or deflate) bodies, inflated before use.  A
# body over --max-body (default 100 MiB) gets 413 and the connection is
# closed; broken framing gets 400 and a close.
#
# The protocol (what ecp sends):
#   POST <the consumer's url, path as configured>
#   Content-Type: application/json
#   {"task": "orders", "run": 12, "part": 0, "index": "orders",
#    "indexes": ["orders"], "tag": "FLUSH",                 -- (+ a loading migration's index)
#    "op": "index", "docs": [{"id": "1", "doc": {...}},      -- write
#                            {"id": "2", "delete": true},   -- gone at the source
#                            {"id": "3"}]}                  -- id only
# answered by 2xx {"failed": [{"id": "7", "retryable": true, "reason": "..."}]}.
#
# POST to any path not under /_ws/ is a batch:
#   - Content-Type must be application/json (else 415) and a
#     Content-Encoding other than gzip/deflate/identity gets 415;
#   - the body is validated: an object with exactly task (string), run
#     (integer >= 0), part (integer >= 0), index (string), indexes (an
#     array of 1 or 2 distinct non-empty strings, the first equal to index),
#     tag (string or null), op (string), docs (array); each doc an object with a non-empty
#     string id and either doc (an object), or delete (true), or nothing
#     else.  Anything else: 400 {"error": "<what is wrong, with its path>"}
#     (ecp takes a 4xx as a configuration failure: right for a broken client);
#   - accepted docs are stored in memory by id: doc -> stored (last write
#     wins), delete -> removed, id only -> stored as {"id_only": true};
#     and so, apart, in every index the batch's "indexes" lists;
#   - the answer is 200 {"failed": [...]} (see ok_status/ok_body below).
# GET / (and HEAD /) answers the configured root (default 404
# {"error": "not an elasticsearch cluster"}), for ecp's product detection.
# Any other method or path: 404 {"error": "no handler for METHOD PATH"}.
#
# Control endpoints (JSON in and out; not logged, not counted):
#   PUT  /_ws/config   replaces the whole configuration (absent keys take
#                      their defaults) and restarts its counters:
#     {"fail_ids": {"7": {"retryable": true, "times": 2, "reason": "..."},
#                   "9": {"retryable": false, "reason": "price missing"}},
#      "statuses": [{"status": 429, "first": 2}, {"status": 503, "first": 1}],
#      "root": {"status": 200, "body": {...}, "headers": {"X-Elastic-Product": "..."}},
#      "delay_ms": 0, "ok_status": 200, "ok_body": "failed"}
#     fail_ids   those ids are listed in "failed": a retryable one only on its
#                first `times` appearances (default 1, counted from this PUT),
#                then accepted; a non-retryable one every time, never stored.
#                reason defaults to "injected failure".
#     statuses   the next batch POSTs (counted from this PUT) are answered with
#                the entries in order instead of being processed: each entry
#                {"status": S, "first": N} serves N batches, {"status": S,
#                "always": true} every batch from then on.  The body is
#                {"error": "injected status S"} unless the entry has "body"
#                (any JSON value) or "raw_body" (a string sent as is);
#                "retry_after": SECONDS adds a Retry-After header; "drop": true
#                (no status needed) closes the connection without answering.
#     root       what GET / answers: status (default 404), body, headers.
#     delay_ms   every batch answer is held that long (other connections are
#                served meanwhile), for timeout tests.
#     ok_status  the status of a processed batch (200..299; 204 has no body).
#     ok_body    "failed" (default: always {"failed": [...]}), "empty" (an
#                empty body when nothing failed) or "{}" ({} when nothing
#                failed): the accepted forms of "every doc was accepted".
#     A bad key or value: 400 {"error": "..."} naming it; the config is kept.
#   GET  /_ws/config   {"config": <as PUT, defaults filled in>,
#                       "fail_seen": {"7": 1}, "statuses_left": [...]}
#   GET  /_ws/requests[?n=N]  {"requests": [{"seq", "time_ms", "conn",
#                      "method", "path" (query included), "headers"
#                      (lower-cased names; repeated ones joined by ", "),
#                      "body" (parsed JSON, or null), "body_bytes" (as
#                      received), "inflated_bytes" (gzip/deflate only),
#                      "status", "error" (when the answer was an error)}]}:
#                      every non-control request, oldest first, the last 10000
#                      (the last N with ?n=N).  "conn" numbers the connection
#                      (1, 2, ...): the same number means a reused connection.
#   GET  /_ws/docs     {"count": N, "docs": {"<id>": <doc>, ...}}
#   GET  /_ws/docs?index=NAME  the same, of the documents written to that
#                      index (as "indexes" listed it): a dual write shows
#                      in both; an index never listed: count 0
#   GET  /_ws/stats    {"batches", "docs" (in processed batches), "accepted",
#                       "failed", "written", "deleted", "id_only",
#                       "indexes": {"<index>": accepted docs listing it},
#                       "answered": {"200": n, "429": n, ...} (every
#                       non-control request), "requests", "connections"
#                       (accepted since the start/reset), "open_connections"}
#   POST /_ws/reset    clears documents, log, stats and config.
#
# --log FILE: one line per non-control request, flushed at once:
#   <time_ms> conn=<n> <method> <path> status=<code> bytes=<body bytes> docs=<n>
use strict;
use warnings;
use B ();
use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use Fcntl qw(O_WRONLY O_CREAT O_APPEND);
use Getopt::Long;
use IO::Select;
use IO::Socket::INET;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use IO::Uncompress::Inflate qw(inflate $InflateError);
use JSON::PP;
use POSIX ();
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time);

my %opt = ('max-seconds' => 600, 'max-body' => 100 * 1024 * 1024);
GetOptions(\%opt, 'port-file=s', 'max-seconds=i', 'max-body=i', 'log=s')
  or die "usage: $0 --port-file FILE [--max-seconds N] [--max-body BYTES] [--log FILE]\n";
die "--port-file is required\n" unless defined $opt{'port-file'};

my $MAX_HEAD = 64 * 1024;
my $MAX_LOG = 10000;
my $IDLE_SECONDS = 300;
my %REASON = (100 => 'Continue', 200 => 'OK', 201 => 'Created', 202 => 'Accepted',
	204 => 'No Content', 400 => 'Bad Request', 401 => 'Unauthorized', 403 => 'Forbidden',
	404 => 'Not Found', 405 => 'Method Not Allowed', 408 => 'Request Timeout',
	409 => 'Conflict', 413 => 'Payload Too Large', 415 => 'Unsupported Media Type',
	429 => 'Too Many Requests', 431 => 'Request Header Fields Too Large',
	500 => 'Internal Server Error', 502 => 'Bad Gateway', 503 => 'Service Unavailable',
	504 => 'Gateway Timeout');
my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;
my $started = time;
my $parent = getppid();
my $stop = 0;
$SIG{PIPE} = 'IGNORE';
$SIG{TERM} = $SIG{INT} = sub { $stop = 1 };

# ---- state ---------------------------------------------------------------
my (%docs, %index_docs, @log, $seq, %stats, $config, %fail_seen, @statuses_left, $conn_seq);

sub default_config
{
	return {
		fail_ids => {},
		statuses => [],
		root => { status => 404, body => { error => 'not an elasticsearch cluster' }, headers => {} },
		delay_ms => 0,
		ok_status => 200,
		ok_body => 'failed',
	};
}

sub apply_config
{
	my ($c) = @_;
	$config = $c;
	%fail_seen = ();
	@statuses_left = map { {%$_} } @{ $c->{statuses} };
}

sub reset_state
{
	%docs = ();
	%index_docs = ();
	@log = ();
	$seq = 0;
	%stats = (batches => 0, docs => 0, accepted => 0, failed => 0, written => 0,
		deleted => 0, id_only => 0, requests => 0, connections => 0, answered => {}, indexes => {});
	apply_config(default_config());
}

# ---- start ---------------------------------------------------------------
reset_state();
$conn_seq = 0;
my $listener = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => 0,
	Proto => 'tcp',
	Listen => 128,
	ReuseAddr => 1)
  or die "listen: $!\n";
$listener->blocking(0);

my $log_fh;
if (defined $opt{log})
{
	sysopen($log_fh, $opt{log}, O_WRONLY | O_CREAT | O_APPEND, 0644)
	  or die "open $opt{log}: $!\n";
}
write_port_file($opt{'port-file'}, $listener->sockport);

my %conns;    # fileno -> connection
serve();
close($_->{sock}) for values %conns;
exit 0;

# ---- event loop ----------------------------------------------------------

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
	my $last_parent_check = 0;
	while (!$stop)
	{
		my $now = time;
		last if $now - $started > $opt{'max-seconds'};
		if ($now - $last_parent_check >= 1)
		{
			last if getppid() != $parent;
			$last_parent_check = $now;
		}
		my $rsel = IO::Select->new($listener);
		my $wsel = IO::Select->new;
		my $timeout = 1;
		for my $c (values %conns)
		{
			release_held($c, $now);
			next if $c->{dead};
			if ($c->{closing} && $c->{out} eq '' && !@{ $c->{held} })
			{
				drop_conn($c);
				next;
			}
			if (!@{ $c->{held} } && $c->{out} eq '' && $now - $c->{active} > $IDLE_SECONDS)
			{
				drop_conn($c);
				next;
			}
			$rsel->add($c->{sock}) unless $c->{closing};
			$wsel->add($c->{sock}) if $c->{out} ne '';
			if (@{ $c->{held} })
			{
				my $wait = $c->{held}[0][0] - $now;
				$timeout = $wait if $wait < $timeout;
			}
		}
		$timeout = 0 if $timeout < 0;
		my ($readable, $writable) = IO::Select->select($rsel, $wsel, undef, $timeout);
		for my $fh (@{ $writable || [] })
		{
			my $fd = fileno($fh) // next;
			my $c = $conns{$fd} or next;
			flush_out($c);
		}
		for my $fh (@{ $readable || [] })
		{
			if ($fh == $listener)
			{
				accept_all();
				next;
			}
			my $fd = fileno($fh) // next;
			my $c = $conns{$fd} or next;
			read_conn($c);
		}
	}
}

sub accept_all
{
	while (my $sock = $listener->accept)
	{
		$sock->blocking(0);
		eval { setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1) };
		my $c = { sock => $sock, in => '', out => '', held => [], req => undef,
			id => ++$conn_seq, active => time, closing => 0 };
		$conns{ fileno($sock) } = $c;
		$stats{connections}++;
	}
}

sub drop_conn
{
	my ($c) = @_;
	return if $c->{dead};
	$c->{dead} = 1;
	delete $conns{ fileno($c->{sock}) };
	close($c->{sock});
}

sub read_conn
{
	my ($c) = @_;
	my $n = sysread($c->{sock}, $c->{in}, 256 * 1024, length $c->{in});
	if (!defined $n)
	{
		return if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
		drop_conn($c);
		return;
	}
	if ($n == 0)
	{
		# The peer is done: answer what is complete, then close.
		process_input($c);
		$c->{closing} = 1;
		drop_conn($c) if $c->{out} eq '' && !@{ $c->{held} };
		return;
	}
	$c->{active} = time;
	process_input($c);
	flush_out($c) if $c->{out} ne '';
}

sub flush_out
{
	my ($c) = @_;
	while ($c->{out} ne '')
	{
		my $n = syswrite($c->{sock}, $c->{out});
		if (!defined $n)
		{
			return if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
			drop_conn($c);
			return;
		}
		substr($c->{out}, 0, $n, '');
		$c->{active} = time;
	}
	if ($c->{closing} && !@{ $c->{held} })
	{
		drop_conn($c);
	}
}

# Answers held by delay_ms go out in order once their time has come.
sub release_held
{
	my ($c, $now) = @_;
	my $released = 0;
	while (@{ $c->{held} } && $c->{held}[0][0] <= $now)
	{
		my $h = shift @{ $c->{held} };
		if ($h->[2] eq 'drop')
		{
			$c->{held} = [];
			$c->{closing} = 1;
			last;
		}
		$c->{out} .= $h->[1];
		$c->{closing} = 1 if $h->[2] eq 'close';
		$released = 1;
	}
	flush_out($c) if $released || $c->{closing};
}

# Queue an answer: at once, or after a delay (keeping the order on the connection).
sub queue_answer
{
	my ($c, $bytes, $after, $delay_s) = @_;    # $after: '', 'close' or 'drop'
	$delay_s ||= 0;
	if ($delay_s > 0 || @{ $c->{held} })
	{
		my $at = time + $delay_s;
		$at = $c->{held}[-1][0] if @{ $c->{held} } && $c->{held}[-1][0] > $at;
		push @{ $c->{held} }, [ $at, $bytes, $after ];
	}
	elsif ($after eq 'drop')
	{
		$c->{closing} = 1;    # what is already queued goes out, then the close
	}
	else
	{
		$c->{out} .= $bytes;
		$c->{closing} = 1 if $after eq 'close';
	}
	$c->{stop_reading} = 1 if $after ne '';
}

# ---- HTTP parsing --------------------------------------------------------

sub process_input
{
	my ($c) = @_;
	while (!$c->{stop_reading})
	{
		if (!$c->{req})
		{
			my $end;
			if ($c->{in} =~ /\r?\n\r?\n/)
			{
				$end = $+[0];
			}
			else
			{
				fatal_answer($c, 431, 'request head over 64 KiB') if length $c->{in} > $MAX_HEAD;
				return;
			}
			my $head = substr($c->{in}, 0, $end, '');
			$head =~ s/^(\r?\n)+//;    # stray CRLFs between requests
			my $req = parse_head($c, $head) or return;
			$c->{req} = $req;
			if ($req->{expect_continue} && length $c->{in} == 0 && $req->{body_expected})
			{
				$c->{out} .= "HTTP/1.1 100 Continue\r\n\r\n";
			}
		}
		my $req = $c->{req};
		if ($req->{chunked})
		{
			my $done = read_chunks($c, $req);
			return unless $done;    # incomplete, or an error was answered
		}
		else
		{
			return if length $c->{in} < $req->{length};
			$req->{body} = substr($c->{in}, 0, $req->{length}, '');
		}
		$c->{req} = undef;
		handle_request($c, $req);
	}
}

sub parse_head
{
	my ($c, $head) = @_;
	my ($line, @lines) = split /\r?\n/, $head;
	$line //= '';
	my ($method, $target, $minor) = $line =~ m{^([A-Z]+) (\S+) HTTP/1\.(\d)$};
	if (!defined $method)
	{
		fatal_answer($c, 400, "bad request line: $line");
		return undef;
	}
	my %h;
	for (@lines)
	{
		next if $_ eq '';
		my ($name, $value) = /^([!#\$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/;
		if (!defined $name)
		{
			fatal_answer($c, 400, "bad header line: $_");
			return undef;
		}
		$name = lc $name;
		$h{$name} = exists $h{$name} ? "$h{$name}, $value" : $value;
	}
	my $conn = lc($h{connection} // '');
	my $keep = $minor >= 1 ? $conn !~ /\bclose\b/ : $conn =~ /\bkeep-alive\b/;
	my $req = { method => $method, target => $target, minor => $minor, headers => \%h,
		keep_alive => $keep, expect_continue => lc($h{expect} // '') eq '100-continue' };
	if (defined $h{'transfer-encoding'})
	{
		if (lc $h{'transfer-encoding'} ne 'chunked')
		{
			fatal_answer($c, 400, "unsupported Transfer-Encoding: $h{'transfer-encoding'}");
			return undef;
		}
		$req->{chunked} = 1;
		$req->{body} = '';
		$req->{chunk_left} = 0;
		$req->{chunk_state} = 'size';
		$req->{body_expected} = 1;
	}
	else
	{
		my $cl = $h{'content-length'} // '0';
		if ($cl !~ /^\d{1,15}$/)
		{
			fatal_answer($c, 400, "bad Content-Length: $cl");
			return undef;
		}
		if ($cl > $opt{'max-body'})
		{
			fatal_answer($c, 413, "body of $cl bytes over the limit of $opt{'max-body'}");
			return undef;
		}
		$req->{length} = $cl + 0;
		$req->{body_expected} = $cl > 0;
	}
	return $req;
}

# Decode as much of a chunked body as has arrived; 1 once it is complete.
sub read_chunks
{
	my ($c, $req) = @_;
	while (1)
	{
		if ($req->{chunk_state} eq 'data')
		{
			return 0 if $c->{in} eq '';
			my $n = $req->{chunk_left} < length $c->{in} ? $req->{chunk_left} : length $c->{in};
			$req->{body} .= substr($c->{in}, 0, $n, '');
			$req->{chunk_left} -= $n;
			$req->{chunk_state} = 'crlf' if $req->{chunk_left} == 0;
			next;
		}
		if ($req->{chunk_state} eq 'crlf')
		{
			return 0 if length $c->{in} < 2;
			if (substr($c->{in}, 0, 2, '') ne "\r\n")
			{
				fatal_answer($c, 400, 'chunk not followed by CRLF');
				return 0;
			}
			$req->{chunk_state} = 'size';
			next;
		}
		my $eol = index($c->{in}, "\r\n");
		if ($eol < 0)
		{
			fatal_answer($c, 400, 'chunk line too long') if length $c->{in} > 4096;
			return 0;
		}
		my $line = substr($c->{in}, 0, $eol + 2, '');
		$line =~ s/\r\n$//;
		if ($req->{chunk_state} eq 'trailer')
		{
			return 1 if $line eq '';
			next;    # trailer fields are ignored
		}
		my ($hex) = $line =~ /^([0-9A-Fa-f]{1,8})[ \t]*(?:;.*)?$/;
		if (!defined $hex)
		{
			fatal_answer($c, 400, "bad chunk size line: $line");
			return 0;
		}
		my $size = hex $hex;
		if ($size == 0)
		{
			$req->{chunk_state} = 'trailer';
			next;
		}
		if (length($req->{body}) + $size > $opt{'max-body'})
		{
			fatal_answer($c, 413, "chunked body over the limit of $opt{'max-body'} bytes");
			return 0;
		}
		$req->{chunk_left} = $size;
		$req->{chunk_state} = 'data';
	}
}

# An error in the framing: answer and close (the rest of the stream is unusable).
sub fatal_answer
{
	my ($c, $status, $msg) = @_;
	$c->{req} = undef;
	$c->{in} = '';
	queue_answer($c, response($status, { error => $msg }, { close => 1 }), 'close');
	count_answer($status);
}

sub response
{
	my ($status, $body, $o) = @_;
	$o ||= {};
	my $bytes = '';
	if (defined $o->{raw})
	{
		$bytes = $o->{raw};
		utf8::encode($bytes) if utf8::is_utf8($bytes);
	}
	elsif (defined $body)
	{
		$bytes = $JSON->encode($body);
	}
	$bytes = '' if $status == 204 || $status == 304;
	my $head = "HTTP/1.1 $status " . ($REASON{$status} // 'Status') . "\r\n";
	my %h = ('Content-Type' => 'application/json', %{ $o->{headers} || {} });
	$head .= "$_: $h{$_}\r\n" for sort keys %h;
	$head .= 'Content-Length: ' . length($bytes) . "\r\n" unless $status == 204 || $status == 304;
	$head .= 'Connection: ' . ($o->{close} ? 'close' : 'keep-alive') . "\r\n\r\n";
	return $o->{head_only} ? $head : $head . $bytes;
}

sub count_answer
{
	my ($status) = @_;
	$stats{answered}{$status}++;
}

# ---- requests ------------------------------------------------------------

sub handle_request
{
	my ($c, $req) = @_;
	my ($path) = $req->{target} =~ m{^([^?#]*)};
	my $close = !$req->{keep_alive};
	if ($path =~ m{^/_ws(?:/|$)})
	{
		my ($status, $body) = control($req, $path);
		queue_answer($c, response($status, $body, { close => $close }), $close ? 'close' : '');
		return;
	}
	$stats{requests}++;
	my $entry = { seq => ++$seq, time_ms => int(time * 1000), conn => $c->{id},
		method => $req->{method}, path => $req->{target}, headers => $req->{headers},
		body => undef, body_bytes => length $req->{body} };
	push @log, $entry;
	shift @log while @log > $MAX_LOG;

	my ($status, $body, %o);
	my $delay = 0;
	my $after = $close ? 'close' : '';
	if ($req->{method} eq 'POST')
	{
		my $a = batch($req, $entry);
		($status, $body) = @{$a}{qw(status body)};
		$o{raw} = $a->{raw} if defined $a->{raw};
		$o{headers} = $a->{headers} if $a->{headers};
		$delay = $config->{delay_ms} / 1000;
		$after = 'drop' if $a->{drop};
	}
	elsif (($req->{method} eq 'GET' || $req->{method} eq 'HEAD') && $path eq '/')
	{
		my $r = $config->{root};
		($status, $body) = ($r->{status}, $r->{body});
		$o{headers} = $r->{headers};
		$o{head_only} = $req->{method} eq 'HEAD';
	}
	else
	{
		($status, $body) = (404, { error => "no handler for $req->{method} $path" });
	}
	$entry->{status} = $after eq 'drop' ? undef : $status;
	$entry->{error} = $body->{error} if $status >= 300 && ref $body eq 'HASH' && defined $body->{error};
	count_answer($after eq 'drop' ? 'dropped' : $status);
	if ($log_fh)
	{
		my $line = sprintf("%d conn=%d %s %s status=%s bytes=%d docs=%s\n", $entry->{time_ms},
			$c->{id}, $req->{method}, $req->{target}, $entry->{status} // 'dropped',
			$entry->{body_bytes},
			ref $entry->{body} eq 'HASH' && ref $entry->{body}{docs} eq 'ARRAY' ? scalar @{ $entry->{body}{docs} } : '-');
		syswrite($log_fh, $line);
	}
	$o{close} = $close;
	queue_answer($c, $after eq 'drop' ? '' : response($status, $body, \%o), $after, $delay);
}

sub next_injected_status
{
	while (@statuses_left)
	{
		my $e = $statuses_left[0];
		return $e if $e->{always};
		if ($e->{first} > 0)
		{
			$e->{first}--;
			return $e;
		}
		shift @statuses_left;
	}
	return undef;
}

sub batch
{
	my ($req, $entry) = @_;
	$stats{batches}++;

	# Inflate and parse first, so the log has the body whatever the answer.
	my $raw = $req->{body};
	my $enc = lc($req->{headers}{'content-encoding'} // 'identity');
	my ($doc, $err, $err_status);
	if ($enc eq 'gzip' || $enc eq 'x-gzip')
	{
		my $out;
		if (gunzip(\$raw => \$out, MultiStream => 1, Strict => 1, Transparent => 0))
		{
			$raw = $out;
			$entry->{inflated_bytes} = length $raw;
		}
		else
		{
			($err_status, $err) = (400, "body is not valid gzip: $GunzipError");
		}
	}
	elsif ($enc eq 'deflate')
	{
		my $out;
		if (inflate(\$raw => \$out, Transparent => 0))
		{
			$raw = $out;
			$entry->{inflated_bytes} = length $raw;
		}
		else
		{
			($err_status, $err) = (400, "body is not valid deflate (zlib) data: $InflateError");
		}
	}
	elsif ($enc ne 'identity')
	{
		($err_status, $err) = (415, "unsupported Content-Encoding: $enc");
	}
	if (!$err)
	{
		$doc = eval { $JSON->decode($raw) };
		if ($@)
		{
			(my $m = $@) =~ s/ at \S+ line \d+\.?\n?$//;
			($err_status, $err) = (400, length $raw ? "body is not JSON: $m" : 'empty body');
			$doc = undef;
		}
		else
		{
			$entry->{body} = $doc;
		}
	}

	if (my $inj = next_injected_status())
	{
		return { drop => 1 } if $inj->{drop};
		my $a = { status => $inj->{status} };
		if (exists $inj->{raw_body}) { $a->{raw} = $inj->{raw_body} }
		elsif (exists $inj->{body}) { $a->{body} = $inj->{body} }
		else { $a->{body} = { error => "injected status $inj->{status}" } }
		$a->{headers} = { 'Retry-After' => $inj->{retry_after} } if defined $inj->{retry_after};
		return $a;
	}

	my $ct = $req->{headers}{'content-type'} // '';
	if ($ct !~ m{^application/json\s*(?:;.*)?$}i)
	{
		return { status => 415, body => { error => "Content-Type must be application/json, not '$ct'" } };
	}
	return { status => $err_status, body => { error => $err } } if $err;
	my $bad = validate_batch($doc);
	return { status => 400, body => { error => "malformed batch: $bad" } } if $bad;

	my @failed;
	for my $d (@{ $doc->{docs} })
	{
		my $id = $d->{id};
		$stats{docs}++;
		if (my $f = $config->{fail_ids}{$id})
		{
			my $n = ++$fail_seen{$id};
			if (!$f->{retryable} || $n <= $f->{times})
			{
				push @failed, { id => $id, retryable => $f->{retryable} ? JSON::PP::true : JSON::PP::false,
					reason => $f->{reason} };
				$stats{failed}++;
				next;
			}
		}
		$stats{accepted}++;
		$stats{indexes}{$_}++ for @{ $doc->{indexes} };
		for my $store (\%docs, map { $index_docs{$_} //= {} } @{ $doc->{indexes} })
		{
			if (exists $d->{doc}) { $store->{$id} = $d->{doc} }
			elsif (exists $d->{delete}) { delete $store->{$id} }
			else { $store->{$id} = { id_only => JSON::PP::true } }
		}
		$stats{ exists $d->{doc} ? 'written' : exists $d->{delete} ? 'deleted' : 'id_only' }++;
	}
	my $status = $config->{ok_status};
	if (!@failed && $config->{ok_body} eq 'empty')
	{
		return { status => $status, raw => '' };
	}
	if (!@failed && $config->{ok_body} eq '{}')
	{
		return { status => $status, body => {} };
	}
	return { status => $status, body => { failed => \@failed } };
}

# ---- shape checks --------------------------------------------------------

sub flags { return B::svref_2object(\$_[0])->FLAGS }

sub is_string
{
	my ($v) = @_;
	return 0 if !defined $v || ref $v;
	my $f = flags($v);
	return ($f & B::SVf_POK) && !($f & (B::SVf_IOK | B::SVf_NOK));
}

sub is_integer
{
	my ($v) = @_;
	return 0 if !defined $v || ref $v;
	my $f = flags($v);
	return ($f & B::SVf_IOK) && !($f & (B::SVf_POK | B::SVf_NOK));
}

sub is_true { return JSON::PP::is_bool($_[0]) && $_[0] }

sub is_bool { return JSON::PP::is_bool($_[0]) }

sub describe
{
	my ($v) = @_;
	return 'null' unless defined $v;
	return 'a boolean' if JSON::PP::is_bool($v);
	return 'an object' if ref $v eq 'HASH';
	return 'an array' if ref $v eq 'ARRAY';
	return 'a string' if is_string($v);
	return 'a number';
}

sub validate_batch
{
	my ($b) = @_;
	return 'the body must be a JSON object, not ' . describe($b) unless ref $b eq 'HASH';
	my %want = (task => 'string', run => 'integer', part => 'integer', index => 'string',
		indexes => 'array', tag => 'string or null', op => 'string', docs => 'array');
	for my $k (sort keys %$b)
	{
		return "unknown key '$k'" unless $want{$k};
	}
	for my $k (qw(task run part index indexes tag op docs))
	{
		return "'$k' is missing" unless exists $b->{$k};
		my $v = $b->{$k};
		my $ok = $want{$k} eq 'string' ? is_string($v)
		  : $want{$k} eq 'integer' ? is_integer($v) && $v >= 0
		  : $want{$k} eq 'string or null' ? !defined $v || is_string($v)
		  : ref $v eq 'ARRAY';
		my $what = $want{$k} eq 'integer' ? 'an integer >= 0' : $want{$k} eq 'array' ? 'an array'
		  : "a $want{$k}";
		return "'$k' must be $what, not " . describe($v) unless $ok;
	}
	my @ix = @{ $b->{indexes} };
	return "'indexes' must hold 1 or 2 names, not " . scalar(@ix) unless @ix == 1 || @ix == 2;
	for my $n (@ix)
	{
		return "'indexes' must hold non-empty strings, not " . describe($n) unless is_string($n) && $n ne '';
	}
	return "'indexes' must begin with the index '$b->{index}', not '$ix[0]'" unless $ix[0] eq $b->{index};
	return "'indexes' names '$ix[0]' twice" if @ix == 2 && $ix[1] eq $ix[0];
	my $i = 0;
	for my $d (@{ $b->{docs} })
	{
		my $at = "docs[$i]";
		$i++;
		return "$at must be an object, not " . describe($d) unless ref $d eq 'HASH';
		for my $k (sort keys %$d)
		{
			return "$at has an unknown key '$k'" unless $k eq 'id' || $k eq 'doc' || $k eq 'delete';
		}
		return "$at.id is missing" unless exists $d->{id};
		return "$at.id must be a string, not " . describe($d->{id}) unless is_string($d->{id});
		return "$at.id is empty" if $d->{id} eq '';
		return "$at has both doc and delete" if exists $d->{doc} && exists $d->{delete};
		return "$at.doc must be an object, not " . describe($d->{doc})
		  if exists $d->{doc} && ref $d->{doc} ne 'HASH';
		return "$at.delete must be true, not " . (is_bool($d->{delete}) ? 'false' : describe($d->{delete}))
		  if exists $d->{delete} && !is_true($d->{delete});
	}
	return undef;
}

# ---- control -------------------------------------------------------------

sub control
{
	my ($req, $path) = @_;
	my $m = $req->{method};
	my ($query) = $req->{target} =~ /\?(.*)$/;
	$path =~ s{/+$}{};
	if ($path eq '/_ws/config' && $m eq 'PUT')
	{
		my $in = eval { $JSON->decode(length $req->{body} ? $req->{body} : '{}') };
		return (400, { error => 'config body is not JSON: ' . ($@ =~ s/ at \S+ line \d+\.?\n?$//r) }) if $@;
		my ($c, $err) = check_config($in);
		return (400, { error => $err }) if $err;
		apply_config($c);
		return (200, { acknowledged => JSON::PP::true, config => $c });
	}
	if ($path eq '/_ws/config' && $m eq 'GET')
	{
		return (200, { config => $config, fail_seen => {%fail_seen}, statuses_left => \@statuses_left });
	}
	if ($path eq '/_ws/requests' && $m eq 'GET')
	{
		my ($n) = ($query // '') =~ /(?:^|&)n=(\d+)/;
		my @r = defined $n ? @log[ ($n >= @log ? 0 : @log - $n) .. $#log ] : @log;
		@r = () if defined $n && $n == 0;
		return (200, { requests => \@r });
	}
	if ($path eq '/_ws/docs' && $m eq 'GET')
	{
		my ($index) = ($query // '') =~ /(?:^|&)index=([^&]*)/;
		my $store = defined $index ? $index_docs{ $index =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ger } // {} : \%docs;
		return (200, { count => scalar(keys %$store), docs => $store });
	}
	if ($path eq '/_ws/stats' && $m eq 'GET')
	{
		return (200, { %stats, open_connections => scalar(keys %conns) });
	}
	if ($path eq '/_ws/reset' && $m eq 'POST')
	{
		reset_state();
		return (200, { acknowledged => JSON::PP::true });
	}
	return (404, { error => "no control endpoint $m $path" });
}

# Validate a config; returns (config with defaults, undef) or (undef, error).
sub check_config
{
	my ($in) = @_;
	return (undef, 'config must be a JSON object') unless ref $in eq 'HASH';
	my $c = default_config();
	for my $k (sort keys %$in)
	{
		return (undef, "unknown config key '$k'")
		  unless grep { $_ eq $k } qw(fail_ids statuses root delay_ms ok_status ok_body);
	}
	if (exists $in->{fail_ids})
	{
		my $f = $in->{fail_ids};
		return (undef, 'fail_ids must be an object of id => {retryable, times, reason}') unless ref $f eq 'HASH';
		for my $id (sort keys %$f)
		{
			my $e = $f->{$id};
			my $at = "fail_ids.$id";
			return (undef, "$at must be an object") unless ref $e eq 'HASH';
			for my $k (sort keys %$e)
			{
				return (undef, "$at has an unknown key '$k'") unless grep { $_ eq $k } qw(retryable times reason);
			}
			return (undef, "$at.retryable must be true or false")
			  if exists $e->{retryable} && !is_bool($e->{retryable});
			return (undef, "$at.times must be an integer >= 1")
			  if exists $e->{times} && !(is_integer($e->{times}) && $e->{times} >= 1);
			return (undef, "$at.times applies to a retryable id only")
			  if exists $e->{times} && !$e->{retryable};
			return (undef, "$at.reason must be a string")
			  if exists $e->{reason} && !is_string($e->{reason});
			$c->{fail_ids}{$id} = {
				retryable => $e->{retryable} ? JSON::PP::true : JSON::PP::false,
				times => $e->{times} // 1,
				reason => $e->{reason} // 'injected failure',
			};
		}
	}
	if (exists $in->{statuses})
	{
		my $s = $in->{statuses};
		return (undef, 'statuses must be an array') unless ref $s eq 'ARRAY';
		my $i = 0;
		for my $e (@$s)
		{
			my $at = "statuses[$i]";
			$i++;
			return (undef, "$at must be an object") unless ref $e eq 'HASH';
			for my $k (sort keys %$e)
			{
				return (undef, "$at has an unknown key '$k'")
				  unless grep { $_ eq $k } qw(status first always body raw_body retry_after drop);
			}
			return (undef, "$at.drop must be true") if exists $e->{drop} && !is_true($e->{drop});
			return (undef, "$at.status must be an integer in 200..599")
			  unless (exists $e->{status} && is_integer($e->{status}) && $e->{status} >= 200 && $e->{status} <= 599)
			  || (!exists $e->{status} && $e->{drop});
			return (undef, "$at.always must be true") if exists $e->{always} && !is_true($e->{always});
			return (undef, "$at needs exactly one of first (an integer >= 1) or always (true)")
			  unless exists $e->{first} xor exists $e->{always};
			return (undef, "$at.first must be an integer >= 1")
			  if exists $e->{first} && !(is_integer($e->{first}) && $e->{first} >= 1);
			return (undef, "$at has both body and raw_body") if exists $e->{body} && exists $e->{raw_body};
			return (undef, "$at.raw_body must be a string") if exists $e->{raw_body} && !is_string($e->{raw_body});
			return (undef, "$at.retry_after must be an integer >= 0")
			  if exists $e->{retry_after} && !(is_integer($e->{retry_after}) && $e->{retry_after} >= 0);
			my %copy = %$e;
			$copy{status} //= 0;
			push @{ $c->{statuses} }, \%copy;
		}
	}
	if (exists $in->{root})
	{
		my $r = $in->{root};
		return (undef, 'root must be an object {status, body, headers}') unless ref $r eq 'HASH';
		for my $k (sort keys %$r)
		{
			return (undef, "root has an unknown key '$k'") unless grep { $_ eq $k } qw(status body headers);
		}
		return (undef, 'root.status must be an integer in 200..599')
		  if exists $r->{status} && !(is_integer($r->{status}) && $r->{status} >= 200 && $r->{status} <= 599);
		my $h = $r->{headers} // {};
		return (undef, 'root.headers must be an object of strings')
		  if ref $h ne 'HASH' || grep { !is_string($_) || /[\r\n]/ } values %$h;
		return (undef, 'root.headers names must be tokens') if grep { !/^[A-Za-z0-9-]+$/ } keys %$h;
		$c->{root} = { status => $r->{status} // 200, body => $r->{body}, headers => $h };
	}
	if (exists $in->{delay_ms})
	{
		my $d = $in->{delay_ms};
		return (undef, 'delay_ms must be an integer in 0..600000')
		  unless is_integer($d) && $d >= 0 && $d <= 600000;
		$c->{delay_ms} = $d;
	}
	if (exists $in->{ok_status})
	{
		my $s = $in->{ok_status};
		return (undef, 'ok_status must be an integer in 200..299') unless is_integer($s) && $s >= 200 && $s <= 299;
		$c->{ok_status} = $s;
	}
	if (exists $in->{ok_body})
	{
		my $b = $in->{ok_body};
		return (undef, "ok_body must be \"failed\", \"empty\" or \"{}\"")
		  unless is_string($b) && grep { $_ eq $b } ('failed', 'empty', '{}');
		$c->{ok_body} = $b;
	}
	return ($c, undef);
}
