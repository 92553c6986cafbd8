# esd --no-control: the /_esd/ endpoints are switched off, so /_esd/... is
# a path like any other and is answered as a cluster answers an endpoint it
# does not have (400 "no handler found", the index name rules for PUT
# /_esd), after the same checks as every request (authentication, body
# limit, Content-Type).  make test's realmode suite runs the real-cluster
# list of TAP files against such a stand-in, so a test that reaches for a
# control endpoint without EsdServer->require_stand_in fails there.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use EsdServer;

EsdServer->require_stand_in('the --no-control switch of the stand-in');

# Every control endpoint README lists, with a method it answers to.
my @control = (
    [GET => '/_esd/faults'], [PUT => '/_esd/faults'], [DELETE => '/_esd/faults'],
    [GET => '/_esd/requests?n=5'], [DELETE => '/_esd/requests'],
    [GET => '/_esd/stats'], [DELETE => '/_esd/stats'],
    [GET => '/_esd/config'], [PUT => '/_esd/config'],
    [GET => '/_esd/pits'], [POST => '/_esd/pits/expire'],
    [POST => '/_esd/reset'], [POST => '/_esd/sink'],
);
my %body_for = (PUT => '{"bulk_reject":{"status":503},"discard":true}', POST => '{}');

sub no_handler {
    my ($method, $path) = @_;
    $path =~ s/\?.*//;
    return { error => "no handler found for uri [$path] and method [$method]", status => 400 };
}

# ---- a normal stand-in answers them (the contrast) ---------------------------
my $steered = EsdServer->start();
my ($st, $b) = $steered->get('/_esd/faults');
is($st, 200, 'without the switch GET /_esd/faults answers 200');
($st, $b) = $steered->get('/_esdx/faults');
is_deeply([$st, $b], [400, no_handler(GET => '/_esdx/faults')],
    'and a path esd does not know is 400 no handler found, as Elasticsearch answers it');
$steered->stop;
is($steered->exit_status, 0, 'exit status 0');

# ---- --no-control: every control endpoint is an unknown endpoint ------------
my $es = EsdServer->start(extra_args => ['--no-control', '--no-refresh-timer']);
($st) = $es->put('/kept', {});
is($st, 200, 'the cluster API works: PUT /kept');
($st, $b) = $es->bulk(qq({"index":{"_index":"kept","_id":"1"}}\n{"a":1}\n), refresh => 'true');
is($st, 200, '_bulk works');

for my $c (@control) {
    my ($method, $path) = @$c;
    ($st, $b) = $es->request($method, $path, $body_for{$method});
    is_deeply([$st, $b], [400, no_handler($method, $path)], "$method $path: 400 no handler found");
}
($st, $b) = $es->get('/_esd');
is_deeply([$st, $b], [400, no_handler(GET => '/_esd')], 'GET /_esd: 400 no handler found');
($st, $b) = $es->put('/_esd', {});
is($st, 400, 'PUT /_esd: 400');
is($b->{error}{type}, 'invalid_index_name_exception', '... the index name rules, as for any PUT /_name');

($st, $b) = $es->bulk(qq({"index":{"_index":"kept","_id":"2"}}\n{"a":2}\n), refresh => 'true');
is($st, 200, 'the fault set sent to /_esd/faults was not installed: _bulk still works');
is($es->count('kept'), 2, 'POST /_esd/reset dropped nothing');
($st, $b) = $es->post('/_esd/faults', 'x', { 'Content-Type' => 'text/plain' });
is($st, 406, 'the Content-Type check applies to /_esd/ as to every request');
$es->stop;
is($es->exit_status, 0, 'exit status 0');

# ---- what a cluster checks first applies to /_esd/ too ----------------------
my $guarded = EsdServer->start(auth => 'basic:u:p', max_content_length => 1000,
    extra_args => ['--no-control']);
($st) = $guarded->get('/_esd/stats');
is($st, 401, 'with --auth, GET /_esd/stats without credentials is 401, as a cluster with security answers');
my %auth = (Authorization => 'Basic ' . encode_base64('u:p', ''));
($st, $b) = $guarded->request('GET', '/_esd/stats', undef, \%auth);
is_deeply([$st, $b], [400, no_handler(GET => '/_esd/stats')], '... with them, 400 no handler found');
($st, $b) = $guarded->request('POST', '/_esd/sink', 'x' x 5000, \%auth);
is($st, 413, 'a body over --max-content-length to /_esd/sink is 413 (the sink reads any size)');
$guarded->stop;
is($guarded->exit_status, 0, 'exit status 0');

# ---- a test that reaches for a control endpoint fails; one that asks skips --
# What the realmode suite of make test relies on, through its own harness
# (test/scripts/tap-run.pl): ECP_ES_URL pointing at a --no-control stand-in.
my $real = EsdServer->start(extra_args => ['--no-control']);
my $root = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..', '..'));
my $dir = tempdir('no-control-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my %probe = (
    'reach.t' => "use Test::More; use EsdServer; my \$es = EsdServer->start;\n"
        . "ok(1, 'before'); \$es->stats; ok(1, 'after'); done_testing;\n",
    'ask.t' => "use Test::More; use EsdServer; EsdServer->require_stand_in('its stats');\n"
        . "my \$es = EsdServer->start; \$es->stats; ok(1); done_testing;\n",
    'raw.t' => "use Test::More; use EsdServer; my \$es = EsdServer->start;\n"
        . "my (\$st) = \$es->get('/_esd/stats'); is(\$st, 200, 'stats'); done_testing;\n",
);
for my $name (sort keys %probe) {
    open(my $fh, '>', "$dir/$name") or die "$dir/$name: $!";
    print $fh $probe{$name};
    close $fh or die "$dir/$name: $!";
}
my $out = do {
    local $ENV{ECP_ES_URL} = $real->url;
    local $ENV{ECP_TAP_LIB} = "$root/test/perl";
    my @cmd = ($^X, "$root/test/scripts/tap-run.pl", 'probe', map { "$dir/$_" } sort keys %probe);
    open(my $ph, '-|', join(' ', map { "'$_'" } @cmd) . ' 2>&1') or die "tap-run.pl: $!";
    local $/;
    my $o = <$ph>;
    close $ph;
    $o // '';
};
like($out, qr/^TAP_COUNTS probe 1 2 1$/m,
    'under ECP_ES_URL: reach.t passes 1 then dies (1 failed), raw.t gets no 200 (1 failed), ask.t skips whole')
    or diag($out);
like($out, qr/esd control endpoint needed, but ECP_ES_URL points at a real cluster/,
    'the file that reached for stats says why it died');
like($out, qr/^TAP_SKIPPED probe \S*ask\.t: needs the esd stand-in \(its stats\); ECP_ES_URL is set$/m,
    'the file that asked is listed as skipped with its reason');
$real->stop;
is($real->exit_status, 0, 'exit status 0');

done_testing();
