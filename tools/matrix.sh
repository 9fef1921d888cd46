#!/bin/sh
# The Wine version matrix ("make check-matrix"): runs the Wine-side checks of
# tools/run_tests.sh, with the binaries already built, on every Wine version
# named (default: all of them) and prints one summary per version, then the
# sum as "N passed, N failed".
#
#   tools/matrix.sh [host] [trixie] [wow64] [release]
#
#   host    the Wine installed on this machine (Debian 12: Wine 8.0)
#   trixie  Debian 13's Wine 10.0, in a chroot made with debootstrap from
#           Debian's packages the first time (cached in build/matrix/trixie,
#           about 1 min and 600 MiB); needs root and debootstrap
#   wow64   the 32-bit (i686) programs and engine on the same Wine 10.0 in
#           its WoW64 mode: a copy of that chroot with the i386 PE DLLs of
#           Debian's libwine:i386 beside the x86_64 ones, where the 64-bit
#           loader looks for them (build/matrix/wow64).  Debian's i386 Wine
#           itself cannot start here: the kernel runs no 32-bit programs.
#   release the release tarball (make dist) on a fresh Debian 12 with only
#           Debian's wine installed - no compiler, no Python - in a chroot
#           (build/matrix/bookworm): unpacks it, installs from it and runs
#           its demo (tools/release_check.sh).
#
# Debian testing ("forky") has no wine package today, and unstable's is
# 10.0 again (10.0~repack-12), so there is no third column.
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
B="$top/build"
M="$B/matrix"
total_passed=0
total_failed=0
summaries=""

columns=${*:-host trixie wow64 release}

# The mirror the host's apt uses (the chroot comes from the same place).
mirror() {
    m=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/* *$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    [ -n "$m" ] || m=$(sed -n 's/^deb \(http[^ ]*\) .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
    echo "${m:-http://deb.debian.org/debian}"
}

# Makes the chroot of a Debian suite with its wine packages, once.
make_chroot() { # SUITE DIR
    [ -f "$2/.cocancel-ready" ] && return 0
    command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)"; return 1; }
    [ "$(id -u)" -eq 0 ] || { echo "making a chroot needs root"; return 1; }
    rm -rf "$2"
    mkdir -p "$M"
    echo "making a Debian $1 chroot in $2 from $(mirror)"
    debootstrap --variant=minbase "$1" "$2" "$(mirror)" > "$M/$1-debootstrap.log" 2>&1 ||
        { tail -n 5 "$M/$1-debootstrap.log"; return 1; }
    chroot "$2" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wine wine64 && apt-get clean' \
        > "$M/$1-apt.log" 2>&1 || { tail -n 5 "$M/$1-apt.log"; return 1; }
    touch "$2/.cocancel-ready"
}

# The trixie chroot plus the i386 PE DLLs of libwine:i386, once.
make_wow64_chroot() { # DIR
    [ -f "$1/.cocancel-ready" ] && return 0
    make_chroot trixie "$M/trixie" || return 1
    rm -rf "$1"
    echo "making the WoW64 chroot in $1"
    cp -a "$M/trixie" "$1" && rm -f "$1/.cocancel-ready" || return 1
    chroot "$1" sh -c '
        set -e
        dpkg --add-architecture i386
        apt-get update -q
        mkdir -p /root/i386 && cd /root/i386
        apt-get download -q libwine:i386
        dpkg-deb -x libwine_*_i386.deb x
        cp -n x/usr/lib/i386-linux-gnu/wine/i386-windows/* /usr/lib/x86_64-linux-gnu/wine/i386-windows/
        cd / && rm -rf /root/i386 && apt-get clean' > "$M/wow64-apt.log" 2>&1 ||
        { tail -n 5 "$M/wow64-apt.log"; return 1; }
    touch "$1/.cocancel-ready"
}

# Runs the Wine-side checks; prints their output to LOG.
run_host() { # LOG
    WINE_SIDE_ONLY=1 TEST_PREFIX="$M/prefix-host" TEST_LOGS="$M/logs-host" sh "$top/tools/run_tests.sh" > "$1" 2>&1
}

# The same inside the chroot, in a mount namespace of its own (the mounts
# end with it): the project at the same path, /dev, /proc and a fresh /tmp.
# Runs tools/run_tests.sh, or the command given.
run_chroot() { # DIR TAG LOG [ARCH [COMMAND...]]
    dir=$1 tag=$2 out=$3 arch=${4:-x86_64}
    shift 3
    [ $# -gt 0 ] && shift
    [ $# -gt 0 ] || set -- sh "$top/tools/run_tests.sh"
    mkdir -p "$dir$top"
    TEST_ARCH=$arch unshare -m sh -c '
        set -e
        root=$1 top=$2 tag=$3
        shift 3
        mount --rbind /dev "$root/dev"
        mount -t proc proc "$root/proc"
        mount -t tmpfs tmpfs "$root/tmp"
        mkdir -p "$root$top"    # again: the project may live under /tmp
        mount --bind "$top" "$root$top"
        exec chroot "$root" env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
            WINE_SIDE_ONLY=1 TEST_ARCH="$TEST_ARCH" TEST_PREFIX="$top/build/matrix/prefix-$tag" TEST_LOGS="$top/build/matrix/logs-$tag" \
            "$@"' sh "$dir" "$top" "$tag" "$@" > "$out" 2>&1
}

# A column in a chroot: makes it when missing (MAKER DIR), then runs there.
# Sets version; FALSE (counted as a failure) only when there is no chroot.
chroot_column() { # NAME MAKER VERSION-SUFFIX ARCH [COMMAND...]
    if ! $2 "$M/$1" > "$M/$1-setup.log" 2>&1; then
        cat "$M/$1-setup.log"
        echo "FAILED: no chroot for the column $1"
        total_failed=$((total_failed + 1))
        summaries="$summaries
$1: no chroot (see $M/$1-setup.log)"
        return 1
    fi
    v=$(chroot "$M/$1" dpkg-query -W -f '${Version}' wine64 2>/dev/null)
    version="wine-${v%%~*} (Debian $v)$3"
    c_name=$1 c_arch=$4
    shift 4
    # The result is read from the log's summary, whatever the status.
    run_chroot "$M/$c_name" "$c_name" "$log" "$c_arch" "$@" || true
}

for column in $columns; do
    start=$(date +%s)
    log="$M/$column.log"
    mkdir -p "$M"
    case $column in
        host)
            version=$(wine --version 2>/dev/null)
            run_host "$log" ;;
        trixie)
            chroot_column trixie "make_chroot trixie" "" x86_64 || continue ;;
        wow64)
            chroot_column wow64 make_wow64_chroot ", WoW64, i686 binaries" i686 || continue ;;
        release)
            tarball=$(ls "$B"/cocancel-*.tar.gz 2>/dev/null | head -n 1)
            chroot_column bookworm "make_chroot bookworm" ", the release tarball" x86_64 \
                sh "$top/tools/release_check.sh" "$tarball" || continue ;;
        *)
            echo "unknown column $column (host, trixie, wow64, release)"; exit 2 ;;
    esac
    grep -a '^FAILED\|^    ' "$log" | head -n 40
    line=$(tail -n 1 "$log")
    p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
    f=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
    if [ -z "$p" ]; then
        p=0 f=1
        echo "FAILED: $column: the run ended without a summary (see $log)"
    fi
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    skipped=$(grep -a -m 1 '^SKIPPED: ' "$log" | sed 's/^SKIPPED: //')
    [ -n "$skipped" ] && echo "SKIPPED: $column: $skipped"
    summaries="$summaries
$version: $p passed, $f failed in $(( $(date +%s) - start )) s${skipped:+ (SKIPPED: $skipped)} (log: $log)"
done

echo "== Wine version matrix$summaries"
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
