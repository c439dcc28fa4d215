#!/usr/bin/env bash
# bench/run.sh — throughput of the router against its baselines, in one run.
#
#   bench/run.sh [SECONDS]        (default 10 seconds per measurement)
#
# Starts its own coordinator, two shards and Redis (test/harness.sh) in a
# temporary directory and stops them afterwards. Measures with pgbench:
#   point SELECT by random tenant, single-row INSERT by random tenant,
#   -M simple and -M prepared, 1 and 4 clients, against
#     direct   straight to a shard (tenants of that shard),
#     router   the logical table on the coordinator (tenants of both shards),
#     pgfdw    native range partitioning over postgres_fdw foreign tables on
#              the same coordinator (the same shard tables),
# then the router with 10 000 shards against 2 (prepared, 1 and 4 clients),
# the first query of new sessions (pgbench -C) and a backend's memory.
# Ratios are printed against the baseline measured in the same run.
#
# Requires the extension to be installed (make install) and postgres_fdw
# (part of Debian's postgresql-15 package).
set -euo pipefail

SECONDS_PER_RUN=${1:-${BENCH_SECONDS:-10}}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
dir=$(mktemp -d /tmp/tenant_router_bench.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$dir"

cleanup() { "$top/test/harness.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

echo "starting coordinator, 2 shards and redis under $dir ..."
"$top/test/harness.sh" start "$dir"
# shellcheck disable=SC1091
source "$dir/env.sh"
export PGHOST PGPORT PGUSER PGDATABASE
coord="-h 127.0.0.1 -p $TR_COORD_PORT -U postgres"
s1="-h 127.0.0.1 -p $TR_SHARD1_PORT -U postgres"
s2="-h 127.0.0.1 -p $TR_SHARD2_PORT -U postgres"
psqlq() { psql -X -q -v ON_ERROR_STOP=1 "$@" >/dev/null; }

# ---------------------------------------------------------------- setup
# router_setup DB: the extension, the two shards and the logical tables in DB
router_setup() {
	psqlq $coord -d "$1" <<SQL
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, '$TR_SHARD1_DSN');
SELECT shard_add('shard2', 10001, 20000, '$TR_SHARD2_DSN');
CREATE TABLE bench_users (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL,
                          username text NOT NULL, created_at timestamptz DEFAULT now());
CREATE INDEX ON bench_users (tenant_id);
SELECT logical_table_add('bench_users');
-- inserts go to their own table, so that the rows a SELECT returns stay the same
CREATE TABLE bench_log (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL,
                        username text NOT NULL, created_at timestamptz DEFAULT now());
CREATE INDEX ON bench_log (tenant_id);
SELECT logical_table_add('bench_log');
SQL
}
router_setup postgres
psqlq $coord <<SQL
-- the postgres_fdw baseline: range partitions on the same shard tables
CREATE EXTENSION postgres_fdw;
CREATE SERVER pf1 FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '$TR_SHARD1_PORT', dbname 'postgres');
CREATE SERVER pf2 FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '$TR_SHARD2_PORT', dbname 'postgres');
CREATE USER MAPPING FOR postgres SERVER pf1 OPTIONS (user 'postgres');
CREATE USER MAPPING FOR postgres SERVER pf2 OPTIONS (user 'postgres');
CREATE TABLE pf_users (id bigint NOT NULL, tenant_id bigint NOT NULL,
                       username text NOT NULL, created_at timestamptz DEFAULT now())
    PARTITION BY RANGE (tenant_id);
CREATE FOREIGN TABLE pf_users_1 PARTITION OF pf_users FOR VALUES FROM (1) TO (10001)
    SERVER pf1 OPTIONS (table_name 'bench_users');
CREATE FOREIGN TABLE pf_users_2 PARTITION OF pf_users FOR VALUES FROM (10001) TO (20001)
    SERVER pf2 OPTIONS (table_name 'bench_users');
CREATE TABLE pf_log (id bigint NOT NULL DEFAULT nextval('bench_log_id_seq'), tenant_id bigint NOT NULL,
                     username text NOT NULL, created_at timestamptz DEFAULT now())
    PARTITION BY RANGE (tenant_id);
CREATE FOREIGN TABLE pf_log_1 PARTITION OF pf_log FOR VALUES FROM (1) TO (10001)
    SERVER pf1 OPTIONS (table_name 'bench_log');
CREATE FOREIGN TABLE pf_log_2 PARTITION OF pf_log FOR VALUES FROM (10001) TO (20001)
    SERVER pf2 OPTIONS (table_name 'bench_log');
SQL
# 5 rows per tenant, loaded on the shards directly; direct inserts get ids
# from a shard-local sequence far above the router's
for s in 1 2; do
	lo=$(( (s - 1) * 10000 + 1 )); hi=$(( s * 10000 ))
	conn=$s1; [ "$s" = 2 ] && conn=$s2
	psqlq $conn <<SQL
INSERT INTO bench_users SELECT g, $lo + (g % 10000), 'user ' || g, now()
  FROM generate_series(($s - 1) * 50000 + 1, $s * 50000) g;
CREATE SEQUENCE direct_seq START 100000000;
ALTER TABLE bench_log ALTER id SET DEFAULT nextval('direct_seq'), ALTER created_at SET DEFAULT now();
VACUUM ANALYZE bench_users;
SQL
done

# ---------------------------------------------------------------- scripts
scripts="$dir/scripts"; mkdir -p "$scripts"
write() { printf '%s\n' "$2" >"$scripts/$1.sql"; }
write direct_select "\set tid random(1, 10000)
SELECT id, username FROM bench_users WHERE tenant_id = :tid;"
write router_select "\set tid random(1, 20000)
SELECT id, username FROM bench_users WHERE tenant_id = :tid;"
write pgfdw_select "\set tid random(1, 20000)
SELECT id, username FROM pf_users WHERE tenant_id = :tid;"
write direct_insert "\set tid random(1, 10000)
INSERT INTO bench_log (tenant_id, username) VALUES (:tid, 'bench');"
write router_insert "\set tid random(1, 20000)
INSERT INTO bench_log (tenant_id, username) VALUES (:tid, 'bench');"
write pgfdw_insert "\set tid random(1, 20000)
INSERT INTO pf_log (tenant_id, username) VALUES (:tid, 'bench');"

# tps TARGET WORKLOAD MODE CLIENTS [extra pgbench options]
tps() {
	local target=$1 workload=$2 mode=$3 clients=$4
	shift 4
	local conn=$coord
	[ "$target" = direct ] && conn=$s1
	pgbench $conn -n -M "$mode" -c "$clients" -j "$clients" -T "${RUN_SECONDS:-$SECONDS_PER_RUN}" "$@" \
		-f "$scripts/${target}_${workload}.sql" "${DB:-postgres}" 2>&1 |
		sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "pgbench, ${SECONDS_PER_RUN}s per run, tps (ratio to direct)"
printf '%-8s %-9s %7s %12s %20s %20s\n' workload mode clients direct router postgres_fdw
for workload in select insert; do
	for mode in simple prepared; do
		for clients in 1 4; do
			d=$(tps direct $workload $mode $clients)
			r=$(tps router $workload $mode $clients)
			f=$(tps pgfdw $workload $mode $clients)
			printf '%-8s %-9s %7s %12.0f %12.0f (%5s) %12.0f (%5s)\n' "$workload" "$mode" "$clients" \
				"$d" "$r" "$(ratio "$r" "$d")" "$f" "$(ratio "$f" "$d")"
		done
	done
done

# ---------------------------------------------------------------- 10 000 shards
# The same two physical shards, cut into 10 000 ranges of 2 tenants each, in a
# second database of the coordinator (bench10k); the shard tables' range
# constraint is dropped, since each now serves 5 000 ranges.  The 2-shard and
# the 10 000-shard runs alternate, two half-length runs each, so that drift
# of the machine does not favour either.
first_query() {	# DB: new session per transaction: connection + first routed query
	pgbench $coord -n -C -M prepared -c 1 -j 1 -T "$SECONDS_PER_RUN" \
		-f "$scripts/router_select.sql" "$1" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
}
first_memory() {	# DB: kB held by a new backend after its first routed query
	psql -X -A -t -q $coord -d "$1" <<'SQL' | tail -1
SELECT count(*) FROM bench_users WHERE tenant_id = 4242;
SELECT sum(total_bytes) / 1024 FROM pg_backend_memory_contexts;
SQL
}
backend_memory() {	# DB: kB held by a backend after 2 000 routed queries of random tenants
	psql -X -A -t -q $coord -d "$1" <<'SQL' | tail -1
SET plan_cache_mode = force_generic_plan;
PREPARE q(bigint) AS SELECT count(*) FROM bench_users WHERE tenant_id = $1;
\o /dev/null
SELECT format('EXECUTE q(%s);', (random() * 19999)::int + 1) FROM generate_series(1, 2000) \gexec
\o
SELECT sum(total_bytes) / 1024 FROM pg_backend_memory_contexts;
SQL
}
psqlq $coord -c "CREATE DATABASE bench10k"
router_setup bench10k
# ids apart from the first database's
psqlq $coord -d bench10k -c "ALTER SEQUENCE bench_log_id_seq RESTART 50000000"

for conn in "$s1" "$s2"; do
	psqlq $conn -c "ALTER TABLE bench_users DROP CONSTRAINT tenant_router_range" \
		-c "ALTER TABLE bench_log DROP CONSTRAINT tenant_router_range"
done
psqlq $coord -d bench10k <<SQL
BEGIN;
DELETE FROM tenant_router.shard;
INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, version)
SELECT 's' || g, 2 * g - 1, 2 * g,
       CASE WHEN 2 * g <= 10000 THEN '$TR_SHARD1_DSN' ELSE '$TR_SHARD2_DSN' END, 0
  FROM generate_series(1, 10000) g;
COMMIT;
VACUUM ANALYZE tenant_router.shard;
SQL
[ "$(psql -X -A -t $coord -d bench10k -c 'SELECT count(*) FROM tenant_router.shards')" = 10000 ] || { echo "10 000 shards not set up" >&2; exit 1; }

half=$(( (SECONDS_PER_RUN + 1) / 2 ))
mean() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (a + b) / 2 }'; }
echo
echo "router with 10 000 shards against 2 (same data, prepared, runs alternated), tps (ratio)"
printf '%-8s %7s %12s %20s\n' workload clients "2 shards" "10000 shards"
for workload in select insert; do
	for clients in 1 4; do
		a1=$(RUN_SECONDS=$half tps router $workload prepared $clients)
		b1=$(RUN_SECONDS=$half DB=bench10k tps router $workload prepared $clients)
		b2=$(RUN_SECONDS=$half DB=bench10k tps router $workload prepared $clients)
		a2=$(RUN_SECONDS=$half tps router $workload prepared $clients)
		a=$(mean "$a1" "$a2") b=$(mean "$b1" "$b2")
		printf '%-8s %7s %12.0f %12.0f (%5s)\n' "$workload" "$clients" "$a" "$b" "$(ratio "$b" "$a")"
	done
done
conn2=$(first_query postgres)
conn10k=$(first_query bench10k)
first2=$(first_memory postgres | tr -d ' ')
first10k=$(first_memory bench10k | tr -d ' ')
mem2=$(backend_memory postgres | tr -d ' ')
mem10k=$(backend_memory bench10k | tr -d ' ')
printf '%-40s %12.0f %12.0f (%5s)\n' "new session + first query (pgbench -C)" "$conn2" "$conn10k" "$(ratio "$conn10k" "$conn2")"
printf '%-40s %9.0f kB %9.0f kB (%5s)\n' "backend memory after its first query" "$first2" "$first10k" "$(ratio "$first10k" "$first2")"
printf '%-40s %9.0f kB %9.0f kB (%5s)\n' "backend memory after 2000 queries" "$mem2" "$mem10k" "$(ratio "$mem10k" "$mem2")"
