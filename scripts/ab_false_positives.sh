#!/usr/bin/env bash
# The false-positive rate of `harness ab`: TRIES runs of one tree against itself (same code on both sides), counting
# the runs that flag anything (exit 1) and the flagged cells. Usage (from the repository root):
#   scripts/ab_false_positives.sh TRIES SUITE [extra `harness ab` options, e.g. --keep-processes --rounds 4]
# Prints one line per try and a summary; the run directories stay under $AB_FP_OUT (default: a temporary directory).
set -uo pipefail
tries=${1:?TRIES}; suite=${2:?SUITE}; shift 2
out=${AB_FP_OUT:-$(mktemp -d)}; mkdir -p "$out"
python=${PYTHON:-python}
flagged_runs=0; flagged_cells=0; cells=0; start=$(date +%s)
for i in $(seq "$tries"); do
    "$python" -m harness ab . . "$suite" --out "$out/$i" --no-progress "$@" > "$out/$i.log" 2>&1
    rc=$?
    read -r n f <<< "$("$python" -c "import json,sys; d=json.load(open(sys.argv[1])); print(len(d['cells']), len(d['flagged']))" "$out/$i/ab.json" 2>/dev/null || echo "0 0")"
    cells=$((cells + n)); flagged_cells=$((flagged_cells + f))
    [ "$rc" = 1 ] && flagged_runs=$((flagged_runs + 1))
    [ "$rc" -gt 1 ] && echo "try $i: exit $rc (see $out/$i.log)"
    echo "try $i: exit $rc, $f of $n cells flagged, load average $(cut -d' ' -f1 /proc/loadavg)"
done
echo "$flagged_runs of $tries runs flagged something; $flagged_cells of $cells cell verdicts flagged; $(( $(date +%s) - start )) s; runs in $out"
