# 041_ddl_shards.pl — DDL on a logical table with real shard processes: a
# shard that goes away before the COMMIT leaves no shard and not the
# coordinator changed; two coordinators changing the same table at once
# take turns instead of deadlocking across the shards.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TenantRouter::Test;

my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $coord_a = TenantRouter::Test->new_coordinator('coord_a');
my $coord_b = TenantRouter::Test->new_coordinator('coord_b');
my $dsn1 = TenantRouter::Test->dsn($shard1);
my $dsn2 = TenantRouter::Test->dsn($shard2);

for my $coord ($coord_a, $coord_b)
{
	$coord->safe_psql('postgres', qq{
		SET client_min_messages = error;
		CREATE TABLE accounts (id bigint NOT NULL, tenant_id bigint NOT NULL, name text);
		SELECT logical_table_add('accounts');
		SELECT shard_add('shard1', 1, 10000, '$dsn1');
		SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	});
}
$coord_a->safe_psql('postgres',
	q{INSERT INTO accounts VALUES (1, 5, 'five'), (2, 15000, 'fifteen thousand')});

sub columns_on
{
	my ($node, $table) = @_;
	$table //= 'accounts';
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
		 WHERE attrelid = '$table'::regclass AND attnum > 0 AND NOT attisdropped});
}

# shard2 stops after the ALTER reached it, before the COMMIT
my $session = $coord_a->background_psql('postgres', on_error_stop => 0);
$session->query_until(qr/altered/, q{
	BEGIN;
	ALTER TABLE accounts ADD COLUMN note text;
	\echo altered
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
is(columns_on($shard1), 'id,tenant_id,name', 'shard1 did not keep the new column');
is(columns_on($shard2), 'id,tenant_id,name', 'nor did shard2');
is(columns_on($coord_a), 'id,tenant_id,name', 'nor the coordinator');
is( $shard1->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts')
	  + $shard2->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'),
	0, 'nothing is left prepared');

# the same statement once the shard is back reaches both shards
$coord_a->safe_psql('postgres', 'ALTER TABLE accounts ADD COLUMN note text');
is(columns_on($shard1) . ' ' . columns_on($shard2), 'id,tenant_id,name,note id,tenant_id,name,note',
	'with both shards up the column reaches both');

# a second coordinator follows with ALTER FOREIGN TABLE (its own table only)
$coord_b->safe_psql('postgres', 'ALTER FOREIGN TABLE accounts ADD COLUMN note text');
is($coord_b->safe_psql('postgres', q{SELECT note IS NULL FROM accounts WHERE tenant_id = 15000}),
	't', 'the second coordinator reads the new column');

# Two coordinators change the same table at once: the first holds its
# transaction open; the second waits for it on the first shard, then runs.
my $first = $coord_a->background_psql('postgres', on_error_stop => 0);
$first->query_until(qr/held/, q{
	BEGIN;
	ALTER TABLE accounts ADD COLUMN a_col int;
	\echo held
});
my $second = $coord_b->background_psql('postgres', on_error_stop => 0);
$second->query_until(qr/sent/, q{
	\echo sent
	ALTER TABLE accounts ADD COLUMN b_col int;
	\echo second done
});
ok( $coord_b->poll_query_until('postgres', q{
		SELECT count(*) > 0 FROM pg_stat_activity
		 WHERE query LIKE 'ALTER TABLE accounts ADD COLUMN b_col%' AND state = 'active'}),
	'the second coordinator is waiting');
$first->query_until(qr/first done/, q{
	COMMIT;
	\echo first done
});
$second->query_until(qr/second done/, '');
is($second->{stderr}, '', 'the second statement ran once the first committed, without error');
$first->quit;
$second->quit;
is(columns_on($shard1) . ' ' . columns_on($shard2),
	'id,tenant_id,name,note,a_col,b_col id,tenant_id,name,note,a_col,b_col',
	'both changes reached both shards, in the same order');

done_testing();
