# esd: ingest pipelines. PUT/GET/DELETE /_ingest/pipeline/{id} with ES's
# validation errors; the set, remove, rename, lowercase and uppercase
# processors; pipeline= on _bulk (URL and action line, the line wins) and
# on single-document writes; per-item 400s for an unknown pipeline and for
# a failing processor; index.default_pipeline / index.final_pipeline;
# discard mode; /_esd/reset drops pipelines.
use strict;
use warnings;
use utf8;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use EsdServer;

EsdServer->require_stand_in('control endpoints, discard mode and esd-specific refusals');

my $J = JSON::PP->new->utf8->canonical;
sub nd { join '', map { (ref $_ ? $J->encode($_) : $_) . "\n" } @_ }
sub items { [ map { (values %$_)[0] } @{ $_[0]{items} } ] }
sub statuses { [ map { $_->{status} } @{ items($_[0]) } ] }

my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my ($st, $b);

sub put_pipe { my ($id, $def) = @_; return $es->put("/_ingest/pipeline/$id", $def) }
sub raw_source {
    my ($index, $id) = @_;
    my $r = HTTP::Tiny->new->get($es->url . "/$index/_source/$id");
    return $r->{content};
}

# ---- PUT / GET / DELETE --------------------------------------------------
($st, $b) = $es->get('/_ingest/pipeline');
is($st, 404, 'GET /_ingest/pipeline with no pipeline: 404');
is_deeply($b, {}, '... and {}');

my $lower = { description => 'lowercase the name', processors => [ { lowercase => { field => 'name' } } ] };
($st, $b) = put_pipe('lower', $lower);
is($st, 200, 'PUT a pipeline: 200');
is_deeply($b, { acknowledged => JSON::PP::true }, '... acknowledged');
($st, $b) = $es->get('/_ingest/pipeline/lower');
is($st, 200, 'GET /_ingest/pipeline/lower: 200');
is_deeply($b, { lower => $lower }, '... {"id": definition as stored}');
($st, $b) = $es->get('/_ingest/pipeline/nope');
is($st, 404, 'GET a missing pipeline: 404');
is_deeply($b, {}, '... with {}');

($st) = put_pipe('upper', { processors => [ { uppercase => { field => 'name' } } ] });
($st, $b) = $es->get('/_ingest/pipeline');
is_deeply([sort keys %$b], [qw(lower upper)], 'GET /_ingest/pipeline lists every pipeline');
($st, $b) = $es->get('/_ingest/pipeline/low*,upper');
is_deeply([sort keys %$b], [qw(lower upper)], 'comma list and wildcard');
($st, $b) = $es->get('/_ingest/pipeline/lower?summary=true');
is_deeply($b, { lower => {} }, 'summary=true: ids only');

# replace
($st) = put_pipe('upper', { description => 'v2', processors => [ { uppercase => { field => 'name' } } ] });
is($st, 200, 'PUT over an existing pipeline replaces it');
($st, $b) = $es->get('/_ingest/pipeline/upper');
is($b->{upper}{description}, 'v2', '... the new definition is returned');

($st, $b) = $es->delete('/_ingest/pipeline/upper');
is($st, 200, 'DELETE a pipeline: 200');
is_deeply($b, { acknowledged => JSON::PP::true }, '... acknowledged');
($st, $b) = $es->get('/_ingest/pipeline/upper');
is($st, 404, '... and it is gone');
($st, $b) = $es->delete('/_ingest/pipeline/upper');
is($st, 404, 'DELETE a missing pipeline: 404');
is($b->{error}{type}, 'resource_not_found_exception', '... resource_not_found_exception');
is($b->{error}{reason}, 'pipeline [upper] is missing', "... ES's reason");
($st, $b) = $es->post('/_ingest/pipeline/lower', $lower);
is($st, 405, 'POST /_ingest/pipeline/{id}: 405');

# ---- validation ---------------------------------------------------------
sub put_err {
    my ($def, $name) = @_;
    my ($s, $r) = put_pipe('bad', $def);
    is($s, 400, "$name: 400");
    return $r->{error} || {};
}
my $e = put_err({ description => 'x' }, 'no processors');
is($e->{type}, 'parse_exception', '... parse_exception');
is($e->{reason}, '[processors] required property is missing', "... ES's reason");
is($e->{property_name}, 'processors', '... property_name');
is($e->{root_cause}[0]{reason}, '[processors] required property is missing', '... root_cause');

$e = put_err({ processors => [ { frobnicate => { field => 'a' } } ] }, 'unknown processor');
is($e->{type}, 'parse_exception', '... parse_exception');
is($e->{reason}, 'No processor type exists with name [frobnicate]', "... ES's reason");
is($e->{processor_type}, 'frobnicate', '... processor_type');

$e = put_err({ processors => [ { set => { value => 1 } } ] }, 'set without field');
is($e->{reason}, '[field] required property is missing', '... [field] required property is missing');
is($e->{processor_type}, 'set', '... processor_type set');
is($e->{property_name}, 'field', '... property_name field');
$e = put_err({ processors => [ { set => { field => 'a' } } ] }, 'set without value');
is($e->{reason}, '[value] required property is missing', '... [value] required property is missing');
$e = put_err({ processors => [ { set => { field => 'a', value => 1, if => 'ctx.a != null' } } ] }, 'set with if');
is($e->{property_name}, 'if', '... names [if]');
like($e->{reason}, qr/^\[if\] esd does not support/, '... as unsupported in esd');
$e = put_err({ processors => [ { set => { field => 'a', value => '{{b}}' } } ] }, 'set with a mustache value');
like($e->{reason}, qr/^\[value\] esd does not support mustache templates/, '... unsupported in esd');
$e = put_err({ processors => [ { set => { field => 'a', value => ['x', { y => 'pre {{b}}' }] } } ] }, 'a template nested in the value');
is($e->{property_name}, 'value', '... found');
$e = put_err({ processors => [ { set => { field => 'a', value => 1, frob => 2 } } ] }, 'unknown option');
is($e->{reason}, 'processor [set] doesn\'t support one or more provided configuration parameters [frob]', "... ES's reason");
$e = put_err({ processors => [ { set => { field => 'a', value => 1, override => 'yes' } } ] }, 'override not a boolean');
is($e->{reason}, "[override] property isn't a boolean, but of type [java.lang.String]", "... ES's reason");
$e = put_err({ processors => [ { rename => { field => 'a' } } ] }, 'rename without target_field');
is($e->{reason}, '[target_field] required property is missing', '... [target_field] required');
$e = put_err({ processors => [ { lowercase => { field => 5 } } ] }, 'field not a string');
is($e->{reason}, "[field] property isn't a string, but of type [java.lang.Integer]", "... ES's reason");
$e = put_err({ processors => { set => {} } }, 'processors not a list');
like($e->{reason}, qr/^\[processors\] property isn't a list/, "... ES's reason");
$e = put_err({ processors => [], foo => 1 }, 'unknown top-level key');
is($e->{reason}, "pipeline [bad] doesn't support one or more provided configuration parameters [foo]", "... ES's reason");
$e = put_err({ processors => [ { set => { field => 'a', value => 1 } } ], on_failure => [ { set => { field => 'e', value => 1 } } ] }, 'on_failure');
like($e->{reason}, qr/esd does not support on_failure/, '... unsupported in esd');
$e = put_err({ processors => [ { set => { field => '_index', value => 'x' } } ] }, 'a metadata field');
like($e->{reason}, qr/esd does not support ingest metadata fields/, '... unsupported in esd');
($st, $b) = $es->get('/_ingest/pipeline/bad');
is($st, 404, 'no refused pipeline was stored');
($st) = put_pipe('empty', { processors => [] });
is($st, 200, 'an empty processor list is valid');

# ---- processors -----------------------------------------------------------
($st) = put_pipe('all', { processors => [
    { set       => { field => 'source', value => 'esd' } },
    { set       => { field => 'meta.tags', value => [ 'a', 'b' ] } },
    { set       => { field => 'keep', value => 'new', override => JSON::PP::false } },
    { set       => { field => 'fill', value => 'filled', override => JSON::PP::false } },
    { remove    => { field => [ 'junk1', 'junk2' ] } },
    { remove    => { field => 'absent', ignore_missing => JSON::PP::true } },
    { rename    => { field => 'old', target_field => 'new' } },
    { rename    => { field => 'absent', target_field => 'x', ignore_missing => JSON::PP::true } },
    { lowercase => { field => 'name' } },
    { uppercase => { field => 'codes' } },
    { uppercase => { field => 'name', target_field => 'NAME' } },
    { lowercase => { field => 'absent', ignore_missing => JSON::PP::true } },
    { set       => { field => 'nested.deep.x', value => 1 } },
    { remove    => { field => 'obj.gone' } },
    { lowercase => { field => '_source.obj.s' } },
] });
is($st, 200, 'PUT a pipeline using every processor');
($st, $b) = $es->put('/proc/_doc/1?pipeline=all&refresh=true', {
    name => 'Ünïcode KETTLE', codes => ['ab', 'cd'], keep => 'old', fill => undef,
    junk1 => 1, junk2 => 2, old => 42, obj => { gone => 1, s => 'MiXeD' },
});
is($st, 201, 'PUT _doc?pipeline=all: 201');
is($b->{result}, 'created', '... created');
is_deeply($es->doc('proc', '1'), {
    source => 'esd', meta => { tags => [ 'a', 'b' ] }, keep => 'old', fill => 'filled',
    new => 42, name => 'ünïcode kettle', codes => ['AB', 'CD'], NAME => 'ÜNÏCODE KETTLE',
    nested => { deep => { x => 1 } }, obj => { s => 'mixed' },
}, 'every processor applied, in order');
my $raw = raw_source('proc', '1');
unlike($raw, qr/junk/, 'the stored source is the processed one');
unlike($raw, qr/": |, "/, '... re-serialized (compact)');
($st, $b) = $es->get('/proc/_search?q=');
($st, $b) = $es->post('/proc/_search', { query => { term => { 'source.keyword' => 'esd' } } });
is($b->{hits}{total}{value}, 1, 'the processed source is what is searched and mapped');
($st, $b) = $es->get('/proc/_mapping');
ok($b->{proc}{mappings}{properties}{new}, 'the renamed field is mapped');
ok(!$b->{proc}{mappings}{properties}{old}, 'the old name is not');

# a source a pipeline did not touch stays byte-exact; one that went through
# an empty pipeline is re-serialized
my $spaced = '{"a" : 1,  "b":"x"}';
($st) = $es->request('PUT', '/proc/_doc/exact', $spaced);
is(raw_source('proc', 'exact'), $spaced, 'no pipeline: byte-exact source');
($st) = $es->request('PUT', '/proc/_doc/exact2?pipeline=_none', $spaced);
is(raw_source('proc', 'exact2'), $spaced, 'pipeline=_none: byte-exact source');
($st) = $es->request('PUT', '/proc/_doc/exact3?pipeline=empty', $spaced);
is(raw_source('proc', 'exact3'), '{"a":1,"b":"x"}', 'an (empty) pipeline ran: re-serialized');

# copy_from, ignore_empty_value, processor_tag in a definition error
($st) = put_pipe('copy', { processors => [
    { set => { field => 'copy', copy_from => 'src.v' } },
    { set => { field => 'empty', value => '', ignore_empty_value => JSON::PP::true } },
    { set => { field => 'nul', copy_from => 'absent', ignore_empty_value => JSON::PP::true } },
] });
is($st, 200, 'PUT a pipeline with copy_from and ignore_empty_value');
($st) = $es->put('/cp/_doc/c?pipeline=copy', { src => { v => { a => [1, 2], b => 'x' } } });
is($st, 201, 'PUT _doc?pipeline=copy: 201');
is_deeply($es->doc('cp', 'c'), { src => { v => { a => [1, 2], b => 'x' } }, copy => { a => [1, 2], b => 'x' } },
          'copy_from copies the value; ignore_empty_value skips "" and a missing copy_from');
$e = put_err({ processors => [ { set => { field => 'a', value => 1, copy_from => 'b', tag => 't1' } } ] }, 'value and copy_from');
is($e->{reason}, '[copy_from] cannot set both `copy_from` and `value` in the same processor', "... ES's reason");
is($e->{processor_tag}, 't1', '... processor_tag');

# ---- processor failures: per item, with ES's type and reason -------------
put_pipe('rm',    { processors => [ { remove => { field => 'x' } } ] });
put_pipe('rmdot', { processors => [ { remove => { field => 'a.b' } } ] });
put_pipe('mv',    { processors => [ { rename => { field => 'x', target_field => 'y' } } ] });
put_pipe('mvover', { processors => [ { rename => { field => 'x', target_field => 'y', override => JSON::PP::true } } ] });
put_pipe('lc',    { processors => [ { lowercase => { field => 'x' } } ] });
put_pipe('deep',  { processors => [ { set => { field => 'x.y', value => 1 } } ] });
put_pipe('idx',   { processors => [ { set => { field => 'arr.1', value => 'B' } }, { remove => { field => 'arr.0' } } ] });
put_pipe('ign',   { processors => [ { remove => { field => 'x', ignore_failure => JSON::PP::true } }, { set => { field => 'ok', value => 1 } } ] });
($st, $b) = $es->bulk(nd(
    { index => { _index => 'f', _id => '1', pipeline => 'rm' } },    { a => 1 },
    { index => { _index => 'f', _id => '2', pipeline => 'rmdot' } }, { a => {} },
    { index => { _index => 'f', _id => '3', pipeline => 'mv' } },    { a => 1 },
    { index => { _index => 'f', _id => '4', pipeline => 'mv' } },    { x => 1, y => 2 },
    { index => { _index => 'f', _id => '5', pipeline => 'lc' } },    { x => 5 },
    { index => { _index => 'f', _id => '6', pipeline => 'lc' } },    { x => ['a', 1] },
    { index => { _index => 'f', _id => '7', pipeline => 'lc' } },    { x => undef },
    { index => { _index => 'f', _id => '8', pipeline => 'deep' } },  { x => 'str' },
    { index => { _index => 'f', _id => '9', pipeline => 'rm' } },    { x => 1, z => 2 },
    { index => { _index => 'f', _id => '10', pipeline => 'mvover' } }, { x => 1, y => 2 },
    { index => { _index => 'f', _id => '11', pipeline => 'idx' } },  { arr => ['a', 'b'] },
    { index => { _index => 'f', _id => '12', pipeline => 'ign' } },  { z => 1 },
), refresh => 'true');
is($st, 200, 'a bulk with failing processors: 200');
ok($b->{errors}, '... errors: true');
is_deeply(statuses($b), [400, 400, 400, 400, 400, 400, 400, 400, 201, 201, 201, 201], 'failures are per-item 400s');
my @reasons = map { $_->{error}{reason} } @{ items($b) }[0 .. 7];
is_deeply([ map { $_->{error}{type} } @{ items($b) }[0 .. 7] ], [ ('illegal_argument_exception') x 8 ],
          'type illegal_argument_exception');
is_deeply(\@reasons, [
    'field [x] not present as part of path [x]',
    'field [b] not present as part of path [a.b]',
    "field [x] doesn't exist",
    'field [y] already exists',
    'field [x] of type [java.lang.Integer] cannot be cast to [java.lang.String]',
    'value [1] of type [java.lang.Integer] in list field [x] cannot be cast to [java.lang.String]',
    'field [x] is null, cannot process it.',
    'cannot set [y] with parent object of type [java.lang.String] as part of path [x.y]',
], "ES's reasons");
ok(!exists items($b)->[0]{error}{index_uuid}, 'a pipeline failure carries no shard details');
is($es->count('f'), 4, 'failed items were not written');
is_deeply($es->doc('f', '9'), { z => 2 }, 'remove');
is_deeply($es->doc('f', '10'), { y => 1 }, 'rename with override');
is_deeply($es->doc('f', '11'), { arr => ['B'] }, 'array elements by index');
is_deeply($es->doc('f', '12'), { z => 1, ok => 1 }, 'ignore_failure: the failure is skipped, the rest runs');

($st, $b) = $es->bulk(nd({ index => { _index => 'nf', _id => '1', pipeline => 'rm' } }, { a => 1 }));
($st) = $es->get('/nf');
is($st, 404, 'a document failing its pipeline does not auto-create its index');

# ---- URL vs action line; unknown pipeline; _none -------------------------
($st, $b) = $es->bulk(nd(
    { index  => { _index => 'u', _id => '1' } },                         { name => 'MiXed' },
    { index  => { _index => 'u', _id => '2', pipeline => 'upper2' } },   { name => 'MiXed' },
    { create => { _index => 'u', _id => '3', pipeline => '_none' } },    { name => 'MiXed' },
    { index  => { _index => 'u', _id => '4', pipeline => 'missing' } },  { name => 'MiXed' },
    { delete => { _index => 'u', _id => '3', pipeline => 'missing' } },
), pipeline => 'lower', refresh => 'true');
is_deeply(statuses($b), [201, 400, 201, 400, 200], 'statuses');
is(items($b)->[1]{error}{reason}, 'pipeline with id [upper2] does not exist', 'the line pipeline is used (not the URL one)');
is(items($b)->[3]{error}{type}, 'illegal_argument_exception', 'unknown pipeline: illegal_argument_exception');
is(items($b)->[3]{error}{reason}, 'pipeline with id [missing] does not exist', "... ES's reason");
is_deeply($es->doc('u', '1'), { name => 'mixed' }, 'URL pipeline= applies to lines without one');
put_pipe('upper2', { processors => [ { uppercase => { field => 'name' } } ] });
($st, $b) = $es->bulk(nd(
    { index => { _index => 'u', _id => '2', pipeline => 'upper2' } }, { name => 'MiXed' },
    { index => { _index => 'u', _id => '3', pipeline => '_none' } },  { name => 'MiXed' },
), pipeline => 'lower');
is_deeply(statuses($b), [201, 201], 'now both succeed');
is_deeply($es->doc('u', '2'), { name => 'MIXED' }, 'the action line pipeline wins over the URL');
is_deeply($es->doc('u', '3'), { name => 'MiXed' }, 'pipeline _none on the line: no pipeline');
($st, $b) = $es->bulk(nd({ index => { _index => 'u', _id => '5' } }, { name => 'X' }), pipeline => 'missing');
is(items($b)->[0]{error}{reason}, 'pipeline with id [missing] does not exist', 'unknown URL pipeline: per item 400');

# the request log shows the URL's pipeline=
my ($logged) = grep { $_->{url} =~ m{^/_bulk} } reverse @{ $es->requests(20) };
like($logged->{url}, qr/[?&]pipeline=missing(&|$)/, 'the request log has the URL with pipeline=');

# update: the pipeline applies to the upsert document only, delete ignores it
($st, $b) = $es->bulk(nd(
    { update => { _index => 'u', _id => 'up1', pipeline => 'upper2' } }, { doc => { name => 'a' }, upsert => { name => 'Upserted' } },
    { update => { _index => 'u', _id => 'up1', pipeline => 'upper2' } }, { doc => { name => 'Partial' }, upsert => { name => 'b' } },
    { update => { _index => 'u', _id => 'up2', pipeline => 'upper2' } }, { doc => { name => 'DocAsUpsert' }, doc_as_upsert => JSON::PP::true },
    { update => { _index => 'u', _id => 'up1', pipeline => 'missing' } }, { doc => { name => 'c' } },
    { update => { _index => 'u', _id => 'up1', pipeline => 'missing' } }, { doc => { name => 'c' }, upsert => { name => 'd' } },
));
is_deeply(statuses($b), [201, 200, 201, 200, 400], 'update statuses');
is_deeply($es->doc('u', 'up1'), { name => 'c' }, 'upsert processed, partial doc not');
is_deeply($es->doc('u', 'up2'), { name => 'DocAsUpsert' }, 'doc_as_upsert: an explicit pipeline does not apply');
is(items($b)->[4]{error}{reason}, 'pipeline with id [missing] does not exist', 'an update with an upsert needs its pipeline to exist');

# single-document writes
($st, $b) = $es->put('/s/_create/1?pipeline=lower', { name => 'ABC' });
is($st, 201, '_create?pipeline=: 201');
is_deeply($es->doc('s', '1'), { name => 'abc' }, '... processed');
($st, $b) = $es->post('/s/_doc?pipeline=lower', { name => 'DEF' });
is($st, 201, 'POST _doc?pipeline=: 201');
is_deeply($es->doc('s', $b->{_id}), { name => 'def' }, '... processed');
($st, $b) = $es->put('/s/_doc/2?pipeline=missing', { name => 'x' });
is($st, 400, 'PUT _doc with an unknown pipeline: 400');
is($b->{error}{reason}, 'pipeline with id [missing] does not exist', "... ES's reason");
($st, $b) = $es->put('/s/_doc/3?pipeline=rm', { name => 'x' });
is($st, 400, 'PUT _doc with a failing pipeline: 400');
is($b->{error}{type}, 'illegal_argument_exception', '... illegal_argument_exception');
is($b->{error}{reason}, 'field [x] not present as part of path [x]', "... ES's reason");
($st, $b) = $es->post('/s/_update/1?pipeline=lower', { doc => { a => 1 } });
is($st, 400, '_update does not take pipeline=');
like($b->{error}{reason}, qr/unrecognized parameter: \[pipeline\]/, '... unrecognized parameter');
($st, $b) = $es->delete('/s/_doc/1?pipeline=lower');
is($st, 400, 'DELETE _doc does not take pipeline= either');
ok(defined $es->doc('s', '1'), '... and deletes nothing');

# ---- index.default_pipeline / index.final_pipeline -------------------------
put_pipe('stamp', { processors => [ { set => { field => 'final', value => JSON::PP::true } } ] });
($st) = $es->put('/dp', { settings => { index => { default_pipeline => 'lower', final_pipeline => 'stamp' } } });
is($st, 200, 'create an index with default and final pipelines');
($st, $b) = $es->bulk(nd(
    { index => { _index => 'dp', _id => '1' } },                      { name => 'ABC' },
    { index => { _index => 'dp', _id => '2', pipeline => 'upper2' } }, { name => 'abc' },
    { index => { _index => 'dp', _id => '3', pipeline => '_none' } },  { name => 'ABC' },
    { update => { _index => 'dp', _id => '4' } }, { doc => { name => 'ABC' }, doc_as_upsert => JSON::PP::true },
));
is_deeply(statuses($b), [201, 201, 201, 201], 'statuses');
is_deeply($es->doc('dp', '1'), { name => 'abc', final => JSON::PP::true }, 'default then final pipeline');
is_deeply($es->doc('dp', '2'), { name => 'ABC', final => JSON::PP::true }, 'an explicit pipeline replaces the default one');
is_deeply($es->doc('dp', '3'), { name => 'ABC', final => JSON::PP::true }, '_none skips the default, not the final pipeline');
is_deeply($es->doc('dp', '4'), { name => 'abc', final => JSON::PP::true }, 'doc_as_upsert: the default pipeline processes the doc');
($st, $b) = $es->delete('/_ingest/pipeline/lower');
is($st, 400, 'a pipeline an index uses cannot be deleted');
is($b->{error}{reason}, 'pipeline [lower] cannot be deleted because it is the default pipeline for 1 index(es) including [dp]',
   "... ES's reason");
($st) = $es->put('/dp/_settings', { index => { default_pipeline => 'nope' } });
($st, $b) = $es->bulk(nd({ index => { _index => 'dp', _id => '5' } }, { name => 'x' }));
is(items($b)->[0]{error}{reason}, 'pipeline with id [nope] does not exist', 'a missing default pipeline fails the item');
($st) = $es->put('/dp/_settings', { index => { default_pipeline => undef, final_pipeline => undef } });
($st) = $es->delete('/_ingest/pipeline/stamp');
is($st, 200, 'once unused it can be deleted');
put_pipe('tmp1', { processors => [] });
put_pipe('tmp2', { processors => [] });
($st) = $es->delete('/_ingest/pipeline/tmp*');
is($st, 200, 'DELETE with a wildcard');
($st, $b) = $es->get('/_ingest/pipeline/tmp*');
is($st, 404, '... deleted every match');
($st, $b) = $es->delete('/_ingest/pipeline/tmp*');
is($st, 404, '... a wildcard matching nothing is 404');

# ---- discard mode -----------------------------------------------------------
$es->set_config({ discard => JSON::PP::true });
($st, $b) = $es->bulk(nd(
    { index  => { _index => 'd', _id => '1', pipeline => 'lower' } },   { name => 'X' },
    { create => { _index => 'd', _id => '2', pipeline => 'missing' } }, { name => 'X' },
    { index  => { _index => 'd', _id => '3' } },                        { name => 'X' },
    { index  => { _index => 'd', _id => '4', pipeline => '_none' } },   { name => 'X' },
    { delete => { _index => 'd', _id => '5', pipeline => 'missing' } },
), pipeline => 'rm');
is_deeply(statuses($b), [201, 400, 201, 201, 200], 'discard: a known pipeline is accepted, an unknown one is 400');
is(items($b)->[1]{error}{reason}, 'pipeline with id [missing] does not exist', "... ES's reason");
$es->set_config({ discard => JSON::PP::false });

# ---- reset drops pipelines ----------------------------------------------------
$es->reset;
($st, $b) = $es->get('/_ingest/pipeline');
is($st, 404, 'POST /_esd/reset drops the pipelines');
($st, $b) = $es->bulk(nd({ index => { _index => 'r', _id => '1', pipeline => 'lower' } }, { a => 1 }));
is(items($b)->[0]{error}{reason}, 'pipeline with id [lower] does not exist', '... and they no longer apply');

ok($es->stop, 'esd stops cleanly');
is($es->exit_status, 0, 'exit status 0');
done_testing;
