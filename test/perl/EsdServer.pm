package EsdServer;

=head1 NAME

EsdServer - start and drive esd, the Elasticsearch stand-in, from Perl tests

=head1 SYNOPSIS

    use lib 'test/perl';
    use EsdServer;

    my $es = EsdServer->start(
        discard    => 0,                         # --discard
        faults     => { delay_ms => 100 },       # --faults JSON
        auth       => 'basic:user:pass',         # --auth basic:U:P | apikey:ENCODED
        flavor     => 'es8',                     # es8 | es7 | opensearch
        extra_args => ['--no-refresh-timer'],
    );
    my ($status, $body, $headers) = $es->request('PUT', '/idx', { settings => {} });
    $es->bulk($ndjson, refresh => 'true');
    is($es->count('idx'), 3);
    $es->stop;

=head1 DESCRIPTION

Uses only core Perl modules.  The binary is C<$ENV{ESD_BIN}> or
F<test/esd/esd> relative to the repository root (derived from this file's
path).  esd is started on an ephemeral port (C<--port 0>), with a port file in
a private temporary directory; C<start> waits (10 s at most) until the file
exists and C<GET /> answers, and dies otherwise.

=head1 METHODS

=over

=item EsdServer->start(%opts)

Options: C<discard>, C<faults> (hash ref), C<auth>, C<flavor>, C<extra_args>
(array ref), C<max_content_length>.  Returns the server object.

=item EsdServer->require_stand_in($why), EsdServer->external_url

With C<ECP_ES_URL> set (a real cluster, or make test's C<realmode> suite),
C<start> hands out that URL and starts nothing; C<external_url> returns it.
C<require_stand_in> then skips the whole file (C<skip_all>) with C<$why>: call
it before any test in a file that needs the control endpoints or start
options.  For a part of a file, a C<SKIP> block: C<skip "needs the esd
stand-in ($why)", $n if EsdServer-E<gt>external_url>.  A control method
called without asking dies (a failure, not a skip).  See F<doc/testing.md>.

=item $es->port, $es->url

Port number and C<http://127.0.0.1:PORT>.

=item $es->request($method, $path, $body, \%headers)

C<$body> is undef, a string (sent as is) or a reference (JSON-encoded).  A
body gets C<Content-Type: application/json> unless the headers say
otherwise.  Returns C<($status, $decoded, $headers)>: C<$decoded> is the
decoded JSON, or the raw string when the body is not JSON; C<$headers> is
HTTP::Tiny's header hash (lower-case names).  Connections are kept alive.

=item $es->get/put/post/delete/head($path, $body, \%headers)

Shortcuts for C<request>.

=item $es->bulk($ndjson, %query)

POST /_bulk with C<application/x-ndjson>; C<%query> becomes the query string
(e.g. C<refresh =E<gt> 'true'>, C<index =E<gt> 'idx'> targets
C</idx/_bulk>).  Returns C<($status, $decoded, $headers)> in list context, the
decoded body in scalar context.

=item $es->set_faults(\%faults), $es->clear_faults, $es->faults

PUT/DELETE/GET F</_esd/faults>.  C<set_faults> dies on a 400.

=item $es->set_config(\%config)

PUT F</_esd/config> (discard, auto_create_index, max_content_length, ...).

=item $es->stats, $es->requests($n), $es->reset

GET F</_esd/stats>, GET F</_esd/requests?n=N> (array ref of entries,
oldest first), POST F</_esd/reset>.

=item $es->refresh($index), $es->count($index), $es->doc($index, $id)

Refresh, C<_count> (a number), and the decoded C<_source> of a document
(undef when missing).

=item $es->stop

SIGTERM, then wait (SIGKILL after 10 s).  Returns true when esd was reaped
within the 10 s, false when it had to be killed (or was not ours to stop).
Also called on DESTROY and at END.

=item $es->exit_status

After C<stop>: esd's wait status as C<$?> reports it (0 for a clean exit
with status 0; a signal or a non-zero exit code make it non-zero), undef
before C<stop> or for a real cluster (C<ECP_ES_URL>).

=back

=cut

use strict;
use warnings;
use Carp qw(croak);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(WNOHANG);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(sleep time);

my %live;    # pid -> object, for END

sub _binary {
    return $ENV{ESD_BIN} if $ENV{ESD_BIN};
    my $root = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..'));
    return File::Spec->catfile($root, 'test', 'esd', 'esd');
}

# With ECP_ES_URL set, tests talk to that real Elasticsearch/OpenSearch
# instead of starting esd; a test that needs esd's control endpoints
# (faults, stats, request log) asks for the stand-in and is skipped, saying
# why; one that reaches for them without asking dies in _ctl.
sub external_url { return $ENV{ECP_ES_URL} }

sub require_stand_in {
    my ($class, $why) = @_;
    return unless external_url();
    require Test::More;
    Test::More::plan(skip_all => "needs the esd stand-in ($why); ECP_ES_URL is set");
}

sub start {
    my ($class, %o) = @_;
    if (my $external = external_url()) {
        $class->require_stand_in('start options') if grep { $o{$_} } qw(discard faults auth flavor extra_args max_content_length);
        $external =~ s{/+$}{};
        return bless {
            external => $external,
            owner    => $$,
            json     => JSON::PP->new->utf8->canonical->allow_nonref,
            http     => EsdServer::HTTP->new(keep_alive => 1, timeout => 60),
        }, $class;
    }
    my $bin = _binary();
    croak "esd binary not found or not executable: $bin (build it with make -C test/esd)" unless -x $bin;
    my $dir = tempdir('esd-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $port_file = "$dir/port";
    my @args = ($bin, '--port', 0, '--port-file', $port_file);
    push @args, '--discard' if $o{discard};
    push @args, '--flavor', $o{flavor} if $o{flavor};
    push @args, '--auth', $o{auth} if $o{auth};
    push @args, '--max-content-length', $o{max_content_length} if $o{max_content_length};
    push @args, '--faults', JSON::PP->new->canonical->encode($o{faults}) if $o{faults};
    push @args, @{ $o{extra_args} } if $o{extra_args};

    my $pid = fork();
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open(STDOUT, '>', "$dir/stdout") or POSIX::_exit(127);
        open(STDERR, '>', "$dir/stderr") or POSIX::_exit(127);
        exec(@args) or POSIX::_exit(127);
    }
    my $self = bless {
        pid  => $pid,
        owner => $$,
        dir  => $dir,
        json => JSON::PP->new->utf8->canonical->allow_nonref,
        http => EsdServer::HTTP->new(keep_alive => 1, timeout => 60),
    }, $class;
    $live{$pid} = $self;

    my $deadline = time + 10;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $live{$pid};
            $self->{pid} = undef;
            croak "esd exited during start-up: " . _slurp("$dir/stderr");
        }
        if (-s $port_file) {
            my $p = _slurp($port_file);
            if ($p =~ /^(\d+)/) {
                $self->{port} = $1;
                my $r = eval { $self->{http}->get($self->url . '/') };
                return $self if $r && $r->{status} != 599;   # 401 with --auth is an answer too
            }
        }
        sleep 0.02;
    }
    $self->stop;
    croak "esd did not come up within 10 s";
}

sub _slurp {
    my ($f) = @_;
    open(my $fh, '<', $f) or return '';
    local $/;
    my $s = <$fh>;
    return defined $s ? $s : '';
}

sub port { $_[0]{port} }
sub url  { $_[0]{external} // 'http://127.0.0.1:' . $_[0]{port} }
sub pid  { $_[0]{pid} }

sub request {
    my ($self, $method, $path, $body, $headers) = @_;
    my %h = %{ $headers || {} };
    my %opt;
    if (defined $body) {
        $opt{content} = ref $body ? $self->{json}->encode($body) : $body;
        $h{'Content-Type'} = 'application/json'
            unless grep { lc $_ eq 'content-type' } keys %h;
    }
    $opt{headers} = \%h;
    my $r = $self->{http}->request($method, $self->url . $path, \%opt);
    my $content = $r->{content};
    my $decoded = $content;
    if (defined $content && length $content) {
        my $d = eval { $self->{json}->decode($content) };
        $decoded = $d unless $@;
    }
    return ($r->{status}, $decoded, $r->{headers});
}

sub get    { my $s = shift; $s->request('GET',    @_) }
sub put    { my $s = shift; $s->request('PUT',    @_) }
sub post   { my $s = shift; $s->request('POST',   @_) }
sub delete { my $s = shift; $s->request('DELETE', @_) }
sub head   { my $s = shift; $s->request('HEAD',   @_) }

sub _query {
    my (%q) = @_;
    return '' unless %q;
    return '?' . join('&', map {
        my ($k, $v) = ($_, $q{$_});
        $v = '' unless defined $v;
        $v =~ s/([^A-Za-z0-9_.*,\-~])/sprintf('%%%02X', ord $1)/ge;
        "$k=$v";
    } sort keys %q);
}

sub bulk {
    my ($self, $ndjson, %q) = @_;
    my $index = delete $q{index};
    my $path = (defined $index ? "/$index" : '') . '/_bulk' . _query(%q);
    my @r = $self->request('POST', $path, $ndjson, { 'Content-Type' => 'application/x-ndjson' });
    return wantarray ? @r : $r[1];
}

sub _ctl {
    croak "esd control endpoint needed, but ECP_ES_URL points at a real cluster: call EsdServer->require_stand_in first"
        if $_[0]{external};
    my ($self, $method, $path, $body) = @_;
    my ($st, $b) = $self->request($method, $path, $body);
    croak "esd control $method $path failed ($st): " . (ref $b ? $self->{json}->encode($b) : ($b // ''))
        unless $st == 200;
    return $b;
}

sub set_faults   { $_[0]->_ctl('PUT', '/_esd/faults', $_[1]) }
sub clear_faults { $_[0]->_ctl('DELETE', '/_esd/faults') }
sub faults       { $_[0]->_ctl('GET', '/_esd/faults') }
sub set_config   { $_[0]->_ctl('PUT', '/_esd/config', $_[1]) }
sub stats        { $_[0]->_ctl('GET', '/_esd/stats') }
sub reset        { $_[0]->_ctl('POST', '/_esd/reset') }

sub requests {
    my ($self, $n) = @_;
    $n = 50 unless defined $n;
    return $self->_ctl('GET', "/_esd/requests?n=$n")->{requests};
}

sub refresh {
    my ($self, $index) = @_;
    my ($st, $b) = $self->request('POST', "/$index/_refresh");
    return $st == 200;
}

sub count {
    my ($self, $index) = @_;
    my ($st, $b) = $self->request('GET', "/$index/_count");
    return $st == 200 ? $b->{count} : undef;
}

sub doc {
    my ($self, $index, $id) = @_;
    (my $eid = $id) =~ s/([^A-Za-z0-9_.\-~])/sprintf('%%%02X', ord $1)/ge;
    my ($st, $b) = $self->request('GET', "/$index/_doc/$eid");
    return ($st == 200 && ref $b && $b->{found}) ? $b->{_source} : undef;
}

sub stop {
    my ($self) = @_;
    my $pid = $self->{pid};
    return unless $pid;
    return if $self->{owner} != $$;   # a forked child must not stop the parent's server
    $self->{pid} = undef;
    delete $live{$pid};
    local $?;    # waitpid sets it: keep the caller's
    kill 'TERM', $pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            $self->{exit_status} = $?;
            return 1;
        }
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    $self->{exit_status} = $?;
    return 0;
}

sub exit_status { $_[0]{exit_status} }

sub DESTROY {
    my ($self) = @_;
    local ($?, $!, $@);
    $self->stop if $self->{pid};
}

# HTTP::Tiny writes the request head and body separately; with Nagle on and
# the server's delayed ACK every request with a body would stall ~40 ms.
# Real clients (libcurl, the official ES clients) set TCP_NODELAY too.
package EsdServer::HTTP;
our @ISA = ('HTTP::Tiny');

sub _open_handle {
    my $self = shift;
    my $handle = $self->SUPER::_open_handle(@_);
    eval { setsockopt($handle->{fh}, Socket::IPPROTO_TCP(), Socket::TCP_NODELAY(), 1) };
    return $handle;
}

package EsdServer;

END {
    local $?;
    $_->stop for grep { $_->{owner} == $$ } values %live;
}

1;
