#!/usr/bin/env bash
# scripts/install-deps.sh — install the Debian packages tenant_router needs to
# build, test and run its demo, if any are missing.
#
# Only missing packages are installed (apt-get update first, then
# apt-get install -y); nothing is upgraded.  As root apt-get runs directly;
# otherwise through sudo, if there is one.  TR_SKIP_DEPS=1 skips the check.
set -euo pipefail

packages=(
	postgresql-15             # the server (coordinator and shards)
	postgresql-server-dev-15  # pg_config, headers, PGXS
	libhiredis-dev            # Redis client library of the topology worker
	redis-server              # Redis for the tests and the demo (+ redis-cli)
	libipc-run-perl           # IPC::Run, needed by PostgreSQL::Test::Cluster
	make
	gcc
)

if [ "${TR_SKIP_DEPS:-}" = 1 ]; then
	exit 0
fi

installed() {
	dpkg -s "$1" 2>/dev/null | grep -qx 'Status: install ok installed'
}

missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "==> Debian packages: all present"
	exit 0
fi

echo "==> Debian packages missing: ${missing[*]}"
if [ "$(id -u)" = 0 ]; then
	sudo=()
elif command -v sudo >/dev/null 2>&1; then
	sudo=(sudo)
else
	echo "install-deps: not root and no sudo; install them as root:" >&2
	echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q -o Dpkg::Use-Pty=0 "${missing[@]}"

for p in "${missing[@]}"; do
	if ! installed "$p"; then
		echo "install-deps: $p is still not installed" >&2
		exit 1
	fi
done
echo "==> Debian packages: installed ${missing[*]}"
