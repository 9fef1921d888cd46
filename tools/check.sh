#!/bin/sh
# Every test, from a fresh checkout: installs what is missing, configures,
# builds, runs "make check-in-wine-tree" (the ole32 tests built in Wine's
# own tree) and "make check", and ends with the sum of both:
# "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
sh tools/install_deps.sh || exit 1
[ -f Makefile ] || ./configure || exit 1
make -j"$(nproc)" || exit 1
logs=build/check-logs
mkdir -p "$logs"
summary() { grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1; }

t0=$(date +%s)
make check-in-wine-tree 2>&1 | tee "$logs/wine-tree.log"
echo "check: make check-in-wine-tree took $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
make check 2>&1 | tee "$logs/check.log"
echo "check: make check took $(( $(date +%s) - t0 )) s"

tree=$(summary "$logs/wine-tree.log")
main=$(summary "$logs/check.log")
[ -n "$tree" ] || tree="0 passed, 1 failed"
[ -n "$main" ] || main="0 passed, 1 failed"
echo "check: Wine's tree: $tree; make check: $main"
set -- $tree $main
echo "$(( $1 + $5 )) passed, $(( $3 + $7 )) failed"
[ $(( $3 + $7 )) -eq 0 ]
