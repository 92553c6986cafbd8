#!/usr/bin/perl
# Run TAP test files with TAP::Harness and print machine-readable lines,
#   TAP_COUNTS <label> <passed> <failed> <skipped>
#   TAP_SKIPPED <label> <file>: <reason>          (one per file skipped whole)
#   TAP_SKIPPED <label> <file> #<n>: <reason>     (one per assertion skipped)
# counting assertions; a file that dies, exits non-zero or does not reach its
# plan counts as one more failure, so a crash is never a silent pass.  A
# skipped assertion counts as one skipped, and so does a whole file skipped
# (skip_all): never as passed.  Every skip is listed with its reason at the
# end of the output (the harness shows skip_all reasons only in its
# progress lines, and the reasons of skipped assertions not at all).
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

# The reason of every skipped assertion, by file (the parser keeps only the
# numbers of skipped tests, so they are collected while the TAP is read).
my %skip_reasons;
$harness->callback(made_parser => sub {
	my ($parser, $job) = @_;
	my $file = ref $job eq 'ARRAY' ? $job->[0] : $job;
	$parser->callback(test => sub {
		my ($result) = @_;
		push @{ $skip_reasons{$file} }, [ $result->number, $result->explanation ]
		  if $result->has_skip;
	});
});
my $aggregate = $harness->runtests(@files);

my ($passed, $failed, $skipped) = (0, 0, 0);
my @skip_lines;
for my $file ($aggregate->descriptions) {
	my ($parser) = $aggregate->parsers($file);
	$passed += scalar($parser->passed) - scalar($parser->skipped);
	$skipped += scalar($parser->skipped);
	$failed += scalar($parser->failed);
	$failed += 1 if !$parser->failed && $parser->has_problems;
	if (defined(my $why = $parser->skip_all)) {
		$skipped += 1;
		push @skip_lines, "$file: " . (length $why ? $why : '(no reason given)');
	}
	for (@{ $skip_reasons{$file} || [] }) {
		my ($n, $why) = @$_;
		push @skip_lines, "$file #$n: " . (defined $why && length $why ? $why : '(no reason given)');
	}
}
if (@skip_lines) {
	print "---- skipped ($label): " . scalar(@skip_lines) . "\n";
	print "TAP_SKIPPED $label $_\n" for @skip_lines;
}
print "TAP_COUNTS $label $passed $failed $skipped\n";
exit($failed ? 1 : 0);
