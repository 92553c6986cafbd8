# The manual's runnable examples (doc/testing.md, "The runnable examples").
#
# Every SQL block of README.md and doc/*.md whose ```sql fence follows a
# line <!-- runnable --> runs here as written, file by file, each file's
# blocks in file order, each block in one psql session with ON_ERROR_STOP:
#  * each file gets a fresh cluster (the README's configuration: ecp and
#    pg_cron preloaded, cron.database_name) and a stand-in of its own; the
#    cluster's extension is dropped and the README's install block (the
#    one with CREATE EXTENSION ecp) runs first, as a reader would run it;
#  * the ONLY change made to a block: the URL http://localhost:9200, which
#    the manual uses for "your Elasticsearch", becomes the stand-in's URL;
#  * after each block the test waits until no run is pending or running
#    (followers excepted), so the next block sees what the runs did, and
#    asserts that no run failed;
#  * a block may not hold \watch (it would never end) and a marker must be
#    followed by a ```sql fence: both fail the file;
#  * after the README's blocks the quick start's index holds exactly the
#    rows of its table.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename qw(dirname basename);
use File::Spec;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('every file starts from an empty cluster');

my $top = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..'));
my @files = ('README.md', map { 'doc/' . basename($_) } sort glob("$top/doc/*.md"));
my $placeholder = 'http://localhost:9200';

# The marked blocks of a file: [{ line => first line of the SQL, sql => text }].
# A marker that is not followed by a ```sql fence is an error of the file.
sub runnable_blocks
{
	my ($file) = @_;
	open(my $fh, '<', "$top/$file") or die "$file: $!";
	my (@blocks, @errors);
	my $state = 'prose';    # prose | marked | block | fence
	my ($sql, $start, $marker_line);
	while (my $line = <$fh>)
	{
		if ($state eq 'block')
		{
			if ($line =~ /^```\s*$/) { push @blocks, { line => $start, sql => $sql }; $state = 'prose' }
			else { $sql .= $line }
		}
		elsif ($state eq 'fence')
		{
			$state = 'prose' if $line =~ /^```\s*$/;
		}
		elsif ($state eq 'marked')
		{
			if ($line =~ /^```sql\s*$/) { ($state, $sql, $start) = ('block', '', $. + 1) }
			else
			{
				push @errors, "the marker at line $marker_line is not followed by a ```sql fence";
				$state = $line =~ /^```/ ? 'fence' : 'prose';
			}
		}
		elsif ($line =~ /^<!--\s*runnable\s*-->\s*$/) { ($state, $marker_line) = ('marked', $.) }
		elsif ($line =~ /^```/) { $state = 'fence' }
	}
	push @errors, "a block is not closed" if $state eq 'block' || $state eq 'fence';
	return (\@blocks, \@errors);
}

# psql's meta-command \watch outside -- comments
sub has_watch
{
	my ($sql) = @_;
	for my $line (split /\n/, $sql)
	{
		(my $code = $line) =~ s/--.*$//;
		return 1 if $code =~ /\\watch\b/;
	}
	return 0;
}

my %blocks_of;
for my $file (@files)
{
	my ($blocks, $errors) = runnable_blocks($file);
	is_deeply($errors, [], "$file: every runnable marker marks a closed sql block");
	$blocks_of{$file} = $blocks if @$blocks;
}

my @readme = @{ $blocks_of{'README.md'} // [] };
my ($install) = grep { $_->{sql} =~ /^CREATE EXTENSION ecp;/m } @readme;
ok($install, 'README has a runnable install block (CREATE EXTENSION ecp)');
ok(scalar(grep { $_->{sql} =~ /ecp\.start\(/ } @readme), 'README has a runnable quick start (it starts a run)');

my $n = 0;
for my $file (grep { $blocks_of{$_} } @files)
{
	$n++;
	my $node = EcpTest::new_node("docs_$n",
		conf => [ "shared_preload_libraries = 'ecp,pg_cron'", "cron.database_name = 'postgres'",
			'cron.use_background_workers = on' ]);
	my $es = EsdServer->start();
	my $url = $es->url;

	# the reader's install: the README's block, not new_node's CREATE EXTENSION
	$node->safe_psql('postgres', 'DROP EXTENSION ecp');
	my @blocks_to_run = @{ $blocks_of{$file} };
	unshift @blocks_to_run, { %$install, from => 'README.md' } if $install && $file ne 'README.md';

	for my $block (@blocks_to_run)
	{
		my $where = ($block->{from} // $file) . " line $block->{line}";
		if (has_watch($block->{sql}))
		{
			fail("$where runs as written");
			diag('a runnable block may not hold \\watch: it would never end');
			next;
		}
		(my $sql = $block->{sql}) =~ s/\Q$placeholder\E/$url/g;
		my ($rc, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 1, timeout => 300);
		is($rc, 0, "$where runs as written")
		  or diag("stdout:\n$out\nstderr:\n$err");
		note($out) if defined $out && length $out;

		ok(EcpTest::poll($node, q{SELECT NOT EXISTS (SELECT 1 FROM ecp.run
			WHERE state IN ('pending', 'running') AND action IS DISTINCT FROM 'follow')}, 300),
			"$where: the runs it started end")
		  or diag($node->safe_psql('postgres', 'SELECT row_to_json(p) FROM ecp.progress p'));
		is($node->safe_psql('postgres',
				q{SELECT coalesce(string_agg(id || ': ' || coalesce(last_error, ''), '; ' ORDER BY id), '')
				    FROM ecp.run WHERE state = 'failed'}),
			'', "$where: no run failed");
	}

	if ($file eq 'README.md')
	{
		$es->refresh('products');
		is($es->count('products'), $node->safe_psql('postgres', 'SELECT count(*) FROM products'),
			"the quick start's index holds every row of its table");
	}
	$node->stop;
	$es->stop;
}

done_testing();
