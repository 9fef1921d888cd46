#!/bin/sh
# Prints which engine object calls into which (from the objects' symbol
# tables) and fails if any two call each other, directly or round a circle.
# Usage: tools/engine_deps.sh [build/x86_64/engine]
dir=${1:-build/x86_64/engine}
NM=${NM:-x86_64-w64-mingw32-nm}
for o in "$dir"/*.o; do
    f=$(basename "$o" .o)
    $NM "$o" | awk -v f="$f" '$2 ~ /^[TDRB]$/ { print "def", f, $3 } $1 == "U" { print "use", f, $2 }'
done | awk '
    $1 == "def" { owner[$3] = $2 }
    $1 == "use" { uses[NR] = $2 " " $3 }
    END {
        for (i in uses) {
            split(uses[i], u, " ")
            if ((u[2] in owner) && owner[u[2]] != u[1]) edge[u[1] " " owner[u[2]]] = 1
        }
        for (e in edge) print e
    }' | sort -u > /tmp/engine_edges.$$
cat /tmp/engine_edges.$$ | awk '{ a[$1] = a[$1] " " $2 } END { for (k in a) print k ":" a[k] }' | sort
# tsort reports a loop when the graph has a circle.
if tsort /tmp/engine_edges.$$ 2>&1 >/dev/null | grep -q loop; then
    echo "engine_deps: circle:"; tsort /tmp/engine_edges.$$ 2>&1 >/dev/null
    rm -f /tmp/engine_edges.$$
    exit 1
fi
rm -f /tmp/engine_edges.$$
echo "engine_deps: no circle"
