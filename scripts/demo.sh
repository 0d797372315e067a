#!/usr/bin/env bash
# The quick start's main job: sets up a fresh Debian 12 machine, builds quadra (Release), and
# on the real Fashion-MNIST data (Debian's dataset-fashion-mnist) trains and compares
# optimizers composed of plugins at run time: SGD, Adam, CG-Newton and eigen-Newton biased and
# debiased, K-FAC, each with the same 40 s budget (about 5 minutes in all), then prints the
# table. Figures land in runs/compare when gnuplot is installed (setup installs it).
# Extra arguments go to quadra compare, e.g. --set train.max_seconds=120.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release > /dev/null
cmake --build --preset release
quadra=build/release/bin/quadra

run() { printf '\n$ quadra %s\n' "$*"; "$quadra" "$@"; }
run --version
run data describe --data fashion-mnist
run plugins
run compare --config examples/fashion-mnist/compare.ini --overwrite "$@"
