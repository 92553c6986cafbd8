# esd: garbage input never crashes the server; concurrent clients.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use EsdServer;

my $es = EsdServer->start(extra_args => ['--no-refresh-timer']);
my ($st, $b);

srand(1234);
my @chars = ('{', '}', '[', ']', '"', ':', ',', "\n", "\r", ' ', '\\', 'a', '1', '-', 'e', '.',
             'index', 'create', 'update', 'delete', '_index', '_id', 'true', 'null', "\x00", "\xff", "\xc3");
my $bad = 0;
for my $i (1 .. 300) {
    my $body = join '', map { $chars[rand @chars] } 1 .. (1 + int rand 80);
    $body .= "\n" if rand() < 0.7;
    ($st) = $es->bulk($body);
    $bad++ unless $st == 200 || $st == 400;
}
is($bad, 0, 'random bulk bodies get 200 or 400');

# structured garbage: valid action lines with odd sources and metadata
my @odd = (
    qq({"index":{"_index":"g","_id":"1"}}\n[1,2]\n),
    qq({"index":{"_index":"g","_id":"1"}}\n"str"\n),
    qq({"index":{"_index":"g","_id":"1"}}\n{"a":{"b":{"c":[[[1]]]}}}\n),
    qq({"index":{"_index":"g","_id":"\\u00e9\\ud83d\\ude00"}}\n{"u":1}\n),
    qq({"index":{"_index":"g","_id":"x","version":"abc","version_type":"external"}}\n{"a":1}\n),
    qq({"update":{"_index":"g","_id":"1"}}\n{"doc":5}\n),
    qq({"update":{"_index":"g","_id":"1"}}\n{"script":{"source":"ctx._source.a++"}}\n),
    qq({"update":{"_index":"g","_id":"1"}}\n[]\n),
    qq({"delete":{"_index":"g","_id":"1","if_seq_no":-1,"if_primary_term":1}}\n),
    qq({"index":{"_index":"g","_id":") . ('x' x 600) . qq("}}\n{"a":1}\n),
    qq({"index":{"_index":"g","_id":"1","dynamic_templates":{"a":"b"}}}\n{"a":1}\n),
    qq({"index":{"_index":"g","_id":"1"}}\n{"":1}\n),
    qq({"index":{"_index":"g","_id":"1"}}\n{"a.b":1,"a":{"c":2}}\n),
);
for my $o (@odd) {
    ($st, $b) = $es->bulk($o);
    ok($st == 200 || $st == 400, "odd bulk answered ($st)");
}
($st, $b) = $es->get('/g/_doc/%C3%A9%F0%9F%98%80');
is($st, 200, 'unicode id round trip through an escaped path');

# garbage on other endpoints and methods
for my $m (qw(GET POST PUT DELETE HEAD PATCH OPTIONS)) {
    for my $p ('/', '/g', '/g/_doc', '/g/_doc/1', '/_aliases', '/_alias/x', '/g/_search', '/_bulk', '/a/b/c/d/e/f/g/h/i/j', '/%zz', '/g/_update/1') {
        my ($s) = $es->request($m, $p, '{"query":{"term":{"a":{"x":[{}]}}}}', {});
        ok($s > 0 && $s != 599, "$m $p answered ($s)");
    }
}
($st) = $es->post('/g/_search', { query => { bool => { must => [{ term => {} }, { range => { a => 'x' } }] } }, sort => [{ a => { order => 'sideways' } }] });
ok($st == 400, 'bad query/sort 400');

# a truncated request body (client goes away mid-body)
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $es->port) or die;
print $s "POST /_bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{\"index\":{}}\n";
close $s;

# concurrent keep-alive clients
my @pids;
for my $c (1 .. 6) {
    my $pid = fork();
    die unless defined $pid;
    if (!$pid) {
        my $ok = 1;
        for my $r (1 .. 20) {
            my $nd = join '', map { qq({"index":{"_index":"conc","_id":"c$c-r$r-$_"}}\n{"c":$c,"r":$r}\n) } 1 .. 25;
            my ($st, $b) = $es->bulk($nd);
            $ok = 0 unless $st == 200 && !$b->{errors};
        }
        POSIX::_exit($ok ? 0 : 1);
    }
    push @pids, $pid;
}
my $fail = 0;
for (@pids) { waitpid($_, 0); $fail++ if $? }
is($fail, 0, 'six concurrent clients succeeded');
$es->refresh('conc');
is($es->count('conc'), 6 * 20 * 25, 'all concurrent writes present');
($st) = $es->get('/');
is($st, 200, 'alive at the end');
ok($es->stop, 'esd stops within 10 s of SIGTERM after all that');
is($es->exit_status, 0, 'clean shutdown: exit status 0');
done_testing();
