// GEMM kernel for x86-64-v4 (AVX-512), selected at run time by gemm.cpp. Eigen's namespace is
// renamed so that nothing compiled here with AVX-512 can replace the baseline instances.
#define Eigen quadra_eigen_avx512
#define QUADRA_GEMM_SUFFIX avx512
#include "gemm_kernel.inc"
