# Two-phase commit of transactions that write to several shards, under
# faults: a shard refusing at PREPARE, the coordinator killed while a shard
# is still preparing, a shard stopped after PREPARE, a shard without
# prepared transactions, and the refuse switch.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::RecursiveCopy;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use TenantRouter::Test;

my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $shard3 = TenantRouter::Test->new_shard('shard3');
$shard3->append_conf('postgresql.conf', "max_prepared_transactions = 0\n");
$shard3->restart;
my $coord = TenantRouter::Test->new_coordinator('coord');
$coord->append_conf('postgresql.conf', "tenant_router.node_name = 'coordA'\n");
$coord->reload;

my ($dsn1, $dsn2, $dsn3) = map { TenantRouter::Test->dsn($_) } ($shard1, $shard2, $shard3);
$coord->safe_psql('postgres', qq{
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	SELECT shard_add('shard3', 20001, 30000, '$dsn3');
	CREATE TABLE t (tenant_id bigint NOT NULL, v int NOT NULL);
	SELECT logical_table_add('t');
});

# On the shards: a deferred trigger that fails (v = 666) or sleeps (v >= 777)
# when the transaction commits or prepares.
for my $shard ($shard1, $shard2)
{
	$shard->safe_psql('postgres', q{
		CREATE FUNCTION public.at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.v = 666 THEN RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'P0666'; END IF;
			IF NEW.v >= 777 THEN PERFORM pg_sleep(3); END IF;
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON public.t
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.at_commit();
	});
}

sub rows_on
{
	my ($shard, $v) = @_;
	return $shard->safe_psql('postgres', "SELECT count(*) FROM public.t WHERE v = $v");
}

sub prepared_on
{
	my ($shard) = @_;
	return $shard->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts');
}

sub recover
{
	return $coord->safe_psql('postgres', 'SELECT tenant_router.recover_prepared_transactions()');
}

# Both shards written: both commit.
$coord->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO t VALUES (1, 1);
	INSERT INTO t VALUES (10001, 1);
	COMMIT;
});
is(rows_on($shard1, 1) . rows_on($shard2, 1), '11', 'a transaction writing two shards commits on both');
is(prepared_on($shard1) + prepared_on($shard2), 0, 'nothing is left prepared');
recover();
is($coord->safe_psql('postgres', 'SELECT count(*) FROM tenant_router.commit_record'), '0',
	'the commit records are gone once resolved');

# The second shard refuses at PREPARE (a deferred trigger): nothing changes anywhere.
my ($rc, $out, $err) = $coord->psql('postgres', q{
	BEGIN;
	INSERT INTO t VALUES (2, 666);
	INSERT INTO t VALUES (10002, 666);
	COMMIT;
}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/P0666.*refused at commit/s, 'a shard refusing at PREPARE fails the COMMIT with its error');
is(rows_on($shard1, 666) . rows_on($shard2, 666), '00', 'nothing changed on any shard');
is(prepared_on($shard1) + prepared_on($shard2), 0, 'nothing is left prepared after the refusal');

# The coordinator killed while shard1 is still preparing (its trigger
# sleeps): after the restart, the in-doubt transactions roll back.
my $session = $coord->background_psql('postgres', on_error_stop => 0);
$session->query_until(qr/started/, q{
	\echo started
	BEGIN;
	INSERT INTO t VALUES (3, 777);
	INSERT INTO t VALUES (10003, 3);
	COMMIT;
});
my $waited = 0;
while (prepared_on($shard2) eq '0' && $waited++ < 100) { usleep(50_000); }
is(prepared_on($shard2), '1', 'shard2 has prepared while shard1 is still preparing');
$coord->stop('immediate');
eval { $session->quit; };
$waited = 0;
while (prepared_on($shard1) eq '0' && $waited++ < 200) { usleep(50_000); }
$coord->start;
# the worker resolves them (every 10 s) without being asked
my $t0 = time;
ok($shard1->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_prepared_xacts')
	  && $shard2->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_prepared_xacts'),
	'after the coordinator restarts, the worker leaves nothing prepared');
cmp_ok(time - $t0, '<=', 60, 'within 60 s');
is(rows_on($shard1, 777) . rows_on($shard2, 3), '00', 'both shards agree: rolled back');

# shard2 stopped after its PREPARE (shard1 is still preparing): the client's
# COMMIT succeeds with a warning, and shard2's part commits once it is back.
$session = $coord->background_psql('postgres', on_error_stop => 0);
$session->query_until(qr/started/, q{
	BEGIN;
	INSERT INTO t VALUES (4, 888);
	INSERT INTO t VALUES (10004, 1);
	\echo started
});
$session->{stderr} = '';
# COMMIT is sent; shard1's trigger holds it for 3 s
$session->query_until(qr/sent/, q{
	\echo sent
	COMMIT;
	\echo committed
});
$waited = 0;
while (prepared_on($shard2) eq '0' && $waited++ < 100) { usleep(50_000); }
is(prepared_on($shard2), '1', 'shard2 prepared');
$shard2->stop('immediate');
$session->query_until(qr/committed/, '');
like($session->{stderr}, qr/could not commit prepared transaction .* on shard "shard2"/,
	'the COMMIT warns that shard2 keeps its part prepared');
$session->quit;
is(rows_on($shard1, 888), '1', 'shard1 committed');
# A clone of the coordinator (pg_basebackup, a copied data directory: the
# same system identifier and catalog, commit records included) with its own
# node_name must leave the other's prepared transactions alone.
$coord->stop('fast');
my $clone = PostgreSQL::Test::Cluster->new('clone');
PostgreSQL::Test::RecursiveCopy::copypath($coord->data_dir, $clone->data_dir);
chmod 0700, $clone->data_dir;
$clone->append_conf('postgresql.conf',
	'port = ' . $clone->port . "\ntenant_router.node_name = 'coordB'\n");
$clone->start;
$coord->start;
$shard2->start;
is(prepared_on($shard2), '1', 'shard2 still holds its part after the restart');
is($clone->safe_psql('postgres', 'SELECT tenant_router.recover_prepared_transactions()'), '0',
	'a clone of the coordinator resolves none of its prepared transactions');
is(prepared_on($shard2), '1', 'shard2 still holds the part the clone left alone');
$clone->stop;
is(recover(), '1', 'recovery resolves one prepared transaction');
is(rows_on($shard2, 1) + 0, 2, 'shard2 committed its part');
is(prepared_on($shard2), '0', 'nothing is left prepared on shard2');

# A shard without prepared transactions: a clear error, nothing changed.
($rc, $out, $err) = $coord->psql('postgres', q{
	BEGIN;
	INSERT INTO t VALUES (5, 5);
	INSERT INTO t VALUES (20005, 5);
	COMMIT;
}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/55000.*shard "shard3" cannot take part.*max_prepared_transactions/s,
	'a shard with max_prepared_transactions = 0: the error names the setting');
is(rows_on($shard1, 5), '0', 'nothing changed on the other shard');
is(prepared_on($shard1), '0', 'nothing left prepared on the other shard');

# multi_shard_writes = refuse: the second shard is an error, nothing changes.
($rc, $out, $err) = $coord->psql('postgres', q{
	SET tenant_router.multi_shard_writes = refuse;
	BEGIN;
	INSERT INTO t VALUES (6, 6);
	INSERT INTO t VALUES (10006, 6);
	COMMIT;
}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/0A000.*more than one shard.*multi_shard_writes/s, 'refuse: the error names the setting');
is(rows_on($shard1, 6) . rows_on($shard2, 6), '00', 'refuse: nothing changed');

# Concurrent statements over the same shards queue instead of deadlocking
# across them (the first shard's rows are taken first): four clients
# updating every row of two shards all finish (shard3, which cannot
# prepare, is left out).  A hang fails the run.
$coord->safe_psql('postgres', q{
	CREATE TABLE acct (tenant_id bigint NOT NULL, id int NOT NULL, bal bigint NOT NULL,
					   PRIMARY KEY (tenant_id, id));
	SELECT logical_table_add('acct');
	INSERT INTO acct SELECT g * 100, 1, 1000 FROM generate_series(1, 200) g;
});
# the shards' own deadlocks between these full-table updates (rows met in
# another order) are theirs to break: quickly, so that the run stays short
for my $shard ($shard1, $shard2)
{
	$shard->append_conf('postgresql.conf', "deadlock_timeout = '100ms'\n");
	$shard->reload;
}
my $script = $coord->basedir . '/update_all.sql';
append_to_file($script, "UPDATE acct SET bal = bal + 1 WHERE tenant_id <= 20000;\n");
my ($pgb_out, $pgb_err) = ('', '');
my $pgb = IPC::Run::start(
	[ 'pgbench', '--no-vacuum', '--client=4', '--jobs=2', '--transactions=40',
	  '--max-tries=10', '--file', $script, '-h', $coord->host, '-p', $coord->port, 'postgres' ],
	'>', \$pgb_out, '2>', \$pgb_err, IPC::Run::timeout(120));
eval { $pgb->finish; };
my $hung = $@;
$pgb->kill_kill if $hung;
is($hung, '', 'four clients updating every row of two shards at once do not hang');
my ($processed) = $pgb_out =~ m{processed: (\d+)/160};
ok(defined $processed && $processed >= 150, 'nearly all of them commit (retried on a shard\'s own 40P01)')
  or diag($pgb_out . $pgb_err);
is($coord->safe_psql('postgres', 'SELECT sum(bal) FROM acct'), 200 * (1000 + ($processed // 0)),
	'every committed update changed every row once');

done_testing();
