# 091_deadlock.pl — deadlocks that span shards (adversarial finding F2: two
# transfers in opposite order across two shards hung for ever, each shard
# seeing only half of the cycle).  The deadlock detector breaks a cycle of
# waits over two or three shards within seconds by failing its youngest
# transaction with 40P01, naming the shards; the others commit, and no
# money is lost.  With two coordinators, a cycle between their
# transactions loses exactly one.  A long wait that is no cycle, and a
# deadlock on one shard (which that shard's own detector breaks), lose
# nothing more.  pgbench transfers between tenants of three shards with 4
# clients finish, failing only with 40P01, the total unchanged.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use TenantRouter::Test;

my @shards = map { TenantRouter::Test->new_shard("shard$_") } 1 .. 3;
my @dsns = map { TenantRouter::Test->dsn($_) } @shards;
my $coord_a = TenantRouter::Test->new_coordinator('coord_a');
my $coord_b = TenantRouter::Test->new_coordinator('coord_b');

for my $coord ($coord_a, $coord_b)
{
	$coord->safe_psql('postgres', qq{
		SET client_min_messages = error;
		SELECT shard_add('shard1', 1, 100, '$dsns[0]');
		SELECT shard_add('shard2', 101, 200, '$dsns[1]');
		SELECT shard_add('shard3', 201, 300, '$dsns[2]');
		CREATE TABLE acct (tenant_id int NOT NULL, id int NOT NULL, bal bigint NOT NULL,
		                   PRIMARY KEY (tenant_id, id));
		SELECT logical_table_add('acct');
	});
}
$coord_a->safe_psql('postgres',
	'INSERT INTO acct SELECT g, 1, 1000 FROM generate_series(1, 300) g');

sub balance
{
	my ($tenant) = @_;
	return $coord_a->safe_psql('postgres', "SELECT bal FROM acct WHERE tenant_id = $tenant");
}

sub session
{
	my ($coord) = @_;
	my $s = $coord->background_psql('postgres', on_error_stop => 0);
	$s->query_safe('\set VERBOSITY verbose');
	return $s;
}

# begin_holding opens a transaction that takes the tenant's row
sub begin_holding
{
	my ($s, $tenant, $delta) = @_;
	$s->query_safe('BEGIN');
	$s->query_safe("UPDATE acct SET bal = bal - $delta WHERE tenant_id = $tenant");
}

# send_update sends an update that may wait; finish() reads its end
sub send_update
{
	my ($s, $tenant, $delta, $tag) = @_;
	$s->{stderr} = '';
	$s->query_until(qr/sent $tag/,
		"\\echo sent $tag\nUPDATE acct SET bal = bal + $delta WHERE tenant_id = $tenant;\n\\echo done $tag\n");
}

sub finish
{
	my ($s, $tag) = @_;
	$s->query_until(qr/done $tag/, '');
	my $err = $s->{stderr};
	$s->{stderr} = '';
	return $err;
}

# waiting_on waits until n sessions wait for a lock on the shard
sub waiting_on
{
	my ($shard, $n) = @_;
	return $shard->poll_query_until('postgres', qq{
		SELECT count(*) >= $n FROM pg_stat_activity
		 WHERE wait_event_type = 'Lock' AND datname = 'postgres'});
}

sub failures_logged
{
	my ($coord, $from) = @_;
	my $log = slurp_file($coord->logfile, $from);
	return scalar(() = $log =~ /deadlock across shards, failing the transaction/g);
}

my %figures;

# --- two transfers in opposite order over shard1 and shard2 (F2) -----------
{
	my $log_from = -s $coord_a->logfile;
	my ($s1, $s2) = (session($coord_a), session($coord_a));
	begin_holding($s1, 1, 10);
	begin_holding($s2, 150, 20);
	send_update($s1, 150, 10, 's1');
	ok(waiting_on($shards[1], 1), 'the first transfer waits for the second on shard2');
	my $t0 = time;
	send_update($s2, 1, 20, 's2');
	my $err2 = finish($s2, 's2');
	$figures{'two shards'} = time - $t0;
	my $err1 = finish($s1, 's1');
	like($err2, qr/ERROR:  40P01: deadlock detected/,
		'the younger transaction fails with 40P01 (it hung for ever before)');
	like($err2, qr/waits on shard "shard1" for process \d+\.\nProcess \d+ waits on shard "shard2" for process/,
		'its detail names the shards of the cycle');
	cmp_ok($figures{'two shards'}, '<', 10, 'within seconds of the cycle');
	is($err1, '', 'the older transaction goes on');
	$s1->query_safe('COMMIT');
	$s2->query('COMMIT');
	is(balance(1) . ' ' . balance(150), '990 1010', 'only the older transfer is applied');
	is(failures_logged($coord_a, $log_from), 1, 'the detector logs the one victim');
	$s1->quit;
	$s2->quit;
}

# --- a cycle over three shards ----------------------------------------------
{
	my ($s1, $s2, $s3) = (session($coord_a), session($coord_a), session($coord_a));
	begin_holding($s1, 2, 1);
	begin_holding($s2, 151, 1);
	begin_holding($s3, 251, 1);
	send_update($s1, 151, 1, 's1');
	send_update($s2, 251, 1, 's2');
	ok(waiting_on($shards[1], 1) && waiting_on($shards[2], 1), 'two transactions wait in a chain');
	my $t0 = time;
	send_update($s3, 2, 1, 's3');
	my $err3 = finish($s3, 's3');
	$figures{'three shards'} = time - $t0;
	like($err3, qr/ERROR:  40P01: deadlock detected/, 'the youngest of three fails with 40P01');
	like($err3, qr/shard "shard1".*\n.*shard "shard2".*\n.*shard "shard3"/,
		'its detail goes round the three shards');
	$s3->query('ROLLBACK');
	is(finish($s2, 's2'), '', 'the second goes on');
	$s2->query_safe('COMMIT');
	is(finish($s1, 's1'), '', 'and then the first');
	$s1->query_safe('COMMIT');
	is(join(' ', map { balance($_) } (2, 151, 251)), '999 1000 1001',
		'the two transfers that went on are applied, the third is not');
	$_->quit for ($s1, $s2, $s3);
}

# --- two coordinators of one topology ----------------------------------------
{
	my $from_a = -s $coord_a->logfile;
	my $from_b = -s $coord_b->logfile;
	my ($sa, $sb) = (session($coord_a), session($coord_b));
	begin_holding($sa, 3, 5);
	begin_holding($sb, 152, 5);
	send_update($sa, 152, 5, 'sa');
	ok(waiting_on($shards[1], 1), 'a transaction of coordinator a waits for one of b');
	my $t0 = time;
	send_update($sb, 3, 5, 'sb');
	my $errb = finish($sb, 'sb');
	$figures{'two coordinators'} = time - $t0;
	like($errb, qr/ERROR:  40P01: deadlock detected/,
		'the younger transaction, on coordinator b, fails with 40P01');
	like($errb, qr/process \d+ of coordinator \d+/, 'its detail names the other coordinator');
	$sb->query('ROLLBACK');
	is(finish($sa, 'sa'), '', 'the transaction of coordinator a goes on');
	$sa->query_safe('COMMIT');
	is(failures_logged($coord_b, $from_b) . ' ' . failures_logged($coord_a, $from_a), '1 0',
		'exactly one victim: coordinator b fails its own, a fails none');
	is(balance(3) . ' ' . balance(152), '995 1005', 'the transfer of coordinator a is applied');
	$sa->quit;
	$sb->quit;
}

# --- a long wait that is no cycle, and a deadlock on one shard ---------------
{
	my $log_from = -s $coord_a->logfile;
	# a session on shard1 itself holds tenant 4; a chain of waits across two
	# shards ends at it
	my $direct = $shards[0]->background_psql('postgres', on_error_stop => 0);
	$direct->query_safe('BEGIN');
	$direct->query_safe('UPDATE acct SET bal = bal WHERE tenant_id = 4');
	my ($s1, $s2) = (session($coord_a), session($coord_a));
	begin_holding($s1, 153, 1);
	send_update($s1, 4, 1, 's1');
	ok(waiting_on($shards[0], 1), 'a transaction waits for a session of shard1 itself');
	$s2->query_safe('BEGIN');
	send_update($s2, 153, 1, 's2');
	ok(waiting_on($shards[1], 1), 'and another waits for it on shard2');
	sleep 4;
	is($coord_a->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'UPDATE acct%'"),
		'2', 'both still wait after four looks of the detector: no cycle, no victim');
	$direct->query_safe('COMMIT');
	is(finish($s1, 's1'), '', 'once the shard session commits, the first goes on');
	$s1->query_safe('COMMIT');
	is(finish($s2, 's2'), '', 'then the second');
	$s2->query_safe('COMMIT');

	# a deadlock within shard1: its own detector breaks it, the router's adds nothing
	begin_holding($s1, 5, 1);
	begin_holding($s2, 6, 1);
	send_update($s1, 6, 1, 's1');
	ok(waiting_on($shards[0], 1), 'a transaction waits on shard1');
	send_update($s2, 5, 1, 's2');
	my @errs = (finish($s2, 's2'), finish($s1, 's1'));
	is(scalar(grep { /40P01: deadlock detected/ } @errs), 1, 'a deadlock on one shard fails one transaction');
	like(join('', @errs), qr/remote SQL on shard "shard1"/, 'reported by shard1 itself');
	$s1->query('COMMIT');
	$s2->query('COMMIT');
	sleep 2;
	is(failures_logged($coord_a, $log_from), 0, 'the detector failed no transaction');
	$_->quit for ($direct, $s1, $s2);
}

# --- pgbench: transfers between tenants of different shards, 4 clients -------
{
	my $sum = $coord_a->safe_psql('postgres', 'SELECT sum(bal) FROM acct');
	my $script = $coord_a->basedir . '/transfer.sql';
	PostgreSQL::Test::Utils::append_to_file($script, q{
\set a random(0, 2)
\set d random(1, 2)
\set from :a * 100 + 10
\set to ((:a + :d) % 3) * 100 + 10
BEGIN;
UPDATE acct SET bal = bal - 1 WHERE tenant_id = :from;
UPDATE acct SET bal = bal + 1 WHERE tenant_id = :to;
COMMIT;
});
	my ($out, $err) = ('', '');
	my $t0 = time;
	my $ok = IPC::Run::run(
		[ 'pgbench', '-n', '-c', '4', '-j', '4', '-T', '10', '--failures-detailed',
			'-f', $script, $coord_a->connstr('postgres') ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(120));
	my $elapsed = time - $t0;
	ok($ok, "pgbench finishes ($elapsed s): no client hangs or aborts");
	my ($done) = $out =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	my ($deadlocks) = $out =~ /number of deadlock failures: (\d+)/;
	cmp_ok($done // 0, '>', 0, "transfers commit ($done committed, $deadlocks failed with 40P01)");
	is($failed, $deadlocks, 'every failure is a deadlock (40P01)');
	is($coord_a->safe_psql('postgres', 'SELECT sum(bal) FROM acct'), $sum,
		'the total of the balances is unchanged');
	$figures{pgbench} = "$done committed, $deadlocks deadlocks in 10 s";
}

diag(sprintf('cycle to victim: two shards %.2f s, three shards %.2f s, two coordinators %.2f s; pgbench %s',
	$figures{'two shards'}, $figures{'three shards'}, $figures{'two coordinators'},
	$figures{pgbench}));

done_testing();
