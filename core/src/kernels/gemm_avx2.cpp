// GEMM kernel for x86-64-v3 (AVX2 + FMA), selected at run time by gemm.cpp. Eigen's namespace
// is renamed so that nothing compiled here with AVX2 can replace the baseline instances.
#define Eigen quadra_eigen_avx2
#define QUADRA_GEMM_SUFFIX avx2
#include "gemm_kernel.inc"
