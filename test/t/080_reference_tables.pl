# 080_reference_tables.pl — reference tables over real shard servers: a
# write reaches every shard; a shard that goes away before the COMMIT leaves
# every shard unchanged; a shard added later gets the rows; a statement
# pinned to one tenant joins the reference table on that tenant's shard
# alone; a foreign key from a logical table holds on each shard; the new
# database of a split or a move gets the reference tables, kept equal while
# the operation runs.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TenantRouter::Test;

my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $coord = TenantRouter::Test->new_coordinator('coord');
my $dsn1 = TenantRouter::Test->dsn($shard1);
my $dsn2 = TenantRouter::Test->dsn($shard2);

$coord->safe_psql('postgres', qq{
	SET client_min_messages = warning;
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	CREATE TABLE currencies (code text PRIMARY KEY, name text NOT NULL, rate numeric NOT NULL);
	INSERT INTO currencies VALUES ('EUR', 'euro', 1), ('USD', 'dollar', 0.9);
	CREATE TABLE orders (id bigserial, tenant_id bigint NOT NULL,
		currency text NOT NULL REFERENCES currencies (code), amount numeric,
		PRIMARY KEY (tenant_id, id));
	SELECT reference_table_add('currencies');
	SELECT logical_table_add('orders');
});

# copy_on returns a shard's copy of the reference table, in one line
sub copy_on
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT string_agg(code || '=' || rate, ' ' ORDER BY code) FROM public.currencies});
}

sub prepared_on
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts');
}

is(copy_on($shard1) . ' | ' . copy_on($shard2), 'EUR=1 USD=0.9 | EUR=1 USD=0.9',
	'reference_table_add copies the rows to every shard');

# every write reaches every shard
$coord->safe_psql('postgres', q{
	INSERT INTO currencies VALUES ('GBP', 'pound', 1.1);
	UPDATE currencies SET rate = 0.95 WHERE code = 'USD';
});
is(copy_on($shard1) . ' | ' . copy_on($shard2), 'EUR=1 GBP=1.1 USD=0.95 | EUR=1 GBP=1.1 USD=0.95',
	'an INSERT and an UPDATE reach both shards');

# shard2 stops after the INSERT reached it, before the COMMIT
my $session = $coord->background_psql('postgres', on_error_stop => 0);
$session->query_until(qr/inserted/, q{
	BEGIN;
	INSERT INTO currencies VALUES ('CHF', 'franc', 1.05);
	DELETE FROM currencies WHERE code = 'GBP';
	\echo inserted
});
$shard2->stop('immediate');
$session->{stderr} = '';
$session->query_until(qr/done/, q{
	COMMIT;
	\echo done
});
like($session->{stderr}, qr/shard "shard2"/, 'the COMMIT fails, naming the shard that went away');
$session->quit;
$shard2->start;
is(copy_on($shard1), 'EUR=1 GBP=1.1 USD=0.95', 'shard1 kept nothing of the transaction');
is(copy_on($shard2), 'EUR=1 GBP=1.1 USD=0.95', 'nor did shard2');
is(prepared_on($shard1) + prepared_on($shard2), 0, 'nothing is left prepared');
is($coord->safe_psql('postgres', q{SELECT string_agg(code, ' ' ORDER BY code) FROM currencies}),
	'EUR GBP USD', 'the coordinator reads the table as it was');

# a shard added later gets the table and its rows, then the logical tables
# with their foreign key
my $shard3 = TenantRouter::Test->new_shard('shard3');
my $dsn3 = TenantRouter::Test->dsn($shard3);
$coord->safe_psql('postgres', "SELECT shard_add('shard3', 20001, 30000, '$dsn3')");
is(copy_on($shard3), 'EUR=1 GBP=1.1 USD=0.95', 'the new shard has the rows');
$coord->safe_psql('postgres', q{INSERT INTO currencies VALUES ('JPY', 'yen', 0.006)});
is(join(' | ', map { copy_on($_) } ($shard1, $shard2, $shard3)),
	join(' | ', ('EUR=1 GBP=1.1 JPY=0.006 USD=0.95') x 3),
	'a write reaches the new shard too');

# the foreign key holds on each shard
$coord->safe_psql('postgres', q{
	INSERT INTO orders (tenant_id, currency, amount)
	VALUES (5, 'EUR', 10), (15000, 'GBP', 20), (25000, 'JPY', 30);
});
my ($rc, $out, $err) = $coord->psql('postgres', q{
	\set VERBOSITY verbose
	INSERT INTO orders (tenant_id, currency, amount) VALUES (25000, 'XXX', 1);
});
like($err, qr/23503.*violates foreign key constraint "orders_currency_fkey"/s,
	'an order for a currency no shard has fails on the shard (23503)');
($rc, $out, $err) = $coord->psql('postgres', q{
	\set VERBOSITY verbose
	DELETE FROM currencies WHERE code = 'GBP';
});
like($err, qr/23503.*still referenced from table "orders".*shard "shard2"/s,
	'a currency that shard2 orders use cannot be deleted');
is(join(' | ', map { copy_on($_) } ($shard1, $shard2, $shard3)),
	join(' | ', ('EUR=1 GBP=1.1 JPY=0.006 USD=0.95') x 3),
	'and no shard deleted it');

# a statement pinned to one tenant joins on that tenant's shard alone
my $join = q{SELECT o.amount * c.rate, c.name FROM orders o JOIN currencies c ON c.code = o.currency
	WHERE o.tenant_id = 15000};
my $plan = $coord->safe_psql('postgres', "EXPLAIN (VERBOSE, COSTS OFF) $join");
like($plan, qr/Custom Scan \(TenantRouter\).*Shard: shard2/s, 'EXPLAIN shows the tenant\'s shard');
is(scalar(() = $plan =~ /Remote SQL/g), 1, 'and one remote statement');
like($plan, qr/JOIN public\.currencies c/, 'which joins the reference table there');
for my $shard ($shard1, $shard3)
{
	$shard->append_conf('postgresql.conf', "log_statement = 'all'\n");
	$shard->reload;
	$shard->poll_query_until('postgres', q{SELECT current_setting('log_statement') = 'all'})
	  or die 'log_statement was not reloaded';
}
my %offset = map { $_->name => -s $_->logfile } ($shard1, $shard3);
is($coord->safe_psql('postgres', $join), '22.0|pound', 'the join returns the row');
$coord->safe_psql('postgres', 'SELECT 1');
for my $shard ($shard1, $shard3)
{
	my $log = slurp_file($shard->logfile, $offset{ $shard->name });
	unlike($log, qr/currencies/, $shard->name . ' received nothing of it');
}
# the same statement for a tenant of shard1 is logged there
$offset{shard1} = -s $shard1->logfile;
(my $join5 = $join) =~ s/15000/5/;
is($coord->safe_psql('postgres', $join5), '10|euro', 'for tenant 5 the join returns its row');
like(slurp_file($shard1->logfile, $offset{shard1}), qr/JOIN public\.currencies c/,
	'which shard1 ran');

# Two writers of the same row: the second waits on the first copy (shard1)
# and has sent nothing to the others, so the two can never hold the row on
# different shards, each waiting for the other.
my $first = $coord->background_psql('postgres', on_error_stop => 0);
$first->query_until(qr/held/, q{
	BEGIN;
	UPDATE currencies SET rate = 2 WHERE code = 'EUR';
	\echo held
});
my $second = $coord->background_psql('postgres', on_error_stop => 0);
$second->query_until(qr/sent/, q{
	\echo sent
	UPDATE currencies SET rate = 3 WHERE code = 'EUR';
	\echo second done
});
ok( $shard1->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE public.currencies%'}),
	'the second writer waits on shard1');
is( $shard2->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
		 WHERE query LIKE 'UPDATE public.currencies%' AND state = 'active'}),
	'0', 'and has sent nothing to shard2 meanwhile');
$first->query_until(qr/first done/, q{
	COMMIT;
	\echo first done
});
$second->query_until(qr/second done/, '');
is($second->{stderr}, '', 'once the first commits, the second runs without error');
$first->quit;
$second->quit;
is(join(' | ', map { copy_on($_) } ($shard1, $shard2, $shard3)),
	join(' | ', ('EUR=3 GBP=1.1 JPY=0.006 USD=0.95') x 3), 'and both writes reached every copy, in order');

# a second coordinator registers its foreign table as a reference table
my $coord_b = TenantRouter::Test->new_coordinator('coord_b');
$coord_b->safe_psql('postgres', qq{
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	SELECT shard_add('shard3', 20001, 30000, '$dsn3');
	CREATE FOREIGN TABLE currencies (code text NOT NULL, name text NOT NULL, rate numeric NOT NULL)
		SERVER tenant_router;
	SELECT reference_table_add('currencies');
	INSERT INTO currencies VALUES ('SEK', 'krona', 0.09);
});
is($coord->safe_psql('postgres', q{SELECT rate FROM currencies WHERE code = 'SEK'}), '0.09',
	'a second coordinator writes every copy, and the first reads the row');
is(join(' | ', map { copy_on($_) } ($shard1, $shard2, $shard3)),
	join(' | ', ('EUR=3 GBP=1.1 JPY=0.006 SEK=0.09 USD=0.95') x 3), 'on every shard');

# The new database of an online operation gets every reference table: a
# split and a move while a session keeps writing the reference table (each
# row committed on its own).  The new databases' copies end equal to the
# others (the rows written while the operation copied included), the moved
# tenants' joins run on their new shard, and later writes reach it.
my $shard4 = TenantRouter::Test->new_shard('shard4');
my $dsn4 = TenantRouter::Test->dsn($shard4);
$shard4->safe_psql('postgres', 'CREATE DATABASE moved');
my $dsn_moved = TenantRouter::Test->dsn($shard4, 'moved');
$coord->safe_psql('postgres', q{
	INSERT INTO orders (tenant_id, currency, amount) VALUES (16000, 'USD', 40);
	CREATE TABLE stop_writing (flag int);
	CREATE PROCEDURE write_currencies() LANGUAGE plpgsql AS $$
	BEGIN
		FOR i IN 1..100000 LOOP
			EXIT WHEN EXISTS (SELECT 1 FROM stop_writing);
			INSERT INTO currencies VALUES ('W' || i, 'written meanwhile', i);
			COMMIT;
		END LOOP;
	END
	$$;
});
my $writer = $coord->background_psql('postgres', on_error_stop => 0);
$writer->query_until(qr/started/, "\\echo started\nCALL write_currencies();\n\\echo stopped\n");
$coord->poll_query_until('postgres', q{SELECT count(*) > 10 FROM currencies WHERE code LIKE 'W%'})
  or die 'the writer did not start';
$coord->safe_psql('postgres', "SELECT shard_split('shard2', 15000, 'shard4', '$dsn4')");
my $after_split = $coord->safe_psql('postgres', q{SELECT count(*) FROM currencies WHERE code LIKE 'W%'});
$coord->safe_psql('postgres', "SELECT shard_move('shard3', '$dsn_moved')");
$coord->safe_psql('postgres', 'INSERT INTO stop_writing VALUES (1)');
$writer->query_until(qr/stopped/, '');
is($writer->{stderr}, '', 'the reference table was written throughout the split and the move');
$writer->quit;
ok($coord->safe_psql('postgres', q{SELECT count(*) FROM currencies WHERE code LIKE 'W%'}) > $after_split,
	'while both ran');

# copy_in returns a database's copy of the reference table, as a digest
sub copy_in
{
	my ($node, $db) = @_;
	return $node->safe_psql($db,
		q{SELECT count(*) || ' ' || md5(string_agg(code || '=' || rate, ' ' ORDER BY code)) FROM public.currencies});
}
my $expect = copy_in($shard1, 'postgres');
is(join(' | ', copy_in($shard2, 'postgres'), copy_in($shard4, 'postgres'), copy_in($shard4, 'moved')),
	join(' | ', ($expect) x 3), 'the new databases hold the same copy as the others');
is($coord->safe_psql('postgres', 'SELECT shard_for(16000) || shard_for(25000)'), 'shard4shard3',
	'the moved tenants are routed to them');
(my $join16 = $join) =~ s/15000/16000/;
like($coord->safe_psql('postgres', "EXPLAIN (COSTS OFF) $join16"), qr/Shard: shard4/,
	'a join for a tenant moved by the split runs on its new shard');
is($coord->safe_psql('postgres', $join16), '38.00|dollar', 'and returns its row');
(my $join25 = $join) =~ s/15000/25000/;
is($coord->safe_psql('postgres', $join25), '0.180|yen', 'so does one for a tenant of the moved shard');
$coord->safe_psql('postgres', q{UPDATE currencies SET rate = 1.2 WHERE code = 'GBP'});
is(join(' ', map { $_->[0]->safe_psql($_->[1], q{SELECT rate FROM currencies WHERE code = 'GBP'}) }
		([ $shard1, 'postgres' ], [ $shard2, 'postgres' ], [ $shard4, 'postgres' ], [ $shard4, 'moved' ])),
	'1.2 1.2 1.2 1.2', 'a write after the operations reaches the new databases');

done_testing();
