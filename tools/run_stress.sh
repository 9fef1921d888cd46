#!/bin/sh
# "make check-stress": the long stress and soak pass of asynchronous calls in
# a throwaway prefix with cocancel installed.  Ends with "N passed, N failed".
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
WINE=${WINE:-wine}
WINESERVER=${WINESERVER:-wineserver}
CALLS=${CALLS:-10000}
CYCLES=${CYCLES:-100000}
export WINEPREFIX="$top/build/stressprefix"
export WINEDEBUG=-all
unset WINEDLLOVERRIDES
"$WINESERVER" -k >/dev/null 2>&1
rm -rf "$WINEPREFIX"
timeout 300 "$WINE" wineboot -i >/dev/null 2>&1
"$WINESERVER" -w
mkdir -p "$WINEPREFIX/drive_c/stress"
cp "$top/build/x86_64/stress.exe" "$top/build/x86_64/ole32_test.exe" "$WINEPREFIX/drive_c/stress/"
sh "$top/tools/setup_cocancel.sh" install >/dev/null || exit 1
cd "$WINEPREFIX/drive_c/stress"
out=$(mktemp)
timeout 3600 "$WINE" stress.exe asyncstress "$CALLS" 2>&1 | tr -d '\r' | tee "$out"
timeout 3600 "$WINE" stress.exe asyncsoak "$CYCLES" 2>&1 | tr -d '\r' | tee -a "$out"
timeout 3600 "$WINE" stress.exe syncstress "$CALLS" 2>&1 | tr -d '\r' | tee -a "$out"
# A cancellable call made first thing in a fresh process, FIRST_CALLS processes per kind of call.
timeout 3600 "$WINE" ole32_test.exe firstcall "${FIRST_CALLS:-200}" 2>&1 | tr -d '\r' | grep -v firstcall-figures | tee -a "$out"
sh "$top/tools/setup_cocancel.sh" uninstall >/dev/null
"$WINESERVER" -k >/dev/null 2>&1
sed -n 's/^[0-9a-f]*:[a-z]*: \([0-9]*\) tests executed ([0-9]* marked as todo, [0-9]* as flaky, \([0-9]*\) failures).*/\1 \2/p' "$out" |
    awk '{ run += $1; bad += $2 } END { printf "%d passed, %d failed\n", run - bad, bad; exit bad != 0 }'
rc=$?
rm -f "$out"
exit $rc
