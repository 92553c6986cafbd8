# esd: GET, _mget, _search (sort, search_after, paging), _count.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use EsdServer;

my $J = JSON::PP->new->canonical;
sub nd { join '', map { (ref $_ ? $J->encode($_) : $_) . "\n" } @_ }

my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my ($st, $b);

my @docs = map { ({ index => { _index => 'r', _id => sprintf('d%03d', $_) } },
                  { sku => sprintf('sku-%03d', 250 - $_), n => $_ % 7, name => "item $_", ($_ % 10 ? (opt => $_) : ()) }) } 1 .. 250;
($st, $b) = $es->bulk(nd(@docs), refresh => 'true');
ok(!$b->{errors}, 'loaded 250 docs');
$es->put('/r/_mapping', { properties => { sku => { type => 'text', fields => { keyword => { type => 'keyword' } } } } });

# GET
($st, $b) = $es->get('/r/_doc/d001');
is($st, 200, 'GET 200');
is($b->{found}, JSON::PP::true, 'found');
is($b->{_index}, 'r', '_index');
is($b->{_version}, 1, '_version');
ok(defined $b->{_seq_no} && $b->{_primary_term} == 1, 'seq_no and primary_term');
is($b->{_source}{sku}, 'sku-249', '_source');
($st, $b) = $es->get('/r/_doc/zzz');
is($st, 404, 'missing doc 404');
is_deeply($b, { _index => 'r', _id => 'zzz', found => JSON::PP::false }, 'found false body');
($st, $b) = $es->get('/nope/_doc/1');
is($st, 404, 'missing index 404');
is($b->{error}{type}, 'index_not_found_exception', 'index_not_found');
($st) = $es->head('/r/_doc/d001');
is($st, 200, 'HEAD doc');
($st) = $es->head('/r/_doc/zzz');
is($st, 404, 'HEAD missing doc');
($st, $b) = $es->get('/r/_doc/d001?_source=false');
ok(!exists $b->{_source}, '_source=false');
($st, $b) = $es->get('/r/_doc/d001?_source_includes=sku');
is_deeply($b->{_source}, { sku => 'sku-249' }, '_source_includes');
($st, $b) = $es->get('/r/_doc/d001?_source_excludes=sku');
ok(!exists $b->{_source}{sku} && exists $b->{_source}{name}, '_source_excludes');

# _mget
($st, $b) = $es->post('/r/_mget', { ids => ['d002', 'missing', 'd001'] });
is($st, 200, 'mget 200');
is_deeply([map { $_->{_id} } @{ $b->{docs} }], ['d002', 'missing', 'd001'], 'request order');
is_deeply([map { $_->{found} ? 1 : 0 } @{ $b->{docs} }], [1, 0, 1], 'found flags');
($st, $b) = $es->post('/_mget', { docs => [{ _index => 'r', _id => 'd003' }, { _index => 'nope', _id => 'x' }, { _index => 'r', _id => 'd004', _source => JSON::PP::false }] });
is($b->{docs}[0]{_source}{sku}, 'sku-247', 'docs form');
is($b->{docs}[1]{error}{type}, 'index_not_found_exception', 'per-doc error for missing index');
ok(!exists $b->{docs}[2]{_source}, 'per-doc _source false');
($st, $b) = $es->request('GET', '/r/_mget', { ids => ['d005'] });
is($b->{docs}[0]{found}, JSON::PP::true, 'GET _mget with body');
($st, $b) = $es->post('/r/_mget', {});
is($st, 400, 'mget without ids 400');
($st, $b) = $es->post('/_mget', { ids => ['a'] });
is($st, 400, 'mget ids without index 400');
$es->bulk(nd({ index => { _index => 'r', _id => 'late' } }, { sku => 'late', n => 0 }));
($st, $b) = $es->post('/r/_mget', { ids => ['late'] });
is($b->{docs}[0]{found}, JSON::PP::true, 'mget is realtime');

# _count
is($es->count('r'), 250, '_count counts refreshed docs only');
($st, $b) = $es->post('/r/_count', { query => { ids => { values => ['d001', 'd002', 'nope'] } } });
is($b->{count}, 2, '_count with ids query');
($st, $b) = $es->post('/r/_count', { query => { match_all => {} } });
is($b->{count}, 250, '_count match_all');
is($b->{_shards}{total}, 1, '_count _shards');
($st, $b) = $es->post('/r/_count', { query => { bogus => {} } });
is($st, 400, 'unknown query 400');
($st) = $es->get('/nope/_count');
is($st, 404, '_count missing index 404');

# _search basics
($st, $b) = $es->post('/r/_search', {});
is($st, 200, 'search 200');
is_deeply($b->{hits}{total}, { value => 250, relation => 'eq' }, 'hits.total object');
is(scalar @{ $b->{hits}{hits} }, 10, 'default size 10');
is($b->{hits}{max_score}, 1, 'max_score');
is($b->{timed_out}, JSON::PP::false, 'timed_out');
($st, $b) = $es->post('/r/_search', { query => { ids => { values => ['d010', 'd011'] } }, size => 5 });
is_deeply([sort map { $_->{_id} } @{ $b->{hits}{hits} }], ['d010', 'd011'], 'ids query');
($st, $b) = $es->post('/r/_search', { query => { term => { n => 3 } }, size => 0 });
is($b->{hits}{total}{value}, scalar(grep { $_ % 7 == 3 } 1 .. 250), 'term query total');
is(scalar @{ $b->{hits}{hits} }, 0, 'size 0');
($st, $b) = $es->post('/r/_search', { query => { bool => { filter => [{ range => { n => { gte => 5 } } }], must_not => { exists => { field => 'opt' } } } }, size => 100 });
is($b->{hits}{total}{value}, scalar(grep { $_ % 7 >= 5 && $_ % 10 == 0 } 1 .. 250), 'bool/range/exists');
($st, $b) = $es->post('/r/_search', { _source => JSON::PP::false, size => 1 });
ok(!exists $b->{hits}{hits}[0]{_source}, '_source false');
($st, $b) = $es->post('/r/_search', { _source => ['sku'], size => 1 });
is_deeply([keys %{ $b->{hits}{hits}[0]{_source} }], ['sku'], '_source includes list');
($st, $b) = $es->post('/r/_search', { size => 1, track_total_hits => JSON::PP::false });
ok(!exists $b->{hits}{total}, 'track_total_hits false');
($st, $b) = $es->post('/r/_search', { size => 1, track_total_hits => 100 });
is_deeply($b->{hits}{total}, { value => 100, relation => 'gte' }, 'track_total_hits N');
($st, $b) = $es->get('/r/_search?size=2&from=3');
is(scalar @{ $b->{hits}{hits} }, 2, 'size/from as query args');
($st, $b) = $es->get('/r/_search?rest_total_hits_as_int=true&size=0');
is($b->{hits}{total}, 250, 'rest_total_hits_as_int');
($st, $b) = $es->post('/r/_search', { from => 9990, size => 20 });
is($st, 400, 'result window too large');
is($b->{error}{type}, 'search_phase_execution_exception', 'wrapped error');
is($b->{error}{root_cause}[0]{type}, 'illegal_argument_exception', 'root cause');
($st, $b) = $es->post('/r/_search', { aggs => {} });
is($st, 400, 'unsupported feature is refused, not ignored');
($st) = $es->post('/nope/_search', {});
is($st, 404, 'search missing index 404');
($st, $b) = $es->post('/nope*/_search', {});
is($st, 200, 'wildcard matching nothing is fine');
is($b->{hits}{total}{value}, 0, 'no hits');
($st, $b) = $es->get('/_search?size=0');
is($b->{hits}{total}{value}, 250, '/_search over all indices');

# sorting
($st, $b) = $es->post('/r/_search', { sort => [{ 'sku' => 'asc' }] });
is($st, 400, 'sort on a text field refused');
like($b->{error}{root_cause}[0]{reason}, qr/Fielddata is disabled on \[sku\]/, 'fielddata reason');
($st, $b) = $es->post('/r/_search', { sort => ['_id'] });
is($st, 400, 'sort on _id refused on es8');
($st, $b) = $es->post('/r/_search', { sort => ['nosuchfield'] });
is($st, 400, 'sort on unmapped field refused');
($st, $b) = $es->post('/r/_search', { sort => [{ nosuchfield => { order => 'asc', unmapped_type => 'long' } }], size => 1 });
is($st, 200, 'unmapped_type allows it');
($st, $b) = $es->post('/r/_search', { sort => [{ 'sku.keyword' => 'asc' }], size => 3 });
is_deeply([map { $_->{_source}{sku} } @{ $b->{hits}{hits} }], ['sku-000', 'sku-001', 'sku-002'], 'keyword asc');
is_deeply($b->{hits}{hits}[0]{sort}, ['sku-000'], 'sort values');
is($b->{hits}{max_score}, undef, 'max_score null when sorted');
is($b->{hits}{hits}[0]{_score}, undef, '_score null when sorted');
($st, $b) = $es->post('/r/_search', { sort => [{ n => { order => 'desc' } }, { 'sku.keyword' => 'asc' }], size => 2 });
is_deeply([map { $_->{_source}{n} } @{ $b->{hits}{hits} }], [6, 6], 'numeric desc');
($st, $b) = $es->post('/r/_search', { sort => [{ opt => 'asc' }], size => 250 });
my @opt = map { $_->{_source}{opt} } @{ $b->{hits}{hits} };
ok(!defined $opt[-1] && defined $opt[0], 'missing values sort last');

# search_after paging over every doc
my (%seen, $pages, $after);
while (1) {
    my $q = { size => 37, sort => [{ n => 'asc' }, { 'sku.keyword' => 'desc' }], _source => JSON::PP::false };
    $q->{search_after} = $after if $after;
    ($st, $b) = $es->post('/r/_search', $q);
    last unless $st == 200 && @{ $b->{hits}{hits} };
    $pages++;
    $seen{ $_->{_id} }++ for @{ $b->{hits}{hits} };
    $after = $b->{hits}{hits}[-1]{sort};
    last if $pages > 20;
}
is(scalar keys %seen, 250, 'search_after visits every doc');
is(scalar(grep { $_ != 1 } values %seen), 0, 'each exactly once');
is($pages, 7, 'in ceil(250/37) pages');
%seen = ();
$after = undef;
for (1 .. 10) {
    my $q = { size => 100, sort => ['_doc'] };
    $q->{search_after} = $after if $after;
    ($st, $b) = $es->post('/r/_search', $q);
    last unless @{ $b->{hits}{hits} };
    $seen{ $_->{_id} }++ for @{ $b->{hits}{hits} };
    $after = $b->{hits}{hits}[-1]{sort};
}
is(scalar keys %seen, 250, '_doc sort paging visits every doc');
($st, $b) = $es->post('/r/_search', { sort => ['_doc'], search_after => [1, 2] });
is($st, 400, 'search_after length mismatch 400');

# after an update the search view is the refreshed one
$es->bulk(nd({ index => { _index => 'r', _id => 'd001' } }, { sku => 'changed', n => 0 }));
($st, $b) = $es->post('/r/_search', { query => { ids => { values => ['d001'] } } });
is($b->{hits}{hits}[0]{_source}{sku}, 'sku-249', 'search sees the last refreshed version');
is($es->doc('r', 'd001')->{sku}, 'changed', 'GET sees the latest version');

done_testing();
