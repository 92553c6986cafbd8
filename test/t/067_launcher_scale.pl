# The launcher's pass is linear in a run's parts, not quadratic (security
# review M2): with one run of 4,096 parts under way, the pass query that the
# launcher itself runs (seen through auto_explain, ANALYZE, JSON) compares
# no part with every other part of its run, handles a bounded multiple of
# the parts in all, and returns at most what can start plus the running
# part, not every part.  The assertions are on the plan's row counts, never
# on its timing (the time is only noted).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('a sink for the run');
my $parts = 4096;
# The launcher reads at most 64 (the largest parallelism) pending parts of
# a run, plus one per slot or start record of the run, plus its running
# parts: a few here.
my $most_rows = 100;
my $node = EcpTest::new_node('scale', conf => [ "shared_preload_libraries = 'ecp, auto_explain'" ]);
my $es = EsdServer->start(discard => 1);
my $url = $es->url;
$node->safe_psql('postgres', 'CREATE ROLE many LOGIN');

sub as_many
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', "SET ROLE many; $sql");
}

# As any role may: a task of 4,096 queries, one part each, one at a time.
# Each query sleeps (bounded), so the first part holds its worker and the
# others stay pending while the test looks at the pass.
as_many("SELECT ecp.create_consumer('many_esd', '$url')");
as_many("SELECT ecp.create_task('many', 'many_esd', 'many',"
	  . " queries => (SELECT array_agg(format('SELECT %s AS id, pg_sleep(120) AS z', g)) FROM generate_series(1, $parts) g),"
	  . " options => '{\"parallelism\": 1}')");
my $run = as_many("SELECT ecp.start('many')");
is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.part WHERE run_id = $run"), $parts,
	"the run has $parts parts");
ok(EcpTest::poll($node, "SELECT count(*) = 1 FROM ecp.part WHERE run_id = $run AND state = 'running'", 60),
	'its first part runs');

# From now on every statement's plan is logged, the launcher's too (it
# rereads the configuration within a second).
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET auto_explain.log_min_duration = 0;
	ALTER SYSTEM SET auto_explain.log_analyze = on;
	ALTER SYSTEM SET auto_explain.log_format = json;
	SELECT pg_reload_conf()});

# The plans of the launcher's pass query logged since $log_offset, each
# with its duration (ms).  auto_explain writes "duration: X ms  plan:" and
# then the JSON document.
sub pass_plans
{
	my $log = slurp_file($node->logfile, $log_offset);
	my $json = JSON::PP->new;
	my @found;
	while ($log =~ /duration: ([\d.]+) ms\s+plan:\s*\n/g)
	{
		my ($ms, $at) = ($1, pos($log));
		my ($plan) = eval { $json->decode_prefix(substr($log, $at)) };
		next unless ref $plan eq 'HASH';
		next unless ($plan->{'Query Text'} // '') =~ /FROM ecp\.run r\b.*not_before/s;
		push @found, { ms => $ms, plan => $plan->{'Plan'} };
	}
	return @found;
}

my @plans;
my $deadline = time + 60;
while (time < $deadline)
{
	@plans = pass_plans();
	last if @plans;
	sleep 0.2;
}
ok(@plans > 0, 'the launcher\'s pass query is in the log with its plan');
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET auto_explain.log_min_duration;
	SELECT pg_reload_conf()});

# Walk the plan: the rows every node produced and discarded, over all its
# loops ("Rows Removed by ..." are per loop, as "Actual Rows" are).
sub plan_work
{
	my ($node_plan, $acc) = @_;
	my $loops = $node_plan->{'Actual Loops'} // 1;
	for my $key ('Actual Rows', 'Rows Removed by Filter', 'Rows Removed by Join Filter',
		'Rows Removed by Index Recheck')
	{
		$acc->{total} += ($node_plan->{$key} // 0) * $loops;
	}
	my $removed = ($node_plan->{'Rows Removed by Join Filter'} // 0) * $loops;
	$acc->{join_filtered} = $removed if $removed > ($acc->{join_filtered} // 0);
	plan_work($_, $acc) for @{ $node_plan->{'Plans'} // [] };
	return $acc;
}

SKIP:
{
	skip 'no plan of the pass query was logged', 4 unless @plans;
	my $pass = $plans[0];
	my $work = plan_work($pass->{plan}, { total => 0, join_filtered => 0 });
	my $rows = $pass->{plan}{'Actual Rows'};
	note(sprintf('pass query over a run of %d parts: %s ms under auto_explain (ANALYZE), %d rows handled, %d returned',
		$parts, $pass->{ms}, $work->{total}, $rows));
	cmp_ok($rows, '>=', 1, 'the pass read the run (its running part at least)');
	cmp_ok($rows, '<=', $most_rows,
		"it read at most what can start, not every part ($rows of $parts rows)");
	cmp_ok($work->{join_filtered}, '<=', 10 * $parts,
		"no join compares the parts with each other ($work->{join_filtered} rows removed by a join filter)");
	cmp_ok($work->{total}, '<=', 20 * $parts,
		"the plan handles a bounded multiple of the parts ($work->{total} rows over all nodes and loops)");
}

as_many("SELECT ecp.cancel($run)");
$es->stop;
$node->stop;
done_testing();
