#!/bin/sh
# Shows the same unmodified program on stock Wine and with cocancel, in a
# throwaway prefix that is deleted afterwards.  Runs from the source tree
# (tools/run_demo.sh, after make) and from an unpacked release (./demo.sh,
# which needs nothing but Wine).  Exits 0 when the demo's call was cancelled.
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ -f "$here/setup_cocancel.sh" ] && [ -f "$here/x64/demo.exe" ]; then
    bin="$here/x64" setup="$here/setup_cocancel.sh"
else
    top=$(cd "$here/.." && pwd)
    bin="$top/build/x86_64" setup="$top/tools/setup_cocancel.sh"
fi
WINE=${WINE:-wine}
WINESERVER=${WINESERVER:-wineserver}
export WINEPREFIX="$(mktemp -d /tmp/cocancel-demo.XXXXXX)/prefix"
export WINEDEBUG=-all
unset WINEDLLOVERRIDES
trap '"$WINESERVER" -k >/dev/null 2>&1; rm -rf "$(dirname "$WINEPREFIX")"' EXIT INT TERM

echo "Creating a throwaway Wine prefix in $WINEPREFIX ..."
timeout 300 "$WINE" wineboot -i >/dev/null 2>&1
"$WINESERVER" -w
mkdir -p "$WINEPREFIX/drive_c/demo"
cp "$bin/demo.exe" "$bin/asyncdemo.exe" "$WINEPREFIX/drive_c/demo/"
cd "$WINEPREFIX/drive_c/demo"

echo
echo "=== 1. $("$WINE" --version), stock ==="
timeout 60 "$WINE" demo.exe 2>&1 | tr -d '\r' | grep -v '^ *$' | head -n 4
echo "   (the program is killed: Wine's ole32 lacks the cancellation API)"

echo
echo "=== 2. the same program with cocancel installed (setup_cocancel.sh install) ==="
sh "$setup" install >/dev/null
# The programs' own exit codes (not those of the pipes' last commands).
out="$(dirname "$WINEPREFIX")/out"
timeout 60 "$WINE" demo.exe > "$out" 2>&1
rc=$?
tr -d '\r' < "$out"
echo
timeout 60 "$WINE" asyncdemo.exe > "$out" 2>&1
arc=$?
tr -d '\r' < "$out"
[ $rc -eq 0 ] && rc=$arc
sh "$setup" uninstall >/dev/null
echo
echo "The prefix is deleted on exit."
exit $rc
