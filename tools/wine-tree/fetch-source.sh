#!/bin/sh
# Fetches and unpacks the source of a Debian Wine package, ready for
# configure: tools/wine-tree/fetch-source.sh SUITE DEST
#   SUITE  the Debian suite whose "wine" source to take (bookworm: Wine 8.0,
#          trixie: Wine 10.0), or "installed" for the suite and version of the
#          installed wine64 package (its version must still be in the suite).
#   DEST   the folder to create: DEST/wine-<upstream version>, printed on the
#          last line.  Downloads are kept in $COCANCEL_WINE_SRC_CACHE
#          (default: build/wine-tree/cache) and checked against the SHA-256
#          of the suite's Sources index.
#
# Debian's orig tarball is a "repack" without the configure script, the
# server protocol header and the generated or binary files its build makes
# again.  This script runs autoreconf and tools/make_requests, and gives
# makedep empty placeholders for the rest (see placeholders.py): only the
# modules the cocancel check builds have to be real, and they are.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
mirror=${COCANCEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${COCANCEL_WINE_SRC_CACHE:-$top/build/wine-tree/cache}

[ $# -eq 2 ] || { sed -n '2,12s/^# \{0,1\}//p' "$0" >&2; exit 2; }
suite=$1
dest=$2
want=""
if [ "$suite" = installed ]; then
    want=$(dpkg-query -W -f='${Version}' wine64 2>/dev/null || true)
    [ -n "$want" ] || { echo "fetch-source: wine64 is not installed" >&2; exit 1; }
    suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
fi

fetch() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        timeout 600 curl -fsS -o "$2" "$1"
    else
        timeout 600 python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
    fi
}

mkdir -p "$cache"
index="$cache/Sources-$suite"
if [ ! -s "$index" ] || [ -n "$(find "$index" -mmin +1440)" ]; then
    fetch "$mirror/dists/$suite/main/source/Sources.xz" "$index.xz.part"
    xz -dc "$index.xz.part" > "$index"
    rm -f "$index.xz.part"
fi

# The "wine" stanza: its version, folder and the orig tarball's SHA-256.
stanza=$(awk '/^Package: wine$/ { p = 1 } p && /^$/ { exit } p' "$index")
version=$(echo "$stanza" | sed -n 's/^Version: //p')
directory=$(echo "$stanza" | sed -n 's/^Directory: //p')
orig=$(echo "$stanza" | awk '/^Checksums-Sha256:/ { p = 1; next } /^[^ ]/ { p = 0 } p && $3 ~ /orig\.tar/ { print $1, $3; exit }')
[ -n "$version" ] && [ -n "$orig" ] || { echo "fetch-source: no wine source in $suite" >&2; exit 1; }
if [ -n "$want" ] && [ "$want" != "$version" ]; then
    echo "fetch-source: installed wine64 is $want, $suite has the source of $version" >&2
    exit 1
fi
sha=${orig%% *}
file=${orig#* }
if [ ! -f "$cache/$file" ] || ! echo "$sha  $cache/$file" | sha256sum -c --quiet >/dev/null 2>&1; then
    echo "fetch-source: downloading $file"
    fetch "$mirror/$directory/$(echo "$file" | sed 's/~/%7e/g')" "$cache/$file.part"
    echo "$sha  $cache/$file.part" | sha256sum -c --quiet
    mv "$cache/$file.part" "$cache/$file"
fi

upstream=${version%%~*}
upstream=${upstream%%-*}
src="$dest/wine-$upstream"
rm -rf "$src"
mkdir -p "$dest"
tar -C "$dest" -xf "$cache/$file"
[ -f "$src/configure.ac" ] || { echo "fetch-source: $file did not unpack to $src" >&2; exit 1; }

cd "$src"
[ -f configure ] || autoreconf -fi > /dev/null 2>&1 || { echo "fetch-source: autoreconf failed" >&2; exit 1; }
[ -f include/wine/server_protocol.h ] || perl tools/make_requests > /dev/null
# Headers other generators write (Vulkan, OpenGL); only modules not built include them.
for h in wine/vulkan.h wine/vulkan_driver.h wine/wgl.h wine/wgl_driver.h; do
    [ -f "include/$h" ] || : > "include/$h"
done
python3 "$here/placeholders.py" . | while read -r f; do : > "$f"; done
echo "$src"
