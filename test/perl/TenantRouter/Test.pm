# TenantRouter::Test — multi-server fixtures for tenant_router's TAP tests.
#
#   my $redis = TenantRouter::Test->start_redis;          # redis-server on a free port
#   my $shard = TenantRouter::Test->new_shard('shard1');  # plain PostgreSQL, started
#   my $coord = TenantRouter::Test->new_coordinator('coord', redis => $redis,
#                   conf => ["tenant_router.node_name = 'a'"]);   # preloaded, extension created
#   my $dsn   = TenantRouter::Test->dsn($shard);
#   TenantRouter::Test->redis_cli($redis, 'PUBLISH', $channel, $json);
#   TenantRouter::Test->wait_subscribers($redis, $channel, 2);
#
# Every server lives under the test's temporary directory and is stopped at
# the end of the test, pass or fail (PostgreSQL::Test::Cluster stops its
# nodes; the END block below stops the redis-servers).
package TenantRouter::Test;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);

my @redis_servers;

sub start_redis
{
	my ($class) = @_;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $dir = PostgreSQL::Test::Utils::tempdir('redis');
	my $redis = { port => $port, dir => $dir, pidfile => "$dir/redis.pid" };
	$class->_launch_redis($redis);
	push @redis_servers, $redis;
	return $redis;
}

sub _launch_redis
{
	my ($class, $redis) = @_;
	system('redis-server', '--port', $redis->{port}, '--bind', '127.0.0.1',
		'--save', '', '--appendonly', 'no', '--dir', $redis->{dir},
		'--daemonize', 'yes', '--pidfile', $redis->{pidfile},
		'--logfile', "$redis->{dir}/redis.log") == 0
	  or die "could not start redis-server";
	for (1 .. 100)
	{
		my $pong = `redis-cli -h 127.0.0.1 -p $redis->{port} PING 2>/dev/null`;
		return if defined $pong && $pong =~ /PONG/;
		usleep(50_000);
	}
	die "redis-server on port $redis->{port} did not start";
}

# stop_redis and restart_redis simulate an outage; the port stays the same.
sub stop_redis
{
	my ($class, $redis) = @_;
	return unless -f $redis->{pidfile};
	open my $fh, '<', $redis->{pidfile} or return;
	my $pid = <$fh>;
	close $fh;
	chomp $pid;
	kill 'TERM', $pid;
	for (1 .. 100)
	{
		last unless kill 0, $pid;
		usleep(50_000);
	}
	unlink $redis->{pidfile};
}

sub restart_redis
{
	my ($class, $redis) = @_;
	$class->_launch_redis($redis);
}

# redis_cli runs one redis-cli command and returns its output, chomped.
sub redis_cli
{
	my ($class, $redis, @args) = @_;
	my ($stdout, $stderr);
	IPC::Run::run([ 'redis-cli', '-h', '127.0.0.1', '-p', $redis->{port}, @args ],
		'>', \$stdout, '2>', \$stderr);
	chomp $stdout if defined $stdout;
	return $stdout;
}

# wait_subscribers waits until n clients are subscribed to channel.
sub wait_subscribers
{
	my ($class, $redis, $channel, $n) = @_;
	for (1 .. 600)
	{
		my $out = $class->redis_cli($redis, 'PUBSUB', 'NUMSUB', $channel) // '';
		my (undef, $count) = split /\n/, $out;
		return 1 if defined $count && $count >= $n;
		usleep(100_000);
	}
	die "fewer than $n subscribers to $channel";
}

sub new_shard
{
	my ($class, $name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	# logical replication: shard_split copies rows with it
	$node->append_conf('postgresql.conf',
		"max_prepared_transactions = 20\nwal_level = logical\n"
		  . "max_wal_senders = 10\nmax_replication_slots = 10\n");
	$node->start;
	return $node;
}

sub new_coordinator
{
	my ($class, $name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my $conf = "shared_preload_libraries = 'tenant_router'\n"
	  . "tenant_router.database = 'postgres'\n"
	  . "max_prepared_transactions = 20\n";
	if ($opts{redis})
	{
		$conf .= "tenant_router.redis_host = '127.0.0.1'\n"
		  . "tenant_router.redis_port = $opts{redis}->{port}\n";
	}
	else
	{
		$conf .= "tenant_router.redis_host = ''\n";
	}
	$conf .= "$_\n" for @{ $opts{conf} || [] };
	$node->append_conf('postgresql.conf', $conf);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION tenant_router');
	return $node;
}

# dsn returns the libpq connection string of a node's postgres database.
sub dsn
{
	my ($class, $node, $dbname) = @_;
	$dbname //= 'postgres';
	return 'host=' . $node->host . ' port=' . $node->port . " dbname=$dbname";
}

END
{
	my $status = $?;
	TenantRouter::Test->stop_redis($_) for @redis_servers;
	$? = $status;
}

1;
