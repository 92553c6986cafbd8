# Where requests go: several nodes, tags and routes, and the product check.
#  * two nodes of one "cluster" (the stand-in, and a TCP proxy in front of
#    it: two URLs, one index), the proxy killed mid-run: the run finishes
#    on the other node, the index holds every document once, the flow has
#    a "node down" row and a "nodes used" row naming both;
#  * every node down: the normal back-off, then "retries exhausted";
#  * a tag with a route goes to the route (a second stand-in), a tag
#    without one and no tag go to the consumer's URL; each request carries
#    the tag header (X-Ecp-Tag, or the consumer's tag_header), read back
#    from the stand-ins' request logs; the start row says why;
#  * GET / once per part: the flow names Elasticsearch 8.15.1; a server
#    that is not Elasticsearch 7-9 or OpenSearch fails the run, naming it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Cwd ();
use FindBin;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('two stand-ins, request logs, a killed node');
my $node = EcpTest::new_node('nodes_routes',
	conf => [ 'ecp.heartbeat_interval = 1', 'ecp.retry_base_ms = 100', 'ecp.retry_max_ms = 1000' ]);
my $json = JSON::PP->new->utf8->canonical;
my $dir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
my $es = EsdServer->start();
my $flush = EsdServer->start();
my @children;

# A helper server from test/scripts, started with a port file; its URL.
sub helper_server
{
	my ($script, @args) = @_;
	my $port_file = "$dir/port." . scalar(@children);
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		exec('perl', "$FindBin::RealBin/../scripts/$script", '--port-file', $port_file,
			'--max-seconds', 600, @args) or die "exec: $!";
	}
	push @children, $pid;
	my $deadline = time + 30;
	sleep 0.05 until (-s $port_file || time > $deadline);
	my $port = slurp_file($port_file);
	chomp $port;
	return ("http://127.0.0.1:$port", $pid);
}

sub kill_group
{
	my ($pid) = @_;
	kill 'KILL', -$pid;
	kill 'KILL', $pid;
	waitpid($pid, 0);
}

sub flow
{
	my ($run, $action) = @_;
	my @rows = map { $json->decode($_) } grep { length } split /\n/,
	  $node->safe_psql('postgres',
		"SELECT content FROM ecp.flow WHERE run_id = $run AND action = '$action' ORDER BY at");
	return @rows;
}

$node->safe_psql('postgres', q{
	CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric, note text);
	INSERT INTO orders SELECT g, g % 997, repeat('n', 100) FROM generate_series(1, 100000) g;
});

# --- two nodes, one killed mid-run --------------------------------------------------
my ($proxy_url, $proxy_pid) = helper_server('tcp-proxy.pl', '--to', '127.0.0.1:' . $es->port);
$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('cluster', '$proxy_url',
	       options => '{"nodes": ["${\ $es->url}"], "connect_timeout_ms": 1000, "request_timeout_ms": 10000}');
	SELECT ecp.create_task('spread', 'cluster', 'spread', query => 'SELECT * FROM orders',
	       options => '{"batch_size": 1000, "rate_limit": 20000}');
});
my $run = $node->safe_psql('postgres', "SELECT ecp.start('spread')");
ok(EcpTest::poll($node, "SELECT processed >= 30000 FROM ecp.progress WHERE run_id = $run", 120),
	'the run got a third of the way through both nodes');
kill_group($proxy_pid);
is(EcpTest::wait_for_run($node, $run, 'succeeded', 180), 'succeeded', 'the run finished on the other node');
$es->refresh('spread');
is($es->count('spread'), 100000, 'the index holds every document once');
is($node->safe_psql('postgres', "SELECT processed || '/' || failed FROM ecp.progress WHERE run_id = $run"),
	'100000/0', 'progress: 100000 processed, 0 failed');
my ($proxy_origin) = $proxy_url =~ m{^(http://[^/]+)};
my @down = flow($run, 'node down');
ok(@down >= 1, 'the flow has a node down row');
is($down[0]{node}, $proxy_origin, 'naming the killed node');
ok($down[0]{other_node_up}, 'with another node up');
my ($used) = flow($run, 'nodes used');
ok($used, 'the flow says which nodes the run used');
my %requests = map { $_->{node} => $_->{requests} } @{ $used->{nodes} // [] };
ok(($requests{$proxy_origin} // 0) > 0, "the killed node took requests before it died ($requests{$proxy_origin})");
ok(($requests{ $es->url } // 0) > 0, "the other node took the rest ($requests{ $es->url })");

# --- every node down: the back-off, then retries exhausted ---------------------------
my ($dead1, $dead1_pid) = helper_server('tcp-proxy.pl', '--to', '127.0.0.1:' . $es->port);
my ($dead2, $dead2_pid) = helper_server('tcp-proxy.pl', '--to', '127.0.0.1:' . $es->port);
kill_group($_) for $dead1_pid, $dead2_pid;
$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('dead', '$dead1', options => '{"nodes": ["$dead2"], "connect_timeout_ms": 1000}');
	SELECT ecp.create_task('nowhere', 'dead', 'nowhere', query => 'SELECT * FROM orders WHERE id <= 10',
	       options => '{"max_retries": 2, "retry_base_ms": 100, "retry_max_ms": 200}');
});
$run = $node->safe_psql('postgres', "SELECT ecp.start('nowhere')");
is(EcpTest::wait_for_run($node, $run, 'failed', 120), 'failed', 'with every node down the run fails');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
	qr/retries exhausted/, 'after the back-off: retries exhausted');
ok(scalar(flow($run, 'node down')) >= 2, 'both nodes were marked down');

# --- tags and routes -------------------------------------------------------------------
$node->safe_psql('postgres', qq{
	SELECT ecp.create_consumer('tagged', '${\ $es->url}',
	       options => '{"routes": {"FLUSH": "${\ $flush->url}"}}');
	SELECT ecp.create_consumer('custom', '${\ $es->url}', options => '{"tag_header": "X-Env"}');
	SELECT ecp.create_task('t_flush', 'tagged', 't_flush', query => 'SELECT * FROM orders WHERE id <= 3000',
	       options => '{"tag": "FLUSH", "batch_size": 1000}');
	SELECT ecp.create_task('t_other', 'tagged', 't_other', query => 'SELECT * FROM orders WHERE id <= 3000',
	       options => '{"tag": "OTHER", "batch_size": 1000}');
	SELECT ecp.create_task('t_plain', 'tagged', 't_plain', query => 'SELECT * FROM orders WHERE id <= 3000',
	       options => '{"batch_size": 1000}');
	SELECT ecp.create_task('t_env', 'custom', 't_env', query => 'SELECT * FROM orders WHERE id <= 3000',
	       options => '{"tag": "blue", "batch_size": 1000}');
});
my %runs;
for my $task (qw(t_flush t_other t_plain t_env))
{
	$runs{$task} = $node->safe_psql('postgres', "SELECT ecp.start('$task')");
	is(EcpTest::wait_for_run($node, $runs{$task}, 'succeeded', 120), 'succeeded', "$task succeeded");
}

# The requests of an index in a stand-in's log: [method, url, tag header value].
sub requests_for
{
	my ($server, $index) = @_;
	my @out;
	for my $r (@{ $server->requests(1000) })
	{
		next unless $r->{url} =~ m{^/\Q$index\E/_bulk};
		my %h = map { lc($_) => $r->{headers}{$_} } keys %{ $r->{headers} };
		push @out, { %$r, h => \%h };
	}
	return @out;
}

my @flush_on_route = requests_for($flush, 't_flush');
is(scalar(@flush_on_route), 3, 'tag FLUSH: 3 bulk requests reached the route');
is(scalar(grep { ($_->{h}{'x-ecp-tag'} // '') eq 'FLUSH' } @flush_on_route), 3, 'each with X-Ecp-Tag: FLUSH');
is(scalar(requests_for($es, 't_flush')), 0, 'and none reached the default endpoint');
my @other = requests_for($es, 't_other');
is(scalar(@other), 3, 'tag OTHER (no route): 3 bulk requests reached the default endpoint');
is(scalar(grep { ($_->{h}{'x-ecp-tag'} // '') eq 'OTHER' } @other), 3, 'each with X-Ecp-Tag: OTHER');
is(scalar(requests_for($flush, 't_other')), 0, 'and none reached the route');
my @plain = requests_for($es, 't_plain');
is(scalar(@plain), 3, 'no tag: the default endpoint');
is(scalar(grep { exists $_->{h}{'x-ecp-tag'} } @plain), 0, 'without a tag header');
my @env = requests_for($es, 't_env');
is(scalar(grep { ($_->{h}{'x-env'} // '') eq 'blue' && !exists $_->{h}{'x-ecp-tag'} } @env), 3,
	'tag_header X-Env: the tag travels in that header');
my ($flush_origin) = $flush->url =~ m{^(http://[^/]+)};
my %why = (t_flush => [ 'route FLUSH', $flush_origin ], t_other => [ 'no route for OTHER: default endpoint', $es->url ],
	t_plain => [ 'no tag: default endpoint', $es->url ]);
for my $task (sort keys %why)
{
	my ($start) = flow($runs{$task}, 'start');
	is($start->{why}, $why{$task}[0], "$task: the start row says why");
	is($start->{endpoint}, $why{$task}[1], "$task: and which endpoint");
}

# --- the product: GET / ------------------------------------------------------------------
my ($cluster) = flow($runs{t_plain}, 'cluster');
is_deeply([ $cluster->{product}, $cluster->{version} ], [ 'Elasticsearch', '8.15.1' ],
	'the flow records the product and version GET / gave');
my ($other_server, $other_pid) = helper_server('write-service.pl');
my $http = HTTP::Tiny->new;
for my $case ([ 'es6', { status => 200, body => { version => { number => '6.8.23' }, tagline => 'You Know, for Search' } },
		qr/is not Elasticsearch 7, 8 or 9 or OpenSearch 1 to 3: GET \/ answered product Elasticsearch, version 6\.8\.23/ ],
	[ 'other', { status => 200, body => { name => 'a web server' } }, qr/answered product unknown/ ],
	[ 'notfound', { status => 404, body => { error => 'no' } }, qr/GET http:\/\/127\.0\.0\.1:\d+\/ answered HTTP 404.*kind => 'http'/ ])
{
	my ($name, $root, $expect) = @$case;
	my $r = $http->request('PUT', "$other_server/_ws/config",
		{ headers => { 'Content-Type' => 'application/json' }, content => $json->encode({ root => $root }) });
	die "config: $r->{status} $r->{content}" unless $r->{success};
	$node->safe_psql('postgres', qq{
		SELECT ecp.create_consumer('c_$name', '$other_server');
		SELECT ecp.create_task('p_$name', 'c_$name', 'products', query => 'SELECT * FROM orders WHERE id <= 10');
	});
	$run = $node->safe_psql('postgres', "SELECT ecp.start('p_$name')");
	is(EcpTest::wait_for_run($node, $run, 'failed', 60), 'failed', "$name: GET / fails the run");
	like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"), $expect,
		"$name: the error names what answered");
}
my $batches = $json->decode($http->get("$other_server/_ws/stats")->{content})->{batches};
is($batches, 0, 'nothing was sent to a server that is not a cluster');
# a 403 to GET / (a user allowed to write but not to read the version): the
# part goes on with the product unknown, and the flow says why (this server
# then refuses the _bulk request itself: not JSON, so the run fails there)
$http->request('PUT', "$other_server/_ws/config",
	{ headers => { 'Content-Type' => 'application/json' }, content => $json->encode({ root => { status => 403, body => { error => 'no' } } }) });
$node->safe_psql('postgres', q{
	SELECT ecp.create_consumer('c_forbidden', '} . $other_server . q{');
	SELECT ecp.create_task('p_forbidden', 'c_forbidden', 'products', query => 'SELECT * FROM orders WHERE id <= 10');
});
$run = $node->safe_psql('postgres', "SELECT ecp.start('p_forbidden')");
is(EcpTest::wait_for_run($node, $run, 'failed', 60), 'failed', '403 to GET /: the run went on to _bulk');
my ($unknown) = flow($run, 'cluster');
is($unknown->{product}, 'unknown', '... with the product unknown');
like($unknown->{note} // '', qr/GET \/ answered HTTP 403/, '... and the flow says why');
like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"), qr{POST http://127\.0\.0\.1:\d+/products/_bulk answered HTTP 4},
	'the failure is the _bulk request\'s, not GET /\'s');

kill_group($_) for @children;
$es->stop;
$flush->stop;
done_testing();
