# Helpers for TAP tests that need the throwaway MariaDB started by
# test/scripts/mariadb.sh (connection info comes from the ECP_MYSQL_* env).
#
#   use EcpMysql;
#   my $my = EcpMysql->require_env;              # or a failed test and exit
#   $my->query("SELECT 1");                     # stdout, tab separated rows
#   my @rows = $my->rows("SELECT id, x FROM t"); # ([id, x], ...), NULL -> undef
#   $my->setup_fdw($node, 'postgres', 'my_server');   # character_set utf8mb4

package EcpMysql;

use strict;
use warnings FATAL => 'all';

use Carp;
use IPC::Run;

our @ENV_VARS = qw(ECP_MYSQL_HOST ECP_MYSQL_PORT ECP_MYSQL_SOCKET
  ECP_MYSQL_USER ECP_MYSQL_PASSWORD ECP_MYSQL_DB);

# Returns undef when ECP_MYSQL_PORT is unset (the server was not started).
sub from_env
{
	my ($class) = @_;
	return undef unless defined $ENV{ECP_MYSQL_PORT} && $ENV{ECP_MYSQL_PORT} ne '';
	my $self = {
		host     => $ENV{ECP_MYSQL_HOST}     // '127.0.0.1',
		port     => $ENV{ECP_MYSQL_PORT},
		socket   => $ENV{ECP_MYSQL_SOCKET},
		user     => $ENV{ECP_MYSQL_USER}     // 'ecp',
		password => $ENV{ECP_MYSQL_PASSWORD} // 'ecp',
		db       => $ENV{ECP_MYSQL_DB}       // 'ecp_test',
		client   => $ENV{MARIADB_CLIENT}     // 'mariadb',
	};
	return bless $self, $class;
}

# from_env, or else a failed test and exit: a test that needs MariaDB must
# not pass (or be skipped) silently when it was not started.
sub require_env
{
	my ($class) = @_;
	my $self = $class->from_env;
	return $self if $self;
	require Test::More;
	Test::More::fail('MariaDB connection info in the environment (ECP_MYSQL_PORT)');
	Test::More::diag(missing_env_message());
	Test::More::done_testing();
	exit 1;
}

sub missing_env_message
{
	return "ECP_MYSQL_PORT is not set: start MariaDB first, e.g.\n"
	  . "  test/scripts/mariadb.sh start DIR && . DIR/env\n"
	  . "(make test does this); this test must not be skipped";
}

sub host     { $_[0]{host} }
sub port     { $_[0]{port} }
sub user     { $_[0]{user} }
sub password { $_[0]{password} }
sub db       { $_[0]{db} }

# Client command line: through the socket if there is one, else TCP.
sub _cmd
{
	my ($self, %opt) = @_;
	my @cmd = ($self->{client}, '--no-defaults', '--batch',
		'--skip-column-names', '--default-character-set=utf8mb4',
		'--user=' . $self->{user});
	if ($self->{socket} && -S $self->{socket})
	{
		push @cmd, '--protocol=socket', '--socket=' . $self->{socket};
	}
	else
	{
		push @cmd, '--protocol=tcp', '--host=' . $self->{host},
		  '--port=' . $self->{port};
	}
	push @cmd, '--database=' . ($opt{db} // $self->{db});
	return @cmd;
}

# Run SQL (one or more statements); returns stdout with the trailing newline
# removed; croaks with the client's stderr on failure.
sub query
{
	my ($self, $sql, %opt) = @_;
	my ($out, $err) = ('', '');
	local $ENV{MYSQL_PWD} = $self->{password};
	my $ok = IPC::Run::run([ $self->_cmd(%opt) ], '<', \$sql, '>', \$out,
		'2>', \$err);
	croak "mariadb client failed: $err\nSQL: $sql" unless $ok;
	chomp $out;
	return $out;
}

# Rows of a query as array refs; the client prints SQL NULL as "NULL".
sub rows
{
	my ($self, $sql, %opt) = @_;
	my $out = $self->query($sql, %opt);
	return () if $out eq '';
	return map {
		[ map { $_ eq 'NULL' ? undef : $_ } split /\t/, $_, -1 ]
	} split /\n/, $out;
}

# Create mysql_fdw, a server pointing at this MariaDB over TCP and a user
# mapping for the current PostgreSQL user, in database $dbname of $node.
#
# The server gets character_set 'utf8mb4' unless %opt says otherwise
# (character_set => undef leaves mysql_fdw's default).  mysql_fdw's default,
# 'auto', takes the charset from the backend's LC_CTYPE: in a database with
# LC_CTYPE C that is latin1, and non-ASCII text then arrives as latin1 bytes
# inside UTF8 text datums, silently (020_mysql_fdw.pl shows it).
sub setup_fdw
{
	my ($self, $node, $dbname, $server, %opt) = @_;
	$dbname //= 'postgres';
	$server //= 'ecp_mysql';
	my $charset =
	  exists $opt{character_set} ? $opt{character_set} : 'utf8mb4';
	my ($host, $port, $user, $pw) =
	  map { _lit($_) } @$self{qw(host port user password)};
	my $extra = defined $charset ? ', character_set ' . _lit($charset) : '';
	$node->safe_psql($dbname, qq{
		CREATE EXTENSION IF NOT EXISTS mysql_fdw;
		CREATE SERVER $server FOREIGN DATA WRAPPER mysql_fdw
		  OPTIONS (host $host, port $port$extra);
		CREATE USER MAPPING FOR CURRENT_USER SERVER $server
		  OPTIONS (username $user, password $pw);
	});
	return $server;
}

# SQL string literal
sub _lit
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

1;
