# shard_split(): tenants split_at+1..range_end move with their rows to a new
# shard while two sessions keep inserting and updating; afterwards every row
# is readable through the coordinator exactly once, on the shard that owns
# its tenant, and shard_cleanup() removes what the old shard kept.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TenantRouter::Test;

my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $shard3 = TenantRouter::Test->new_shard('shard3');
my $shard4 = TenantRouter::Test->new_shard('shard4');
# the worker's automatic cleanup is checked at the end; until then, by hand
my $coord = TenantRouter::Test->new_coordinator('coord', conf => ['tenant_router.auto_cleanup = off']);
my ($dsn1, $dsn2, $dsn3, $dsn4) = map { TenantRouter::Test->dsn($_) } ($shard1, $shard2, $shard3, $shard4);

$coord->safe_psql('postgres', qq{
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	CREATE TABLE users (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL,
	                    username text NOT NULL, hits int NOT NULL DEFAULT 0);
	CREATE INDEX ON users (tenant_id);
	SELECT logical_table_add('users');
	CREATE TABLE orders (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, amount int NOT NULL);
	SELECT logical_table_add('orders');
	-- local bookkeeping of the writers
	CREATE TABLE written (writer int, inserted int, failed int);
	CREATE TABLE stop_writing (flag int);
});
# 5 000 rows over shard1's tenants, loaded one tenant range at a time
for my $part (0 .. 4)
{
	my $lo = $part * 2000 + 1;
	my $hi = $lo + 1999;
	$coord->safe_psql('postgres', qq{
		INSERT INTO users (tenant_id, username)
		SELECT t, 'initial ' || t FROM generate_series($lo, $hi, 2) t;
		INSERT INTO orders (tenant_id, amount) SELECT t, t % 97 FROM generate_series($lo, $hi, 2) t;
	});
}
is($coord->safe_psql('postgres', 'SELECT count(*) FROM users'), '5000', 'initial rows');

# A writer inserts a row of a tenant and updates another, committing each
# time, so that each statement routes by the topology of its own transaction.
# A write caught by the switch fails on the old shard's range constraint and
# is counted, never lost or misplaced.
$coord->safe_psql('postgres', q{
	CREATE PROCEDURE writer(w int, n int) LANGUAGE plpgsql AS $$
	DECLARE
		ok int := 0;
		failed int := 0;
		t bigint;
	BEGIN
		FOR i IN 1..n LOOP
			EXIT WHEN i > 500 AND EXISTS (SELECT 1 FROM stop_writing);
			t := 1 + (i * 7919 + w * 104729) % 10000;
			BEGIN
				INSERT INTO users (tenant_id, username) VALUES (t, 'w' || w || '-' || i);
				UPDATE users SET hits = hits + 1 WHERE tenant_id = t;
				ok := ok + 1;
			EXCEPTION WHEN check_violation OR serialization_failure THEN
				failed := failed + 1;
			END;
			COMMIT;
		END LOOP;
		INSERT INTO written VALUES (w, ok, failed);
		COMMIT;
	END
	$$;
});

my @writers;
for my $w (1 .. 2)
{
	my $session = $coord->background_psql('postgres', on_error_stop => 0);
	$session->query_until(qr/started/, "\\echo started\nCALL writer($w, 100000);\n");
	push @writers, $session;
}

# split while they write: tenants 5001..10000 move to shard3
$coord->poll_query_until('postgres', "SELECT count(*) > 100 FROM users WHERE username LIKE 'w%'")
  or die 'the writers did not start';
$coord->safe_psql('postgres', "SELECT shard_split('shard1', 5000, 'shard3', '$dsn3')");
is($coord->safe_psql('postgres', 'SELECT count(*) FROM written'), '0',
	'shard_split returned while both writers were still writing');

$coord->safe_psql('postgres', 'INSERT INTO stop_writing VALUES (1)');
$_->quit for @writers;
is($coord->safe_psql('postgres', 'SELECT count(*) FROM written'), '2', 'both writers finished');
my ($inserted, $failed) = split /\|/,
  $coord->safe_psql('postgres', 'SELECT sum(inserted), sum(failed) FROM written');
note "writers: $inserted rows inserted, $failed writes caught by the switch";

is($coord->safe_psql('postgres',
		"SELECT shard_id || ':' || range_start || '..' || range_end FROM tenant_router.shards ORDER BY range_start"),
	"shard1:1..5000\nshard3:5001..10000\nshard2:10001..20000", 'the new topology');
is($coord->safe_psql('postgres', 'SELECT shard_for(5000) || shard_for(5001)'), 'shard1shard3',
	'routing follows it');

# no row lost, none twice
is($coord->safe_psql('postgres', 'SELECT count(*) FROM users'), 5000 + $inserted,
	'every row, initial and written, is read once through the coordinator');
is($coord->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT id) FROM users'), '0',
	'no row is read twice');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM orders'), '5000', 'orders moved too');
is($coord->safe_psql('postgres',
		"SELECT count(*) FROM users WHERE username NOT LIKE 'initial%' AND hits = 0"),
	'0', 'every written row got its update, wherever it lived at the time');

# where the rows are
my $moving = $coord->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id > 5000');
is($shard3->safe_psql('postgres', 'SELECT count(*) FROM users'), $moving,
	'shard3 has every row of tenants 5001..10000');
is($shard3->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id NOT BETWEEN 5001 AND 10000'),
	'0', 'and nothing else');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM tenant_router.pending_cleanup'), '1',
	'shard1 waits for its cleanup');
ok($shard1->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id > 5000') > 0,
	'shard1 still holds the moved rows, out of routing');

# a write that reaches shard1 for a moved tenant fails instead of landing
my ($rc, $out, $err) = $shard1->psql('postgres', "INSERT INTO users VALUES (999999, 7000, 'misrouted', 0)");
like($err, qr/tenant_router_range/, 'shard1 refuses rows of the moved tenants');
# so does a DELETE or UPDATE of a moved row (a coordinator with an outdated
# topology): an error to retry, never a write lost with the cleanup
($rc, $out, $err) = $shard1->psql('postgres', 'DELETE FROM users WHERE tenant_id = 7001');
like($err, qr/tenant 7001 has moved to another shard/, 'shard1 refuses to delete a moved row');
($rc, $out, $err) = $shard1->psql('postgres', "UPDATE orders SET amount = 0 WHERE tenant_id = 7001");
like($err, qr/tenant 7001 has moved/, 'and to update one');
is($shard1->safe_psql('postgres', 'BEGIN; WITH d AS (DELETE FROM users WHERE tenant_id = 1 RETURNING 1) SELECT count(*) > 0 FROM d; ROLLBACK'),
	't', 'rows it still owns are not guarded');

# cleanup; while it runs, the tenants shard1 keeps are written as usual.
# Here its delete waits for a moved row that a session on shard1 holds
# locked, and a write of a staying tenant goes through meanwhile (before,
# the cleanup dropped the guard first, whose lock held every write back
# until its end); another session holds orders, so the guard of orders
# cannot be dropped at once: the cleanup stays pending, writes go on, and
# the next cleanup drops it.
my $left = $shard1->safe_psql('postgres',
	'SELECT (SELECT count(*) FROM users WHERE tenant_id > 5000) + (SELECT count(*) FROM orders WHERE tenant_id > 5000)');
my $moved_tenant = $shard1->safe_psql('postgres', 'SELECT min(tenant_id) FROM users WHERE tenant_id > 5000');
my $holder = $shard1->background_psql('postgres');
$holder->query_safe("BEGIN; SELECT 1 FROM users WHERE tenant_id = $moved_tenant FOR UPDATE");
my $reader = $shard1->background_psql('postgres');
$reader->query_safe('BEGIN; SELECT count(*) FROM orders');
my $cleaner = $coord->background_psql('postgres', on_error_stop => 0);
$cleaner->query_until(qr/started/,
	"SET tenant_router.shard_lock_timeout = '60s';\n\\echo started\nSELECT tenant_router.shard_cleanup('shard1') AS deleted;\n");
$shard1->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
	  . "AND application_name LIKE 'tenant_router %' AND query LIKE '% public.users%'")
  or die 'the cleanup did not wait on shard1';
($rc, $out, $err) = $coord->psql('postgres',
	"SET statement_timeout = '5s'; INSERT INTO users VALUES (999998, 42, 'during cleanup', 1)");
is($rc . $err, '0', 'a staying tenant is written while the cleanup deletes');
$inserted++;
$holder->query_safe('COMMIT');
$holder->quit;
$cleaner->quit;
is($shard1->safe_psql('postgres',
		'SELECT (SELECT count(*) FROM users WHERE tenant_id > 5000) + (SELECT count(*) FROM orders WHERE tenant_id > 5000)'),
	'0', "shard_cleanup deletes the moved rows of both tables ($left)");
is($coord->safe_psql('postgres', 'SELECT count(*) FROM tenant_router.pending_cleanup'), '1',
	'the cleanup stays pending while a session holds orders');
is($shard1->safe_psql('postgres', "SELECT string_agg(tgrelid::regclass::text, ',') FROM pg_trigger WHERE tgname = 'tenant_router_moved'"),
	'orders', 'the guard of orders is still there, that of users is gone');
($rc, $out, $err) = $coord->psql('postgres',
	"SET statement_timeout = '5s'; INSERT INTO orders VALUES (999998, 42, 1)");
is($rc . $err, '0', 'orders is written meanwhile');
$reader->query_safe('COMMIT');
$reader->quit;
is($coord->safe_psql('postgres', "SELECT tenant_router.shard_cleanup('shard1')"), '0',
	'the next cleanup has no row left to delete');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM tenant_router.pending_cleanup'), '0',
	'and is done');
is($shard1->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id > 5000'), '0',
	'shard1 keeps only its range');
is($shard1->safe_psql('postgres',
		"SELECT bool_and(convalidated) FROM pg_constraint WHERE conname = 'tenant_router_range'"),
	't', 'and its range constraints are validated');
is($shard1->safe_psql('postgres', "SELECT count(*) FROM pg_trigger WHERE tgname = 'tenant_router_moved'"),
	'0', 'the guard of the moved rows is gone with them');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM users'), 5000 + $inserted,
	'the coordinator reads the same rows after the cleanup');
is($shard1->safe_psql('postgres', 'SELECT count(*) FROM pg_publication')
	  . $shard3->safe_psql('postgres', 'SELECT count(*) FROM pg_subscription')
	  . $shard1->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'),
	'000', 'no publication, subscription or slot is left');

# errors change nothing
$coord->psql('postgres', "SELECT shard_split('shard1', 9000, 'shard5', '$dsn3')", stderr => \$err);
like($err, qr/split_at 9000 is not inside shard "shard1"/, 'split_at outside the range');
$coord->psql('postgres', "SELECT shard_split('shard1', 100, 'shard3', '$dsn3')", stderr => \$err);
like($err, qr/shard "shard3" already exists/, 'an existing shard id');
$coord->psql('postgres', "SELECT shard_split('nosuch', 100, 'shard5', '$dsn3')", stderr => \$err);
like($err, qr/shard "nosuch" does not exist/, 'an unknown shard');
$coord->psql('postgres', "SELECT shard_split('shard1', 100, 'shard5', '$dsn3')", stderr => \$err);
like($err, qr/the DSN of shard "shard5" reaches the database of shard "shard3"/, 'the database of another shard');
$shard4->safe_psql('postgres', 'CREATE DATABASE withrows');
$shard4->safe_psql('withrows', 'CREATE TABLE users (id bigint); INSERT INTO users VALUES (1)');
my $dsn_rows = TenantRouter::Test->dsn($shard4, 'withrows');
$coord->psql('postgres', "SELECT shard_split('shard1', 100, 'shard5', '$dsn_rows')", stderr => \$err);
like($err, qr/already has rows/, 'a new shard whose tables have rows');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM tenant_router.shards'), '3',
	'the topology is unchanged after the refusals');

# the worker cleans up after a split by itself
$coord->append_conf('postgresql.conf', 'tenant_router.auto_cleanup = on');
$coord->reload;
# ... while a session on shard2 holds users (idle in a transaction): the
# split's DDL waits for it in short attempts, and the other tenants' writes
# go on meanwhile instead of queueing behind its lock request (before, they
# waited for the whole tenant_router.shard_lock_timeout)
my $idle = $shard2->background_psql('postgres');
$idle->query_safe('BEGIN; SELECT count(*) FROM users');
my $splitter = $coord->background_psql('postgres', on_error_stop => 0);
$splitter->query_until(qr/started/,
	"SET tenant_router.shard_lock_timeout = '60s';\n\\echo started\nSELECT shard_split('shard2', 15000, 'shard4', '$dsn4');\n");
$shard2->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
	  . "AND application_name LIKE 'tenant_router %' AND query LIKE '% public.users%'")
  or die 'the split did not wait on shard2';
($rc, $out, $err) = $coord->psql('postgres',
	"SET statement_timeout = '2s'; INSERT INTO users VALUES (999997, 12000, 'during the split', 1)");
is($rc . $err, '0', 'a tenant that stays is written while the split waits for a lock');
($rc, $out, $err) = $coord->psql('postgres',
	"SET statement_timeout = '2s'; INSERT INTO users VALUES (999996, 16000, 'during the split', 1)");
is($rc . $err, '0', 'and so is a tenant that moves');
$idle->query_safe('COMMIT');
$idle->quit;
$splitter->quit;
is($coord->safe_psql('postgres', 'SELECT shard_for(15000) || shard_for(15001)'), 'shard2shard4',
	'a second split');
is($coord->safe_psql('postgres', "SELECT count(*) FROM users WHERE username = 'during the split'"), '2',
	'with both rows');
ok($coord->poll_query_until('postgres', 'SELECT count(*) = 0 FROM tenant_router.pending_cleanup'),
	'the worker cleaned up after it');
is($shard2->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id > 15000'), '0',
	'shard2 keeps only its range');

done_testing();
