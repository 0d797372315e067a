#!/usr/bin/env bash
# laplace_ranks.sh MPIRUN QUADRA NPY_TOOL WORK RANKS -- DATA-ARGS... -- LAPLACE-ARGS...
# `quadra laplace DATA-ARGS LAPLACE-ARGS --out DIR --save DIR/posterior.npz`, then
# `quadra predict --posterior DIR/posterior.npz DATA-ARGS --out DIR/predict`, alone and twice as
# RANKS processes. The two runs with RANKS processes write the same files byte for byte
# (metrics.json but for its fit_seconds). Against the run alone: every .npy and every entry of
# the posterior's .npz within 1e-12 relative to the array's largest entry, but the eigenvectors
# (the K-FAC bases qa and qs, an eigen block's eigenvectors): an eigenvector moves by the
# rounding of its matrix over the gap to the next eigenvalue, and within a repeated eigenvalue
# (a null space) any basis is as good, so the bases are checked through what they determine,
# the eigenvalues and every predictive; every CSV cell and every number of metrics.json within 1e-9 relative (the files hold 10
# significant digits) or 1e-12 absolute.
set -euo pipefail
mpirun=$1 quadra=$2 npy_tool=$3 work=$4 ranks=$5
shift 6
data=()
while [[ $1 != -- ]]; do data+=("$1"); shift; done
shift
laplace=("$@")
rm -rf "$work"
mkdir -p "$work"
run() {  # run NAME [LAUNCHER...]
  local dir=$work/$1
  shift
  mkdir -p "$dir"
  "$@" "$quadra" laplace "${data[@]}" "${laplace[@]}" --out "$dir" --save "$dir/posterior.npz" \
    > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
  "$@" "$quadra" predict --posterior "$dir/posterior.npz" "${data[@]}" --out "$dir/predict" \
    > "$dir-predict.log" 2>&1 || { cat "$dir-predict.log"; exit 1; }
}
run alone
run ranks-a "$mpirun" -np "$ranks" --oversubscribe
run ranks-b "$mpirun" -np "$ranks" --oversubscribe
cat "$work/ranks-a.log" "$work/ranks-a-predict.log"
if [[ $ranks -gt 1 ]]; then grep -q "split across $ranks processes" "$work/ranks-a.log"; fi

# Run to run with RANKS processes: the same bytes.
without_seconds() { sed 's/"fit_seconds": [0-9.]*/"fit_seconds": -/' "$1"; }
cmp <(without_seconds "$work/ranks-a/metrics.json") <(without_seconds "$work/ranks-b/metrics.json")
files=0
for file in "$work"/alone/*.csv "$work"/alone/*.npy "$work"/alone/*.npz "$work"/alone/predict/*; do
  relative=${file#"$work"/alone/}
  cmp "$work/ranks-a/$relative" "$work/ranks-b/$relative"
  files=$((files + 1))
done
[[ $files -ge 6 ]]

# Against the run alone: the arrays in float64, within 1e-12 of the largest entry.
"$npy_tool" compare "$work/alone" "$work/ranks-a" 1e-12 .qa=inf .qs=inf .eigenvectors=inf
# The logit variances J Σ Jᵀ of Fashion-MNIST's 10,000 test images go through those bases too,
# with Σ = 1/τ on A's null space (784 pixels, 200 curvature samples): 1e-10.
"$npy_tool" compare "$work/alone/predict" "$work/ranks-a/predict" 1e-12 variance.npy=1e-10
# The tables: cell by cell, numbers within 1e-9 relative, anything else equal.
cells() {  # cells FILE: one cell or JSON token per line
  if [[ $1 == *.json ]]; then
    sed 's/"fit_seconds": [0-9.]*/"fit_seconds": -/' "$1" | tr ',:[]{}' '\n\n\n\n\n\n' | sed 's/^ *//'
  else
    tr ',' '\n' < "$1"
  fi
}
for file in "$work"/alone/*.csv "$work"/alone/metrics.json "$work"/alone/predict/*.csv; do
  relative=${file#"$work"/alone/}
  [[ $(cells "$file" | wc -l) -eq $(cells "$work/ranks-a/$relative" | wc -l) ]]
  paste -d'\n' <(cells "$file") <(cells "$work/ranks-a/$relative") | awk -v file="$relative" '
    NR % 2 == 1 { a = $0; next }
    { b = $0
      if (a ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/ && b ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/) {
        d = a - b; if (d < 0) d = -d; s = a < 0 ? -a : a
        if (d > 1e-9 * s && d > 1e-12) { print file ": " a " alone, " b " with several processes"; bad = 1 }
      } else if (a != b) { print file ": " a " alone, " b " with several processes"; bad = 1 }
    }
    END { exit bad }'
done
echo "$files files agree"
