#!/bin/sh
# The demo, from a fresh checkout: installs what is missing, builds, then runs
# tools/run_demo.sh (a throwaway prefix, stock Wine vs. the shim).
set -eu
cd "$(dirname "$0")/.."
sh tools/install_deps.sh
[ -f Makefile ] || ./configure
make -j"$(nproc)"
make demo
