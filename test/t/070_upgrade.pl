# ALTER EXTENSION tenant_router UPDATE on a coordinator that holds data:
# from 0.1, with shards, logical tables and rows, to the current version.
# Routing keeps working, the new version's behaviour is there, and the
# extension's objects are exactly those of a fresh installation.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TenantRouter::Test;

my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $coord = TenantRouter::Test->new_coordinator('coord');
my ($dsn1, $dsn2) = map { TenantRouter::Test->dsn($_) } ($shard1, $shard2);

my $current = $coord->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'tenant_router'");

# the extension's members, described, as a sorted list
my $members_sql = q{
	SELECT string_agg(pg_describe_object(classid, objid, objsubid), E'\n' ORDER BY 1)
	  FROM pg_depend
	 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
	   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'tenant_router')};
my $fresh = $coord->safe_psql('postgres', $members_sql);

# a coordinator at 0.1 with data
$coord->safe_psql('postgres', qq{
	DROP EXTENSION tenant_router CASCADE;
	CREATE EXTENSION tenant_router VERSION '0.1';
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	CREATE TABLE accounts (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, balance numeric NOT NULL);
	SELECT logical_table_add('accounts');
});
# (0.1 writes one shard per transaction)
$coord->safe_psql('postgres',
	'INSERT INTO accounts (tenant_id, balance) SELECT t, t * 10 FROM generate_series(1, 10000, 7) t');
$coord->safe_psql('postgres',
	'INSERT INTO accounts (tenant_id, balance) SELECT t, t * 10 FROM generate_series(10002, 20000, 7) t');
is($coord->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'tenant_router'"),
	'0.1', 'installed at 0.1');
my $before = $coord->safe_psql('postgres', 'SELECT count(*), sum(balance) FROM accounts');

# the worker does not run the new version's work on the old catalog: it waits
ok($coord->wait_for_log(qr/waiting for ALTER EXTENSION tenant_router UPDATE in database "postgres"/),
	'the worker waits for the update of a 0.1 catalog');
my $log_offset = -s $coord->logfile;

$coord->safe_psql('postgres', 'ALTER EXTENSION tenant_router UPDATE');
ok($coord->wait_for_log(qr/extension found in database "postgres"/, $log_offset),
	'the worker goes on once the catalog is updated');
is($coord->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'tenant_router'"),
	$current, "updated to $current");
is($coord->safe_psql('postgres', 'SELECT count(*), sum(balance) FROM accounts'), $before,
	'the rows are all there, read over both shards');
is($coord->safe_psql('postgres', 'SELECT balance FROM accounts WHERE tenant_id = 8'), '80',
	'a routed read works');
is($coord->safe_psql('postgres', $members_sql), $fresh,
	'the updated extension has exactly the objects of a fresh installation');

# what the new version brings works on the updated catalog
$coord->safe_psql('postgres', q{
	BEGIN;
	UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 1;
	UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 10002;
	COMMIT;
});
is($coord->safe_psql('postgres', 'SELECT sum(balance) FROM accounts WHERE tenant_id IN (1, 10002)'),
	'100032', 'a transaction writing both shards commits (two-phase commit)');
is($coord->safe_psql('postgres', 'SELECT count(DISTINCT tenant_id) FROM accounts'),
	$coord->safe_psql('postgres', 'SELECT count(*) FROM accounts'),
	'count(DISTINCT tenant_id) over both shards');

done_testing();
