#!/usr/bin/env bash
# Builds the libFuzzer targets (IDX + gzip, CSV, NPY + NPZ and CIFAR parsers, ONNX import) with clang, ASan
# and UBSan in build/fuzz, then runs each for FUZZ_SECONDS (default 30) on a scratch copy of its
# regression corpus (tests/fuzz/corpus/<target>/). Fails if any target crashes, leaks, times out
# or runs out of memory; the input that did it is saved as build/fuzz/artifacts/<target>-crash-*.
# Usage: scripts/fuzz.sh [TARGET...]   (targets: idx csv npy cifar onnx; default: all)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build/fuzz}
seconds=${FUZZ_SECONDS:-30}
jobs=${JOBS:-2}
targets=("$@")
((${#targets[@]} > 0)) || targets=(idx csv npy cifar onnx)

launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DQUADRA_BUILD_FUZZERS=ON -DQUADRA_BUILD_BENCH=OFF \
  -DQUADRA_SANITIZE=address,undefined,fuzzer-no-link "${launcher[@]}" >/dev/null
cmake --build "$build" -j "$jobs" --target "${targets[@]/#/fuzz_}"

mkdir -p "$build/artifacts"
failed=()
for target in "${targets[@]}"; do
  corpus=$(mktemp -d)
  trap 'rm -rf "$corpus"' EXIT
  cp -r "$root/tests/fuzz/corpus/$target/." "$corpus/"
  echo "fuzz: $target for ${seconds}s on $(ls "$corpus" | wc -l) corpus inputs"
  if ! "$build/bin/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$build/artifacts/$target-" "$corpus" \
      >"$build/artifacts/$target.log" 2>&1; then
    failed+=("$target")
    tail -n 40 "$build/artifacts/$target.log"
  fi
  grep -E "stat::number_of_executed_units|stat::new_units_added" "$build/artifacts/$target.log" |
    sed "s/^/fuzz: $target: /" || true
  rm -rf "$corpus"
  trap - EXIT
done

if ((${#failed[@]} > 0)); then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $build/artifacts/)" >&2
  exit 1
fi
echo "fuzz: all targets ran clean"
