#!/usr/bin/env bash
# Laplace uncertainty on a Fashion-MNIST MLP trained by quadra: K-FAC Laplace with same-data
# eigenvalues vs debiased ones (eigenbases on one half of the curvature data, eigenvalues
# re-measured on the other half) at equal curvature data, against the MAP network, on the clean
# test set, 12 corrupted test sets and 2 out-of-distribution sets.
#   examples/laplace/run.sh [OUT]     (about 10 minutes on 2 cores; needs a release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
quadra=${QUADRA:-build/release/bin/quadra}
out=${1:-runs/laplace}

if [[ ! -f "$out/train/model.npz" ]]; then
  "$quadra" train --config examples/laplace/train.ini --set train.out="$out/train"
fi
model="$out/train/model.npz"
common=(--model "$model" --data fashion-mnist --structure kfac --debiasing same-data,independent)

for samples in 256 2000; do
  printf '\n== K-FAC Laplace, %s curvature samples, tau by validation NLL\n' "$samples"
  "$quadra" laplace "${common[@]}" --curvature-samples "$samples" --out "$out/kfac-$samples"
done
printf '\n== K-FAC Laplace, 256 curvature samples, tau by marginal likelihood\n'
"$quadra" laplace "${common[@]}" --curvature-samples 256 --prior-precision marglik \
  --out "$out/kfac-256-marglik"
printf '\n== EK-FAC (per-sample eigenvalues) Laplace, 256 curvature samples\n'
"$quadra" laplace "${common[@]}" --curvature-samples 256 --kfac-eigenvalues per-sample \
  --out "$out/ekfac-256"
