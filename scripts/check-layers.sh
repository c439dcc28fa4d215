#!/usr/bin/env bash
# scripts/check-layers.sh — fails if a source folder includes the header of a
# folder above it (README "Layout").  Layers, lowest first:
#
#   metadata < connection < executor < planner < fdw < commands < worker
#
# and src/tenant_router.c (module load) above them all.  guc.h (the settings,
# defined in tenant_router.c) may be included anywhere.  A header belongs to
# the folder of the .c file of the same name; a header without one belongs
# to the folder of the files that define what it declares (listed below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

layers=(metadata connection executor planner fdw commands worker)
rank() {
	local i
	for i in "${!layers[@]}"; do
		[ "${layers[$i]}" = "$1" ] && { echo "$i"; return; }
	done
	echo 99
}

# headers whose definitions live in a file of another name
declare -A owner=([fdw]=fdw [connection]=connection)

header_folder() {	# header name without .h
	local h=$1 f
	[ "$h" = guc ] && { echo base; return; }
	[ -n "${owner[$h]:-}" ] && { echo "${owner[$h]}"; return; }
	f=$(find src -mindepth 2 -name "$h.c" | head -n 1)
	[ -n "$f" ] || { echo unknown; return; }
	basename "$(dirname "$f")"
}

bad=0
for c in src/*/*.c src/*/*.h; do
	[ -e "$c" ] || continue
	folder=$(basename "$(dirname "$c")")
	r=$(rank "$folder")
	while IFS= read -r h; do
		hf=$(header_folder "$h")
		[ "$hf" = base ] && continue
		if [ "$hf" = unknown ]; then
			echo "check-layers: $c includes tenant_router/$h.h, which no src/*/$h.c defines" >&2
			bad=1
			continue
		fi
		if [ "$(rank "$hf")" -gt "$r" ]; then
			echo "check-layers: $c ($folder) includes tenant_router/$h.h ($hf, a layer above)" >&2
			bad=1
		fi
	done < <(sed -n 's|^#include "tenant_router/\(.*\)\.h"|\1|p' "$c")
done
# every header in src/include has its .c
for h in src/include/tenant_router/*.h; do
	name=$(basename "$h" .h)
	[ "$(header_folder "$name")" = unknown ] && {
		echo "check-layers: $h has no src/*/$name.c" >&2
		bad=1
	}
done
[ $bad = 0 ] && echo "check-layers: every folder depends downward only"
exit $bad
