#!/usr/bin/env bash
# The quick start's main job: sets up a fresh Debian 12 machine, builds quadra (Release), and
# runs it on the real Fashion-MNIST data (Debian's dataset-fashion-mnist): the data set, the
# plugins a run combines, an optimizer config resolved against them, and the curvature
# spectrum of the MLP 784-512-256-10 on a batch of 1024 images, for the GGN and for K-FAC.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release > /dev/null
cmake --build --preset release
quadra=build/release/bin/quadra
mlp='linear(512) tanh linear(256) tanh linear(10)'

run() { printf '\n$ quadra %s\n' "$*"; "$quadra" "$@"; }
run --version
run data describe --data fashion-mnist
run plugins
run config --config examples/configs/rayleigh.ini
run spectrum --model "$mlp" --input-shape 784 --data fashion-mnist --batch-size 1024 --curvature ggn --top 10
run spectrum --model "$mlp" --input-shape 784 --data fashion-mnist --batch-size 1024 --curvature kfac --top 10
