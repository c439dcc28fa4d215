# Topology from Redis: the worker applies a control plane's events live,
# rejects bad ones without changing anything, recovers what it missed while
# Redis or the worker was away (or the publisher was: an entry appended to
# the stream and never published), rejects an event whose commit fails and
# goes on, applies each event of a burst once, publishes this coordinator's
# own changes (never a rolled-back one), and two coordinators converge.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use TenantRouter::Test;

my $channel = 'db_shard_topology_updates';
my $stream = "$channel:log";
my $redis = TenantRouter::Test->start_redis;
my @shards = map { TenantRouter::Test->new_shard("shard$_") } (1 .. 4);
my @dsn = map { TenantRouter::Test->dsn($_) } @shards;
my $a = TenantRouter::Test->new_coordinator('coord_a', redis => $redis);
my $b = TenantRouter::Test->new_coordinator('coord_b', redis => $redis);

# a URI DSN with a password, as in seed 000 (trust authentication ignores it)
sub uri
{
	my ($node) = @_;
	return 'postgres://postgres:s3cret@' . ($node->host =~ s{/}{%2F}gr) . ':' . $node->port . '/postgres';
}

sub publish		# as a plain seed-000 publisher: the channel only
{
	my ($json) = @_;
	TenantRouter::Test->redis_cli($redis, 'PUBLISH', $channel, $json);
}

sub publish_logged	# as a control plane that keeps the stream too
{
	my ($json) = @_;
	TenantRouter::Test->redis_cli($redis, 'EVAL',
		"redis.call('XADD', KEYS[1], '*', 'event', ARGV[1]) return redis.call('PUBLISH', KEYS[2], ARGV[1])",
		'2', $stream, $channel, $json);
}

sub topology
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(shard_id || ':' || range_start || '..' || range_end, ' ' ORDER BY range_start) FROM tenant_router.shards");
}

sub wait_for
{
	my ($node, $query, $what) = @_;
	ok($node->poll_query_until('postgres', $query), $what);
}

# poll_until: true once query returns true, false after $secs seconds
sub poll_until
{
	my ($node, $query, $secs) = @_;
	my $deadline = time + $secs;
	while (time < $deadline)
	{
		return 1 if $node->safe_psql('postgres', $query) eq 't';
		usleep(100_000);
	}
	return 0;
}

sub worker_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_router topology worker'});
}

for my $node ($a, $b)
{
	wait_for($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'tenant_router topology worker'},
		$node->name . ': the worker runs and shows in pg_stat_activity');
	$node->safe_psql('postgres', q{
		CREATE TABLE users (id serial PRIMARY KEY, tenant_id bigint NOT NULL, username text);
	});
}
ok($a->poll_query_until('postgres', "SELECT true", 't'), 'coordinators up');
TenantRouter::Test->wait_subscribers($redis, $channel, 2);

# shard1 and shard2 added on A reach B through Redis
$a->safe_psql('postgres', qq{
	SELECT shard_add('shard1', 1, 10000, '$dsn[0]');
	SELECT shard_add('shard2', 10001, 20000, '$dsn[1]');
	SELECT logical_table_add('users');
});
wait_for($b, q{SELECT count(*) = 2 FROM tenant_router.shards}, 'B applies the shards A added');
is(topology($b), topology($a), 'A and B agree');
$b->safe_psql('postgres', q{SELECT logical_table_add('users')});
is($a->safe_psql('postgres', "SELECT count(*) FROM tenant_router.events WHERE op = 'ADD_SHARD'"),
	'0', 'A does not apply its own changes again: they were in force here once in the order');
like(TenantRouter::Test->redis_cli($redis, 'XRANGE', $stream, '-', '+'), qr/\nkind\nchange\n/,
	'they are in the log as ordered changes');

#
# Seed 000's exact message, from a plain publisher, creates shard3: the next
# INSERT for tenant 25000 lands on it, without restart.
#
my $uri3 = uri($shards[2]);
publish(qq({"op": "ADD_SHARD", "payload": {"shard_id": "shard3", "range_start": 20001, "range_end": 30000, "dsn": "$uri3"}}));
wait_for($a, q{SELECT shard_for(25000) = 'shard3'}, 'ADD_SHARD: shard3 owns tenant 25000');
$a->safe_psql('postgres', q{INSERT INTO users (tenant_id, username) VALUES (25000, 'carol')});
is($shards[2]->safe_psql('postgres', 'SELECT username FROM users WHERE tenant_id = 25000'), 'carol',
	'the next insert for tenant 25000 lands on shard3');
is($a->safe_psql('postgres', "SELECT event FROM tenant_router.events WHERE shard_id = 'shard3'") =~ /s3cret/ ? 1 : 0,
	0, 'the logged event does not show the password');
unlike(slurp_file($a->logfile), qr/s3cret/, 'nor does the server log');

# UPDATE_SHARD_RANGE and REMOVE_SHARD
publish(q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "shard3", "range_start": 20001, "range_end": 40000}}));
wait_for($a, q{SELECT shard_for(35000) = 'shard3'}, 'UPDATE_SHARD_RANGE: shard3 owns tenant 35000');
$a->safe_psql('postgres', q{INSERT INTO users (tenant_id, username) VALUES (35000, 'dave')});
is($shards[2]->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id = 35000'), '1',
	'and tenant 35000 lands there');
like($shards[2]->safe_psql('postgres',
		"SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range'"),
	qr/40000/, 'shard3 range constraint follows');
publish(q({"op": "REMOVE_SHARD", "payload": {"shard_id": "shard3"}}));
wait_for($a, q{SELECT shard_for(25000) IS NULL}, 'REMOVE_SHARD: nobody owns tenant 25000');
my ($rc, $out, $err) = $a->psql('postgres', q{INSERT INTO users (tenant_id, username) VALUES (25000, 'eve')});
like($err, qr/no shard owns tenant 25000/, 'an insert for it is refused');
is($shards[2]->safe_psql('postgres', 'SELECT count(*) FROM users'), '2', 'and its data stays on shard3');
$shards[2]->safe_psql('postgres', 'DELETE FROM users');	# reused below
wait_for($b, q{SELECT count(*) = 2 FROM tenant_router.shards}, 'B saw the same changes');

#
# Bad events: each rejected with its reason, nothing changed.
#
my $before_a = topology($a);
my $base = $a->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM tenant_router.event_log');
my $dsn4 = $dsn[3];
my @bad = (
	[ 'not JSON at all', 'hello', qr/invalid input syntax for type json/ ],
	[ 'truncated JSON', '{"op": "ADD_SHARD", "payload": {', qr/invalid input syntax for type json/ ],
	[ 'JSON array', '[1, 2, 3]', qr/not a JSON object/ ],
	[ 'JSON string', '"ADD_SHARD"', qr/not a JSON object/ ],
	[ 'unknown op', '{"op": "DROP_ALL", "payload": {"shard_id": "x"}}', qr/unknown op "DROP_ALL"/ ],
	[ 'missing op', '{"payload": {"shard_id": "x"}}', qr/field "op" is missing or null/ ],
	[ 'null op', '{"op": null, "payload": {"shard_id": "x"}}', qr/field "op" is missing or null/ ],
	[ 'op not a string', '{"op": 7, "payload": {"shard_id": "x"}}', qr/field "op" must be a string/ ],
	[ 'missing payload', '{"op": "REMOVE_SHARD"}', qr/"payload" must be a JSON object/ ],
	[ 'payload not an object', '{"op": "REMOVE_SHARD", "payload": "shard1"}', qr/"payload" must be a JSON object/ ],
	[ 'missing shard_id', '{"op": "REMOVE_SHARD", "payload": {}}', qr/field "shard_id" is missing or null/ ],
	[ 'shard_id not a string', '{"op": "REMOVE_SHARD", "payload": {"shard_id": 3}}', qr/field "shard_id" must be a string/ ],
	[ 'missing range_end', qq({"op": "ADD_SHARD", "payload": {"shard_id": "s9", "range_start": 50001, "dsn": "$dsn4"}}), qr/field "range_end" is missing or null/ ],
	[ 'range as a string', qq({"op": "ADD_SHARD", "payload": {"shard_id": "s9", "range_start": "50001", "range_end": 60000, "dsn": "$dsn4"}}), qr/field "range_start" must be an integer/ ],
	[ 'range as a fraction', qq({"op": "ADD_SHARD", "payload": {"shard_id": "s9", "range_start": 50001.5, "range_end": 60000, "dsn": "$dsn4"}}), qr/field "range_start" must be an integer/ ],
	[ 'range beyond bigint', qq({"op": "ADD_SHARD", "payload": {"shard_id": "s9", "range_start": 50001, "range_end": 99999999999999999999, "dsn": "$dsn4"}}), qr/out of range for bigint/ ],
	[ 'start after end', qq({"op": "ADD_SHARD", "payload": {"shard_id": "s9", "range_start": 60000, "range_end": 50001, "dsn": "$dsn4"}}), qr/range_start 60000 is greater than range_end 50001/ ],
	[ 'overlap', qq({"op": "ADD_SHARD", "payload": {"shard_id": "s9", "range_start": 9000, "range_end": 12000, "dsn": "$dsn4"}}), qr/overlaps shard "shard1"/ ],
	[ 'duplicate shard', qq({"op": "ADD_SHARD", "payload": {"shard_id": "shard2", "range_start": 50001, "range_end": 60000, "dsn": "$dsn4"}}), qr/shard "shard2" already exists/ ],
	[ 'unknown shard', '{"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "nosuch", "range_start": 1, "range_end": 2}}', qr/shard "nosuch" does not exist/ ],
	[ 'remove unknown shard', '{"op": "REMOVE_SHARD", "payload": {"shard_id": "nosuch"}}', qr/shard "nosuch" does not exist/ ],
	[ 'malformed DSN', '{"op": "ADD_SHARD", "payload": {"shard_id": "s9", "range_start": 50001, "range_end": 60000, "dsn": "host=x port"}}', qr/invalid shard DSN/ ],
	[ 'unreachable shard', '{"op": "ADD_SHARD", "payload": {"shard_id": "s9", "range_start": 50001, "range_end": 60000, "dsn": "host=127.0.0.1 port=1 password=hunter2"}}', qr/could not connect to shard "s9"/ ],
	[ 'bad shard id', qq({"op": "ADD_SHARD", "payload": {"shard_id": "", "range_start": 50001, "range_end": 60000, "dsn": "$dsn4"}}), qr/invalid shard_id/ ],
	[ 'huge payload', '{"op": "REMOVE_SHARD", "payload": {"shard_id": "' . ('x' x 70000) . '"}}', qr/exceeds the limit/ ],
);
publish($_->[1]) for @bad;
my $n = scalar @bad;
wait_for($a, "SELECT count(*) = $n FROM tenant_router.event_log WHERE id > $base",
	"all $n bad events were received");
my @rows = split /\n/, $a->safe_psql('postgres',
	"SELECT status || '|' || coalesce(reason, '') FROM tenant_router.event_log WHERE id > $base ORDER BY id");
for my $i (0 .. $#bad)
{
	my ($status, $reason) = split /\|/, $rows[$i], 2;
	is($status, 'rejected', "$bad[$i][0]: rejected");
	like($reason, $bad[$i][2], "$bad[$i][0]: with its reason");
}
is(topology($a), $before_a, 'the catalog is unchanged after the bad events');
is($a->safe_psql('postgres', 'SELECT rejected >= ' . scalar(@bad) . ' FROM tenant_router.event_stats'), 't',
	'event_stats counts the rejections');
unlike(slurp_file($a->logfile), qr/hunter2/, 'no rejected DSN password in the server log');
is($a->safe_psql('postgres', q{SELECT count(*) FROM tenant_router.events WHERE event LIKE '%hunter2%'}), '0',
	'nor in the event log');
wait_for($a, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'tenant_router topology worker'},
	'the worker is still running');

#
# A shard_add inside a transaction block is refused: once in the order it
# would be in force, whatever the block did afterwards.  It is never
# published.
#
my ($rc_block, $out_block, $err_block) =
  $a->psql('postgres', qq{BEGIN; SELECT shard_add('ghost', 70001, 80000, '$dsn4'); ROLLBACK;});
like($err_block, qr/shard_add\(\) cannot run inside a transaction block/, 'a change inside BEGIN is refused');
$a->safe_psql('postgres', qq{SELECT shard_add('shard4', 80001, 90000, '$dsn4')});
wait_for($b, q{SELECT shard_for(85000) = 'shard4'}, 'B applies the committed shard_add');
is($b->safe_psql('postgres', q{SELECT count(*) FROM tenant_router.event_log WHERE shard_id = 'ghost'}), '0',
	'the rolled-back one never reached B');
unlike(TenantRouter::Test->redis_cli($redis, 'XRANGE', $stream, '-', '+'), qr/ghost/,
	'and never reached Redis');

#
# Redis down: routing goes on from each catalog, but a change cannot take
# its place in the order, so it is refused, saying why.  Redis comes back
# empty (no persistence): the coordinators find no snapshot, one seeds it
# with its topology, the other joins it, and changes go through again.
#
TenantRouter::Test->stop_redis($redis);
my ($rc_down, $out_down, $err_down) = $a->psql('postgres',
	"SELECT shard_update_range('shard4', 80001, 95000)",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err_down, qr/ERROR:\s+08006: cannot change the topology: Redis at 127\.0\.0\.1:\d+ is unreachable/,
	'with Redis down, a change is refused: Redis is unreachable');
like($err_down, qr/HINT:.*tenant_router\.single_coordinator = on/, 'the hint names tenant_router.single_coordinator');
is($a->safe_psql('postgres', q{SELECT shard_for(94000) IS NULL}), 't', 'and nothing changed');
is($a->safe_psql('postgres', 'SELECT count(*) FROM tenant_router.outbox'), '0', 'nothing waits to be published');
$a->safe_psql('postgres', q{INSERT INTO users (tenant_id, username) VALUES (5, 'routing goes on')});
is($shards[0]->safe_psql('postgres', q{SELECT count(*) FROM users WHERE tenant_id = 5}), '1',
	'routing goes on without Redis');
TenantRouter::Test->restart_redis($redis);
$a->safe_psql('postgres', qq{
	SELECT shard_update_range('shard4', 80001, 95000);
	SELECT shard_add('shard3', 20001, 30000, '$dsn[2]');
});
wait_for($b, q{SELECT shard_for(25000) = 'shard3' AND shard_for(94000) = 'shard4'},
	'after Redis is back, the changes go through and B applies both');
is(topology($b), topology($a), 'A and B agree again');
is($a->safe_psql('postgres', 'SELECT epoch FROM tenant_router.event_stats'),
	$b->safe_psql('postgres', 'SELECT epoch FROM tenant_router.event_stats'),
	'they follow the same log, seeded anew');
like(slurp_file($a->logfile) . slurp_file($b->logfile), qr/Redis had no topology snapshot: seeded it/,
	'one of them seeded the empty Redis');
like(slurp_file($a->logfile), qr/Redis at 127\.0\.0\.1:\d+ is unreachable|lost Redis/, 'the outage was logged');
like(slurp_file($a->logfile), qr/connected to Redis at .* again after/, 'and so was the recovery');
TenantRouter::Test->wait_subscribers($redis, $channel, 2);

#
# The worker killed: the postmaster restarts it, and it catches up with what
# was published (stream protocol) while it was dead.
#
my $pid = $b->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_router topology worker'});
$b->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
wait_for($b, qq{SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid}, 'B worker killed');
publish_logged(q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "shard3", "range_start": 20001, "range_end": 31000}}));
publish_logged(q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "shard4", "range_start": 80001, "range_end": 96000}}));
wait_for($b, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'tenant_router topology worker'},
	'the postmaster restarted it');
wait_for($b, q{SELECT shard_for(30500) = 'shard3' AND shard_for(95500) = 'shard4'},
	'it caught up with both events published while it was dead');
wait_for($a, q{SELECT shard_for(30500) = 'shard3' AND shard_for(95500) = 'shard4'},
	'A (alive) applied them live');
is($a->safe_psql('postgres',
		q{SELECT count(*) FROM tenant_router.event_log WHERE op = 'UPDATE_SHARD_RANGE' AND shard_id = 'shard3' AND status = 'applied'}),
	$a->safe_psql('postgres',
		q{SELECT count(DISTINCT coalesce(version::text, event)) FROM tenant_router.event_log WHERE op = 'UPDATE_SHARD_RANGE' AND shard_id = 'shard3' AND status = 'applied'}),
	'an event both in the stream and on the channel is applied once');

#
# A control plane that crashed between XADD and PUBLISH: the entry is only
# in the stream.  With no channel message to prompt it, the worker's
# periodic read of the stream (every 5 s) applies it.
#
TenantRouter::Test->redis_cli($redis, 'XADD', $stream, '*', 'event',
	q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "shard4", "range_start": 80001, "range_end": 97000}}));
for my $node ($a, $b)
{
	ok(poll_until($node, q{SELECT shard_for(96500) = 'shard4'}, 15),
		$node->name . ': an event appended to the stream but never published is applied within seconds');
}

#
# An event whose commit fails (here the shard's COMMIT: a deferred foreign
# key, violated by an event trigger on the shard's DDL) is rejected with the
# reason, the stream position moves past it, and the worker goes on; it is
# not replayed forever.  It comes right after a REMOVE_SHARD that the worker
# applies in the same transaction (several events share one): that one is
# applied again on its own, once.
#
$shards[3]->safe_psql('postgres', q{
	CREATE TABLE refuse_parent (id int PRIMARY KEY);
	CREATE TABLE refuse_child (id int REFERENCES refuse_parent DEFERRABLE INITIALLY DEFERRED);
	CREATE FUNCTION refuse_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.refuse_child VALUES (1);	-- the remote session's search_path is pg_catalog
	END $$;
	CREATE EVENT TRIGGER refuse_ddl ON ddl_command_end EXECUTE FUNCTION refuse_ddl();
});
my %pid = map { $_->name => worker_pid($_) } ($a, $b);
# a database of its own: two shards in one database are refused
$shards[1]->safe_psql('postgres', 'CREATE DATABASE tmp9');
my $dsn_tmp9 = TenantRouter::Test->dsn($shards[1], 'tmp9');
publish_logged(qq({"op": "ADD_SHARD", "payload": {"shard_id": "tmp9", "range_start": 60001, "range_end": 61000, "dsn": "$dsn_tmp9"}}));
for my $node ($a, $b)
{
	wait_for($node, q{SELECT shard_for(60500) = 'tmp9'}, $node->name . ': shard tmp9 added, to be removed below');
}
my $refused = q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "shard4", "range_start": 80001, "range_end": 98000}});
TenantRouter::Test->redis_cli($redis, 'EVAL',
	"for i = 1, 2 do redis.call('XADD', KEYS[1], '*', 'event', ARGV[i]) redis.call('PUBLISH', KEYS[2], ARGV[i]) end return 2",
	'2', $stream, $channel, '{"op": "REMOVE_SHARD", "payload": {"shard_id": "tmp9"}}', $refused);
my $entry = (split /\n/, TenantRouter::Test->redis_cli($redis, 'XREVRANGE', $stream, '+', '-', 'COUNT', '1'))[0];
for my $node ($a, $b)
{
	my $who = $node->name;
	ok(poll_until($node, q{SELECT count(*) = 1 FROM tenant_router.events WHERE status = 'rejected' AND event LIKE '%98000%'}, 15),
		"$who: an event whose commit failed is recorded as rejected");
	like($node->safe_psql('postgres', q{SELECT reason FROM tenant_router.events WHERE event LIKE '%98000%'}),
		qr/foreign key constraint/, "$who: with the shard's reason");
	is($node->safe_psql('postgres', 'SELECT stream_id FROM tenant_router.event_stats'), $entry,
		"$who: the stream position moved past it");
	is($node->safe_psql('postgres', q{SELECT shard_for(97500) IS NULL}), 't', "$who: the catalog did not change");
	is($node->safe_psql('postgres', q{SELECT shard_for(60500) IS NULL}), 't',
		"$who: the REMOVE_SHARD published with it, in the same batch, was applied");
	is($node->safe_psql('postgres',
			q{SELECT string_agg(status, ' ') FROM tenant_router.events WHERE op = 'REMOVE_SHARD' AND shard_id = 'tmp9'}),
		'applied', "$who: and recorded once");
	like(slurp_file($node->logfile), qr/a transaction of 2 topology events failed to commit: .*; applying them one by one/,
		"$who: after the transaction of both failed");
}
$shards[3]->safe_psql('postgres', q{
	DROP EVENT TRIGGER refuse_ddl;
	DROP TABLE refuse_child, refuse_parent;
	DROP FUNCTION refuse_ddl();
});
publish_logged($refused);
for my $node ($a, $b)
{
	wait_for($node, q{SELECT shard_for(97500) = 'shard4'}, $node->name . ': the worker goes on: the same event sent again is applied');
	is(worker_pid($node), $pid{ $node->name }, $node->name . ': with the same worker process');
}

#
# Changes on either side converge.
#
$b->safe_psql('postgres', q{SELECT shard_update_range('shard4', 80001, 99000)});
$a->safe_psql('postgres', q{SELECT shard_remove('shard3')});
wait_for($a, q{SELECT shard_for(98000) = 'shard4'}, 'A applies B\'s change');
wait_for($b, q{SELECT shard_for(25000) IS NULL}, 'B applies A\'s change');
is(topology($b), topology($a), 'A and B converge');

# stale: a replay of an old event from A (shard4 back to 80001..95000, as B
# received it) is ignored by B, and by A
my $first_event = $b->safe_psql('postgres', q{
	SELECT event FROM tenant_router.events
	 WHERE op = 'UPDATE_SHARD_RANGE' AND origin IS NOT NULL AND event LIKE '%95000%' ORDER BY id LIMIT 1});
like($first_event, qr/"origin"/, 'an event of A, as B received it');
publish($first_event);
wait_for($b, q{SELECT count(*) > 0 FROM tenant_router.event_log WHERE reason LIKE 'stale%'},
	'a replayed old event is ignored as stale');
is(topology($b), topology($a), 'and changes nothing');

#
# A burst: a control plane sends 1100 events (stream and channel) at once,
# more than the worker once remembered to skip the channel copies of what it
# applied from the stream.  Each one is applied exactly once, in order.  A
# third coordinator on a channel of its own, without logical tables, keeps
# it fast.
#
my $c = TenantRouter::Test->new_coordinator('coord_c', redis => $redis,
	conf => [ "tenant_router.topology_channel = 'burst'", 'tenant_router.event_log_size = 5000' ]);
TenantRouter::Test->wait_subscribers($redis, 'burst', 1);
$c->safe_psql('postgres', qq{SELECT shard_add('burst1', 1, 1000, '$dsn[3]')});
my $burst = 1100;
TenantRouter::Test->redis_cli($redis, 'EVAL', q{
	for i = 1, tonumber(ARGV[1]) do
		local e = '{"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "burst1", "range_start": 1, "range_end": '
			.. (1000 + i) .. '}, "seq": ' .. i .. '}'
		redis.call('XADD', KEYS[1], '*', 'event', e)
		redis.call('PUBLISH', KEYS[2], e)
	end
	return 1}, '2', 'burst:log', 'burst', $burst);
# channel messages are handled in order: once this one is logged, so is every copy before it
TenantRouter::Test->redis_cli($redis, 'PUBLISH', 'burst', '{"op": "REMOVE_SHARD", "payload": {"shard_id": "end-of-burst"}}');
wait_for($c, q{SELECT count(*) = 1 FROM tenant_router.events WHERE shard_id = 'end-of-burst'},
	'the burst went through');
is($c->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT event) FROM tenant_router.events
		WHERE op = 'UPDATE_SHARD_RANGE' AND status = 'applied'}),
	"$burst $burst", "each of the $burst events of the burst was applied once");
is($c->safe_psql('postgres', 'SELECT applied FROM tenant_router.event_stats'), $burst, 'and counted once');
is(topology($c), 'burst1:1..' . (1000 + $burst), 'the last one wins');

#
# Two coordinators and a split: shard_split() on A publishes the shrunk
# range and the new shard; B applies both and routes the moved tenant there.
#
$a->safe_psql('postgres', q{INSERT INTO users (tenant_id, username) VALUES (7000, 'moved'), (3000, 'stays')});
$a->safe_psql('postgres', "SELECT shard_split('shard1', 5000, 'shard5', '$dsn[2]')");
is($a->safe_psql('postgres', q{SELECT shard_for(3000) || ' ' || shard_for(7000)}), 'shard1 shard5',
	'A split shard1: tenant 7000 moved to shard5');
ok(poll_until($b, q{SELECT shard_for(7000) = 'shard5'}, 30), 'B routes tenant 7000 to the new shard');
is(topology($b), topology($a), 'A and B agree on the ranges after the split');
is($b->safe_psql('postgres', q{SELECT username FROM users WHERE tenant_id = 7000}), 'moved',
	'B reads the moved row from the new shard');
is($b->safe_psql('postgres', q{SELECT username FROM users WHERE tenant_id = 3000}), 'stays',
	'and the row that stayed from the old one');

done_testing();
