#!/usr/bin/env bash
# bench/split_load.sh — shard_split() under a prepared insert load.
#
#   bench/split_load.sh [SECONDS]      (default 20 seconds of load)
#
# Starts its own coordinator, three shards and Redis (test/harness.sh) in a
# temporary directory and stops them afterwards.  Four pgbench clients
# insert rows with prepared statements, autocommit: two for tenants that
# stay on shard1 (1..5000), two for tenants that move (5001..10000).  A few
# seconds in, shard1 is split at 5000 to shard3.  Printed: how long the split
# took, the client errors (pgbench aborts a client at its first error), how
# many inserts the old shard refused after the switch and the coordinator
# sent on to the new one, the longest statement of a moving tenant (its
# stall at the switch), and the p50/p99 latency of the staying tenants
# before the split, during a copy of the moving tenants' rows by hand (COPY
# from shard1 to a table on shard3, a few seconds before the split: what
# moving those rows costs the others on this machine, router or not), during its switch (from phase "switch" to phase "clean
# up", as tenant_router.operations shows them, polled every 2 ms) and while
# the whole split runs, then until the load ends (the worker's cleanup of
# the old shard, a few seconds after the split, falls in it) (the target: 0
# errors, a stall of at most 200 ms, the staying tenants' p99 unchanged).
#
# Requires the extension to be installed (make install).
set -euo pipefail

LOAD_SECONDS=${1:-${BENCH_SECONDS:-20}}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
dir=$(mktemp -d /tmp/tenant_router_bench.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$dir"

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env PATH="$PATH" "$@"; else "$@"; fi; }
cleanup() { "$top/test/harness.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

echo "starting coordinator, 3 shards and redis under $dir ..."
"$top/test/harness.sh" start "$dir" --shards 3 >/dev/null
# shellcheck disable=SC1091
source "$dir/env.sh"
coord="-h 127.0.0.1 -p $TR_COORD_PORT -U postgres -d postgres"
psqlq() { psql -X -q -v ON_ERROR_STOP=1 $coord "$@" >/dev/null; }

psqlq <<SQL
SET client_min_messages = error;
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, '$TR_SHARD1_DSN');
CREATE TABLE bench_log (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL,
                        username text NOT NULL, created_at timestamptz DEFAULT now());
CREATE INDEX ON bench_log (tenant_id);
SELECT logical_table_add('bench_log');
INSERT INTO bench_log (tenant_id, username) SELECT 1 + g % 10000, 'initial' FROM generate_series(1, 100000) g;
SQL

cat >"$dir/stay.sql" <<'SQL'
\set tid random(1, 5000)
INSERT INTO bench_log (tenant_id, username) VALUES (:tid, 'stay');
SQL
cat >"$dir/move.sql" <<'SQL'
\set tid random(5001, 10000)
INSERT INTO bench_log (tenant_id, username) VALUES (:tid, 'move');
SQL
chown postgres: "$dir"/*.sql 2>/dev/null || true

run_load() {	# name: two clients of name.sql, per-statement log
	(cd "$dir" && as_pg pgbench -n -M prepared -c 2 -j 2 -T "$LOAD_SECONDS" -l \
		--log-prefix="$dir/$1" -f "$dir/$1.sql" $coord >"$dir/$1.out" 2>&1) || true
}

start=$(date +%s.%N)
run_load stay &
stay_pid=$!
run_load move &
move_pid=$!
# the baseline of the copy: the moving tenants' rows copied by hand, shard1
# to shard3 with COPY (no router, no replication), under the same load
sleep $((LOAD_SECONDS / 8))
shard1="-h 127.0.0.1 -p $TR_SHARD1_PORT -U postgres -d postgres"
shard3="-h 127.0.0.1 -p $TR_SHARD3_PORT -U postgres -d postgres"
psql -X -q $shard3 -c "CREATE TABLE bench_copy (id bigint, tenant_id bigint, username text, created_at timestamptz)"
copy_start=$(date +%s.%N)
psql -X -q $shard1 -c "COPY (SELECT * FROM public.bench_log WHERE tenant_id > 5000) TO STDOUT" |
	psql -X -q $shard3 -c "COPY bench_copy FROM STDIN"
copy_end=$(date +%s.%N)
psql -X -q $shard3 -c "DROP TABLE bench_copy"
sleep "$(echo "$start + $LOAD_SECONDS / 4 - $(date +%s.%N)" | bc | sed 's/^-.*/0/')"
# the phases of the split, with the time each starts (polled every 2 ms, for
# at most 60 s): the switch is from phase "switch" to phase "clean up"
psql -X -q $coord >"$dir/phases.out" 2>&1 <<'SQL' &
DO $$
DECLARE
	seen text := '';
	now_phase text;
	done boolean;
BEGIN
	FOR i IN 1..30000 LOOP
		SELECT phase, finished_at IS NOT NULL INTO now_phase, done
		  FROM tenant_router.operations ORDER BY op_id DESC LIMIT 1;
		IF now_phase IS DISTINCT FROM seen THEN
			RAISE NOTICE 'phase % %', extract(epoch FROM clock_timestamp()), now_phase;
			seen := now_phase;
		END IF;
		EXIT WHEN done;
		PERFORM pg_sleep(0.002);
	END LOOP;
END
$$;
SQL
phases_pid=$!
split_start=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 $coord -c "SELECT shard_split('shard1', 5000, 'shard3', '$TR_SHARD3_DSN')" >/dev/null
split_end=$(date +%s.%N)
wait $stay_pid $move_pid $phases_pid

# log lines: client transaction latency_us script epoch_s epoch_us
latencies() {	# name from_epoch to_epoch: the latencies (ms) of statements ending in the window
	cat "$dir/$1".* 2>/dev/null | awk -v from="$2" -v to="$3" \
		'{ t = $5 + $6 / 1e6; if (t >= from && t <= to) printf "%.3f\n", $3 / 1000 }' | sort -n
}
pct() {	# p: the p-th percentile of stdin
	awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int(NR * p / 100); if (i < 1) i = 1; print v[i] }'
}

errors() { grep -c "aborted in command" "$dir/$1.out" || true; }
refused=$(grep -cE 'has moved to another shard|violates check constraint "tenant_router_range"' "$dir/shard1.log" || true)
echo
printf 'split took %.2f s\n' "$(echo "$split_end - $split_start" | bc)"
echo "client errors (clients aborted, of 2 each): staying tenants $(errors stay), moving tenants $(errors move)"
grep -ho "ERROR: .*" "$dir"/stay.out "$dir"/move.out | sort | uniq -c | head -5 || true
echo "inserts refused by the old shard after the switch and sent on to the new one: $refused"
echo "longest statement of a moving tenant: $(latencies move 0 9999999999 | tail -1) ms"
echo "moving tenants, during the split: p50 $(latencies move "$split_start" "$split_end" | pct 50) ms, p99 $(latencies move "$split_start" "$split_end" | pct 99) ms"
echo "staying tenants, before the split (the copy by hand left out): p50 $( (latencies stay "$start" "$copy_start"; latencies stay "$copy_end" "$split_start") | sort -n | pct 50) ms, p99 $( (latencies stay "$start" "$copy_start"; latencies stay "$copy_end" "$split_start") | sort -n | pct 99) ms"
printf 'staying tenants, during a copy of the moving rows by hand (COPY shard1 to shard3, %.0f ms): p50 %s ms, p99 %s ms, max %s ms\n' \
	"$(echo "($copy_end - $copy_start) * 1000" | bc)" "$(latencies stay "$copy_start" "$copy_end" | pct 50)" \
	"$(latencies stay "$copy_start" "$copy_end" | pct 99)" "$(latencies stay "$copy_start" "$copy_end" | tail -1)"
phase_at() { awk -v p="$1" '$1 == "NOTICE:" && $2 == "phase" { n = $4; for (i = 5; i <= NF; i++) n = n " " $i; if (n == p) { print $3; exit } }' "$dir/phases.out"; }
switch_start=$(phase_at switch)
switch_end=$(phase_at "clean up")
if [ -n "$switch_start" ] && [ -n "$switch_end" ]; then
	printf 'the switch (phases switch to flip catalog) took %.1f ms\n' "$(echo "($switch_end - $switch_start) * 1000" | bc)"
	echo "staying tenants, during the switch: p50 $(latencies stay "$switch_start" "$switch_end" | pct 50) ms, p99 $(latencies stay "$switch_start" "$switch_end" | pct 99) ms, max $(latencies stay "$switch_start" "$switch_end" | tail -1) ms ($(latencies stay "$switch_start" "$switch_end" | wc -l) statements)"
	# the switch is short: a window of 250 ms on either side gives a p99 of more statements
	around_start=$(echo "$switch_start - 0.25" | bc)
	around_end=$(echo "$switch_end + 0.25" | bc)
	echo "staying tenants, within 250 ms of the switch: p50 $(latencies stay "$around_start" "$around_end" | pct 50) ms, p99 $(latencies stay "$around_start" "$around_end" | pct 99) ms, max $(latencies stay "$around_start" "$around_end" | tail -1) ms ($(latencies stay "$around_start" "$around_end" | wc -l) statements)"
	echo "moving tenants, within 250 ms of the switch: p50 $(latencies move "$around_start" "$around_end" | pct 50) ms, max $(latencies move "$around_start" "$around_end" | tail -1) ms"
else
	echo "the switch's phases were not seen (phases.out: $(head -c 300 "$dir/phases.out"))"
fi
echo "staying tenants, during the split: p50 $(latencies stay "$split_start" "$split_end" | pct 50) ms, p99 $(latencies stay "$split_start" "$split_end" | pct 99) ms, max $(latencies stay "$split_start" "$split_end" | tail -1) ms"
load_end=$(echo "$start + $LOAD_SECONDS" | bc)
echo "staying tenants, from the split's end to the load's (the worker's cleanup of shard1 within): p50 $(latencies stay "$split_end" "$load_end" | pct 50) ms, p99 $(latencies stay "$split_end" "$load_end" | pct 99) ms, max $(latencies stay "$split_end" "$load_end" | tail -1) ms"
echo "rows: $(psql -X -A -t $coord -c 'SELECT count(*) FROM bench_log') read through the coordinator"
