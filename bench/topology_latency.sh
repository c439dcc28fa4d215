#!/usr/bin/env bash
# bench/topology_latency.sh — three coordinators on one channel: from a
# topology change to the first query routed by it on each coordinator, for
# N changes (default 200) of each kind:
#   sql      shard_update_range() on coordinator A, measured on B and C
#   channel  an event PUBLISHed only, measured on A, B and C
#   stream   an event appended to the stream and published, on A, B and C
# Each change moves a shard's range, so the coordinator that applies it
# first also rewrites the range constraint of a (small) logical table on
# the shard.  Prints p50/p95/p99/max per coordinator and until all route by
# the change.
#
#   bench/topology_latency.sh [N]
#
# Starts its own coordinators, shards and Redis (test/harness.sh, and two
# more coordinators beside it) in a temporary directory and stops them
# afterwards.
set -euo pipefail

N=${1:-200}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/tenant_router_latency.XXXXXX")
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
cleanup() { "$top/test/harness.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
bindir=$(pg_config --bindir)

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
	local p
	for _ in $(seq 200); do
		p=$(( 20000 + RANDOM % 30000 ))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
	done
	echo "no free port" >&2
	exit 1
}

# coordinator NAME: another coordinator beside the harness's, on its Redis
coordinator() {
	local name=$1 port
	port=$(free_port)
	as_pg "$bindir/initdb" -D "$dir/$name" -U postgres -A trust --no-sync --no-locale -E UTF8 \
		>"$dir/$name.initdb.log" 2>&1
	cat <<CONF | as_pg tee -a "$dir/$name/postgresql.conf" >/dev/null
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
max_prepared_transactions = 20
shared_preload_libraries = 'tenant_router'
tenant_router.database = 'postgres'
tenant_router.redis_host = '127.0.0.1'
tenant_router.redis_port = $TR_REDIS_PORT
CONF
	as_pg "$bindir/pg_ctl" -D "$dir/$name" -l "$dir/$name.log" -w -t 60 start >/dev/null
	echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"
}

cc -O2 -o "$dir/topology_latency" "$here/topology_latency.c" \
	-I"$(pg_config --includedir)" -L"$(pg_config --libdir)" -lpq -lhiredis
"$top/test/harness.sh" start "$dir" >/dev/null
# shellcheck disable=SC1091
source "$dir/env.sh"
conn_a="host=127.0.0.1 port=$TR_COORD_PORT user=postgres dbname=postgres"
conn_b=$(coordinator coord_b)
conn_c=$(coordinator coord_c)
for conn in "$conn_a" "$conn_b" "$conn_c"; do
	psql -X -q -v ON_ERROR_STOP=1 -d "$conn" >/dev/null <<SQL
SET client_min_messages = error;
CREATE EXTENSION tenant_router;
-- a logical table: every range change rewrites its range constraint on the shard
CREATE TABLE users (id serial PRIMARY KEY, tenant_id bigint NOT NULL, username text);
SELECT logical_table_add('users');
SQL
done
# the workers are subscribed once the extension exists
for _ in $(seq 100); do
	[ "$(redis-cli -p "$TR_REDIS_PORT" PUBSUB NUMSUB db_shard_topology_updates | tail -1)" = 3 ] && break
	sleep 0.1
done
psql -X -q -v ON_ERROR_STOP=1 -d "$conn_a" -c "SELECT shard_add('lat', 5000001, 5000002, '$TR_SHARD1_DSN')" >/dev/null
for conn in "$conn_b" "$conn_c"; do
	for _ in $(seq 100); do
		[ "$(psql -X -At -d "$conn" -c "SELECT shard_for(5000001) = 'lat'")" = t ] && break
		sleep 0.1
	done
done
echo "three coordinators on one channel; a change -> the first query routed by it, $N changes each:"
"$dir/topology_latency" "$N" sql 127.0.0.1 "$TR_REDIS_PORT" "$conn_a" "$conn_b" "$conn_c"
"$dir/topology_latency" "$N" channel 127.0.0.1 "$TR_REDIS_PORT" "$conn_a" "$conn_b" "$conn_c"
"$dir/topology_latency" "$N" stream 127.0.0.1 "$TR_REDIS_PORT" "$conn_a" "$conn_b" "$conn_c"
