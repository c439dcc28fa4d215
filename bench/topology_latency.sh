#!/usr/bin/env bash
# bench/topology_latency.sh — from PUBLISH of a topology event to the first
# query in another session that routes by the new topology, for N events
# (default 200), published on the channel only and through the stream.
# Each event changes a shard's range, so the worker also rewrites the range
# constraint of a (small) logical table on the shard.
#
#   bench/topology_latency.sh [N]
#
# Starts its own coordinator, shards and Redis (test/harness.sh) in a
# temporary directory and stops them afterwards.
set -euo pipefail

N=${1:-200}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
dir=$(mktemp -d /tmp/tenant_router_latency.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
cleanup() { "$top/test/harness.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

cc -O2 -o "$dir/topology_latency" "$here/topology_latency.c" \
	-I"$(pg_config --includedir)" -L"$(pg_config --libdir)" -lpq -lhiredis
"$top/test/harness.sh" start "$dir" >/dev/null
# shellcheck disable=SC1091
source "$dir/env.sh"
conn="host=127.0.0.1 port=$TR_COORD_PORT user=postgres dbname=postgres"
psql -X -q -v ON_ERROR_STOP=1 -d "$conn" >/dev/null <<SQL
CREATE EXTENSION tenant_router;
SELECT shard_add('lat', 5000001, 5000002, '$TR_SHARD1_DSN');
-- a logical table: every range change rewrites its range constraint on the shard
CREATE TABLE users (id serial PRIMARY KEY, tenant_id bigint NOT NULL, username text);
SELECT logical_table_add('users');
SQL
# the worker is subscribed once the extension exists
for _ in $(seq 100); do
	[ "$(redis-cli -p "$TR_REDIS_PORT" PUBSUB NUMSUB db_shard_topology_updates | tail -1)" = 1 ] && break
	sleep 0.1
done
echo "PUBLISH -> first query routed by the new topology (another session), $N events each:"
"$dir/topology_latency" "$conn" 127.0.0.1 "$TR_REDIS_PORT" "$N" channel
"$dir/topology_latency" "$conn" 127.0.0.1 "$TR_REDIS_PORT" "$N" stream
