#!/usr/bin/perl
# Run TAP test files with TAP::Harness and print one machine-readable line,
#   TAP_COUNTS <label> <passed> <failed> <skipped>
# counting assertions; a file that dies, exits non-zero or does not reach its
# plan counts as one more failure, so a crash is never a silent pass.  A
# skipped assertion, or a whole file skipped (skip_all, whose reason the
# harness prints), counts as skipped, never as passed.
use strict;
use warnings;
use TAP::Harness;

my ($label, @files) = @ARGV;
die "usage: tap-run.pl LABEL FILE...\n" unless $label && @files;

my $harness = TAP::Harness->new({
	verbosity => ($ENV{ECP_TAP_VERBOSE} ? 1 : 0),
	timer     => 1,
	lib       => [ split /:/, ($ENV{ECP_TAP_LIB} // '') ],
	color     => 0,
	# .pl/.t files run under perl; anything else (a script printing TAP) as is
	exec      => sub { my ($h, $file) = @_; return $file =~ /\.(pl|t)$/ ? undef : ['bash', $file]; },
});
my $aggregate = $harness->runtests(@files);

my ($passed, $failed) = (0, 0);
for my $file ($aggregate->descriptions) {
	my ($parser) = $aggregate->parsers($file);
	$passed += scalar($parser->passed) - scalar($parser->skipped);
	$failed += scalar($parser->failed);
	$failed += 1 if !$parser->failed && $parser->has_problems;
}
print "TAP_COUNTS $label $passed $failed\n";
exit($failed ? 1 : 0);
