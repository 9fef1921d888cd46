#!/bin/sh
# Puts cocancel's conformance tests into a Wine source tree, as a patch series:
#   tools/wine-tree/export.sh [-o DIR] [--no-apply] WINE_SRC
# Prints the series in "git format-patch" form (one mail per patch), or writes
# it to DIR as numbered .patch files with -o, and applies it to WINE_SRC: with
# "git am" when WINE_SRC is a git work tree, else with "git apply".
#   1-2  include/: what Wine's headers lack (written the way they are)
#   3-9  dlls/ole32/tests/: one test file each, as it is in this project, with
#        its Makefile.in lines (asynccall also its IDL, rpcrt4 and widl mode)
# The tests use only what Windows has.  What Wine may lack they resolve with
# GetProcAddress, and mark todo_wine (or skip) where stock Wine lacks it.
# A tree that has the series already is left as it is (exit code 0).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
outdir=""
apply=1
while [ $# -gt 1 ]; do
    case $1 in
    -o) outdir=$2; shift 2 ;;
    --no-apply) apply=0; shift ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { sed -n '2,12s/^# \{0,1\}//p' "$0" >&2; exit 2; }
src=$(cd "$1" && pwd)
for f in include/rpcproxy.h include/objbase.h dlls/ole32/tests/Makefile.in; do
    [ -f "$src/$f" ] || { echo "export: $src is not a Wine source tree (no $f)" >&2; exit 2; }
done

tests="$top/dlls/ole32/tests"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
repo="$work/tree"
mkdir -p "$repo/include" "$repo/dlls/ole32/tests"
cp "$src/include/rpcproxy.h" "$src/include/objbase.h" "$repo/include/"
cp "$src/dlls/ole32/tests/Makefile.in" "$repo/dlls/ole32/tests/"
for f in "$tests"/*.c "$tests"/*.idl; do
    n=$(basename "$f")
    [ ! -f "$src/dlls/ole32/tests/$n" ] || cp "$src/dlls/ole32/tests/$n" "$repo/dlls/ole32/tests/"
done

# The series is dated and signed as the project's newest commit, so the
# same project gives the same patches.
author_name=$(git -C "$top" log -1 --format=%an 2>/dev/null || echo cocancel)
author_mail=$(git -C "$top" log -1 --format=%ae 2>/dev/null || echo cocancel@invalid)
stamp=$(git -C "$top" log -1 --format=%aD 2>/dev/null || date -R)
export GIT_AUTHOR_NAME="$author_name" GIT_AUTHOR_EMAIL="$author_mail" GIT_AUTHOR_DATE="$stamp"
export GIT_COMMITTER_NAME="$author_name" GIT_COMMITTER_EMAIL="$author_mail" GIT_COMMITTER_DATE="$stamp"
g() { git -C "$repo" -c core.autocrlf=false -c commit.gpgsign=false "$@"; }
g init -q
g add -A
g commit -q -m base
base=$(g rev-parse HEAD)

edit() { python3 "$here/edit_tree.py" "$repo" "$@" > /dev/null; }
commit() { # SUBJECT BODY
    g add -A
    if g diff --cached --quiet; then return 0; fi
    g commit -q -m "$1" -m "$2"
}
add_test() { # FILE SUBJECT BODY [EXTRA FILES...]
    file=$1 subject=$2 body=$3
    shift 3
    cp "$tests/$file" "$repo/dlls/ole32/tests/"
    for extra in "$@"; do cp "$tests/$extra" "$repo/dlls/ole32/tests/"; done
    edit sources "$file" "$@"
    commit "$subject" "$body"
}

edit rpcproxy
commit "include: Define the async stub buffer vtable macros in rpcproxy.h." \
"widl's proxy code for an interface with an async_uuid uses them; as in
the Windows SDK they are all zeros, and rpcrt4 fills the vtable in."
edit objbase
commit "include: Declare the call cancellation functions in objbase.h." \
"CoCancelCall, CoGetCancelObject, CoSetCancelObject and CoTestCancel, as
the Windows SDK declares them next to CoEnableCallCancellation."
add_test cancel.c "ole32/tests: Add tests for the call cancellation API." \
"CoEnableCallCancellation and CoDisableCallCancellation counting, cancel
objects (CoSetCancelObject, CoGetCancelObject, CoTestCancel) and the
results of CoCancelCall.  Stock Wine does not export the functions from
ole32: the test resolves them at run time and marks that todo_wine."
add_test syncobjects.c "ole32/tests: Add tests for CLSID_StdEvent and CLSID_SynchronizeContainer." \
"The synchronization objects asynchronous calls signal: ISynchronize on an
auto-reset event, and a container waiting for any of its members."
add_test cancelcall.c "ole32/tests: Add tests for cancelling proxied calls." \
"CoCancelCall from another thread unblocks a caller inside a proxied call,
in and across processes, STA and MTA, with the server seeing the cancel
through CoTestCancel; message filters, timeouts, calls that complete first
and servers that die are covered too."
add_test firstcall.c "ole32/tests: Add a test for cancelling the first call of a process." \
"A watchdog thread cancels a blocking call that a child process makes as
the first COM call it makes, the way watchdog helpers are armed."
edit async-idl
add_test asynccall.c "ole32/tests: Add tests for asynchronous calls through ICallFactory." \
"A proxy's ICallFactory creates call objects for the interface's async_uuid;
Begin_ and Finish_ carry every kind of argument, ICancelMethodCalls cancels,
ISynchronize signals completion, and call objects aggregate.  The proxy/stub
code comes from asynccall_ps.idl, built -Oicf." asynccall_ps.idl
add_test fibers.c "ole32/tests: Add tests for proxied calls made around fibers." \
"A call leaves the thread's fiber state as it was, and works from the
program's own fibers, with call cancellation enabled and disabled."
add_test handlers.c "ole32/tests: Add tests for handlers run while a call waits." \
"Window procedures an STA thread runs while it waits for a reply run on its
own stack, and a cancelled call returns only once they have."

series="$work/series"
mkdir -p "$series"
if [ "$(g rev-parse HEAD)" = "$base" ]; then
    echo "export: $src has the series already" >&2
    exit 0
fi
g format-patch -q --no-signature -o "$series" "$base..HEAD" > /dev/null
if [ -n "$outdir" ]; then
    mkdir -p "$outdir"
    rm -f "$outdir"/*.patch
    cp "$series"/*.patch "$outdir/"
else
    cat "$series"/*.patch
fi
[ "$apply" -eq 1 ] || exit 0

if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1 &&
   [ "$(git -C "$src" rev-parse --show-toplevel)" = "$src" ]; then
    git -C "$src" am -q "$series"/*.patch
else
    # Not inside another repository's work tree either: there "git apply"
    # would skip every path outside the current folder without a word.
    (cd "$src" && GIT_CEILING_DIRECTORIES=$(dirname "$src") git apply "$series"/*.patch)
fi
for f in "$tests"/*.c "$tests"/*.idl; do
    cmp -s "$f" "$src/dlls/ole32/tests/$(basename "$f")" ||
        { echo "export: $src/dlls/ole32/tests/$(basename "$f") is not the project's file" >&2; exit 1; }
done
echo "export: applied $(ls "$series" | wc -l) patches to $src" >&2
