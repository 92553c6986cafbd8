# Errors that say what to change (issue 24), as psql shows them by default:
#   - an error raised inside ecp's SQL functions has its SQLSTATE, message
#     and hint, and no CONTEXT line of ecp's own functions; the lines of a
#     caller's own code stay (a DO block); ecp.internal_context = on keeps
#     them all;
#   - a consumer port outside 1..65535 is refused at create_consumer;
#   - a host that ecp.allowed_hosts lists for another port: the refusal
#     says the port is what is missing;
#   - a consumer URL whose path is an index name: the run's error says so.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('an index name in the URL');
my $es = EsdServer->start();
my $port = $es->port;
my $node = EcpTest::new_node('errors', allowed_hosts => "127.0.0.1:$port");
$node->safe_psql('postgres', q{
	CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 10) g;
	ALTER TABLE items ADD PRIMARY KEY (id);
	CREATE ROLE carol LOGIN;
	GRANT SELECT ON items TO carol;
});

# psql as it runs by default (VERBOSITY default, SHOW_CONTEXT errors)
sub psql_err
{
	my ($sql, @opts) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, @opts);
	return $err;
}

my $err = psql_err(q{SELECT ecp.start('nope')});
like($err, qr/ERROR:  task "nope" does not exist\nHINT:  Create it with ecp.create_task/, 'an unknown task: message and hint');
unlike($err, qr/CONTEXT/, '... and no CONTEXT line of ecp\'s functions');
$err = psql_err(qq{\\set VERBOSITY verbose\nSELECT ecp.start('nope')});
like($err, qr/ERROR:  42704: task "nope" does not exist/, '... with its SQLSTATE (verbose)');
unlike($err, qr/PL\/pgSQL function ecp(_internal)?\./, '... and no ecp frame even in verbose');

$err = psql_err(q{SELECT ecp.create_consumer('es', 'http://127.0.0.1:9200'); SELECT ecp.create_task('t', 'es', 't', query => 'SELECT * FROM items', options => '{"batch_size": 0}')});
like($err, qr/ERROR:  option "batch_size" of a task must be an integer between 1 and 100000, not 0/, 'a bad option');
unlike($err, qr/CONTEXT/, '... without CONTEXT');

# the caller's own code keeps its line
$err = psql_err(q{DO $$ BEGIN PERFORM ecp.start('nope'); END $$});
like($err, qr/ERROR:  task "nope" does not exist/, 'from a DO block: the message');
like($err, qr/CONTEXT:  .*PL\/pgSQL function inline_code_block line 1 at PERFORM/s, '... with the DO block\'s own CONTEXT line');
unlike($err, qr/PL\/pgSQL function ecp(_internal)?\.|SQL statement "SELECT ecp_internal\./, '... and none of ecp\'s');

$err = psql_err(qq{SET ecp.internal_context = on;\nSELECT ecp.start('nope')});
like($err, qr/CONTEXT:  PL\/pgSQL function ecp(_internal)?\./, 'ecp.internal_context = on keeps ecp\'s frames');

# a bad port, and a port that allowed_hosts does not list
$err = psql_err(qq{\\set VERBOSITY verbose\nSELECT ecp.create_consumer('p', 'http://127.0.0.1:99999')}, extra_params => [ '-U', 'carol' ]);
like($err, qr/ERROR:  22023: .*99999/, 'port 99999 is refused at create_consumer (22023)');
like($err, qr/HINT:  /, '... with a hint');
my $other = $port == 65535 ? $port - 1 : $port + 1;
$err = psql_err(qq{\\set VERBOSITY verbose\nSELECT ecp.create_consumer('q', 'http://127.0.0.1:$other')}, extra_params => [ '-U', 'carol' ]);
like($err, qr/ERROR:  42501: consumer host "127.0.0.1" is not allowed for role "carol": ecp.allowed_hosts lists this host for port $port only, not for port $other/,
	'a port missing from ecp.allowed_hosts: the refusal says so');
unlike($err, qr/CONTEXT/, '... without CONTEXT');

# an index name in the consumer's URL
$es->put('/products');
$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('with_index', 'http://127.0.0.1:$port/products');
	SELECT ecp.create_task('via_index', 'with_index', 'products', query => 'SELECT * FROM items');
});
my $run = $node->safe_psql('postgres', q{SELECT ecp.start('via_index')});
is(EcpTest::wait_for_run($node, $run, 'failed', 60), 'failed', 'a run through a URL with an index name fails');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.run WHERE id = $run"),
	qr/the consumer's URL has the path "\/products": if that is an index name, give the cluster's URL without it/,
	'... saying the path may be an index name');

$es->stop;
$node->stop;
done_testing();
