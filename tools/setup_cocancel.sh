#!/bin/sh
# Installs cocancel into a Wine prefix, or removes it again.
#
#   setup_cocancel.sh install [--app NAME.exe] [--bindir DIR]
#   setup_cocancel.sh uninstall
#   setup_cocancel.sh status
#   setup_cocancel.sh --help
#
# Acts on $WINEPREFIX (default ~/.wine), which must be an existing prefix.
#
# install copies cocancel.dll and the carrier ole32.dll into system32 (and
# the 32-bit builds into syswow64 when both exist), and sets the DLL override
# ole32=native,builtin, prefix-wide by default or, with --app, only for that
# program (HKCU\Software\Wine\AppDefaults\NAME.exe\DllOverrides; repeatable).
# A prefix-wide install also registers cocancel.dll as the server of
# CLSID_StdEvent and CLSID_SynchronizeContainer where the prefix has none.
# Everything it replaces is backed up in $WINEPREFIX/cocancel-backup, and
# uninstall puts back exactly what was there: files byte for byte, registry
# values and keys as they were (keys it created are removed).
# uninstall: undoes install.  status: says whether cocancel is installed
# in the prefix and what the install changed.
#
# --bindir is the directory holding the binaries: a build directory with
# x86_64/ and i686/ (the project's build/ by default), or an unpacked
# release with x64/ and x32/ (the script's own directory, found by itself),
# or PREFIX/lib/cocancel after "make install" (found by PREFIX/bin/setup_cocancel).
# WINE may name the wine binary (default: wine).  Needs only a POSIX shell
# and Wine: no compiler, no Python.
set -eu

WINE=${WINE:-wine}
here=$(cd "$(dirname "$0")" && pwd)
prefix=${WINEPREFIX:-$HOME/.wine}
backup="$prefix/cocancel-backup"
manifest="$backup/manifest"
if [ -f "$here/x64/cocancel.dll" ]; then bindir=$here
elif [ -f "$here/../lib/cocancel/x64/cocancel.dll" ]; then bindir="$here/../lib/cocancel"
else bindir="$here/../build"; fi
override_value="native,builtin"

die() { echo "setup_cocancel: $*" >&2; exit 1; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

help() {
    sed -n '2,/^set -eu/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
}

# Where the 64-bit and 32-bit binaries are under $bindir.
arch_dirs() {
    if [ -f "$bindir/x64/cocancel.dll" ]; then dir64=x64 dir32=x32; else dir64=x86_64 dir32=i686; fi
}

is_prefix() {
    [ -f "$1/system.reg" ] && [ -f "$1/user.reg" ] && [ -d "$1/drive_c/windows/system32" ]
}

# reg.exe prints CRLF lines; these helpers read one value or a key's presence.
reg_key_exists() { "$WINE" reg query "$1" >/dev/null 2>&1; }
reg_value() {
    "$WINE" reg query "$1" /v "$2" 2>/dev/null | tr -d '\r' |
        awk -v name="$2" 'tolower($1) == tolower(name) && $2 ~ /^REG_/ { $1 = ""; $2 = ""; sub(/^  */, ""); print; found = 1 } END { exit !found }'
}

# Records how a registry value was before we touch it (once per value).
remember_value() {
    key=$1 name=$2
    grep -q "^value	$key	$name	" "$manifest" 2>/dev/null && return 0
    if data=$(reg_value "$key" "$name"); then
        printf 'value\t%s\t%s\tpresent\t%s\n' "$key" "$name" "$data" >> "$manifest"
    else
        printf 'value\t%s\t%s\tabsent\t\n' "$key" "$name" >> "$manifest"
    fi
}

# Keys every prefix has, that the install only ever adds below: never
# recorded as created, never deleted, whatever a failed query said.
system_key() {
    case $(printf '%s\n' "$1" | tr '[:upper:]' '[:lower:]' | sed 's/^hkey_local_machine/hklm/; s/^hkey_current_user/hkcu/') in
    hklm|hkcu|hklm\\software|hkcu\\software|hklm\\software\\classes|hklm\\software\\classes\\clsid|\
    hklm\\software\\classes\\wow6432node|hklm\\software\\classes\\wow6432node\\clsid|hkcu\\software\\wine|\
    hkcu\\software\\wine\\dlloverrides|hkcu\\software\\wine\\appdefaults) return 0 ;;
    esac
    return 1
}

# Whether a key is absent: asked twice, as one failed "reg query" must not
# make a key look like ours to delete.
reg_key_absent() { ! reg_key_exists "$1" && ! reg_key_exists "$1"; }

# Records every key on the way to $1 that does not exist yet, outermost first.
remember_keys() {
    key=$1 path=""
    old_ifs=$IFS; IFS='\'
    for part in $key; do
        IFS=$old_ifs
        path=${path:+$path\\}$part
        if system_key "$path"; then IFS='\'; continue; fi
        if ! grep -q "^key	$path\$" "$manifest" 2>/dev/null && reg_key_absent "$path"; then
            printf 'key\t%s\n' "$path" >> "$manifest"
        fi
        IFS='\'
    done
    IFS=$old_ifs
}

install_file() {
    src=$1 dir=$2
    name=$(basename "$src")
    dest="$prefix/drive_c/windows/$dir/$name"
    if ! grep -q "^file	$dir/$name	" "$manifest"; then
        if [ -e "$dest" ]; then
            mkdir -p "$backup/files/$dir"
            cp -p "$dest" "$backup/files/$dir/$name"
            printf 'file\t%s/%s\tbackup\n' "$dir" "$name" >> "$manifest"
        else
            printf 'file\t%s/%s\tnew\n' "$dir" "$name" >> "$manifest"
        fi
    fi
    cp "$src" "$dest"
}

do_install() {
    apps=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --app) [ $# -ge 2 ] || usage; apps="$apps $2"; shift 2 ;;
            --bindir) [ $# -ge 2 ] || usage; bindir=$2; shift 2 ;;
            *) usage ;;
        esac
    done
    arch_dirs
    for f in cocancel.dll ole32.dll; do
        [ -f "$bindir/$dir64/$f" ] || die "$bindir/$dir64/$f is missing: build first (make)"
    done
    mkdir -p "$backup"
    touch "$manifest"

    install_file "$bindir/$dir64/cocancel.dll" system32
    install_file "$bindir/$dir64/ole32.dll" system32
    if [ -d "$prefix/drive_c/windows/syswow64" ] && [ -f "$bindir/$dir32/cocancel.dll" ] && [ -f "$bindir/$dir32/ole32.dll" ]; then
        install_file "$bindir/$dir32/cocancel.dll" syswow64
        install_file "$bindir/$dir32/ole32.dll" syswow64
    fi

    if [ -z "$apps" ]; then
        keys='HKCU\Software\Wine\DllOverrides'
    else
        keys=""
        for app in $apps; do
            case "$app" in *[\\/]*|"") die "--app takes a program's file name, such as foo.exe" ;; esac
            keys="$keys HKCU\\Software\\Wine\\AppDefaults\\$app\\DllOverrides"
        done
    fi
    for key in $keys; do
        remember_keys "$key"
        remember_value "$key" ole32
        "$WINE" reg add "$key" /v ole32 /t REG_SZ /d "$override_value" /f >/dev/null 2>&1 ||
            die "could not set the override in $key"
    done
    # COM classes Wine lacks, served by cocancel.dll: CLSID_StdEvent and
    # CLSID_SynchronizeContainer.  Prefix-wide installs only (a class is seen
    # by every program), and never over a server the prefix already has.
    if [ -z "$apps" ]; then
        views='HKLM\Software\Classes'
        [ -f "$prefix/drive_c/windows/syswow64/cocancel.dll" ] && views="$views HKLM\\Software\\Classes\\Wow6432Node"
        for view in $views; do
            for clsid in '{0000032B-0000-0000-C000-000000000046}' '{0000032D-0000-0000-C000-000000000046}'; do
                class_key="$view\\CLSID\\$clsid"
                grep -qF "key	$class_key" "$manifest" 2>/dev/null || ! reg_key_exists "$class_key" || continue
                remember_keys "$class_key\\InprocServer32"
                "$WINE" reg add "$class_key\\InprocServer32" /ve /t REG_SZ /d cocancel.dll /f >/dev/null 2>&1 &&
                "$WINE" reg add "$class_key\\InprocServer32" /v ThreadingModel /t REG_SZ /d Both /f >/dev/null 2>&1 ||
                    die "could not register $clsid"
            done
        done
    fi
    echo "cocancel installed in $prefix (${apps:+for$apps}${apps:-prefix-wide})"
}

do_uninstall() {
    [ -f "$manifest" ] || die "cocancel is not installed in $prefix"
    # Values first, then the keys we created, innermost first.
    while IFS='	' read -r kind a b c d; do
        [ "$kind" = value ] || continue
        if [ "$c" = present ]; then
            "$WINE" reg add "$a" /v "$b" /t REG_SZ /d "$d" /f >/dev/null 2>&1 || die "could not restore $a\\$b"
        else
            "$WINE" reg delete "$a" /v "$b" /f >/dev/null 2>&1 || true
        fi
    done < "$manifest"
    grep '^key	' "$manifest" | cut -f2 | awk '{ line[NR] = $0 } END { for (i = NR; i > 0; i--) print line[i] }' |
    while read -r key; do
        system_key "$key" || "$WINE" reg delete "$key" /f >/dev/null 2>&1 || true
    done
    while IFS='	' read -r kind a b rest; do
        [ "$kind" = file ] || continue
        dest="$prefix/drive_c/windows/$a"
        if [ "$b" = backup ]; then
            cp -p "$backup/files/$a" "$dest"
        else
            rm -f "$dest"
        fi
    done < "$manifest"
    rm -rf "$backup"
    echo "cocancel removed from $prefix"
}

do_status() {
    if [ -f "$manifest" ]; then
        echo "cocancel is installed in $prefix:"
        cut -f1-3 "$manifest" | sed 's/^/  /'
    else
        echo "cocancel is not installed in $prefix"
    fi
}

[ $# -ge 1 ] || usage
case "$1" in -h|--help|help) help ;; esac
is_prefix "$prefix" || die "$prefix is not a Wine prefix (no system.reg/user.reg/drive_c); create it with 'wineboot -i' first"
command=$1; shift
case "$command" in
    install) do_install "$@" ;;
    uninstall) [ $# -eq 0 ] || usage; do_uninstall ;;
    status) do_status ;;
    *) usage ;;
esac
