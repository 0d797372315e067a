#!/usr/bin/env bash
# The ResNet-8 of resnet.py on Fashion-MNIST, end to end: the comparison of compare.ini (SGD,
# Adam, K-FAC, CG biased and debiased; BatchNorm with batch statistics), then, at the trained
# SGD model (BatchNorm in eval mode, its running statistics), the bias of mini-batch
# quadratics along the top eigenvectors and of one Newton step by CG, and K-FAC Laplace with
# same-data vs independent eigenvalues.
#   examples/resnet/run.sh [OUT]      (about an hour on 2 cores; needs a release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
quadra=${QUADRA:-build/release/bin/quadra}
out=${1:-runs/resnet}

"$quadra" compare --config examples/resnet/compare.ini --set compare.out="$out/compare" --overwrite
model="$out/compare/sgd/seed0/model.npz"

# The full batch is 5,000 training samples drawn with the seed (a full-batch curvature product
# over all 55,000 would cost minutes), bound 256 at a time.
data=(--data fashion-mnist --batch-size 256 --train-samples 5000 --chunk-size 256 --seed 1)
printf '\n== curvature and slope along the top-10 eigenvectors of a batch of 256\n'
"$quadra" bias --model "$model" "${data[@]}" --top 10 --repeats 5 --out "$out/bias-eigen"
printf '\n== one Newton step by CG, biased vs debiased\n'
"$quadra" bias --newton-step --model "$model" "${data[@]}" --repeats 3 \
  --lambdas 1e-3,1e-2,1e-1 --cg-iterations 20 --eval-every 5 \
  --debiasing cg-line-search,cg-projected --out "$out/bias-newton"

# The linearised predictive costs a C-column Jacobian per evaluated sample: 500 validation and
# 500 test samples, the four corruptions at severity 3 and the two OOD sets of 500 each.
printf '\n== K-FAC Laplace, 2000 curvature samples, same-data vs independent eigenvalues\n'
"$quadra" laplace --model "$model" --data fashion-mnist --structure kfac \
  --debiasing same-data,independent --curvature-samples 2000 --validation-samples 500 \
  --test-samples 500 --severities 3 --out "$out/laplace"
