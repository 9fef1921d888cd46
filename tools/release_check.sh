#!/bin/sh
# The release as a user meets it (the "release" column of tools/matrix.sh):
# run inside a fresh Debian 12 with nothing but Debian's wine installed, it
# unpacks the tarball of make dist in a directory of its own, installs from
# it and runs its demo.  Prints "N passed, N failed".
#
#   tools/release_check.sh TARBALL
set -u
tarball=$1
passed=0
failed=0
check() { # DESCRIPTION COMMAND...
    d=$1
    shift
    if "$@"; then passed=$((passed + 1)); echo "ok: $d"
    else failed=$((failed + 1)); echo "FAILED: $d"; fi
}
absent() { ! command -v "$1" >/dev/null 2>&1; }

echo "== the release on $(. /etc/os-release && echo "$PRETTY_NAME"), $(wine --version)"
for tool in cc gcc x86_64-w64-mingw32-gcc make python3; do
    check "no $tool on this machine" absent "$tool"
done
work=$(mktemp -d /tmp/release.XXXXXX)
trap 'rm -rf "$work"' EXIT
check "the tarball unpacks" tar -C "$work" -xzf "$tarball"
dist=$(ls -d "$work"/cocancel-* 2>/dev/null | head -n 1)
check "it holds the engine, the carrier and the launcher for x64 and x32" sh -c '
    for a in x64 x32; do for f in cocancel.dll ole32.dll cocancel-run.exe; do
        test -f "$1/$a/$f" || { echo "missing $a/$f"; exit 1; }; done; done' sh "$dist"
check "setup_cocancel.sh --help documents install, uninstall and status" sh -c '
    out=$(sh "$1/setup_cocancel.sh" --help) && for v in install uninstall status; do
        echo "$out" | grep -q "setup_cocancel.sh $v" || { echo "no $v in --help"; exit 1; }; done' sh "$dist"
(cd "$work" && timeout 600 sh "$dist/demo.sh") > "$work/demo.log" 2>&1
rc=$?
cat "$work/demo.log"
check "./demo.sh installs from the release and the demo's call is cancelled (exit $rc)" \
    sh -c "test $rc -eq 0 && grep -q 'CoCancelCall(.*) = 0 at' '$work/demo.log'"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
