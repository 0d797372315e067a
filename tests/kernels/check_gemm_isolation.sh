#!/usr/bin/env bash
# check_gemm_isolation.sh LIBRARY
# The AVX2/AVX-512 GEMM and convolution objects in LIBRARY (libquadra_core.a) may export nothing but their entry
# points: any other global or weak symbol (an inline std:: or Eigen helper compiled for AVX)
# could be chosen by the linker for the whole program and crash CPUs without AVX.
set -euo pipefail
lib=$1
leaks=$(nm -A -C --defined-only "$lib" 2>/dev/null | grep -E '(gemm|conv)_avx(2|512)\.cpp\.o:' |
        awk '$2 ~ /^[TWVRDBu]$/' |
        grep -v -E 'quadra_eigen_avx|quadra::kernels::(gemm|gemm_packed|pack_lhs_block|packed_depth|symmetric_tile(2|_block)?)_avx(2|512)\(|quadra::kernels::conv3_(forward|weight)_avx(2|512)<(float|double)>\(|DW\.ref\.__gxx_personality_v0' || true)
objects=$(nm -A --defined-only "$lib" 2>/dev/null | grep -c -E '(gemm|conv)_avx(2|512)\.cpp\.o:' || true)
if [[ "$objects" -eq 0 ]]; then
  echo "no gemm_avx objects found in $lib"
  exit 1
fi
if [[ -n "$leaks" ]]; then
  printf 'symbols compiled for AVX visible outside their object:\n%s\n' "$leaks"
  exit 1
fi
echo "gemm kernels isolated ($objects symbols checked)"
