# Redis down, and back empty.  Three coordinators on one channel: while
# Redis is down, routing goes on from each catalog and a topology change is
# refused with an error saying Redis is unreachable (08006); Redis comes
# back empty (no persistence): the coordinators find no snapshot, one seeds
# Redis with its topology, the two others join its log, and all three keep
# the topology they had and take changes again.  A fourth coordinator,
# declared the only one on its channel (tenant_router.single_coordinator),
# takes a change while Redis is down: it is in force at once and published
# when Redis is back.  (On the old code a change was queued while Redis was
# down, and nothing seeded or joined anything.)
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use TenantRouter::Test;

my $channel = 'db_shard_topology_updates';
my $redis = TenantRouter::Test->start_redis;
my $server = TenantRouter::Test->new_shard('server');
my %dsn;
for my $db (qw(s1 s2 s3 s4 solo1 solo2))
{
	$server->safe_psql('postgres', "CREATE DATABASE $db");
	$dsn{$db} = TenantRouter::Test->dsn($server, $db);
}
my @coords = map {
	my $node = TenantRouter::Test->new_coordinator("coord_$_", redis => $redis,
		conf => ["tenant_router.node_name = '$_'"]);
	$node->safe_psql('postgres', q{
		SET client_min_messages = warning;
		CREATE TABLE users (tenant_id bigint NOT NULL, who text);
		SELECT logical_table_add('users');
	});
	$node;
} qw(a b c);
my ($a, $b, $c) = @coords;
my $solo = TenantRouter::Test->new_coordinator('coord_solo', redis => $redis,
	conf => [ "tenant_router.node_name = 'solo'", "tenant_router.topology_channel = 'solo'",
		'tenant_router.single_coordinator = on' ]);
TenantRouter::Test->wait_subscribers($redis, $channel, 3);
TenantRouter::Test->wait_subscribers($redis, 'solo', 1);

sub topology
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT coalesce(string_agg(shard_id || ':' || range_start || '..' || range_end, ' ' ORDER BY shard_id), '')
		  FROM tenant_router.shard});
}

sub all_agree
{
	my ($want, $what) = @_;
	for my $node (@coords)
	{
		ok($node->poll_query_until('postgres', q{
				SELECT coalesce(string_agg(shard_id || ':' || range_start || '..' || range_end, ' ' ORDER BY shard_id), '')
				  FROM tenant_router.shard}, $want),
			$node->name . ": $what");
	}
}

sub epoch
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT coalesce(epoch, \'\') FROM tenant_router.event_stats');
}

# changes from two coordinators and from a control plane
$a->safe_psql('postgres', "SELECT shard_add('s1', 1, 10000, '$dsn{s1}')");
$b->safe_psql('postgres', "SELECT shard_add('s2', 10001, 20000, '$dsn{s2}')");
TenantRouter::Test->redis_cli($redis, 'PUBLISH', $channel,
	qq({"op": "ADD_SHARD", "payload": {"shard_id": "s3", "range_start": 20001, "range_end": 30000, "dsn": "$dsn{s3}"}}));
my $want = 's1:1..10000 s2:10001..20000 s3:20001..30000';
all_agree($want, 'the three agree before the outage');
my $epoch1 = epoch($a);
isnt($epoch1, '', 'they follow a log');
is(epoch($b) . ' ' . epoch($c), "$epoch1 $epoch1", 'the same log');

#
# Redis down.
#
TenantRouter::Test->stop_redis($redis);
for my $node (@coords)
{
	my $who = $node->name;
	$node->safe_psql('postgres', "INSERT INTO users (tenant_id, who) VALUES (15000, '$who')");
}
is($server->safe_psql('s2', 'SELECT count(*) FROM users WHERE tenant_id = 15000'), '3',
	'with Redis down, every coordinator routes from its catalog');
my ($rc, $out, $err) = $b->psql('postgres', "SELECT shard_add('s4', 30001, 40000, '$dsn{s4}')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:\s+08006: cannot change the topology: Redis at 127\.0\.0\.1:\d+ is unreachable/,
	'a change is refused: Redis is unreachable');
like($err, qr/DETAIL:\s+shard_add\(\) puts its change in the order of topology changes kept on Redis/,
	'the detail says why a change needs Redis');
is(topology($b), $want, 'and nothing changed');

# the coordinator declared the only one on its channel takes a change
$solo->safe_psql('postgres', "SELECT shard_add('solo1', 1, 100, '$dsn{solo1}')");
is($solo->safe_psql('postgres', q{SELECT shard_for(50)}), 'solo1',
	'a coordinator declared the only one takes a change while Redis is down: in force at once');
is($solo->safe_psql('postgres', 'SELECT count(*) FROM tenant_router.outbox'), '1', 'and queues it');

#
# Redis back, empty.
#
my %log_offset = map { $_->name => -s $_->logfile } @coords;
TenantRouter::Test->restart_redis($redis);
my $epoch2;
for my $node (@coords)
{
	ok($node->poll_query_until('postgres',
			"SELECT epoch IS NOT NULL AND epoch <> '$epoch1' FROM tenant_router.event_stats"),
		$node->name . ': joins a new log');
}
$epoch2 = epoch($a);
is(epoch($b) . ' ' . epoch($c), "$epoch2 $epoch2", 'the same new log for the three');
is(TenantRouter::Test->redis_cli($redis, 'HGET', "$channel:snapshot", 'epoch'), $epoch2,
	'whose snapshot is on Redis');
my $logs = join('', map { slurp_file($_->logfile, $log_offset{ $_->name }) } @coords);
my $seeded = () = $logs =~ /Redis had no topology snapshot: seeded it with this coordinator's topology/g;
is($seeded, 1, 'one coordinator seeded the empty Redis');
my $joined = () = $logs =~ /the topology log on Redis is a new one: adopted the topology snapshot/g;
is($joined, 2, 'the two others joined its log');
is(topology($_), $want, $_->name . ': keeps its topology') for @coords;
like(TenantRouter::Test->redis_cli($redis, 'HGET', "$channel:snapshot", 'topology'),
	qr/"shard_id": "s3"/, 'the snapshot holds the topology');

# changes go through again
TenantRouter::Test->wait_subscribers($redis, $channel, 3);
$b->safe_psql('postgres', "SELECT shard_add('s4', 30001, 40000, '$dsn{s4}')");
$c->safe_psql('postgres', "SELECT shard_update_range('s3', 20001, 29000)");
all_agree('s1:1..10000 s2:10001..20000 s3:20001..29000 s4:30001..40000',
	'changes made after the restart reach every coordinator');

# the coordinator declared the only one published what it queued
ok($solo->poll_query_until('postgres', 'SELECT count(*) = 0 FROM tenant_router.outbox'),
	'the only coordinator publishes its queued change once Redis is back');
like(TenantRouter::Test->redis_cli($redis, 'XRANGE', 'solo:log', '-', '+'), qr/"shard_id": "solo1".*\nkind\noutbox\n/s,
	'it is in its channel\'s log');
$solo->safe_psql('postgres', "SELECT shard_add('solo2', 101, 200, '$dsn{solo2}')");
is($solo->safe_psql('postgres', q{SELECT shard_for(50) || ' ' || shard_for(150)}), 'solo1 solo2',
	'and keeps taking changes');

done_testing();
