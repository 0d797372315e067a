#!/usr/bin/env bash
# The bias of mini-batch quadratics on a Fashion-MNIST MLP trained by quadra, measured at two
# checkpoints (after 1 and after 3 epochs of Adam): curvature and slope along the top-10
# eigenvectors of a batch of 256, same-batch vs independent batch vs the whole training set,
# and the single Newton step by CG, biased vs debiased, against the full-training-set loss.
#   examples/bias/run.sh [OUT]        (about 10 minutes on 2 cores; needs a release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
quadra=${QUADRA:-build/release/bin/quadra}
out=${1:-runs/bias}
data=(--data fashion-mnist --normalize standardize-global --batch-size 256)

for epochs in 1 3; do
  resume=(--overwrite)
  [[ $epochs -gt 1 ]] && resume=(--resume)
  "$quadra" train --config examples/bias/train.ini --set train.out="$out/train" \
    --set train.epochs="$epochs" "${resume[@]}"
  model="$out/epoch$epochs.npz"
  cp "$out/train/model.npz" "$model"
  printf '\n== after %s epoch(s): curvature and slope along the top-10 eigenvectors\n' "$epochs"
  "$quadra" bias --model "$model" "${data[@]}" --top 10 --repeats 10 --seed 1 \
    --out "$out/epoch$epochs-eigen"
  printf '\n== after %s epoch(s): one Newton step by CG, biased vs debiased\n' "$epochs"
  "$quadra" bias --newton-step --model "$model" "${data[@]}" --repeats 5 --seed 1 \
    --lambdas 1e-3,1e-2,1e-1 --cg-iterations 20 --eval-every 5 \
    --debiasing cg-line-search,cg-projected --out "$out/epoch$epochs-newton"
done
