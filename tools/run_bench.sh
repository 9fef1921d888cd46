#!/bin/sh
# "make bench": the benchmark table.  Runs build/x86_64/bench.exe in a
# throwaway prefix on stock Wine, then with cocancel installed, and prints
# per topology: the quick call's round trip on stock Wine, installed with
# cancellation disabled, and enabled (with the ratios the targets are
# stated in), then the cancel -> caller released latency.  Figures only:
# nothing here passes or fails.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
WINE=${WINE:-wine}
WINESERVER=${WINESERVER:-wineserver}
CANCELS=${CANCELS:-1000}
export WINEPREFIX="$top/build/benchprefix"
export WINEDEBUG=-all
unset WINEDLLOVERRIDES
out="$top/build/bench"
rm -rf "$out"; mkdir -p "$out"

"$WINESERVER" -k >/dev/null 2>&1
rm -rf "$WINEPREFIX"
timeout 300 "$WINE" wineboot -i >/dev/null 2>&1
"$WINESERVER" -w
mkdir -p "$WINEPREFIX/drive_c/bench"
cp "$top/build/x86_64/bench.exe" "$top/build/x86_64/asyncbench.exe" "$WINEPREFIX/drive_c/bench/"
cd "$WINEPREFIX/drive_c/bench"

bench() { timeout 900 "$WINE" bench.exe "$@" 2>/dev/null | tr -d '\r'; }
abench() { timeout 900 "$WINE" asyncbench.exe "$@" 2>/dev/null | tr -d '\r'; }

echo "stock Wine ..." >&2
bench calls | sed 's/\tdisabled\t/\tstock\t/' > "$out/stock.tsv"
sh "$top/tools/setup_cocancel.sh" install >/dev/null
echo "with cocancel ..." >&2
bench calls > "$out/shim.tsv"
echo "cancel latency ($CANCELS cancels per topology) ..." >&2
bench cancel "$CANCELS" > "$out/cancel.tsv"
echo "asynchronous calls ..." >&2
abench ratio > "$out/ratio.tsv"
abench cancel "$CANCELS" > "$out/acancel.tsv"
abench outstanding > "$out/outstanding.tsv"
sh "$top/tools/setup_cocancel.sh" uninstall >/dev/null
"$WINESERVER" -k >/dev/null 2>&1

echo
echo "cocancel benchmark: $("$WINE" --version), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
cat "$out/stock.tsv" "$out/shim.tsv" | awk -F'\t' '
    { t[$2] = 1; v[$2, $3] = $4; order[$2] = order[$2] ? order[$2] : ++n; name[order[$2]] = $2 }
    END {
        printf "%-20s %10s %10s %10s %12s %12s\n", "call (us, median)", "stock", "disabled", "enabled", "disabled/", "enabled/"
        printf "%-20s %10s %10s %10s %12s %12s\n", "", "", "", "", "stock <=1.02", "disabled <=1.15"
        for (i = 1; i <= n; i++) {
            k = name[i]; s = v[k, "stock"]; d = v[k, "disabled"]; e = v[k, "enabled"]
            printf "%-20s %10.2f %10.2f %10.2f %12.3f %12.3f\n", k, s, d, e, (s > 0 ? d / s : 0), (d > 0 ? e / d : 0)
        }
    }'
echo
awk -F'\t' '
    BEGIN { printf "%-20s %8s %14s %14s\n", "cancel -> released", "cancels", "median us", "p99 us"
            printf "%-20s %8s %14s %14s\n", "", "", "(<= 200)", "(<= 2000)" }
    { printf "%-20s %8s %14s %14s\n", $2, $3, $4, $5 }' "$out/cancel.tsv"
echo
awk -F'\t' '
    BEGIN { printf "%-20s %10s %14s %10s\n", "async round trip", "sync us", "Begin+Finish", "ratio"
            printf "%-20s %10s %14s %10s\n", "(median)", "", "us", "(<= 1.25)" }
    { printf "%-20s %10s %14s %10.3f\n", $2, $3, $4, ($3 > 0 ? $4 / $3 : 0) }' "$out/ratio.tsv"
echo
awk -F'\t' '
    BEGIN { printf "%-20s %8s %14s %14s\n", "async Cancel->Finish_", "cancels", "median us", "p99 us"
            printf "%-20s %8s %14s %14s\n", "", "", "(<= 200)", "(<= 2000)" }
    { printf "%-20s %8s %14s %14s\n", $2, $3, $4, $5 }' "$out/acancel.tsv"
echo
awk -F'\t' '
    BEGIN { printf "%-20s %6s %12s %12s %14s %14s\n", "1,000 outstanding", "right", "Begin_ us", "total us", "resident KiB", "committed KiB"
            printf "%-20s %6s %12s %12s %14s %14s\n", "(from one thread)", "", "per call", "per call", "per call (<=64)", "per call" }
    { printf "%-20s %6s %12s %12s %14s %14s\n", $2, $3, $4, $5, $6, $7 }' "$out/outstanding.tsv"
