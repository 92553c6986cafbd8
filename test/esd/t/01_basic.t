# esd: root, health, index management, settings, mappings, HTTP rules.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use POSIX ();
use EsdServer;

my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);

# GET / and product header
my ($st, $b, $h) = $es->get('/');
is($st, 200, 'GET / 200');
like($b->{version}{number}, qr/^8\./, 'es8 version');
is($b->{version}{build_flavor}, 'default', 'build_flavor');
is($h->{'x-elastic-product'}, 'Elasticsearch', 'X-Elastic-Product header');
like($h->{'content-type'}, qr{application/json}, 'json content type');

($st, $b) = $es->get('/_cluster/health');
is($st, 200, 'health 200');
is($b->{status}, 'green', 'green with no indices');
is($b->{number_of_nodes}, 1, 'one node');

# create index: nested settings, mappings, aliases
($st, $b) = $es->put('/products-v1', {
    settings => { index => { number_of_replicas => 0, refresh_interval => '-1' } },
    mappings => { dynamic => 'strict', properties => { sku => { type => 'keyword' }, price => { type => 'long' } } },
    aliases  => { products => { is_write_index => JSON::PP::true } },
});
is($st, 200, 'create index');
is_deeply($b, { acknowledged => JSON::PP::true, shards_acknowledged => JSON::PP::true, index => 'products-v1' }, 'create response');

($st, $b) = $es->put('/products-v1', {});
is($st, 400, 'create existing index 400');
is($b->{error}{type}, 'resource_already_exists_exception', 'already exists type');
like($b->{error}{reason}, qr{index \[products-v1/.+\] already exists}, 'already exists reason');
is($b->{status}, 400, 'status in envelope');
is($b->{error}{root_cause}[0]{type}, 'resource_already_exists_exception', 'root_cause');

for my $bad ('Upper', '_under', 'a*b', 'sp%20ace', '-dash', 'a%23b') {
    ($st, $b) = $es->put("/$bad", {});
    is($st, 400, "invalid index name [$bad] 400");
    is($b->{error}{type}, 'invalid_index_name_exception', "invalid name type [$bad]");
}

# flat and dotted settings
($st) = $es->put('/flat', { settings => { number_of_replicas => 2 } });
is($st, 200, 'flat settings');
($st) = $es->put('/dotted', { settings => { 'index.number_of_replicas' => 3, 'index.refresh_interval' => '5s' } });
is($st, 200, 'dotted settings');
($st, $b) = $es->get('/dotted/_settings');
is($b->{dotted}{settings}{index}{number_of_replicas}, '3', 'settings echoed as strings');
is($b->{dotted}{settings}{index}{refresh_interval}, '5s', 'refresh_interval echoed');
($st, $b) = $es->get('/flat/_settings?flat_settings=true');
is($b->{flat}{settings}{'index.number_of_replicas'}, '2', 'flat_settings=true');

# HEAD / GET / DELETE
($st) = $es->head('/products-v1');
is($st, 200, 'HEAD existing index');
($st) = $es->head('/nope');
is($st, 404, 'HEAD missing index');
($st, $b) = $es->get('/products');
is($st, 200, 'GET by alias');
ok(exists $b->{'products-v1'}, 'GET by alias keyed by concrete index');
is($b->{'products-v1'}{settings}{index}{number_of_replicas}, '0', 'replicas string');
is($b->{'products-v1'}{mappings}{dynamic}, 'strict', 'mapping echoed');
ok($b->{'products-v1'}{aliases}{products}{is_write_index}, 'alias echoed');
($st, $b) = $es->get('/nope');
is($st, 404, 'GET missing index 404');
is($b->{error}{type}, 'index_not_found_exception', 'index_not_found_exception');
is($b->{error}{'resource.id'}, 'nope', 'resource.id');
($st, $b) = $es->delete('/products');
is($st, 400, 'DELETE alias refused');
like($b->{error}{reason}, qr/matches an alias/, 'DELETE alias reason');
($st, $b) = $es->delete('/nope');
is($st, 404, 'DELETE missing 404');
($st, $b) = $es->delete('/flat');
is($st, 200, 'DELETE index');
is_deeply($b, { acknowledged => JSON::PP::true }, 'DELETE ack');
($st) = $es->head('/flat');
is($st, 404, 'deleted index gone');

# settings update, null reset, non-dynamic
($st, $b) = $es->put('/products-v1/_settings', { index => { refresh_interval => '1s', number_of_replicas => 1 } });
is($st, 200, 'put settings');
($st, $b) = $es->get('/products-v1/_settings');
is($b->{'products-v1'}{settings}{index}{refresh_interval}, '1s', 'refresh_interval updated');
($st) = $es->put('/products-v1/_settings', { index => { refresh_interval => undef } });
is($st, 200, 'null resets');
($st, $b) = $es->get('/products-v1/_settings');
ok(!exists $b->{'products-v1'}{settings}{index}{refresh_interval}, 'refresh_interval reset to default');
($st, $b) = $es->put('/products-v1/_settings', { index => { number_of_shards => 3 } });
is($st, 400, 'non-dynamic setting 400');
like($b->{error}{reason}, qr/non dynamic settings/, 'non dynamic reason');
($st, $b) = $es->put('/products-v1/_settings', { index => { refresh_interval => 'soon' } });
is($st, 400, 'bad time value 400');

# mappings
($st, $b) = $es->get('/products-v1/_mapping');
is($b->{'products-v1'}{mappings}{properties}{sku}{type}, 'keyword', 'GET _mapping');
($st) = $es->put('/products-v1/_mapping', { properties => { name => { type => 'text' } } });
is($st, 200, 'PUT _mapping adds field');
($st, $b) = $es->put('/products-v1/_mapping', { properties => { price => { type => 'text' } } });
is($st, 400, 'mapping type change 400');
like($b->{error}{reason}, qr/cannot be changed from type \[long\] to \[text\]/, 'conflict reason');
($st, $b) = $es->put('/badmap', { mappings => { properties => { x => { type => 'nosuch' } } } });
is($st, 400, 'unknown field type 400');
is($b->{error}{type}, 'mapper_parsing_exception', 'mapper_parsing_exception');

# refresh
($st, $b) = $es->post('/products-v1/_refresh');
is($st, 200, 'refresh');
is($b->{_shards}{failed}, 0, 'refresh shards');
($st) = $es->get('/products-v1/_refresh');
is($st, 200, 'GET refresh');
($st) = $es->post('/nope/_refresh');
is($st, 404, 'refresh missing index');

# cluster health per index / wait_for_status
($st, $b) = $es->get('/_cluster/health/products-v1?wait_for_status=yellow&timeout=1s');
is($st, 200, 'health index');
is($b->{status}, 'yellow', 'replicas make it yellow');
is($b->{timed_out}, JSON::PP::false, 'not timed out');
($st, $b) = $es->get('/_cluster/health/products-v1?wait_for_status=green&timeout=200ms');
is($st, 200, 'es8 health timeout is 200');
is($b->{timed_out}, JSON::PP::true, 'timed_out true');

# Content-Type rules: 406 and compatibility headers
($st, $b) = $es->request('PUT', '/ct1', '{}', { 'Content-Type' => 'text/plain' });
is($st, 406, 'text/plain 406');
is($b->{error}, 'Content-Type header [text/plain] is not supported', '406 string error');
($st, $b) = $es->request('POST', '/_bulk', "{}\n", { 'Content-Type' => 'application/x-www-form-urlencoded' });
is($st, 406, 'form-urlencoded 406');
my $compat = 'application/vnd.elasticsearch+json; compatible-with=8';
($st, $b, $h) = $es->request('PUT', '/ct2', '{}', { 'Content-Type' => $compat, Accept => $compat });
is($st, 200, 'compat headers accepted');
like($h->{'content-type'}, qr/compatible-with=8/, 'compat content type echoed');
($st, $b) = $es->request('PUT', '/ct3', '{}', { 'Content-Type' => $compat, Accept => 'application/json' });
is($st, 400, 'compat mismatch 400');
is($b->{error}{type}, 'media_type_header_exception', 'media_type_header_exception');
like($b->{error}{caused_by}{reason}, qr/A compatible version is required on both Content-Type and Accept/, 'compat message');
($st) = $es->request('PUT', '/ct4', '{}', { 'Content-Type' => 'application/vnd.elasticsearch+json; compatible-with=9',
                                            Accept => 'application/vnd.elasticsearch+json; compatible-with=9' });
is($st, 400, 'unsupported compat version 400');

# routing errors
($st, $b) = $es->get('/_nosuch');
is($st, 400, 'unknown endpoint 400');
like($b->{error}, qr/no handler found/, 'no handler string error');
($st, $b) = $es->request('DELETE', '/products-v1/_refresh');
is($st, 405, 'wrong method 405');

# garbage bodies never crash the server
for my $g ('{', '[]', 'null', "\x00\xff\xfe", '{"settings":5}', '{"mappings":[1]}', '{"aliases":"x"}', '"str"', '{"settings":{"index":{"number_of_replicas":"x"}}}') {
    ($st) = $es->request('PUT', '/garbage', $g, {});
    ok($st >= 400 && $st < 500, "garbage create body rejected ($st)");
}
for my $p ('/_aliases', '/products-v1/_search', '/products-v1/_count', '/products-v1/_mget', '/products-v1/_settings', '/_esd/faults', '/_esd/config') {
    ($st) = $es->request($p =~ /_settings|faults|config/ ? 'PUT' : 'POST', $p, '{"x":[1,{"y":', {});
    ok($st >= 400 && $st < 500, "garbage JSON to $p rejected ($st)");
}
($st) = $es->get('/');
is($st, 200, 'still alive after garbage');

# keep-alive: several requests on one raw connection
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $es->port, Proto => 'tcp') or die $!;
my $n = 0;
for my $i (1 .. 3) {
    print $sock "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    my ($head, $len) = ('', 0);
    while (my $line = <$sock>) {
        $head .= $line;
        $len = $1 if $line =~ /^Content-Length:\s*(\d+)/i;
        last if $line eq "\r\n";
    }
    my $body = '';
    read($sock, $body, $len);
    $n++ if $head =~ m{^HTTP/1.1 200} && $body =~ /You Know, for Search/;
}
is($n, 3, 'three requests answered on one keep-alive connection');
close $sock;

# X-Opaque-Id is echoed
($st, $b, $h) = $es->get('/', undef, { 'X-Opaque-Id' => 'trace-1' });
is($h->{'x-opaque-id'}, 'trace-1', 'X-Opaque-Id echoed');

ok($es->stop, 'esd stops within 10 s of SIGTERM');
is($es->exit_status, 0, 'clean exit on SIGTERM: exit status 0');

# SIGINT: exit status 0
my $other = EsdServer->start();
my $pid = $other->pid;
kill 'INT', $pid;
my $reaped = 0;
for (1 .. 500) { if (waitpid($pid, POSIX::WNOHANG()) == $pid) { $reaped = 1; last } select(undef, undef, undef, 0.02) }
ok($reaped && $? == 0, 'clean exit 0 on SIGINT');
$other->{pid} = undef;
done_testing();
