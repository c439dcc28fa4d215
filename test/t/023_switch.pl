# The switch no client sees (issue 12 item 1): shard_split, tenant_pin,
# shard_move and shard_merge each run under a load of autocommit writes in
# pgbench clients (prepared statements) on both sides of what moves: INSERTs
# and UPDATEs on the fast path, INSERTs through the FDW (batched, and row by
# row with RETURNING), UPDATEs sent whole through the FDW (direct
# modification), and INSERTs on a second coordinator that learns the
# topology from Redis.  No client sees an error; every row acknowledged is
# there exactly once, on the shard that owns its tenant; every UPDATE
# acknowledged counted exactly once.  Then what cannot be retried: a
# transaction that already used the old shard gets 40001; a write that
# waits longer than tenant_router.switch_wait_timeout gets 40001; a write
# waiting when the operation rolls back goes through where it was; between
# the switch and the narrowing the fence alone refuses the moving tenants,
# in READ COMMITTED and REPEATABLE READ, and lets the others through; a
# coordinator that never learns the new topology gets 40001, and its writes
# never land.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use TenantRouter::Test;

my $redis = TenantRouter::Test->start_redis;
my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $shard3 = TenantRouter::Test->new_shard('shard3');
my $a = TenantRouter::Test->new_coordinator('coord_a', redis => $redis,
	conf => ["tenant_router.node_name = 'a'", 'tenant_router.auto_cleanup = off']);
my $b = TenantRouter::Test->new_coordinator('coord_b', redis => $redis,
	conf => ["tenant_router.node_name = 'b'", 'tenant_router.auto_cleanup = off']);
# a coordinator that never hears of a topology change
my $c = TenantRouter::Test->new_coordinator('coord_c', conf => ['tenant_router.auto_cleanup = off']);
$shard1->safe_psql('postgres', 'CREATE DATABASE vip');
$shard2->safe_psql('postgres', 'CREATE DATABASE quarter');
$shard3->safe_psql('postgres', 'CREATE DATABASE moved');
my $dsn1 = TenantRouter::Test->dsn($shard1);
my $dsn2 = TenantRouter::Test->dsn($shard2);
my $dsn3 = TenantRouter::Test->dsn($shard3);
my $dsn_vip = TenantRouter::Test->dsn($shard1, 'vip');
my $dsn_quarter = TenantRouter::Test->dsn($shard2, 'quarter');
my $dsn_moved = TenantRouter::Test->dsn($shard3, 'moved');
TenantRouter::Test->wait_subscribers($redis, 'db_shard_topology_updates', 2);

my $tables = q{
	CREATE TABLE items (id bigserial, tenant_id bigint NOT NULL, v int NOT NULL,
		PRIMARY KEY (tenant_id, id));
	CREATE TABLE counters (tenant_id bigint PRIMARY KEY, n int NOT NULL);
	SELECT logical_table_add('items');
	SELECT logical_table_add('counters');
};
$a->safe_psql('postgres', qq{
	SELECT sequence_block_set(1);
	SELECT shard_add('s1', 1, 10000, '$dsn1');
	SELECT shard_add('s2', 10001, 20000, '$dsn2');
	SELECT shard_add('vip', NULL, NULL, '$dsn_vip');
	$tables
	INSERT INTO counters SELECT t, 0 FROM generate_series(1, 20000) t;
	INSERT INTO items (tenant_id, v) SELECT t, 0 FROM generate_series(1, 20000, 7) t;
});
ok($b->poll_query_until('postgres', 'SELECT count(*) = 3 FROM tenant_router.shards'), 'B has the shards');
$b->safe_psql('postgres', "SELECT sequence_block_set(2); $tables");
$c->safe_psql('postgres', qq{
	SELECT shard_add('s1', 1, 10000, '$dsn1');
	SELECT shard_add('s2', 10001, 20000, '$dsn2');
	$tables
});
my $initial = $a->safe_psql('postgres', 'SELECT count(*) FROM items');

# the clients' scripts
my $dir = PostgreSQL::Test::Utils::tempdir;
PostgreSQL::Test::Utils::append_to_file("$dir/insert.sql",
	"\\set tid random(:lo, :hi)\nINSERT INTO items (tenant_id, v) VALUES (:tid, 1);\n");
PostgreSQL::Test::Utils::append_to_file("$dir/insert_returning.sql",
	"\\set tid random(:lo, :hi)\nINSERT INTO items (tenant_id, v) VALUES (:tid, 2) RETURNING id;\n");
PostgreSQL::Test::Utils::append_to_file("$dir/update.sql",
	"\\set tid random(:lo, :hi)\nUPDATE counters SET n = n + 1 WHERE tenant_id = :tid;\n");

# the clients: name, coordinator, script, whether the fast path is on
my @clients = (
	[ 'fast path INSERT', $a, 'insert', 1 ],
	[ 'fast path UPDATE', $a, 'update', 1 ],
	[ 'FDW batch INSERT', $a, 'insert', 0 ],
	[ 'FDW INSERT RETURNING', $a, 'insert_returning', 0 ],
	[ 'FDW direct UPDATE', $a, 'update', 0 ],
	[ 'INSERT on coordinator B', $b, 'insert', 1 ],
);
my %done = (insert => 0, update => 0);

# under_load runs sql on A while the clients write tenants lo..hi for
# seconds, and checks what they saw
sub under_load
{
	my ($what, $sql, $lo, $hi, $seconds) = @_;
	my @runs;
	for my $client (@clients)
	{
		my ($name, $node, $script, $fast) = @$client;
		my %run = (name => $name, script => $script, out => '', err => '');
		local $ENV{PGOPTIONS} = $fast ? '' : '-c tenant_router.enable_fast_path=off';
		$run{h} = IPC::Run::start(
			[ 'pgbench', '-n', '-M', 'prepared', '-c', '1', '-T', $seconds,
			  '-D', "lo=$lo", '-D', "hi=$hi", '-f', "$dir/$script.sql",
			  '-h', $node->host, '-p', $node->port, 'postgres' ],
			'>', \$run{out}, '2>', \$run{err});
		push @runs, \%run;
	}
	sleep 1;
	my ($rc, $out, $err) = $a->psql('postgres', $sql, timeout => 120);
	is($err, '', "$what under load");
	for my $run (@runs)
	{
		$run->{h}->finish;
		my ($processed) = $run->{out} =~ /number of transactions actually processed: (\d+)/;
		my ($failed) = $run->{out} =~ /number of failed transactions: (\d+)/;
		$processed //= 0;
		$failed //= 0;
		my @errors = $run->{err} =~ /(ERROR: .*)/g;
		ok($processed > 0 && $failed == 0 && $run->{err} !~ /aborted/,
			"$what: $run->{name}: $processed statements, no error")
		  or diag("stdout: $run->{out}\nstderr: $run->{err}");
		(my $kind = $run->{script}) =~ s/_returning//;
		$done{$kind} += $processed;
	}
}

# the shards' refusals that the coordinators sent on (one of them at least
# shows that the switch caught writes on their way)
sub refusals
{
	my $n = 0;
	for my $node ($shard1, $shard2, $shard3)
	{
		my $log = slurp_file($node->logfile);
		$n += () = $log =~ /has moved to another shard|violates check constraint "tenant_router_range"/g;
	}
	return $n;
}

under_load('shard_split', "SELECT shard_split('s1', 5000, 's3', '$dsn3')", 4990, 5010, 6);
under_load('tenant_pin', "SELECT tenant_pin(42, 'vip')", 40, 44, 6);
under_load('shard_move', "SELECT shard_move('s2', '$dsn_moved')", 9995, 10005, 6);
under_load('shard_merge', "SELECT shard_merge('s3', 's1')", 4995, 5005, 6);
is($a->safe_psql('postgres',
		"SELECT string_agg(shard_id || ':' || coalesce(range_start || '..' || range_end, 'pins'), ' ' ORDER BY shard_id) FROM tenant_router.shards"),
	's1:1..10000 s2:10001..20000 vip:pins', 'the topology after the four operations');
is($a->safe_psql('postgres', 'SELECT shard_for(42) || shard_for(5001) || shard_for(10001)'), 'vips1s2',
	'and routing');
ok($b->poll_query_until('postgres', "SELECT shard_for(42) || shard_for(5001) = 'vips1'"),
	'B routes the same way');
my $refused = refusals();
ok($refused > 0, "the shards refused writes that were sent on ($refused)");
note "writes refused by an old shard and sent on to the new one: $refused";

# every acknowledged row exactly once, on the shard that owns its tenant
$a->safe_psql('postgres', 'SELECT tenant_router.shard_cleanup(shard_id) FROM tenant_router.pending_cleanup');
is($a->safe_psql('postgres', 'SELECT count(*) FROM items'), $initial + $done{insert},
	"every INSERT acknowledged is there ($done{insert})");
is($a->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT id) FROM items'), '0', 'once');
is($a->safe_psql('postgres', 'SELECT sum(n) FROM counters'), $done{update},
	"every UPDATE acknowledged counted once ($done{update})");
my %on = (s1 => [ $shard1, 'postgres' ], s2 => [ $shard3, 'moved' ], vip => [ $shard1, 'vip' ]);
my $routed = $a->safe_psql('postgres',
	"SELECT string_agg(s || '=' || n, ' ' ORDER BY s) FROM (SELECT shard_for(tenant_id) s, count(*) n FROM items GROUP BY 1) x");
my $held = join(' ', map { "$_=" . $on{$_}[0]->safe_psql($on{$_}[1], 'SELECT count(*) FROM items') } sort keys %on);
is($held, $routed, 'each shard holds exactly the rows of the tenants it owns');
is($b->safe_psql('postgres', 'SELECT count(*) FROM items'), $initial + $done{insert}, 'B reads the same rows');

# ------------------------------------------------------------ what cannot be retried
# an operation held before its catalog flip: the switch has committed, the
# old shard refuses the moving tenants 2501..10000, routing still sends
# them there
my $op = $a->background_psql('postgres', on_error_stop => 0);
$op->query_safe("SET tenant_router.operation_pause_before = 'flip catalog'");
$op->{stdin} .= "SELECT shard_split('s1', 2500, 's4', '$dsn_quarter');\n";
$op->{run}->pump_nb;
$a->poll_query_until('postgres', "SELECT phase = 'flip catalog' FROM tenant_router.operations WHERE finished_at IS NULL")
  or die 'the split did not reach its flip';

# sql_state runs sql on node and returns its SQLSTATE ('' when it succeeds)
sub sql_state
{
	my ($node, $sql) = @_;
	my ($stdout, $stderr);
	$node->psql('postgres', "\\set VERBOSITY verbose\n$sql", stdout => \$stdout, stderr => \$stderr);
	return $stderr =~ /ERROR:\s+(\w{5})/ ? $1 : '';
}

my $before = $a->safe_psql('postgres', 'SELECT count(*) FROM items');
is(sql_state($a, 'BEGIN; INSERT INTO items (tenant_id, v) VALUES (100, 5); INSERT INTO items (tenant_id, v) VALUES (3000, 5); COMMIT'),
	'40001', 'a transaction that wrote to the old shard before gets 40001 for a moving tenant');
is(sql_state($a, "SET tenant_router.enable_fast_path = off; BEGIN; INSERT INTO items (tenant_id, v) VALUES (100, 5) RETURNING id; INSERT INTO items (tenant_id, v) VALUES (3000, 5) RETURNING id; COMMIT"),
	'40001', 'so does one through the FDW');
my $t0 = time;
is(sql_state($a, "SET tenant_router.switch_wait_timeout = '300ms'; INSERT INTO items (tenant_id, v) VALUES (3000, 5)"),
	'40001', 'a write that waits longer than tenant_router.switch_wait_timeout gets 40001');
ok(time - $t0 >= 0.3, 'after waiting that long');
is(sql_state($a, "SET tenant_router.switch_wait_timeout = 0; UPDATE counters SET n = n + 1 WHERE tenant_id = 3000"),
	'40001', 'an UPDATE too (0: no wait)');
is(sql_state($a, 'TRUNCATE items'), '40001', 'TRUNCATE is refused while tenants move');
is($a->safe_psql('postgres', 'SELECT count(*) FROM items'), $before, 'nothing of them is written');

# a write waiting when the operation rolls back goes through where it was
my $waiting = $a->background_psql('postgres', on_error_stop => 0);
$waiting->{stdin} .= "SET tenant_router.switch_wait_timeout = '60s';\nINSERT INTO items (tenant_id, v) VALUES (3001, 6);\n\\echo inserted\n";
$waiting->{run}->pump_nb;
ok($a->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'INSERT INTO items (tenant_id, v) VALUES (3001%' AND wait_event_type = 'Extension'}),
	'a write of tenant 3001 waits for its new shard');
$a->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT shard_split%' AND backend_type = 'client backend'");
$waiting->{run}->pump until $waiting->{stdout} =~ /inserted/ || $waiting->{timeout}->is_expired;
is($waiting->{stderr}, '', 'once the split rolls back, it goes through');
$waiting->quit;
$op->quit;
is($a->safe_psql('postgres', 'SELECT count(*) FROM items WHERE tenant_id = 3001 AND v = 6'), '1', 'and is there');
is($shard1->safe_psql('postgres', 'SELECT count(*) FROM items WHERE tenant_id = 3001 AND v = 6'), '1', 'on s1');

# the fence itself: a split held between its switch (committed) and the
# narrowing of the source's constraint; the old shard refuses the moving
# tenants through the fence's triggers alone, in READ COMMITTED and in
# REPEATABLE READ (where the trigger reads the fence's row FOR SHARE)
ok($a->poll_query_until('postgres', 'SELECT count(*) = 0 FROM tenant_router.operations WHERE finished_at IS NULL'),
	'the cancelled split has rolled back');
my $offset = -s $a->logfile;
$op = $a->background_psql('postgres', on_error_stop => 0);
$op->query_safe("SET tenant_router.operation_pause_before = 'switch/narrow'");
$op->{stdin} .= "SELECT shard_split('s1', 2500, 's4', '$dsn_quarter');\n";
$op->{run}->pump_nb;
$a->wait_for_log(qr{pauses before "switch/narrow"}, $offset);
is($shard1->safe_psql('postgres', "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenant_router_op%fence_insert'"),
	'2', 'held after the switch: the fence is on the source\'s tables');
for my $level ('read committed', 'repeatable read')
{
	my ($stdout, $stderr);
	$a->psql('postgres',
		"\\set VERBOSITY verbose\nSET tenant_router.switch_wait_timeout = '200ms'; "
		  . "BEGIN ISOLATION LEVEL $level; INSERT INTO items (tenant_id, v) VALUES (3002, 7); COMMIT",
		stdout => \$stdout, stderr => \$stderr);
	like($stderr, qr/ERROR:\s+40001: tenant 3002 has moved to another shard/,
		"$level: the fence refuses a moving tenant once the switch has committed");
	is(sql_state($a, "BEGIN ISOLATION LEVEL $level; INSERT INTO items (tenant_id, v) VALUES (100, 7); COMMIT"),
		'', "$level: a staying tenant is written");
}
$a->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT shard_split%' AND backend_type = 'client backend'");
$op->quit;
ok($a->poll_query_until('postgres', 'SELECT count(*) = 0 FROM tenant_router.operations WHERE finished_at IS NULL'),
	'that split rolls back too');
is($a->safe_psql('postgres', 'SELECT string_agg(tenant_id::text, \' \') FROM items WHERE v = 7'), '100 100',
	'the staying tenant\'s rows are there, the moving tenant\'s are not');
$a->safe_psql('postgres', 'DELETE FROM items WHERE v = 7');

# a coordinator that never learns the new topology: its writes for the
# moved tenants get 40001 and never land
my $wait = "SET tenant_router.switch_wait_timeout = '200ms';";
is(sql_state($c, "$wait INSERT INTO items (id, tenant_id, v) VALUES (-1, 12000, 99)"), '40001',
	'C: an INSERT for a tenant moved away from the database it routes to gets 40001');
is(sql_state($c, "$wait INSERT INTO items (id, tenant_id, v) VALUES (-2, 42, 99)"), '40001',
	'C: so does one for the pinned tenant');
is(sql_state($c, "$wait UPDATE counters SET n = n + 1000 WHERE tenant_id = 12000"), '40001',
	'C: and an UPDATE of a moved row');
is(sql_state($c, "$wait INSERT INTO items (id, tenant_id, v) VALUES (-3, 100, 99)"), '',
	'C: a tenant that did not move is written');
is($a->safe_psql('postgres', 'SELECT string_agg(tenant_id::text, \' \') FROM items WHERE v = 99'), '100',
	'none of the refused writes landed anywhere');
is($a->safe_psql('postgres', 'SELECT sum(n) FROM counters'), $done{update}, 'nor did the UPDATE');
is($shard2->safe_psql('postgres', 'SELECT count(*) FROM items WHERE v = 99')
	  . $shard1->safe_psql('postgres', 'SELECT count(*) FROM items WHERE v = 99 AND tenant_id = 42'),
	'00', 'not even on the old databases');

# A write of a moving tenant in flight (on the source, it holds the fence's
# advisory lock shared until its transaction ends) holds the switch back:
# the switch tries again and again, for at most
# tenant_router.shard_lock_timeout (the caller's) in all, then the operation
# rolls back (55P03); if the write ends in time, the switch goes on.  A
# transaction open on the coordinator cannot stand in for it here: logical
# replication's copy waits for every transaction open on the source.  The
# session below takes the lock of the next operation, as the fence's
# trigger does.
sub split_held_back
{
	my ($lock_timeout) = @_;
	my $op_id = $a->safe_psql('postgres', 'SELECT last_value + 1 FROM tenant_router.operation_id_seq');
	my $writer = $shard1->background_psql('postgres');
	$writer->query_safe("SELECT pg_advisory_lock_shared(x'7466000000000000'::bigint + $op_id)");
	my $split = $a->background_psql('postgres', on_error_stop => 0);
	$split->query_safe("SET tenant_router.shard_lock_timeout = '$lock_timeout'");
	$split->{stdin} .= "\\set VERBOSITY verbose\nSELECT shard_split('s1', 2500, 's4', '$dsn_quarter');\n\\echo split done\n";
	$split->{run}->pump_nb;
	return ($split, $writer);
}

my ($split, $writer) = split_held_back('700ms');
$split->{run}->pump until $split->{stdout} =~ /split done/ || $split->{timeout}->is_expired;
like($split->{stderr}, qr/ERROR:\s+55P03: the switch of the split of shard "s1" could not hold back the writes of the moving tenants/,
	'a split whose switch is held back by a write in flight fails with 55P03');
$split->quit;
$writer->quit;
is($a->safe_psql('postgres', "SELECT shard_for(3004) || count(*) FROM tenant_router.shards WHERE shard_id = 's4'"), 's10',
	'and rolls back');
is($a->safe_psql('postgres', 'INSERT INTO items (tenant_id, v) VALUES (3004, 8) RETURNING v'), '8',
	'the moving tenants are written on the old shard again');

# A switch held back, whose undo cannot drop the fence's triggers either (a
# session on the shard holds the table): the fence is opened at once, the
# operation stays unfinished, and the recovery finishes the undo once the
# session is gone.
($split, $writer) = split_held_back('2s');
ok($a->poll_query_until('postgres', q{SELECT phase = 'switch' FROM tenant_router.operations WHERE finished_at IS NULL}),
	'a second split reaches its switch');
$writer->query_safe('BEGIN');
$writer->query_safe('LOCK TABLE public.items IN ROW EXCLUSIVE MODE');
$split->{run}->pump until $split->{stdout} =~ /split done/ || $split->{timeout}->is_expired;
like($split->{stderr}, qr/55P03/, 'the split fails');
$split->quit;
isnt($shard1->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%fence%'}), '0',
	'the undo could not drop the fence\'s triggers');
is($a->safe_psql('postgres', 'INSERT INTO items (tenant_id, v) VALUES (3004, 9) RETURNING v'), '9',
	'the moving tenants are written on the old shard meanwhile');
is($a->safe_psql('postgres', 'SELECT count(*) FROM tenant_router.operations WHERE finished_at IS NULL'), '1',
	'the operation stays unfinished');
$writer->quit;
ok($a->poll_query_until('postgres', q{SELECT tenant_router.operation_recover() >= 0 AND
	NOT EXISTS (SELECT FROM tenant_router.operations WHERE finished_at IS NULL)}),
	'once the session is gone, the recovery finishes the undo');
is($shard1->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%fence%'}), '0',
	'and the fence is gone from the shard');

($split, $writer) = split_held_back('10s');
ok($a->poll_query_until('postgres', q{SELECT phase = 'switch' FROM tenant_router.operations WHERE finished_at IS NULL}),
	'the switch waits for a write in flight');
usleep(300_000);
$writer->quit;
$split->{run}->pump until $split->{stdout} =~ /split done/ || $split->{timeout}->is_expired;
is($split->{stderr}, '', 'once it ends, the split goes on');
$split->quit;
is($a->safe_psql('postgres', 'SELECT shard_for(3004) || (SELECT count(*) FROM items WHERE tenant_id = 3004 AND v = 8)'),
	's41', 'and the row written meanwhile moves with its tenant');
is($shard2->safe_psql('quarter', 'SELECT count(*) FROM items WHERE tenant_id = 3004 AND v = 8'), '1',
	'to the new shard');

# An INSERT whose ON CONFLICT DO UPDATE gives the row another tenant breaks
# the range constraint by itself: after switch_wait_timeout the shard's own
# 23514, not a 40001 that clients would retry for ever.
is(sql_state($a, "SET tenant_router.switch_wait_timeout = '300ms'; INSERT INTO counters VALUES (5, 0) ON CONFLICT (tenant_id) DO UPDATE SET tenant_id = 15000"),
	'23514', 'an INSERT that breaks the range constraint by itself gets the shard\'s 23514');

# TRUNCATE waits for no operation
is(sql_state($a, 'TRUNCATE items'), '', 'TRUNCATE works once no operation runs');

done_testing();
