#!/usr/bin/env bash
# spectrum_ranks.sh MPIRUN QUADRA WORK RANKS [--vectors NPY_TOOL] -- SPECTRUM-ARGS...
# `quadra spectrum` alone and twice as RANKS processes on the same batch: the runs with RANKS
# processes print the same text (but for the wall-clock seconds), and against the run alone the
# same Lanczos product counts and every printed number within 1e-9 relative (the output has 10
# significant digits), or 1e-12 absolute for eigenvalues at zero, which are rounding noise either
# way. With --vectors, each run also writes its eigenvectors: bitwise the same run to run with
# RANKS processes, and within 1e-12 of the run alone relative to the largest entry (NPY_TOOL).
set -euo pipefail
mpirun=$1 quadra=$2 work=$3 ranks=$4
shift 4
npy_tool=
if [[ $1 == --vectors ]]; then npy_tool=$2; shift 2; fi
shift
rm -rf "$work"
mkdir -p "$work"
run() {  # run NAME [LAUNCHER...]
  local name=$1
  shift
  local vectors=()
  if [[ -n $npy_tool ]]; then
    mkdir -p "$work/$name"
    vectors=(--eigenvectors "$work/$name/eigenvectors.npy")
  fi
  "$@" "$quadra" spectrum "${args[@]}" "${vectors[@]}" > "$work/$name.txt"
}
args=("$@")
run alone
run ranks-a "$mpirun" -np "$ranks" --oversubscribe
run ranks-b "$mpirun" -np "$ranks" --oversubscribe
cat "$work/ranks-a.txt"
# The '#' lines give wall-clock seconds: the one thing that differs run to run.
without_seconds() { sed -E 's/[0-9.]+ s( in all)?\b/- s\1/g' "$1"; }
cmp <(without_seconds "$work/ranks-a.txt") <(without_seconds "$work/ranks-b.txt")
if [[ $ranks -gt 1 ]]; then grep -q "split across $ranks processes" "$work/ranks-a.txt"; fi
# Numbers only, one per line, in order; the header's "split across" is the one difference.
numbers() {
  without_seconds "$1" | sed 's/, split across [0-9]* processes//' |
    grep -Eo -- '-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?'
}
paste <(numbers "$work/alone.txt") <(numbers "$work/ranks-a.txt") | awk '
  { a = $1 + 0; b = $2 + 0; d = a - b; if (d < 0) d = -d; s = (a < 0 ? -a : a);
    if (d > 1e-9 * s && d > 1e-12) { print "differs: " $1 " alone, " $2 " with several processes"; bad = 1 } }
  END { exit bad }'
[[ $(numbers "$work/alone.txt" | wc -l) -eq $(numbers "$work/ranks-a.txt" | wc -l) ]]
if [[ -n $npy_tool ]]; then
  cmp "$work/ranks-a/eigenvectors.npy" "$work/ranks-b/eigenvectors.npy"
  "$npy_tool" compare "$work/alone" "$work/ranks-a" 1e-12
fi
