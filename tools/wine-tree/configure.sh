#!/bin/sh
# Configures a Wine tree prepared by fetch-source.sh, out of tree, for the
# 64-bit PE test build only: tools/wine-tree/configure.sh SRC OBJ
# makedep may still stop on a generated header that an unbuilt module
# includes (dsound's fir.h, say) or on a generated header under include/:
# each such file gets an empty placeholder and config.status runs again, at
# most 50 times.  Output goes to stdout; the exit code is configure's.
set -u
[ $# -eq 2 ] || { sed -n '2,7s/^# \{0,1\}//p' "$0" >&2; exit 2; }
src=$(cd "$1" && pwd)
mkdir -p "$2"
cd "$2" || exit 1
"$src/configure" --enable-win64 --without-x --without-freetype --without-gstreamer --without-vulkan \
    --without-opengl --without-pulse --without-alsa --without-cups --without-sane --without-gphoto \
    --without-krb5 --without-netapi --without-pcap --without-usb --without-v4l2 --without-sdl \
    --without-unwind --without-udev --without-dbus --without-capi --without-oss && exit 0
i=0
while [ $i -lt 50 ]; do
    i=$((i + 1))
    out=$(./config.status 2>&1) && exit 0
    line=$(echo "$out" | grep -E 'error' | grep -v 'could not create' | head -n 1)
    case $line in
    "makedep: error: open "*)
        f=$(echo "$line" | sed -n 's/^makedep: error: open \([^ ]*\) :.*/\1/p')
        path="$src/include/$f" ;;
    *": error: "*": No such file or directory")
        from=$(echo "$line" | cut -d: -f1)
        f=$(echo "$line" | sed -n 's/.*: error: \([^:]*\): No such file or directory$/\1/p')
        path="$(dirname "$from")/$f" ;;
    *) echo "$out"; exit 1 ;;
    esac
    case $path in "$src"/*) ;; *) echo "$out"; exit 1 ;; esac
    [ ! -e "$path" ] && [ -d "$(dirname "$path")" ] || { echo "$out"; exit 1; }
    echo "configure: empty placeholder for the generated ${path#$src/}"
    : > "$path"
done
echo "configure: still failing after 50 placeholders"
exit 1
