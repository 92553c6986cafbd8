# What the follow tests share: a shop schema (products embedding their
# category's name), a comparison of the index with the task's query
# document for document, and waits on ecp.followers.
package EcpFollow;
use strict;
use warnings;
use HTTP::Tiny;
use JSON::PP;
use Test::More;
use EcpTest;

our $QUERY = q{SELECT p.id, p.name, p.price, c.name AS category
  FROM public.products p JOIN public.categories c ON c.id = p.category_id};

# follow_tables: a category's change re-syncs the products that embed it
our $OPTIONS = q{{"id_column": "id", "batch_size": 2000, "retry_base_ms": 100, "retry_max_ms": 1000,
  "follow_tables": {"public.categories": {"column": "id",
     "ids": "SELECT p.id FROM public.products p WHERE p.category_id::text = ANY ($1)"}}}};

sub create_shop
{
	my ($node, $rows) = @_;
	$node->safe_psql('postgres', qq{
		CREATE TABLE public.categories (id integer PRIMARY KEY, name text NOT NULL);
		INSERT INTO public.categories SELECT g, 'category ' || g FROM generate_series(1, 50) g;
		CREATE TABLE public.products (id bigint PRIMARY KEY, name text NOT NULL, price numeric NOT NULL,
		                              category_id integer NOT NULL REFERENCES public.categories);
		INSERT INTO public.products
		SELECT g, 'product ' || g, (g % 1000) / 10.0, 1 + g % 50 FROM generate_series(1, $rows) g;
	});
}

# Every document of the index, into table $table (id text, doc jsonb).
sub load_index
{
	my ($node, $es, $index, $table) = @_;
	$es->refresh($index);
	my $json = JSON::PP->new->allow_bignum;
	my ($lines, $after) = ('', undef);
	for (my $pages = 0; $pages < 1000; $pages++)
	{
		my $query = { size => 10000, sort => [ { id => 'asc' } ], query => { match_all => {} },
			(defined $after ? (search_after => $after) : ()) };
		my $res = HTTP::Tiny->new->post($es->url . "/$index/_search",
			{ headers => { 'Content-Type' => 'application/json' }, content => encode_json($query) });
		die "search failed: $res->{status} $res->{content}" unless $res->{success};
		my $hits = $json->decode($res->{content})->{hits}{hits};
		last unless @$hits;
		for my $hit (@$hits)
		{
			my $doc = $json->encode($hit->{_source});
			$doc =~ s/\\/\\\\/g;
			$lines .= "$hit->{_id}\t$doc\n";
		}
		$after = $hits->[-1]{sort};
	}
	$node->safe_psql('postgres',
		"DROP TABLE IF EXISTS $table; CREATE TABLE $table (id text, doc jsonb);\n"
		  . "COPY $table FROM STDIN;\n$lines\\.\n");
}

# "missing stale extra" between the query's documents and the index.
sub differences
{
	my ($node, $es, $index) = @_;
	load_index($node, $es, $index, 'follow_check_index');
	return $node->safe_psql('postgres', qq{
		WITH src AS (SELECT q.id::text AS id, row_to_json(q)::jsonb AS doc FROM ($QUERY) q)
		SELECT count(*) FILTER (WHERE i.id IS NULL) || ' '
		    || count(*) FILTER (WHERE i.id IS NOT NULL AND s.id IS NOT NULL AND i.doc <> s.doc) || ' '
		    || count(*) FILTER (WHERE s.id IS NULL)
		  FROM src s FULL JOIN follow_check_index i ON i.id = s.id});
}

# Wait until the follower applied everything queued and the index equals
# the source; returns the last differences seen.
sub wait_equal
{
	my ($node, $es, $index, $task, $timeout) = @_;
	my $last = '';
	my $ok = until_true(sub {
		my $queued = $node->safe_psql('postgres',
			"SELECT queue_length FROM ecp.followers WHERE task = '$task'");
		return 0 unless defined $queued && $queued eq '0';
		$last = differences($node, $es, $index);
		return $last eq '0 0 0';
	}, $timeout // 90);
	return $ok ? '0 0 0' : $last;
}

# Call $check until it returns true, at most $timeout seconds.
sub until_true
{
	my ($check, $timeout) = @_;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		return 1 if $check->();
		select(undef, undef, undef, 0.2);
	}
	return 0;
}

sub follower_state
{
	my ($node, $task) = @_;
	return $node->safe_psql('postgres', "SELECT state FROM ecp.followers WHERE task = '$task'");
}

# A round of changes: inserts, updates (of products and of categories, the
# table they embed) and deletes, each in statements of their own.
sub change_shop
{
	my ($node, $round, $inserts, $updates, $deletes) = @_;
	my $base = 10_000_000 * $round;
	$node->safe_psql('postgres', qq{
		INSERT INTO public.products
		SELECT $base + g, 'new ' || g, g, 1 + g % 50 FROM generate_series(1, $inserts) g;
		UPDATE public.products SET name = name || ' r$round', price = price + 1
		 WHERE id IN (SELECT id FROM public.products WHERE id < 10000000 ORDER BY id LIMIT $updates OFFSET 100 * $round);
		UPDATE public.categories SET name = name || ' r$round' WHERE id IN (3, 7);
		DELETE FROM public.products WHERE id IN (SELECT id FROM public.products WHERE id < 10000000
		                                          ORDER BY id DESC LIMIT $deletes);
	});
}

1;
