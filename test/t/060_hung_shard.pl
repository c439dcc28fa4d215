# A shard whose processes are stopped (SIGSTOP) must never hold a
# coordinator backend: statement_timeout, pg_cancel_backend and
# pg_terminate_backend work while a statement waits on it and while the
# transaction's abort cleans up after it, and a new connection to it gives
# up after tenant_router.connect_timeout; COMMIT gives up after
# tenant_router.commit_timeout.
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
	conf => ["tenant_router.connect_timeout = 2"]);
my ($dsn1, $dsn2) = map { TenantRouter::Test->dsn($_) } ($shard1, $shard2);
$coord->safe_psql('postgres', qq{
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	CREATE TABLE t (tenant_id bigint NOT NULL, v int);
	SELECT logical_table_add('t');
	INSERT INTO t VALUES (5, 1), (15000, 2);
});

# the postmaster of a node and its children
sub processes
{
	my ($node) = @_;
	my ($pid) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
	my @children = split /\s+/, `ps -o pid= --ppid $pid`;
	return grep { /^\d+$/ } ($pid, @children);
}

my $stopped;
sub stop_shard { $stopped = $_[0]; kill 'STOP', processes($_[0]); }
sub cont_shard { kill 'CONT', processes($_[0]); $stopped = undef; }

# a stopped shard is resumed whatever happens, so that it can be shut down
END { kill 'CONT', processes($stopped) if $stopped; }

# A session with a cached connection to shard1, and one that has none.
my $cached = $coord->background_psql('postgres', on_error_stop => 0);
is($cached->query_safe('SELECT v FROM t WHERE tenant_id = 5'), '1', 'connection to shard1 cached');
my $cached_pid = $cached->query_safe('SELECT pg_backend_pid()');

stop_shard($shard1);

# statement_timeout: the statement fails, and the abort does not hang
my $t0 = time;
$cached->query("SET statement_timeout = '2s'");
$cached->{stderr} = '';
$cached->query('SELECT v FROM t WHERE tenant_id = 5');
my $elapsed = time - $t0;
like($cached->{stderr}, qr/statement timeout/, 'the statement times out');
cmp_ok($elapsed, '<', 15, "and the backend is free again after the abort ($elapsed s)");
$cached->{stderr} = '';
$cached->query("RESET statement_timeout");
is($cached->query_safe('SELECT v FROM t WHERE tenant_id = 15000'), '2',
	'the session goes on with the other shard');

# pg_cancel_backend while waiting on the stopped shard
my $waiting = $coord->background_psql('postgres', on_error_stop => 0);
my $waiting_pid = $waiting->query_safe('SELECT pg_backend_pid()');
is($waiting->query_safe('SELECT v FROM t WHERE tenant_id = 15000'), '2', 'second session ready');
$waiting->{stderr} = '';
$waiting->query_until(qr/sent/, "\\echo sent\nBEGIN; SELECT count(*) FROM t;\n");
usleep(500_000);
$t0 = time;
$coord->safe_psql('postgres', "SELECT pg_cancel_backend($waiting_pid)");
ok($coord->poll_query_until('postgres',
		"SELECT state <> 'active' FROM pg_stat_activity WHERE pid = $waiting_pid"),
	'pg_cancel_backend frees a backend waiting on a stopped shard');
$elapsed = time - $t0;
cmp_ok($elapsed, '<', 15, "within seconds ($elapsed s)");
$waiting->{stderr} = '';
$waiting->query('ROLLBACK');
$waiting->quit;

# pg_terminate_backend too, for a session in the same wait
$waiting = $coord->background_psql('postgres', on_error_stop => 0);
$waiting_pid = $waiting->query_safe('SELECT pg_backend_pid()');
$waiting->query_safe('SELECT v FROM t WHERE tenant_id = 15000');
$waiting->query_until(qr/sent/, "\\echo sent\nSELECT count(*) FROM t;\n");
usleep(500_000);
$t0 = time;
$coord->safe_psql('postgres', "SELECT pg_terminate_backend($waiting_pid)");
ok($coord->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $waiting_pid"),
	'pg_terminate_backend ends a backend waiting on a stopped shard');
$elapsed = time - $t0;
cmp_ok($elapsed, '<', 15, "within seconds ($elapsed s)");
eval { $waiting->quit; };

# a new connection to the stopped shard gives up after connect_timeout
my ($rc, $out, $err);
$t0 = time;
($rc, $out, $err) = $coord->psql('postgres', 'SELECT v FROM t WHERE tenant_id = 5');
$elapsed = time - $t0;
like($err, qr/could not connect to shard "shard1".*timeout expired/s,
	'a new connection to the stopped shard fails naming the shard and the timeout');
cmp_ok($elapsed, '<', 10, "after tenant_router.connect_timeout ($elapsed s)");

cont_shard($shard1);
$cached->quit;
is($coord->safe_psql('postgres', 'SELECT v FROM t WHERE tenant_id = 5'), '1',
	'the shard serves again once resumed');

# COMMIT, which statement_timeout does not cover, waits at most
# tenant_router.commit_timeout for a shard.  The shard is stopped between
# the write and the COMMIT, from the session's own script.
sub commit_with_shard1_stopped
{
	my ($writes) = @_;
	# the postmaster and its children at that moment (the session's backend too)
	my ($pm) = split /\n/, slurp_file($shard1->data_dir . '/postmaster.pid');
	$stopped = $shard1;
	my $t0 = time;
	my ($rc, $out, $err) = $coord->psql('postgres', qq{
		\\set VERBOSITY verbose
		SET tenant_router.commit_timeout = '2s';
		BEGIN;
		$writes;
		\\! kill -STOP $pm \$(ps -o pid= --ppid $pm)
		COMMIT;
	}, on_error_stop => 0, timeout => 60, timed_out => \my $timed_out);
	my $elapsed = time - $t0;
	cont_shard($shard1);
	$err .= 'psql timed out' if $timed_out;
	return ($err, $elapsed);
}

# two-phase commit: fails, and changes nothing
($err, $elapsed) = commit_with_shard1_stopped('UPDATE t SET v = v + 10 WHERE tenant_id IN (5, 15000)');
like($err, qr/08006: shard "shard1" did not answer the commit within tenant_router.commit_timeout/,
	'a two-phase COMMIT with a stopped shard fails (08006)');
cmp_ok($elapsed, '<', 10, "after tenant_router.commit_timeout ($elapsed s)");
$coord->safe_psql('postgres', 'SELECT tenant_router.recover_prepared_transactions()');
is($coord->safe_psql('postgres', q{SELECT string_agg(v::text, ',' ORDER BY tenant_id) FROM t}),
	'1,2', 'nothing changed on either shard');
is($shard1->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts')
	  + $shard2->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'),
	0, 'no prepared transaction is left');

# one-phase commit of a single shard: its outcome is unknown (08007)
($err, $elapsed) = commit_with_shard1_stopped('UPDATE t SET v = 100 WHERE tenant_id = 5');
like($err, qr/08007: shard "shard1" did not answer COMMIT within tenant_router.commit_timeout/,
	'a one-phase COMMIT with a stopped shard fails with transaction_resolution_unknown');
cmp_ok($elapsed, '<', 10, "after tenant_router.commit_timeout ($elapsed s)");
is($coord->safe_psql('postgres', 'SELECT v FROM t WHERE tenant_id = 15000'), '2',
	'the coordinator goes on');

# A shard stopped after its PREPARE, before the second phase: COMMIT
# succeeds once tenant_router.commit_timeout has passed for it, warning about
# that shard only (not about another whose COMMIT PREPARED answered while the
# stopped one was waited for).  shard2 sleeps at PREPARE (a deferred
# trigger) while shard1, prepared, is stopped.
$shard2->safe_psql('postgres', q{
	CREATE FUNCTION public.slow_prepare() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$;
	CREATE CONSTRAINT TRIGGER slow_prepare AFTER UPDATE ON public.t
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.v = 4242)
		EXECUTE FUNCTION public.slow_prepare();
});
{
	my ($pm) = split /\n/, slurp_file($shard1->data_dir . '/postmaster.pid');
	$stopped = $shard1;
	my ($rc, $out, $err) = $coord->psql('postgres', qq{
		SET tenant_router.commit_timeout = '4s';
		BEGIN;
		UPDATE t SET v = 4242 WHERE tenant_id = 5;
		UPDATE t SET v = 4242 WHERE tenant_id = 15000;
		\\! (sleep 1; kill -STOP $pm \$(ps -o pid= --ppid $pm)) &
		COMMIT;
	}, on_error_stop => 0, timeout => 60, timed_out => \my $timed_out);
	cont_shard($shard1);
	ok(!$timed_out && $rc == 0, 'COMMIT succeeds with shard1 stopped in the second phase');
	like($err, qr/could not commit prepared transaction "tr_[^"]*" on shard "shard1"/,
		'COMMIT warns that shard1 keeps its part prepared');
	unlike($err, qr/on shard "shard2"/, 'and says nothing about shard2, which committed');
	is($shard2->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0',
		'shard2 has committed its part');
	$coord->safe_psql('postgres', 'SELECT tenant_router.recover_prepared_transactions()');
	is($coord->safe_psql('postgres', q{SELECT string_agg(v::text, ',' ORDER BY tenant_id) FROM t}),
		'4242,4242', 'once recovered, both shards hold the commit');
}

done_testing();
