#!/usr/bin/env bash
# test/harness.sh — start or stop a local tenant_router cluster for tests.
#
#   test/harness.sh start DIR [--shards N] [--port P] [--redis-port P]
#       coordinator (tenant_router preloaded), N shards (default 2) and a
#       redis-server, on loopback, all under DIR; writes DIR/env.sh.
#       Ports are free random ones unless --port asks for the coordinator on
#       P and shard i on P+i, or --redis-port for Redis; a port asked for but
#       taken is replaced by a free one, with a warning.
#   test/harness.sh stop DIR
#       stop every PostgreSQL and Redis server whose pid file is under DIR,
#       at any depth (safe to repeat, and to use on a TAP test's directory).
#
# DIR/env.sh exports PGHOST PGPORT PGUSER PGDATABASE (the coordinator),
# TR_DIR, TR_COORD_PORT, TR_REDIS_PORT, TR_SHARDS (N), and for each shard i
# TR_SHARDi_PORT and TR_SHARDi_DSN.
#
# PostgreSQL refuses to run as root: as root, the servers run as the user
# "postgres" and DIR is handed to that user.
set -euo pipefail

usage() {
	echo "usage: harness.sh start DIR [--shards N] [--port P] [--redis-port P] | stop DIR" >&2
	exit 2
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || usage
shift 2
bindir=$(pg_config --bindir)

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

take_port() {	# port: record it as used by this cluster
	echo "$1" >>"$dir/.ports"
	echo "$1"
}

free_port() {
	local p
	for _ in $(seq 200); do
		p=$(( 20000 + RANDOM % 30000 ))
		if port_free "$p" && ! grep -qx "$p" "$dir/.ports" 2>/dev/null; then
			take_port "$p"
			return
		fi
	done
	echo "harness: no free port found" >&2
	exit 1
}

want_port() {	# what (preferred port or empty)
	local what=$1 p=${2:-}
	if [ -n "$p" ]; then
		if port_free "$p" && ! grep -qx "$p" "$dir/.ports" 2>/dev/null; then
			take_port "$p"
			return
		fi
		echo "harness: port $p for $what is taken; using a free one instead" >&2
	fi
	free_port
}

start_pg() {	# name port [extra conf lines]
	local name=$1 port=$2
	shift 2
	if ! as_pg "$bindir/initdb" -D "$dir/$name" -U postgres -A trust --no-sync --no-locale -E UTF8 \
		>"$dir/$name.initdb.log" 2>&1; then
		echo "harness: initdb of $name failed; see $dir/$name.initdb.log" >&2
		exit 1
	fi
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
	if ! as_pg "$bindir/pg_ctl" -D "$dir/$name" -l "$dir/$name.log" -w -t 60 start >/dev/null; then
		echo "harness: $name did not start on port $port; see $dir/$name.log" >&2
		exit 1
	fi
}

start_redis() {	# port
	local port=$1
	as_pg redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
	for _ in $(seq 100); do
		if [ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" = PONG ]; then
			return
		fi
		sleep 0.1
	done
	echo "harness: redis-server did not answer on port $port; see $dir/redis.log" >&2
	exit 1
}

# serves_dir pid dir: is pid a live process whose working directory is dir?
serves_dir() {
	[ -n "$1" ] && [ -d "/proc/$1" ] &&
		[ "$(readlink -f "/proc/$1/cwd" 2>/dev/null)" = "$(readlink -f "$2")" ]
}

# wait_gone pid: wait up to 10 s for a process to exit.
wait_gone() {
	for _ in $(seq 100); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

case "$cmd" in
start)
	shards=2 port='' redis_port=''
	while [ $# -gt 0 ]; do
		case "$1" in
		--shards) shards=${2:?}; shift 2 ;;
		--port) port=${2:?}; shift 2 ;;
		--redis-port) redis_port=${2:?}; shift 2 ;;
		*) usage ;;
		esac
	done
	mkdir -p "$dir"
	rm -f "$dir/.ports"
	if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
	coord=$(want_port coordinator "$port")
	shard_ports=()
	for i in $(seq "$shards"); do
		shard_ports+=("$(want_port "shard$i" "${port:+$((port + i))}")")
	done
	redis=$(want_port redis "$redis_port")
	start_redis "$redis"
	for i in $(seq "$shards"); do
		start_pg "shard$i" "${shard_ports[$((i - 1))]}"
	done
	# trtest.shardN_dsn: the shards' DSNs, for isolation specs, which cannot
	# read the environment
	trtest=()
	for i in $(seq "$shards"); do
		trtest+=("trtest.shard${i}_dsn = 'host=127.0.0.1 port=${shard_ports[$((i - 1))]} dbname=postgres user=postgres'")
	done
	start_pg coordinator "$coord" \
		"${trtest[@]}" \
		"shared_preload_libraries = 'tenant_router'" \
		"tenant_router.database = 'postgres'" \
		"tenant_router.redis_host = '127.0.0.1'" \
		"tenant_router.redis_port = $redis"
	{
		echo "export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=postgres PGPORT=$coord"
		echo "export TR_DIR=$dir TR_COORD_PORT=$coord TR_REDIS_PORT=$redis TR_SHARDS=$shards"
		for i in $(seq "$shards"); do
			p=${shard_ports[$((i - 1))]}
			echo "export TR_SHARD${i}_PORT=$p"
			echo "export TR_SHARD${i}_DSN='host=127.0.0.1 port=$p dbname=postgres user=postgres'"
		done
	} >"$dir/env.sh"
	;;
stop)
	[ $# -eq 0 ] || usage
	[ -d "$dir" ] || exit 0
	# Every server whose pid file is anywhere under DIR (a TAP test's too),
	# provided the pid still names that server: a server's working directory
	# is its data directory (PostgreSQL) or its --dir (Redis), the directory
	# of its pid file.  A pid file left by a crash or a reboot may name an
	# unrelated process by now.
	while IFS= read -r pidfile; do
		pid=$(head -n 1 "$pidfile" 2>/dev/null) || continue
		if serves_dir "$pid" "$(dirname "$pidfile")"; then
			as_pg "$bindir/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w stop >/dev/null 2>&1 || true
		fi
	done < <(find "$dir" -name postmaster.pid 2>/dev/null)
	while IFS= read -r pidfile; do
		pid=$(head -n 1 "$pidfile" 2>/dev/null) || continue
		if serves_dir "$pid" "$(dirname "$pidfile")"; then
			kill "$pid" 2>/dev/null || true
			wait_gone "$pid" || kill -9 "$pid" 2>/dev/null || true
		fi
		rm -f "$pidfile"
	done < <(find "$dir" -name redis.pid 2>/dev/null)
	;;
*)
	usage
	;;
esac
