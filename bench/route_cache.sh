#!/usr/bin/env bash
# bench/route_cache.sh — cost of the routing cache at 10, 1 000 and 100 000
# ranges, in one run.
#
#   bench/route_cache.sh
#
# Starts a coordinator (test/harness.sh; shards are not contacted: shard_for()
# only reads the cache), fills the catalog with N ranges of 100 tenants and,
# in a new session for each N, measures:
#   load all   shard_for() of one tenant of every range, in range order: the
#              cost of bringing every range into a backend's cache
#   lookup     shard_for() of 1 000 000 random tenants once every range is
#              loaded, per call, minus the same query without shard_for()
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
dir=$(mktemp -d /tmp/tenant_router_route_bench.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
cleanup() { "$top/test/harness.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
"$top/test/harness.sh" start "$dir" >/dev/null
# shellcheck disable=SC1091
source "$dir/env.sh"
coord="-X -q -h 127.0.0.1 -p $TR_COORD_PORT -U postgres"
psql $coord -c "CREATE EXTENSION tenant_router" >/dev/null

# ms QUERY: milliseconds the query takes in a session that first ran SETUP
ms() {
	psql $coord -A -t -c '\timing on' -c "$1" -c "$2" 2>&1 |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}

printf '%9s %12s %16s %16s %14s\n' ranges "load all" "lookup (call)" "lookup (net)" "net vs 10"
base=""
for n in 10 1000 100000; do
	span=$((n * 100))
	psql $coord >/dev/null <<SQL
TRUNCATE tenant_router.shard;
INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, version)
SELECT 's' || g, (g - 1) * 100 + 1, g * 100, 'host=127.0.0.1 port=1', 0 FROM generate_series(1, $n) g;
VACUUM ANALYZE tenant_router.shard;
SQL
	load=$(ms "SELECT 1" "SELECT count(shard_for(g)) FROM generate_series(1, $span, 100) g")
	warm="SELECT count(shard_for(g)) FROM generate_series(1, $span, 100) g"
	with=$(ms "$warm" "SELECT count(shard_for((random() * ($span - 1))::bigint + 1)) FROM generate_series(1, 1000000)")
	without=$(ms "$warm" "SELECT count((random() * ($span - 1))::bigint + 1) FROM generate_series(1, 1000000)")
	call=$(awk -v w="$with" 'BEGIN { printf "%.0f", w * 1000000 / 1000000 }')
	net=$(awk -v w="$with" -v o="$without" 'BEGIN { printf "%.0f", (w - o) * 1000000 / 1000000 }')
	[ -z "$base" ] && base=$net
	printf '%9s %9.1f ms %13s ns %13s ns %14s\n' "$n" "$load" "$call" "$net" \
		"$(awk -v a="$net" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
done
