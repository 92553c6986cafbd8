# One contract for task and consumer options (src/lib/option_contract.c): the
# SQL checks, the worker and the launcher read the same bounds.  pg_regress
# (ecp_contract) tries every option against the SQL checks; here the
# worker and the launcher meet the same bounds, taken from
# ecp_internal._option_contract() and not written down again:
#   - a task and consumer created through SQL with every numeric option at
#     its max run, and the launcher has nothing to say about them;
#   - rows stored past the checks (as a superuser with the triggers off)
#     with an integer option one past either bound fail their run, naming
#     the contract's bounds, and the launcher, for the options it reads,
#     warns with the same bounds and carries on.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

my $node = EcpTest::new_node('contract');
my $es = EsdServer->start();
my $url = $es->url;
$node->safe_psql('postgres', "CREATE TABLE items AS SELECT g AS id, 'i' || g AS label FROM generate_series(1, 20) g");

# A file source's option: a query task never reads it.
my %file_only = (max_line_bytes => 1);

my @numeric;
for my $line (split /\n/, $node->safe_psql('postgres',
		"SELECT kind, name, type, min, max, launcher FROM ecp_internal._option_contract()"
		  . " WHERE type IN ('integer', 'number') ORDER BY kind, name"))
{
	my ($kind, $name, $type, $min, $max, $launcher) = split /\|/, $line;
	next if $file_only{$name};
	push @numeric, { kind => $kind, name => $name, type => $type, min => $min, max => $max,
		launcher => $launcher eq 't' };
}
ok(scalar(grep { $_->{launcher} } @numeric) >= 6, 'the launcher reads at least 6 numeric options');

sub run_and_wait
{
	my ($name) = @_;
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	my $state = EcpTest::wait_for_run($node, $run, 'succeeded', 120);
	my $error = $node->safe_psql('postgres', "SELECT coalesce(last_error, '') FROM ecp.run WHERE id = $run");
	return ($state, $error);
}

# --- every numeric option at its max, through SQL ------------------------------
sub options_at_max
{
	my ($kind) = @_;
	my @pairs = map { "\"$_->{name}\": $_->{max}" } grep { $_->{kind} eq $kind } @numeric;
	# since_overlap goes with since_column
	push @pairs, '"since_column": "id"' if grep { $_ =~ /"since_overlap"/ } @pairs;
	return '{' . join(', ', @pairs) . '}';
}
$node->safe_psql('postgres', "SELECT ecp.create_consumer('maxed', '$url', options => '" . options_at_max('consumer') . "')");
$node->safe_psql('postgres', "SELECT ecp.create_task('maxed', 'maxed', 'maxed', query => 'SELECT * FROM items',"
	  . " options => '" . options_at_max('task') . "')");
my ($state, $error) = run_and_wait('maxed');
is($state, 'succeeded', 'SQL takes every numeric option at its max, and so does the worker') or diag($error);

# --- one past a bound, stored past the checks ------------------------------------
my $stored = 0;

# A task (and its consumer) with one option as given, written with the
# triggers off.
sub stored_row
{
	my ($option, $value) = @_;
	my $name = 'bad' . ++$stored;
	my $setting = qq{{"$option->{name}": $value}};
	my ($task_options, $consumer_options) = $option->{kind} eq 'task' ? ($setting, '{}') : ('{}', $setting);
	$task_options =~ s/^\{/{"id_column": "id", / or die;
	# the worker reads since_overlap only for a task with since_column
	$task_options =~ s/^\{/{"since_column": "id", / if $option->{name} eq 'since_overlap';
	$task_options =~ s/, \}$/}/;
	$node->safe_psql('postgres', qq{
SET session_replication_role = replica;
INSERT INTO ecp.consumer (name, kind, url, options) VALUES ('$name', 'elasticsearch', '$url', '$consumer_options');
INSERT INTO ecp.task (name, consumer_id, index_name, query, options)
SELECT '$name', id, '$name', 'SELECT * FROM items', '$task_options' FROM ecp.consumer WHERE name = '$name';
});
	return $name;
}

my @warned;
for my $option (@numeric)
{
	my @past = ($option->{max} + 1, $option->{min} - 1);
	for my $value (@past)
	{
		my $name = stored_row($option, $value);
		my $what = "$option->{kind} option $option->{name} = $value";
		($state, $error) = run_and_wait($name);
		if ($option->{type} eq 'integer')
		{
			is($state, 'failed', "$what: the worker fails the run");
			like($error, qr/option "\Q$option->{name}\E" is "\Q$value\E"; it must be an integer between \Q$option->{min}\E and \Q$option->{max}\E; hint: .*\(SQLSTATE 22023\)$/,
				"... naming the contract's bounds") or diag($error);
		}
		else
		{
			is($state, 'succeeded', "$what: the worker does not read it, the run carries on") or diag($error);
		}
		push @warned, [ $option, $name, $value ] if $option->{launcher};
	}
}

my $log = slurp_file($node->logfile);
for my $warning (@warned)
{
	my ($option, $name, $value) = @$warning;
	my $expects = sprintf('The launcher expects %s from %g to %g and uses',
		$option->{type} eq 'integer' ? 'a whole number' : 'a number', $option->{min}, $option->{max});
	like($log, qr/ecp $option->{kind} "$name" \(id \d+\) has an invalid option "$option->{name}": "\Q$value\E" \(a JSON number\)\n.*DETAIL:  \Q$expects\E/,
		"the launcher refuses $option->{kind} option $option->{name} = $value with the contract's bounds");
}
unlike($log, qr/ecp (task|consumer) "maxed"/, 'the launcher takes every option at its max');
unlike($log, qr/terminated by signal/, 'no process died by a signal');

$es->stop;
$node->stop;
done_testing();
