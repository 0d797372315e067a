#!/bin/bash
# ab_engine.sh OLD NEW FILTER [ROUNDS]: two bench_engine binaries, interleaved, with the
# engine benchmark's malloc policy; per benchmark the minimum and median over ROUNDS (default 2)
# x REPS (default 20) short repetitions. Compare OLD against a copy of itself first: on a shared
# VM that difference is the noise floor. Needs gawk (scripts/setup.sh --bench). Threads: T
# (default 2).
set -euo pipefail
if [[ $# -lt 3 || ! -x $1 || ! -x $2 ]]; then
  echo "usage: ab_engine.sh OLD NEW FILTER [ROUNDS]: OLD and NEW must be bench_engine executables" >&2
  exit 2
fi
command -v gawk > /dev/null || { echo "ab_engine.sh: needs gawk (apt-get install gawk)" >&2; exit 2; }
old=$1; new=$2; filter=$3; rounds=${4:-2}
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_max=0
export QUADRA_THREADS=${T:-2}
for _ in $(seq 1 "$rounds"); do
  for side in old new; do
    bin=$old; [[ $side == new ]] && bin=$new
    "$bin" --benchmark_filter="$filter" --benchmark_min_time="${MT:-0.05}" \
      --benchmark_repetitions="${REPS:-20}" --benchmark_format=csv 2>/dev/null |
      grep -v -E '^name|_mean|_median|_stddev|_cv' |
      gawk -F, -v s=$side '{gsub(/"/,"",$1); sub(/\/real_time.*/,"",$1); printf "%s %s %.3f\n", $1, s, $3}'
  done
done | sort -k1,1 -k2,2 -k3,3n |
  gawk '{k=$1" "$2; n[k]++; v[k][n[k]]=$3}
        END{for(k in v) printf "%-28s min %8.3f  median %8.3f\n", k, v[k][1], v[k][int((n[k]+1)/2)]}' | sort
