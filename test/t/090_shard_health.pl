# Shard health and statistics a DBA can read: statements, rows and errors
# per tenant and per shard after a known number of statements (several
# clients at once), memory bounded by tenant_router.stats_max_tenants with
# the least recently used tenants evicted, and a shard that stops (pg_ctl
# stop) or hangs (SIGSTOP) shown unreachable in tenant_router.shard_health
# within seconds, with its reason, and reachable again once it is back --
# though no statement goes there (the health worker's probe).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use TenantRouter::Test;

my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $coord = TenantRouter::Test->new_coordinator('coord',
	conf => [
		"tenant_router.probe_interval = '1s'",
		"tenant_router.probe_timeout = '500ms'",
		"tenant_router.stats_max_tenants = 100",
		"tenant_router.connect_timeout = 2"
	]);
my ($dsn1, $dsn2) = map { TenantRouter::Test->dsn($_) } ($shard1, $shard2);
$coord->safe_psql('postgres', qq{
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	CREATE TABLE t (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, v int);
	SELECT logical_table_add('t');
	INSERT INTO t (tenant_id, v) VALUES (5, 1), (15000, 2);
});

# ---- counts after a known number of statements, from 4 clients at once
$coord->safe_psql('postgres', 'SELECT tenant_router.stats_reset()');
$coord->pgbench(
	'--no-vacuum --client=4 --jobs=2 --transactions=50 --protocol=prepared',
	0, [qr{processed: 200/200}], [qr{^$}],
	'200 routed SELECTs of tenant 5 from 4 clients',
	{ '080_select' => "SELECT v FROM t WHERE tenant_id = 5;\n" },
	'postgres');
$coord->pgbench(
	'--no-vacuum --client=2 --jobs=2 --transactions=50 --protocol=prepared',
	0, [qr{processed: 100/100}], [qr{^$}],
	'100 routed INSERTs of tenant 15000 from 2 clients',
	{ '080_insert' => "INSERT INTO t (tenant_id, v) VALUES (15000, 3);\n" },
	'postgres');
is( $coord->safe_psql('postgres',
		'SELECT tenant_id, shard_id, statements, rows, errors FROM tenant_router.tenant_stats ORDER BY 1'),
	"5|shard1|200|200|0\n15000|shard2|100|100|0",
	'each tenant counts its statements and rows');
is( $coord->safe_psql('postgres',
		'SELECT shard_id, statements, rows, errors, total_time > 0 FROM tenant_router.shard_stats ORDER BY 1'),
	"shard1|200|200|0|t\nshard2|100|100|0|t",
	'each shard counts the statements that went to it, and their time');
my ($rc, $out, $err) = $coord->psql('postgres',
	'SELECT v / 0 FROM t WHERE tenant_id = 15000');
like($err, qr/division by zero/, 'a statement that fails on its shard');
is( $coord->safe_psql('postgres',
		"SELECT statements, errors FROM tenant_router.tenant_stats WHERE tenant_id = 15000"),
	'101|1', 'is an error of its tenant');

# ---- memory bounded: 150 tenants for room for 100, least recently used out
$coord->safe_psql('postgres', 'SELECT tenant_router.stats_reset()');
sub touch_tenants
{
	my ($from, $to) = @_;
	$coord->safe_psql('postgres', qq{
		SELECT format('SELECT count(*) FROM t WHERE tenant_id = %s', g)
		  FROM generate_series($from, $to) g \\gexec
	});
}
touch_tenants(1, 100);
touch_tenants(1, 1);
touch_tenants(101, 150);
is( $coord->safe_psql('postgres',
		'SELECT count(*), count(*) FILTER (WHERE tenant_id BETWEEN 2 AND 51), '
		  . 'bool_and(statements = CASE tenant_id WHEN 1 THEN 2 ELSE 1 END) '
		  . 'FROM tenant_router.tenant_stats'),
	'100|0|t',
	'150 tenants keep 100 entries: the 50 used least recently (2..51) are evicted, tenant 1 used again is kept'
);
is( $coord->safe_psql('postgres',
		'SELECT statements FROM tenant_router.shard_stats WHERE shard_id = \'shard1\''),
	'151', 'the shard still counts every statement');

# ---- still bounded, and no statement lost, with 4 clients adding and
# evicting tenants at once (1 000 tenants for room for 100)
$coord->safe_psql('postgres', 'SELECT tenant_router.stats_reset()');
$coord->pgbench(
	'--no-vacuum --client=4 --jobs=2 --transactions=500 --protocol=prepared',
	0, [qr{processed: 2000/2000}], [qr{^$}],
	'2000 routed SELECTs of 1000 random tenants from 4 clients',
	{ '090_churn' => "\\set tid random(1, 1000)\nSELECT count(*) FROM t WHERE tenant_id = :tid;\n" },
	'postgres');
is( $coord->safe_psql('postgres',
		'SELECT count(*) BETWEEN 95 AND 100, sum(statements) <= 2000, '
		  . 'bool_and(statements >= 1 AND tenant_id BETWEEN 1 AND 1000) '
		  . 'FROM tenant_router.tenant_stats'),
	't|t|t',
	'the table stays within 100 tenants (5% evicted at a time) while 4 clients add 1000');
is( $coord->safe_psql('postgres',
		'SELECT statements FROM tenant_router.shard_stats WHERE shard_id = \'shard1\''),
	'2000', 'and the shard counts every one of the 2000 statements');

# ---- a shard stopped with pg_ctl
sub wait_reachable
{
	my ($shard_id, $want) = @_;
	my $t0 = time;
	while (time - $t0 < 30)
	{
		my $got = $coord->safe_psql('postgres',
			"SELECT reachable FROM tenant_router.shard_health WHERE shard_id = '$shard_id'");
		return time - $t0 if $got eq $want;
		usleep(100_000);
	}
	return undef;
}

ok(defined wait_reachable('shard2', 't'), 'shard2 is reachable to begin with');
$shard2->stop('fast');
my $elapsed = wait_reachable('shard2', 'f');
ok(defined $elapsed && $elapsed < 5,
	'a shard stopped with pg_ctl shows as unreachable within seconds ('
	  . ($elapsed // 'never') . ' s), though no statement went there');
like(
	$coord->safe_psql('postgres',
		"SELECT last_error || ' at ' || (last_error_at > now() - interval '10 s') "
		  . "FROM tenant_router.shard_health WHERE shard_id = 'shard2'"),
	qr/failed: (No such file or directory|Connection refused) at true/,
	'with libpq\'s reason and when');
is($coord->safe_psql('postgres',
		"SELECT reachable FROM tenant_router.shard_health WHERE shard_id = 'shard1'"),
	't', 'the other shard stays reachable');
ok($coord->log_contains(qr/shard "shard2" is unreachable/), 'the change is logged');
($rc, $out, $err) = $coord->psql('postgres', 'SELECT v FROM t WHERE tenant_id = 15000');
like($err, qr/could not connect to shard "shard2"/, 'a statement for the stopped shard fails');
is( $coord->safe_psql('postgres',
		"SELECT errors FROM tenant_router.tenant_stats WHERE tenant_id = 15000"),
	'1', 'as an error of its tenant');

$shard2->start;
$elapsed = wait_reachable('shard2', 't');
ok(defined $elapsed && $elapsed < 5,
	'reachable again within seconds of its start (' . ($elapsed // 'never') . ' s)');
is($coord->safe_psql('postgres', 'SELECT v FROM t WHERE tenant_id = 15000 LIMIT 1'),
	'2', 'and serving');

# ---- a hung shard (SIGSTOP): the probe times out
sub processes
{
	my ($node) = @_;
	my ($pid) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
	my @children = split /\s+/, `ps -o pid= --ppid $pid`;
	return grep { /^\d+$/ } ($pid, @children);
}
my @stopped;
END { kill 'CONT', @stopped if @stopped; }

@stopped = processes($shard2);
kill 'STOP', @stopped;
$elapsed = wait_reachable('shard2', 'f');
ok(defined $elapsed && $elapsed < 5,
	'a hung shard shows as unreachable within seconds (' . ($elapsed // 'never') . ' s)');
like(
	$coord->safe_psql('postgres',
		"SELECT last_error FROM tenant_router.shard_health WHERE shard_id = 'shard2'"),
	qr/^(no answer|could not connect) within 500 ms \(tenant_router\.probe_timeout\)$/,
	'because it did not answer the probe in time');
kill 'CONT', @stopped;
@stopped = ();
$elapsed = wait_reachable('shard2', 't');
ok(defined $elapsed && $elapsed < 5,
	'reachable again within seconds once resumed (' . ($elapsed // 'never') . ' s)');
ok($coord->log_contains(qr/shard "shard2" is reachable again/), 'which is logged');

done_testing();
