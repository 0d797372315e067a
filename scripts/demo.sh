#!/usr/bin/env bash
# The quick start's main job: sets up a fresh Debian 12 machine, builds quadra (Release), and
# shows what a run is made of: the plugins it can combine, one plugin's options, and an
# optimizer config validated and resolved against them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release > /dev/null
cmake --build --preset release
quadra=build/release/bin/quadra

run() { printf '\n$ quadra %s\n' "$*"; "$quadra" "$@"; }
run --version
run plugins
run plugins describe constant
run config --config examples/configs/baseline.ini --set damping.lambda=0.05
