# esd: _bulk semantics (body grammar, per-operation results, item statuses,
# whole-request failures, filter_path) and single-document writes.
use strict;
use warnings;
use Test::More;
use IO::Compress::Gzip qw(gzip $GzipError);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);
use EsdServer;

my $J = JSON::PP->new->canonical;
sub nd { join '', map { (ref $_ ? $J->encode($_) : $_) . "\n" } @_ }

my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my ($st, $b, $h);

# ---- statuses 201/200/409/404/400 in one request, request order ----
$b = $es->bulk(nd(
    { index  => { _index => 'p', _id => '1' } }, { name => 'kettle', price => 30 },
    { create => { _index => 'p', _id => '2' } }, { name => 'mug', price => 8 },
    { create => { _index => 'p', _id => '1' } }, { name => 'dup', price => 1 },
    { index  => { _index => 'p', _id => '1' } }, { name => 'kettle', price => 31 },
    { update => { _index => 'p', _id => '1' } }, { doc => { price => 32 } },
    { update => { _index => 'p', _id => '1' } }, { doc => { price => 32 } },
    { update => { _index => 'p', _id => 'nope' } }, { doc => { price => 1 } },
    { delete => { _index => 'p', _id => 'gone' } },
    { delete => { _index => 'p', _id => '2' } },
    { index  => { _index => 'p', _id => '7' } }, { name => 'x', price => 'cheap' },
));
ok($b->{errors}, 'errors true');
ok(defined $b->{took}, 'took present');
my @it = @{ $b->{items} };
is(scalar @it, 10, 'one item per action');
is_deeply([map { (keys %$_)[0] } @it], [qw(index create create index update update update delete delete index)], 'item keys = op types in order');
my @s = map { (values %$_)[0] } @it;
is_deeply([map { $_->{status} } @s], [201, 201, 409, 200, 200, 200, 404, 404, 200, 400], 'statuses');
is_deeply([map { $_->{result} // '-' } @s], [qw(created created - updated updated noop - not_found deleted -)], 'results');
is($s[0]{_version}, 1, 'v1');
is($s[3]{_version}, 2, 'reindex v2');
is($s[4]{_version}, 3, 'update v3');
is($s[5]{_version}, 3, 'noop keeps version');
is($s[0]{_seq_no}, 0, 'seq 0');
is($s[1]{_seq_no}, 1, 'seq 1');
is($s[3]{_seq_no}, 2, 'seq 2 (409 consumed none)');
is($s[7]{_seq_no}, 4, 'not-found delete consumes a seq_no');
is($s[0]{_primary_term}, 1, 'primary term 1');
is_deeply($s[0]{_shards}, { total => 2, successful => 1, failed => 0 }, '_shards');
is($s[2]{error}{type}, 'version_conflict_engine_exception', '409 type');
like($s[2]{error}{reason}, qr/\[1\]: version conflict, document already exists \(current version \[1\]\)/, '409 reason');
is($s[2]{error}{index}, 'p', 'error has index');
ok(!exists $s[2]{_version}, 'no _version on failure');
is($s[6]{error}{type}, 'document_missing_exception', 'update missing doc');
like($s[6]{error}{reason}, qr/\[nope\]: document missing/, 'document missing reason');
ok(!exists $s[7]{error}, 'delete not_found has no error');
is($s[9]{error}{type}, 'document_parsing_exception', 'parse error type');
like($s[9]{error}{reason}, qr/failed to parse field \[price\] of type \[long\] in document with id '7'. Preview of field's value: 'cheap'/, 'parse error reason');
is_deeply($es->doc('p', '1'), { name => 'kettle', price => 32 }, 'doc merged by update');
is($es->doc('p', '2'), undef, 'deleted doc gone');

# delete not_found alone: errors false
$b = $es->bulk(nd({ delete => { _index => 'p', _id => 'never' } }));
is($b->{errors}, JSON::PP::false, 'not_found delete alone: errors false');
is($b->{items}[0]{delete}{status}, 404, 'still 404');

# detect_noop false, doc_as_upsert, upsert
$b = $es->bulk(nd(
    { update => { _index => 'p', _id => '1' } }, { doc => { price => 32 }, detect_noop => JSON::PP::false },
    { update => { _index => 'p', _id => 'u1' } }, { doc => { a => 1 }, doc_as_upsert => JSON::PP::true },
    { update => { _index => 'p', _id => 'u2' } }, { doc => { a => 2 }, upsert => { a => 0, b => 1 } },
    { update => { _index => 'p', _id => 'u2' } }, { doc => { a => 2 }, upsert => { a => 0 } },
));
is_deeply([map { (values %$_)[0]{result} } @{ $b->{items} }], [qw(updated created created updated)], 'update variants');
is_deeply([map { (values %$_)[0]{status} } @{ $b->{items} }], [200, 201, 201, 200], 'update statuses');
is_deeply($es->doc('p', 'u1'), { a => 1 }, 'doc_as_upsert inserted doc');
is_deeply($es->doc('p', 'u2'), { a => 2, b => 1 }, 'upsert then merge');

# ---- versioning ----
$b = $es->bulk(nd(
    { index => { _index => 'v', _id => 'a', version => 10, version_type => 'external' } }, { n => 1 },
    { index => { _index => 'v', _id => 'a', version => 10, version_type => 'external' } }, { n => 2 },
    { index => { _index => 'v', _id => 'a', version => 9,  version_type => 'external' } }, { n => 3 },
    { index => { _index => 'v', _id => 'a', version => 11, version_type => 'external' } }, { n => 4 },
    { index => { _index => 'v', _id => 'a', version => 11, version_type => 'external_gte' } }, { n => 5 },
    { index => { _index => 'v', _id => 'a', version => 10, version_type => 'external_gte' } }, { n => 6 },
    { create => { _index => 'v', _id => 'b', version => 3, version_type => 'external' } }, { n => 7 },
    { index => { _index => 'v', _id => 'c', version => 3 } }, { n => 8 },
));
@s = map { (values %$_)[0] } @{ $b->{items} };
is_deeply([map { $_->{status} } @s], [201, 409, 409, 200, 200, 409, 400, 400], 'external versioning statuses');
is($s[0]{_version}, 10, 'external version stored');
is($s[3]{_version}, 11, 'newer external replaces');
like($s[1]{error}{reason}, qr/current version \[10\] is higher or equal to the one provided \[10\]/, 'external conflict reason');
like($s[5]{error}{reason}, qr/current version \[11\] is higher than the one provided \[10\]/, 'external_gte conflict reason');
like($s[6]{error}{reason}, qr/create operations only support internal versioning/, 'create + external');
is_deeply($es->doc('v', 'a'), { n => 5 }, 'external_gte equal version applied');

# if_seq_no / if_primary_term
($st, $b) = $es->get('/v/_doc/a');
my $seq = $b->{_seq_no};
$b = $es->bulk(nd(
    { index => { _index => 'v', _id => 'a', if_seq_no => $seq, if_primary_term => 1 } }, { n => 9 },
    { index => { _index => 'v', _id => 'a', if_seq_no => $seq, if_primary_term => 1 } }, { n => 10 },
    { delete => { _index => 'v', _id => 'zz', if_seq_no => 0, if_primary_term => 1 } },
));
is_deeply([map { (values %$_)[0]{status} } @{ $b->{items} }], [200, 409, 409], 'CAS statuses');
like($b->{items}[1]{index}{error}{reason}, qr/required seqNo \[$seq\], primary term \[1\]\. current document has seqNo/, 'CAS reason');

# ---- whole-request 400s: exact messages and line numbers, nothing applied ----
my @bad = (
    [nd({ index => { _index => 'w', _id => '1' } }, { a => 1 }, '{}'), qr/^Malformed action\/metadata line \[3\], expected FIELD_NAME but found \[END_OBJECT\]$/],
    [nd({ index => { _index => 'w', _id => '1' } }, { a => 1 }, { foo => {} }), qr/^Malformed action\/metadata line \[3\], expected field \[create\], \[delete\], \[index\] or \[update\] but found \[foo\]$/],
    [nd({ index => { _index => 'w', _id => '1', foo => 1 } }, { a => 1 }), qr/^Action\/metadata line \[1\] contains an unknown parameter \[foo\]$/],
    [nd({ index => { _index => 'w', _id => '1' } }, { a => 1 }, '', { index => { _index => ['w'] } }, { a => 2 }), qr/^Malformed action\/metadata line \[4\], expected a simple value for field \[_index\] but found \[START_ARRAY\]$/],
    [nd({ index => { _index => 'w', _id => '1', _type => '_doc' } }, { a => 1 }), qr/unknown parameter \[_type\]/],
    [nd('[1]'), qr/^Malformed action\/metadata line \[1\], expected START_OBJECT but found \[START_ARRAY\]$/],
    [nd({ index => 'x' }), qr/expected START_OBJECT but found \[VALUE_STRING\]/],
    [nd({ update => { _index => 'w', _id => '1', version => 2 } }, { doc => {} }), qr/^Update requests do not support versioning/],
    [nd({ index => { _index => 'w', _id => '1' } }, { a => 1 }) . '{"delete":{"_index":"w","_id":"1"}}', qr/^The bulk request must be terminated by a newline \[\\n\]$/],
    [nd({ index => { _index => 'w', _id => '1', version_type => 'bogus' } }, { a => 1 }), qr/No version type match \[bogus\]/],
    [nd('{"index":{"_index":"w","_id":"1"},"extra":1}', { a => 1 }), qr/expected END_OBJECT but found \[FIELD_NAME\]/],
);
for my $c (@bad) {
    ($st, $b) = $es->bulk($c->[0]);
    is($st, 400, 'malformed bulk 400');
    is($b->{error}{type}, 'illegal_argument_exception', 'illegal_argument_exception');
    like($b->{error}{reason}, $c->[1], "message: $c->[1]");
}
($st, $b) = $es->bulk(nd({ index => { _index => 'w', _id => '1' } }, { a => 1 }, '{"index":{"_index":"w"'));
is($st, 400, 'truncated action JSON 400');
is($b->{error}{type}, 'x_content_parse_exception', 'x_content_parse_exception');
($st, $b) = $es->bulk(nd({ update => { _index => 'w', _id => '1' } }, { doc => {}, bogus => 1 }));
is($st, 400, 'unknown update field 400');
like($b->{error}{reason}, qr/\[UpdateRequest\] unknown field \[bogus\]/, 'update field reason');
($st) = $es->head('/w');
is($st, 404, 'nothing applied: index w never created');
($st, $b) = $es->bulk('');
is($st, 400, 'empty body 400');
is($b->{error}{type}, 'action_request_validation_exception', 'no requests added type');
like($b->{error}{reason}, qr/no requests added/, 'no requests added');
($st, $b) = $es->bulk("\n\n");
like($b->{error}{reason}, qr/no requests added/, 'only empty lines: no requests added');

# CRLF, empty lines between actions, path index
($st, $b) = $es->bulk("\r\n" . qq({"index":{"_id":"c1"}}\r\n{"a":1}\r\n\n  \n{"index":{"_id":"c2"}}\n{"a":2}\n), index => 'crlf');
is($st, 200, 'CRLF and empty lines accepted');
is(scalar @{ $b->{items} }, 2, 'two items');
is($b->{items}[0]{index}{_index}, 'crlf', 'path index is the default');
is_deeply($es->doc('crlf', 'c1'), { a => 1 }, 'CRLF source stored without CR');

# auto ids, empty id, missing index, require_alias
$b = $es->bulk(nd(
    { index => { _index => 'ids' } }, { a => 1 },
    { create => { _index => 'ids' } }, { a => 2 },
    { index => { _index => 'ids', _id => '' } }, { a => 3 },
    { index => {} }, { a => 4 },
    { index => { _index => 'ids', _id => 'r', routing => 'shard-a' } }, { a => 5 },
    { index => { _index => 'noalias', _id => 'x', require_alias => JSON::PP::true } }, { a => 6 },
    { update => { _index => 'ids' } }, { doc => { a => 7 } },
    { index => { _index => 'ids', _id => 'p', pipeline => 'nope' } }, { a => 8 },
    { index => { _index => 'BadName', _id => 'x' } }, { a => 9 },
));
@s = map { (values %$_)[0] } @{ $b->{items} };
like($s[0]{_id}, qr/^[A-Za-z0-9_-]{20}$/, 'auto-generated 20 char id');
like($s[1]{_id}, qr/^[A-Za-z0-9_-]{20}$/, 'auto id on create');
isnt($s[0]{_id}, $s[1]{_id}, 'auto ids differ');
is($s[2]{status}, 400, 'empty id 400');
is($s[2]{error}{reason}, 'if _id is specified it must not be empty', 'empty id reason');
is($s[3]{status}, 400, 'missing index 400');
like($s[3]{error}{reason}, qr/index is missing/, 'index is missing');
is($s[4]{status}, 201, 'routing accepted');
($st, $b) = $es->get('/ids/_doc/r');
is($b->{_routing}, 'shard-a', 'routing stored');
is($s[5]{status}, 404, 'require_alias on non-alias 404');
like($s[5]{error}{reason}, qr/\[require_alias\] request flag is \[true\] and \[noalias\] is not an alias/, 'require_alias reason');
($st) = $es->head('/noalias');
is($st, 404, 'require_alias did not create the index');
is($s[6]{status}, 400, 'update without id 400');
is($s[7]{status}, 400, 'unknown pipeline 400');
like($s[7]{error}{reason}, qr/pipeline with id \[nope\] does not exist/, 'pipeline reason');
is($s[8]{error}{type}, 'invalid_index_name_exception', 'bad auto-create name');
$b = $es->bulk(nd({ index => { _index => 'ids', _id => 'q' } }, { a => 1 }), require_alias => 'true');
is($b->{items}[0]{index}{status}, 404, 'require_alias query parameter');

# ---- dynamic mapping: strict, type errors ----
($st) = $es->put('/strict', { mappings => { dynamic => 'strict', properties => { a => { type => 'long' }, o => { type => 'object', properties => { x => { type => 'keyword' } } } } } });
$b = $es->bulk(nd(
    { index => { _index => 'strict', _id => '1' } }, { a => 1, o => { x => 'k' } },
    { index => { _index => 'strict', _id => '2' } }, { a => 1, b => 2 },
    { index => { _index => 'strict', _id => '3' } }, { o => { y => 1 } },
    { index => { _index => 'strict', _id => '4' } }, { o => 'flat' },
    { index => { _index => 'strict', _id => '5' } }, { a => '42' },
    { index => { _index => 'strict', _id => '6' } }, '{"a":1,"a":2}',
    { index => { _index => 'strict', _id => '7' } }, '{"a":',
    { index => { _index => 'strict', _id => '8' } }, '',
));
@s = map { $_->{index} } @{ $b->{items} };
is_deeply([map { $_->{status} } @s], [201, 400, 400, 400, 201, 400, 400, 400], 'strict mapping statuses');
is($s[1]{error}{type}, 'strict_dynamic_mapping_exception', 'strict type');
like($s[1]{error}{reason}, qr/mapping set to strict, dynamic introduction of \[b\] within \[_doc\] is not allowed/, 'strict reason');
like($s[2]{error}{reason}, qr/dynamic introduction of \[y\] within \[o\]/, 'strict nested reason');
like($s[3]{error}{reason}, qr/tried to parse field \[o\] as object, but found a concrete value/, 'object vs concrete');
is($s[5]{error}{type}, 'document_parsing_exception', 'duplicate key rejected');
is($s[6]{error}{type}, 'document_parsing_exception', 'broken source JSON is per item');
is($s[7]{error}{type}, 'document_parsing_exception', 'empty source per item');
$b = $es->bulk(nd(
    { index => { _index => 'dyn', _id => '1' } }, { n => 1, f => 1.5, b => JSON::PP::true, s => 'x', d => '2024-01-02T03:04:05Z', o => { k => 1 } },
    { index => { _index => 'dyn', _id => '2' } }, { n => 'x' },
    { index => { _index => 'dyn', _id => '3' } }, { b => 'maybe' },
    { index => { _index => 'dyn', _id => '4' } }, { d => 'yesterday' },
    { index => { _index => 'dyn', _id => '5' } }, { n => '17', f => '2.5', b => 'false', s => 5 },
));
is_deeply([map { $_->{index}{status} } @{ $b->{items} }], [201, 400, 400, 400, 201], 'dynamic mapping type checks');
($st, $b) = $es->get('/dyn/_mapping');
my $p = $b->{dyn}{mappings}{properties};
is($p->{n}{type}, 'long', 'long inferred');
is($p->{f}{type}, 'float', 'float inferred');
is($p->{b}{type}, 'boolean', 'boolean inferred');
is($p->{s}{type}, 'text', 'text inferred');
is($p->{s}{fields}{keyword}{type}, 'keyword', 'keyword subfield');
is($p->{d}{type}, 'date', 'date detected');
is($p->{o}{properties}{k}{type}, 'long', 'object properties');

# ---- auto-create off ----
$es->set_config({ auto_create_index => JSON::PP::false });
$b = $es->bulk(nd({ index => { _index => 'nocreate', _id => '1' } }, { a => 1 }, { index => { _index => 'p', _id => 'ok' } }, { name => 'y', price => 1 }));
is($b->{items}[0]{index}{status}, 404, 'auto_create_index false: 404');
is($b->{items}[0]{index}{error}{type}, 'index_not_found_exception', 'index_not_found_exception');
is($b->{items}[1]{index}{status}, 201, 'existing index still written');
$es->set_config({ auto_create_index => JSON::PP::true });
$b = $es->bulk(nd({ delete => { _index => 'neverthere', _id => '1' } }));
is($b->{items}[0]{delete}{status}, 404, 'delete on missing index 404');
is($b->{items}[0]{delete}{error}{type}, 'index_not_found_exception', 'delete does not create');

# ---- refresh visibility ----
$es->bulk(nd({ index => { _index => 'vis', _id => '1' } }, { a => 1 }));
is($es->count('vis'), 0, 'not visible to _count before refresh');
ok($es->doc('vis', '1'), 'GET is realtime');
$b = $es->bulk(nd({ index => { _index => 'vis', _id => '2' } }, { a => 2 }), refresh => 'true');
is($b->{items}[0]{index}{forced_refresh}, JSON::PP::true, 'forced_refresh with refresh=true');
is($es->count('vis'), 2, 'visible after refresh=true');
$es->bulk(nd({ index => { _index => 'vis', _id => '3' } }, { a => 3 }), refresh => '');
is($es->count('vis'), 3, 'refresh= (empty) behaves like true');
$es->bulk(nd({ index => { _index => 'vis', _id => '4' } }, { a => 4 }), refresh => 'wait_for');
is($es->count('vis'), 4, 'refresh=wait_for makes it visible');
$es->bulk(nd({ index => { _index => 'vis', _id => '5' } }, { a => 5 }));
is($es->count('vis'), 4, 'plain bulk not visible');
$es->refresh('vis');
is($es->count('vis'), 5, 'visible after explicit refresh');
($st, $b) = $es->bulk(nd({ index => { _index => 'vis', _id => '6' } }, { a => 6 }), refresh => 'sometimes');
is($st, 400, 'bad refresh value 400');

# periodic refresh timer (1 s default) on a second server
{
    my $t = EsdServer->start();
    $t->bulk(nd({ index => { _index => 'tick', _id => '1' } }, { a => 1 }));
    my $deadline = time + 10;
    my $c = 0;
    while (time < $deadline) { $c = $t->count('tick'); last if $c; sleep 0.05 }
    is($c, 1, 'periodic refresh makes the doc visible');
    $t->put('/off', { settings => { refresh_interval => '-1' } });
    $t->bulk(nd({ index => { _index => 'off', _id => '1' } }, { a => 1 }));
    $b = $t->bulk(nd({ index => { _index => 'tick', _id => '2' } }, { a => 2 }), refresh => 'wait_for');
    is($t->count('tick'), 2, 'wait_for waits for the periodic refresh');
    is($t->count('off'), 0, 'refresh_interval -1: never refreshed by the timer');
    $t->stop;
}

# ---- filter_path gotcha ----
$b = $es->bulk(nd(
    { index => { _index => 'fp', _id => '1' } }, { a => 1 },
    { create => { _index => 'fp', _id => '1' } }, { a => 1 },
    { index => { _index => 'fp', _id => '2' } }, { a => 2 },
), filter_path => 'items.*.error');
is(scalar @{ $b->{items} }, 1, 'filter_path=items.*.error drops successful items');
ok(!exists $b->{errors} && !exists $b->{took}, 'and drops errors/took');
ok($b->{items}[0]{create}{error}, 'the failed item remains');
$b = $es->bulk(nd({ index => { _index => 'fp', _id => '3' } }, { a => 1 }), filter_path => 'items.*.error');
is_deeply($b, {}, 'all successful: empty object');
$b = $es->bulk(nd({ index => { _index => 'fp', _id => '4' } }, { a => 1 }, { create => { _index => 'fp', _id => '4' } }, { a => 1 }),
    filter_path => 'errors,items.*.status,items.*._id,items.*.error');
is(scalar @{ $b->{items} }, 2, 'safe filter keeps positions');
is_deeply([map { (values %$_)[0]{status} } @{ $b->{items} }], [201, 409], 'statuses kept');
($st, $b) = $es->get('/fp/_doc/1?filter_path=_source.a,found');
is_deeply($b, { found => JSON::PP::true, _source => { a => 1 } }, 'filter_path on GET');
($st, $b) = $es->get('/?filter_path=version.**');
ok($b->{version}{number} && !$b->{tagline}, 'filter_path ** wildcard');

# ---- raw _source round trip: precise numbers and unicode ----
my $raw = '{"big":12345678901234567890.123456789,"huge":123456789012345678901234567890,"small":1e-7,"u":"h\u00e9llo \u2603 ' . "\x{f0}\x{9f}\x{98}\x{80}" . '","esc":"a\"b\\\\c\/d","n":null,"arr":[1,2.50,3],"obj":{"x":"y"}}';
($st, $b) = $es->bulk(qq({"index":{"_index":"raw","_id":"r1"}}\n$raw\n));
is($b->{items}[0]{index}{status}, 201, 'precise doc accepted');
my $r = HTTP::Tiny->new->get($es->url . '/raw/_doc/r1');
my ($src) = $r->{content} =~ /"_source":(\{.*\})\}$/s;
is($src, $raw, 'GET returns the exact source bytes');
$r = HTTP::Tiny->new->request('POST', $es->url . '/raw/_mget', { content => '{"ids":["r1"]}', headers => { 'Content-Type' => 'application/json' } });
ok(index($r->{content}, $raw) >= 0, '_mget returns the exact source bytes');
$es->refresh('raw');
$r = HTTP::Tiny->new->get($es->url . '/raw/_search');
ok(index($r->{content}, $raw) >= 0, '_search returns the exact source bytes');
$r = HTTP::Tiny->new->get($es->url . '/raw/_source/r1');
is($r->{content}, $raw, '_source endpoint returns the exact bytes');

# ---- gzip request bodies ----
my $plain = nd({ index => { _index => 'gz', _id => '1' } }, { a => 1 }, { index => { _index => 'gz', _id => '2' } }, { a => 2 });
my $gz;
gzip(\$plain => \$gz) or die $GzipError;
($st, $b) = $es->request('POST', '/_bulk', $gz, { 'Content-Type' => 'application/x-ndjson', 'Content-Encoding' => 'gzip' });
is($st, 200, 'gzip bulk accepted');
is(scalar @{ $b->{items} }, 2, 'gzip items');
my $log = $es->requests(1)->[0];
is($log->{body_bytes}, length $plain, 'body_bytes counts the decompressed size');
is($log->{wire_bytes}, length $gz, 'wire_bytes counts the compressed size');
($st) = $es->request('POST', '/_bulk', "not gzip at all\n", { 'Content-Type' => 'application/x-ndjson', 'Content-Encoding' => 'gzip' });
is($st, 400, 'corrupt gzip 400');

# ---- 413 (raw and decompressed), 417 ----
{
    my $small = EsdServer->start(max_content_length => 1000);
    my $big = nd(map { ({ index => { _index => 'big', _id => "$_" } }, { pad => 'x' x 100 }) } 1 .. 20);
    ($st, $b, $h) = $small->bulk($big);
    is($st, 413, 'body over max_content_length: 413');
    is($b, '', '413 has an empty body');
    my $zip;
    gzip(\$big => \$zip) or die;
    ok(length $zip < 1000, 'compressed body is under the limit');
    ($st) = $small->request('POST', '/_bulk', $zip, { 'Content-Type' => 'application/x-ndjson', 'Content-Encoding' => 'gzip' });
    is($st, 413, 'decompressed size over the limit: 413');
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $small->port) or die;
    print $sock "POST /_bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n";
    my $line = <$sock>;
    like($line, qr{^HTTP/1.1 417}, 'Expect: 100-continue over the limit: 417');
    close $sock;

    # The 413 comes before the body is read, as Elasticsearch's HTTP layer
    # answers it: each case sends only part of its body, then reads.
    my $early = sub {
        my ($name, $head, $part) = @_;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $small->port, Timeout => 10) or die;
        print $s $head;
        print $s $part if defined $part;
        $s->flush;
        my ($answer, $eof) = ('', 0);
        my $deadline = time + 10;
        $s->blocking(0);
        while (time < $deadline) {
            my $n = sysread($s, my $buf, 4096);
            if (defined $n && $n == 0) {               # the server closed its side
                $eof = 1;
                last;
            }
            $answer .= $buf if $n;
            sleep 0.02 unless $n;
        }
        close $s;
        like($answer, qr{^HTTP/1.1 413 }, "$name: 413 before the body ended");
        like($answer, qr{\r\ncontent-length: 0\r\n}i, "$name: empty body");
        ok($answer =~ qr{\r\nconnection: close\r\n}i && $eof, "$name: Connection: close, and the server closes");
    };
    my $post = "POST /_bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n";
    $early->('Content-Length over the limit, no body byte sent', $post . "Content-Length: 50000000\r\n\r\n");
    $early->('chunked body passing the limit', $post . "Transfer-Encoding: chunked\r\n\r\n",
             join('', map { sprintf("%x\r\n%s\r\n", 600, 'x' x 600) } 1 .. 3));
    my $plain = nd(map { ({ index => { _index => 'zz', _id => "$_" } }, { pad => 'y' x 200 }) } 1 .. 2000);
    my $gz;
    gzip(\$plain => \$gz) or die;
    ok(length $gz > 1000 && length $gz < 100000, 'a gzip body of ' . length($gz) . ' bytes, over ' . length($plain) . ' inflated');
    $small->set_config({ max_content_length => 100000 });
    $early->('gzip body inflating past the limit', $post . "Content-Encoding: gzip\r\nContent-Length: " . length($gz) . "\r\n\r\n",
             substr($gz, 0, int(length($gz) * 0.8)));
    my @log = grep { $_->{url} eq '/_bulk' } @{ $small->requests(10) };
    is_deeply([ map { $_->{status} } @log[-3 .. -1] ], [413, 413, 413], 'the request log has the three 413s');
    ok($log[-1]{wire_bytes} < length $gz, "the gzip body was not read to its end ($log[-1]{wire_bytes} of " . length($gz) . ' bytes)');

    # the 413 is the HTTP layer's: before authentication
    $small->set_faults({ auth => { basic => 'u:p' } });
    $early->('no credentials, body over the limit', $post . "Content-Length: 50000000\r\n\r\n");
    $small->clear_faults;
    $small->set_config({ max_content_length => 1000 });
    ($st) = $small->get('/');
    is($st, 200, 'server fine after 413/417');
    $small->stop;
}

# ---- single-document endpoints ----
($st, $b) = $es->put('/single/_doc/1', { a => 1 });
is($st, 201, 'PUT _doc created');
is($b->{result}, 'created', 'created result');
($st, $b) = $es->put('/single/_doc/1', { a => 2 });
is($st, 200, 'PUT _doc updated');
is($b->{_version}, 2, 'version 2');
($st, $b) = $es->post('/single/_doc', { a => 3 });
is($st, 201, 'POST _doc auto id');
like($b->{_id}, qr/^.{20}$/, 'auto id');
($st, $b) = $es->put('/single/_create/1', { a => 9 });
is($st, 409, '_create existing 409');
is($b->{error}{type}, 'version_conflict_engine_exception', '409 envelope');
($st, $b) = $es->put('/single/_doc/1?op_type=create', { a => 9 });
is($st, 409, 'op_type=create 409');
($st, $b) = $es->post('/single/_update/1', { doc => { b => 1 } });
is($st, 200, '_update 200');
is_deeply($es->doc('single', '1'), { a => 2, b => 1 }, 'partial update merged');
($st, $b) = $es->post('/single/_update/none', { doc => { b => 1 } });
is($st, 404, '_update missing 404');
($st, $b) = $es->put('/single/_doc/e?version=5&version_type=external', { a => 1 });
is($b->{_version}, 5, 'external version via query');
($st, $b) = $es->put('/single/_doc/e?version=4&version_type=external', { a => 1 });
is($st, 409, 'external conflict via query');
($st, $b) = $es->delete('/single/_doc/1');
is($st, 200, 'DELETE doc');
is($b->{result}, 'deleted', 'deleted');
($st, $b) = $es->delete('/single/_doc/1');
is($st, 404, 'DELETE again 404');
is($b->{result}, 'not_found', 'not_found body');
($st, $b) = $es->put('/single/_doc/r?refresh=true', { a => 1 });
is($b->{forced_refresh}, JSON::PP::true, 'refresh on single doc');
($st, $b) = $es->put('/single/_doc/bad', '{"a":');
is($st, 400, 'broken JSON doc 400');
is($b->{error}{type}, 'document_parsing_exception', 'single doc parse error');
($st, $b) = $es->put('/single/_doc/slash%2Fid', { a => 1 });
is($b->{_id}, 'slash/id', 'escaped slash stays part of the id');
is_deeply($es->doc('single', 'slash/id'), { a => 1 }, 'id with slash readable');

# ---- keep-alive with several bulks on one connection ----
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $es->port) or die;
my $ok = 0;
for my $i (1 .. 3) {
    my $body = nd({ index => { _index => 'ka', _id => "$i" } }, { i => $i });
    print $sock "POST /_bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    my $len = 0;
    while (my $l = <$sock>) { $len = $1 if $l =~ /^Content-Length:\s*(\d+)/i; last if $l eq "\r\n" }
    read($sock, my $resp, $len);
    $ok++ if $resp =~ /"status":201/;
}
is($ok, 3, 'three bulks over one keep-alive connection');
close $sock;

done_testing();
