#!/usr/bin/env bash
# compare_ranks.sh MPIRUN QUADRA NPY_TOOL WORK RANKS -- COMPARE-ARGS...
# `quadra compare` (float64) alone and as RANKS processes: the same runs, each run's steps,
# rejections and curvature products equal, its model within 1e-12 of the run alone (bitwise
# with one process), and rank 0 alone writing the comparison's files.
set -euo pipefail
mpirun=$1 quadra=$2 npy_tool=$3 work=$4 ranks=$5
shift 6
rm -rf "$work"
mkdir -p "$work"
"$quadra" compare "$@" --set model.precision=float64 --set "compare.out=$work/alone" > "$work/alone.log" 2>&1 ||
  { cat "$work/alone.log"; exit 1; }
"$mpirun" -np "$ranks" --oversubscribe "$quadra" compare "$@" --set model.precision=float64 \
  --set "compare.out=$work/ranks" > "$work/ranks.log" 2>&1 || { cat "$work/ranks.log"; exit 1; }
cat "$work/ranks.log"
# One table, printed once.
[[ $(grep -c "^optimizer " "$work/ranks.log") -eq 1 ]]
tolerance=1e-12
[[ $ranks -eq 1 ]] && tolerance=0
runs=0
for model in "$work"/alone/*/seed*/model.npz; do
  run=${model#"$work/alone/"}
  "$npy_tool" parameters "$model" "$work/ranks/$run" "$tolerance"
  grep -q "\"ranks\": $ranks," "$work/ranks/${run%model.npz}manifest.json"
  runs=$((runs + 1))
done
[[ $runs -gt 1 ]]
# optimizer, seed, steps, rejected steps, curvature products of every run.
diff <(cut -d, -f1-5 "$work/alone/summary.csv") <(cut -d, -f1-5 "$work/ranks/summary.csv")
