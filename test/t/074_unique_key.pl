# No silent loss from a key that repeats.  Pages continue after the last
# key sent, so rows sharing the last key of a page used to be skipped and
# the run "succeeded" short.  Now a repeated key fails the run at the page
# that shows it, with a message naming the column, the value and the fix,
# for keyset pages and key windows, at any batch size; create_task says
# which columns are the id and the key, warns when the catalog shows the
# key is not unique, and takes a table's primary key as the default id.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EcpTest;
use EsdServer;

my $node = EcpTest::new_node('unique_key');
my $es = EsdServer->start();
my $url = $es->url;
$node->safe_psql('postgres', qq{
CREATE TABLE rep AS SELECT g, g / 3 AS grp, 'p' || g AS payload FROM generate_series(1, 5000) g;
ALTER TABLE rep ADD PRIMARY KEY (g);
CREATE TABLE customers (name text, id int PRIMARY KEY, city text);
INSERT INTO customers SELECT 'name' || (g % 50), g, 'c' || g FROM generate_series(1, 1000) g;
SELECT ecp.create_consumer('es', '$url');
});

# create_task's notices, as one string.
sub create_task
{
	my ($name, $query, $options) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SELECT ecp.create_task('$name', 'es', '$name', query => \$q\$$query\$q\$, options => '$options')");
	die "create_task $name failed: $err" if $ret != 0;
	return $err;
}

sub run_to_end
{
	my ($name) = @_;
	my $run = $node->safe_psql('postgres', "SELECT ecp.start('$name')");
	my $state = EcpTest::wait_for_run($node, $run, 'succeeded', 120);
	return ($run, $state, $node->safe_psql('postgres', "SELECT coalesce(last_error, '') FROM ecp.run WHERE id = $run"));
}

# --- a key that repeats: 5000 rows, grp = g / 3 ------------------------------
my $n = 0;
for my $case (['keyset', 100], ['keyset', 7], ['window', 100], ['window', 7])
{
	my ($paging, $batch) = @$case;
	my $name = "rep" . ++$n;
	my $notices = create_task($name, 'SELECT g, grp, payload FROM rep',
		qq({"id_column": "g", "key_column": "grp", "paging": "$paging", "batch_size": $batch}));
	like($notices, qr/column "grp" of table public\.rep has no unique index or primary key/,
		"$paging/$batch: create_task warns that the key is not unique");
	my ($run, $state, $error) = run_to_end($name);
	is($state, 'failed', "$paging pages of $batch: the run fails, never a short success");
	like($error, qr/key column "grp" is not unique: value "\d+" repeats/,
		"... naming the column and the value");
	like($node->safe_psql('postgres', "SELECT content->>'error' FROM ecp.flow WHERE run_id = $run AND action = 'failed'"),
		qr/key column "grp" is not unique/, '... and the flow records it');
	$es->refresh($name);
	is($node->safe_psql('postgres', "SELECT processed FROM ecp.progress WHERE run_id = $run"), '0',
		'... before the page that shows it is sent');
}

# The fix the message gives: a unique key, a new run, every row.
$node->safe_psql('postgres',
	qq{UPDATE ecp.task SET options = options || '{"key_column": "g"}' WHERE name = 'rep2'});
my ($run, $state) = run_to_end('rep2');
is($state, 'succeeded', 'with a unique key_column the run succeeds');
$es->refresh('rep2');
is($es->count('rep2'), 5000, 'and every one of the 5000 rows arrives');

# --- a first column that is not unique -------------------------------------
# Without id_column: the table's primary key is the id (and the key).
my $notices = create_task('cust', 'SELECT name, id, city FROM customers', '{"batch_size": 64}');
like($notices, qr/_id from column "id", pages ordered by column "id"/,
	'the primary key, not the first column, is the default id');
is($node->safe_psql('postgres', "SELECT options->>'id_column' FROM ecp.task WHERE name = 'cust'"), 'id',
	'... and is stored as id_column');
($run, $state) = run_to_end('cust');
is($state, 'succeeded', 'the run succeeds');
$es->refresh('cust');
is($es->count('cust'), 1000, 'with all 1000 customers');
is($es->doc('cust', '7')->{name}, 'name7', '... each under its own id');

# With id_column set to the first, repeating column: warned, then refused
# at run time, not synced short.
$notices = create_task('cust_names', 'SELECT name, id, city FROM customers', '{"id_column": "name"}');
like($notices, qr/column "name" of table public\.customers has no unique index/,
	'an id_column without a unique index is warned about');
(undef, $state, my $error) = run_to_end('cust_names');
is($state, 'failed', 'the run of a repeating id column fails');
like($error, qr/key column "name" is not unique/, '... saying why');

# A join: the catalog cannot tell; the first column is the default, and the
# run's own check decides.
$notices = create_task('joined', 'SELECT c.id, c.name, r.payload FROM customers c JOIN rep r ON r.g = c.id', '{}');
like($notices, qr/_id from column "id", pages ordered by column "id"/, 'a join defaults to its first column');
unlike($notices, qr/no unique index/, '... without a warning it could not back');
($run, $state) = run_to_end('joined');
is($state, 'succeeded', 'a join whose first column is unique syncs');
$es->refresh('joined');
is($es->count('joined'), 1000, '... every row');

# ecp.preview says which column would be the id.
my (undef, undef, $preview) = $node->psql('postgres', "SELECT * FROM ecp.preview('SELECT name, id FROM customers')");
like($preview, qr/gets _id from column "id"/, 'ecp.preview names the default id column');

$es->stop;
$node->stop;
done_testing();
