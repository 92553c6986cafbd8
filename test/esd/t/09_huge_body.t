# esd: the huge_body fault answers a _bulk request with "[{},{},...]" of a
# chosen size (64 MiB by default), so clients can show they bound what
# they parse (ecp finding M5); huge_answer does the same, as
# {"a":[{},...]}, for any request whose path matches (finding H1).  Bodies are read raw here: decoding 64 MiB
# with JSON::PP would take minutes.
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use EsdServer;

my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my $http = HTTP::Tiny->new(timeout => 120);
my $nd = qq({"index":{"_index":"huge","_id":"1"}}\n{"a":1}\n);

sub raw_bulk
{
	my ($path) = @_;
	return $http->request('POST', $es->url . ($path // '/_bulk'),
		{ content => $nd, headers => { 'Content-Type' => 'application/x-ndjson' } });
}

# ---- default: 64 MiB of [{},{},...] as 200, once ----
$es->set_faults({ huge_body => { first => 1 } });
my $r = raw_bulk('/_bulk?filter_path=errors,items.*.status');
is($r->{status}, 200, 'huge body answered with 200');
is(length($r->{content}), 64 << 20, 'exactly 64 MiB, filter_path ignored');
is(substr($r->{content}, 0, 10), '[{},{},{},', 'starts as an array of empty objects');
like(substr($r->{content}, -8), qr/\{\}\s*\]$/, 'ends as one');
is($r->{headers}{'content-length'}, 64 << 20, 'Content-Length says so');
$r = raw_bulk();
is($r->{status}, 200, 'the next _bulk is served normally');
is(decode_json($r->{content})->{items}[0]{index}{status}, 201, '... with its item');
$es->refresh('huge');
is($es->count('huge'), 1, 'the request answered with a huge body applied nothing');

# ---- 500, a chosen size, the items shape ----
$es->set_faults({ huge_body => { status => 500, bytes => 1000, shape => 'items' } });
$r = raw_bulk();
is($r->{status}, 500, 'status 500');
is(length($r->{content}), 1000, 'bytes => 1000');
my $decoded = eval { decode_json($r->{content}) };
my @items = ref $decoded eq 'HASH' && ref $decoded->{items} eq 'ARRAY' ? @{ $decoded->{items} } : ();
ok(@items > 100 && !(grep { ref $_ ne 'HASH' || %$_ } @items),
	'shape items: {"items":[{},...]}, valid JSON (' . scalar(@items) . ' items)');
$r = raw_bulk();
is($r->{status}, 500, 'no first/every: every _bulk');
my ($st) = $es->get('/');
is($st, 200, 'other endpoints are not touched');

$es->set_faults({ huge_body => { status => 500, every => 2 } });
my @sts = map { raw_bulk()->{status} } 1 .. 4;
is_deeply(\@sts, [200, 500, 200, 500], 'every 2nd _bulk');
$r = raw_bulk();
like(eval { decode_json($r->{content})->{items}[0]{index}{status} } // '', qr/^20[01]$/,
	'the 5th is a normal answer');

# ---- bad fault specs ----
for my $bad ({ status => 404 }, { bytes => 5 }, { bytes => 'x' }, { shape => 'tree' }, { size => 1 }) {
	my ($s, $b) = $es->put('/_esd/faults', { huge_body => $bad });
	is($s, 400, 'refused: ' . JSON::PP->new->canonical->encode($bad));
}
like(($es->put('/_esd/faults', { huge_bodies => {} }))[1]{error}{reason} // '', qr/huge_body/,
	'the list of known faults names huge_body');
$es->clear_faults;

# ---- huge_answer: any request whose path matches (ecp finding H1) ----
$es->put('/logs-1');
$es->post('/_aliases', { actions => [ { add => { index => 'logs-1', alias => 'logs' } } ] });
$es->set_faults({ huge_answer => { path => '/_alias/*', method => 'GET', bytes => 5000, first => 2 } });
$r = $http->get($es->url . '/_alias/logs');
is($r->{status}, 200, 'huge_answer: a matching request is answered 200');
is(length($r->{content}), 5000, '... with exactly bytes => 5000');
is(substr($r->{content}, 0, 10), '{"a":[{},{', '... of {"a":[{},{},...]}');
$decoded = eval { decode_json($r->{content}) };
ok(ref $decoded eq 'HASH' && ref $decoded->{a} eq 'ARRAY' && @{ $decoded->{a} } > 1000, '... valid JSON');
($st) = $es->get('/logs');
is($st, 200, 'a path the pattern does not match is served normally');
$r = $http->request('HEAD', $es->url . '/_alias/logs');
is($r->{status}, 200, 'another method does not count either');
my ($st2, $b2) = $es->get('/_alias/logs');
ok($st2 == 200 && ref $b2 eq 'HASH' && exists $b2->{a} && !exists $b2->{'logs-1'},
	'first => 2: the second matching request is huge too');
($st2, $b2) = $es->get('/_alias/logs');
ok($st2 == 200 && exists $b2->{'logs-1'}, 'the third is the real answer');
$es->set_faults({ huge_answer => { path => '/logs-*/_count', status => 500, bytes => 100 } });
$r = $http->get($es->url . '/logs-1/_count');
ok($r->{status} == 500 && length($r->{content}) == 100, 'status 500, any method, a pattern inside the path');
for my $bad ({ bytes => 100 }, { path => 'logs' }, { path => '/x', status => 201 }, { path => '/x', bytes => 3 },
	{ path => '/x', method => '' }, { path => '/x', shape => 'array' }) {
	my ($s) = $es->put('/_esd/faults', { huge_answer => $bad });
	is($s, 400, 'refused: ' . JSON::PP->new->canonical->encode($bad));
}
$es->clear_faults;

done_testing();
