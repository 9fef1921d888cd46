#!/bin/sh
# Runs every test of the project (what "make check" does):
#  1. the host unit tests of the platform-free core (cmocka, ASan+UBSan);
#  2. under Wine, in one throwaway prefix (build/wineprefix):
#     - a stock-Wine baseline (the API is missing: the route program must die),
#     - every conformance and loading-route program with the shim installed
#       prefix-wide, then with per-program overrides, then via the launcher,
#     - install/uninstall checks (the prefix is left exactly as before).
# Ends with the line "N passed, N failed".  Logs are in build/test-logs.
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
B="$top/build"
WINE=${WINE:-wine}
WINESERVER=${WINESERVER:-wineserver}
logs="${TEST_LOGS:-$B/test-logs}"
passed=0
failed=0

# The Wine version matrix (tools/matrix.sh) runs only the Wine-side checks
# (WINE_SIDE_ONLY=1: no host unit tests, no layout check, no make install),
# in a prefix and a log folder of each Wine version.
WINE_SIDE_ONLY=${WINE_SIDE_ONLY:-}
# TEST_ARCH=i686 runs the 32-bit programs (under Wine's WoW64): their
# engine lives in syswow64 and comes from a release's x32 folder.
case ${TEST_ARCH:=x86_64} in
    i686) sysdir=syswow64 reldir=x32 ;;
    *) sysdir=system32 reldir=x64 ;;
esac
export WINEPREFIX="${TEST_PREFIX:-$B/wineprefix}"
# Quiet, except for the loader errors that explain a program that never started.
export WINEDEBUG=${WINEDEBUG:--all,err+module}
unset WINEDLLOVERRIDES

rm -rf "$logs"
mkdir -p "$logs"

pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAILED: $*"; }
check() { desc=$1; shift; if "$@"; then pass "$desc"; else fail "$desc"; fi; }

finish() {
    "$WINESERVER" -k >/dev/null 2>&1
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

# Runs a program of the conformance harness and adds up its summary lines.
# A crash, a timeout or an exit code without a reported failure is one failure.
run_winetest() {
    label=$1; shift
    log="$logs/$(echo "$label" | tr ' /:' '___').log"
    # The whole of ole32_test.exe takes about two minutes on a busy 2-core machine.
    (cd "$WINEPREFIX/drive_c/cctests" && timeout 300 "$WINE" "$@") > "$log" 2>&1
    rc=$?
    counts=$(tr -d '\r' < "$log" | sed -n 's/^[0-9a-f]*:[A-Za-z0-9_]*: \([0-9]*\) tests executed (\([0-9]*\) marked as todo, [0-9]* as flaky, \([0-9]*\) failures\{0,1\}), \([0-9]*\) skipped\.$/\1 \2 \3/p' |
             awk '{ run += $1; todo += $2; bad += $3 } END { printf "%d %d %d %d", run - todo - bad, bad, todo, NR }')
    set -- $counts
    ok_count=$1 bad_count=$2 summaries=$4
    passed=$((passed + ok_count))
    failed=$((failed + bad_count))
    if [ "$rc" -eq 124 ]; then
        fail "$label: timed out (see $log)"
    elif [ "$summaries" -eq 0 ] || { [ "$rc" -ne 0 ] && [ "$bad_count" -eq 0 ]; }; then
        fail "$label: exit code $rc without a test summary (see $log)"
    elif [ "$bad_count" -ne 0 ]; then
        echo "FAILED: $label: $bad_count failures (see $log)"
        grep -a "Test failed\|succeeded inside todo" "$log" | head -20
        # The lines around a failure say more than its message (CI keeps
        # only this output): the first 15 other lines of the log.
        tr -d '\r' < "$log" | grep -a -v "Test failed\|tests executed" | grep -a -m 15 ": " | sed 's/^/    /'
    else
        echo "ok: $label: $ok_count checks"
    fi
}

TESTS="ole32_test.exe route_static.exe route_getproc.exe route_delayload.exe route_lateload.exe"
if [ "$TEST_ARCH" = i686 ]; then
    # binutils' dlltool makes i386 delay-import libraries in the .idata
    # sections of ordinary imports: the linked program has no delay-import
    # descriptor, and its delay slot is read as part of another DLL's import
    # table (a call through it jumps to 0).  The route is tested on x86_64.
    TESTS="ole32_test.exe route_static.exe route_getproc.exe route_lateload.exe"
    echo "note: route_delayload.exe is not run on i686 (binutils makes no working i386 delay-import library)"
fi
# cocancel_test.exe imports cocancel.dll itself, so it runs where the engine is installed.
INSTALLED_TESTS="$TESTS cocancel_test.exe"

run_all() {
    mode=$1; shift
    for exe in $TESTS; do run_winetest "$mode: $exe" "$@" "$exe"; done
}

snapshot() {
    "$WINE" reg export 'HKCU\Software\Wine' "$1.hkcu.reg" /y >/dev/null 2>&1
    "$WINE" reg export 'HKLM\Software\Classes' "$1.classes.reg" /y >/dev/null 2>&1
    (cd "$WINEPREFIX/drive_c/windows" && find system32 syswow64 -maxdepth 1 -type f -print0 | sort -z | xargs -0 md5sum) > "$1.files"
    ls -a "$WINEPREFIX" > "$1.top"
}

same_snapshot() {
    cmp -s "$1.hkcu.reg" "$2.hkcu.reg" && cmp -s "$1.classes.reg" "$2.classes.reg" &&
    cmp -s "$1.files" "$2.files" && cmp -s "$1.top" "$2.top"
}

# The program died on a missing ole32 function before reporting anything.
# (Wine's exit code after its crash handler is not reliable, so the output is what counts.)
aborted_unimplemented() {
    grep -q 'unimplemented function ole32.dll.Co' "$1" && ! grep -q 'tests executed' "$1"
}

setup() { WINE="$WINE" sh "$top/tools/setup_cocancel.sh" "$@" > "$logs/setup.log" 2>&1; }

trap finish EXIT INT TERM

if [ -z "$WINE_SIDE_ONLY" ]; then
echo "== host unit tests (platform-free core)"
{ "$B/host/test_core" && "$B/host/test_fmt"; } > "$logs/host.log" 2>&1
rc=$?
ok_count=$(grep -c '^\[       OK \]' "$logs/host.log")
bad_count=$(grep -c '^\[  FAILED  \] test_\|^\[  ERROR   \]' "$logs/host.log")
passed=$((passed + ok_count))
failed=$((failed + bad_count))
if [ "$rc" -ne 0 ] && [ "$bad_count" -eq 0 ]; then fail "host unit tests exited with $rc"; fi
grep -a 'PASSED\|FAILED' "$logs/host.log" | grep -v '^\[       OK' | tail -n 4

echo "== engine layout"
for arch in x86_64 i686; do
    [ -d "$B/$arch/engine" ] || continue
    NM=$arch-w64-mingw32-nm sh "$top/tools/engine_deps.sh" "$B/$arch/engine" > "$logs/engine-deps-$arch.log" 2>&1
    check "engine layout ($arch): no two engine files call each other, directly or round a circle" test $? -eq 0
done
fi

echo "== a fresh Wine prefix ($WINEPREFIX)"
"$WINESERVER" -k >/dev/null 2>&1
rm -rf "$WINEPREFIX"
timeout 300 "$WINE" wineboot -i > "$logs/wineboot.log" 2>&1
"$WINESERVER" -w
check "prefix created" test -f "$WINEPREFIX/system.reg"
"$WINE" --version
# 32-bit programs need Wine's WoW64 mode, which needs the kernel's 32-bit
# code segment and int 0x80 (Wine sets a 32-bit TLS descriptor with it); a
# kernel whose IA-32 emulation is off kills every 32-bit process at start.
# Wine's own 32-bit cmd.exe tells, with no code of this project in it: when
# it cannot start, the i686 suite cannot say anything and is skipped, loudly.
if [ "$TEST_ARCH" = i686 ]; then
    probe=$(timeout 120 "$WINE" 'C:\windows\syswow64\cmd.exe' /c echo cocancel-wow64-probe 2>/dev/null | tr -d '\r')
    if [ "$probe" != cocancel-wow64-probe ]; then
        echo "SKIPPED: this machine cannot run Wine's WoW64: Wine's own 32-bit cmd.exe did not start (a kernel whose IA-32 emulation is off faults on the int 0x80 Wine issues to set up 32-bit code; see dmesg); the i686 suite was not run"
        "$WINESERVER" -k >/dev/null 2>&1
        echo "$passed passed, $failed failed"
        exit 0
    fi
    pass "Wine's own 32-bit cmd.exe runs under WoW64"
fi
mkdir -p "$WINEPREFIX/drive_c/cctests" "$WINEPREFIX/drive_c/cclaunch"
for f in $INSTALLED_TESTS selftest.exe cclate.dll demo.exe stress.exe; do cp "$B/$TEST_ARCH/$f" "$WINEPREFIX/drive_c/cctests/"; done
cp "$B/$TEST_ARCH/route_static.exe" "$WINEPREFIX/drive_c/cctests/other_program.exe"
cp "$B/$TEST_ARCH/cocancel-run.exe" "$B/$TEST_ARCH/cocancel.dll" "$WINEPREFIX/drive_c/cclaunch/"

echo "== stock Wine: the API is missing"
(cd "$WINEPREFIX/drive_c/cctests" && timeout 120 "$WINE" route_static.exe) > "$logs/stock.log" 2>&1
check "stock Wine: a static import of CoCancelCall aborts" aborted_unimplemented "$logs/stock.log"
# Every conformance test runs on stock Wine too, and must not fail there: what
# stock Wine lacks is marked todo_wine or skipped, what it has is checked the
# same way as with cocancel (the same file is the judge of both).
for t in cancel syncobjects cancelcall asynccall firstcall fibers handlers; do
    run_winetest "stock Wine: ole32_test.exe $t" ole32_test.exe "$t"
done

echo "== the test harness itself"
st() {
    (cd "$WINEPREFIX/drive_c/cctests" && timeout 60 "$WINE" selftest.exe "$@") > "$logs/selftest.log" 2>&1
    rc=$?
    tr -d '\r' < "$logs/selftest.log"
    return $rc
}
out=$(st --list)
check "harness: --list names every test" test "$out" = "$(printf '    failing\n    passing')"
out=$(st passing); rc=$?
check "harness: a passing test exits 0" test "$rc" -eq 0
check "harness: summary counts checks, todos and skips" \
    sh -c "echo '$out' | grep -q '^[0-9a-f]*:passing: 5 tests executed (1 marked as todo, 0 as flaky, 0 failures), 1 skipped.\$'"
check "harness: todo_wine failure is reported as todo" sh -c "echo '$out' | grep -q 'selftest.c:[0-9]*: Test marked todo: a todo that fails on Wine'"
check "harness: skip and trace lines" sh -c "echo '$out' | grep -q 'selftest.c:[0-9]*: Tests skipped: a skipped part' && echo '$out' | grep -q 'selftest.c:[0-9]*: a trace line'"
out=$(st failing); rc=$?
check "harness: exit code is the number of failures ($rc)" test "$rc" -eq 2
check "harness: failure line with file, line and context" sh -c "echo '$out' | grep -q '^selftest.c:[0-9]*: ctx 2: Test failed: an expected failure'"
check "harness: success inside a todo block fails" sh -c "echo '$out' | grep -q 'Test succeeded inside todo block: an expected success inside todo'"
out=$(st no_such_test); rc=$?
check "harness: an unknown test name is an error" test "$rc" -ne 0

snapshot "$logs/before"

echo "== installed prefix-wide"
check "install (prefix-wide)" setup install
run_all "prefix-wide"
run_winetest "prefix-wide: cocancel_test.exe" cocancel_test.exe
# The short stress and soak pass ("make check-stress" runs the long one).
run_winetest "prefix-wide: stress.exe asyncstress" stress.exe asyncstress 300
run_winetest "prefix-wide: stress.exe asyncsoak" stress.exe asyncsoak 2000
run_winetest "prefix-wide: stress.exe syncstress" stress.exe syncstress 300
check "uninstall (prefix-wide)" setup uninstall
snapshot "$logs/after-wide"
check "uninstall restores registry and files exactly (prefix-wide)" same_snapshot "$logs/before" "$logs/after-wide"

echo "== installed per program (AppDefaults)"
apps=""
for exe in $INSTALLED_TESTS; do apps="$apps --app $exe"; done
check "install (per program)" setup install $apps
run_all "per-program"
run_winetest "per-program: cocancel_test.exe" cocancel_test.exe
(cd "$WINEPREFIX/drive_c/cctests" && timeout 120 "$WINE" other_program.exe) > "$logs/other-program.log" 2>&1
check "per-program install leaves other programs on stock Wine" aborted_unimplemented "$logs/other-program.log"
check "uninstall (per program)" setup uninstall
snapshot "$logs/after-app"
check "uninstall restores registry and files exactly (per program)" same_snapshot "$logs/before" "$logs/after-app"

# Installs the prefix prefix-wide with SETUP (a setup command installed
# somewhere), checks that it got ENGINE, runs the programs, uninstalls and
# compares the prefix with its state before.
install_run_uninstall() { # TAG SETUP ENGINE PROGRAM...
    inst_tag=$1 inst_setup=$2 inst_engine=$3
    shift 3
    check "$inst_tag: install (prefix-wide)" \
        sh -c "WINE='$WINE' sh '$inst_setup' install > '$logs/$inst_tag-setup.log' 2>&1"
    check "$inst_tag: the prefix gets this install's engine" \
        cmp -s "$inst_engine" "$WINEPREFIX/drive_c/windows/$sysdir/cocancel.dll"
    for inst_exe in "$@"; do run_winetest "$inst_tag: $inst_exe" "$inst_exe"; done
    check "$inst_tag: uninstall" sh -c "WINE='$WINE' sh '$inst_setup' uninstall > '$logs/$inst_tag-setup.log' 2>&1"
    snapshot "$logs/after-$inst_tag"
    check "$inst_tag: uninstall restores registry and files exactly" same_snapshot "$logs/before" "$logs/after-$inst_tag"
}

echo "== installed from the release tarball (make dist)"
# Unpacked away from the source tree: its own setup command and binaries only.
release=$(mktemp -d)
tarball=$(ls "$B"/cocancel-*.tar.gz 2>/dev/null | head -n 1)
check "release tarball built" test -n "$tarball"
if [ -n "$tarball" ] && tar -C "$release" -xzf "$tarball"; then
    dist=$(ls -d "$release"/cocancel-*)
    check "release: setup --help documents install, uninstall and status" \
        sh -c "sh '$dist/setup_cocancel.sh' --help | grep -q 'setup_cocancel.sh install' && sh '$dist/setup_cocancel.sh' --help | grep -q 'uninstall:' && sh '$dist/setup_cocancel.sh' --help | grep -q 'status:'"
    install_run_uninstall release "$dist/setup_cocancel.sh" "$dist/$reldir/cocancel.dll" route_getproc.exe cocancel_test.exe
    # The release's own demo: a throwaway prefix of its own, stock Wine, then
    # the tarball's setup; it exits 0 when the demo's call was cancelled.
    (cd "$release" && WINE="$WINE" WINESERVER="$WINESERVER" timeout 600 sh "$dist/demo.sh") > "$logs/release-demo.log" 2>&1
    rc=$?
    check "release: ./demo.sh from the unpacked tarball cancels the demo's call (exit $rc)" \
        sh -c "test $rc -eq 0 && grep -q 'CoCancelCall(.*) = 0 at' '$logs/release-demo.log'"
fi
rm -rf "$release"

if [ -z "$WINE_SIDE_ONLY" ]; then
echo "== installed with make install (PREFIX, DESTDIR)"
staged=$(mktemp -d)
if make -C "$top" -s install DESTDIR="$staged" PREFIX=/usr > "$logs/make-install.log" 2>&1; then
    inst="$staged/usr"
    check "make install: engine, carrier, launcher and import library in lib/cocancel/x64" \
        sh -c "for f in cocancel.dll ole32.dll cocancel-run.exe libcocancel.a; do cmp -s '$B/x86_64/'\$f '$inst/lib/cocancel/x64/'\$f || exit 1; done"
    check "make install: header, setup command and README" \
        test -f "$inst/include/cocancel.h" -a -x "$inst/bin/setup_cocancel" -a -f "$inst/share/doc/cocancel/README.md"
    install_run_uninstall make-install "$inst/bin/setup_cocancel" "$inst/lib/cocancel/x64/cocancel.dll" route_getproc.exe
    make -C "$top" -s uninstall DESTDIR="$staged" PREFIX=/usr >> "$logs/make-install.log" 2>&1
    check "make uninstall removes every installed file" test -z "$(find "$staged" -type f)"
else
    fail "make install DESTDIR=... PREFIX=/usr (see $logs/make-install.log)"
fi
rm -rf "$staged"
fi

echo "== launcher, no override"
# The launcher puts the engine into the program it starts, not into the COM
# servers that program makes Windows start, so the cross-process part of the
# call tests (cancelcall) runs with the installed shim only.
for exe in $TESTS; do
    case $exe in
        ole32_test.exe)
            run_winetest "launcher: $exe cancel" 'C:\cclaunch\cocancel-run.exe' "$exe" cancel
            run_winetest "launcher: $exe asynccall" 'C:\cclaunch\cocancel-run.exe' "$exe" asynccall ;;
        *) run_winetest "launcher: $exe" 'C:\cclaunch\cocancel-run.exe' "$exe" ;;
    esac
done
(cd "$WINEPREFIX/drive_c/cctests" && timeout 60 "$WINE" 'C:\cclaunch\cocancel-run.exe') > "$logs/launcher-usage.log" 2>&1
rc=$?
check "launcher without a program: usage, exit 250 (got $rc)" test "$rc" -eq 250
(cd "$WINEPREFIX/drive_c/cctests" && timeout 60 "$WINE" 'C:\cclaunch\cocancel-run.exe' no_such_program.exe) > "$logs/launcher-missing.log" 2>&1
rc=$?
check "launcher with a missing program: exit 252 (got $rc)" test "$rc" -eq 252

echo "== installer refuses what is not a prefix"
notprefix=$(mktemp -d)
WINEPREFIX="$notprefix" sh "$top/tools/setup_cocancel.sh" install > "$logs/notprefix.log" 2>&1
rc=$?
check "install into a non-prefix directory is refused (exit $rc)" test "$rc" -ne 0
check "nothing was written into the non-prefix directory" test -z "$(ls -A "$notprefix")"
rmdir "$notprefix"
check "uninstall when not installed is refused" sh -c "! WINE='$WINE' sh '$top/tools/setup_cocancel.sh' uninstall >/dev/null 2>&1"

if [ "$TEST_ARCH" = x86_64 ] && [ -f "$B/i686/cocancel.dll" ]; then
    echo "note: the i686 binaries run under Wine 10.0's WoW64 in make check-matrix (column wow64)"
fi
