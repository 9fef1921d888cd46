#!/bin/sh
# Installs the Debian 12 packages cocancel needs to build and test, when any
# is missing.  Runs apt-get as root, or through sudo when not root.
set -eu

PACKAGES="wine wine64 wine64-tools gcc-mingw-w64-x86-64 gcc-mingw-w64-i686 binutils-mingw-w64-x86-64 \
binutils-mingw-w64-i686 libcmocka-dev pkg-config python3 make gcc \
flex bison autoconf perl xz-utils curl git"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -n "$missing" ] || exit 0

echo "installing:$missing"
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "install_deps: not root and no sudo; run: apt-get install -y$missing" >&2
    exit 1
fi
$as_root apt-get update
DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y $missing
