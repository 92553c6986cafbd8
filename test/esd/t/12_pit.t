# esd: points in time (ES _pit, OpenSearch _search/point_in_time), _shard_doc,
# the implicit tiebreaker, snapshot isolation, expiry, the open-PIT bound,
# the /_esd/pits control endpoints; _mget as ecp's verify run sends it.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use EsdServer;

my $J = JSON::PP->new->canonical;
sub nd { join '', map { (ref $_ ? $J->encode($_) : $_) . "\n" } @_ }
my ($st, $b);

# Polls cond every 50 ms until it holds or timeout seconds pass.
sub wait_until {
    my ($cond, $timeout) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return $cond->();
}

sub load {
    my ($es, $index, $from, $to) = @_;
    return load_ids($es, $index, $from .. $to);
}

# docs d<n> for each n, written in that order
sub load_ids {
    my ($es, $index, @n) = @_;
    my @lines = map { ({ index => { _index => $index, _id => sprintf('d%05d', $_) } }, { n => $_ % 7, v => "orig$_" }) } @n;
    my ($s, $r) = $es->bulk(nd(@lines), refresh => 'true');
    return $s == 200 && !$r->{errors};
}

sub open_pit {
    my ($es, $target, $keep) = @_;
    my ($s, $r) = $es->post("/$target/_pit?keep_alive=" . ($keep // '1m'));
    return $s == 200 ? $r->{id} : undef;
}

sub pit_search {
    my ($es, $id, %q) = @_;
    return $es->post('/_search', { pit => { id => $id, keep_alive => '1m' }, %q });
}

# Walks every hit of a PIT with search_after; returns (ids in order, pages,
# every hit's sort values, last status).
sub walk {
    my ($es, $id, %q) = @_;
    my (@ids, @sorts, $after);
    my ($pages, $status) = (0, 200);
    for (1 .. 100) {    # bounded: 2,500 docs at >= 100 per page
        my %body = (%q);
        $body{search_after} = $after if $after;
        my ($s, $r) = pit_search($es, $id, %body);
        $status = $s;
        last unless $s == 200 && @{ $r->{hits}{hits} };
        $pages++;
        push @ids, map { $_->{_id} } @{ $r->{hits}{hits} };
        push @sorts, map { $_->{sort} } @{ $r->{hits}{hits} };
        $after = $r->{hits}{hits}[-1]{sort};
        $id = $r->{pit_id} // $id;
    }
    return (\@ids, $pages, \@sorts, $status);
}

sub once_each {
    my ($ids, $expected) = @_;
    my %seen;
    $seen{$_}++ for @$ids;
    return scalar(keys %seen) == $expected && !grep { $_ != 1 } values %seen;
}

# A query that matches every document and that the direct paging
# (search_page.c) does not take: the general path's answer to compare with.
my $GENERAL = { bool => { filter => [{ match_all => {} }] } };

# Asks for the same page with no query (paged straight from the snapshots
# when the sort allows) and through the general path; returns whether the
# two answers are the same but for took, and the first one.
sub same_page {
    my ($es, $id, %q) = @_;
    my ($s1, $direct) = pit_search($es, $id, %q);
    my ($s2, $general) = pit_search($es, $id, %q, query => $GENERAL);
    delete $_->{took} for $direct, $general;
    my $same = $J->encode([$s1, $direct]) eq $J->encode([$s2, $general]);
    diag($J->encode({ direct => [$s1, $direct], general => [$s2, $general] })) unless $same;
    return ($same, $direct);
}

# The same walk, straight and through the general path: whether they visit
# the same hits with the same sort values in the same pages, and the ids.
sub same_walk {
    my ($es, $id, %q) = @_;
    my @direct = walk($es, $id, %q);
    my @general = walk($es, $id, %q, query => $GENERAL);
    return ($J->encode([@direct[0 .. 3]]) eq $J->encode([@general[0 .. 3]]), $direct[0]);
}

sub first_ids {
    my ($r, $n) = @_;
    return [map { $_->{_id} } @{ $r->{hits}{hits} }[0 .. $n - 1]];
}

# ================= es8 =================
my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
ok(load($es, 'w', 1, 2500), 'loaded 2,500 docs');

# ---- open ----
($st, $b) = $es->post('/w/_pit?keep_alive=1m');
is($st, 200, 'open 200');
ok(defined $b->{id} && $b->{id} =~ /^[A-Za-z0-9_=-]+$/, 'opaque URL-safe base64 id');
is_deeply($b->{_shards}, { total => 1, successful => 1, skipped => 0, failed => 0 }, 'es8 answers _shards');
my $pit = $b->{id};
is($es->stats->{open_pits}, 1, 'stats: one open PIT');

# ---- page through 2,500 docs, ids only, size 1000, search_after on _shard_doc ----
my ($ids, $pages, $sorts) = walk($es, $pit, size => 1000, _source => JSON::PP::false, sort => [{ _shard_doc => 'asc' }],
                                 track_total_hits => JSON::PP::false);
is($pages, 3, '2,500 docs in 3 pages of at most 1000');
is(scalar @$ids, 2500, '2,500 hits');
ok(once_each($ids, 2500), 'every id exactly once');
ok(!grep({ @$_ != 1 } @$sorts), 'sort values: _shard_doc only (no second tiebreaker)');
ok(!grep({ $sorts->[$_][0] != $_ } 0 .. $#$sorts), '_shard_doc is the position in the snapshot (write order)');
($st, $b) = pit_search($es, $pit, size => 2, _source => JSON::PP::false, sort => ['_shard_doc']);
is($b->{pit_id}, $pit, 'the answer carries pit_id');
ok(!exists $b->{hits}{hits}[0]{_source}, '_source false');
is($b->{hits}{total}{value}, 2500, 'track_total_hits as in a normal search');
is($b->{_shards}{total}, 1, '_shards of the PIT');
ok(exists $b->{pit_id} && exists $b->{took} && exists $b->{hits}, 'pit_id, took, hits');
($st, $b) = pit_search($es, $pit, size => 3, sort => [{ _shard_doc => 'desc' }], _source => ['v']);
is_deeply([map { $_->{_id} } @{ $b->{hits}{hits} }], ['d02500', 'd02499', 'd02498'], '_shard_doc desc');
is_deeply($b->{hits}{hits}[0]{_source}, { v => 'orig2500' }, '_source includes');
($st, $b) = pit_search($es, $pit, size => 5, query => { term => { n => 3 } }, sort => ['_shard_doc']);
is($b->{hits}{total}{value}, scalar(grep { $_ % 7 == 3 } 1 .. 2500), 'query within a PIT');
($st, $b) = $es->request('GET', '/_search', { pit => { id => $pit }, size => 1 });
is($st, 200, 'GET /_search with pit, no keep_alive');
ok(!exists $b->{hits}{hits}[0]{sort}, 'no sort: no sort values, no tiebreaker');

# ---- snapshot isolation ----
my $before = $pit;
$es->bulk(nd({ delete => { _index => 'w', _id => 'd00001' } },
             { index => { _index => 'w', _id => 'd00002' } }, { n => 0, v => 'changed' },
             { index => { _index => 'w', _id => 'new1' } }, { n => 0, v => 'new' }), refresh => 'true');
is($es->count('w'), 2500, 'live index: -1 +1');
($ids) = walk($es, $before, size => 1000, sort => ['_shard_doc'], _source => JSON::PP::false);
ok(once_each($ids, 2500) && !grep({ $_ eq 'new1' } @$ids) && grep({ $_ eq 'd00001' } @$ids),
   'the PIT still sees the deleted doc and not the new one');
($st, $b) = pit_search($es, $before, query => { ids => { values => ['d00002'] } });
is($b->{hits}{hits}[0]{_source}{v}, 'orig2', 'the PIT sees the old version of a changed doc');
($st, $b) = pit_search($es, $before, query => { ids => { values => ['d00002'] } }, version => JSON::PP::true,
                       seq_no_primary_term => JSON::PP::true);
is($b->{hits}{hits}[0]{_version}, 1, '... and its old _version');
my $fresh = open_pit($es, 'w');
($ids) = walk($es, $fresh, size => 1000, sort => ['_shard_doc'], _source => JSON::PP::false);
ok(once_each($ids, 2500) && grep({ $_ eq 'new1' } @$ids) && !grep({ $_ eq 'd00001' } @$ids), 'a new PIT sees the changes');
($st, $b) = pit_search($es, $fresh, query => { ids => { values => ['d00002'] } });
is($b->{hits}{hits}[0]{_source}{v}, 'changed', 'a new PIT sees the new version');
($st, $b) = pit_search($es, $fresh, size => 1, sort => [{ _shard_doc => 'desc' }]);
is($b->{hits}{hits}[0]{_id}, 'new1', 'an updated/new doc is last in write order');
# writes while walking: the walk is unaffected
{
    my (@seen, $after);
    for my $page (1 .. 10) {
        my ($s, $r) = pit_search($es, $before, size => 700, sort => ['_shard_doc'], _source => JSON::PP::false,
                                 ($after ? (search_after => $after) : ()));
        last unless @{ $r->{hits}{hits} };
        push @seen, map { $_->{_id} } @{ $r->{hits}{hits} };
        $after = $r->{hits}{hits}[-1]{sort};
        $es->bulk(nd({ delete => { _index => 'w', _id => sprintf('d%05d', 1000 + $page) } }), refresh => 'true');
    }
    ok(once_each(\@seen, 2500), 'deletes between pages do not disturb the walk');
}

# ---- implicit tiebreaker ----
($ids, $pages, $sorts) = walk($es, $before, size => 100, sort => [{ n => 'asc' }], _source => JSON::PP::false);
ok(once_each($ids, 2500), 'sort on a non-unique field + implicit tiebreaker: every doc once');
ok(!grep({ @$_ != 2 } @$sorts), 'each hit carries [n, _shard_doc]');
ok(!grep({ $sorts->[$_ - 1][0] > $sorts->[$_][0] || ($sorts->[$_ - 1][0] == $sorts->[$_][0] && $sorts->[$_ - 1][1] >= $sorts->[$_][1]) } 1 .. $#$sorts),
   'ordered by n, then _shard_doc ascending');
($st, $b) = pit_search($es, $before, size => 2, sort => [{ n => 'asc' }], search_after => [0]);
is($st, 200, 'search_after with as many values as the sort');
is(scalar @{ $b->{hits}{hits}[0]{sort} }, 1, '... then no tiebreaker is added (as ES)');
($st, $b) = pit_search($es, $before, size => 2, sort => [{ n => 'desc' }, { _shard_doc => 'desc' }]);
is(scalar @{ $b->{hits}{hits}[0]{sort} }, 2, 'an explicit trailing _shard_doc is not doubled');
($st, $b) = pit_search($es, $before, size => 2, sort => ['_doc']);
is(scalar @{ $b->{hits}{hits}[0]{sort} }, 2, '_doc gets the tiebreaker too');
($st, $b) = pit_search($es, $before, size => 2, sort => [{ n => 'asc' }], search_after => [0, 1, 2]);
is($st, 400, 'search_after longer than sort + tiebreaker: 400');

# ---- match_all on _shard_doc, paged straight from the snapshots: the general path's answers ----
ok(load($es, 'p', 1, 40), 'a second index of 40 docs');
my $w_n = $es->count('w');
my $one = open_pit($es, 'w');
my $two = open_pit($es, 'p,w');    # p is shard 0, w shard 1
my $shard1 = 1 << 32;
for my $order (qw(asc desc)) {
    for my $case ([$one, 'one index', $w_n], [$two, 'two indices', $w_n + 40]) {
        my ($pid, $what, $n) = @$case;
        my ($same, $ids) = same_walk($es, $pid, size => 300, sort => [{ _shard_doc => $order }], _source => JSON::PP::false,
                                     track_total_hits => JSON::PP::false);
        ok($same && @$ids == $n, "$what, _shard_doc $order: the walk is the general path's, every doc");
    }
    for my $c ([[-1], 'before the first'], [[0], 'at the first'], [[20], 'inside shard 0'], [[39], 'at the end of shard 0'],
               [[1000], 'beyond the end of shard 0'], [[$shard1 - 1], 'between the shards'], [[$shard1], 'at the start of shard 1'],
               [[$shard1 + 1200], 'inside shard 1'], [[$shard1 + $w_n - 1], 'at the last'],
               [[$shard1 + $w_n], 'just beyond the last'], [[5 << 32], 'beyond every shard']) {
        my ($sa, $what) = @$c;
        my ($same) = same_page($es, $two, size => 25, from => 3, sort => [{ _shard_doc => $order }], search_after => $sa,
                               track_total_hits => JSON::PP::true, version => JSON::PP::true, _source => ['v']);
        ok($same, "_shard_doc $order, search_after $what, from 3: the general path's page");
    }
}
my ($same, $r) = same_page($es, $two, size => 3, sort => [{ _shard_doc => 'asc' }], search_after => [$shard1 - 1]);
ok($same && $r->{hits}{hits}[0]{_index} eq 'w' && $r->{hits}{hits}[0]{sort}[0] == $shard1 && $r->{hits}{total}{value} == $w_n + 40,
   'asc after the end of shard 0: shard 1 from its start, total hits of every doc');
($same, $r) = same_page($es, $two, size => 3, from => 2, sort => [{ _shard_doc => 'desc' }], search_after => [$shard1]);
ok($same && $r->{hits}{hits}[0]{_id} eq 'd00038' && $r->{hits}{hits}[0]{sort}[0] == 37, 'desc after the start of shard 1, from 2: p\'s third last');
($same, $r) = same_page($es, $two, size => 5, sort => [{ _shard_doc => 'desc' }], search_after => [5 << 32]);
ok($same && $r->{hits}{hits}[0]{sort}[0] == $shard1 + $w_n - 1, 'desc beyond every shard: from the last doc');
($same, $r) = same_page($es, $one, size => 0, sort => ['_shard_doc']);
ok($same && !@{ $r->{hits}{hits} } && $r->{hits}{total}{value} == $w_n, 'size 0: total hits only');
($same, $r) = same_page($es, $one, size => 10, from => 9990, sort => [{ _shard_doc => 'desc' }], search_after => [100]);
ok($same && !@{ $r->{hits}{hits} }, 'from beyond what search_after leaves: no hits');
($st, $b) = pit_search($es, $one, size => 4, sort => ['_shard_doc'], search_after => [10], query => { match_all => { boost => 2 } });
my ($st2, $b2) = pit_search($es, $one, size => 4, sort => ['_shard_doc'], search_after => [10], query => $GENERAL);
is_deeply([$st, $b->{hits}], [$st2, $b2->{hits}], 'an explicit match_all pages as no query');
is(($es->delete('/_pit', { id => $_ }))[0], 200, 'closed') for $one, $two;

# ---- multi-index PIT: shard index in _shard_doc ----
ok(load($es, 'x', 1, 3), 'second index');
$es->post('/_aliases', { actions => [{ add => { index => 'x', alias => 'xa' } }] });
my $multi = open_pit($es, 'xa,w');
($st, $b) = pit_search($es, $multi, size => 3, sort => [{ _shard_doc => 'desc' }]);
is($b->{_shards}{total}, 2, 'alias + name: two indices');
is_deeply([map { $_->{_index} } @{ $b->{hits}{hits} }], [qw(x x x)], 'shards in index-name order: x is shard 1');
is($b->{hits}{hits}[0]{sort}[0], (1 << 32) | 2, '_shard_doc = shard index << 32 | position');
my $wild = open_pit($es, 'w*');
($st, $b) = pit_search($es, $wild, size => 0);
is($b->{hits}{total}{value}, $es->count('w'), 'wildcard target');
my $none = open_pit($es, 'nomatch*');
($st, $b) = pit_search($es, $none, size => 0);
ok($st == 200 && $b->{hits}{total}{value} == 0 && $b->{_shards}{total} == 0, 'a PIT over no index answers empty');
($st, $b) = $es->delete('/_pit', { id => $multi });
is_deeply([$st, $b], [200, { succeeded => JSON::PP::true, num_freed => 2 }], 'close frees one context per index');

# ---- errors ----
($st, $b) = $es->post('/w/_search', { pit => { id => $before } });
is($st, 400, 'index in the path with pit: 400');
is($b->{error}{type}, 'action_request_validation_exception', '... action_request_validation_exception');
is($b->{error}{reason}, 'Validation Failed: 1: [indices] cannot be used with point in time. Do not specify any index with point in time.;',
   '... ES message');
($st, $b) = $es->post('/_search?routing=r&preference=_local', { pit => { id => $before } });
is($b->{error}{reason}, 'Validation Failed: 1: [routing] cannot be used with point in time;2: [preference] cannot be used with point in time;',
   'routing and preference refused with a PIT');
($st, $b) = $es->post('/w/_search', { sort => ['_shard_doc'] });
is($st, 400, '_shard_doc without pit: 400');
is($b->{error}{reason}, 'Validation Failed: 1: [_shard_doc] sort field cannot be used without [point in time];', '... ES message');
($st, $b) = $es->get('/w/_search?sort=_shard_doc:desc');
is($st, 400, '... also as ?sort=');
($st, $b) = $es->post('/w/_search', { sort => ['_doc'], size => 1 });
is($st, 200, '_doc without pit still fine');

($st, $b) = $es->post('/w/_pit');
is($st, 400, 'keep_alive missing: 400');
is($b->{error}{reason}, 'Validation Failed: 1: [keep_alive] is not specified;', '... ES message');
($st, $b) = $es->post('/w/_pit?keep_alive=abc');
is_deeply([$st, $b->{error}{type}, $b->{error}{reason}],
          [400, 'illegal_argument_exception', 'failed to parse setting [keep_alive] with value [abc] as a time value: unit is missing or unrecognized'],
          'bad keep_alive: ES 400');
($st, $b) = $es->post('/w/_pit?keep_alive=1.5m');
is($b->{error}{reason}, 'failed to parse [1.5m], fractional time values are not supported', 'fractional keep_alive');
($st, $b) = $es->post('/w/_pit?keep_alive=-5m');
like($b->{error}{reason}, qr/negative durations are not supported/, 'negative keep_alive');
($st, $b) = $es->post('/w/_pit?keep_alive=5M');
like($b->{error}{reason}, qr/unit is missing or unrecognized/, 'M is not minutes');
($st, $b) = $es->post('/nope/_pit?keep_alive=1m');
is_deeply([$st, $b->{error}{type}], [404, 'index_not_found_exception'], 'missing index: 404');
($st, $b) = $es->post('/nope/_pit?keep_alive=1m&ignore_unavailable=true');
is($st, 200, 'ignore_unavailable');
$es->delete('/_pit', { id => $b->{id} });
($st, $b) = $es->get('/w/_pit?keep_alive=1m');
is($st, 405, 'GET /{index}/_pit: 405');
($st, $b) = $es->post('/w/_search/point_in_time?keep_alive=1m');
is($st, 400, "OpenSearch's create route is unknown to es8");
($st, $b) = $es->post('/_pit?keep_alive=1m');
is($b->{error}{reason}, 'Validation Failed: 1: [index] is not specified;', 'POST /_pit without index');
($st, $b) = $es->post('/_search', { pit => { id => $before, keep_alive => 'soon' } });
is_deeply([$st, $b->{error}{type}, $b->{error}{caused_by}{type}], [400, 'x_content_parse_exception', 'illegal_argument_exception'],
          'bad pit.keep_alive: 400');
($st, $b) = $es->post('/_search', { pit => { keep_alive => '1m' } });
is_deeply([$st, $b->{error}{reason}], [400, 'point in time id is not provided'], 'pit without id');
($st, $b) = $es->post('/_search', { pit => { id => $before, extra => 1 } });
is($b->{error}{type}, 'x_content_parse_exception', 'unknown key in pit');

# ---- close ----
my $tmp = open_pit($es, 'w');
is($es->stats->{open_pits}, 5, 'stats counts open PITs');
($st, $b) = $es->delete('/_pit', { id => $tmp });
is_deeply([$st, $b], [200, { succeeded => JSON::PP::true, num_freed => 1 }], 'close: succeeded, num_freed 1');
is($es->stats->{open_pits}, 4, 'stats after close');
($st, $b) = $es->delete('/_pit', { id => $tmp });
is_deeply([$st, $b], [404, { succeeded => JSON::PP::false, num_freed => 0 }], 'closing it again: 404, num_freed 0');

# ---- unknown / closed id ----
($st, $b) = pit_search($es, $tmp);
is($st, 404, 'search with a closed PIT: 404');
is($b->{error}{type}, 'search_phase_execution_exception', '... search_phase_execution_exception');
is($b->{error}{root_cause}[0]{type}, 'search_context_missing_exception', '... root cause search_context_missing_exception');
like($b->{error}{root_cause}[0]{reason}, qr/^No search context found for id \[\d+\]$/, '... ES reason');
is($b->{error}{failed_shards}[0]{index}, 'w', '... naming the index');
($st, $b) = pit_search($es, 'bogus');
is_deeply([$st, $b->{error}{type}], [400, 'illegal_argument_exception'], 'an id esd never issued: 400 (ES cannot decode it)');
($st, $b) = $es->delete('/_pit', { id => 'a.b' });
is_deeply([$st, $b->{error}{reason}], [400, 'Illegal base64 character 2e'], 'close with a non-base64 id');
($st, $b) = $es->delete('/_pit', {});
is_deeply([$st, $b->{error}{reason}], [400, 'search context id is is not provided'], 'close without id');

# ---- expiry by keep_alive ----
my $n_before = $es->stats->{open_pits};
my $renewed = open_pit($es, 'w', '5s');
($st) = pit_search($es, $renewed);    # keep_alive 1m from now on: max(5s, 1m)
is($st, 200, 'used within its keep_alive');
my $short = open_pit($es, 'w', '1s');
ok(wait_until(sub { $es->stats->{open_pits} == $n_before + 1 }, 20), 'the unused 1s PIT expires (polled)');
($st, $b) = pit_search($es, $short);
is($st, 404, 'expired PIT: 404');
($st) = pit_search($es, $renewed);
is($st, 200, 'the renewed PIT is still open');
($st, $b) = $es->get('/_esd/pits');
ok((grep { $_->{id} eq $renewed } @{ $b->{pits} }) && !(grep { $_->{id} eq $short } @{ $b->{pits} }), 'GET /_esd/pits lists the open ones');

# ---- expiry by /_esd/pits/expire ----
($st, $b) = $es->post('/_esd/pits/expire');
is($st, 200, 'POST /_esd/pits/expire');
is($b->{expired}, $n_before + 1, 'expired every open PIT');
is($es->stats->{open_pits}, 0, 'none left');
($st) = pit_search($es, $renewed);
is($st, 404, 'a walk must restart');

# ---- deleting the index frees its PIT ----
my $doomed = open_pit($es, 'x');
$es->delete('/x');
($st, $b) = pit_search($es, $doomed);
is($st, 404, 'PIT of a deleted index: 404');
is($es->stats->{open_pits}, 0, '... and freed');

# ---- the bound on open PITs ----
my $opened = 0;
$opened++ while $opened < 400 && open_pit($es, 'w');
is($opened, 300, 'search.max_open_pit_context: 300 open');
($st, $b) = $es->post('/w/_pit?keep_alive=1m');
is($st, 429, 'the 301st: 429');
is($b->{error}{root_cause}[0]{reason},
   'Trying to create too many Point In Time contexts. Must be less than or equal to: [300]. This limit can be set by changing the [search.max_open_pit_context] setting.',
   '... OpenSearch message');
$es->set_config({ max_open_pits => 301 });
ok(open_pit($es, 'w'), 'max_open_pits is configurable');
$es->set_config({ max_open_pits => 300 });
$es->reset;
is($es->stats->{open_pits}, 0, '/_esd/reset drops PITs');

# ---- _mget as ES 8 answers ecp's verify run ----
$es->bulk(nd({ index => { _index => 'm', _id => '1' } }, { a => 1 },
             { index => { _index => 'm', _id => '2', routing => 'r' } }, { a => 2 }), refresh => 'true');
($st, $b) = $es->post('/m/_mget?_source=false', { docs => [{ _id => '1' }, { _id => '2', routing => 'r' }, { _id => '3' }] });
is($st, 200, '_mget 200');
is_deeply($b->{docs}[0], { _index => 'm', _id => '1', _version => 1, _seq_no => 0, _primary_term => 1, found => JSON::PP::true },
          'found: _version, _seq_no, _primary_term, found, no _source');
is_deeply($b->{docs}[1], { _index => 'm', _id => '2', _version => 1, _seq_no => 1, _primary_term => 1, _routing => 'r', found => JSON::PP::true },
          'with routing: _routing too');
is_deeply($b->{docs}[2], { _index => 'm', _id => '3', found => JSON::PP::false }, 'missing: found false');

$es->stop;
is($es->exit_status, 0, 'es8 esd exited cleanly');

# ================= es7 =================
{
    my $e7 = EsdServer->start(flavor => 'es7', extra_args => ['--no-refresh-timer']);
    ok(load($e7, 'w', 1, 250), 'es7: loaded');
    ($st, $b) = $e7->post('/w/_pit?keep_alive=1m');
    is_deeply([$st, [sort keys %$b]], [200, ['id']], 'es7 open answers the id only');
    my $id = $b->{id};
    my ($ids7, $pages7, $sorts7) = walk($e7, $id, size => 100, sort => [{ n => 'desc' }]);
    ok(once_each($ids7, 250) && !grep({ @$_ != 2 } @$sorts7), 'es7: implicit tiebreaker (7.12+)');
    ($st, $b) = pit_search($e7, $id, size => 1, sort => ['_shard_doc']);
    is_deeply([$st, $b->{hits}{hits}[0]{_type}, $b->{pit_id}], [200, '_doc', $id], 'es7: _shard_doc, _type, pit_id');
    ($st, $b) = $e7->post('/w/_search', { sort => ['_shard_doc'] });
    is($st, 400, 'es7: _shard_doc without pit refused');
    # _id sorts with the implicit tiebreaker [_id, _shard_doc]; v and w share the _ids d00200 to d00250
    my @v_order = map { 200 + ($_ * 37) % 101 } 0 .. 100;
    my %v_pos;    # _shard_doc in v (shard 0) of d<n>
    @v_pos{@v_order} = 0 .. 100;
    ok(load_ids($e7, 'v', @v_order), 'es7: a second index, _ids written out of order');
    my $vw = open_pit($e7, 'v,w');
    for my $order (qw(asc desc)) {
        my ($same, $ids) = same_walk($e7, $vw, size => 33, sort => [{ _id => $order }], _source => JSON::PP::false);
        ok($same && @$ids == 351, "es7, _id $order over two indices with shared _ids: the general path's walk");
        for my $c ([['', 0], 'before every _id'], [['d00220', $v_pos{220}], 'at v\'s d00220'], [['d00220', $shard1 + 219], 'at w\'s d00220'],
                   [['d00220', 1 << 40], 'past both d00220'], [['d00100x', 0], 'between two _ids'], [['zzz', 0], 'beyond every _id'],
                   [['d00220'], 'with no tiebreaker value'], [[JSON::PP::true, 5], 'a boolean _id']) {
            my ($sa, $what) = @$c;
            my ($same) = same_page($e7, $vw, size => 20, from => 1, sort => [{ _id => $order }], search_after => $sa);
            ok($same, "es7, _id $order, search_after $what: the general path's page");
        }
    }
    # a boolean _id compares equal to every _id, so _shard_doc alone decides
    ($same, $r) = same_page($e7, $vw, size => 400, sort => [{ _id => 'asc' }], search_after => [JSON::PP::true, $shard1 + 50],
                            _source => JSON::PP::false);
    ok($same && @{ $r->{hits}{hits} } == 300 && $r->{hits}{hits}[0]{_id} eq 'd00052',
       'es7: search_after a boolean _id: from the first hit whose _shard_doc is greater, then every later hit');
    ($same, $r) = same_page($e7, $vw, size => 3, sort => [{ _id => 'asc' }], search_after => ['d00220', $v_pos{220}]);
    ok($same && $J->encode([map { [$_->{_index}, $_->{sort}] } @{ $r->{hits}{hits} }])
                eq $J->encode([['w', ['d00220', $shard1 + 219]], ['v', ['d00221', $v_pos{221}]], ['w', ['d00221', $shard1 + 220]]]),
       'es7: after v\'s d00220 comes w\'s, then d00221 in shard order');
    is(($e7->delete('/_pit', { id => $vw }))[0], 200, 'es7: closed');
    ($st, $b) = $e7->delete('/_pit', { id => $id });
    is_deeply([$st, $b], [200, { succeeded => JSON::PP::true, num_freed => 1 }], 'es7: close');
    $e7->stop;
    is($e7->exit_status, 0, 'es7 esd exited cleanly');
}

# ================= OpenSearch =================
{
    my $os = EsdServer->start(flavor => 'opensearch', extra_args => ['--no-refresh-timer']);
    ok(load($os, 'w', 1, 250), 'opensearch: loaded');
    ($st, $b) = $os->post('/w/_search/point_in_time?keep_alive=1m');
    is($st, 200, 'create PIT 200');
    is_deeply([sort keys %$b], [qw(_shards creation_time pit_id)], 'pit_id, _shards, creation_time');
    ok(abs($b->{creation_time} / 1000 - time) < 60, 'creation_time is epoch ms');
    my $id = $b->{pit_id};
    ($st, $b) = $os->post('/_search', { pit => { id => $id, keep_alive => '1m' }, size => 2, sort => [{ n => 'asc' }] });
    is($b->{pit_id}, $id, 'a search with pit returns pit_id');
    is(scalar @{ $b->{hits}{hits}[0]{sort} }, 1, 'no implicit tiebreaker on OpenSearch 2.x');
    ($st, $b) = $os->post('/_search', { pit => { id => $id }, sort => ['_shard_doc'] });
    is($st, 400, '_shard_doc with pit: 400 on OpenSearch 2.x');
    like($b->{error}{root_cause}[0]{reason}, qr/No mapping found for \[_shard_doc\] in order to sort on/, '... as an unmapped field');
    my ($ids_os) = walk($os, $id, size => 100, sort => [{ _id => 'asc' }], _source => JSON::PP::false);
    ok(once_each($ids_os, 250), 'paging on _id with a PIT visits every doc once');
    # _id paged straight from the snapshots; v and w share the _ids d00200 to d00250
    ok(load_ids($os, 'v', reverse 200 .. 300), 'opensearch: a second index, _ids written in reverse order');
    ($st, $b) = $os->post('/v,w/_search/point_in_time?keep_alive=1m');
    my $vw = $b->{pit_id};
    for my $order (qw(asc desc)) {
        # a walk on _id alone sees every _id, but a page ending between two
        # indices' copies of an _id skips the next copies (as on OpenSearch)
        for my $case ([$id, 'one index', 250], [$vw, 'two indices', 300]) {
            my ($pid, $what, $n) = @$case;
            my ($same, $ids) = same_walk($os, $pid, size => 37, sort => [{ _id => $order }], _source => JSON::PP::false,
                                         track_total_hits => JSON::PP::false);
            my %distinct = map { $_ => 1 } @$ids;
            ok($same && keys %distinct == $n, "opensearch, $what, _id $order: the general path's walk, every _id");
            for my $c ([[''], 'before every _id'], [['d00001'], 'at the first'], [['d00100'], 'in the middle'],
                       [['d00100x'], 'between two _ids'], [['d00220'], 'at a shared _id'], [['d00250'], 'at w\'s last'],
                       [['d00300'], 'at the last'], [['zzz'], 'beyond every _id'], [[JSON::PP::true], 'a boolean'],
                       [[5], 'a number'], [[undef], 'null']) {
                my ($sa, $what2) = @$c;
                my ($same) = same_page($os, $pid, size => 20, from => 2, sort => [{ _id => $order }], search_after => $sa,
                                       version => JSON::PP::true);
                ok($same, "opensearch, $what, _id $order, search_after $what2: the general path's page");
            }
        }
    }
    ($same, $r) = same_page($os, $vw, size => 4, sort => [{ _id => 'desc' }], search_after => ['d00201']);
    ok($same && $J->encode([map { [$_->{_index}, $_->{_id}] } @{ $r->{hits}{hits} }])
                eq $J->encode([['v', 'd00200'], ['w', 'd00200'], ['w', 'd00199'], ['w', 'd00198']]),
       'opensearch, _id desc: a shared _id from both indices, in index order');
    ($same, $r) = same_page($os, $vw, size => 2, sort => [{ _id => 'asc' }], search_after => ['d00250']);
    ok($same && $J->encode(first_ids($r, 2)) eq $J->encode(['d00251', 'd00252']), 'opensearch: search_after skips every index\'s copy of the _id');
    ($st, $b) = $os->delete('/_search/point_in_time', { pit_id => [$vw] });
    is($st, 200, 'opensearch: closed');
    ($st, $b) = $os->post('/w/_search', { pit => { id => $id } });
    like($b->{error}{reason}, qr/\[indices\] cannot be used with point in time/, 'index in the path refused');
    ($st, $b) = $os->post('/w/_search/point_in_time');
    is($b->{error}{reason}, 'Validation Failed: 1: keep alive not specified;', 'keep_alive missing: OpenSearch message');
    ($st) = $os->post('/w/_search/point_in_time?keep_alive=1m');
    is($st, 200, 'a second PIT');
    ($st, $b) = $os->get('/_search/point_in_time/_all');
    is(scalar @{ $b->{pits} }, 2, 'list all PITs');
    ok(!grep({ !exists $_->{keep_alive} || !exists $_->{creation_time} } @{ $b->{pits} }), '... with keep_alive and creation_time');
    ($st, $b) = $os->delete('/_search/point_in_time', { pit_id => [$id] });
    is_deeply([$st, $b], [200, { pits => [{ successful => JSON::PP::true, pit_id => $id }] }], 'delete by id');
    ($st, $b) = $os->delete('/_search/point_in_time', { pit_id => $id });
    is_deeply([$st, $b->{pits}[0]{successful}], [200, JSON::PP::true], 'deleting it again: still successful (OpenSearch)');
    ($st, $b) = $os->delete('/_search/point_in_time', {});
    is($b->{error}{reason}, 'Validation Failed: 1: no pit ids specified;', 'delete without ids');
    is($os->stats->{open_pits}, 1, 'stats');
    ($st, $b) = $os->delete('/_search/point_in_time/_all');
    is_deeply([$st, scalar @{ $b->{pits} }], [200, 1], 'delete _all');
    is($os->stats->{open_pits}, 0, 'none left');
    ($st, $b) = $os->post('/_pit?keep_alive=1m');
    is($st, 405, '/_pit is no endpoint on OpenSearch (POST /{index}: 405)');
    ($st, $b) = $os->delete('/_pit', { id => 'x' });
    is_deeply([$st, $b->{error}{type}], [404, 'index_not_found_exception'], 'DELETE /_pit: an index named _pit');
    ($st, $b) = $os->post('/w/_pit?keep_alive=1m');
    is($st, 400, 'POST /{index}/_pit: no handler');
    $os->set_config({ max_open_pits => 2 });
    $os->post('/w/_search/point_in_time?keep_alive=1m') for 1 .. 2;
    ($st, $b) = $os->post('/w/_search/point_in_time?keep_alive=1m');
    is_deeply([$st, $b->{error}{root_cause}[0]{type}], [429, 'rejected_execution_exception'], 'the bound: 429 rejected_execution_exception');
    $os->stop;
    is($os->exit_status, 0, 'opensearch esd exited cleanly');
}

done_testing();
