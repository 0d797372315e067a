#!/usr/bin/env bash
# posterior_roundtrip.sh QUADRA DIR LAPLACE_ARGS... -- DATA_ARGS... -- PREDICTIVE_ARGS...
# quadra laplace --save writes one variant's posterior; quadra predict with it on the same test
# set (DATA_ARGS, plus PREDICTIVE_ARGS) must give bitwise the per-input probabilities laplace
# computed for that variant and the same metrics; predict on the posterior file read as a model
# file (no --posterior) must give the MAP network's. Also checks that reliability.csv counts the
# samples per bin. Rerunnable: DIR is removed first. Prints what failed.
set -u
quadra=$1
dir=$2
shift 2
laplace_args=()
while [[ $# -gt 0 && $1 != "--" ]]; do laplace_args+=("$1"); shift; done
shift
data_args=()
while [[ $# -gt 0 && $1 != "--" ]]; do data_args+=("$1"); shift; done
shift
predictive_args=("$@")
rm -rf "$dir"
fail() { printf 'FAILED: %s\n%s\n' "$1" "${2:-}"; exit 1; }

out=$("$quadra" laplace "${laplace_args[@]}" --out "$dir/laplace" --save "$dir/posterior.npz" 2>&1) ||
  fail "quadra laplace ${laplace_args[*]}" "$out"
variant=$(sed -n 's/^# saved the \([a-z-]*\) posterior .*/\1/p' <<<"$out")
[[ -n $variant ]] || fail "quadra laplace printed no '# saved the ... posterior' line" "$out"
head -1 "$dir/laplace/reliability.csv" | grep -q ',count,' ||
  fail "reliability.csv has no count column" "$(head -2 "$dir/laplace/reliability.csv")"
if [[ -f $dir/laplace/reliability.gp ]]; then  # written when gnuplot is installed
  grep -q "samples per confidence bin" "$dir/laplace/reliability.gp" ||
    fail "reliability.png has no panel of samples per bin" "$(cat "$dir/laplace/reliability.gp")"
fi

compare() {  # compare METHOD PREDICT_DIR PREDICT_OUTPUT
  cmp "$dir/laplace/test_probabilities_$1.npy" "$2/probabilities.npy" ||
    fail "$1: quadra predict's probabilities differ from quadra laplace's" "$3"
  local want got
  want=$(grep "^test,$1," "$dir/laplace/metrics.csv" | cut -d, -f3-9)
  got=$(sed -n 2p "$2/metrics.csv")
  [[ -n $want && $want == "$got" ]] ||
    fail "$1: metrics differ: quadra laplace $want, quadra predict $got" "$3"
}

out=$("$quadra" predict --posterior "$dir/posterior.npz" "${data_args[@]}" "${predictive_args[@]}" \
  --out "$dir/predict" 2>&1) || fail "quadra predict --posterior" "$out"
compare "$variant" "$dir/predict" "$out"
[[ -f $dir/predict/variance.npy ]] || fail "no variance.npy" "$out"
grep -q '^accuracy [0-9.]*, NLL [0-9.]*' <<<"$out" || fail "no accuracy and NLL" "$out"

out=$("$quadra" predict --model "$dir/posterior.npz" "${data_args[@]}" --out "$dir/map" 2>&1) ||
  fail "quadra predict --model POSTERIOR (the MAP network)" "$out"
compare map "$dir/map" "$out"
[[ ! -e $dir/map/variance.npy ]] || fail "the MAP network wrote variance.npy" "$out"
echo "quadra predict reproduces quadra laplace's $variant posterior and MAP network"
