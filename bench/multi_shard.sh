#!/usr/bin/env bash
# bench/multi_shard.sh — statements over several shards, against their
# baselines, in one run.
#
#   bench/multi_shard.sh [ROWS_PER_SHARD] [RUNS]     (default 400000, 5)
#
# Starts its own coordinator and 4 shards (test/harness.sh) in a temporary
# directory and stops them afterwards.  Each shard's table gets ROWS_PER_SHARD
# rows (10 000 tenants a shard).  Four queries:
#   count      SELECT count(*)
#   group      SELECT status, sum(amount), avg(amount) ... GROUP BY status
#   top10      SELECT ... ORDER BY amount DESC, id LIMIT 10
#   tenants    SELECT count(DISTINCT tenant_id)
# each timed (pgbench, mean latency of RUNS runs) through the router, against
#   sum     the same query straight on each shard, one after the other (the
#           time a client visiting the shards in turn would take),
#   sum1    the same, each shard's query without parallel workers (what each
#           shard's part costs in one process, as the router's cursors run
#           it; on 2 cores shared by all shards, parallel workers speed up the
#           shards one after the other, not the shards all at once), and
#   pgfdw   native range partitioning over postgres_fdw foreign tables on the
#           same coordinator and shard tables, with async_capable and
#           partitionwise aggregation on (postgres_fdw's best).
# Then a bulk load: COPY of 4 x ROWS_PER_SHARD rows spread over the 4 shards
# through the router, against COPY of each shard's part straight into it.
# Targets (issue 9): router <= 0.75 x sum for every query, faster than pgfdw;
# COPY through the router >= 0.5 x the direct rate.
set -euo pipefail

ROWS=${1:-400000}
RUNS=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
dir=$(mktemp -d /tmp/tenant_router_bench.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres: "$dir"

cleanup() { "$top/test/harness.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

echo "starting a coordinator and 4 shards under $dir ..."
"$top/test/harness.sh" start "$dir" --shards 4 >/dev/null
# shellcheck disable=SC1091
source "$dir/env.sh"
coord="-h 127.0.0.1 -p $TR_COORD_PORT -U postgres -d postgres"
shard() { echo "-h 127.0.0.1 -p $(eval echo "\$TR_SHARD${1}_PORT") -U postgres -d postgres"; }
psqlq() { psql -X -q -v ON_ERROR_STOP=1 "$@" >/dev/null; }
tenants=10000

psqlq $coord <<SQL
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', $(( 0 * tenants + 1 )), $(( 1 * tenants )), '$TR_SHARD1_DSN');
SELECT shard_add('shard2', $(( 1 * tenants + 1 )), $(( 2 * tenants )), '$TR_SHARD2_DSN');
SELECT shard_add('shard3', $(( 2 * tenants + 1 )), $(( 3 * tenants )), '$TR_SHARD3_DSN');
SELECT shard_add('shard4', $(( 3 * tenants + 1 )), $(( 4 * tenants )), '$TR_SHARD4_DSN');
CREATE TABLE orders (id bigint NOT NULL, tenant_id bigint NOT NULL, amount numeric(12,2),
                     status text NOT NULL, created date NOT NULL);
SELECT logical_table_add('orders');
CREATE TABLE bulk (tenant_id bigint NOT NULL, v int, s text);
SELECT logical_table_add('bulk');
SQL

echo "loading $ROWS rows into each shard ..."
for i in 1 2 3 4; do
	lo=$(( (i - 1) * tenants + 1 ))
	psqlq $(shard $i) <<SQL
INSERT INTO public.orders
SELECT g, $lo + g % $tenants, (g * 37 % 100000) / 100.0,
       (ARRAY['open', 'paid', 'void', 'refund'])[1 + g % 4], date '2024-01-01' + g % 365
  FROM generate_series($(( (i - 1) * ROWS + 1 )), $(( i * ROWS ))) g;
VACUUM ANALYZE public.orders;
SQL
done

psqlq $coord <<SQL
CREATE EXTENSION postgres_fdw;
CREATE TABLE pf_orders (id bigint NOT NULL, tenant_id bigint NOT NULL, amount numeric(12,2),
                        status text NOT NULL, created date NOT NULL) PARTITION BY RANGE (tenant_id);
SQL
for i in 1 2 3 4; do
	psqlq $coord <<SQL
CREATE SERVER pf$i FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host '127.0.0.1', port '$(eval echo "\$TR_SHARD${i}_PORT")', dbname 'postgres',
             async_capable 'true', fetch_size '1000');
CREATE USER MAPPING FOR postgres SERVER pf$i OPTIONS (user 'postgres');
CREATE FOREIGN TABLE pf_orders_$i PARTITION OF pf_orders
    FOR VALUES FROM ($(( (i - 1) * tenants + 1 ))) TO ($(( i * tenants + 1 )))
    SERVER pf$i OPTIONS (table_name 'orders');
SQL
done
psqlq $coord -c "ALTER DATABASE postgres SET enable_partitionwise_aggregate = on" \
	-c "ANALYZE pf_orders"

declare -A queries=(
	[count]="SELECT count(*) FROM %s"
	[group]="SELECT status, sum(amount), avg(amount), count(*) FROM %s GROUP BY status"
	[top10]="SELECT id, tenant_id, amount FROM %s ORDER BY amount DESC, id LIMIT 10"
	[tenants]="SELECT count(DISTINCT tenant_id) FROM %s"
)

# mean_ms CONN SQL: mean latency in ms of RUNS runs (after one warm-up)
mean_ms() {
	local conn=$1 sql=$2 f
	f=$(mktemp "$dir/q.XXXXXX.sql")
	echo "$sql;" >"$f"
	chmod 644 "$f"
	pgbench -n $conn -t 1 -f "$f" >/dev/null 2>&1
	pgbench -n $conn -t "$RUNS" -f "$f" 2>/dev/null | sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p'
}

printf '\n%-8s %10s %10s %10s %10s %12s %12s %12s\n' query router_ms sum_ms sum1_ms pgfdw_ms \
	router/sum router/sum1 router/pgfdw
for q in count group top10 tenants; do
	sql=${queries[$q]}
	# shellcheck disable=SC2059
	router=$(mean_ms "$coord" "$(printf "$sql" orders)")
	sum=0
	sum1=0
	for i in 1 2 3 4; do
		# shellcheck disable=SC2059
		t=$(mean_ms "$(shard $i)" "$(printf "$sql" public.orders)")
		sum=$(echo "$sum + $t" | bc -l)
		# shellcheck disable=SC2059
		t=$(PGOPTIONS='-c max_parallel_workers_per_gather=0' mean_ms "$(shard $i)" "$(printf "$sql" public.orders)")
		sum1=$(echo "$sum1 + $t" | bc -l)
	done
	# shellcheck disable=SC2059
	pgfdw=$(mean_ms "$coord" "$(printf "$sql" pf_orders)")
	printf '%-8s %10.1f %10.1f %10.1f %10.1f %12.2f %12.2f %12.2f\n' "$q" "$router" "$sum" "$sum1" \
		"$pgfdw" "$(echo "$router / $sum" | bc -l)" "$(echo "$router / $sum1" | bc -l)" \
		"$(echo "$router / $pgfdw" | bc -l)"
done

# ---------------------------------------------------------------- streaming
# The whole table through the router, to /dev/null: the backend's private
# memory (RssAnon, sampled every 20 ms) stays that of a few batches.
echo
echo "streaming all $(( 4 * ROWS )) rows through the router:"
stream_peak() {	# sql
	local pidf=$dir/stream.pid peak=0 pid kb
	rm -f "$pidf"	# the previous call's pid is not this backend's
	psql -X -q -At $coord -c "SELECT pg_backend_pid()" -c "$1" >"$pidf" 2>/dev/null &
	local bg=$!
	while [ ! -s "$pidf" ]; do sleep 0.01; done
	pid=$(head -n 1 "$pidf")
	while kill -0 $bg 2>/dev/null; do
		kb=$(sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/$pid/status 2>/dev/null || true)
		[ -n "$kb" ] && [ "$kb" -gt "$peak" ] && peak=$kb
		sleep 0.02
	done
	echo $peak
}
small=$(stream_peak "COPY (SELECT * FROM orders WHERE tenant_id = 1) TO '/dev/null'")
all=$(stream_peak "COPY (SELECT * FROM orders) TO '/dev/null'")
printf '  peak private memory of the backend: %d kB for one tenant, %d kB for every row\n' "$small" "$all"

# ---------------------------------------------------------------- COPY
total=$(( 4 * ROWS ))
echo
echo "bulk load: COPY of $total rows over the 4 shards"
psqlq $coord -c "COPY (SELECT 1 + (g::bigint * 7919) % ($tenants * 4), g, 'row ' || g
                        FROM generate_series(1, $total) g) TO '$dir/bulk.tsv'"
for i in 1 2 3 4; do
	lo=$(( (i - 1) * tenants + 1 )) hi=$(( i * tenants ))
	psqlq $coord -c "COPY (SELECT 1 + (g::bigint * 7919) % ($tenants * 4), g, 'row ' || g
	                        FROM generate_series(1, $total) g
	                        WHERE 1 + (g::bigint * 7919) % ($tenants * 4) BETWEEN $lo AND $hi)
	                 TO '$dir/bulk$i.tsv'"
done
copy_ms() {	# conn file table
	local start end
	psqlq $1 -c "TRUNCATE $3"
	start=$(date +%s%N)
	psqlq $1 -c "COPY $3 FROM '$2'"
	end=$(date +%s%N)
	echo $(( (end - start) / 1000000 ))
}
best_router=999999999 best_direct=999999999
for run in 1 2 3; do
	r=$(copy_ms "$coord" "$dir/bulk.tsv" bulk)
	d=0
	for i in 1 2 3 4; do
		d=$(( d + $(copy_ms "$(shard $i)" "$dir/bulk$i.tsv" public.bulk) ))
	done
	[ "$r" -lt "$best_router" ] && best_router=$r
	[ "$d" -lt "$best_direct" ] && best_direct=$d
done
printf '%-28s %8d ms  %10.0f rows/s\n' "router (best of 3)" "$best_router" \
	"$(echo "$total * 1000 / $best_router" | bc -l)"
printf '%-28s %8d ms  %10.0f rows/s\n' "straight into the shards" "$best_direct" \
	"$(echo "$total * 1000 / $best_direct" | bc -l)"
printf 'router rate / direct rate: %.2f\n' "$(echo "$best_direct / $best_router" | bc -l)"
