#!/bin/sh
# Every test, from a fresh checkout: installs what is missing, configures,
# builds and runs "make check" (ends with "N passed, N failed").
set -eu
cd "$(dirname "$0")/.."
sh tools/install_deps.sh
[ -f Makefile ] || ./configure
make -j"$(nproc)"
make check
