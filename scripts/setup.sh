#!/usr/bin/env bash
# Installs, with apt-get, exactly the Debian 12 packages quadra needs that are missing.
# Idempotent: a second run installs nothing. Usage: scripts/setup.sh [--bench]
#   --bench   also installs what the PyTorch peer in bench/ and tests/fixtures generation need
#             beyond PyTorch and SciPy (OpenMP OpenBLAS, gawk).
set -euo pipefail

packages=(
  # build
  g++ cmake ninja-build ccache pkg-config
  # libraries (found by find_package)
  libeigen3-dev libtbb-dev libfmt-dev zlib1g-dev
  libboost-dev libboost-program-options-dev libboost-filesystem-dev
  # several processes (mpirun); a build without them runs one process
  libopenmpi-dev openmpi-bin
  # ONNX import (--model net.onnx); python3-onnx writes the ONNX test fixtures
  libonnx-dev libprotobuf-dev python3-onnx
  # tests and benchmarks (PyTorch checks that quadra's model files load in PyTorch)
  catch2 libbenchmark-dev python3-torch python3-numpy
  # the Python module (`import quadra`) and its tests
  pybind11-dev python3-dev python3-pytest python3-scipy python3-pandas
  # fuzzers (libFuzzer ships with clang's runtime)
  clang libclang-rt-14-dev
  # the real data set and plots
  dataset-fashion-mnist gnuplot-nox
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(libopenblas0-openmp gawk)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
