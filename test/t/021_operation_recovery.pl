# Online operations that do not finish: a coordinator crash (kill -9) in
# each phase of a split leaves the topology as it was once recovered
# (tenant_router.operation_recover(), or the worker), with nothing left on
# the shards, and the retry works; a cancelled split rolls back; a second
# operation on a busy shard is refused; DSNs that reach the coordinator
# itself or another shard's database are refused (SQL and Redis); shard DDL
# does not wait forever behind an idle transaction; a split into a
# database of the same server does not hang.
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
# recovery by hand, until the last round
my $coord = TenantRouter::Test->new_coordinator('coord', redis => $redis,
	conf => ['tenant_router.auto_cleanup = off', 'restart_after_crash = on']);
my ($dsn1, $dsn2, $dsn3) = map { TenantRouter::Test->dsn($_) } ($shard1, $shard2, $shard3);

$coord->safe_psql('postgres', qq{
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	CREATE TABLE users (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, name text);
	SELECT logical_table_add('users');
	CREATE TABLE orders (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, amount int);
	SELECT logical_table_add('orders');
	INSERT INTO users (tenant_id, name) SELECT t, 'u' || t FROM generate_series(1, 10000, 5) t;
	INSERT INTO orders (tenant_id, amount) SELECT t, t % 7 FROM generate_series(1, 10000, 5) t;
	INSERT INTO users (tenant_id, name) SELECT t, 'u' || t FROM generate_series(10001, 20000, 50) t;
});
my $moving = $coord->safe_psql('postgres',
	'SELECT (SELECT count(*) FROM users WHERE tenant_id BETWEEN 5001 AND 10000) + (SELECT count(*) FROM orders WHERE tenant_id BETWEEN 5001 AND 10000)');
my $range_check = $shard1->safe_psql('postgres',
	"SELECT string_agg(pg_get_constraintdef(oid), ';' ORDER BY conrelid::regclass::text) FROM pg_constraint WHERE conname = 'tenant_router_range'");

my $split = "SELECT shard_split('shard1', 5000, 'shard3', '$dsn3')";

# sql_state runs a statement and returns its SQLSTATE ('' when it succeeds)
sub sql_state
{
	my ($node, $sql) = @_;
	my ($stdout, $stderr);
	$node->psql('postgres', "\\set VERBOSITY sqlstate\n$sql", stdout => \$stdout, stderr => \$stderr);
	return $stderr =~ /ERROR:\s+(\w{5})/ ? $1 : '';
}

# start_split starts a split that pauses before step (a phase, or
# "phase/step"), in a session of its own
sub start_split
{
	my ($step) = @_;
	my $session = $coord->background_psql('postgres', on_error_stop => 0);
	my $offset = -s $coord->logfile;
	$session->query_safe("SET tenant_router.operation_pause_before = '$step'");
	$session->{stdin} .= "$split;\n";
	$session->{run}->pump_nb;
	$coord->wait_for_log(qr/pauses before "\Q$step\E"/, $offset);
	return $session;
}

# rolled_back checks that the topology, the rows and both shards are as
# before the split
sub rolled_back
{
	my ($what) = @_;
	is($coord->safe_psql('postgres',
			"SELECT string_agg(shard_id || ':' || range_start || '..' || range_end || ':' || state, ' ' ORDER BY range_start) FROM tenant_router.shards"),
		'shard1:1..10000:active shard2:10001..20000:active', "$what: the topology is as before");
	is($coord->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id <= 10000'), '2000',
		"$what: every row is read once");
	is($shard1->safe_psql('postgres',
			"SELECT format('%s%s%s', (SELECT count(*) FROM pg_publication), (SELECT count(*) FROM pg_replication_slots), "
			  . "(SELECT count(*) FROM pg_class WHERE relname LIKE 'tenant_router_op%'))"),
		'000', "$what: no publication, slot, marker or fence table on the source");
	is($shard1->safe_psql('postgres',
			"SELECT format('%s%s', (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenant_router_op%'), "
			  . "(SELECT count(*) FROM pg_proc WHERE proname LIKE 'tenant_router_op%'))"),
		'00', "$what: no fence trigger or function on the source");
	is(sql_state($shard1, 'BEGIN; INSERT INTO users (id, tenant_id) VALUES (-1, 7000); UPDATE users SET name = name WHERE tenant_id = 7001; ROLLBACK'),
		'', "$what: the source takes writes of the tenants that were to move");
	is($shard1->safe_psql('postgres',
			"SELECT string_agg(relreplident::text, '' ORDER BY relname) FROM pg_class WHERE relname IN ('users', 'orders')"),
		'dd', "$what: replica identities restored");
	is($shard1->safe_psql('postgres',
			"SELECT string_agg(pg_get_constraintdef(oid), ';' ORDER BY conrelid::regclass::text) FROM pg_constraint WHERE conname = 'tenant_router_range' AND convalidated")
		  . $shard1->safe_psql('postgres', "SELECT count(*) FROM pg_trigger WHERE tgname = 'tenant_router_moved'"),
		$range_check . '0', "$what: the source's range constraint is whole and valid, unguarded");
	my $copied = $shard3->safe_psql('postgres', "SELECT to_regclass('public.orders') IS NOT NULL") eq 't'
	  ? $shard3->safe_psql('postgres', 'SELECT (SELECT count(*) FROM public.users) + (SELECT count(*) FROM public.orders)')
	  : 0;
	is($shard3->safe_psql('postgres',
			"SELECT format('%s%s', (SELECT count(*) FROM pg_subscription), (SELECT count(*) FROM pg_class WHERE relname LIKE 'tenant_router_op%'))")
		  . $copied,
		'000', "$what: no subscription, marker or copied row on the target");
	is($coord->safe_psql('postgres', 'SELECT status FROM tenant_router.operations ORDER BY op_id DESC LIMIT 1'),
		'rolled back', "$what: the operation is recorded as rolled back");
}

# ------------------------------------------------------------ refusals
is(sql_state($coord, "BEGIN; $split; COMMIT"), '25001', 'an online operation cannot run in a transaction block');

my $self_dsn = TenantRouter::Test->dsn($coord);
my ($rc, $out, $err);
$coord->psql('postgres', "SELECT shard_add('self', 50001, 60000, '$self_dsn')", stderr => \$err);
like($err, qr/the DSN of shard "self" reaches the coordinator itself/, 'the coordinator is not its own shard');
$coord->psql('postgres', "SELECT shard_split('shard1', 5000, 'self', '$self_dsn')", stderr => \$err);
like($err, qr/reaches the coordinator itself/, 'nor the target of a split');
# the same database as shard1, by another spelling of its DSN
my $dsn1_again = 'dbname=postgres port=' . $shard1->port . ' host=' . $shard1->host;
$coord->psql('postgres', "SELECT shard_add('dup', 50001, 60000, '$dsn1_again')", stderr => \$err);
like($err, qr/the DSN of shard "dup" reaches the database of shard "shard1"/, 'a second shard in one database is refused');
$coord->psql('postgres', "SELECT shard_split('shard2', 15000, 'dup', '$dsn1_again')", stderr => \$err);
like($err, qr/reaches the database of shard "shard1"/, 'so is a split into it');
# and by Redis event
my $channel = 'db_shard_topology_updates';
TenantRouter::Test->wait_subscribers($redis, $channel, 1);
TenantRouter::Test->redis_cli($redis, 'PUBLISH', $channel,
	qq({"op": "ADD_SHARD", "payload": {"shard_id": "dup", "range_start": 50001, "range_end": 60000, "dsn": "$dsn1_again"}}));
TenantRouter::Test->redis_cli($redis, 'PUBLISH', $channel,
	qq({"op": "ADD_SHARD", "payload": {"shard_id": "self", "range_start": 60001, "range_end": 70000, "dsn": "$self_dsn"}}));
ok($coord->poll_query_until('postgres', "SELECT count(*) = 2 FROM tenant_router.events WHERE status = 'rejected'"),
	'both events are rejected');
like($coord->safe_psql('postgres', "SELECT string_agg(reason, ' | ' ORDER BY id) FROM tenant_router.events WHERE status = 'rejected'"),
	qr/reaches the database of shard "shard1".*reaches the coordinator itself/, 'saying why');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM tenant_router.shards'), '2', 'and the topology is unchanged');

# shard DDL waits at most tenant_router.shard_lock_timeout behind an idle transaction
my $reader = $shard2->background_psql('postgres');
$reader->query_safe('BEGIN; SELECT count(*) FROM users');
my $t0 = time;
is(sql_state($coord, "SET tenant_router.shard_lock_timeout = '500ms'; SELECT shard_update_range('shard2', 10001, 25000)"),
	'55P03', 'a range change behind an idle transaction on the shard fails with 55P03');
ok(time - $t0 < 10, 'after the lock timeout, not forever');
$reader->query_safe('COMMIT');
$reader->quit;
is($coord->safe_psql('postgres', 'SELECT range_end FROM tenant_router.shards WHERE shard_id = $$shard2$$'), '20000',
	'the range is unchanged');

# ------------------------------------------------------------ crash in each phase
# (and between the steps of a phase: the fence made without its triggers,
# the fence without the publication, the switch committed but the source's
# constraint not narrowed yet)
for my $step ('prepare', 'create target tables', 'create target tables/tables', 'publish',
	'publish/fence tables', 'publish/publication', 'subscribe', 'copy', 'catch up', 'switch',
	'switch/narrow', 'flip catalog')
{
	(my $phase = $step) =~ s{/.*}{};
	my $session = start_split($step);
	is($coord->safe_psql('postgres', "SELECT state FROM tenant_router.shards WHERE shard_id = 'shard1'"),
		'splitting', "$phase: shard1 is splitting meanwhile");
	if ($phase eq 'flip catalog')
	{
		# the postmaster itself, then a restart
		my @pids = split /\n/, $coord->safe_psql('postgres', 'SELECT pid FROM pg_stat_activity');
		$coord->kill9;
		for (1 .. 100) { last unless grep { kill 0, $_ } @pids; usleep(100_000); }
		$coord->start;
	}
	else
	{
		# the operation's process: the coordinator restarts after the crash
		my $pid = $coord->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_router operation'");
		kill 9, $pid;
		usleep(500_000);
	}
	$coord->poll_query_until('postgres', 'SELECT true') or die 'the coordinator did not come back';
	$session->{run}->kill_kill;
	is($coord->safe_psql('postgres', "SELECT status || ':' || phase FROM tenant_router.operations ORDER BY op_id DESC LIMIT 1"),
		"running:$phase", "$phase: after the crash the operation is left running");
	is($coord->safe_psql('postgres', 'SELECT tenant_router.operation_recover()'), '1', "$phase: it is recovered");
	rolled_back("crash before $phase");
}

# ------------------------------------------------------------ cancel, busy, progress
{
	my $session = start_split('switch');
	is($coord->safe_psql('postgres', "SELECT rows_copied FROM tenant_router.operations WHERE finished_at IS NULL"),
		$moving, 'the progress view counts the rows copied');
	is(sql_state($coord, $split), '55006', 'a second operation on the busy shard is refused');
	is(sql_state($coord, "SELECT shard_update_range('shard1', 1, 9000)"), '55006', 'and so is a range change');
	my $caller = $coord->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT shard_split%' AND backend_type = 'client backend'");
	$coord->safe_psql('postgres', "SELECT pg_cancel_backend($caller)");
	$session->{stdin} .= "\\echo done\n";
	$session->{run}->pump until $session->{stdout} =~ /done/ || $session->{timeout}->is_expired;
	like($session->{stderr}, qr/canceling statement due to user request/, 'the caller is told it was cancelled');
	$session->quit;
	rolled_back('cancelled before the switch');
	like($coord->safe_psql('postgres', 'SELECT error FROM tenant_router.operations ORDER BY op_id DESC LIMIT 1'),
		qr/canceling statement/, 'the record says why');
}

# ------------------------------------------------------------ the worker recovers by itself
$coord->append_conf('postgresql.conf', 'tenant_router.auto_cleanup = on');
$coord->reload;
{
	my $session = start_split('copy');
	my $pid = $coord->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_router operation'");
	kill 9, $pid;
	usleep(500_000);
	$coord->poll_query_until('postgres', 'SELECT true') or die 'the coordinator did not come back';
	$session->{run}->kill_kill;
	ok($coord->poll_query_until('postgres',
			"SELECT status = 'rolled back' FROM tenant_router.operations ORDER BY op_id DESC LIMIT 1"),
		'the worker rolls back an operation whose process is gone');
	rolled_back('crash recovered by the worker');
}

# ------------------------------------------------------------ the retry works
# past the catalog change, the recovery finishes the clean-up instead
{
	my $session = start_split('clean up');
	my $pid = $coord->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_router operation'");
	kill 9, $pid;
	usleep(500_000);
	$coord->poll_query_until('postgres', 'SELECT true') or die 'the coordinator did not come back';
	$session->{run}->kill_kill;
	# by hand or by the worker, whichever comes first
	$coord->safe_psql('postgres', 'SELECT tenant_router.operation_recover()');
	ok($coord->poll_query_until('postgres', 'SELECT finished_at IS NOT NULL FROM tenant_router.operations ORDER BY op_id DESC LIMIT 1'),
		'clean up: recovered');
	is($coord->safe_psql('postgres',
			"SELECT string_agg(shard_id || ':' || range_start || '..' || range_end || ':' || state, ' ' ORDER BY range_start) FROM tenant_router.shards"),
		'shard1:1..5000:active shard3:5001..10000:active shard2:10001..20000:active', 'clean up: the split is done');
	is($coord->safe_psql('postgres', "SELECT status || ':' || phase FROM tenant_router.operations ORDER BY op_id DESC LIMIT 1"),
		'completed:done', 'clean up: recorded as done');
	is($shard1->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots')
		  . $shard1->safe_psql('postgres', 'SELECT count(*) FROM pg_publication')
		  . $shard3->safe_psql('postgres', 'SELECT count(*) FROM pg_subscription'),
		'000', 'clean up: the slot, the publication and the subscription are gone');
	is($shard1->safe_psql('postgres',
			"SELECT format('%s%s%s', (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenant_router_op%'), "
			  . "(SELECT count(*) FROM pg_proc WHERE proname LIKE 'tenant_router_op%'), "
			  . "(SELECT count(*) FROM pg_class WHERE relname LIKE 'tenant_router_op%'))"),
		'000', 'clean up: the fence is gone');
	is($shard1->safe_psql('postgres',
			"SELECT string_agg(relreplident::text, '' ORDER BY relname) FROM pg_class WHERE relname IN ('users', 'orders')"),
		'dd', 'clean up: replica identities restored');
	# (NOT VALID with its moved rows guarded, or validated once the worker's cleanup deleted them)
	like($shard1->safe_psql('postgres',
			"SELECT string_agg(pg_get_constraintdef(oid), ';' ORDER BY conrelid::regclass::text) FROM pg_constraint WHERE conname = 'tenant_router_range'"),
		qr/^CHECK \(\(\(tenant_id >= 1\) AND \(tenant_id <= 5000\)\)\)( NOT VALID)?;CHECK \(\(\(tenant_id >= 1\) AND \(tenant_id <= 5000\)\)\)( NOT VALID)?$/,
		'clean up: the source owns 1..5000');
	is(sql_state($shard1, 'INSERT INTO users (id, tenant_id) VALUES (-1, 7000)'), '23514',
		'clean up: the source refuses rows of a moved tenant');
	is($coord->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id <= 10000'), '2000',
		'clean up: every row is read once');
	is($shard3->safe_psql('postgres', 'SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM orders)'), $moving,
		'clean up: the new shard has the moved rows');
}
is($coord->safe_psql('postgres', 'SELECT count(DISTINCT op_id) = count(*) AND count(*) = 15 FROM tenant_router.operations'),
	't', 'every attempt had an operation id of its own');

# ------------------------------------------------------------ a target on the source's server
$shard1->safe_psql('postgres', 'CREATE DATABASE tr_same');
my $dsn_same = TenantRouter::Test->dsn($shard1, 'tr_same');
($rc, $out, $err) = $coord->psql('postgres', "SELECT shard_split('shard1', 2500, 'same', '$dsn_same')", timeout => 120);
is($rc, 0, 'a split into another database of the same server does not hang');
is($coord->safe_psql('postgres', 'SELECT shard_for(2500) || shard_for(2501)'), 'shard1same', 'and is done');
is($shard1->safe_psql('tr_same', 'SELECT count(*) FROM users'),
	$coord->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id BETWEEN 2501 AND 5000'),
	'with the moved rows there');

done_testing();
