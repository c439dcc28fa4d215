# The ordered topology where Redis or the caller misbehaves (review of issue
# 11's ordering), each part failing on the old code:
#  - Redis forgets the scripts between SCRIPT LOAD and EVALSHA, twice (a
#    proxy flushes the script cache before every EVALSHA): the change fails
#    with 08006 naming NOSCRIPT, the server stays up (the old code freed the
#    reply twice and crashed the backend).
#  - a statement_timeout fires while a change waits on a shard, and the log
#    moves meanwhile: the caller gets 57014 and nothing is added (the old
#    code swallowed the cancel and tried the change again, which succeeded).
#  - the log on Redis loses its end (the stream is deleted, the snapshot
#    kept): a change still goes through within seconds, both coordinators
#    agree, and the server log says Redis lost its last entries (the old
#    code spun until the statement_timeout).
#  - a control plane's ADD_SHARD reaches two coordinators while a session
#    on the new shard creates its table: both fail with a unique violation
#    when it commits, try again and apply it (the old code recorded it as
#    rejected: the shard was added nowhere).
#  - a change whose transaction goes on after it was ordered is not
#    followed by the others before it commits (the old code recorded it as
#    applied when it was appended).
#  - a coordinator declared the only one makes three changes in one
#    transaction (add s3, remove s3, add s3b on the same range): when they
#    come back from the log they are not applied again, each is recorded as
#    applied, on Redis too (the old code applied them again and recorded
#    all three as rejected: the others would have skipped them).
use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use TenantRouter::Test;

my $channel = 'db_shard_topology_updates';
my $redis = TenantRouter::Test->start_redis;
my $server = TenantRouter::Test->new_shard('server');
my %dsn;
for my $db (qw(s1 s2 s3 s4 s5 sb race sx solo3 solo3b late paused))
{
	$server->safe_psql('postgres', "CREATE DATABASE $db");
	$dsn{$db} = TenantRouter::Test->dsn($server, $db);
}

# a proxy in front of Redis that flushes its script cache before passing on
# an EVALSHA while $flag exists
my $flag = PostgreSQL::Test::Utils::tempdir('proxy') . '/flush';
# and that holds Redis's answers back for 3 s after passing on the EVALSHA
# of an ADD_SHARD change while $delay exists (once)
my $delay = $flag . '.delay';
my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
	Listen => 16, ReuseAddr => 1) or die "proxy: $!";
my $proxy_port = $listen->sockport;
my $proxy_pid = fork;
die "fork: $!" unless defined $proxy_pid;
if ($proxy_pid == 0)
{
	my $sel = IO::Select->new($listen);
	my (%peer, %client);
	for (;;)
	{
		for my $s ($sel->can_read)
		{
			if ($s == $listen)
			{
				my $c = $listen->accept or next;
				my $r = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
					PeerPort => $redis->{port}) or do { close $c; next };
				$peer{$c} = $r;
				$peer{$r} = $c;
				$client{$c} = 1;
				$sel->add($c, $r);
				next;
			}
			next unless $peer{$s};	# closed with its peer in this round
			my $n = sysread($s, my $buf, 65536);
			if (!$n)
			{
				my $o = $peer{$s};
				$sel->remove($s, $o);
				delete @peer{ $s, $o };
				delete @client{ $s, $o };
				close $s;
				close $o;
				next;
			}
			if ($client{$s} && -e $flag && $buf =~ /EVALSHA/)
			{
				my $f = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
					PeerPort => $redis->{port});
				if ($f)
				{
					syswrite($f, "*2\r\n\$6\r\nSCRIPT\r\n\$5\r\nFLUSH\r\n");
					sysread($f, my $ok, 100);
					close $f;
				}
			}
			my $off = 0;
			while ($off < length $buf)
			{
				my $w = syswrite($peer{$s}, $buf, length($buf) - $off, $off);
				last unless defined $w;
				$off += $w;
			}
			if ($client{$s} && -e $delay && $buf =~ /EVALSHA/ && $buf =~ /ADD_SHARD/)
			{
				unlink $delay;
				sleep 3;
			}
		}
	}
	exit 0;
}
close $listen;
END { kill 'KILL', $proxy_pid if $proxy_pid; }

my $a = TenantRouter::Test->new_coordinator('coord_a', redis => $redis,
	conf => ["tenant_router.node_name = 'a'"]);
my $b = TenantRouter::Test->new_coordinator('coord_b', redis => $redis,
	conf => ["tenant_router.node_name = 'b'"]);
my $p = TenantRouter::Test->new_coordinator('coord_p', redis => { port => $proxy_port },
	conf => [ "tenant_router.node_name = 'p'", "tenant_router.topology_channel = 'proxied'" ]);
TenantRouter::Test->wait_subscribers($redis, $channel, 2);
TenantRouter::Test->wait_subscribers($redis, 'proxied', 1);

sub shards
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT coalesce(string_agg(shard_id || ':' || range_start || '..' || range_end, ' ' ORDER BY shard_id), '')
		  FROM tenant_router.shard});
}

sub agree
{
	my ($want, $what) = @_;
	for my $node ($a, $b)
	{
		ok($node->poll_query_until('postgres', q{
				SELECT coalesce(string_agg(shard_id || ':' || range_start || '..' || range_end, ' ' ORDER BY shard_id), '')
				  FROM tenant_router.shard}, $want),
			$node->name . ": $what");
	}
}

# --- Redis forgets the scripts twice in a row -----------------------------
ok($p->poll_query_until('postgres',
		q{SELECT epoch IS NOT NULL FROM tenant_router.worker_state}),
	'the proxied coordinator follows a log');
open my $fh, '>', $flag or die;
close $fh;
my ($ret, $out, $err) = $p->psql('postgres',
	"SELECT shard_add('s5', 1, 100, '$dsn{s5}')", on_error_stop => 0);
unlink $flag;
like($err, qr/ERROR/, 'a change fails while Redis forgets its scripts before each call');
like($err, qr/Redis at .* is unreachable/, 'it says Redis failed');
like($err, qr/NOSCRIPT/, 'and why: the script was forgotten twice');
is($p->safe_psql('postgres', 'SELECT 1'), '1', 'the server is still up');
$p->safe_psql('postgres', "SELECT shard_add('s5', 1, 100, '$dsn{s5}')");
is(shards($p), 's5:1..100', 'a change goes through once Redis keeps its scripts');

# --- Redis makes a change, but answers after the timeout --------------------
# The caller finds its entries in the log, waits for its worker to apply
# them and succeeds (the old code failed with 08006, while the change came
# into force all the same).
open $fh, '>', $delay or die;
close $fh;
($ret, $out, $err) = $p->psql('postgres', "SELECT shard_add('late', 201, 300, '$dsn{late}')",
	on_error_stop => 0);
unlike($err, qr/ERROR/, 'a change that Redis made but answered late succeeds') or diag($err);
like($err, qr/answered the append of the topology change of shard_add\(\) late/, 'saying so');
is(shards($p), 'late:201..300 s5:1..100', 'it is in force');
is($p->safe_psql('postgres', q{SELECT count(*) FROM tenant_router.events WHERE shard_id = 'late' AND status = 'applied'}),
	'1', 'applied once, by the topology worker');
my $crashed = slurp_file($p->logfile) =~ /terminated by signal/;
ok(!$crashed, 'no process of the proxied coordinator crashed');
$p->stop;

# --- a statement_timeout while the log moves --------------------------------
for my $node ($a, $b)
{
	$node->safe_psql('postgres', q{
		SET client_min_messages = warning;
		CREATE TABLE users (tenant_id bigint NOT NULL, who text);
		SELECT logical_table_add('users');
	});
}
$a->safe_psql('postgres', "SELECT shard_add('s1', 1, 10000, '$dsn{s1}')");
agree('s1:1..10000', 'the first shard everywhere');

# a session on the new shard creates the table the change creates there, and
# keeps its transaction open 8 s: the change waits on it
my ($bin, $bout, $berr) = ('', '', '');
my $blocker = IPC::Run::start(
	[ 'psql', '-X', '-q', '-d', $dsn{sb} ],
	'<', \$bin, '>', \$bout, '2>', \$berr);
$bin .= "BEGIN;\nCREATE TABLE users (tenant_id bigint NOT NULL, who text);\nSELECT pg_sleep(8);\nROLLBACK;\n";
$blocker->pump_nb;
ok($server->poll_query_until('sb',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(8)%'}),
	'the blocking session holds its table');
my ($cout, $cerr) = ('', '');
my $started = time;
my $call = IPC::Run::start(
	[ 'psql', '-X', '-d', $a->connstr('postgres'), '-c', "SET statement_timeout = '3s'",
		'-c', "SELECT shard_add('sb', 10001, 20000, '$dsn{sb}')" ],
	'>', \$cout, '2>', \$cerr);
sleep 1;
# the log moves while the change waits (a control plane's entry)
TenantRouter::Test->redis_cli($redis, 'XADD', "$channel:log", '*', 'event',
	'{"op": "REMOVE_SHARD", "payload": {"shard_id": "nope"}}');
$call->finish;
my $took = time - $started;
like($cerr, qr/canceling statement due to statement timeout/,
	'the caller gets its statement timeout');
ok($took < 6, sprintf('at once (%.1f s), not after another try', $took));
$blocker->finish;
$a->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE '%shard_add%' AND pid <> pg_backend_pid()});
is(shards($a), 's1:1..10000', 'the change was not made');
agree('s1:1..10000', 'nobody has it');

# --- the log loses its end ---------------------------------------------------
$a->safe_psql('postgres', "SELECT shard_add('s2', 10001, 20000, '$dsn{s2}')");
agree('s1:1..10000 s2:10001..20000', 'both have s2');
my $epoch_before = $a->safe_psql('postgres', 'SELECT epoch FROM tenant_router.worker_state');
my $log_offset = -s $a->logfile;
my $log_offset_b = -s $b->logfile;
TenantRouter::Test->redis_cli($redis, 'DEL', "$channel:log");
$started = time;
($ret, $out, $err) = $a->psql('postgres',
	"SET statement_timeout = '20s'; SELECT shard_add('s3', 20001, 30000, '$dsn{s3}')",
	on_error_stop => 0);
$took = time - $started;
is($ret, 0, 'a change goes through after the log lost its end') or diag($err);
ok($took < 15, sprintf('within seconds (%.1f s)', $took));
agree('s1:1..10000 s2:10001..20000 s3:20001..30000', 'both have the change');
my $lost_said = 0;
for my $node ([ $a, $log_offset ], [ $b, $log_offset_b ])
{
	$lost_said ||= slurp_file($node->[0]->logfile, $node->[1]) =~ /Redis lost its last entries/;
}
ok($lost_said, 'a server log says Redis lost its last entries');
isnt($a->safe_psql('postgres', 'SELECT epoch FROM tenant_router.worker_state'), $epoch_before,
	'they follow a new log');
$b->safe_psql('postgres', "SELECT shard_add('s4', 30001, 40000, '$dsn{s4}')");
agree('s1:1..10000 s2:10001..20000 s3:20001..30000 s4:30001..40000',
	'and take changes from either');

# --- two coordinators decide one entry while its table is being created -----
# A control plane XADDs an ADD_SHARD; a session on the new shard is creating
# the shard's table at that moment: both workers wait on it and, when it
# commits, fail with a unique violation.  That may pass: they try again, find
# the table and apply the entry (the old code recorded it as rejected and the
# shard was added nowhere).
($bin, $bout, $berr) = ('', '', '');
$blocker = IPC::Run::start(
	[ 'psql', '-X', '-q', '-d', $dsn{race} ],
	'<', \$bin, '>', \$bout, '2>', \$berr);
$bin .= "BEGIN;\nCREATE TABLE users (tenant_id bigint NOT NULL, who text);\nSELECT pg_sleep(2);\nCOMMIT;\n";
$blocker->pump_nb;
ok($server->poll_query_until('race',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(2)%'}),
	'a session on the new shard is creating its table');
TenantRouter::Test->redis_cli($redis, 'EVAL',
	"redis.call('XADD', KEYS[1], '*', 'event', ARGV[1]) return redis.call('PUBLISH', KEYS[2], ARGV[1])",
	'2', "$channel:log", $channel,
	qq({"op": "ADD_SHARD", "payload": {"shard_id": "race", "range_start": 40001, "range_end": 50000, "dsn": "$dsn{race}"}}));
$blocker->finish;
agree('race:40001..50000 s1:1..10000 s2:10001..20000 s3:20001..30000 s4:30001..40000',
	'the entry is applied everywhere, not rejected');
is($a->safe_psql('postgres', q{SELECT string_agg(status, ',') FROM tenant_router.events WHERE shard_id = 'race'}),
	'applied', 'recorded as applied');

# --- a change is not followed before its transaction commits ----------------
# a's change is in the order, but its transaction goes on for 3 s: b does
# not make the catalog change meanwhile (its tables on the new shard are not
# committed yet); it follows once a's transaction has committed (the old
# code recorded the outcome as the change was appended: b followed at once)
($cout, $cerr) = ('', '');
$call = IPC::Run::start(
	[ 'psql', '-X', '-d', $a->connstr('postgres'), '-c',
		"SELECT shard_add('sx', 50001, 60000, '$dsn{sx}'), pg_sleep(3)" ],
	'>', \$cout, '2>', \$cerr);
ok($a->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND wait_event = 'PgSleep'}),
	'the change is in its transaction');
usleep(1_000_000);
is($b->safe_psql('postgres', q{SELECT count(*) FROM tenant_router.shard WHERE shard_id = 'sx'}),
	'0', 'the other coordinator does not follow it before it commits');
$call->finish;
is($cerr, '', 'the change succeeds');
agree('race:40001..50000 s1:1..10000 s2:10001..20000 s3:20001..30000 s4:30001..40000 sx:50001..60000',
	'both have it once it committed');
is(TenantRouter::Test->redis_cli($redis, 'HVALS', "$channel:outcome") =~ /rejected: .*sx/ ? 'rejected' : 'ok',
	'ok', 'nobody recorded it as rejected');

# --- a single coordinator's own changes come back from the log ---------------
my $solo = TenantRouter::Test->new_coordinator('coord_solo', redis => $redis,
	conf => [ "tenant_router.node_name = 'solo'", "tenant_router.topology_channel = 'solo'",
		'tenant_router.single_coordinator = on' ]);
TenantRouter::Test->wait_subscribers($redis, 'solo', 1);
ok($solo->poll_query_until('postgres',
		q{SELECT epoch IS NOT NULL FROM tenant_router.worker_state}),
	'the single coordinator follows its log');
$solo->safe_psql('postgres', qq{
	BEGIN;
	SELECT shard_add('s3', 1, 100, '$dsn{solo3}');
	SELECT shard_remove('s3');
	SELECT shard_add('s3b', 1, 100, '$dsn{solo3b}');
	COMMIT;
});
ok($solo->poll_query_until('postgres',
		q{SELECT count(*) = 3 FROM tenant_router.events WHERE source <> 'sql' AND op IN ('ADD_SHARD', 'REMOVE_SHARD')}),
	'the worker read its three changes back from the log')
  or diag($solo->safe_psql('postgres', 'SELECT * FROM tenant_router.events'));
is($solo->safe_psql('postgres',
		q{SELECT string_agg(op || ' ' || shard_id || ' ' || status, ', ' ORDER BY id)
		    FROM tenant_router.events WHERE source <> 'sql' AND op IN ('ADD_SHARD', 'REMOVE_SHARD')}),
	'ADD_SHARD s3 applied, REMOVE_SHARD s3 applied, ADD_SHARD s3b applied',
	'each is recorded as applied, not applied again');
is(shards($solo), 's3b:1..100', 'the catalog holds what the transaction made');
my $outcomes = TenantRouter::Test->redis_cli($redis, 'HVALS', 'solo:outcome');
is(join(',', sort split /\n/, $outcomes), 'applied,applied,applied',
	'their outcomes on Redis say applied, for the other coordinators');


# --- Redis runs a change after its caller gave up ---------------------------
# CLIENT PAUSE WRITE holds the append's script for 3 s (reads go on): the
# caller's 2 s timeout expires, it finds nothing in the log and fails with
# 08006; when Redis runs the script, past its expiry, it changes nothing
# (the old code's script appended it then: the change came into force on
# every coordinator although its caller had been told it failed).
my $before = shards($a);
TenantRouter::Test->redis_cli($redis, 'CLIENT', 'PAUSE', '3000', 'WRITE');
($ret, $out, $err) = $a->psql('postgres', "SELECT shard_add('paused', 901, 1000, '$dsn{paused}')",
	on_error_stop => 0);
like($err, qr/Redis at .* is unreachable/, 'a change that Redis holds past its expiry fails');
sleep 3;
is(shards($a), $before, 'and is not in force once Redis has run it');
is(TenantRouter::Test->redis_cli($redis, 'XRANGE', "$channel:log", '-', '+') =~ /paused/ ? 'in the log' : 'not in the log',
	'not in the log', 'nor in the log');

$_->stop for ($a, $b, $solo);
done_testing();
