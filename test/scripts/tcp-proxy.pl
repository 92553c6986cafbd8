#!/usr/bin/perl
# tcp-proxy.pl: a second "node" of a cluster for the tests: it forwards
# every connection to one stand-in, so two URLs (the proxy's and the
# stand-in's own) reach the same index, as two nodes of one Elasticsearch
# cluster do.  Killing the proxy's process group kills that node: its
# connections are cut and new ones are refused.  Perl 5 core modules only.
#
#   perl test/scripts/tcp-proxy.pl --to HOST:PORT --port-file FILE [--max-seconds N]
#
# Binds 127.0.0.1 on an ephemeral port and writes the port to --port-file
# (atomically) once it listens.  One process per connection (forked), in
# the proxy's process group; each copies bytes both ways until either
# side closes.  The proxy exits by itself after --max-seconds (default
# 600), taking its connections with it.
use strict;
use warnings;
use Getopt::Long;
use IO::Select;
use IO::Socket::INET;
use POSIX ();

my ($to, $port_file, $max_seconds) = (undef, undef, 600);
GetOptions('to=s' => \$to, 'port-file=s' => \$port_file, 'max-seconds=i' => \$max_seconds)
  or die "usage: $0 --to HOST:PORT --port-file FILE [--max-seconds N]\n";
die "--to and --port-file are required\n" unless $to && $port_file;

POSIX::setpgid(0, 0);
$SIG{CHLD} = 'IGNORE';
$SIG{ALRM} = sub { kill 'KILL', -$$; POSIX::_exit(0) };
alarm($max_seconds);

my $listen = IO::Socket::INET->new(Listen => 128, LocalAddr => '127.0.0.1', LocalPort => 0,
	Proto => 'tcp', ReuseAddr => 1) or die "listen: $!";
{
	open(my $fh, '>', "$port_file.tmp") or die "$port_file.tmp: $!";
	print $fh $listen->sockport, "\n";
	close $fh;
	rename("$port_file.tmp", $port_file) or die "rename: $!";
}

while (1)
{
	my $client = $listen->accept or next;
	my $pid = fork();
	next unless defined $pid;
	if ($pid == 0)
	{
		close $listen;
		relay($client);
		POSIX::_exit(0);
	}
	close $client;
}

sub relay
{
	my ($client) = @_;
	my $server = IO::Socket::INET->new(PeerAddr => $to, Proto => 'tcp') or return;
	my $select = IO::Select->new($client, $server);
	while (1)
	{
		for my $from ($select->can_read)
		{
			my $n = sysread($from, my $buf, 65536);
			return unless $n;
			my $other = $from == $client ? $server : $client;
			my $off = 0;
			while ($off < $n)
			{
				my $w = syswrite($other, $buf, $n - $off, $off);
				return unless defined $w;
				$off += $w;
			}
		}
	}
}
