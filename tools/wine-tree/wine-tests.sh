#!/bin/sh
# What "make check-wine-tests" runs: Wine's own conformance tests of ole32,
# combase, rpcrt4 and oleaut32, from the source of the installed Wine, built
# by Wine's build system (mingw, Wine's headers and wine/test.h), each run in
# a stock prefix and in a prefix with cocancel installed prefix-wide.
# Prints one line per test with both results; a test passes this check when
# it gives the same result both ways.  A test whose result on stock Wine
# changes from one run to the next is rerun and named flaky (with both stock
# results) instead.  Ends with "N passed, N failed".
#
# The tree is the one "make check-in-wine-tree" prepares
# (build/wine-tree/obj-<version>); it is fetched and configured here when
# missing.  The ole32 test program there also carries cocancel's own tests
# (the series): they are not Wine's, so only Wine's test names are run.
set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
here="$top/tools/wine-tree"
work="$top/build/wine-tree"
out="$top/build/wine-tests"
WINE=${WINE:-wine}
WINESERVER=${WINESERVER:-wineserver}
MODULES=${COCANCEL_WINE_TEST_MODULES:-ole32 combase rpcrt4 oleaut32}
OURS="cancel syncobjects cancelcall asynccall firstcall fibers handlers"
# A test that has not ended after this long has hung (the same bound both ways).
TEST_TIMEOUT=${COCANCEL_WINE_TEST_TIMEOUT:-90}
passed=0
failed=0

pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAILED: $*"; }
finish() {
    WINEPREFIX="$out/prefix-stock" "$WINESERVER" -k >/dev/null 2>&1
    WINEPREFIX="$out/prefix-cocancel" "$WINESERVER" -k >/dev/null 2>&1
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}
trap finish EXIT INT TERM

rm -rf "$out"
mkdir -p "$out/logs"
logs="$out/logs"
export WINEDEBUG=-all
unset WINEDLLOVERRIDES

# The tree.
t0=$(date +%s)
src=$(ls -d "$work"/src-installed/wine-* 2>/dev/null | head -n 1)
if [ -z "$src" ]; then
    sh "$here/fetch-source.sh" installed "$work/src-installed" > "$logs/fetch.log" 2>&1
    src=$(tail -n 1 "$logs/fetch.log")
fi
[ -f "$src/configure" ] || { fail "fetch the installed Wine's source (see $logs/fetch.log)"; exit 1; }
obj="$work/obj-$(basename "$src")"
if [ ! -f "$obj/Makefile" ]; then
    mkdir -p "$obj"
    sh "$here/configure.sh" "$src" "$obj" > "$logs/configure.log" 2>&1 ||
        { fail "configure (see $logs/configure.log)"; exit 1; }
fi
# Debian's repack drops the generated.c files of Wine's tests (type layout
# checks made by a script from the headers): an empty placeholder stands in,
# which leaves the test list naming a test that does not exist.  That test
# gets a body that only skips, and is left out of the runs below.
NOT_BUILT=""
for m in $MODULES; do
    g="$src/dlls/$m/tests/generated.c"
    [ -f "$g" ] && ! grep -q START_TEST "$g" &&
        printf '#include "wine/test.h"\nSTART_TEST(generated)\n{\n    skip("not in the Debian source\\n");\n}\n' > "$g"
    [ -f "$g" ] && grep -q "not in the Debian source" "$g" && NOT_BUILT="$NOT_BUILT $m:generated"
done
targets=""
for m in $MODULES; do targets="$targets dlls/$m/tests/x86_64-windows/${m}_test.exe"; done
if ! make -C "$obj" -j"$(nproc)" $targets > "$logs/make.log" 2>&1; then
    grep -E 'error' "$logs/make.log" | head -n 10
    fail "make Wine's test programs (see $logs/make.log)"
    exit 1
fi
echo "wine-tests: $(basename "$src"): the tree and $(echo $MODULES | wc -w) test programs took $(( $(date +%s) - t0 )) s"

# The two prefixes.
t0=$(date +%s)
for p in stock cocancel; do
    WINEPREFIX="$out/prefix-$p" timeout 300 "$WINE" wineboot -i > "$logs/wineboot-$p.log" 2>&1
    WINEPREFIX="$out/prefix-$p" "$WINESERVER" -w
    mkdir -p "$out/prefix-$p/drive_c/tests"
    for m in $MODULES; do cp "$obj/dlls/$m/tests/x86_64-windows/${m}_test.exe" "$out/prefix-$p/drive_c/tests/"; done
done
WINEPREFIX="$out/prefix-cocancel" sh "$top/tools/setup_cocancel.sh" install > "$logs/setup.log" 2>&1 ||
    { fail "install cocancel (see $logs/setup.log)"; exit 1; }
echo "wine-tests: two prefixes took $(( $(date +%s) - t0 )) s"

# One run: "passed", "N-failures", "timeout" or "crash-RC".
run_one() { # PREFIX EXE TEST LOG
    (cd "$out/prefix-$1/drive_c/tests" && WINEPREFIX="$out/prefix-$1" timeout "$TEST_TIMEOUT" "$WINE" "$2" "$3") > "$4" 2>&1
    rc=$?
    [ "$rc" -eq 124 ] && { WINEPREFIX="$out/prefix-$1" "$WINESERVER" -k >/dev/null 2>&1; echo timeout; return; }
    sum=$(tr -d '\r' < "$4" | sed -n 's/^[0-9a-f]*:[A-Za-z0-9_]*: \([0-9]*\) tests executed ([0-9]* marked as todo, [0-9]* as flaky, \([0-9]*\) failures\{0,1\}), [0-9]* skipped\.$/\1 \2/p' |
          awk '{ run += $1; bad += $2 } END { if (NR) printf "%d %d", run, bad }')
    if [ -z "$sum" ]; then echo "crash-$rc"; return; fi
    set -- $sum
    if [ "$2" -eq 0 ] && [ "$rc" -eq 0 ]; then echo passed; else echo "$2-failures"; fi
}

t0=$(date +%s)
printf '%-28s %-16s %-16s\n' "test" "stock Wine" "with cocancel"
for m in $MODULES; do
    exe=${m}_test.exe
    list=$(cd "$out/prefix-stock/drive_c/tests" && WINEPREFIX="$out/prefix-stock" timeout 60 "$WINE" "$exe" --list 2>/dev/null | tr -d '\r' | sed -n 's/^    //p')
    [ -n "$list" ] || { fail "$exe --list"; continue; }
    for t in $list; do
        [ "$m" = ole32 ] && case " $OURS " in *" $t "*) continue ;; esac
        case " $NOT_BUILT " in *" $m:$t "*) printf '%-28s not built: not in the Debian source\n' "$m:$t"; continue ;; esac
        a=$(run_one stock "$exe" "$t" "$logs/$m-$t-stock.log")
        b=$(run_one cocancel "$exe" "$t" "$logs/$m-$t-cocancel.log")
        note=""
        ok=yes
        if [ "$a" != "$b" ]; then
            # Once more both ways: only a test seen to change on stock Wine
            # alone may differ (it is named flaky, with its results).
            a2=$(run_one stock "$exe" "$t" "$logs/$m-$t-stock2.log")
            b2=$(run_one cocancel "$exe" "$t" "$logs/$m-$t-cocancel2.log")
            if [ "$a" != "$a2" ]; then note="flaky on stock Wine: $a then $a2 (with cocancel $b then $b2)"
            else ok=no note="second run: $a2 on stock Wine, $b2 with cocancel"
            fi
        fi
        printf '%-28s %-16s %-16s %s\n' "$m:$t" "$a" "$b" "$note"
        if [ $ok = yes ]; then pass; else fail "$m:$t differs (see $logs/$m-$t-*.log)"; fi
    done
done
echo "wine-tests: the runs took $(( $(date +%s) - t0 )) s"
WINEPREFIX="$out/prefix-cocancel" sh "$top/tools/setup_cocancel.sh" uninstall >> "$logs/setup.log" 2>&1
