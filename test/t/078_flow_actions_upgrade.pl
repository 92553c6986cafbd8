# ecp.flow_log's CHECK on its action (0.6) meets rows of older installs.
# Every action any ecp wrote is on the list, so an install with only ecp's
# rows gets a validated constraint; but up to 0.1 a role could write a flow
# row of its own with any action.  The upgrade keeps such rows, leaves the
# constraint NOT VALID (new rows are checked all the same) and says so in
# a WARNING, whose hint is how to validate it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use EcpTest;

my $node = EcpTest::new_node('flow_actions');
my ($current) = slurp_file("$FindBin::RealBin/../../ecp.control") =~ /default_version = '([^']+)'/;
my $validated = "SELECT convalidated FROM pg_constraint
                  WHERE conrelid = 'ecp.flow_log'::regclass AND conname = 'flow_log_action_check'";

$node->safe_psql('postgres', 'CREATE DATABASE clean; CREATE DATABASE odd; CREATE ROLE alice LOGIN');

# An install of 0.1 with ecp's own rows only: validated.
$node->safe_psql('clean', "CREATE EXTENSION ecp VERSION '0.1'");
$node->safe_psql('clean', "SELECT ecp.create_consumer('es', 'http://127.0.0.1:9')");
$node->safe_psql('clean', "ALTER EXTENSION ecp UPDATE TO '$current'");
is($node->safe_psql('clean', $validated), 't', 'an install with only ecp\'s flow rows gets a validated CHECK');

# alice writes a flow row of her own, as 0.1 let any role do.
$node->safe_psql('odd', "CREATE EXTENSION ecp VERSION '0.1'");
$node->safe_psql('odd', "SET ROLE alice; INSERT INTO ecp.flow_log (action, content) VALUES ('my own note', '{\"n\": 1}')");
my ($rc, $out, $err) = $node->psql('odd', "ALTER EXTENSION ecp UPDATE TO '$current'");
is($rc, 0, 'the upgrade succeeds with a row whose action ecp never wrote');
like($err, qr/WARNING:.*ecp\.flow_log holds rows with an action ecp never wrote/,
	'the upgrade warns about the row') or diag($err);
like($err, qr/HINT:.*VALIDATE CONSTRAINT flow_log_action_check/, '... with how to validate the CHECK')
	or diag($err);
is($node->safe_psql('odd', $validated), 'f', 'the CHECK stays NOT VALID');
is($node->safe_psql('odd', "SELECT count(*) FROM ecp.flow_log WHERE action = 'my own note'"), '1',
	'the row is kept');

# New rows are checked all the same.
($rc, undef, $err) = $node->psql('odd', "INSERT INTO ecp.flow_log (action) VALUES ('another note')");
isnt($rc, 0, 'a new row with an unknown action is refused');
like($err, qr/violates check constraint "flow_log_action_check"/, '... by the CHECK') or diag($err);

# The hint's way out: the rows it lists, removed; then the CHECK validates.
is($node->safe_psql('odd',
		'SELECT string_agg(action, \',\') FROM ecp.flow_log WHERE action <> ALL (ecp_internal._flow_actions())'),
	'my own note', "the hint's query lists the row");
$node->safe_psql('odd', "DELETE FROM ecp.flow_log WHERE action <> ALL (ecp_internal._flow_actions());
                         ALTER TABLE ecp.flow_log VALIDATE CONSTRAINT flow_log_action_check");
is($node->safe_psql('odd', $validated), 't', 'without it the CHECK validates');

$node->stop;
done_testing();
