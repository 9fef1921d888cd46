#!/bin/sh
# What "make check-in-wine-tree" runs: cocancel's ole32 conformance tests
# built by Wine's own build system, run with and without cocancel.
#  1. fetches the source of the installed Wine (Debian's package source) and
#     of Wine 10.0 (Debian 13), see fetch-source.sh;
#  2. applies the patch series (export.sh) to both, and keeps the series in
#     build/wine-tree/series-<version>;
#  3. configures each tree and makes only dlls/ole32/tests' ole32_test.exe
#     (Wine's tools, headers and the import libraries it links with);
#  4. runs the new tests of the installed Wine's build in a throwaway prefix:
#     on stock Wine (no test may fail; what Wine lacks must show up as a
#     todo or a skip), then with cocancel installed prefix-wide (every test
#     passes, nothing left todo).
# Prints how long each part took and ends with "N passed, N failed".
# COCANCEL_WINE_TREE_VERSIONS="installed trixie" (the default) chooses the
# sources: "installed" is the installed Wine's, a suite name another one.
set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
here="$top/tools/wine-tree"
work="$top/build/wine-tree"
WINE=${WINE:-wine}
WINESERVER=${WINESERVER:-wineserver}
versions=${COCANCEL_WINE_TREE_VERSIONS:-installed trixie}
TESTS="cancel syncobjects cancelcall asynccall firstcall fibers handlers"
# The tests whose subject stock Wine lacks (all but fibers).
GAP_TESTS="cancel syncobjects cancelcall asynccall firstcall handlers"
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAILED: $*"; }
timed() { # LABEL LOG COMMAND...: the command's output goes to LOG
    label=$1 out=$2
    shift 2
    t0=$(date +%s)
    "$@" > "$out" 2>&1
    rc=$?
    echo "wine-tree: $label took $(( $(date +%s) - t0 )) s"
    return $rc
}

mkdir -p "$work"
logs="$work/logs"
rm -rf "$logs"
mkdir -p "$logs"

build_tree() { # SUITE
    suite=$1
    timed "$suite: fetch and prepare the source" "$logs/fetch-$suite.log" \
        sh "$here/fetch-source.sh" "$suite" "$work/src-$suite"
    src=$(tail -n 1 "$logs/fetch-$suite.log")
    if [ ! -f "$src/configure" ]; then
        fail "$suite: fetch the Wine source (see $logs/fetch-$suite.log)"
        return 1
    fi
    version=$(basename "$src")
    series="$work/series-$version"
    if sh "$here/export.sh" -o "$series" "$src" > /dev/null 2> "$logs/export-$version.log"; then
        pass "$version: the series ($(ls "$series" | wc -l) patches) applies"
    else
        fail "$version: the series does not apply (see $logs/export-$version.log)"
        return 1
    fi
    obj="$work/obj-$version"
    rm -rf "$obj"
    mkdir -p "$obj"
    if ! timed "$version: configure" "$logs/configure-$version.log" sh "$here/configure.sh" "$src" "$obj"; then
        fail "$version: configure (see $logs/configure-$version.log)"
        return 1
    fi
    exe="$obj/dlls/ole32/tests/x86_64-windows/ole32_test.exe"
    if timed "$version: make ole32_test.exe" "$logs/make-$version.log" \
            make -C "$obj" -j"$(nproc)" dlls/ole32/tests/x86_64-windows/ole32_test.exe && [ -f "$exe" ]; then
        pass "$version: Wine's build system builds ole32_test.exe with the new tests"
    else
        grep -E 'error|undefined' "$logs/make-$version.log" | head -n 10
        fail "$version: make ole32_test.exe (see $logs/make-$version.log)"
        return 1
    fi
    # A warning in a new file would stop the series upstream (Wine builds with -Werror there).
    new_warnings=$(grep -E '(asynccall|cancel|cancelcall|syncobjects|firstcall|fibers|handlers)\.c:[0-9]+:[0-9]+: warning' \
                   "$logs/make-$version.log" | head -n 5)
    if [ -z "$new_warnings" ]; then pass "$version: the new tests build without warnings"
    else echo "$new_warnings"; fail "$version: warnings in the new tests"; fi
    echo "$exe" > "$work/exe-$suite"
    return 0
}

# Runs one test of the tree's ole32_test.exe; sets run_ok, run_todo,
# run_bad, run_skip from its summary lines (children's lines included).
run_test() { # LABEL TEST
    log="$logs/$(echo "$1" | tr ' /:' '___').log"
    (cd "$WINEPREFIX/drive_c/wttests" && timeout 300 "$WINE" ole32_test.exe "$2") > "$log" 2>&1
    rc=$?
    set -- $(tr -d '\r' < "$log" | sed -n 's/^[0-9a-f]*:[A-Za-z0-9_]*: \([0-9]*\) tests executed (\([0-9]*\) marked as todo, [0-9]* as flaky, \([0-9]*\) failures\{0,1\}), \([0-9]*\) skipped\.$/\1 \2 \3 \4/p' |
             awk '{ run += $1; todo += $2; bad += $3; skip += $4 } END { printf "%d %d %d %d %d", run - todo - bad, todo, bad, skip, NR }')
    run_ok=$1 run_todo=$2 run_bad=$3 run_skip=$4 run_summaries=$5
    if [ "$rc" -eq 124 ]; then run_bad=$((run_bad + 1)); echo "    timed out (see $log)"; fi
    if [ "$run_summaries" -eq 0 ]; then run_bad=$((run_bad + 1)); echo "    no summary, exit code $rc (see $log)"; fi
    if [ "$run_bad" -ne 0 ]; then grep -a 'Test failed\|succeeded inside todo' "$log" | head -n 10 | sed 's/^/    /'; fi
    passed=$((passed + run_ok))
    failed=$((failed + run_bad))
}

# Runs every test once, prints a line per test and the totals, and checks
# what the mode promises: on stock Wine each test whose subject Wine lacks
# shows it as a todo or a skip; with cocancel nothing is left todo.
run_all() { # MODE TITLE
    t0=$(date +%s)
    total_ok=0 total_todo=0 total_skip=0 total_bad=0
    for t in $TESTS; do
        run_test "$1 $t" "$t"
        printf '%-12s %4d passed, %3d todo, %2d skipped, %d failed\n' "$t" "$run_ok" "$run_todo" "$run_skip" "$run_bad"
        total_ok=$((total_ok + run_ok)) total_todo=$((total_todo + run_todo))
        total_skip=$((total_skip + run_skip)) total_bad=$((total_bad + run_bad))
        if [ "$1" = stock ]; then
            case " $GAP_TESTS " in
            *" $t "*) if [ $((run_todo + run_skip)) -gt 0 ]; then pass "stock Wine: $t shows what Wine lacks as todo or skip"
                      else fail "stock Wine: $t reports nothing missing"; fi ;;
            esac
        elif [ "$run_todo" -eq 0 ]; then pass "cocancel: $t has nothing left todo"
        else fail "cocancel: $t still has $run_todo todo checks"; fi
    done
    echo "$2: $total_ok passed, $total_todo todo, $total_skip skipped, $total_bad failed ($(( $(date +%s) - t0 )) s)"
}

run_both() { # EXE
    export WINEPREFIX="$work/prefix"
    export WINEDEBUG=-all
    unset WINEDLLOVERRIDES
    "$WINESERVER" -k > /dev/null 2>&1
    rm -rf "$WINEPREFIX"
    timed "a fresh prefix" "$logs/wineboot.log" timeout 300 "$WINE" wineboot -i
    "$WINESERVER" -w
    mkdir -p "$WINEPREFIX/drive_c/wttests"
    cp "$1" "$WINEPREFIX/drive_c/wttests/ole32_test.exe"

    echo "== Wine's build of the tests, stock Wine"
    run_all stock "stock Wine"

    echo "== Wine's build of the tests, cocancel installed prefix-wide"
    if WINE="$WINE" sh "$top/tools/setup_cocancel.sh" install > "$logs/setup.log" 2>&1; then
        pass "cocancel installed into the prefix"
    else
        fail "cocancel install (see $logs/setup.log)"
        return 1
    fi
    run_all cocancel "with cocancel"
    "$WINESERVER" -k > /dev/null 2>&1
}

start=$(date +%s)
for v in $versions; do
    echo "== Wine's tree: $v"
    rm -f "$work/exe-$v"
    build_tree "$v"
done
if [ -f "$work/exe-installed" ]; then
    run_both "$(cat "$work/exe-installed")"
else
    fail "no build of the installed Wine's tests to run"
fi
echo "wine-tree: all parts took $(( $(date +%s) - start )) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
