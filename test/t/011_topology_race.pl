# A topology change racing an uncommitted write. Shrinking shard1's range away
# from a tenant that an open transaction is writing rewrites the range
# constraint on the shard, so it waits for that transaction there, then fails
# because the row exists: nothing changes and nothing is stranded. With no
# write in flight the change goes through and the next insert goes to the
# new owner.
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
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	CREATE TABLE race_rows (tenant_id bigint NOT NULL, note text);
	SELECT logical_table_add('race_rows');
});

my $writer = $coord->background_psql('postgres', on_error_stop => 0);
$writer->query_safe('BEGIN');
$writer->query_safe("INSERT INTO race_rows VALUES (9500, 'in flight')");

# the change starts and waits on the shard
my $admin = $coord->background_psql('postgres', on_error_stop => 0);
$admin->query_until(qr/started/, q(
	\echo started
	SELECT shard_update_range('shard1', 1, 9000);
));
ok( $coord->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE query LIKE 'SELECT shard_update_range%' AND state = 'active'
		   AND wait_event_type = 'Extension'}),
	'the topology change waits for the open write on the shard');

$writer->query_safe('COMMIT');
my ($out, $err);
$out = $admin->query('SELECT 1');
like($admin->{stderr}, qr/check constraint "tenant_router_range" of relation "race_rows" is violated by some row/,
	'then fails: the committed row is outside the new range');
$admin->{stderr} = '';
is($coord->safe_psql('postgres',
		"SELECT shard_id || ':' || range_start || '..' || range_end FROM tenant_router.shards ORDER BY range_start"),
	"shard1:1..10000\nshard2:10001..20000", 'and the topology is unchanged');
is($coord->safe_psql('postgres', 'SELECT shard_for(9500)'), 'shard1', 'tenant 9500 still routes to shard1');
is($shard1->safe_psql('postgres', 'SELECT count(*) FROM race_rows WHERE tenant_id = 9500'), '1',
	'and its row is on shard1');

# with nothing in flight, tenants 9001..10000 move to shard2 (their rows
# moved by hand first: this release moves no data on a range change)
$shard1->safe_psql('postgres', 'DELETE FROM race_rows');
$admin->query_safe("SELECT shard_update_range('shard1', 1, 9000)");
$admin->query_safe("SELECT shard_update_range('shard2', 9001, 20000)");
$writer->query_safe("INSERT INTO race_rows VALUES (9500, 'after')");
is($coord->safe_psql('postgres', 'SELECT shard_for(9500)'), 'shard2', 'the new owner');
is($shard2->safe_psql('postgres', "SELECT note FROM race_rows WHERE tenant_id = 9500"), 'after',
	'the next insert from an existing session lands on the new owner');
is($shard1->safe_psql('postgres', 'SELECT count(*) FROM race_rows'), '0', 'and not on the old one');

# A statement outside a transaction block at repeatable read runs in a
# repeatable read transaction on its shard: an update that waited for a
# concurrent one fails to serialize, as it would on one server, instead of
# updating the new row version.
$coord->safe_psql('postgres', "INSERT INTO race_rows VALUES (5, 'iso')");
$writer->query_safe('BEGIN');
$writer->query_safe("UPDATE race_rows SET note = 'first' WHERE tenant_id = 5");
$admin->query_safe("SET default_transaction_isolation = 'repeatable read'");
$admin->query_until(qr/started again/, q(
	\echo started again
	UPDATE race_rows SET note = 'second' WHERE tenant_id = 5;
));
ok( $shard1->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE query LIKE 'UPDATE%' AND wait_event_type = 'Lock'}),
	'an autocommit update at repeatable read waits on the shard for the open one');
$writer->query_safe('COMMIT');
$admin->query('SELECT 1');
like($admin->{stderr}, qr/could not serialize access due to concurrent update/,
	'then fails to serialize: it ran at repeatable read on the shard');
is($shard1->safe_psql('postgres', 'SELECT note FROM race_rows WHERE tenant_id = 5'), 'first',
	'and the first update stands');

$writer->quit;
$admin->quit;
done_testing();
