#!/usr/bin/env bash
# scripts/test.sh — `make test`: install missing packages, build with
# -Werror, install, then run every test:
#
#   pg_regress   the tests of sql/schedule (sql/NAME.sql against
#                expected/NAME.out, setup first, one after the other), on a
#                coordinator + 2 shards + Redis started by test/harness.sh;
#                the harness's env.sh (TR_SHARD1_DSN, ...) is exported to the
#                tests, which read it with psql's \getenv.  pg_regress
#                (re)creates database contrib_regression on the coordinator
#                (no --use-existing: that would skip creating it).
#   isolation    specs/*.spec against expected/*.out, on the same cluster
#   TAP          test/t/*.pl with prove; each test starts its own servers
#                through PostgreSQL::Test::Cluster and test/perl/TenantRouter
#
# As root, the tests run as the user "postgres" on a copy of the tree in a
# temporary directory that user owns.  Every server started is stopped on
# exit, pass or fail.  Exit status 0 only if every test passed.
#
#   scripts/test.sh [--no-build]      --no-build: skip packages and build,
#                                     test the extension already installed
# Environment: TR_KEEP=1 keeps the work directory even on success;
# TR_PROVE_FLAGS adds flags to prove (e.g. "-v" or "-j2").
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_COLLATE=C	# sorted test order does not depend on the locale

build=1
case "${1:-}" in
'') ;;
--no-build) build=0 ;;
*) die "usage: scripts/test.sh [--no-build]" ;;
esac

t0=$SECONDS
cd "$TR_ROOT"

say "Checking that source folders depend downward only"
scripts/check-layers.sh

# the worker waits for a catalog at the version the library is built for
control_version=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" tenant_router.control)
grep -q "TENANT_ROUTER_CATALOG_VERSION \"$control_version\"" src/include/tenant_router/catalog.h ||
	die "TENANT_ROUTER_CATALOG_VERSION in src/include/tenant_router/catalog.h is not default_version $control_version of tenant_router.control"

if [ $build = 1 ]; then
	say "Checking Debian packages"
	scripts/install-deps.sh
fi
use_pg_bindir
bindir=$(pg_config --bindir)
pgxs_test=$(pg_config --pkglibdir)/pgxs/src/test
pg_regress=$pgxs_test/regress/pg_regress
pg_isolation_regress=$pgxs_test/isolation/pg_isolation_regress
[ -x "$pg_regress" ] || die "$pg_regress not found (it comes with postgresql-client-15)"

if [ $build = 1 ]; then
	say "Building tenant_router with -Werror and assertions (clean build) and installing it"
	make --no-print-directory clean >/dev/null
	build_install TR_EXTRA_CFLAGS=-DUSE_ASSERT_CHECKING
fi
t_build=$((SECONDS - t0))

# Work directory: a copy of the tree, minus git and build products, owned by
# the user the servers and tests run as.
work=$(mktemp -d "${TMPDIR:-/tmp}/tenant_router_test.XXXXXX")
chmod 755 "$work"
cluster=$work/cluster

# stop_everything stops every server under $work: the harness cluster, and any
# server a TAP test left behind (a test killed mid-way does not run its END).
stop_everything() {
	"$TR_ROOT/test/harness.sh" stop "$work" || true
}

finish() {
	local rc=$?
	trap - EXIT INT TERM
	stop_everything
	if [ "$rc" -ne 0 ] || [ -n "${TR_KEEP:-}" ]; then
		echo "test output and server logs kept in $work"
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work/src"
tar -C "$TR_ROOT" --exclude-vcs --exclude='./.demo' --exclude='./tmp_check' \
	--exclude='./results' --exclude='./output_iso' --exclude='./log' \
	--exclude='./regression.*' --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	-cf - . | tar -C "$work/src" -xf -
mkdir -p "$work/pg_regress" "$work/isolation"
if is_root; then chown -R postgres: "$work"; fi

# Tests found: pg_regress's from its schedule, which must list every
# sql/*.sql (a test missing from it would silently never run); the others in
# sorted order.
regress_tests=() isolation_tests=() tap_tests=()
schedule=sql/schedule
while read -r word name rest; do
	case "$word" in
	test:) [ -z "$rest" ] || die "$schedule: one test a line, please: test: $name $rest"
		[ -e "sql/$name.sql" ] || die "$schedule lists $name, but sql/$name.sql does not exist"
		regress_tests+=("$name") ;;
	'' | '#'*) ;;
	*) die "$schedule: unexpected line: $word $name $rest" ;;
	esac
done <"$schedule"
for f in sql/*.sql; do
	[ -e "$f" ] || continue
	name=$(basename "$f" .sql)
	n=0
	for t in "${regress_tests[@]}"; do [ "$t" = "$name" ] && n=$((n + 1)); done
	[ $n = 1 ] || die "$f is listed $n times in $schedule: add (or keep) one line 'test: $name'"
done
for f in specs/*.spec; do [ -e "$f" ] && isolation_tests+=("$(basename "$f" .spec)"); done
for f in test/t/*.pl; do [ -e "$f" ] && tap_tests+=("$f"); done

failed_suites=()
total_passed=0 total_failed=0 total_skipped=0
summary=()

# run_in_cluster cmd...: runs cmd as the servers' user with the harness's
# env.sh exported.
run_in_cluster() {
	as_pg bash -c '. "$0"; exec "$@"' "$cluster/env.sh" "$@"
}

# run_pg_regress suite binary dbname ntests args...: runs pg_regress or
# pg_isolation_regress (with args: the tests, or --schedule) on the cluster's
# coordinator (it (re)creates dbname; no --use-existing, which would skip
# creating it), shows the diffs and the coordinator's log on failure, and adds
# the result of the ntests tests to the summary.
run_pg_regress() {
	local suite=$1 bin=$2 dbname=$3 ntests=$4 rc passed failed
	shift 4
	say "$suite: $ntests tests"
	[ -x "$bin" ] || die "$bin not found (it comes with postgresql-client-15)"
	set +e
	run_in_cluster "$bin" --bindir="$bindir" \
		--host=127.0.0.1 --port="$coord_port" --user=postgres \
		--inputdir="$work/src" --outputdir="$work/$suite" \
		--dbname="$dbname" "$@" 2>&1 | tee "$work/$suite.log"
	rc=${PIPESTATUS[0]}
	set -e
	passed=$(grep -cE '\.\.\. ok( |$)' "$work/$suite.log" || true)
	failed=$((ntests - passed))
	if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
	if [ "$failed" -gt 0 ]; then
		failed_suites+=("$suite")
		if [ -s "$work/$suite/regression.diffs" ]; then
			say "$suite: regression.diffs"
			cat "$work/$suite/regression.diffs"
		fi
		say "$suite: last lines of the coordinator's log ($cluster/coordinator.log)"
		tail -n 40 "$cluster/coordinator.log" || true
	fi
	summary+=("$(printf '  %-12s %d of %d tests passed' "$suite" "$passed" "$ntests")")
	total_passed=$((total_passed + passed)) total_failed=$((total_failed + failed))
}

t1=$SECONDS
if [ ${#regress_tests[@]} -gt 0 ] || [ ${#isolation_tests[@]} -gt 0 ]; then
	say "Starting the test cluster (coordinator, 2 shards, Redis)"
	"$TR_ROOT/test/harness.sh" start "$cluster"
	# shellcheck disable=SC1091
	coord_port=$(. "$cluster/env.sh" && echo "$TR_COORD_PORT")
fi

if [ ${#regress_tests[@]} -gt 0 ]; then
	run_pg_regress pg_regress "$pg_regress" contrib_regression ${#regress_tests[@]} \
		--schedule="$work/src/$schedule"
else
	summary+=("$(printf '  %-12s no tests (sql/*.sql)' pg_regress)")
fi
if [ ${#isolation_tests[@]} -gt 0 ]; then
	run_pg_regress isolation "$pg_isolation_regress" isolation_regression \
		${#isolation_tests[@]} "${isolation_tests[@]}"
else
	summary+=("$(printf '  %-12s no tests (specs/*.spec)' isolation)")
fi

# The TAP tests start their own servers: free the cluster's resources first.
if [ -d "$cluster" ]; then
	"$TR_ROOT/test/harness.sh" stop "$cluster"
fi
t_sql=$((SECONDS - t1))

t2=$SECONDS
if [ ${#tap_tests[@]} -gt 0 ]; then
	say "TAP: ${#tap_tests[@]} tests"
	set +e
	# PostgreSQL::Test::Cluster wants what PGXS's prove_installcheck sets:
	# TESTDIR (tmp_check/ goes there), PG_REGRESS, and the bindir in PATH.
	# shellcheck disable=SC2086
	(cd "$work/src" && as_pg env TESTDIR="$work/src" PG_REGRESS="$pg_regress" \
		prove --timer ${TR_PROVE_FLAGS:-} -I test/perl -I "$pgxs_test/perl" \
		"${tap_tests[@]}") 2>&1 | tee "$work/tap.log"
	rc=${PIPESTATUS[0]}
	set -e
	passed=0 failed=0 skipped=0 failed_tap=()
	for t in "${tap_tests[@]}"; do
		if grep -qE "^(\[[0-9:]+\] )?${t//./\\.} \.+ ok" "$work/tap.log"; then
			passed=$((passed + 1))
		elif grep -qE "^(\[[0-9:]+\] )?${t//./\\.} \.+ skipped" "$work/tap.log"; then
			skipped=$((skipped + 1))
		else
			failed=$((failed + 1))
			failed_tap+=("$t")
		fi
	done
	[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
	if [ $failed -gt 0 ]; then
		failed_suites+=(TAP)
		for t in "${failed_tap[@]}"; do
			log=$work/src/tmp_check/log/regress_log_$(basename "$t" .pl)
			if [ -f "$log" ]; then
				say "TAP: last lines of $log"
				tail -n 60 "$log"
			fi
		done
	fi
	summary+=("$(printf '  %-12s %d of %d tests passed%s' TAP $passed ${#tap_tests[@]} \
		"$([ $skipped -gt 0 ] && echo ", $skipped skipped")")")
	total_passed=$((total_passed + passed)) total_failed=$((total_failed + failed))
	total_skipped=$((total_skipped + skipped))
else
	summary+=("$(printf '  %-12s no tests (test/t/*.pl)' TAP)")
fi
t_tap=$((SECONDS - t2))

say "tenant_router test summary"
printf '%s\n' "${summary[@]}"
printf '  time: %ds in all (packages+build %ds, pg_regress+isolation %ds, TAP %ds)\n' \
	$((SECONDS - t0)) "$t_build" "$t_sql" "$t_tap"
if [ $((total_passed + total_failed + total_skipped)) -eq 0 ]; then
	echo "  no tests were found: that is a failure"
	total_failed=1
fi
if [ ${#failed_suites[@]} -gt 0 ]; then
	echo "  FAILED: ${failed_suites[*]}"
fi
skipped_note=
[ $total_skipped -gt 0 ] && skipped_note=", $total_skipped skipped"
echo "tests: $total_passed passed, $total_failed failed$skipped_note"
[ $total_failed -eq 0 ]
