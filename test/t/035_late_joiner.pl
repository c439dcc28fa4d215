# A control plane that only PUBLISHes (seed 000's publisher): every event,
# received by each of the coordinators, takes its place in the order once;
# a coordinator started afterwards starts from the snapshot next to the log
# and reaches the same topology, rows and later changes included (on the
# old code it never learned the shards, refused a later change of one as
# "does not exist" and counted fewer rows); and a coordinator stopped while
# the log moved on far enough to be trimmed past its position adopts the
# snapshot when it comes back.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use TenantRouter::Test;

my $channel = 'db_shard_topology_updates';
my $stream = "$channel:log";
my $redis = TenantRouter::Test->start_redis;
my $server = TenantRouter::Test->new_shard('server');
my %dsn;
for my $db (qw(s1 s2 s3 sx))
{
	$server->safe_psql('postgres', "CREATE DATABASE $db");
	$dsn{$db} = TenantRouter::Test->dsn($server, $db);
}

sub coordinator
{
	my ($name) = @_;
	# the log keeps nothing a snapshot holds: a coordinator stopped for a
	# few seconds finds its position trimmed away
	my $node = TenantRouter::Test->new_coordinator("coord_$name", redis => $redis,
		conf => [ "tenant_router.node_name = '$name'", 'tenant_router.log_retention = 0' ]);
	$node->safe_psql('postgres', q{
		SET client_min_messages = warning;
		CREATE TABLE users (tenant_id bigint NOT NULL, who text);
		SELECT logical_table_add('users');
	});
	return $node;
}

sub publish
{
	TenantRouter::Test->redis_cli($redis, 'PUBLISH', $channel, $_[0]);
}

sub topology
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT coalesce(string_agg(shard_id || ':' || range_start || '..' || range_end, ' ' ORDER BY shard_id), '')
		  FROM tenant_router.shard});
}

# entries_added: how many entries the stream ever got
sub entries_added
{
	my ($info) = TenantRouter::Test->redis_cli($redis, 'XINFO', 'STREAM', $stream) =~ /entries-added\n(\d+)/;
	return $info // 0;
}

my $a = coordinator('a');
my $b = coordinator('b');
TenantRouter::Test->wait_subscribers($redis, $channel, 2);

my $before = entries_added();
my @events = (
	qq({"op": "ADD_SHARD", "payload": {"shard_id": "s1", "range_start": 1, "range_end": 10000, "dsn": "$dsn{s1}"}}),
	qq({"op": "ADD_SHARD", "payload": {"shard_id": "s2", "range_start": 10001, "range_end": 20000, "dsn": "$dsn{s2}"}}),
	qq({"op": "ADD_SHARD", "payload": {"shard_id": "s3", "range_start": 20001, "range_end": 30000, "dsn": "$dsn{s3}"}}),
	q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "s3", "range_start": 20001, "range_end": 40000}}),
	qq({"op": "ADD_SHARD", "payload": {"shard_id": "sx", "range_start": 90001, "range_end": 91000, "dsn": "$dsn{sx}"}}),
	q({"op": "REMOVE_SHARD", "payload": {"shard_id": "sx"}}),
);
publish($_) for @events;
my $want = 's1:1..10000 s2:10001..20000 s3:20001..40000';
for my $node ($a, $b)
{
	ok($node->poll_query_until('postgres', "SELECT count(*) = 6 FROM tenant_router.events"),
		$node->name . ': the six events published were applied');
	is(topology($node), $want, $node->name . ': the topology they make');
	is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT event) FROM tenant_router.events WHERE status = 'applied'}),
		'6 6', $node->name . ': each once');
}
is(entries_added() - $before, 6, 'each event, received by two coordinators, took one place in the order');

$a->safe_psql('postgres', q{INSERT INTO users (tenant_id, who) VALUES (5, 'a'), (15000, 'a'), (35000, 'a')});

#
# A coordinator started now: the log's snapshot gives it the topology.
#
my $c = coordinator('c');
ok($c->poll_query_until('postgres', "SELECT count(*) = 3 FROM tenant_router.shard"),
	'a coordinator started after the PUBLISH-only changes learns the shards');
is(topology($c), $want, 'and has the same topology');
is($c->safe_psql('postgres', 'SELECT count(*) FROM users'), '3', 'it reads every row the others wrote');
like(slurp_file($c->logfile), qr/joining the topology log: adopted the topology snapshot of "[ab]"/,
	'it says it adopted the snapshot');
TenantRouter::Test->wait_subscribers($redis, $channel, 3);

# a later change of a shard it only knows from the snapshot
publish(q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "s3", "range_start": 20001, "range_end": 45000}}));
for my $node ($a, $b, $c)
{
	ok($node->poll_query_until('postgres', q{SELECT shard_for(44000) = 's3'}),
		$node->name . ': applies a later change of shard s3');
}
is($c->safe_psql('postgres', q{SELECT count(*) FROM tenant_router.events WHERE status = 'rejected'}), '0',
	'the late coordinator rejected nothing');
$c->safe_psql('postgres', q{INSERT INTO users (tenant_id, who) VALUES (44000, 'c')});
is($a->safe_psql('postgres', 'SELECT count(*) FROM users'), '4', 'a row it routes is where the others read it');

#
# A coordinator stopped while the log moved on: the snapshot is written as
# the others apply events, and each write trims the entries older than the
# snapshot before it.  Coming back, it finds its position trimmed away.
#
my $c_position = $c->safe_psql('postgres', 'SELECT stream_id FROM tenant_router.event_stats');
$c->stop;
for my $i (1 .. 8)
{
	publish(qq({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "s3", "range_start": 20001, "range_end": ) . (45000 + $i) . q(}}));
	usleep(600_000);
}
ok($a->poll_query_until('postgres', q{SELECT shard_for(45008) = 's3'}), 'the others applied the changes');
my ($first) = TenantRouter::Test->redis_cli($redis, 'XINFO', 'STREAM', $stream) =~ /first-entry\n(\S+)/;
my ($fms, $fseq) = split /-/, $first;
my ($cms, $cseq) = split /-/, $c_position;
ok($fms > $cms || ($fms == $cms && $fseq > $cseq),
	"the stream was trimmed past the stopped coordinator's position ($first > $c_position)");
$c->start;
ok($c->poll_query_until('postgres', q{SELECT shard_for(45008) = 's3'}),
	'back, the coordinator reaches the current topology');
is(topology($c), topology($a), 'the same as the others');
like(slurp_file($c->logfile), qr/entries after this coordinator's position were trimmed: adopted the topology snapshot/,
	'by adopting the snapshot, as it says');
my $a_at = $a->safe_psql('postgres', 'SELECT epoch || \' \' || stream_id FROM tenant_router.event_stats');
ok($c->poll_query_until('postgres', "SELECT epoch || ' ' || stream_id = '$a_at' FROM tenant_router.event_stats"),
	'and stands where the others stand in the order');

done_testing();
