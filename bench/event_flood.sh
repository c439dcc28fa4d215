#!/usr/bin/env bash
# bench/event_flood.sh — how fast the topology worker drains a flood of
# valid events, and whether its memory stays flat over repeated floods.
#
#   bench/event_flood.sh [N] [FLOODS] [channel|stream]
#
# Environment: PAUSE=s waits s seconds between floods (default 0).
# Each flood is N events (default 10 000) published at once by one Redis
# script, FLOODS floods in a row (default 4): cycles of ADD_SHARD,
# UPDATE_SHARD_RANGE, REMOVE_SHARD on shards whose DSN is a real local shard
# (the worker connects to it for every ADD_SHARD, as shard_add() does).
# "stream" (the default) publishes as a control plane that keeps the stream
# <channel>:log (XADD + PUBLISH), "channel" with PUBLISH only.  The
# coordinator runs with fsync on, as in production.  For each flood it prints
# the events applied per second (from the first PUBLISH to the last event
# recorded), and the worker's resident memory once the flood is drained:
# its private memory (RssAnon) and the shared memory it has touched
# (RssShmem: shared buffers, which it maps as it reads them; bounded by
# shared_buffers, and the part of VmRSS that grows with the tables' size).
#
# Starts its own coordinator, shard and Redis (test/harness.sh) in a
# temporary directory and stops them afterwards.
set -euo pipefail

N=${1:-10000}
FLOODS=${2:-4}
MODE=${3:-stream}
case "$MODE" in channel|stream) ;; *) echo "usage: $0 [N] [FLOODS] [channel|stream]" >&2; exit 2 ;; esac
cycles=$((N / 3))
N=$((cycles * 3))

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
dir=$(mktemp -d /tmp/tenant_router_flood.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
cleanup() { "$top/test/harness.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

"$top/test/harness.sh" start "$dir" --shards 1 >/dev/null
# shellcheck disable=SC1091
source "$dir/env.sh"
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
q "ALTER SYSTEM SET fsync = on" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
q "CREATE EXTENSION tenant_router" >/dev/null
channel=db_shard_topology_updates
for _ in $(seq 100); do
	[ "$(redis-cli -p "$TR_REDIS_PORT" PUBSUB NUMSUB $channel | tail -1)" = 1 ] && break
	sleep 0.1
done
pid=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_router topology worker'")
# rss FIELD: the worker's resident memory of that kind, in kB (RssAnon: its
# own memory; RssShmem: the pages of shared memory it has touched, which
# grow with the shared buffers it reads, up to shared_buffers)
rss() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$pid/status"; }

# the flood: cycle i adds shard f<flood>_<i>, widens its range, removes it
script='
local dsn, flood, cycles = ARGV[1], ARGV[2], tonumber(ARGV[3])
local logged = ARGV[4] == "stream"
local function send(e)
	if logged then redis.call("XADD", KEYS[1], "*", "event", e) end
	redis.call("PUBLISH", KEYS[2], e)
end
for i = 1, cycles do
	local id = "f" .. flood .. "_" .. i
	local s = i * 100
	send(string.format([[{"op": "ADD_SHARD", "payload": {"shard_id": "%s", "range_start": %d, "range_end": %d, "dsn": "%s"}}]], id, s, s + 9, dsn))
	send(string.format([[{"op": "UPDATE_SHARD_RANGE", "payload": {"shard_id": "%s", "range_start": %d, "range_end": %d}}]], id, s, s + 99))
	send(string.format([[{"op": "REMOVE_SHARD", "payload": {"shard_id": "%s"}}]], id))
end
return cycles * 3'

echo "event flood: $FLOODS floods of $N valid events ($MODE), coordinator with fsync on"
row() { printf '%6s %10s %10s %14s %14s %12s %10s\n' "$@"; }
row flood seconds "events/s" "private RSS" "shared RSS" "total RSS" rejected
row before - - "$(rss RssAnon) kB" "$(rss RssShmem) kB" "$(rss VmRSS) kB" -
for f in $(seq "$FLOODS"); do
	base=$(q "SELECT applied + rejected + ignored FROM tenant_router.event_stats")
	rej0=$(q "SELECT rejected FROM tenant_router.event_stats")
	t0=$(date +%s.%N)
	redis-cli -p "$TR_REDIS_PORT" EVAL "$script" 2 "$channel:log" "$channel" \
		"$TR_SHARD1_DSN" "$f" "$cycles" "$MODE" >/dev/null
	while [ "$(q "SELECT applied + rejected + ignored FROM tenant_router.event_stats")" -lt $((base + N)) ]; do
		sleep 0.05
	done
	t1=$(date +%s.%N)
	rej=$(( $(q "SELECT rejected FROM tenant_router.event_stats") - rej0 ))
	sleep "${PAUSE:-0}"
	row "$f" "$(printf %.2f "$(echo "$t1 - $t0" | bc)")" \
		"$(printf %.0f "$(echo "$N / ($t1 - $t0)" | bc -l)")" \
		"$(rss RssAnon) kB" "$(rss RssShmem) kB" "$(rss VmRSS) kB" "$rej"
done
echo "catalog tables after the floods (autovacuum removes what the floods left dead):"
psql -X -q -c "SELECT relname, n_live_tup AS live, n_dead_tup AS dead,
	pg_size_pretty(pg_table_size(relid)) AS size, autovacuum_count AS autovacuums
	FROM pg_stat_user_tables WHERE schemaname = 'tenant_router'
	AND relname IN ('shard', 'event_log', 'worker_state', 'topology') ORDER BY relname"
