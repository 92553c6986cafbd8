# Consumer credentials end to end: a stand-in that requires HTTP basic
# authentication (esd --auth basic:USER:PASS) and one that requires an API
# key (--auth apikey:KEY) receive every document of a run whose consumer
# has username/password or api_key, with the exact Authorization header
# ecp builds; a wrong password or key fails the run at once (one request,
# no retry) with the credentials hint, and rotating the password with a
# plain UPDATE then ecp.resume finishes it.  The secrets never appear in
# the server log (after runs that succeeded and failed, and after refused
# create_consumer calls), in any view, flow row or NOTIFY ecp_alert payload.
#
# The secrets reach the server only through COPY data (not logged), never
# in a statement's text: log_statement = all (the test cluster's default)
# and log_min_error_statement would otherwise log them, which README tells
# users to avoid by not writing credentials as literals.
#
# An over-long password's error shows ***; a password pasted into a
# failed statement as a literal reaches the log only through PostgreSQL's
# own STATEMENT: line, which is why README asks for bind parameters.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64 qw(encode_base64);
use EcpTest;
use EsdServer;

EsdServer->require_stand_in('--auth, and the request log to read the Authorization header');

my $user = 'sync';
my %secret = (
	pw        => 'pw-Secr3t-basic-7731',
	key       => 'a2V5U2VjcmV0LWFwaS05NDQy',
	wrong_pw  => 'pw-Wrong-Guess-5150',
	wrong_key => 'd3JvbmdLZXktODgxMw',
	long_pw   => 'pw-TooLong-Secr3t-6406',
);
my $basic_header = 'Basic ' . encode_base64("$user:$secret{pw}", '');
my $key_header = "ApiKey $secret{key}";

# log_min_messages = warning (PostgreSQL's default; EcpTest's 'log' would
# keep ERRORs out of the log) so that refused calls are logged too.
my $node = EcpTest::new_node('credentials', conf => [ 'log_min_messages = warning' ]);
my $es_basic = EsdServer->start(auth => "basic:$user:$secret{pw}");
my $es_key = EsdServer->start(auth => "apikey:$secret{key}");

# Reads from a stand-in that requires credentials carry them.
sub authed_count
{
	my ($es, $header, $index) = @_;
	$es->request('POST', "/$index/_refresh", undef, { Authorization => $header });
	my ($st, $body) = $es->request('GET', "/$index/_count", undef, { Authorization => $header });
	return $st == 200 ? $body->{count} : "HTTP $st";
}

# Bulk requests to an index in the stand-in's request log (control
# endpoints need no credentials).
sub bulk_requests
{
	my ($es, $index) = @_;
	return [ grep { ($_->{url} // '') =~ m{^/\Q$index\E/_bulk} } @{ $es->requests(1000) } ];
}

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN ecp_alert');

# The secrets, as COPY data; the long password is over the 8192-byte limit
# of a text option (so create_consumer refuses it).
$node->safe_psql('postgres',
	"CREATE TABLE secret (name text PRIMARY KEY, value text);\n"
	  . "COPY secret FROM STDIN;\n"
	  . join('', map { "$_\t$secret{$_}\n" } sort keys %secret)
	  . "\\.\n"
	  . "UPDATE secret SET value = value || repeat('x', 9000) WHERE name = 'long_pw';");
$node->safe_psql('postgres',
	'CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 500) g;'
	  . ' ALTER TABLE items ADD PRIMARY KEY (id)');

sub create_consumer
{
	my ($name, $url, $options_sql) = @_;
	return $node->psql('postgres', "SELECT ecp.create_consumer('$name', '$url', options => $options_sql)");
}

sub basic_opts { "jsonb_build_object('username', '$user', 'password', (SELECT value FROM secret WHERE name = '$_[0]'))" }
sub key_opts { "jsonb_build_object('api_key', (SELECT value FROM secret WHERE name = '$_[0]'))" }

sub start_run
{
	my ($task, $consumer) = @_;
	$node->safe_psql('postgres',
		"SELECT ecp.create_task('$task', '$consumer', '$task', query => 'SELECT * FROM items', "
		  . "options => '{\"batch_size\": 100, \"retry_base_ms\": 200}')");
	return $node->safe_psql('postgres', "SELECT ecp.start('$task')");
}

# --- basic authentication ------------------------------------------------------
is((create_consumer('basic_ok', $es_basic->url, basic_opts('pw')))[0], 0, 'a consumer with username and password');
my $run = start_run('basic_ok', 'basic_ok');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'basic auth: the run succeeds');
is(authed_count($es_basic, $basic_header, 'basic_ok'), 500, 'basic auth: all 500 documents arrived');
is($node->safe_psql('postgres', "SELECT processed || ' ' || failed FROM ecp.progress WHERE run_id = $run"),
	'500 0', 'basic auth: 500 processed, none failed');
my $reqs = bulk_requests($es_basic, 'basic_ok');
ok(@$reqs >= 5, 'basic auth: the stand-in logged the bulk requests (' . scalar(@$reqs) . ')');
is(scalar(grep { ($_->{headers}{authorization} // $_->{headers}{Authorization} // '') eq $basic_header } @$reqs),
	scalar(@$reqs), 'every request carried Authorization: Basic base64(user:password)');

# --- API key ------------------------------------------------------------------------
is((create_consumer('key_ok', $es_key->url, key_opts('key')))[0], 0, 'a consumer with an api_key');
$run = start_run('key_ok', 'key_ok');
is(EcpTest::wait_for_run($node, $run, 'succeeded'), 'succeeded', 'api key: the run succeeds');
is(authed_count($es_key, $key_header, 'key_ok'), 500, 'api key: all 500 documents arrived');
$reqs = bulk_requests($es_key, 'key_ok');
ok(@$reqs >= 5, 'api key: the stand-in logged the bulk requests (' . scalar(@$reqs) . ')');
is(scalar(grep { ($_->{headers}{authorization} // $_->{headers}{Authorization} // '') eq $key_header } @$reqs),
	scalar(@$reqs), 'every request carried Authorization: ApiKey <key>');

# --- wrong credentials: the run fails at once, with the hint ---------------------
my %failed_run;
for my $case ([ 'basic_wrong', $es_basic, basic_opts('wrong_pw') ], [ 'key_wrong', $es_key, key_opts('wrong_key') ])
{
	my ($name, $es, $opts) = @$case;
	is((create_consumer($name, $es->url, $opts))[0], 0, "$name: consumer created");
	$run = start_run($name, $name);
	$failed_run{$name} = $run;
	is(EcpTest::wait_for_run($node, $run, 'failed'), 'failed', "$name: the run fails");
	like($node->safe_psql('postgres', "SELECT last_error FROM ecp.progress WHERE run_id = $run"),
		qr/HTTP 401.*check the consumer's credentials \(options username\/password or api_key\)/,
		"$name: last_error is the 401 with the credentials hint");
	is($node->safe_psql('postgres',
			"SELECT count(*) FILTER (WHERE action = 'retry') || ' ' || count(*) FILTER (WHERE action = 'failed') "
			  . "FROM ecp.flow WHERE run_id = $run"),
		'0 1', "$name: no retry in the flow, one failed row");
	# a part's first request is GET / (which product): the 401 comes there
	is(scalar(@{ bulk_requests($es, $name) }), 0, "$name: no _bulk request was sent after the 401 to GET /");
	is($node->safe_psql('postgres', "SELECT count(*) FROM ecp.failed_docs WHERE run_id = $run"), '0',
		"$name: nothing in failed_docs");
}

# rotating the password (plain UPDATE, value from the table) and resuming
# finishes the failed run
$node->safe_psql('postgres',
	"UPDATE ecp.consumer SET options = jsonb_set(options, '{password}', to_jsonb((SELECT value FROM secret WHERE name = 'pw'))) "
	  . "WHERE name = 'basic_wrong'");
$node->safe_psql('postgres', "SELECT ecp.resume($failed_run{basic_wrong})");
is(EcpTest::wait_for_run($node, $failed_run{basic_wrong}, 'succeeded'), 'succeeded',
	'after rotating the password, ecp.resume finishes the run');
is(authed_count($es_basic, $basic_header, 'basic_wrong'), 500, '... with every document');

# --- refused create_consumer calls ---------------------------------------------------
my @refused = (
	[ 'password without username', "jsonb_build_object('password', (SELECT value FROM secret WHERE name = 'pw'))",
		qr/options "username" and "password" go together/ ],
	[ 'password and api_key', "jsonb_build_object('username', 'u', 'password', (SELECT value FROM secret WHERE name = 'pw'), "
		  . "'api_key', (SELECT value FROM secret WHERE name = 'key'))",
		qr/not both/ ],
	[ 'api_key and an unknown option', "jsonb_build_object('api_key', (SELECT value FROM secret WHERE name = 'key'), 'colour', 'red')",
		qr/unknown option "colour"/ ],
);
for my $r (@refused)
{
	my ($what, $opts, $want) = @$r;
	my ($rc, undef, $err) = create_consumer('refused', $es_basic->url, $opts);
	isnt($rc, 0, "create_consumer refuses $what");
	like($err, $want, '... saying why');
}
# an ordinary role whose consumer host is not allowed
$node->safe_psql('postgres', 'CREATE ROLE bob LOGIN; GRANT SELECT ON secret TO bob');
my ($rc, undef, $err) = $node->psql('postgres',
	"SET ROLE bob; SELECT ecp.create_consumer('bob_es', 'http://127.0.0.2:9200', options => " . basic_opts('pw') . ')');
like($err, qr/is not allowed for role "bob"/, 'create_consumer refuses a host bob may not reach');
# a password longer than a text option may be
($rc, undef, $err) = create_consumer('too_long', $es_basic->url, basic_opts('long_pw'));
like($err, qr/option "password" of a consumer must be a string of at most 8192 bytes/,
	'create_consumer refuses a password over 8192 bytes');

# --- where the secrets must not be ---------------------------------------------------
my @names = sort keys %secret;
# every row of every view and of the tables behind them, as text
my $views = join(' UNION ALL ', map { "SELECT '$_' AS src, row_to_json(v)::text AS t FROM $_ v" }
	qw(ecp.consumers ecp.tasks ecp.progress ecp.flow ecp.failed_docs ecp.flow_log ecp.run ecp.part ecp.failed_doc));
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM ($views) v, secret s
	 WHERE s.name IN ('pw', 'key', 'wrong_pw', 'wrong_key', 'long_pw')
	   AND (strpos(v.t, s.value) > 0 OR strpos(v.t, left(s.value, 22)) > 0)}),
	'0', 'no secret in ecp.consumers, ecp.tasks, ecp.progress, ecp.flow, ecp.failed_docs, nor in the flow, run, part and failed_doc rows');
ok($node->safe_psql('postgres', 'SELECT count(*) FROM ecp.flow') > 10, '(the flow has rows to look at)');
is($node->safe_psql('postgres',
		"SELECT string_agg(name || '=' || coalesce(options->>'password', options->>'api_key'), ',' ORDER BY name) FROM ecp.consumers"),
	'basic_ok=***,basic_wrong=***,key_ok=***,key_wrong=***', 'ecp.consumers shows every password and key as ***');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ecp.flow WHERE action = 'create_consumer' AND content->'options'->>'password' = '***'"),
	'2', 'the create_consumer flow rows show the password as ***');

# the alerts of the two failed runs, as NOTIFY payloads
my $out = $listener->query_safe('SELECT 1');
my @payloads = ($out =~ /Asynchronous notification "ecp_alert" with payload "(.*?)" received/g);
is(scalar @payloads, 2, 'two NOTIFY ecp_alert payloads (the two failed runs)');
is(scalar(grep { my $p = $_; grep { index($p, substr($secret{$_}, 0, 12)) >= 0 } @names } @payloads), 0,
	'no secret in a NOTIFY payload');
$listener->quit;

# the server log, after everything above
my $log = slurp_file($node->logfile);
ok(length($log) > 1000 && $log =~ /ecp worker/, '(the server log has the workers\' lines)');
ok($log =~ /options "username" and "password" go together/, '(the refused create_consumer calls are in the log)');
my $basic_b64 = encode_base64("$user:$secret{pw}", '');
for my $name (grep { $_ ne 'long_pw' } @names)
{
	is(scalar(() = $log =~ /\Q$secret{$name}\E/g), 0, "the server log never contains the secret $name");
}
is(scalar(() = $log =~ /\Q$basic_b64\E/g), 0, 'nor the Basic header value');
# an option error shows *** for a secret, also for an over-long password
is(scalar(() = $log =~ /\Q$secret{long_pw}\E/g), 0, 'the server log never contains the over-long password');
like($log, qr/option "password" of a consumer must be a string of at most 8192 bytes, not \*\*\*/,
	'(its error says *** instead)');

# README ("What an administrator configures", 5) says why credentials go
# as protocol-level bind parameters: PostgreSQL logs the text of a failed
# statement, and psql 15's :'var' pastes the value into that text.  This
# pins down that warning: a literal password in a failed statement is in
# the log (the STATEMENT: line), written by PostgreSQL, not by ecp.
my $psql_secret = 'pw-PsqlVar-Secr3t-3319';
my $log_before = length(slurp_file($node->logfile));
($rc, undef, $err) = $node->psql('postgres',
	"SET log_statement = 'none';\n"
	  . "SELECT ecp.create_consumer('psql var', 'https://es:9200', options => jsonb_build_object('username', 'sync', 'password', :'pw'));\n",
	extra_params => [ '-v', "pw=$psql_secret" ]);
like($err, qr/invalid consumer name "psql var"/, 'a create_consumer with the password as a psql variable fails (bad name)');
my @lines = grep { /\Q$psql_secret\E/ } split /\n/, substr(slurp_file($node->logfile), $log_before);
ok(@lines >= 1 && !grep { !/STATEMENT:/ } @lines,
	'a psql variable ends up in the log only as PostgreSQL\'s STATEMENT: line, as README warns');

$es_basic->stop;
$es_key->stop;
$node->stop;
done_testing();
