# One order of topology changes: three coordinators on one channel, and two
# of them make conflicting changes at the same moment -- a range that grows
# against a shard added over it, one new shard id with two ranges, two new
# shards that overlap -- again and again.  Each time exactly one change wins
# and the other's caller gets the error (with its SQLSTATE), every
# coordinator ends with the same catalog, routes every tenant of the
# contested ranges to the same shard, and a row inserted for such a tenant
# through each coordinator lands on one shard only.  (On the old code both
# changes succeeded, each coordinator rejected the other's event and they
# disagreed for good.)
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use TenantRouter::Test;

my $channel = 'db_shard_topology_updates';
my $redis = TenantRouter::Test->start_redis;
# two servers, a database for each shard
my @servers = map { TenantRouter::Test->new_shard("server$_") } (1 .. 2);
my @dbs = qw(s_g s_z s_n1 s_n2 s_p s_q s_g2);
my %dsn;
for my $i (0 .. $#dbs)
{
	my $server = $servers[ $i % 2 ];
	$server->safe_psql('postgres', "CREATE DATABASE $dbs[$i]");
	# the table each shard gets, there from the start so that it can be counted
	$server->safe_psql($dbs[$i], 'CREATE TABLE users (tenant_id bigint NOT NULL, who text)');
	$dsn{ $dbs[$i] } = TenantRouter::Test->dsn($server, $dbs[$i]);
}
my @coords = map {
	TenantRouter::Test->new_coordinator("coord_$_", redis => $redis,
		conf => ["tenant_router.node_name = '$_'"])
} qw(a b c);
my ($a, $b, $c) = @coords;
TenantRouter::Test->wait_subscribers($redis, $channel, 3);

for my $node (@coords)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE users (tenant_id bigint NOT NULL, who text);
	});
}

# catalog: what every coordinator must agree on, DSNs included
sub catalog
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT coalesce(string_agg(shard_id || ':' || range_start || '..' || range_end || ':' || dsn,
		                           ' ' ORDER BY shard_id), '')
		  FROM tenant_router.shard});
}

# converge: true once the three catalogs are equal (within 10 s)
sub converge
{
	my $deadline = time + 10;
	while (time < $deadline)
	{
		my %seen = map { catalog($_) => 1 } @coords;
		return 1 if keys %seen == 1;
		usleep(50_000);
	}
	return 0;
}

$a->safe_psql('postgres', "SELECT shard_add('g', 1, 1000, '$dsn{s_g}')");
ok(converge(), 'the first shard, added on a, reaches b and c');
$_->safe_psql('postgres', q{SET client_min_messages = warning; SELECT logical_table_add('users')})
  for @coords;

# at_once: runs two statements, one on each coordinator, at the same moment:
# both start while Redis is paused (CLIENT PAUSE), so that neither can hear
# of the other before it decides; returns [exit code, stderr] of each
sub at_once
{
	my (@calls) = @_;
	my $t = time + 1.5;
	my $start = sprintf('%.3f', $t);
	my (@h, @out, @err);
	for my $i (0 .. $#calls)
	{
		my ($node, $sql) = @{ $calls[$i] };
		my $script = "SELECT pg_sleep(GREATEST(0, $start - extract(epoch FROM clock_timestamp())));\n$sql;\n";
		$out[$i] = '';
		$err[$i] = '';
		push @h, IPC::Run::start(
			[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose',
			  '-d', $node->connstr('postgres') ],
			'<', \$script, '>', \$out[$i], '2>', \$err[$i]);
	}
	usleep(int(($t - 0.2 - time) * 1_000_000)) if $t - 0.2 > time;
	TenantRouter::Test->redis_cli($redis, 'CLIENT', 'PAUSE', '700', 'ALL');
	my @result;
	for my $i (0 .. $#h)
	{
		$h[$i]->finish;
		push @result, [ $h[$i]->result(0), $err[$i] ];
	}
	return @result;
}

# route: the shard each coordinator routes the tenant to
sub route
{
	my ($t) = @_;
	my %r = map { $_->safe_psql('postgres', "SELECT coalesce(shard_for($t), '-')") => 1 } @coords;
	return join(' ', sort keys %r);
}

# one_rows_home: inserts a row for each tenant through every coordinator and
# tells whether each tenant's rows are all on one shard
sub one_rows_home
{
	my (@tenants) = grep { route($_) ne '-' } @_;	# tenants some shard owns
	for my $node (@coords)
	{
		my $who = $node->name;
		$node->safe_psql('postgres',
			join('', map { "INSERT INTO users (tenant_id, who) VALUES ($_, '$who');\n" } @tenants));
	}
	for my $t (@tenants)
	{
		my @holders;
		for my $db (sort keys %dsn)
		{
			my $i = (grep { $dbs[$_] eq $db } 0 .. $#dbs)[0];
			my $server = $servers[ $i % 2 ];
			my $n = $server->safe_psql($db,
				"SELECT count(*) FROM users WHERE tenant_id = $t");
			push @holders, "$db:$n" if $n > 0;
		}
		return "tenant $t on " . join(', ', @holders) unless @holders == 1 && $holders[0] =~ /:3$/;
	}
	return '';
}

# race: the two calls at once; exactly one must fail with sqlstate
sub race
{
	my ($what, $round, $sqlstate, @calls) = @_;
	my @r = at_once(@calls);
	my @failed = grep { $r[$_][0] != 0 } 0 .. 1;
	is(scalar @failed, 1, "$what, round $round: exactly one of the two changes wins");
	if (@failed == 1)
	{
		like($r[ $failed[0] ][1], qr/ERROR:\s+$sqlstate:/, "$what, round $round: the loser's caller gets $sqlstate");
	}
	else
	{
		diag("exit codes $r[0][0] $r[1][0]: $r[0][1] $r[1][1]");
	}
	ok(converge(), "$what, round $round: the three coordinators end with the same catalog");
	return @failed == 1 ? 1 - $failed[0] : -1;
}

my $rounds = 3;
for my $round (1 .. $rounds)
{
	# 1. g grows to 1..2000 on a while b adds z over 1500..3000
	my ($first, $second) = $round % 2 ? ($a, $b) : ($b, $a);
	race('grow against an overlapping add', $round, '23P01',
		[ $first, "SELECT shard_update_range('g', 1, 2000)" ],
		[ $second, "SELECT shard_add('z', 1500, 3000, '$dsn{s_z}')" ]);
	my $owner = route(1600);
	unlike($owner, qr/ /, "round $round: every coordinator routes tenant 1600 to the same shard ($owner)");
	is(one_rows_home(1600, 1999, 2500), '', "round $round: each tenant's rows, inserted through every coordinator, are on one shard");

	# 2. the same new shard id, two ranges
	race('one new shard id with two ranges', $round, '42710',
		[ $first, "SELECT shard_add('n', 5001, 6000, '$dsn{s_n1}')" ],
		[ $second, "SELECT shard_add('n', 7001, 8000, '$dsn{s_n2}')" ]);
	is(scalar(() = route(5500) =~ /\S+/g) + scalar(() = route(7500) =~ /\S+/g), 2,
		"round $round: tenants 5500 and 7500 are each routed alike everywhere");
	is(one_rows_home(5500, 7500), '', "round $round: and their rows are on one shard each");

	# 3. two new shards that overlap
	race('two overlapping new shards', $round, '23P01',
		[ $first, "SELECT shard_add('p', 9001, 10000, '$dsn{s_p}')" ],
		[ $second, "SELECT shard_add('q', 9500, 10500, '$dsn{s_q}')" ]);
	unlike(route(9700), qr/ /, "round $round: tenant 9700 is routed alike everywhere");
	is(one_rows_home(9200, 9700, 10200), '', "round $round: rows of the contested range on one shard each");

	# back to the start, from the third coordinator
	for my $db (sort keys %dsn)
	{
		my $i = (grep { $dbs[$_] eq $db } 0 .. $#dbs)[0];
		$servers[ $i % 2 ]->safe_psql($db, 'DELETE FROM users');
	}
	for my $s (qw(z n p q))
	{
		$c->safe_psql('postgres', "SELECT shard_remove('$s')")
		  if $c->safe_psql('postgres', "SELECT count(*) FROM tenant_router.shard WHERE shard_id = '$s'");
	}
	$c->safe_psql('postgres', "SELECT shard_update_range('g', 1, 1000)")
	  if $c->safe_psql('postgres', "SELECT range_end FROM tenant_router.shard WHERE shard_id = 'g'") != 1000;
	ok(converge(), "round $round: cleaned up, the same catalog everywhere");
}

# a change made inside a transaction block is refused: it would be in force
# whatever the block did afterwards
my ($rc, $out, $err) = $a->psql('postgres', "BEGIN; SELECT shard_add('t', 20001, 21000, '$dsn{s_z}'); COMMIT;");
like($err, qr/shard_add\(\) cannot run inside a transaction block/, 'a change inside BEGIN ... COMMIT is refused');
is($a->safe_psql('postgres', q{SELECT count(*) FROM tenant_router.shard WHERE shard_id = 't'}), '0',
	'and changes nothing');

# an online operation: its catalog change is ordered too, and its end is
# published on the channel (SHARD_SPLIT_COMPLETED), which the others record
my $listener_out = '';
my $listener = IPC::Run::start(
	[ 'redis-cli', '-h', '127.0.0.1', '-p', $redis->{port}, 'SUBSCRIBE', $channel ],
	'>', \$listener_out, IPC::Run::timeout(120));
TenantRouter::Test->wait_subscribers($redis, $channel, 4);
$a->safe_psql('postgres', q{INSERT INTO users (tenant_id, who) VALUES (100, 'stays'), (700, 'moves')});
$a->safe_psql('postgres', "SELECT shard_split('g', 500, 'g2', '$dsn{s_g2}')");
for my $node ($b, $c)
{
	ok($node->poll_query_until('postgres', q{SELECT shard_for(700) = 'g2' AND shard_for(100) = 'g'}),
		$node->name . ': routes the moved tenant to the new shard of a split made on a');
	ok($node->poll_query_until('postgres',
			q{SELECT count(*) = 1 FROM tenant_router.events WHERE op = 'SHARD_SPLIT_COMPLETED' AND status = 'ignored'}),
		$node->name . ': records the split\'s SHARD_SPLIT_COMPLETED');
}
is($b->safe_psql('postgres', q{SELECT who FROM users WHERE tenant_id = 700}), 'moves',
	'b reads the moved row from the new shard');
my $deadline = time + 10;
$listener->pump_nb while $listener_out !~ /SHARD_SPLIT_COMPLETED/ && time < $deadline;
like($listener_out, qr/"op": "SHARD_SPLIT_COMPLETED"/, 'SHARD_SPLIT_COMPLETED was published on the channel');
like($listener_out, qr/"op": "UPDATE_SHARD_RANGE".*"op": "ADD_SHARD".*"op": "SHARD_SPLIT_COMPLETED"/s,
	'after the split\'s catalog change');

# and a merge back
$a->safe_psql('postgres', "SELECT shard_merge('g2', 'g')");
for my $node ($b, $c)
{
	ok($node->poll_query_until('postgres',
			q{SELECT shard_for(700) = 'g' AND NOT EXISTS (SELECT 1 FROM tenant_router.shard WHERE shard_id = 'g2')}),
		$node->name . ': follows the merge made on a');
}
is($c->safe_psql('postgres', q{SELECT string_agg(who, ',' ORDER BY tenant_id) FROM users WHERE tenant_id IN (100, 700)}),
	'stays,moves', 'c reads both rows from the merged shard');
$deadline = time + 10;
$listener->pump_nb while $listener_out !~ /SHARD_MERGE_COMPLETED/ && time < $deadline;
like($listener_out, qr/"op": "MERGE_SHARD".*"op": "SHARD_MERGE_COMPLETED"/s,
	'SHARD_MERGE_COMPLETED was published on the channel after the merge');
$listener->kill_kill;

# every change came through the one log, in one order: the three catalogs
# are at the same position
ok(converge(), 'in the end the three catalogs are the same');
my %pos = map { $_->safe_psql('postgres', 'SELECT epoch || \' \' || stream_id FROM tenant_router.event_stats') => 1 } @coords;
is(scalar keys %pos, 1, 'and at the same place in the order');

done_testing();
