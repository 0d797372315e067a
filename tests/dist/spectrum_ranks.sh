#!/usr/bin/env bash
# spectrum_ranks.sh MPIRUN QUADRA WORK RANKS -- SPECTRUM-ARGS...
# `quadra spectrum` alone and twice as RANKS processes on the same batch: the runs with RANKS
# processes print the same text, and against the run alone the same Lanczos product counts and
# every printed number within 1e-9 relative (the output has 10 significant digits), or 1e-12
# absolute for eigenvalues at zero, which are rounding noise either way.
set -euo pipefail
mpirun=$1 quadra=$2 work=$3 ranks=$4
shift 5
rm -rf "$work"
mkdir -p "$work"
"$quadra" spectrum "$@" > "$work/alone.txt"
for run in a b; do
  "$mpirun" -np "$ranks" --oversubscribe "$quadra" spectrum "$@" > "$work/ranks-$run.txt"
done
cat "$work/ranks-a.txt"
# The wall-clock seconds in the '#' lines are the one thing that may differ run to run.
untimed() { sed -E 's/ in [0-9.]+ s,/,/; s/, [0-9.]+ s in all,/,/' "$1"; }
cmp <(untimed "$work/ranks-a.txt") <(untimed "$work/ranks-b.txt")
if [[ $ranks -gt 1 ]]; then grep -q "split across $ranks processes" "$work/ranks-a.txt"; fi
# Numbers only, one per line, in order; the header's "split across" is the one difference.
numbers() { untimed "$1" | sed 's/, split across [0-9]* processes//' | grep -Eo -- '-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?'; }
paste <(numbers "$work/alone.txt") <(numbers "$work/ranks-a.txt") | awk '
  { a = $1 + 0; b = $2 + 0; d = a - b; if (d < 0) d = -d; s = (a < 0 ? -a : a);
    if (d > 1e-9 * s && d > 1e-12) { print "differs: " $1 " alone, " $2 " with several processes"; bad = 1 } }
  END { exit bad }'
[[ $(numbers "$work/alone.txt" | wc -l) -eq $(numbers "$work/ranks-a.txt" | wc -l) ]]
