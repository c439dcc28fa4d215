#!/usr/bin/env bash
# test/harness.sh — start or stop a local tenant_router cluster for tests.
#
#   test/harness.sh start DIR   coordinator (tenant_router preloaded), two
#                               shards and a redis-server, on free loopback
#                               ports, all under DIR; writes DIR/env.sh
#   test/harness.sh stop DIR    stop everything started under DIR
#
# PostgreSQL refuses to run as root: as root, the servers run as the user
# "postgres" and DIR is handed to that user.
set -euo pipefail

cmd=${1:?usage: harness.sh start|stop DIR}
dir=${2:?usage: harness.sh start|stop DIR}
bindir=$(pg_config --bindir)

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
	local p
	for _ in $(seq 200); do
		p=$(( 20000 + RANDOM % 30000 ))
		if port_free "$p" && ! grep -qx "$p" "$dir/.ports" 2>/dev/null; then
			echo "$p" >>"$dir/.ports"
			echo "$p"
			return
		fi
	done
	echo "no free port found" >&2
	exit 1
}

start_pg() {	# name port [extra conf lines]
	local name=$1 port=$2
	shift 2
	as_pg "$bindir/initdb" -D "$dir/$name" -U postgres -A trust --no-sync >"$dir/$name.initdb.log" 2>&1
	{
		echo "listen_addresses = '127.0.0.1'"
		echo "port = $port"
		echo "unix_socket_directories = '$dir'"
		echo "fsync = off"
		echo "max_connections = 200"
		echo "max_prepared_transactions = 20"
		echo "wal_level = logical"
		echo "log_min_messages = warning"
		echo "log_line_prefix = '%m [%p] %q%a '"
		for line in "$@"; do echo "$line"; done
	} | as_pg tee -a "$dir/$name/postgresql.conf" >/dev/null
	as_pg "$bindir/pg_ctl" -D "$dir/$name" -l "$dir/$name.log" -w -t 60 start >/dev/null
}

case "$cmd" in
start)
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres: "$dir"
	coord=$(free_port); s1=$(free_port); s2=$(free_port); redis=$(free_port)
	as_pg redis-server --port "$redis" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
	start_pg shard1 "$s1"
	start_pg shard2 "$s2"
	# trtest.*: the shards' DSNs, for isolation specs (they cannot read the environment)
	start_pg coordinator "$coord" \
		"shared_preload_libraries = 'tenant_router'" \
		"trtest.shard1_dsn = 'host=127.0.0.1 port=$s1 dbname=postgres user=postgres'" \
		"trtest.shard2_dsn = 'host=127.0.0.1 port=$s2 dbname=postgres user=postgres'" \
		"tenant_router.database = 'postgres'" \
		"tenant_router.redis_host = '127.0.0.1'" \
		"tenant_router.redis_port = $redis"
	cat >"$dir/env.sh" <<ENV
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=postgres PGPORT=$coord
export TR_DIR=$dir TR_COORD_PORT=$coord TR_SHARD1_PORT=$s1 TR_SHARD2_PORT=$s2 TR_REDIS_PORT=$redis
export TR_SHARD1_DSN='host=127.0.0.1 port=$s1 dbname=postgres user=postgres'
export TR_SHARD2_DSN='host=127.0.0.1 port=$s2 dbname=postgres user=postgres'
ENV
	;;
stop)
	for name in coordinator shard1 shard2; do
		if [ -f "$dir/$name/postmaster.pid" ]; then
			as_pg "$bindir/pg_ctl" -D "$dir/$name" -m immediate -w stop >/dev/null 2>&1 || true
		fi
	done
	if [ -f "$dir/redis.pid" ]; then
		kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
	fi
	;;
*)
	echo "usage: harness.sh start|stop DIR" >&2
	exit 2
	;;
esac
