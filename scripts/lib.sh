# scripts/lib.sh — helpers shared by scripts/test.sh and scripts/demo.sh.
# shellcheck shell=bash
# Sourced, not run.  Sets TR_ROOT (the repository root).

TR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '\n==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# as_pg runs a command as the user the servers run as: "postgres" when we are
# root (initdb and postgres refuse to run as root), else the current user.
# The environment is kept, PATH included.
as_pg() {
	if is_root; then
		runuser -u postgres -- env PATH="$PATH" "$@"
	else
		"$@"
	fi
}

# pg_owner is the user that owns the servers' files.
pg_owner() {
	if is_root; then echo postgres; else id -un; fi
}

# use_pg_bindir puts the bin directory of the PostgreSQL that pg_config
# describes first in PATH, so initdb, pg_ctl and psql match the headers the
# extension is built against.
use_pg_bindir() {
	command -v pg_config >/dev/null 2>&1 ||
		die "pg_config not found: install postgresql-server-dev-15 (make deps)"
	PATH="$(pg_config --bindir):$PATH"
	export PATH
}

# build_install builds the extension (extra make arguments are passed on) and
# installs it into the PostgreSQL that pg_config describes.
build_install() {
	local jobs log
	jobs=$(nproc 2>/dev/null || echo 2)
	make -C "$TR_ROOT" --no-print-directory -j"$jobs" "$@" || die "build failed"
	log=$(mktemp)
	if [ -w "$(pg_config --pkglibdir)" ]; then
		make -C "$TR_ROOT" --no-print-directory install >"$log" 2>&1 ||
			{ cat "$log"; rm -f "$log"; die "make install failed"; }
	elif command -v sudo >/dev/null 2>&1; then
		# shellcheck disable=SC2024  # the log is ours, not root's
		sudo env PATH="$PATH" make -C "$TR_ROOT" --no-print-directory install >"$log" 2>&1 ||
			{ cat "$log"; rm -f "$log"; die "make install failed"; }
	else
		rm -f "$log"
		die "cannot write $(pg_config --pkglibdir): run as root, or install sudo"
	fi
	rm -f "$log"
	echo "installed tenant_router into $(pg_config --pkglibdir)"
}
