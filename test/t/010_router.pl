# Router over real shard clusters: a shard stopped and restarted under a
# session, pgbench (extended protocol, prepared statements) through the
# coordinator with every row checked on the shard that owns its tenant.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TenantRouter::Test;

my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $coord = TenantRouter::Test->new_coordinator('coord');

my $dsn1 = TenantRouter::Test->dsn($shard1);
my $dsn2 = TenantRouter::Test->dsn($shard2);
$coord->safe_psql('postgres', qq{
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	CREATE TABLE users (
		id bigserial PRIMARY KEY,
		tenant_id bigint NOT NULL,
		username text NOT NULL,
		created_at timestamptz DEFAULT now());
	SELECT logical_table_add('users');
});

# run one statement in a session and return (output, stderr)
sub run_in
{
	my ($session, $sql) = @_;
	my $out = $session->query($sql);
	my $err = $session->{stderr};
	$session->{stderr} = '';
	return ($out, $err);
}

#
# A shard stopped under an open session: a clean error naming the shard,
# and the statements after the restart work, without reconnecting the
# session.
#
my $session = $coord->background_psql('postgres', on_error_stop => 0);
my ($out, $err) = run_in($session,
	"INSERT INTO users (tenant_id, username) VALUES (5, 'before') RETURNING username");
is($out, 'before', 'insert before the shard stops');
($out, $err) = run_in($session, 'SELECT count(*) FROM users WHERE tenant_id = 5');
is($out, '1', 'read before the shard stops');

$shard1->stop('fast');
($out, $err) = run_in($session, 'SELECT count(*) FROM users WHERE tenant_id = 5');
like($err, qr/could not connect to shard "shard1"/, 'stopped shard: connection error names the shard');
unlike($err, qr/password|$dsn1/, 'the error does not show the DSN');
($out, $err) = run_in($session, 'SELECT count(*) FROM users WHERE tenant_id = 15000');
is($err, '', 'the other shard still serves the same session');
is($out, '0', 'read on the other shard');

$shard1->start;
($out, $err) = run_in($session, 'SELECT count(*) FROM users WHERE tenant_id = 5');
is($err, '', 'after the restart the same session reads again');
is($out, '1', 'the row is still there');

# stopped in the middle of a transaction: the transaction fails, the next works
($out, $err) = run_in($session, "BEGIN; INSERT INTO users (tenant_id, username) VALUES (6, 'lost')");
$shard1->restart('fast');
($out, $err) = run_in($session, 'SELECT count(*) FROM users WHERE tenant_id = 6');
like($err, qr/lost connection to shard "shard1"/, 'a restart inside a transaction fails it');
run_in($session, 'ROLLBACK');
($out, $err) = run_in($session, 'SELECT count(*) FROM users WHERE tenant_id IN (5, 6)');
is($err, '', 'the next transaction works');
is($out, '1', 'the interrupted transaction left nothing');
$session->quit;

#
# pgbench through the router: extended protocol, prepared statements, four
# clients, inserts and reads of random tenants across both shards.
#
$coord->pgbench(
	'--no-vacuum --client=4 --jobs=2 --transactions=250 --protocol=prepared',
	0,
	[qr{processed: 1000/1000}],
	[qr{^$}],
	'pgbench -M prepared through the router',
	{
		'010_router_rw' => q{
			\set tid random(1, 20000)
			INSERT INTO users (tenant_id, username) VALUES (:tid, 'pgbench ' || :tid);
			SELECT count(*) FROM users WHERE tenant_id = :tid;
			UPDATE users SET username = username || '!' WHERE tenant_id = :tid;
		}
	});

my $total = $coord->safe_psql('postgres', 'SELECT count(*) FROM users');
is($total, '1001', 'every pgbench row is readable through the coordinator');
my $on1 = $shard1->safe_psql('postgres', 'SELECT count(*) FROM users');
my $on2 = $shard2->safe_psql('postgres', 'SELECT count(*) FROM users');
is($on1 + $on2, 1001, 'every row is on exactly one shard');
is($shard1->safe_psql('postgres',
		'SELECT count(*) FROM users WHERE tenant_id NOT BETWEEN 1 AND 10000'),
	'0', 'shard1 holds only its tenants');
is($shard2->safe_psql('postgres',
		'SELECT count(*) FROM users WHERE tenant_id NOT BETWEEN 10001 AND 20000'),
	'0', 'shard2 holds only its tenants');
is($coord->safe_psql('postgres',
		"SELECT count(*) FROM users WHERE username NOT LIKE '%!' AND username <> 'before'"),
	'0', 'every pgbench row was updated through the router');

# the coordinator keeps nothing of its own
is($coord->safe_psql('postgres',
		"SELECT relkind FROM pg_class WHERE relname = 'users'"),
	'f', 'the logical table has no local storage');

done_testing();
