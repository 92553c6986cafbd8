# Alerts: after ecp.alert_after consecutive failed attempts of a batch, and
# on every run failure: a flow row, NOTIFY ecp_alert with a JSON payload, and
# a POST to ecp.alert_webhook.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('fault injection; the stand-in also receives the webhook');
my $node = EcpTest::new_node('alerts', conf => [ 'ecp.alert_after = 2' ]);
my $es = EsdServer->start();
my $url = $es->url;
# The webhook: a second stand-in, whose index API stores each POSTed alert.
my $hook = EsdServer->start();
my $hook_url = $hook->url . '/alerts/_doc';
$node->append_conf('postgresql.conf', "ecp.alert_webhook = '$hook_url'\n");
$node->reload;
$node->safe_psql('postgres', "SELECT ecp.create_consumer('esd', '$url')");

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN ecp_alert');

# --- transient failures: an alert at the second failed attempt --------------
$es->set_faults({ bulk_reject => { status => 503, first => 3 } });
$node->safe_psql('postgres',
	"SELECT ecp.create_task('flaky', 'esd', 'flaky', query => 'SELECT g AS id FROM generate_series(1, 100) g', options => '{\"retry_base_ms\": 20}')");
my $run = $node->safe_psql('postgres', "SELECT ecp.start('flaky')");
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'the flaky run succeeds');
is($node->safe_psql('postgres',
		"SELECT content->>'class' || ' ' || (content->>'attempts') FROM ecp.flow WHERE run_id = $run AND action = 'alert'"),
	'transient 2', 'one alert, after ecp.alert_after = 2 failed attempts');
$es->clear_faults;

# --- a run failure is always an alert ------------------------------------------
$es->set_faults({ auth => { basic => 'u:p' } });
$node->safe_psql('postgres',
	"SELECT ecp.create_task('denied', 'esd', 'denied', query => 'SELECT 1 AS id')");
my $failed = $node->safe_psql('postgres', "SELECT ecp.start('denied')");
is(EcpTest::wait_for_run($node, $failed, 'failed'), 'failed', 'the denied run fails');
my $alert = decode_json($node->safe_psql('postgres',
		"SELECT content FROM ecp.flow WHERE run_id = $failed AND action = 'alert'"));
is($alert->{class}, 'failed', 'an alert of class failed');
is($alert->{run}, $failed, 'naming the run');
is($alert->{task}, 'denied', 'the task');
ok($alert->{owner}, 'the owner');
like($alert->{error}, qr/HTTP 401/, 'and the error');
$es->clear_faults;

# --- LISTEN ecp_alert received both -------------------------------------------
my $out = $listener->query_safe('SELECT 1');
my @payloads = ($out =~ /Asynchronous notification "ecp_alert" with payload "(.*?)" received/g);
is(scalar @payloads, 2, 'LISTEN ecp_alert received two notifications');
my $payload = eval { decode_json($payloads[-1] // '') } // {};
is($payload->{class} . ' ' . $payload->{run}, "failed $failed", 'the payload is the alert as JSON');
$listener->quit;

# --- the webhook received both ----------------------------------------------------
my $received = 0;
for (1 .. 100)
{
	# refresh once the index exists (the first alert creates it), so the
	# count sees every alert stored, not only what the 1 s refresh timer saw
	my ($index_status) = $hook->head('/alerts');
	$hook->refresh('alerts') if $index_status == 200;
	$received = eval { $hook->count('alerts') } // 0;
	last if $received >= 2;
	select(undef, undef, undef, 0.1);
}
is($received, 2, 'the webhook received both alerts');
my ($status, $body) = $hook->post('/alerts/_search', { query => { match_all => {} }, size => 10 });
my @classes = sort map { $_->{_source}{class} } @{ $body->{hits}{hits} };
is_deeply(\@classes, [ 'failed', 'transient' ], 'each POST is one alert as JSON');
# An alert row over 64 kB (only a superuser can write one) is not read
# into the launcher's memory: the webhook gets a short notice naming it.
my $big = $node->safe_psql('postgres',
	"INSERT INTO ecp.flow_log (action, content, run_id) "
	  . "VALUES ('alert', jsonb_build_object('error', repeat('x', 200000)), $failed) RETURNING id");
my $notice;
for (1 .. 100)
{
	$hook->refresh('alerts');
	my (undef, $found) = $hook->post('/alerts/_search', { query => { term => { alert => $big } }, size => 1 });
	$notice = $found->{hits}{hits}[0]{_source};
	last if $notice;
	select(undef, undef, undef, 0.1);
}
ok($notice && $notice->{truncated} && $notice->{error} =~ /larger than 65536 bytes: read it in ecp\.flow/,
	'an alert over 64 kB reaches the webhook as a short notice with its id');
# PostgreSQL itself logs a changed setting on reload; ecp never logs the URL.
my @ecp_lines = grep { !/parameter "ecp\.alert_webhook" changed/ } split /\n/, slurp_file($node->logfile);
is(scalar(grep { /\Q$hook_url\E/ } @ecp_lines), 0, 'ecp never logs the webhook URL');
$hook->stop;

$es->stop;
$node->stop;
done_testing();
