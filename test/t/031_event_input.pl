# Event input from Redis, as a careless or hostile control plane sends it:
# bytes that are not UTF-8 (or hold a NUL), numbers that are not JSON
# integers, objects with a field twice -- each rejected with its reason,
# nothing stored as received; secrets in events (a DSN given as an object,
# an extra password) never shown to a role that is not superuser.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TenantRouter::Test;

my $channel = 'db_shard_topology_updates';
my $redis = TenantRouter::Test->start_redis;
my $shard = TenantRouter::Test->new_shard('shard1');
my $dsn = TenantRouter::Test->dsn($shard);
my $node = TenantRouter::Test->new_coordinator('coord', redis => $redis);
TenantRouter::Test->wait_subscribers($redis, $channel, 1);

# publish: PUBLISH the bytes of $event (read by redis-cli from its standard
# input, so that a NUL byte goes through) and wait until the worker has
# recorded it; returns the new row of tenant_router.events as a hash
sub publish
{
	my ($event) = @_;
	my $last = $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM tenant_router.event_log');
	my ($out, $err);
	IPC::Run::run([ 'redis-cli', '-h', '127.0.0.1', '-p', $redis->{port}, '-x', 'PUBLISH', $channel ],
		'<', \$event, '>', \$out, '2>', \$err)
	  or die "redis-cli failed: $err";
	$node->poll_query_until('postgres', "SELECT count(*) > 0 FROM tenant_router.event_log WHERE id > $last")
	  or die "the event was not recorded";
	my $row = $node->safe_psql('postgres', qq{
		SELECT coalesce(op, '') || '|' || coalesce(shard_id, '') || '|' || status || '|' ||
		       coalesce(reason, '') || '|' || coalesce(event, '')
		  FROM tenant_router.event_log WHERE id > $last ORDER BY id LIMIT 1});
	my %r;
	@r{qw(op shard_id status reason event)} = split /\|/, $row, 5;
	return \%r;
}

# dsn_for: a database of its own for each shard (two shards in one database
# are refused); the shard server's own database stays for sec3 below
my %db_of;
sub dsn_for
{
	my ($id) = @_;
	if (!exists $db_of{$id})
	{
		$db_of{$id} = 'ev' . (scalar(keys %db_of) + 1);
		$shard->safe_psql('postgres', "CREATE DATABASE $db_of{$id}");
	}
	return TenantRouter::Test->dsn($shard, $db_of{$id});
}

sub add_shard
{
	my ($id, $start, $end, $extra) = @_;
	$extra //= '';
	my $id_dsn = dsn_for($id);
	return qq({"op": "ADD_SHARD", "payload": {"shard_id": "$id", "range_start": $start, "range_end": $end, "dsn": "$id_dsn"$extra}});
}

sub shards
{
	return $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(shard_id || ':' || range_start || '..' || range_end, ' ' ORDER BY range_start), '') FROM tenant_router.shard});
}

#
# Bytes: an event must be valid UTF-8 (the database's encoding), without a
# NUL byte.  Before, shard_id "bad\xff\xfe" went into the catalog as is,
# and pg_dump's COPY of tenant_router.shard could not be restored.
#
my $r = publish(add_shard("bad\xff\xfe", 1, 100));
is($r->{status}, 'rejected', 'invalid UTF-8 in shard_id: rejected');
like($r->{reason}, qr/invalid byte sequence for encoding "UTF8": 0xff/, 'with the reason');
like($r->{event}, qr/^\(\d+ bytes, not logged\)$/, 'the bytes are not stored in the event log');
is($r->{shard_id}, '', 'nor as its shard_id');
is(shards(), '', 'nothing reached the catalog');
$r = publish(qq({"op": "\xc3\x28", "payload": {"shard_id": "x"}}));
like($r->{reason}, qr/invalid byte sequence/, 'invalid UTF-8 in the op: rejected');
$r = publish(qq({"op": "ADD_SHARD", "payload": {"shard_id": "s\xed\xa0\x80", "range_start": 1, "range_end": 2, "dsn": "x"}}));
like($r->{reason}, qr/invalid byte sequence/, 'an encoded surrogate: rejected');

$node->safe_psql('postgres', "SELECT shard_add('nul1', 1, 100, '" . dsn_for('nul1') . "')");
$r = publish(qq({"op": "REMOVE_SHARD", "payload": {"shard_id": "nul1"}}\0 and what follows));
is($r->{status}, 'rejected', 'a NUL byte after the JSON: rejected (not cut there)');
like($r->{reason}, qr/invalid byte sequence for encoding "UTF8": 0x00/, 'with the reason');
is(shards(), 'nul1:1..100', 'and the shard is still there');
$r = publish(qq({"op": "REMOVE_SHARD", "payload": {"shard_id": "nul1\0"}}));
like($r->{reason}, qr/0x00/, 'a NUL byte inside a string: rejected');

# a \u escape is JSON, and valid: the shard_id is the character it names
$r = publish(add_shard('caf\u00e9', 101, 200));
is($r->{status}, 'applied', 'a \\u escape of a valid character: applied');
is($node->safe_psql('postgres', q{SELECT shard_id = U&'caf\00E9' FROM tenant_router.shard WHERE range_start = 101}),
	't', 'as that character');

#
# Numbers: range_start, range_end and version are JSON integers.  Before,
# 50001.0, 5.0001e4 and 61e3 were taken for 50001, 50001 and 61000.
#
for my $case ([ '50001.0', 'range_start' ], [ '5.0001e4', 'range_start' ], [ '61e3', 'range_end' ],
	[ '6.1E+4', 'range_end' ], [ '-0.0', 'range_start' ])
{
	my ($number, $field) = @$case;
	my $event = $field eq 'range_start'
	  ? add_shard('num1', $number, 61000) : add_shard('num1', 50001, $number);
	$r = publish($event);
	is($r->{status}, 'rejected', "$field written $number: rejected");
	like($r->{reason}, qr/field "$field" must be an integer/, "$field written $number: with the reason");
}
$r = publish(q({"op": "REMOVE_SHARD", "origin": "cp", "version": 7e0, "payload": {"shard_id": "nul1"}}));
like($r->{reason}, qr/field "version" must be an integer/, 'a version written 7e0: rejected');
$r = publish(q({"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "nul1", "range_start": 1, "range_end": 1.5e2}}));
like($r->{reason}, qr/field "range_end" must be an integer/, 'UPDATE_SHARD_RANGE: the same rule');
is(shards(), "nul1:1..100 caf\xc3\xa9:101..200", 'no number was taken for an integer');
$r = publish(add_shard('num2', 50001, 61000, ', "weight": 0.5, "tags": [1.5, 2e3]'));
is($r->{status}, 'applied', 'fractions in extra fields are allowed');
is($node->safe_psql('postgres', q{SELECT range_start || '..' || range_end FROM tenant_router.shard WHERE shard_id = 'num2'}),
	'50001..61000', 'and the integers beside them are read as written');
$r = publish(add_shard('num3', -5, -1));
is($r->{status}, 'applied', 'negative integers are integers');

#
# Duplicate fields: jsonb keeps the last of them; an event that says two
# things is refused.  Before, the last one won.
#
$r = publish(qq({"op": "ADD_SHARD", "payload": {"shard_id": "dup1", "range_start": 70001, "range_end": 70002, "range_end": 80000, "dsn": "$dsn"}}));
is($r->{status}, 'rejected', 'range_end twice: rejected');
like($r->{reason}, qr/duplicate field "range_end"/, 'with the reason');
$r = publish(qq({"op": "REMOVE_SHARD", "op": "ADD_SHARD", "payload": {"shard_id": "dup2", "range_start": 80001, "range_end": 90000, "dsn": "$dsn"}}));
like($r->{reason}, qr/duplicate field "op"/, 'op twice: rejected');
$r = publish(q({"op": "REMOVE_SHARD", "\u006fp": "REMOVE_SHARD", "payload": {"shard_id": "num3"}}));
like($r->{reason}, qr/duplicate field "op"/, 'op twice, once escaped: rejected');
$r = publish(q({"op": "REMOVE_SHARD", "payload": {"shard_id": "num3"}, "payload": {"shard_id": "num2"}}));
like($r->{reason}, qr/duplicate field "payload"/, 'payload twice: rejected');
$r = publish(q({"op": "REMOVE_SHARD", "payload": {"shard_id": "num3", "meta": {"a": 1, "a": 2}}}));
like($r->{reason}, qr/duplicate field "a"/, 'a field twice in a nested object: rejected');
is($node->safe_psql('postgres', q{SELECT count(*) FROM tenant_router.shard WHERE shard_id IN ('dup1', 'dup2')}),
	'0', 'no event with a duplicate field changed the catalog');
is($node->safe_psql('postgres', q{SELECT count(*) FROM tenant_router.shard WHERE shard_id IN ('num2', 'num3')}),
	'2', 'nor removed a shard');
$r = publish(q({"op": "REMOVE_SHARD", "payload": {"shard_id": "num3", "list": [{"a": 1}, {"a": 2}]}}));
is($r->{status}, 'applied', 'the same field in two objects of an array is no duplicate');

#
# Secrets: tenant_router.events is readable by every role.  A role that is
# not superuser sees only what names the change (op, shard_id, origin,
# numbers) and the DSN with its password masked; every other string of the
# event is masked.  Superusers see the event as received, but for the DSN's
# password, masked for everyone.  Before, a DSN given as a JSON object, or an
# extra "password" field, was shown in cleartext to every role.
#
$node->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE carol LOGIN IN ROLE tenant_router_admin;
});
$shard->safe_psql('postgres', 'CREATE DATABASE sec4');
my $uri = 'postgres://postgres:s3cret-uri@' . ($shard->host =~ s{/}{%2F}gr) . ':' . $shard->port . '/sec4';
my @secret_events = (
	[ 'a DSN given as an object',
	  qq({"op": "ADD_SHARD", "payload": {"shard_id": "sec1", "range_start": 300001, "range_end": 300100, "dsn": {"host": "h", "password": "s3cret-obj"}}}),
	  'rejected' ],
	[ 'a DSN given as an array',
	  qq({"op": "ADD_SHARD", "payload": {"shard_id": "sec2", "range_start": 300001, "range_end": 300100, "dsn": ["password=s3cret-arr"]}}),
	  'rejected' ],
	[ 'an extra password field beside a valid DSN',
	  qq({"op": "ADD_SHARD", "payload": {"shard_id": "sec3", "range_start": 300001, "range_end": 300100, "dsn": "$dsn", "password": "s3cret-extra"}}),
	  'applied' ],
	[ 'a URI DSN with a password',
	  qq({"op": "ADD_SHARD", "payload": {"shard_id": "sec4", "range_start": 300101, "range_end": 300200, "dsn": "$uri"}}),
	  'applied' ],
	[ 'a token nested in an extra object, and an array of secrets',
	  qq({"op": "UPDATE_SHARD_RANGE", "auth": {"token": "s3cret-nested"}, "keys": ["s3cret-elem"], "payload": {"shard_id": "sec4", "range_start": 300101, "range_end": 300300}}),
	  'applied' ],
	[ 'a secret in a rejected event',
	  qq({"op": "REMOVE_SHARD", "password": "s3cret-rejected", "payload": {"shard_id": "nosuch"}}),
	  'rejected' ],
	[ 'a secret in an event that is not JSON',
	  'password=s3cret-notjson', 'rejected' ],
);
my $from = $node->safe_psql('postgres', 'SELECT max(id) FROM tenant_router.event_log');
for my $case (@secret_events)
{
	$r = publish($case->[1]);
	is($r->{status}, $case->[2], "$case->[0]: $case->[2]");
}
for my $role ('alice', 'carol')
{
	my $seen = $node->safe_psql('postgres', qq{
		SET ROLE $role;
		SELECT string_agg(e::text, E'\n' ORDER BY id) FROM tenant_router.events e WHERE id > $from});
	unlike($seen, qr/s3cret/, "$role (not superuser) sees no secret of any of them in tenant_router.events");
	my @events = split /\n/, $node->safe_psql('postgres', qq{
		SET ROLE $role;
		SELECT event FROM tenant_router.events WHERE id > $from ORDER BY id});
	is($events[0], '{"op": "ADD_SHARD", "payload": {"dsn": "********", "shard_id": "sec1", "range_end": 300100, "range_start": 300001}}',
		"$role sees what names the change: op, shard_id, the range; the DSN object masked");
	like($events[2], qr/^\{"op": "ADD_SHARD", "payload": \{"dsn": "dbname=postgres host=\S+ port=\d+", "password": "\*{8}", "shard_id": "sec3"/,
		"$role sees a DSN without password as it is, and the extra password masked");
	like($events[3], qr/"dsn": "user=postgres password=\*{8} dbname=sec4 host=\S+ port=\d+"/,
		"$role sees a URI DSN with its password masked");
	is($events[4], '{"op": "UPDATE_SHARD_RANGE", "auth": {"token": "********"}, "keys": ["********"], "payload": {"shard_id": "sec4", "range_end": 300300, "range_start": 300101}}',
		"$role sees nested and array strings masked");
	is($node->safe_psql('postgres', qq{
			SET ROLE $role;
			SELECT string_agg(status || ':' || coalesce(reason, ''), ' ' ORDER BY id)
			  FROM tenant_router.events WHERE id > $from AND status = 'rejected'}),
		'rejected:field "dsn" must be a string rejected:field "dsn" must be a string '
		  . 'rejected:shard "nosuch" does not exist rejected:invalid input syntax for type json',
		"$role sees the status and reason of the rejected ones");
}
my $superuser = $node->safe_psql('postgres', qq{
	SELECT string_agg(event, E'\n' ORDER BY id) FROM tenant_router.events WHERE id > $from});
unlike($superuser, qr/s3cret-(obj|arr|uri)/, 'a superuser sees no DSN password either');
like($superuser, qr/"password": "s3cret-extra"/, 'but the extra fields as received');
unlike(slurp_file($node->logfile), qr/s3cret/, 'no secret in the server log');

done_testing();
