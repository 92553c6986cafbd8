# esd: --flavor es7 / opensearch differences from ES 8 (_type, health
# timeouts, alias removal, product header, rejection type, compatibility
# headers).
use strict;
use warnings;
use Test::More;
use JSON::PP;
use EsdServer;

my $J = JSON::PP->new->canonical;
sub nd { join '', map { (ref $_ ? $J->encode($_) : $_) . "\n" } @_ }
my ($st, $b, $h);

{
    my $es = EsdServer->start(flavor => 'es7', extra_args => ['--no-refresh-timer']);
    ($st, $b, $h) = $es->get('/');
    like($b->{version}{number}, qr/^7\.17/, 'es7 version number');
    is($h->{'x-elastic-product'}, 'Elasticsearch', 'es7 sends X-Elastic-Product');
    $b = $es->bulk(nd({ index => { _index => 'i', _id => '1', _type => '_doc' } }, { p => 1 },
                      { index => { _index => 'i', _id => '2' } }, { p => 'cheap' }), refresh => 'true');
    is($b->{items}[0]{index}{_type}, '_doc', '_type in bulk items');
    is($b->{items}[0]{index}{status}, 201, '_type accepted in action lines');
    is($b->{items}[1]{index}{error}{type}, 'mapper_parsing_exception', 'mapper_parsing_exception');
    ($st, $b) = $es->get('/i/_doc/1');
    is($b->{_type}, '_doc', '_type in GET');
    ($st, $b) = $es->post('/i/_search', {});
    is($b->{hits}{hits}[0]{_type}, '_doc', '_type in hits');
    ($st, $b) = $es->post('/i/_search', { sort => ['_id'] });
    is($st, 200, 'sort on _id allowed on 7.x');
    ($st, $b) = $es->get('/_cluster/health/i?wait_for_status=green&timeout=100ms');
    is($st, 408, 'health timeout is 408 on 7.x');
    $es->put('/j', {});
    ($st, $b) = $es->post('/_aliases', { actions => [{ add => { index => 'j', alias => 'a' } }, { remove => { index => 'i', alias => 'ghost' } }] });
    is($st, 404, 'remove of missing alias: 404 on 7.x');
    ($st) = $es->head('/_alias/a');
    is($st, 404, 'and nothing applied');
    $es->stop;
}
{
    my $es = EsdServer->start(flavor => 'opensearch', faults => { item_reject => { status => 429, first => 1 } });
    ($st, $b, $h) = $es->get('/');
    is($b->{version}{distribution}, 'opensearch', 'distribution opensearch');
    ok(!exists $b->{version}{build_flavor}, 'no build_flavor');
    ok(!exists $h->{'x-elastic-product'}, 'no X-Elastic-Product header');
    $b = $es->bulk(nd({ index => { _index => 'o', _id => '1' } }, { a => 1 }, { index => { _index => 'o', _id => '2', _type => '_doc' } }, { a => 1 }));
    is($b->{error}{type}, 'illegal_argument_exception', '_type refused (OpenSearch 2)');
    $b = $es->bulk(nd({ index => { _index => 'o', _id => '1' } }, { a => 1 }));
    is($b->{items}[0]{index}{error}{type}, 'rejected_execution_exception', 'OpenSearch rejection type');
    ok(!exists $b->{items}[0]{index}{_type}, 'no _type');
    ($st) = $es->request('PUT', '/x', '{}', { 'Content-Type' => 'application/vnd.elasticsearch+json; compatible-with=8' });
    is($st, 406, 'compat media types unknown to OpenSearch');
    $es->stop;
}
{
    my $es = EsdServer->start();
    my $c7 = 'application/vnd.elasticsearch+x-ndjson; compatible-with=7';
    ($st, $b) = $es->request('POST', '/_bulk', nd({ index => { _index => 'c', _id => '1', _type => '_doc' } }, { a => 1 }),
                             { 'Content-Type' => $c7, Accept => 'application/vnd.elasticsearch+json; compatible-with=7' });
    is($st, 200, 'es8 in compat-7 mode accepts _type');
    is($b->{items}[0]{index}{_type}, '_doc', 'and answers with _type');
    $es->stop;
}
done_testing();
