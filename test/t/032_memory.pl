# Memory stays bounded by the batch size, never by the table: the worker's
# private memory (RssAnon; shared buffers do not count) barely moves between
# an early and a late point of a long run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('discard mode and delays');
my $node = EcpTest::new_node('memory');
my $es = EsdServer->start(discard => 1);
# 10 ms per request keeps the worker alive long enough to be measured.
$es->set_faults({ delay_ms => 10 });
$node->safe_psql('postgres', q{
CREATE TABLE wide AS SELECT g AS id, repeat(md5(g::text), 8) AS payload FROM generate_series(1, 300000) g;
ALTER TABLE wide ADD PRIMARY KEY (id);
});
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '" . $es->url . "')");
$node->safe_psql('postgres',
	"SELECT ecp.create_task('wide', 'esd', 'wide', query => 'SELECT * FROM wide', options => '{\"batch_size\": 1000}')");
my $run = $node->safe_psql('postgres', "SELECT ecp.start('wide')");

sub worker_rss_when_processed
{
	my ($at_least) = @_;
	ok(EcpTest::poll($node, "SELECT processed >= $at_least FROM ecp.progress WHERE run_id = $run", 120),
		"the run passed $at_least documents");
	my $pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'ecp worker'");
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>) { return $1 if /^RssAnon:\s+(\d+) kB/; }
	return undef;
}

my $early = worker_rss_when_processed(30000);
my $late = worker_rss_when_processed(250000);
ok(defined $early && defined $late, "private memory measured: $early kB, then $late kB");
# 220,000 documents of ~300 bytes went by in between: a leak of even a
# fraction of each NDJSON body would add tens of MB.
cmp_ok($late - $early, '<', 8192, 'private memory grows by less than 8 MB over 220,000 documents');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'the run succeeds');

$es->stop;
$node->stop;
done_testing();
