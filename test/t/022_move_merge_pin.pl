# Online operations under a write load: tenant_pin/tenant_unpin of a VIP
# tenant, shard_move, shard_split_modulo, shard_merge.  Two sessions keep
# writing (each row acknowledged in a local table in the same transaction);
# afterwards every acknowledged row is read once, and each shard holds only
# what it owns.  The states and the progress are seen while an operation
# runs; a cancelled merge leaves both shards as they were.  A second
# coordinator follows every change through Redis (PIN_TENANT,
# UNPIN_TENANT, UPDATE_SHARD_DSN, MERGE_SHARD, modulo ranges) and routes the
# same way.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use TenantRouter::Test;

my $redis = TenantRouter::Test->start_redis;
my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $shard3 = TenantRouter::Test->new_shard('shard3');
my $a = TenantRouter::Test->new_coordinator('coord_a', redis => $redis,
	conf => ["tenant_router.node_name = 'a'", 'tenant_router.auto_cleanup = off', 'restart_after_crash = on']);
my $b = TenantRouter::Test->new_coordinator('coord_b', redis => $redis,
	conf => ["tenant_router.node_name = 'b'", 'tenant_router.auto_cleanup = off']);
$shard1->safe_psql('postgres', 'CREATE DATABASE vip');
$shard3->safe_psql('postgres', 'CREATE DATABASE half');
$shard2->safe_psql('postgres', 'CREATE DATABASE zero');
my $dsn1 = TenantRouter::Test->dsn($shard1);
my $dsn2 = TenantRouter::Test->dsn($shard2);
my $dsn3 = TenantRouter::Test->dsn($shard3);
my $dsn_vip = TenantRouter::Test->dsn($shard1, 'vip');
my $dsn_half = TenantRouter::Test->dsn($shard3, 'half');
my $dsn_zero = TenantRouter::Test->dsn($shard2, 'zero');
TenantRouter::Test->wait_subscribers($redis, 'db_shard_topology_updates', 2);

my $table = 'CREATE TABLE items (id bigint PRIMARY KEY, tenant_id bigint NOT NULL, v int NOT NULL)';
$a->safe_psql('postgres', qq{
	SELECT shard_add('s1', 1, 10000, '$dsn1');
	SELECT shard_add('s2', 10001, 20000, '$dsn2');
	SELECT shard_add('vip', NULL, NULL, '$dsn_vip');
	SELECT shard_add('s0', -10000, 0, '$dsn_zero');
	$table;
	SELECT logical_table_add('items');
	CREATE SEQUENCE item_ids;
	CREATE TABLE acked (id bigint PRIMARY KEY, tenant_id bigint, writer int);
	CREATE TABLE written (writer int, ok int, failed int);
	CREATE TABLE stop_writing (flag int);
});
ok($b->poll_query_until('postgres', 'SELECT count(*) = 4 FROM tenant_router.shards'), 'B has the shards');
$b->safe_psql('postgres', "$table; SELECT logical_table_add('items');");

# rows for 500 tenants: 200 on s1 and s2, 100 on s0; tenant 42 is the future VIP
$a->safe_psql('postgres', q{
	INSERT INTO items SELECT nextval('item_ids'), t, 0 FROM generate_series(-100, -1) t;
	INSERT INTO items SELECT nextval('item_ids'), t, 0 FROM generate_series(1, 200) t;
	INSERT INTO items SELECT nextval('item_ids'), t, 0 FROM generate_series(10001, 10200) t;
	INSERT INTO items SELECT nextval('item_ids'), 42, g FROM generate_series(1, 50) g;
	INSERT INTO acked SELECT id, tenant_id, 0 FROM items;
});

$a->safe_psql('postgres', q{
	CREATE PROCEDURE writer(w int) LANGUAGE plpgsql AS $$
	DECLARE
		ok int := 0;
		failed int := 0;
		t bigint;
		x bigint;
	BEGIN
		FOR i IN 1..1000000 LOOP
			EXIT WHEN EXISTS (SELECT 1 FROM stop_writing);
			t := CASE i % 4 WHEN 0 THEN 42 WHEN 1 THEN 1 + (i::bigint * 7919 + w) % 200
			          WHEN 2 THEN 10001 + (i::bigint * 104729 + w) % 200 ELSE -1 - (i::bigint * 31 + w) % 100 END;
			BEGIN
				x := nextval('item_ids');
				INSERT INTO items VALUES (x, t, i);
				INSERT INTO acked VALUES (x, t, w);
				ok := ok + 1;
			EXCEPTION WHEN OTHERS THEN
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
	my $session = $a->background_psql('postgres', on_error_stop => 0);
	$session->query_until(qr/started/, "\\echo started\nCALL writer($w);\n");
	push @writers, $session;
}
$a->poll_query_until('postgres', 'SELECT count(*) > 1000 FROM acked') or die 'the writers did not start';

# run_online runs an operation in a session of its own while the writers
# write, and returns the states and phases seen meanwhile
sub run_online
{
	my ($sql) = @_;
	my $session = $a->background_psql('postgres', on_error_stop => 0);
	$session->{stdin} .= "$sql;\n\\echo done\n";
	my %seen;
	while ($session->{stdout} !~ /done/ && !$session->{timeout}->is_expired)
	{
		$session->{run}->pump_nb;
		my $now = $a->safe_psql('postgres',
			"SELECT coalesce(string_agg(DISTINCT state, ','), '') FROM tenant_router.shards WHERE state <> 'active'")
		  . '|' . $a->safe_psql('postgres',
			"SELECT coalesce(string_agg(phase, ','), '') FROM tenant_router.operations WHERE finished_at IS NULL");
		$seen{$now} = 1;
		usleep(20_000);
	}
	my $err = $session->{stderr};
	$session->quit;
	return ($err, join(' ', sort keys %seen));
}

# same_routing compares shard_for on both coordinators for sample tenants
sub same_routing
{
	my ($what) = @_;
	my $q = 'SELECT string_agg(coalesce(shard_for(t), \'-\'), \' \' ORDER BY t) FROM unnest(ARRAY[-5, 1, 42, 43, 200, 10001, 10002, 10003, 10200, 15000]::bigint[]) t';
	my $expect = $a->safe_psql('postgres', $q);
	ok($b->poll_query_until('postgres', "SELECT ($q) = '$expect'"), "$what: B routes as A ($expect)");
}

# ------------------------------------------------------------ a VIP tenant
my ($err, $seen) = run_online("SELECT tenant_pin(42, 'vip')");
is($err, '', 'tenant_pin moves tenant 42 online');
note "seen while it ran: $seen";
is($a->safe_psql('postgres', 'SELECT shard_for(42) || shard_for(41)'), 'vips1', 'tenant 42 is on vip, 41 stays');
is($a->safe_psql('postgres', 'SELECT tenant_id || shard_id FROM tenant_router.pins'), '42vip', 'the pins view');
{
	my ($status, $copied) = split / /, $a->safe_psql('postgres',
		"SELECT status || ' ' || rows_copied FROM tenant_router.operations WHERE operation = 'pin'");
	my $there = $shard1->safe_psql('vip', 'SELECT count(*) FROM items WHERE tenant_id = 42');
	ok($status eq 'completed' && $copied >= 50 && $copied <= $there,
		"the operation counts the rows of tenant 42 it moved ($copied, $there there now)");
}
same_routing('pin');
is($b->safe_psql('postgres', 'SELECT tenant_id || shard_id FROM tenant_router.pins'), '42vip', 'B has the pin');

# ------------------------------------------------------------ a move
# first one stopped in its copy: the state and the phase are seen, and a
# cancel leaves the topology as it was
{
	my $session = $a->background_psql('postgres', on_error_stop => 0);
	$session->query_safe("SET tenant_router.operation_pause_before = 'catch up'");
	$session->{stdin} .= "SELECT shard_move('s2', '$dsn3');\n\\echo done\n";
	$session->{run}->pump_nb;
	$a->poll_query_until('postgres', "SELECT phase = 'catch up' FROM tenant_router.operations WHERE finished_at IS NULL")
	  or die 'the move did not reach its catch up';
	is($a->safe_psql('postgres', "SELECT state FROM tenant_router.shards WHERE shard_id = 's2'"), 'moving',
		's2 is moving meanwhile');
	ok($a->safe_psql('postgres', "SELECT rows_copied FROM tenant_router.operations WHERE finished_at IS NULL") >= 200,
		'the rows copied are counted');
	$a->safe_psql('postgres',
		"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT shard_move%' AND backend_type = 'client backend'");
	$session->{run}->pump until $session->{stdout} =~ /done/ || $session->{timeout}->is_expired;
	$session->quit;
	is($a->safe_psql('postgres', "SELECT state || ' ' || dsn FROM tenant_router.shards WHERE shard_id = 's2'"),
		"active $dsn2", 'cancelled, s2 stays where it was');
	is($shard3->safe_psql('postgres', "SELECT count(*) FROM items"), '0', 'and the new database is emptied');
}
($err, $seen) = run_online("SELECT shard_move('s2', '$dsn3')");
is($err, '', 'shard_move moves s2 to shard3 online');
note "seen while it ran: $seen";
is($a->safe_psql('postgres', "SELECT dsn FROM tenant_router.shards WHERE shard_id = 's2'"), $dsn3, 's2 is at its new DSN');
ok($b->poll_query_until('postgres', "SELECT dsn = '$dsn3' FROM tenant_router.shards WHERE shard_id = 's2'"),
	'B has the new DSN (UPDATE_SHARD_DSN)');
same_routing('move');
my ($rc, $out, $ierr) = $shard2->psql('postgres', 'INSERT INTO items VALUES (-1, 10001, 0)');
is($shard2->safe_psql('postgres', "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range'"),
	'CHECK (false) NOT VALID', "the old database's constraint is false");
like($ierr, qr/tenant_router_range/, 'the old database refuses writes');

# ------------------------------------------------------------ a split by modulo, then back by a merge
($err, $seen) = run_online("SELECT shard_split_modulo('s2', 's2b', '$dsn_half')");
is($err, '', 'shard_split_modulo halves s2 online');
note "seen while it ran: $seen";
is($a->safe_psql('postgres',
		"SELECT string_agg(shard_id || ':' || modulus || '/' || remainder, ' ' ORDER BY shard_id) FROM tenant_router.shards WHERE range_start = 10001"),
	's2:2/0 s2b:2/1', 'two shards share 10001..20000');
is($a->safe_psql('postgres', 'SELECT shard_for(10002) || shard_for(10003)'), 's2s2b', 'by remainder');
same_routing('split by modulo');

# shards sharing a range are not merged
$a->psql('postgres', "SELECT shard_merge('s2b', 's2')", stderr => \$err);
like($err, qr/do not own adjacent ranges/, 'shards sharing a range are not merged');
$a->psql('postgres', "SELECT shard_merge('vip', 's1')", stderr => \$err);
like($err, qr/do not own adjacent ranges/, 'nor a pin-only shard');

# ------------------------------------------------------------ a cancelled merge
my $s1_check = $shard1->safe_psql('postgres', "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range'");
{
	my $session = $a->background_psql('postgres', on_error_stop => 0);
	$session->query_safe("SET tenant_router.operation_pause_before = 'switch'");
	$session->{stdin} .= "SELECT shard_merge('s0', 's1');\n\\echo done\n";
	$session->{run}->pump_nb;
	$a->poll_query_until('postgres', "SELECT phase = 'switch' FROM tenant_router.operations WHERE finished_at IS NULL")
	  or die 'the merge did not reach the switch';
	is($a->safe_psql('postgres', "SELECT string_agg(state, ',' ORDER BY shard_id) FROM tenant_router.shards WHERE shard_id IN ('s0', 's1')"),
		'merging,merging', 'both shards are merging meanwhile');
	ok($shard1->safe_psql('postgres', 'SELECT count(*) FROM items WHERE tenant_id <= 0') > 0,
		'the rows of s0 are being copied into s1');
	my $caller = $a->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT shard_merge%' AND backend_type = 'client backend'");
	$a->safe_psql('postgres', "SELECT pg_cancel_backend($caller)");
	$session->{run}->pump until $session->{stdout} =~ /done/ || $session->{timeout}->is_expired;
	like($session->{stderr}, qr/canceling statement due to user request/, 'the merge is cancelled');
	$session->quit;
}
is($a->safe_psql('postgres', "SELECT string_agg(shard_id || ':' || range_start || '..' || range_end || ':' || state, ' ' ORDER BY shard_id) FROM tenant_router.shards WHERE shard_id IN ('s0', 's1')"),
	's0:-10000..0:active s1:1..10000:active', 'the topology is as before');
is($shard1->safe_psql('postgres', 'SELECT count(*) FROM items WHERE tenant_id <= 0'), '0',
	'the target is emptied of what was copied');
is($shard1->safe_psql('postgres', "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range'"),
	$s1_check =~ s/ NOT VALID$//r, 'and has its range constraint back, validated (the pending cleanup ran first)');

# ------------------------------------------------------------ back from VIP, and a merge that completes
($err, $seen) = run_online("SELECT tenant_unpin(42)");
is($err, '', 'tenant_unpin moves tenant 42 back online');
is($a->safe_psql('postgres', 'SELECT shard_for(42) || (SELECT count(*) FROM tenant_router.pins)'), 's10',
	'tenant 42 is on s1 again, unpinned');
same_routing('unpin');

($err, $seen) = run_online("SELECT shard_merge('s0', 's1')");
is($err, '', 'shard_merge merges s0 into s1 online');
note "seen while it ran: $seen";
is($a->safe_psql('postgres', "SELECT range_start || '..' || range_end FROM tenant_router.shards WHERE shard_id = 's1'"),
	'-10000..10000', 's1 owns both ranges');
is($a->safe_psql('postgres', "SELECT count(*) FROM tenant_router.shards WHERE shard_id = 's0'"), '0', 's0 is gone');
like($shard1->safe_psql('postgres', "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range'"),
	qr/tenant_id >= '?-10000'?.*tenant_id <= 10000/, 'its constraint covers both ranges');
same_routing('merge');
ok($b->poll_query_until('postgres', "SELECT count(*) = 0 FROM tenant_router.shards WHERE shard_id = 's0'"),
	'B merged too (MERGE_SHARD)');

# ------------------------------------------------------------ stop and count
$a->safe_psql('postgres', 'INSERT INTO stop_writing VALUES (1)');
$_->quit for @writers;
my ($ok, $failed) = split /\|/, $a->safe_psql('postgres', 'SELECT sum(ok), sum(failed) FROM written');
note "writers: $ok rows acknowledged, $failed writes failed (retried by nobody; issue 12 item 1 is the switch no client sees)";
ok($ok > 0, 'the writers wrote throughout');
is($a->safe_psql('postgres', 'SELECT count(*) FROM acked a WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = a.id)'),
	'0', 'every acknowledged row is there');
is($a->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT id) FROM items'), '0', 'no row is read twice');
is($a->safe_psql('postgres', 'SELECT count(*) FROM items'), $a->safe_psql('postgres', 'SELECT count(*) FROM acked'),
	'and no row that was not acknowledged');
is($b->safe_psql('postgres', 'SELECT count(*) FROM items'), $a->safe_psql('postgres', 'SELECT count(*) FROM items'),
	'B reads the same rows');
# each shard, once cleaned up, holds only what it owns
$a->safe_psql('postgres', 'SELECT tenant_router.shard_cleanup(shard_id) FROM tenant_router.pending_cleanup');
is($shard1->safe_psql('postgres', 'SELECT count(*) FROM items WHERE tenant_id > 10000 OR tenant_id < -10000'), '0', 's1 holds only its range');
is($shard1->safe_psql('vip', 'SELECT count(*) FROM items'), '0', 'vip holds nothing after the unpin');
is($shard3->safe_psql('postgres', "SELECT count(*) FROM items WHERE tenant_id % 2 = 1 OR tenant_id NOT BETWEEN 10001 AND 20000"),
	'0', 's2 on shard3 holds only remainder 0 of its range');
is($shard3->safe_psql('half', "SELECT count(*) FROM items WHERE tenant_id % 2 = 0"), '0', 's2b holds only remainder 1');
is($a->safe_psql('postgres', 'SELECT count(*) FROM items i WHERE shard_for(i.tenant_id) IS NULL'), '0',
	'every row has an owner');

ok($a->poll_query_until('postgres', 'SELECT count(*) = 0 FROM tenant_router.outbox'), 'every event was published');
ok($b->poll_query_until('postgres', "SELECT count(*) = 6 FROM (SELECT DISTINCT op, status FROM tenant_router.events WHERE op IN ('PIN_TENANT', 'UNPIN_TENANT', 'UPDATE_SHARD_DSN', 'MERGE_SHARD', 'SHARD_MOVE_COMPLETED', 'SHARD_MERGE_COMPLETED')) e"),
	'B received the changes and the completions');
is($b->safe_psql('postgres', "SELECT string_agg(DISTINCT op || ':' || status, ',' ORDER BY op || ':' || status) FROM tenant_router.events WHERE op <> 'ADD_SHARD' AND op <> 'UPDATE_SHARD_RANGE' AND op <> 'SHARD_SPLIT_COMPLETED'"),
	'MERGE_SHARD:applied,PIN_TENANT:applied,SHARD_MERGE_COMPLETED:ignored,SHARD_MOVE_COMPLETED:ignored,UNPIN_TENANT:applied,UPDATE_SHARD_DSN:applied',
	'B applied the changes and recorded the completions');

# ------------------------------------------------------------ events from outside
TenantRouter::Test->redis_cli($redis, 'PUBLISH', 'db_shard_topology_updates',
	'{"op": "PIN_TENANT", "payload": {"tenant_id": 7, "shard_id": "vip"}}');
ok($a->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM tenant_router.events WHERE op = 'PIN_TENANT' AND status = 'rejected' AND origin IS NULL"),
	'a PIN_TENANT event for a tenant whose rows are elsewhere is rejected');
is($a->safe_psql('postgres', 'SELECT shard_for(7)'), 's1', 'and changes nothing');
TenantRouter::Test->redis_cli($redis, 'PUBLISH', 'db_shard_topology_updates',
	'{"op": "PIN_TENANT", "payload": {"tenant_id": 9999999, "shard_id": "vip"}}');
ok($b->poll_query_until('postgres', "SELECT shard_for(9999999) = 'vip'"), 'one for a tenant without rows is applied');
ok($a->poll_query_until('postgres', "SELECT shard_for(9999999) = 'vip'"), 'by both coordinators');

# ------------------------------------------------------------ crashes of a pin and of a merge
# (the writers are done: a crash ends every session of the coordinator)
$shard2->safe_psql('postgres', 'DROP TABLE items');
$shard2->safe_psql('zero', 'DROP TABLE items');
$a->safe_psql('postgres', qq{
	SELECT shard_add('s5', 20001, 30000, '$dsn2');
	SELECT shard_add('s6', 30001, 40000, '$dsn_zero');
	INSERT INTO items SELECT nextval('item_ids'), t, 0 FROM generate_series(20001, 40000, 100) t;
	INSERT INTO items SELECT nextval('item_ids'), 7, g FROM generate_series(1, 20) g;
});
my $count = $a->safe_psql('postgres', 'SELECT count(*) FROM items');
for my $case (["tenant_pin(7, 'vip')", 'flip catalog', $shard1, 'postgres', $shard1, 'vip'],
	["shard_merge('s6', 's5')", 'copy', $shard2, 'zero', $shard2, 'postgres'])
{
	my ($call, $phase, $src_node, $src_db, $dst_node, $dst_db) = @$case;
	my $src_check = $src_node->safe_psql($src_db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range'");
	my $dst_check = $dst_node->safe_psql($dst_db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range'");
	my $dst_rows = $dst_node->safe_psql($dst_db, 'SELECT count(*) FROM items');
	my $session = $a->background_psql('postgres', on_error_stop => 0);
	$session->query_safe("SET tenant_router.operation_pause_before = '$phase'");
	$session->{stdin} .= "SELECT $call;\n";
	$session->{run}->pump_nb;
	$a->poll_query_until('postgres', "SELECT phase = '$phase' FROM tenant_router.operations WHERE finished_at IS NULL")
	  or die "$call did not reach $phase";
	my $pid = $a->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_router operation'");
	kill 9, $pid;
	usleep(500_000);
	$a->poll_query_until('postgres', 'SELECT true') or die 'coordinator A did not come back';
	$session->{run}->kill_kill;
	is($a->safe_psql('postgres', 'SELECT tenant_router.operation_recover()'), '1', "$call, crash before $phase: recovered");
	is($a->safe_psql('postgres', 'SELECT count(*) FROM items'), $count, "$call: every row is read once");
	is($a->safe_psql('postgres', "SELECT shard_for(7) || shard_for(30001)"), 's1s6', "$call: the topology is as before");
	is($src_node->safe_psql($src_db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range' AND convalidated")
		  . $src_node->safe_psql($src_db, "SELECT count(*) FROM pg_trigger WHERE tgname = 'tenant_router_moved'"),
		($src_check =~ s/ NOT VALID$//r) . '0', "$call: the source owns what it owned, validated and unguarded");
	is($dst_node->safe_psql($dst_db, 'SELECT count(*) FROM items') . ' '
		  . $dst_node->safe_psql($dst_db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range'"),
		"$dst_rows " . ($dst_check =~ s/ NOT VALID$//r), "$call: the target has its own rows and constraint only");
	is($src_node->safe_psql($src_db, 'SELECT count(*) FROM pg_publication') . $src_node->safe_psql($src_db, 'SELECT count(*) FROM pg_replication_slots')
		  . $dst_node->safe_psql($dst_db, 'SELECT count(*) FROM pg_subscription'),
		'000', "$call: no replication left");
}
# and then they work
$a->safe_psql('postgres', "SELECT tenant_pin(7, 'vip')");
$a->safe_psql('postgres', "SELECT shard_merge('s6', 's5')");
is($a->safe_psql('postgres', "SELECT shard_for(7) || shard_for(30001) || count(*) FROM items"), "vips5$count",
	'the pin and the merge retried work');

done_testing();
