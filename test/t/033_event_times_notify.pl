# What the topology worker tells: the real time of each event (when the
# worker read it, and the created_at/updated_at of the shards it changes),
# NOTIFY tenant_router_topology with the change as JSON after every change
# commits (by SQL or by event; never for one rolled back), and the
# SHARD_*_COMPLETED notifications of DESIGN.md recorded and ignored.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use TenantRouter::Test;

my $channel = 'db_shard_topology_updates';
my $redis = TenantRouter::Test->start_redis;
my $shard = TenantRouter::Test->new_shard('shard1');
my $dsn = TenantRouter::Test->dsn($shard);
my $node = TenantRouter::Test->new_coordinator('coord', redis => $redis);
TenantRouter::Test->wait_subscribers($redis, $channel, 1);

sub publish
{
	my ($json) = @_;
	TenantRouter::Test->redis_cli($redis, 'PUBLISH', $channel, $json);
}

sub wait_for
{
	my ($query, $what) = @_;
	ok($node->poll_query_until('postgres', $query), $what);
}

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN tenant_router_topology');

#
# Times: each event carries the time the worker read it, and a shard it adds
# or changes the time of that change -- not the time the worker started.
#
sub clock
{
	return $node->safe_psql('postgres', 'SELECT clock_timestamp()');
}
sleep 2;
my $t_add = clock();
publish(qq({"op": "ADD_SHARD", "payload": {"shard_id": "t1", "range_start": 1, "range_end": 100, "dsn": "$dsn"}}));
wait_for(q{SELECT count(*) = 1 FROM tenant_router.shard WHERE shard_id = 't1'}, 'ADD_SHARD t1 applied');
sleep 2;
my $t_update = clock();
publish(q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "t1", "range_start": 1, "range_end": 200}}));
wait_for(q{SELECT count(*) = 1 FROM tenant_router.shard WHERE shard_id = 't1' AND range_end = 200},
	'UPDATE_SHARD_RANGE t1 applied');

# within: "x BETWEEN the time it was published AND 10 s later"
sub within
{
	my ($x, $t) = @_;
	return "$x BETWEEN '$t'::timestamptz AND '$t'::timestamptz + interval '10 s'";
}
my $add = q{(SELECT received_at FROM tenant_router.events WHERE op = 'ADD_SHARD' AND shard_id = 't1')};
my $update = q{(SELECT received_at FROM tenant_router.events WHERE op = 'UPDATE_SHARD_RANGE' AND shard_id = 't1')};
is($node->safe_psql('postgres', 'SELECT ' . within($add, $t_add)), 't',
	'received_at is when the event came, not when the worker started');
is($node->safe_psql('postgres', 'SELECT ' . within($update, $t_update) . " AND $update - $add > interval '1.5 s'"), 't',
	'two events two seconds apart are two seconds apart in the log');
is($node->safe_psql('postgres', "SELECT last_event_at = $update FROM tenant_router.event_stats"), 't',
	'event_stats.last_event_at is the last one\'s');
is($node->safe_psql('postgres', 'SELECT ' . within('created_at', $t_add) . ' AND ' . within('updated_at', $t_update)
		. q{ FROM tenant_router.shards WHERE shard_id = 't1'}), 't',
	'the shard\'s created_at and updated_at are the times of the events that made them');

#
# NOTIFY tenant_router_topology: after each change commits, on the
# coordinator that applies it, by SQL or by event; nothing for a change
# refused; never the DSN.
#
# a database of its own: two shards in one database are refused
$shard->safe_psql('postgres', 'CREATE DATABASE n1');
my $dsn_n1 = TenantRouter::Test->dsn($shard, 'n1');
$node->safe_psql('postgres', qq{SELECT shard_add('n1', 400001, 400100, 'password=s3cret $dsn_n1')});
# refused: with Redis, a change can only fail before it is in force
my ($rc, $stdout, $stderr) = $node->psql('postgres', q{SELECT shard_update_range('n1', 400999, 400001)});
like($stderr, qr/range_start 400999 is greater than range_end 400001/, 'a refused change');
$node->safe_psql('postgres', q{SELECT shard_update_range('n1', 400001, 400150)});
publish(q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "n1", "range_start": 400001, "range_end": 400200}}));
publish(q({"op": "REMOVE_SHARD", "payload": {"shard_id": "n1"}}));
wait_for(q{SELECT count(*) = 0 FROM tenant_router.shard WHERE shard_id = 'n1'}, 'the events were applied');
my $out = $listener->query_safe('SELECT 1');
my @notes;
while ($out =~ /Asynchronous notification "tenant_router_topology" with payload "(.*)" received from server process with PID (\d+)\./g)
{
	push @notes, { %{ decode_json($1) }, pid => $2 };
}
my @n1 = grep { $_->{payload}{shard_id} eq 'n1' } @notes;
is(join(' ', map { $_->{op} . ':' . $_->{payload}{range_end} } @n1),
	'ADD_SHARD:400100 UPDATE_SHARD_RANGE:400150 UPDATE_SHARD_RANGE:400200 REMOVE_SHARD:400200',
	'one notification per committed change, in order, none for the refused one');
my $worker = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_router topology worker'});
is(join(' ', map { $_->{pid} == $worker ? 'event' : 'sql' } @n1), 'sql sql event event',
	'sent by the session that made the SQL change, and by the worker for the events');
is($n1[2]{previous}{range_end}, 400150, 'an update says the range before');
is($n1[2]{payload}{range_start}, 400001, 'and the range after');
ok(!exists $n1[0]{payload}{dsn}, 'no DSN in a notification');
unlike($out, qr/s3cret/, 'nor its password');
ok($n1[3]{version} > $n1[2]{version} && $n1[2]{version} > $n1[1]{version},
	'each carries the topology version, rising');
my @t1 = grep { $_->{payload}{shard_id} eq 't1' } @notes;
is(join(' ', map { $_->{op} } @t1), 'ADD_SHARD UPDATE_SHARD_RANGE', 'the earlier events notified too');

#
# SHARD_SPLIT_COMPLETED, SHARD_MOVE_COMPLETED, SHARD_MERGE_COMPLETED (seed
# 001's notification, DESIGN.md section 2): recorded, ignored, never
# rejected, whatever their payload holds.
#
my $before = $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM tenant_router.event_log');
my $catalog = $node->safe_psql('postgres', 'SELECT string_agg(shard_id || range_start || range_end, \',\') FROM tenant_router.shard');
publish(q({"op": "SHARD_SPLIT_COMPLETED", "payload": {"shard_id": "t1", "split_at": 50, "new_shard_id": "t2", "range_start": 51, "range_end": 200}}));
publish(q({"op": "SHARD_MOVE_COMPLETED", "payload": {"shard_id": "t1", "new_dsn": "host=elsewhere password=s3cret"}}));
publish(q({"op": "SHARD_MERGE_COMPLETED", "payload": {"shard_id": "t1", "into_shard_id": "t0"}}));
publish(q({"op": "SHARD_SPLIT_COMPLETED", "payload": "done"}));
wait_for("SELECT count(*) = 4 FROM tenant_router.event_log WHERE id > $before", 'the four notifications were received');
is($node->safe_psql('postgres', qq{
		SELECT string_agg(op || ':' || status || ':' || reason, ' ' ORDER BY id)
		  FROM tenant_router.events WHERE id > $before}),
	'SHARD_SPLIT_COMPLETED:ignored:notification SHARD_MOVE_COMPLETED:ignored:notification '
	  . 'SHARD_MERGE_COMPLETED:ignored:notification SHARD_SPLIT_COMPLETED:ignored:notification',
	'each recorded as ignored, reason "notification"');
is($node->safe_psql('postgres', "SELECT count(*) FROM tenant_router.events WHERE id > $before AND event LIKE '%s3cret%'"),
	'0', 'a DSN in one is masked');
is($node->safe_psql('postgres', 'SELECT string_agg(shard_id || range_start || range_end, \',\') FROM tenant_router.shard'),
	$catalog, 'the catalog is unchanged');
is($node->safe_psql('postgres', 'SELECT rejected FROM tenant_router.event_stats'), '0', 'nothing was rejected');

$listener->quit;
done_testing();
