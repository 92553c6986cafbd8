# EcpTest: shared helpers for ecp's TAP tests.
#
#   my $node = EcpTest::new_node('name');        # ecp preloaded, started, extension created
#   EcpTest::new_node('name', allowed_hosts => undef);   # no ecp.allowed_hosts line
#   EcpTest::wait_for_run($node, $run_id, 'succeeded', 180);
#   EcpTest::run_state($node, $run_id);
package EcpTest;
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);

# The stand-in listens on 127.0.0.1, which ecp.block_private_networks
# refuses to ordinary roles: the tests' roles may reach it unless a test
# says otherwise (allowed_hosts => '...', or undef for no line; a line in
# conf comes later and wins).
sub new_node
{
	my ($name, %opts) = @_;
	my $allowed = exists $opts{allowed_hosts} ? $opts{allowed_hosts} : '127.0.0.1';
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', join("\n",
		"shared_preload_libraries = 'ecp'",
		"max_worker_processes = 16",
		# PostgreSQL's default: WARNING, ERROR, LOG, FATAL and PANIC reach
		# the log ('log' would hide WARNINGs and ERRORs, which log checks
		# look for)
		"log_min_messages = warning",
		(defined $allowed ? ("ecp.allowed_hosts = '$allowed'") : ()),
		@{ $opts{conf} // [] }) . "\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION ecp');
	return $node;
}

sub run_state
{
	my ($node, $run) = @_;
	return $node->safe_psql('postgres', "SELECT state FROM ecp.run WHERE id = $run");
}

# Poll until the run reaches $want (or a final state); returns the state.
sub wait_for_run
{
	my ($node, $run, $want, $timeout) = @_;
	$timeout //= 180;
	my $deadline = time + $timeout;
	my $state = '';
	while (time < $deadline)
	{
		$state = run_state($node, $run);
		return $state if $state eq $want;
		return $state if $state =~ /^(succeeded|failed|cancelled)$/;
		sleep 0.1;
	}
	diag("run $run still $state after ${timeout}s: "
		  . $node->safe_psql('postgres', "SELECT row_to_json(p) FROM ecp.progress p WHERE run_id = $run"));
	return $state;
}

# Poll a SQL condition (returns 't') with a timeout; true when it held.
sub poll
{
	my ($node, $sql, $timeout) = @_;
	my $deadline = time + ($timeout // 60);
	while (time < $deadline)
	{
		return 1 if $node->safe_psql('postgres', $sql) eq 't';
		sleep 0.05;
	}
	return 0;
}

sub worker_count
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'ecp worker'");
}

# A webhook that never answers: a child that accepts connections on
# 127.0.0.1, keeps them open, never answers, and counts them (for at most
# $seconds, 150 by default).  Returns its URL (path /alerts), a sub that
# tells how many connections it accepted so far, and its pid (kill it
# with TERM and waitpid when done).
sub silent_listener
{
	my ($seconds) = @_;
	my $silent = IO::Socket::INET->new(Listen => 128, LocalAddr => '127.0.0.1', LocalPort => 0,
		Proto => 'tcp', ReuseAddr => 1)
	  or die "listen: $!";
	my $url = 'http://127.0.0.1:' . $silent->sockport . '/alerts';
	my $accepted = PostgreSQL::Test::Utils::tempdir() . '/accepted';
	my $child = fork();
	die "fork: $!" unless defined $child;
	if ($child == 0)
	{
		alarm($seconds // 150);
		my @open;
		while (my $c = $silent->accept)
		{
			push @open, $c;
			open(my $fh, '>>', $accepted) or POSIX::_exit(1);
			print $fh "x\n";
			close $fh;
		}
		POSIX::_exit(0);
	}
	close $silent;
	my $connections = sub {
		open(my $fh, '<', $accepted) or return 0;
		my @lines = <$fh>;
		return scalar @lines;
	};
	return ($url, $connections, $child);
}

1;
