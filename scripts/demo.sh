#!/usr/bin/env bash
# scripts/demo.sh — `make demo` and `make demo-stop`.
#
#   scripts/demo.sh start   install missing packages, build and install the
#                           extension, start a coordinator, three shards and
#                           Redis on loopback, run seed 000's example through
#                           the coordinator, and leave the servers running
#   scripts/demo.sh stop    stop the demo's servers and remove its directory
#
# A second `start` stops and removes the previous demo first.  Ports: the
# coordinator on 55432, shards on 55433-55435, Redis on 56379; a port that is
# taken is replaced by a free one (the connection lines printed at the end
# give the ports used).  Environment: TR_DEMO_DIR (default
# /var/tmp/tenant_router_demo), TR_DEMO_PORT, TR_DEMO_REDIS_PORT.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if is_root; then
	demo_dir=${TR_DEMO_DIR:-/var/tmp/tenant_router_demo}
else
	demo_dir=${TR_DEMO_DIR:-/var/tmp/tenant_router_demo-$(id -un)}
fi
demo_port=${TR_DEMO_PORT:-55432}
demo_redis_port=${TR_DEMO_REDIS_PORT:-56379}
marker=$demo_dir/.tenant_router_demo

stop_demo() {
	if [ ! -d "$demo_dir" ]; then
		echo "no demo to stop ($demo_dir does not exist)"
		return
	fi
	[ -f "$marker" ] || die "$demo_dir is not a tenant_router demo directory; not touching it"
	"$TR_ROOT/test/harness.sh" stop "$demo_dir"
	rm -rf "$demo_dir"
	echo "demo stopped; $demo_dir removed"
}

# psql_at port [psql args]: psql to a demo server, as the postgres role.
psql_at() {
	local port=$1
	shift
	PGAPPNAME=tenant_router_demo psql -X -P pager=off -h 127.0.0.1 -p "$port" \
		-U postgres -d postgres "$@"
}

# show port: run the SQL on stdin, echoing each statement before its result,
# and stop the demo at the first error.
show() {
	psql_at "$1" -e -v ON_ERROR_STOP=1 "${@:2}" ||
		die "a demo step failed; server logs are in $demo_dir (make demo-stop stops the servers)"
}

# try_show port: like show, but a failure is counted, not fatal.
try_show() {
	if ! psql_at "$1" -e -v ON_ERROR_STOP=1 "${@:2}"; then
		echo "    UNEXPECTED: the statement above failed"
		failures=$((failures + 1))
	fi
}

# value port sql: one value, unaligned.
value() {
	psql_at "$1" -At -c "$2"
}

failures=0
check() {	# what got expected
	if [ "$2" = "$3" ]; then
		echo "    ok: $1"
	else
		echo "    UNEXPECTED: $1: got '$2', expected '$3'"
		failures=$((failures + 1))
	fi
}

start_demo() {
	say "Checking Debian packages"
	"$TR_ROOT/scripts/install-deps.sh"
	use_pg_bindir

	say "Building and installing tenant_router"
	build_install

	say "Stopping the previous demo, if any"
	stop_demo

	say "Starting a coordinator, three shards and Redis on 127.0.0.1 (under $demo_dir)"
	mkdir -p "$demo_dir"
	touch "$marker"
	if ! "$TR_ROOT/test/harness.sh" start "$demo_dir" --shards 3 \
		--port "$demo_port" --redis-port "$demo_redis_port"; then
		"$TR_ROOT/test/harness.sh" stop "$demo_dir" || true
		die "the demo servers did not start; see the logs in $demo_dir"
	fi
	# shellcheck disable=SC1091
	. "$demo_dir/env.sh"
	cat <<EOF
    coordinator  127.0.0.1:$TR_COORD_PORT   (tenant_router preloaded)
    shard1       127.0.0.1:$TR_SHARD1_PORT
    shard2       127.0.0.1:$TR_SHARD2_PORT
    shard3       127.0.0.1:$TR_SHARD3_PORT   (started, not registered yet)
    redis        127.0.0.1:$TR_REDIS_PORT
EOF

	say "Create the extension and table users on the coordinator"
	show "$TR_COORD_PORT" <<'SQL'
CREATE EXTENSION tenant_router;
CREATE TABLE users (
    id SERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    username VARCHAR(100) NOT NULL,
    email VARCHAR(255) UNIQUE NOT NULL,
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_users_tenant_id ON users (tenant_id);
SQL

	say "Register shard1 (tenants 1-10000) and shard2 (10001-20000); make users logical"
	show "$TR_COORD_PORT" -v dsn1="$TR_SHARD1_DSN" -v dsn2="$TR_SHARD2_DSN" <<'SQL'
SELECT shard_add('shard1', 1, 10000, :'dsn1');
SELECT shard_add('shard2', 10001, 20000, :'dsn2');
SELECT logical_table_add('users');
SQL

	say "Insert alice (tenant 123) and bob (tenant 15000) through the coordinator"
	show "$TR_COORD_PORT" <<'SQL'
INSERT INTO users (tenant_id, username, email) VALUES (123, 'alice', 'alice@example.com');
INSERT INTO users (tenant_id, username, email) VALUES (15000, 'bob', 'bob@example.com');
SQL

	say "Routing: who owns which tenant"
	show "$TR_COORD_PORT" <<'SQL'
SELECT shard_for(123);
SELECT shard_for(15000);
SELECT * FROM tenant_router.shards;
SQL
	check "shard_for(123)" "$(value "$TR_COORD_PORT" 'SELECT shard_for(123)')" shard1
	check "shard_for(15000)" "$(value "$TR_COORD_PORT" 'SELECT shard_for(15000)')" shard2

	say "Rows read back through the coordinator"
	show "$TR_COORD_PORT" <<'SQL'
SELECT * FROM users ORDER BY id;
SQL

	say "The same rows as each shard stores them (psql straight to the shard)"
	for i in 1 2; do
		port_var=TR_SHARD${i}_PORT
		echo "-- shard$i (port ${!port_var})"
		show "${!port_var}" <<'SQL'
SELECT * FROM users ORDER BY id;
SQL
	done
	check "alice is on shard1 only" \
		"$(value "$TR_SHARD1_PORT" 'SELECT string_agg(username, $$,$$ ORDER BY id) FROM users')" alice
	check "bob is on shard2 only" \
		"$(value "$TR_SHARD2_PORT" 'SELECT string_agg(username, $$,$$ ORDER BY id) FROM users')" bob

	say "The plan of a single-tenant query: sent whole to the owner shard"
	show "$TR_COORD_PORT" <<'SQL'
EXPLAIN (VERBOSE) SELECT * FROM users WHERE tenant_id = 123;
SQL

	say "A tenant no shard owns"
	local sql out
	sql="INSERT INTO users (tenant_id, username, email) VALUES (99999, 'carol', 'carol@example.com');"
	echo "$sql"
	if out=$(psql_at "$TR_COORD_PORT" -c "$sql" 2>&1); then
		echo "$out"
		check "the insert for tenant 99999 fails" succeeded failed
	else
		echo "$out"
		if grep -q 'no shard owns tenant 99999' <<<"$out"; then
			check "the insert for tenant 99999 fails with \"no shard owns tenant 99999\"" yes yes
		else
			check "the insert for tenant 99999 fails with \"no shard owns tenant 99999\"" other-error yes
		fi
	fi

	redis_step

	say "The demo is running"
	cat <<EOF
Connect to the coordinator and use table users like any table:

    psql -h 127.0.0.1 -p $TR_COORD_PORT -U postgres

The shards are plain PostgreSQL servers:

    psql -h 127.0.0.1 -p $TR_SHARD1_PORT -U postgres     # shard1
    psql -h 127.0.0.1 -p $TR_SHARD2_PORT -U postgres     # shard2
    psql -h 127.0.0.1 -p $TR_SHARD3_PORT -U postgres     # shard3

Redis: redis-cli -p $TR_REDIS_PORT   (topology channel $channel)
Data directories and server logs: $demo_dir
Stop everything with:  make demo-stop
EOF
	if [ $failures -gt 0 ]; then
		echo
		echo "$failures check(s) above were UNEXPECTED: the servers are left running for a look"
		exit 1
	fi
}

# redis_step publishes seed 000's ADD_SHARD event for shard3 and waits up to
# 10 s for the topology worker to apply it.
redis_step() {
	local dsn3 event receivers owner i
	channel=$(value "$TR_COORD_PORT" 'SHOW tenant_router.topology_channel' 2>/dev/null) ||
		channel=db_shard_topology_updates
	say "Change the topology through Redis: publish seed 000's ADD_SHARD event for shard3"
	dsn3="postgres://postgres@127.0.0.1:$TR_SHARD3_PORT/postgres"
	event="{\"op\": \"ADD_SHARD\", \"payload\": {\"shard_id\": \"shard3\", \"range_start\": 20001, \"range_end\": 30000, \"dsn\": \"$dsn3\"}}"
	echo "redis-cli -p $TR_REDIS_PORT PUBLISH $channel '$event'"
	receivers=$(redis-cli -h 127.0.0.1 -p "$TR_REDIS_PORT" PUBLISH "$channel" "$event")
	echo "(received by $receivers subscriber(s))"
	echo "waiting up to 10 s for shard_for(25000) to return shard3 ..."
	owner=
	for i in $(seq 20); do
		owner=$(value "$TR_COORD_PORT" 'SELECT shard_for(25000)') || true
		[ "$owner" = shard3 ] && break
		sleep 0.5
	done
	if [ "$owner" != shard3 ]; then
		echo "    NOTE: the topology worker did not apply the event within 10 s" \
			"(shard_for(25000) is '${owner:-NULL}'; the event reached $receivers subscriber(s))."
		echo "    The Redis step is skipped; the rest of the demo is unaffected."
		return
	fi
	echo "    ok: the topology worker applied the event after about $(( (i - 1) / 2 )) s"
	try_show "$TR_COORD_PORT" <<'SQL'
SELECT shard_for(25000);
SELECT shard_id, range_start, range_end, state FROM tenant_router.shards ORDER BY range_start;
INSERT INTO users (tenant_id, username, email) VALUES (25000, 'dave', 'dave@example.com');
SELECT * FROM users WHERE tenant_id = 25000;
SQL
	echo "-- shard3 (port $TR_SHARD3_PORT)"
	try_show "$TR_SHARD3_PORT" <<'SQL'
SELECT * FROM users ORDER BY id;
SQL
	check "dave is on shard3" \
		"$(value "$TR_SHARD3_PORT" 'SELECT string_agg(username, $$,$$ ORDER BY id) FROM users')" dave
}

case "${1:-}" in
start) start_demo ;;
stop)
	use_pg_bindir
	stop_demo
	;;
*) die "usage: scripts/demo.sh start|stop" ;;
esac
