#!/usr/bin/env bash
# curvature_ranks.sh MPIRUN QUADRA NPY_TOOL WORK RANKS -- CURVATURE-ARGS...
# `quadra curvature --vector v --diagonals` (v random, one entry per parameter) alone and twice
# as RANKS processes on the same batch: with several processes every file within 1e-12 of the
# run alone (relative to the file's largest entry; float64), with one process bitwise equal,
# and the two runs with RANKS processes bitwise equal.
set -euo pipefail
mpirun=$1 quadra=$2 npy_tool=$3 work=$4 ranks=$5
shift 6
rm -rf "$work"
mkdir -p "$work"
"$quadra" curvature "$@" --out "$work/shape" > /dev/null
"$npy_tool" like "$work/shape/grad.npy" "$work/v.npy" 7
"$quadra" curvature "$@" --vector "$work/v.npy" --diagonals --out "$work/alone" > "$work/alone.log"
for run in a b; do
  "$mpirun" -np "$ranks" --oversubscribe "$quadra" curvature "$@" --vector "$work/v.npy" \
    --diagonals --out "$work/ranks-$run" > "$work/ranks-$run.log"
done
cat "$work/ranks-a.log"
if [[ $ranks -gt 1 ]]; then
  grep -q "split across $ranks processes" "$work/ranks-a.log"
  "$npy_tool" compare "$work/alone" "$work/ranks-a" 1e-12
else
  "$npy_tool" compare "$work/alone" "$work/ranks-a" 0
fi
"$npy_tool" compare "$work/ranks-a" "$work/ranks-b" 0
