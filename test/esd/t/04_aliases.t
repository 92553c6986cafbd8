# esd: aliases (POST /_aliases, GET and HEAD _alias): atomic swaps,
# must_exist, write index, reads.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use EsdServer;

my $J = JSON::PP->new->canonical;
sub nd { join '', map { (ref $_ ? $J->encode($_) : $_) . "\n" } @_ }
my $T = JSON::PP::true;

my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my ($st, $b);

$es->put("/$_", {}) for qw(v1 v2 v3);
$es->bulk(nd({ index => { _index => 'v1', _id => 'a' } }, { from => 'v1' },
             { index => { _index => 'v2', _id => 'b' } }, { from => 'v2' }), refresh => 'true');

($st, $b) = $es->post('/_aliases', { actions => [{ add => { index => 'v1', alias => 'prod' } }] });
is($st, 200, 'add alias');
is($b->{acknowledged}, $T, 'acknowledged');
is($b->{errors}, JSON::PP::false, 'errors false (ES >= 8.14)');
($st, $b) = $es->get('/_alias/prod');
is_deeply($b, { v1 => { aliases => { prod => {} } } }, 'GET /_alias/{name} keyed by index, empty definition');
($st) = $es->head('/_alias/prod');
is($st, 200, 'HEAD alias');
($st) = $es->head('/_alias/nope');
is($st, 404, 'HEAD missing alias');
($st, $b) = $es->get('/_alias/nope');
is($st, 404, 'GET missing alias 404');
is($b->{error}, 'alias [nope] missing', 'string error');
($st, $b) = $es->get('/_alias/prod,nope,other');
is($b->{error}, 'aliases [nope,other] missing', 'several missing');
ok($b->{v1}{aliases}{prod}, 'found aliases still listed');
($st, $b) = $es->get('/v1/_alias/prod');
ok($b->{v1}{aliases}{prod}, 'GET /{index}/_alias/{name}');
($st, $b) = $es->get('/_alias');
is_deeply([sort keys %$b], [qw(v1 v2 v3)], 'GET /_alias lists every index');
is_deeply($b->{v3}, { aliases => {} }, 'index without aliases');
($st, $b) = $es->get('/_alias/*');
is_deeply([keys %$b], ['v1'], '/_alias/* only indices with aliases');

# write through a single-index alias; read through it
$b = $es->bulk(nd({ index => { _index => 'prod', _id => 'w1' } }, { via => 'alias' }));
is($b->{items}[0]{index}{_index}, 'v1', 'write through alias lands in the index');
ok($es->doc('v1', 'w1'), 'doc in v1');
($st, $b) = $es->put('/prod/_doc/w2', { via => 'alias' });
is($b->{_index}, 'v1', 'single doc write through alias');
ok($es->doc('prod', 'w2'), 'GET through alias');

# atomic swap with must_exist
($st, $b) = $es->post('/_aliases', { actions => [
    { remove => { index => 'v1', alias => 'prod', must_exist => $T } },
    { add    => { index => 'v2', alias => 'prod' } },
] });
is($st, 200, 'swap');
($st, $b) = $es->get('/_alias/prod');
is_deeply([keys %$b], ['v2'], 'alias moved to v2');
is($es->count('prod'), 1, 'reads go to v2');

# failed swap applies nothing
($st, $b) = $es->post('/_aliases', { actions => [
    { add    => { index => 'v3', alias => 'prod' } },
    { remove => { index => 'v1', alias => 'prod', must_exist => $T } },
] });
is($st, 404, 'must_exist on a missing alias: 404');
is($b->{error}{type}, 'aliases_not_found_exception', 'aliases_not_found_exception');
($st, $b) = $es->get('/_alias/prod');
is_deeply([keys %$b], ['v2'], 'nothing applied (v3 not added)');
($st, $b) = $es->post('/_aliases', { actions => [
    { add => { index => 'v3', alias => 'prod' } },
    { add => { index => 'nope', alias => 'prod' } },
] });
is($st, 404, 'missing index in add: 404');
($st, $b) = $es->get('/_alias/prod');
is_deeply([keys %$b], ['v2'], 'nothing applied');

# must_exist only on remove
($st, $b) = $es->post('/_aliases', { actions => [{ add => { index => 'v3', alias => 'x', must_exist => $T } }] });
is($st, 400, 'must_exist on add 400');
like($b->{error}{reason}, qr/\[must_exist\] is unsupported for \[ADD\]/, 'must_exist reason');
($st) = $es->post('/_aliases', { actions => [{ remove_index => { index => 'v3', must_exist => $T } }] });
is($st, 400, 'must_exist on remove_index 400');

# ES >= 8.14 partial success when must_exist is not set
($st, $b) = $es->post('/_aliases', { actions => [
    { add    => { index => 'v3', alias => 'side' } },
    { remove => { index => 'v1', alias => 'ghost' } },
] });
is($st, 200, 'remove of missing alias without must_exist: 200');
is($b->{errors}, $T, 'errors true');
is($b->{action_results}[1]{status}, 404, 'action_results per action');
is($b->{action_results}[1]{error}{type}, 'aliases_not_found_exception', 'action result error');
($st) = $es->head('/_alias/side');
is($st, 200, 'other actions applied');

# several indices, no write index -> per-item 400; is_write_index selects
($st) = $es->post('/_aliases', { actions => [{ add => { indices => ['v1', 'v2'], alias => 'multi' } }] });
is($st, 200, 'alias on two indices');
is($es->count('multi'), 2, 'reads through alias read all indices');
$b = $es->bulk(nd({ index => { _index => 'multi', _id => 'm1' } }, { a => 1 }));
is($b->{items}[0]{index}{status}, 400, 'no write index: 400');
like($b->{items}[0]{index}{error}{reason}, qr/no write index is defined for alias \[multi\]/, 'no write index reason');
($st, $b) = $es->get('/multi/_doc/a');
is($st, 400, 'single-doc GET through multi-index alias 400');
($st) = $es->post('/_aliases', { actions => [{ add => { index => 'v2', alias => 'multi', is_write_index => $T } }] });
is($st, 200, 'set is_write_index');
$b = $es->bulk(nd({ index => { _index => 'multi', _id => 'm1' } }, { a => 1 }));
is($b->{items}[0]{index}{_index}, 'v2', 'write index receives writes');
($st, $b) = $es->get('/_alias/multi');
is($b->{v2}{aliases}{multi}{is_write_index}, $T, 'is_write_index shown');
ok(!exists $b->{v1}{aliases}{multi}{is_write_index}, 'unset is_write_index omitted');
($st, $b) = $es->post('/_aliases', { actions => [{ add => { index => 'v1', alias => 'multi', is_write_index => $T } }] });
is($st, 400, 'two write indices refused');
$b = $es->bulk(nd({ index => { _index => 'multi', _id => 'm2' } }, { a => 1 }), require_alias => 'true');
is($b->{items}[0]{index}{status}, 201, 'require_alias satisfied by an alias');

# alias name rules
($st, $b) = $es->post('/_aliases', { actions => [{ add => { index => 'v1', alias => 'v2' } }] });
is($st, 400, 'alias named like an index 400');
is($b->{error}{type}, 'invalid_alias_name_exception', 'invalid_alias_name_exception');
($st, $b) = $es->put('/prod', {});
is($st, 400, 'index named like an alias 400');
($st, $b) = $es->post('/_aliases', { actions => [] });
is($st, 400, 'empty actions 400');
($st, $b) = $es->post('/_aliases', { actions => [{ rename => {} }] });
is($st, 400, 'unknown action 400');

# remove_index replaces an index by an alias of the same name, atomically
$es->put('/legacy', {});
($st, $b) = $es->post('/_aliases', { actions => [
    { add => { index => 'v3', alias => 'legacy' } },
    { remove_index => { index => 'legacy' } },
] });
is($st, 400, 'adding alias before removing the same-named index fails');
($st, $b) = $es->post('/_aliases', { actions => [
    { remove_index => { index => 'legacy' } },
    { add => { index => 'v3', alias => 'legacy' } },
] });
is($st, 200, 'remove_index then add alias of that name');
($st, $b) = $es->get('/legacy');
ok(exists $b->{v3}, 'GET /legacy now resolves to v3');
($st, $b) = $es->post('/_aliases', { actions => [{ remove_index => { index => 'side' } }] });
is($st, 400, 'remove_index on an alias 400');

# aliases given at index creation
($st) = $es->put('/v4', { aliases => { created => { is_write_index => $T } } });
($st, $b) = $es->get('/_alias/created');
is_deeply($b, { v4 => { aliases => { created => { is_write_index => $T } } } }, 'aliases at create');

# deleting an index drops its aliases
$es->delete('/v4');
($st) = $es->head('/_alias/created');
is($st, 404, 'alias removed with its index');

done_testing();
