#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every test: a Release build and a Debug build with
# AddressSanitizer + UndefinedBehaviorSanitizer (all Catch2, CLI and packaging tests through
# CTest; the Release build also the Python module's pytest suite), then each fuzzer briefly.
# Exits non-zero on any failure. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

passed=0
failed=0
run_suite() {  # run_suite PRESET
  local preset=$1 log
  log=$(mktemp)
  echo "== $preset: configure and build"
  if ! cmake --preset "$preset" > /dev/null || ! cmake --build --preset "$preset"; then
    echo "== $preset: build FAILED"
    failed=$((failed + 1))
    return 1
  fi
  echo "== $preset: test"
  set +e
  ctest --preset "$preset" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  set -e
  # "100% tests passed, 0 tests failed out of 57"
  local line total bad
  line=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$log" | tail -n 1 || true)
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  bad=$(sed -E 's/.*, ([0-9]+) tests? failed.*/\1/' <<<"$line")
  if [[ -z "$line" ]]; then total=0; bad=1; fi
  passed=$((passed + total - bad))
  failed=$((failed + bad))
  rm -f "$log"
  return "$status"
}

status=0
run_suite release || status=1
run_suite asan || status=1
if [[ -x scripts/fuzz.sh ]]; then
  echo "== fuzzers"
  if scripts/fuzz.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
fi

echo
echo "$passed passed, $failed failed"
exit "$status"
