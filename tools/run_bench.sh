#!/bin/sh
# "make bench": the benchmark report.  Runs build/x86_64/bench.exe in a
# throwaway prefix on stock Wine, then bench.exe, asyncbench.exe and the
# soak of stress.exe with cocancel installed, and prints one table, P1-P6 of
# the report (see BENCHMARKS.md), each figure next to its target; the raw
# figures stay in build/bench/*.tsv.  Figures only: nothing here passes or
# fails ("met" is a reading aid).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
WINE=${WINE:-wine}
WINESERVER=${WINESERVER:-wineserver}
CANCELS=${CANCELS:-1000}
SOAK_CYCLES=${SOAK_CYCLES:-100000}
ROUNDS=${ROUNDS:-5}
export WINEPREFIX="$top/build/benchprefix"
export WINEDEBUG=-all
unset WINEDLLOVERRIDES
out="$top/build/bench"
# REPORT_ONLY=1 prints the table again from the figures of the last run.
if [ -z "${REPORT_ONLY:-}" ]; then
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

# Stock and installed alternate, so that the machine's drift over the run
# weighs on both alike; the report takes the median of the rounds.
: > "$out/stock.tsv"; : > "$out/shim.tsv"
round=1
while [ "$round" -le "$ROUNDS" ]; do
    echo "stock Wine, round $round of $ROUNDS ..." >&2
    bench calls | sed 's/\tdisabled\t/\tstock\t/' >> "$out/stock.tsv"
    sh "$top/tools/setup_cocancel.sh" install >/dev/null
    echo "with cocancel, round $round of $ROUNDS ..." >&2
    bench calls >> "$out/shim.tsv"
    [ "$round" -lt "$ROUNDS" ] && sh "$top/tools/setup_cocancel.sh" uninstall >/dev/null
    round=$((round + 1))
done
echo "cancel latency ($CANCELS cancels per topology) ..." >&2
# The floor is sampled between the cancels, in the same process (bench.c).
bench cancel "$CANCELS" > "$out/cancel_floor.tsv"
grep '^floor' "$out/cancel_floor.tsv" > "$out/floor.tsv"
grep -v '^floor' "$out/cancel_floor.tsv" > "$out/cancel.tsv"
echo "asynchronous calls ..." >&2
abench ratio > "$out/ratio.tsv"
abench cancel "$CANCELS" > "$out/acancel.tsv"
abench outstanding > "$out/outstanding.tsv"
abench served > "$out/served.tsv"
echo "first calls (${FIRST_CALLS:-20} fresh processes per kind) ..." >&2
cp "$top/build/x86_64/ole32_test.exe" "$WINEPREFIX/drive_c/bench/"
timeout 1800 "$WINE" ole32_test.exe firstcall "${FIRST_CALLS:-20}" 2>/dev/null | tr -d '\r' |
    sed -n 's/.*firstcall-figures: kind=\([a-z]*\) cancel_ms=\([0-9.]*\) released_ms=\([0-9.]*\).*/firstcall\t\1\t\2\t\3/p' > "$out/firstcall.tsv"
echo "soak ($SOAK_CYCLES Begin_/Cancel/Finish_ cycles) ..." >&2
cp "$top/build/x86_64/stress.exe" "$WINEPREFIX/drive_c/bench/"
timeout 3600 "$WINE" stress.exe asyncsoak "$SOAK_CYCLES" 2>/dev/null | tr -d '\r' |
    sed -n 's/.*soak: \([0-9]*\) cycles, heap in use \([-+0-9]*\) KiB\( ([^)]*)\)\{0,1\}, committed private \([-+0-9]*\) KiB, resident \([-+0-9]*\) KiB, handles \([-+0-9]*\), threads \([-+0-9]*\).*/soak\tMTA->STA in-proc\t\1\t\2\t\4\t\5\t\6\t\7/p' > "$out/soak.tsv"
sh "$top/tools/setup_cocancel.sh" uninstall >/dev/null
"$WINESERVER" -k >/dev/null 2>&1
fi

echo
echo "cocancel benchmark: $("$WINE" --version), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
# One table: every input line is tagged with its file's kind, and awk lays
# out the rows in report order.
{
    sed -n 's/^calls\t\([^\t]*\)\tstock\t/stock\t\1\t/p' "$out/stock.tsv"
    cat "$out/shim.tsv"
    sed 's/^cancel\t/synccancel\t/' "$out/cancel.tsv"
    cat "$out/ratio.tsv"
    cat "$out/served.tsv" 2>/dev/null
    sed 's/^cancel\t/asynccancel\t/' "$out/acancel.tsv"
    cat "$out/outstanding.tsv" "$out/soak.tsv"
    cat "$out/firstcall.tsv" 2>/dev/null
    cat "$out/floor.tsv" 2>/dev/null
} | awk -F'\t' '
    function row(p, what, topo, figure, target, met) {
        printf "%-3s %-26s %-19s %-30s %-22s %s\n", p, what, topo, figure, target, met
    }
    function verdict(ok) { return ok ? "met" : "missed" }
    function median(key,    i, j, k, m, x, tmp) {
        m = count[key]
        for (i = 1; i <= m; i++) tmp[i] = sample[key, i]
        for (i = 2; i <= m; i++) { x = tmp[i]; for (j = i - 1; j >= 1 && tmp[j] > x; j--) tmp[j + 1] = tmp[j]; tmp[j + 1] = x }
        k = int((m + 1) / 2)
        return m ? tmp[k] : 0
    }
    # The median of the ratios of paired runs: run k of kind a against run k
    # of kind b (stock and installed alternate, so run k of each was made in
    # the same minute of the machine; the run-to-run drift, 5-20% here,
    # cancels in the ratio, not in the ratio of the two medians).
    function paired(key_a, key_b,    i, j, m, x, tmp) {
        m = count[key_a] < count[key_b] ? count[key_a] : count[key_b]
        for (i = 1; i <= m; i++) tmp[i] = sample[key_b, i] > 0 ? sample[key_a, i] / sample[key_b, i] : 0
        for (i = 2; i <= m; i++) { x = tmp[i]; for (j = i - 1; j >= 1 && tmp[j] > x; j--) tmp[j + 1] = tmp[j]; tmp[j + 1] = x }
        return m ? tmp[int((m + 1) / 2)] : 0
    }
    # P3-P4: the paired ratio against its limit, with the medians of each kind.
    function pratio(p, what, t, a, b, limit,    r) {
        r = paired(t SUBSEP a, t SUBSEP b)
        if (r > 0)
            row(p, what, t, sprintf("%.3fx (%.0f / %.0f us)", r, median(t SUBSEP a), median(t SUBSEP b)),
                "<= " limit "x", verdict(r <= limit))
        else row(p, what, t, "no figure", "<= " limit "x", "")
    }
    function add(t, kind, value) {
        sample[t SUBSEP kind, ++count[t SUBSEP kind]] = value
        order[t] = order[t] ? order[t] : ++n; topo[order[t]] = t
    }
    $1 == "stock"       { add($2, "stock", $3) }
    $1 == "calls"       { add($2, $3, $4) }
    $1 == "synccancel"  { sc[$2] = $0 }
    $1 == "ratio"       { ra[$2] = $0 }
    $1 == "served"      { sv[$2] = $0 }
    $1 == "asynccancel" { ac[$2] = $0 }
    $1 == "outstanding" { os[$2] = $0; otopo[++no] = $2 }
    $1 == "floor"       { floor_line = $0; floor_median = $4 }
    $1 == "soak"        { soak = $0 }
    # Samples without a place among the topologies of P1-P4.
    $1 == "firstcall"   { k = "first " $2; sample[k SUBSEP "cancel", ++count[k SUBSEP "cancel"]] = $3 * 1000
                          sample[k SUBSEP "released", ++count[k SUBSEP "released"]] = $4 * 1000
                          if ($3 * 1000 > fmax[$2]) fmax[$2] = $3 * 1000
                          if (!(($2) in fseen)) { fseen[$2] = 1; fkind[++nf] = $2 } }
    # P1: a line "kind topology count median p99"; the median against 3x
    # the floor measured in the same run (200 us without one).
    function latency(what, t, line,    f, limit) {
        limit = floor_median > 0 ? 3 * floor_median : 200
        if (split(line, f, "\t") >= 5 && f[3] > 0)
            row("P1", what, t, sprintf("median %.0f us, p99 %.0f us", f[4], f[5]),
                sprintf("<= %.0f us, <= 2000 us", limit), verdict(f[4] <= limit && f[5] <= 2000))
        else row("P1", what, t, "no figure", sprintf("<= %.0f us, <= 2000 us", limit), "")
    }
    # P2-P4: a / b against its limit.
    function ratio(p, what, t, a, b, limit, digits) {
        if (a > 0 && b > 0)
            row(p, what, t, sprintf("%." digits "fx (%.0f / %.0f us)", a / b, a, b), "<= " limit "x",
                verdict(a / b <= limit))
        else row(p, what, t, "no figure", "<= " limit "x", "")
    }
    END {
        row("", "", "topology", "figure", "target", "")
        if (split(floor_line, f, "\t") >= 5)
            row("P1", "floor: SetEvent -> CoWait", "STA thread", sprintf("median %.0f us, p99 %.0f us", f[4], f[5]),
                "(P1 target: 3x median)", "")
        delete f
        for (i = 1; i <= n; i++) latency("sync cancel -> released", topo[i], sc[topo[i]])
        for (i = 1; i <= n; i++) latency("async Cancel -> Finish_", topo[i], ac[topo[i]])
        for (i = 1; i <= n; i++) {
            split(ra[topo[i]], f, "\t")
            ratio("P2", "async / sync, same method", topo[i], f[4], f[3], 1.25, 2)
            delete f
        }
        for (i = 1; i <= n; i++) {
            split(sv[topo[i]], f, "\t")
            ratio("P8", "served by call object/sync", topo[i], f[4], f[3], 1.25, 2)
            delete f
        }
        for (i = 1; i <= n; i++) pratio("P3", "installed-disabled / stock", topo[i], "disabled", "stock", 1.02)
        for (i = 1; i <= n; i++) pratio("P4", "enabled / disabled", topo[i], "enabled", "disabled", 1.15)
        for (i = 1; i <= no; i++) {
            split(os[otopo[i]], f, "\t")
            row("P5", "1,000 outstanding", otopo[i], sprintf("%.0f us/call, %.1f KiB/call", f[5], f[6]),
                "<= 64 KiB/call", verdict(f[6] <= 64 && f[3] == 1000))
        }
        if (split(soak, f, "\t") >= 8) {
            row("P6", sprintf("%d-cycle soak: heap", f[3]), f[2], sprintf("%+d KiB in use, handles %+d", f[4], f[7]),
                "<= 1024 KiB, +0", verdict(f[4] <= 1024 && f[7] <= 0))
            row("P6", "  committed, resident", "", sprintf("%+d KiB, %+d KiB, threads %+d", f[5], f[6], f[8]),
                "(cached fiber stacks)", "")
        }
        else row("P6", "soak", "MTA->STA in-proc", "no figure", "<= 1024 KiB, +0", "")
        for (i = 1; i <= nf; i++) {
            k = "first " fkind[i]
            row("P7", "CoCancelCall, first call", fkind[i] " caller/server", sprintf("median %.0f us, max %.0f us (%d)",
                median(k SUBSEP "cancel"), fmax[fkind[i]], count[k SUBSEP "cancel"]), "<= 50000 us",
                verdict(fmax[fkind[i]] <= 50000))
            row("P7", "  cancel -> released", "", sprintf("median %.0f us", median(k SUBSEP "released")), "", "")
        }
    }'
echo
echo "(P1 over $CANCELS cancels per topology; P2 and P8 medians of 9 rounds (P8: a synchronous call served"
echo " through the server object's call object, Begin_ signalling at once, vs the synchronous method); P3-P4 medians over $ROUNDS paired runs of the runs' ratios (each run the median of 9 rounds),"
echo " stock and installed alternating; P5 resident memory per call;"
echo " P7 a blocking call made first thing in a fresh process, cancelled by a watchdog once the server is in it:"
echo "    CoCancelCall's own duration and the caller's release, per kind of call (mta/sta: in process);"
echo " P6 the process's own counters: heap bytes in use (HeapWalk), committed private memory (VirtualQuery),
 working set, handles and threads, from a tenth of the way in, each time after the abandoned calls ended.)"
