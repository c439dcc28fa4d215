#!/usr/bin/env bash
# bench/run.sh — throughput of the router against its baselines, in one run.
#
#   bench/run.sh [SECONDS] [all|stats]   (default 10 seconds per measurement, all)
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
# the first query of new sessions (pgbench -C) and a backend's memory, and
# the router with tenant_router.track_stats on against off (prepared point
# SELECT, 1 and 4 clients; "stats" runs only that part).
# Environment: STATS_ROUNDS (default 5) rounds of that comparison;
# STATS_TENANTS (default 20000) random tenants it selects: 20 000 is twice
# tenant_router.stats_max_tenants (10 000), so that about half the statements
# add a tenant and eviction is part of the cost; 10000 or fewer all fit (after
# the first run, no statement adds or evicts).
# Ratios are printed against the baseline measured in the same run.
#
# Requires the extension to be installed (make install) and postgres_fdw
# (part of Debian's postgresql-15 package).
set -euo pipefail

SECONDS_PER_RUN=${1:-${BENCH_SECONDS:-10}}
PARTS=${2:-all}
case "$PARTS" in all | stats) ;; *) echo "usage: bench/run.sh [SECONDS] [all|stats]" >&2; exit 2 ;; esac
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
write stats_select "\set tid random(1, ${STATS_TENANTS:-20000})
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

# ---------------------------------------------------------------- statistics
# The router with tenant_router.track_stats on against off (PGOPTIONS, so the
# same server and the same shards), prepared point SELECT of STATS_TENANTS
# random tenants (by default 20 000: twice tenant_router.stats_max_tenants, so
# that eviction is part of the cost), STATS_ROUNDS (default 5) rounds of on,
# off, off, on so that drift of the machine favours neither.  Printed: the mean tps of each,
# their ratio, the median and range of the rounds' own ratios, and the CPU
# time the coordinator's processes spent per statement (from /proc: what
# other load on the machine changes least).
coord_pid=$(head -1 "$dir/coordinator/postmaster.pid")
hz=$(getconf CLK_TCK)
coord_ticks() {	# CPU ticks of the coordinator: its live processes, and its children reaped
	local t=0 p
	t=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$coord_pid/stat")
	for p in $(ps -o pid= --ppid "$coord_pid"); do
		t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
coord_children() { ps -o pid= --ppid "$coord_pid" | wc -l; }
stats_run() {	# clients [PGOPTIONS]: "tps cpu_us_per_statement"
	local t0 t1 out n0 i
	n0=$(coord_children)
	t0=$(coord_ticks)
	out=$(PGOPTIONS=${2:-} pgbench $coord -n -M prepared -c "$1" -j "$1" -T "$SECONDS_PER_RUN" \
		-f "$scripts/stats_select.sql" postgres 2>&1)
	# the run's backends count once reaped (then in the postmaster's cutime)
	for i in $(seq 100); do
		[ "$(coord_children)" -le "$n0" ] && break
		sleep 0.05
	done
	t1=$(coord_ticks)
	awk -v t="$((t1 - t0))" -v hz="$hz" '
		/^tps = / { tps = $3 }
		/actually processed/ { n = $NF }
		END { printf "%s %.1f\n", tps, (n > 0 ? t / hz * 1e6 / n : 0) }' <<<"$out"
}
stats_on_off() {
	local off='-c tenant_router.track_stats=off' rounds=${STATS_ROUNDS:-5} clients r n
	local a b c d results
	# off must count nothing, on must count
	psqlq $coord -c "SELECT tenant_router.stats_reset()"
	PGOPTIONS=$off RUN_SECONDS=1 tps router select prepared 1 >/dev/null
	n=$(psql -X -A -t $coord -c "SELECT count(*) FROM tenant_router.tenant_stats")
	[ "$n" = 0 ] || { echo "track_stats = off counted $n tenants" >&2; exit 1; }
	RUN_SECONDS=1 tps router select prepared 1 >/dev/null
	n=$(psql -X -A -t $coord -c "SELECT count(*) FROM tenant_router.tenant_stats")
	[ "$n" -gt 0 ] || { echo "track_stats = on counted nothing" >&2; exit 1; }

	echo
	echo "router with statistics on against off (prepared point SELECT of ${STATS_TENANTS:-20000} random tenants, $rounds rounds of on, off, off, on, ${SECONDS_PER_RUN}s runs)"
	printf '%-7s %9s %9s %7s %7s  %-13s %-13s %7s  %s\n' clients "tps on" "tps off" on/off median \
		"us/stmt on" "us/stmt off" on/off "rounds' tps on/off"
	for clients in 1 4; do
		results=''
		for r in $(seq "$rounds"); do
			a=$(stats_run "$clients")
			b=$(stats_run "$clients" "$off")
			c=$(stats_run "$clients" "$off")
			d=$(stats_run "$clients")
			results="$results$a $b $c $d"$'\n'
		done
		# each line: tps cpu (on) tps cpu (off) tps cpu (off) tps cpu (on)
		awk -v clients="$clients" '
			NF == 8 {
				n++; on += $1 + $7; off += $3 + $5; con += $2 + $8; coff += $4 + $6
				r[n] = ($1 + $7) / ($3 + $5); list = list sprintf(" %.3f", r[n])
			}
			END {
				for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
				med = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
				printf "%-7s %9.0f %9.0f %7.3f %7.3f  %-13.1f %-13.1f %7.3f %s\n", clients,
					on / (2 * n), off / (2 * n), on / off, med, con / (2 * n), coff / (2 * n), con / coff, list
			}' <<<"$results"
	done
}
if [ "$PARTS" = stats ]; then
	stats_on_off
	exit 0
fi

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

stats_on_off
