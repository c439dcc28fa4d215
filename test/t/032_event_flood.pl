# Event floods: the worker applies a flood of events published at once
# (several per transaction), each exactly once and in order, a bad one in
# the middle of a batch rejected without touching its neighbours; it reports
# its table activity, so that autovacuum cleans up after it; and its own
# memory does not grow from one flood to the next.  (bench/event_flood.sh
# measures the rate.)
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use TenantRouter::Test;

my $channel = 'db_shard_topology_updates';
my $redis = TenantRouter::Test->start_redis;
my $shard = TenantRouter::Test->new_shard('shard1');
my $dsn = TenantRouter::Test->dsn($shard);
my $node = TenantRouter::Test->new_coordinator('coord', redis => $redis);
TenantRouter::Test->wait_subscribers($redis, $channel, 1);
# base in a database of its own: two shards in one database are refused
# (the flood's shards come and go one at a time in the other)
$shard->safe_psql('postgres', 'CREATE DATABASE base');
my $base_dsn = TenantRouter::Test->dsn($shard, 'base');
$node->safe_psql('postgres', "SELECT shard_add('base', 1, 99, '$base_dsn')");

my $worker = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_router topology worker'});

# private_kb: the worker's own resident memory (shared buffers it has
# touched are counted apart, in RssShmem)
sub private_kb
{
	my ($kb) = slurp_file("/proc/$worker/status") =~ /^RssAnon:\s+(\d+)/m;
	return $kb;
}

# flood: one Redis script publishes, on stream and channel, cycles of
# ADD_SHARD / UPDATE_SHARD_RANGE / REMOVE_SHARD, and after every tenth cycle
# an UPDATE_SHARD_RANGE that overlaps shard "base" (rejected); returns the
# number of events.
my $script = q{
	local dsn, flood, cycles = ARGV[1], ARGV[2], tonumber(ARGV[3])
	local n = 0
	local function send(e)
		redis.call('XADD', KEYS[1], '*', 'event', e)
		redis.call('PUBLISH', KEYS[2], e)
		n = n + 1
	end
	for i = 1, cycles do
		local id = 'f' .. flood .. '_' .. i
		local s = 1000 + i * 100
		send(string.format('{"op": "ADD_SHARD", "payload": {"shard_id": "%s", "range_start": %d, "range_end": %d, "dsn": "%s"}}', id, s, s + 9, dsn))
		send(string.format('{"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "%s", "range_start": %d, "range_end": %d}}', id, s, s + 99))
		if i % 10 == 0 then
			send(string.format('{"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "%s", "range_start": 50, "range_end": %d}}', id, s + 99))
		end
		send(string.format('{"op": "REMOVE_SHARD", "payload": {"shard_id": "%s"}}', id))
	end
	return n};

sub flood
{
	my ($f, $cycles) = @_;
	return TenantRouter::Test->redis_cli($redis, 'EVAL', $script, '2', "$channel:log", $channel,
		$dsn, $f, $cycles);
}

sub counts
{
	return $node->safe_psql('postgres',
		'SELECT applied || \' \' || rejected FROM tenant_router.event_stats');
}

my $cycles = 1000;
my @private;
for my $f (1 .. 2)
{
	my ($applied0, $rejected0) = split / /, counts();
	my $n = flood($f, $cycles);
	is($n, 3 * $cycles + $cycles / 10, "flood $f: $n events published at once");
	ok($node->poll_query_until('postgres',
			"SELECT applied + rejected = $applied0 + $rejected0 + $n FROM tenant_router.event_stats"),
		"flood $f: every event was handled");
	my ($applied, $rejected) = split / /, counts();
	is($applied - $applied0, 3 * $cycles, "flood $f: every valid event was applied once");
	is($rejected - $rejected0, $cycles / 10, "flood $f: every overlapping one was rejected");
	is($node->safe_psql('postgres',
			q{SELECT string_agg(shard_id, ',') FROM tenant_router.shards}),
		'base', "flood $f: the catalog ends as the last event left it");
	# the log holds the last 1000 events, in the order published
	is($node->safe_psql('postgres', q{
			SELECT count(*) || ' ' || (max(id) - min(id) + 1) FROM tenant_router.events}),
		'1000 1000', "flood $f: the event log keeps the last 1000 events");
	my @last = split /\n/, $node->safe_psql('postgres', q{
			SELECT op || ':' || shard_id || ':' || status
			  FROM tenant_router.events ORDER BY id DESC LIMIT 4});
	is_deeply(\@last, [
			"REMOVE_SHARD:f${f}_$cycles:applied", "UPDATE_SHARD_RANGE:f${f}_$cycles:rejected",
			"UPDATE_SHARD_RANGE:f${f}_$cycles:applied", "ADD_SHARD:f${f}_$cycles:applied" ],
		"flood $f: the last events are logged in order, the bad one between its neighbours");
	like($node->safe_psql('postgres', q{
			SELECT reason FROM tenant_router.events WHERE status = 'rejected' ORDER BY id DESC LIMIT 1}),
		qr/overlaps shard "base"/, "flood $f: with its reason");
	push @private, private_kb();
}

# The worker reports what it wrote to the statistics (a background worker
# must do it itself): without that, autovacuum never cleans up after it and
# every flood is slower than the one before.
ok($node->poll_query_until('postgres', q{
		SELECT n_tup_ins >= 6000 AND n_tup_del > 0 FROM pg_stat_user_tables
		 WHERE relid = 'tenant_router.event_log'::regclass}),
	'the worker\'s inserts into the event log reach the statistics, for autovacuum');
ok($node->poll_query_until('postgres', q{
		SELECT n_tup_ins >= 2000 AND n_tup_del >= 2000 FROM pg_stat_user_tables
		 WHERE relid = 'tenant_router.shard'::regclass}),
	'and so do its changes to the shard catalog');

# own memory: flat from one flood to the next
cmp_ok($private[1] - $private[0], '<', 1024,
	"the worker's own memory does not grow from flood to flood ($private[0] kB, then $private[1] kB)");

done_testing();
