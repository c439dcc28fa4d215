# 001_smoke.pl — seed 000's example end to end on real servers: a coordinator
# and two shards, rows routed by tenant range, read back through the
# coordinator, each row stored on its owner shard only, and the routing kept
# across a coordinator restart and a pg_dump/restore.
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
	CREATE TABLE users (
		id SERIAL PRIMARY KEY,
		tenant_id BIGINT NOT NULL,
		username VARCHAR(100) NOT NULL,
		email VARCHAR(255) UNIQUE NOT NULL,
		created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP);
	CREATE INDEX idx_users_tenant_id ON users (tenant_id);
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	SELECT logical_table_add('users');
});

is( $coord->safe_psql('postgres',
		'SELECT shard_id, range_start, range_end, state FROM tenant_router.shards ORDER BY range_start'),
	"shard1|1|10000|active\nshard2|10001|20000|active",
	'the catalog view lists both shards with their ranges');

$coord->safe_psql('postgres', q{
	INSERT INTO users (tenant_id, username, email) VALUES (123, 'alice', 'alice@example.com');
	INSERT INTO users (tenant_id, username, email) VALUES (15000, 'bob', 'bob@example.com');
});

is($coord->safe_psql('postgres', 'SELECT shard_for(123)'), 'shard1', 'tenant 123 belongs to shard1');
is($coord->safe_psql('postgres', 'SELECT shard_for(15000)'), 'shard2', 'tenant 15000 belongs to shard2');
is($coord->safe_psql('postgres', 'SELECT shard_for(99999) IS NULL'), 't', 'tenant 99999 has no shard');

is($shard1->safe_psql('postgres', 'SELECT tenant_id, username FROM users ORDER BY id'),
	'123|alice', 'alice is stored on shard1 and only there');
is($shard2->safe_psql('postgres', 'SELECT tenant_id, username FROM users ORDER BY id'),
	'15000|bob', 'bob is stored on shard2 and only there');

is($coord->safe_psql('postgres', 'SELECT tenant_id, username FROM users ORDER BY tenant_id'),
	"123|alice\n15000|bob", 'both rows read back through the coordinator');
is($coord->safe_psql('postgres', 'SELECT username FROM users WHERE tenant_id = 15000'),
	'bob', 'a single-tenant query returns that tenant\'s row');

my $plan = $coord->safe_psql('postgres',
	'EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM users WHERE tenant_id = 123');
like($plan, qr/Custom Scan \(TenantRouter\)/, 'a single-tenant query takes the router fast path');
like($plan, qr/Shard: shard1/, 'and the plan names the owner shard');

my ($ret, $stdout, $stderr) = $coord->psql('postgres',
	q{INSERT INTO users (tenant_id, username, email) VALUES (99999, 'carol', 'carol@example.com')});
isnt($ret, 0, 'an insert for a tenant no shard owns fails');
like($stderr, qr/no shard owns tenant 99999/, 'and says which tenant');
is($shard1->safe_psql('postgres', 'SELECT count(*) FROM users')
	  + $shard2->safe_psql('postgres', 'SELECT count(*) FROM users'),
	2, 'and no row landed anywhere');

# The catalog and the preloaded library survive a restart.
$coord->restart;
is($coord->safe_psql('postgres', 'SELECT shard_for(15000)'), 'shard2', 'routing survives a coordinator restart');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM users'), '2', 'rows are read back after the restart');

# pg_dump keeps the topology: a restore into another database routes the same
my $dump = PostgreSQL::Test::Utils::tempdir() . '/coord.sql';
$coord->command_ok(['pg_dump', '--no-sync', '-f', $dump, '-d', $coord->connstr('postgres')],
	'pg_dump of the coordinator');
$coord->safe_psql('postgres', 'CREATE DATABASE restored');
$coord->command_ok(['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $dump, '-d', $coord->connstr('restored')],
	'restored into another database');
is($coord->safe_psql('restored', 'SELECT shard_id, range_start, range_end FROM tenant_router.shards ORDER BY 1'),
	"shard1|1|10000\nshard2|10001|20000", 'the restored catalog has the shards');
is($coord->safe_psql('restored', 'SELECT tenant_id, username FROM users ORDER BY tenant_id'),
	"123|alice\n15000|bob", 'and routes the logical table to them');
$coord->safe_psql('restored', "SELECT shard_update_range('shard2', 10001, 25000)");
ok($coord->safe_psql('restored', 'SELECT version FROM tenant_router.topology')
	  > $coord->safe_psql('restored', "SELECT max(version) FROM tenant_router.shard WHERE shard_id <> 'shard2'"),
	'its topology version goes on above the restored shards\' versions');

done_testing();
