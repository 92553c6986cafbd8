# esd: per-item 403, as Elasticsearch answers a bulk item it refuses for
# the cluster's setup rather than for the document: an index write block
# (index.blocks.write, index.blocks.read_only: cluster_block_exception) and
# a user without write privileges on the index (the auth fault's
# "indices": security_exception).
use strict;
use warnings;
use Test::More;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use EsdServer;

EsdServer->require_stand_in('index blocks and per-index privileges of the auth fault');

my $J = JSON::PP->new->canonical;
sub nd { join '', map { (ref $_ ? $J->encode($_) : $_) . "\n" } @_ }

my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my ($st, $b);

sub bulk_as {
    my ($auth, $body) = @_;
    my %h = ('Content-Type' => 'application/x-ndjson');
    $h{Authorization} = $auth if $auth;
    return $es->request('POST', '/_bulk?refresh=true', $body, \%h);
}
sub basic { 'Basic ' . encode_base64($_[0], '') }
sub statuses { [ map { (values %$_)[0]{status} } @{ $_[0]{items} } ] }
sub item { (values %{ $_[0]{items}[ $_[1] ] })[0] }

# ---- index.blocks.write ------------------------------------------------------
($st) = $es->put('/open', {});
($st) = $es->put('/blk', { settings => { index => { blocks => { write => JSON::PP::true } } } });
is($st, 200, 'create an index with index.blocks.write: true');
($st, $b) = $es->get('/blk/_settings?flat_settings=true');
is($b->{blk}{settings}{'index.blocks.write'}, 'true', 'the setting reads back as "true"');

($st, $b) = bulk_as(undef, nd(
    { index  => { _index => 'blk', _id => '1' } }, { a => 1 },
    { create => { _index => 'blk', _id => '2' } }, { a => 2 },
    { update => { _index => 'blk', _id => '3' } }, { doc => { a => 3 }, doc_as_upsert => JSON::PP::true },
    { delete => { _index => 'blk', _id => '4' } },
    { index  => { _index => 'open', _id => '1' } }, { a => 1 },
));
is($st, 200, 'a bulk into a write-blocked index is answered 200');
ok($b->{errors}, 'errors: true');
is_deeply(statuses($b), [403, 403, 403, 403, 201], 'every write to blk is 403, the other index is unaffected');
is(item($b, 0)->{error}{type}, 'cluster_block_exception', 'error type cluster_block_exception');
is(item($b, 3)->{error}{reason}, 'index [blk] blocked by: [FORBIDDEN/8/index write (api)];',
   "ES's reason text, for a delete too");
is($es->count('blk'), 0, 'nothing was written to blk');

# a document written before the block survives a delete while blocked
($st) = $es->put('/blk/_settings', { index => { blocks => { write => JSON::PP::false } } });
is($st, 200, 'PUT _settings index.blocks.write: false');
($st, $b) = bulk_as(undef, nd({ index => { _index => 'blk', _id => 'kept' } }, { a => 1 }));
is_deeply(statuses($b), [201], 'writes work again');
($st) = $es->put('/blk/_settings', { 'index.blocks.write' => 'true' });
is($st, 200, 'block again (dotted key, string value)');
($st, $b) = bulk_as(undef, nd({ delete => { _index => 'blk', _id => 'kept' } }));
is_deeply(statuses($b), [403], 'a delete of an existing document is blocked');
ok(defined $es->doc('blk', 'kept'), 'and the document is still there');

# through an alias: the concrete index is named
($st) = $es->post('/_aliases', { actions => [ { add => { index => 'blk', alias => 'blk-alias' } } ] });
($st, $b) = bulk_as(undef, nd({ index => { _index => 'blk-alias', _id => '9' } }, { a => 9 }));
is(item($b, 0)->{error}{reason}, 'index [blk] blocked by: [FORBIDDEN/8/index write (api)];',
   'a write through an alias names the blocked index');

# single-document writes: the whole request is 403
($st, $b) = $es->put('/blk/_doc/5', { a => 5 });
is($st, 403, 'PUT _doc into a blocked index: 403');
is($b->{error}{type}, 'cluster_block_exception', '... cluster_block_exception');

($st) = $es->put('/blk/_settings', { 'index.blocks.write' => undef });
is($st, 200, 'null resets the block');
($st, $b) = bulk_as(undef, nd({ index => { _index => 'blk', _id => '6' } }, { a => 6 }));
is_deeply(statuses($b), [201], 'and writes work again');

# index.blocks.read_only blocks writes too, with its own block id
($st) = $es->put('/blk/_settings', { 'index.blocks.read_only' => JSON::PP::true });
($st, $b) = bulk_as(undef, nd({ index => { _index => 'blk', _id => '7' } }, { a => 7 }));
is(item($b, 0)->{error}{reason}, 'index [blk] blocked by: [FORBIDDEN/5/index read-only (api)];',
   'index.blocks.read_only: FORBIDDEN/5');
($st) = $es->put('/blk/_settings', { 'index.blocks.read_only' => JSON::PP::false });

($st, $b) = $es->put('/blk/_settings', { 'index.blocks.write' => 'yes' });
is($st, 400, 'a block that is not true or false: 400');
like($b->{error}{reason}, qr/only \[true\] or \[false\] are allowed/, "... with ES's reason");
($st, $b) = $es->put('/bad', { settings => { 'index.blocks.write' => 'maybe' } });
is($st, 400, '... also at create');

# ---- per-index write privileges (auth fault) -------------------------------------
$es->set_faults({ auth => { basic => 'app:pw', indices => [ 'orders*' ], roles => [ 'writer', 'reader' ] } });
is_deeply($es->faults, { auth => { basic => 'app:pw', indices => [ 'orders*' ], roles => [ 'writer', 'reader' ] } },
          'GET /_esd/faults shows the users and their indices');
($st) = bulk_as(undef, nd({ index => { _index => 'orders-1', _id => '1' } }, { a => 1 }));
is($st, 401, 'no credentials: still 401');
($st, $b) = bulk_as(basic('app:pw'), nd(
    { index  => { _index => 'orders-1', _id => '1' } }, { a => 1 },
    { index  => { _index => 'other', _id => '1' } }, { a => 1 },
    { delete => { _index => 'open', _id => '1' } },
));
is($st, 200, 'a restricted user gets a bulk answer');
is_deeply(statuses($b), [201, 403, 403], 'writes outside its patterns are 403 per item, inside are done');
is(item($b, 1)->{error}{type}, 'security_exception', 'error type security_exception');
is(item($b, 1)->{error}{reason},
   'action [indices:data/write/bulk[s]] is unauthorized for user [app] with effective roles [writer,reader] '
   . 'on indices [other], this action is granted by the index privileges [create_doc,create,delete,index,write,all]',
   "ES's reason text, naming user, roles and index");
($st) = $es->get('/other', undef, { Authorization => basic('app:pw') });
is($st, 404, 'a refused write does not auto-create the index');
($st, $b) = $es->request('GET', '/open/_doc/1', undef, { Authorization => basic('app:pw') });
is($st, 200, 'reads stay allowed, and find the document the refused delete left');

# an alias is allowed when its name or its write index matches
($st) = $es->put('/orders-2', {}, { Authorization => basic('app:pw') });
($st) = $es->post('/_aliases', { actions => [ { add => { index => 'orders-2', alias => 'current' } } ] },
                  { Authorization => basic('app:pw') });
is($st, 200, 'alias current -> orders-2');
($st, $b) = bulk_as(basic('app:pw'), nd({ index => { _index => 'current', _id => '1' } }, { a => 1 }));
is_deeply(statuses($b), [201], 'a write through an alias whose index matches is allowed');

# several users: one unrestricted, one with an API key and no index at all
my $key = encode_base64('key1:secret', '');
$es->set_faults({ auth => { users => [
    { basic => 'admin:root' },
    { basic => 'app:pw', indices => [ 'orders*' ] },
    { api_key => $key, indices => [] },
] } });
($st, $b) = bulk_as(basic('admin:root'), nd({ index => { _index => 'other', _id => '1' } }, { a => 1 }));
is_deeply(statuses($b), [201], 'a user without "indices" writes anywhere');
($st, $b) = bulk_as(basic('app:pw'), nd({ index => { _index => 'other', _id => '2' } }, { a => 1 }));
is_deeply(statuses($b), [403], 'the restricted user of the list is refused');
like(item($b, 0)->{error}{reason}, qr/for user \[app\] with effective roles \[\] on indices \[other\]/,
     'no roles given: effective roles []');
($st, $b) = bulk_as("ApiKey $key", nd({ index => { _index => 'orders-1', _id => '3' } }, { a => 1 }));
is_deeply(statuses($b), [403], 'an API key with "indices": [] may write nowhere');
like(item($b, 0)->{error}{reason}, qr/^action \[indices:data\/write\/bulk\[s\]\] is unauthorized for API key id \[key1\] of user \[\w+\] on indices \[orders-1\]/,
     "an API key is named by its id, as ES does");
($st) = bulk_as(basic('app:wrong'), nd({ index => { _index => 'orders-1', _id => '3' } }, { a => 1 }));
is($st, 401, 'a wrong password is still 401');

# discard mode applies the privileges too (it has no index state for blocks)
$es->set_config({ discard => JSON::PP::true });
($st, $b) = bulk_as(basic('app:pw'), nd(
    { index => { _index => 'orders-9', _id => '1' } }, { a => 1 },
    { index => { _index => 'other', _id => '1' } }, { a => 1 }));
is_deeply(statuses($b), [201, 403], 'discard mode: privileges apply');
$es->set_config({ discard => JSON::PP::false });
$es->clear_faults;

# malformed auth faults
for my $bad ({ auth => { basic => 'u:p', indices => 'orders' } }, { auth => { basic => 'u:p', indices => [1] } },
             { auth => { basic => 'u:p', roles => 'r' } }, { auth => { basic => 'u:p', index => ['x'] } },
             { auth => { users => [] } }, { auth => { users => [ { basic => 'nocolon' } ] } },
             { auth => { users => [ { basic => 'u:p' } ], basic => 'v:q' } },
             { auth => { basic => 'u:p', api_key => 'k' } }) {
    my $text = $J->encode($bad);
    ($st, $b) = $es->request('PUT', '/_esd/faults', $text);
    is($st, 400, "bad auth fault $text: 400");
    like($b->{error}{reason} // '', qr/\[auth\]/, '... naming the auth fault');
}

$es->stop;
done_testing;
