#!/usr/bin/env bash
# csv_ranks.sh MPIRUN QUADRA WORK RANKS TOLERANCE -- COMMAND ARGS...
# `quadra COMMAND ARGS --out DIR` alone and twice as RANKS processes: the two runs with RANKS
# processes write the same CSV files byte for byte, and against the run alone every CSV file
# has the same cells, every number within TOLERANCE relative (at least 1e-9: the files hold 10
# significant digits) or 1e-12 absolute for values at zero.
set -euo pipefail
mpirun=$1 quadra=$2 work=$3 ranks=$4 tolerance=$5
shift 6
rm -rf "$work"
mkdir -p "$work"
"$quadra" "$@" --out "$work/alone" > "$work/alone.log" 2>&1 || { cat "$work/alone.log"; exit 1; }
for run in a b; do
  "$mpirun" -np "$ranks" --oversubscribe "$quadra" "$@" --out "$work/ranks-$run" > "$work/ranks-$run.log" 2>&1 ||
    { cat "$work/ranks-$run.log"; exit 1; }
done
cat "$work/ranks-a.log"
files=0
for file in "$work"/alone/*.csv; do
  name=$(basename "$file")
  cmp "$work/ranks-a/$name" "$work/ranks-b/$name"
  [[ $(wc -l < "$file") -eq $(wc -l < "$work/ranks-a/$name") ]]
  # Cell by cell: numbers within the tolerance, anything else equal.
  paste -d'\n' <(tr ',' '\n' < "$file") <(tr ',' '\n' < "$work/ranks-a/$name") | awk -v file="$name" -v tolerance="$tolerance" '
    NR % 2 == 1 { a = $0; next }
    { b = $0
      if (a ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/ && b ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/) {
        d = a - b; if (d < 0) d = -d; s = a < 0 ? -a : a
        if (d > tolerance * s && d > 1e-12) { print file ": " a " alone, " b " with several processes"; bad = 1 }
      } else if (a != b) { print file ": " a " alone, " b " with several processes"; bad = 1 }
    }
    END { exit bad }'
  files=$((files + 1))
done
[[ $files -gt 0 ]]
echo "$files CSV files agree"
