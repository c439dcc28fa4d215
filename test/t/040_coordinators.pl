# 040_coordinators.pl — coordinators over the same two shards: ids drawn for
# the same tenant never collide once each coordinator has its own sequence
# block (and do collide without, which is what the blocks are for); a third
# coordinator, started later, takes the logical tables from a shard with
# IMPORT FOREIGN SCHEMA and draws ids from a block of its own.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TenantRouter::Test;

my $shard1 = TenantRouter::Test->new_shard('shard1');
my $shard2 = TenantRouter::Test->new_shard('shard2');
my $coord_a = TenantRouter::Test->new_coordinator('coord_a');
my $coord_b = TenantRouter::Test->new_coordinator('coord_b');
my $dsn1 = TenantRouter::Test->dsn($shard1);
my $dsn2 = TenantRouter::Test->dsn($shard2);

for my $coord ($coord_a, $coord_b)
{
	$coord->safe_psql('postgres', qq{
		SET client_min_messages = error;
		CREATE TABLE users (
			id SERIAL PRIMARY KEY,
			tenant_id BIGINT NOT NULL,
			username VARCHAR(100) NOT NULL);
		SELECT logical_table_add('users');
		SELECT shard_add('shard1', 1, 10000, '$dsn1');
		SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	});
}

# Without blocks both coordinators draw 1, 2, ...: the second insert of the
# same id fails on the shard.
$coord_a->safe_psql('postgres',
	q{INSERT INTO users (tenant_id, username) VALUES (7, 'from a')});
my ($rc, $out, $err) = $coord_b->psql('postgres',
	q{INSERT INTO users (tenant_id, username) VALUES (7, 'from b')});
isnt($rc, 0, 'without sequence blocks, the second coordinator draws an id the first used');
like($err, qr/duplicate key value violates unique constraint "users_pkey"/,
	'and the shard refuses the duplicate id');

# Each coordinator its own block: ids never meet.
$coord_a->safe_psql('postgres', 'SELECT sequence_block_set(1)');
$coord_b->safe_psql('postgres', 'SELECT sequence_block_set(2)');
is( $coord_a->safe_psql('postgres',
		q{SELECT seqmin || '..' || seqmax FROM pg_sequence WHERE seqrelid = 'users_id_seq'::regclass}),
	'33554432..67108862', 'coordinator a draws from block 1 of the integer range');
is( $coord_b->safe_psql('postgres',
		q{SELECT seqmin || '..' || seqmax FROM pg_sequence WHERE seqrelid = 'users_id_seq'::regclass}),
	'67108863..100663293', 'coordinator b draws from block 2');

# Both insert rows of the same tenants at the same time, many statements each.
my @sessions;
for my $coord ($coord_a, $coord_b)
{
	my $name = $coord->name;
	my $script = join('',
		map { "INSERT INTO users (tenant_id, username) VALUES (7, '$name $_'), (15000, '$name $_');\n" }
		  1 .. 100);
	my ($stdout, $stderr) = ('', '');
	push @sessions,
	  IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $coord->connstr('postgres') ],
		'<', \$script, '>', \$stdout, '2>', \$stderr);
}
for my $h (@sessions)
{
	ok($h->finish, 'a coordinator inserted 200 rows while the other did too');
}

for my $shard ([ 'shard1', $shard1 ], [ 'shard2', $shard2 ])
{
	my ($name, $node) = @$shard;
	is( $node->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT id) FROM users'),
		'0', "$name holds no id twice");
}
is( $shard1->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE username LIKE 'coord_a %' AND id BETWEEN 33554432 AND 67108862)
		     + count(*) FILTER (WHERE username LIKE 'coord_b %' AND id BETWEEN 67108863 AND 100663293)
		  FROM users}),
	'200', 'each coordinator\'s ids come from its own block');
is( $coord_a->safe_psql('postgres', 'SELECT count(*) FROM users WHERE tenant_id = 7'),
	'201', 'coordinator a reads every row of the tenant, whoever inserted it');

# A new coordinator: the shards, then the tables from a shard.
my $coord_c = TenantRouter::Test->new_coordinator('coord_c');
$coord_c->safe_psql('postgres', qq{
	SELECT shard_add('shard1', 1, 10000, '$dsn1');
	SELECT shard_add('shard2', 10001, 20000, '$dsn2');
	IMPORT FOREIGN SCHEMA public FROM SERVER tenant_router INTO public;
});
is( $coord_c->safe_psql('postgres',
		'SELECT table_id, tenant_column FROM tenant_router.logical_tables'),
	'users|tenant_id', 'the new coordinator imported the logical table from a shard');
is( $coord_c->safe_psql('postgres', 'SELECT count(*) FROM users'),
	'401', 'and reads every row the other coordinators inserted');
$coord_c->safe_psql('postgres', q{
	SELECT sequence_block_set(3);
	CREATE SEQUENCE users_id_seq AS integer;
	ALTER FOREIGN TABLE users ALTER COLUMN id SET DEFAULT nextval('users_id_seq');
	INSERT INTO users (tenant_id, username) VALUES (7, 'coord_c 1'), (15000, 'coord_c 1');
});
is( $coord_c->safe_psql('postgres',
		q{SELECT min(id) || '..' || max(id) FROM users WHERE username = 'coord_c 1'}),
	'100663294..100663295', 'its ids come from its own block once it has a default');

done_testing();
