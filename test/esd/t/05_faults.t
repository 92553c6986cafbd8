# esd: fault injection, authentication, control endpoints, discard mode.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time sleep);
use EsdServer;

my $J = JSON::PP->new->canonical;
sub nd { join '', map { (ref $_ ? $J->encode($_) : $_) . "\n" } @_ }
sub docs { my ($idx, @ids) = @_; nd(map { ({ index => { _index => $idx, _id => "$_" } }, { i => $_ }) } @ids) }

my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my ($st, $b, $h);

# ---- bulk_reject first N: nothing applied, right envelopes ----
$es->set_faults({ bulk_reject => { status => 429, first => 2 } });
is_deeply($es->faults, { bulk_reject => { status => 429, first => 2 } }, 'GET /_esd/faults');
for my $n (1, 2) {
    ($st, $b) = $es->bulk(docs('rej', $n));
    is($st, 429, "bulk $n rejected with 429");
    is($b->{error}{type}, 'es_rejected_execution_exception', '429 type');
    is($b->{status}, 429, 'status in body');
}
($st, $b) = $es->bulk(docs('rej', 3));
is($st, 200, 'third bulk accepted');
$es->refresh('rej');
is($es->count('rej'), 1, 'rejected bulks applied nothing');

# every K
$es->set_faults({ bulk_reject => { status => 503, every => 3 } });
my @sts = map { ($es->bulk(docs('every', $_)))[0] } 1 .. 6;
is_deeply(\@sts, [200, 200, 503, 200, 200, 503], 'every 3rd bulk rejected');
$es->set_faults({ bulk_reject => { status => 503, first => 1 } });
($st, $b) = $es->bulk(docs('x', 1));
is($b->{error}{type}, 'cluster_block_exception', '503 envelope');
$es->set_faults({ bulk_reject => { status => 500, first => 1 } });
($st, $b) = $es->bulk(docs('x', 1));
is($st, 500, '500 rejection');
ok(ref $b && $b->{error}{type}, '500 envelope');
$es->set_faults({ bulk_reject => { status => 502, first => 1 } });
($st, $b, $h) = $es->bulk(docs('x', 1));
is($st, 502, '502 rejection');
like($b, qr/<html>.*502 Bad Gateway/s, '502 has an HTML body like a proxy');
like($h->{'content-type'}, qr{text/html}, 'text/html');
($st) = $es->get('/');
is($st, 200, 'bulk_reject does not touch other endpoints');
$es->clear_faults;
is_deeply($es->faults, {}, 'faults cleared');

# ---- per-item 429 fraction, deterministic ----
$es->set_faults({ item_reject => { status => 429, fraction => 0.3, seed => 7 } });
my @ids = 1 .. 200;
$b = $es->bulk(docs('ir', @ids));
my @rej = grep { $b->{items}[$_ - 1]{index}{status} == 429 } @ids;
ok(@rej > 30 && @rej < 90, 'about 30% rejected (' . scalar(@rej) . ')');
is($b->{items}[$rej[0] - 1]{index}{error}{type}, 'es_rejected_execution_exception', 'item 429 type');
ok($b->{errors}, 'errors true');
$es->refresh('ir');
is($es->count('ir'), 200 - @rej, 'rejected items not applied');
$es->set_faults({ item_reject => { status => 429, fraction => 0.3, seed => 7 } });
$b = $es->bulk(docs('ir2', @ids));
my @rej2 = grep { $b->{items}[$_ - 1]{index}{status} == 429 } @ids;
is_deeply(\@rej2, \@rej, 'same seed, same items rejected');
$es->set_faults({ item_reject => { status => 429, first => 2 } });
$b = $es->bulk(docs('ir3', 1 .. 4));
is_deeply([map { $_->{index}{status} } @{ $b->{items} }], [429, 429, 201, 201], 'item_reject first N');

# ---- poison field ----
$es->set_faults({ poison_field => 'bad' });
$b = $es->bulk(nd({ index => { _index => 'poison', _id => '1' } }, { ok => 1 },
                  { index => { _index => 'poison', _id => '2' } }, { bad => 1, ok => 2 }));
is($b->{items}[0]{index}{status}, 201, 'clean doc accepted');
is($b->{items}[1]{index}{status}, 400, 'poisoned doc 400');
is($b->{items}[1]{index}{error}{type}, 'document_parsing_exception', 'parse error type');
like($b->{items}[1]{index}{error}{reason}, qr/\[bad\]/, 'names the field');
is($es->doc('poison', '2'), undef, 'poisoned doc not applied');

# ---- delay: measured lower bound, other connections not blocked ----
$es->set_faults({ delay_ms => 400 });
my $t0 = time;
($st) = $es->get('/');
my $took = time - $t0;
is($st, 200, 'delayed request answered');
ok($took >= 0.4, "request took >= delay ($took s)");
my $delayed = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $es->port) or die;
print $delayed "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
my $ctl = HTTP::Tiny->new->get($es->url . '/_esd/stats');
is($ctl->{status}, 200, 'control endpoint answers while another request is delayed');
my $line = <$delayed>;
like($line, qr/200/, 'delayed request completes');
close $delayed;
$es->set_faults({ delay_ms => { ms => 300, first => 1 } });
$t0 = time;
$es->get('/');
ok(time - $t0 >= 0.3, 'delay first:1 delays the first request');
$es->clear_faults;

# ---- drop ----
$es->set_faults({ drop => { first => 1 } });
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $es->port) or die;
my $body = docs('drop', 1);
print $sock "POST /_bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
my $got = '';
my $n = sysread($sock, $got, 1000);
ok(!$n, 'dropped: connection closed without an answer');
close $sock;
($st) = $es->bulk(docs('drop', 2));
is($st, 200, 'next bulk answered');
$es->refresh('drop');
is($es->count('drop'), 1, 'dropped request applied nothing');
$es->set_faults({ drop => { every => 2, match => 'all' } });
# raw sockets: HTTP::Tiny silently retries an idempotent request once
sub raw_get {
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $es->port) or die;
    print $c "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    my $l = <$c>;
    close $c;
    return defined $l && $l =~ m{^HTTP/1.1 (\d+)} ? $1 : 'dropped';
}
my @d = map { raw_get() } 1 .. 4;
is_deeply(\@d, [200, 'dropped', 200, 'dropped'], 'drop every 2nd request of any kind');
$es->clear_faults;
ok($es->stats->{dropped_connections} >= 3, 'dropped connections counted');

# ---- auth (fault, basic and api key) ----
my $key = encode_base64('id1:secret', '');
$es->set_faults({ auth => { basic => 'user:pass' } });
($st, $b, $h) = $es->get('/');
is($st, 401, 'no credentials 401');
is($b->{error}{type}, 'security_exception', 'security_exception');
like($b->{error}{reason}, qr/missing authentication credentials for REST request \[\/\]/, 'missing credentials reason');
my $wa = $h->{'www-authenticate'} // '';
like(ref $wa ? join(';', @$wa) : $wa, qr/Basic realm="security".*ApiKey/, 'WWW-Authenticate Basic and ApiKey');
($st, $b) = $es->get('/', undef, { Authorization => 'Basic ' . encode_base64('user:wrong', '') });
is($st, 401, 'wrong password 401');
like($b->{error}{reason}, qr/unable to authenticate user \[user\]/, 'names the user');
($st) = $es->get('/', undef, { Authorization => 'Basic ' . encode_base64('user:pass', '') });
is($st, 200, 'right credentials 200');
($st) = $es->get('/_esd/stats');
is($st, 200, 'control endpoints need no auth');
$es->set_faults({ auth => { api_key => $key } });
($st) = $es->get('/', undef, { Authorization => "ApiKey $key" });
is($st, 200, 'api key accepted');
($st) = $es->get('/', undef, { Authorization => 'ApiKey ' . encode_base64('id1:nope', '') });
is($st, 401, 'wrong api key 401');
($st) = $es->bulk(docs('auth', 1));
is($st, 401, 'bulk without credentials 401');
$es->clear_faults;
{
    my $a = EsdServer->start(auth => 'basic:u:p');
    ($st) = $a->get('/');
    is($st, 401, '--auth basic enforced');
    ($st) = $a->get('/', undef, { Authorization => 'Basic ' . encode_base64('u:p', '') });
    is($st, 200, '--auth basic accepted');
    $a->stop;
    $a = EsdServer->start(auth => "apikey:$key");
    ($st) = $a->get('/', undef, { Authorization => "ApiKey $key" });
    is($st, 200, '--auth apikey accepted');
    ($st) = $a->get('/');
    is($st, 401, '--auth apikey enforced');
    $a->stop;
}

# ---- faults at start ----
{
    my $f = EsdServer->start(faults => { bulk_reject => { status => 429, first => 1 } });
    ($st) = $f->bulk(docs('f', 1));
    is($st, 429, '--faults applied from the start');
    ($st) = $f->bulk(docs('f', 1));
    is($st, 200, 'then accepted');
    $f->stop;
}

# ---- malformed control JSON ----
for my $bad ('{', '[1]', '{"nope":1}', '{"bulk_reject":{"status":418}}', '{"bulk_reject":{"first":0}}',
             '{"item_reject":{"fraction":2}}', '{"delay_ms":"x"}', '{"auth":{"basic":"nocolon"}}',
             '{"drop":{"first":1,"every":2}}', '{"poison_field":5}') {
    ($st, $b) = $es->request('PUT', '/_esd/faults', $bad);
    is($st, 400, "bad faults $bad -> 400");
    ok(length($b->{error}{reason} // '') > 5, 'with a clear message');
}
($st, $b) = $es->request('PUT', '/_esd/config', '{"bogus":1}');
is($st, 400, 'unknown config key 400');
($st, $b) = $es->request('PUT', '/_esd/config', '{"discard":"yes"}');
is($st, 400, 'bad config value 400');
($st, $b) = $es->get('/_esd/nothing');
is($st, 404, 'unknown control endpoint 404');
($st, $b) = $es->get('/_esd/config');
is($b->{max_content_length}, 104857600, 'config shows the default max_content_length');

# ---- request log ----
$es->request('POST', '/_bulk?refresh=false', docs('log', 1, 2), { 'Content-Type' => 'application/x-ndjson', 'X-Tag' => 'abc', Authorization => 'Basic dTpw' });
my $req = $es->requests(1)->[0];
is($req->{method}, 'POST', 'logged method');
is($req->{url}, '/_bulk?refresh=false', 'logged path and query');
is($req->{headers}{'X-Tag'}, 'abc', 'logged custom header');
is($req->{headers}{Authorization}, 'Basic dTpw', 'logged Authorization');
is($req->{items}, 2, 'logged item count');
is($req->{status}, 200, 'logged status');
is($req->{body}, docs('log', 1, 2), 'logged body');
ok($req->{time} > 1e12, 'epoch ms time');
is(scalar @{ $es->requests(3) }, 3, 'n limits the entries');
($st) = $es->delete('/_esd/requests');
is($st, 200, 'DELETE /_esd/requests');
is(scalar @{ $es->requests(10) }, 0, 'request log cleared');

# ---- stats ----
$es->request('DELETE', '/_esd/stats');
$es->set_faults({ bulk_reject => { status => 429, first => 1 } });
$es->bulk(docs('st', 1));
$es->clear_faults;
$es->bulk(docs('st', 1 .. 5) . nd({ create => { _index => 'st', _id => '1' } }, { i => 1 }));
my $s = $es->stats;
is($s->{bulk_requests}, 2, 'bulk_requests');
is($s->{bulk_items}, 6, 'bulk_items');
is($s->{rejected_requests}, 1, 'rejected_requests');
is($s->{item_status}{201}, 5, 'per-item status 201');
is($s->{item_status}{409}, 1, 'per-item status 409');
ok($s->{bulk_bytes} > 0, 'bulk_bytes');
is(scalar @{ $s->{timeline} }, 1, 'timeline entry');
is($s->{timeline}[0]{items}, 6, 'timeline items');
ok(abs($s->{timeline}[0]{second} - time) < 5, 'timeline second is epoch seconds');
is(scalar @{ $s->{bulk_log} }, 1, 'bulk_log entry');
is($s->{bulk_log}[0]{items}, 6, 'bulk_log items');
ok($s->{requests} >= 2, 'requests counted');

# ---- discard mode ----
$es->set_config({ discard => JSON::PP::true });
$b = $es->bulk(nd(
    { index => { _index => 'disc', _id => 'a' } }, { x => 1 },
    { create => { _index => 'disc' } }, { x => 2 },
    { update => { _index => 'disc', _id => 'a' } }, { doc => { x => 3 } },
    { delete => { _index => 'disc', _id => 'a' } },
    { index => { _index => 'disc', _id => '' } }, { x => 4 },
    { index => {} }, { x => 5 },
), refresh => 'true');
is_deeply([map { (keys %$_)[0] } @{ $b->{items} }], [qw(index create update delete index index)], 'discard: item keys');
is_deeply([map { (values %$_)[0]{status} } @{ $b->{items} }], [201, 201, 200, 200, 400, 400], 'discard: statuses');
like($b->{items}[1]{create}{_id}, qr/^.{20}$/, 'discard: auto id');
is($b->{items}[0]{index}{forced_refresh}, JSON::PP::true, 'discard: forced_refresh');
ok($b->{errors}, 'discard: errors flag');
($st, $b) = $es->bulk(nd({ index => { _index => 'disc' } }, { x => 1 }, '{}'));
is($st, 400, 'discard: malformed action still 400');
like($b->{error}{reason}, qr/line \[3\]/, 'discard: line number');
($st) = $es->head('/disc');
is($st, 404, 'discard: nothing stored');
$es->set_faults({ item_reject => { status => 429, first => 1 }, poison_field => 'p' });
$b = $es->bulk(nd({ index => { _index => 'disc', _id => '1' } }, { x => 1 }, { index => { _index => 'disc', _id => '2' } }, { p => 1 }, { index => { _index => 'disc', _id => '3' } }, { x => 1 }));
is_deeply([map { $_->{index}{status} } @{ $b->{items} }], [429, 400, 201], 'discard: item faults apply');
$es->clear_faults;
$es->set_config({ discard => JSON::PP::false });
{
    my $d = EsdServer->start(discard => 1);
    my $big = docs('many', 1 .. 2000);
    $b = $d->bulk($big);
    is(scalar @{ $b->{items} }, 2000, '--discard: one item per action');
    is(scalar(grep { $_->{index}{status} == 201 } @{ $b->{items} }), 2000, 'all 201');
    is($d->stats->{bulk_items}, 2000, 'discard counts items');
    is($d->stats->{bulk_bytes}, length $big, 'discard counts bytes');
    $d->stop;
}

# ---- sink ----
($st, $b) = $es->request('POST', '/_esd/sink', 'x' x 12345, { 'Content-Type' => 'text/plain' });
is_deeply($b, { bytes => 12345 }, 'sink counts bytes');

# ---- reset ----
$es->set_faults({ delay_ms => 1 });
($st) = $es->post('/_esd/reset');
is($st, 200, 'reset');
is(scalar @{ $es->requests(10) }, 0, 'reset: request log cleared');
($st, $b) = $es->get('/_alias');
is_deeply($b, {}, 'reset: no indices');
is_deeply($es->faults, {}, 'reset: no faults');
is($es->stats->{bulk_requests}, 0, 'reset: stats cleared');

done_testing();
